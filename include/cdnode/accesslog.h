/*
 * accesslog.h: the access log (DESIGN.md §8), one line per request with the cache outcome and
 * timings, to stderr, to a file, or nowhere.
 *
 * Two formats. combined is the Apache/nginx combined format followed by cdnode's own fields:
 *
 *   192.0.2.7 - - [02/Jan/2024:03:04:05 +0000] "GET /a?b=1 HTTP/1.1" 200 5120 "-" "curl/8.5.0"
 *       cache=hit origin_ms=- total_ms=0.412
 *
 * (one line). Inside the quoted fields '"' and '\' are written as \" and \\, and every byte
 * outside 0x20..0x7e as \xHH, so a header value can neither end its field nor the line, nor reach
 * a terminal as a control sequence. json is one object per line:
 *
 *   {"time":"2024-01-02T03:04:05.678Z","client":"192.0.2.7","method":"GET","target":"/a?b=1",
 *    "protocol":"HTTP/1.1","status":200,"bytes":5120,"referer":null,"user_agent":"curl/8.5.0",
 *    "cache":"hit","origin_ms":null,"total_ms":0.412}
 *
 * with strings JSON-escaped: valid UTF-8 is kept except C1 controls; control characters are
 * \uXXXX (or \n, \t, ...); a byte that is not part of valid UTF-8 is \u00XX, its ISO-8859-1
 * reading, so the line is always valid UTF-8.
 *
 * Each text field has a bound (in escaped bytes); a longer value is cut at a character boundary
 * and ends in "...", so a whole line always fits CDN_ACCESSLOG_LINE_MAX bytes, no larger than
 * PIPE_BUF, and one write(2) of it is atomic even on a pipe.
 */
#ifndef CDNODE_ACCESSLOG_H
#define CDNODE_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Buffer size cdn_accesslog_format() needs: a line, its '\n' and a NUL. */
#define CDN_ACCESSLOG_LINE_MAX 4096

enum cdn_accesslog_format { CDN_ACCESSLOG_COMBINED = 0, CDN_ACCESSLOG_JSON = 1 };

/*
 * One request, as the request path saw it. Strings are NUL-terminated and only read during the
 * call; NULL is written as "-" (combined) or null (json). Header values are the raw, untrusted
 * bytes the client sent.
 */
struct cdn_accesslog_entry {
    const char *client;     /* client address as text ("192.0.2.7", "2001:db8::1") */
    const char *method;     /* "GET" */
    const char *target;     /* request target as received: "/a?b=1" */
    const char *version;    /* "HTTP/1.1" */
    int status;             /* status sent; written within 0..999 */
    uint64_t bytes;         /* body bytes sent */
    const char *referer;    /* Referer field value, NULL when absent */
    const char *user_agent; /* User-Agent field value, NULL when absent */
    const char *outcome;    /* Cache-Status main part: "hit", "stale", "miss", "bypass", ... */
    double origin_ms;       /* time spent waiting on the origin; < 0 when none was asked */
    double total_ms;        /* request start to last byte sent */
    int64_t wall_s;         /* when the request started: Unix seconds ... */
    unsigned wall_ms;       /* ... and milliseconds, 0..999 */
};

struct cdn_accesslog;

/* Parses "combined" or "json"; returns 0 or CDN_EINVAL (out untouched). */
int cdn_accesslog_parse_format(const char *s, enum cdn_accesslog_format *out);

/*
 * Opens the log named by spec: "stderr", "off" (every write is dropped) or a file path, opened
 * O_WRONLY | O_APPEND | O_CREAT (mode 0640 before the umask: the log holds client addresses).
 * On success *out is a new log owned by the caller until cdn_accesslog_close(). Returns 0,
 * CDN_EINVAL for an empty spec, or CDN_EIO when the file cannot be opened (errno is open(2)'s).
 */
int cdn_accesslog_open(const char *spec, enum cdn_accesslog_format format,
                       struct cdn_accesslog **out);

/*
 * Formats e and writes the line with one write(2). Never blocks on a lock and never fails: a
 * write that fails or comes up short is counted (cdn_accesslog_failed) and the line dropped. Any
 * thread, concurrently with other writers and with cdn_accesslog_reopen().
 */
void cdn_accesslog_write(struct cdn_accesslog *l, const struct cdn_accesslog_entry *e);

/*
 * Log rotation (SIGUSR1): opens the path again and puts the new file on the log's descriptor
 * number with dup3(2), which the kernel does atomically, so a writer racing with it writes its
 * whole line to either the old file or the new one. A no-op returning 0 for stderr and off.
 * Returns 0, or CDN_EIO (errno is open(2)'s or dup3(2)'s) and the log keeps writing where it did.
 * Any thread but not from a signal handler; callers serialise reopens (one control thread).
 */
int cdn_accesslog_reopen(struct cdn_accesslog *l);

/*
 * Configuration reload (SIGHUP): from now on write to `spec` ("stderr", "off" or a file) in
 * `format`. A file replaces the log's previous file on the same descriptor number with dup3(2),
 * so a racing writer's line lands whole in one of them. Returns 0, CDN_EINVAL for an empty spec,
 * or CDN_EIO (errno is open(2)'s or dup3(2)'s) and the log keeps writing where it did. Same
 * caller rules as cdn_accesslog_reopen().
 */
int cdn_accesslog_reconfigure(struct cdn_accesslog *l, const char *spec,
                              enum cdn_accesslog_format format);

/* Whether lines are written at all (false for "off"), so callers can skip building entries. Any
 * thread. */
bool cdn_accesslog_on(const struct cdn_accesslog *l);

/* Lines dropped because write(2) failed or was short, since the log was opened. Any thread. */
uint64_t cdn_accesslog_failed(const struct cdn_accesslog *l);

/* Closes the file (never stderr) and frees l. No writer may be using l. NULL is ignored. */
void cdn_accesslog_close(struct cdn_accesslog *l);

/*
 * Formats e in format fmt into buf: the line, ending in '\n', then a NUL. len must be at least
 * CDN_ACCESSLOG_LINE_MAX (asserted). Returns the line's length with its '\n' and without the NUL
 * (at most CDN_ACCESSLOG_LINE_MAX - 1). Pure: no clock, no locale, no I/O.
 */
size_t cdn_accesslog_format(const struct cdn_accesslog_entry *e, enum cdn_accesslog_format fmt,
                            char *buf, size_t len);

#endif
