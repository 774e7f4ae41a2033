/*
 * Unit tests for the access log: both formats on typical entries, escaping of hostile header
 * values, field bounds (a long value is cut, the line still ends in '\n' and keeps its timings),
 * the calendar arithmetic against gmtime_r, and the outputs: stderr, off, a file, rotation by
 * reopen (also under concurrent writers), and failed writes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/accesslog.h"
#include "cdnode/common.h"
#include "cdnode/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 2024-01-02T03:04:05.678Z */
#define T0 1704164645

static struct cdn_accesslog_entry
typical(void)
{
    struct cdn_accesslog_entry e = {
        .client = "192.0.2.7",
        .method = "GET",
        .target = "/a?b=1",
        .version = "HTTP/1.1",
        .status = 200,
        .bytes = 5120,
        .referer = NULL,
        .user_agent = "curl/8.5.0",
        .outcome = "hit",
        .origin_ms = -1,
        .total_ms = 0.412,
        .wall_s = T0,
        .wall_ms = 678,
    };
    return e;
}

static char *
format(const struct cdn_accesslog_entry *e, enum cdn_accesslog_format fmt)
{
    static char buf[CDN_ACCESSLOG_LINE_MAX];
    memset(buf, 'X', sizeof(buf));
    size_t n = cdn_accesslog_format(e, fmt, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    assert_true(n >= 1 && n <= CDN_ACCESSLOG_LINE_MAX - 1);
    assert_int_equal(buf[n - 1], '\n');
    assert_null(memchr(buf, '\n', n - 1)); /* exactly one line */
    return buf;
}

/* --- formats ---------------------------------------------------------------------------------- */

/* Changes applied to the typical entry, and the line each format gives for it. */
struct format_case {
    const char *name;
    void (*edit)(struct cdn_accesslog_entry *e);
    const char *combined, *json;
};

static void
edit_none(struct cdn_accesslog_entry *e)
{
    (void)e;
}

static void
edit_miss(struct cdn_accesslog_entry *e)
{
    e->client = "2001:db8::1";
    e->method = "POST";
    e->target = "/api/v1/items?x=%20y";
    e->version = "HTTP/1.0";
    e->status = 502;
    e->bytes = 0;
    e->referer = "https://example.com/page";
    e->user_agent = "Mozilla/5.0 (X11; Linux x86_64)";
    e->outcome = "miss";
    e->origin_ms = 12.3456;
    e->total_ms = 13.0004;
    e->wall_s = 0;
    e->wall_ms = 5;
}

static void
edit_nulls(struct cdn_accesslog_entry *e)
{
    memset(e, 0, sizeof(*e));
    e->origin_ms = -0.5;
}

static void
edit_extremes(struct cdn_accesslog_entry *e)
{
    e->status = 1000;
    e->bytes = UINT64_MAX;
    e->origin_ms = 0;
    e->total_ms = 1e300;
    e->wall_s = INT64_MAX;
    e->wall_ms = 5000;
    e->referer = "";
    e->user_agent = "";
}

static void
edit_negative(struct cdn_accesslog_entry *e)
{
    e->status = -1;
    e->total_ms = -3;
    e->origin_ms = 0.0004; /* rounds to 0.000 but is there */
    e->wall_s = -86400;
    e->outcome = "revalidated";
}

static void
edit_leap_day(struct cdn_accesslog_entry *e)
{
    e->wall_s = 951868799; /* 2000-02-29T23:59:59Z */
    e->wall_ms = 999;
    e->outcome = "stale";
    e->total_ms = 999.9996; /* rounds up across the decimal point */
}

static const struct format_case format_cases[] = {
    {"typical", edit_none,
     "192.0.2.7 - - [02/Jan/2024:03:04:05 +0000] \"GET /a?b=1 HTTP/1.1\" 200 5120 \"-\" "
     "\"curl/8.5.0\" cache=hit origin_ms=- total_ms=0.412\n",
     "{\"time\":\"2024-01-02T03:04:05.678Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\","
     "\"target\":\"/a?b=1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":5120,"
     "\"referer\":null,\"user_agent\":\"curl/8.5.0\",\"cache\":\"hit\",\"origin_ms\":null,"
     "\"total_ms\":0.412}\n"},
    {"miss", edit_miss,
     "2001:db8::1 - - [01/Jan/1970:00:00:00 +0000] \"POST /api/v1/items?x=%20y HTTP/1.0\" 502 0 "
     "\"https://example.com/page\" \"Mozilla/5.0 (X11; Linux x86_64)\" cache=miss "
     "origin_ms=12.346 total_ms=13.000\n",
     "{\"time\":\"1970-01-01T00:00:00.005Z\",\"client\":\"2001:db8::1\",\"method\":\"POST\","
     "\"target\":\"/api/v1/items?x=%20y\",\"protocol\":\"HTTP/1.0\",\"status\":502,\"bytes\":0,"
     "\"referer\":\"https://example.com/page\",\"user_agent\":\"Mozilla/5.0 (X11; Linux x86_64)\","
     "\"cache\":\"miss\",\"origin_ms\":12.346,\"total_ms\":13.000}\n"},
    {"nulls", edit_nulls,
     "- - - [01/Jan/1970:00:00:00 +0000] \"- - -\" 0 0 \"-\" \"-\" cache=- origin_ms=- "
     "total_ms=0.000\n",
     "{\"time\":\"1970-01-01T00:00:00.000Z\",\"client\":null,\"method\":null,\"target\":null,"
     "\"protocol\":null,\"status\":0,\"bytes\":0,\"referer\":null,\"user_agent\":null,"
     "\"cache\":null,\"origin_ms\":null,\"total_ms\":0.000}\n"},
    {"extremes", edit_extremes,
     "192.0.2.7 - - [31/Dec/9999:23:59:59 +0000] \"GET /a?b=1 HTTP/1.1\" 999 "
     "18446744073709551615 \"\" \"\" cache=hit origin_ms=0.000 total_ms=1000000000000.000\n",
     "{\"time\":\"9999-12-31T23:59:59.999Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\","
     "\"target\":\"/a?b=1\",\"protocol\":\"HTTP/1.1\",\"status\":999,"
     "\"bytes\":18446744073709551615,\"referer\":\"\",\"user_agent\":\"\",\"cache\":\"hit\","
     "\"origin_ms\":0.000,\"total_ms\":1000000000000.000}\n"},
    {"negative", edit_negative,
     "192.0.2.7 - - [01/Jan/1970:00:00:00 +0000] \"GET /a?b=1 HTTP/1.1\" 0 5120 \"-\" "
     "\"curl/8.5.0\" cache=revalidated origin_ms=0.000 total_ms=0.000\n",
     "{\"time\":\"1970-01-01T00:00:00.678Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\","
     "\"target\":\"/a?b=1\",\"protocol\":\"HTTP/1.1\",\"status\":0,\"bytes\":5120,"
     "\"referer\":null,\"user_agent\":\"curl/8.5.0\",\"cache\":\"revalidated\","
     "\"origin_ms\":0.000,\"total_ms\":0.000}\n"},
    {"leap day", edit_leap_day,
     "192.0.2.7 - - [29/Feb/2000:23:59:59 +0000] \"GET /a?b=1 HTTP/1.1\" 200 5120 \"-\" "
     "\"curl/8.5.0\" cache=stale origin_ms=- total_ms=1000.000\n",
     "{\"time\":\"2000-02-29T23:59:59.999Z\",\"client\":\"192.0.2.7\",\"method\":\"GET\","
     "\"target\":\"/a?b=1\",\"protocol\":\"HTTP/1.1\",\"status\":200,\"bytes\":5120,"
     "\"referer\":null,\"user_agent\":\"curl/8.5.0\",\"cache\":\"stale\",\"origin_ms\":null,"
     "\"total_ms\":1000.000}\n"},
};

static void
test_format_combined(void **state)
{
    (void)state;
    for (size_t i = 0; i < CDN_ARRAY_LEN(format_cases); i++) {
        struct cdn_accesslog_entry e = typical();
        format_cases[i].edit(&e);
        const char *got = format(&e, CDN_ACCESSLOG_COMBINED);
        if (strcmp(got, format_cases[i].combined) != 0)
            fail_msg("%s:\n got  %s want %s", format_cases[i].name, got, format_cases[i].combined);
    }
}

static void
test_format_json(void **state)
{
    (void)state;
    for (size_t i = 0; i < CDN_ARRAY_LEN(format_cases); i++) {
        struct cdn_accesslog_entry e = typical();
        format_cases[i].edit(&e);
        const char *got = format(&e, CDN_ACCESSLOG_JSON);
        if (strcmp(got, format_cases[i].json) != 0)
            fail_msg("%s:\n got  %s want %s", format_cases[i].name, got, format_cases[i].json);
    }
}

/* --- escaping --------------------------------------------------------------------------------- */

/* A hostile User-Agent and how each format writes it (between its quotes). */
static const struct {
    const char *in, *combined, *json;
} escape_cases[] = {
    {"plain text 1.0", "plain text 1.0", "plain text 1.0"},
    {"a\nb", "a\\x0ab", "a\\nb"},
    {"x\r\n127.0.0.1 - - [fake] \"GET / HTTP/1.1\" 200",
     "x\\x0d\\x0a127.0.0.1 - - [fake] \\\"GET / HTTP/1.1\\\" 200",
     "x\\r\\n127.0.0.1 - - [fake] \\\"GET / HTTP/1.1\\\" 200"},
    {"q\"uo\"te", "q\\\"uo\\\"te", "q\\\"uo\\\"te"},
    {"back\\slash\\", "back\\\\slash\\\\", "back\\\\slash\\\\"},
    {"\\\"", "\\\\\\\"", "\\\\\\\""},
    {"\t\b\f\v\x01\x1f\x7f", "\\x09\\x08\\x0c\\x0b\\x01\\x1f\\x7f",
     "\\t\\b\\f\\u000b\\u0001\\u001f\\u007f"},
    {"\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m", "\\u001b[31mred\\u001b[0m"},
    /* UTF-8: kept in JSON, hex in combined */
    {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
     "caf\\xc3\\xa9 \\xe2\\x82\\xac \\xf0\\x9f\\x98\\x80",
     "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
    /* C1 controls (U+0085 NEL, U+009B CSI) are escaped even as valid UTF-8; a raw 0x9b too */
    {"\xc2\x85\xc2\x9b\x9b", "\\xc2\\x85\\xc2\\x9b\\x9b", "\\u0085\\u009b\\u009b"},
    /* not UTF-8: lone bytes, overlong, surrogate, beyond U+10FFFF, truncated sequence */
    {"\xff\xfe", "\\xff\\xfe", "\\u00ff\\u00fe"},
    {"\xc0\xaf", "\\xc0\\xaf", "\\u00c0\\u00af"},
    {"\xed\xa0\x80", "\\xed\\xa0\\x80", "\\u00ed\\u00a0\\u0080"},
    {"\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80", "\\u00f4\\u0090\\u0080\\u0080"},
    {"\xe2\x82", "\\xe2\\x82", "\\u00e2\\u0082"},
    {"\xe2\x82x", "\\xe2\\x82x", "\\u00e2\\u0082x"},
};

/* The text between `"prefix` and the next unescaped quote in line. */
static void
field_after(const char *line, const char *prefix, char *out, size_t outlen)
{
    const char *p = strstr(line, prefix);
    assert_non_null(p);
    p += strlen(prefix);
    size_t n = 0;
    while (*p != '"') {
        assert_true(*p != '\0' && *p != '\n');
        if (*p == '\\')
            out[n++] = *p++;
        out[n++] = *p++;
        assert_true(n < outlen);
    }
    out[n] = '\0';
}

static void
test_escape_hostile(void **state)
{
    (void)state;
    for (size_t i = 0; i < CDN_ARRAY_LEN(escape_cases); i++) {
        struct cdn_accesslog_entry e = typical();
        char got[512];
        /* The same escaping applies to every quoted field: try it in the UA and the target. */
        e.user_agent = escape_cases[i].in;
        const char *line = format(&e, CDN_ACCESSLOG_COMBINED);
        field_after(line, "\"-\" \"", got, sizeof(got)); /* after the (absent) referer */
        if (strcmp(got, escape_cases[i].combined) != 0)
            fail_msg("case %zu combined: got '%s' want '%s'", i, got, escape_cases[i].combined);
        assert_non_null(strstr(line, "\" cache=hit origin_ms=- total_ms=0.412\n"));

        line = format(&e, CDN_ACCESSLOG_JSON);
        field_after(line, "\"user_agent\":\"", got, sizeof(got));
        if (strcmp(got, escape_cases[i].json) != 0)
            fail_msg("case %zu json: got '%s' want '%s'", i, got, escape_cases[i].json);
        for (const char *p = line; *p != '\n'; p++)
            assert_true((unsigned char)*p >= 0x20 && *p != 0x7f);

        e.user_agent = NULL;
        e.target = escape_cases[i].in;
        line = format(&e, CDN_ACCESSLOG_JSON);
        field_after(line, "\"target\":\"", got, sizeof(got));
        assert_string_equal(got, escape_cases[i].json);
    }
}

static void
test_escape_bare_fields(void **state)
{
    (void)state;
    /* The unquoted combined fields must not gain a space, a quote or a line break. */
    struct cdn_accesslog_entry e = typical();
    e.client = "1.2.3.4 \"x\"\n";
    e.outcome = "hit fwd=uri-miss";
    assert_string_equal(format(&e, CDN_ACCESSLOG_COMBINED),
                        "1.2.3.4\\x20\\\"x\\\"\\x0a - - [02/Jan/2024:03:04:05 +0000] "
                        "\"GET /a?b=1 HTTP/1.1\" 200 5120 \"-\" \"curl/8.5.0\" "
                        "cache=hit\\x20fwd=uri-miss origin_ms=- total_ms=0.412\n");
    assert_non_null(
        strstr(format(&e, CDN_ACCESSLOG_JSON), "\"client\":\"1.2.3.4 \\\"x\\\"\\n\",\"method\""));
}

/* --- bounds ----------------------------------------------------------------------------------- */

static char *
repeat(const char *unit, size_t times)
{
    size_t n = strlen(unit);
    char *s = cdn_malloc(n * times + 1);
    for (size_t i = 0; i < times; i++)
        memcpy(s + i * n, unit, n);
    s[n * times] = '\0';
    return s;
}

static void
test_long_values_cut(void **state)
{
    (void)state;
    /* Each field's bound, in escaped bytes, and units that escape to 1, 2, 4 or 6 bytes. */
    static const struct {
        const char *unit;
        size_t combined_len, json_len; /* of the escaped field, "..." included */
    } cases[] = {
        {"A", 640, 640},            /* 637 units of 1, then "..." */
        {"\"", 639, 639},           /* \" : 318 units of 2 */
        {"\n", 639, 639},           /* \x0a: 159 units of 4; \n: 318 of 2 */
        {"\x01", 639, 639},         /* \x01: 159 of 4; \u0001: 106 of 6 */
        {"\xc3\xa9", 639, 639},     /* combined escapes bytes; json keeps whole characters */
        {"\xe2\x82\xac", 639, 639}, /* json: 212 characters of 3 bytes */
        {"A\x01", 639, 640},        /* units of 1 and 4 (6): the cut falls between them */
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(cases); i++) {
        char *ua = repeat(cases[i].unit, 100000);
        struct cdn_accesslog_entry e = typical();
        e.user_agent = ua;
        char got[1024];
        const char *line = format(&e, CDN_ACCESSLOG_COMBINED);
        field_after(line, "\"-\" \"", got, sizeof(got));
        assert_int_equal(strlen(got), cases[i].combined_len);
        assert_string_equal(got + strlen(got) - 3, "...");
        assert_non_null(strstr(line, "...\" cache=hit origin_ms=- total_ms=0.412\n"));
        line = format(&e, CDN_ACCESSLOG_JSON);
        field_after(line, "\"user_agent\":\"", got, sizeof(got));
        assert_int_equal(strlen(got), cases[i].json_len);
        assert_string_equal(got + strlen(got) - 3, "...");
        assert_non_null(strstr(line, "...\",\"cache\":\"hit\",\"origin_ms\":null,"
                                     "\"total_ms\":0.412}\n"));
        /* Cut between whole characters: before "..." is the escaped unit, repeated. */
        struct cdn_accesslog_entry one = typical();
        one.user_agent = cases[i].unit;
        char unit[64];
        field_after(format(&one, CDN_ACCESSLOG_JSON), "\"user_agent\":\"", unit, sizeof(unit));
        size_t body = strlen(got) - 3, ulen = strlen(unit);
        assert_int_equal(body % ulen, 0);
        for (size_t k = 0; k < body; k += ulen)
            assert_memory_equal(got + k, unit, ulen);
        free(ua);
    }
    /* Just at the bound nothing is cut; one byte more is. */
    char *ua = repeat("A", 640);
    struct cdn_accesslog_entry e = typical();
    e.user_agent = ua;
    assert_non_null(strstr(format(&e, CDN_ACCESSLOG_COMBINED), "AAA\" cache=hit"));
    free(ua);
    ua = repeat("A", 641);
    e.user_agent = ua;
    assert_non_null(strstr(format(&e, CDN_ACCESSLOG_COMBINED), "AAA...\" cache=hit"));
    free(ua);
}

static void
test_worst_case_fits(void **state)
{
    (void)state;
    /* Every field as long as it can be, in the unit that escapes widest, with the widest numbers.
     */
    char *s = repeat("\x01", 10000);
    struct cdn_accesslog_entry e = {s, s, s,    s,    -5,        UINT64_MAX, s,
                                    s, s, 1e20, 1e20, INT64_MAX, 999};
    char buf[CDN_ACCESSLOG_LINE_MAX + 64];
    static const char *ends[] = {" total_ms=1000000000000.000\n",
                                 ",\"total_ms\":1000000000000.000}\n"};
    for (int fmt = 0; fmt < 2; fmt++) {
        memset(buf, 'Z', sizeof(buf));
        size_t n = cdn_accesslog_format(&e, (enum cdn_accesslog_format)fmt, buf, sizeof(buf));
        assert_true(n <= CDN_ACCESSLOG_LINE_MAX - 1);
        assert_int_equal(buf[n], '\0');
        assert_int_equal(buf[n + 1], 'Z'); /* nothing written past the NUL */
        size_t elen = strlen(ends[fmt]);
        assert_memory_equal(buf + n - elen, ends[fmt], elen);
    }
    free(s);
}

/* --- time ------------------------------------------------------------------------------------- */

static void
test_time_matches_gmtime(void **state)
{
    (void)state;
    /* Both sides of every month boundary from 1970 to 2400 (leap days, century years). */
    static const char *months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    struct cdn_accesslog_entry e = typical();
    for (int month = 0; month < (2400 - 1970) * 12; month++) {
        struct tm first = {.tm_year = 70 + month / 12, .tm_mon = month % 12, .tm_mday = 1};
        int64_t t = (int64_t)timegm(&first);
        int64_t probes[] = {t, t - 1, t + 86400 * 15 + 45296};
        for (size_t k = 0; k < CDN_ARRAY_LEN(probes); k++) {
            if (probes[k] < 0)
                continue;
            time_t tt = (time_t)probes[k];
            struct tm tm;
            assert_non_null(gmtime_r(&tt, &tm));
            char want[64];
            snprintf(want, sizeof(want), "[%02d/%s/%04d:%02d:%02d:%02d +0000]", tm.tm_mday,
                     months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
            e.wall_s = probes[k];
            const char *line = format(&e, CDN_ACCESSLOG_COMBINED);
            if (strstr(line, want) == NULL)
                fail_msg("t=%lld: want %s in %s", (long long)probes[k], want, line);
        }
    }
}

static void
test_parse_format(void **state)
{
    (void)state;
    enum cdn_accesslog_format f = CDN_ACCESSLOG_JSON;
    assert_int_equal(cdn_accesslog_parse_format("combined", &f), 0);
    assert_int_equal(f, CDN_ACCESSLOG_COMBINED);
    assert_int_equal(cdn_accesslog_parse_format("json", &f), 0);
    assert_int_equal(f, CDN_ACCESSLOG_JSON);
    static const char *bad[] = {"", "JSON", "common", "json ", "combine"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        assert_int_equal(cdn_accesslog_parse_format(bad[i], &f), CDN_EINVAL);
        assert_int_equal(f, CDN_ACCESSLOG_JSON);
    }
}

/* --- output ----------------------------------------------------------------------------------- */

/* The whole content of path ("" when it does not exist); caller frees. */
static char *
slurp(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return cdn_calloc(1, 1);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    char *buf = cdn_calloc(1, (size_t)st.st_size + 1);
    size_t n = 0;
    ssize_t r;
    while (n < (size_t)st.st_size && (r = read(fd, buf + n, (size_t)st.st_size - n)) > 0)
        n += (size_t)r;
    assert_int_equal(n, st.st_size);
    close(fd);
    return buf;
}

static size_t
count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

struct tmpdir {
    char dir[64], log[96], old[96];
};

static void
tmpdir_make(struct tmpdir *t)
{
    strcpy(t->dir, "/tmp/cdn_test_accesslog_XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->log, sizeof(t->log), "%s/access.log", t->dir);
    snprintf(t->old, sizeof(t->old), "%s/access.log.1", t->dir);
}

static void
tmpdir_remove(struct tmpdir *t)
{
    unlink(t->log);
    unlink(t->old);
    assert_int_equal(rmdir(t->dir), 0);
}

static void
test_file_and_reopen(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    struct cdn_accesslog *l;
    assert_int_equal(cdn_accesslog_open(t.log, CDN_ACCESSLOG_COMBINED, &l), 0);
    struct stat st;
    assert_int_equal(stat(t.log, &st), 0);
    assert_int_equal(st.st_mode & 0077 & ~0040, 0); /* no write or other access for others */
    struct cdn_accesslog_entry e = typical();
    cdn_accesslog_write(l, &e);
    e.status = 404;
    cdn_accesslog_write(l, &e);
    /* Rotated away: lines keep going to the renamed file until the reopen. */
    assert_int_equal(rename(t.log, t.old), 0);
    e.status = 201;
    cdn_accesslog_write(l, &e);
    assert_int_equal(cdn_accesslog_reopen(l), 0);
    e.status = 202;
    cdn_accesslog_write(l, &e);
    e.status = 203;
    cdn_accesslog_write(l, &e);

    char *old = slurp(t.old), *cur = slurp(t.log);
    assert_int_equal(count_lines(old), 3);
    assert_int_equal(count_lines(cur), 2);
    assert_non_null(strstr(old, "\" 200 5120 "));
    assert_non_null(strstr(old, "\" 404 5120 "));
    assert_non_null(strstr(old, "\" 201 5120 "));
    assert_null(strstr(old, "\" 202 "));
    assert_non_null(strstr(cur, "\" 202 5120 "));
    assert_non_null(strstr(cur, "\" 203 5120 "));
    free(old);
    free(cur);

    /* A reopen without a rotation appends to the same file (never truncates). */
    assert_int_equal(cdn_accesslog_reopen(l), 0);
    cdn_accesslog_write(l, &e);
    cur = slurp(t.log);
    assert_int_equal(count_lines(cur), 3);
    free(cur);

    /* A reopen that cannot open the path keeps the old file. */
    assert_int_equal(rename(t.log, t.old), 0);
    assert_int_equal(chmod(t.dir, 0500), 0);
    int rc = cdn_accesslog_reopen(l), err = errno;
    assert_int_equal(chmod(t.dir, 0700), 0);
    if (geteuid() != 0) { /* root opens it anyway */
        assert_int_equal(rc, CDN_EIO);
        assert_int_equal(err, EACCES);
        cdn_accesslog_write(l, &e);
        old = slurp(t.old);
        assert_int_equal(count_lines(old), 4);
        free(old);
    }
    assert_int_equal(cdn_accesslog_failed(l), 0);
    cdn_accesslog_close(l);

    /* A second log on an existing file appends to it, json this time. */
    assert_int_equal(cdn_accesslog_open(t.old, CDN_ACCESSLOG_JSON, &l), 0);
    cdn_accesslog_write(l, &e);
    cdn_accesslog_close(l);
    old = slurp(t.old);
    assert_true(count_lines(old) >= 4);
    assert_non_null(strstr(old, "\n{\"time\":\"2024-01-02T03:04:05.678Z\","));
    free(old);
    tmpdir_remove(&t);
}

static void
test_reopen_keeps_flags(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    struct cdn_accesslog *l;
    assert_int_equal(cdn_accesslog_open(t.log, CDN_ACCESSLOG_COMBINED, &l), 0);
    assert_int_equal(rename(t.log, t.old), 0);
    assert_int_equal(cdn_accesslog_reopen(l), 0);
    /* The descriptor is the only one this test did not open: find it by its path. */
    int found = -1;
    for (int fd = 3; fd < 1024 && found < 0; fd++) {
        char link[64], target[256];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strcmp(target, t.log) == 0)
                found = fd;
        }
    }
    assert_true(found >= 0);
    assert_true(fcntl(found, F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(found, F_GETFL) & O_APPEND);
    cdn_accesslog_close(l);
    assert_int_equal(fcntl(found, F_GETFD), -1); /* closed */
    tmpdir_remove(&t);
}

/* Runs fn with stderr sent to a temporary file and returns what was written there. */
static char *
capture_stderr(void (*fn)(void *), void *arg)
{
    char path[] = "/tmp/cdn_test_accesslog_err_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
    fn(arg);
    assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
    close(saved);
    close(fd);
    char *text = slurp(path);
    unlink(path);
    return text;
}

static void
write_three(void *arg)
{
    struct cdn_accesslog *l = arg;
    struct cdn_accesslog_entry e = typical();
    for (int i = 0; i < 3; i++)
        cdn_accesslog_write(l, &e);
    assert_int_equal(cdn_accesslog_reopen(l), 0); /* nothing to reopen */
}

static void
test_stderr_and_off(void **state)
{
    (void)state;
    struct cdn_accesslog *l;
    assert_int_equal(cdn_accesslog_open("stderr", CDN_ACCESSLOG_JSON, &l), 0);
    char *text = capture_stderr(write_three, l);
    assert_int_equal(count_lines(text), 3);
    assert_int_equal(strncmp(text, "{\"time\":", 8), 0);
    free(text);
    cdn_accesslog_close(l); /* must not close stderr */
    assert_true(fcntl(STDERR_FILENO, F_GETFD) >= 0);

    /* off writes nothing anywhere, and creates no file called "off". */
    char cwd[] = "/tmp/cdn_test_accesslog_cwd_XXXXXX", back[4096];
    assert_non_null(mkdtemp(cwd));
    assert_non_null(getcwd(back, sizeof(back)));
    assert_int_equal(chdir(cwd), 0);
    assert_int_equal(cdn_accesslog_open("off", CDN_ACCESSLOG_COMBINED, &l), 0);
    text = capture_stderr(write_three, l);
    assert_string_equal(text, "");
    free(text);
    assert_int_equal(access("off", F_OK), -1);
    assert_int_equal(cdn_accesslog_failed(l), 0);
    cdn_accesslog_close(l);
    assert_int_equal(chdir(back), 0);
    assert_int_equal(rmdir(cwd), 0);
    cdn_accesslog_close(NULL);
}

static void
test_open_errors(void **state)
{
    (void)state;
    struct cdn_accesslog *l = (struct cdn_accesslog *)&l;
    assert_int_equal(cdn_accesslog_open("", CDN_ACCESSLOG_COMBINED, &l), CDN_EINVAL);
    assert_int_equal(cdn_accesslog_open(NULL, CDN_ACCESSLOG_COMBINED, &l), CDN_EINVAL);
    assert_int_equal(cdn_accesslog_open("/nonexistent/dir/access.log", CDN_ACCESSLOG_COMBINED, &l),
                     CDN_EIO);
    assert_int_equal(errno, ENOENT);
    assert_int_equal(cdn_accesslog_open("/tmp", CDN_ACCESSLOG_COMBINED, &l), CDN_EIO);
    assert_int_equal(errno, EISDIR);
    assert_ptr_equal(l, (struct cdn_accesslog *)&l); /* untouched */
}

static void
write_full(void *arg)
{
    struct cdn_accesslog *l = arg;
    struct cdn_accesslog_entry e = typical();
    for (int i = 0; i < 5; i++)
        cdn_accesslog_write(l, &e);
}

static void
test_failed_writes_counted(void **state)
{
    (void)state;
    /* /dev/full fails every write with ENOSPC: counted, warned about once. */
    struct cdn_accesslog *l;
    assert_int_equal(cdn_accesslog_open("/dev/full", CDN_ACCESSLOG_COMBINED, &l), 0);
    char *text = capture_stderr(write_full, l);
    assert_true(cdn_accesslog_failed(l) == 5);
    assert_int_equal(count_lines(text), 1);
    assert_non_null(strstr(text, "access log: write failed (No space left on device)"));
    free(text);
    /* A reopen re-arms the warning. */
    assert_int_equal(cdn_accesslog_reopen(l), 0);
    text = capture_stderr(write_full, l);
    assert_true(cdn_accesslog_failed(l) == 10);
    assert_int_equal(count_lines(text), 1);
    free(text);
    cdn_accesslog_close(l);
}

/* --- concurrency ------------------------------------------------------------------------------ */

#define WRITERS 4
#define LINES_EACH 5000

struct writer {
    struct cdn_accesslog *l;
    int id;
};

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    char ua[64];
    snprintf(ua, sizeof(ua), "writer-%d", w->id);
    struct cdn_accesslog_entry e = typical();
    e.user_agent = ua;
    for (int i = 0; i < LINES_EACH; i++) {
        e.bytes = (uint64_t)i;
        cdn_accesslog_write(w->l, &e);
    }
    return NULL;
}

static void
test_concurrent_writers_and_reopen(void **state)
{
    (void)state;
    struct tmpdir t;
    tmpdir_make(&t);
    struct cdn_accesslog *l;
    assert_int_equal(cdn_accesslog_open(t.log, CDN_ACCESSLOG_COMBINED, &l), 0);
    pthread_t th[WRITERS];
    struct writer w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){l, i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    /* Rotate repeatedly while they write: rename onto the old file and reopen. */
    for (int r = 0; r < 50; r++) {
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
        assert_int_equal(rename(t.log, t.old), 0);
        assert_int_equal(cdn_accesslog_reopen(l), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    assert_int_equal(cdn_accesslog_failed(l), 0);
    cdn_accesslog_close(l);

    /* Every line that reached the current file is whole; none is torn. */
    char *cur = slurp(t.log);
    size_t lines = 0;
    for (char *p = cur, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1, lines++) {
        *nl = '\0';
        assert_int_equal(strncmp(p, "192.0.2.7 - - [02/Jan/2024:03:04:05 +0000] \"GET ", 48), 0);
        assert_non_null(strstr(p, "\" \"writer-"));
        const char *tail = " cache=hit origin_ms=- total_ms=0.412";
        assert_string_equal(p + strlen(p) - strlen(tail), tail);
    }
    assert_true(lines <= WRITERS * LINES_EACH);
    free(cur);
    tmpdir_remove(&t);
}

static void
test_concurrent_lines_whole(void **state)
{
    (void)state;
    /* Without rotation every line arrives, whole, in one file. */
    struct tmpdir t;
    tmpdir_make(&t);
    struct cdn_accesslog *l;
    assert_int_equal(cdn_accesslog_open(t.log, CDN_ACCESSLOG_JSON, &l), 0);
    pthread_t th[WRITERS];
    struct writer w[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (struct writer){l, i};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    cdn_accesslog_close(l);
    char *cur = slurp(t.log);
    size_t lines = 0, per[WRITERS] = {0};
    for (char *p = cur, *nl; (nl = strchr(p, '\n')) != NULL; p = nl + 1, lines++) {
        *nl = '\0';
        assert_int_equal(strncmp(p, "{\"time\":", 8), 0);
        const char *ua = strstr(p, "\"user_agent\":\"writer-");
        assert_non_null(ua);
        int id = ua[21] - '0';
        assert_in_range(id, 0, WRITERS - 1);
        per[id]++;
        assert_string_equal(p + strlen(p) - 2, "2}");
    }
    assert_int_equal(lines, WRITERS * LINES_EACH);
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(per[i], LINES_EACH);
    free(cur);
    tmpdir_remove(&t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_combined),
        cmocka_unit_test(test_format_json),
        cmocka_unit_test(test_escape_hostile),
        cmocka_unit_test(test_escape_bare_fields),
        cmocka_unit_test(test_long_values_cut),
        cmocka_unit_test(test_worst_case_fits),
        cmocka_unit_test(test_time_matches_gmtime),
        cmocka_unit_test(test_parse_format),
        cmocka_unit_test(test_file_and_reopen),
        cmocka_unit_test(test_reopen_keeps_flags),
        cmocka_unit_test(test_stderr_and_off),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_failed_writes_counted),
        cmocka_unit_test(test_concurrent_writers_and_reopen),
        cmocka_unit_test(test_concurrent_lines_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
