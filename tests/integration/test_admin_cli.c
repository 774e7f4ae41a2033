/*
 * Operating the node: admin listener authentication, the command line (-t, --help, --version),
 * draining on SIGTERM, and the TLS client listener.
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char *
cdnode_bin(void)
{
    const char *bin = getenv("CDNODE_BIN");
    assert_non_null(bin);
    return bin;
}

static void
test_admin_auth(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    int port = t->node.admin_port;
    struct h_resp r;

    assert_int_equal(h_get(port, "/healthz", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);

    static const char *const paths[] = {"/status", "/metrics", "/no-such-endpoint"};
    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
        assert_int_equal(h_get(port, paths[i], NULL, &r), 0);
        if (r.status != 401)
            fail_msg("%s without a token: %d (expected 401)", paths[i], r.status);
        h_resp_free(&r);
        assert_int_equal(
            h_get(port, paths[i], "Authorization: Bearer wrong-token-0123456789\r\n", &r), 0);
        if (r.status != 401)
            fail_msg("%s with a wrong token: %d (expected 401)", paths[i], r.status);
        h_resp_free(&r);
        /* A prefix of the right token is still wrong. */
        assert_int_equal(h_get(port, paths[i], "Authorization: Bearer integration-admin\r\n", &r),
                         0);
        assert_int_equal(r.status, 401);
        h_resp_free(&r);
        assert_int_equal(h_get(port, paths[i], "Authorization: Bearer " H_TOKEN "\r\n", &r), 0);
        if (r.status == 401)
            fail_msg("%s with the right token: 401", paths[i]);
        h_resp_free(&r);
    }
    assert_int_equal(h_get(port, "/metrics", "Authorization: Bearer " H_TOKEN "\r\n", &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    H_PASS(t);
}

static void
test_config_check(void **state)
{
    struct h_test *t = *state;
    char good[512], bad[512], out[512], err[512];
    h_path(t, "good.conf", good, sizeof(good));
    h_path(t, "bad.conf", bad, sizeof(bad));
    h_path(t, "check.out", out, sizeof(out));
    h_path(t, "check.err", err, sizeof(err));
    assert_int_equal(h_write_file(good,
                                  "# a complete configuration\n"
                                  "listen = 127.0.0.1:%d\n"
                                  "origin = %s\n"
                                  "origin_first_byte_timeout = 2s\n"
                                  "max_request_body = 4m\n"
                                  "cdn_id = checknode\n",
                                  h_free_port(), t->origin_url),
                     0);
    assert_int_equal(h_write_file(bad,
                                  "# the third line is wrong\n"
                                  "origin = %s\n"
                                  "no_such_key = 1\n",
                                  t->origin_url),
                     0);
    char *argv_good[] = {(char *)cdnode_bin(), "-t", "-c", good, NULL};
    int rc = h_run_split(argv_good, out, err, NULL, 10000);
    if (rc != 0) {
        char *e = h_read_file(err, NULL);
        fail_msg("cdnode -t -c good.conf exited %d: %s", rc, e ? e : "");
    }
    unlink(err);
    char *argv_bad[] = {(char *)cdnode_bin(), "-t", "-c", bad, NULL};
    rc = h_run_split(argv_bad, out, err, NULL, 10000);
    assert_true(rc > 0);
    char *e = h_read_file(err, NULL);
    assert_non_null(e);
    if (strstr(e, "bad.conf:3:") == NULL)
        fail_msg("stderr does not name bad.conf:3: %s", e);
    free(e);
    H_PASS(t);
}

static void
test_help_and_version(void **state)
{
    struct h_test *t = *state;
    char out[512], err[512];
    h_path(t, "help.out", out, sizeof(out));
    h_path(t, "help.err", err, sizeof(err));
    char *argv_help[] = {(char *)cdnode_bin(), "--help", NULL};
    assert_int_equal(h_run_split(argv_help, out, err, NULL, 10000), 0);
    char *s = h_read_file(out, NULL);
    assert_non_null(s);
    if (strstr(s, "--listen") == NULL || strstr(s, "usage") == NULL)
        fail_msg("--help output lacks usage or --listen: %s", s);
    free(s);

    h_path(t, "version.out", out, sizeof(out));
    char *argv_version[] = {(char *)cdnode_bin(), "--version", NULL};
    assert_int_equal(h_run_split(argv_version, out, err, NULL, 10000), 0);
    s = h_read_file(out, NULL);
    assert_non_null(s);
    assert_non_null(strstr(s, "cdnode"));
    assert_true(strpbrk(s, "0123456789") != NULL);
    free(s);

    /* An unknown flag is a usage error, not a start. */
    h_path(t, "bad-flag.out", out, sizeof(out));
    char *argv_bad[] = {(char *)cdnode_bin(), "--no-such-flag", NULL};
    int rc = h_run_split(argv_bad, out, err, NULL, 10000);
    assert_true(rc > 0);
    H_PASS(t);
}

struct bg_get {
    int port;
    const char *path;
    struct h_resp r;
    int rc;
    atomic_bool done;
};

static void *
bg_get_main(void *arg)
{
    struct bg_get *g = arg;
    g->rc = h_get(g->port, g->path, NULL, &g->r);
    atomic_store(&g->done, true);
    return NULL;
}

static void
test_sigterm_drains(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, NULL), 0);
    /* On the heap: if an assertion below jumps out, the thread may still write to it. */
    struct bg_get *g = calloc(1, sizeof(*g));
    assert_non_null(g);
    g->port = t->node.port;
    g->path = "/slow?delay_ms=1000&body=finished";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, bg_get_main, g), 0);
    int64_t deadline = h_now_ms() + 3000;
    while (h_origin_count(t, "/slow") < 1 && h_now_ms() < deadline)
        h_nap_ms(10);
    assert_int_equal(h_origin_count(t, "/slow"), 1);

    int64_t t0 = h_now_ms();
    assert_int_equal(kill(t->node.proc.pid, SIGTERM), 0);
    int st = 0;
    bool exited = h_proc_wait(&t->node.proc, 5000, &st);
    int64_t took = h_now_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(g->rc, 0);
    assert_int_equal(g->r.status, 200);
    assert_true(g->r.complete);
    assert_string_equal(g->r.body, "finished");
    h_resp_free(&g->r);
    free(g);
    if (!exited)
        fail_msg("cdnode still running 5 s after SIGTERM");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("cdnode ended with wait status 0x%x after SIGTERM (expected exit 0)", st);
    print_message("exited %lld ms after SIGTERM\n", (long long)took);
    H_PASS(t);
}

static void
test_listen_tls(void **state)
{
    struct h_test *t = *state;
    char cert[512], key[512], conf[512];
    assert_int_equal(h_make_cert(t, "front", cert, key, sizeof(cert)), 0);
    int tls_port = h_free_port();
    h_path(t, "tls.conf", conf, sizeof(conf));
    assert_int_equal(h_write_file(conf,
                                  "listen_tls = 127.0.0.1:%d\n"
                                  "tls_cert = %s\n"
                                  "tls_key = %s\n",
                                  tls_port, cert, key),
                     0);
    assert_int_equal(h_node_start(t, &t->node, "testnode", t->origin_url, H_ARGS("-c", conf)), 0);
    assert_true(h_wait_port(tls_port, 5000));

    char url[128], out[512], log[512];
    snprintf(url, sizeof(url), "https://127.0.0.1:%d/tls?body=secure%%20body", tls_port);
    h_path(t, "curl.body", out, sizeof(out));
    h_path(t, "curl.log", log, sizeof(log));
    char *argv[] = {"curl", "-sS", "--noproxy", "*",  "--max-time",   "10", "--cacert",
                    cert,   "-o",  out,         "-w", "%{http_code}", url,  NULL};
    int rc = h_run(argv, log, NULL, 15000);
    char *l = h_read_file(log, NULL);
    if (rc != 0)
        fail_msg("curl over TLS exited %d: %s", rc, l ? l : "");
    assert_non_null(l);
    assert_string_equal(l, "200");
    free(l);
    char *body = h_read_file(out, NULL);
    assert_non_null(body);
    assert_string_equal(body, "secure body");
    free(body);
    assert_int_equal(h_origin_count(t, "/tls"), 1);
    /* Plain HTTP keeps working next to it. */
    struct h_resp r;
    assert_int_equal(h_get(t->node.port, "/plain?body=p", NULL, &r), 0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_admin_auth, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_config_check, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_help_and_version, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_drains, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_listen_tls, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
