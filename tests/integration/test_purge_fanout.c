/*
 * Purge fan-out through real binaries (admin.h, peers.h): a purge accepted by a node with
 * purge_parents and purge_children is applied there, then forwarded to every parent, then to
 * every child, and the JSON answer reports each peer.
 *
 * Real nodes show the effect (objects gone from every tier: the origin is asked again; soft
 * purges counted as soft by the peers' stores; one hop only, read from /metrics). Scripted peers
 * in this process show what is sent and in which order: each records a sequence number when a
 * request arrives and another when it answers, so "children after parents" is a comparison of
 * numbers, never of times. A parent stub can hold its answer until another parent stub has
 * received its request, which a node forwarding to the parents one by one could never satisfy.
 * Failures: a closed port (refused, reported at once), a socket that listens but never answers
 * (reported after purge_peer_timeout) and a peer refusing the token (401). An https:// peer is
 * trusted through purge_peer_ca_file, and refused (token unsent) without it.
 *
 * Every node of a test lives in a static struct h_node, because the teardown stops the processes
 * after the test function has returned.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define AUTH "Authorization: Bearer " H_TOKEN
#define STUB_WAIT_MS 15000 /* bound on every wait of a stub */

static struct h_node nodes[4];

/* ---- nodes ---- */

/* Starts a node with id and origin, and a config file made of `conf` (may be ""). */
static void
start(struct h_test *t, struct h_node *n, const char *id, const char *origin, const char *conf)
{
    char path[600], name[64];
    snprintf(name, sizeof(name), "%s.conf", id);
    h_path(t, name, path, sizeof(path));
    if (h_write_file(path, "%s", conf) != 0)
        fail_msg("cannot write %s", path);
    if (h_node_start(t, n, id, origin, H_ARGS("-c", path)) != 0)
        fail_msg("node %s did not start", id);
}

static void
front_url(const struct h_node *n, char *out, size_t len)
{
    snprintf(out, len, "http://127.0.0.1:%d", n->port);
}

/* One request to an admin listener; fails the test when nothing comes back. */
static void
admin(int port, const char *method, const char *target, const char *extra, struct h_resp *r)
{
    char req[4096];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s%sContent-Length: 0\r\n\r\n", method,
                     target, extra ? extra : "", extra ? "\r\n" : "");
    assert_true(n > 0 && (size_t)n < sizeof(req));
    if (h_request(port, req, (size_t)n, false, 0, r) != 0)
        fail_msg("%s %s: no response from the admin listener on %d", method, target, port);
}

/* POST /purge?query on port with the right token: must be 200 JSON; returns the body
 * (malloc'ed) and the time it took in *ms (if not NULL). */
static char *
purge(int port, const char *query, int64_t *ms)
{
    char target[2048];
    snprintf(target, sizeof(target), "/purge?%s", query);
    struct h_resp r;
    int64_t t0 = h_now_ms();
    admin(port, "POST", target, AUTH, &r);
    if (ms)
        *ms = h_now_ms() - t0;
    const char *ct = h_header(&r, "Content-Type");
    if (r.status != 200 || r.body == NULL || ct == NULL || strcmp(ct, "application/json") != 0)
        fail_msg("POST %s: status %d, body \"%s\"", target, r.status, r.body ? r.body : "(none)");
    char *body = strdup(r.body);
    h_resp_free(&r);
    return body;
}

/* Fails unless body contains want. */
#define EXPECT_IN(body, want)                                                                      \
    do {                                                                                           \
        if (strstr((body), (want)) == NULL)                                                        \
            fail_msg("line %d: answer \"%s\" lacks \"%s\"", __LINE__, (body), (want));             \
    } while (0)

/* The peer object the answer must contain, built from its parts. */
static const char *
peer_json(int admin_port, const char *role, const char *rest)
{
    static char buf[4][512];
    static unsigned turn;
    char *out = buf[turn++ % 4];
    snprintf(out, sizeof(buf[0]), "{\"peer\": \"http://127.0.0.1:%d\", \"role\": \"%s\", %s}",
             admin_port, role, rest);
    return out;
}

/* Value of metric `name` (with its labels, e.g. foo{a="b"}) on an admin listener, or -1. */
static long long
metric(int admin_port, const char *name)
{
    return h_metric(admin_port, name);
}

#define FROM_CLIENT "cdnode_admin_purges_total{from=\"client\"}"
#define FROM_PEER "cdnode_admin_purges_total{from=\"peer\"}"
#define PEER_REQS "cdnode_purge_peer_requests_total"
#define PEER_FAILS "cdnode_purge_peer_failures_total"

#define EXPECT_METRIC(port, name, n)                                                               \
    do {                                                                                           \
        long long got_ = metric((port), (name));                                                   \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: %s on admin %d is %lld (expected %d)", __LINE__, (name), (port),    \
                     got_, (n));                                                                   \
    } while (0)

/* GET target through port; returns every Cache-Status member joined (static buffer) after
 * checking a 200. */
static const char *
get_cs(int port, const char *target)
{
    static char cs[1024];
    struct h_resp r;
    if (h_get(port, target, NULL, &r) != 0)
        fail_msg("GET %s: no response", target);
    if (r.status != 200 || !r.complete)
        fail_msg("GET %s: status %d", target, r.status);
    size_t k = 0;
    cs[0] = '\0';
    for (size_t i = 0; i < r.n_h && k < sizeof(cs); i++)
        if (strcasecmp(r.h[i].name, "Cache-Status") == 0)
            k += (size_t)snprintf(cs + k, sizeof(cs) - k, "%s%s", k ? ", " : "", r.h[i].value);
    h_resp_free(&r);
    return cs;
}

/* Whether a Cache-Status says P, M and C each missed and stored the response. */
static bool
missed_everywhere(const char *cs)
{
    static const char *const want[] = {"fan-p; fwd=uri-miss; fwd-status=200; stored",
                                       "fan-m; fwd=uri-miss; fwd-status=200; stored",
                                       "fan-c; fwd=uri-miss; fwd-status=200; stored"};
    for (size_t i = 0; i < 3; i++)
        if (strstr(cs, want[i]) == NULL)
            return false;
    return true;
}

/* ---- scripted peers ---- */

static atomic_int seq; /* events of every stub, numbered in the order they happen */

struct stub {
    int fd;
    int port;
    pthread_t thread;
    bool started;
    struct stub *hold_for; /* answer only once this stub has received its request */
    atomic_int arrived;    /* seq of the request's arrival, 0 before */
    atomic_int answered;   /* seq of the answer, 0 before */
    char head[4096];       /* the request head, valid once arrived */
};

static struct stub stubs[4];

static int
listen_any(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 8) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        fail_msg("cannot listen on 127.0.0.1");
    *port = ntohs(sa.sin_port);
    return fd;
}

/* Accepts one connection, reads one request head, waits for hold_for if set, answers
 * 200 {"purged": 7}. Every step is bounded by STUB_WAIT_MS. */
static void *
stub_run(void *arg)
{
    struct stub *s = arg;
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    if (poll(&pfd, 1, STUB_WAIT_MS) != 1)
        return NULL;
    int c = accept(s->fd, NULL, NULL);
    if (c < 0)
        return NULL;
    size_t len = 0;
    int64_t deadline = h_now_ms() + STUB_WAIT_MS;
    while (strstr(s->head, "\r\n\r\n") == NULL && len + 1 < sizeof(s->head)) {
        struct pollfd cp = {.fd = c, .events = POLLIN};
        int left = (int)(deadline - h_now_ms());
        if (left <= 0 || poll(&cp, 1, left) != 1)
            break;
        ssize_t n = read(c, s->head + len, sizeof(s->head) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        s->head[len] = '\0';
    }
    atomic_store(&s->arrived, atomic_fetch_add(&seq, 1) + 1);
    while (s->hold_for != NULL && atomic_load(&s->hold_for->arrived) == 0 &&
           h_now_ms() < deadline) {
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    static const char answer[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 14\r\nConnection: close\r\n\r\n"
                                 "{\"purged\": 7}\n";
    atomic_store(&s->answered, atomic_fetch_add(&seq, 1) + 1);
    if (write(c, answer, sizeof(answer) - 1) < 0)
        perror("stub write");
    close(c);
    return NULL;
}

/* Opens the stub's listening socket (kept for every round of a test). */
static void
stub_listen(struct stub *s)
{
    memset(s, 0, sizeof(*s));
    s->fd = listen_any(&s->port);
}

/* Starts a round: the stub takes one request. */
static void
stub_arm(struct stub *s, struct stub *hold_for)
{
    s->hold_for = hold_for;
    atomic_store(&s->arrived, 0);
    atomic_store(&s->answered, 0);
    s->head[0] = '\0';
    if (pthread_create(&s->thread, NULL, stub_run, s) != 0)
        fail_msg("cannot start a stub thread");
    s->started = true;
}

static void
stub_join(struct stub *s)
{
    if (s->started)
        pthread_join(s->thread, NULL);
    s->started = false;
}

/* ---- tests ---- */

/*
 * Origin <- P <- M <- C, every tier caching the same object. A tag purge sent to M empties all
 * three (the next request through C goes to the origin, missing on each tier), and M's answer
 * reports P and C. Then a soft purge: both peers count it as soft.
 */
static void
test_three_tiers(void **state)
{
    struct h_test *t = *state;
    memset(nodes, 0, sizeof(nodes));
    struct h_node *p = &nodes[0], *m = &nodes[1], *c = &nodes[2];
    char url[64], conf[512];
    p->admin_port = h_free_port();
    c->admin_port = h_free_port();
    start(t, p, "fan-p", t->origin_url, "strip_cache_tags = off\n");
    front_url(p, url, sizeof(url));
    snprintf(conf, sizeof(conf),
             "strip_cache_tags = off\npurge_parents = http://127.0.0.1:%d\n"
             "purge_children = http://127.0.0.1:%d/\n",
             p->admin_port, c->admin_port);
    start(t, m, "fan-m", url, conf);
    front_url(m, url, sizeof(url));
    start(t, c, "fan-c", url, "");

    const char *obj = "/fan/a?cc=max-age=600&h=Surrogate-Key:fan-group";
    const char *cs = get_cs(c->port, obj);
    if (!missed_everywhere(cs))
        fail_msg("first GET: Cache-Status \"%s\" (expected a stored miss on every tier)", cs);
    cs = get_cs(c->port, obj);
    if (strstr(cs, "fan-c; hit") == NULL)
        fail_msg("second GET: Cache-Status \"%s\"", cs);
    assert_int_equal(h_origin_count(t, "/fan/a"), 1);

    char *body = purge(m->admin_port, "tag=fan-group", NULL);
    if (strncmp(body, "{\"purged\": 1, \"peers\": [", 24) != 0)
        fail_msg("answer \"%s\"", body);
    EXPECT_IN(body, peer_json(p->admin_port, "parent", "\"status\": 200, \"purged\": 1"));
    EXPECT_IN(body, peer_json(c->admin_port, "child", "\"status\": 200, \"purged\": 1"));
    if (strstr(body, "\"role\": \"parent\"") > strstr(body, "\"role\": \"child\""))
        fail_msg("children listed before parents: \"%s\"", body);
    free(body);

    /* Gone from every tier: one more origin request, a forwarded miss on each node. */
    cs = get_cs(c->port, obj);
    assert_int_equal(h_origin_count(t, "/fan/a"), 2);
    if (!missed_everywhere(cs))
        fail_msg("GET after the purge: Cache-Status \"%s\" (expected a miss on every tier)", cs);

    EXPECT_METRIC(m->admin_port, FROM_CLIENT, 1);
    EXPECT_METRIC(m->admin_port, PEER_REQS, 2);
    EXPECT_METRIC(m->admin_port, PEER_FAILS, 0);
    EXPECT_METRIC(p->admin_port, FROM_PEER, 1);
    EXPECT_METRIC(c->admin_port, FROM_PEER, 1);
    EXPECT_METRIC(p->admin_port, FROM_CLIENT, 0);
    EXPECT_METRIC(c->admin_port, PEER_REQS, 0);

    /* Soft: the peers mark their copy stale instead of deleting it. */
    cs = get_cs(c->port, obj);
    if (strstr(cs, "fan-c; hit") == NULL)
        fail_msg("GET before the soft purge: Cache-Status \"%s\"", cs);
    long long p_soft = metric(p->admin_port, "cdnode_store_soft_purges_total");
    long long c_soft = metric(c->admin_port, "cdnode_store_soft_purges_total");
    long long p_del = metric(p->admin_port, "cdnode_store_deletes_total");
    long long c_del = metric(c->admin_port, "cdnode_store_deletes_total");
    body = purge(m->admin_port, "tag=fan-group&soft=1", NULL);
    EXPECT_IN(body, peer_json(p->admin_port, "parent", "\"status\": 200, \"purged\": 1"));
    EXPECT_IN(body, peer_json(c->admin_port, "child", "\"status\": 200, \"purged\": 1"));
    free(body);
    EXPECT_METRIC(p->admin_port, "cdnode_store_soft_purges_total", (int)p_soft + 1);
    EXPECT_METRIC(c->admin_port, "cdnode_store_soft_purges_total", (int)c_soft + 1);
    EXPECT_METRIC(p->admin_port, "cdnode_store_deletes_total", (int)p_del);
    EXPECT_METRIC(c->admin_port, "cdnode_store_deletes_total", (int)c_del);
    H_PASS(t);
}

/*
 * Scripted peers: two parents and one child. The first parent answers only once the second has
 * its request (so the parents are asked together); the child's request arrives after both
 * parents answered. What they receive: POST /purge with the same parameters, the peer token and
 * the marker. Same for a PURGE request, forwarded as ?url=<absolute URL>.
 */
static void
test_order_and_request(void **state)
{
    struct h_test *t = *state;
    memset(nodes, 0, sizeof(nodes));
    for (int i = 0; i < 3; i++)
        stub_listen(&stubs[i]);
    for (int round = 0; round < 2; round++) {
        atomic_store(&seq, 0);
        stub_arm(&stubs[1], NULL);
        stub_arm(&stubs[0], &stubs[1]);
        stub_arm(&stubs[2], NULL);
        struct h_node *m = &nodes[0];
        if (round == 0) {
            char conf[512];
            snprintf(conf, sizeof(conf),
                     "purge_parents = http://127.0.0.1:%d http://127.0.0.1:%d\n"
                     "purge_children = http://127.0.0.1:%d\n"
                     "purge_peer_token = peer-token-0123456789abcdef\n"
                     "purge_peer_timeout = 10s\n",
                     stubs[0].port, stubs[1].port, stubs[2].port);
            start(t, m, "fan-m", t->origin_url, conf);
        }
        char *body;
        const char *want_line;
        if (round == 0) {
            body = purge(m->admin_port, "tag=a%2Bb%2Fc&soft=1", NULL);
            want_line = "POST /purge?tag=a%2Bb%2Fc&soft=1 HTTP/1.1";
        } else {
            struct h_resp r;
            char req[512];
            int n = snprintf(req, sizeof(req),
                             "PURGE /x/y?q=1 HTTP/1.1\r\nHost: example.com:8080\r\n%s\r\n"
                             "Content-Length: 0\r\n\r\n",
                             AUTH);
            if (h_request(m->admin_port, req, (size_t)n, false, 0, &r) != 0 || r.status != 200)
                fail_msg("PURGE: status %d", r.status);
            body = strdup(r.body);
            h_resp_free(&r);
            want_line = "POST /purge?url=http%3A%2F%2Fexample.com%3A8080%2Fx%2Fy%3Fq%3D1 HTTP/1.1";
        }
        for (int i = 0; i < 3; i++)
            stub_join(&stubs[i]);
        EXPECT_IN(body, peer_json(stubs[0].port, "parent", "\"status\": 200, \"purged\": 7"));
        EXPECT_IN(body, peer_json(stubs[1].port, "parent", "\"status\": 200, \"purged\": 7"));
        EXPECT_IN(body, peer_json(stubs[2].port, "child", "\"status\": 200, \"purged\": 7"));
        free(body);
        for (int i = 0; i < 3; i++) {
            struct stub *s = &stubs[i];
            if (atomic_load(&s->arrived) == 0)
                fail_msg("stub %d got no request", i);
            if (!h_head_has_line(s->head, want_line))
                fail_msg("stub %d got \"%s\" (expected the line \"%s\")", i, s->head, want_line);
            if (!h_head_has_line(s->head, "Authorization: Bearer peer-token-0123456789abcdef") ||
                !h_head_has_line(s->head, "CDN-Purge-Forwarded: fan-m"))
                fail_msg("stub %d: token or marker missing in \"%s\"", i, s->head);
        }
        /* The parents were asked together: parent 0 held its answer until parent 1 had its
         * request. The child was asked after both answered. */
        int a0 = atomic_load(&stubs[0].answered), a1 = atomic_load(&stubs[1].answered);
        int c_arrived = atomic_load(&stubs[2].arrived);
        if (atomic_load(&stubs[1].arrived) > a0)
            fail_msg("parent 1 was asked only after parent 0 answered");
        if (c_arrived < a0 || c_arrived < a1)
            fail_msg("the child was asked (event %d) before the parents answered (%d, %d)",
                     c_arrived, a0, a1);
    }
    for (int i = 0; i < 3; i++)
        close(stubs[i].fd);
    EXPECT_METRIC(nodes[0].admin_port, PEER_REQS, 6);
    EXPECT_METRIC(nodes[0].admin_port, PEER_FAILS, 0);
    H_PASS(t);
}

/*
 * Failing peers: a closed port (refused), a socket that never answers (timeout) and a node that
 * refuses the token (401). The answer is still 200 with every peer's error, it comes after about
 * one timeout, and a refused peer alone is reported at once, not after the timeout.
 */
static void
test_failures(void **state)
{
    struct h_test *t = *state;
    memset(nodes, 0, sizeof(nodes));
    struct h_node *m = &nodes[0], *c = &nodes[1], *m2 = &nodes[2];
    int down = h_free_port(), hang_port;
    int hang = listen_any(&hang_port); /* listens, never accepts: connections sit in the backlog */
    start(t, c, "fan-c", t->origin_url, "");
    char conf[512];
    snprintf(conf, sizeof(conf),
             "purge_parents = http://127.0.0.1:%d http://127.0.0.1:%d\n"
             "purge_children = http://127.0.0.1:%d\n"
             "purge_peer_token = wrong-token-0123456789abcdef\n"
             "purge_peer_timeout = 1s\n",
             down, hang_port, c->admin_port);
    start(t, m, "fan-m", t->origin_url, conf);

    int64_t ms;
    char *body = purge(m->admin_port, "all=1", &ms);
    EXPECT_IN(body, peer_json(down, "parent", "\"error\": \"connection refused\""));
    EXPECT_IN(body, peer_json(hang_port, "parent", "\"error\": \"timeout after 1000 ms\""));
    EXPECT_IN(body, peer_json(c->admin_port, "child", "\"status\": 401, \"error\": \"HTTP 401\""));
    free(body);
    if (ms < 900 || ms > 1000 + 3000)
        fail_msg("the answer took %lld ms (expected about the 1000 ms timeout)", (long long)ms);
    EXPECT_METRIC(m->admin_port, PEER_REQS, 3);
    EXPECT_METRIC(m->admin_port, PEER_FAILS, 3);
    EXPECT_METRIC(c->admin_port, "cdnode_admin_auth_failures_total", 1);
    EXPECT_METRIC(c->admin_port, FROM_PEER, 0);

    /* A refused connection is not waited on: far below a long timeout. */
    snprintf(conf, sizeof(conf), "purge_children = http://127.0.0.1:%d\npurge_peer_timeout = 30s\n",
             down);
    start(t, m2, "fan-m2", t->origin_url, conf);
    body = purge(m2->admin_port, "all=1", &ms);
    EXPECT_IN(body, peer_json(down, "child", "\"error\": \"connection refused\""));
    free(body);
    if (ms > 10000)
        fail_msg("a refused peer took %lld ms to report", (long long)ms);
    close(hang);
    H_PASS(t);
}

/*
 * A lists B as a child, B lists A as a parent. A purge at A reaches B once and does not come
 * back; a purge at B reaches A once and does not go back to B. A purge a client marks as
 * forwarded is applied and not forwarded.
 */
static void
test_one_hop(void **state)
{
    struct h_test *t = *state;
    memset(nodes, 0, sizeof(nodes));
    struct h_node *a = &nodes[0], *b = &nodes[1];
    a->admin_port = h_free_port();
    b->admin_port = h_free_port();
    char conf[256];
    snprintf(conf, sizeof(conf), "purge_children = http://127.0.0.1:%d\n", b->admin_port);
    start(t, a, "fan-a", t->origin_url, conf);
    snprintf(conf, sizeof(conf), "purge_parents = http://127.0.0.1:%d\n", a->admin_port);
    start(t, b, "fan-b", t->origin_url, conf);

    char *body = purge(a->admin_port, "all=1", NULL);
    EXPECT_IN(body, peer_json(b->admin_port, "child", "\"status\": 200, \"purged\": 0"));
    free(body);
    EXPECT_METRIC(a->admin_port, FROM_CLIENT, 1);
    EXPECT_METRIC(a->admin_port, FROM_PEER, 0);
    EXPECT_METRIC(a->admin_port, PEER_REQS, 1);
    EXPECT_METRIC(b->admin_port, FROM_CLIENT, 0);
    EXPECT_METRIC(b->admin_port, FROM_PEER, 1);
    EXPECT_METRIC(b->admin_port, PEER_REQS, 0);

    body = purge(b->admin_port, "prefix=http%3A%2F%2Fexample.com%2F", NULL);
    EXPECT_IN(body, peer_json(a->admin_port, "parent", "\"status\": 200, \"purged\": 0"));
    free(body);
    EXPECT_METRIC(a->admin_port, FROM_PEER, 1);
    EXPECT_METRIC(a->admin_port, PEER_REQS, 1);
    EXPECT_METRIC(b->admin_port, FROM_CLIENT, 1);
    EXPECT_METRIC(b->admin_port, FROM_PEER, 1);
    EXPECT_METRIC(b->admin_port, PEER_REQS, 1);

    /* Marked by the client: applied here only, and answered without "peers". */
    struct h_resp r;
    admin(a->admin_port, "POST", "/purge?all=1", AUTH "\r\nCDN-Purge-Forwarded: elsewhere", &r);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "{\"purged\": 0}\n") != 0)
        fail_msg("marked purge: status %d body \"%s\"", r.status, r.body ? r.body : "(none)");
    h_resp_free(&r);
    EXPECT_METRIC(a->admin_port, FROM_PEER, 2);
    EXPECT_METRIC(a->admin_port, PEER_REQS, 1);
    EXPECT_METRIC(b->admin_port, FROM_PEER, 1);
    H_PASS(t);
}

/*
 * An https:// peer with a self-signed certificate: node B's TLS listener stands in for a TLS
 * terminator in front of a peer, and passes what it receives to the test origin. A with
 * purge_peer_ca_file = that certificate gets an HTTP answer through it, and the origin sees the
 * request with its token. A2 without the file reports the failed verification, and nothing more
 * reaches the origin.
 */
static void
test_https_peer(void **state)
{
    struct h_test *t = *state;
    memset(nodes, 0, sizeof(nodes));
    struct h_node *a = &nodes[0], *b = &nodes[1], *a2 = &nodes[2];
    char cert[512], key[512], conf[1400], want[256];
    assert_int_equal(h_make_cert(t, "peer", cert, key, sizeof(cert)), 0);
    int tls_port = h_free_port();
    snprintf(conf, sizeof(conf), "listen_tls = 127.0.0.1:%d\ntls_cert = %s\ntls_key = %s\n",
             tls_port, cert, key);
    start(t, b, "fan-tls", t->origin_url, conf);
    if (!h_wait_port(tls_port, H_TIMEOUT_MS))
        fail_msg("B's TLS listener on %d does not accept", tls_port);

    snprintf(conf, sizeof(conf), "purge_children = https://127.0.0.1:%d\npurge_peer_ca_file = %s\n",
             tls_port, cert);
    start(t, a, "fan-ca", t->origin_url, conf);
    char *body = purge(a->admin_port, "all=1", NULL);
    snprintf(want, sizeof(want),
             "{\"peer\": \"https://127.0.0.1:%d\", \"role\": \"child\", \"status\": ", tls_port);
    EXPECT_IN(body, want);
    free(body);
    char *head = h_origin_last(t, "/purge");
    if (head == NULL || strstr(head, AUTH) == NULL)
        fail_msg("the origin behind the https peer saw %s", head ? head : "no /purge request");
    free(head);
    long seen = h_origin_count(t, "/purge");

    snprintf(conf, sizeof(conf), "purge_children = https://127.0.0.1:%d\n", tls_port);
    start(t, a2, "fan-noca", t->origin_url, conf);
    body = purge(a2->admin_port, "all=1", NULL);
    snprintf(want, sizeof(want),
             "{\"peer\": \"https://127.0.0.1:%d\", \"role\": \"child\", \"error\": \"SSL peer "
             "certificate",
             tls_port);
    EXPECT_IN(body, want);
    free(body);
    if (h_origin_count(t, "/purge") != seen)
        fail_msg("a purge reached the origin through a peer whose certificate was not trusted");
    EXPECT_METRIC(a2->admin_port, PEER_FAILS, 1);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_three_tiers, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_order_and_request, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_failures, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_one_hop, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_https_peer, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
