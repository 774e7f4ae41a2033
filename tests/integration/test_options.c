/*
 * Configuration options seen from outside the node (conf/cdnode.conf): collapse_wait bounds how
 * long a request waits on another's fetch; strip_cache_tags hides the purge tags from clients;
 * stale_if_error_grace serves a stale object when the origin fails; access_log writes one line per
 * request, in combined or JSON format, and is reopened on SIGUSR1 after rotation;
 * loopback_congestion_control switches a loopback connection's TCP congestion control while a
 * response goes out whole (read back with ss from iproute2).
 *
 * Each test writes its options to a config file passed with -c. Waits are bounded polls on what
 * the test can observe (the origin's counters, responses, file contents); timings are printed with
 * an "options:" prefix and asserted only as generous bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* The last Cache-Status field: this node's own member. */
static const char *
own_cs(const struct h_resp *r)
{
    const char *v = "(none)";
    for (size_t i = 0; i < r->n_h; i++)
        if (strcasecmp(r->h[i].name, "Cache-Status") == 0)
            v = r->h[i].value;
    return v;
}

#define EXPECT_COUNT(t, path, n)                                                                   \
    do {                                                                                           \
        long got_ = h_origin_count((t), (path));                                                   \
        if (got_ != (n))                                                                           \
            fail_msg("line %d: origin saw %ld requests for %s (expected %d)", __LINE__, got_,      \
                     (path), (n));                                                                 \
    } while (0)

static void
send_get(struct h_conn *c, int port, const char *target)
{
    if (h_conn_sendf(c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", target, port) != 0)
        fail_msg("GET %s: the node closed the connection before the request was sent", target);
}

/*
 * collapse_wait = 1s: a follower that joined a fetch whose origin takes 2.5 s gives up with 504
 * about a second after the fetch started; the leader still gets its 200 when the origin answers.
 */
static void
test_collapse_wait(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "optnode", "cw.conf", "collapse_wait = 1s\n");
    const char *target = "/cw?delay_ms=2500&cc=max-age=60&body=late";
    struct h_conn l, f;
    assert_int_equal(h_conn_open(&l, t->node.port), 0);
    assert_int_equal(h_conn_open(&f, t->node.port), 0);
    int64_t t0 = h_now_ms();
    send_get(&l, t->node.port, target);
    long seen = h_origin_wait_count(t, "/cw", 1, H_TIMEOUT_MS);
    if (seen != 1)
        fail_msg("origin saw %ld requests for /cw after the leader's (expected 1)", seen);
    int64_t tf = h_now_ms();
    send_get(&f, t->node.port, target);

    struct h_resp fr, lr;
    if (h_read_response(&f, &fr, false, 10000) != 0)
        fail_msg("the follower got no response within 10 s");
    int64_t f_ms = h_now_ms() - tf;
    if (h_read_response(&l, &lr, false, 10000) != 0)
        fail_msg("the leader got no response within 10 s");
    int64_t l_ms = h_now_ms() - t0;
    h_conn_close(&l);
    h_conn_close(&f);
    printf("options: collapse_wait: follower sent %lld ms after the leader, answered %d after %lld "
           "ms (\"%s\", Cache-Status \"%s\"); leader answered %d after %lld ms\n",
           (long long)(tf - t0), fr.status, (long long)f_ms, fr.body ? fr.body : "(none)",
           h_cache_status(&fr), lr.status, (long long)l_ms);
    if (fr.status != 504 || fr.body == NULL || strstr(fr.body, "collapse_wait") == NULL)
        fail_msg("follower: status %d, body \"%s\" (expected 504 mentioning collapse_wait)",
                 fr.status, fr.body ? fr.body : "(none)");
    if (f_ms >= 2000)
        fail_msg("the follower waited %lld ms (expected about 1000, under 2000)", (long long)f_ms);
    if (lr.status != 200 || lr.body == NULL || strcmp(lr.body, "late") != 0)
        fail_msg("leader: status %d, body \"%s\" (expected 200 \"late\")", lr.status,
                 lr.body ? lr.body : "(none)");
    if (l_ms < 2400 || l_ms >= 6000)
        fail_msg("the leader was answered after %lld ms (expected about 2500)", (long long)l_ms);
    h_resp_free(&fr);
    h_resp_free(&lr);
    EXPECT_COUNT(t, "/cw", 1);
    H_PASS(t);
}

/* GET target twice (a miss, then a hit); checks the purge tags are present or absent on both. */
static void
check_tags(struct h_test *t, const char *target, bool present)
{
    for (int i = 0; i < 2; i++) {
        struct h_resp r;
        assert_int_equal(h_get(t->node.port, target, NULL, &r), 0);
        const char *sk = h_header(&r, "Surrogate-Key"), *ct = h_header(&r, "Cache-Tag");
        bool hit = strstr(own_cs(&r), "; hit") != NULL && strstr(own_cs(&r), "fwd=") == NULL;
        printf("options: strip_cache_tags %s, %s: Surrogate-Key %s, Cache-Tag %s (Cache-Status "
               "\"%s\")\n",
               present ? "off" : "on", i == 0 ? "miss" : "hit", sk ? sk : "absent",
               ct ? ct : "absent", h_cache_status(&r));
        if (r.status != 200 || r.body == NULL || strcmp(r.body, "tagged") != 0)
            fail_msg("GET %s: status %d, body \"%s\"", target, r.status, r.body ? r.body : "");
        if (hit != (i == 1))
            fail_msg("GET %s number %d: Cache-Status \"%s\" (expected a %s)", target, i + 1,
                     h_cache_status(&r), i == 0 ? "miss" : "hit");
        if (present && (sk == NULL || strcmp(sk, "a b") != 0 || ct == NULL || strcmp(ct, "x") != 0))
            fail_msg("strip_cache_tags = off, %s: Surrogate-Key \"%s\", Cache-Tag \"%s\" (expected "
                     "\"a b\" and \"x\")",
                     i == 0 ? "miss" : "hit", sk ? sk : "(absent)", ct ? ct : "(absent)");
        if (!present && (sk != NULL || ct != NULL))
            fail_msg(
                "strip_cache_tags = on, %s: Surrogate-Key \"%s\", Cache-Tag \"%s\" reached the "
                "client",
                i == 0 ? "miss" : "hit", sk ? sk : "(absent)", ct ? ct : "(absent)");
        h_resp_free(&r);
    }
    EXPECT_COUNT(t, "/tags", 1);
}

static const char tags_target[] = "/tags?cc=max-age=60&body=tagged&h=Surrogate-Key:a%20b"
                                  "&h=Cache-Tag:x";

static void
test_strip_cache_tags_default(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "optnode", "tags.conf", "# strip_cache_tags left at its default (on)\n");
    check_tags(t, tags_target, false);
    H_PASS(t);
}

static void
test_strip_cache_tags_off(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "optnode", "tags.conf", "strip_cache_tags = off\n");
    check_tags(t, tags_target, true);
    H_PASS(t);
}

/*
 * Stores a max-age=1 response with a validator, switches the origin to failing for its path, and
 * polls until the node goes upstream for it (once it is stale). Returns that response.
 */
static void
stale_then_fail(struct h_test *t, struct h_resp *out)
{
    const char *target = "/sie?cc=max-age=1&etag=v1&body=kept";
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, target, NULL, &r), 0);
    if (r.status != 200 || strstr(own_cs(&r), "stored") == NULL)
        fail_msg("GET %s: status %d, Cache-Status \"%s\" (expected a stored 200)", target, r.status,
                 h_cache_status(&r));
    h_resp_free(&r);
    assert_int_equal(h_get(t->origin_port, "/__origin/fail?path=/sie&status=503", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    /* While fresh the node answers from the store and the origin's switch goes unseen. */
    int64_t t0 = h_now_ms(), deadline = t0 + 6000;
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(h_get(t->node.port, target, NULL, out), 0);
        if (strstr(own_cs(out), "fwd=") != NULL)
            break;
        if (h_now_ms() >= deadline)
            fail_msg("the object was still served as fresh %lld ms after it was stored "
                     "(max-age=1)",
                     (long long)(h_now_ms() - t0));
        h_resp_free(out);
        h_nap_ms(100);
    }
    printf("options: stale_if_error_grace: went upstream %lld ms after storing: status %d, "
           "Cache-Status \"%s\", body \"%s\"\n",
           (long long)(h_now_ms() - t0), out->status, h_cache_status(out), out->body ? out->body : "");
    EXPECT_COUNT(t, "/sie", 2);
}

static void
test_stale_if_error_grace(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "optnode", "sie.conf", "stale_if_error_grace = 60\n");
    struct h_resp r;
    stale_then_fail(t, &r);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, "kept") != 0 ||
        strstr(own_cs(&r), "detail=stale-if-error") == NULL)
        fail_msg("with stale_if_error_grace = 60: status %d, body \"%s\", Cache-Status \"%s\" "
                 "(expected the stored 200 with detail=stale-if-error)",
                 r.status, r.body ? r.body : "", h_cache_status(&r));
    h_resp_free(&r);
    H_PASS(t);
}

static void
test_stale_if_error_grace_default(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "optnode", "sie.conf", "# stale_if_error_grace left at its default (0)\n");
    struct h_resp r;
    stale_then_fail(t, &r);
    if (r.status != 503 || strstr(own_cs(&r), "stale-if-error") != NULL)
        fail_msg("without a grace: status %d, Cache-Status \"%s\" (expected the origin's 503)",
                 r.status, h_cache_status(&r));
    h_resp_free(&r);
    H_PASS(t);
}

/* ---- access log ---- */

/* Lines of the file at path containing needle (static buffer of up to 8 lines, 4 KiB each). */
static int
lines_with(const char *path, const char *needle, char out[8][4096])
{
    char *s = h_read_file(path, NULL);
    int n = 0;
    for (char *p = s; p && *p && n < 8;) {
        char *e = strchr(p, '\n');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len < 4096) {
            memcpy(out[n], p, len);
            out[n][len] = '\0';
            if (strstr(out[n], needle) != NULL)
                n++;
        }
        p = e ? e + 1 : NULL;
    }
    free(s);
    return n;
}

/* Lines in the file at path (0 if it does not exist). */
static int
line_count(const char *path)
{
    char *s = h_read_file(path, NULL);
    int n = 0;
    for (char *p = s; p && (p = strchr(p, '\n')) != NULL; p++)
        n++;
    free(s);
    return n;
}

/* Polls until the file at path has at least `want` lines; returns how many it has. */
static int
wait_lines(const char *path, int want, int timeout_ms)
{
    int64_t deadline = h_now_ms() + timeout_ms;
    int n = line_count(path);
    for (int i = 0; i < 10000 && n < want && h_now_ms() < deadline; i++) {
        h_nap_ms(10);
        n = line_count(path);
    }
    return n;
}

/* The one line of path with needle; fails unless there is exactly one. */
static void
one_line(const char *path, const char *needle, char *line, size_t n)
{
    char found[8][4096];
    int k = lines_with(path, needle, found);
    if (k != 1) {
        char *all = h_read_file(path, NULL);
        fail_msg("%d lines of %s contain \"%s\" (expected 1); the file:\n%s", k, path, needle,
                 all ? all : "(unreadable)");
    }
    snprintf(line, n, "%s", found[0]);
}

static void
ua_get(struct h_test *t, const char *target, const char *ua, int status, const char *body)
{
    char extra[256];
    snprintf(extra, sizeof(extra), "User-Agent: %s\r\n", ua);
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, target, extra, &r), 0);
    if (r.status != status || r.body == NULL || strcmp(r.body, body) != 0)
        fail_msg("GET %s (%s): status %d, body \"%s\"", target, ua, r.status, r.body ? r.body : "");
    h_resp_free(&r);
}

static void
post(struct h_test *t, const char *target, const char *ua, const char *body)
{
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: %s\r\n"
                     "Content-Length: 5\r\n\r\nhello",
                     target, ua);
    struct h_resp r;
    assert_int_equal(h_request(t->node.port, req, (size_t)n, false, 0, &r), 0);
    if (r.status != 200 || r.body == NULL || strcmp(r.body, body) != 0)
        fail_msg("POST %s: status %d, body \"%s\"", target, r.status, r.body ? r.body : "");
    h_resp_free(&r);
}

/*
 * The combined line for a request: "127.0.0.1 - - [dd/Mon/yyyy:hh:mm:ss +0000] " then `rest`
 * exactly up to " origin_ms=", then origin_ms (a number, or "-" when origin_dash) and total_ms.
 */
static void
expect_combined(const char *line, const char *rest, bool origin_dash)
{
    int day, year, hh, mm, ss, used = 0;
    char mon[4];
    if (sscanf(line, "127.0.0.1 - - [%2d/%3[A-Za-z]/%4d:%2d:%2d:%2d +0000] %n", &day, mon, &year,
               &hh, &mm, &ss, &used) != 6 ||
        used == 0)
        fail_msg("access log line does not start like combined: %s", line);
    const char *p = line + used;
    size_t n = strlen(rest);
    if (strncmp(p, rest, n) != 0 || strncmp(p + n, " origin_ms=", 11) != 0)
        fail_msg("access log line:\n  %s\nexpected after the time:\n  %s origin_ms=...", line,
                 rest);
    p += n + 11;
    char *end;
    if (origin_dash) {
        if (strncmp(p, "- ", 2) != 0)
            fail_msg("access log line has origin_ms \"%.12s\" (expected \"-\"): %s", p, line);
        p += 2;
    } else {
        strtod(p, &end);
        if (end == p || *end != ' ')
            fail_msg("access log line has no origin_ms number: %s", line);
        p = end + 1;
    }
    if (strncmp(p, "total_ms=", 9) != 0)
        fail_msg("access log line does not end with total_ms: %s", line);
    strtod(p + 9, &end);
    if (end == p + 9 || *end != '\0')
        fail_msg("access log line has a bad total_ms: %s", line);
}

static void
test_access_log_combined(void **state)
{
    struct h_test *t = *state;
    char log[512], rotated[512], text[1024];
    h_path(t, "access.log", log, sizeof(log));
    h_path(t, "access.log.1", rotated, sizeof(rotated));
    snprintf(text, sizeof(text), "access_log = %s\n", log);
    h_node_start_conf(t, "optnode", "alog.conf", text);
    const char *target = "/al?cc=max-age=60&body=hello";
    ua_get(t, target, "ua-miss", 200, "hello");
    ua_get(t, target, "ua-hit", 200, "hello");
    post(t, "/alp?body=posted", "ua-post", "posted");
    ua_get(t, target, "q\"b\\s", 200, "hello");
    int n = wait_lines(log, 4, H_TIMEOUT_MS);
    char *all = h_read_file(log, NULL);
    printf("options: access log (combined), %d lines:\n%s", n, all ? all : "(none)\n");
    free(all);
    if (n != 4)
        fail_msg("%s has %d lines after 4 requests", log, n);

    char line[4096];
    one_line(log, "\"ua-miss\"", line, sizeof(line));
    expect_combined(line,
                    "\"GET /al?cc=max-age=60&body=hello HTTP/1.1\" 200 5 \"-\" \"ua-miss\" "
                    "cache=miss",
                    false);
    one_line(log, "\"ua-hit\"", line, sizeof(line));
    expect_combined(line,
                    "\"GET /al?cc=max-age=60&body=hello HTTP/1.1\" 200 5 \"-\" \"ua-hit\" "
                    "cache=hit",
                    true);
    one_line(log, "\"ua-post\"", line, sizeof(line));
    expect_combined(line, "\"POST /alp?body=posted HTTP/1.1\" 200 6 \"-\" \"ua-post\" cache=pass",
                    false);
    one_line(log, "\"q\\\"b\\\\s\"", line, sizeof(line));
    expect_combined(line,
                    "\"GET /al?cc=max-age=60&body=hello HTTP/1.1\" 200 5 \"-\" "
                    "\"q\\\"b\\\\s\" cache=hit",
                    true);

    /* Rotation: move the file away, signal, and the next line goes to a new file at the path. */
    if (rename(log, rotated) != 0)
        fail_msg("cannot rename %s", log);
    if (kill(t->node.proc.pid, SIGUSR1) != 0)
        fail_msg("cannot signal the node");
    int64_t deadline = h_now_ms() + H_TIMEOUT_MS;
    while (access(log, F_OK) != 0 && h_now_ms() < deadline)
        h_nap_ms(10);
    if (access(log, F_OK) != 0)
        fail_msg("%s was not created again within %d ms of SIGUSR1", log, H_TIMEOUT_MS);
    ua_get(t, target, "ua-after-rotation", 200, "hello");
    n = wait_lines(log, 1, H_TIMEOUT_MS);
    all = h_read_file(log, NULL);
    printf("options: after rotation, the new file has %d lines:\n%s", n, all ? all : "(none)\n");
    free(all);
    one_line(log, "\"ua-after-rotation\"", line, sizeof(line));
    expect_combined(line,
                    "\"GET /al?cc=max-age=60&body=hello HTTP/1.1\" 200 5 \"-\" "
                    "\"ua-after-rotation\" cache=hit",
                    true);
    if (n != 1)
        fail_msg("the reopened %s has %d lines (expected 1)", log, n);
    if (line_count(rotated) != 4)
        fail_msg("the rotated file has %d lines (expected the first 4)", line_count(rotated));
    H_PASS(t);
}

/* Fails unless line is one JSON object holding every one of the members. */
static void
expect_json(const char *line, const char *const *members)
{
    size_t n = strlen(line);
    if (n < 2 || line[0] != '{' || line[n - 1] != '}' || strncmp(line, "{\"time\":\"", 9) != 0)
        fail_msg("access log line is not a JSON object: %s", line);
    for (const char *const *m = members; *m; m++)
        if (strstr(line, *m) == NULL)
            fail_msg("access log line lacks %s: %s", *m, line);
    static const char *const keys[] = {"\"client\":\"127.0.0.1\"", "\"protocol\":\"HTTP/1.1\"",
                                       "\"referer\":null", "\"total_ms\":", NULL};
    for (const char *const *k = keys; *k; k++)
        if (strstr(line, *k) == NULL)
            fail_msg("access log line lacks %s: %s", *k, line);
}

static void
test_access_log_json(void **state)
{
    struct h_test *t = *state;
    char log[512], text[1024];
    h_path(t, "access.json", log, sizeof(log));
    snprintf(text, sizeof(text), "access_log = %s\naccess_log_format = json\n", log);
    h_node_start_conf(t, "optnode", "alog.conf", text);
    const char *target = "/aj?cc=max-age=60&body=hello";
    ua_get(t, target, "ua-miss", 200, "hello");
    ua_get(t, target, "ua-hit", 200, "hello");
    post(t, "/ajp?body=posted", "ua-post", "posted");
    ua_get(t, target, "q\"b\\s", 200, "hello");
    int n = wait_lines(log, 4, H_TIMEOUT_MS);
    char *all = h_read_file(log, NULL);
    printf("options: access log (json), %d lines:\n%s", n, all ? all : "(none)\n");
    free(all);
    if (n != 4)
        fail_msg("%s has %d lines after 4 requests", log, n);
    char line[4096];
    one_line(log, "\"ua-miss\"", line, sizeof(line));
    expect_json(line, (const char *const[]){
                          "\"method\":\"GET\"", "\"target\":\"/aj?cc=max-age=60&body=hello\"",
                          "\"status\":200", "\"bytes\":5", "\"cache\":\"miss\"", NULL});
    one_line(log, "\"ua-hit\"", line, sizeof(line));
    expect_json(line, (const char *const[]){"\"status\":200", "\"bytes\":5", "\"cache\":\"hit\"",
                                            "\"origin_ms\":null", NULL});
    one_line(log, "\"ua-post\"", line, sizeof(line));
    expect_json(line, (const char *const[]){"\"method\":\"POST\"", "\"status\":200", "\"bytes\":6",
                                            "\"cache\":\"pass\"", NULL});
    one_line(log, "\"user_agent\":\"q\\\"b\\\\s\"", line, sizeof(line));
    expect_json(line, (const char *const[]){"\"cache\":\"hit\"", NULL});
    H_PASS(t);
}

/* The TCP congestion control of the node's side of the connection c to `port`, as ss shows it
 * (several joined with spaces if ss lists more than one; "" when none). */
static void
server_side_cc(struct h_test *t, const struct h_conn *c, int port, char *out, size_t n)
{
    struct sockaddr_in me;
    socklen_t len = sizeof(me);
    assert_int_equal(getsockname(c->fd, (struct sockaddr *)&me, &len), 0);
    char filter[96], path[600];
    snprintf(filter, sizeof(filter), "( sport = :%d and dport = :%d )", port, ntohs(me.sin_port));
    h_path(t, "ss.out", path, sizeof(path));
    unlink(path); /* h_run_split appends */
    char *const argv[] = {"ss", "-tinH", "state", "established", filter, NULL};
    if (h_run_split(argv, path, "/dev/null", NULL, 10000) != 0)
        fail_msg("ss (iproute2) did not run: tests/deps.sh installs it");
    char *text = h_read_file(path, NULL);
    assert_non_null(text);
    out[0] = '\0';
    /* ss -i prints an indented line of TCP details after each socket: option flags (ts, sack,
     * ecn, ...), then the algorithm, then name:value pairs. */
    static const char *const flags[] = {"ts", "sack", "ecn", "ecnseen", "fastopen", "ecn_low"};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] != ' ' && line[0] != '\t')
            continue;
        char *tsave = NULL;
        for (char *w = strtok_r(line, " \t", &tsave); w; w = strtok_r(NULL, " \t", &tsave)) {
            bool flag = strchr(w, ':') != NULL;
            for (size_t i = 0; !flag && i < sizeof(flags) / sizeof(flags[0]); i++)
                flag = strcmp(w, flags[i]) == 0;
            if (flag)
                continue;
            if (strlen(out) + strlen(w) + 2 < n)
                snprintf(out + strlen(out), n - strlen(out), "%s%s", out[0] ? " " : "", w);
            break;
        }
    }
    free(text);
}

/* The kernel's default congestion control for new connections. */
static void
kernel_cc(char out[32])
{
    char *sys = h_read_file("/proc/sys/net/ipv4/tcp_congestion_control", NULL);
    assert_non_null(sys);
    out[0] = '\0';
    sscanf(sys, "%31s", out);
    free(sys);
}

/* One GET of `size` bytes, max-age=60, on c; fails the test unless it is a complete 200. */
static void
get_size(struct h_conn *c, int port, unsigned long size)
{
    if (h_conn_sendf(c, "GET /cc?size=%lu&cc=max-age=60 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n",
                     size, port) != 0)
        fail_msg("send failed");
    struct h_resp r;
    if (h_read_response(c, &r, false, 20000) != 0 || r.status != 200 || !r.complete ||
        r.body_total != size)
        fail_msg("GET of %lu bytes: status %d, %llu bytes", size, r.status,
                 (unsigned long long)r.body_total);
    h_resp_free(&r);
}

static void
test_loopback_congestion(void **state)
{
    struct h_test *t = *state;
    char dflt[32];
    kernel_cc(dflt);
    /* A name other than the kernel's default, so the switch shows. */
    const char *want = strcmp(dflt, "reno") == 0 ? "cubic" : "reno";
    char conf[128];
    snprintf(conf, sizeof(conf), "loopback_congestion_control = %s\n", want);
    h_node_start_conf(t, "optnode", "cc.conf", conf);
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    char got[256];
    get_size(&c, t->node.port, 1024); /* small: nothing is set */
    server_side_cc(t, &c, t->node.port, got, sizeof(got));
    printf("options: kernel default %s; after 1 KiB: %s\n", dflt, got);
    assert_string_equal(got, dflt);
    get_size(&c, t->node.port, 256 * 1024); /* goes out whole: switched */
    server_side_cc(t, &c, t->node.port, got, sizeof(got));
    printf("options: after 256 KiB: %s\n", got);
    if (strcmp(got, want) != 0)
        fail_msg("after a 256 KiB response the connection uses %s, not %s", got, want);
    get_size(&c, t->node.port, 4 * 1024 * 1024); /* larger than the buffer: the kernel's again */
    server_side_cc(t, &c, t->node.port, got, sizeof(got));
    printf("options: after 4 MiB: %s\n", got);
    assert_string_equal(got, dflt);
    get_size(&c, t->node.port, 256 * 1024); /* a HIT now, whole again */
    server_side_cc(t, &c, t->node.port, got, sizeof(got));
    assert_string_equal(got, want);
    h_conn_close(&c);
    H_PASS(t);
}

static void
test_loopback_congestion_off(void **state)
{
    struct h_test *t = *state;
    h_node_start_conf(t, "optnode", "cc.conf", "loopback_congestion_control = off\n");
    char dflt[32];
    kernel_cc(dflt);
    struct h_conn c;
    assert_int_equal(h_conn_open(&c, t->node.port), 0);
    get_size(&c, t->node.port, 256 * 1024);
    char got[256];
    server_side_cc(t, &c, t->node.port, got, sizeof(got));
    assert_string_equal(got, dflt);
    h_conn_close(&c);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_collapse_wait, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_strip_cache_tags_default, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_strip_cache_tags_off, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_stale_if_error_grace, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_stale_if_error_grace_default, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_access_log_combined, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_access_log_json, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_loopback_congestion, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_loopback_congestion_off, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
