/*
 * SHA-256: the FIPS 180-4 example vectors, agreement with OpenSSL's one-shot SHA256() for every
 * length across the one- and two-final-block boundaries (0..300 bytes) and a long buffer, and
 * concurrent callers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/sha256.h"

#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void
hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < CDN_SHA256_LEN; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

static void
test_vectors(void **state)
{
    (void)state;
    static const struct {
        const char *in, *want;
    } v[] = {
        {"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
        {"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
         "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        uint8_t d[CDN_SHA256_LEN];
        char got[2 * CDN_SHA256_LEN + 1];
        cdn_sha256(v[i].in, strlen(v[i].in), d);
        hex(d, got);
        assert_string_equal(got, v[i].want);
    }
    /* One million 'a' (FIPS 180-2 appendix B.3). */
    size_t n = 1000000;
    char *a = malloc(n);
    assert_non_null(a);
    memset(a, 'a', n);
    uint8_t d[CDN_SHA256_LEN];
    char got[2 * CDN_SHA256_LEN + 1];
    cdn_sha256(a, n, d);
    hex(d, got);
    assert_string_equal(got, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    free(a);
}

struct thread_arg {
    uint8_t d[CDN_SHA256_LEN];
};

static void *
hash_in_thread(void *arg)
{
    struct thread_arg *a = arg;
    for (int i = 0; i < 1000; i++)
        cdn_sha256("abc", 3, a->d);
    return NULL;
}

/* Each thread has its own context: concurrent callers get the same answer. */
static void
test_threads(void **state)
{
    (void)state;
    struct thread_arg a[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, hash_in_thread, &a[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        char got[2 * CDN_SHA256_LEN + 1];
        hex(a[i].d, got);
        assert_string_equal(got, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}

static void
test_against_openssl(void **state)
{
    (void)state;
    uint8_t buf[4096];
    unsigned seed = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
    for (size_t len = 0; len <= 300; len++) {
        uint8_t mine[CDN_SHA256_LEN], ref[SHA256_DIGEST_LENGTH];
        cdn_sha256(buf, len, mine);
        SHA256(buf, len, ref);
        if (memcmp(mine, ref, sizeof(mine)) != 0)
            fail_msg("length %zu differs from OpenSSL", len);
    }
    uint8_t mine[CDN_SHA256_LEN], ref[SHA256_DIGEST_LENGTH];
    cdn_sha256(buf, sizeof(buf), mine);
    SHA256(buf, sizeof(buf), ref);
    assert_memory_equal(mine, ref, sizeof(mine));
    cdn_sha256(NULL, 0, mine);
    SHA256((const unsigned char *)"", 0, ref);
    assert_memory_equal(mine, ref, sizeof(mine));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors),
        cmocka_unit_test(test_against_openssl),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
