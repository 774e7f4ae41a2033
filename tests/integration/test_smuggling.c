/*
 * Request framing the node must refuse before anything reaches the origin: ambiguous or
 * unsupported body framing, malformed header names, missing or repeated Host, oversized request
 * lines and header blocks. Each refusal answers with an error status and closes the connection,
 * and the node keeps serving afterwards. Also: pipelined requests are answered in order.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct refused {
    const char *name;
    const char *raw; /* "%d" is the node's port (Host) when present */
    int status;
};

static const struct refused refused_cases[] = {
    {"two equal Content-Length",
     "POST /s1 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n"
     "abc",
     400},
    {"two different Content-Length",
     "POST /s2 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"
     "abcd",
     400},
    {"Content-Length with Transfer-Encoding",
     "POST /s3 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 5\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400},
    {"Transfer-Encoding: gzip",
     "POST /s4 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
    {"Transfer-Encoding: chunked twice",
     "POST /s5 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nTransfer-Encoding: chunked\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     400},
    {"space before colon", "GET /s6 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Bad : v\r\n\r\n", 400},
    {"HTTP/1.1 without Host", "GET /s7 HTTP/1.1\r\nAccept: */*\r\n\r\n", 400},
    {"two Host fields", "GET /s8 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nHost: other.test\r\n\r\n", 400},
};

/* Checks one refusal; returns NULL or a malloc'ed description of what went wrong. */
static char *
check_refused(int port, const char *name, const char *raw, size_t len, int status)
{
    struct h_resp r;
    char *msg = NULL;
    if (h_request(port, raw, len, false, 2000, &r) != 0) {
        if (asprintf(&msg, "%s: no response (expected %d)", name, status) < 0)
            msg = NULL;
        return msg;
    }
    int n = 0;
    if (r.status != status)
        n = asprintf(&msg, "%s: status %d (expected %d)", name, r.status, status);
    else if (r.body && strstr(r.body, "HTTP/1."))
        n = asprintf(&msg,
                     "%s: malformed %d response, a second status line inside its body:\n%s\n\n%s",
                     name, status, r.head, r.body);
    else if (!r.closed)
        n = asprintf(&msg, "%s: %d but the connection stayed open", name, status);
    if (n < 0)
        msg = NULL;
    h_resp_free(&r);
    return msg;
}

static void
expect_refused(int port, const char *name, const char *raw, size_t len, int status)
{
    char *msg = check_refused(port, name, raw, len, status);
    if (msg)
        fail_msg("%s", msg);
}

static void
expect_serving(int port)
{
    struct h_resp r;
    assert_int_equal(h_get(port, "/after?body=fine", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "fine");
    h_resp_free(&r);
}

static void
test_ambiguous_requests_refused(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    int port = t->node.port;
    /* Every case runs; the failures are reported together. */
    int failures = 0;
    for (size_t i = 0; i < sizeof(refused_cases) / sizeof(refused_cases[0]); i++) {
        char raw[512];
        int n = snprintf(raw, sizeof(raw), refused_cases[i].raw, port);
        char *msg =
            check_refused(port, refused_cases[i].name, raw, (size_t)n, refused_cases[i].status);
        if (msg) {
            print_error("%s\n", msg);
            free(msg);
            failures++;
        }
        long total = h_origin_total(t);
        if (total != 0)
            fail_msg("%s: the origin received %ld request(s)", refused_cases[i].name, total);
    }
    assert_int_equal(failures, 0);
    expect_serving(port);
    assert_int_equal(h_origin_total(t), 1);
    H_PASS(t);
}

static void
test_oversized_request_line_and_headers(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    int port = t->node.port;

    size_t url_len = 64 * 1024;
    char *raw = malloc(url_len + 256);
    assert_non_null(raw);
    size_t n = (size_t)sprintf(raw, "GET /long?x=");
    memset(raw + n, 'u', url_len);
    n += url_len;
    n += (size_t)sprintf(raw + n, " HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", port);
    expect_refused(port, "64 KiB request target", raw, n, 414);
    free(raw);

    /* 40 KiB of header fields, each of them well formed. */
    raw = malloc(48 * 1024);
    assert_non_null(raw);
    n = (size_t)sprintf(raw, "GET /bighead HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n", port);
    for (int i = 0; i < 40; i++) {
        n += (size_t)sprintf(raw + n, "X-Filler-%02d: ", i);
        memset(raw + n, 'h', 1000);
        n += 1000;
        n += (size_t)sprintf(raw + n, "\r\n");
    }
    n += (size_t)sprintf(raw + n, "\r\n");
    expect_refused(port, "40 KiB of headers", raw, n, 431);
    free(raw);

    assert_int_equal(h_origin_total(t), 0);
    expect_serving(port);
    H_PASS(t);
}

static void
test_pipelined_pair(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    int port = t->node.port;
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, port), 0);
    /* /a answers later than /b would: order must still hold. */
    assert_int_equal(
        h_conn_sendf(&c,
                     "GET /a?body=first&delay_ms=200 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "\r\n"
                     "GET /b?body=second HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                     port, port),
        0);
    struct h_resp r;
    assert_int_equal(h_read_response(&c, &r, false, H_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "first");
    h_resp_free(&r);
    assert_int_equal(h_read_response(&c, &r, false, H_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "second");
    h_resp_free(&r);
    h_conn_close(&c);
    assert_int_equal(h_origin_count(t, "/a"), 1);
    assert_int_equal(h_origin_count(t, "/b"), 1);

    /* A POST with a body followed by a GET on the same write: the body must not be taken for
     * the next request, nor the next request for body. */
    assert_int_equal(h_conn_open(&c, port), 0);
    assert_int_equal(h_conn_sendf(&c,
                                  "POST /pa HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: 4\r\n"
                                  "\r\nwxyz"
                                  "GET /pb?body=next HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                                  port, port),
                     0);
    assert_int_equal(h_read_response(&c, &r, false, H_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    assert_int_equal(h_read_response(&c, &r, false, H_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "next");
    h_resp_free(&r);
    h_conn_close(&c);
    size_t len = 0;
    uint64_t full = 0;
    char *body = h_origin_lastbody(t, "/pa", &len, &full);
    assert_non_null(body);
    assert_int_equal(full, 4);
    assert_memory_equal(body, "wxyz", 4);
    free(body);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_ambiguous_requests_refused, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_oversized_request_line_and_headers, h_setup,
                                        h_teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_pair, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
