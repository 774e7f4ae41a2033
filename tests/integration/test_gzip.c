/*
 * Content coding through the real binary: what each kind of client gets, byte for byte, compared
 * with what the origin sends. A compressible identity response is stored gzip-compressed once;
 * clients that accept gzip get the stored bytes, the others get them inflated with the identity
 * length; gzip from the origin is stored as is unless it does not inflate. Responses are checked
 * against the origin's own bytes (size= bodies are the pattern 'a' + i % 26; gz= bodies are
 * fetched from the origin directly, on another path so the node's counts stay untouched). Gzip
 * bodies are decoded by the system's gzip(1) (the test links no zlib), an inflater independent of
 * the node's. Codings other than gzip are only passed along or stored as Vary variants.
 *
 * Every case prints "gzip: <case> <origin bytes> -> <gzip bytes> bytes (<ratio>)".
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define BIG 100000 /* identity size of the compressible objects */

static const char *
field_or(const struct h_resp *r, const char *name)
{
    const char *v = h_header(r, name);
    return v ? v : "(absent)";
}

/* A hit served without contacting the origin. */
static bool
plain_hit(const struct h_resp *r)
{
    return strstr(h_cache_status(r), "; hit") != NULL && strstr(h_cache_status(r), "fwd=") == NULL;
}

#define EXPECT_HIT(r, what)                                                                        \
    do {                                                                                           \
        if (!plain_hit(r))                                                                         \
            fail_msg("line %d: %s: expected a hit, Cache-Status \"%s\" (status %d)", __LINE__,     \
                     (what), h_cache_status(r), (r)->status);                                               \
    } while (0)

#define EXPECT_COUNT(t, path, n)                                                                   \
    do {                                                                                           \
        long got_ = h_origin_count((t), (path));                                                   \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: origin saw %ld requests for %s (expected %d)", __LINE__, got_,      \
                     (path), (n));                                                                 \
    } while (0)

/* The size= body of testorigin, malloc'ed. */
static char *
pattern(size_t n)
{
    char *p = malloc(n + 1);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('a' + i % 26);
    p[n] = '\0';
    return p;
}

/* A GET (or HEAD) on a new connection, with Accept-Encoding: ae unless ae is NULL. */
static void
fetch(struct h_test *t, const char *method, const char *target, const char *ae, const char *extra,
      struct h_resp *r)
{
    char raw[2048];
    int n = snprintf(raw, sizeof(raw), "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s%s%s%s\r\n",
                     method, target, t->node.port, ae ? "Accept-Encoding: " : "", ae ? ae : "",
                     ae ? "\r\n" : "", extra ? extra : "");
    assert_true(n > 0 && (size_t)n < sizeof(raw));
    if (h_request(t->node.port, raw, (size_t)n, strcmp(method, "HEAD") == 0, 0, r) != 0)
        fail_msg("%s %s (Accept-Encoding %s): no response", method, target, ae ? ae : "absent");
    if (!r->complete)
        fail_msg("%s %s (Accept-Encoding %s): incomplete body, %llu bytes", method, target,
                 ae ? ae : "absent", (unsigned long long)r->body_total);
}

/* The body of r must be want[0..n) exactly. */
static void
expect_bytes(const struct h_resp *r, const char *want, size_t n, const char *what)
{
    size_t common = r->body_len < n ? r->body_len : n;
    size_t i = 0;
    while (i < common && r->body[i] == want[i])
        i++;
    if (r->body_len != n || i != n)
        fail_msg("%s: %zu body bytes, expected %zu; first difference at byte %zu; "
                 "Content-Encoding %s, Cache-Status \"%s\"",
                 what, r->body_len, n, i, field_or(r, "Content-Encoding"), h_cache_status(r));
}

static void
expect_status(const struct h_resp *r, int status, const char *what)
{
    if (r->status != status)
        fail_msg("%s: status %d (expected %d), Cache-Status \"%s\"", what, r->status, status,
                 h_cache_status(r));
}

/* The field name must equal want (NULL: be absent). */
static void
expect_field(const struct h_resp *r, const char *name, const char *want, const char *what)
{
    const char *v = h_header(r, name);
    bool ok = want ? v != NULL && strcmp(v, want) == 0 : v == NULL;
    if (!ok)
        fail_msg("%s: %s is \"%s\" (expected \"%s\"); Cache-Status \"%s\"", what, name,
                 v ? v : "(absent)", want ? want : "(absent)", h_cache_status(r));
}

/* Content-Length must be present and equal n. */
static void
expect_length(const struct h_resp *r, size_t n, const char *what)
{
    char want[32];
    snprintf(want, sizeof(want), "%zu", n);
    expect_field(r, "Content-Length", want, what);
}

/* Vary must list Accept-Encoding (in any of its lines). */
static void
expect_vary_ae(const struct h_resp *r, const char *what)
{
    char *vary = h_head_join(r->head, "Vary");
    bool found = false;
    const char *p = vary;
    for (int i = 0; p && *p && i < 64 && !found; i++) {
        p += strspn(p, " \t,");
        size_t n = strcspn(p, " \t,");
        found = n == 15 && strncasecmp(p, "Accept-Encoding", 15) == 0;
        p += n;
    }
    if (!found)
        fail_msg("%s: Vary is \"%s\" (expected it to list Accept-Encoding)", what,
                 vary ? vary : "(absent)");
    free(vary);
}

/* A gzip response: Content-Encoding gzip, the gzip magic and method, Content-Length its size. */
static void
expect_gzip(const struct h_resp *r, const char *what)
{
    expect_field(r, "Content-Encoding", "gzip", what);
    if (r->body_len < 18 || (unsigned char)r->body[0] != 0x1f ||
        (unsigned char)r->body[1] != 0x8b || r->body[2] != 8)
        fail_msg("%s: body of %zu bytes does not start with 1f 8b 08", what, r->body_len);
    if (r->status == 200)
        expect_length(r, r->body_len, what);
}

/* An identity response carrying exactly want[0..n) with Content-Length n. */
static void
expect_identity(const struct h_resp *r, const char *want, size_t n, const char *what)
{
    expect_status(r, 200, what);
    expect_field(r, "Content-Encoding", NULL, what);
    expect_length(r, n, what);
    expect_bytes(r, want, n, what);
}

/*
 * data[0..len) decoded by gzip -dc; malloc'ed, its length in *out_len. Fails the test when gzip
 * reports an error.
 */
static char *
gunzip(struct h_test *t, const char *data, size_t len, size_t *out_len, const char *what)
{
    static int seq;
    char name[64], in[600], out[600], err[600];
    snprintf(name, sizeof(name), "gz-%d.gz", seq);
    h_path(t, name, in, sizeof(in));
    snprintf(name, sizeof(name), "gz-%d.out", seq);
    h_path(t, name, out, sizeof(out));
    snprintf(name, sizeof(name), "gz-%d.err", seq++);
    h_path(t, name, err, sizeof(err));
    FILE *f = fopen(in, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
    char *argv[] = {(char *)"gzip", (char *)"-dc", in, NULL};
    int rc = h_run_split(argv, out, err, NULL, 30000);
    if (rc != 0) {
        char *e = h_read_file(err, NULL);
        fail_msg("%s: gzip -dc of %zu bytes exited %d: %s", what, len, rc, e ? e : "");
    }
    char *body = h_read_file(out, out_len);
    assert_non_null(body);
    return body;
}

/* A gzip response body must inflate to want[0..n). */
static void
expect_inflates_to(struct h_test *t, const struct h_resp *r, const char *want, size_t n,
                   const char *what)
{
    size_t got_len;
    char *got = gunzip(t, r->body, r->body_len, &got_len, what);
    if (got_len != n || memcmp(got, want, n) != 0)
        fail_msg("%s: the gzip body inflates to %zu bytes that differ from the origin's %zu", what,
                 got_len, n);
    free(got);
}

static void
print_ratio(const char *name, size_t origin, size_t gz)
{
    printf("gzip: %s %zu -> %zu bytes (%.2f%%)\n", name, origin, gz,
           origin ? 100.0 * (double)gz / (double)origin : 0.0);
    fflush(stdout);
}

/* The origin's own response to target, fetched directly under /direct<target>. */
static void
origin_direct(struct h_test *t, const char *target, struct h_resp *r)
{
    char path[1024];
    snprintf(path, sizeof(path), "/direct%s", target);
    if (h_get(t->origin_port, path, NULL, r) != 0 || r->status != 200 || !r->complete)
        fail_msg("origin GET %s: no complete 200", path);
}

static void
start_node(struct h_test *t, const char *const *extra)
{
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, extra), 0);
}

/* 1. A compressible identity response is stored gzip once and served in both codings. */
static void
test_compress_on_store(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    const char *target = "/text?size=100000&cc=max-age=300&etag=t1";
    char *want = pattern(BIG);
    struct h_resp r;

    fetch(t, "GET", target, NULL, NULL, &r);
    expect_identity(&r, want, BIG, "miss, no Accept-Encoding");
    expect_vary_ae(&r, "miss, no Accept-Encoding");
    h_resp_free(&r);

    struct h_resp g;
    fetch(t, "GET", target, "gzip", NULL, &g);
    expect_status(&g, 200, "hit, gzip client");
    EXPECT_HIT(&g, "hit, gzip client");
    expect_gzip(&g, "hit, gzip client");
    if (g.body_len >= BIG)
        fail_msg("hit, gzip client: %zu gzip bytes for %d identity bytes", g.body_len, BIG);
    expect_inflates_to(t, &g, want, BIG, "hit, gzip client");
    expect_vary_ae(&g, "hit, gzip client");
    expect_field(&g, "ETag", "W/\"t1\"", "hit, gzip client");
    print_ratio("text", BIG, g.body_len);

    const char *identity_ae[] = {NULL, "identity"};
    for (size_t i = 0; i < 2; i++) {
        char what[96];
        snprintf(what, sizeof(what), "hit, Accept-Encoding %s",
                 identity_ae[i] ? "identity" : "absent");
        fetch(t, "GET", target, identity_ae[i], NULL, &r);
        EXPECT_HIT(&r, what);
        expect_identity(&r, want, BIG, what);
        expect_vary_ae(&r, what);
        expect_field(&r, "ETag", "W/\"t1\"", what);
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, "/text", 1);
    h_resp_free(&g);
    free(want);

    /* Unknown length (chunked): compressed whatever its size; identity length known once stored. */
    const char *chunked = "/chunked?size=500&chunked=1&cc=max-age=300";
    want = pattern(500);
    fetch(t, "GET", chunked, NULL, NULL, &r);
    expect_status(&r, 200, "chunked miss");
    expect_bytes(&r, want, 500, "chunked miss");
    expect_vary_ae(&r, "chunked miss");
    h_resp_free(&r);
    fetch(t, "GET", chunked, "gzip", NULL, &g);
    EXPECT_HIT(&g, "chunked hit, gzip client");
    expect_gzip(&g, "chunked hit, gzip client");
    expect_inflates_to(t, &g, want, 500, "chunked hit, gzip client");
    print_ratio("chunked", 500, g.body_len);
    fetch(t, "GET", chunked, NULL, NULL, &r);
    EXPECT_HIT(&r, "chunked hit, no Accept-Encoding");
    expect_identity(&r, want, 500, "chunked hit, no Accept-Encoding");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/chunked", 1);
    h_resp_free(&g);
    free(want);
    H_PASS(t);
}

/* 2. Not worth compressing, too small, or not to be transformed: gzip clients get identity. */
static void
test_not_compressed(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    static const struct {
        const char *name, *path, *target;
        size_t size;
    } cases[] = {
        {"png", "/png", "/png?size=100000&h=Content-Type:image/png&cc=max-age=300", BIG},
        {"small", "/small", "/small?size=1000&cc=max-age=300", 1000},
        {"no-transform", "/nt", "/nt?size=100000&cc=max-age=300,%20no-transform", BIG},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *want = pattern(cases[i].size);
        for (int round = 0; round < 2; round++) {
            char what[96];
            snprintf(what, sizeof(what), "%s, gzip client, %s", cases[i].name,
                     round ? "hit" : "miss");
            struct h_resp r;
            fetch(t, "GET", cases[i].target, "gzip", NULL, &r);
            if (round)
                EXPECT_HIT(&r, what);
            expect_identity(&r, want, cases[i].size, what);
            if (round)
                print_ratio(cases[i].name, cases[i].size, r.body_len);
            h_resp_free(&r);
        }
        EXPECT_COUNT(t, cases[i].path, 1);
        free(want);
    }
    H_PASS(t);
}

/* 3. Gzip from the origin is stored as is and inflated for clients without gzip. */
static void
test_origin_gzip(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    const char *target = "/og?size=100000&gz=1&h=Content-Encoding:gzip&cc=max-age=300&etag=og";
    char *want = pattern(BIG);
    struct h_resp o;
    origin_direct(t, target, &o);
    expect_inflates_to(t, &o, want, BIG, "the origin's own gzip body");

    const char *what[] = {"miss, gzip client", "hit, gzip client"};
    for (int round = 0; round < 2; round++) {
        struct h_resp r;
        fetch(t, "GET", target, "gzip", NULL, &r);
        expect_status(&r, 200, what[round]);
        if (round)
            EXPECT_HIT(&r, what[round]);
        expect_gzip(&r, what[round]);
        expect_bytes(&r, o.body, o.body_len, what[round]);
        h_resp_free(&r);
    }
    struct h_resp r;
    fetch(t, "GET", target, NULL, NULL, &r);
    EXPECT_HIT(&r, "hit, no Accept-Encoding");
    expect_identity(&r, want, BIG, "hit, no Accept-Encoding");
    expect_vary_ae(&r, "hit, no Accept-Encoding");
    expect_field(&r, "ETag", "W/\"og\"", "hit, no Accept-Encoding");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/og", 1);
    print_ratio("origin-gzip", BIG, o.body_len);
    h_resp_free(&o);
    free(want);
    H_PASS(t);
}

/* 4. Gzip from the origin that does not inflate is passed through as is and never stored. */
static void
test_origin_gzip_corrupt(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    static const struct {
        const char *name, *path, *target;
    } cases[] = {
        {"bad-crc", "/badcrc",
         "/badcrc?size=100000&gzbad=1&h=Content-Encoding:gzip&cc=max-age=300"},
        {"truncated", "/trunc",
         "/trunc?size=100000&gzbad=2&h=Content-Encoding:gzip&cc=max-age=300"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct h_resp o;
        origin_direct(t, cases[i].target, &o);
        for (int round = 0; round < 2; round++) {
            char what[96];
            snprintf(what, sizeof(what), "%s, gzip client, request %d", cases[i].name, round + 1);
            struct h_resp r;
            fetch(t, "GET", cases[i].target, "gzip", NULL, &r);
            expect_status(&r, 200, what);
            expect_field(&r, "Content-Encoding", "gzip", what);
            expect_bytes(&r, o.body, o.body_len, what);
            if (plain_hit(&r))
                fail_msg("%s: served from the store (Cache-Status \"%s\")", what, h_cache_status(&r));
            h_resp_free(&r);
        }
        EXPECT_COUNT(t, cases[i].path, 2);
        print_ratio(cases[i].name, BIG, o.body_len);
        h_resp_free(&o);
    }
    H_PASS(t);
}

/*
 * Starts a node and stores target (BIG bytes of pattern, compressible): an identity client's
 * miss, then a gzip client's answer in *g, checked as gzip. Returns the identity body.
 */
static char *
store_gzip(struct h_test *t, const char *target, struct h_resp *g, const char *what)
{
    start_node(t, NULL);
    char *want = pattern(BIG);
    struct h_resp r;
    fetch(t, "GET", target, NULL, NULL, &r);
    expect_identity(&r, want, BIG, "miss");
    h_resp_free(&r);
    fetch(t, "GET", target, "gzip", NULL, g);
    expect_gzip(g, what);
    return want;
}

/* 5. Accept-Encoding values on a stored gzip object. */
static void
test_negotiation(void **state)
{
    struct h_test *t = *state;
    const char *target = "/neg?size=100000&cc=max-age=300";
    struct h_resp r, g;
    char *want = store_gzip(t, target, &g, "gzip");
    expect_inflates_to(t, &g, want, BIG, "gzip");

    static const struct {
        const char *ae;
        bool gzip;
    } cases[] = {
        {"gzip;q=0", false},      {"*", true},           {"identity", false},
        {"GZIP", true},           {"br", false},         {"x-gzip", true},
        {"br, gzip;q=0.5", true}, {"gzip ; q=0", false}, {"*;q=0, identity", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char what[96];
        snprintf(what, sizeof(what), "Accept-Encoding \"%s\"", cases[i].ae);
        fetch(t, "GET", target, cases[i].ae, NULL, &r);
        EXPECT_HIT(&r, what);
        expect_vary_ae(&r, what);
        if (cases[i].gzip) {
            expect_status(&r, 200, what);
            expect_gzip(&r, what);
            expect_bytes(&r, g.body, g.body_len, what);
        } else {
            expect_identity(&r, want, BIG, what);
        }
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, "/neg", 1);
    print_ratio("negotiation", BIG, g.body_len);
    h_resp_free(&g);
    free(want);
    H_PASS(t);
}

/* 6. Ranges apply to the stored gzip bytes for gzip clients; inflating serves a full 200. */
static void
test_range(void **state)
{
    struct h_test *t = *state;
    const char *target = "/rng?size=100000&cc=max-age=300";
    struct h_resp r, g;
    char *want = store_gzip(t, target, &g, "gzip, full");

    fetch(t, "GET", target, "gzip", "Range: bytes=0-9\r\n", &r);
    expect_status(&r, 206, "gzip, Range 0-9");
    expect_field(&r, "Content-Encoding", "gzip", "gzip, Range 0-9");
    char cr[64];
    snprintf(cr, sizeof(cr), "bytes 0-9/%zu", g.body_len);
    expect_field(&r, "Content-Range", cr, "gzip, Range 0-9");
    expect_length(&r, 10, "gzip, Range 0-9");
    expect_bytes(&r, g.body, 10, "gzip, Range 0-9");
    h_resp_free(&r);

    const char *identity_ae[] = {NULL, "identity"};
    for (size_t i = 0; i < 2; i++) {
        char what[96];
        snprintf(what, sizeof(what), "Accept-Encoding %s, Range 0-9",
                 identity_ae[i] ? "identity" : "absent");
        fetch(t, "GET", target, identity_ae[i], "Range: bytes=0-9\r\n", &r);
        expect_identity(&r, want, BIG, what);
        expect_field(&r, "Content-Range", NULL, what);
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, "/rng", 1);
    print_ratio("range", BIG, g.body_len);
    h_resp_free(&g);
    free(want);
    H_PASS(t);
}

/* 7. gzip = off: nothing is compressed here. */
static void
test_gzip_off(void **state)
{
    struct h_test *t = *state;
    char conf[512];
    h_path(t, "gzip-off.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "gzip = off\n"), 0);
    start_node(t, H_ARGS("-c", conf));
    const char *target = "/off?size=100000&cc=max-age=300";
    char *want = pattern(BIG);
    struct h_resp r;
    fetch(t, "GET", target, NULL, NULL, &r);
    expect_identity(&r, want, BIG, "miss");
    h_resp_free(&r);
    fetch(t, "GET", target, "gzip", NULL, &r);
    EXPECT_HIT(&r, "hit, gzip client");
    expect_identity(&r, want, BIG, "hit, gzip client");
    print_ratio("off", BIG, r.body_len);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/off", 1);
    free(want);
    H_PASS(t);
}

/* 8. HEAD on a stored gzip object tells each client the length its GET would get. */
static void
test_head(void **state)
{
    struct h_test *t = *state;
    const char *target = "/hd?size=100000&cc=max-age=300&etag=hd";
    struct h_resp r, g;
    char *want = store_gzip(t, target, &g, "gzip GET");

    /* HEAD, GET and a conditional GET on one connection: a body after the HEAD or the 304 would
     * garble the next answer. */
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    static const struct {
        const char *ae_line, *what;
        bool gzip;
    } cases[] = {
        {"", "HEAD, no Accept-Encoding", false},
        {"Accept-Encoding: identity\r\n", "HEAD, identity", false},
        {"Accept-Encoding: gzip\r\n", "HEAD, gzip", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (int m = 0; m < 2; m++) {
            const char *method = m ? "GET" : "HEAD";
            assert_int_equal(h_conn_sendf(&c, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n",
                                          method, target, t->node.port, cases[i].ae_line),
                             0);
            if (h_read_response(&c, &r, m == 0, H_TIMEOUT_MS) != 0 || !r.complete)
                fail_msg("%s (%s): no complete response", cases[i].what, method);
            expect_status(&r, 200, cases[i].what);
            EXPECT_HIT(&r, cases[i].what);
            if (cases[i].gzip) {
                expect_field(&r, "Content-Encoding", "gzip", cases[i].what);
                expect_length(&r, g.body_len, cases[i].what);
                if (m)
                    expect_bytes(&r, g.body, g.body_len, cases[i].what);
            } else {
                expect_field(&r, "Content-Encoding", NULL, cases[i].what);
                expect_length(&r, BIG, cases[i].what);
                if (m)
                    expect_bytes(&r, want, BIG, cases[i].what);
            }
            if (m == 0 && r.body_total != 0)
                fail_msg("%s: %llu body bytes", cases[i].what, (unsigned long long)r.body_total);
            h_resp_free(&r);
        }
        /* A conditional GET answered 304 here: framed like the 200 it stands for, no body. */
        char what[96];
        snprintf(what, sizeof(what), "%s, If-None-Match", cases[i].what);
        assert_int_equal(h_conn_sendf(&c,
                                      "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s"
                                      "If-None-Match: W/\"hd\"\r\n\r\n",
                                      target, t->node.port, cases[i].ae_line),
                         0);
        if (h_read_response(&c, &r, false, H_TIMEOUT_MS) != 0 || !r.complete)
            fail_msg("%s: no complete response", what);
        expect_status(&r, 304, what);
        expect_length(&r, cases[i].gzip ? g.body_len : BIG, what);
        h_resp_free(&r);
    }
    h_conn_close(&c);
    EXPECT_COUNT(t, "/hd", 1);
    print_ratio("head", BIG, g.body_len);
    h_resp_free(&g);
    free(want);
    H_PASS(t);
}

/*
 * 9. Codings other than gzip from the origin: stored only as a variant keyed by the request's
 * Accept-Encoding when the origin says Vary: Accept-Encoding, and never served to another one.
 */
static void
test_other_coding(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    /* Not real brotli: the node must pass the bytes along, never decode them. */
    const char *varied = "/brv?body=not-really-brotli&h=Content-Encoding:br&h=Vary:Accept-Encoding"
                         "&cc=max-age=300";
    const char *plain = "/brn?body=not-really-brotli&h=Content-Encoding:br&cc=max-age=300";
    const char *body = "not-really-brotli";
    size_t n = strlen(body);
    struct h_resp r;

    fetch(t, "GET", varied, "br", NULL, &r);
    expect_field(&r, "Content-Encoding", "br", "br variant, miss");
    expect_bytes(&r, body, n, "br variant, miss");
    h_resp_free(&r);
    fetch(t, "GET", varied, "br", NULL, &r);
    EXPECT_HIT(&r, "br variant, same Accept-Encoding");
    expect_field(&r, "Content-Encoding", "br", "br variant, same Accept-Encoding");
    expect_bytes(&r, body, n, "br variant, same Accept-Encoding");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/brv", 1);
    const char *others[] = {"gzip", NULL, "gzip, br"};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        char what[96];
        snprintf(what, sizeof(what), "br variant, Accept-Encoding %s",
                 others[i] ? others[i] : "absent");
        fetch(t, "GET", varied, others[i], NULL, &r);
        if (plain_hit(&r))
            fail_msg("%s: served the stored br variant (Cache-Status \"%s\")", what, h_cache_status(&r));
        h_resp_free(&r);
        EXPECT_COUNT(t, "/brv", (int)i + 2);
    }

    /* Without Vary from the origin the node varies on Accept-Encoding itself: the br copy is a
     * variant for clients that asked exactly that way, and no one else gets it. */
    static const struct {
        const char *ae;
        bool hit;
        int count;
    } any[] = {{"br", false, 1}, {"br", true, 1}, {NULL, false, 2}, {"gzip", false, 3}};
    for (size_t i = 0; i < sizeof(any) / sizeof(any[0]); i++) {
        char what[96];
        snprintf(what, sizeof(what), "br without Vary, request %zu, Accept-Encoding %s", i + 1,
                 any[i].ae ? any[i].ae : "absent");
        fetch(t, "GET", plain, any[i].ae, NULL, &r);
        if (plain_hit(&r) != any[i].hit)
            fail_msg("%s: %s (Cache-Status \"%s\", Content-Encoding %s)", what,
                     any[i].hit ? "not served from the store" : "served from the store",
                     h_cache_status(&r), field_or(&r, "Content-Encoding"));
        if (any[i].hit)
            expect_field(&r, "Vary", "Accept-Encoding", what);
        expect_bytes(&r, body, n, what);
        h_resp_free(&r);
        EXPECT_COUNT(t, "/brn", any[i].count);
    }
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_compress_on_store, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_not_compressed, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_origin_gzip, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_origin_gzip_corrupt, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_negotiation, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_range, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_gzip_off, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_head, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_other_coding, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
