/* Unit tests for Cache-Control, RFC 8941 Dictionaries, targeted fields and HTTP-date. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/cachectl.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"

#include <inttypes.h>
#include <stdint.h>
#include <string.h>

#include "hdrs_of.h"

#define EQ(row, what, got, want)                                                                   \
    do {                                                                                           \
        int64_t g_ = (int64_t)(got), w_ = (int64_t)(want);                                         \
        if (g_ != w_)                                                                              \
            fail_msg("row \"%s\": %s = %" PRId64 ", want %" PRId64, (row), (what), g_, w_);        \
    } while (0)

enum {
    NC = 1 << 0,
    NS = 1 << 1,
    PRIV = 1 << 2,
    PUB = 1 << 3,
    MR = 1 << 4,
    PR = 1 << 5,
    MU = 1 << 6,
    IMM = 1 << 7,
    NT = 1 << 8,
    OIC = 1 << 9
};

static unsigned
flags_of(const struct cdn_cc *cc)
{
    return (cc->no_cache ? NC : 0) | (cc->no_store ? NS : 0) | (cc->private_ ? PRIV : 0) |
           (cc->public_ ? PUB : 0) | (cc->must_revalidate ? MR : 0) |
           (cc->proxy_revalidate ? PR : 0) | (cc->must_understand ? MU : 0) |
           (cc->immutable ? IMM : 0) | (cc->no_transform ? NT : 0) | (cc->only_if_cached ? OIC : 0);
}

/* Field list as "a,b" for comparison. */
static const char *
fields_str(const struct cdn_cc_fields *f, char *buf, size_t size)
{
    size_t w = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < f->n; i++)
        w +=
            (size_t)snprintf(buf + w, size - w, "%s%.*s", i ? "," : "", (int)f->len[i], f->name[i]);
    return buf;
}

#define BIG CDN_DELTA_MAX

struct cc_row {
    const char *in;
    int64_t max_age, s_maxage, swr, sie, max_stale, min_fresh;
    unsigned flags;
    const char *nc_fields;
    const char *priv_fields;
};

#define NONE -1, -1, -1, -1, -1, -1

static const struct cc_row cc_rows[] = {
    {"", NONE, 0, "", ""},
    {"max-age=60", 60, -1, -1, -1, -1, -1, 0, "", ""},
    {"MAX-AGE=60", 60, -1, -1, -1, -1, -1, 0, "", ""},
    {"Max-Age=60", 60, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=\"60\"", 60, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age = 60", 60, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=0", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=007", 7, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=abc", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=-1", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=+1", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=1.5", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=\"60", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=\"60\"x", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=\"\"", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=5 public", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=60, max-age=60", 60, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=60, max-age=120", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=bad, max-age=60", 0, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=2147483647", 2147483647, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=2147483648", BIG, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=99999999999999999999999999", BIG, -1, -1, -1, -1, -1, 0, "", ""},
    {"s-maxage=30", -1, 30, -1, -1, -1, -1, 0, "", ""},
    {"S-MAXAGE=\"30\"", -1, 30, -1, -1, -1, -1, 0, "", ""},
    {"s-maxage=x", -1, 0, -1, -1, -1, -1, 0, "", ""},
    {"s-maxage=10, s-maxage=20", -1, 0, -1, -1, -1, -1, 0, "", ""},
    {"max-age=60, s-maxage=10", 60, 10, -1, -1, -1, -1, 0, "", ""},
    {"stale-while-revalidate=30", -1, -1, 30, -1, -1, -1, 0, "", ""},
    {"stale-while-revalidate=x", NONE, 0, "", ""},
    {"stale-while-revalidate", NONE, 0, "", ""},
    {"stale-while-revalidate=30, stale-while-revalidate=10", -1, -1, 10, -1, -1, -1, 0, "", ""},
    {"stale-if-error=600", -1, -1, -1, 600, -1, -1, 0, "", ""},
    {"stale-if-error=\"600\"", -1, -1, -1, 600, -1, -1, 0, "", ""},
    {"stale-if-error=-5", NONE, 0, "", ""},
    {"stale-if-error=9, stale-if-error=3", -1, -1, -1, 3, -1, -1, 0, "", ""},
    {"max-stale", -1, -1, -1, -1, BIG, -1, 0, "", ""},
    {"max-stale=10", -1, -1, -1, -1, 10, -1, 0, "", ""},
    {"max-stale=abc", NONE, 0, "", ""},
    {"max-stale=10, max-stale", -1, -1, -1, -1, 10, -1, 0, "", ""},
    {"max-stale, max-stale=10", -1, -1, -1, -1, 10, -1, 0, "", ""},
    {"min-fresh=20", -1, -1, -1, -1, -1, 20, 0, "", ""},
    {"min-fresh=20, min-fresh=30", -1, -1, -1, -1, -1, 30, 0, "", ""},
    {"min-fresh=x", NONE, 0, "", ""},
    {"min-fresh", NONE, 0, "", ""},
    {"no-cache", NONE, NC, "", ""},
    {"No-Cache", NONE, NC, "", ""},
    {"no-cache=\"Set-Cookie, X-Foo\"", NONE, NC, "Set-Cookie,X-Foo", ""},
    {"no-cache=Set-Cookie", NONE, NC, "Set-Cookie", ""},
    {"no-cache=\"Set-Cookie\", no-cache", NONE, NC, "", ""},
    {"no-cache, no-cache=\"A\"", NONE, NC, "", ""},
    {"no-cache=\"A\", no-cache=\"B\"", NONE, NC, "A,B", ""},
    {"no-cache=\"\"", NONE, NC, "", ""},
    {"no-cache=\"a b\"", NONE, NC, "", ""},
    {"no-cache=\"a", NONE, NC, "", ""},
    {"no-cache=\"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p\"", NONE, NC, "a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p",
     ""},
    {"no-cache=\"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\"", NONE, NC, "", ""},
    {"no-cache=\"a,b\", max-age=3", 3, -1, -1, -1, -1, -1, NC, "a,b", ""},
    {"no-store", NONE, NS, "", ""},
    {"NO-STORE", NONE, NS, "", ""},
    {"no-store=1", NONE, NS, "", ""},
    {"private", NONE, PRIV, "", ""},
    {"private=\"Set-Cookie\"", NONE, PRIV, "", "Set-Cookie"},
    {"private=\"x-a\", private", NONE, PRIV, "", ""},
    {"public", NONE, PUB, "", ""},
    {"public=1", NONE, 0, "", ""},
    {"private, public", NONE, PRIV | PUB, "", ""},
    {"must-revalidate", NONE, MR, "", ""},
    {"proxy-revalidate", NONE, PR, "", ""},
    {"must-understand", NONE, MU, "", ""},
    {"must-understand=x", NONE, 0, "", ""},
    {"immutable", NONE, IMM, "", ""},
    {"immutable=1", NONE, 0, "", ""},
    {"no-transform", NONE, NT, "", ""},
    {"only-if-cached", NONE, OIC, "", ""},
    {"foo, bar=baz, max-age=5", 5, -1, -1, -1, -1, -1, 0, "", ""},
    {"x=\"a,b\", max-age=5", 5, -1, -1, -1, -1, -1, 0, "", ""},
    {"max-age=5,,, public", 5, -1, -1, -1, -1, -1, PUB, "", ""},
    {" ,  ,max-age=5 ", 5, -1, -1, -1, -1, -1, 0, "", ""},
    {"=5", NONE, 0, "", ""},
    {"no store", NONE, 0, "", ""},
    {"public, max-age=31536000, immutable", 31536000, -1, -1, -1, -1, -1, PUB | IMM, "", ""},
    {"max-age=600, stale-while-revalidate=30, stale-if-error=86400", 600, -1, 30, 86400, -1, -1, 0,
     "", ""},
    {"no-store, no-cache, must-revalidate, proxy-revalidate, no-transform", NONE,
     NS | NC | MR | PR | NT, "", ""},
};

static void
check_cc(const char *row, const struct cdn_cc *cc, const struct cc_row *r)
{
    char buf[256];
    EQ(row, "max-age", cc->max_age, r->max_age);
    EQ(row, "s-maxage", cc->s_maxage, r->s_maxage);
    EQ(row, "stale-while-revalidate", cc->stale_while_revalidate, r->swr);
    EQ(row, "stale-if-error", cc->stale_if_error, r->sie);
    EQ(row, "max-stale", cc->max_stale, r->max_stale);
    EQ(row, "min-fresh", cc->min_fresh, r->min_fresh);
    EQ(row, "flags", flags_of(cc), r->flags);
    if (strcmp(fields_str(&cc->no_cache_fields, buf, sizeof(buf)), r->nc_fields) != 0)
        fail_msg("row \"%s\": no-cache fields \"%s\", want \"%s\"", row, buf, r->nc_fields);
    if (strcmp(fields_str(&cc->private_fields, buf, sizeof(buf)), r->priv_fields) != 0)
        fail_msg("row \"%s\": private fields \"%s\", want \"%s\"", row, buf, r->priv_fields);
}

static void
test_cc_directives(void **state)
{
    (void)state;
    for (size_t i = 0; i < CDN_ARRAY_LEN(cc_rows); i++) {
        struct cdn_cc cc;
        cdn_cc_init(&cc);
        cdn_cc_parse(cc_rows[i].in, strlen(cc_rows[i].in), &cc);
        check_cc(cc_rows[i].in, &cc, &cc_rows[i]);
    }
}

static void
test_cc_multiple_lines(void **state)
{
    (void)state;
    static const struct {
        const char *hdrs;
        size_t lines;
        struct cc_row want;
    } rows[] = {
        {"X: y", 0, {"", NONE, 0, "", ""}},
        {"Cache-Control: max-age=5", 1, {"", 5, -1, -1, -1, -1, -1, 0, "", ""}},
        {"Cache-Control: public\ncache-control: max-age=5",
         2,
         {"", 5, -1, -1, -1, -1, -1, PUB, "", ""}},
        {"Cache-Control: max-age=5\nX: 1\nCACHE-CONTROL: max-age=7",
         2,
         {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
        {"Cache-Control: no-cache=\"a\"\nCache-Control: no-cache=\"b\"",
         2,
         {"", NONE, NC, "a,b", ""}},
        {"Cache-Control: private=\"a\"\nCache-Control: private", 2, {"", NONE, PRIV, "", ""}},
        {"Cache-Control: \nCache-Control: no-store", 2, {"", NONE, NS, "", ""}},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].hdrs);
        struct cdn_cc cc;
        EQ(rows[i].hdrs, "lines", cdn_cc_from_hdrs(&h, "Cache-Control", &cc), rows[i].lines);
        check_cc(rows[i].hdrs, &cc, &rows[i].want);
        cdn_arena_free(a);
    }
}

static void
test_delta_seconds(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int rc;
        int64_t v;
    } rows[] = {
        {"0", 0, 0},
        {"123", 0, 123},
        {"0000", 0, 0},
        {"2147483647", 0, 2147483647},
        {"2147483648", 0, BIG},
        {"2147483649", 0, BIG},
        {"99999999999999999999999999999", 0, BIG},
        {"", CDN_EINVAL, 0},
        {"-1", CDN_EINVAL, 0},
        {"+1", CDN_EINVAL, 0},
        {" 1", CDN_EINVAL, 0},
        {"1 ", CDN_EINVAL, 0},
        {"1a", CDN_EINVAL, 0},
        {"1.0", CDN_EINVAL, 0},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        int64_t v = 0;
        EQ(rows[i].in, "rc", cdn_delta_seconds_parse(rows[i].in, strlen(rows[i].in), &v),
           rows[i].rc);
        if (rows[i].rc == 0)
            EQ(rows[i].in, "value", v, rows[i].v);
    }
}

/* ---- Structured fields ---------------------------------------------------------------------- */

struct sf_member_want {
    const char *key;
    enum cdn_sf_type type;
    int64_t integer; /* integers, decimals (x1000), booleans (0/1), inner-list item count */
    const char *str; /* text of strings, tokens, bytes; NULL to skip */
    size_t n_params;
};

static const struct {
    const char *in;
    size_t n;
    struct sf_member_want m[4];
} sf_good[] = {
    /* RFC 8941 §3.2 examples */
    {"en=\"Applepie\", da=:w4ZibGV0w6ZydGU=:",
     2,
     {{"en", CDN_SF_STRING, 0, "Applepie", 0}, {"da", CDN_SF_BYTES, 0, "w4ZibGV0w6ZydGU=", 0}}},
    {"a=?0, b, c; foo=bar",
     3,
     {{"a", CDN_SF_BOOLEAN, 0, NULL, 0},
      {"b", CDN_SF_BOOLEAN, 1, NULL, 0},
      {"c", CDN_SF_BOOLEAN, 1, NULL, 1}}},
    {"rating=1.5, feelings=(joy sadness)",
     2,
     {{"rating", CDN_SF_DECIMAL, 1500, "1.5", 0},
      {"feelings", CDN_SF_INNER_LIST, 2, "(joy sadness)", 0}}},
    {"a=(1 2), b=3, c=4;aa=bb, d=(5 6);valid",
     4,
     {{"a", CDN_SF_INNER_LIST, 2, NULL, 0},
      {"b", CDN_SF_INTEGER, 3, "3", 0},
      {"c", CDN_SF_INTEGER, 4, NULL, 1},
      {"d", CDN_SF_INNER_LIST, 2, NULL, 1}}},
    /* duplicate keys: the later value wins, the first position stays */
    {"a=1, b=2, a=3", 2, {{"a", CDN_SF_INTEGER, 3, NULL, 0}, {"b", CDN_SF_INTEGER, 2, NULL, 0}}},
    {"a=1,b=2", 2, {{"a", CDN_SF_INTEGER, 1, NULL, 0}, {"b", CDN_SF_INTEGER, 2, NULL, 0}}},
    {"a=1 ,\tb=2", 2, {{"a", CDN_SF_INTEGER, 1, NULL, 0}, {"b", CDN_SF_INTEGER, 2, NULL, 0}}},
    {"  a=1  ", 1, {{"a", CDN_SF_INTEGER, 1, NULL, 0}}},
    {"a=1\t", 1, {{"a", CDN_SF_INTEGER, 1, NULL, 0}}},
    {"", 0, {{NULL, 0, 0, NULL, 0}}},
    {"a=-1", 1, {{"a", CDN_SF_INTEGER, -1, "-1", 0}}},
    {"a=999999999999999", 1, {{"a", CDN_SF_INTEGER, 999999999999999, NULL, 0}}},
    {"a=-999999999999.999", 1, {{"a", CDN_SF_DECIMAL, -999999999999999, NULL, 0}}},
    {"a=0.25", 1, {{"a", CDN_SF_DECIMAL, 250, NULL, 0}}},
    {"a=*foo/bar:baz", 1, {{"a", CDN_SF_TOKEN, 0, "*foo/bar:baz", 0}}},
    {"a=\"x\\\"y\\\\\"", 1, {{"a", CDN_SF_STRING, 0, "x\\\"y\\\\", 0}}},
    {"a=\"\"", 1, {{"a", CDN_SF_STRING, 0, "", 0}}},
    {"a=()", 1, {{"a", CDN_SF_INNER_LIST, 0, "()", 0}}},
    {"a=( 1  2 )", 1, {{"a", CDN_SF_INNER_LIST, 2, NULL, 0}}},
    {"a=(1;p=2 \"s\");q", 1, {{"a", CDN_SF_INNER_LIST, 2, NULL, 1}}},
    {"a=::", 1, {{"a", CDN_SF_BYTES, 0, "", 0}}},
    {"*a=1", 1, {{"*a", CDN_SF_INTEGER, 1, NULL, 0}}},
    {"a-b_c.d*=?1", 1, {{"a-b_c.d*", CDN_SF_BOOLEAN, 1, NULL, 0}}},
    {"a;p1;p2=2;p1=3", 1, {{"a", CDN_SF_BOOLEAN, 1, NULL, 2}}},
    {"a=1; p=2", 1, {{"a", CDN_SF_INTEGER, 1, NULL, 1}}},
};

static const char *const sf_bad[] = {
    "a=1,",     /* trailing comma */
    "a=1, ",    /* trailing comma and space */
    "a=1,,b=2", /* empty member */
    ",a=1",     /* leading comma */
    "A=1",      /* uppercase key */
    "1a=1",     /* key starts with a digit */
    "-a=1",     /* key starts with '-' */
    "a=1 b=2",  /* missing comma */
    "a=1;",     /* empty parameter key */
    "a=1;B=2",  /* uppercase parameter key */
    "a=1; ;b",  /* empty parameter key after space */
    "a=",       /* missing value */
    "a=\"unterminated",
    "a=\"bad\\escape\"",
    "a=\"tab\there\"",
    "a=\"\xc3\xa9\"", /* non-ASCII in a string */
    "a=?2",
    "a=?",
    "a=1234567890123456", /* 16 digits */
    "a=1.",               /* decimal ending in '.' */
    "a=1.1234",           /* four fraction digits */
    "a=1234567890123.1",  /* thirteen integer digits */
    "a=1.2.3",
    "a=-",
    "a=--1",
    "a=(1 2",  /* unterminated inner list */
    "a=(1,2)", /* comma in an inner list */
    "a=(1)x",
    "a=:abc",  /* unterminated byte sequence */
    "a=:a#b:", /* invalid base64 character */
    "a=@",     /* no bare item starts with '@' */
    "a=%",
    "\ta=1", /* leading HTAB is not SP */
    "a=1 x",
    "a=\"x\"y",
};

static void
test_sf_dict_good(void **state)
{
    (void)state;
    struct cdn_sf_dict d;
    for (size_t i = 0; i < CDN_ARRAY_LEN(sf_good); i++) {
        const char *row = sf_good[i].in;
        EQ(row, "rc", cdn_sf_parse_dict(row, strlen(row), &d), 0);
        EQ(row, "members", d.n, sf_good[i].n);
        for (size_t j = 0; j < d.n; j++) {
            const struct sf_member_want *w = &sf_good[i].m[j];
            const struct cdn_sf_member *m = &d.m[j];
            if (m->klen != strlen(w->key) || memcmp(m->key, w->key, m->klen) != 0)
                fail_msg("row \"%s\": key %zu is \"%.*s\"", row, j, (int)m->klen, m->key);
            EQ(row, "type", m->type, w->type);
            if (w->type == CDN_SF_BOOLEAN)
                EQ(row, "boolean", m->boolean, w->integer);
            else if (w->type == CDN_SF_INNER_LIST)
                EQ(row, "inner items", m->n_inner, w->integer);
            else if (w->type == CDN_SF_INTEGER || w->type == CDN_SF_DECIMAL)
                EQ(row, "number", m->integer, w->integer);
            if (w->str && (m->len != strlen(w->str) || memcmp(m->str, w->str, m->len) != 0))
                fail_msg("row \"%s\": text \"%.*s\", want \"%s\"", row, (int)m->len, m->str,
                         w->str);
            EQ(row, "params", m->n_params, w->n_params);
        }
    }
}

static void
test_sf_dict_bad(void **state)
{
    (void)state;
    struct cdn_sf_dict d;
    for (size_t i = 0; i < CDN_ARRAY_LEN(sf_bad); i++)
        EQ(sf_bad[i], "rc", cdn_sf_parse_dict(sf_bad[i], strlen(sf_bad[i]), &d), CDN_EINVAL);
}

static void
test_sf_dict_bounds(void **state)
{
    (void)state;
    char buf[1024];
    struct cdn_sf_dict d;
    size_t w = 0;
    for (int i = 0; i < CDN_SF_MAX_MEMBERS; i++)
        w += (size_t)snprintf(buf + w, sizeof(buf) - w, "%sk%d", i ? ", " : "", i);
    assert_int_equal(cdn_sf_parse_dict(buf, w, &d), 0);
    assert_int_equal(d.n, CDN_SF_MAX_MEMBERS);
    /* the same key again is an overwrite, not a new member */
    w += (size_t)snprintf(buf + w, sizeof(buf) - w, ", k0=5");
    assert_int_equal(cdn_sf_parse_dict(buf, w, &d), 0);
    assert_int_equal(d.m[0].integer, 5);
    w += (size_t)snprintf(buf + w, sizeof(buf) - w, ", extra");
    assert_int_equal(cdn_sf_parse_dict(buf, w, &d), CDN_ETOOBIG);
}

static const struct {
    const char *in;
    int rc;
    struct cc_row want;
} targeted_rows[] = {
    {"max-age=60", 0, {"", 60, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=60, stale-while-revalidate=30", 0, {"", 60, -1, 30, -1, -1, -1, 0, "", ""}},
    {"s-maxage=10, must-revalidate", 0, {"", -1, 10, -1, -1, -1, -1, MR, "", ""}},
    {"no-store", 0, {"", NONE, NS, "", ""}},
    {"no-store=?1", 0, {"", NONE, NS, "", ""}},
    {"no-store=?0", 0, {"", NONE, 0, "", ""}},
    {"private", 0, {"", NONE, PRIV, "", ""}},
    {"no-cache=\"set-cookie, x-a\"", 0, {"", NONE, NC, "set-cookie,x-a", ""}},
    {"public, immutable", 0, {"", NONE, PUB | IMM, "", ""}},
    {"max-age=\"60\"", 0, {"", 60, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=-1", 0, {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=1.5", 0, {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age", 0, {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=(1 2)", 0, {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=:AAA=:", 0, {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=abc", 0, {"", 0, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=60;foo=bar", 0, {"", 60, -1, -1, -1, -1, -1, 0, "", ""}},
    {"max-age=60, max-age=10", 0, {"", 10, -1, -1, -1, -1, -1, 0, "", ""}},
    {"stale-if-error=999999999999999", 0, {"", -1, -1, -1, BIG, -1, -1, 0, "", ""}},
    {"unknown=5", 0, {"", NONE, 0, "", ""}},
    {"Max-Age=60", CDN_EINVAL, {"", NONE, 0, "", ""}},
    {"max-age=60,", CDN_EINVAL, {"", NONE, 0, "", ""}},
    {"max-age=60 s-maxage=10", CDN_EINVAL, {"", NONE, 0, "", ""}},
    {"max-age=60, no-cache=\"x", CDN_EINVAL, {"", NONE, 0, "", ""}},
    {"", CDN_EINVAL, {"", NONE, 0, "", ""}},
    {"   ", CDN_EINVAL, {"", NONE, 0, "", ""}},
};

static void
test_targeted_parse(void **state)
{
    (void)state;
    for (size_t i = 0; i < CDN_ARRAY_LEN(targeted_rows); i++) {
        struct cdn_cc cc;
        cdn_cc_init(&cc);
        const char *row = targeted_rows[i].in;
        EQ(row, "rc", cdn_cc_parse_targeted(row, strlen(row), &cc), targeted_rows[i].rc);
        check_cc(row, &cc, &targeted_rows[i].want);
    }
}

/* cdn_cc_parse_surrogate() for device "node-a" (or none). */
static void
test_surrogate_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in, *device;
        int rc;
        int64_t max_age;
        bool no_store;
    } rows[] = {
        {"max-age=3600", NULL, 0, 3600, false},
        {"MaX-aGe=3600", NULL, 0, 3600, false},
        {"foobar, max-age=3600", NULL, 0, 3600, false},
        {"no-store", NULL, 0, -1, true},
        {"max-age=3600;node-a", "node-a", 0, 3600, false},
        {"max-age=3600 ; NODE-A", "node-a", 0, 3600, false},
        {"max-age=3600;other", "node-a", CDN_EINVAL, -1, false},
        {"max-age=3600;node-a", NULL, CDN_EINVAL, -1, false},
        {"max-age=3600;node-a", "", CDN_EINVAL, -1, false},
        {"max-age=3600;", "node-a", CDN_EINVAL, -1, false},
        /* targeted directives replace the untargeted ones, whatever their order */
        {"max-age=60, max-age=3600;node-a", "node-a", 0, 3600, false},
        {"max-age=3600;node-a, max-age=60", "node-a", 0, 3600, false},
        {"no-store, max-age=60;node-a", "node-a", 0, 60, false},
        {"no-store;node-b, max-age=60", "node-a", 0, 60, false},
        {"max-age=3600;node-a, max-age=60", "node-b", 0, 60, false},
        /* a ';' inside a quoted argument is not a target */
        {"content=\"ESI/1.0;x\";node-a, max-age=9;node-a", "node-a", 0, 9, false},
        {"content=\"a;node-a\"", "node-a", 0, -1, false},
        {"", NULL, CDN_EINVAL, -1, false},
        {" , ;node-a", "node-a", CDN_EINVAL, -1, false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_cc cc;
        cdn_cc_init(&cc);
        const char *in = rows[i].in;
        EQ(in, "rc", cdn_cc_parse_surrogate(in, strlen(in), rows[i].device, &cc), rows[i].rc);
        EQ(in, "max-age", cc.max_age, rows[i].max_age);
        EQ(in, "no-store", cc.no_store, rows[i].no_store);
    }
}

static void
test_targeted_from_hdrs(void **state)
{
    (void)state;
    static const char *const one[] = {"CDN-Cache-Control"};
    static const char *const two[] = {"Acme-CDN-Cache-Control", "CDN-Cache-Control"};
    static const char *const sc[] = {"CDN-Cache-Control", "Surrogate-Control"};
    static const struct {
        const char *hdrs;
        const char *const *names;
        size_t n_names;
        int want;
        int64_t max_age;
        int64_t sie;
    } rows[] = {
        {"Cache-Control: max-age=5", one, 1, -1, -1, -1},
        {"CDN-Cache-Control: max-age=60", one, 1, 0, 60, -1},
        {"cdn-cache-control: max-age=60", one, 1, 0, 60, -1},
        {"CDN-Cache-Control: max-age=60,", one, 1, -1, -1, -1},
        {"CDN-Cache-Control: ", one, 1, -1, -1, -1},
        {"CDN-Cache-Control: max-age=60\nCDN-Cache-Control: stale-if-error=30", one, 1, 0, 60, 30},
        {"CDN-Cache-Control: max-age=60\nCDN-Cache-Control: max-age=10", one, 1, 0, 10, -1},
        {"CDN-Cache-Control: max-age=60\nCDN-Cache-Control: ", one, 1, -1, -1, -1},
        {"CDN-Cache-Control: max-age=60\nCDN-Cache-Control: bad!", one, 1, -1, -1, -1},
        {"CDN-Cache-Control: max-age=60\nAcme-CDN-Cache-Control: max-age=5", two, 2, 0, 5, -1},
        {"CDN-Cache-Control: max-age=60\nAcme-CDN-Cache-Control: max-age=5,", two, 2, 1, 60, -1},
        {"CDN-Cache-Control: max-age=60", two, 2, 1, 60, -1},
        {"CDN-Cache-Control: max-age=60", NULL, 0, -1, -1, -1},
        /* Surrogate-Control keeps its own syntax and targets devices (ours: node-a) */
        {"Surrogate-Control: max-age=60;node-a\nSurrogate-Control: max-age=5", sc, 2, 1, 60, -1},
        {"Surrogate-Control: max-age=5\nSurrogate-Control: stale-if-error=9", sc, 2, 1, 5, 9},
        {"Surrogate-Control: Max-Age=60", sc, 2, 1, 60, -1},
        {"Surrogate-Control: max-age=60;other\nCache-Control: max-age=5", sc, 2, -1, -1, -1},
        {"CDN-Cache-Control: max-age=7\nSurrogate-Control: max-age=60", sc, 2, 0, 7, -1},
        {"CDN-Cache-Control: max-age=7,\nSurrogate-Control: max-age=60", sc, 2, 1, 60, -1},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].hdrs);
        struct cdn_cc cc;
        EQ(rows[i].hdrs, "index",
           cdn_cc_targeted_from_hdrs(&h, rows[i].names, rows[i].n_names, "node-a", &cc),
           rows[i].want);
        EQ(rows[i].hdrs, "max-age", cc.max_age, rows[i].max_age);
        EQ(rows[i].hdrs, "stale-if-error", cc.stale_if_error, rows[i].sie);
        cdn_arena_free(a);
    }
}

/* ---- HTTP-date --------------------------------------------------------------------------------
 */

#define T1994 INT64_C(784111777)  /* Sun, 06 Nov 1994 08:49:37 GMT */
#define T2024 INT64_C(1704067200) /* Mon, 01 Jan 2024 00:00:00 GMT */

static void
test_http_date_parse(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        int64_t ref;
        int rc;
        int64_t want;
    } rows[] = {
        {"Sun, 06 Nov 1994 08:49:37 GMT", T2024, 0, T1994},
        {"Sunday, 06-Nov-94 08:49:37 GMT", T2024, 0, T1994},
        {"Sun Nov  6 08:49:37 1994", T2024, 0, T1994},
        {"Sun Nov 06 08:49:37 1994", T2024, 0, T1994},
        {"  Sun, 06 Nov 1994 08:49:37 GMT\t", T2024, 0, T1994},
        {"Thu, 01 Jan 1970 00:00:00 GMT", T2024, 0, 0},
        {"Wed, 31 Dec 1969 23:59:59 GMT", T2024, 0, -1},
        {"Mon, 06 Nov 1994 08:49:37 GMT", T2024, 0, T1994}, /* day name not cross-checked */
        {"Sun, 06 Nov 1994 08:49:60 GMT", T2024, 0, T1994 + 23},
        {"Tue, 29 Feb 2000 00:00:00 GMT", T2024, 0, 951782400},
        {"Fri, 31 Dec 9999 23:59:59 GMT", T2024, 0, INT64_C(253402300799)},
        {"Mon, 01 Jan 0001 00:00:00 GMT", T2024, 0, INT64_C(-62135596800)},
        /* two-digit years: no more than 50 years after the reference */
        {"Thursday, 01-Jan-70 00:00:00 GMT", T2024, 0, INT64_C(3155760000)},
        {"Tuesday, 01-Jan-80 00:00:00 GMT", T2024, 0, 315532800},
        {"Sunday, 06-Nov-94 08:49:37 GMT", 0, 0, T1994},
        {"Saturday, 01-Jan-00 00:00:00 GMT", 0, 0, 946684800},
        {"Thursday, 01-Jan-70 00:00:00 GMT", 0, 0, 0},
        /* garbage */
        {"", T2024, CDN_EINVAL, 0},
        {"0", T2024, CDN_EINVAL, 0},
        {"-1", T2024, CDN_EINVAL, 0},
        {"now", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 08:49:37 gmt", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 08:49:37 UTC", T2024, CDN_EINVAL, 0},
        {"sun, 06 Nov 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 nov 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 6 Nov 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 94 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Foo 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 24:00:00 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 08:60:00 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 08:49:61 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 8:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 30 Feb 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Thu, 29 Feb 1900 00:00:00 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 00 Nov 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 31 Nov 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 08:49:37 GMT junk", T2024, CDN_EINVAL, 0},
        {"Sun,06 Nov 1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06 Nov 1994 08:49:37 +0000", T2024, CDN_EINVAL, 0},
        {"Sun Nov  6 08:49:37 94", T2024, CDN_EINVAL, 0},
        {"Sun Nov 6 08:49:37 1994", T2024, CDN_EINVAL, 0},
        {"Sun Nov  6 08:49:37 1994 GMT", T2024, CDN_EINVAL, 0},
        {"Sunday, 06-Nov-1994 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sun, 06-Nov-94 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Sunday, 06 Nov 94 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"Funday, 06-Nov-94 08:49:37 GMT", T2024, CDN_EINVAL, 0},
        {"1994-11-06T08:49:37Z", T2024, CDN_EINVAL, 0},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        int64_t t = 12345;
        EQ(rows[i].in, "rc", cdn_http_date_parse(rows[i].in, strlen(rows[i].in), rows[i].ref, &t),
           rows[i].rc);
        if (rows[i].rc == 0)
            EQ(rows[i].in, "time", t, rows[i].want);
    }
}

static void
test_http_date_format(void **state)
{
    (void)state;
    static const struct {
        int64_t t;
        const char *want;
    } rows[] = {
        {0, "Thu, 01 Jan 1970 00:00:00 GMT"},
        {T1994, "Sun, 06 Nov 1994 08:49:37 GMT"},
        {-1, "Wed, 31 Dec 1969 23:59:59 GMT"},
        {951782400, "Tue, 29 Feb 2000 00:00:00 GMT"},
        {T2024, "Mon, 01 Jan 2024 00:00:00 GMT"},
        {INT64_C(253402300799), "Fri, 31 Dec 9999 23:59:59 GMT"},
        {INT64_MAX, "Fri, 31 Dec 9999 23:59:59 GMT"},
        {INT64_MIN, "Mon, 01 Jan 0001 00:00:00 GMT"},
    };
    char buf[CDN_HTTP_DATE_LEN + 1];
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        assert_string_equal(cdn_http_date_format(rows[i].t, buf), rows[i].want);
        assert_int_equal(strlen(buf), CDN_HTTP_DATE_LEN);
    }
    /* Round trip across eras, leap days and both signs. */
    for (int64_t t = INT64_C(-62135596800); t < INT64_C(253402300799); t += 86399 * 997) {
        int64_t back;
        cdn_http_date_format(t, buf);
        assert_int_equal(cdn_http_date_parse(buf, strlen(buf), 0, &back), 0);
        assert_int_equal(back, t);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cc_directives),    cmocka_unit_test(test_cc_multiple_lines),
        cmocka_unit_test(test_delta_seconds),    cmocka_unit_test(test_sf_dict_good),
        cmocka_unit_test(test_sf_dict_bad),      cmocka_unit_test(test_sf_dict_bounds),
        cmocka_unit_test(test_targeted_parse),   cmocka_unit_test(test_targeted_from_hdrs),
        cmocka_unit_test(test_surrogate_parse),  cmocka_unit_test(test_http_date_parse),
        cmocka_unit_test(test_http_date_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
