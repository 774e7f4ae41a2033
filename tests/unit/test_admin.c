/*
 * Unit tests for the admin listener's purge answer with peers, and for cdn_admin_reconfigure():
 * a listener started in this process (with a store in a temporary directory, no front end) is
 * reconfigured with configs freed right after the call, and a purge in flight keeps the view it
 * started with. Includes admin.c to reach the static JSON writer.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "admin.c"

#include <curl/curl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <unistd.h>

static void
test_purge_json(void **state)
{
    struct cdn_peer_result res[3] = {
        {.url = "http://10.0.0.1:9090", .role = CDN_PEER_PARENT, .status = 200, .purged = 2},
        {.url = "http://10.0.1.1:9090", .role = CDN_PEER_CHILD, .purged = -1},
        {.url = "http://[::1]:9090", .role = CDN_PEER_CHILD, .status = 401, .purged = -1},
    };
    snprintf(res[1].error, sizeof(res[1].error), "timeout after 2000 ms");
    snprintf(res[2].error, sizeof(res[2].error), "HTTP 401: \"x\" <b>");
    size_t len;
    char *s = purge_json(3, res, 3, &len);
    assert_string_equal(
        s,
        "{\"purged\": 3, \"peers\": [{\"peer\": \"http://10.0.0.1:9090\", \"role\": \"parent\", "
        "\"status\": 200, \"purged\": 2}, {\"peer\": \"http://10.0.1.1:9090\", \"role\": "
        "\"child\", \"error\": \"timeout after 2000 ms\"}, {\"peer\": \"http://[::1]:9090\", "
        "\"role\": \"child\", \"status\": 401, \"error\": \"HTTP 401: \\\"x\\\" \\u003cb\\u003e\"}"
        "]}\n");
    assert_int_equal(len, strlen(s));
    free(s);
    s = purge_json(0, res, 0, &len);
    assert_string_equal(s, "{\"purged\": 0, \"peers\": []}\n");
    free(s);
}

/* ---- a listener in this process ---- */

#define TOKEN_A "token-a-0123456789abcdef"
#define TOKEN_B "token-b-0123456789abcdef"
#define TOKEN_C "token-c-0123456789abcdef"
#define TOKEN_P "token-p-0123456789abcdef"

static int
bound_socket(int *port, bool do_listen)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    if (do_listen)
        assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void
set(struct cdn_config *c, const char *key, const char *value)
{
    char err[256];
    if (cdn_config_set(c, key, value, err, sizeof(err)) != 0)
        fail_msg("%s = %s: %s", key, value, err);
}

struct call {
    int port;
    const char *method, *path, *token;
    long status;
    char body[4096];
    size_t len;
};

static size_t
collect(char *data, size_t size, size_t nmemb, void *arg)
{
    struct call *c = arg;
    size_t n = size * nmemb, room = sizeof(c->body) - 1 - c->len;
    memcpy(c->body + c->len, data, n < room ? n : room);
    c->len += n < room ? n : room;
    c->body[c->len] = '\0';
    return n;
}

/* One request to the listener; status 0 when none came back. */
static void *
call_run(void *arg)
{
    struct call *c = arg;
    CURL *e = curl_easy_init();
    char url[256], auth[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", c->port, c->path);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, c->method);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, c);
    c->len = 0;
    c->body[0] = '\0';
    c->status = 0;
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &c->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    return NULL;
}

static long
call(int port, const char *method, const char *path, const char *token, struct call *out)
{
    struct call c = {.port = port, .method = method, .path = path, .token = token};
    call_run(&c);
    if (out)
        *out = c;
    return c.status;
}

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
test_reconfigure(void **state)
{
    char dir[] = "/tmp/cdnode-admin-XXXXXX";
    assert_non_null(mkdtemp(dir));
    struct cdn_config store_cfg;
    cdn_config_defaults(&store_cfg);
    set(&store_cfg, "cache_dir", dir);
    set(&store_cfg, "cache_size", "16m");
    struct cdn_cache *cache = NULL;
    assert_int_equal(cdn_cache_open(&store_cfg, &cache), 0);

    int port;
    close(bound_socket(&port, false));
    char listen_at[64];
    snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%d", port);
    /* The start-up config is freed at once: the listener must have copied what it uses. */
    struct cdn_config *c0 = cdn_calloc(1, sizeof(*c0));
    cdn_config_defaults(c0);
    set(c0, "admin_listen", listen_at);
    set(c0, "admin_token", TOKEN_A);
    set(c0, "cdn_id", "unit-node");
    struct cdn_admin *a = cdn_admin_start(c0, NULL, NULL, cache, NULL);
    assert_non_null(a);
    cdn_config_free(c0);
    free(c0);

    assert_int_equal(call(port, "GET", "/nope", TOKEN_A, NULL), 404);
    assert_int_equal(call(port, "GET", "/nope", TOKEN_B, NULL), 401);
    struct call r;
    assert_int_equal(call(port, "POST", "/purge?all=1", TOKEN_A, &r), 200);
    assert_string_equal(r.body, "{\"purged\": 0}\n");

    /* New token and a child that refuses connections; the peers get the admin token. */
    int refused_port, refused = bound_socket(&refused_port, false);
    char peer[64];
    snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", refused_port);
    struct cdn_config *c1 = cdn_calloc(1, sizeof(*c1));
    cdn_config_defaults(c1);
    set(c1, "admin_token", TOKEN_B);
    set(c1, "purge_children", peer);
    assert_int_equal(cdn_admin_reconfigure(a, c1), 0);
    cdn_config_free(c1);
    free(c1);
    assert_int_equal(call(port, "GET", "/nope", TOKEN_A, NULL), 401);
    assert_int_equal(call(port, "GET", "/nope", TOKEN_B, NULL), 404);
    assert_int_equal(call(port, "POST", "/purge?all=1", TOKEN_B, &r), 200);
    char want[512];
    snprintf(want, sizeof(want),
             "{\"purged\": 0, \"peers\": [{\"peer\": \"%s\", \"role\": \"child\", \"error\": "
             "\"connection refused\"}]}\n",
             peer);
    assert_string_equal(r.body, want);

    /* A parent that takes the request and never answers; while the purge waits on it, the
     * configuration changes again. The purge finishes with the view it started with. */
    int hang_port, hang = bound_socket(&hang_port, true);
    snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", hang_port);
    struct cdn_config *c2 = cdn_calloc(1, sizeof(*c2));
    cdn_config_defaults(c2);
    set(c2, "admin_token", TOKEN_B);
    set(c2, "purge_parents", peer);
    set(c2, "purge_peer_token", TOKEN_P);
    set(c2, "purge_peer_timeout", "10s");
    assert_int_equal(cdn_admin_reconfigure(a, c2), 0);
    cdn_config_free(c2);
    free(c2);
    struct call inflight = {
        .port = port, .method = "POST", .path = "/purge?tag=t1&soft=1", .token = TOKEN_B};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, call_run, &inflight), 0);
    struct pollfd pfd = {.fd = hang, .events = POLLIN};
    assert_int_equal(poll(&pfd, 1, 10000), 1);
    int conn = accept(hang, NULL, NULL);
    assert_true(conn >= 0);
    char head[2048] = "";
    size_t hl = 0;
    while (strstr(head, "\r\n\r\n") == NULL && hl + 1 < sizeof(head)) {
        struct pollfd cp = {.fd = conn, .events = POLLIN};
        assert_int_equal(poll(&cp, 1, 10000), 1);
        ssize_t n = read(conn, head + hl, sizeof(head) - 1 - hl);
        assert_true(n > 0);
        hl += (size_t)n;
        head[hl] = '\0';
    }
    assert_non_null(strstr(head, "POST /purge?tag=t1&soft=1 HTTP/1.1\r\n"));
    assert_non_null(strstr(head, "\r\nAuthorization: Bearer " TOKEN_P "\r\n"));
    assert_non_null(strstr(head, "\r\n" CDN_PEERS_MARKER ": unit-node\r\n"));

    struct cdn_config *c3 = cdn_calloc(1, sizeof(*c3));
    cdn_config_defaults(c3);
    set(c3, "admin_token", TOKEN_C);
    assert_int_equal(cdn_admin_reconfigure(a, c3), 0);
    cdn_config_free(c3);
    free(c3);
    /* New requests see the new view while the old purge still waits on its peer. */
    assert_int_equal(call(port, "GET", "/nope", TOKEN_B, NULL), 401);
    assert_int_equal(call(port, "POST", "/purge?all=1", TOKEN_C, &r), 200);
    assert_string_equal(r.body, "{\"purged\": 0}\n");
    close(conn); /* no answer: the peer fails */
    pthread_join(th, NULL);
    assert_int_equal(inflight.status, 200);
    snprintf(want, sizeof(want),
             "{\"purged\": 0, \"peers\": [{\"peer\": \"%s\", \"role\": \"parent\"", peer);
    if (strncmp(inflight.body, want, strlen(want)) != 0 ||
        strstr(inflight.body, "\"error\": ") == NULL)
        fail_msg("in-flight purge answered \"%s\"", inflight.body);

    cdn_admin_stop(a);
    cdn_cache_close(cache);
    cdn_config_free(&store_cfg);
    close(refused);
    close(hang);
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int
main(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_purge_json),
        cmocka_unit_test(test_reconfigure),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
