/*
 * Caching through the real binary (RFC 9111, Cache-Status per RFC 9211, CDN-Cache-Control per
 * RFC 9213): every test checks both what the client got (status, body, Cache-Status, Age) and what
 * the origin saw (request counts, the head of its last request). A response the node answered
 * with "stored" is committed before its last byte arrives, so the next request may expect a hit
 * without waiting. Where time has to pass (max-age=1), the tests poll the node itself under a
 * deadline. The last tests restart the node on the same store, after SIGTERM and after SIGKILL
 * under load, and with the writable map (cache_writemap), keeping its port: the Host field is part
 * of the cache key.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

/* A date long before any test run, in a query parameter (spaces encoded). */
#define OLD_DATE "Sat, 01 Jan 2000 00:00:00 GMT"
#define OLD_DATE_Q "Sat,%2001%20Jan%202000%2000:00:00%20GMT"

/* A hit served without contacting the origin. */
static bool
plain_hit(const struct h_resp *r)
{
    return h_cache_status_has(r, "; hit") && !h_cache_status_has(r, "fwd=");
}

#define EXPECT_CS(r, s)                                                                            \
    do {                                                                                           \
        if (!h_cache_status_has((r), (s)))                                                                     \
            fail_msg("line %d: Cache-Status \"%s\" lacks \"%s\" (status %d)", __LINE__, h_cache_status(r),  \
                     (s), (r)->status);                                                            \
    } while (0)

#define EXPECT_NO_CS(r, s)                                                                         \
    do {                                                                                           \
        if (h_cache_status_has((r), (s)))                                                                      \
            fail_msg("line %d: Cache-Status \"%s\" has \"%s\" (status %d)", __LINE__, h_cache_status(r),    \
                     (s), (r)->status);                                                            \
    } while (0)

#define EXPECT_HIT(r)                                                                              \
    do {                                                                                           \
        if (!plain_hit(r))                                                                         \
            fail_msg("line %d: expected a hit, Cache-Status \"%s\" (status %d)", __LINE__,         \
                     h_cache_status(r), (r)->status);                                                       \
        if (h_header((r), "Age") == NULL)                                                          \
            fail_msg("line %d: hit without Age", __LINE__);                                        \
    } while (0)

#define EXPECT_COUNT(t, path, n)                                                                   \
    do {                                                                                           \
        long got_ = h_origin_count((t), (path));                                                   \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: origin saw %ld requests for %s (expected %d)", __LINE__, got_,      \
                     (path), (n));                                                                 \
    } while (0)

static void
node_get(struct h_test *t, const char *target, const char *extra, struct h_resp *r)
{
    if (h_get(t->node.port, target, extra, r) != 0)
        fail_msg("GET %s: no response", target);
}

/* GET that must answer 200 with body `want`. */
static void
get_body(struct h_test *t, const char *target, const char *extra, const char *want,
         struct h_resp *r)
{
    node_get(t, target, extra, r);
    if (r->status != 200 || !r->complete || r->body == NULL || strcmp(r->body, want) != 0)
        fail_msg("GET %s: status %d, body \"%s\" (expected 200 \"%s\"), Cache-Status \"%s\"",
                 target, r->status, r->body ? r->body : "(none)", want, h_cache_status(r));
}

/* The response field `name` must equal want. */
static void
expect_field(const struct h_resp *r, const char *name, const char *want)
{
    const char *v = h_header(r, name);
    if (v == NULL || strcmp(v, want) != 0)
        fail_msg("%s is \"%s\" (expected \"%s\"); Cache-Status \"%s\"", name, v ? v : "(absent)",
                 want, h_cache_status(r));
}

/* One request on an open keep-alive connection. */
static void
exchange(struct h_conn *c, int port, const char *method, const char *target, const char *extra,
         struct h_resp *r)
{
    assert_int_equal(h_conn_sendf(c, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", method,
                                  target, port, extra ? extra : ""),
                     0);
    if (h_read_response(c, r, strcmp(method, "HEAD") == 0, H_TIMEOUT_MS) != 0)
        fail_msg("%s %s: no response", method, target);
}

/* The field `name` of the origin's last request for path must equal want (NULL: be absent). */
static void
expect_origin_field(struct h_test *t, const char *path, const char *name, const char *want)
{
    char *head = h_origin_last(t, path);
    if (head == NULL)
        fail_msg("origin saw no request for %s", path);
    char *v = h_head_field(head, name);
    bool ok = want ? v != NULL && strcmp(v, want) == 0 : v == NULL;
    if (!ok)
        fail_msg("origin's last request for %s: %s is \"%s\" (expected \"%s\"); head:\n%s", path,
                 name, v ? v : "(absent)", want ? want : "(absent)", head);
    free(v);
    free(head);
}

/*
 * Waits until the wall clock is in the middle of a second, so that a max-age=1 response is not
 * made stale by a second boundary between two requests a few ms apart. Not at the very start:
 * time() reads a coarse clock that may still show the previous second there.
 */
static void
align_to_second(void)
{
    for (int i = 0; i < 150; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (ts.tv_nsec >= 200000000L && ts.tv_nsec < 600000000L)
            return;
        h_nap_ms(10);
    }
}

/* GET of a testorigin size= object; the body must be its pattern, whole. */
static void
get_pattern(struct h_test *t, const char *target, uint64_t size, struct h_resp *r)
{
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    assert_int_equal(
        h_conn_sendf(&c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", target, t->node.port), 0);
    struct h_pattern p = {0};
    if (h_read_response_sink(&c, r, false, 60000, h_pattern_sink, &p) != 0)
        fail_msg("GET %s: no response", target);
    h_conn_close(&c);
    if (r->status != 200 || !r->complete || r->body_total != size || p.off != size)
        fail_msg("GET %s: status %d, %llu of %llu bytes, complete %d, Cache-Status \"%s\"", target,
                 r->status, (unsigned long long)r->body_total, (unsigned long long)size,
                 r->complete, h_cache_status(r));
    if (p.bad)
        fail_msg("GET %s: body differs from the origin's at byte %llu (Cache-Status \"%s\")",
                 target, (unsigned long long)(p.bad - 1), h_cache_status(r));
}

static void
start_node(struct h_test *t)
{
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
}

/* 1. A miss is stored, the next GET and a HEAD are hits; a 3 MB body comes back identical. */
static void
test_miss_then_hit(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    const char *u = "/m1?cc=max-age=60&body=hello-cache";
    struct h_resp r;
    get_body(t, u, NULL, "hello-cache", &r);
    EXPECT_CS(&r, "testnode; fwd=uri-miss");
    EXPECT_CS(&r, "fwd-status=200");
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/m1", 1);

    get_body(t, u, NULL, "hello-cache", &r);
    EXPECT_HIT(&r);
    assert_true(atol(h_header(&r, "Age")) >= 0);
    assert_string_equal(h_header(&r, "Cache-Control"), "max-age=60");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/m1", 1);

    /* HEAD: the stored length, no body; the GET after it on the same connection parses. */
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    exchange(&c, t->node.port, "HEAD", u, NULL, &r);
    assert_int_equal(r.status, 200);
    EXPECT_HIT(&r);
    const char *cl = h_header(&r, "Content-Length");
    if (cl == NULL || strcmp(cl, "11") != 0)
        fail_msg("HEAD from cache: Content-Length %s (expected 11)", cl ? cl : "(absent)");
    h_resp_free(&r);
    exchange(&c, t->node.port, "GET", u, NULL, &r);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "hello-cache") != 0)
        fail_msg("GET after HEAD on one connection: status %d body \"%s\"", r.status,
                 r.body ? r.body : "(none)");
    EXPECT_HIT(&r);
    h_resp_free(&r);
    h_conn_close(&c);
    EXPECT_COUNT(t, "/m1", 1);

    /* Large: many store chunks, read back byte for byte. */
    const char *big = "/big?size=3000000&cc=max-age=60";
    get_pattern(t, big, 3000000, &r);
    EXPECT_CS(&r, "fwd=uri-miss");
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_pattern(t, big, 3000000, &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/big", 1);
    H_PASS(t);
}

/* Asks twice; the origin must see both and neither answer may claim to be stored or a hit. */
static void
expect_not_stored(struct h_test *t, const char *path, const char *target, const char *extra,
                  int status)
{
    for (int i = 0; i < 2; i++) {
        struct h_resp r;
        node_get(t, target, extra, &r);
        if (r.status != status)
            fail_msg("GET %s: status %d (expected %d)", target, r.status, status);
        EXPECT_NO_CS(&r, "stored");
        EXPECT_NO_CS(&r, "; hit");
        assert_non_null(strstr(h_cache_status(&r), "fwd="));
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, path, 2);
}

/* 2. What must not be stored, and what may despite looking personal. */
static void
test_not_stored(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    expect_not_stored(t, "/ns1", "/ns1?cc=no-store", NULL, 200);
    expect_not_stored(t, "/ns2", "/ns2?cc=private,%20max-age=60", NULL, 200);
    expect_not_stored(t, "/ns3", "/ns3?cc=max-age=60", "Authorization: Basic dXNlcjpwdw==\r\n",
                      200);
    expect_not_stored(t, "/ns4", "/ns4?status=500&body=broken", NULL, 500);
    expect_not_stored(t, "/ns5", "/ns5?cc=max-age=60&h=Vary:*", NULL, 200);
    /* Set-Cookie without an explicit public: one visitor's cookie is not handed to the next. */
    expect_not_stored(t, "/ns6", "/ns6?cc=max-age=60&h=Set-Cookie:sid%3D1", NULL, 200);

    /* With public the origin said shared caches may keep it: stored, Set-Cookie included. */
    struct h_resp r;
    get_body(t, "/sc?cc=public,max-age=60&h=Set-Cookie:sid%3D1&body=c", NULL, "c", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, "/sc?cc=public,max-age=60&h=Set-Cookie:sid%3D1&body=c", NULL, "c", &r);
    EXPECT_HIT(&r);
    if (h_header(&r, "Set-Cookie") == NULL || strcmp(h_header(&r, "Set-Cookie"), "sid=1") != 0)
        fail_msg("stored Set-Cookie not served: \"%s\"",
                 h_header(&r, "Set-Cookie") ? h_header(&r, "Set-Cookie") : "(none)");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/sc", 1);

    /* Authorization with public: storable (RFC 9111 §3.5). */
    const char *auth = "Authorization: Basic dXNlcjpwdw==\r\n";
    get_body(t, "/pub?cc=public,%20max-age=60&body=p", auth, "p", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, "/pub?cc=public,%20max-age=60&body=p", auth, "p", &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/pub", 1);
    H_PASS(t);
}

/* Stores target and checks the second GET is a hit. */
static void
store_and_hit(struct h_test *t, const char *target, const char *body)
{
    struct h_resp r;
    get_body(t, target, NULL, body, &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, target, NULL, body, &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
}

/*
 * A response without freshness information (no Cache-Control, Expires or Last-Modified) may be
 * stored but never reused unvalidated: every sequential request reaches the origin, on new
 * connections and on one kept-alive connection alike.
 */
static void
test_no_freshness_always_forwarded(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    for (int i = 0; i < 60; i++) {
        long before = h_origin_count(t, "/nf");
        struct h_resp r;
        if (i % 2 == 0)
            node_get(t, "/nf?body=n", NULL, &r);
        else
            exchange(&c, t->node.port, "GET", "/nf?body=n", NULL, &r);
        long after = h_origin_count(t, "/nf");
        if (r.status != 200 || r.body == NULL || strcmp(r.body, "n") != 0)
            fail_msg("request %d: status %d body \"%s\"", i, r.status, r.body ? r.body : "(none)");
        if (after != before + 1)
            fail_msg("request %d (%s) did not reach the origin (count %ld then %ld); Cache-Status "
                     "\"%s\", Age %s",
                     i, i % 2 ? "kept-alive connection" : "new connection", before, after,
                     h_cache_status(&r), h_header(&r, "Age") ? h_header(&r, "Age") : "(absent)");
        EXPECT_NO_CS(&r, "; hit");
        h_resp_free(&r);
    }
    h_conn_close(&c);
    H_PASS(t);
}

/* 3. Freshness from max-age and from the heuristic; request directives that force a trip. */
static void
test_freshness(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    struct h_resp r;

    align_to_second();
    struct timespec ts0;
    clock_gettime(CLOCK_REALTIME, &ts0);
    int64_t t0 = h_now_ms();
    get_body(t, "/f1?cc=max-age=1&body=short", NULL, "short", &r);
    EXPECT_CS(&r, "stored");
    char date[64];
    snprintf(date, sizeof(date), "%s", h_header(&r, "Date") ? h_header(&r, "Date") : "-");
    h_resp_free(&r);
    int64_t t1 = h_now_ms();
    get_body(t, "/f1?cc=max-age=1&body=short", NULL, "short", &r);
    if (!plain_hit(&r))
        fail_msg("max-age=1 right after storing: Cache-Status \"%s\", Age %s, Date %s then %s; "
                 "started at .%03ld s, first took %lld ms, second %lld ms",
                 h_cache_status(&r), h_header(&r, "Age") ? h_header(&r, "Age") : "-", date,
                 h_header(&r, "Date") ? h_header(&r, "Date") : "-", ts0.tv_nsec / 1000000,
                 (long long)(t1 - t0), (long long)(h_now_ms() - t1));
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/f1", 1);

    /* No Cache-Control, Last-Modified long ago: heuristically fresh. */
    const char *heur = "/f2?lm=" OLD_DATE_Q "&body=old";
    get_body(t, heur, NULL, "old", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, heur, NULL, "old", &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/f2", 1);

    /* Request no-cache: forwarded although fresh. */
    const char *f3 = "/f3?cc=max-age=60&body=three";
    get_body(t, f3, NULL, "three", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, f3, "Cache-Control: no-cache\r\n", "three", &r);
    EXPECT_CS(&r, "fwd=request");
    EXPECT_NO_CS(&r, "; hit");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/f3", 2);

    /* Request max-age=0: a stored response older than that is revalidated with its validator.
     * The origin's Age: 5 makes it older without waiting (age 0 would satisfy max-age=0). */
    const char *f4 = "/f4?cc=max-age=60&etag=f4&h=Age:5&body=four";
    store_and_hit(t, f4, "four");
    get_body(t, f4, "Cache-Control: max-age=0\r\n", "four", &r);
    EXPECT_CS(&r, "fwd-status=304");
    EXPECT_NO_CS(&r, "; hit");
    print_message("request max-age=0 on a fresh entry: Cache-Status \"%s\"\n", h_cache_status(&r));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/f4", 2);
    expect_origin_field(t, "/f4", "If-None-Match", "\"f4\"");
    H_PASS(t);
}

/* 4. A stale entry is revalidated with its validators; a 304 serves the stored body. */
static void
test_revalidate_304(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    struct h_resp r;

    const char *u = "/r1?cc=max-age=0&etag=v1&h=X-Gen:1&body=generation-one";
    get_body(t, u, NULL, "generation-one", &r);
    EXPECT_CS(&r, "fwd=uri-miss");
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    expect_origin_field(t, "/r1", "If-None-Match", NULL);

    get_body(t, u, NULL, "generation-one", &r);
    EXPECT_CS(&r, "fwd=stale; fwd-status=304");
    expect_field(&r, "X-Gen", "1");
    expect_field(&r, "ETag", "\"v1\"");
    assert_non_null(h_header(&r, "Age"));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/r1", 2);
    expect_origin_field(t, "/r1", "If-None-Match", "\"v1\"");

    /* And again: the entry survived the metadata update. */
    get_body(t, u, NULL, "generation-one", &r);
    EXPECT_CS(&r, "fwd=stale; fwd-status=304");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/r1", 3);

    /* A field only the 304 carries reaches the client the 304 was for, and the stored copy:
     * the next revalidation's client sees it too (its own 304 does not repeat it). */
    const char *u3 = "/r3?cc=max-age=0&etag=v3&h304=X-Fresh:from-304&body=three";
    get_body(t, u3, NULL, "three", &r);
    EXPECT_CS(&r, "stored");
    if (h_header(&r, "X-Fresh") != NULL)
        fail_msg("X-Fresh on the 200 (only the origin's 304s carry it)");
    h_resp_free(&r);
    get_body(t, u3, NULL, "three", &r);
    EXPECT_CS(&r, "fwd=stale; fwd-status=304");
    expect_field(&r, "X-Fresh", "from-304");
    expect_field(&r, "ETag", "\"v3\"");
    h_resp_free(&r);
    get_body(t, u3, NULL, "three", &r);
    EXPECT_CS(&r, "fwd=stale; fwd-status=304");
    expect_field(&r, "X-Fresh", "from-304");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/r3", 3);

    /* Last-Modified only: If-Modified-Since carries it back. */
    const char *lm = "/r2?cc=max-age=0&lm=" OLD_DATE_Q "&body=dated";
    get_body(t, lm, NULL, "dated", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, lm, NULL, "dated", &r);
    EXPECT_CS(&r, "fwd=stale; fwd-status=304");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/r2", 2);
    expect_origin_field(t, "/r2", "If-Modified-Since", OLD_DATE);
    expect_origin_field(t, "/r2", "If-None-Match", NULL);
    H_PASS(t);
}

/* A 304 to the client: no representation metadata (RFC 9110 §15.4.5), but its validator and
 * freshness fields. The 200s of these tests carry Content-Type and Accept-Ranges. */
static void
expect_no_304_metadata(const struct h_resp *r, const char *what)
{
    static const char *const absent[] = {"Content-Type", "Content-Encoding", "Content-Language",
                                         "Accept-Ranges"};
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++)
        if (h_header(r, absent[i]) != NULL)
            fail_msg("%s: %s: %s (a 304 does not repeat it)", what, absent[i],
                     h_header(r, absent[i]));
    static const char *const present[] = {"ETag", "Cache-Control", "Date"};
    for (size_t i = 0; i < sizeof(present) / sizeof(present[0]); i++)
        if (h_header(r, present[i]) == NULL)
            fail_msg("%s: no %s", what, present[i]);
}

/* 5. Client conditionals and ranges answered from the store. */
static void
test_client_conditionals(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    const char *u =
        "/c1?cc=max-age=60&etag=v2&h=Accept-Ranges:bytes&h=Content-Language:en&body=0123456789";
    struct h_resp r;
    get_body(t, u, NULL, "0123456789", &r);
    EXPECT_CS(&r, "stored");
    if (!h_header(&r, "Content-Type") || !h_header(&r, "Accept-Ranges") ||
        !h_header(&r, "Content-Language"))
        fail_msg("the 200 lacks a field the 304s below must leave out");
    h_resp_free(&r);

    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    exchange(&c, t->node.port, "GET", u, "If-None-Match: \"v2\"\r\n", &r);
    if (r.status != 304)
        fail_msg("If-None-Match matching the stored ETag: status %d, Cache-Status \"%s\"", r.status,
                 h_cache_status(&r));
    EXPECT_HIT(&r);
    assert_string_equal(h_header(&r, "ETag"), "\"v2\"");
    /* Framed like the 200 it stands for (RFC 9110 §8.6), without the stored body being read. */
    const char *cl = h_header(&r, "Content-Length");
    if (cl == NULL || strcmp(cl, "10") != 0)
        fail_msg("304 from cache: Content-Length %s (expected 10)", cl ? cl : "(absent)");
    /* Representation metadata stays out of a 304 (RFC 9110 §15.4.5); validators and caching
     * fields stay in. */
    expect_no_304_metadata(&r, "304 from cache");
    h_resp_free(&r);
    /* The same for a 304 answered to a miss (the origin's 200 goes to the store). */
    const char *u2 =
        "/c1b?cc=max-age=60&etag=v2&h=Accept-Ranges:bytes&h=Content-Language:en&body=0123456789";
    exchange(&c, t->node.port, "GET", u2, "If-None-Match: \"v2\"\r\n", &r);
    if (r.status != 304)
        fail_msg("If-None-Match on a miss: status %d, Cache-Status \"%s\"", r.status,
                 h_cache_status(&r));
    EXPECT_CS(&r, "stored");
    expect_no_304_metadata(&r, "304 to a miss");
    h_resp_free(&r);
    /* No body followed the 304: the next response on the connection parses cleanly. */
    exchange(&c, t->node.port, "GET", u, "If-None-Match: \"other\"\r\n", &r);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "0123456789") != 0)
        fail_msg("GET after the 304 on one connection: status %d body \"%s\"", r.status,
                 r.body ? r.body : "(none)");
    EXPECT_HIT(&r);
    h_resp_free(&r);

    exchange(&c, t->node.port, "GET", u, "Range: bytes=2-5\r\n", &r);
    if (r.status != 206 || r.body == NULL || strcmp(r.body, "2345") != 0)
        fail_msg("Range 2-5: status %d body \"%s\" Cache-Status \"%s\"", r.status,
                 r.body ? r.body : "(none)", h_cache_status(&r));
    const char *cr = h_header(&r, "Content-Range");
    if (cr == NULL || strcmp(cr, "bytes 2-5/10") != 0)
        fail_msg("Range 2-5: Content-Range %s", cr ? cr : "(absent)");
    EXPECT_HIT(&r);
    h_resp_free(&r);

    exchange(&c, t->node.port, "GET", u, "Range: bytes=999999-\r\n", &r);
    if (r.status != 416)
        fail_msg("Range beyond the end: status %d (expected 416), Cache-Status \"%s\"", r.status,
                 h_cache_status(&r));
    cr = h_header(&r, "Content-Range");
    if (cr == NULL || strcmp(cr, "bytes */10") != 0)
        fail_msg("416: Content-Range %s (expected bytes */10)", cr ? cr : "(absent)");
    h_resp_free(&r);
    h_conn_close(&c);
    EXPECT_COUNT(t, "/c1", 1);
    H_PASS(t);
}

/* 6. Vary: one stored variant per Accept-Language. */
static void
test_vary(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    /* echo=1: the body is the request head the origin saw, so variants differ. */
    const char *u = "/v1?cc=max-age=60&h=Vary:Accept-Language&echo=1";
    static const struct {
        const char *lang;
        const char *cs;
        int count;
    } steps[] = {
        {"en", "fwd=uri-miss", 1}, {"fr", "fwd=vary-miss", 2}, {"en", "hit", 2}, {"fr", "hit", 2}};
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        char extra[64], want[64];
        snprintf(extra, sizeof(extra), "Accept-Language: %s\r\n", steps[i].lang);
        snprintf(want, sizeof(want), "Accept-Language: %s\r\n", steps[i].lang);
        struct h_resp r;
        node_get(t, u, extra, &r);
        assert_int_equal(r.status, 200);
        if (r.body == NULL || strstr(r.body, want) == NULL)
            fail_msg("step %zu (%s): body is another variant:\n%s", i, steps[i].lang,
                     r.body ? r.body : "(none)");
        if (strcmp(steps[i].cs, "hit") == 0) {
            EXPECT_HIT(&r);
        } else {
            EXPECT_CS(&r, steps[i].cs);
            EXPECT_CS(&r, "stored");
        }
        h_resp_free(&r);
        EXPECT_COUNT(t, "/v1", steps[i].count);
    }
    H_PASS(t);
}

static void
post(struct h_test *t, const char *target, struct h_resp *r)
{
    char *req = NULL;
    int n = asprintf(&req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/plain\r\n"
                     "Content-Length: 4\r\n\r\ndata",
                     target, t->node.port);
    assert_true(n > 0);
    if (h_request(t->node.port, req, (size_t)n, false, 0, r) != 0)
        fail_msg("POST %s: no response", target);
    free(req);
}

/* 7. Unsafe methods invalidate the target URI and same-origin Location / Content-Location. */
static void
test_invalidation(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    struct h_resp r;

    const char *u = "/inv1?cc=max-age=60&body=one";
    store_and_hit(t, u, "one");
    EXPECT_COUNT(t, "/inv1", 1);
    post(t, u, &r);
    assert_int_equal(r.status, 200);
    EXPECT_CS(&r, "fwd=method");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/inv1", 2);
    get_body(t, u, NULL, "one", &r);
    EXPECT_CS(&r, "fwd=uri-miss");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/inv1", 3);

    /* Location and Content-Location naming other stored same-origin URIs. */
    store_and_hit(t, "/inv2?cc=max-age=60&body=two", "two");
    store_and_hit(t, "/inv3?cc=max-age=60&body=three", "three");
    post(t, "/inv4?status=201&h=Location:/inv2%3Fcc%3Dmax-age%3D60%26body%3Dtwo", &r);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    get_body(t, "/inv2?cc=max-age=60&body=two", NULL, "two", &r);
    EXPECT_CS(&r, "fwd=uri-miss");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/inv2", 2);
    EXPECT_COUNT(t, "/inv3", 1);
    char target[256];
    snprintf(target, sizeof(target),
             "/inv4?h=Content-Location:http://127.0.0.1:%d/inv3%%3Fcc%%3Dmax-age%%3D60%%26body%%3D"
             "three",
             t->node.port);
    post(t, target, &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    get_body(t, "/inv3?cc=max-age=60&body=three", NULL, "three", &r);
    EXPECT_CS(&r, "fwd=uri-miss");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/inv3", 2);

    /* A Location on another host does not touch our entry (RFC 9111 §4.4). */
    store_and_hit(t, "/inv5?cc=max-age=60&body=five", "five");
    post(t, "/inv6?h=Location:http://elsewhere.example/inv5%3Fcc%3Dmax-age%3D60%26body%3Dfive", &r);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    get_body(t, "/inv5?cc=max-age=60&body=five", NULL, "five", &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/inv5", 1);

    /* An error answer to the unsafe method invalidates nothing. */
    store_and_hit(t, "/inv7?cc=max-age=60&body=seven", "seven");
    post(t, "/inv7?cc=max-age=60&body=seven&status=500", &r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/inv7", 2);
    H_PASS(t);
}

/* 8. CDN-Cache-Control wins over Cache-Control for us and still goes downstream. */
static void
test_cdn_cache_control(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    const char *u = "/cdn1?cc=no-store&h=CDN-Cache-Control:max-age=60&body=targeted";
    struct h_resp r;
    for (int i = 0; i < 2; i++) {
        get_body(t, u, NULL, "targeted", &r);
        if (i == 0) {
            EXPECT_CS(&r, "fwd=uri-miss");
            EXPECT_CS(&r, "stored");
        } else {
            EXPECT_HIT(&r);
        }
        const char *cdn = h_header(&r, "CDN-Cache-Control");
        if (cdn == NULL || strcmp(cdn, "max-age=60") != 0)
            fail_msg("response %d: CDN-Cache-Control %s", i, cdn ? cdn : "(absent)");
        const char *cc = h_header(&r, "Cache-Control");
        if (cc == NULL || strcmp(cc, "no-store") != 0)
            fail_msg("response %d: Cache-Control %s", i, cc ? cc : "(absent)");
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, "/cdn1", 1);
    H_PASS(t);
}

/* 8b. Surrogate-Control targeted at this node (its cdn_id, announced in Surrogate-Capability)
 * wins over Cache-Control; one targeted at another device does not apply to us. */
static void
test_surrogate_control(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    const char *mine = "/sc1?cc=no-store&h=Surrogate-Control:max-age=60;testnode&body=mine";
    const char *other = "/sc2?cc=no-store&h=Surrogate-Control:max-age=60;othernode&body=other";
    struct h_resp r;
    for (int i = 0; i < 2; i++) {
        get_body(t, mine, NULL, "mine", &r);
        if (i == 1)
            EXPECT_HIT(&r);
        h_resp_free(&r);
        get_body(t, other, NULL, "other", &r);
        EXPECT_CS(&r, "fwd=uri-miss");
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, "/sc1", 1);
    EXPECT_COUNT(t, "/sc2", 2);
    char *v = h_origin_field(t, "/sc2", "Surrogate-Capability");
    if (strcmp(v, "testnode=\"Surrogate/1.0\"") != 0)
        fail_msg("the origin saw Surrogate-Capability \"%s\"", v);
    free(v);
    H_PASS(t);
}

static void
origin_fail(struct h_test *t, const char *path, int status)
{
    char target[256];
    snprintf(target, sizeof(target), "/__origin/fail?path=%s&status=%d", path, status);
    struct h_resp r;
    assert_int_equal(h_get(t->origin_port, target, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
}

/*
 * Polls target (stored with max-age=1) until the node stops answering it as a plain hit, at most
 * 4 s; r holds that first forwarded answer.
 */
static void
poll_until_forwarded(struct h_test *t, const char *target, struct h_resp *r)
{
    int64_t deadline = h_now_ms() + 4000;
    for (int i = 0; i < 400; i++) {
        node_get(t, target, NULL, r);
        if (!plain_hit(r))
            return;
        assert_int_equal(r->status, 200);
        h_resp_free(r);
        if (h_now_ms() > deadline)
            break;
        h_nap_ms(50);
    }
    fail_msg("%s: still a fresh hit after 4 s with max-age=1", target);
}

/* 9. stale-if-error serves the stored response when the origin fails; must-revalidate forbids it.
 */
static void
test_stale_if_error(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    struct h_resp r;
    const char *u = "/sie?cc=max-age=1,%20stale-if-error=60&body=keep-me";
    const char *mr = "/siemr?cc=max-age=1,%20stale-if-error=60,%20must-revalidate&body=strict";
    get_body(t, u, NULL, "keep-me", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    get_body(t, mr, NULL, "strict", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    origin_fail(t, "/sie", 503);
    origin_fail(t, "/siemr", 503);

    poll_until_forwarded(t, u, &r);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "keep-me") != 0)
        fail_msg("stale-if-error: status %d body \"%s\", Cache-Status \"%s\"", r.status,
                 r.body ? r.body : "(none)", h_cache_status(&r));
    EXPECT_CS(&r, "; hit");
    EXPECT_CS(&r, "fwd-status=503");
    EXPECT_CS(&r, "detail=stale-if-error");
    assert_non_null(h_header(&r, "Age"));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/sie", 2);

    poll_until_forwarded(t, mr, &r);
    if (r.status != 503)
        fail_msg("must-revalidate with the origin failing: status %d body \"%s\", Cache-Status "
                 "\"%s\" (expected the 503)",
                 r.status, r.body ? r.body : "(none)", h_cache_status(&r));
    EXPECT_NO_CS(&r, "stale-if-error");
    EXPECT_CS(&r, "fwd-status=503");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/siemr", 2);

    /* Once the origin recovers, the entry is refreshed from it. */
    h_origin_reset(t);
    get_body(t, u, NULL, "keep-me", &r);
    EXPECT_CS(&r, "fwd-status=200");
    EXPECT_NO_CS(&r, "stale-if-error");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/sie", 1);
    H_PASS(t);
}

/*
 * Stops the node (sig) and starts a new one on the same cache directory and the same port: the
 * Host field, part of the cache key, stays the same.
 */
static void
restart_node(struct h_test *t, int sig)
{
    int st = h_proc_stop(&t->node.proc, sig, 10000);
    if (sig == SIGTERM && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail_msg("cdnode did not exit cleanly on SIGTERM (status 0x%x)", st);
    if (sig == SIGKILL && !(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL))
        fail_msg("cdnode was not killed by SIGKILL (status 0x%x)", st);
    start_node(t);
}

/* 10a. A node stopped with SIGTERM hands its store to the next one: hits at once. */
static void
test_restart_sigterm(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    static const char *const small[] = {"/rs1?cc=max-age=600&body=one",
                                        "/rs2?cc=max-age=600&etag=e2&body=two",
                                        "/rs3?lm=" OLD_DATE_Q "&body=three"};
    static const char *const bodies[] = {"one", "two", "three"};
    static const char *const paths[] = {"/rs1", "/rs2", "/rs3"};
    const char *big = "/rsbig?size=1500000&cc=max-age=600";
    struct h_resp r;
    for (size_t i = 0; i < 3; i++) {
        get_body(t, small[i], NULL, bodies[i], &r);
        EXPECT_CS(&r, "stored");
        h_resp_free(&r);
    }
    get_pattern(t, big, 1500000, &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);

    restart_node(t, SIGTERM);
    for (size_t i = 0; i < 3; i++) {
        get_body(t, small[i], NULL, bodies[i], &r);
        EXPECT_HIT(&r);
        h_resp_free(&r);
        EXPECT_COUNT(t, paths[i], 1);
    }
    get_pattern(t, big, 1500000, &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/rsbig", 1);
    H_PASS(t);
}

/*
 * 10c. cache_writemap: a clean stop keeps the store as in 10a; a node killed while its map was
 * writable leaves its marker, and the next one says so and starts empty rather than trust it.
 */
static void
test_restart_writemap(void **state)
{
    struct h_test *t = *state;
    static const char conf[] = "cache_writemap = on\ncache_size = 16m\n";
    h_node_start_conf(t, "testnode", "wm.conf", conf);
    const char *u = "/wm1?cc=max-age=600&body=mapped";
    struct h_resp r;
    get_body(t, u, NULL, "mapped", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);

    int st = h_proc_stop(&t->node.proc, SIGTERM, 10000);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    h_node_start_conf(t, "testnode", "wm.conf", conf);
    get_body(t, u, NULL, "mapped", &r);
    EXPECT_HIT(&r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/wm1", 1);

    st = h_proc_stop(&t->node.proc, SIGKILL, 10000);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    h_node_start_conf(t, "testnode", "wm.conf", conf);
    char *log = h_read_file(t->node.proc.log, NULL);
    assert_non_null(log);
    bool said = strstr(log, "was not closed cleanly while its map was writable") != NULL;
    free(log);
    assert_true(said);
    get_body(t, u, NULL, "mapped", &r);
    EXPECT_CS(&r, "stored");
    h_resp_free(&r);
    EXPECT_COUNT(t, "/wm1", 2);
    H_PASS(t);
}

#define LOAD_URLS 40
#define LOAD_THREADS 4
#define LOAD_PER_THREAD 50

static uint64_t
load_size(int i)
{
    return i % 4 == 0 ? 400000 + (uint64_t)i * 1000 : 1000 + (uint64_t)i * 997;
}

static void
load_target(int i, char *out, size_t n)
{
    snprintf(out, n, "/k%d?cc=max-age=600&size=%llu", i, (unsigned long long)load_size(i));
}

struct load {
    int port;
    atomic_int done;                  /* whole, correct responses */
    atomic_bool committed[LOAD_URLS]; /* answered "stored" or as a hit, body whole */
    atomic_int bad;                   /* whole responses with a wrong status or body */
    char bad_msg[256];
};

struct load_thread {
    struct load *l;
    int k;
};

/* Thread k asks for URLs k, k+4, ... in rounds; it stops at the first failed exchange. */
static void *
load_main(void *arg)
{
    struct load_thread *lt = arg;
    struct load *l = lt->l;
    for (int j = 0; j < LOAD_PER_THREAD; j++) {
        int i = (lt->k + LOAD_THREADS * j) % LOAD_URLS;
        char target[128];
        load_target(i, target, sizeof(target));
        struct h_conn c;
        if (h_conn_open(&c, l->port) != 0)
            break;
        struct h_pattern p = {0};
        struct h_resp r;
        int rc = h_conn_sendf(&c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", target, l->port);
        if (rc == 0)
            rc = h_read_response_sink(&c, &r, false, H_TIMEOUT_MS, h_pattern_sink, &p);
        h_conn_close(&c);
        if (rc != 0)
            break;
        bool whole = r.complete;
        if (whole && (r.status != 200 || p.bad || p.off != load_size(i))) {
            if (atomic_fetch_add(&l->bad, 1) == 0)
                snprintf(l->bad_msg, sizeof(l->bad_msg),
                         "%s: status %d, %llu bytes, pattern break at %llu, Cache-Status %s",
                         target, r.status, (unsigned long long)p.off,
                         (unsigned long long)(p.bad ? p.bad - 1 : 0), h_cache_status(&r));
        } else if (whole) {
            if (h_cache_status_has(&r, "stored") || plain_hit(&r))
                atomic_store(&l->committed[i], true);
            atomic_fetch_add(&l->done, 1);
        }
        h_resp_free(&r);
        if (!whole)
            break;
    }
    return NULL;
}

/*
 * 10b. SIGKILL under load loses nothing the node had acknowledged: every URL a client received
 * whole with "stored" (or as a hit) is a hit with the same bytes after a restart on the same
 * directory, and the others are served correctly either way.
 */
static void
test_restart_sigkill_under_load(void **state)
{
    struct h_test *t = *state;
    start_node(t);
    /* On the heap: an assertion jumping out must not leave threads writing to a dead frame. */
    struct load *l = calloc(1, sizeof(*l));
    assert_non_null(l);
    l->port = t->node.port;
    struct load_thread lt[LOAD_THREADS];
    pthread_t th[LOAD_THREADS];
    for (int k = 0; k < LOAD_THREADS; k++) {
        lt[k] = (struct load_thread){l, k};
        assert_int_equal(pthread_create(&th[k], NULL, load_main, &lt[k]), 0);
    }
    /* Kill while the first round (every URL a miss) is still being stored. */
    int64_t deadline = h_now_ms() + 30000;
    while (atomic_load(&l->done) < 30 && h_now_ms() < deadline)
        h_nap_ms(1);
    int done_at_kill = atomic_load(&l->done);
    int st = h_proc_stop(&t->node.proc, SIGKILL, 10000);
    for (int k = 0; k < LOAD_THREADS; k++)
        pthread_join(th[k], NULL);
    if (atomic_load(&l->bad) > 0)
        fail_msg("%d wrong responses under load; first: %s", atomic_load(&l->bad), l->bad_msg);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    if (done_at_kill < 30)
        fail_msg("only %d responses in 30 s of load", done_at_kill);

    long before[LOAD_URLS];
    int n_committed = 0;
    for (int i = 0; i < LOAD_URLS; i++) {
        char path[16];
        snprintf(path, sizeof(path), "/k%d", i);
        before[i] = h_origin_count(t, path);
        n_committed += atomic_load(&l->committed[i]);
    }
    print_message("killed after %d whole responses (%d by the end); %d of %d URLs acknowledged\n",
                  done_at_kill, atomic_load(&l->done), n_committed, LOAD_URLS);
    assert_true(n_committed >= 10);

    start_node(t);
    for (int i = 0; i < LOAD_URLS; i++) {
        char target[128], path[16];
        load_target(i, target, sizeof(target));
        snprintf(path, sizeof(path), "/k%d", i);
        struct h_resp r;
        get_pattern(t, target, load_size(i), &r);
        if (atomic_load(&l->committed[i])) {
            if (!plain_hit(&r))
                fail_msg("%s was acknowledged as stored before SIGKILL but after the restart "
                         "Cache-Status is \"%s\"",
                         target, h_cache_status(&r));
            long now = h_origin_count(t, path);
            if (now != before[i])
                fail_msg("%s: origin count %ld after the restart (was %ld)", target, now,
                         before[i]);
        }
        h_resp_free(&r);
    }
    free(l);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_miss_then_hit, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_not_stored, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_freshness, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_no_freshness_always_forwarded, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_revalidate_304, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_client_conditionals, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_vary, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_invalidation, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_cdn_cache_control, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_surrogate_control, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_stale_if_error, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_restart_sigterm, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_restart_sigkill_under_load, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_restart_writemap, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
