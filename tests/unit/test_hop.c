/* Unit tests for hop-by-hop filtering, Via / CDN-Loop / X-Forwarded-For / Forwarded and loops. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"
#include "cdnode/hop.h"

#include <string.h>

#define MAXF 20

struct field {
    const char *n;
    const char *v;
};

static void
fill(struct cdn_hdrs *h, const struct field *f)
{
    for (size_t i = 0; i < MAXF && f[i].n; i++)
        cdn_hdrs_add_str(h, f[i].n, f[i].v);
}

/* The list as "Name: value\n" lines, for one comparison per case. */
static const char *
render(const struct cdn_hdrs *h, struct cdn_arena *a)
{
    const char *s = "";
    for (size_t i = 0; i < h->n; i++)
        s = cdn_arena_printf(a, "%s%.*s: %.*s\n", s, (int)h->v[i].nlen, h->v[i].name,
                             (int)h->v[i].vlen, h->v[i].value);
    return s;
}

static void
test_hop_by_hop_fixed(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        bool want;
    } rows[] = {
        {"Connection", true},
        {"connection", true},
        {"Keep-Alive", true},
        {"KEEP-ALIVE", true},
        {"Proxy-Connection", true},
        {"Proxy-Authenticate", true},
        {"Proxy-Authorization", true},
        {"proxy-anything", true},
        {"TE", true},
        {"te", true},
        {"Trailer", true},
        {"Transfer-Encoding", true},
        {"Upgrade", true},
        {"Proxy", false},
        {"X-Proxy-Id", false},
        {"Trailers", false},
        {"Tee", false},
        {"Connections", false},
        /* same lengths as members of the set */
        {"TF", false},
        {"Upgrad3", false},
        {"Keep-Alivf", false},
        {"Connectioo", false},
        {"Transfer-Encodinh", false},
        {"Proxy_", false},
        {"Host", false},
        {"Via", false},
        {"Content-Length", false},
        {"Content-Type", false},
        {"Cookie", false},
    };
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs empty;
    cdn_hdrs_init(&empty, a);
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        size_t n = strlen(rows[i].name);
        if (cdn_hop_is_hop_by_hop(&empty, rows[i].name, n) != rows[i].want)
            fail_msg("%s: want %d", rows[i].name, rows[i].want);
        if (cdn_hop_is_hop_by_hop(NULL, rows[i].name, n) != rows[i].want)
            fail_msg("%s (no list): want %d", rows[i].name, rows[i].want);
    }
    cdn_arena_free(a);
}

static void
test_hop_by_hop_connection_listed(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    cdn_hdrs_add_str(&h, "Connection", "close, X-Foo");
    cdn_hdrs_add_str(&h, "X-Foo", "1");
    cdn_hdrs_add_str(&h, "connection", " x-bar ,, X-Baz\t");
    static const struct {
        const char *name;
        bool want;
    } rows[] = {
        {"X-Foo", true}, {"x-foo", true}, {"X-BAR", true},   {"X-Baz", true},
        {"close", true}, {"X-Fo", false}, {"X-Foo2", false}, {"X-Qux", false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++)
        if (cdn_hop_is_hop_by_hop(&h, rows[i].name, strlen(rows[i].name)) != rows[i].want)
            fail_msg("%s: want %d", rows[i].name, rows[i].want);
    cdn_arena_free(a);
}

/* cdn_hop_mark() marks exactly the fields cdn_hop_is_hop_by_hop() names, one list at a time. */
static void
test_hop_mark_agrees(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    cdn_hdrs_add_str(&h, "X-Foo", "1");
    cdn_hdrs_add_str(&h, "Connection", "close, X-Foo, \"x-qux\"");
    cdn_hdrs_add_str(&h, "ETag", "\"a\"");
    cdn_hdrs_add_str(&h, "connection", "x-BAR,,Keep-Alive");
    cdn_hdrs_add_str(&h, "X-Bar", "2");
    cdn_hdrs_add_str(&h, "Proxy-Authenticate", "Basic");
    cdn_hdrs_add_str(&h, "Proxy", "not a prefix match");
    cdn_hdrs_add_str(&h, "te", "trailers");
    cdn_hdrs_add_str(&h, "X-Qux", "3");
    cdn_hdrs_add_str(&h, "Cache-Control", "max-age=1");
    cdn_hdrs_add_str(&h, "close", "named by Connection");
    static const bool want[] = {true,  true, false, true,  true, true,
                                false, true, false, false, true};
    assert_int_equal(h.n, CDN_ARRAY_LEN(want));
    bool hop[CDN_ARRAY_LEN(want)];
    cdn_hop_mark(&h, hop);
    for (size_t i = 0; i < h.n; i++) {
        bool one = cdn_hop_is_hop_by_hop(&h, h.v[i].name, h.v[i].nlen);
        if (hop[i] != want[i] || one != want[i])
            fail_msg("%s: mark %d, single %d, want %d", h.v[i].name, hop[i], one, want[i]);
    }
    /* Without any Connection field only the fixed set counts. */
    struct cdn_hdrs p;
    cdn_hdrs_init(&p, a);
    cdn_hdrs_add_str(&p, "Upgrade", "h2c");
    cdn_hdrs_add_str(&p, "X-Foo", "1");
    bool hp[2];
    cdn_hop_mark(&p, hp);
    assert_true(hp[0]);
    assert_false(hp[1]);
    cdn_arena_free(a);
}

struct reqcase {
    const char *label;
    struct field in[MAXF];
    bool xff, fwd, http10, sc;
    const char *peer; /* NULL: "192.0.2.9" */
    const char *host; /* NULL: "example.com" */
    const char *scheme;
    const char *want;
};

static void
test_request_headers(void **state)
{
    (void)state;
    static const struct reqcase cases[] = {
        {"every hop-by-hop field dropped, order kept",
         .in = {{"Host", "example.com"},
                {"Accept", "*/*"},
                {"Connection", "keep-alive"},
                {"Keep-Alive", "timeout=5"},
                {"Proxy-Connection", "keep-alive"},
                {"Proxy-Authorization", "Basic eA=="},
                {"Proxy-Authenticate", "Basic"},
                {"Proxy-Foo", "1"},
                {"Cookie", "a=1"},
                {"TE", "trailers"},
                {"Trailer", "X-T"},
                {"Transfer-Encoding", "chunked"},
                {"Upgrade", "websocket"},
                {"Content-Length", "5"},
                {"Expect", "100-continue"},
                {"X-A", "1"},
                {"Cookie", "b=2"}},
         .want = "Accept: */*\nCookie: a=1\nX-A: 1\nCookie: b=2\n"
                 "Via: 1.1 cdnA\nCDN-Loop: cdnA\n"},
        {"names listed in Connection dropped",
         .in = {{"X-A", "1"},
                {"Connection", "X-B, close"},
                {"x-b", "2"},
                {"X-C", "3"},
                {"connection", "X-C"},
                {"X-D", "4"}},
         .want = "X-A: 1\nX-D: 4\nVia: 1.1 cdnA\nCDN-Loop: cdnA\n"},
        {"Via proto for HTTP/1.0", .in = {{"Accept", "*/*"}}, .http10 = true,
         .want = "Accept: */*\nVia: 1.0 cdnA\nCDN-Loop: cdnA\n"},
        {"prior Via and CDN-Loop kept, ours appended",
         .in = {{"Via", "1.1 edge (x)"}, {"CDN-Loop", "other; x=1, third"}, {"X-A", "1"}},
         .want = "Via: 1.1 edge (x)\nCDN-Loop: other; x=1, third\nX-A: 1\n"
                 "Via: 1.1 cdnA\nCDN-Loop: cdnA\n"},
        {"X-Forwarded-For added", .in = {{"X-A", "1"}}, .xff = true,
         .want = "X-A: 1\nVia: 1.1 cdnA\nCDN-Loop: cdnA\nX-Forwarded-For: 192.0.2.9\n"},
        {"X-Forwarded-For joined and moved to the end",
         .in = {{"X-Forwarded-For", "198.51.100.1, 198.51.100.2"},
                {"X-A", "1"},
                {"x-forwarded-for", "198.51.100.3"}},
         .xff = true,
         .want = "X-A: 1\nVia: 1.1 cdnA\nCDN-Loop: cdnA\n"
                 "X-Forwarded-For: 198.51.100.1, 198.51.100.2, 198.51.100.3, 192.0.2.9\n"},
        {"empty X-Forwarded-For elements ignored",
         .in = {{"X-Forwarded-For", " , "}, {"X-Forwarded-For", ""}}, .xff = true,
         .want = "Via: 1.1 cdnA\nCDN-Loop: cdnA\nX-Forwarded-For: 192.0.2.9\n"},
        {"X-Forwarded-For left alone when disabled",
         .in = {{"X-Forwarded-For", "198.51.100.1"}, {"X-A", "1"}},
         .want = "X-Forwarded-For: 198.51.100.1\nX-A: 1\nVia: 1.1 cdnA\nCDN-Loop: cdnA\n"},
        {"Forwarded for IPv4", .in = {{"Forwarded", "for=198.51.100.1"}}, .fwd = true,
         .scheme = "http",
         .want = "Forwarded: for=198.51.100.1\nVia: 1.1 cdnA\nCDN-Loop: cdnA\n"
                 "Forwarded: for=192.0.2.9;host=example.com;proto=http\n"},
        {"Forwarded for IPv6 and a host with a port", .fwd = true, .peer = "2001:db8::7",
         .host = "example.com:8080", .scheme = "https",
         .want = "Via: 1.1 cdnA\nCDN-Loop: cdnA\n"
                 "Forwarded: for=\"[2001:db8::7]\";host=\"example.com:8080\";proto=https\n"},
        {"Forwarded with an IPv6 host", .fwd = true, .peer = "::1", .host = "[::1]:8080",
         .scheme = "http",
         .want = "Via: 1.1 cdnA\nCDN-Loop: cdnA\n"
                 "Forwarded: for=\"[::1]\";host=\"[::1]:8080\";proto=http\n"},
        {"Forwarded without a host", .fwd = true, .host = "", .scheme = "http", .http10 = true,
         .want = "Via: 1.0 cdnA\nCDN-Loop: cdnA\nForwarded: for=192.0.2.9;proto=http\n"},
        {"Surrogate-Capability appended after CDN-Loop, a prior one kept",
         .in = {{"Surrogate-Capability", "edge=\"Surrogate/1.0\""}}, .sc = true, .xff = true,
         .want = "Surrogate-Capability: edge=\"Surrogate/1.0\"\nVia: 1.1 cdnA\nCDN-Loop: cdnA\n"
                 "Surrogate-Capability: cdnA=\"Surrogate/1.0\"\nX-Forwarded-For: 192.0.2.9\n"},
        {"both X-Forwarded-For and Forwarded", .in = {{"X-Forwarded-For", "198.51.100.1"}},
         .xff = true, .fwd = true, .scheme = "https",
         .want = "Via: 1.1 cdnA\nCDN-Loop: cdnA\nX-Forwarded-For: 198.51.100.1, 192.0.2.9\n"
                 "Forwarded: for=192.0.2.9;host=example.com;proto=https\n"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(cases); i++) {
        const struct reqcase *c = &cases[i];
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs in, out;
        cdn_hdrs_init(&in, a);
        cdn_hdrs_init(&out, a);
        fill(&in, c->in);
        struct cdn_hop_opts o = {.cdn_id = "cdnA",
                                 .x_forwarded_for = c->xff,
                                 .forwarded = c->fwd,
                                 .surrogate_capability = c->sc};
        cdn_hop_request_headers(&in, &out, &o, c->peer ? c->peer : "192.0.2.9",
                                c->host ? c->host : "example.com", c->scheme, c->http10);
        const char *got = render(&out, a);
        if (strcmp(got, c->want) != 0)
            fail_msg("%s:\n--- got\n%s--- want\n%s", c->label, got, c->want);
        size_t nin = 0;
        while (nin < MAXF && c->in[nin].n)
            nin++;
        assert_int_equal(in.n, nin); /* the input list is left as it was */
        cdn_arena_free(a);
    }
}

static void
test_response_headers(void **state)
{
    (void)state;
    static const struct field in[MAXF] = {
        {"Content-Type", "text/plain"},
        {"Connection", "X-Hop, keep-alive"},
        {"X-Hop", "1"},
        {"Keep-Alive", "timeout=5"},
        {"Transfer-Encoding", "chunked"},
        {"Content-Length", "10"},
        {"Proxy-Authenticate", "Basic"},
        {"Upgrade", "h2c"},
        {"Trailer", "X-T"},
        {"Cache-Control", "max-age=60"},
        {"Via", "1.1 origin-proxy"},
        {"Set-Cookie", "a=1"},
        {"Set-Cookie", "b=2"},
    };
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h, out;
    cdn_hdrs_init(&h, a);
    cdn_hdrs_init(&out, a);
    fill(&h, in);
    struct cdn_hop_opts o = {.cdn_id = "cdnA"};
    cdn_hop_response_headers(&h, &out, &o);
    assert_string_equal(render(&out, a), "Content-Type: text/plain\nCache-Control: max-age=60\n"
                                         "Via: 1.1 origin-proxy\nSet-Cookie: a=1\n"
                                         "Set-Cookie: b=2\nVia: 1.1 cdnA\n");
    assert_int_equal(h.n, 13);
    cdn_arena_free(a);
}

static void
test_loop_count(void **state)
{
    (void)state;
    static const struct {
        const char *label;
        struct field f[4];
        unsigned want;
    } rows[] = {
        {"none", {{"X-A", "cdnA"}}, 0},
        {"CDN-Loop member", {{"CDN-Loop", "cdnA"}}, 1},
        {"with parameters", {{"CDN-Loop", "cdnA; x=1, other"}}, 1},
        {"space before parameters", {{"CDN-Loop", "cdnA ;x=1"}}, 1},
        {"case-insensitive id and name", {{"cdn-loop", "CDNA"}}, 1},
        {"repeated in one field", {{"CDN-Loop", "other, cdnA, cdnA;v=2"}}, 2},
        {"across fields", {{"CDN-Loop", "cdnA"}, {"X-A", "1"}, {"CDN-Loop", "x, cdnA"}}, 2},
        {"prefix and suffix do not match", {{"CDN-Loop", "cdnAB, xcdnA, cdnA.example"}}, 0},
        {"quoted comma is not a member", {{"CDN-Loop", "other; n=\"a, cdnA\""}}, 0},
        {"other field with that name", {{"X-CDN-Loop", "cdnA"}}, 0},
        {"Via pseudonym", {{"Via", "1.1 cdnA"}}, 1},
        {"Via with protocol name", {{"Via", "HTTP/1.1 CDNa"}}, 1},
        {"Via among others with comment", {{"Via", "1.0 other, 1.1 cdnA (cdnode)"}}, 1},
        {"Via twice", {{"Via", "1.1 cdnA, 1.1 cdnA"}, {"via", "1.1\tcdnA"}}, 3},
        {"Via comment mentioning us", {{"Via", "1.1 other (via cdnA, 1.1 cdnA )"}}, 0},
        {"Via comment then us", {{"Via", "1.1 other (a, b), 1.1 cdnA"}}, 1},
        {"Via protocol only", {{"Via", "cdnA"}}, 0},
        {"Via with port", {{"Via", "1.1 cdnA:8080"}}, 0},
        /* one pass adds both fields: it counts once (the larger of the two counts) */
        {"CDN-Loop and Via", {{"CDN-Loop", "cdnA"}, {"Via", "1.1 cdnA"}}, 1},
        {"two passes", {{"CDN-Loop", "cdnA, x, cdnA"}, {"Via", "1.1 cdnA, 1.1 x, 1.1 cdnA"}}, 2},
        {"Via-only chain", {{"CDN-Loop", "cdnA"}, {"Via", "1.1 cdnA, 1.1 cdnA"}}, 2},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h;
        cdn_hdrs_init(&h, a);
        for (size_t k = 0; k < CDN_ARRAY_LEN(rows[i].f) && rows[i].f[k].n; k++)
            cdn_hdrs_add_str(&h, rows[i].f[k].n, rows[i].f[k].v);
        unsigned got = cdn_hop_loop_count(&h, "cdnA");
        if (got != rows[i].want)
            fail_msg("%s: %u, want %u", rows[i].label, got, rows[i].want);
        cdn_arena_free(a);
    }
}

/* What we append is what the next node of ours counts. */
static void
test_loop_count_round_trip(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs in, out;
    cdn_hdrs_init(&in, a);
    cdn_hdrs_init(&out, a);
    cdn_hdrs_add_str(&in, "CDN-Loop", "other");
    struct cdn_hop_opts o = {.cdn_id = "cdnA"};
    cdn_hop_request_headers(&in, &out, &o, "192.0.2.9", "h", "http", false);
    assert_int_equal(cdn_hop_loop_count(&out, "cdnA"), 1); /* one pass: Via and CDN-Loop */
    assert_int_equal(cdn_hop_loop_count(&out, "other"), 1);
    cdn_arena_free(a);
}

static void
test_client_addr(void **state)
{
    (void)state;
    static const struct {
        const char *label;
        struct field f[3];
        unsigned k;
        const char *want;
    } rows[] = {
        {"no trust", {{"X-Forwarded-For", "198.51.100.1"}}, 0, "192.0.2.9"},
        {"trust but no chain", {{"X-A", "1"}}, 1, "192.0.2.9"},
        {"one hop", {{"X-Forwarded-For", "198.51.100.1, 198.51.100.2"}}, 1, "198.51.100.2"},
        {"two hops", {{"X-Forwarded-For", "198.51.100.1, 198.51.100.2"}}, 2, "198.51.100.1"},
        {"more hops than entries",
         {{"X-Forwarded-For", "198.51.100.1, 198.51.100.2"}},
         5,
         "198.51.100.1"},
        {"chain across fields",
         {{"X-Forwarded-For", "198.51.100.1"}, {"x-forwarded-for", "198.51.100.2, 198.51.100.3"}},
         2,
         "198.51.100.2"},
        {"untrusted garbage left of the choice",
         {{"X-Forwarded-For", "not-an-ip, 198.51.100.2"}},
         1,
         "198.51.100.2"},
        {"chosen entry malformed", {{"X-Forwarded-For", "unknown, 198.51.100.2"}}, 2, "192.0.2.9"},
        {"trusted entry right of the choice malformed",
         {{"X-Forwarded-For", "198.51.100.1, garbage"}},
         2,
         "192.0.2.9"},
        {"leftmost fallback malformed", {{"X-Forwarded-For", "garbage"}}, 3, "192.0.2.9"},
        {"IPv4 with port", {{"X-Forwarded-For", "198.51.100.1:8080"}}, 1, "192.0.2.9"},
        {"bad IPv4", {{"X-Forwarded-For", "300.1.1.1"}}, 1, "192.0.2.9"},
        {"host name", {{"X-Forwarded-For", "client.example"}}, 1, "192.0.2.9"},
        {"IPv6", {{"X-Forwarded-For", "2001:db8::1"}}, 1, "2001:db8::1"},
        {"bracketed IPv6", {{"X-Forwarded-For", "198.51.100.1, [2001:db8::2]"}}, 1, "2001:db8::2"},
        {"bracketed IPv6 with port", {{"X-Forwarded-For", "[2001:db8::2]:443"}}, 1, "192.0.2.9"},
        {"empty field", {{"X-Forwarded-For", ""}}, 1, "192.0.2.9"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h;
        cdn_hdrs_init(&h, a);
        for (size_t k = 0; k < CDN_ARRAY_LEN(rows[i].f) && rows[i].f[k].n; k++)
            cdn_hdrs_add_str(&h, rows[i].f[k].n, rows[i].f[k].v);
        const char *got = cdn_hop_client_addr(&h, "192.0.2.9", rows[i].k, a);
        if (got == NULL || strcmp(got, rows[i].want) != 0)
            fail_msg("%s: \"%s\", want \"%s\"", rows[i].label, got ? got : "(null)", rows[i].want);
        cdn_arena_free(a);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hop_by_hop_fixed),
        cmocka_unit_test(test_hop_by_hop_connection_listed),
        cmocka_unit_test(test_hop_mark_agrees),
        cmocka_unit_test(test_request_headers),
        cmocka_unit_test(test_response_headers),
        cmocka_unit_test(test_loop_count),
        cmocka_unit_test(test_loop_count_round_trip),
        cmocka_unit_test(test_client_addr),
    };
    return cmocka_run_group_tests_name("hop", tests, NULL, NULL);
}
