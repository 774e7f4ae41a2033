/*
 * Unit tests for the configuration: the value parsers, every key's setter (a good and a bad value
 * each), the file syntax with its FILE:LINE errors, the cross-key checks, and the shipped example
 * file, which must load and must document the same defaults the code has.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/accesslog.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/headers.h"
#include "cdnode/log.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Writes len bytes to a new file under /tmp and returns its path (caller unlinks and frees). */
static char *
tmp_file_n(const char *text, size_t len)
{
    char *path = cdn_strdup("/tmp/cdn_test_config_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

static char *
tmp_file(const char *text)
{
    return tmp_file_n(text, strlen(text));
}

/*
 * Loads len bytes of file text into c. On error the message is copied to err with the temporary
 * path replaced by "F", so tests can compare whole messages.
 */
static int
load_text_n(struct cdn_config *c, const char *text, size_t len, char *err, size_t errlen)
{
    char *path = tmp_file_n(text, len);
    char raw[8192] = "";
    int rc = cdn_config_load(c, path, raw, sizeof(raw));
    if (rc != 0) {
        size_t plen = strlen(path);
        assert_memory_equal(raw, path, plen);
        snprintf(err, errlen, "F%s", raw + plen);
    }
    unlink(path);
    free(path);
    return rc;
}

static int
load_text(struct cdn_config *c, const char *text, char *err, size_t errlen)
{
    return load_text_n(c, text, strlen(text), err, errlen);
}

/* Every field as text, to compare whole configs (the private flag is left out on purpose). */
static char *
dump(const struct cdn_config *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
#define S(x) fprintf(f, #x "=%s\n", c->x ? c->x : "(null)")
#define U(x) fprintf(f, #x "=%" PRIu64 "\n", (uint64_t)c->x)
    S(listen);
    S(listen_tls);
    S(tls_cert);
    S(tls_key);
    U(workers);
    U(connection_limit);
    U(connection_timeout_s);
    U(connection_memory);
    U(listen_backlog);
    U(send_buffer);
    U(loopback_send_buffer);
    S(loopback_congestion_control);
    U(max_request_body);
    for (size_t i = 0; i < c->n_origins; i++)
        fprintf(f, "origin=%s\n", c->origins[i]);
    for (size_t i = 0; i < c->n_parents; i++)
        fprintf(f, "parent=%s\n", c->parents[i]);
    U(cache_set_cookie);
    U(request_head_timeout_s);
    U(origin_connect_timeout_ms);
    U(origin_first_byte_timeout_ms);
    U(origin_idle_timeout_ms);
    S(origin_ca_file);
    U(max_origin_headers);
    S(cdn_id);
    U(loop_allowance);
    U(forwarded);
    U(x_forwarded_for);
    U(trusted_hops);
    S(cache_dir);
    U(cache_size);
    U(max_object_size);
    U(max_variants);
    U(cache_writemap);
    U(cache_key_ignore_query);
    U(cache_key_sort_query);
    for (size_t i = 0; i < c->n_cache_key_drop_params; i++)
        fprintf(f, "drop=%s\n", c->cache_key_drop_params[i]);
    for (size_t i = 0; i < c->n_target_cache_control; i++)
        fprintf(f, "target=%s\n", c->target_cache_control[i]);
    U(heuristic_percent);
    U(heuristic_max_s);
    S(admin_listen);
    S(admin_token);
    for (size_t i = 0; i < c->n_purge_parents; i++)
        fprintf(f, "purge_parent=%s\n", c->purge_parents[i]);
    for (size_t i = 0; i < c->n_purge_children; i++)
        fprintf(f, "purge_child=%s\n", c->purge_children[i]);
    S(purge_peer_token);
    S(purge_peer_ca_file);
    U(purge_peer_timeout_ms);
    U(log_level);
    S(access_log);
    U(access_log_format);
#undef S
#undef U
    fclose(f);
    return buf;
}

/* --- value parsers ---------------------------------------------------------------------------- */

struct num_case {
    const char *in;
    uint64_t want;
};

static void
test_parse_size(void **state)
{
    (void)state;
    static const struct num_case good[] = {
        {"0", 0},
        {"123", 123},
        {"1k", 1024},
        {"64K", 65536},
        {"16m", 16777216},
        {"1G", 1073741824},
        {"007", 7},
        {"18446744073709551615", UINT64_MAX},
        {"17179869183g", 17179869183ull << 30},
    };
    static const char *bad[] = {
        "",
        "k",
        "1x",
        "1kb",
        "1kk",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1 k",
        "1.5m",
        "0x10",
        "1t",
        "99999999999999999999",
        "18446744073709551616",
        "17179869184g", /* 2^34 g = 2^64 */
        "18014398509481984k",
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(good); i++) {
        uint64_t v = 1;
        assert_int_equal(cdn_parse_size(good[i].in, &v), 0);
        assert_true(v == good[i].want);
    }
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        uint64_t v = 42;
        if (cdn_parse_size(bad[i], &v) != CDN_EINVAL)
            fail_msg("size '%s' accepted", bad[i]);
        assert_true(v == 42); /* untouched on error */
    }
}

static void
test_parse_duration(void **state)
{
    (void)state;
    static const struct num_case good[] = {
        {"500ms", 500},
        {"5s", 5000},
        {"2m", 120000},
        {"1h", 3600000},
        {"1d", 86400000},
        {"7", 7000},
        {"0", 0},
        {"0ms", 0},
        {"5S", 5000},
        {"10MS", 10},
        {"18446744073709551615ms", UINT64_MAX},
        {"18446744073709551", 18446744073709551000ull},
    };
    static const char *bad[] = {
        "",
        "ms",
        "s",
        "5 s",
        "5sec",
        "-1",
        "1.5s",
        "5x",
        "1m1s",
        " 5s",
        "5s ",
        "5w",
        "18446744073709551615s", /* overflows once scaled */
        "18446744073709552",     /* bare seconds, overflows once scaled */
        "213503982334602d",
        "99999999999999999999ms",
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(good); i++) {
        uint64_t v = 1;
        if (cdn_parse_duration_ms(good[i].in, &v) != 0)
            fail_msg("duration '%s' rejected", good[i].in);
        assert_true(v == good[i].want);
    }
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        uint64_t v = 42;
        if (cdn_parse_duration_ms(bad[i], &v) != CDN_EINVAL)
            fail_msg("duration '%s' accepted", bad[i]);
        assert_true(v == 42);
    }
}

static void
test_parse_bool(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        bool want;
    } good[] = {
        {"on", true},   {"yes", true}, {"true", true},   {"1", true},  {"ON", true},
        {"off", false}, {"no", false}, {"false", false}, {"0", false}, {"False", false},
    };
    static const char *bad[] = {"", "2", "onn", "enable", " on", "off ", "y", "n", "01"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(good); i++) {
        bool v = !good[i].want;
        assert_int_equal(cdn_parse_bool(good[i].in, &v), 0);
        assert_int_equal(v, good[i].want);
    }
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        bool v = true;
        if (cdn_parse_bool(bad[i], &v) != CDN_EINVAL)
            fail_msg("bool '%s' accepted", bad[i]);
        assert_true(v);
    }
}

static void
test_parse_hostport(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host;
        unsigned port;
    } good[] = {
        {"127.0.0.1:8080", "127.0.0.1", 8080},
        {"[::1]:8080", "::1", 8080},
        {"localhost:80", "localhost", 80},
        {"*:8080", "", 8080},
        {":8080", "", 8080},
        {"0.0.0.0:0", "0.0.0.0", 0},
        {"[2001:db8::1]:65535", "2001:db8::1", 65535},
        {"[::]:1", "::", 1},
        {"my-host.example_1:1", "my-host.example_1", 1},
    };
    static const char *bad[] = {
        "127.0.0.1", "127.0.0.1:",
        ":",         "",
        "*",         "[::1]",
        "[::1]8080", "::1:8080",
        "[]:80",     "[zz]:80",
        "h:65536",   "h:-1",
        "h:8o",      "h: 80",
        "h :80",     "a b:80",
        "**:80",     "h/x:80",
        "[::1]:80x", "[::1:80",
        "h:80:90",   "h:99999999999999999999",
        "[::1]:",
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(good); i++) {
        char host[64] = "x";
        unsigned port = 1234;
        if (cdn_parse_hostport(good[i].in, host, sizeof(host), &port) != 0)
            fail_msg("hostport '%s' rejected", good[i].in);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
    }
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        char host[64] = "x";
        unsigned port = 1234;
        if (cdn_parse_hostport(bad[i], host, sizeof(host), &port) != CDN_EINVAL)
            fail_msg("hostport '%s' accepted", bad[i]);
        assert_int_equal(port, 1234);
    }
    /* The host must fit with its NUL. */
    char host[10];
    unsigned port;
    assert_int_equal(cdn_parse_hostport("localhost:80", host, 9, &port), CDN_EINVAL);
    assert_int_equal(cdn_parse_hostport("localhost:80", host, 10, &port), 0);
    assert_string_equal(host, "localhost");
}

/* --- cdn_config_set --------------------------------------------------------------------------- */

/* Every key, a value it takes and one it refuses with the exact reason. */
static const struct {
    const char *key, *good, *bad, *why;
} keys[] = {
    {"listen", "0.0.0.0:8080", "x", "listen: expected ADDR:PORT, got 'x'"},
    {"listen_tls", "[::]:8443", "127.0.0.1:0",
     "listen_tls: port must be between 1 and 65535, got '127.0.0.1:0'"},
    {"tls_cert", "/etc/cdnode/cert.pem", " ", "tls_cert: empty value"},
    {"tls_key", "key.pem", "", "tls_key: empty value"},
    {"workers", "4", "257", "workers: must be at most 256, got '257'"},
    {"connection_limit", "100", "0", "connection_limit: must be at least 1, got '0'"},
    {"connection_timeout", "2m", "1500ms",
     "connection_timeout: must be whole seconds, got '1500ms'"},
    {"connection_memory", "8k", "64k", "connection_memory: must be at most 32k, got '64k'"},
    {"listen_backlog", "16", "-1", "listen_backlog: expected a number, got '-1'"},
    {"send_buffer", "256k", "1g", "send_buffer: must be at most 256m, got '1g'"},
    {"loopback_send_buffer", "0", "64q",
     "loopback_send_buffer: expected a size such as 512, 64k, 16m or 1g, got '64q'"},
    {"loopback_congestion_control", "cubic", "bbr;reno",
     "loopback_congestion_control: expected a TCP congestion control name such as reno or cubic, "
     "or off, got 'bbr;reno'"},
    {"max_request_body", "0", "1t",
     "max_request_body: expected a size such as 512, 64k, 16m or 1g, got '1t'"},
    {"origin", "https://Example.com:8443/", "ftp://x",
     "origin: expected an http:// or https:// URL, got 'ftp://x'"},
    {"parent", "http://10.0.0.1:8080 http://10.0.0.2:8080", "http://p/x",
     "parent: a path is not allowed (scheme, host and port only), got 'http://p/x'"},
    {"cache_set_cookie", "on", "sometimes",
     "cache_set_cookie: expected on or off, got 'sometimes'"},
    {"request_head_timeout", "30s", "2h", "request_head_timeout: must be at most 1h, got '2h'"},
    {"purge_parents", "http://127.0.0.1:9091", "127.0.0.1:9091",
     "purge_parents: expected an http:// or https:// URL, got '127.0.0.1:9091'"},
    {"purge_children", "http://[::1]:9092 http://127.0.0.2:9092", "http://a?x=1",
     "purge_children: a query is not allowed, got 'http://a?x=1'"},
    {"purge_peer_token", "fedcba9876543210", "a b",
     "purge_peer_token: must not contain whitespace or control characters"},
    {"purge_peer_timeout", "500ms", "0", "purge_peer_timeout: must be at least 1ms, got '0'"},
    {"origin_connect_timeout", "250ms", "0",
     "origin_connect_timeout: must be at least 1ms, got '0'"},
    {"origin_first_byte_timeout", "1m", "5 s",
     "origin_first_byte_timeout: expected a duration such as 500ms, 30s, 5m, 1h or 1d, got '5 s'"},
    {"origin_idle_timeout", "10", "50d",
     "origin_idle_timeout: must be at most 4294967295ms, got '50d'"},
    {"origin_ca_file", "/etc/ssl/ca.pem", "", "origin_ca_file: empty value"},
    {"purge_peer_ca_file", "/etc/ssl/peers.pem", "", "purge_peer_ca_file: empty value"},
    {"max_origin_headers", "1k", "512", "max_origin_headers: must be at least 1k, got '512'"},
    {"cdn_id", "Edge-1", "edge 1",
     "cdn_id: expected a token of 1 to 63 letters, digits or !#$%&'*+-.^_`|~, got 'edge 1'"},
    {"loop_allowance", "2", "99999999999999999999",
     "loop_allowance: must be at most 4294967295, got '99999999999999999999'"},
    {"forwarded", "on", "maybe", "forwarded: expected on or off, got 'maybe'"},
    {"x_forwarded_for", "no", "2", "x_forwarded_for: expected on or off, got '2'"},
    {"trusted_hops", "1", "one", "trusted_hops: expected a number, got 'one'"},
    {"cache_dir", "/var/cache/cdnode", "\t", "cache_dir: empty value"},
    {"cache_size", "1m", "1023k", "cache_size: must be at least 1m, got '1023k'"},
    {"max_object_size", "1", "0", "max_object_size: must be at least 1, got '0'"},
    {"max_variants", "1", "1025", "max_variants: must be at most 1024, got '1025'"},
    {"cache_writemap", "on", "always", "cache_writemap: expected on or off, got 'always'"},
    {"cache_key_ignore_query", "yes", "y", "cache_key_ignore_query: expected on or off, got 'y'"},
    {"cache_key_sort_query", "true", "ja", "cache_key_sort_query: expected on or off, got 'ja'"},
    {"cache_key_drop_params", "utm_source fbclid", "a=b",
     "cache_key_drop_params: 'a=b' is not a query parameter name"},
    {"target_cache_control", "Surrogate-Control", "Bad:Field",
     "target_cache_control: 'Bad:Field' is not a header field name"},
    {"heuristic_percent", "0", "101", "heuristic_percent: must be at most 100, got '101'"},
    {"heuristic_max", "0", "500ms", "heuristic_max: must be whole seconds, got '500ms'"},
    {"admin_listen", "[::1]:0", "example.com:9090",
     "admin_listen: address must be an IP address, localhost or *, got 'example.com:9090'"},
    {"admin_token", "0123456789abcdef", "two words",
     "admin_token: must not contain whitespace or control characters"},
    {"log_level", "debug", "verbose",
     "log_level: expected error, warn, info or debug, got 'verbose'"},
    {"access_log", "/var/log/cdnode/access.log", " ", "access_log: empty value"},
    {"access_log_format", "json", "JSON",
     "access_log_format: expected combined or json, got 'JSON'"},
};

static void
test_set_every_key(void **state)
{
    (void)state;
    assert_int_equal(CDN_ARRAY_LEN(keys), 48); /* one row per key in config.h */
    for (size_t i = 0; i < CDN_ARRAY_LEN(keys); i++) {
        struct cdn_config c;
        char err[512] = "";
        cdn_config_defaults(&c);
        if (cdn_config_set(&c, keys[i].key, keys[i].good, err, sizeof(err)) != 0)
            fail_msg("%s = %s rejected: %s", keys[i].key, keys[i].good, err);
        char *before = dump(&c);
        err[0] = '\0';
        assert_int_equal(cdn_config_set(&c, keys[i].key, keys[i].bad, err, sizeof(err)),
                         CDN_EINVAL);
        assert_string_equal(err, keys[i].why);
        char *after = dump(&c); /* a refused value changes nothing */
        assert_string_equal(before, after);
        free(before);
        free(after);
        cdn_config_free(&c);
    }
}

static void
test_set_values(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[512];
    cdn_config_defaults(&c);
    for (size_t i = 0; i < CDN_ARRAY_LEN(keys); i++)
        assert_int_equal(cdn_config_set(&c, keys[i].key, keys[i].good, err, sizeof(err)), 0);
    assert_string_equal(c.listen, "0.0.0.0:8080");
    assert_string_equal(c.listen_tls, "[::]:8443");
    assert_string_equal(c.tls_cert, "/etc/cdnode/cert.pem");
    assert_string_equal(c.tls_key, "key.pem");
    assert_int_equal(c.workers, 4);
    assert_int_equal(c.connection_limit, 100);
    assert_int_equal(c.connection_timeout_s, 120);
    assert_int_equal(c.connection_memory, 8192);
    assert_int_equal(c.listen_backlog, 16);
    assert_int_equal(c.send_buffer, 256 * 1024);
    assert_int_equal(c.loopback_send_buffer, 0);
    assert_int_equal(c.max_request_body, 0);
    assert_int_equal(c.n_origins, 1);
    assert_string_equal(c.origins[0], "https://example.com:8443");
    assert_int_equal(c.origin_connect_timeout_ms, 250);
    assert_int_equal(c.origin_first_byte_timeout_ms, 60000);
    assert_int_equal(c.origin_idle_timeout_ms, 10000);
    assert_string_equal(c.origin_ca_file, "/etc/ssl/ca.pem");
    assert_string_equal(c.purge_peer_ca_file, "/etc/ssl/peers.pem");
    assert_int_equal(c.max_origin_headers, 1024);
    assert_string_equal(c.cdn_id, "Edge-1");
    assert_int_equal(c.loop_allowance, 2);
    assert_true(c.forwarded);
    assert_false(c.x_forwarded_for);
    assert_int_equal(c.trusted_hops, 1);
    assert_string_equal(c.cache_dir, "/var/cache/cdnode");
    assert_true(c.cache_size == 1048576);
    assert_int_equal(c.max_object_size, 1);
    assert_int_equal(c.max_variants, 1);
    assert_true(c.cache_writemap);
    assert_true(c.cache_key_ignore_query);
    assert_true(c.cache_key_sort_query);
    assert_int_equal(c.n_cache_key_drop_params, 2);
    assert_string_equal(c.cache_key_drop_params[0], "utm_source");
    assert_string_equal(c.cache_key_drop_params[1], "fbclid");
    assert_int_equal(c.n_target_cache_control, 1);
    assert_string_equal(c.target_cache_control[0], "Surrogate-Control");
    assert_int_equal(c.heuristic_percent, 0);
    assert_int_equal(c.heuristic_max_s, 0);
    assert_string_equal(c.admin_listen, "[::1]:0");
    assert_string_equal(c.admin_token, "0123456789abcdef");
    assert_int_equal(c.log_level, CDN_LOG_DEBUG);
    assert_string_equal(c.access_log, "/var/log/cdnode/access.log");
    assert_int_equal(c.access_log_format, CDN_ACCESSLOG_JSON);
    cdn_config_free(&c);
}

static void
test_defaults(void **state)
{
    (void)state;
    struct cdn_config c;
    cdn_config_defaults(&c);
    assert_string_equal(c.listen, "127.0.0.1:8080");
    assert_null(c.listen_tls);
    assert_null(c.tls_cert);
    assert_null(c.tls_key);
    assert_in_range(c.workers, 1, 256);
    assert_int_equal(c.connection_limit, 4096);
    assert_int_equal(c.connection_timeout_s, 30);
    assert_int_equal(c.connection_memory, 32768);
    assert_int_equal(c.listen_backlog, 1024);
    assert_int_equal(c.send_buffer, 0);
    assert_int_equal(c.loopback_send_buffer, 64 * 1024);
    assert_string_equal(c.loopback_congestion_control, "reno");
    assert_int_equal(c.max_request_body, 16 << 20);
    assert_int_equal(c.n_origins, 0);
    assert_int_equal(c.origin_connect_timeout_ms, 5000);
    assert_int_equal(c.origin_first_byte_timeout_ms, 30000);
    assert_int_equal(c.origin_idle_timeout_ms, 30000);
    assert_null(c.origin_ca_file);
    assert_null(c.purge_peer_ca_file);
    assert_int_equal(c.max_origin_headers, 16384);
    size_t n = strlen(c.cdn_id);
    assert_in_range(n, 1, 63);
    assert_true(cdn_is_token(c.cdn_id, n));
    for (size_t i = 0; i < n; i++)
        assert_false(isupper((unsigned char)c.cdn_id[i]));
    assert_int_equal(c.loop_allowance, 0);
    assert_false(c.forwarded);
    assert_true(c.x_forwarded_for);
    assert_int_equal(c.trusted_hops, 0);
    assert_string_equal(c.cache_dir, "cache");
    assert_true(c.cache_size == 1ull << 30);
    assert_int_equal(c.max_object_size, 256 << 20);
    assert_int_equal(c.max_variants, 8);
    assert_false(c.cache_writemap);
    assert_false(c.cache_key_ignore_query);
    assert_false(c.cache_key_sort_query);
    assert_int_equal(c.n_cache_key_drop_params, 0);
    assert_int_equal(c.n_target_cache_control, 2);
    assert_string_equal(c.target_cache_control[0], "CDN-Cache-Control");
    assert_string_equal(c.target_cache_control[1], "Surrogate-Control");
    assert_int_equal(c.heuristic_percent, 10);
    assert_int_equal(c.heuristic_max_s, 86400);
    assert_string_equal(c.admin_listen, "127.0.0.1:9090");
    assert_null(c.admin_token);
    assert_int_equal(c.log_level, CDN_LOG_INFO);
    assert_string_equal(c.access_log, "stderr");
    assert_int_equal(c.access_log_format, CDN_ACCESSLOG_COMBINED);
    /* Free leaves a zeroed struct: freeing again is harmless, and defaults make it usable. */
    cdn_config_free(&c);
    cdn_config_free(&c);
    cdn_config_defaults(&c);
    cdn_config_free(&c);
}

static void
test_set_scalar_replaces(void **state)
{
    (void)state;
    static const struct {
        const char *key, *first, *second;
    } cases[] = {
        {"cache_dir", "/a", "/b"},
        {"tls_cert", "a.pem", "b.pem"},
        {"admin_token", "0123456789abcdef", "fedcba9876543210"},
        {"cdn_id", "one", "two"},
        {"listen", "127.0.0.1:1", "127.0.0.1:2"},
        {"log_level", "error", "debug"},
        {"access_log", "/a.log", "off"},
        {"access_log_format", "json", "combined"},
    };
    struct cdn_config c;
    char err[256];
    cdn_config_defaults(&c);
    for (size_t i = 0; i < CDN_ARRAY_LEN(cases); i++) {
        assert_int_equal(cdn_config_set(&c, cases[i].key, cases[i].first, err, sizeof(err)), 0);
        assert_int_equal(cdn_config_set(&c, cases[i].key, cases[i].second, err, sizeof(err)), 0);
    }
    assert_string_equal(c.cache_dir, "/b");
    assert_string_equal(c.tls_cert, "b.pem");
    assert_string_equal(c.admin_token, "fedcba9876543210");
    assert_string_equal(c.cdn_id, "two");
    assert_string_equal(c.listen, "127.0.0.1:2");
    assert_int_equal(c.log_level, CDN_LOG_DEBUG);
    assert_string_equal(c.access_log, "off");
    assert_int_equal(c.access_log_format, CDN_ACCESSLOG_COMBINED);
    cdn_config_free(&c); /* the sanitizer build finds any replaced string not freed */
}

static void
test_set_misc_errors(void **state)
{
    (void)state;
    static const struct {
        const char *key, *value, *why;
    } cases[] = {
        {"nope", "1", "unknown key 'nope'"},
        {"Listen", "1.2.3.4:5", "unknown key 'Listen'"},
        {"workers", "0", "workers: must be at least 1, got '0'"},
        {"workers", "99999999999999999999",
         "workers: must be at most 256, got "
         "'99999999999999999999'"},
        {"workers", "4 ", "workers: expected a number, got '4 '"},
        {"connection_memory", "4k", "connection_memory: must be at least 8k, got '4k'"},
        {"connection_memory", "32769", "connection_memory: must be at most 32k, got '32769'"},
        {"max_origin_headers", "25k", "max_origin_headers: must be at most 24k, got '25k'"},
        {"connection_timeout", "0", "connection_timeout: must be at least 1s, got '0'"},
        {"origin_idle_timeout", "0ms", "origin_idle_timeout: must be at least 1ms, got '0ms'"},
        {"cache_size", "99999999999999999999g",
         "cache_size: must be at most 18446744073709551615, got '99999999999999999999g'"},
        {"cache_size", "17179869184g",
         "cache_size: must be at most 18446744073709551615, got '17179869184g'"},
        {"max_request_body", "-1",
         "max_request_body: expected a size such as 512, 64k, 16m or "
         "1g, got '-1'"},
        {"listen", "127.0.0.1", "listen: expected ADDR:PORT, got '127.0.0.1'"},
        {"listen", "127.0.0.1:65536",
         "listen: port must be between 0 and 65535, got "
         "'127.0.0.1:65536'"},
        {"listen", "::1:80", "listen: expected ADDR:PORT, got '::1:80'"},
        {"admin_listen", "[::1]", "admin_listen: expected ADDR:PORT, got '[::1]'"},
        {"cdn_id", "0123456789012345678901234567890123456789012345678901234567890123",
         "cdn_id: expected a token of 1 to 63 letters, digits or !#$%&'*+-.^_`|~, got "
         "'0123456789012345678901234567890123456789012345678901234567890123'"},
        {"cdn_id", "a;b",
         "cdn_id: expected a token of 1 to 63 letters, digits or "
         "!#$%&'*+-.^_`|~, got 'a;b'"},
        {"admin_token", "abc\tdef",
         "admin_token: must not contain whitespace or control "
         "characters"},
        {"admin_token", "abc\x01",
         "admin_token: must not contain whitespace or control "
         "characters"},
        {"heuristic_max", "1.5h",
         "heuristic_max: expected a duration such as 500ms, 30s, 5m, 1h "
         "or 1d, got '1.5h'"},
        {"log_level", "INFO", "log_level: expected error, warn, info or debug, got 'INFO'"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(cases); i++) {
        struct cdn_config c;
        char err[512] = "";
        cdn_config_defaults(&c);
        assert_int_equal(cdn_config_set(&c, cases[i].key, cases[i].value, err, sizeof(err)),
                         CDN_EINVAL);
        assert_string_equal(err, cases[i].why);
        cdn_config_free(&c);
    }
    /* A 63-character id is the longest allowed; a NULL err is allowed. */
    struct cdn_config c;
    cdn_config_defaults(&c);
    assert_int_equal(
        cdn_config_set(&c, "cdn_id",
                       "012345678901234567890123456789012345678901234567890123456789012", NULL, 0),
        0);
    assert_int_equal(cdn_config_set(&c, "workers", "0", NULL, 0), CDN_EINVAL);
    cdn_config_free(&c);
}

static void
test_origin_forms(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } good[] = {
        {"http://127.0.0.1:8081", "http://127.0.0.1:8081"},
        {"HTTP://Example.COM/", "http://example.com"},
        {"https://example.com", "https://example.com"},
        {"https://[::1]:8443", "https://[::1]:8443"},
        {"http://[2001:DB8::1]/", "http://[2001:db8::1]"},
        {"http://h_1.local:1", "http://h_1.local:1"},
        {"http://h:65535", "http://h:65535"},
    };
    static const struct {
        const char *in, *why;
    } bad[] = {
        {"example.com", "origin: expected an http:// or https:// URL, got 'example.com'"},
        {"//h", "origin: expected an http:// or https:// URL, got '//h'"},
        {"http:/h", "origin: expected an http:// or https:// URL, got 'http:/h'"},
        {"http://", "origin: no host in 'http://'"},
        {"http://:80", "origin: no host in 'http://:80'"},
        {"http:///", "origin: no host in 'http:///'"},
        {"http://h:0", "origin: port must be between 1 and 65535, got 'http://h:0'"},
        {"http://h:65536", "origin: port must be between 1 and 65535, got 'http://h:65536'"},
        {"http://h:", "origin: port must be between 1 and 65535, got 'http://h:'"},
        {"http://h:8x", "origin: port must be between 1 and 65535, got 'http://h:8x'"},
        {"http://h:1:2", "origin: port must be between 1 and 65535, got 'http://h:1:2'"},
        {"http://u:p@h", "origin: user info is not allowed, got 'http://u:p@h'"},
        {"http://h/path", "origin: a path is not allowed (scheme, host and port only), got "
                          "'http://h/path'"},
        {"http://h//", "origin: a path is not allowed (scheme, host and port only), got "
                       "'http://h//'"},
        {"http://h/?q", "origin: a query is not allowed, got 'http://h/?q'"},
        {"http://h?q", "origin: a query is not allowed, got 'http://h?q'"},
        {"http://h#f", "origin: a fragment is not allowed, got 'http://h#f'"},
        {"http://[::1", "origin: bad IPv6 address in 'http://[::1'"},
        {"http://[zz]:80", "origin: bad IPv6 address in 'http://[zz]:80'"},
        {"http://[::1]x", "origin: bad host in 'http://[::1]x'"},
        {"http://h!x", "origin: bad host in 'http://h!x'"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(good); i++) {
        struct cdn_config c;
        char err[512] = "";
        cdn_config_defaults(&c);
        if (cdn_config_set(&c, "origin", good[i].in, err, sizeof(err)) != 0)
            fail_msg("origin '%s' rejected: %s", good[i].in, err);
        assert_int_equal(c.n_origins, 1);
        assert_string_equal(c.origins[0], good[i].want);
        cdn_config_free(&c);
    }
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        struct cdn_config c;
        char err[512] = "";
        cdn_config_defaults(&c);
        assert_int_equal(cdn_config_set(&c, "origin", bad[i].in, err, sizeof(err)), CDN_EINVAL);
        assert_string_equal(err, bad[i].why);
        assert_int_equal(c.n_origins, 0);
        cdn_config_free(&c);
    }
}

static void
test_lists_append(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[512];
    cdn_config_defaults(&c);
    assert_int_equal(cdn_config_set(&c, "origin", "http://a http://b:81", err, sizeof(err)), 0);
    assert_int_equal(cdn_config_set(&c, "origin", "  https://c\t", err, sizeof(err)), 0);
    assert_int_equal(c.n_origins, 3);
    assert_string_equal(c.origins[0], "http://a");
    assert_string_equal(c.origins[1], "http://b:81");
    assert_string_equal(c.origins[2], "https://c");
    assert_int_equal(cdn_config_set(&c, "cache_key_drop_params", "a b", err, sizeof(err)), 0);
    assert_int_equal(cdn_config_set(&c, "cache_key_drop_params", "c", err, sizeof(err)), 0);
    assert_int_equal(c.n_cache_key_drop_params, 3);
    assert_string_equal(c.cache_key_drop_params[2], "c");
    /* A value with one bad item adds none of its items. */
    assert_int_equal(cdn_config_set(&c, "cache_key_drop_params", "d e&f g", err, sizeof(err)),
                     CDN_EINVAL);
    assert_string_equal(err, "cache_key_drop_params: 'e&f' is not a query parameter name");
    assert_int_equal(c.n_cache_key_drop_params, 3);
    assert_int_equal(cdn_config_set(&c, "origin", "http://d http://e/x", err, sizeof(err)),
                     CDN_EINVAL);
    assert_int_equal(c.n_origins, 3);
    cdn_config_free(&c);
}

static void
test_list_bounds(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[512], value[1024] = "";
    cdn_config_defaults(&c);
    for (int i = 0; i < CDN_MAX_ORIGINS; i++)
        snprintf(value + strlen(value), sizeof(value) - strlen(value), "http://h%d ", i);
    assert_int_equal(cdn_config_set(&c, "origin", value, err, sizeof(err)), 0);
    assert_int_equal(c.n_origins, CDN_MAX_ORIGINS);
    assert_int_equal(cdn_config_set(&c, "origin", "http://one-more", err, sizeof(err)), CDN_EINVAL);
    assert_string_equal(err, "origin: too many values (at most 16)");
    assert_int_equal(c.n_origins, CDN_MAX_ORIGINS);
    cdn_config_free(&c);

    /* Too many in one value: nothing is added. */
    cdn_config_defaults(&c);
    strcat(value, "http://h16");
    assert_int_equal(cdn_config_set(&c, "origin", value, err, sizeof(err)), CDN_EINVAL);
    assert_int_equal(c.n_origins, 0);
    value[0] = '\0';
    for (int i = 0; i < CDN_MAX_LIST; i++)
        snprintf(value + strlen(value), sizeof(value) - strlen(value), "p%d ", i);
    assert_int_equal(cdn_config_set(&c, "cache_key_drop_params", value, err, sizeof(err)), 0);
    assert_int_equal(c.n_cache_key_drop_params, CDN_MAX_LIST);
    assert_int_equal(cdn_config_set(&c, "cache_key_drop_params", "x", err, sizeof(err)),
                     CDN_EINVAL);
    assert_string_equal(err, "cache_key_drop_params: too many values (at most 32)");
    /* The default target is replaced, so a full list of 32 fits. */
    assert_int_equal(cdn_config_set(&c, "target_cache_control", value, err, sizeof(err)), 0);
    assert_int_equal(c.n_target_cache_control, CDN_MAX_LIST);
    cdn_config_free(&c);
}

static void
test_target_cache_control_default_replaced(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[512];
    cdn_config_defaults(&c);
    /* A refused value keeps the default, and the next good one still replaces it. */
    assert_int_equal(cdn_config_set(&c, "target_cache_control", "A:B", err, sizeof(err)),
                     CDN_EINVAL);
    assert_int_equal(c.n_target_cache_control, 2);
    assert_string_equal(c.target_cache_control[0], "CDN-Cache-Control");
    assert_int_equal(
        cdn_config_set(&c, "target_cache_control", "Akamai-Cache-Control X", err, sizeof(err)), 0);
    assert_int_equal(
        cdn_config_set(&c, "target_cache_control", "CDN-Cache-Control", err, sizeof(err)), 0);
    assert_int_equal(c.n_target_cache_control, 3);
    assert_string_equal(c.target_cache_control[0], "Akamai-Cache-Control");
    assert_string_equal(c.target_cache_control[1], "X");
    assert_string_equal(c.target_cache_control[2], "CDN-Cache-Control");
    cdn_config_free(&c);

    /* Setting the default's own value explicitly, then appending, keeps both. */
    cdn_config_defaults(&c);
    assert_int_equal(
        cdn_config_set(&c, "target_cache_control", "CDN-Cache-Control", err, sizeof(err)), 0);
    assert_int_equal(
        cdn_config_set(&c, "target_cache_control", "Surrogate-Control", err, sizeof(err)), 0);
    assert_int_equal(c.n_target_cache_control, 2);
    assert_string_equal(c.target_cache_control[0], "CDN-Cache-Control");
    assert_string_equal(c.target_cache_control[1], "Surrogate-Control");
    cdn_config_free(&c);
}

/* --- cdn_config_load -------------------------------------------------------------------------- */

static void
test_load_good(void **state)
{
    (void)state;
    static const char text[] =
        "# a comment line\n"
        "\n"
        "   \t\n"
        "listen = 127.0.0.1:18080\n"
        "  workers=3   # trailing comment\n"
        "cache_dir = \"/tmp/a #b \\\"q\\\" \\\\x\"  # quoted, with '#' inside\n"
        "admin_token = \"0123456789abcdef#\"\n"
        "cdn_id\t=\tedge-7\r\n"
        "log_level = warn\r\n"
        "access_log = \"/tmp/a b.log\"  # a path with a space\n"
        "origin = http://127.0.0.1:8081/ http://[::1]:8082\n"
        "origin = \"https://backup.example\"\n"
        "cache_key_drop_params = utm_source\n"
        "cache_key_drop_params = fbclid gclid\n"
        "target_cache_control = Surrogate-Control\n"
        "target_cache_control = CDN-Cache-Control\n"
        "heuristic_max = 2h\n"
        "tls_cert = a=b.pem\n"
        "# the last line has no newline\n"
        "max_variants = 4";
    struct cdn_config c;
    char err[512] = "";
    cdn_config_defaults(&c);
    if (load_text(&c, text, err, sizeof(err)) != 0)
        fail_msg("load failed: %s", err);
    assert_string_equal(c.listen, "127.0.0.1:18080");
    assert_int_equal(c.workers, 3);
    assert_string_equal(c.cache_dir, "/tmp/a #b \"q\" \\x");
    assert_string_equal(c.admin_token, "0123456789abcdef#");
    assert_string_equal(c.cdn_id, "edge-7");
    assert_int_equal(c.log_level, CDN_LOG_WARN);
    assert_string_equal(c.access_log, "/tmp/a b.log");
    assert_int_equal(c.n_origins, 3);
    assert_string_equal(c.origins[0], "http://127.0.0.1:8081");
    assert_string_equal(c.origins[1], "http://[::1]:8082");
    assert_string_equal(c.origins[2], "https://backup.example");
    assert_int_equal(c.n_cache_key_drop_params, 3);
    assert_string_equal(c.cache_key_drop_params[0], "utm_source");
    assert_string_equal(c.cache_key_drop_params[2], "gclid");
    assert_int_equal(c.n_target_cache_control, 2);
    assert_string_equal(c.target_cache_control[0], "Surrogate-Control");
    assert_string_equal(c.target_cache_control[1], "CDN-Cache-Control");
    assert_int_equal(c.heuristic_max_s, 7200);
    assert_string_equal(c.tls_cert, "a=b.pem");
    assert_int_equal(c.max_variants, 4);
    assert_int_equal(c.connection_limit, 4096); /* keys not in the file keep what c held */
    assert_int_equal(cdn_config_check(&c, err, sizeof(err)), 0);
    cdn_config_free(&c);
}

static void
test_load_on_top(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[512];
    cdn_config_defaults(&c);
    assert_int_equal(cdn_config_set(&c, "workers", "7", err, sizeof(err)), 0);
    assert_int_equal(cdn_config_set(&c, "origin", "http://first", err, sizeof(err)), 0);
    assert_int_equal(load_text(&c, "origin = http://second\nmax_variants = 2\n", err, sizeof(err)),
                     0);
    assert_int_equal(c.workers, 7);
    assert_int_equal(c.max_variants, 2);
    assert_int_equal(c.n_origins, 2);
    assert_string_equal(c.origins[1], "http://second");
    /* An empty file, or one of comments only, changes nothing. */
    char *before = dump(&c);
    assert_int_equal(load_text(&c, "", err, sizeof(err)), 0);
    assert_int_equal(load_text(&c, "# nothing\n\n  # here\n", err, sizeof(err)), 0);
    char *after = dump(&c);
    assert_string_equal(before, after);
    free(before);
    free(after);
    cdn_config_free(&c);
}

static void
test_load_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"listen = 127.0.0.1:1\nfoo = 1\n", "F:2: unknown key 'foo'"},
        {"# one\n\n# three\nfoo_bar = \n", "F:4: unknown key 'foo_bar'"},
        {"# c\n\nlisten\n", "F:3: expected 'key = value'"},
        {"listen 127.0.0.1:80\n", "F:1: expected 'key = value'"},
        {"  = 5\n", "F:1: expected 'key = value'"},
        {"workers = 2\nworkers =\n", "F:2: workers: empty value"},
        {"workers = # nothing\n", "F:1: workers: empty value"},
        {"cache_dir = \"\"\n", "F:1: cache_dir: empty value"},
        {"\n\n\n\nworkers = 0 # zero\n", "F:5: workers: must be at least 1, got '0'"},
        {"a = b = c\n", "F:1: unknown key 'a'"},
        {"listen = x\r\n", "F:1: listen: expected ADDR:PORT, got 'x'"},
        {"listen = \"127.0.0.1:80\" x\n", "F:1: unexpected text after the closing quote"},
        {"cache_dir = \"abc\n", "F:1: unterminated quoted value"},
        {"cache_dir = \"abc # not a comment\n", "F:1: unterminated quoted value"},
        {"cache_dir = \"abc\\\"\n", "F:1: unterminated quoted value"},
        {"cache_dir = \"a\\n\"\n", "F:1: bad escape '\\n' in quoted value (only \\\" and \\\\)"},
        {"origin = http://a http://b/x\n",
         "F:1: origin: a path is not allowed (scheme, host and port only), got 'http://b/x'"},
        {"workers = 4\nconnection_memory = 64k\nworkers = 5\n",
         "F:2: connection_memory: must be at most 32k, got '64k'"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(cases); i++) {
        struct cdn_config c;
        char err[512] = "";
        cdn_config_defaults(&c);
        assert_int_equal(load_text(&c, cases[i].text, err, sizeof(err)), CDN_EINVAL);
        assert_string_equal(err, cases[i].why);
        cdn_config_free(&c);
    }
}

static void
test_load_long_and_nul_lines(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[8192] = "";
    /* A line of exactly 4096 bytes (newline not counted) is fine; 4097 is not. */
    size_t fill = 4096 - strlen("cache_dir = ");
    char *text = cdn_malloc(2 * 4200);
    int n = snprintf(text, 4200, "cache_dir = %0*d\n", (int)fill, 0);
    assert_int_equal(n, 4097);
    cdn_config_defaults(&c);
    assert_int_equal(load_text(&c, text, err, sizeof(err)), 0);
    assert_int_equal(strlen(c.cache_dir), fill);
    snprintf(text, 2 * 4200, "log_level = info\ncache_dir = %0*d\n", (int)fill + 1, 0);
    assert_int_equal(load_text(&c, text, err, sizeof(err)), CDN_EINVAL);
    assert_string_equal(err, "F:2: line longer than 4096 bytes");
    /* Also at the end of the file without a newline. */
    snprintf(text, 2 * 4200, "cache_dir = %0*d", (int)fill + 1, 0);
    assert_int_equal(load_text(&c, text, err, sizeof(err)), CDN_EINVAL);
    assert_string_equal(err, "F:1: line longer than 4096 bytes");
    free(text);
    static const char nul[] = "workers = 1\ncache_dir = a\0b\n";
    assert_int_equal(load_text_n(&c, nul, sizeof(nul) - 1, err, sizeof(err)), CDN_EINVAL);
    assert_string_equal(err, "F:2: NUL byte in line");
    cdn_config_free(&c);
}

static void
test_load_unreadable(void **state)
{
    (void)state;
    struct cdn_config c;
    char err[512] = "";
    cdn_config_defaults(&c);
    assert_int_equal(cdn_config_load(&c, "/nonexistent/cdnode.conf", err, sizeof(err)), CDN_EIO);
    assert_string_equal(err, "/nonexistent/cdnode.conf: No such file or directory");
    assert_int_equal(cdn_config_load(&c, "/tmp", err, sizeof(err)), CDN_EIO);
    assert_string_equal(err, "/tmp: Is a directory");
    cdn_config_free(&c);
}

/* --- cdn_config_check ------------------------------------------------------------------------- */

static void
test_check(void **state)
{
    (void)state;
    char *cert = tmp_file("-----BEGIN CERTIFICATE-----\n");
    char *key = tmp_file("-----BEGIN PRIVATE KEY-----\n");
    /* Each case starts from defaults plus one origin; "@CERT" and "@KEY" name readable files. */
    static const struct {
        const char *set[8]; /* key, value pairs */
        const char *why;    /* NULL: passes */
    } cases[] = {
        {{NULL}, NULL},
        {{"origin", "-"}, "no origin configured (set 'origin' or --origin, or 'parent')"},
        {{"listen_tls", "127.0.0.1:8443"}, "listen_tls requires tls_cert and tls_key"},
        {{"listen_tls", "127.0.0.1:8443", "tls_cert", "@CERT"},
         "listen_tls requires tls_cert and tls_key"},
        {{"listen_tls", "127.0.0.1:8443", "tls_cert", "/nonexistent/c.pem", "tls_key", "@KEY"},
         "tls_cert: cannot read '/nonexistent/c.pem': No such file or directory"},
        {{"listen_tls", "127.0.0.1:8443", "tls_cert", "@CERT", "tls_key", "/tmp"},
         "tls_key: '/tmp' is not a regular file"},
        {{"listen_tls", "127.0.0.1:8443", "tls_cert", "@CERT", "tls_key", "@KEY"}, NULL},
        {{"tls_cert", "/nonexistent/c.pem"}, NULL}, /* unused without listen_tls */
        {{"origin_ca_file", "/tmp"}, "origin_ca_file: '/tmp' is not a regular file"},
        {{"origin_ca_file", "@CERT"}, NULL},
        {{"purge_peer_ca_file", "/tmp"}, "purge_peer_ca_file: '/tmp' is not a regular file"},
        {{"purge_peer_ca_file", "@CERT"}, NULL},
        {{"admin_token", "0123456789abcde"}, "admin_token: must be at least 16 bytes"},
        {{"admin_token", "0123456789abcdef"}, NULL},
        {{"admin_listen", "127.0.0.1:8080"},
         "listen and admin_listen must differ (got '127.0.0.1:8080' and '127.0.0.1:8080')"},
        {{"listen", "*:9090"},
         "listen and admin_listen must differ (got '*:9090' and "
         "'127.0.0.1:9090')"},
        {{"listen", "localhost:9090"},
         "listen and admin_listen must differ (got "
         "'localhost:9090' and '127.0.0.1:9090')"},
        {{"listen", "127.0.0.2:9090"}, NULL},
        {{"listen", "127.0.0.1:0", "admin_listen", "127.0.0.1:0"}, NULL},
        {{"listen_tls", "127.0.0.1:8080", "tls_cert", "@CERT", "tls_key", "@KEY"},
         "listen and listen_tls must differ (got '127.0.0.1:8080' and '127.0.0.1:8080')"},
        {{"listen_tls", ":9090", "tls_cert", "@CERT", "tls_key", "@KEY"},
         "listen_tls and admin_listen must differ (got ':9090' and '127.0.0.1:9090')"},
        /* connection_memory holds a request's head (>= 4k) and the response's header block. */
        {{"max_origin_headers", "24k"}, NULL},
        {{"connection_memory", "16k", "max_origin_headers", "11k"}, NULL},
        {{"connection_memory", "16k"},
         "connection_memory (16384 bytes) must hold max_origin_headers (16384) plus 1024 for the "
         "node's own response fields and at least 4096 for a request's head: lower "
         "max_origin_headers or raise connection_memory"},
        {{"connection_memory", "16k", "max_origin_headers", "12k"},
         "connection_memory (16384 bytes) must hold max_origin_headers (12288) plus 1024 for the "
         "node's own response fields and at least 4096 for a request's head: lower "
         "max_origin_headers or raise connection_memory"},
        {{"connection_memory", "8k", "max_origin_headers", "3k"}, NULL},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(cases); i++) {
        struct cdn_config c;
        char err[512] = "";
        cdn_config_defaults(&c);
        assert_int_equal(cdn_config_set(&c, "origin", "http://127.0.0.1:8081", err, sizeof(err)),
                         0);
        for (size_t k = 0; k < CDN_ARRAY_LEN(cases[i].set) && cases[i].set[k]; k += 2) {
            const char *name = cases[i].set[k], *value = cases[i].set[k + 1];
            if (strcmp(name, "origin") == 0) { /* "-": take the origin away */
                free(c.origins[0]);
                c.n_origins = 0;
                continue;
            }
            value = strcmp(value, "@CERT") == 0 ? cert : strcmp(value, "@KEY") == 0 ? key : value;
            if (cdn_config_set(&c, name, value, err, sizeof(err)) != 0)
                fail_msg("case %zu: %s = %s: %s", i, name, value, err);
        }
        err[0] = '\0';
        int rc = cdn_config_check(&c, err, sizeof(err));
        if (cases[i].why == NULL) {
            if (rc != 0)
                fail_msg("case %zu: check failed: %s", i, err);
        } else {
            assert_int_equal(rc, CDN_EINVAL);
            assert_string_equal(err, cases[i].why);
        }
        cdn_config_free(&c);
    }
    unlink(cert);
    unlink(key);
    free(cert);
    free(key);
}

/* --- the shipped example file ----------------------------------------------------------------- */

static void
test_example_conf(void **state)
{
    (void)state;
#ifdef CDN_SOURCE_DIR
    const char *path = CDN_SOURCE_DIR "/conf/cdnode.conf";
    struct cdn_config c, d;
    char err[512] = "";
    cdn_config_defaults(&c);
    if (cdn_config_load(&c, path, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    if (cdn_config_check(&c, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    /* The file states the defaults: loading it gives what the code defaults to, plus the origin. */
    cdn_config_defaults(&d);
    assert_int_equal(cdn_config_set(&d, "origin", "http://127.0.0.1:8081", err, sizeof(err)), 0);
    char *got = dump(&c), *want = dump(&d);
    assert_string_equal(got, want);
    free(got);
    free(want);
    cdn_config_free(&c);
    cdn_config_free(&d);

    /* Every key is documented, set or commented out, at the start of a line. */
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *text = cdn_calloc(1, 65536);
    text[0] = '\n';
    size_t n = fread(text + 1, 1, 65536 - 2, f);
    fclose(f);
    assert_true(n > 0 && n < 65536 - 2);
    for (size_t i = 0; i < CDN_ARRAY_LEN(keys); i++) {
        char set[64], commented[64];
        snprintf(set, sizeof(set), "\n%s = ", keys[i].key);
        snprintf(commented, sizeof(commented), "\n#%s = ", keys[i].key);
        if (strstr(text, set) == NULL && strstr(text, commented) == NULL)
            fail_msg("key '%s' is not in %s", keys[i].key, path);
    }
    free(text);

    /* The tier examples load and pass the checks, and say what the README says they do. */
    static const char *const tiers[] = {CDN_SOURCE_DIR "/conf/child.conf",
                                        CDN_SOURCE_DIR "/conf/parent.conf"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(tiers); i++) {
        cdn_config_defaults(&c);
        if (cdn_config_load(&c, tiers[i], err, sizeof(err)) != 0 ||
            cdn_config_check(&c, err, sizeof(err)) != 0)
            fail_msg("%s", err);
        if (i == 0) {
            assert_int_equal(c.n_parents, 1);
            assert_int_equal(c.n_purge_parents, 1);
        } else {
            assert_int_equal(c.n_parents, 0);
            assert_int_equal(c.n_purge_children, 1);
        }
        assert_int_equal(c.n_origins, 1);
        cdn_config_free(&c);
    }
#else
    skip();
#endif
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_size),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_parse_bool),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_set_every_key),
        cmocka_unit_test(test_set_values),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_set_scalar_replaces),
        cmocka_unit_test(test_set_misc_errors),
        cmocka_unit_test(test_origin_forms),
        cmocka_unit_test(test_lists_append),
        cmocka_unit_test(test_list_bounds),
        cmocka_unit_test(test_target_cache_control_default_replaced),
        cmocka_unit_test(test_load_good),
        cmocka_unit_test(test_load_on_top),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_load_long_and_nul_lines),
        cmocka_unit_test(test_load_unreadable),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_example_conf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
