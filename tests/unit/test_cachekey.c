/* Unit tests for cache keys, their hash and Vary variants. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/cachekey.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/headers.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "hdrs_of.h"

static void
check_str(size_t row, const char *what, const char *got, const char *want)
{
    if (want == NULL && got == NULL)
        return;
    if (want == NULL || got == NULL || strcmp(got, want) != 0)
        fail_msg("row %zu (%s): \"%s\", want \"%s\"", row, what, got ? got : "(null)",
                 want ? want : "(null)");
}

static void
test_key_host(void **state)
{
    (void)state;
    static const struct {
        const char *scheme, *host, *want;
    } rows[] = {
        {"http", "Example.COM", "example.com"},
        {"http", "example.com:80", "example.com"},
        {"HTTP", "example.com:80", "example.com"},
        {"https", "example.com:443", "example.com"},
        {"http", "example.com:443", "example.com:443"},
        {"https", "example.com:80", "example.com:80"},
        {"http", "example.com:", "example.com"},
        {"http", "example.com:0080", "example.com"},
        {"http", "example.com:08080", "example.com:8080"},
        {"http", "example.com:65535", "example.com:65535"},
        {"http", "example.com:65536", NULL},
        {"http", "example.com:123456", NULL},
        {"http", "example.com:8a", NULL},
        {"http", "example.com:-1", NULL},
        {"http", "192.0.2.1:8080", "192.0.2.1:8080"},
        {"http", "[::1]:80", "[::1]"},
        {"http", "[2001:DB8::1]:8080", "[2001:db8::1]:8080"},
        {"http", "[::1]", "[::1]"},
        {"http", "[::1]x", NULL},
        {"http", "a:b:c", NULL},
        {"http", "", ""},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        check_str(i, "host", cdn_key_host(rows[i].scheme, rows[i].host, strlen(rows[i].host), a),
                  rows[i].want);
        cdn_arena_free(a);
    }
}

static const char *const drop[] = {"utm_source", "fbclid"};
enum { K_NONE, K_IGNORE, K_SORT, K_DROP, K_SORT_DROP };
static const struct cdn_key_opts kopts[] = {
    [K_NONE] = {false, false, NULL, 0},     [K_IGNORE] = {true, false, NULL, 0},
    [K_SORT] = {false, true, NULL, 0},      [K_DROP] = {false, false, drop, 2},
    [K_SORT_DROP] = {false, true, drop, 2},
};

static void
test_cache_key(void **state)
{
    (void)state;
    static const struct {
        const char *scheme, *host, *target;
        int o;
        const char *want; /* NULL: CDN_EINVAL */
    } rows[] = {
        {"http", "example.com", "/", K_NONE, "http://example.com/"},
        {"HTTP", "Example.com:80", "/a", K_NONE, "http://example.com/a"},
        {"https", "ex.com:8443", "/a?b=1", K_NONE, "https://ex.com:8443/a?b=1"},
        {"https", "ex.com:443", "/A/B", K_NONE, "https://ex.com/A/B"}, /* path case kept */
        {"http", "h", "/a%7Eb%2fc%2F%41%2d%2E%5f", K_NONE, "http://h/a~b%2Fc%2FA-._"},
        /* a '%' that starts no escape is escaped itself, so a key normalizes to itself */
        {"http", "h", "/%zz%4", K_NONE, "http://h/%25zz%254"},
        {"http", "h", "/%25zz%254", K_NONE, "http://h/%25zz%254"},
        {"http", "h", "/%2%61", K_NONE, "http://h/%252a"},
        {"http", "h", "/%252a", K_NONE, "http://h/%252a"},
        {"http", "h", "/%", K_NONE, "http://h/%25"},
        {"http", "h", "/%20", K_NONE, "http://h/%20"},
        {"http", "h", "/a?x=%61%3d", K_NONE, "http://h/a?x=a%3D"},
        {"http", "h", "/a?", K_NONE, "http://h/a"},
        {"http", "h", "/a#frag", K_NONE, "http://h/a"},
        {"http", "h", "/a?b#frag", K_NONE, "http://h/a?b"},
        {"http", "h", "/a?b=1&&a=2", K_NONE, "http://h/a?b=1&&a=2"},
        {"http", "h", "a", K_NONE, NULL},
        {"http", "h", "*", K_NONE, NULL},
        {"http", "h", "", K_NONE, NULL},
        {"http", "h:99999", "/", K_NONE, NULL},
        {"http", "h", "/a?b=1&c=2", K_IGNORE, "http://h/a"},
        {"http", "h", "/a", K_IGNORE, "http://h/a"},
        {"http", "h", "/a?c=3&a=1&b=2&a=0", K_SORT, "http://h/a?a=1&a=0&b=2&c=3"},
        {"http", "h", "/a?b&a=", K_SORT, "http://h/a?a=&b"},
        {"http", "h", "/a?&&b=1&", K_SORT, "http://h/a?b=1"},
        {"http", "h", "/a?&&", K_SORT, "http://h/a"},
        {"http", "h", "/a?ab=1&a=2", K_SORT, "http://h/a?a=2&ab=1"},
        {"http", "h", "/a?b=%41&a=%42", K_SORT, "http://h/a?a=B&b=A"},
        {"http", "h", "/a?utm_source=x&id=5&fbclid=y", K_DROP, "http://h/a?id=5"},
        {"http", "h", "/a?utm_source=x", K_DROP, "http://h/a"},
        {"http", "h", "/a?utm_source", K_DROP, "http://h/a"},
        {"http", "h", "/a?utm%5Fsource=x&id=1", K_DROP, "http://h/a?id=1"},
        {"http", "h", "/a?UTM_SOURCE=x", K_DROP, "http://h/a?UTM_SOURCE=x"},
        {"http", "h", "/a?id=utm_source", K_DROP, "http://h/a?id=utm_source"},
        {"http", "h", "/a?b=1&&utm_source=1&a=2", K_DROP, "http://h/a?b=1&a=2"},
        {"http", "h", "/a?z=1&utm_source=2&b=3", K_SORT_DROP, "http://h/a?b=3&z=1"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        const char *key = NULL;
        size_t klen = 0;
        int rc = cdn_cache_key(rows[i].scheme, rows[i].host, rows[i].target, &kopts[rows[i].o], a,
                               &key, &klen);
        if (rows[i].want == NULL) {
            if (rc != CDN_EINVAL)
                fail_msg("row %zu: rc %d, want CDN_EINVAL", i, rc);
        } else {
            if (rc != 0)
                fail_msg("row %zu: rc %d", i, rc);
            check_str(i, "key", key, rows[i].want);
            assert_int_equal(klen, strlen(key));
        }
        cdn_arena_free(a);
    }
}

static void
test_key_opts_from_config(void **state)
{
    (void)state;
    struct cdn_config c;
    memset(&c, 0, sizeof(c));
    c.cache_key_ignore_query = true;
    c.cache_key_sort_query = true;
    c.cache_key_drop_params[0] = "a";
    c.cache_key_drop_params[1] = "b";
    c.n_cache_key_drop_params = 2;
    struct cdn_key_opts o;
    cdn_key_opts_from_config(&c, &o);
    assert_true(o.ignore_query);
    assert_true(o.sort_query);
    assert_int_equal(o.n_drop_params, 2);
    assert_string_equal(o.drop_params[1], "b");
}

static void
hex(const unsigned char *d, char *out)
{
    for (size_t i = 0; i < CDN_KEY_HASH_LEN; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
test_key_hash(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } rows[] = {
        /* FIPS 180-2 test vectors */
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    };
    unsigned char d[CDN_KEY_HASH_LEN];
    char h[2 * CDN_KEY_HASH_LEN + 1];
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        cdn_key_hash(rows[i].in, strlen(rows[i].in), d);
        hex(d, h);
        check_str(i, "sha256", h, rows[i].want);
        cdn_variant_id(rows[i].in, strlen(rows[i].in), d);
        hex(d, h);
        check_str(i, "variant id", h, rows[i].want);
    }
    /* Keys that normalize alike hash alike. */
    struct cdn_arena *a = cdn_arena_new(0);
    const char *k1, *k2;
    size_t n1, n2;
    unsigned char d1[CDN_KEY_HASH_LEN], d2[CDN_KEY_HASH_LEN];
    assert_int_equal(cdn_cache_key("http", "EX.com:80", "/%7e", &kopts[K_NONE], a, &k1, &n1), 0);
    assert_int_equal(cdn_cache_key("http", "ex.com", "/~", &kopts[K_NONE], a, &k2, &n2), 0);
    cdn_key_hash(k1, n1, d1);
    cdn_key_hash(k2, n2, d2);
    assert_memory_equal(d1, d2, CDN_KEY_HASH_LEN);
    cdn_arena_free(a);
}

static void
test_vary_spec(void **state)
{
    (void)state;
    static const struct {
        const char *resp, *want;
    } rows[] = {
        {"", ""},
        {"Vary: ", ""},
        {"Vary: Accept-Encoding", "accept-encoding"},
        {"Vary: Accept-Encoding, User-Agent", "accept-encoding, user-agent"},
        {"Vary: User-Agent\nX: y\nvary: accept", "user-agent, accept"},
        {"Vary: Accept, ACCEPT", "accept"},
        {"Vary: ,Accept,, ", "accept"},
        /* bare commas between one-byte names: the spec is longer than the field */
        {"Vary: a,b,c,d,e", "a, b, c, d, e"},
        {"Vary: a,b\nVary: c,d", "a, b, c, d"},
        {"Vary: *", "*"},
        {"Vary: Accept, *", "*"},
        {"Vary: Accept\nVary: *", "*"},
        {"Vary: bad header", "*"},
        {"Vary: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p", "a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p"},
        {"Vary: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q", "*"},
        {"Vary: a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,A",
         "a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p"},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].resp);
        size_t len = 99;
        const char *spec = cdn_vary_spec(&h, a, &len);
        check_str(i, "spec", spec, rows[i].want);
        assert_int_equal(len, strlen(spec));
        assert_int_equal(cdn_vary_is_star(spec, len), strcmp(rows[i].want, "*") == 0);
        cdn_arena_free(a);
    }
}

static void
test_vary_values(void **state)
{
    (void)state;
    static const struct {
        const char *spec, *req, *want; /* want NULL: no values (Vary: *) */
    } rows[] = {
        {"", "Accept: x", ""},
        {"accept-encoding", "Accept-Encoding: gzip", "accept-encoding:gzip\n"},
        {"accept-encoding", "", "accept-encoding\n"},
        {"accept-encoding", "Accept-Encoding: ", "accept-encoding:\n"},
        {"accept-encoding", "Accept-Encoding: gzip \t", "accept-encoding:gzip\n"},
        /* Accept-Encoding is normalized: acceptable codings, lowercased, sorted, unique */
        {"accept-encoding", "Accept-Encoding: gzip, br", "accept-encoding:br,gzip\n"},
        {"accept-encoding", "Accept-Encoding: BR;q=0.5,gzip", "accept-encoding:br,gzip\n"},
        {"accept-encoding", "Accept-Encoding: gzip;q=0, br", "accept-encoding:br\n"},
        {"accept-encoding", "Accept-Encoding: br\nAccept-Encoding: br, zstd;q=0.000",
         "accept-encoding:br\n"},
        {"accept-encoding", "Accept-Encoding: zstd, br, gzip, br",
         "accept-encoding:br,gzip,zstd\n"},
        {"accept", "Accept: a\nX: 1\nAccept: b", "accept:a,b\n"},
        /* other values are lists: elements trimmed, empty ones dropped, order and case kept */
        {"foo", "Foo: 1,2", "foo:1,2\n"},
        {"foo", "Foo:  1 ,\t2 ", "foo:1,2\n"},
        {"foo", "Foo: a,, B", "foo:a,B\n"},
        {"foo", "Foo: \"a, b\" , c", "foo:\"a, b\",c\n"},
        {"user-agent", "User-Agent: M/5 (K, like G) C/1", "user-agent:M/5 (K,like G) C/1\n"},
        /* Accept-Language also loses inner whitespace and case, but keeps its order */
        {"accept-language", "Accept-Language:  EN-us , De ; q=0.5",
         "accept-language:en-us,de;q=0.5\n"},
        {"accept-language", "Accept-Language: de, en", "accept-language:de,en\n"},
        {"accept, user-agent", "User-Agent: x\nAccept: y", "accept:y\nuser-agent:x\n"},
        {"accept, user-agent", "User-Agent: x", "accept\nuser-agent:x\n"},
        {"*", "Accept: x", NULL},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h = hdrs_of(a, rows[i].req);
        size_t len = 0;
        const char *v = cdn_vary_values(rows[i].spec, strlen(rows[i].spec), &h, a, &len);
        check_str(i, "values", v, rows[i].want);
        if (v)
            assert_int_equal(len, strlen(v));
        cdn_arena_free(a);
    }
}

static void
test_vary_match(void **state)
{
    (void)state;
    static const struct {
        const char *resp, *stored_req, *req;
        bool want;
    } rows[] = {
        {"", "Accept: a", "Accept: b", true},
        {"Vary: Accept-Encoding", "Accept-Encoding: gzip", "Accept-Encoding: gzip", true},
        {"Vary: Accept-Encoding", "Accept-Encoding: gzip", "Accept-Encoding: br", false},
        {"Vary: Accept-Encoding", "Accept-Encoding: gzip", "", false},
        {"Vary: Accept-Encoding", "", "", true},
        {"Vary: Accept-Encoding", "", "Accept-Encoding: ", false},
        /* codings and language tags are case-insensitive (normalized); other fields are not */
        {"Vary: Accept-Encoding", "Accept-Encoding: gzip", "Accept-Encoding: GZIP", true},
        {"Vary: Accept-Encoding", "Accept-Encoding: gzip, br", "Accept-Encoding: br,gzip", true},
        {"Vary: Accept-Language", "Accept-Language: en", "Accept-Language: EN", true},
        {"Vary: Accept-Language", "Accept-Language: en, de", "Accept-Language:  en ,de", true},
        {"Vary: Accept-Language", "Accept-Language: en, de", "Accept-Language: de, en", false},
        {"Vary: Foo", "Foo: 1,2", "Foo:  1, 2 ", true},
        {"Vary: Foo", "Foo: a", "Foo: A", false},
        {"Vary: Accept-Encoding", "accept-encoding: gzip", "ACCEPT-ENCODING: gzip", true},
        {"Vary: Accept", "Accept: a\nAccept: b", "Accept: a, b", true},
        {"Vary: Accept", "Accept:  a ", "Accept: a", true},
        {"Vary: Accept", "Accept: a, b", "Accept: b, a", false},
        {"Vary: Accept, Cookie", "Accept: a\nCookie: s=1", "Cookie: s=1\nAccept: a", true},
        {"Vary: Accept, Cookie", "Accept: a\nCookie: s=1", "Cookie: s=2\nAccept: a", false},
        {"Vary: Accept", "Accept: a\nOther: 1", "Accept: a\nOther: 2", true},
        {"Vary: *", "", "", false},
        {"Vary: *", "Accept: a", "Accept: a", false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs resp = hdrs_of(a, rows[i].resp);
        struct cdn_hdrs sreq = hdrs_of(a, rows[i].stored_req), req = hdrs_of(a, rows[i].req);
        size_t slen, svlen = 0;
        const char *spec = cdn_vary_spec(&resp, a, &slen);
        const char *sv = cdn_vary_values(spec, slen, &sreq, a, &svlen);
        if (cdn_vary_match(spec, slen, sv ? sv : "", svlen, &req, a) != rows[i].want)
            fail_msg("row %zu: match is %d", i, !rows[i].want);
        if (sv) {
            /* the variant id agrees with the match */
            size_t nlen;
            const char *nv = cdn_vary_values(spec, slen, &req, a, &nlen);
            unsigned char d1[CDN_KEY_HASH_LEN], d2[CDN_KEY_HASH_LEN];
            cdn_variant_id(sv, svlen, d1);
            cdn_variant_id(nv, nlen, d2);
            assert_int_equal(memcmp(d1, d2, CDN_KEY_HASH_LEN) == 0, rows[i].want);
        }
        cdn_arena_free(a);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_host),
        cmocka_unit_test(test_cache_key),
        cmocka_unit_test(test_key_opts_from_config),
        cmocka_unit_test(test_key_hash),
        cmocka_unit_test(test_vary_spec),
        cmocka_unit_test(test_vary_values),
        cmocka_unit_test(test_vary_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
