/*
 * Unit tests for purge fan-out (peers.h): what is forwarded (queries), how a peer's answer is
 * read, and the fan-out engine against local sockets: a refused port, a socket that never
 * answers (the timeout), no peers, and stopping with a fan-out in flight.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/peers.h"

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void
test_query(void **state)
{
    struct cdn_arena *a = cdn_arena_new(256);
    const char *names[] = {"url", "soft"};
    const char *values[] = {"http://Example.com/a b?x=1&y=+~", "1"};
    assert_string_equal(cdn_peers_query(names, values, 2, a),
                        "url=http%3A%2F%2FExample.com%2Fa%20b%3Fx%3D1%26y%3D%2B~&soft=1");
    const char *n1[] = {"all"}, *v1[] = {NULL};
    assert_string_equal(cdn_peers_query(n1, v1, 1, a), "all");
    const char *n2[] = {"tag"}, *v2[] = {""};
    assert_string_equal(cdn_peers_query(n2, v2, 1, a), "tag=");
    assert_string_equal(cdn_peers_query(NULL, NULL, 0, a), "");
    const char *n3[] = {"tag"}, *v3[] = {"\xc3\xa9t\xc3\xa9-A.z_0"};
    assert_string_equal(cdn_peers_query(n3, v3, 1, a), "tag=%C3%A9t%C3%A9-A.z_0");
    cdn_arena_free(a);
}

static void
test_url_query(void **state)
{
    struct cdn_arena *a = cdn_arena_new(256);
    assert_string_equal(cdn_peers_url_query("example.com:8080", "/x/y?q=1", a),
                        "url=http%3A%2F%2Fexample.com%3A8080%2Fx%2Fy%3Fq%3D1");
    assert_string_equal(cdn_peers_url_query("example.com", "/", a),
                        "url=http%3A%2F%2Fexample.com%2F");
    /* Absolute-form: the target is the URL, whatever Host says. */
    assert_string_equal(cdn_peers_url_query("ignored", "https://a.example/p%20q", a),
                        "url=https%3A%2F%2Fa.example%2Fp%2520q");
    assert_string_equal(cdn_peers_url_query(NULL, "https://a.example/", a),
                        "url=https%3A%2F%2Fa.example%2F");
    assert_null(cdn_peers_url_query(NULL, "/x", a));
    assert_null(cdn_peers_url_query("", "/x", a));
    assert_null(cdn_peers_url_query("h", NULL, a));
    cdn_arena_free(a);
}

static void
test_read_answer(void **state)
{
    static const struct {
        long status;
        const char *body;
        int rc;
        long purged;
        const char *error;
    } rows[] = {
        {200, "{\"purged\": 3}\n", 0, 3, ""},
        {200, "{\"purged\":0}", 0, 0, ""},
        {200, "{\"purged\": 12, \"peers\": []}\n", 0, 12, ""},
        {200, "{\"purged\": 12", CDN_EPROTO, -1, "HTTP 200 without a purge count"},
        {200, "{\"purged\": -1}", CDN_EPROTO, -1, "HTTP 200 without a purge count"},
        {200, "{\"purged\": \"3\"}", CDN_EPROTO, -1, "HTTP 200 without a purge count"},
        {200, "purged: 3", CDN_EPROTO, -1, "HTTP 200 without a purge count"},
        {200, "", CDN_EPROTO, -1, "HTTP 200 without a purge count"},
        {401, "401 Unauthorized\n", CDN_EPROTO, -1, "HTTP 401"},
        {400, "{\"error\": \"unknown parameter\"}\n", CDN_EPROTO, -1,
         "HTTP 400: unknown parameter"},
        {400, "{\"error\": \"a \\\"quoted\\\" word\"}", CDN_EPROTO, -1, "HTTP 400"},
        {500, "{\"error\": \"unterminated", CDN_EPROTO, -1, "HTTP 500"},
        {503, "{\"error\": \"stopping\"}", CDN_EPROTO, -1, "HTTP 503: stopping"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_peer_result r;
        memset(&r, 0x55, sizeof(r));
        int rc = cdn_peers_read_answer(rows[i].status, rows[i].body, strlen(rows[i].body), &r);
        if (rc != rows[i].rc || r.purged != rows[i].purged || r.status != rows[i].status ||
            strcmp(r.error, rows[i].error) != 0)
            fail_msg("row %zu: rc %d purged %ld status %d error \"%s\"", i, rc, r.purged, r.status,
                     r.error);
    }
    /* A long error text is cut to fit, still terminated. */
    char body[400];
    memset(body, 'x', sizeof(body));
    memcpy(body, "{\"error\": \"", 11);
    memcpy(body + sizeof(body) - 2, "\"}", 2);
    struct cdn_peer_result r;
    assert_int_equal(cdn_peers_read_answer(502, body, sizeof(body), &r), CDN_EPROTO);
    assert_true(strncmp(r.error, "HTTP 502: xxx", 13) == 0);
    assert_true(strlen(r.error) < sizeof(r.error));
}

/* ---- the engine ---- */

struct done_rec {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    struct cdn_peer_result res[4];
    size_t n;
};

static void
on_done(void *arg, const struct cdn_peer_result *res, size_t n)
{
    struct done_rec *d = arg;
    pthread_mutex_lock(&d->mu);
    assert_true(n <= 4);
    memcpy(d->res, res, n * sizeof(*res));
    for (size_t i = 0; i < n; i++)
        d->res[i].url = NULL; /* res[i].url dies with the fan-out */
    d->n = n;
    d->done = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static void
rec_init(struct done_rec *d)
{
    memset(d, 0, sizeof(*d));
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
}

/* Waits at most 20 s for done. */
static bool
rec_wait(struct done_rec *d)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 20;
    pthread_mutex_lock(&d->mu);
    while (!d->done && pthread_cond_timedwait(&d->cv, &d->mu, &dl) == 0)
        ;
    bool done = d->done;
    pthread_mutex_unlock(&d->mu);
    return done;
}

static int
listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A port nothing listens on (bound, never listened: connecting is refused). */
static int
closed_port(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void
test_forward_failures(void **state)
{
    struct cdn_peers *p = cdn_peers_start();
    assert_non_null(p);
    int refused_port, hang_port;
    int refused = closed_port(&refused_port), hang = listener(&hang_port);
    char u1[64], u2[64];
    snprintf(u1, sizeof(u1), "http://127.0.0.1:%d", refused_port);
    snprintf(u2, sizeof(u2), "http://127.0.0.1:%d", hang_port);
    const char *parents[] = {u1}, *children[] = {u2};
    struct cdn_peers_job job = {.parents = parents,
                                .n_parents = 1,
                                .children = children,
                                .n_children = 1,
                                .query = "all=1",
                                .token = "t0123456789abcdef",
                                .origin = "unit",
                                .timeout_ms = 300};
    struct done_rec d;
    rec_init(&d);
    int64_t t0 = cdn_now_ms();
    cdn_peers_forward(p, &job, on_done, &d);
    assert_true(rec_wait(&d));
    int64_t took = cdn_now_ms() - t0;
    assert_int_equal(d.n, 2);
    assert_int_equal(d.res[0].role, CDN_PEER_PARENT);
    assert_int_equal(d.res[0].status, 0);
    assert_string_equal(d.res[0].error, "connection refused");
    assert_int_equal(d.res[1].role, CDN_PEER_CHILD);
    assert_string_equal(d.res[1].error, "timeout after 300 ms");
    assert_int_equal(d.res[1].purged, -1);
    if (took < 250 || took > 300 + 3000)
        fail_msg("the fan-out took %lld ms", (long long)took);
    struct cdn_peers_stats st;
    cdn_peers_stats(p, &st);
    assert_int_equal(st.forwarded, 2);
    assert_int_equal(st.failures, 2);

    /* No peers: done before forward returns. */
    struct done_rec d0;
    rec_init(&d0);
    struct cdn_peers_job none = {.query = "all=1", .origin = "unit", .timeout_ms = 300};
    cdn_peers_forward(p, &none, on_done, &d0);
    assert_true(d0.done);
    assert_int_equal(d0.n, 0);

    /* Stopping with a fan-out waiting on a silent peer: it ends at once, and later ones too. */
    struct done_rec d1;
    rec_init(&d1);
    job.timeout_ms = 60000;
    job.parents = children; /* the silent one first: the children are never reached */
    job.children = parents;
    cdn_peers_forward(p, &job, on_done, &d1);
    struct pollfd pfd = {.fd = hang, .events = POLLIN};
    /* Two connections in the backlog: the one of the first fan-out and this one. Drain one,
     * then wait for the next, so the request is surely on the wire. */
    int c1 = poll(&pfd, 1, 10000) == 1 ? accept(hang, NULL, NULL) : -1;
    assert_true(c1 >= 0);
    close(c1);
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    t0 = cdn_now_ms();
    cdn_peers_stop(p);
    assert_true(rec_wait(&d1));
    assert_true(cdn_now_ms() - t0 < 10000);
    assert_int_equal(d1.n, 2);
    assert_string_equal(d1.res[0].error, "node stopping");
    assert_string_equal(d1.res[1].error, "node stopping");
    struct done_rec d2;
    rec_init(&d2);
    cdn_peers_forward(p, &job, on_done, &d2);
    assert_true(d2.done);
    assert_string_equal(d2.res[0].error, "node stopping");
    cdn_peers_free(p);
    close(refused);
    close(hang);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_query),
        cmocka_unit_test(test_url_query),
        cmocka_unit_test(test_read_answer),
        cmocka_unit_test(test_forward_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
