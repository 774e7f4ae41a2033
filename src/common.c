/*
 * common.c: error names, the dying allocators and the clocks. No state.
 */
#include "cdnode/common.h"

#include <string.h>
#include <time.h>

const char *
cdn_strerror(int err)
{
    switch (err) {
    case CDN_OK: return "success";
    case CDN_ENOMEM: return "resource exhausted";
    case CDN_EINVAL: return "invalid input";
    case CDN_ETOOBIG: return "over configured limit";
    case CDN_EIO: return "I/O error";
    case CDN_ENOTFOUND: return "not found";
    case CDN_EEXIST: return "already exists";
    case CDN_ETIMEDOUT: return "timed out";
    case CDN_ECONNECT: return "connection failed";
    case CDN_EPROTO: return "protocol violation";
    case CDN_ELOOP: return "forwarding loop";
    case CDN_ECORRUPT: return "corrupt record";
    case CDN_EFULL: return "store full";
    case CDN_EAGAIN: return "try again";
    case CDN_ESHUTDOWN: return "shutting down";
    default: return "unknown error";
    }
}

void
cdn_panic(const char *file, int line, const char *what)
{
    fprintf(stderr, "cdnode: assertion failed at %s:%d: %s\n", file, line, what);
    abort();
}

static void *
check_alloc(void *p)
{
    if (p == NULL) {
        fputs("cdnode: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *
cdn_malloc(size_t n)
{
    return check_alloc(malloc(n ? n : 1));
}

void *
cdn_calloc(size_t n, size_t size)
{
    return check_alloc(calloc(n ? n : 1, size ? size : 1));
}

void *
cdn_realloc(void *p, size_t n)
{
    return check_alloc(realloc(p, n ? n : 1));
}

char *
cdn_strdup(const char *s)
{
    return check_alloc(strdup(s));
}

char *
cdn_strndup(const char *s, size_t n)
{
    return check_alloc(strndup(s, n));
}

int64_t
cdn_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
cdn_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t
cdn_wall_s(void)
{
    return (int64_t)time(NULL);
}
