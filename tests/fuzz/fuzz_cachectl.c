/*
 * Fuzz target for the parsers of cachectl.h: Cache-Control, RFC 8941 Dictionaries, targeted
 * fields, delta-seconds and HTTP-date. The whole input is one field value (not NUL-terminated:
 * the parsers take counted strings); its lines are also parsed as several field lines.
 *
 * Checks: spans point into the input, delta-seconds stay in [-1, CDN_DELTA_MAX], an invalid
 * targeted field leaves cc empty, and a parsed date formats to a string that parses back to it.
 */
#include "fuzz.h"

#include "cdnode/cachectl.h"
#include "cdnode/common.h"

#define DATE_MIN INT64_C(-62135596800) /* 0001-01-01T00:00:00Z */
#define DATE_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

static void
check_delta(int64_t v)
{
    FUZZ_CHECK(v == -1 || (v >= 0 && v <= CDN_DELTA_MAX));
}

static void
check_fields(const struct cdn_cc_fields *f, bool flag, const char *s, size_t n)
{
    FUZZ_CHECK(f->n <= CDN_CC_MAX_FIELDS);
    FUZZ_CHECK(f->n == 0 || flag);
    for (size_t i = 0; i < f->n; i++)
        FUZZ_CHECK(f->len[i] > 0 && (s == NULL || fuzz_within(f->name[i], f->len[i], s, n)));
}

/* s == NULL: the spans point into several lines, only their counts are checked. */
static void
check_cc(const struct cdn_cc *cc, const char *s, size_t n)
{
    check_delta(cc->max_age);
    check_delta(cc->s_maxage);
    check_delta(cc->stale_while_revalidate);
    check_delta(cc->stale_if_error);
    check_delta(cc->max_stale);
    check_delta(cc->min_fresh);
    check_fields(&cc->no_cache_fields, cc->no_cache, s, n);
    check_fields(&cc->private_fields, cc->private_, s, n);
}

static bool
cc_empty(const struct cdn_cc *cc)
{
    return cc->max_age == -1 && cc->s_maxage == -1 && cc->stale_while_revalidate == -1 &&
           cc->stale_if_error == -1 && cc->max_stale == -1 && cc->min_fresh == -1 &&
           !cc->no_cache && !cc->no_store && !cc->private_ && !cc->public_ &&
           !cc->must_revalidate && !cc->proxy_revalidate && !cc->must_understand &&
           !cc->immutable && !cc->no_transform && !cc->only_if_cached &&
           cc->no_cache_fields.n == 0 && cc->private_fields.n == 0;
}

static void
check_dict(const struct cdn_sf_dict *d, const char *s, size_t n)
{
    FUZZ_CHECK(d->n <= CDN_SF_MAX_MEMBERS);
    for (size_t i = 0; i < d->n; i++) {
        const struct cdn_sf_member *m = &d->m[i];
        FUZZ_CHECK(m->klen > 0 && fuzz_within(m->key, m->klen, s, n));
        /* A bare key is Boolean true with the text "?1" that is not in the input. */
        FUZZ_CHECK(m->type == CDN_SF_BOOLEAN || fuzz_within(m->str, m->len, s, n));
        FUZZ_CHECK(fuzz_within(m->params, m->params_len, s, n));
        FUZZ_CHECK(m->n_params == 0 || (m->params_len > 0 && m->params[0] == ';'));
        if (m->type == CDN_SF_BOOLEAN)
            FUZZ_CHECK(m->len == 2 && m->str[0] == '?' && m->str[1] == (m->boolean ? '1' : '0'));
        for (size_t j = 0; j < i; j++) /* a duplicate key overwrites, it is not repeated */
            FUZZ_CHECK(m->klen != d->m[j].klen || memcmp(m->key, d->m[j].key, m->klen) != 0);
    }
}

static void
check_date(const char *s, size_t n, int64_t ref)
{
    int64_t t;
    if (cdn_http_date_parse(s, n, ref, &t) != 0)
        return;
    char buf[CDN_HTTP_DATE_LEN + 1];
    cdn_http_date_format(t, buf);
    FUZZ_CHECK(strlen(buf) == CDN_HTTP_DATE_LEN);
    int64_t back;
    FUZZ_CHECK(cdn_http_date_parse(buf, CDN_HTTP_DATE_LEN, ref, &back) == 0);
    if (t >= DATE_MIN && t <= DATE_MAX)
        FUZZ_CHECK(back == t);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    const char *s = (const char *)data;
    struct cdn_cc cc;
    cdn_cc_init(&cc);
    FUZZ_CHECK(cc_empty(&cc));
    cdn_cc_parse(s, size, &cc);
    check_cc(&cc, s, size);

    struct cdn_sf_dict d;
    int rc = cdn_sf_parse_dict(s, size, &d);
    FUZZ_CHECK(rc == 0 || rc == CDN_EINVAL || rc == CDN_ETOOBIG);
    if (rc == 0)
        check_dict(&d, s, size);

    cdn_cc_init(&cc);
    rc = cdn_cc_parse_targeted(s, size, &cc);
    FUZZ_CHECK(rc == 0 || rc == CDN_EINVAL);
    check_cc(&cc, s, size);
    if (rc != 0)
        FUZZ_CHECK(cc_empty(&cc));

    /* Surrogate-Control: with and without a device token. */
    for (int dev = 0; dev < 2; dev++) {
        cdn_cc_init(&cc);
        rc = cdn_cc_parse_surrogate(s, size, dev ? "node-a" : NULL, &cc);
        FUZZ_CHECK(rc == 0 || rc == CDN_EINVAL);
        check_cc(&cc, s, size);
        if (rc != 0)
            FUZZ_CHECK(cc_empty(&cc));
    }

    int64_t v;
    if (cdn_delta_seconds_parse(s, size, &v) == 0) {
        FUZZ_CHECK(size > 0 && v >= 0 && v <= CDN_DELTA_MAX);
        for (size_t i = 0; i < size; i++)
            FUZZ_CHECK(s[i] >= '0' && s[i] <= '9');
    }

    check_date(s, size, INT64_C(1700000000));
    check_date(s, size, 0);

    /* The same bytes as field lines of a response. */
    struct cdn_arena *a = cdn_arena_new(1024);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    const char *pos = s, *end = s + size, *line;
    size_t len;
    while (fuzz_line(&pos, end, &line, &len)) {
        cdn_hdrs_add_copy(&h, "Cache-Control", 13, line, len);
        cdn_hdrs_add_copy(&h, (len & 1) ? "CDN-Cache-Control" : "Surrogate-Control", 17, line,
                          len);
    }
    size_t lines = cdn_cc_from_hdrs(&h, "cache-control", &cc);
    FUZZ_CHECK(lines == h.n / 2);
    check_cc(&cc, NULL, 0);
    static const char *const names[] = {"CDN-Cache-Control", "Surrogate-Control"};
    int which = cdn_cc_targeted_from_hdrs(&h, names, 2, "node-a", &cc);
    FUZZ_CHECK(which >= -1 && which < 2);
    check_cc(&cc, NULL, 0);
    if (which == -1)
        FUZZ_CHECK(cc_empty(&cc));
    cdn_arena_free(a);
    return 0;
}
