/* Unit tests for the caching policy: storing, freshness, age, decisions, revalidation,
 * conditionals, ranges and invalidation. One table row per case. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/cachectl.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"
#include "cdnode/policy.h"

#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "hdrs_of.h"

#define EQ(row, what, got, want)                                                                   \
    do {                                                                                           \
        int64_t g_ = (int64_t)(got), w_ = (int64_t)(want);                                         \
        if (g_ != w_)                                                                              \
            fail_msg("row %zu (%s): %s = %" PRId64 ", want %" PRId64, (size_t)(row), (what), #got, \
                     g_, w_);                                                                      \
    } while (0)

#define STREQ(row, what, got, want)                                                                \
    do {                                                                                           \
        if (strcmp((got), (want)) != 0)                                                            \
            fail_msg("row %zu (%s): \"%s\", want \"%s\"", (size_t)(row), (what), (got), (want));   \
    } while (0)

/* A list rendered as "Name: value|Name: value". */
static const char *
render(struct cdn_arena *a, const struct cdn_hdrs *h)
{
    const char *out = "";
    for (size_t i = 0; i < h->n; i++)
        out = cdn_arena_printf(a, "%s%s%.*s: %.*s", out, i ? "|" : "", (int)h->v[i].nlen,
                               h->v[i].name, (int)h->v[i].vlen, h->v[i].value);
    return out;
}

static const char *const targets[] = {"CDN-Cache-Control"};

/* Option sets referenced by rows: default, heuristics off, cap 1h, 50 %, grace 50 s. */
enum { O_DEF, O_OFF, O_CAP, O_HALF, O_GRACE };
static const struct cdn_policy_opts opts[] = {
    [O_DEF] = {10, 86400, targets, 1, NULL, 0},    [O_OFF] = {0, 86400, targets, 1, NULL, 0},
    [O_CAP] = {10, 3600, targets, 1, NULL, 0},     [O_HALF] = {50, 86400, targets, 1, NULL, 0},
    [O_GRACE] = {10, 86400, targets, 1, NULL, 50},
};

/* Row i: `cc` and `targeted`, which a function handed back for h, are what parsing h gives. */
static void
cc_matches(size_t i, const struct cdn_hdrs *h, const struct cdn_cc *cc, bool targeted)
{
    struct cdn_cc want;
    EQ(i, "targeted", targeted, cdn_response_cc(h, &opts[O_DEF], &want));
    EQ(i, "max-age", cc->max_age, want.max_age);
    EQ(i, "s-maxage", cc->s_maxage, want.s_maxage);
    EQ(i, "no-cache", cc->no_cache, want.no_cache);
    EQ(i, "no-cache fields", cc->no_cache_fields.n, want.no_cache_fields.n);
    EQ(i, "private", cc->private_, want.private_);
    EQ(i, "must-revalidate", cc->must_revalidate, want.must_revalidate);
    EQ(i, "public", cc->public_, want.public_);
}

#define D0 "Mon, 01 Jan 2024 00:00:00 GMT" /* T0 */
#define T0 INT64_C(1704067200)
#define D0_PLUS_1H "Mon, 01 Jan 2024 01:00:00 GMT"
#define D0_MINUS_1H "Sun, 31 Dec 2023 23:00:00 GMT"
#define D0_MINUS_1D "Sun, 31 Dec 2023 00:00:00 GMT"
#define D0_MINUS_100D "Sat, 23 Sep 2023 00:00:00 GMT"
#define D0_MINUS_30S "Sun, 31 Dec 2023 23:59:30 GMT"
#define D0_MINUS_60S "Sun, 31 Dec 2023 23:59:00 GMT"
#define D0_PLUS_1D "Tue, 02 Jan 2024 00:00:00 GMT"
#define BIG CDN_DELTA_MAX

/* ---- Storing ----------------------------------------------------------------------------------
 */

static void
test_storable(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        const char *req;
        int status;
        const char *resp;
        enum cdn_store_verdict want;
    } rows[] = {
        {"GET", "", 200, "Cache-Control: max-age=60", CDN_STORE_OK},
        {"GET", "", 200, "", CDN_STORE_OK}, /* heuristically cacheable */
        {"HEAD", "", 200, "Cache-Control: max-age=60", CDN_NOSTORE_METHOD},
        {"POST", "", 200, "Cache-Control: max-age=60", CDN_NOSTORE_METHOD},
        {"get", "", 200, "Cache-Control: max-age=60", CDN_NOSTORE_METHOD},
        {"GET", "", 100, "Cache-Control: max-age=60", CDN_NOSTORE_STATUS},
        {"GET", "", 199, "Cache-Control: max-age=60", CDN_NOSTORE_STATUS},
        {"GET", "", 206, "Cache-Control: max-age=60", CDN_NOSTORE_STATUS},
        {"GET", "", 304, "Cache-Control: max-age=60", CDN_NOSTORE_STATUS},
        {"GET", "", 600, "Cache-Control: max-age=60", CDN_NOSTORE_STATUS},
        {"GET", "", 302, "", CDN_NOSTORE_NOT_CACHEABLE},
        {"GET", "", 302, "Cache-Control: max-age=60", CDN_STORE_OK},
        {"GET", "", 302, "Cache-Control: s-maxage=60", CDN_STORE_OK},
        {"GET", "", 302, "Expires: " D0_PLUS_1H, CDN_STORE_OK},
        {"GET", "", 302, "Expires: 0", CDN_STORE_OK}, /* stored, but already stale */
        {"GET", "", 500, "", CDN_NOSTORE_NOT_CACHEABLE},
        {"GET", "", 500, "Cache-Control: public", CDN_STORE_OK},
        {"GET", "", 299, "", CDN_NOSTORE_NOT_CACHEABLE},
        {"GET", "", 299, "Cache-Control: max-age=5", CDN_STORE_OK},
        {"GET", "Cache-Control: no-store", 200, "Cache-Control: max-age=60",
         CDN_NOSTORE_REQ_NO_STORE},
        {"GET", "", 200, "Cache-Control: no-store", CDN_NOSTORE_NO_STORE},
        {"GET", "", 200, "Cache-Control: max-age=60, NO-STORE", CDN_NOSTORE_NO_STORE},
        {"GET", "", 200, "Cache-Control: no-store, must-understand", CDN_STORE_OK},
        {"GET", "", 299, "Cache-Control: no-store, must-understand", CDN_NOSTORE_MUST_UNDERSTAND},
        {"GET", "", 299, "Cache-Control: max-age=60, must-understand", CDN_NOSTORE_MUST_UNDERSTAND},
        {"GET", "", 200, "Cache-Control: private", CDN_NOSTORE_PRIVATE},
        {"GET", "", 200, "Cache-Control: private, max-age=60", CDN_NOSTORE_PRIVATE},
        {"GET", "", 200, "Cache-Control: private=\"Set-Cookie\", max-age=60", CDN_STORE_OK},
        {"GET", "Authorization: Basic x", 200, "Cache-Control: max-age=60",
         CDN_NOSTORE_AUTHORIZATION},
        {"GET", "Authorization: Basic x", 200, "", CDN_NOSTORE_AUTHORIZATION},
        {"GET", "Authorization: Basic x", 200, "Cache-Control: public", CDN_STORE_OK},
        {"GET", "Authorization: Basic x", 200, "Cache-Control: s-maxage=60", CDN_STORE_OK},
        {"GET", "Authorization: Basic x", 200, "Cache-Control: must-revalidate", CDN_STORE_OK},
        {"GET", "Authorization: Basic x", 200, "Cache-Control: proxy-revalidate, max-age=9",
         CDN_NOSTORE_AUTHORIZATION},
        {"GET", "", 200, "Vary: *", CDN_NOSTORE_VARY_STAR},
        {"GET", "", 200, "Vary: Accept\nVary: *", CDN_NOSTORE_VARY_STAR},
        {"GET", "", 200, "Vary: Accept, *", CDN_NOSTORE_VARY_STAR},
        {"GET", "", 200, "Vary: Accept-Encoding", CDN_STORE_OK},
        /* Set-Cookie: stored only when the origin addressed shared caches explicitly, or when
         * the cookie is stripped before storing */
        {"GET", "", 200, "Set-Cookie: a=1\nCache-Control: max-age=60", CDN_NOSTORE_SET_COOKIE},
        {"GET", "", 200, "Set-Cookie: a=1", CDN_NOSTORE_SET_COOKIE},
        {"GET", "", 200, "set-cookie: a=1\nExpires: " D0_PLUS_1H, CDN_NOSTORE_SET_COOKIE},
        {"GET", "", 200, "Set-Cookie: a=1\nCache-Control: public, max-age=60", CDN_STORE_OK},
        {"GET", "", 200, "Set-Cookie: a=1\nCache-Control: s-maxage=60", CDN_STORE_OK},
        {"GET", "", 200, "Set-Cookie: a=1\nCDN-Cache-Control: max-age=60", CDN_STORE_OK},
        {"GET", "", 200, "Set-Cookie: a=1\nCDN-Cache-Control: no-cache", CDN_NOSTORE_SET_COOKIE},
        {"GET", "", 200, "Set-Cookie: a=1\nCache-Control: max-age=60, private=\"set-cookie\"",
         CDN_STORE_OK},
        {"GET", "", 200, "Set-Cookie: a=1\nCache-Control: max-age=60, no-cache=\"Set-Cookie\"",
         CDN_STORE_OK},
        {"GET", "", 200, "Cache-Control: no-cache", CDN_STORE_OK},
        {"GET", "Pragma: no-cache", 200, "Cache-Control: max-age=60", CDN_STORE_OK},
        /* a valid targeted field replaces Cache-Control and Expires */
        {"GET", "", 200, "CDN-Cache-Control: no-store\nCache-Control: max-age=60",
         CDN_NOSTORE_NO_STORE},
        {"GET", "", 200, "CDN-Cache-Control: max-age=60\nCache-Control: no-store", CDN_STORE_OK},
        {"GET", "", 200, "CDN-Cache-Control: max-age=60\nCache-Control: private", CDN_STORE_OK},
        {"GET", "", 200, "CDN-Cache-Control: max-age=60,\nCache-Control: no-store",
         CDN_NOSTORE_NO_STORE},
        {"GET", "", 302, "CDN-Cache-Control: max-age=60", CDN_STORE_OK},
        {"GET", "", 302, "CDN-Cache-Control: must-revalidate\nExpires: " D0_PLUS_1H,
         CDN_NOSTORE_NOT_CACHEABLE},
        {"GET", "", 302, "CDN-Cache-Control: max-age=60,\nExpires: " D0_PLUS_1H, CDN_STORE_OK},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs req = hdrs_of(a, rows[i].req), resp = hdrs_of(a, rows[i].resp);
        enum cdn_store_verdict v =
            cdn_storable(rows[i].method, &req, rows[i].status, &resp, &opts[O_DEF]);
        if (v != rows[i].want)
            fail_msg("row %zu: %s, want %s", i, cdn_store_reason(v),
                     cdn_store_reason(rows[i].want));
        cdn_arena_free(a);
    }
    /* cache_set_cookie = on: Set-Cookie no longer matters. */
    struct cdn_policy_opts on = opts[O_DEF];
    on.cache_set_cookie = true;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs req = hdrs_of(a, ""),
                    resp = hdrs_of(a, "Set-Cookie: a=1\nCache-Control: max-age=60");
    assert_int_equal(cdn_storable("GET", &req, 200, &resp, &on), CDN_STORE_OK);
    assert_string_equal(cdn_store_reason(CDN_NOSTORE_SET_COOKIE), "set-cookie");
    cdn_arena_free(a);
}

static void
test_storable_heuristic_statuses(void **state)
{
    (void)state;
    static const int yes[] = {200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501};
    static const int no[] = {201, 202, 205, 302, 303, 307, 400, 401, 403, 500, 502, 503, 504};
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs req = hdrs_of(a, ""), resp = hdrs_of(a, "");
    for (size_t i = 0; i < CDN_ARRAY_LEN(yes); i++) {
        EQ(i, "heuristic", cdn_status_heuristic(yes[i]), true);
        EQ(i, "storable", cdn_storable("GET", &req, yes[i], &resp, &opts[O_DEF]), CDN_STORE_OK);
    }
    EQ(0, "206 heuristic", cdn_status_heuristic(206), true);
    for (size_t i = 0; i < CDN_ARRAY_LEN(no); i++) {
        EQ(i, "heuristic", cdn_status_heuristic(no[i]), false);
        EQ(i, "storable", cdn_storable("GET", &req, no[i], &resp, &opts[O_DEF]),
           CDN_NOSTORE_NOT_CACHEABLE);
    }
    cdn_arena_free(a);
}

static void
test_store_reason(void **state)
{
    (void)state;
    assert_string_equal(cdn_store_reason(CDN_STORE_OK), "ok");
    assert_string_equal(cdn_store_reason(CDN_NOSTORE_NO_STORE), "no-store");
    assert_string_equal(cdn_store_reason(CDN_NOSTORE_PRIVATE), "private");
    for (int v = CDN_STORE_OK; v <= CDN_NOSTORE_NOT_CACHEABLE; v++)
        assert_string_not_equal(cdn_store_reason((enum cdn_store_verdict)v), "unknown");
}

static void
test_strip_for_store(void **state)
{
    (void)state;
    static const struct {
        const char *resp;
        const char *want;
    } rows[] = {
        {"Connection: close, X-Hop\nX-Hop: 1\nKeep-Alive: timeout=5\nTransfer-Encoding: chunked\n"
         "Content-Length: 5\nETag: \"a\"\nProxy-Authenticate: x\nProxy-Authentication-Info: y\n"
         "TE: trailers\nUpgrade: h2c\nTrailer: X\nContent-Type: text/plain",
         "ETag: \"a\"|Content-Type: text/plain"},
        {"X-Hop: 1\nConnection: x-hop", ""},
        {"Cache-Control: no-cache=\"Set-Cookie\"\nSet-Cookie: a=1\nX: y",
         "Cache-Control: no-cache=\"Set-Cookie\"|X: y"},
        {"Cache-Control: private=\"X-User, X-Id\"\nX-User: bob\nx-id: 7\nX: y",
         "Cache-Control: private=\"X-User, X-Id\"|X: y"},
        {"Set-Cookie: a=1\nCache-Control: max-age=5", "Set-Cookie: a=1|Cache-Control: max-age=5"},
        {"CDN-Cache-Control: no-cache=\"x-a\"\nCache-Control: no-cache=\"x-b\"\nX-A: 1\nX-B: 2",
         "CDN-Cache-Control: no-cache=\"x-a\"|Cache-Control: no-cache=\"x-b\"|X-B: 2"},
        /* the directive lines themselves removed: what remains is parsed again */
        {"Cache-Control: max-age=5, no-cache=\"Cache-Control\"\nX: y", "X: y"},
        {"Connection: CDN-Cache-Control\nCDN-Cache-Control: max-age=9\nCache-Control: max-age=5",
         "Cache-Control: max-age=5"},
        {"", ""},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].resp), k = hdrs_of(a, rows[i].resp);
        size_t before = h.n;
        struct cdn_cc cc;
        cdn_response_cc(&h, &opts[O_DEF], &cc);
        size_t removed = cdn_policy_strip_for_store(&h, &cc);
        STREQ(i, "kept", render(a, &h), rows[i].want);
        EQ(i, "removed", removed + h.n, before);
        /* the variant that keeps the directives: same fields, and those of what it kept */
        struct cdn_cc kc;
        bool t = cdn_response_cc(&k, &opts[O_DEF], &kc);
        t = cdn_policy_strip_keep_cc(&k, &opts[O_DEF], &kc, t);
        STREQ(i, "kept (keep_cc)", render(a, &k), rows[i].want);
        cc_matches(i, &k, &kc, t);
        cdn_arena_free(a);
    }
}

/* ---- Freshness ------------------------------------------------------------------------------- */

static void
test_freshness(void **state)
{
    (void)state;
    static const struct {
        int status;
        const char *resp;
        int o;
        int64_t lifetime;
        enum cdn_fresh_source source;
        bool targeted;
    } rows[] = {
        {200, "Cache-Control: max-age=60", O_DEF, 60, CDN_FRESH_MAX_AGE, false},
        {200, "Cache-Control: max-age=0", O_DEF, 0, CDN_FRESH_MAX_AGE, false},
        {200, "Cache-Control: s-maxage=30, max-age=60", O_DEF, 30, CDN_FRESH_S_MAXAGE, false},
        {200, "Cache-Control: s-maxage=99999999999", O_DEF, BIG, CDN_FRESH_S_MAXAGE, false},
        {200, "Cache-Control: max-age=60\nExpires: " D0_PLUS_1H "\nDate: " D0, O_DEF, 60,
         CDN_FRESH_MAX_AGE, false},
        {200, "Cache-Control: max-age=abc\nExpires: " D0_PLUS_1H "\nDate: " D0, O_DEF, 0,
         CDN_FRESH_MAX_AGE, false},
        {200, "Cache-Control: max-age=5, max-age=6\nExpires: " D0_PLUS_1H, O_DEF, 0,
         CDN_FRESH_MAX_AGE, false},
        {200, "Expires: " D0_PLUS_1H "\nDate: " D0, O_DEF, 3600, CDN_FRESH_EXPIRES, false},
        {302, "Expires: " D0_PLUS_1H "\nDate: " D0, O_DEF, 3600, CDN_FRESH_EXPIRES, false},
        {200, "Expires: " D0_PLUS_1H, O_DEF, 3600, CDN_FRESH_EXPIRES, false}, /* no Date */
        {200, "Expires: " D0_PLUS_1H "\nDate: yesterday", O_DEF, 3600, CDN_FRESH_EXPIRES, false},
        {200, "Expires: 0\nDate: " D0, O_DEF, 0, CDN_FRESH_EXPIRES, false},
        {200, "Expires: -1\nLast-Modified: " D0_MINUS_1D, O_DEF, 0, CDN_FRESH_EXPIRES, false},
        {200, "Expires: " D0_MINUS_1H "\nDate: " D0, O_DEF, 0, CDN_FRESH_EXPIRES, false},
        {200, "Expires: " D0 "\nDate: " D0, O_DEF, 0, CDN_FRESH_EXPIRES, false},
        {200, "Expires: " D0_PLUS_1H "\nExpires: " D0_PLUS_1D "\nDate: " D0, O_DEF, 0,
         CDN_FRESH_EXPIRES, false},
        {200, "Expires: " D0_PLUS_1H "\nExpires: " D0_PLUS_1H "\nDate: " D0, O_DEF, 3600,
         CDN_FRESH_EXPIRES, false},
        {200, "Expires: Fri, 31 Dec 9999 23:59:59 GMT\nDate: " D0, O_DEF, BIG, CDN_FRESH_EXPIRES,
         false},
        {200, "Expires: Sunday, 31-Dec-23 23:00:00 GMT\nDate: " D0, O_DEF, 0, CDN_FRESH_EXPIRES,
         false},
        {200, "Expires: Mon Jan  1 01:00:00 2024\nDate: " D0, O_DEF, 3600, CDN_FRESH_EXPIRES,
         false},
        /* targeted field first; an invalid one is ignored */
        {200, "CDN-Cache-Control: max-age=600\nCache-Control: max-age=60", O_DEF, 600,
         CDN_FRESH_MAX_AGE, true},
        {200, "CDN-Cache-Control: s-maxage=5, max-age=600\nCache-Control: s-maxage=60", O_DEF, 5,
         CDN_FRESH_S_MAXAGE, true},
        {200, "CDN-Cache-Control: max-age=600,\nCache-Control: max-age=60", O_DEF, 60,
         CDN_FRESH_MAX_AGE, false},
        {200, "CDN-Cache-Control: must-revalidate\nExpires: " D0_PLUS_1H "\nDate: " D0, O_DEF, 0,
         CDN_FRESH_NONE, false},
        {200, "CDN-Cache-Control: no-cache\nCache-Control: max-age=60", O_DEF, 0, CDN_FRESH_NONE,
         false},
        /* heuristics */
        {200, "Date: " D0 "\nLast-Modified: " D0_MINUS_1D, O_DEF, 8640, CDN_FRESH_HEURISTIC, false},
        {200, "Date: " D0 "\nLast-Modified: " D0_MINUS_100D, O_DEF, 86400, CDN_FRESH_HEURISTIC,
         false},
        {200, "Date: " D0 "\nLast-Modified: " D0_MINUS_1D, O_CAP, 3600, CDN_FRESH_HEURISTIC, false},
        {200, "Date: " D0 "\nLast-Modified: " D0_MINUS_1D, O_HALF, 43200, CDN_FRESH_HEURISTIC,
         false},
        {200, "Date: " D0 "\nLast-Modified: " D0_MINUS_1D, O_OFF, 0, CDN_FRESH_NONE, false},
        {200, "Last-Modified: " D0_MINUS_1D, O_DEF, 8640, CDN_FRESH_HEURISTIC, false}, /* no Date */
        {404, "Date: " D0 "\nLast-Modified: " D0_MINUS_1D, O_DEF, 8640, CDN_FRESH_HEURISTIC, false},
        {302, "Date: " D0 "\nLast-Modified: " D0_MINUS_1D, O_DEF, 0, CDN_FRESH_NONE, false},
        {302, "Cache-Control: public\nDate: " D0 "\nLast-Modified: " D0_MINUS_1D, O_DEF, 8640,
         CDN_FRESH_HEURISTIC, false},
        {200, "CDN-Cache-Control: public\nDate: " D0 "\nLast-Modified: " D0_MINUS_1D, O_DEF, 8640,
         CDN_FRESH_HEURISTIC, false},
        {200, "Date: " D0 "\nLast-Modified: " D0_PLUS_1H, O_DEF, 0, CDN_FRESH_NONE, false},
        {200, "Date: " D0 "\nLast-Modified: " D0, O_DEF, 0, CDN_FRESH_HEURISTIC, false},
        {200, "Date: " D0 "\nLast-Modified: never", O_DEF, 0, CDN_FRESH_NONE, false},
        {200, "Date: " D0, O_DEF, 0, CDN_FRESH_NONE, false},
        {200, "", O_DEF, 0, CDN_FRESH_NONE, false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].resp);
        struct cdn_freshness f;
        cdn_freshness_lifetime(rows[i].status, &h, T0, &opts[rows[i].o], &f);
        EQ(i, "lifetime", f.lifetime, rows[i].lifetime);
        EQ(i, "source", f.source, rows[i].source);
        EQ(i, "targeted", f.targeted, rows[i].targeted);
        cdn_arena_free(a);
    }
}

/* ---- Age ----------------------------------------------------------------------------------------
 */

static void
test_age(void **state)
{
    (void)state;
    /* response_time is T0 + 1000; Date is given as an offset from it (NO_DATE: absent). */
    enum { NO_DATE = 99999 };
    static const struct {
        const char *extra;
        int64_t date_off, req_off, now_off;
        int64_t age_value, apparent, delay, corrected_age, initial, resident, current;
    } rows[] = {
        {"", 0, -2, 8, 0, 0, 2, 2, 2, 8, 10},
        {"Age: 30", 0, -2, 8, 30, 0, 2, 32, 32, 8, 40},
        {"Age: 0", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
        /* origin clock behind ours: the response looks older than Age says */
        {"Age: 10", -50, -2, 8, 10, 50, 2, 12, 50, 8, 58},
        /* origin clock ahead of ours: apparent age is 0, Age and delay still count */
        {"Age: 10", 3600, -2, 8, 10, 0, 2, 12, 12, 8, 20},
        {"", NO_DATE, -5, 100, 0, 0, 5, 5, 5, 100, 105},
        /* §5.1: an invalid Age makes the response stale */
        {"Age: abc", 0, -2, 8, BIG, 0, 2, BIG, BIG, 8, BIG},
        {"Age: -5", 0, -2, 8, BIG, 0, 2, BIG, BIG, 8, BIG},
        {"Age: 7200.0", 0, 0, 0, BIG, 0, 0, BIG, BIG, 0, BIG},
        {"Age: 7;foo=1", 0, 0, 0, BIG, 0, 0, BIG, BIG, 0, BIG},
        /* a list: the first member counts */
        {"Age: 5, 6", 0, 0, 0, 5, 0, 0, 5, 5, 0, 5},
        /* two Age lines: invalid, stale */
        {"Age: 7\nAge: 100", 0, 0, 0, BIG, 0, 0, BIG, BIG, 0, BIG},
        {"Age: 99999999999", 0, -2, 8, BIG, 0, 2, BIG, BIG, 8, BIG},
        {"Age: 2147483647", 0, 0, 5, 2147483647, 0, 0, 2147483647, 2147483647, 5, BIG},
        /* clocks going backwards: negative delay and residence count as 0 */
        {"", 0, 5, -10, 0, 0, 0, 0, 0, 0, 0},
    };
    const int64_t rt = T0 + 1000;
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        char date[CDN_HTTP_DATE_LEN + 1];
        const char *text = rows[i].extra;
        if (rows[i].date_off != NO_DATE)
            text = cdn_arena_printf(a, "Date: %s%s%s",
                                    cdn_http_date_format(rt + rows[i].date_off, date),
                                    text[0] ? "\n" : "", text);
        struct cdn_hdrs h = hdrs_of(a, text);
        struct cdn_age g;
        cdn_age_compute(&h, rt + rows[i].req_off, rt, rt + rows[i].now_off, &g);
        EQ(i, "age_value", g.age_value, rows[i].age_value);
        EQ(i, "date_value", g.date_value, rows[i].date_off == NO_DATE ? rt : rt + rows[i].date_off);
        EQ(i, "apparent_age", g.apparent_age, rows[i].apparent);
        EQ(i, "response_delay", g.response_delay, rows[i].delay);
        EQ(i, "corrected_age_value", g.corrected_age_value, rows[i].corrected_age);
        EQ(i, "corrected_initial_age", g.corrected_initial_age, rows[i].initial);
        EQ(i, "resident_time", g.resident_time, rows[i].resident);
        EQ(i, "current_age", g.current_age, rows[i].current);
        cdn_arena_free(a);
    }
}

/* ---- Decision -----------------------------------------------------------------------------------
 */

#define NOT_STORED ((const char *)NULL)

static void
test_decide(void **state)
{
    (void)state;
    static const struct {
        const char *req;
        const char *resp; /* NOT_STORED: no stored response */
        int64_t elapsed;  /* now - response_time */
        enum cdn_decision want;
        enum cdn_decide_reason why;
        int64_t age, lifetime;
    } rows[] = {
        {"", NOT_STORED, 0, CDN_DECIDE_MISS, CDN_WHY_NOT_STORED, 0, 0},
        {"Cache-Control: only-if-cached", NOT_STORED, 0, CDN_DECIDE_504, CDN_WHY_NOT_STORED, 0, 0},
        {"", "Cache-Control: max-age=60", 10, CDN_DECIDE_FRESH, CDN_WHY_FRESH, 10, 60},
        {"", "Cache-Control: max-age=60", 59, CDN_DECIDE_FRESH, CDN_WHY_FRESH, 59, 60},
        {"", "Cache-Control: max-age=60", 60, CDN_DECIDE_REVALIDATE, CDN_WHY_STALE, 60, 60},
        {"", "Cache-Control: max-age=60\nAge: 50", 10, CDN_DECIDE_REVALIDATE, CDN_WHY_STALE, 60,
         60},
        {"", "", 0, CDN_DECIDE_REVALIDATE, CDN_WHY_STALE, 0, 0}, /* no freshness information */
        {"", "Last-Modified: " D0_MINUS_1D, 100, CDN_DECIDE_FRESH, CDN_WHY_FRESH, 100, 8640},
        {"", "CDN-Cache-Control: max-age=600\nCache-Control: max-age=10", 100, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 100, 600},
        {"", "CDN-Cache-Control: no-cache\nCache-Control: max-age=600", 1, CDN_DECIDE_REVALIDATE,
         CDN_WHY_RESP_NO_CACHE, 1, 0},
        /* request no-store bypasses */
        {"Cache-Control: no-store", "Cache-Control: max-age=60", 10, CDN_DECIDE_MISS,
         CDN_WHY_REQ_NO_STORE, 0, 0},
        {"Cache-Control: no-store, only-if-cached", "Cache-Control: max-age=60", 10, CDN_DECIDE_504,
         CDN_WHY_REQ_NO_STORE, 0, 0},
        /* Authorization */
        {"Authorization: Bearer t", "Cache-Control: max-age=60", 10, CDN_DECIDE_MISS,
         CDN_WHY_AUTHORIZATION, 10, 60},
        {"Authorization: Bearer t", "Cache-Control: max-age=60, public", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"Authorization: Bearer t", "Cache-Control: s-maxage=60", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"Authorization: Bearer t", "Cache-Control: max-age=60, must-revalidate", 10,
         CDN_DECIDE_FRESH, CDN_WHY_FRESH, 10, 60},
        /* no-cache */
        {"", "Cache-Control: max-age=60, no-cache", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_RESP_NO_CACHE, 10, 60},
        {"", "Cache-Control: max-age=60, no-cache=\"Set-Cookie\"", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"", "Cache-Control: no-cache, immutable, max-age=600", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_RESP_NO_CACHE, 10, 600},
        {"Cache-Control: no-cache", "Cache-Control: max-age=60", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_REQ_NO_CACHE, 10, 60},
        {"Pragma: no-cache", "Cache-Control: max-age=60", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_REQ_NO_CACHE, 10, 60},
        {"Pragma: x, No-Cache", "Cache-Control: max-age=60", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_REQ_NO_CACHE, 10, 60},
        {"Pragma: no-cache\nCache-Control: max-stale", "Cache-Control: max-age=60", 10,
         CDN_DECIDE_FRESH, CDN_WHY_FRESH, 10, 60},
        {"Cache-Control: no-cache", "Cache-Control: max-age=600, immutable", 10,
         CDN_DECIDE_REVALIDATE, CDN_WHY_REQ_NO_CACHE, 10, 600},
        /* request max-age, and immutable */
        {"Cache-Control: max-age=0", "Cache-Control: max-age=60", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_REQ_MAX_AGE, 10, 60},
        {"Cache-Control: max-age=10", "Cache-Control: max-age=60", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"Cache-Control: max-age=5", "Cache-Control: max-age=60", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_REQ_MAX_AGE, 10, 60},
        {"Cache-Control: max-age=0", "Cache-Control: max-age=600, immutable", 10, CDN_DECIDE_FRESH,
         CDN_WHY_IMMUTABLE, 10, 600},
        {"Cache-Control: max-age=0", "Cache-Control: max-age=600, immutable", 600,
         CDN_DECIDE_REVALIDATE, CDN_WHY_REQ_MAX_AGE, 600, 600},
        {"Cache-Control: max-age=0, min-fresh=1000", "Cache-Control: max-age=600, immutable", 10,
         CDN_DECIDE_REVALIDATE, CDN_WHY_MIN_FRESH, 10, 600},
        /* min-fresh */
        {"Cache-Control: min-fresh=30", "Cache-Control: max-age=60", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"Cache-Control: min-fresh=50", "Cache-Control: max-age=60", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"Cache-Control: min-fresh=51", "Cache-Control: max-age=60", 10, CDN_DECIDE_REVALIDATE,
         CDN_WHY_MIN_FRESH, 10, 60},
        /* stale: max-stale */
        {"Cache-Control: max-stale", "Cache-Control: max-age=60", 1000, CDN_DECIDE_STALE,
         CDN_WHY_MAX_STALE, 1000, 60},
        {"Cache-Control: max-stale=30", "Cache-Control: max-age=60", 90, CDN_DECIDE_STALE,
         CDN_WHY_MAX_STALE, 90, 60},
        {"Cache-Control: max-stale=29", "Cache-Control: max-age=60", 90, CDN_DECIDE_REVALIDATE,
         CDN_WHY_STALE, 90, 60},
        {"Cache-Control: max-stale", "Cache-Control: max-age=60, must-revalidate", 90,
         CDN_DECIDE_REVALIDATE, CDN_WHY_MUST_REVALIDATE, 90, 60},
        {"Cache-Control: max-stale", "Cache-Control: max-age=60, proxy-revalidate", 90,
         CDN_DECIDE_REVALIDATE, CDN_WHY_MUST_REVALIDATE, 90, 60},
        {"Cache-Control: max-stale", "Cache-Control: s-maxage=60", 90, CDN_DECIDE_REVALIDATE,
         CDN_WHY_MUST_REVALIDATE, 90, 60},
        {"Cache-Control: max-stale", "Cache-Control: max-age=60, no-cache", 90,
         CDN_DECIDE_REVALIDATE, CDN_WHY_RESP_NO_CACHE, 90, 60},
        /* stale: stale-while-revalidate */
        {"", "Cache-Control: max-age=60, stale-while-revalidate=30", 70, CDN_DECIDE_STALE_SWR,
         CDN_WHY_SWR, 70, 60},
        {"", "Cache-Control: max-age=60, stale-while-revalidate=30", 90, CDN_DECIDE_STALE_SWR,
         CDN_WHY_SWR, 90, 60},
        {"", "Cache-Control: max-age=60, stale-while-revalidate=30", 91, CDN_DECIDE_REVALIDATE,
         CDN_WHY_STALE, 91, 60},
        {"", "Cache-Control: max-age=60, stale-while-revalidate=30, must-revalidate", 70,
         CDN_DECIDE_REVALIDATE, CDN_WHY_MUST_REVALIDATE, 70, 60},
        {"", "Cache-Control: s-maxage=60, stale-while-revalidate=30", 70, CDN_DECIDE_REVALIDATE,
         CDN_WHY_MUST_REVALIDATE, 70, 60},
        {"", "Cache-Control: max-age=60, must-revalidate", 70, CDN_DECIDE_REVALIDATE, CDN_WHY_STALE,
         70, 60},
        {"",
         "CDN-Cache-Control: max-age=60, stale-while-revalidate=30\n"
         "Cache-Control: max-age=60, must-revalidate",
         70, CDN_DECIDE_STALE_SWR, CDN_WHY_SWR, 70, 60},
        {"Cache-Control: max-stale=100", "Cache-Control: max-age=60, stale-while-revalidate=30", 70,
         CDN_DECIDE_STALE, CDN_WHY_MAX_STALE, 70, 60},
        {"Cache-Control: max-age=5", "Cache-Control: max-age=60, stale-while-revalidate=30", 70,
         CDN_DECIDE_REVALIDATE, CDN_WHY_REQ_MAX_AGE, 70, 60},
        /* only-if-cached */
        {"Cache-Control: only-if-cached", "Cache-Control: max-age=60", 10, CDN_DECIDE_FRESH,
         CDN_WHY_FRESH, 10, 60},
        {"Cache-Control: only-if-cached", "Cache-Control: max-age=60", 100, CDN_DECIDE_504,
         CDN_WHY_STALE, 100, 60},
        {"Cache-Control: only-if-cached, max-stale", "Cache-Control: max-age=60", 100,
         CDN_DECIDE_STALE, CDN_WHY_MAX_STALE, 100, 60},
        {"Cache-Control: only-if-cached", "Cache-Control: max-age=60, stale-while-revalidate=99",
         100, CDN_DECIDE_STALE_SWR, CDN_WHY_SWR, 100, 60},
        {"Cache-Control: only-if-cached, no-cache", "Cache-Control: max-age=60", 1, CDN_DECIDE_504,
         CDN_WHY_REQ_NO_CACHE, 1, 60},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs req = hdrs_of(a, rows[i].req);
        struct cdn_hdrs resp = hdrs_of(a, rows[i].resp ? rows[i].resp : "");
        const int64_t rt = T0;
        struct cdn_stored st = {200, &resp, rt, rt};
        struct cdn_decide_out out;
        cdn_decide(&req, rows[i].resp ? &st : NULL, &opts[O_DEF], rt + rows[i].elapsed, &out);
        if (out.decision != rows[i].want || out.reason != rows[i].why)
            fail_msg("row %zu: decision %d (%s), want %d (%s)", i, out.decision,
                     cdn_decide_reason_str(out.reason), rows[i].want,
                     cdn_decide_reason_str(rows[i].why));
        EQ(i, "age", out.age, rows[i].age);
        EQ(i, "lifetime", out.lifetime, rows[i].lifetime);
        EQ(i, "ttl", out.ttl, rows[i].lifetime - rows[i].age);
        cdn_arena_free(a);
    }
}

static void
test_decide_reason_str(void **state)
{
    (void)state;
    assert_string_equal(cdn_decide_reason_str(CDN_WHY_FRESH), "fresh");
    assert_string_equal(cdn_decide_reason_str(CDN_WHY_SWR), "swr");
    for (int r = CDN_WHY_FRESH; r <= CDN_WHY_IMMUTABLE; r++)
        assert_string_not_equal(cdn_decide_reason_str((enum cdn_decide_reason)r), "unknown");
}

static void
test_stale_serving(void **state)
{
    (void)state;
    static const struct {
        const char *resp;
        const char *req; /* NULL: no request (background refresh) */
        int64_t elapsed;
        int o;
        bool swr, on_error;
    } rows[] = {
        {"Cache-Control: max-age=60", "", 10, O_DEF, true, true}, /* fresh */
        {"Cache-Control: max-age=60", "", 100, O_DEF, false, false},
        {"Cache-Control: max-age=60", NULL, 100, O_DEF, false, false},
        {"Cache-Control: max-age=60", "", 100, O_GRACE, false, true}, /* stale 40 <= grace 50 */
        {"Cache-Control: max-age=60", "", 110, O_GRACE, false, true},
        {"Cache-Control: max-age=60", "", 111, O_GRACE, false, false},
        {"Cache-Control: max-age=60, stale-if-error=100", "", 100, O_DEF, false, true},
        {"Cache-Control: max-age=60, stale-if-error=100", "", 160, O_DEF, false, true},
        {"Cache-Control: max-age=60, stale-if-error=100", "", 161, O_DEF, false, false},
        {"Cache-Control: max-age=60", "Cache-Control: stale-if-error=50", 100, O_DEF, false, true},
        {"Cache-Control: max-age=60", "Cache-Control: stale-if-error=50", 111, O_DEF, false, false},
        {"Cache-Control: max-age=60, stale-if-error=100, must-revalidate", "", 100, O_GRACE, false,
         false},
        {"Cache-Control: max-age=60, stale-if-error=100, proxy-revalidate", "", 100, O_DEF, false,
         false},
        {"Cache-Control: s-maxage=60, stale-if-error=100", "", 100, O_DEF, false, false},
        {"Cache-Control: max-age=60, stale-if-error=100, no-cache", "", 100, O_DEF, false, false},
        {"Cache-Control: max-age=60, stale-if-error=100, no-cache", "", 10, O_DEF, false, false},
        {"Cache-Control: max-age=60, stale-while-revalidate=30", "", 80, O_DEF, true, false},
        {"Cache-Control: max-age=60, stale-while-revalidate=30", "", 90, O_DEF, true, false},
        {"Cache-Control: max-age=60, stale-while-revalidate=30", "", 91, O_DEF, false, false},
        {"Cache-Control: max-age=60, stale-while-revalidate=30, must-revalidate", "", 80, O_DEF,
         false, false},
        {"CDN-Cache-Control: max-age=60, stale-if-error=9\nCache-Control: stale-if-error=999", "",
         100, O_DEF, false, false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs resp = hdrs_of(a, rows[i].resp);
        struct cdn_hdrs req = hdrs_of(a, rows[i].req ? rows[i].req : "");
        struct cdn_stored st = {200, &resp, T0, T0};
        EQ(i, "swr",
           cdn_may_serve_stale_while_revalidate(&st, &opts[rows[i].o], T0 + rows[i].elapsed),
           rows[i].swr);
        EQ(i, "on error",
           cdn_may_serve_stale_on_error(rows[i].req ? &req : NULL, &st, &opts[rows[i].o],
                                        T0 + rows[i].elapsed),
           rows[i].on_error);
        cdn_arena_free(a);
    }
    static const int err[] = {500, 502, 503, 504}, ok[] = {200, 304, 404, 501, 505, 429};
    for (size_t i = 0; i < CDN_ARRAY_LEN(err); i++)
        EQ(i, "error status", cdn_status_is_stale_error(err[i]), true);
    for (size_t i = 0; i < CDN_ARRAY_LEN(ok); i++)
        EQ(i, "other status", cdn_status_is_stale_error(ok[i]), false);
}

/* ---- Revalidation --------------------------------------------------------------------------- */

static void
test_validators(void **state)
{
    (void)state;
    static const struct {
        const char *stored;
        const char *etag, *lm; /* NULL: not sent */
    } rows[] = {
        {"ETag: \"abc\"\nLast-Modified: " D0, "\"abc\"", D0},
        {"ETag: W/\"abc\"", "W/\"abc\"", NULL},
        {"Last-Modified: " D0, NULL, D0},
        {"ETag: abc", NULL, NULL},
        {"ETag: \"a\"b\"", NULL, NULL},
        {"Last-Modified: garbage", NULL, NULL},
        {"Date: " D0, NULL, NULL},
        {"", NULL, NULL},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].stored);
        struct cdn_validators v;
        cdn_revalidation_validators(&h, &v);
        if (rows[i].etag == NULL)
            assert_null(v.etag);
        else
            STREQ(i, "etag", cdn_arena_strndup(a, v.etag, v.etag_len), rows[i].etag);
        if (rows[i].lm == NULL)
            assert_null(v.last_modified);
        else
            STREQ(i, "lm", cdn_arena_strndup(a, v.last_modified, v.lm_len), rows[i].lm);
        cdn_arena_free(a);
    }
}

static void
test_etag_match(void **state)
{
    (void)state;
    /* RFC 9110 §8.8.3.2 table, plus malformed tags */
    static const struct {
        const char *a, *b;
        bool strong, weak;
    } rows[] = {
        {"W/\"1\"", "W/\"1\"", false, true},  {"W/\"1\"", "W/\"2\"", false, false},
        {"W/\"1\"", "\"1\"", false, true},    {"\"1\"", "\"1\"", true, true},
        {"\"1\"", "\"2\"", false, false},     {"\"\"", "\"\"", true, true},
        {"1", "\"1\"", false, false},         {"w/\"1\"", "\"1\"", false, false},
        {"\"1", "\"1", false, false},         {"\"a b\"", "\"a b\"", false, false},
        {"\"\x80\"", "\"\x80\"", true, true},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        size_t al = strlen(rows[i].a), bl = strlen(rows[i].b);
        EQ(i, "strong", cdn_etag_match(rows[i].a, al, rows[i].b, bl, false), rows[i].strong);
        EQ(i, "weak", cdn_etag_match(rows[i].a, al, rows[i].b, bl, true), rows[i].weak);
        EQ(i, "strong swapped", cdn_etag_match(rows[i].b, bl, rows[i].a, al, false),
           rows[i].strong);
    }
}

static void
test_304_matches(void **state)
{
    (void)state;
    static const struct {
        const char *stored, *r304;
        bool want;
    } rows[] = {
        {"ETag: \"a\"", "ETag: \"a\"", true},
        {"ETag: \"a\"", "ETag: \"b\"", false},
        {"ETag: W/\"a\"", "ETag: \"a\"", false},
        {"ETag: \"a\"", "ETag: W/\"a\"", true},
        {"ETag: W/\"a\"", "ETag: W/\"a\"", true},
        {"ETag: W/\"a\"", "ETag: W/\"b\"", false},
        {"", "ETag: \"a\"", false},
        {"ETag: \"a\"", "ETag: junk", false},
        {"Last-Modified: " D0, "Last-Modified: " D0, true},
        {"Last-Modified: " D0, "Last-Modified: Monday, 01-Jan-24 00:00:00 GMT", true},
        {"Last-Modified: " D0, "Last-Modified: " D0_MINUS_1H, false},
        {"ETag: \"a\"", "Last-Modified: " D0, false},
        {"Last-Modified: " D0, "Last-Modified: junk", false},
        {"ETag: \"a\"\nLast-Modified: " D0, "ETag: \"a\"\nLast-Modified: " D0_MINUS_1H, true},
        {"ETag: \"a\"", "Date: " D0, true},
        {"", "", true},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs s = hdrs_of(a, rows[i].stored), r = hdrs_of(a, rows[i].r304);
        EQ(i, "matches", cdn_304_matches(&s, &r), rows[i].want);
        cdn_arena_free(a);
    }
}

static void
test_merge_304(void **state)
{
    (void)state;
    static const struct {
        const char *stored, *r304, *want;
    } rows[] = {
        {"ETag: \"a\"\nCache-Control: max-age=60\nContent-Type: text/html\nX-Old: 1",
         "Cache-Control: max-age=120\nDate: " D0 "\nContent-Length: 0\nConnection: close",
         "ETag: \"a\"|Content-Type: text/html|X-Old: 1|Cache-Control: max-age=120|Date: " D0},
        {"Set-Cookie: a=1\nX: 1", "Set-Cookie: b=2\nset-cookie: c=3",
         "X: 1|Set-Cookie: b=2|set-cookie: c=3"},
        /* fields describing the stored bytes or naming the representation stay as stored */
        {"etag: \"a\"\nX: 1", "ETag: \"a\"", "etag: \"a\"|X: 1"},
        {"Content-Encoding: gzip\nX: 1",
         "Content-Encoding: br\nContent-MD5: x\nContent-Range: bytes 0-1/2\nETag: \"z\"",
         "Content-Encoding: gzip|X: 1"},
        {"X-Foo: 1", "Connection: X-Foo\nX-Foo: 2", "X-Foo: 1"},
        {"X-Foo: 1", "Transfer-Encoding: chunked\nKeep-Alive: 5\nProxy-Authenticate: x\nUpgrade: y",
         "X-Foo: 1"},
        {"X-Secret: old\nCache-Control: max-age=5",
         "Cache-Control: max-age=9, no-cache=\"X-Secret\"\nX-Secret: new",
         "Cache-Control: max-age=9, no-cache=\"X-Secret\""},
        {"X-User: old\nCache-Control: private=\"X-User\"", "X-User: new",
         "Cache-Control: private=\"X-User\""},
        {"Content-Type: text/html", "", "Content-Type: text/html"},
        {"", "ETag: \"n\"", ""},
        /* a 304 whose directives name their own line: the merge keeps none of them */
        {"Cache-Control: max-age=5\nX: 1", "Cache-Control: max-age=9, no-cache=\"Cache-Control\"",
         "X: 1"},
        {"CDN-Cache-Control: max-age=5\nX: 1", "CDN-Cache-Control: s-maxage=7",
         "X: 1|CDN-Cache-Control: s-maxage=7"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs s = hdrs_of(a, rows[i].stored), r = hdrs_of(a, rows[i].r304), out;
        struct cdn_cc cc;
        cdn_hdrs_init(&out, a);
        bool targeted = cdn_merge_304(&s, &r, &opts[O_DEF], &out, &cc);
        STREQ(i, "merged", render(a, &out), rows[i].want);
        cc_matches(i, &out, &cc, targeted);
        cdn_arena_free(a);
    }
}

/* ---- Conditionals ------------------------------------------------------------------------------
 */

#define STORED "ETag: \"v1\"\nLast-Modified: " D0 "\nDate: " D0_PLUS_1D

static void
test_conditionals(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        const char *req;
        int status;
        const char *stored;
        enum cdn_cond_result want;
    } rows[] = {
        {"GET", "", 200, STORED, CDN_COND_PROCEED},
        /* 1. If-Match (strong comparison) */
        {"GET", "If-Match: \"v1\"", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Match: \"v2\"", 200, STORED, CDN_COND_412},
        {"GET", "If-Match: *", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Match: W/\"v1\"", 200, STORED, CDN_COND_412},
        {"GET", "If-Match: \"v2\", \"v1\"", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Match: \"v2\"\nIf-Match: \"v1\"", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Match: v1", 200, STORED, CDN_COND_412},
        {"GET", "If-Match: \"v1\"", 200, "Last-Modified: " D0, CDN_COND_412},
        {"GET", "If-Match: *", 200, "Last-Modified: " D0, CDN_COND_PROCEED},
        {"PUT", "If-Match: \"v2\"", 200, STORED, CDN_COND_412},
        /* 2. If-Unmodified-Since, only without If-Match */
        {"GET", "If-Unmodified-Since: " D0, 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Unmodified-Since: " D0_PLUS_1H, 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Unmodified-Since: " D0_MINUS_1H, 200, STORED, CDN_COND_412},
        {"GET", "If-Unmodified-Since: yesterday", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Unmodified-Since: " D0_MINUS_1H "\nIf-Unmodified-Since: " D0_MINUS_1H, 200,
         STORED, CDN_COND_PROCEED},
        {"GET", "If-Match: \"v1\"\nIf-Unmodified-Since: " D0_MINUS_1H, 200, STORED,
         CDN_COND_PROCEED},
        {"GET", "If-Unmodified-Since: " D0_MINUS_1H, 200, "ETag: \"v1\"", CDN_COND_PROCEED},
        /* 3. If-None-Match (weak comparison) */
        {"GET", "If-None-Match: \"v1\"", 200, STORED, CDN_COND_304},
        {"HEAD", "If-None-Match: \"v1\"", 200, STORED, CDN_COND_304},
        {"GET", "If-None-Match: W/\"v1\"", 200, STORED, CDN_COND_304},
        {"GET", "If-None-Match: \"v1\"", 200, "ETag: W/\"v1\"", CDN_COND_304},
        {"GET", "If-None-Match: \"v2\"", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-None-Match: \"x\", \"v1\"", 200, STORED, CDN_COND_304},
        {"GET", "If-None-Match: *", 200, STORED, CDN_COND_304},
        {"GET", "If-None-Match: *", 200, "", CDN_COND_304},
        {"GET", "If-None-Match: \"v1\"", 200, "", CDN_COND_PROCEED},
        {"POST", "If-None-Match: \"v1\"", 200, STORED, CDN_COND_412},
        {"DELETE", "If-None-Match: *", 200, STORED, CDN_COND_412},
        {"POST", "If-None-Match: \"v2\"", 200, STORED, CDN_COND_PROCEED},
        /* If-None-Match takes precedence over If-Modified-Since */
        {"GET", "If-None-Match: \"v2\"\nIf-Modified-Since: " D0_PLUS_1H, 200, STORED,
         CDN_COND_PROCEED},
        {"GET", "If-None-Match: \"v1\"\nIf-Modified-Since: " D0_MINUS_1H, 200, STORED,
         CDN_COND_304},
        /* 4. If-Modified-Since, GET/HEAD only */
        {"GET", "If-Modified-Since: " D0, 200, STORED, CDN_COND_304},
        {"GET", "If-Modified-Since: " D0_PLUS_1H, 200, STORED, CDN_COND_304},
        {"GET", "If-Modified-Since: " D0_MINUS_1H, 200, STORED, CDN_COND_PROCEED},
        {"HEAD", "If-Modified-Since: " D0, 200, STORED, CDN_COND_304},
        {"POST", "If-Modified-Since: " D0, 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Modified-Since: soon", 200, STORED, CDN_COND_PROCEED},
        {"GET", "If-Modified-Since: " D0 "\nIf-Modified-Since: " D0, 200, STORED, CDN_COND_PROCEED},
        /* without Last-Modified, a cache uses Date, then the time it received the response */
        {"GET", "If-Modified-Since: " D0_PLUS_1D, 200, "Date: " D0_PLUS_1D, CDN_COND_304},
        {"GET", "If-Modified-Since: " D0, 200, "Date: " D0_PLUS_1D, CDN_COND_PROCEED},
        {"GET", "If-Modified-Since: " D0_PLUS_1H, 200, "", CDN_COND_304},
        {"GET", "If-Modified-Since: " D0, 200, "", CDN_COND_PROCEED},
        /* earlier steps win */
        {"GET", "If-Match: \"v2\"\nIf-None-Match: \"v1\"", 200, STORED, CDN_COND_412},
        {"GET", "If-Unmodified-Since: " D0_MINUS_1H "\nIf-None-Match: \"v1\"", 200, STORED,
         CDN_COND_412},
        {"GET", "If-Match: \"v1\"\nIf-None-Match: \"v1\"", 200, STORED, CDN_COND_304},
        /* only 2xx responses evaluate preconditions */
        {"GET", "If-None-Match: *", 404, STORED, CDN_COND_PROCEED},
        {"GET", "If-Match: \"zz\"", 301, STORED, CDN_COND_PROCEED},
        {"GET", "If-None-Match: \"v1\"", 204, STORED, CDN_COND_304},
        /* field names in any case; other If- fields are no conditionals here */
        {"GET", "if-none-match: \"v1\"", 200, STORED, CDN_COND_304},
        {"GET", "IF-MATCH: \"v2\"", 200, STORED, CDN_COND_412},
        {"GET", "if-modified-since: " D0_PLUS_1H, 200, STORED, CDN_COND_304},
        {"GET", "if-unmodified-since: " D0_MINUS_1H, 200, STORED, CDN_COND_412},
        {"GET", "If-Range: \"v1\"\nIf: x\nAccept: */*", 200, STORED, CDN_COND_PROCEED},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs req = hdrs_of(a, rows[i].req), s = hdrs_of(a, rows[i].stored);
        /* received 1 s after midnight on Jan 1 */
        struct cdn_stored st = {rows[i].status, &s, T0, T0 + 1};
        EQ(i, "result", cdn_eval_conditionals(rows[i].method, &req, &st), rows[i].want);
        cdn_arena_free(a);
    }
}

/* ---- Ranges
 * -------------------------------------------------------------------------------------- */

static void
test_range_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        uint64_t len;
        enum cdn_range_result want;
        uint64_t first, last;
    } rows[] = {
        {"bytes=0-499", 1000, CDN_RANGE_PARTIAL, 0, 499},
        {"bytes=500-999", 1000, CDN_RANGE_PARTIAL, 500, 999},
        {"bytes=500-", 1000, CDN_RANGE_PARTIAL, 500, 999},
        {"bytes=-500", 1000, CDN_RANGE_PARTIAL, 500, 999},
        {"bytes=-1", 1000, CDN_RANGE_PARTIAL, 999, 999},
        {"bytes=-1000", 1000, CDN_RANGE_PARTIAL, 0, 999},
        {"bytes=-1500", 1000, CDN_RANGE_PARTIAL, 0, 999},
        {"bytes=0-0", 1000, CDN_RANGE_PARTIAL, 0, 0},
        {"bytes=999-", 1000, CDN_RANGE_PARTIAL, 999, 999},
        {"bytes=0-5000", 1000, CDN_RANGE_PARTIAL, 0, 999},
        {"bytes=0-99999999999999999999999", 1000, CDN_RANGE_PARTIAL, 0, 999},
        {"bytes=-99999999999999999999999", 1000, CDN_RANGE_PARTIAL, 0, 999},
        {"Bytes=0-1", 1000, CDN_RANGE_PARTIAL, 0, 1},
        {"bytes= 0-1", 1000, CDN_RANGE_PARTIAL, 0, 1},
        {"bytes=0-1,", 1000, CDN_RANGE_PARTIAL, 0, 1},
        {"bytes=0-", 1, CDN_RANGE_PARTIAL, 0, 0},
        {"bytes=1000-", 1000, CDN_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=1000-2000", 1000, CDN_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=99999999999999999999999-", 1000, CDN_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=-0", 1000, CDN_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=0-1", 0, CDN_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=-5", 0, CDN_RANGE_UNSATISFIABLE, 0, 0},
        {"bytes=500-400", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=0-1,5-6", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=0-1, 5-6", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=0-1, -5", 1000, CDN_RANGE_FULL, 0, 0},
        {"items=0-1", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=abc", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=-", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=1-2-3", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=0 -1", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=+1-2", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes=0x1-2", 1000, CDN_RANGE_FULL, 0, 0},
        {"bytes 0-1", 1000, CDN_RANGE_FULL, 0, 0},
        {"0-1", 1000, CDN_RANGE_FULL, 0, 0},
        {"", 1000, CDN_RANGE_FULL, 0, 0},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        uint64_t first = 0, last = 0;
        enum cdn_range_result r =
            cdn_range_parse(rows[i].in, strlen(rows[i].in), rows[i].len, &first, &last);
        EQ(i, "result", r, rows[i].want);
        if (r == CDN_RANGE_PARTIAL) {
            EQ(i, "first", first, rows[i].first);
            EQ(i, "last", last, rows[i].last);
        }
    }
}

static void
test_if_range(void **state)
{
    (void)state;
    static const struct {
        const char *req, *stored;
        bool want;
    } rows[] = {
        {"", STORED, true},
        {"If-Range: \"v1\"", STORED, true},
        {"If-Range: \"v2\"", STORED, false},
        {"If-Range: W/\"v1\"", STORED, false},
        {"If-Range: \"v1\"", "ETag: W/\"v1\"", false},
        {"If-Range: \"v1\"", "Last-Modified: " D0, false},
        {"If-Range: " D0, STORED, true}, /* Last-Modified a day before Date: strong */
        {"If-Range: " D0_MINUS_1H, STORED, false},
        {"If-Range: " D0, "Last-Modified: " D0 "\nDate: " D0, false},
        {"If-Range: " D0_MINUS_60S, "Last-Modified: " D0_MINUS_60S "\nDate: " D0, true},
        {"If-Range: " D0_MINUS_30S, "Last-Modified: " D0_MINUS_30S "\nDate: " D0, false},
        {"If-Range: " D0, "Last-Modified: " D0, false},
        {"If-Range: " D0, "ETag: \"v1\"", false},
        {"If-Range: tomorrow", STORED, false},
        {"If-Range: \"v1\"\nIf-Range: \"v1\"", STORED, false},
        {"If-Range: Monday, 01-Jan-24 00:00:00 GMT", STORED, true},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs req = hdrs_of(a, rows[i].req), s = hdrs_of(a, rows[i].stored);
        EQ(i, "if-range", cdn_if_range_ok(&req, &s), rows[i].want);
        cdn_arena_free(a);
    }
}

static void
test_range_eval(void **state)
{
    (void)state;
    static const struct {
        const char *method, *req;
        int status;
        enum cdn_range_result want;
    } rows[] = {
        {"GET", "Range: bytes=0-9", 200, CDN_RANGE_PARTIAL},
        {"GET", "Range: bytes=100-", 200, CDN_RANGE_UNSATISFIABLE},
        {"GET", "", 200, CDN_RANGE_FULL},
        {"HEAD", "Range: bytes=0-9", 200, CDN_RANGE_FULL},
        {"POST", "Range: bytes=0-9", 200, CDN_RANGE_FULL},
        {"GET", "Range: bytes=0-9", 404, CDN_RANGE_FULL},
        {"GET", "Range: bytes=0-9", 203, CDN_RANGE_FULL},
        {"GET", "Range: bytes=0-9\nRange: bytes=0-9", 200, CDN_RANGE_FULL},
        {"GET", "Range: bytes=0-9\nIf-Range: \"v1\"", 200, CDN_RANGE_PARTIAL},
        {"GET", "Range: bytes=0-9\nIf-Range: \"v0\"", 200, CDN_RANGE_FULL},
        {"GET", "Range: bytes=100-\nIf-Range: \"v0\"", 200, CDN_RANGE_FULL},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs req = hdrs_of(a, rows[i].req), s = hdrs_of(a, STORED);
        struct cdn_stored st = {rows[i].status, &s, T0, T0};
        uint64_t first = 7, last = 7;
        EQ(i, "result", cdn_range_eval(rows[i].method, &req, &st, 100, &first, &last),
           rows[i].want);
        if (rows[i].want == CDN_RANGE_PARTIAL) {
            EQ(i, "first", first, 0);
            EQ(i, "last", last, 9);
        }
        cdn_arena_free(a);
    }
}

static void
test_content_range(void **state)
{
    (void)state;
    char buf[CDN_CONTENT_RANGE_LEN];
    assert_string_equal(cdn_content_range(CDN_RANGE_PARTIAL, 0, 499, 1000, buf, sizeof(buf)),
                        "bytes 0-499/1000");
    assert_string_equal(cdn_content_range(CDN_RANGE_UNSATISFIABLE, 0, 0, 1000, buf, sizeof(buf)),
                        "bytes */1000");
    assert_string_equal(cdn_content_range(CDN_RANGE_FULL, 0, 0, 1000, buf, sizeof(buf)), "");
    assert_string_equal(cdn_content_range(CDN_RANGE_PARTIAL, UINT64_MAX - 1, UINT64_MAX - 1,
                                          UINT64_MAX, buf, sizeof(buf)),
                        "bytes 18446744073709551614-18446744073709551614/18446744073709551615");
}

/* ---- Invalidation ------------------------------------------------------------------------------
 */

static void
test_invalidation(void **state)
{
    (void)state;
    static const struct {
        const char *method;
        int status;
        const char *host;
        const char *resp;
        const char *want; /* "scheme://host target" joined by '|' */
    } rows[] = {
        {"GET", 200, "example.com", "Location: /x", ""},
        {"HEAD", 200, "example.com", "", ""},
        {"OPTIONS", 200, "example.com", "", ""},
        {"TRACE", 200, "example.com", "", ""},
        {"POST", 200, "example.com", "", "http://example.com /a/b?x=1"},
        {"PURGE", 200, "example.com", "", "http://example.com /a/b?x=1"},
        {"POST", 302, "example.com", "", "http://example.com /a/b?x=1"},
        {"POST", 399, "example.com", "", "http://example.com /a/b?x=1"},
        {"POST", 404, "example.com", "", ""},
        {"POST", 500, "example.com", "", ""},
        {"POST", 199, "example.com", "", ""},
        {"PUT", 201, "example.com", "Location: /new",
         "http://example.com /a/b?x=1|http://example.com /new"},
        {"DELETE", 204, "example.com", "Content-Location: http://example.com/c",
         "http://example.com /a/b?x=1|http://example.com /c"},
        {"POST", 201, "example.com", "Location: /l\nContent-Location: /cl",
         "http://example.com /a/b?x=1|http://example.com /l|http://example.com /cl"},
        {"POST", 201, "example.com", "Location: /same\nContent-Location: /same",
         "http://example.com /a/b?x=1|http://example.com /same"},
        {"POST", 201, "example.com", "Location: http://other.com/x", "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: https://example.com/x",
         "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: HTTP://EXAMPLE.com:80/x",
         "http://example.com /a/b?x=1|http://example.com /x"},
        {"POST", 201, "example.com", "Location: http://example.com:8080/x",
         "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com:8080", "Location: http://example.com:8080/x",
         "http://example.com:8080 /a/b?x=1|http://example.com:8080 /x"},
        {"POST", 201, "example.com", "Location: //example.com/y",
         "http://example.com /a/b?x=1|http://example.com /y"},
        {"POST", 201, "example.com", "Location: //other.com/y", "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: c",
         "http://example.com /a/b?x=1|http://example.com /a/c"},
        {"POST", 201, "example.com", "Location: ?q",
         "http://example.com /a/b?x=1|http://example.com /a/b?q"},
        {"POST", 201, "example.com", "Location: ", "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: /a/b?x=1", "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: /z#frag",
         "http://example.com /a/b?x=1|http://example.com /z"},
        {"POST", 201, "example.com", "Location: http://user@example.com/x",
         "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: mailto:x@example.com",
         "http://example.com /a/b?x=1"},
        {"POST", 201, "example.com", "Location: http://example.com",
         "http://example.com /a/b?x=1|http://example.com /"},
        {"POST", 201, "example.com", "Location: http://example.com?q",
         "http://example.com /a/b?x=1|http://example.com /?q"},
        {"POST", 201, "example.com", "Location: http:/x", "http://example.com /a/b?x=1"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs resp = hdrs_of(a, rows[i].resp);
        struct cdn_uri out[3];
        size_t n = cdn_invalidation_targets(rows[i].method, rows[i].status, "http", rows[i].host,
                                            "/a/b?x=1", &resp, a, out);
        const char *got = "";
        for (size_t k = 0; k < n; k++)
            got = cdn_arena_printf(a, "%s%s%s://%s %s", got, k ? "|" : "", out[k].scheme,
                                   out[k].host, out[k].target);
        STREQ(i, "targets", got, rows[i].want);
        cdn_arena_free(a);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_storable),      cmocka_unit_test(test_storable_heuristic_statuses),
        cmocka_unit_test(test_store_reason),  cmocka_unit_test(test_strip_for_store),
        cmocka_unit_test(test_freshness),     cmocka_unit_test(test_age),
        cmocka_unit_test(test_decide),        cmocka_unit_test(test_decide_reason_str),
        cmocka_unit_test(test_stale_serving), cmocka_unit_test(test_validators),
        cmocka_unit_test(test_etag_match),    cmocka_unit_test(test_304_matches),
        cmocka_unit_test(test_merge_304),     cmocka_unit_test(test_conditionals),
        cmocka_unit_test(test_range_parse),   cmocka_unit_test(test_if_range),
        cmocka_unit_test(test_range_eval),    cmocka_unit_test(test_content_range),
        cmocka_unit_test(test_invalidation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
