/*
 * The upstream side: what the client sees when the origin is down, silent, breaks HTTP framing,
 * resets mid-body, or sends a body much larger than memory should hold; and an HTTPS origin
 * checked against a configured CA file.
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
#include <sys/stat.h>
#include <time.h>

static void
test_origin_down(void **state)
{
    struct h_test *t = *state;
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", h_free_port()); /* nothing listens */
    assert_int_equal(h_node_start(t, &t->node, "testnode", url, NULL), 0);
    struct h_resp r;
    int64_t t0 = h_now_ms();
    assert_int_equal(h_get(t->node.port, "/down", NULL, &r), 0);
    assert_true(h_now_ms() - t0 < 3000);
    assert_int_equal(r.status, 502);
    assert_non_null(r.body);
    if (strcasestr(r.body, "connect") == NULL)
        fail_msg("502 body does not mention the connect failure: %s", r.body);
    h_resp_free(&r);
    H_PASS(t);
}

struct bg_get {
    int port;
    const char *path;
    struct h_resp r;
    int rc;
    int64_t took_ms;
    atomic_bool done;
};

static void *
bg_get_main(void *arg)
{
    struct bg_get *g = arg;
    int64_t t0 = h_now_ms();
    g->rc = h_get(g->port, g->path, NULL, &g->r);
    g->took_ms = h_now_ms() - t0;
    atomic_store(&g->done, true);
    return NULL;
}

static void
test_first_byte_timeout(void **state)
{
    struct h_test *t = *state;
    char conf[512];
    h_path(t, "timeout.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "origin_first_byte_timeout = 1s\n"), 0);
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("-c", conf)), 0);

    /* On the heap: if an assertion below jumps out, the thread may still write to it. */
    struct bg_get *gp = calloc(1, sizeof(*gp));
    assert_non_null(gp);
    gp->port = t->node.port;
    gp->path = "/hang?hang=1";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bg_get_main, gp), 0);
    /* Wait until the origin holds the request, then check the node still serves others. */
    int64_t deadline = h_now_ms() + 3000;
    while (h_origin_count(t, "/hang") < 1 && h_now_ms() < deadline)
        h_nap_ms(10);
    assert_int_equal(h_origin_count(t, "/hang"), 1);
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/meanwhile?body=served", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "served");
    h_resp_free(&r);
    bool still_waiting = !atomic_load(&gp->done);

    pthread_join(th, NULL);
    struct bg_get g = *gp;
    free(gp);
    assert_true(still_waiting);
    assert_int_equal(g.rc, 0);
    assert_int_equal(g.r.status, 504);
    if (g.r.body == NULL || strcasestr(g.r.body, "timeout") == NULL)
        fail_msg("504 body does not mention the timeout: %s", g.r.body ? g.r.body : "(none)");
    if (g.took_ms < 900 || g.took_ms > 3000)
        fail_msg("504 after %lld ms (expected about 1000)", (long long)g.took_ms);
    h_resp_free(&g.r);
    H_PASS(t);
}

static void
test_bad_origin_framing(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    static const char *const paths[] = {"/dupcl?dupcl=1&body=twelve-bytes",
                                        "/clte?clte=1&body=twelve-bytes", "/bighdr?bighdr=30000"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        struct h_resp r;
        assert_int_equal(h_get(t->node.port, paths[i], NULL, &r), 0);
        if (r.status != 502)
            fail_msg("%s: status %d (expected 502)", paths[i], r.status);
        assert_null(h_header(&r, "X-Big"));
        h_resp_free(&r);
    }
    /* The node is fine afterwards. */
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/fine?body=ok", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    H_PASS(t);
}

static void
test_origin_reset_mid_body(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    assert_int_equal(h_conn_sendf(&c,
                                  "GET /reset?reset_after=1000&size=100000 HTTP/1.1\r\n"
                                  "Host: 127.0.0.1:%d\r\n\r\n",
                                  t->node.port),
                     0);
    struct h_resp r;
    int rc = h_read_response(&c, &r, false, H_TIMEOUT_MS);
    if (rc == 0 && r.status == 200) {
        /* Head already sent: the only honest signal left is an incomplete body and a close. */
        print_message("reset after %llu body bytes: 200 head, body cut short\n",
                      (unsigned long long)r.body_total);
        assert_false(r.complete);
        assert_true(r.body_total < 100000);
        assert_true(r.closed || h_conn_wait_closed(&c, 2000));
    } else {
        /* The reset was seen before the head was passed on: an error status is right too. */
        print_message("reset before the head was passed on: status %d\n", rc == 0 ? r.status : -1);
        assert_int_equal(rc, 0);
        assert_int_equal(r.status, 502);
    }
    h_resp_free(&r);
    h_conn_close(&c);
    assert_int_equal(h_get(t->node.port, "/fine?body=ok", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    H_PASS(t);
}

struct rss_sampler {
    pid_t pid;
    atomic_bool stop;
    long max_kb;
    int samples;
};

static void *
rss_main(void *arg)
{
    struct rss_sampler *s = arg;
    /* Bounded by the stop flag, and by 10 minutes of samples in any case. */
    for (int i = 0; i < 12000 && !atomic_load(&s->stop); i++) {
        long kb = h_rss_kb(s->pid);
        if (kb > s->max_kb)
            s->max_kb = kb;
        s->samples++;
        h_nap_ms(50);
    }
    return NULL;
}

static void
test_large_body_streamed(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    const uint64_t size = 200000000;
    long base_kb = h_rss_kb(t->node.proc.pid);
    assert_true(base_kb > 0);

    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    assert_int_equal(h_conn_sendf(&c, "GET /huge?size=%llu HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                                  (unsigned long long)size, t->node.port),
                     0);
    struct rss_sampler s = {.pid = t->node.proc.pid};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, rss_main, &s), 0);
    struct h_pattern p = {0};
    struct h_resp r;
    int rc = h_read_response_sink(&c, &r, false, 240000, h_pattern_sink, &p);
    atomic_store(&s.stop, true);
    pthread_join(th, NULL);
    h_conn_close(&c);
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_int_equal(r.body_total, size);
    assert_int_equal(p.off, size);
    if (p.bad)
        fail_msg("body differs from the pattern at byte %llu", (unsigned long long)(p.bad - 1));
    h_resp_free(&r);
    print_message("cdnode VmRSS: %ld KiB before, at most %ld KiB in %d samples during 200 MB\n",
                  base_kb, s.max_kb, s.samples);
    assert_true(s.samples >= 1);
    if (s.max_kb >= 64 * 1024)
        fail_msg("cdnode VmRSS reached %ld KiB while streaming 200 MB (limit 64 MiB)", s.max_kb);
    H_PASS(t);
}

/* Runs `openssl s_server -WWW` on 127.0.0.1:port serving www/ under the test dir. */
static void
start_tls_origin(struct h_test *t, struct h_proc *p, int port, const char *cert, const char *key)
{
    char www[512], file[600], log[512], accept[64];
    h_path(t, "www", www, sizeof(www));
    assert_int_equal(mkdir(www, 0755), 0);
    snprintf(file, sizeof(file), "%s/hello.txt", www);
    assert_int_equal(h_write_file(file, "hello over tls\n"), 0);
    h_path(t, "s_server.log", log, sizeof(log));
    snprintf(accept, sizeof(accept), "127.0.0.1:%d", port);
    char *argv[] = {"openssl", "s_server",  "-accept", accept,   "-cert", (char *)cert,
                    "-key",    (char *)key, "-WWW",    "-quiet", NULL};
    assert_int_equal(h_spawn(p, "openssl s_server", argv, log, www), 0);
    h_track(t, p);
    assert_true(h_wait_port(port, 10000));
}

static void
test_https_origin(void **state)
{
    struct h_test *t = *state;
    char cert[512], key[512];
    assert_int_equal(h_make_cert(t, "origin", cert, key, sizeof(cert)), 0);
    int port = h_free_port();
    struct h_proc tls;
    start_tls_origin(t, &tls, port, cert, key);

    char url[64], conf[512];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d", port);
    h_path(t, "ca.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "origin_ca_file = %s\n", cert), 0);
    assert_int_equal(h_node_start(t, &t->node, "testnode", url, H_ARGS("-c", conf)), 0);
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/hello.txt", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello over tls\n");
    h_resp_free(&r);

    /* Without the CA file the self-signed certificate is not trusted. */
    struct h_node plain = {0};
    assert_int_equal(h_node_start(t, &plain, "untrusting", url, NULL), 0);
    assert_int_equal(h_get(plain.port, "/hello.txt", NULL, &r), 0);
    assert_int_equal(r.status, 502);
    h_resp_free(&r);
    H_PASS(t);
}

/*
 * A request that makes the origin drop the connection without answering (a "query of death"),
 * sent while the node holds many idle keep-alive connections to that origin: a dead reused
 * connection is worth one retry, not one per pooled connection.
 */
static void
test_dropped_request_retried_once(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    int port = t->node.port;
    enum { N = 8 };
    struct h_conn c[N];
    for (int i = 0; i < N; i++) { /* N origin connections at once, idle afterwards */
        assert_int_equal(h_conn_open(&c[i], port), 0);
        assert_int_equal(h_conn_sendf(&c[i],
                                      "GET /warm%d?delay_ms=300&cc=no-store HTTP/1.1\r\n"
                                      "Host: 127.0.0.1\r\n\r\n",
                                      i),
                         0);
    }
    for (int i = 0; i < N; i++) {
        struct h_resp r;
        assert_int_equal(h_read_response(&c[i], &r, false, H_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
        h_conn_close(&c[i]);
    }
    assert_true(h_origin_conns(t) >= N);
    struct h_resp r;
    assert_int_equal(h_get(port, "/qod?drop=1&cc=no-store", NULL, &r), 0);
    assert_int_equal(r.status, 502);
    h_resp_free(&r);
    long sent = h_origin_count(t, "/qod");
    if (sent < 1 || sent > 2)
        fail_msg("the origin received the dropped request %ld times (want 1 or 2)", sent);
    /* The pool is still usable afterwards. */
    assert_int_equal(h_get(port, "/after?body=fine&cc=no-store", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "fine");
    h_resp_free(&r);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_origin_down, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_dropped_request_retried_once, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_first_byte_timeout, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_bad_origin_framing, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_origin_reset_mid_body, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_large_body_streamed, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_https_origin, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
