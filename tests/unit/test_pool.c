/*
 * Unit tests for upstream selection: each balance policy, the fall/rise thresholds, what happens
 * when every member is down, the retry order, and the rendezvous numbers (adding a member moves
 * about 1/N of the keys, and only to the new member).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/common.h"
#include "cdnode/pool.h"

#include <stdio.h>
#include <string.h>

static const char *const names[] = {
    "http://10.0.0.1:80", "http://10.0.0.2:80", "http://10.0.0.3:80",
    "http://10.0.0.4:80", "http://10.0.0.5:80",
};

static void
mark_down(struct cdn_pool *p, size_t i)
{
    for (unsigned k = 0; k < p->fall; k++)
        cdn_pool_report(p, i, false);
    assert_false(p->m[i].healthy);
}

static void
test_balance_names(void **state)
{
    (void)state;
    static const char *const ok[] = {"round-robin", "least-outstanding", "hash"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(ok); i++) {
        enum cdn_balance b;
        assert_int_equal(cdn_balance_parse(ok[i], &b), 0);
        assert_string_equal(cdn_balance_name(b), ok[i]);
    }
    static const char *const bad[] = {"", "Hash", "round_robin", "roundrobin", "hash ", "random"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(bad); i++) {
        enum cdn_balance b = CDN_BALANCE_HASH;
        assert_int_equal(cdn_balance_parse(bad[i], &b), CDN_EINVAL);
        assert_int_equal(b, CDN_BALANCE_HASH);
    }
}

static void
test_round_robin(void **state)
{
    (void)state;
    struct cdn_pool p;
    cdn_pool_init(&p, CDN_BALANCE_ROUND_ROBIN, 3, 2, names, 3);
    for (int i = 0; i < 9; i++)
        assert_int_equal(cdn_pool_pick(&p, "key", 0), i % 3);
    /* A down member is skipped; the others keep their turns. */
    mark_down(&p, 1);
    int want[] = {0, 2, 0, 2, 0};
    for (size_t i = 0; i < CDN_ARRAY_LEN(want); i++)
        assert_int_equal(cdn_pool_pick(&p, NULL, 0), want[i]);
    /* A single member is always picked. */
    cdn_pool_init(&p, CDN_BALANCE_ROUND_ROBIN, 3, 2, names, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(cdn_pool_pick(&p, NULL, 0), 0);
}

static void
test_least_outstanding(void **state)
{
    (void)state;
    struct cdn_pool p;
    cdn_pool_init(&p, CDN_BALANCE_LEAST_OUTSTANDING, 3, 2, names, 3);
    /* Idle: ties go in turn, so requests still spread. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(cdn_pool_pick(&p, NULL, 0), i % 3);
    /* Member 0 holds two requests, member 1 one: member 2 is chosen until it holds as many. */
    cdn_pool_begin(&p, 0);
    cdn_pool_begin(&p, 0);
    cdn_pool_begin(&p, 1);
    assert_int_equal(cdn_pool_pick(&p, NULL, 0), 2);
    cdn_pool_begin(&p, 2);
    int m = cdn_pool_pick(&p, NULL, 0);
    assert_true(m == 1 || m == 2);
    cdn_pool_begin(&p, (size_t)m);
    assert_int_equal(cdn_pool_pick(&p, NULL, 0), m == 1 ? 2 : 1);
    /* Ending requests makes a member attractive again. */
    cdn_pool_end(&p, 0);
    cdn_pool_end(&p, 0);
    assert_int_equal(p.m[0].outstanding, 0);
    assert_int_equal(cdn_pool_pick(&p, NULL, 0), 0);
    /* The fewest outstanding, but only among healthy members. */
    mark_down(&p, 0);
    m = cdn_pool_pick(&p, NULL, 0);
    assert_true(m == 1 || m == 2);
    assert_int_equal(p.m[0].requests, 2);
}

static void
test_hash_same_key_same_member(void **state)
{
    (void)state;
    struct cdn_pool p;
    cdn_pool_init(&p, CDN_BALANCE_HASH, 3, 2, names, 3);
    int seen[3] = {0};
    for (int i = 0; i < 300; i++) {
        char key[64];
        snprintf(key, sizeof(key), "http://example.com/object/%d", i);
        int m = cdn_pool_pick(&p, key, 0);
        assert_in_range(m, 0, 2);
        for (int k = 0; k < 3; k++)
            assert_int_equal(cdn_pool_pick(&p, key, 0), m);
        seen[m]++;
    }
    for (int i = 0; i < 3; i++)
        assert_in_range(seen[i], 60, 140); /* 100 each, roughly */
    /* No key: round robin. */
    for (int i = 0; i < 6; i++)
        assert_int_equal(cdn_pool_pick(&p, NULL, 0), i % 3);
    /* A member's keys do not depend on where it is in the list. */
    const char *const reversed[] = {names[2], names[1], names[0]};
    struct cdn_pool q;
    cdn_pool_init(&q, CDN_BALANCE_HASH, 3, 2, reversed, 3);
    for (int i = 0; i < 100; i++) {
        char key[64];
        snprintf(key, sizeof(key), "/k%d", i);
        assert_int_equal(cdn_pool_pick(&p, key, 0), 2 - cdn_pool_pick(&q, key, 0));
    }
}

/* 10000 keys from 3 to 4 members: ~1/4 move, every one of them to the new member. */
static void
test_hash_adding_a_member(void **state)
{
    (void)state;
    struct cdn_pool three, four;
    cdn_pool_init(&three, CDN_BALANCE_HASH, 3, 2, names, 3);
    cdn_pool_init(&four, CDN_BALANCE_HASH, 3, 2, names, 4);
    const int keys = 10000;
    int moved = 0, per[4] = {0};
    for (int i = 0; i < keys; i++) {
        char key[96];
        snprintf(key, sizeof(key), "https://cdn.example.net/assets/%d/app.js?v=%d", i, i % 7);
        int a = cdn_pool_pick(&three, key, 0), b = cdn_pool_pick(&four, key, 0);
        per[b]++;
        if (a == b)
            continue;
        if (b != 3)
            fail_msg("key %s moved from member %d to old member %d", key, a, b);
        moved++;
    }
    print_message("moved %d of %d keys; per member %d %d %d %d\n", moved, keys, per[0], per[1],
                  per[2], per[3]);
    assert_in_range(moved, 2000, 3000);
    for (int i = 0; i < 4; i++)
        assert_in_range(per[i], 2000, 3000);

    /* Removing a member (marking it down) moves only its keys, spread over the others. */
    mark_down(&four, 1);
    int spread[4] = {0};
    for (int i = 0; i < keys; i++) {
        char key[32];
        snprintf(key, sizeof(key), "/k%d", i);
        four.m[1].healthy = true;
        int before = cdn_pool_pick(&four, key, 0);
        four.m[1].healthy = false;
        int after = cdn_pool_pick(&four, key, 0);
        if (before != 1)
            assert_int_equal(after, before);
        else
            spread[after]++;
    }
    assert_int_equal(spread[1], 0);
    for (int i = 0; i < 4; i++)
        if (i != 1)
            assert_in_range(spread[i], 500, 1200); /* ~2500 keys over three members */
}

static void
test_fall_and_rise(void **state)
{
    (void)state;
    struct cdn_pool p;
    cdn_pool_init(&p, CDN_BALANCE_ROUND_ROBIN, 3, 2, names, 2);
    /* Failures must be consecutive: a success in between starts the count over. */
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_SAME);
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_SAME);
    assert_int_equal(cdn_pool_report(&p, 0, true), CDN_POOL_SAME);
    assert_int_equal(p.m[0].fails, 0);
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_SAME);
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_SAME);
    assert_true(p.m[0].healthy);
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_WENT_DOWN);
    assert_false(p.m[0].healthy);
    assert_int_equal(p.m[0].fails, 3);
    /* More failures while down are no new transition. */
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_SAME);
    assert_int_equal(p.m[0].failures, 6);
    /* Rising needs consecutive successes too. */
    assert_int_equal(cdn_pool_report(&p, 0, true), CDN_POOL_SAME);
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_SAME);
    assert_int_equal(cdn_pool_report(&p, 0, true), CDN_POOL_SAME);
    assert_false(p.m[0].healthy);
    assert_int_equal(cdn_pool_report(&p, 0, true), CDN_POOL_WENT_UP);
    assert_true(p.m[0].healthy);
    assert_int_equal(p.m[0].oks, 2);
    assert_int_equal(cdn_pool_report(&p, 0, true), CDN_POOL_SAME);
    /* The other member was never touched. */
    assert_true(p.m[1].healthy);
    assert_int_equal(p.m[1].failures, 0);

    /* fall = rise = 1: every observation flips. */
    cdn_pool_init(&p, CDN_BALANCE_ROUND_ROBIN, 1, 1, names, 1);
    assert_int_equal(cdn_pool_report(&p, 0, false), CDN_POOL_WENT_DOWN);
    assert_int_equal(cdn_pool_report(&p, 0, true), CDN_POOL_WENT_UP);
}

static void
test_all_down_least_recently_failed(void **state)
{
    (void)state;
    static const enum cdn_balance policies[] = {CDN_BALANCE_ROUND_ROBIN,
                                                CDN_BALANCE_LEAST_OUTSTANDING, CDN_BALANCE_HASH};
    for (size_t pi = 0; pi < CDN_ARRAY_LEN(policies); pi++) {
        struct cdn_pool p;
        cdn_pool_init(&p, policies[pi], 2, 2, names, 3);
        mark_down(&p, 2);
        mark_down(&p, 0);
        mark_down(&p, 1);
        /* Still one is tried, the one whose last failure is oldest: member 2. */
        assert_int_equal(cdn_pool_pick(&p, "k", 0), 2);
        assert_int_equal(cdn_pool_pick(&p, NULL, 0), 2);
        /* It fails again: now member 0 failed longest ago. */
        cdn_pool_report(&p, 2, false);
        assert_int_equal(cdn_pool_pick(&p, "k", 0), 0);
        /* Excluding it (a retry) gives the next oldest. */
        assert_int_equal(cdn_pool_pick(&p, "k", 1u << 0), 1);
        /* One member coming back takes all the traffic. */
        cdn_pool_report(&p, 1, true);
        cdn_pool_report(&p, 1, true);
        assert_true(p.m[1].healthy);
        for (int i = 0; i < 4; i++)
            assert_int_equal(cdn_pool_pick(&p, i % 2 ? "k" : NULL, 0), 1);
        /* Healthy but excluded: the down ones are next, oldest failure first. */
        assert_int_equal(cdn_pool_pick(&p, "k", 1u << 1), 0);
    }
}

static void
test_retry_order(void **state)
{
    (void)state;
    struct cdn_pool p;
    /* Round robin: the next member after the one that failed. */
    cdn_pool_init(&p, CDN_BALANCE_ROUND_ROBIN, 3, 2, names, 4);
    int first = cdn_pool_pick(&p, NULL, 0);
    assert_int_equal(first, 0);
    assert_int_equal(cdn_pool_pick(&p, NULL, 1u << first), 1);
    /* Excluding everyone: nothing left. */
    assert_int_equal(cdn_pool_pick(&p, NULL, 0xf), -1);
    assert_int_equal(cdn_pool_pick(&p, "k", 0xf), -1);
    /* A healthy member is preferred over a down one for the retry. */
    mark_down(&p, 2);
    p.rr = 1;
    assert_int_equal(cdn_pool_pick(&p, NULL, 1u << 1), 3);

    /* Hash: the retry goes to the key's second-highest weight, the member that would own the key
     * if the first were gone. */
    cdn_pool_init(&p, CDN_BALANCE_HASH, 3, 2, names, 4);
    struct cdn_pool without;
    for (int i = 0; i < 200; i++) {
        char key[32];
        snprintf(key, sizeof(key), "/r%d", i);
        int m = cdn_pool_pick(&p, key, 0);
        int next = cdn_pool_pick(&p, key, 1u << m);
        assert_true(next >= 0 && next != m);
        cdn_pool_init(&without, CDN_BALANCE_HASH, 1, 2, names, 4);
        cdn_pool_report(&without, (size_t)m, false);
        assert_int_equal(cdn_pool_pick(&without, key, 0), next);
    }

    /* Least outstanding: the least loaded of the rest. */
    cdn_pool_init(&p, CDN_BALANCE_LEAST_OUTSTANDING, 3, 2, names, 3);
    cdn_pool_begin(&p, 1);
    assert_int_equal(cdn_pool_pick(&p, NULL, 1u << 0), 2);
}

static void
test_counts(void **state)
{
    (void)state;
    struct cdn_pool p;
    cdn_pool_init(&p, CDN_BALANCE_ROUND_ROBIN, 3, 2, names, 2);
    for (int i = 0; i < 5; i++)
        cdn_pool_begin(&p, 1);
    for (int i = 0; i < 3; i++)
        cdn_pool_end(&p, 1);
    assert_int_equal(p.m[1].outstanding, 2);
    assert_int_equal(p.m[1].requests, 5);
    assert_int_equal(p.m[0].requests, 0);
    /* Picking alone counts nothing. */
    cdn_pool_pick(&p, NULL, 0);
    assert_int_equal(p.m[0].requests, 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_balance_names),
        cmocka_unit_test(test_round_robin),
        cmocka_unit_test(test_least_outstanding),
        cmocka_unit_test(test_hash_same_key_same_member),
        cmocka_unit_test(test_hash_adding_a_member),
        cmocka_unit_test(test_fall_and_rise),
        cmocka_unit_test(test_all_down_least_recently_failed),
        cmocka_unit_test(test_retry_order),
        cmocka_unit_test(test_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
