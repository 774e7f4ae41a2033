/*
 * Abusive clients seen from outside the node: slow request heads (request_head_timeout),
 * connections beyond connection_limit (plain and TLS), a body far over max_request_body, request
 * heads that would leave no room in a connection's memory for the response, and a long pipeline
 * on one connection.
 *
 * Each test writes its options to a config file passed with -c. Every loop is bounded by a count
 * and a deadline; waits poll what the test can observe (readability of sockets, responses).
 * Timings are printed with an "abuse:" prefix and asserted only as generous bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/*
 * Whether fd is readable now (poll with timeout 0): then reads what is there. Returns 1 when the
 * peer closed or reset the connection, 0 when it is still open (bytes read meanwhile go to *got).
 */
static int
peer_gone(int fd, size_t *got)
{
    char buf[4096];
    for (int i = 0; i < 64; i++) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            return 0;
        ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 1;
        if (r < 0)
            return 0;
        *got += (size_t)r;
    }
    return 0;
}

/* A GET on a new connection; its duration in ms, or fails the test on anything but 200 body. */
static int64_t
timed_get(struct h_test *t, const char *target, const char *body)
{
    struct h_resp r;
    int64_t t0 = h_now_ms();
    if (h_get(t->node.port, target, NULL, &r) != 0)
        fail_msg("GET %s: no response", target);
    int64_t ms = h_now_ms() - t0;
    if (r.status != 200 || r.body == NULL || strcmp(r.body, body) != 0)
        fail_msg("GET %s: status %d, body \"%s\" (expected 200 \"%s\")", target, r.status,
                 r.body ? r.body : "(none)", body);
    h_resp_free(&r);
    return ms;
}

/*
 * Polls the metric `name` until it equals want, for at most timeout_ms. Returns the last value
 * read (-1: none).
 */
static long long
wait_metric(struct h_test *t, const char *name, long long want, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    long long v = -1;
    for (int k = 0; k < 10000; k++) {
        v = h_metric(t->node.admin_port, name);
        if (v == want || h_now_ms() >= deadline)
            break;
        h_nap_ms(20);
    }
    return v;
}

#define N_SLOW 20
#define SLOW_TICK_MS 500
#define SLOW_SEND_MS 10000

/*
 * request_head_timeout = 2: 20 connections each trickle a request head one byte every 500 ms.
 * The bytes do not keep them open (connection_timeout would: it is an idle timeout): the node
 * closes each about 2 s after it opened, without answering the partial head; every one must be
 * closed no sooner than 1.5 s and no later than 10 s after it opened. Meanwhile normal clients
 * are served promptly, and cdnode_connections_head_timeouts_total counts exactly the slow
 * connections.
 */
static void
test_slowloris(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "abusenode", "slow.conf", "request_head_timeout = 2\n");
    timed_get(t, "/fast?cc=max-age=60&body=fast", "fast"); /* stored before the trickle */

    static const char head[] = "GET /slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    struct h_conn c[N_SLOW];
    size_t sent[N_SLOW] = {0}, got[N_SLOW] = {0};
    int64_t opened_at[N_SLOW], closed_at[N_SLOW];
    for (int i = 0; i < N_SLOW; i++) {
        if (h_conn_open(&c[i], t->node.port) != 0)
            fail_msg("slow connection %d: connect failed", i);
        opened_at[i] = h_now_ms();
        closed_at[i] = 0;
    }

    int64_t t0 = h_now_ms(), worst_get = 0;
    int n_gets = 0, open = N_SLOW;
    /* Trickle one byte per open connection per tick until all are closed or SLOW_SEND_MS passed;
     * a normal GET on every tick while slow connections are open. */
    for (int tick = 0; tick < SLOW_SEND_MS / SLOW_TICK_MS && open > 0; tick++) {
        int64_t tick_at = t0 + (int64_t)tick * SLOW_TICK_MS;
        for (int k = 0; k < 1000 && h_now_ms() < tick_at; k++)
            h_nap_ms(10);
        open = 0;
        for (int i = 0; i < N_SLOW; i++) {
            if (closed_at[i] != 0)
                continue;
            if (peer_gone(c[i].fd, &got[i])) {
                closed_at[i] = h_now_ms();
                continue;
            }
            char b = sent[i] < sizeof(head) - 1 ? head[sent[i]] : 'a';
            if (send(c[i].fd, &b, 1, MSG_NOSIGNAL) == 1) {
                sent[i]++;
                open++;
            } else {
                closed_at[i] = h_now_ms();
            }
        }
        if (open > 0) {
            int64_t ms = timed_get(t, "/fast?cc=max-age=60&body=fast", "fast");
            worst_get = ms > worst_get ? ms : worst_get;
            n_gets++;
        }
    }
    for (int i = 0; i < N_SLOW; i++)
        if (closed_at[i] == 0 && peer_gone(c[i].fd, &got[i]))
            closed_at[i] = h_now_ms();

    int64_t min_ms = INT64_MAX, max_ms = 0;
    size_t max_sent = 0;
    open = 0;
    for (int i = 0; i < N_SLOW; i++) {
        if (closed_at[i] == 0) {
            open++;
            continue;
        }
        int64_t d = closed_at[i] - opened_at[i];
        min_ms = d < min_ms ? d : min_ms;
        max_ms = d > max_ms ? d : max_ms;
        max_sent = sent[i] > max_sent ? sent[i] : max_sent;
    }
    long long timeouts = wait_metric(t, "cdnode_connections_head_timeouts_total", N_SLOW, 2000);
    long long still = wait_metric(t, "cdnode_connections_open", 0, 5000);
    printf("abuse: slowloris: %d connections closed %lld..%lld ms after opening (at most %zu "
           "bytes sent), %d still open; %d normal GETs meanwhile, slowest %lld ms; head timeouts "
           "counted %lld, connections open after %lld\n",
           N_SLOW, (long long)min_ms, (long long)max_ms, max_sent, open, n_gets,
           (long long)worst_get, timeouts, still);
    for (int i = 0; i < N_SLOW; i++) {
        if (got[i] != 0)
            fail_msg("slow connection %d received %zu bytes (a partial head must get no answer)", i,
                     got[i]);
        if (closed_at[i] == 0)
            fail_msg("slow connection %d was still open %d ms after it opened (expected closed "
                     "about 2000 ms after)",
                     i, SLOW_SEND_MS);
        int64_t d = closed_at[i] - opened_at[i];
        if (d < 1500 || d > 10000)
            fail_msg("slow connection %d was closed %lld ms after it opened (expected about 2000, "
                     "between 1500 and 10000)",
                     i, (long long)d);
    }
    if (n_gets == 0)
        fail_msg("no normal GET was made while slow connections were open");
    if (worst_get >= 2000)
        fail_msg("a normal GET took %lld ms while slow connections were open (expected < 2000)",
                 (long long)worst_get);
    if (timeouts != N_SLOW)
        fail_msg("cdnode_connections_head_timeouts_total is %lld (expected %d)", timeouts, N_SLOW);
    if (still != 0)
        fail_msg("cdnode_connections_open is %lld after every connection closed", still);
    for (int i = 0; i < N_SLOW; i++)
        h_conn_close(&c[i]);
    H_PASS(t);
}

#define N_LIMIT 20

/*
 * connection_limit = 20 (request_head_timeout = 60, so nothing times out here): 20 idle
 * connections fill it; one more, which sends a GET at once, gets a 503 with Retry-After or is
 * closed within 5 s, never left waiting in the listen queue. After 5 idle connections close, a
 * new client is served. /metrics counts one refused connection and no head timeout.
 */
static void
test_connection_limit(void **state)
{
    struct h_test *t = *state;
    char text[128];
    snprintf(text, sizeof(text), "connection_limit = %d\nrequest_head_timeout = 60\n", N_LIMIT);
    h_node_start_conf(t, "abusenode", "limit.conf", text);
    struct h_conn idle[N_LIMIT];
    for (int i = 0; i < N_LIMIT; i++)
        if (h_conn_open(&idle[i], t->node.port) != 0)
            fail_msg("idle connection %d: connect failed", i);
    long long open = wait_metric(t, "cdnode_connections_open", N_LIMIT, H_TIMEOUT_MS);
    if (open != N_LIMIT)
        fail_msg("cdnode_connections_open is %lld with %d idle connections", open, N_LIMIT);

    struct h_conn extra;
    if (h_conn_open(&extra, t->node.port) != 0)
        fail_msg("connection %d: connect failed (the node should accept, then answer)", N_LIMIT + 1);
    int64_t t0 = h_now_ms();
    /* The node may have closed it already: a failed send still leaves its answer readable. */
    (void)h_conn_sendf(&extra, "GET /over?body=over HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    struct h_resp r = {0};
    bool answered = h_read_response(&extra, &r, false, 5000) == 0;
    int left = (int)(t0 + 5000 - h_now_ms());
    bool closed = extra.eof || h_conn_wait_closed(&extra, left > 0 ? left : 1);
    int64_t ms = h_now_ms() - t0;
    printf("abuse: connection_limit: connection %d %s%d in %lld ms, %s\n", N_LIMIT + 1,
           answered ? "answered " : "not answered ", answered ? r.status : 0, (long long)ms,
           closed ? "then closed" : "left open");
    if (answered && (r.status != 503 || h_header(&r, "Retry-After") == NULL))
        fail_msg("connection over connection_limit: status %d, Retry-After %s (expected 503 with "
                 "Retry-After, or a close)",
                 r.status, h_header(&r, "Retry-After") ? "present" : "absent");
    if (!closed || ms > 5000)
        fail_msg("connection over connection_limit still open after %lld ms (expected an answer "
                 "and a close within 5000 ms)",
                 (long long)ms);
    h_resp_free(&r);
    h_conn_close(&extra);

    for (int i = 0; i < 5; i++)
        h_conn_close(&idle[i]);
    open = wait_metric(t, "cdnode_connections_open", N_LIMIT - 5, H_TIMEOUT_MS);
    if (open != N_LIMIT - 5)
        fail_msg("cdnode_connections_open is %lld after 5 of %d closed", open, N_LIMIT);
    int64_t get_ms = timed_get(t, "/after?body=after", "after");
    long long refused = h_metric(t->node.admin_port, "cdnode_connections_refused_total");
    long long timeouts = h_metric(t->node.admin_port, "cdnode_connections_head_timeouts_total");
    printf("abuse: connection_limit: GET after 5 closed took %lld ms; refused %lld, head "
           "timeouts %lld\n",
           (long long)get_ms, refused, timeouts);
    if (refused != 1)
        fail_msg("cdnode_connections_refused_total is %lld (expected 1)", refused);
    if (timeouts != 0)
        fail_msg("cdnode_connections_head_timeouts_total is %lld (expected 0)", timeouts);
    for (int i = 5; i < N_LIMIT; i++)
        h_conn_close(&idle[i]);
    H_PASS(t);
}

/*
 * The TLS listener under the same rules, with connection_limit = 2 and request_head_timeout = 2
 * for both listeners together: with 2 idle plain connections open, a TCP connection to the TLS
 * port is closed within 5 s (nothing can be written in the clear there); once the idle ones timed
 * out, a TLS connection that never starts its handshake is closed 1.5 to 10 s after opening, and
 * an HTTPS client is served.
 */
static void
test_tls_limits(void **state)
{
    struct h_test *t = *state;
    char cert[512], key[512], text[1400];
    assert_int_equal(h_make_cert(t, "front", cert, key, sizeof(cert)), 0);
    int tls_port = h_free_port();
    snprintf(text, sizeof(text),
             "connection_limit = 2\nrequest_head_timeout = 2\nlisten_tls = 127.0.0.1:%d\n"
             "tls_cert = %s\ntls_key = %s\n",
             tls_port, cert, key);
    /* Both listeners listen before the admin one answers /healthz: no probe connection here,
     * it could still take one of the two places when the idle connections arrive. */
    h_node_start_conf(t, "abusenode", "tls.conf", text);

    struct h_conn idle[2], tc;
    for (int i = 0; i < 2; i++)
        assert_int_equal(h_conn_open(&idle[i], t->node.port), 0);
    long long open = wait_metric(t, "cdnode_connections_open", 2, H_TIMEOUT_MS);
    if (open != 2)
        fail_msg("cdnode_connections_open is %lld with 2 idle connections", open);
    assert_int_equal(h_conn_open(&tc, tls_port), 0);
    int64_t t0 = h_now_ms();
    bool closed = h_conn_wait_closed(&tc, 5000);
    int64_t refused_ms = h_now_ms() - t0;
    h_conn_close(&tc);
    if (!closed)
        fail_msg("a TLS connection over connection_limit was still open after 5000 ms");

    /* The idle plain connections run out of time; then the limit has room again. */
    for (int i = 0; i < 2; i++) {
        if (!h_conn_wait_closed(&idle[i], 10000))
            fail_msg("idle plain connection %d still open 10 s after opening", i);
        h_conn_close(&idle[i]);
    }
    wait_metric(t, "cdnode_connections_open", 0, H_TIMEOUT_MS);
    assert_int_equal(h_conn_open(&tc, tls_port), 0);
    t0 = h_now_ms();
    closed = h_conn_wait_closed(&tc, 10000);
    int64_t idle_ms = h_now_ms() - t0;
    h_conn_close(&tc);

    char url[128], out[512], log[512];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/tls?body=secure", tls_port);
    h_path(t, "curl.body", out, sizeof(out));
    h_path(t, "curl.log", log, sizeof(log));
    char *argv[] = {"curl", "-sS", "--noproxy", "*", "--max-time", "10", "--cacert", cert,
                    "-o",   out,   url,         NULL};
    int rc = h_run(argv, log, NULL, 15000);
    char *body = h_read_file(out, NULL);
    long long refused = h_metric(t->node.admin_port, "cdnode_connections_refused_total");
    long long timeouts = h_metric(t->node.admin_port, "cdnode_connections_head_timeouts_total");
    printf("abuse: tls: over the limit closed after %lld ms; silent TLS connection closed after "
           "%lld ms; curl exit %d; refused %lld, head timeouts %lld\n",
           (long long)refused_ms, (long long)idle_ms, rc, refused, timeouts);
    if (!closed || idle_ms < 1500)
        fail_msg("a TLS connection without a handshake was %s after %lld ms (expected closed "
                 "between 1500 and 10000 ms)",
                 closed ? "closed" : "still open", (long long)idle_ms);
    if (rc != 0 || body == NULL || strcmp(body, "secure") != 0)
        fail_msg("HTTPS GET: curl exit %d, body \"%s\"", rc, body ? body : "(none)");
    free(body);
    if (refused != 1)
        fail_msg("cdnode_connections_refused_total is %lld (expected 1)", refused);
    if (timeouts != 3)
        fail_msg("cdnode_connections_head_timeouts_total is %lld (expected 3: two plain, one "
                 "TLS)",
                 timeouts);
    H_PASS(t);
}

/*
 * max_request_body = 1k: a head with Content-Length: 100000000, then body bytes as fast as the
 * node takes them. The node answers 413 and closes long before 100 MB arrive; the whole exchange
 * takes under 3 s.
 */
static void
test_body_limit(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "abusenode", "body.conf", "max_request_body = 1k\n");
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    int64_t t0 = h_now_ms();
    if (h_conn_sendf(&c, "POST /big HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n"
                         "Content-Type: application/octet-stream\r\n\r\n") != 0)
        fail_msg("the node closed the connection before the request head was sent");

    static char chunk[16384];
    memset(chunk, 'b', sizeof(chunk));
    uint64_t body_sent = 0;
    struct h_resp r = {0};
    bool have = false, closed = false;
    int64_t deadline = t0 + 3000;
    for (int k = 0; k < 1000000 && h_now_ms() < deadline && !closed; k++) {
        struct pollfd p = {.fd = c.fd, .events = POLLIN | (have ? 0 : POLLOUT)};
        if (poll(&p, 1, 50) <= 0)
            continue;
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            int left = (int)(deadline - h_now_ms());
            left = left > 0 ? left : 1;
            if (!have)
                have = h_read_response(&c, &r, false, left) == 0;
            closed = have ? h_conn_wait_closed(&c, left) : c.eof;
            continue;
        }
        if (!have && (p.revents & POLLOUT)) {
            ssize_t w = send(c.fd, chunk, sizeof(chunk), MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                body_sent += (uint64_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                closed = true; /* reset: any response already received stays readable */
        }
    }
    if (!have && closed && h_read_response(&c, &r, false, 100) == 0)
        have = true;
    if (have && !closed)
        closed = h_conn_wait_closed(&c, 100);
    int64_t ms = h_now_ms() - t0;
    printf("abuse: max_request_body: %llu body bytes sent; %s %d after %lld ms; connection %s\n",
           (unsigned long long)body_sent, have ? "answered" : "no answer", have ? r.status : 0,
           (long long)ms, closed ? "closed" : "still open");
    if (!have)
        fail_msg("no response to a 100 MB body over max_request_body = 1k (%llu bytes sent)",
                 (unsigned long long)body_sent);
    if (r.status != 413)
        fail_msg("status %d for a body over max_request_body (expected 413)", r.status);
    if (!closed)
        fail_msg("the node kept the connection open after its 413 (%lld ms)", (long long)ms);
    if (ms >= 3000)
        fail_msg("the exchange took %lld ms (expected < 3000)", (long long)ms);
    if (body_sent >= 100000000ull)
        fail_msg("the whole body was sent before the node answered");
    h_resp_free(&r);
    h_conn_close(&c);
    H_PASS(t);
}

#define BIG_FIELD 1800 /* three origin fields of this many bytes: about 5.5k of 6k */
#define BIG_TARGET (3 * BIG_FIELD + 256)

/* path (with its query) and three h= parameters asking testorigin for fields X-Big-0..2 of
 * BIG_FIELD bytes each, into out (BIG_TARGET bytes). */
static void
big_target(char *out, const char *path)
{
    int n = snprintf(out, BIG_TARGET, "%s", path);
    for (int k = 0; k < 3; k++) {
        n += snprintf(out + n, BIG_TARGET - (size_t)n, "&h=X-Big-%d:", k);
        if ((size_t)n + BIG_FIELD >= BIG_TARGET)
            fail_msg("target for %s does not fit", path);
        memset(out + n, 'a' + k, BIG_FIELD);
        n += BIG_FIELD;
        out[n] = '\0';
    }
}

/*
 * connection_memory = 16k, max_origin_headers = 6k: a request's head may take 16384 - 6144 - 1024
 * = 9216 bytes of the front end's pool. GETs of one object whose response carries 5.5k of origin
 * fields, with a Cookie growing from 1,000 to 3,000 bytes in steps of 100 (a cookie takes twice
 * its size there): each is answered, with 200 and every origin field while the head fits, and
 * with 431 and a closed connection past it; never a connection closed without a response (what
 * happens when the response's header block no longer fits the pool). Both answers occur. The
 * origin sees one request: a refused head is not forwarded.
 */
static void
test_head_memory(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "abusenode", "head.conf",
                      "connection_memory = 16k\nmax_origin_headers = 6k\n");
    static char target[BIG_TARGET], cookie[3100];
    big_target(target, "/hm?cc=max-age=60&body=ok");
    int ok = 0, refused = 0;
    for (int size = 1000; size <= 3000; size += 100) {
        memset(cookie, 'c', (size_t)size);
        cookie[size] = '\0';
        char *req = NULL;
        if (asprintf(&req, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: k=%s\r\n\r\n", target,
                     cookie) < 0)
            fail_msg("out of memory");
        struct h_resp r;
        int rc = h_request(t->node.port, req, strlen(req), false, 0, &r);
        free(req);
        if (rc != 0)
            fail_msg("cookie of %d bytes: the connection closed without a response", size);
        if (r.status == 200) {
            if (refused > 0)
                fail_msg("cookie of %d bytes: 200 after a smaller one got 431", size);
            for (int k = 0; k < 3; k++) {
                char name[16];
                snprintf(name, sizeof(name), "X-Big-%d", k);
                const char *v = h_header(&r, name);
                if (v == NULL || strlen(v) != BIG_FIELD)
                    fail_msg("cookie of %d bytes: %s %s", size, name, v ? "cut short" : "missing");
            }
            ok++;
        } else if (r.status == 431) {
            refused++;
        } else {
            fail_msg("cookie of %d bytes: status %d (expected 200 or 431)", size, r.status);
        }
        h_resp_free(&r);
    }
    printf("abuse: head memory: %d answered 200, %d refused with 431\n", ok, refused);
    if (ok == 0 || refused == 0)
        fail_msg("expected both answers over the sweep: %d 200, %d 431", ok, refused);
    assert_int_equal(h_origin_count(t, "/hm"), 1);

    /* Many small fields take the pool too: 200 of them (64 bytes of bookkeeping each). */
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    if (h_conn_sendf(&c, "GET /hm2?body=x HTTP/1.1\r\nHost: 127.0.0.1\r\n") != 0)
        fail_msg("send failed");
    for (int i = 0; i < 200; i++)
        if (h_conn_sendf(&c, "X-F%d: v\r\n", i) != 0)
            fail_msg("send failed at field %d", i);
    struct h_resp r;
    if (h_conn_sendf(&c, "\r\n") != 0 || h_read_response(&c, &r, false, 5000) != 0)
        fail_msg("200 fields: no response");
    if (r.status != 431)
        fail_msg("200 fields: status %d (expected 431)", r.status);
    if (!h_conn_wait_closed(&c, 2000))
        fail_msg("200 fields: the connection stayed open after the 431");
    h_resp_free(&r);
    h_conn_close(&c);
    assert_int_equal(h_origin_count(t, "/hm2"), 0);
    H_PASS(t);
}

/*
 * A stored header block larger than max_origin_headers (stored under a larger one; a 304's fields
 * merged into it do the same): an object with 5.5k of origin fields is stored with
 * max_origin_headers = 6k, and the node restarted on the same store with 2k. A request whose head
 * is within the new limit but leaves too little room for that block gets 502 with a reason, not
 * a closed connection; a smaller one gets the HIT with every field. The origin sees one request.
 */
static void
test_head_memory_stored(void **state)
{
    struct h_test *t = *state;
    const char *conf = "connection_memory = 16k\nmax_origin_headers = 6k\n";
    h_node_start_conf(t, "abusenode", "stored1.conf", conf);
    static char target[BIG_TARGET], req[BIG_TARGET + 4096];
    big_target(target, "/hs?cc=max-age=600&body=ok");
    struct h_resp r;
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    if (h_request(t->node.port, req, strlen(req), false, 0, &r) != 0 || r.status != 200 ||
        !h_cache_status_has(&r, "stored"))
        fail_msg("first GET: status %d, Cache-Status \"%s\"", r.status, h_cache_status(&r));
    h_resp_free(&r);
    h_proc_stop(&t->node.proc, SIGTERM, 10000);
    h_node_start_conf(t, "abusenode", "stored2.conf",
                      "connection_memory = 16k\nmax_origin_headers = 2k\n");

    static char cookie[2600];
    memset(cookie, 'c', 2500);
    cookie[2500] = '\0';
    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: k=%s\r\n\r\n", target,
             cookie);
    if (h_request(t->node.port, req, strlen(req), false, 0, &r) != 0)
        fail_msg("GET with a 2,500-byte cookie: the connection closed without a response");
    if (r.status != 502 || r.body == NULL || strstr(r.body, "header block too large") == NULL)
        fail_msg("GET with a 2,500-byte cookie: status %d, body \"%s\" (expected 502 and why)",
                 r.status, r.body ? r.body : "(none)");
    h_resp_free(&r);

    snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", target);
    if (h_request(t->node.port, req, strlen(req), false, 0, &r) != 0 || r.status != 200)
        fail_msg("GET without a cookie after the restart: status %d", r.status);
    if (!h_cache_status_has(&r, "hit"))
        fail_msg("GET without a cookie after the restart: Cache-Status \"%s\"", h_cache_status(&r));
    const char *v = h_header(&r, "X-Big-2");
    if (v == NULL || strlen(v) != BIG_FIELD)
        fail_msg("the HIT lacks a stored field");
    h_resp_free(&r);
    assert_int_equal(h_origin_count(t, "/hs"), 1);
    H_PASS(t);
}

#ifdef CDNODE_SANITIZED
#define N_PIPE 2000 /* ASan and UBSan slow the node several times over */
#else
#define N_PIPE 10000
#endif
#define PIPE_BATCH 500
#define PIPE_DEADLINE_MS 60000

struct pipe_writer {
    struct h_conn *c;
    int port;
    int sent;   /* requests fully written */
    int failed; /* the node stopped taking bytes */
};

static void *
pipe_write(void *arg)
{
    struct pipe_writer *w = arg;
    size_t cap = (size_t)PIPE_BATCH * 160;
    char *buf = malloc(cap);
    if (buf == NULL)
        abort();
    for (int i = 0; i < N_PIPE;) {
        size_t len = 0;
        int first = i;
        for (; i < N_PIPE && i - first < PIPE_BATCH; i++) {
            int n = snprintf(buf + len, cap - len,
                             "GET /p?cc=max-age=60&body=x&h=X-Seq:%d HTTP/1.1\r\n"
                             "Host: 127.0.0.1:%d\r\n\r\n",
                             i, w->port);
            if (n <= 0 || (size_t)n >= cap - len)
                abort(); /* PIPE_BATCH requests always fit in cap */
            len += (size_t)n;
        }
        if (h_conn_send(w->c, buf, len) != 0) {
            w->failed = 1;
            break;
        }
        w->sent = i;
    }
    free(buf);
    return NULL;
}

/*
 * 10,000 pipelined GETs (2,000 in sanitizer builds) on one connection, each for its own cacheable
 * URL whose response carries X-Seq: <i>. A writer thread sends them in batches of 500 while the
 * main thread reads: every response arrives, in order, complete, within 60 s.
 */
static void
test_pipelining(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "abusenode", "pipe.conf", "# defaults\n");
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    /* A writer blocked on a node that stopped reading gives up instead of hanging the test. */
    struct timeval tv = {.tv_sec = 20};
    setsockopt(c.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    struct pipe_writer w = {.c = &c, .port = t->node.port};
    pthread_t th;
    int64_t t0 = h_now_ms(), deadline = t0 + PIPE_DEADLINE_MS;
    assert_int_equal(pthread_create(&th, NULL, pipe_write, &w), 0);

    int got = 0;
    char why[256] = "";
    for (; got < N_PIPE; got++) {
        int left = (int)(deadline - h_now_ms());
        struct h_resp r;
        if (left <= 0 || h_read_response(&c, &r, false, left) != 0) {
            snprintf(why, sizeof(why), "no response %d (%s)", got,
                     left <= 0 || !c.eof ? "deadline" : "connection closed");
            break;
        }
        const char *seq = h_header(&r, "X-Seq");
        bool good = r.status == 200 && r.complete && r.body && strcmp(r.body, "x") == 0 && seq &&
                    atoi(seq) == got;
        if (!good)
            snprintf(why, sizeof(why), "response %d: status %d, X-Seq %s, body \"%.20s\"%s", got,
                     r.status, seq ? seq : "(none)", r.body ? r.body : "",
                     r.complete ? "" : " (incomplete)");
        h_resp_free(&r);
        if (!good)
            break;
    }
    int64_t ms = h_now_ms() - t0;
    shutdown(c.fd, SHUT_RDWR); /* unblocks the writer if the reader stopped early */
    pthread_join(th, NULL);
    long origin = h_origin_count(t, "/p");
    printf("abuse: pipelining: %d of %d responses in order in %lld ms (%d requests written%s); "
           "origin saw %ld\n",
           got, N_PIPE, (long long)ms, w.sent, w.failed ? ", writer stopped" : "", origin);
    h_conn_close(&c);
    if (got != N_PIPE)
        fail_msg("pipelining: %s", why);
    H_PASS(t);
}

/*
 * trusted_hops = 1 and a request from 127.0.0.1 with X-Forwarded-For: 6.6.6.6, 10.1.2.3: the
 * origin sees the chain with the peer appended, and the access log names 10.1.2.3 (the entry the
 * one trusted hop reported) as the client, never the forged 6.6.6.6.
 */
static void
test_trusted_hops(void **state)
{
    struct h_test *t = *state;
    char log[512], text[700];
    h_path(t, "a.log", log, sizeof(log));
    snprintf(text, sizeof(text), "trusted_hops = 1\naccess_log = %s\n", log);
    h_node_start_conf(t, "abusenode", "hops.conf", text);

    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/xff?cc=no-store&body=hi",
                           "X-Forwarded-For: 6.6.6.6, 10.1.2.3\r\nUser-Agent: ua-xff\r\n", &r),
                     0);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "hi") != 0)
        fail_msg("GET /xff: status %d, body \"%s\"", r.status, r.body ? r.body : "");
    h_resp_free(&r);

    char *head = h_origin_last(t, "/xff");
    if (head == NULL)
        fail_msg("the origin saw no request for /xff");
    char *xff = h_head_join(head, "X-Forwarded-For");
    printf("abuse: trusted_hops: origin saw X-Forwarded-For: %s\n", xff ? xff : "(none)");
    if (xff == NULL || strcmp(xff, "6.6.6.6, 10.1.2.3, 127.0.0.1") != 0)
        fail_msg("the origin saw X-Forwarded-For \"%s\" (expected \"6.6.6.6, 10.1.2.3, "
                 "127.0.0.1\"); its head:\n%s",
                 xff ? xff : "(none)", head);
    free(xff);
    free(head);

    /* The line is written when the node is done with the request: poll for it. */
    char line[4096] = "";
    int64_t deadline = h_now_ms() + H_TIMEOUT_MS;
    for (int k = 0; k < 1000 && line[0] == '\0' && h_now_ms() < deadline; k++) {
        char *all = h_read_file(log, NULL);
        const char *hit = all ? strstr(all, "\"ua-xff\"") : NULL;
        if (hit) {
            const char *bol = hit;
            while (bol > all && bol[-1] != '\n')
                bol--;
            const char *eol = strchr(hit, '\n');
            int n = eol ? (int)(eol - bol) : (int)strlen(bol);
            snprintf(line, sizeof(line), "%.*s", n, bol);
        }
        free(all);
        if (line[0] == '\0')
            h_nap_ms(20);
    }
    printf("abuse: trusted_hops: access log: %s\n", line[0] ? line : "(no line)");
    if (line[0] == '\0')
        fail_msg("no access log line for the request within %d ms", H_TIMEOUT_MS);
    if (strncmp(line, "6.6.6.6 ", 8) == 0)
        fail_msg("the forged leftmost address became the logged client: %s", line);
    if (strncmp(line, "10.1.2.3 ", 9) != 0)
        fail_msg("trusted_hops = 1: the access log names the client as \"%.*s\" (expected "
                 "10.1.2.3, the address the trusted hop reported): %s",
                 (int)strcspn(line, " "), line, line);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_slowloris, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_tls_limits, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_body_limit, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_head_memory, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_head_memory_stored, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_pipelining, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_trusted_hops, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
