/*
 * accesslog.c: the access log (see accesslog.h).
 *
 * Model: a line is formatted into a stack buffer by a pure function and written with one
 * write(2), so lines from different threads never interleave (O_APPEND for a file; a line is at
 * most PIPE_BUF bytes for a pipe). Every text field is escaped and bounded on its own, so the
 * bounds add up to less than the line: a hostile header can shorten its own field, never push the
 * timings or the '\n' off the end (checked at compile time below and by the unit tests).
 *
 * Locking: none. The descriptor number is fixed when the log is opened; rotation opens the path
 * again and dup2()s the new file onto that number, which the kernel does atomically, so a writer
 * never sees a closed or reused descriptor. Only the failure counter and its warn-once flag change
 * after open, and both are atomics.
 */
#include "cdnode/accesslog.h"
#include "cdnode/common.h"
#include "cdnode/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#define ACCESSLOG_MAGIC 0xacce5510u

/* Bounds per text field, in escaped bytes. */
#define CAP_CLIENT 64
#define CAP_METHOD 32
#define CAP_TARGET 1792
#define CAP_VERSION 16
#define CAP_REFERER 640
#define CAP_USER_AGENT 640
#define CAP_OUTCOME 32
/* Everything else in a line: JSON keys and punctuation, the time and the numbers (about 240). */
#define FIXED_MAX 512

_Static_assert(CAP_CLIENT + CAP_METHOD + CAP_TARGET + CAP_VERSION + CAP_REFERER + CAP_USER_AGENT +
                       CAP_OUTCOME + FIXED_MAX <=
                   CDN_ACCESSLOG_LINE_MAX - 2,
               "the field bounds must fit a line with its '\\n' and NUL");
_Static_assert(CDN_ACCESSLOG_LINE_MAX <= PIPE_BUF, "a line must be one atomic write on a pipe");

/* Timings above this (about 31 years) are written as this, so the conversion cannot overflow. */
#define MS_MAX 1e12
/* 9999-12-31T23:59:59Z: later (or negative) times are clamped to keep four-digit years. */
#define WALL_MAX 253402300799

struct cdn_accesslog {
    uint32_t magic;
    _Atomic int format;   /* enum cdn_accesslog_format */
    _Atomic int fd;       /* what writers use: -1 when off; STDERR_FILENO; or file_fd */
    int file_fd;          /* the file descriptor this log owns, -1 before a file was opened; kept
                             open once opened (a writer may still hold its number) and reused */
    char *path;           /* the file's path, NULL for stderr and off (control thread only) */
    _Atomic uint64_t failed;
    atomic_bool warned; /* a failed write was reported since the last (re)open */
};

/* --- formatting ------------------------------------------------------------------------------- */

/* Output cursor; end leaves room for the '\n' and the NUL. Appends past end are cut. */
struct out {
    char *p, *end;
};

static void
put(struct out *o, const char *s, size_t n)
{
    size_t room = (size_t)(o->end - o->p);
    if (n > room)
        n = room;
    memcpy(o->p, s, n);
    o->p += n;
}

static void
put_str(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Decimal, zero-padded to at least width digits. */
static void
put_uint(struct out *o, uint64_t v, unsigned width)
{
    char tmp[24];
    size_t i = sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 || sizeof(tmp) - i < width);
    put(o, tmp + i, sizeof(tmp) - i);
}

/* Milliseconds with three decimals, without printf's locale-dependent decimal point. */
static void
put_ms(struct out *o, double ms)
{
    if (!(ms >= 0)) /* also NaN */
        ms = 0;
    if (ms > MS_MAX)
        ms = MS_MAX;
    uint64_t us = (uint64_t)(ms * 1000.0 + 0.5);
    put_uint(o, us / 1000, 1);
    put(o, ".", 1);
    put_uint(o, us % 1000, 3);
}

struct civil {
    unsigned year, month, day, hour, min, sec;
};

/* UTC calendar time of Unix seconds t (0 <= t <= WALL_MAX), without gmtime's tz lock. */
static struct civil
civil_time(int64_t t)
{
    /* Days to civil date, after H. Hinnant's days_from_civil inverse, for days >= 0. */
    uint64_t days = (uint64_t)t / 86400, secs = (uint64_t)t % 86400;
    uint64_t z = days + 719468, era = z / 146097, doe = z % 146097;
    uint64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    uint64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
    struct civil c;
    c.day = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    c.month = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    c.year = (unsigned)(yoe + era * 400 + (c.month <= 2));
    c.hour = (unsigned)(secs / 3600);
    c.min = (unsigned)(secs / 60 % 60);
    c.sec = (unsigned)(secs % 60);
    return c;
}

/* The code point of the valid UTF-8 sequence at s and its length, or 0 when it is not one. */
static size_t
utf8_seq(const unsigned char *s, uint32_t *cp)
{
    uint32_t v, min;
    size_t n;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        n = 2, v = s[0] & 0x1fu, min = 0x80;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        n = 3, v = s[0] & 0x0fu, min = 0x800;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        n = 4, v = s[0] & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) { /* stops at the NUL: it is no continuation byte */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = v << 6 | (s[i] & 0x3fu);
    }
    if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return n;
}

static const char hex[] = "0123456789abcdef";

enum esc { ESC_QUOTED, ESC_BARE, ESC_JSON };

/*
 * Escapes the character at s into unit (at most 6 bytes); returns the unit's length and sets
 * *used to the input bytes it stands for. ESC_BARE is for combined's unquoted fields, where a
 * space would split the field.
 */
static size_t
escape_unit(const char *s, enum esc esc, char *unit, size_t *used)
{
    unsigned char c = (unsigned char)s[0];
    *used = 1;
    if (esc != ESC_JSON) {
        if (c == '"' || c == '\\') {
            unit[0] = '\\', unit[1] = (char)c;
            return 2;
        }
        if (c < 0x7f && (c > ' ' || (c == ' ' && esc == ESC_QUOTED))) {
            unit[0] = (char)c;
            return 1;
        }
        unit[0] = '\\', unit[1] = 'x', unit[2] = hex[c >> 4], unit[3] = hex[c & 15];
        return 4;
    }
    static const char short_esc[] = {['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
                                     ['\t'] = 't', ['"'] = '"',  ['\\'] = '\\'};
    if (c < sizeof(short_esc) && short_esc[c] != 0) {
        unit[0] = '\\', unit[1] = short_esc[c];
        return 2;
    }
    if (c >= 0x20 && c < 0x7f) {
        unit[0] = (char)c;
        return 1;
    }
    uint32_t cp = 0;
    size_t n = c >= 0x80 ? utf8_seq((const unsigned char *)s, &cp) : 0;
    if (n > 0 && cp >= 0xa0) { /* kept as is; C1 controls (U+0080..U+009F) are escaped */
        memcpy(unit, s, n);
        *used = n;
        return n;
    }
    if (n > 0)
        c = (unsigned char)cp, *used = n;
    /* A control character, DEL, a C1 control, or a byte outside valid UTF-8 (as ISO-8859-1). */
    memcpy(unit, "\\u00", 4);
    unit[4] = hex[c >> 4], unit[5] = hex[c & 15];
    return 6;
}

/*
 * Appends s escaped, at most cap bytes of it: a longer value is cut after the last whole unit
 * that leaves room for "..." and gets "..." appended.
 */
static void
put_escaped(struct out *o, const char *s, enum esc esc, size_t cap)
{
    char *start = o->p, *cut = NULL;
    while (*s != '\0') {
        char unit[8];
        size_t used, n = escape_unit(s, esc, unit, &used);
        size_t have = (size_t)(o->p - start);
        if (cut == NULL && have + n > cap - 3)
            cut = o->p;
        if (have + n > cap) {
            o->p = cut;
            put(o, "...", 3);
            return;
        }
        put(o, unit, n);
        s += used;
    }
}

/* A combined quoted field's content, or "-". */
static void
put_quoted(struct out *o, const char *s, size_t cap)
{
    if (s == NULL)
        put(o, "-", 1);
    else
        put_escaped(o, s, ESC_QUOTED, cap);
}

/* A JSON member: ,"key":"value" or ,"key":null (no comma for the first). */
static void
put_json_str(struct out *o, const char *key, const char *s, size_t cap)
{
    put_str(o, key);
    if (s == NULL) {
        put(o, "null", 4);
        return;
    }
    put(o, "\"", 1);
    put_escaped(o, s, ESC_JSON, cap);
    put(o, "\"", 1);
}

/* HH:MM:SS, the same in both formats. */
static void
put_hms(struct out *o, const struct civil *t)
{
    put_uint(o, t->hour, 2);
    put(o, ":", 1);
    put_uint(o, t->min, 2);
    put(o, ":", 1);
    put_uint(o, t->sec, 2);
}

static void
format_combined(struct out *o, const struct cdn_accesslog_entry *e, const struct civil *t,
                unsigned status)
{
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    if (e->client == NULL)
        put(o, "-", 1);
    else
        put_escaped(o, e->client, ESC_BARE, CAP_CLIENT);
    put_str(o, " - - [");
    put_uint(o, t->day, 2);
    put(o, "/", 1);
    put(o, months[t->month - 1], 3);
    put(o, "/", 1);
    put_uint(o, t->year, 4);
    put(o, ":", 1);
    put_hms(o, t);
    put_str(o, " +0000] \"");
    put_quoted(o, e->method, CAP_METHOD);
    put(o, " ", 1);
    put_quoted(o, e->target, CAP_TARGET);
    put(o, " ", 1);
    put_quoted(o, e->version, CAP_VERSION);
    put_str(o, "\" ");
    put_uint(o, status, 1);
    put(o, " ", 1);
    put_uint(o, e->bytes, 1);
    put_str(o, " \"");
    put_quoted(o, e->referer, CAP_REFERER);
    put_str(o, "\" \"");
    put_quoted(o, e->user_agent, CAP_USER_AGENT);
    put_str(o, "\" cache=");
    if (e->outcome == NULL)
        put(o, "-", 1);
    else
        put_escaped(o, e->outcome, ESC_BARE, CAP_OUTCOME);
    put_str(o, " origin_ms=");
    if (e->origin_ms < 0)
        put(o, "-", 1);
    else
        put_ms(o, e->origin_ms);
    put_str(o, " total_ms=");
    put_ms(o, e->total_ms);
}

static void
format_json(struct out *o, const struct cdn_accesslog_entry *e, const struct civil *t,
            unsigned status)
{
    put_str(o, "{\"time\":\"");
    put_uint(o, t->year, 4);
    put(o, "-", 1);
    put_uint(o, t->month, 2);
    put(o, "-", 1);
    put_uint(o, t->day, 2);
    put(o, "T", 1);
    put_hms(o, t);
    put(o, ".", 1);
    put_uint(o, e->wall_ms > 999 ? 999 : e->wall_ms, 3);
    put(o, "Z\"", 2);
    put_json_str(o, ",\"client\":", e->client, CAP_CLIENT);
    put_json_str(o, ",\"method\":", e->method, CAP_METHOD);
    put_json_str(o, ",\"target\":", e->target, CAP_TARGET);
    put_json_str(o, ",\"protocol\":", e->version, CAP_VERSION);
    put_str(o, ",\"status\":");
    put_uint(o, status, 1);
    put_str(o, ",\"bytes\":");
    put_uint(o, e->bytes, 1);
    put_json_str(o, ",\"referer\":", e->referer, CAP_REFERER);
    put_json_str(o, ",\"user_agent\":", e->user_agent, CAP_USER_AGENT);
    put_json_str(o, ",\"cache\":", e->outcome, CAP_OUTCOME);
    put_str(o, ",\"origin_ms\":");
    if (e->origin_ms < 0)
        put(o, "null", 4);
    else
        put_ms(o, e->origin_ms);
    put_str(o, ",\"total_ms\":");
    put_ms(o, e->total_ms);
    put(o, "}", 1);
}

size_t
cdn_accesslog_format(const struct cdn_accesslog_entry *e, enum cdn_accesslog_format fmt, char *buf,
                     size_t len)
{
    CDN_ASSERT(len >= CDN_ACCESSLOG_LINE_MAX);
    struct out o = {buf, buf + CDN_ACCESSLOG_LINE_MAX - 2};
    int64_t wall = e->wall_s < 0 ? 0 : e->wall_s > WALL_MAX ? WALL_MAX : e->wall_s;
    struct civil t = civil_time(wall);
    unsigned status = e->status < 0 ? 0 : e->status > 999 ? 999 : (unsigned)e->status;
    if (fmt == CDN_ACCESSLOG_JSON)
        format_json(&o, e, &t, status);
    else
        format_combined(&o, e, &t, status);
    *o.p++ = '\n';
    *o.p = '\0';
    return (size_t)(o.p - buf);
}

int
cdn_accesslog_parse_format(const char *s, enum cdn_accesslog_format *out)
{
    if (strcmp(s, "combined") == 0)
        *out = CDN_ACCESSLOG_COMBINED;
    else if (strcmp(s, "json") == 0)
        *out = CDN_ACCESSLOG_JSON;
    else
        return CDN_EINVAL;
    return 0;
}

/* --- output ----------------------------------------------------------------------------------- */

static int
open_file(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

int
cdn_accesslog_open(const char *spec, enum cdn_accesslog_format format, struct cdn_accesslog **out)
{
    if (spec == NULL || spec[0] == '\0')
        return CDN_EINVAL;
    int fd = -1;
    char *path = NULL;
    if (strcmp(spec, "stderr") == 0) {
        fd = STDERR_FILENO;
    } else if (strcmp(spec, "off") != 0) {
        fd = open_file(spec);
        if (fd < 0)
            return CDN_EIO;
        path = cdn_strdup(spec);
    }
    struct cdn_accesslog *l = cdn_calloc(1, sizeof(*l));
    l->magic = ACCESSLOG_MAGIC;
    atomic_init(&l->format, (int)format);
    atomic_init(&l->fd, fd);
    l->file_fd = path != NULL ? fd : -1;
    l->path = path;
    atomic_init(&l->failed, 0);
    atomic_init(&l->warned, false);
    *out = l;
    return 0;
}

void
cdn_accesslog_write(struct cdn_accesslog *l, const struct cdn_accesslog_entry *e)
{
    CDN_CHECK_MAGIC(l, ACCESSLOG_MAGIC);
    int fd = atomic_load_explicit(&l->fd, memory_order_acquire);
    if (fd < 0)
        return;
    char line[CDN_ACCESSLOG_LINE_MAX];
    size_t n = cdn_accesslog_format(
        e, (enum cdn_accesslog_format)atomic_load_explicit(&l->format, memory_order_relaxed),
        line, sizeof(line));
    ssize_t w;
    do
        w = write(fd, line, n);
    while (w < 0 && errno == EINTR);
    if (w == (ssize_t)n)
        return;
    int saved = w < 0 ? errno : 0;
    atomic_fetch_add_explicit(&l->failed, 1, memory_order_relaxed);
    if (!atomic_exchange_explicit(&l->warned, true, memory_order_relaxed))
        cdn_warn("access log: write failed (%s); dropping lines until it works again",
                 saved != 0 ? strerror(saved) : "short write");
}

int
cdn_accesslog_reopen(struct cdn_accesslog *l)
{
    CDN_CHECK_MAGIC(l, ACCESSLOG_MAGIC);
    if (l->path == NULL)
        return 0;
    int fd = open_file(l->path);
    if (fd < 0)
        return CDN_EIO;
    /* dup2 keeps O_APPEND (it lives in the file description) but clears FD_CLOEXEC; dup3 sets it.
     */
    if (dup3(fd, l->file_fd, O_CLOEXEC) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return CDN_EIO;
    }
    close(fd);
    atomic_store_explicit(&l->warned, false, memory_order_relaxed);
    return 0;
}

int
cdn_accesslog_reconfigure(struct cdn_accesslog *l, const char *spec,
                          enum cdn_accesslog_format format)
{
    CDN_CHECK_MAGIC(l, ACCESSLOG_MAGIC);
    if (spec == NULL || spec[0] == '\0')
        return CDN_EINVAL;
    int fd = -1;
    char *path = NULL;
    if (strcmp(spec, "stderr") == 0) {
        fd = STDERR_FILENO;
    } else if (strcmp(spec, "off") != 0) {
        int nfd = open_file(spec);
        if (nfd < 0)
            return CDN_EIO;
        if (l->file_fd < 0) {
            l->file_fd = nfd;
        } else if (dup3(nfd, l->file_fd, O_CLOEXEC) < 0) { /* atomic, as for a reopen */
            int saved = errno;
            close(nfd);
            errno = saved;
            return CDN_EIO;
        } else {
            close(nfd);
        }
        fd = l->file_fd;
        path = cdn_strdup(spec);
    }
    free(l->path);
    l->path = path;
    atomic_store_explicit(&l->format, (int)format, memory_order_relaxed);
    atomic_store_explicit(&l->fd, fd, memory_order_release);
    atomic_store_explicit(&l->warned, false, memory_order_relaxed);
    return 0;
}

bool
cdn_accesslog_on(const struct cdn_accesslog *l)
{
    CDN_CHECK_MAGIC(l, ACCESSLOG_MAGIC);
    return atomic_load_explicit(&l->fd, memory_order_relaxed) >= 0;
}

uint64_t
cdn_accesslog_failed(const struct cdn_accesslog *l)
{
    CDN_CHECK_MAGIC(l, ACCESSLOG_MAGIC);
    return atomic_load_explicit(&l->failed, memory_order_relaxed);
}

void
cdn_accesslog_close(struct cdn_accesslog *l)
{
    if (l == NULL)
        return;
    CDN_CHECK_MAGIC(l, ACCESSLOG_MAGIC);
    if (l->file_fd >= 0)
        close(l->file_fd);
    free(l->path);
    l->magic = 0;
    free(l);
}
