/*
 * log.c: leveled error log to stderr. The level is a relaxed atomic so a reload can change it
 * while workers log.
 */
#include "cdnode/log.h"
#include "cdnode/common.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = CDN_LOG_INFO;

void
cdn_log_set_level(enum cdn_log_level level)
{
    atomic_store_explicit(&g_level, (int)level, memory_order_relaxed);
}

int
cdn_log_parse_level(const char *s, enum cdn_log_level *out)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(names); i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = (enum cdn_log_level)i;
            return 0;
        }
    }
    return CDN_EINVAL;
}

void
cdn_log(enum cdn_log_level level, const char *fmt, ...)
{
    static const char *tags[] = {"error", "warn", "info", "debug"};
    if ((int)level > atomic_load_explicit(&g_level, memory_order_relaxed))
        return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = (int)strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%SZ", &tm);
    n += snprintf(line + n, sizeof(line) - (size_t)n, " cdnode[%s] ", tags[level]);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
