/*
 * The request allocators: the arena (bump allocation, large blocks, reset keeping only its
 * first block, integer formatting) and the per-thread object caches (LIFO reuse, the depth bound, independence of
 * threads, destruction when a thread ends and on flush).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/tcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void
test_arena_alloc(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(256);
    char *p[64];
    for (int i = 0; i < 64; i++) { /* many blocks: 64 x 100 bytes over a 256-byte first one */
        p[i] = cdn_arena_alloc(a, 100);
        assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
        memset(p[i], i, 100);
    }
    char *big = cdn_arena_alloc(a, 100000); /* a block of its own */
    memset(big, 0xee, 100000);
    for (int i = 0; i < 64; i++)
        for (int j = 0; j < 100; j++)
            assert_int_equal((unsigned char)p[i][j], i);
    assert_string_equal(cdn_arena_printf(a, "%s-%d", "x", 42), "x-42");
    assert_string_equal(cdn_arena_strndup(a, "abcdef", 3), "abc");
    cdn_arena_free(a);
}

static void
test_arena_reset(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(1024);
    char *first = cdn_arena_alloc(a, 16);
    for (int round = 0; round < 3; round++) {
        /* fill past the first block, with a large block in the chain */
        for (int i = 0; i < 50; i++)
            memset(cdn_arena_alloc(a, 200), round, 200);
        memset(cdn_arena_alloc(a, 50000), round, 50000);
        cdn_arena_reset(a);
        /* the first allocation after a reset is the first block's start again */
        char *again = cdn_arena_alloc(a, 16);
        assert_ptr_equal(again, first);
    }
    cdn_arena_free(a); /* with ASan or valgrind: every block of every round was freed */
}

static void *
make_pooled(void *arg)
{
    (void)arg;
    struct cdn_arena *a = cdn_arena_new(CDN_ARENA_POOLED);
    memset(cdn_arena_alloc(a, 3000), 1, 3000);
    memset(cdn_arena_alloc(a, 9000), 2, 9000); /* a second block */
    return a;
}

/* Arenas of the pooled size come back emptied, whichever thread dropped them; others do not. */
static void
test_arena_recycled(void **state)
{
    (void)state;
    cdn_arena_drain();
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, make_pooled, NULL), 0);
    void *made;
    assert_int_equal(pthread_join(th, &made), 0);
    cdn_arena_free(made);
    struct cdn_arena *a = cdn_arena_new(CDN_ARENA_POOLED);
    assert_ptr_equal(a, made);
    /* Emptied: the first block is whole again. */
    char *p = cdn_arena_alloc(a, CDN_ARENA_POOLED - 64);
    memset(p, 3, CDN_ARENA_POOLED - 64);
    cdn_arena_free(a);
    struct cdn_arena *other = cdn_arena_new(1024);
    cdn_arena_free(other);
    assert_ptr_equal(cdn_arena_new(CDN_ARENA_POOLED), a);
    cdn_arena_free(a);
    /* More dropped at once than the list keeps: the rest are freed (ASan and valgrind see it). */
    struct cdn_arena *many[CDN_ARENA_KEPT + 36];
    for (size_t i = 0; i < CDN_ARRAY_LEN(many); i++)
        many[i] = cdn_arena_new(CDN_ARENA_POOLED);
    for (size_t i = 0; i < CDN_ARRAY_LEN(many); i++)
        cdn_arena_free(many[i]);
    /* The list kept the first CDN_ARENA_KEPT dropped; the last of them is the first taken. */
    assert_ptr_equal(cdn_arena_new(CDN_ARENA_POOLED), many[CDN_ARENA_KEPT - 1]);
    cdn_arena_free(many[CDN_ARENA_KEPT - 1]);
    cdn_arena_drain();
}

static void
test_fmt_i64(void **state)
{
    (void)state;
    static const struct {
        int64_t v;
        const char *want;
    } rows[] = {
        {0, "0"},
        {7, "7"},
        {10, "10"},
        {-1, "-1"},
        {3600, "3600"},
        {-86400, "-86400"},
        {INT64_MAX, "9223372036854775807"},
        {INT64_MIN, "-9223372036854775808"},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        char buf[CDN_I64_CHARS];
        size_t n = cdn_fmt_i64(buf, rows[i].v);
        assert_string_equal(buf, rows[i].want);
        assert_int_equal(n, strlen(rows[i].want));
    }
    struct cdn_arena *a = cdn_arena_new(256);
    assert_string_equal(cdn_arena_cat_i64(a, "node; hit", "; ttl=", 42), "node; hit; ttl=42");
    assert_string_equal(cdn_arena_cat_i64(a, "", "", -5), "-5");
    assert_string_equal(cdn_arena_cat_i64(a, "x", "=", INT64_MIN), "x=-9223372036854775808");
    assert_string_equal(cdn_arena_cat(a, "node", "; fwd=", "miss", "", "; stored", NULL),
                        "node; fwd=miss; stored");
    assert_string_equal(cdn_arena_cat(a, "", NULL), "");
    /* Longer than the arena's first block: taken from a block of its own. */
    char big[1000];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *c = cdn_arena_cat(a, big, "|", big, NULL);
    assert_int_equal(strlen(c), 2 * (sizeof(big) - 1) + 1);
    assert_int_equal(c[sizeof(big) - 1], '|');
    cdn_arena_free(a);
}

static atomic_int destroyed;

static void
destroy(void *p)
{
    atomic_fetch_add(&destroyed, 1);
    free(p);
}

static void
test_tcache_lifo_and_bound(void **state)
{
    (void)state;
    cdn_tcache_flush();
    atomic_store(&destroyed, 0);
    assert_null(cdn_tcache_get(CDN_TC_REQ));
    void *a = cdn_malloc(8), *b = cdn_malloc(8);
    cdn_tcache_put(CDN_TC_REQ, a, destroy);
    cdn_tcache_put(CDN_TC_REQ, b, destroy);
    assert_null(cdn_tcache_get(CDN_TC_LEASE)); /* kinds are separate */
    assert_ptr_equal(cdn_tcache_get(CDN_TC_REQ), b);
    assert_ptr_equal(cdn_tcache_get(CDN_TC_REQ), a);
    assert_null(cdn_tcache_get(CDN_TC_REQ));
    /* one more than the depth: the last is destroyed at once */
    void *items[CDN_TCACHE_DEPTH + 1];
    items[0] = a;
    items[1] = b;
    for (int i = 2; i <= CDN_TCACHE_DEPTH; i++)
        items[i] = cdn_malloc(8);
    for (int i = 0; i <= CDN_TCACHE_DEPTH; i++)
        cdn_tcache_put(CDN_TC_REQ, items[i], destroy);
    assert_int_equal(atomic_load(&destroyed), 1);
    cdn_tcache_flush();
    assert_int_equal(atomic_load(&destroyed), CDN_TCACHE_DEPTH + 1);
    assert_null(cdn_tcache_get(CDN_TC_REQ));
}

static void *
thread_puts(void *arg)
{
    void **seen = arg;
    *seen = cdn_tcache_get(CDN_TC_LEASE); /* not the main thread's object */
    for (int i = 0; i < 5; i++)
        cdn_tcache_put(CDN_TC_LEASE, cdn_malloc(8), destroy);
    return NULL;
}

static void
test_tcache_threads(void **state)
{
    (void)state;
    cdn_tcache_flush();
    atomic_store(&destroyed, 0);
    void *mine = cdn_malloc(8);
    cdn_tcache_put(CDN_TC_LEASE, mine, destroy);
    void *seen = &seen;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_puts, &seen), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_null(seen);
    /* the thread's five went when it ended; ours is still here */
    assert_int_equal(atomic_load(&destroyed), 5);
    assert_ptr_equal(cdn_tcache_get(CDN_TC_LEASE), mine);
    free(mine);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_alloc),           cmocka_unit_test(test_arena_reset),
        cmocka_unit_test(test_arena_recycled),        cmocka_unit_test(test_fmt_i64),
        cmocka_unit_test(test_tcache_lifo_and_bound), cmocka_unit_test(test_tcache_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
