/*
 * The admin status page and /status.json of the real binary: who may read them (the bearer token
 * in the Authorization field, or for these two only in a `token` query parameter), the numbers in
 * the JSON after known traffic, and the page in headless Chromium: its script must run under the
 * page's Content-Security-Policy, fetch /status.json with the token from the page's URL and show
 * the same numbers. The browser part is skipped when /usr/bin/chromium is absent.
 *
 * Known traffic: /st/a (300 bytes) miss + hit, /st/b (200 bytes) miss + hit + hit, so 5 requests,
 * 3 hits, 2 misses, 2 origin requests, 1200 body bytes out, 2 stored objects.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CHROMIUM "/usr/bin/chromium"
/* Chromium starts in about a second; this bounds a browser that hangs. */
#define CHROMIUM_TIMEOUT_MS 90000

#define AUTH "Authorization: Bearer " H_TOKEN "\r\n"

static void
traffic(struct h_test *t)
{
    static const char *const targets[] = {
        "/st/a?size=300&cc=max-age=60", "/st/a?size=300&cc=max-age=60",
        "/st/b?size=200&cc=max-age=60", "/st/b?size=200&cc=max-age=60",
        "/st/b?size=200&cc=max-age=60",
    };
    for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
        struct h_resp r;
        if (h_get(t->node.port, targets[i], NULL, &r) != 0)
            fail_msg("GET %s: no response", targets[i]);
        if (r.status != 200 || !r.complete)
            fail_msg("GET %s: status %d complete %d", targets[i], r.status, r.complete);
        h_resp_free(&r);
    }
    assert_int_equal(h_origin_count(t, "/st/a"), 1);
    assert_int_equal(h_origin_count(t, "/st/b"), 1);
}

static int
admin_status(struct h_test *t, const char *target, const char *extra)
{
    struct h_resp r;
    if (h_get(t->node.admin_port, target, extra, &r) != 0)
        fail_msg("admin GET %s: no response", target);
    int status = r.status;
    h_resp_free(&r);
    return status;
}

/* The body of GET /status.json (must be a 200 JSON answer); caller frees. */
static char *
status_json(struct h_test *t)
{
    struct h_resp r;
    assert_int_equal(h_get(t->node.admin_port, "/status.json", AUTH, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(h_header(&r, "Content-Type"), "application/json");
    char *body = strdup(r.body);
    h_resp_free(&r);
    return body;
}

/* Value of the counter `name` in the object `obj` of the JSON (one object per line). */
static unsigned long long
json_counter(const char *json, const char *obj, const char *name)
{
    char key[64];
    snprintf(key, sizeof(key), "\n  \"%s\": {", obj);
    const char *line = strstr(json, key);
    if (line == NULL)
        fail_msg("no \"%s\" object in %s", obj, json);
    const char *end = strchr(line + 1, '\n');
    snprintf(key, sizeof(key), "\"%s\": ", name);
    const char *v = strstr(line, key);
    if (v == NULL || (end && v > end))
        fail_msg("no %s.%s in %s", obj, name, json);
    return strtoull(v + strlen(key), NULL, 10);
}

#define EXPECT_COUNTER(json, obj, name, want)                                                      \
    do {                                                                                           \
        unsigned long long got_ = json_counter((json), (obj), (name));                             \
        if (got_ != (want))                                                                        \
            fail_msg("%s.%s = %llu (expected %llu)", (obj), (name), got_,                          \
                     (unsigned long long)(want));                                                  \
    } while (0)

static void
test_status_json(void **state)
{
    struct h_test *t = *state;
    assert_int_equal(h_node_start(t, &t->node, "status-node", t->origin_url, NULL), 0);

    /* Without a token, with a wrong one, with a prefix of the right one: 401. */
    static const char *const denied[] = {
        "/",
        "/status.json",
        "/?token=wrong-token-0123456789",
        "/status.json?token=integration",
        "/?token=",
        "/?tok=" H_TOKEN,
    };
    for (size_t i = 0; i < sizeof(denied) / sizeof(denied[0]); i++)
        if (admin_status(t, denied[i], NULL) != 401)
            fail_msg("GET %s: not 401", denied[i]);
    /* The query parameter is only for these two pages: not for /metrics, never for a purge. */
    assert_int_equal(admin_status(t, "/metrics?token=" H_TOKEN, NULL), 401);
    struct h_resp r;
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /purge?all=1&token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Length: 0\r\n\r\n",
                     H_TOKEN);
    assert_int_equal(h_request(t->node.admin_port, req, (size_t)n, false, 0, &r), 0);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);
    n = snprintf(req, sizeof(req), "PURGE /st/a?token=%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                 H_TOKEN);
    assert_int_equal(h_request(t->node.admin_port, req, (size_t)n, false, 0, &r), 0);
    assert_int_equal(r.status, 401);
    h_resp_free(&r);

    /* The page, by header or by query; it never echoes the token. */
    assert_int_equal(admin_status(t, "/", AUTH), 200);
    assert_int_equal(h_get(t->node.admin_port, "/?token=" H_TOKEN, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(h_header(&r, "Content-Type"), "text/html; charset=utf-8");
    assert_string_equal(h_header(&r, "Referrer-Policy"), "no-referrer");
    assert_string_equal(h_header(&r, "Cache-Control"), "no-store");
    const char *csp = h_header(&r, "Content-Security-Policy");
    assert_non_null(csp);
    assert_non_null(strstr(csp, "default-src 'none'"));
    assert_non_null(strstr(csp, "script-src 'sha256-"));
    assert_non_null(strstr(r.body, "fetch('/status.json'"));
    assert_null(strstr(r.body, H_TOKEN));
    h_resp_free(&r);
    assert_int_equal(admin_status(t, "/status.json?token=" H_TOKEN, NULL), 200);

    char *json = status_json(t);
    EXPECT_COUNTER(json, "front", "requests", 0);
    free(json);

    traffic(t);
    json = status_json(t);
    assert_non_null(strstr(json, "\n  \"node\": \"status-node\",\n"));
    EXPECT_COUNTER(json, "front", "requests", 5);
    EXPECT_COUNTER(json, "front", "hits", 3);
    EXPECT_COUNTER(json, "front", "misses", 2);
    EXPECT_COUNTER(json, "front", "stale", 0);
    EXPECT_COUNTER(json, "front", "revalidated", 0);
    EXPECT_COUNTER(json, "front", "stored", 2);
    EXPECT_COUNTER(json, "front", "bytes_out", 1200);
    EXPECT_COUNTER(json, "origin", "requests", 2);
    EXPECT_COUNTER(json, "origin", "errors", 0);
    EXPECT_COUNTER(json, "collapse", "leaders", 2);
    EXPECT_COUNTER(json, "store", "objects", 2);
    EXPECT_COUNTER(json, "connections", "refused", 0);
    EXPECT_COUNTER(json, "connections", "head_timeouts", 0);
    EXPECT_COUNTER(json, "purge", "from_clients", 0);
    EXPECT_COUNTER(json, "purge", "peer_requests", 0);
    if (json_counter(json, "store", "used_pages") == 0 ||
        json_counter(json, "store", "used_pages") > json_counter(json, "store", "map_pages"))
        fail_msg("store pages make no sense: %s", json);
    char origins[256];
    snprintf(origins, sizeof(origins),
             "\n  \"origins\": [{\"url\": \"%s\", \"healthy\": true, \"outstanding\": 0, "
             "\"requests\": 2, \"failures\": 0}]\n",
             t->origin_url);
    if (strstr(json, origins) == NULL)
        fail_msg("no origins array with %s in %s", t->origin_url, json);
    free(json);

    /* A purge from a client is counted (no peers are configured: none forwarded). */
    static const char purge_req[] = "POST /purge?all=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n" AUTH
                                    "Content-Length: 0\r\n\r\n";
    assert_int_equal(h_request(t->node.admin_port, purge_req, sizeof(purge_req) - 1, false, 0, &r),
                     0);
    assert_int_equal(r.status, 200);
    h_resp_free(&r);
    json = status_json(t);
    EXPECT_COUNTER(json, "purge", "from_clients", 1);
    EXPECT_COUNTER(json, "purge", "from_peers", 0);
    EXPECT_COUNTER(json, "purge", "peer_requests", 0);
    EXPECT_COUNTER(json, "store", "objects", 0);
    free(json);
    H_PASS(t);
}

/*
 * The start tag (into *tag) and the text of the element with that id in a serialized DOM, both
 * malloc'ed. The elements looked at hold plain text, so the text runs to the next '<'.
 */
static char *
dom_text(const char *dom, const char *id, char **tag)
{
    char key[64];
    snprintf(key, sizeof(key), " id=\"%s\"", id);
    const char *at = strstr(dom, key);
    if (at == NULL)
        fail_msg("no element with id %s in the DOM", id);
    const char *open = at;
    while (open > dom && *open != '<')
        open--;
    const char *gt = strchr(at, '>');
    assert_non_null(gt);
    const char *lt = strchr(gt, '<');
    assert_non_null(lt);
    if (tag)
        *tag = strndup(open, (size_t)(gt + 1 - open));
    return strndup(gt + 1, (size_t)(lt - gt - 1));
}

#define EXPECT_TEXT(dom, id, want)                                                                 \
    do {                                                                                           \
        char *got_ = dom_text((dom), (id), NULL);                                                  \
        if (strcmp(got_, (want)) != 0)                                                             \
            fail_msg("#%s shows \"%s\" (expected \"%s\")", (id), got_, (want));                    \
        free(got_);                                                                                \
    } while (0)

/* Runs headless Chromium on the page with mode ("--dump-dom" or "--screenshot=FILE"), stdout to
 * out_path. Fails the test if it does not exit 0 in time. */
static void
chromium(struct h_test *t, const char *mode, const char *out_path)
{
    char profile[512], profile_arg[600], url[128], err[512];
    h_path(t, "chromium-profile", profile, sizeof(profile));
    snprintf(profile_arg, sizeof(profile_arg), "--user-data-dir=%s", profile);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/?token=%s", t->node.admin_port, H_TOKEN);
    h_path(t, "chromium.log", err, sizeof(err));
    /* The virtual time budget lets the page's first fetch() (and the next, 2 s later) finish
     * before the DOM is taken: virtual time does not advance while a fetch is pending. */
    char *argv[] = {CHROMIUM,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    profile_arg,
                    "--window-size=1200,900",
                    "--virtual-time-budget=3000",
                    (char *)mode,
                    url,
                    NULL};
    int rc = h_run_split(argv, out_path, err, NULL, CHROMIUM_TIMEOUT_MS);
    if (rc != 0) {
        char *log = h_read_file(err, NULL);
        fail_msg("chromium %s exited with %d:\n%s", mode, rc, log ? log : "(no log)");
    }
}

static void
test_status_page_in_chromium(void **state)
{
    struct h_test *t = *state;
    if (access(CHROMIUM, X_OK) != 0) {
        print_message("SKIP: %s not installed (Debian package chromium): status page not "
                      "checked in a browser\n",
                      CHROMIUM);
        H_PASS(t);
        skip();
    }
    assert_int_equal(h_node_start(t, &t->node, "status-node", t->origin_url, NULL), 0);
    traffic(t);

    char dom_path[512];
    h_path(t, "dom.html", dom_path, sizeof(dom_path));
    chromium(t, "--dump-dom", dom_path);
    char *dom = h_read_file(dom_path, NULL);
    assert_non_null(dom);

    /* "live" only once the script ran (allowed by the CSP) and fetch() with the token got a 200. */
    char *tag;
    char *state_text = dom_text(dom, "state", &tag);
    if (strncmp(state_text, "live, updated ", 14) != 0 || strstr(tag, "class=\"ok\"") == NULL)
        fail_msg("the page did not refresh: %s%s", tag, state_text);
    free(tag);
    free(state_text);

    /* Nothing has changed the counters since the page took them: JSON and page agree. */
    char *json = status_json(t);
    EXPECT_COUNTER(json, "front", "requests", 5);
    EXPECT_TEXT(dom, "node", "status-node");
    EXPECT_TEXT(dom, "requests", "5");
    EXPECT_TEXT(dom, "hits", "3");
    EXPECT_TEXT(dom, "stale", "0");
    EXPECT_TEXT(dom, "revalidated", "0");
    EXPECT_TEXT(dom, "misses", "2");
    EXPECT_TEXT(dom, "stored", "2");
    EXPECT_TEXT(dom, "hit_ratio", "60.0 %");
    EXPECT_TEXT(dom, "bytes_out", "1.2 KiB");
    char *bytes = dom_text(dom, "bytes_out", &tag);
    if (strstr(tag, "title=\"1,200 bytes\"") == NULL)
        fail_msg("bytes out: no exact count in %s", tag);
    free(tag);
    free(bytes);
    EXPECT_TEXT(dom, "origin_requests", "2");
    EXPECT_TEXT(dom, "origin_errors", "0");
    EXPECT_TEXT(dom, "leaders", "2");
    EXPECT_TEXT(dom, "followers", "0");
    EXPECT_TEXT(dom, "objects", "2");

    char want[256];
    snprintf(want, sizeof(want), "%llu of ", json_counter(json, "store", "used_pages"));
    char *pages = dom_text(dom, "pages", NULL);
    if (strncmp(pages, want, strlen(want)) != 0 || strstr(pages, " pages") == NULL)
        fail_msg("store pages shown as \"%s\" (JSON: %s)", pages, json);
    free(pages);
    char *bar = dom_text(dom, "pages_bar", &tag);
    if (strstr(tag, "style=\"width: ") == NULL)
        fail_msg("the store bar was not drawn: %s", tag);
    free(tag);
    free(bar);
    free(json);

    snprintf(want, sizeof(want), "<tr><td>%s</td><td>true</td><td>0</td><td>2</td><td>0</td></tr>",
             t->origin_url);
    if (strstr(dom, "<tr><th>URL</th><th>healthy</th><th>outstanding</th><th>requests</th>"
                    "<th>failures</th></tr>") == NULL ||
        strstr(dom, want) == NULL)
        fail_msg("origins table without %s", t->origin_url);
    free(dom);

    /* It renders: a non-empty PNG. */
    char png_path[512], arg[600], out[512];
    h_path(t, "status.png", png_path, sizeof(png_path));
    h_path(t, "screenshot.out", out, sizeof(out));
    snprintf(arg, sizeof(arg), "--screenshot=%s", png_path);
    chromium(t, arg, out);
    size_t len = 0;
    char *png = h_read_file(png_path, &len);
    if (png == NULL || len < 1000 || memcmp(png, "\x89PNG\r\n\x1a\n", 8) != 0)
        fail_msg("no screenshot at %s (%zu bytes)", png_path, len);
    free(png);
    H_PASS(t);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_status_json, h_setup, h_teardown),
        cmocka_unit_test_setup_teardown(test_status_page_in_chromium, h_setup, h_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
