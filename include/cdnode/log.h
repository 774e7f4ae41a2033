/*
 * log.h: the error log. Lines go to stderr as "cdnode[LEVEL] message". Any thread; each line is
 * written with one write(2) so lines from different threads do not interleave.
 */
#ifndef CDNODE_LOG_H
#define CDNODE_LOG_H

enum cdn_log_level { CDN_LOG_ERROR = 0, CDN_LOG_WARN = 1, CDN_LOG_INFO = 2, CDN_LOG_DEBUG = 3 };

/* Lines above this level are dropped. Set once at start (and on reload). */
void cdn_log_set_level(enum cdn_log_level level);
/* Parses "error", "warn", "info", "debug"; returns 0 or CDN_EINVAL. */
int cdn_log_parse_level(const char *s, enum cdn_log_level *out);
void cdn_log(enum cdn_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define cdn_error(...) cdn_log(CDN_LOG_ERROR, __VA_ARGS__)
#define cdn_warn(...) cdn_log(CDN_LOG_WARN, __VA_ARGS__)
#define cdn_info(...) cdn_log(CDN_LOG_INFO, __VA_ARGS__)
#define cdn_debug(...) cdn_log(CDN_LOG_DEBUG, __VA_ARGS__)

#endif
