/* Unit tests for purge selectors (URL keys, prefixes, PURGE targets, parameters) and tag blobs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/cachekey.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"
#include "cdnode/purge.h"

#include <stdio.h>
#include <string.h>

static void
check_str(size_t row, const char *what, const char *got, const char *want)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(got, want) != 0)
        fail_msg("row %zu (%s): \"%s\", want \"%s\"", row, what, got ? got : "(null)",
                 want ? want : "(null)");
}

static const struct cdn_key_opts no_opts = {0};

static void
test_url_key(void **state)
{
    (void)state;
    /* want NULL: CDN_EINVAL */
    static const struct {
        const char *url, *want;
    } rows[] = {
        {"http://example.com/a?b=1", "http://example.com/a?b=1"},
        {"HTTP://Example.COM:80/a", "http://example.com/a"},
        {"https://example.com:443/x", "https://example.com/x"},
        {"https://example.com:80/x", "https://example.com:80/x"},
        {"http://example.com:0080/x", "http://example.com/x"},
        {"http://example.com", "http://example.com/"},
        {"http://example.com?q=1", "http://example.com/?q=1"},
        {"http://example.com/a#frag", "http://example.com/a"},
        {"http://example.com/%7euser/%2f", "http://example.com/~user/%2F"},
        {"http://[::1]:8080/v6", "http://[::1]:8080/v6"},
        {"http://127.0.0.1:8080/p", "http://127.0.0.1:8080/p"},
        {"ftp://example.com/a", NULL},
        {"example.com/a", NULL},
        {"/a", NULL},
        {"", NULL},
        {"http://", NULL},
        {"http:///a", NULL},
        {"http://:80/a", NULL},
        {"http://user@example.com/a", NULL},
        {"http://example.com:99999/a", NULL},
        {"http://example.com:8x/a", NULL},
        {"http://example.com/a b", NULL},
        {"http://example.com/a\x7f", NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cdn_arena *a = cdn_arena_new(256);
        const char *key = NULL;
        size_t klen = 0;
        int rc = cdn_purge_url_key(rows[i].url, &no_opts, a, &key, &klen);
        if (rows[i].want == NULL) {
            if (rc != CDN_EINVAL)
                fail_msg("row %zu: %s accepted as %s", i, rows[i].url, key);
        } else {
            if (rc != 0)
                fail_msg("row %zu: %s refused", i, rows[i].url);
            check_str(i, rows[i].url, key, rows[i].want);
            assert_int_equal(klen, strlen(rows[i].want));
        }
        cdn_arena_free(a);
    }
}

/* The key of a URL purge is the key the front end builds, options included. */
static void
test_url_key_options(void **state)
{
    (void)state;
    static const char *const drop[] = {"utm_source"};
    struct cdn_key_opts o = {.sort_query = true, .drop_params = drop, .n_drop_params = 1};
    struct cdn_arena *a = cdn_arena_new(256);
    const char *key, *front;
    size_t klen, flen;
    assert_int_equal(
        cdn_purge_url_key("http://Example.com/p?z=1&utm_source=x&a=2", &o, a, &key, &klen), 0);
    assert_int_equal(
        cdn_cache_key("http", "example.com", "/p?z=1&utm_source=x&a=2", &o, a, &front, &flen), 0);
    assert_string_equal(key, front);
    assert_string_equal(key, "http://example.com/p?a=2&z=1");
    cdn_arena_free(a);
}

static void
test_prefix(void **state)
{
    (void)state;
    static const struct {
        const char *url, *want;
    } rows[] = {
        {"http://example.com/img/", "http://example.com/img/"},
        {"HTTPS://EXAMPLE.com:443/Img", "https://example.com/Img"},
        {"http://example.com", "http://example.com/"},
        {"http://example.com:8080", "http://example.com:8080/"},
        {"http://example.com?", "http://example.com/?"},
        /* the path is kept as given, escapes included */
        {"http://example.com/%7e", "http://example.com/%7e"},
        {"http://example.com/a#f", NULL},
        {"ftp://example.com/", NULL},
        {"http://", NULL},
        {"http://u@example.com/", NULL},
        {"http://example.com/ x", NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cdn_arena *a = cdn_arena_new(256);
        const char *pat = NULL;
        size_t plen = 0;
        int rc = cdn_purge_prefix(rows[i].url, a, &pat, &plen);
        if (rows[i].want == NULL) {
            if (rc != CDN_EINVAL)
                fail_msg("row %zu: %s accepted as %s", i, rows[i].url, pat);
        } else {
            if (rc != 0)
                fail_msg("row %zu: %s refused", i, rows[i].url);
            check_str(i, rows[i].url, pat, rows[i].want);
            assert_int_equal(plen, strlen(rows[i].want));
        }
        cdn_arena_free(a);
    }
}

static void
test_method_key(void **state)
{
    (void)state;
    static const struct {
        const char *host, *target, *want;
    } rows[] = {
        {"example.com", "/a?b=1", "http://example.com/a?b=1"},
        {"Example.COM:80", "/", "http://example.com/"},
        {"example.com:8080", "/x", "http://example.com:8080/x"},
        {NULL, "https://example.com/abs", "https://example.com/abs"},
        {"ignored.example", "http://example.com/abs", "http://example.com/abs"},
        {NULL, "/a", NULL},
        {"", "/a", NULL},
        {"example.com:x", "/a", NULL},
        {"u@example.com", "/a", NULL},
        {"example.com/evil", "/a", NULL},
        {"example.com", "a", NULL},
        {"example.com", "*", NULL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cdn_arena *a = cdn_arena_new(256);
        const char *key = NULL;
        size_t klen = 0;
        int rc = cdn_purge_method_key(rows[i].host, rows[i].target, &no_opts, a, &key, &klen);
        if (rows[i].want == NULL) {
            if (rc != CDN_EINVAL)
                fail_msg("row %zu: %s accepted as %s", i, rows[i].target, key);
        } else {
            if (rc != 0)
                fail_msg("row %zu: %s refused", i, rows[i].target);
            check_str(i, rows[i].target, key, rows[i].want);
        }
        cdn_arena_free(a);
    }
}

static void
test_parse(void **state)
{
    (void)state;
    static const struct {
        const char *args; /* "name=value&..." ; "name" alone: NULL value */
        int kind;         /* -1: refused */
        const char *pattern;
        bool soft;
    } rows[] = {
        {"url=http://Example.com/a", CDN_PURGE_URL, "http://example.com/a", false},
        {"url=http://example.com/a&soft=1", CDN_PURGE_URL, "http://example.com/a", true},
        {"soft=0&url=http://example.com/a", CDN_PURGE_URL, "http://example.com/a", false},
        {"prefix=http://example.com/img/", CDN_PURGE_PREFIX, "http://example.com/img/", false},
        {"tag=product-42&soft=1", CDN_PURGE_TAG, "product-42", true},
        {"all=1", CDN_PURGE_ALL, "", false},
        {"all=1&soft=1", CDN_PURGE_ALL, "", true},
        {"", -1, NULL, false},
        {"soft=1", -1, NULL, false},
        {"url=http://example.com/a&tag=x", -1, NULL, false},
        {"all=1&prefix=http://example.com/", -1, NULL, false},
        {"url=http://example.com/a&url=http://example.com/b", -1, NULL, false},
        {"url=/relative", -1, NULL, false},
        {"url", -1, NULL, false},
        {"url=", -1, NULL, false},
        {"prefix=example.com/", -1, NULL, false},
        {"tag=", -1, NULL, false},
        {"tag", -1, NULL, false},
        {"tag=a b", -1, NULL, false},
        {"all=yes", -1, NULL, false},
        {"all", -1, NULL, false},
        {"all=1&soft=2", -1, NULL, false},
        {"all=1&soft=1&soft=1", -1, NULL, false},
        {"all=1&extra=1", -1, NULL, false},
        {"all=1&a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1", -1, NULL, false},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cdn_arena *a = cdn_arena_new(256);
        const char *names[16], *values[16];
        size_t n = 0;
        char *s = cdn_arena_strdup(a, rows[i].args);
        for (char *tok = strtok(s, "&"); tok && n < 16; tok = strtok(NULL, "&")) {
            char *eq = strchr(tok, '=');
            if (eq)
                *eq = '\0';
            names[n] = tok;
            values[n] = eq ? eq + 1 : NULL;
            n++;
        }
        struct cdn_purge_req p;
        const char *reason = NULL;
        int rc = cdn_purge_parse(names, values, n, &no_opts, a, &p, &reason);
        if (rows[i].kind < 0) {
            if (rc != CDN_EINVAL)
                fail_msg("row %zu: \"%s\" accepted", i, rows[i].args);
            assert_non_null(reason);
        } else {
            if (rc != 0)
                fail_msg("row %zu: \"%s\" refused: %s", i, rows[i].args, reason);
            assert_int_equal(p.kind, rows[i].kind);
            check_str(i, rows[i].args, p.pattern, rows[i].pattern);
            assert_int_equal(p.len, strlen(rows[i].pattern));
            assert_int_equal(p.soft, rows[i].soft);
        }
        cdn_arena_free(a);
    }
}

static void
test_tags(void **state)
{
    (void)state;
    char long_tag[CDN_TAG_MAX_LEN + 2];
    memset(long_tag, 'x', sizeof(long_tag) - 1);
    long_tag[sizeof(long_tag) - 1] = '\0'; /* CDN_TAG_MAX_LEN + 1 bytes */
    char max_tag[CDN_TAG_MAX_LEN + 1];
    memset(max_tag, 'y', sizeof(max_tag) - 1);
    max_tag[sizeof(max_tag) - 1] = '\0'; /* exactly CDN_TAG_MAX_LEN bytes */
    struct {
        const char *fields[3][2];
        const char *want; /* NULL: no tags */
        unsigned dropped;
    } rows[] = {
        {{{"Content-Type", "text/plain"}}, NULL, 0},
        {{{"Surrogate-Key", "a b  c"}}, "a b c", 0},
        {{{"surrogate-key", "\ta\t b "}}, "a b", 0},
        {{{"Cache-Tag", "x, y ,z,,"}}, "x y z", 0},
        {{{"Surrogate-Key", "a b"}, {"Cache-Tag", "b,c"}}, "a b c", 0},
        {{{"Cache-Tag", "c"}, {"Surrogate-Key", "a"}, {"Surrogate-Key", "c d"}}, "c a d", 0},
        {{{"Cache-Tag", "two words, ok"}}, "ok", 1},
        {{{"Surrogate-Key", "Case case CASE"}}, "Case case CASE", 0},
        {{{"Surrogate-Key", ""}}, NULL, 0},
        {{{"Surrogate-Key", long_tag}, {"Cache-Tag", max_tag}}, max_tag, 1},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct cdn_arena *a = cdn_arena_new(256);
        struct cdn_hdrs h;
        cdn_hdrs_init(&h, a);
        for (size_t k = 0; k < 3 && rows[i].fields[k][0]; k++)
            cdn_hdrs_add_str(&h, rows[i].fields[k][0], rows[i].fields[k][1]);
        size_t len = 99;
        unsigned dropped = 99;
        const char *got = cdn_tags_build(&h, a, &len, &dropped);
        check_str(i, "tags", got, rows[i].want);
        assert_int_equal(len, rows[i].want ? strlen(rows[i].want) : 0);
        if (dropped != rows[i].dropped)
            fail_msg("row %zu: %u dropped, want %u", i, dropped, rows[i].dropped);
        cdn_arena_free(a);
    }
}

/* At most CDN_TAGS_MAX names are kept; the rest are counted; duplicates do not count. */
static void
test_tags_bound(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(4096);
    char sk[4096] = "", want[4096] = "";
    for (int i = 0; i < CDN_TAGS_MAX + 5; i++) {
        char t[16];
        snprintf(t, sizeof(t), "t%d ", i);
        strcat(sk, t);
        if (i < CDN_TAGS_MAX)
            strcat(want, t);
    }
    want[strlen(want) - 1] = '\0';
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    cdn_hdrs_add_str(&h, "Cache-Tag", "t0, t1"); /* duplicates of the first two */
    cdn_hdrs_add_str(&h, "Surrogate-Key", sk);
    size_t len;
    unsigned dropped;
    const char *got = cdn_tags_build(&h, a, &len, &dropped);
    assert_non_null(got);
    assert_string_equal(got, "t0 t1 t2 t3 t4 t5 t6 t7 t8 t9 t10 t11 t12 t13 t14 t15 t16 t17 t18 "
                             "t19 t20 t21 t22 t23 t24 t25 t26 t27 t28 t29 t30 t31");
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    assert_int_equal(dropped, 5);
    cdn_arena_free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_key),    cmocka_unit_test(test_url_key_options),
        cmocka_unit_test(test_prefix),     cmocka_unit_test(test_method_key),
        cmocka_unit_test(test_parse),      cmocka_unit_test(test_tags),
        cmocka_unit_test(test_tags_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
