/*
 * Origin pools: a node in front of two testorigins spreads requests round-robin; a dead origin is
 * retried around and, once marked down, no longer tried; the hash policy keeps a URL on one
 * origin; an origin failing its health check gets no traffic until it passes again; and a node
 * with too many misses in flight sheds new ones with 503.
 *
 * Retries and health transitions are read from the node's log, where the node reports each one
 * as it happens (before the response that needed it is sent).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The second origin of a test; static because the teardown stops it after the test returns. */
static struct h_proc origin2;

/* Starts a second testorigin on port (0: a free one); returns its port and writes its URL. */
static int
start_origin2(struct h_test *t, int port, char *url, size_t n)
{
    const char *bin = getenv("TESTORIGIN_BIN");
    assert_non_null(bin);
    char log[512], port_s[16];
    h_path(t, "origin2.log", log, sizeof(log));
    if (port == 0)
        port = h_free_port();
    snprintf(port_s, sizeof(port_s), "%d", port);
    char *argv[] = {(char *)bin, "--port", port_s, "--addr", "127.0.0.1", NULL};
    memset(&origin2, 0, sizeof(origin2));
    assert_int_equal(h_spawn(&origin2, "testorigin2", argv, log, NULL), 0);
    h_track(t, &origin2);
    assert_true(h_wait_port(port, 5000));
    snprintf(url, n, "http://127.0.0.1:%d", port);
    return port;
}

/* Sends a control request to the origin on port; returns its status, or -1. */
static int
origin_ctl(int port, const char *target)
{
    struct h_resp r;
    if (h_get(port, target, NULL, &r) != 0)
        return -1;
    int status = r.status;
    h_resp_free(&r);
    return status;
}

/* Requests the origin on port has seen for path (any query), or -1. */
static long
count_at(int port, const char *path)
{
    char target[256];
    snprintf(target, sizeof(target), "/__origin/count?path=%s", path);
    struct h_resp r;
    if (h_get(port, target, NULL, &r) != 0)
        return -1;
    long v = r.status == 200 && r.body ? strtol(r.body, NULL, 10) : -1;
    h_resp_free(&r);
    return v;
}

/* Occurrences of text in the node's log. */
static int
log_count(const struct h_test *t, const char *text)
{
    char *s = h_read_file(t->node.proc.log, NULL);
    int n = 0;
    for (const char *p = s; p && (p = strstr(p, text)) != NULL; p += strlen(text))
        n++;
    free(s);
    return n;
}

/* Waits (bounded) until text appears in the node's log at least `times` times. */
static bool
log_wait(const struct h_test *t, const char *text, int times, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    while (log_count(t, text) < times) {
        if (h_now_ms() >= deadline)
            return false;
        h_nap_ms(20);
    }
    return true;
}

static void
get_ok(int port, const char *path)
{
    struct h_resp r;
    assert_int_equal(h_get(port, path, NULL, &r), 0);
    if (r.status != 200)
        fail_msg("%s: status %d: %s", path, r.status, r.body ? r.body : "");
    h_resp_free(&r);
}

static void
test_round_robin(void **state)
{
    struct h_test *t = *state;
    char url2[64];
    int port2 = start_origin2(t, 0, url2, sizeof(url2));
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("--origin", url2)),
                     0);
    for (int i = 0; i < 20; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/rr?body=x&i=%d", i);
        get_ok(t->node.port, path);
    }
    long a = count_at(t->origin_port, "/rr"), b = count_at(port2, "/rr");
    print_message("round robin: %ld and %ld\n", a, b);
    assert_int_equal(a + b, 20);
    assert_int_equal(a, 10);
    assert_int_equal(b, 10);
    H_PASS(t);
}

static void
test_dead_origin(void **state)
{
    struct h_test *t = *state;
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", h_free_port()); /* nothing listens */
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("--origin", dead)),
                     0);
    /* Every other request is sent to the dead origin first and retried on the live one, until
     * three connect failures in a row mark it down (origin_fall defaults to 3). */
    for (int i = 0; i < 6; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/d?body=ok&i=%d", i);
        get_ok(t->node.port, path);
    }
    assert_int_equal(count_at(t->origin_port, "/d"), 6);
    char down[128];
    snprintf(down, sizeof(down), "origin %s down (3 consecutive failures)", dead);
    assert_true(log_wait(t, down, 1, H_TIMEOUT_MS));
    int retries = log_count(t, "; trying ");
    assert_int_equal(retries, 3);
    /* Down: nothing goes there any more, so nothing needs a retry. */
    for (int i = 0; i < 10; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/after?body=ok&i=%d", i);
        get_ok(t->node.port, path);
    }
    assert_int_equal(count_at(t->origin_port, "/after"), 10);
    assert_int_equal(log_count(t, "; trying "), retries);
    H_PASS(t);
}

/* Without a health path, an origin marked down is probed by connecting, and comes back when it
 * accepts connections again. */
static void
test_dead_origin_comes_back(void **state)
{
    struct h_test *t = *state;
    char url2[64], conf[512];
    int port2 = h_free_port();
    snprintf(url2, sizeof(url2), "http://127.0.0.1:%d", port2);
    h_path(t, "probe.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "origin_health_interval = 100ms\norigin_fall = 1\n"), 0);
    assert_int_equal(
        h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("--origin", url2, "-c", conf)),
        0);
    get_ok(t->node.port, "/a?body=x");
    get_ok(t->node.port, "/b?body=x"); /* its turn on the dead origin, retried */
    char down[128], up[128];
    snprintf(down, sizeof(down), "origin %s down (1 consecutive failures)", url2);
    snprintf(up, sizeof(up), "origin %s up (2 consecutive successes)", url2);
    assert_true(log_wait(t, down, 1, H_TIMEOUT_MS));
    assert_int_equal(log_count(t, up), 0);
    assert_int_equal(count_at(t->origin_port, "/b"), 1);

    start_origin2(t, port2, url2, sizeof(url2));
    assert_true(log_wait(t, up, 1, H_TIMEOUT_MS));
    for (int i = 0; i < 4; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/c?body=x&i=%d", i);
        get_ok(t->node.port, path);
    }
    assert_int_equal(count_at(port2, "/c"), 2);
    assert_int_equal(count_at(t->origin_port, "/c"), 2);
    H_PASS(t);
}

/* A request with a body is not retried: the client learns the connect failed. */
static void
test_no_retry_with_body(void **state)
{
    struct h_test *t = *state;
    char dead[64];
    snprintf(dead, sizeof(dead), "http://127.0.0.1:%d", h_free_port());
    /* The dead origin first: the first request goes there. */
    assert_int_equal(h_node_start(t, &t->node, "testnode", dead, H_ARGS("--origin", t->origin_url)),
                     0);
    const char post[] = "POST /p HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\nhello";
    struct h_resp r;
    assert_int_equal(h_request(t->node.port, post, strlen(post), false, 0, &r), 0);
    assert_int_equal(r.status, 502);
    h_resp_free(&r);
    assert_int_equal(count_at(t->origin_port, "/p"), 0);
    assert_int_equal(log_count(t, "; trying "), 0);
    /* The next one goes round to the live origin. */
    assert_int_equal(h_request(t->node.port, post, strlen(post), false, 0, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(count_at(t->origin_port, "/p"), 1);
    H_PASS(t);
}

static void
test_hash(void **state)
{
    struct h_test *t = *state;
    char url2[64], conf[512];
    int port2 = start_origin2(t, 0, url2, sizeof(url2));
    h_path(t, "hash.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "origin_balance = hash\n"), 0);
    assert_int_equal(
        h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("--origin", url2, "-c", conf)),
        0);
    int on_first = 0, on_second = 0;
    for (int i = 0; i < 20; i++) {
        char path[64], url[80];
        snprintf(path, sizeof(path), "/h%d", i);
        snprintf(url, sizeof(url), "%s?body=x", path);
        for (int k = 0; k < 3; k++)
            get_ok(t->node.port, url);
        long a = count_at(t->origin_port, path), b = count_at(port2, path);
        if (!((a == 3 && b == 0) || (a == 0 && b == 3)))
            fail_msg("%s reached the origins %ld and %ld times", path, a, b);
        on_first += a == 3;
        on_second += b == 3;
    }
    print_message("hash: %d URLs on the first origin, %d on the second\n", on_first, on_second);
    assert_true(on_first > 0 && on_second > 0);
    H_PASS(t);
}

static void
test_health_check(void **state)
{
    struct h_test *t = *state;
    char url2[64], conf[512];
    int port2 = start_origin2(t, 0, url2, sizeof(url2));
    h_path(t, "health.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "origin_health_path = /health\n"
                                        "origin_health_interval = 100ms\n"),
                     0);
    assert_int_equal(
        h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("--origin", url2, "-c", conf)),
        0);
    /* Checks are running: the second origin sees GET /health. */
    int64_t deadline = h_now_ms() + H_TIMEOUT_MS;
    while (count_at(port2, "/health") < 1 && h_now_ms() < deadline)
        h_nap_ms(20);
    assert_true(count_at(port2, "/health") >= 1);

    assert_int_equal(origin_ctl(port2, "/__origin/fail?path=/health&status=503"), 200);
    char down[128], up[128];
    snprintf(down, sizeof(down), "origin %s down (3 consecutive failures)", url2);
    snprintf(up, sizeof(up), "origin %s up (2 consecutive successes)", url2);
    assert_true(log_wait(t, down, 1, H_TIMEOUT_MS));
    for (int i = 0; i < 10; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/ah?body=x&i=%d", i);
        get_ok(t->node.port, path);
    }
    assert_int_equal(count_at(t->origin_port, "/ah"), 10);
    assert_int_equal(count_at(port2, "/ah"), 0);

    /* Healthy again after two good checks; then it takes its turns again. */
    assert_int_equal(origin_ctl(port2, "/__origin/reset"), 200);
    assert_true(log_wait(t, up, 1, H_TIMEOUT_MS));
    for (int i = 0; i < 10; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/back?body=x&i=%d", i);
        get_ok(t->node.port, path);
    }
    assert_int_equal(count_at(t->origin_port, "/back"), 5);
    assert_int_equal(count_at(port2, "/back"), 5);
    H_PASS(t);
}

struct bg_get {
    int port;
    char path[64];
    struct h_resp r;
    int rc;
    int64_t took_ms;
};

static void *
bg_get_main(void *arg)
{
    struct bg_get *g = arg;
    int64_t t0 = h_now_ms();
    g->rc = h_get(g->port, g->path, NULL, &g->r);
    g->took_ms = h_now_ms() - t0;
    return NULL;
}

static void
test_shed_when_overloaded(void **state)
{
    struct h_test *t = *state;
    char conf[512];
    h_path(t, "shed.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "max_inflight_misses = 2\n"), 0);
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("-c", conf)), 0);
    enum { N = 5 };
    /* On the heap: if an assertion below jumps out, the threads may still write to it. */
    struct bg_get *g = calloc(N, sizeof(*g));
    assert_non_null(g);
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        g[i].port = t->node.port;
        snprintf(g[i].path, sizeof(g[i].path), "/busy?delay_ms=1000&i=%d", i);
        assert_int_equal(pthread_create(&th[i], NULL, bg_get_main, &g[i]), 0);
    }
    for (int i = 0; i < N; i++)
        pthread_join(th[i], NULL);
    int ok = 0, shed = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(g[i].rc, 0);
        if (g[i].r.status == 200) {
            ok++;
        } else {
            assert_int_equal(g[i].r.status, 503);
            if (g[i].r.body == NULL || strstr(g[i].r.body, "node overloaded: 2 requests in flight "
                                                           "upstream") == NULL)
                fail_msg("503 body: %s", g[i].r.body ? g[i].r.body : "(none)");
            const char *ra = h_header(&g[i].r, "Retry-After");
            if (ra == NULL || strcmp(ra, "1") != 0)
                fail_msg("503 with Retry-After %s (expected 1)", ra ? ra : "missing");
            if (g[i].took_ms > 900)
                fail_msg("shed after %lld ms: it should be at once", (long long)g[i].took_ms);
            shed++;
        }
        h_resp_free(&g[i].r);
    }
    free(g);
    print_message("%d answered, %d shed\n", ok, shed);
    assert_true(ok >= 2);
    assert_true(shed >= 1);
    assert_int_equal(count_at(t->origin_port, "/busy"), ok);
    /* Nothing is in flight any more: the node takes misses again. */
    get_ok(t->node.port, "/busy?body=x");
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_robin, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_dead_origin, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_dead_origin_comes_back, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_no_retry_with_body, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_hash, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_health_check, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_shed_when_overloaded, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
