/*
 * Tiers of real nodes (DESIGN.md §6): a child whose upstream is a parent node, and chains of
 * three. Each hop appends its Via and CDN-Loop entries to the request and its Via and Cache-Status
 * members to the response, never rewriting another hop's; both tiers collapse concurrent misses;
 * two nodes pointed at each other end the loop with 508 instead of forwarding forever; a child
 * hashing over two parents keeps each object on one parent and fails over when one is gone.
 *
 * Which parent served a response is read from its Via members; how often a node went upstream from
 * its /metrics. Every node of a test lives in a static struct h_node, because the teardown stops
 * the processes after the test function has returned.
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
#include <strings.h>
#include <time.h>

#define MAX_MEMBERS 8
#define READ_MS 20000 /* bound on reading a whole burst */

/* Every node besides t->node; reset at the start of each test. */
static struct h_node nodes[4];

static void
reset_nodes(void)
{
    memset(nodes, 0, sizeof(nodes));
}

static void
start(struct h_test *t, struct h_node *n, const char *id, const char *origin,
      const char *const *extra)
{
    if (h_node_start(t, n, id, origin, extra) != 0)
        fail_msg("node %s did not start", id);
}

static void
url_of(const struct h_node *n, char *out, size_t len)
{
    snprintf(out, len, "http://127.0.0.1:%d", n->port);
}

/*
 * All values of the response fields `name`, in order, joined with ", ". The result lives in one of
 * four static buffers used in turn, so up to four calls may share one printf.
 */
static const char *
resp_join(const struct h_resp *r, const char *name)
{
    static char bufs[4][4096];
    static unsigned turn;
    char *out = bufs[turn++ % 4];
    size_t k = 0;
    out[0] = '\0';
    for (size_t i = 0; i < r->n_h; i++) {
        if (strcasecmp(r->h[i].name, name) != 0)
            continue;
        int w = snprintf(out + k, sizeof(bufs[0]) - k, "%s%s", k ? ", " : "", r->h[i].value);
        if (w < 0 || (size_t)w >= sizeof(bufs[0]) - k)
            break;
        k += (size_t)w;
    }
    return out;
}

/*
 * Splits the response's Cache-Status members (commas outside quoted strings) into m, at most
 * MAX_MEMBERS of 256 bytes each. Returns their number.
 */
static int
cs_members(const struct h_resp *r, char m[MAX_MEMBERS][256])
{
    const char *all = resp_join(r, "Cache-Status");
    int n = 0;
    size_t k = 0;
    bool quoted = false;
    for (const char *p = all; *p && n < MAX_MEMBERS; p++) {
        if (*p == '"')
            quoted = !quoted;
        if (*p == ',' && !quoted) {
            m[n++][k] = '\0';
            k = 0;
            while (p[1] == ' ')
                p++;
            continue;
        }
        if (k + 1 < 256)
            m[n][k++] = *p;
    }
    if (*all && n < MAX_MEMBERS)
        m[n++][k] = '\0';
    return n;
}

/* Whether member begins with "<id>; fwd=uri-miss" and has the "stored" parameter. */
static bool
is_stored_miss(const char *member, const char *id)
{
    char want[128];
    snprintf(want, sizeof(want), "%s; fwd=uri-miss", id);
    return strncmp(member, want, strlen(want)) == 0 && strstr(member, "; stored") != NULL;
}

/* Whether member is "<id>; hit..." and did not go upstream. */
static bool
is_hit(const char *member, const char *id)
{
    char want[128];
    snprintf(want, sizeof(want), "%s; hit", id);
    return strncmp(member, want, strlen(want)) == 0 && strstr(member, "fwd=") == NULL;
}


#define EXPECT_METRIC(node, name, n)                                                               \
    do {                                                                                           \
        long long got_ = h_metric((node)->admin_port, (name));                                    \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: %s of the node on port %d is %lld (expected %lld)", __LINE__,       \
                     (name), (node)->port, got_, (long long)(n));                                  \
    } while (0)

#define EXPECT_COUNT(t, path, n)                                                                   \
    do {                                                                                           \
        long got_ = h_origin_count((t), (path));                                                   \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: origin saw %ld requests for %s (expected %d)", __LINE__, got_,      \
                     (path), (n));                                                                 \
    } while (0)

/* GET target from port: a 200 with body `body`, or the test fails. */
static void
get_body(int port, const char *target, const char *extra, const char *body, struct h_resp *r)
{
    if (h_get(port, target, extra, r) != 0)
        fail_msg("GET %s: no response", target);
    if (r->status != 200 || !r->complete || r->body == NULL || strcmp(r->body, body) != 0)
        fail_msg("GET %s: status %d, complete %d, body \"%s\" (expected \"%s\"), Via \"%s\", "
                 "Cache-Status \"%s\"",
                 target, r->status, r->complete, r->body ? r->body : "(none)", body,
                 resp_join(r, "Via"), resp_join(r, "Cache-Status"));
}

/*
 * Checks a miss that passed through every node of ids[0..n) (ids[0] nearest the origin): Via
 * names them in that order after the origin's own Via (origin_via, NULL if none), and each node
 * appended a "fwd=uri-miss ... stored" Cache-Status member.
 */
static void
expect_chain_miss(const struct h_resp *r, const char *origin_via, const char *const *ids, int n)
{
    char want[512] = "";
    size_t k = 0;
    if (origin_via)
        k += (size_t)snprintf(want, sizeof(want), "%s", origin_via);
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(want + k, sizeof(want) - k, "%s1.1 %s", k ? ", " : "", ids[i]);
    const char *via = resp_join(r, "Via");
    if (strcmp(via, want) != 0)
        fail_msg("response Via \"%s\" (expected \"%s\")", via, want);
    char m[MAX_MEMBERS][256];
    int nm = cs_members(r, m);
    if (nm != n)
        fail_msg("Cache-Status \"%s\" has %d members (expected %d)", resp_join(r, "Cache-Status"),
                 nm, n);
    for (int i = 0; i < n; i++)
        if (!is_stored_miss(m[i], ids[i]))
            fail_msg("Cache-Status member %d is \"%s\" (expected \"%s; fwd=uri-miss...; stored\"); "
                     "all: \"%s\"",
                     i + 1, m[i], ids[i], resp_join(r, "Cache-Status"));
}

/* Checks the origin's view of the last request for path: Via and CDN-Loop list the nodes from
 * the client's side inward, ids[n-1] first. */
static void
expect_origin_hops(struct h_test *t, const char *path, const char *const *ids, int n)
{
    char *head = h_origin_last(t, path);
    if (head == NULL)
        fail_msg("the origin has no request for %s", path);
    char via_want[512] = "", loop_want[512] = "";
    size_t kv = 0, kl = 0;
    for (int i = n - 1; i >= 0; i--) {
        const char *sep = i == n - 1 ? "" : ", ";
        kv += (size_t)snprintf(via_want + kv, sizeof(via_want) - kv, "%s1.1 %s", sep, ids[i]);
        kl += (size_t)snprintf(loop_want + kl, sizeof(loop_want) - kl, "%s%s", sep, ids[i]);
    }
    char *via = h_head_join(head, "Via");
    char *loop = h_head_join(head, "CDN-Loop");
    bool ok = via && loop && strcmp(via, via_want) == 0 && strcmp(loop, loop_want) == 0;
    printf("tiers: the origin saw Via \"%s\" and CDN-Loop \"%s\"\n", via ? via : "(none)",
           loop ? loop : "(none)");
    if (!ok)
        fail_msg("origin saw Via \"%s\", CDN-Loop \"%s\" (expected \"%s\" and \"%s\"); head:\n%s",
                 via ? via : "(none)", loop ? loop : "(none)", via_want, loop_want, head);
    free(via);
    free(loop);
    free(head);
}

/* Two tiers: the first request misses on both, the second hits the child. */
static void
test_child_parent(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *parent = &nodes[0], *child = &t->node;
    char purl[64];
    start(t, parent, "parent-t", t->origin_url, NULL);
    url_of(parent, purl, sizeof(purl));
    start(t, child, "child-t", purl, NULL);
    const char *ids[] = {"parent-t", "child-t"};
    const char *target = "/tier?cc=max-age=60&body=two-tiers";

    struct h_resp r;
    get_body(child->port, target, NULL, "two-tiers", &r);
    printf("tiers: first GET: Via \"%s\", Cache-Status \"%s\"\n", resp_join(&r, "Via"),
           resp_join(&r, "Cache-Status"));
    expect_chain_miss(&r, NULL, ids, 2);
    h_resp_free(&r);
    expect_origin_hops(t, "/tier", ids, 2);

    get_body(child->port, target, NULL, "two-tiers", &r);
    char m[MAX_MEMBERS][256];
    int nm = cs_members(&r, m);
    printf("tiers: second GET: Via \"%s\", Cache-Status \"%s\"\n", resp_join(&r, "Via"),
           resp_join(&r, "Cache-Status"));
    if (nm < 1 || !is_hit(m[nm - 1], "child-t"))
        fail_msg("second GET: Cache-Status \"%s\" (expected the last member \"child-t; hit\")",
                 resp_join(&r, "Cache-Status"));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/tier", 1);
    EXPECT_METRIC(parent, "cdnode_origin_requests_total", 1);
    EXPECT_METRIC(child, "cdnode_origin_requests_total", 1);
    H_PASS(t);
}

/*
 * Three tiers: every hop shows up once, in order, in both directions; the origin's own Via (a
 * proxy in front of it) stays first.
 */
static void
test_three_tiers(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *a = &nodes[0], *b = &nodes[1], *c = &t->node;
    char aurl[64], burl[64];
    start(t, a, "tier-a", t->origin_url, NULL);
    url_of(a, aurl, sizeof(aurl));
    start(t, b, "tier-b", aurl, NULL);
    url_of(b, burl, sizeof(burl));
    start(t, c, "tier-c", burl, NULL);
    const char *ids[] = {"tier-a", "tier-b", "tier-c"};
    const char *target = "/three?cc=max-age=60&body=three-tiers&h=Via:1.1%20origin-lb";

    struct h_resp r;
    get_body(c->port, target, NULL, "three-tiers", &r);
    printf("tiers: three tiers, first GET: Via \"%s\", Cache-Status \"%s\"\n", resp_join(&r, "Via"),
           resp_join(&r, "Cache-Status"));
    expect_chain_miss(&r, "1.1 origin-lb", ids, 3);
    h_resp_free(&r);
    expect_origin_hops(t, "/three", ids, 3);

    get_body(c->port, target, NULL, "three-tiers", &r);
    char m[MAX_MEMBERS][256];
    int nm = cs_members(&r, m);
    if (nm < 1 || !is_hit(m[nm - 1], "tier-c"))
        fail_msg("second GET: Cache-Status \"%s\" (expected the last member \"tier-c; hit\")",
                 resp_join(&r, "Cache-Status"));
    h_resp_free(&r);
    EXPECT_COUNT(t, "/three", 1);
    H_PASS(t);
}

/* Offset of the first byte of body that is not testorigin's size= pattern, or -1. */
static long
pattern_mismatch(const char *body, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (body[i] != (char)('a' + i % 26))
            return (long)i;
    return -1;
}

/*
 * Thirty clients miss on one URL at the child at once: the child sends one request to the parent,
 * the parent one to the origin, and every client gets the whole body.
 */
static void
test_both_tiers_collapse(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *parent = &nodes[0], *child = &t->node;
    char purl[64];
    start(t, parent, "parent-c", t->origin_url, NULL);
    url_of(parent, purl, sizeof(purl));
    start(t, child, "child-c", purl, NULL);
    const char *target = "/both?delay_ms=1000&size=20000&cc=max-age=60";
    enum { N = 30, SIZE = 20000 };
    struct h_conn c[N];
    struct h_resp r[N];
    for (int i = 0; i < N; i++)
        if (h_conn_open(&c[i], child->port) != 0)
            fail_msg("connection %d of %d to the child failed", i + 1, N);
    int64_t t0 = h_now_ms();
    for (int i = 0; i < N; i++)
        if (h_conn_sendf(&c[i], "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", target,
                         child->port) != 0)
            fail_msg("client %d: the child closed the connection before the request was sent",
                     i + 1);
    int64_t send_ms = h_now_ms() - t0;
    if (send_ms >= 1000)
        fail_msg("sending %d requests took %lld ms, longer than the origin's delay", N,
                 (long long)send_ms);
    int64_t deadline = h_now_ms() + READ_MS;
    for (int i = 0; i < N; i++) {
        int64_t left = deadline - h_now_ms();
        if (h_read_response(&c[i], &r[i], false, left > 0 ? (int)left : 1) != 0)
            fail_msg("client %d of %d got no response", i + 1, N);
        h_conn_close(&c[i]);
    }
    int64_t wall = h_now_ms() - t0;
    long origin = h_origin_count(t, "/both");
    printf("tiers: collapse: %d clients, origin requests %ld, parent upstream %lld, child upstream "
           "%lld, child leaders %lld / followers %lld, parent leaders %lld / followers %lld, wall "
           "%lld ms (sent in %lld ms)\n",
           N, origin, h_metric(parent->admin_port, "cdnode_origin_requests_total"),
           h_metric(child->admin_port, "cdnode_origin_requests_total"),
           h_metric(child->admin_port, "cdnode_collapse_leaders_total"),
           h_metric(child->admin_port, "cdnode_collapse_followers_total"),
           h_metric(parent->admin_port, "cdnode_collapse_leaders_total"),
           h_metric(parent->admin_port, "cdnode_collapse_followers_total"), (long long)wall,
           (long long)send_ms);
    for (int i = 0; i < N; i++) {
        if (r[i].status != 200 || !r[i].complete || r[i].body_len != SIZE)
            fail_msg("client %d: status %d, %zu of %d bytes, complete %d, Cache-Status \"%s\"",
                     i + 1, r[i].status, r[i].body_len, SIZE, r[i].complete,
                     resp_join(&r[i], "Cache-Status"));
        long bad = pattern_mismatch(r[i].body, r[i].body_len);
        if (bad >= 0)
            fail_msg("client %d: body differs from the origin's at byte %ld", i + 1, bad);
    }
    for (int i = 0; i < N; i++)
        h_resp_free(&r[i]);
    if (origin != 1)
        fail_msg("origin saw %ld requests for /both (expected 1)", origin);
    if (wall >= 5000)
        fail_msg("the burst took %lld ms (expected well under 5000)", (long long)wall);
    EXPECT_METRIC(child, "cdnode_origin_requests_total", 1);
    EXPECT_METRIC(parent, "cdnode_origin_requests_total", 1);
    EXPECT_METRIC(child, "cdnode_collapse_leaders_total", 1);
    EXPECT_METRIC(child, "cdnode_collapse_followers_total", N - 1);
    H_PASS(t);
}

/*
 * X's upstream is Y and Y's is X. A request to X goes to Y, back to X, which finds its own id in
 * CDN-Loop and answers 508; that answer travels back through Y and X. Each node forwarded once.
 */
static void
test_loop_508(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *x = &t->node, *y = &nodes[0];
    x->port = h_free_port();
    do
        y->port = h_free_port();
    while (y->port == x->port);
    char xurl[64], yurl[64];
    url_of(x, xurl, sizeof(xurl));
    url_of(y, yurl, sizeof(yurl));
    start(t, x, "loop-x", yurl, NULL);
    start(t, y, "loop-y", xurl, NULL);

    int64_t t0 = h_now_ms();
    struct h_resp r;
    if (h_get(x->port, "/loop?cc=max-age=60&body=never", NULL, &r) != 0)
        fail_msg("GET /loop: no response within %d ms", H_TIMEOUT_MS);
    int64_t took = h_now_ms() - t0;
    printf("tiers: loop: status %d in %lld ms, Via \"%s\", Cache-Status \"%s\", body \"%s\"\n",
           r.status, (long long)took, resp_join(&r, "Via"), resp_join(&r, "Cache-Status"),
           r.body ? r.body : "(none)");
    if (r.status != 508)
        fail_msg("GET /loop: status %d (expected 508)", r.status);
    if (r.body == NULL || strstr(r.body, "loop-x") == NULL)
        fail_msg("508 body \"%s\" does not name loop-x", r.body ? r.body : "(none)");
    if (took >= 3000)
        fail_msg("the loop took %lld ms to end (expected under 3000)", (long long)took);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/loop", 0);
    EXPECT_METRIC(x, "cdnode_loops_total", 1);
    EXPECT_METRIC(y, "cdnode_loops_total", 0);
    EXPECT_METRIC(x, "cdnode_origin_requests_total", 1);
    EXPECT_METRIC(y, "cdnode_origin_requests_total", 1);
    H_PASS(t);
}

/* Which of the parent ids the response's Via names: 0, 1, or -1 for neither or both. */
static int
served_by(const struct h_resp *r, const char *const *pids)
{
    const char *via = resp_join(r, "Via");
    char a[80], b[80];
    snprintf(a, sizeof(a), "1.1 %s", pids[0]);
    snprintf(b, sizeof(b), "1.1 %s", pids[1]);
    bool in_a = strstr(via, a) != NULL, in_b = strstr(via, b) != NULL;
    return in_a == in_b ? -1 : in_a ? 0 : 1;
}

/*
 * A child hashing over two parents: every object lives on one parent (and the second round is
 * served by the child); with one parent stopped, its objects are fetched through the other.
 */
static void
test_parents_by_hash(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *p[2] = {&nodes[0], &nodes[1]}, *child = &t->node;
    const char *pids[] = {"hash-p1", "hash-p2"};
    char purl[2][64], conf[512];
    for (int i = 0; i < 2; i++) {
        start(t, p[i], pids[i], t->origin_url, NULL);
        url_of(p[i], purl[i], sizeof(purl[i]));
    }
    /* The harness gives the first parent as --origin; the second is a second --origin, which
     * with the file's policy makes the list `origin = P1 P2`. */
    h_path(t, "child.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "origin_balance = hash\n"), 0);
    start(t, child, "hash-child", purl[0], H_ARGS("--origin", purl[1], "-c", conf));

    enum { N = 20 };
    int on[N], per[2] = {0, 0};
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char target[96], body[16];
            snprintf(target, sizeof(target), "/hp%d?cc=max-age=60&body=obj%d", i, i);
            snprintf(body, sizeof(body), "obj%d", i);
            struct h_resp r;
            get_body(child->port, target, NULL, body, &r);
            int who = served_by(&r, pids);
            char m[MAX_MEMBERS][256];
            int nm = cs_members(&r, m);
            if (who < 0)
                fail_msg("round %d, %s: Via \"%s\" names not exactly one parent", round + 1, target,
                         resp_join(&r, "Via"));
            if (round == 0) {
                on[i] = who;
                per[who]++;
                if (nm < 1 || !is_stored_miss(m[nm - 1], "hash-child"))
                    fail_msg("round 1, %s: Cache-Status \"%s\" (expected a stored child miss)",
                             target, resp_join(&r, "Cache-Status"));
            } else {
                if (who != on[i])
                    fail_msg("round 2, %s: Via \"%s\" (round 1 came from %s)", target,
                             resp_join(&r, "Via"), pids[on[i]]);
                if (nm < 1 || !is_hit(m[nm - 1], "hash-child"))
                    fail_msg("round 2, %s: Cache-Status \"%s\" (expected a child hit)", target,
                             resp_join(&r, "Cache-Status"));
            }
            h_resp_free(&r);
        }
    }
    long long up[2];
    for (int i = 0; i < 2; i++)
        up[i] = h_metric(p[i]->admin_port, "cdnode_origin_requests_total");
    printf("tiers: hash: %d URLs on %s, %d on %s; their upstream requests %lld and %lld\n", per[0],
           pids[0], per[1], pids[1], up[0], up[1]);
    for (int i = 0; i < N; i++) {
        char path[16];
        snprintf(path, sizeof(path), "/hp%d", i);
        EXPECT_COUNT(t, path, 1);
    }
    if (up[0] != per[0] || up[1] != per[1] || up[0] + up[1] != N)
        fail_msg("the parents went upstream %lld and %lld times (expected %d and %d, sum %d)",
                 up[0], up[1], per[0], per[1], N);
    if (per[0] == 0 || per[1] == 0)
        fail_msg("every URL went to one parent (%d and %d)", per[0], per[1]);
    EXPECT_METRIC(child, "cdnode_origin_requests_total", N);

    /* The second parent goes away; its objects, asked for again past the child's cache, come
     * through the first, and so do new ones. */
    int st = h_proc_stop(&p[1]->proc, SIGTERM, 10000);
    printf("tiers: hash: %s stopped (wait status 0x%x)\n", pids[1], st);
    int refetched = 0;
    for (int i = 0; i < N; i++) {
        if (on[i] != 1)
            continue;
        char target[96], body[16];
        snprintf(target, sizeof(target), "/hp%d?cc=max-age=60&body=obj%d", i, i);
        snprintf(body, sizeof(body), "obj%d", i);
        struct h_resp r;
        get_body(child->port, target, "Cache-Control: no-cache\r\n", body, &r);
        if (served_by(&r, pids) != 0)
            fail_msg("%s after %s stopped: Via \"%s\" (expected %s)", target, pids[1],
                     resp_join(&r, "Via"), pids[0]);
        h_resp_free(&r);
        refetched++;
    }
    for (int i = 0; i < 10; i++) {
        char target[96], body[16];
        snprintf(target, sizeof(target), "/hq%d?cc=max-age=60&body=new%d", i, i);
        snprintf(body, sizeof(body), "new%d", i);
        struct h_resp r;
        get_body(child->port, target, NULL, body, &r);
        if (served_by(&r, pids) != 0)
            fail_msg("%s after %s stopped: Via \"%s\" (expected %s)", target, pids[1],
                     resp_join(&r, "Via"), pids[0]);
        h_resp_free(&r);
    }
    printf("tiers: hash: with %s stopped, %d of its objects and 10 new ones came through %s "
           "(%s upstream requests: %lld)\n",
           pids[1], refetched, pids[0], pids[0],
           h_metric(p[0]->admin_port, "cdnode_origin_requests_total"));
    EXPECT_METRIC(p[0], "cdnode_origin_requests_total", per[0] + refetched + 10);
    H_PASS(t);
}


/*
 * `parent = P1 P2` with the origin also configured: objects go through the parents (each through
 * one, spread over both); with both parents gone the child goes straight to the origin, first by
 * trying each parent once per request, then, once they are marked down, directly.
 */
static void
test_parents_fall_back_to_origin(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *p[2] = {&nodes[0], &nodes[1]}, *child = &t->node;
    const char *pids[] = {"fb-p1", "fb-p2"};
    char purl[2][64], conf[512];
    for (int i = 0; i < 2; i++) {
        start(t, p[i], pids[i], t->origin_url, NULL);
        url_of(p[i], purl[i], sizeof(purl[i]));
    }
    h_path(t, "child.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf, "parent = %s %s\norigin_fall = 2\n", purl[0], purl[1]),
                     0);
    start(t, child, "fb-child", t->origin_url, H_ARGS("-c", conf));

    enum { N = 12 };
    int per[2] = {0, 0};
    for (int i = 0; i < N; i++) {
        char target[96], body[16];
        snprintf(target, sizeof(target), "/fb%d?cc=max-age=60&body=obj%d", i, i);
        snprintf(body, sizeof(body), "obj%d", i);
        struct h_resp r;
        get_body(child->port, target, NULL, body, &r);
        int who = served_by(&r, pids);
        if (who < 0)
            fail_msg("%s: Via \"%s\" names not exactly one parent", target, resp_join(&r, "Via"));
        per[who]++;
        h_resp_free(&r);
    }
    if (per[0] == 0 || per[1] == 0)
        fail_msg("every object went to one parent (%d and %d)", per[0], per[1]);
    EXPECT_METRIC(child, "cdnode_origin_requests_total", N);

    for (int i = 0; i < 2; i++)
        h_proc_stop(&p[i]->proc, SIGTERM, 10000);
    /* Both parents gone: new objects come straight from the origin (no parent in Via, one
     * Cache-Status member), and the parents are marked down after origin_fall failures each. */
    for (int i = 0; i < 6; i++) {
        char target[96], body[16], path[16];
        snprintf(target, sizeof(target), "/fo%d?cc=max-age=60&body=direct%d", i, i);
        snprintf(body, sizeof(body), "direct%d", i);
        snprintf(path, sizeof(path), "/fo%d", i);
        struct h_resp r;
        get_body(child->port, target, NULL, body, &r);
        const char *via = resp_join(&r, "Via");
        if (strstr(via, "fb-p1") || strstr(via, "fb-p2") || strstr(via, "fb-child") == NULL)
            fail_msg("%s with both parents down: Via \"%s\" (expected only fb-child)", target, via);
        char m[MAX_MEMBERS][256];
        if (cs_members(&r, m) != 1 || !is_stored_miss(m[0], "fb-child"))
            fail_msg("%s: Cache-Status \"%s\"", target, resp_join(&r, "Cache-Status"));
        h_resp_free(&r);
        EXPECT_COUNT(t, path, 1);
    }
    long long down =
        h_metric(child->admin_port, "cdnode_origin_health_transitions_total{to=\"down\"}");
    printf("tiers: fallback: %d + %d objects through the parents; with both stopped, 6 straight "
           "from the origin; parents marked down: %lld; retries %lld\n",
           per[0], per[1], down, h_metric(child->admin_port, "cdnode_origin_retries_total"));
    if (down != 2)
        fail_msg("%lld upstreams marked down (expected the 2 parents)", down);
    H_PASS(t);
}

/* Waits (bounded) until the node's log holds `needle` at least `times` times. */
static bool
log_has(const struct h_node *n, const char *needle, int times, int timeout_ms)
{
    int64_t end = h_now_ms() + timeout_ms;
    do {
        char *text = h_read_file(n->proc.log, NULL);
        int seen = 0;
        for (const char *p = text; p && (p = strstr(p, needle)) != NULL; p++)
            seen++;
        free(text);
        if (seen >= times)
            return true;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    } while (h_now_ms() < end);
    return false;
}

/*
 * SIGHUP: a node that fetched from the origin gets a parent, an access log file and back, on a
 * keep-alive connection opened before the reloads and without losing its store; a broken file is
 * refused with its line number and the running configuration stays.
 */
static void
test_reload(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *parent = &nodes[0], *node = &t->node;
    char purl[64], conf[512], alog[512];
    start(t, parent, "rl-parent", t->origin_url, NULL);
    url_of(parent, purl, sizeof(purl));
    h_path(t, "node.conf", conf, sizeof(conf));
    h_path(t, "access.log", alog, sizeof(alog));
    assert_int_equal(h_write_file(conf, "access_log = off\n"), 0);
    start(t, node, "rl-node", t->origin_url, H_ARGS("-c", conf));

    struct h_conn c;
    assert_int_equal(h_conn_open(&c, node->port), 0);
    struct h_resp r;
    get_body(node->port, "/rl1?cc=max-age=60&body=one", NULL, "one", &r);
    if (strstr(resp_join(&r, "Via"), "rl-parent"))
        fail_msg("before the reload the node already used the parent: Via \"%s\"",
                 resp_join(&r, "Via"));
    h_resp_free(&r);

    /* Reload 1: the parent in front of the origin, and an access log file. */
    assert_int_equal(h_write_file(conf, "access_log = %s\nparent = %s\n", alog, purl), 0);
    kill(node->proc.pid, SIGHUP);
    if (!log_has(node, "SIGHUP: configuration reloaded", 1, 10000))
        fail_msg("no reload logged");
    /* The connection opened before the reload still serves. */
    assert_int_equal(h_conn_sendf(&c, "GET /rl2?cc=max-age=60&body=two HTTP/1.1\r\n"
                                      "Host: 127.0.0.1\r\n\r\n"),
                     0);
    assert_int_equal(h_read_response(&c, &r, false, 10000), 0);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "two") != 0 ||
        strstr(resp_join(&r, "Via"), "rl-parent") == NULL)
        fail_msg("after the reload: status %d, body \"%s\", Via \"%s\" (expected two via the "
                 "parent)",
                 r.status, r.body ? r.body : "", resp_join(&r, "Via"));
    h_resp_free(&r);
    /* The store survived: the first object is still a hit, not refetched. */
    get_body(node->port, "/rl1?cc=max-age=60&body=one", NULL, "one", &r);
    h_resp_free(&r);
    EXPECT_COUNT(t, "/rl1", 1);
    /* A line is written when its response is done, which can be just after the client has it. */
    char *text = NULL;
    for (int64_t end = h_now_ms() + 5000;; free(text)) {
        text = h_read_file(alog, NULL);
        if ((text && strstr(text, "/rl2?") && strstr(text, "/rl1?")) || h_now_ms() > end)
            break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (text == NULL || strstr(text, "/rl2?") == NULL || strstr(text, "/rl1?") == NULL)
        fail_msg("access log after the reload: \"%s\"", text ? text : "(none)");
    free(text);

    /* Reload 2: a broken file is refused whole with its line; the parent stays in use. */
    assert_int_equal(h_write_file(conf, "access_log = off\n# comment\nparent = ftp://nope\n"), 0);
    kill(node->proc.pid, SIGHUP);
    if (!log_has(node, "node.conf:3: parent: expected an http:// or https:// URL", 1, 10000))
        fail_msg("the broken file's line was not reported");
    if (!log_has(node, "configuration refused, the running one stays", 1, 1))
        fail_msg("the refusal was not logged");
    get_body(node->port, "/rl3?cc=max-age=60&body=three", NULL, "three", &r);
    if (strstr(resp_join(&r, "Via"), "rl-parent") == NULL)
        fail_msg("after a refused reload: Via \"%s\" (the parent should still be used)",
                 resp_join(&r, "Via"));
    h_resp_free(&r);

    /* Reload 3: back to the origin alone. */
    assert_int_equal(h_write_file(conf, "access_log = off\n"), 0);
    kill(node->proc.pid, SIGHUP);
    if (!log_has(node, "SIGHUP: configuration reloaded", 2, 10000))
        fail_msg("second reload not logged");
    assert_int_equal(h_conn_sendf(&c, "GET /rl4?cc=max-age=60&body=four HTTP/1.1\r\n"
                                      "Host: 127.0.0.1\r\n\r\n"),
                     0);
    assert_int_equal(h_read_response(&c, &r, false, 10000), 0);
    if (r.status != 200 || strstr(resp_join(&r, "Via"), "rl-parent") != NULL)
        fail_msg("after the third reload: status %d, Via \"%s\" (expected the origin directly)",
                 r.status, resp_join(&r, "Via"));
    h_resp_free(&r);
    h_conn_close(&c);
    long long parent_up = h_metric(parent->admin_port, "cdnode_origin_requests_total");
    printf("tiers: reload: the parent fetched %lld objects while it was configured\n", parent_up);
    if (parent_up != 2)
        fail_msg("the parent went upstream %lld times (expected 2: /rl2 and /rl3)", parent_up);
    H_PASS(t);
}

/* Status of GET path on the admin port with bearer token tok. */
static int
admin_status(int admin_port, const char *method, const char *path, const char *tok)
{
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                     "Content-Length: 0\r\nConnection: close\r\n\r\n",
                     method, path, tok);
    struct h_resp r;
    if (h_request(admin_port, req, (size_t)n, false, 0, &r) != 0)
        return -1;
    int st = r.status;
    h_resp_free(&r);
    return st;
}

/*
 * SIGHUP applies a new admin token and purge peers: the old token stops working, the new one
 * works, and a purge is forwarded to the peer the new file lists (down here, so reported).
 * The node runs from its file alone (flags would win over the file on every reload).
 */
static void
test_reload_admin(void **state)
{
    struct h_test *t = *state;
    reset_nodes();
    struct h_node *n = &t->node;
    n->port = h_free_port();
    n->admin_port = h_free_port();
    int dead = h_free_port(); /* nothing listens there */
    const char *old_tok = "reload-old-token-0123456789", *new_tok = "reload-new-token-9876543210";
    char conf[512], cache[512], log[512];
    h_path(t, "admin.conf", conf, sizeof(conf));
    h_path(t, "cache-ra", cache, sizeof(cache));
    h_path(t, "node-ra.log", log, sizeof(log));
    const char *fmt = "listen = 127.0.0.1:%d\nadmin_listen = 127.0.0.1:%d\norigin = %s\n"
                      "cache_dir = %s\ncdn_id = ra\nworkers = 1\nadmin_token = %s\n%s";
    assert_int_equal(h_write_file(conf, fmt, n->port, n->admin_port, t->origin_url, cache,
                                  old_tok, ""),
                     0);
    const char *bin = getenv("CDNODE_BIN");
    assert_non_null(bin);
    char *argv[] = {(char *)bin, "-c", conf, NULL};
    assert_int_equal(h_spawn(&n->proc, "cdnode ra", argv, log, NULL), 0);
    h_track(t, &n->proc);
    int64_t end = h_now_ms() + 10000;
    while (admin_status(n->admin_port, "GET", "/metrics", old_tok) != 200) {
        if (h_now_ms() > end)
            fail_msg("the node did not come up");
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(admin_status(n->admin_port, "GET", "/metrics", new_tok), 401);

    char peer[96];
    snprintf(peer, sizeof(peer), "purge_children = http://127.0.0.1:%d\n", dead);
    assert_int_equal(h_write_file(conf, fmt, n->port, n->admin_port, t->origin_url, cache,
                                  new_tok, peer),
                     0);
    kill(n->proc.pid, SIGHUP);
    if (!log_has(n, "SIGHUP: configuration reloaded", 1, 10000))
        fail_msg("no reload logged");
    int st_old = admin_status(n->admin_port, "GET", "/metrics", old_tok);
    int st_new = admin_status(n->admin_port, "GET", "/metrics", new_tok);
    if (st_old != 401 || st_new != 200)
        fail_msg("after the reload: old token %d (expected 401), new token %d (expected 200)",
                 st_old, st_new);
    char req[512];
    int len = snprintf(req, sizeof(req),
                       "POST /purge?all=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer "
                       "%s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                       new_tok);
    struct h_resp r;
    assert_int_equal(h_request(n->admin_port, req, (size_t)len, false, 0, &r), 0);
    char want[96];
    snprintf(want, sizeof(want), "\"peer\": \"http://127.0.0.1:%d\"", dead);
    if (r.status != 200 || r.body == NULL || strstr(r.body, want) == NULL ||
        strstr(r.body, "\"error\"") == NULL)
        fail_msg("purge after the reload: %d \"%s\" (expected the dead child reported)", r.status,
                 r.body ? r.body : "");
    printf("tiers: reload admin: old token %d, new token %d; purge: %s", st_old, st_new, r.body);
    h_resp_free(&r);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_child_parent, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_three_tiers, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_both_tiers_collapse, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_loop_508, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_parents_by_hash, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_parents_fall_back_to_origin, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_reload, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_reload_admin, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
