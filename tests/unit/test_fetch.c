/* Unit tests for the shared fetch stream: park/wake, window, trimming, upload pipe, failure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/fetch.h"

#include <string.h>

struct probe {
    struct cdn_waiter w;
    int parks;
    int wakes;
};

static void
on_park(struct cdn_waiter *w)
{
    ((struct probe *)w->owner)->parks++;
}

static void
on_wake(struct cdn_waiter *w)
{
    ((struct probe *)w->owner)->wakes++;
}

static void
probe_init(struct probe *p)
{
    memset(p, 0, sizeof(*p));
    p->w.magic = CDN_WAITER_MAGIC;
    p->w.park = on_park;
    p->w.wake = on_wake;
    p->w.owner = p;
}

static int kicks;
static void
on_kick(void *arg)
{
    (void)arg;
    kicks++;
}

static struct cdn_fetch *
new_fetch(size_t window, bool body)
{
    static const char *hdrs[] = {"Host: example.test", NULL};
    struct cdn_fetch_req req = {
        .method = "GET",
        .target = "/x",
        .key = "http://example.test/x",
        .headers = hdrs,
        .body_len = body ? 10 : -1,
        .has_body = body,
        .window = window,
    };
    struct cdn_fetch *f = cdn_fetch_new(&req);
    kicks = 0;
    cdn_fetch_set_kick(f, on_kick, NULL);
    return f;
}

static void
publish_200(struct cdn_fetch *f, int64_t cl)
{
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, cdn_fetch_arena(f));
    cdn_hdrs_add_str(&h, "Content-Type", "text/plain");
    cdn_fetch_publish(f, 200, &h, cl);
}

static void
test_request_copied(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    assert_string_equal(cdn_fetch_method(f), "GET");
    assert_string_equal(cdn_fetch_target(f), "/x");
    assert_string_equal(cdn_fetch_key(f), "http://example.test/x");
    assert_string_equal(cdn_fetch_req_headers(f)[0], "Host: example.test");
    assert_null(cdn_fetch_req_headers(f)[1]);
    cdn_fetch_unref(f);
}

static void
test_park_until_headers(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    struct probe p;
    probe_init(&p);
    cdn_fetch_attach(f, &p.w);
    assert_int_equal(cdn_fetch_wait_headers(f, &p.w), CDN_FETCH_PENDING);
    assert_int_equal(p.parks, 1);
    assert_int_equal(p.wakes, 0);
    publish_200(f, 5);
    assert_int_equal(p.wakes, 1);
    assert_int_equal(cdn_fetch_wait_headers(f, &p.w), CDN_FETCH_HEADERS);
    assert_int_equal(p.parks, 1);
    assert_int_equal(cdn_fetch_status(f), 200);
    assert_int_equal(cdn_fetch_content_length(f), 5);
    assert_non_null(cdn_hdrs_get(cdn_fetch_resp_headers(f), "content-type"));
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

static void
test_read_park_wake_end(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    struct probe p;
    probe_init(&p);
    cdn_fetch_attach(f, &p.w);
    publish_200(f, -1);
    char buf[16];
    size_t n;
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_PARKED);
    assert_int_equal(p.parks, 1);
    assert_true(cdn_fetch_append(f, "hello", 5));
    assert_int_equal(p.wakes, 1);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, 3, &n), CDN_READ_DATA);
    assert_int_equal(n, 3);
    assert_memory_equal(buf, "hel", 3);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_DATA);
    assert_int_equal(n, 2);
    assert_memory_equal(buf, "lo", 2);
    cdn_fetch_finish(f);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_END);
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

/* A sink that takes the body (as sink_take says) and records end(); the test calls
 * cdn_fetch_stored() itself. */
static int sink_ends;
static enum cdn_sink_take sink_take = CDN_SINK_BODY;
static enum cdn_sink_take
sink_head(void *arg, struct cdn_fetch *f, int status, const struct cdn_hdrs *h, int64_t cl)
{
    (void)arg, (void)f, (void)status, (void)h, (void)cl;
    return sink_take;
}
static void
sink_data(void *arg, const char *p, size_t n)
{
    (void)arg, (void)p, (void)n;
}
static void
sink_end(void *arg, struct cdn_fetch *f, bool complete)
{
    (void)arg, (void)f, (void)complete;
    sink_ends++;
}

/* A fetch whose producer batches wake-ups (a storing one when `storing`), with p attached and
 * parked waiting for the head. */
static struct cdn_fetch *
deferred_with_reader(struct probe *p, bool storing)
{
    static const struct cdn_fetch_sink sink = {
        .head = sink_head, .data = sink_data, .end = sink_end};
    struct cdn_fetch *f = new_fetch(0, false);
    if (storing)
        cdn_fetch_set_sink(f, &sink);
    cdn_fetch_defer_wakes(f);
    probe_init(p);
    cdn_fetch_attach(f, &p->w);
    assert_int_equal(cdn_fetch_wait_headers(f, &p->w), CDN_FETCH_PENDING);
    return f;
}

/* Deferred wake-ups: head and body of one round wake a parked reader once, at the flush. */
static void
test_deferred_wakes_batch(void **state)
{
    (void)state;
    struct probe p;
    struct cdn_fetch *f = deferred_with_reader(&p, false);
    publish_200(f, 10);
    assert_true(cdn_fetch_append(f, "hello", 5));
    assert_int_equal(p.wakes, 0);
    cdn_fetch_flush_wakes(f);
    assert_int_equal(p.wakes, 1);
    cdn_fetch_flush_wakes(f); /* nothing new: nobody is woken again */
    assert_int_equal(p.wakes, 1);
    char buf[16];
    size_t n;
    assert_int_equal(cdn_fetch_wait_headers(f, &p.w), CDN_FETCH_HEADERS);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_DATA);
    assert_int_equal(n, 5);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_PARKED);
    assert_true(cdn_fetch_append(f, "world", 5));
    cdn_fetch_finish(f);
    assert_int_equal(p.wakes, 1);
    cdn_fetch_flush_wakes(f);
    assert_int_equal(p.wakes, 2);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_DATA);
    assert_memory_equal(buf, "world", 5);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_END);
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

/* A stored body that arrived whole: the flush wakes nobody (only the last byte could be read);
 * the commit wakes the reader once, and then the whole body is there at once. */
static void
test_deferred_wake_waits_for_commit(void **state)
{
    (void)state;
    struct probe p;
    struct cdn_fetch *f = deferred_with_reader(&p, true);
    publish_200(f, 5);
    assert_true(cdn_fetch_append(f, "hello", 5));
    sink_ends = 0;
    cdn_fetch_finish(f);
    assert_int_equal(sink_ends, 1);
    cdn_fetch_flush_wakes(f);
    assert_int_equal(p.wakes, 0);
    char buf[8];
    assert_false(cdn_fetch_read_all(f, &p.w, buf, 5)); /* not committed yet */
    cdn_fetch_stored(f);
    assert_int_equal(p.wakes, 1);
    assert_int_equal(cdn_fetch_state(f), CDN_FETCH_DONE);
    assert_false(cdn_fetch_read_all(f, &p.w, buf, 4)); /* not the body's length */
    assert_true(cdn_fetch_read_all(f, &p.w, buf, 5));
    assert_memory_equal(buf, "hello", 5);
    size_t n;
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_END);
    assert_false(cdn_fetch_read_all(f, &p.w, buf, 5)); /* already read */
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

/* What the sink's head() answers is what readers learn with the head: storing, and whether
 * the stored copy is gzip (the front end then answers with Vary: Accept-Encoding). */
static void
test_sink_take_published(void **state)
{
    (void)state;
    static const struct {
        enum cdn_sink_take take;
        bool storing, gzip;
    } rows[] = {
        {CDN_SINK_SKIP, false, false},
        {CDN_SINK_BODY, true, false},
        {CDN_SINK_BODY_GZIP, true, true},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        sink_take = rows[i].take;
        struct probe p;
        struct cdn_fetch *f = deferred_with_reader(&p, true);
        publish_200(f, 5);
        assert_int_equal(cdn_fetch_storing(f), rows[i].storing);
        assert_int_equal(cdn_fetch_stored_gzip(f), rows[i].gzip);
        assert_true(cdn_fetch_append(f, "hello", 5));
        cdn_fetch_finish(f);
        if (rows[i].storing)
            cdn_fetch_stored(f);
        cdn_fetch_flush_wakes(f);
        assert_int_equal(cdn_fetch_state(f), CDN_FETCH_DONE);
        cdn_fetch_detach(f, &p.w);
        cdn_fetch_unref(f);
    }
    sink_take = CDN_SINK_BODY;
}

/* A body that is still arriving wakes its reader at each flush (streaming is not delayed). */
static void
test_deferred_wake_streams_partial_body(void **state)
{
    (void)state;
    struct probe p;
    struct cdn_fetch *f = deferred_with_reader(&p, true);
    publish_200(f, 10);
    cdn_fetch_flush_wakes(f); /* the head alone */
    assert_int_equal(p.wakes, 1);
    char buf[16];
    size_t n;
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_PARKED);
    assert_true(cdn_fetch_append(f, "hello", 5));
    cdn_fetch_flush_wakes(f);
    assert_int_equal(p.wakes, 2);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_DATA);
    assert_int_equal(n, 4); /* a stored body's last byte so far always waits */
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_PARKED);
    assert_true(cdn_fetch_append(f, "world", 5)); /* complete: all but the last byte waits */
    cdn_fetch_flush_wakes(f);
    assert_int_equal(p.wakes, 2);
    cdn_fetch_finish(f);
    cdn_fetch_stored(f);
    assert_int_equal(p.wakes, 3);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_DATA);
    assert_int_equal(n, 6);
    assert_memory_equal(buf, "oworld", 6);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_END);
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

static void
test_two_readers_independent_offsets(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    struct probe a, b;
    probe_init(&a);
    probe_init(&b);
    cdn_fetch_attach(f, &a.w);
    cdn_fetch_attach(f, &b.w);
    publish_200(f, -1);
    static char big[200000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    assert_true(cdn_fetch_append(f, big, sizeof(big)));
    static char out[200000];
    size_t got = 0, n;
    while (got < sizeof(big)) {
        assert_int_equal(cdn_fetch_read(f, &a.w, out + got, 7000, &n), CDN_READ_DATA);
        got += n;
    }
    assert_memory_equal(out, big, sizeof(big));
    /* b has read nothing: its bytes must still be there. */
    assert_int_equal(cdn_fetch_read(f, &b.w, out, sizeof(out), &n), CDN_READ_DATA);
    assert_int_equal(n, sizeof(big));
    assert_memory_equal(out, big, sizeof(big));
    cdn_fetch_detach(f, &a.w);
    cdn_fetch_detach(f, &b.w);
    cdn_fetch_unref(f);
}

/* Blocks are sized to a declared length, or grow from 4 KiB without one: a body whose pieces
 * cross block boundaries, read while it arrives (blocks freed behind the reader), and bytes
 * beyond the declared length, all come out whole and in order. */
static void
test_known_length_pieces(void **state)
{
    (void)state;
    static const int64_t lengths[] = {150000, 10, 65536, 1, -1, -1};
    static const size_t extra[] = {0, 15, 0, 70000, 200000, 5};
    for (size_t t = 0; t < sizeof(lengths) / sizeof(lengths[0]); t++) {
        struct cdn_fetch *f = new_fetch(0, false);
        struct probe p;
        probe_init(&p);
        cdn_fetch_attach(f, &p.w);
        publish_200(f, lengths[t]);
        size_t total = (lengths[t] > 0 ? (size_t)lengths[t] : 0) + extra[t];
        static char in[220000], out[220000];
        for (size_t i = 0; i < total; i++)
            in[i] = (char)('A' + (i * 7 + t) % 26);
        static const size_t pieces[] = {4, 3333, 1000};
        size_t sent = 0, got = 0, n;
        for (size_t k = 0; sent < total; k++) {
            size_t piece = pieces[k % 3] < total - sent ? pieces[k % 3] : total - sent;
            assert_true(cdn_fetch_append(f, in + sent, piece));
            sent += piece;
            if (sent % 2 == 0 && got < sent) {
                assert_int_equal(cdn_fetch_read(f, &p.w, out + got, 5000, &n), CDN_READ_DATA);
                got += n;
            }
        }
        cdn_fetch_finish(f);
        while (got < total) {
            assert_int_equal(cdn_fetch_read(f, &p.w, out + got, 5000, &n), CDN_READ_DATA);
            got += n;
        }
        assert_int_equal(got, total);
        assert_memory_equal(out, in, total);
        assert_int_equal(cdn_fetch_read(f, &p.w, out, 1, &n), CDN_READ_END);
        cdn_fetch_detach(f, &p.w);
        cdn_fetch_unref(f);
    }
}

static void
test_window_pauses_and_kicks(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(100000, false);
    struct probe p;
    probe_init(&p);
    cdn_fetch_attach(f, &p.w);
    publish_200(f, -1);
    static char chunk[65536];
    memset(chunk, 'x', sizeof(chunk));
    assert_true(cdn_fetch_append(f, chunk, sizeof(chunk)));
    /* A second 64 KiB would exceed the 100000-byte window: refused, producer paused. */
    assert_false(cdn_fetch_append(f, chunk, sizeof(chunk)));
    assert_int_equal(kicks, 0);
    static char out[65536];
    size_t n;
    assert_int_equal(cdn_fetch_read(f, &p.w, out, sizeof(out), &n), CDN_READ_DATA);
    assert_int_equal(n, sizeof(chunk));
    assert_int_equal(kicks, 1);
    assert_true(cdn_fetch_take_resume(f));
    assert_false(cdn_fetch_take_resume(f));
    assert_true(cdn_fetch_append(f, chunk, sizeof(chunk)));
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

static void
test_fail_before_headers(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    struct probe p;
    probe_init(&p);
    cdn_fetch_attach(f, &p.w);
    assert_int_equal(cdn_fetch_wait_headers(f, &p.w), CDN_FETCH_PENDING);
    cdn_fetch_fail(f, 504, "timeout: origin sent nothing");
    assert_int_equal(p.wakes, 1);
    assert_int_equal(cdn_fetch_wait_headers(f, &p.w), CDN_FETCH_FAILED);
    const char *why;
    assert_int_equal(cdn_fetch_error(f, &why), 504);
    assert_string_equal(why, "timeout: origin sent nothing");
    assert_int_equal(cdn_fetch_status(f), 0);
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

static void
test_fail_mid_body_is_read_error(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    struct probe p;
    probe_init(&p);
    cdn_fetch_attach(f, &p.w);
    publish_200(f, 100);
    assert_true(cdn_fetch_append(f, "abc", 3));
    cdn_fetch_fail(f, 502, "reset");
    char buf[8];
    size_t n;
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_DATA);
    assert_int_equal(n, 3);
    assert_int_equal(cdn_fetch_read(f, &p.w, buf, sizeof(buf), &n), CDN_READ_ERROR);
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

static void
test_abandoned_after_last_detach(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, false);
    struct probe p;
    probe_init(&p);
    assert_false(cdn_fetch_abandoned(f));
    cdn_fetch_attach(f, &p.w);
    assert_false(cdn_fetch_abandoned(f));
    cdn_fetch_detach(f, &p.w);
    assert_true(cdn_fetch_abandoned(f));
    assert_true(kicks >= 1); /* the producer is told so it can cancel */
    cdn_fetch_unref(f);
}

static void
test_upload_pipe(void **state)
{
    (void)state;
    struct cdn_fetch *f = new_fetch(0, true);
    struct probe p;
    probe_init(&p);
    cdn_fetch_attach(f, &p.w);
    char buf[100000];
    /* Producer asks first: nothing there yet, it must pause and be kicked later. */
    assert_int_equal(cdn_fetch_upload_pull(f, buf, sizeof(buf)), -1);
    static char body[100000];
    memset(body, 'b', sizeof(body));
    ssize_t took = cdn_fetch_upload_push(f, &p.w, body, sizeof(body));
    assert_true(took > 0 && (size_t)took < sizeof(body)); /* pipe is bounded */
    assert_int_equal(p.parks, 1);
    assert_int_equal(kicks, 1);
    assert_true(cdn_fetch_take_resume(f));
    ssize_t got = cdn_fetch_upload_pull(f, buf, sizeof(buf));
    assert_int_equal(got, took);
    assert_int_equal(p.wakes, 1); /* room again: the client side is resumed */
    ssize_t rest = cdn_fetch_upload_push(f, &p.w, body + took, sizeof(body) - (size_t)took);
    assert_int_equal(rest, (ssize_t)(sizeof(body) - (size_t)took));
    cdn_fetch_upload_end(f);
    assert_int_equal(cdn_fetch_upload_pull(f, buf, sizeof(buf)), rest);
    assert_int_equal(cdn_fetch_upload_pull(f, buf, sizeof(buf)), 0);
    cdn_fetch_detach(f, &p.w);
    cdn_fetch_unref(f);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_copied),
        cmocka_unit_test(test_park_until_headers),
        cmocka_unit_test(test_read_park_wake_end),
        cmocka_unit_test(test_deferred_wakes_batch),
        cmocka_unit_test(test_deferred_wake_waits_for_commit),
        cmocka_unit_test(test_sink_take_published),
        cmocka_unit_test(test_deferred_wake_streams_partial_body),
        cmocka_unit_test(test_two_readers_independent_offsets),
        cmocka_unit_test(test_known_length_pieces),
        cmocka_unit_test(test_window_pauses_and_kicks),
        cmocka_unit_test(test_fail_before_headers),
        cmocka_unit_test(test_fail_mid_body_is_read_error),
        cmocka_unit_test(test_abandoned_after_last_detach),
        cmocka_unit_test(test_upload_pipe),
    };
    return cmocka_run_group_tests_name("fetch", tests, NULL, NULL);
}
