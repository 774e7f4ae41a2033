/* Unit tests for the in-flight fetch table: lead, follow, settle, hit-for-miss, too-late joins. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/collapse.h"
#include "cdnode/common.h"
#include "cdnode/fetch.h"

#include <string.h>

static void
nop(struct cdn_waiter *w)
{
    (void)w;
}

static void
waiter_init(struct cdn_waiter *w)
{
    memset(w, 0, sizeof(*w));
    w->magic = CDN_WAITER_MAGIC;
    w->park = nop;
    w->wake = nop;
}

static struct cdn_fetch *
new_fetch(void)
{
    static const char *hdrs[] = {NULL};
    struct cdn_fetch_req req = {.method = "GET", .target = "/k", .headers = hdrs,
                                .body_len = -1, .window = 1 << 20};
    return cdn_fetch_new(&req);
}

static void
publish(struct cdn_fetch *f, int status)
{
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, cdn_fetch_arena(f));
    cdn_fetch_publish(f, status, &h, -1);
}

static void
test_lead_then_follow_then_settle(void **state)
{
    (void)state;
    struct cdn_collapse *c = cdn_collapse_new(10000);
    struct cdn_waiter a, b, d;
    waiter_init(&a);
    waiter_init(&b);
    waiter_init(&d);
    struct cdn_fetch *f1 = new_fetch(), *f2 = new_fetch(), *got = NULL;
    assert_int_equal(cdn_collapse_join(c, "k", 1, &a, f1, &got), CDN_JOIN_LEAD);
    assert_ptr_equal(got, f1);
    assert_int_equal(cdn_collapse_join(c, "k", 1, &b, f2, &got), CDN_JOIN_FOLLOW);
    assert_ptr_equal(got, f1);
    cdn_fetch_unref(f2); /* the unused candidate */
    struct cdn_collapse_stats st;
    cdn_collapse_stats(c, &st);
    assert_int_equal(st.leaders, 1);
    assert_int_equal(st.followers, 1);
    assert_int_equal(st.entries, 1);
    /* The fetch fails: the entry goes, and the next request leads again. */
    cdn_fetch_fail(f1, 502, "refused");
    cdn_collapse_stats(c, &st);
    assert_int_equal(st.entries, 0);
    struct cdn_fetch *f3 = new_fetch();
    assert_int_equal(cdn_collapse_join(c, "k", 1, &d, f3, &got), CDN_JOIN_LEAD);
    cdn_fetch_fail(f3, 502, "refused");
    cdn_fetch_detach(f1, &a);
    cdn_fetch_detach(f1, &b);
    cdn_fetch_detach(f3, &d);
    cdn_fetch_unref(f1); /* the follower's reference */
    cdn_fetch_unref(f1); /* the leader's */
    cdn_fetch_unref(f3);
    cdn_collapse_free(c);
}

static void
test_unstored_head_sets_hit_for_miss(void **state)
{
    (void)state;
    struct cdn_collapse *c = cdn_collapse_new(60000);
    struct cdn_waiter a, b;
    waiter_init(&a);
    waiter_init(&b);
    struct cdn_fetch *f1 = new_fetch(), *f2 = new_fetch(), *got = NULL;
    assert_int_equal(cdn_collapse_join(c, "p", 1, &a, f1, &got), CDN_JOIN_LEAD);
    publish(f1, 200); /* no sink took it: not stored */
    assert_int_equal(cdn_collapse_join(c, "p", 1, &b, f2, &got), CDN_JOIN_ALONE);
    struct cdn_collapse_stats st;
    cdn_collapse_stats(c, &st);
    assert_int_equal(st.markers, 1);
    assert_int_equal(st.hit_for_miss, 1);
    cdn_fetch_finish(f1);
    cdn_fetch_detach(f1, &a);
    cdn_fetch_unref(f1);
    cdn_fetch_unref(f2);
    cdn_collapse_free(c);
}

static void
test_304_leaves_no_marker(void **state)
{
    (void)state;
    struct cdn_collapse *c = cdn_collapse_new(60000);
    struct cdn_waiter a, b;
    waiter_init(&a);
    waiter_init(&b);
    struct cdn_fetch *f1 = new_fetch(), *f2 = new_fetch(), *got = NULL;
    assert_int_equal(cdn_collapse_join(c, "r", 1, &a, f1, &got), CDN_JOIN_LEAD);
    publish(f1, 304);
    assert_int_equal(cdn_collapse_join(c, "r", 1, &b, f2, &got), CDN_JOIN_LEAD);
    cdn_fetch_finish(f1);
    publish(f2, 304);
    cdn_fetch_finish(f2);
    cdn_fetch_detach(f1, &a);
    cdn_fetch_detach(f2, &b);
    cdn_fetch_unref(f1);
    cdn_fetch_unref(f2);
    cdn_collapse_free(c);
}

static void
test_complete_body_cannot_be_joined(void **state)
{
    (void)state;
    struct cdn_collapse *c = cdn_collapse_new(0);
    struct cdn_waiter a;
    waiter_init(&a);
    struct cdn_fetch *f = new_fetch();
    struct cdn_waiter late;
    waiter_init(&late);
    cdn_fetch_attach(f, &a);
    publish(f, 200);
    assert_true(cdn_fetch_append(f, "abc", 3));
    assert_true(cdn_fetch_try_attach(f, &late)); /* still arriving: may join */
    cdn_fetch_detach(f, &late);
    cdn_fetch_finish(f);
    assert_false(cdn_fetch_try_attach(f, &late)); /* complete: answered someone earlier */
    cdn_fetch_detach(f, &a);
    cdn_fetch_unref(f);
    cdn_collapse_free(c);
}

static void
test_detached_lead_once(void **state)
{
    (void)state;
    struct cdn_collapse *c = cdn_collapse_new(0);
    struct cdn_fetch *f1 = new_fetch(), *f2 = new_fetch();
    assert_true(cdn_collapse_lead_detached(c, "s", 1, f1));
    assert_false(cdn_collapse_lead_detached(c, "s", 1, f2)); /* one refresh per key */
    assert_true(cdn_collapse_lead_detached(c, "t", 1, f2));
    cdn_fetch_fail(f1, 502, "x");
    cdn_fetch_fail(f2, 502, "x");
    cdn_fetch_unref(f1);
    cdn_fetch_unref(f2);
    cdn_collapse_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lead_then_follow_then_settle),
        cmocka_unit_test(test_unstored_head_sets_hit_for_miss),
        cmocka_unit_test(test_304_leaves_no_marker),
        cmocka_unit_test(test_complete_body_cannot_be_joined),
        cmocka_unit_test(test_detached_lead_once),
    };
    return cmocka_run_group_tests_name("collapse", tests, NULL, NULL);
}
