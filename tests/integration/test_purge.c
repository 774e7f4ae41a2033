/*
 * Purging through the admin listener of the real binary: by URL (every variant), prefix, tag
 * (Surrogate-Key and Cache-Tag, kept across a 304) and everything, hard and soft, with POST /purge
 * and the PURGE method; authentication and bad input; and durability: an acknowledged purge
 * survives kill -9. Each check looks at what the client got (Cache-Status) and what the origin saw
 * (request counts, the conditional it was sent). A response stored by the node is committed
 * before its last byte reaches the client, and a purge is committed before it is acknowledged, so
 * no check waits for anything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* GET target from the node; must be a 200 with a body. Returns whether it was a plain hit. */
static bool
node_get(struct h_test *t, const char *target, const char *extra)
{
    struct h_resp r;
    if (h_get(t->node.port, target, extra, &r) != 0)
        fail_msg("GET %s: no response", target);
    if (r.status != 200 || !r.complete)
        fail_msg("GET %s: status %d complete %d, Cache-Status \"%s\"", target, r.status, r.complete,
                 h_cache_status(&r));
    bool hit = strstr(h_cache_status(&r), "; hit") != NULL && strstr(h_cache_status(&r), "fwd=") == NULL;
    if (!hit)
        fprintf(stderr, "GET %s: not a hit: Cache-Status \"%s\", Age %s\n", target, h_cache_status(&r),
                h_header(&r, "Age") ? h_header(&r, "Age") : "(none)");
    h_resp_free(&r);
    return hit;
}

#define EXPECT_HIT(t, target, extra)                                                               \
    do {                                                                                           \
        if (!node_get((t), (target), (extra)))                                                     \
            fail_msg("line %d: GET %s is not a hit", __LINE__, (target));                          \
    } while (0)

/* After a soft purge answered by a 304 the next GET is a hit: the client saw the 304's answer
 * only once the store had taken the update. Returns 0 (the extra origin requests: none). */
static int
hit_after_freshen(struct h_test *t, const char *target, int line)
{
    if (!node_get(t, target, NULL))
        fail_msg("line %d: GET %s is not a hit after the 304 freshened it", line, target);
    return 0;
}

#define EXPECT_COUNT(t, path, n)                                                                   \
    do {                                                                                           \
        long got_ = h_origin_count((t), (path));                                                   \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: origin saw %ld requests for %s (expected %d)", __LINE__, got_,      \
                     (path), (n));                                                                 \
    } while (0)

/* Stores target: a miss then a hit; the origin sees one more request for path. */
static void
store(struct h_test *t, const char *target, const char *path, const char *extra)
{
    long before = h_origin_count(t, path);
    if (node_get(t, target, extra))
        fail_msg("GET %s: first request was a hit", target);
    EXPECT_HIT(t, target, extra);
    if (h_origin_count(t, path) != before + 1)
        fail_msg("storing %s: origin saw %ld requests (expected %ld)", target,
                 h_origin_count(t, path), before + 1);
}

/* Percent-encodes everything but unreserved characters, into a static buffer. */
static const char *
qenc(const char *s)
{
    static char out[2048];
    static const char hex[] = "0123456789ABCDEF";
    char *o = out;
    for (; *s && o < out + sizeof(out) - 4; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

/* One request to the admin listener. auth: the Authorization line or NULL. */
static void
admin(struct h_test *t, const char *method, const char *target, const char *host, const char *auth,
      struct h_resp *r)
{
    char req[4096];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: %s\r\n%s%sContent-Length: 0\r\n\r\n",
                 method, target, host, auth ? auth : "", auth ? "\r\n" : "");
    assert_true(n > 0 && (size_t)n < sizeof(req));
    if (h_request(t->node.admin_port, req, (size_t)n, false, 0, r) != 0)
        fail_msg("%s %s: no response from the admin listener", method, target);
}

#define AUTH "Authorization: Bearer " H_TOKEN

/* The N of a 200 {"purged": N}; fails on anything else. */
static long
purged_of(struct h_resp *r, const char *what)
{
    const char *ct = h_header(r, "Content-Type");
    long n = -1;
    if (r->status != 200 || r->body == NULL || ct == NULL || strcmp(ct, "application/json") != 0 ||
        sscanf(r->body, "{\"purged\": %ld}", &n) != 1)
        fail_msg("%s: status %d, body \"%s\"", what, r->status, r->body ? r->body : "(none)");
    h_resp_free(r);
    return n;
}

/* POST /purge?<query>; returns N. */
static long
purge(struct h_test *t, const char *query)
{
    char target[2048];
    snprintf(target, sizeof(target), "/purge?%s", query);
    struct h_resp r;
    admin(t, "POST", target, "127.0.0.1", AUTH, &r);
    return purged_of(&r, target);
}

/* "url=<encoded http://127.0.0.1:port + target>" or with another parameter name. */
static const char *
url_param(struct h_test *t, const char *name, const char *target)
{
    static char out[2048];
    char url[1024];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", t->node.port, target);
    snprintf(out, sizeof(out), "%s=%s", name, qenc(url));
    return out;
}

#define EXPECT_PURGED(t, query, n)                                                                 \
    do {                                                                                           \
        long got_ = purge((t), (query));                                                           \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: purge %s: %ld records (expected %d)", __LINE__, (query), got_,      \
                     (n));                                                                         \
    } while (0)

static void
test_purge_url_prefix_all(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "purge1", t->origin_url, NULL), 0);
    store(t, "/u?cc=max-age=60", "/u", NULL);
    store(t, "/pre/a?cc=max-age=60", "/pre/a", NULL);
    store(t, "/pre/b?cc=max-age=60", "/pre/b", NULL);
    store(t, "/other?cc=max-age=60", "/other", NULL);

    /* url=: only that key; the next GET goes to the origin and stores it again */
    EXPECT_PURGED(t, url_param(t, "url", "/u?cc=max-age=60"), 1);
    EXPECT_HIT(t, "/pre/a?cc=max-age=60", NULL);
    store(t, "/u?cc=max-age=60", "/u", NULL);
    EXPECT_COUNT(t, "/u", 2);
    /* the same URL written differently names the same key */
    char loud[256];
    snprintf(loud, sizeof(loud), "url=%s", qenc("HTTP://127.0.0.1:"));
    snprintf(loud + strlen(loud), sizeof(loud) - strlen(loud), "%d%s", t->node.port,
             qenc("/%75?cc=max-age=60"));
    EXPECT_PURGED(t, loud, 1);
    store(t, "/u?cc=max-age=60", "/u", NULL);
    EXPECT_COUNT(t, "/u", 3);
    /* nothing stored there: 0 */
    EXPECT_PURGED(t, url_param(t, "url", "/never"), 0);

    /* prefix=: /pre/a and /pre/b, not /other */
    EXPECT_PURGED(t, url_param(t, "prefix", "/pre/"), 2);
    EXPECT_HIT(t, "/other?cc=max-age=60", NULL);
    store(t, "/pre/a?cc=max-age=60", "/pre/a", NULL);
    store(t, "/pre/b?cc=max-age=60", "/pre/b", NULL);
    EXPECT_COUNT(t, "/pre/a", 2);
    EXPECT_COUNT(t, "/pre/b", 2);
    EXPECT_COUNT(t, "/other", 1);

    /* all=1: the four objects */
    EXPECT_PURGED(t, "all=1", 4);
    store(t, "/other?cc=max-age=60", "/other", NULL);
    EXPECT_COUNT(t, "/other", 2);
    EXPECT_PURGED(t, "all=1", 1);
    EXPECT_PURGED(t, "all=1", 0);
    H_PASS(t);
}

static void
test_purge_tags(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "purge2", t->origin_url, NULL), 0);
    store(t, "/t1?cc=max-age=60&h=Surrogate-Key:red%20blue", "/t1", NULL);
    store(t, "/t2?cc=max-age=60&h=Cache-Tag:blue,%20green", "/t2", NULL);
    store(t, "/t3?cc=max-age=60&h=Surrogate-Key:green", "/t3", NULL);
    store(t, "/t4?cc=max-age=60", "/t4", NULL);

    EXPECT_PURGED(t, "tag=blue", 2);
    EXPECT_HIT(t, "/t3?cc=max-age=60&h=Surrogate-Key:green", NULL);
    EXPECT_HIT(t, "/t4?cc=max-age=60", NULL);
    EXPECT_PURGED(t, "tag=red", 0); /* /t1 is gone already */
    EXPECT_PURGED(t, "tag=green", 1);
    EXPECT_PURGED(t, "tag=Green", 0); /* tags are compared exactly */
    EXPECT_HIT(t, "/t4?cc=max-age=60", NULL);
    store(t, "/t1?cc=max-age=60&h=Surrogate-Key:red%20blue", "/t1", NULL);
    store(t, "/t2?cc=max-age=60&h=Cache-Tag:blue,%20green", "/t2", NULL);
    EXPECT_COUNT(t, "/t1", 2);
    EXPECT_COUNT(t, "/t2", 2);
    EXPECT_COUNT(t, "/t4", 1);

    /* Soft purge by tag, then a 304 freshens the object: it keeps its tags. */
    const char *tv = "/tv?cc=max-age=60&etag=v1&h=Surrogate-Key:fresh";
    store(t, tv, "/tv", NULL);
    EXPECT_PURGED(t, "tag=fresh&soft=1", 1);
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, tv, NULL, &r), 0);
    if (r.status != 200 || strstr(h_cache_status(&r), "fwd=stale") == NULL)
        fail_msg("after a soft purge: status %d, Cache-Status \"%s\"", r.status, h_cache_status(&r));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/tv", 2);
    char *last = h_origin_last(t, "/tv");
    assert_non_null(last);
    char *inm = h_head_field(last, "If-None-Match");
    if (inm == NULL || strcmp(inm, "\"v1\"") != 0)
        fail_msg("revalidation after a soft purge sent If-None-Match \"%s\"", inm ? inm : "");
    free(inm);
    free(last);
    EXPECT_HIT(t, tv, NULL);
    EXPECT_PURGED(t, "tag=fresh", 1);
    EXPECT_PURGED(t, "tag=fresh", 0);
    H_PASS(t);
}

static void
test_purge_soft_and_variants(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "purge3", t->origin_url, NULL), 0);

    /* soft url=: kept, but the next request revalidates (a conditional GET, answered 304) */
    const char *s = "/soft?cc=max-age=60&etag=X";
    store(t, s, "/soft", NULL);
    char q[4096];
    snprintf(q, sizeof(q), "%s&soft=1", url_param(t, "url", s));
    EXPECT_PURGED(t, q, 1);
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, s, NULL, &r), 0);
    if (r.status != 200 || strstr(h_cache_status(&r), "fwd=stale") == NULL)
        fail_msg("after a soft purge: status %d, Cache-Status \"%s\"", r.status, h_cache_status(&r));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/soft", 2);
    char *last = h_origin_last(t, "/soft");
    assert_non_null(last);
    char *inm = h_head_field(last, "If-None-Match");
    if (inm == NULL || strcmp(inm, "\"X\"") != 0)
        fail_msg("revalidation after a soft purge sent If-None-Match \"%s\"", inm ? inm : "");
    free(inm);
    free(last);
    int extra = hit_after_freshen(t, s, __LINE__); /* freshened by the 304 */
    EXPECT_COUNT(t, "/soft", 2 + extra);
    /* soft prefix= and all=1 mark stale too */
    snprintf(q, sizeof(q), "soft=1&%s", url_param(t, "prefix", "/so"));
    EXPECT_PURGED(t, q, 1);
    assert_int_equal(h_get(t->node.port, s, NULL, &r), 0);
    if (strstr(h_cache_status(&r), "fwd=stale") == NULL)
        fail_msg("after a soft prefix purge: Cache-Status \"%s\"", h_cache_status(&r));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/soft", 3 + extra);
    EXPECT_PURGED(t, "all=1&soft=1", 1);
    assert_int_equal(h_get(t->node.port, s, NULL, &r), 0);
    if (strstr(h_cache_status(&r), "fwd=stale") == NULL)
        fail_msg("after soft all=1: Cache-Status \"%s\"", h_cache_status(&r));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/soft", 4 + extra);
    hit_after_freshen(t, s, __LINE__);

    /* Vary: both languages are variants of one key; url= purges both */
    const char *v = "/vary?cc=max-age=60&h=Vary:Accept-Language";
    store(t, v, "/vary", "Accept-Language: en\r\n");
    store(t, v, "/vary", "Accept-Language: de\r\n");
    EXPECT_HIT(t, v, "Accept-Language: en\r\n");
    EXPECT_PURGED(t, url_param(t, "url", v), 2);
    store(t, v, "/vary", "Accept-Language: en\r\n");
    store(t, v, "/vary", "Accept-Language: de\r\n");
    EXPECT_COUNT(t, "/vary", 4);

    /* PURGE /path?query with Host: the same key, all variants */
    char host[64];
    snprintf(host, sizeof(host), "127.0.0.1:%d", t->node.port);
    admin(t, "PURGE", v, host, AUTH, &r);
    if (purged_of(&r, "PURGE") != 2)
        fail_msg("PURGE %s did not purge both variants", v);
    store(t, v, "/vary", "Accept-Language: en\r\n");
    EXPECT_COUNT(t, "/vary", 5);
    /* absolute-form */
    char abs[256];
    snprintf(abs, sizeof(abs), "http://127.0.0.1:%d%s", t->node.port, v);
    admin(t, "PURGE", abs, "ignored.example", AUTH, &r);
    if (purged_of(&r, "PURGE absolute") != 1)
        fail_msg("PURGE %s did not purge the variant", abs);
    /* another host's key: nothing */
    store(t, v, "/vary", "Accept-Language: en\r\n");
    admin(t, "PURGE", v, "example.com", AUTH, &r);
    if (purged_of(&r, "PURGE other host") != 0)
        fail_msg("PURGE with Host: example.com purged something");
    EXPECT_HIT(t, v, "Accept-Language: en\r\n");
    H_PASS(t);
}

static void
expect_status(struct h_resp *r, int status, const char *what)
{
    if (r->status != status)
        fail_msg("%s: status %d (expected %d), body \"%s\"", what, r->status, status,
                 r->body ? r->body : "");
    if (status == 400 && (r->body == NULL || strncmp(r->body, "{\"error\": \"", 11) != 0))
        fail_msg("%s: 400 without a JSON error: \"%s\"", what, r->body ? r->body : "");
    h_resp_free(r);
}

static void
test_purge_auth_and_errors(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "purge4", t->origin_url, NULL), 0);
    store(t, "/keep?cc=max-age=60", "/keep", NULL);
    char host[64];
    snprintf(host, sizeof(host), "127.0.0.1:%d", t->node.port);
    struct h_resp r;

    admin(t, "POST", "/purge?all=1", "127.0.0.1", NULL, &r);
    expect_status(&r, 401, "POST /purge without a token");
    admin(t, "POST", "/purge?all=1", "127.0.0.1", "Authorization: Bearer wrong-token", &r);
    expect_status(&r, 401, "POST /purge with a wrong token");
    admin(t, "PURGE", "/keep?cc=max-age=60", host, NULL, &r);
    expect_status(&r, 401, "PURGE without a token");
    admin(t, "PURGE", "/healthz", host, NULL, &r);
    expect_status(&r, 401, "PURGE /healthz without a token");
    EXPECT_HIT(t, "/keep?cc=max-age=60", NULL);

    static const char *const bad[] = {
        "/purge",
        "/purge?soft=1",
        "/purge?url=ftp%3A%2F%2Fexample.com%2F",
        "/purge?url=%2Frelative",
        "/purge?url=",
        "/purge?url=http%3A%2F%2Fexample.com%2F&tag=x",
        "/purge?all=1&prefix=http%3A%2F%2Fexample.com%2F",
        "/purge?tag=a&tag=b",
        "/purge?tag=",
        "/purge?tag=two%20words",
        "/purge?all=yes",
        "/purge?all=1&soft=maybe",
        "/purge?all=1&what=1",
        "/purge?prefix=http%3A%2F%2Fu%40example.com%2F",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        admin(t, "POST", bad[i], "127.0.0.1", AUTH, &r);
        expect_status(&r, 400, bad[i]);
    }
    admin(t, "GET", "/purge?all=1", "127.0.0.1", AUTH, &r);
    if (r.status != 405 || h_header(&r, "Allow") == NULL || strcmp(h_header(&r, "Allow"), "POST"))
        fail_msg("GET /purge: status %d", r.status);
    h_resp_free(&r);
    /* PURGE without a Host (HTTP/1.0) names no URL */
    const char raw[] = "PURGE /keep?cc=max-age=60 HTTP/1.0\r\n" AUTH "\r\n\r\n";
    assert_int_equal(h_request(t->node.admin_port, raw, sizeof(raw) - 1, false, 0, &r), 0);
    expect_status(&r, 400, "PURGE without Host");
    /* none of that purged anything */
    EXPECT_HIT(t, "/keep?cc=max-age=60", NULL);
    EXPECT_COUNT(t, "/keep", 1);
    /* and the listener still works: a good purge on a kept-alive path */
    EXPECT_PURGED(t, "all=1", 1);
    H_PASS(t);
}

static void
test_purge_durable(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "purge5", t->origin_url, NULL), 0);
    store(t, "/dur?cc=max-age=600", "/dur", NULL);
    store(t, "/kept?cc=max-age=600", "/kept", NULL);
    store(t, "/tagged?cc=max-age=600&h=Surrogate-Key:gone", "/tagged", NULL);
    EXPECT_PURGED(t, url_param(t, "url", "/dur?cc=max-age=600"), 1);
    EXPECT_PURGED(t, "tag=gone", 1);
    /* acknowledged: now the process dies without a chance to write anything more */
    int st = h_proc_stop(&t->node.proc, SIGKILL, 5000);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    /* same ports (the key holds the Host) and the same cache directory */
    assert_int_equal(h_node_start(t, &t->node, "purge5", t->origin_url, NULL), 0);
    /* the restarted node does read the old store ... */
    EXPECT_HIT(t, "/kept?cc=max-age=600", NULL);
    EXPECT_COUNT(t, "/kept", 1);
    /* ... and the purged objects are not in it */
    if (node_get(t, "/dur?cc=max-age=600", NULL))
        fail_msg("a purged object was served from the cache after kill -9");
    EXPECT_COUNT(t, "/dur", 2);
    if (node_get(t, "/tagged?cc=max-age=600&h=Surrogate-Key:gone", NULL))
        fail_msg("an object purged by tag was served from the cache after kill -9");
    EXPECT_COUNT(t, "/tagged", 2);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_purge_url_prefix_all, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_purge_tags, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_purge_soft_and_variants, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_purge_auth_and_errors, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_purge_durable, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
