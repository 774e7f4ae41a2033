/*
 * Forwarding: what a request and its response look like on each side of the node. The node
 * stores nothing yet, so every request must reach the origin, with hop-by-hop fields removed,
 * Via / CDN-Loop / X-Forwarded-For appended, and the origin's answer passed through.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
start_node(struct h_test *t, const char *const *extra)
{
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, extra), 0);
}

static void
test_get_and_head(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    int port = t->node.port;
    struct h_resp r;

    assert_int_equal(h_get(port, "/a?body=hello&h=X-Test:one&cc=max-age=5", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_true(r.complete);
    assert_string_equal(r.body, "hello");
    assert_string_equal(h_header(&r, "X-Test"), "one");
    assert_string_equal(h_header(&r, "Cache-Control"), "max-age=5");
    assert_string_equal(h_header(&r, "Content-Type"), "text/plain");
    assert_non_null(h_header(&r, "Date"));
    assert_non_null(h_header(&r, "Via"));
    assert_string_equal(h_header(&r, "Via"), "1.1 testnode");
    h_resp_free(&r);
    assert_int_equal(h_origin_count(t, "/a"), 1);

    const char head_req[] = "HEAD /a?body=hello&h=X-Test:one HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    assert_int_equal(h_request(port, head_req, strlen(head_req), true, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(h_header(&r, "X-Test"), "one");
    if (h_header(&r, "Content-Length"))
        assert_string_equal(h_header(&r, "Content-Length"), "5");
    h_resp_free(&r);
    assert_int_equal(h_origin_count(t, "/a"), 2);
    char *last = h_origin_last(t, "/a");
    assert_non_null(last);
    assert_true(strncmp(last, "HEAD /a?", 8) == 0);
    free(last);
    H_PASS(t);
}

static void
test_request_hop_fields(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET /hop HTTP/1.1\r\n"
                     "Host: 127.0.0.1:%d\r\n"
                     "CDN-Loop: othercdn\r\n"
                     "X-Forwarded-For: 1.2.3.4\r\n"
                     "Connection: x-foo\r\n"
                     "X-Foo: 1\r\n"
                     "Keep-Alive: timeout=5\r\n"
                     "TE: trailers\r\n"
                     "Trailer: X-Trail\r\n"
                     "Upgrade: websocket\r\n"
                     "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
                     "X-Keep: yes\r\n"
                     "Accept: text/plain\r\n"
                     "\r\n",
                     t->node.port);
    struct h_resp r;
    assert_int_equal(h_request(t->node.port, req, (size_t)n, false, 0, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    char *head = h_origin_last(t, "/hop");
    assert_non_null(head);
    char expect_host[64];
    snprintf(expect_host, sizeof(expect_host), "Host: 127.0.0.1:%d", t->node.port);
    assert_true(h_head_has_line(head, expect_host));
    char *v;
    v = h_head_join(head, "Via");
    assert_non_null(v);
    assert_string_equal(v, "1.1 testnode");
    free(v);
    v = h_head_join(head, "CDN-Loop");
    assert_non_null(v);
    assert_string_equal(v, "othercdn, testnode");
    free(v);
    v = h_head_join(head, "X-Forwarded-For");
    assert_non_null(v);
    assert_string_equal(v, "1.2.3.4, 127.0.0.1");
    free(v);
    static const char *const gone[] = {"X-Foo",   "Keep-Alive", "TE",
                                       "Trailer", "Upgrade",    "Proxy-Authorization"};
    for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++) {
        v = h_head_field(head, gone[i]);
        if (v)
            fail_msg("origin received hop-by-hop field %s: %s", gone[i], v);
    }
    v = h_head_join(head, "Connection");
    if (v) {
        assert_null(strcasestr(v, "x-foo"));
        free(v);
    }
    v = h_head_field(head, "X-Keep");
    assert_non_null(v);
    assert_string_equal(v, "yes");
    free(v);
    v = h_head_field(head, "Accept");
    assert_non_null(v);
    assert_string_equal(v, "text/plain");
    free(v);
    free(head);

    /* Without an incoming X-Forwarded-For the node starts one. */
    assert_int_equal(h_get(t->node.port, "/hop2", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    v = h_origin_field(t, "/hop2", "X-Forwarded-For");
    assert_string_equal(v, "127.0.0.1");
    free(v);
    v = h_origin_field(t, "/hop2", "CDN-Loop");
    assert_string_equal(v, "testnode");
    free(v);
    H_PASS(t);
}

static void
test_response_hop_fields(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    struct h_resp r;
    assert_int_equal(
        h_get(t->node.port,
              "/rh?h=Connection:x-bar&h=X-Bar:1&h=Keep-Alive:timeout=9&h=X-Other:2&body=b", NULL,
              &r),
        0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "b");
    assert_null(h_header(&r, "X-Bar"));
    if (h_header(&r, "Keep-Alive"))
        assert_null(strstr(h_header(&r, "Keep-Alive"), "timeout=9"));
    if (h_header(&r, "Connection"))
        assert_null(strcasestr(h_header(&r, "Connection"), "x-bar"));
    assert_string_equal(h_header(&r, "X-Other"), "2");
    h_resp_free(&r);
    H_PASS(t);
}

static void
test_absolute_form(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    /* RFC 9112 3.2.2: with an absolute-form target the Host field is replaced by its authority. */
    const char req[] = "GET http://example.test/p?body=abs HTTP/1.1\r\n"
                       "Host: example.test\r\n\r\n";
    struct h_resp r;
    assert_int_equal(h_request(t->node.port, req, strlen(req), false, 0, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "abs");
    h_resp_free(&r);
    char *head = h_origin_last(t, "/p");
    assert_non_null(head);
    assert_true(strncmp(head, "GET /p?body=abs HTTP/1.1\r\n", 26) == 0);
    char *host = h_head_join(head, "Host");
    assert_non_null(host);
    assert_string_equal(host, "example.test");
    free(host);
    free(head);
    H_PASS(t);
}

static void
test_post_bodies(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    int port = t->node.port;
    struct h_resp r;
    char req[512];

    int n = snprintf(req, sizeof(req),
                     "POST /post?status=201 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: 11\r\n\r\nhello=world",
                     port);
    assert_int_equal(h_request(port, req, (size_t)n, false, 0, &r), 0);
    assert_int_equal(r.status, 201);
    h_resp_free(&r);
    size_t len = 0;
    uint64_t full = 0;
    char *body = h_origin_lastbody(t, "/post", &len, &full);
    assert_non_null(body);
    assert_int_equal(full, 11);
    assert_int_equal(len, 11);
    assert_memory_equal(body, "hello=world", 11);
    free(body);

    n = snprintf(req, sizeof(req),
                 "POST /postc HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 "Transfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                 port);
    assert_int_equal(h_request(port, req, (size_t)n, false, 0, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    body = h_origin_lastbody(t, "/postc", &len, &full);
    assert_non_null(body);
    assert_int_equal(full, 11);
    assert_memory_equal(body, "hello world", 11);
    free(body);

    /* A larger body, several reads and writes on each side. */
    const size_t big = 300000;
    char *payload = malloc(big);
    assert_non_null(payload);
    for (size_t i = 0; i < big; i++)
        payload[i] = (char)('A' + i % 23);
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, port), 0);
    assert_int_equal(h_conn_sendf(&c,
                                  "PUT /put HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                                  "Content-Length: %zu\r\n\r\n",
                                  port, big),
                     0);
    assert_int_equal(h_conn_send(&c, payload, big), 0);
    assert_int_equal(h_read_response(&c, &r, false, H_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    h_conn_close(&c);
    body = h_origin_lastbody(t, "/put", &len, &full);
    assert_non_null(body);
    assert_int_equal(full, big);
    assert_int_equal(len, big);
    assert_memory_equal(body, payload, big);
    free(body);
    free(payload);
    H_PASS(t);
}

/*
 * The node reuses its upstream transfer handles: each request must still go up as itself, with
 * nothing left over from the one before (method, body, framing), whatever the order.
 */
static void
test_methods_in_turn(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    int port = t->node.port;
    static const struct {
        const char *method, *path, *extra, *body;
    } seq[] = {
        {"POST", "/m1", "Content-Length: 5\r\n", "12345"},
        {"GET", "/m2", "", ""},
        {"HEAD", "/m3", "", ""},
        {"GET", "/m4", "", ""},
        {"PUT", "/m5", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n"},
        {"OPTIONS", "/m6", "", ""},
        {"DELETE", "/m7", "", ""},
        {"GET", "/m8", "", ""},
        {"HEAD", "/m9", "", ""},
        {"POST", "/m10", "Content-Length: 2\r\n", "xy"},
        {"GET", "/m11", "", ""},
    };
    for (size_t i = 0; i < sizeof(seq) / sizeof(seq[0]); i++) {
        char req[512];
        int n = snprintf(req, sizeof(req), "%s %s?cc=no-store HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n%s",
                         seq[i].method, seq[i].path, port, seq[i].extra, seq[i].body);
        struct h_resp r;
        assert_int_equal(
            h_request(port, req, (size_t)n, strcmp(seq[i].method, "HEAD") == 0, 0, &r), 0);
        assert_int_equal(r.status, 200);
        h_resp_free(&r);
        char *head = h_origin_last(t, seq[i].path);
        assert_non_null(head);
        char line[64];
        snprintf(line, sizeof(line), "%s %s?", seq[i].method, seq[i].path);
        if (strncmp(head, line, strlen(line)) != 0)
            fail_msg("request %zu reached the origin as: %.60s", i, head);
        char *cl = h_head_join(head, "Content-Length"), *te = h_head_join(head, "Transfer-Encoding");
        size_t len = 0;
        uint64_t full = 0;
        char *body = h_origin_lastbody(t, seq[i].path, &len, &full);
        if (strcmp(seq[i].method, "POST") == 0) {
            assert_int_equal(full, strlen(seq[i].body));
            assert_memory_equal(body, seq[i].body, full);
        } else if (strcmp(seq[i].method, "PUT") == 0) {
            assert_int_equal(full, 3);
            assert_memory_equal(body, "abc", 3);
        } else {
            /* no body, and no framing that announces one */
            assert_int_equal(full, 0);
            assert_null(te);
            assert_true(cl == NULL || strcmp(cl, "0") == 0);
        }
        free(cl);
        free(te);
        free(body);
        free(head);
    }
    H_PASS(t);
}

/* Proxy variables in the node's environment do not divert its upstream requests. */
static void
test_environment_proxy_ignored(void **state)
{
    struct h_test *t = *state;
    /* port 9 (discard) on loopback: nothing listens, a proxied request would fail */
    setenv("http_proxy", "http://127.0.0.1:9", 1);
    setenv("https_proxy", "http://127.0.0.1:9", 1);
    setenv("ALL_PROXY", "http://127.0.0.1:9", 1);
    start_node(t, NULL);
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("ALL_PROXY");
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/direct?body=ok", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ok");
    h_resp_free(&r);
    assert_int_equal(h_origin_count(t, "/direct"), 1);
    H_PASS(t);
}

static void
test_request_body_limit(void **state)
{
    struct h_test *t = *state;
    char conf[512];
    h_path(t, "limit.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "# request bodies above 1 KiB are refused\n"
                                        "max_request_body = 1k\n"),
                     0);
    start_node(t, H_ARGS("-c", conf));
    int port = t->node.port;
    struct h_resp r;

    char *req = NULL;
    char payload[2048];
    memset(payload, 'x', sizeof(payload));
    int n = asprintf(&req,
                     "POST /big HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %zu\r\n\r\n"
                     "%.*s",
                     port, sizeof(payload), (int)sizeof(payload), payload);
    assert_true(n > 0);
    assert_int_equal(h_request(port, req, (size_t)n, false, 0, &r), 0);
    free(req);
    assert_int_equal(r.status, 413);
    h_resp_free(&r);

    /* Exactly at the limit is fine. */
    n = asprintf(&req,
                 "POST /ok HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 1024\r\n\r\n%.*s",
                 port, 1024, payload);
    assert_int_equal(h_request(port, req, (size_t)n, false, 0, &r), 0);
    free(req);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    assert_int_equal(h_origin_count(t, "/big"), 0);
    assert_int_equal(h_origin_count(t, "/ok"), 1);

    /* The same through chunked framing, where the size is only known while reading. */
    n = asprintf(&req,
                 "POST /bigc HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "400\r\n%.*s\r\n400\r\n%.*s\r\n0\r\n\r\n",
                 port, 1024, payload, 1024, payload);
    assert_true(n > 0);
    int rc = h_request(port, req, (size_t)n, false, 0, &r);
    free(req);
    if (rc != 0)
        fail_msg("chunked body above max_request_body: connection closed without a response "
                 "(expected 413)");
    assert_int_equal(r.status, 413);
    h_resp_free(&r);

    assert_int_equal(h_origin_count(t, "/bigc"), 0);
    H_PASS(t);
}

static void
test_origin_keepalive_reuse(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    h_origin_reset(t);
    struct h_resp r;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(h_get(t->node.port, "/ka?body=k", NULL, &r), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "k");
        h_resp_free(&r);
    }
    /* The same, client side on one connection. */
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(
            h_conn_sendf(&c, "GET /ka?body=k HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", t->node.port),
            0);
        assert_int_equal(h_read_response(&c, &r, false, H_TIMEOUT_MS), 0);
        assert_int_equal(r.status, 200);
        assert_false(r.closed);
        h_resp_free(&r);
    }
    h_conn_close(&c);
    assert_int_equal(h_origin_count(t, "/ka"), 40);
    long conns = h_origin_conns(t);
    assert_true(conns >= 1);
    if (conns > 2)
        fail_msg("40 sequential requests used %ld origin connections (expected 1, at most 2)",
                 conns);
    H_PASS(t);
}

static void
test_status_passthrough(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    static const struct {
        int status;
        const char *body;
    } cases[] = {{201, "created"}, {204, ""},     {404, "not%20here"},
                 {500, "broken"},  {503, "busy"}, {302, "moved"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char path[128];
        snprintf(path, sizeof(path), "/st%d?status=%d&body=%s", cases[i].status, cases[i].status,
                 cases[i].status == 204 ? "" : cases[i].body);
        struct h_resp r;
        assert_int_equal(h_get(t->node.port, path, NULL, &r), 0);
        assert_int_equal(r.status, cases[i].status);
        assert_true(r.complete);
        assert_string_equal(r.body, cases[i].status == 404 ? "not here" : cases[i].body);
        h_resp_free(&r);
    }
    H_PASS(t);
}

static void
test_loop_detected(void **state)
{
    struct h_test *t = *state;
    start_node(t, NULL);
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/loop", "CDN-Loop: testnode\r\n", &r), 0);
    assert_int_equal(r.status, 508);
    h_resp_free(&r);
    assert_int_equal(h_get(t->node.port, "/loop", "CDN-Loop: othercdn, testnode; x=1\r\n", &r), 0);
    assert_int_equal(r.status, 508);
    h_resp_free(&r);
    assert_int_equal(h_origin_count(t, "/loop"), 0);
    /* Another CDN's id is not ours. */
    assert_int_equal(h_get(t->node.port, "/loop", "CDN-Loop: testnode2, othercdn\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_origin_count(t, "/loop"), 1);
    H_PASS(t);
}

static void
test_two_node_loop(void **state)
{
    struct h_test *t = *state;
    struct h_node a = {0}, b = {0};
    a.port = h_free_port();
    b.port = h_free_port();
    char url_a[64], url_b[64];
    snprintf(url_a, sizeof(url_a), "http://127.0.0.1:%d", a.port);
    snprintf(url_b, sizeof(url_b), "http://127.0.0.1:%d", b.port);
    assert_int_equal(h_node_start(t, &a, "nodea", url_b, NULL), 0);
    assert_int_equal(h_node_start(t, &b, "nodeb", url_a, NULL), 0);
    int64_t t0 = h_now_ms();
    struct h_resp r;
    assert_int_equal(h_get(a.port, "/circle", NULL, &r), 0);
    int64_t took = h_now_ms() - t0;
    assert_int_equal(r.status, 508);
    h_resp_free(&r);
    assert_true(took < 4000);
    /* Both still serve. */
    assert_int_equal(h_get(a.port, "/circle", "CDN-Loop: nodea\r\n", &r), 0);
    assert_int_equal(r.status, 508);
    h_resp_free(&r);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_get_and_head, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_request_hop_fields, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_response_hop_fields, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_absolute_form, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_post_bodies, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_methods_in_turn, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_environment_proxy_ignored, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_request_body_limit, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_origin_keepalive_reuse, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_status_passthrough, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_loop_detected, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_two_node_loop, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
