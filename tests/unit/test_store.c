/*
 * Unit tests for the store: round trips, variants, updates, deletes and purges, invalid records,
 * restart, eviction and a full map, the lease pool, streaming puts and group commit. Includes
 * store.c to reach the raw LMDB handles (tests write damaged records with their own write txn,
 * only while the writer is idle after a flush).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "store.c"

#include <ftw.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

struct fx {
    char dir[64];
    struct cdn_store *s;
    struct cdn_store_opts o;
};

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int
setup(void **state)
{
    struct fx *f = cdn_calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/cdn-test-store-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    strcat(f->dir, "/env"); /* let the store create its directory */
    f->o.dir = f->dir;
    f->o.map_size = 64u << 20;
    *state = f;
    return 0;
}

static int
teardown(void **state)
{
    struct fx *f = *state;
    if (f->s != NULL)
        cdn_store_close(f->s);
    char *slash = strrchr(f->dir, '/');
    *slash = '\0';
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static struct cdn_store *
open_fx(struct fx *f)
{
    assert_int_equal(cdn_store_open(&f->o, &f->s), 0);
    return f->s;
}

static void
reopen_fx(struct fx *f)
{
    cdn_store_close(f->s);
    f->s = NULL;
    open_fx(f);
}

static struct cdn_store_meta
meta(const char *key, const char *vary)
{
    static const char hdrs[] = "Content-Type: text/plain\r\nETag: \"v1\"\r\n";
    struct cdn_store_meta m = {
        .key = key,
        .key_len = strlen(key),
        .vary = vary,
        .vary_len = vary ? strlen(vary) : 0,
        .headers = hdrs,
        .headers_len = sizeof(hdrs) - 1,
        .tags = "t1 t2",
        .tags_len = 5,
        .status = 200,
        .request_time = 1000,
        .response_time = 1001,
        .expires_at = cdn_wall_s() + 3600,
    };
    return m;
}

static void
on_done(void *arg, int result)
{
    *(int *)arg = result;
}

/* Puts and waits; returns the result. */
static int
put_sync(struct cdn_store *s, const struct cdn_store_meta *m, const void *body, size_t len)
{
    int r = 12345;
    cdn_store_put(s, m, body, len, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    return r;
}

static int
put_str(struct cdn_store *s, const char *key, const char *vary, const char *body)
{
    struct cdn_store_meta m = meta(key, vary);
    return put_sync(s, &m, body, strlen(body));
}

/* The body of variant i gathered into a malloc'd buffer (*len bytes), or NULL with the error. */
static uint8_t *
body_of(struct cdn_store_lease *l, unsigned i, size_t *len, int *err)
{
    const struct iovec *iov;
    unsigned n;
    *err = cdn_store_lease_body(l, i, &iov, &n);
    if (*err != 0)
        return NULL;
    size_t total = 0;
    for (unsigned c = 0; c < n; c++)
        total += iov[c].iov_len;
    uint8_t *b = cdn_malloc(total + 1), *p = b;
    for (unsigned c = 0; c < n; c++) {
        memcpy(p, iov[c].iov_base, iov[c].iov_len);
        p += iov[c].iov_len;
    }
    *len = total;
    return b;
}

/* The variant of key whose vary string is vary ("" for none), or -1. */
static int
find_variant(struct cdn_store_lease *l, const char *vary)
{
    for (unsigned i = 0; i < cdn_store_lease_count(l); i++) {
        const struct cdn_store_meta *m = cdn_store_lease_meta(l, i);
        if (same_bytes(m->vary, m->vary_len, vary, strlen(vary)))
            return (int)i;
    }
    return -1;
}

/* Asserts key (variant vary) holds exactly body. */
static void
assert_body(struct cdn_store *s, const char *key, const char *vary, const void *body, size_t len)
{
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    int i = find_variant(l, vary ? vary : "");
    assert_true(i >= 0);
    size_t got_len;
    int err;
    uint8_t *got = body_of(l, (unsigned)i, &got_len, &err);
    assert_int_equal(err, 0);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, body, len);
    free(got);
    cdn_store_lease_release(l);
}

static bool
present(struct cdn_store *s, const char *key)
{
    struct cdn_store_lease *l;
    int rc = cdn_store_lookup(s, key, strlen(key), &l);
    if (rc == 0)
        cdn_store_lease_release(l);
    else
        assert_int_equal(rc, CDN_ENOTFOUND);
    return rc == 0;
}

static struct cdn_store_stats
stats(struct cdn_store *s)
{
    struct cdn_store_stats st;
    cdn_store_stats(s, &st);
    return st;
}

static void
raw_put(struct cdn_store *s, MDB_dbi dbi, const void *k, size_t klen, const void *v, size_t vlen)
{
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(s->env, NULL, 0, &t), 0);
    MDB_val kk = {klen, (void *)k}, vv = {vlen, (void *)v};
    assert_int_equal(mdb_put(t, dbi, &kk, &vv, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
}

static int
raw_get(struct cdn_store *s, MDB_dbi dbi, const void *k, size_t klen)
{
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t), 0);
    MDB_val kk = {klen, (void *)k}, vv;
    int rc = mdb_get(t, dbi, &kk, &vv);
    mdb_txn_abort(t);
    return rc;
}

static size_t
raw_entries(struct cdn_store *s, MDB_dbi dbi)
{
    MDB_txn *t;
    MDB_stat st;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t), 0);
    assert_int_equal(mdb_stat(t, dbi, &st), 0);
    mdb_txn_abort(t);
    return st.ms_entries;
}

static uint8_t *
pattern(size_t len, unsigned seed)
{
    uint8_t *b = cdn_malloc(len);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b[i] = (uint8_t)x;
    }
    return b;
}

/* ---- tests ---- */

static void
test_roundtrip_small(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    /* The very record put (meta() reads the clock: a second call may differ). */
    struct cdn_store_meta want = meta("http://a.test/x", NULL);
    assert_int_equal(put_sync(s, &want, "hello world", 11), 0);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, "http://a.test/x", 15, &l), 0);
    assert_int_equal(cdn_store_lease_count(l), 1);
    assert_false(cdn_store_lease_copied(l));
    const struct cdn_store_meta *m = cdn_store_lease_meta(l, 0);
    assert_int_equal(m->status, 200);
    assert_int_equal(m->flags, 0);
    assert_int_equal(m->request_time, 1000);
    assert_int_equal(m->response_time, 1001);
    assert_int_equal(m->expires_at, want.expires_at);
    assert_int_equal(m->body_size, 11);
    assert_int_equal(m->vary_len, 0);
    assert_true(same_bytes(m->key, m->key_len, want.key, want.key_len));
    assert_true(same_bytes(m->headers, m->headers_len, want.headers, want.headers_len));
    assert_true(same_bytes(m->tags, m->tags_len, "t1 t2", 5));
    const struct iovec *iov;
    unsigned n;
    assert_int_equal(cdn_store_lease_body(l, 0, &iov, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(iov[0].iov_len, 11);
    assert_memory_equal(iov[0].iov_base, "hello world", 11);
    assert_int_equal(cdn_store_lease_body(l, 1, &iov, &n), CDN_EINVAL);
    assert_int_equal(stats(s).leases_open, 1);
    cdn_store_lease_release(l);
    assert_int_equal(stats(s).leases_open, 0);

    assert_int_equal(cdn_store_lookup(s, "http://a.test/y", 15, &l), CDN_ENOTFOUND);
    assert_int_equal(cdn_store_lookup(s, "", 0, &l), CDN_EINVAL);

    /* An empty body is an object too. */
    assert_int_equal(put_str(s, "http://a.test/empty", NULL, ""), 0);
    assert_int_equal(cdn_store_lookup(s, "http://a.test/empty", 19, &l), 0);
    assert_int_equal(cdn_store_lease_body(l, 0, &iov, &n), 0);
    assert_int_equal(n, 0);
    cdn_store_lease_release(l);

    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.puts, 2);
    assert_int_equal(st.objects, 2);
    assert_true(st.bytes >= 11);
}

static void
test_roundtrip_multichunk(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    size_t len = 5 * 4096 + 123;
    uint8_t *body = pattern(len, 1);
    /* Streamed in pieces that do not line up with chunks. */
    struct cdn_store_put *p = cdn_store_put_begin(s);
    for (size_t off = 0; off < len; off += 1000)
        assert_int_equal(cdn_store_put_write(p, body + off, len - off < 1000 ? len - off : 1000),
                         0);
    struct cdn_store_meta m = meta("http://a.test/big", NULL);
    int r = 1;
    cdn_store_put_commit(p, &m, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 0);

    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, m.key, m.key_len, &l), 0);
    const struct iovec *iov;
    unsigned n;
    assert_int_equal(cdn_store_lease_body(l, 0, &iov, &n), 0);
    assert_int_equal(n, 6);
    for (unsigned c = 0; c < 5; c++)
        assert_int_equal(iov[c].iov_len, 4096);
    assert_int_equal(iov[5].iov_len, 123);
    cdn_store_lease_release(l);
    assert_body(s, m.key, NULL, body, len);
    assert_int_equal(raw_entries(s, s->body), 6);
    free(body);

    /* An exact multiple of the chunk size. */
    body = pattern(3 * 4096, 2);
    m = meta("http://a.test/exact", NULL);
    assert_int_equal(put_sync(s, &m, body, 3 * 4096), 0);
    assert_body(s, m.key, NULL, body, 3 * 4096);
    free(body);
}

/* Two streaming puts, the later-begun one (higher body id) first to reach the store: the chunks
 * of the earlier one sort before keys already stored, so they cannot be appended; both bodies
 * still come back whole. */
static void
test_interleaved_puts(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    size_t len = 3 * 4096 + 7;
    uint8_t *b1 = pattern(len, 11), *b2 = pattern(len, 12);
    struct cdn_store_put *p1 = cdn_store_put_begin(s), *p2 = cdn_store_put_begin(s);
    assert_int_equal(cdn_store_put_write(p2, b2, 2 * 4096), 0);
    assert_int_equal(cdn_store_flush(s), 0); /* p2's chunks 0 and 1 are stored */
    assert_int_equal(cdn_store_put_write(p1, b1, len), 0);
    assert_int_equal(cdn_store_put_write(p2, b2 + 2 * 4096, len - 2 * 4096), 0);
    struct cdn_store_meta m1 = meta("http://a.test/first", NULL);
    struct cdn_store_meta m2 = meta("http://a.test/second", NULL);
    int r1 = 1, r2 = 1;
    cdn_store_put_commit(p1, &m1, on_done, &r1);
    cdn_store_put_commit(p2, &m2, on_done, &r2);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r1, 0);
    assert_int_equal(r2, 0);
    assert_body(s, m1.key, NULL, b1, len);
    assert_body(s, m2.key, NULL, b2, len);
    assert_int_equal(raw_entries(s, s->body), 8);
    free(b1);
    free(b2);
}

/* Chunk buffers sized from an announced length: right, too small, too large, or none, the
 * stored body is the bytes written, in chunks of chunk_size. */
static void
test_put_expect(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 64 * 1024;
    struct cdn_store *s = open_fx(f);
    size_t len = 150 * 1000;
    uint8_t *body = pattern(len, 3);
    const uint64_t expects[] = {150 * 1000, 10, 1000 * 1000, 0, 1};
    for (unsigned i = 0; i < sizeof(expects) / sizeof(expects[0]); i++) {
        struct cdn_store_put *p = cdn_store_put_begin(s);
        if (expects[i] > 0)
            cdn_store_put_expect(p, expects[i]);
        for (size_t off = 0; off < len; off += 7000)
            assert_int_equal(
                cdn_store_put_write(p, body + off, len - off < 7000 ? len - off : 7000), 0);
        char key[64];
        snprintf(key, sizeof(key), "http://a.test/expect/%u", i);
        struct cdn_store_meta m = meta(key, NULL);
        int r = 1;
        cdn_store_put_commit(p, &m, on_done, &r);
        assert_int_equal(cdn_store_flush(s), 0);
        assert_int_equal(r, 0);
        struct cdn_store_lease *l;
        assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
        const struct iovec *iov;
        unsigned n;
        assert_int_equal(cdn_store_lease_body(l, 0, &iov, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(iov[0].iov_len, 64 * 1024);
        assert_int_equal(iov[1].iov_len, 64 * 1024);
        assert_int_equal(iov[2].iov_len, len - 128 * 1024);
        cdn_store_lease_release(l);
        assert_body(s, key, NULL, body, len);
    }
    free(body);
}

static void
test_roundtrip_default_chunks(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    size_t len = 700 * 1024;
    uint8_t *body = pattern(len, 3);
    struct cdn_store_meta m = meta("http://a.test/700k", NULL);
    assert_int_equal(put_sync(s, &m, body, len), 0);
    assert_body(s, m.key, NULL, body, len);
    assert_int_equal(raw_entries(s, s->body), 3);
    free(body);
}

static void
test_variants(void **state)
{
    struct fx *f = *state;
    f->o.max_variants = 3;
    struct cdn_store *s = open_fx(f);
    const char *key = "http://a.test/v";
    const char *vs[] = {"accept-encoding:gzip\n", "accept-encoding:br\n", "accept-encoding\n",
                        "accept-encoding:zstd\n"};
    for (int i = 0; i < 3; i++) {
        struct cdn_store_meta m = meta(key, vs[i]);
        m.response_time = 100 + i;
        char body[16];
        snprintf(body, sizeof(body), "body%d", i);
        assert_int_equal(put_sync(s, &m, body, strlen(body)), 0);
    }
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    assert_int_equal(cdn_store_lease_count(l), 3);
    cdn_store_lease_release(l);
    assert_body(s, key, vs[0], "body0", 5);
    assert_body(s, key, vs[1], "body1", 5);
    assert_body(s, key, vs[2], "body2", 5);

    /* Re-storing a variant replaces it, the count does not grow. */
    struct cdn_store_meta m = meta(key, vs[1]);
    m.response_time = 200;
    assert_int_equal(put_sync(s, &m, "new1", 4), 0);
    assert_body(s, key, vs[1], "new1", 4);
    assert_int_equal(stats(s).objects, 3);

    /* A fourth variant pushes out the oldest (vs[0], response_time 100). */
    m = meta(key, vs[3]);
    m.response_time = 300;
    assert_int_equal(put_sync(s, &m, "body3", 5), 0);
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    assert_int_equal(cdn_store_lease_count(l), 3);
    assert_int_equal(find_variant(l, vs[0]), -1);
    assert_true(find_variant(l, vs[3]) >= 0);
    cdn_store_lease_release(l);
    assert_int_equal(stats(s).objects, 3);
    /* The evicted variant's body went with it. */
    assert_int_equal(raw_entries(s, s->body), 3);

    /* Another URL is not affected. */
    assert_int_equal(put_str(s, "http://a.test/w", NULL, "w"), 0);
    assert_int_equal(cdn_store_lookup(s, "http://a.test/w", 15, &l), 0);
    assert_int_equal(cdn_store_lease_count(l), 1);
    cdn_store_lease_release(l);
}

/* A released lease is taken again by this thread's next lookup, in the same store or another;
 * one made for fewer variants than a store keeps is never reused there. */
static void
test_lease_recycled(void **state)
{
    struct fx *f = *state;
    f->o.max_variants = 1;
    struct cdn_store *s = open_fx(f);
    assert_int_equal(put_str(s, "http://a.test/r", NULL, "r"), 0);
    struct cdn_store_lease *small;
    assert_int_equal(cdn_store_lookup(s, "http://a.test/r", 15, &small), 0);
    cdn_store_lease_release(small);
    cdn_store_close(s);
    f->s = NULL;

    f->o.max_variants = 4;
    s = open_fx(f);
    const char *key = "http://a.test/v";
    const char *vs[] = {"accept-encoding:gzip\n", "accept-encoding:br\n", "accept-encoding\n",
                        "accept-encoding:zstd\n"};
    for (int i = 0; i < 4; i++) {
        struct cdn_store_meta m = meta(key, vs[i]);
        char body[16];
        snprintf(body, sizeof(body), "body%d", i);
        assert_int_equal(put_sync(s, &m, body, strlen(body)), 0);
    }
    struct cdn_store_lease *l, *again;
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    assert_int_equal(cdn_store_lease_count(l), 4);
    for (int i = 0; i < 4; i++) {
        int v = find_variant(l, vs[i]);
        assert_true(v >= 0);
        const struct iovec *iov;
        unsigned niov;
        assert_int_equal(cdn_store_lease_body(l, (unsigned)v, &iov, &niov), 0);
        assert_int_equal(niov, 1);
        assert_memory_equal(iov[0].iov_base, "body", 4);
        assert_int_equal(((const char *)iov[0].iov_base)[4], '0' + i);
    }
    cdn_store_lease_release(l);
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &again), 0);
    assert_ptr_equal(again, l); /* the same lease, reused */
    assert_int_equal(cdn_store_lease_count(again), 4);
    cdn_store_lease_release(again);
    /* A lookup that finds nothing recycles its lease too. */
    assert_int_equal(cdn_store_lookup(s, "http://a.test/none", 18, &l), CDN_ENOTFOUND);
}

/* A caller's key hash (cdn_store_key_hash) files and finds objects as the store's own does. */
static void
test_key_hash_given(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    const char *key = "http://a.test/hashed";
    uint8_t h[CDN_STORE_KEY_HASH_LEN], want[CDN_STORE_KEY_HASH_LEN];
    cdn_store_key_hash(key, strlen(key), h);
    cdn_sha256(key, strlen(key), want);
    assert_memory_equal(h, want, sizeof(h));

    /* put with the hash; a lookup without it finds the object, one with it too */
    struct cdn_store_meta m = meta(key, NULL);
    m.key_hash = h;
    assert_int_equal(put_sync(s, &m, "body", 4), 0);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    cdn_store_lease_release(l);
    assert_int_equal(cdn_store_lookup_hashed(s, key, strlen(key), h, &l), 0);
    cdn_store_lease_release(l);

    /* update with the hash: the same record is rewritten */
    struct cdn_store_meta u = meta(key, NULL);
    u.key_hash = h;
    u.response_time = 7000;
    int r = 1;
    cdn_store_update(s, &u, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 0);
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    assert_int_equal(cdn_store_lease_meta(l, 0)->response_time, 7000);
    cdn_store_lease_release(l);

    /* a hash that is not the key's finds nothing: the hash alone places the lookup */
    uint8_t other[CDN_STORE_KEY_HASH_LEN];
    cdn_store_key_hash("http://a.test/other", 19, other);
    assert_int_equal(cdn_store_lookup_hashed(s, key, strlen(key), other, &l), CDN_ENOTFOUND);
}

static void
test_update_keeps_body(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    size_t len = 10000;
    uint8_t *body = pattern(len, 4);
    struct cdn_store_meta m = meta("http://a.test/u", NULL);
    assert_int_equal(put_sync(s, &m, body, len), 0);

    struct cdn_store_meta u = meta("http://a.test/u", NULL);
    u.headers = "ETag: \"v2\"\r\n";
    u.headers_len = 12;
    u.response_time = 5000;
    u.expires_at = 9000;
    int r = 1;
    cdn_store_update(s, &u, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 0);

    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, u.key, u.key_len, &l), 0);
    const struct cdn_store_meta *got = cdn_store_lease_meta(l, 0);
    assert_true(same_bytes(got->headers, got->headers_len, u.headers, u.headers_len));
    assert_int_equal(got->response_time, 5000);
    assert_int_equal(got->expires_at, 9000);
    assert_int_equal(got->body_size, len);
    cdn_store_lease_release(l);
    assert_body(s, u.key, NULL, body, len);
    assert_int_equal(stats(s).updates, 1);
    free(body);

    /* Updating what is not there reports it. */
    struct cdn_store_meta missing = meta("http://a.test/none", NULL);
    cdn_store_update(s, &missing, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, CDN_ENOTFOUND);
    struct cdn_store_meta other_variant = meta("http://a.test/u", "x:1\n");
    cdn_store_update(s, &other_variant, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, CDN_ENOTFOUND);
    /* Invalid input comes back through done as well. */
    struct cdn_store_meta bad = meta("http://a.test/u", NULL);
    bad.status = 42;
    cdn_store_update(s, &bad, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, CDN_EINVAL);
}

static void
test_delete(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    const char *key = "http://a.test/d";
    assert_int_equal(put_str(s, key, "a\n", "A"), 0);
    assert_int_equal(put_str(s, key, "b\n", "B"), 0);
    int r = -1;
    cdn_store_delete(s, key, strlen(key), "b\n", 2, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 1);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    assert_int_equal(cdn_store_lease_count(l), 1);
    assert_int_equal(find_variant(l, "a\n"), 0);
    cdn_store_lease_release(l);
    cdn_store_delete(s, key, strlen(key), "b\n", 2, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 0);
    cdn_store_delete(s, key, strlen(key), "a\n", 2, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 1);
    assert_false(present(s, key));
    assert_int_equal(raw_entries(s, s->body), 0);
    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.deletes, 2);
    assert_int_equal(st.objects, 0);
    assert_int_equal(st.bytes, 0);
}

static void
test_purge(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    assert_int_equal(put_str(s, "http://a.test/x", NULL, "1"), 0);
    assert_int_equal(put_str(s, "http://a.test/x", "v\n", "2"), 0);
    assert_int_equal(put_str(s, "http://a.test/x2", NULL, "3"), 0);
    assert_int_equal(put_str(s, "http://a.test/y/1", NULL, "4"), 0);
    assert_int_equal(put_str(s, "http://b.test/z", NULL, "5"), 0);

    int r = -1;
    cdn_store_purge(s, CDN_PURGE_URL, "http://a.test/x", 15, false, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 2); /* both variants, not /x2 */
    assert_false(present(s, "http://a.test/x"));
    assert_true(present(s, "http://a.test/x2"));

    cdn_store_purge(s, CDN_PURGE_PREFIX, "http://a.test/", 14, false, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 2);
    assert_false(present(s, "http://a.test/x2"));
    assert_false(present(s, "http://a.test/y/1"));
    assert_true(present(s, "http://b.test/z"));

    assert_int_equal(put_str(s, "http://c.test/", NULL, "6"), 0);
    cdn_store_purge(s, CDN_PURGE_ALL, NULL, 0, false, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 2);
    assert_false(present(s, "http://b.test/z"));
    assert_false(present(s, "http://c.test/"));
    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.objects, 0);
    assert_int_equal(st.deletes, 6);
    assert_int_equal(raw_entries(s, s->body), 0);
    /* The store still works after dropping everything. */
    assert_int_equal(put_str(s, "http://c.test/", NULL, "7"), 0);
    assert_body(s, "http://c.test/", NULL, "7", 1);
}

static void
test_soft_purge(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    assert_int_equal(put_str(s, "http://a.test/s", NULL, "soft"), 0);
    assert_int_equal(put_str(s, "http://a.test/t", NULL, "other"), 0);
    int r = -1;
    cdn_store_purge(s, CDN_PURGE_URL, "http://a.test/s", 15, true, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 1);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, "http://a.test/s", 15, &l), 0);
    assert_int_equal(cdn_store_lease_meta(l, 0)->flags & CDN_STORE_STALE, CDN_STORE_STALE);
    cdn_store_lease_release(l);
    assert_body(s, "http://a.test/s", NULL, "soft", 4); /* kept for revalidation */
    assert_int_equal(cdn_store_lookup(s, "http://a.test/t", 15, &l), 0);
    assert_int_equal(cdn_store_lease_meta(l, 0)->flags, 0);
    cdn_store_lease_release(l);

    /* Already stale ones are not counted again. */
    cdn_store_purge(s, CDN_PURGE_PREFIX, "http://a.test/", 14, true, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 1);
    assert_int_equal(stats(s).soft_purges, 2);
    assert_int_equal(stats(s).objects, 2);

    /* A revalidation (metadata update) clears the flag. */
    struct cdn_store_meta u = meta("http://a.test/s", NULL);
    cdn_store_update(s, &u, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 0);
    assert_int_equal(cdn_store_lookup(s, "http://a.test/s", 15, &l), 0);
    assert_int_equal(cdn_store_lease_meta(l, 0)->flags, 0);
    cdn_store_lease_release(l);
}

static void
test_corrupt_record(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    const char *key = "http://a.test/c";
    assert_int_equal(put_str(s, key, NULL, "fine"), 0);
    uint8_t mk[KEY_LEN];
    meta_key(key, strlen(key), NULL, NULL, 0, mk);
    static const char garbage[] = "this is not a metadata record at all, not even close......";
    raw_put(s, s->meta, mk, KEY_LEN, garbage, sizeof(garbage));
    assert_false(present(s, key));
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(raw_get(s, s->meta, mk, KEY_LEN), MDB_NOTFOUND);
    assert_int_equal(stats(s).corrupt_deleted, 1);

    /* A valid record whose checksum no longer matches (one flipped bit). */
    assert_int_equal(put_str(s, key, NULL, "fine"), 0);
    size_t len;
    int err;
    struct cdn_store_meta m = meta(key, NULL);
    uint8_t *rec = rec_build(&m, 77, 4, 4096, &len, &err);
    rec_seal(rec, len);
    rec[REC_HDR + 3] ^= 1;
    raw_put(s, s->meta, mk, KEY_LEN, rec, len);
    assert_false(present(s, key));
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(stats(s).corrupt_deleted, 2);

    /* Truncated. */
    assert_int_equal(put_str(s, key, NULL, "fine"), 0);
    rec[REC_HDR + 3] ^= 1;
    raw_put(s, s->meta, mk, KEY_LEN, rec, len - 1);
    assert_false(present(s, key));
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(stats(s).corrupt_deleted, 3);
    free(rec);

    /* A missing body chunk: the object reads as damaged and is deleted. */
    uint8_t *body = pattern(9000, 5);
    m = meta("http://a.test/chunky", NULL);
    assert_int_equal(put_sync(s, &m, body, 9000), 0);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, m.key, m.key_len, &l), 0);
    uint64_t id = l->v[0].body_id;
    cdn_store_lease_release(l);
    MDB_txn *t;
    assert_int_equal(mdb_txn_begin(s->env, NULL, 0, &t), 0);
    uint8_t kb[BODY_KEY_LEN];
    body_key(id, 1, kb);
    MDB_val k = {BODY_KEY_LEN, kb};
    assert_int_equal(mdb_del(t, s->body, &k, NULL), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    assert_int_equal(cdn_store_lookup(s, m.key, m.key_len, &l), 0);
    const struct iovec *iov;
    unsigned n;
    assert_int_equal(cdn_store_lease_body(l, 0, &iov, &n), CDN_ECORRUPT);
    cdn_store_lease_release(l);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_false(present(s, m.key));
    for (uint32_t c = 0; c < 3; c++) { /* its remaining chunks went with it */
        body_key(id, c, kb);
        assert_int_equal(raw_get(s, s->body, kb, BODY_KEY_LEN), MDB_NOTFOUND);
    }
    assert_int_equal(stats(s).corrupt_deleted, 4);
    /* The bodies of the records overwritten above are orphans now: swept at the next open. */
    assert_int_equal(raw_entries(s, s->body), 3);
    reopen_fx(f);
    s = f->s;
    assert_int_equal(raw_entries(s, s->body), 0);
    assert_int_equal(stats(s).orphans_deleted, 3);
    free(body);
}

static void
test_foreign_version(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    const char *key = "http://a.test/fv";
    assert_int_equal(put_str(s, key, NULL, "v1"), 0);
    struct cdn_store_meta m = meta(key, NULL);
    size_t len;
    int err;
    uint8_t *rec = rec_build(&m, 1, 2, 4096, &len, &err);
    le16_put(rec + 4, REC_VERSION + 1);
    rec_seal(rec, len); /* well-formed, just not ours */
    uint8_t mk[KEY_LEN];
    meta_key(key, strlen(key), NULL, NULL, 0, mk);
    raw_put(s, s->meta, mk, KEY_LEN, rec, len);
    free(rec);
    assert_false(present(s, key));
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(raw_get(s, s->meta, mk, KEY_LEN), MDB_NOTFOUND);
    assert_int_equal(stats(s).corrupt_deleted, 1);
    /* A new put for the key works. */
    assert_int_equal(put_str(s, key, NULL, "v2"), 0);
    assert_body(s, key, NULL, "v2", 2);
}

static void
test_restart(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    uint8_t *big = pattern(20000, 6);
    struct cdn_store_meta m = meta("http://a.test/big", NULL);
    assert_int_equal(put_sync(s, &m, big, 20000), 0);
    char key[64];
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "http://a.test/%d", i);
        assert_int_equal(put_str(s, key, NULL, key), 0);
    }
    struct cdn_store_stats before = stats(s);
    /* Leftovers of a crash: a half-written put and a record that fails validation. */
    uint8_t kb[BODY_KEY_LEN];
    body_key(999999, 0, kb);
    raw_put(s, s->body, kb, BODY_KEY_LEN, "orphan", 6);
    uint8_t mk[KEY_LEN];
    meta_key("http://a.test/bad", 17, NULL, NULL, 0, mk);
    raw_put(s, s->meta, mk, KEY_LEN, "junk", 4);

    reopen_fx(f);
    s = f->s;
    struct cdn_store_stats after = stats(s);
    assert_int_equal(after.objects, before.objects);
    assert_int_equal(after.bytes, before.bytes);
    assert_int_equal(after.orphans_deleted, 1);
    assert_int_equal(after.corrupt_deleted, 1);
    assert_body(s, m.key, NULL, big, 20000);
    for (int i = 0; i < 20; i++) {
        snprintf(key, sizeof(key), "http://a.test/%d", i);
        assert_body(s, key, NULL, key, strlen(key));
    }
    assert_int_equal(raw_get(s, s->body, kb, BODY_KEY_LEN), MDB_NOTFOUND);
    /* New body ids do not collide with the ones on disk. */
    assert_true(atomic_load(&s->next_body_id) > 21);
    assert_int_equal(put_str(s, "http://a.test/new", NULL, "new"), 0);
    assert_body(s, m.key, NULL, big, 20000);
    assert_body(s, "http://a.test/new", NULL, "new", 3);
    free(big);
}

/* Looks up key and reads its body, so the recency index records a hit. */
static void
hit(struct cdn_store *s, const char *key)
{
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, key, strlen(key), &l), 0);
    const struct iovec *iov;
    unsigned n;
    assert_int_equal(cdn_store_lease_body(l, 0, &iov, &n), 0);
    cdn_store_lease_release(l);
}

static void
test_eviction_watermark(void **state)
{
    struct fx *f = *state;
    f->o.map_size = 2u << 20;
    struct cdn_store *s = open_fx(f);
    uint8_t *body = pattern(3000, 7);
    char key[64];
    int64_t now = cdn_wall_s();
    for (int i = 0; i < 10; i++) {
        snprintf(key, sizeof(key), "http://a.test/exp/%d", i);
        struct cdn_store_meta m = meta(key, NULL);
        m.expires_at = now - 10;
        assert_int_equal(put_sync(s, &m, body, 3000), 0);
    }
    int last = 0;
    for (int i = 0; i < 600; i++) {
        snprintf(key, sizeof(key), "http://a.test/f/%d", i);
        struct cdn_store_meta m = meta(key, NULL);
        cdn_store_put(s, &m, body, 3000, NULL, NULL);
        if (i % 10 == 9) {
            assert_int_equal(cdn_store_flush(s), 0);
            struct cdn_store_stats st = stats(s);
            assert_true(st.used_pages <= st.high_pages);
            for (int h = 0; h < 5; h++) { /* a hot set, hit all along */
                snprintf(key, sizeof(key), "http://a.test/f/%d", h);
                hit(s, key);
            }
        }
        last = i;
    }
    struct cdn_store_stats st = stats(s);
    assert_true(st.evictions > 0);
    assert_int_equal(st.map_full_drops, 0);
    assert_true(st.used_pages <= st.high_pages);
    assert_int_equal(st.objects + st.evictions, 610);
    for (int i = 0; i < 10; i++) { /* expired went first */
        snprintf(key, sizeof(key), "http://a.test/exp/%d", i);
        assert_false(present(s, key));
    }
    for (int h = 0; h < 5; h++) {
        snprintf(key, sizeof(key), "http://a.test/f/%d", h);
        assert_true(present(s, key));
    }
    assert_false(present(s, "http://a.test/f/5")); /* oldest untouched */
    snprintf(key, sizeof(key), "http://a.test/f/%d", last);
    assert_true(present(s, key));
    free(body);
}

static void
test_map_full(void **state)
{
    struct fx *f = *state;
    f->o.map_size = 2u << 20;
    f->o.max_object_size = 8u << 20;
    struct cdn_store *s = open_fx(f);
    assert_int_equal(put_str(s, "http://a.test/small", NULL, "small"), 0);
    size_t len = 3u << 20;
    uint8_t *body = pattern(len, 8);
    struct cdn_store_meta m = meta("http://a.test/huge", NULL);
    int r = 0;
    struct cdn_store_put *p = cdn_store_put_begin(s);
    for (size_t off = 0; off < len; off += 65536) {
        int rc = cdn_store_put_write(p, body + off, 65536);
        if (rc != 0) {
            assert_int_equal(rc, CDN_EFULL); /* the writer already gave up on a chunk */
            break;
        }
    }
    cdn_store_put_commit(p, &m, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, CDN_EFULL);
    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.map_full_drops, 1);
    assert_false(present(s, "http://a.test/huge"));
    /* No chunk of the dropped object is left, and the store keeps working. */
    assert_int_equal(put_str(s, "http://a.test/after", NULL, "after"), 0);
    assert_body(s, "http://a.test/after", NULL, "after", 5);
    assert_int_equal(raw_entries(s, s->body), stats(s).objects);
    free(body);

    /* Over max_object_size is refused up front. */
    f->o.max_object_size = 0;
    reopen_fx(f);
    s = f->s;
    p = cdn_store_put_begin(s);
    uint8_t *big = cdn_calloc(1, (2u << 20) / 8 + 1);
    assert_int_equal(cdn_store_put_write(p, big, (2u << 20) / 8 + 1), CDN_ETOOBIG);
    cdn_store_put_commit(p, &m, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, CDN_ETOOBIG);
    free(big);
}

struct release_arg {
    struct cdn_store_lease *l;
};

static void *
release_elsewhere(void *arg)
{
    cdn_store_lease_release(((struct release_arg *)arg)->l);
    return NULL;
}

static void
test_lease_pool_and_copy_cap(void **state)
{
    struct fx *f = *state;
    f->o.max_leases = 2;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    uint8_t *body = pattern(10000, 9);
    struct cdn_store_meta m = meta("http://a.test/l", NULL);
    assert_int_equal(put_sync(s, &m, body, 10000), 0);

    struct cdn_store_stats st0 = stats(s);
    struct cdn_store_lease *l[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(cdn_store_lookup(s, m.key, m.key_len, &l[i]), 0);
    assert_false(cdn_store_lease_copied(l[0]));
    assert_false(cdn_store_lease_copied(l[1]));
    assert_true(cdn_store_lease_copied(l[2]));
    struct cdn_store_stats st1 = stats(s);
    assert_int_equal(st1.lease_copies, 1);
    assert_int_equal(st1.leases_open, 2);
    /* Zero-copy bodies point into the map; the copy does not. */
    const struct iovec *iov;
    unsigned n;
    assert_int_equal(cdn_store_lease_body(l[0], 0, &iov, &n), 0);
    assert_int_equal(n, 3);
    size_t blen;
    int err;
    uint8_t *got = body_of(l[2], 0, &blen, &err);
    assert_int_equal(err, 0);
    assert_int_equal(blen, 10000);
    assert_memory_equal(got, body, 10000);
    free(got);
    const struct cdn_store_meta *cm = cdn_store_lease_meta(l[2], 0);
    assert_true(same_bytes(cm->key, cm->key_len, m.key, m.key_len));

    /* A lease may end on another thread (MHD's free callback runs where it likes). */
    struct release_arg ra = {l[0]};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_elsewhere, &ra), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    cdn_store_lease_release(l[1]);
    cdn_store_lease_release(l[2]);
    st1 = stats(s);
    assert_int_equal(st1.leases_open, 0);

    /* Transactions are reused: the thread's own slot first, then the pool. The handle the
     * other thread released stays in that (now finished) thread's slot until the store closes,
     * so the same load needs exactly one new handle, and no more after that. */
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < 3; i++)
            assert_int_equal(cdn_store_lookup(s, m.key, m.key_len, &l[i]), 0);
        for (int i = 0; i < 3; i++)
            cdn_store_lease_release(l[i]);
    }
    struct cdn_store_stats st2 = stats(s);
    assert_int_equal(st2.txn_created, st1.txn_created + 1);
    assert_true(st2.txn_renewed >= st1.txn_renewed + 8);
    assert_true(st1.txn_created - st0.txn_created <= 3);
    free(body);
}

static void
test_aborted_put(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    struct cdn_store *s = open_fx(f);
    uint8_t *body = pattern(3 * 4096 + 10, 10);
    struct cdn_store_put *p = cdn_store_put_begin(s);
    assert_int_equal(cdn_store_put_write(p, body, 3 * 4096 + 10), 0);
    assert_int_equal(cdn_store_flush(s), 0);
    /* Chunks are in the map but nothing is visible without the metadata. */
    assert_int_equal(raw_entries(s, s->body), 3);
    assert_false(present(s, "http://a.test/ab"));
    cdn_store_put_abort(p);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(raw_entries(s, s->body), 0);
    assert_false(present(s, "http://a.test/ab"));
    assert_int_equal(stats(s).puts, 0);

    /* A put replacing a live object: the old one serves until the new one commits. */
    struct cdn_store_meta m = meta("http://a.test/ab", NULL);
    assert_int_equal(put_sync(s, &m, "old", 3), 0);
    p = cdn_store_put_begin(s);
    assert_int_equal(cdn_store_put_write(p, body, 3 * 4096 + 10), 0);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_body(s, m.key, NULL, "old", 3);
    cdn_store_put_commit(p, &m, NULL, NULL);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_body(s, m.key, NULL, body, 3 * 4096 + 10);
    assert_int_equal(raw_entries(s, s->body), 4); /* the old body is gone */
    free(body);
}

static sem_t entered, gate;

static void
blocking_done(void *arg, int result)
{
    (void)arg;
    (void)result;
    sem_post(&entered);
    sem_wait(&gate);
}

static void
test_group_commit(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    sem_init(&entered, 0, 0);
    sem_init(&gate, 0, 0);
    struct cdn_store_meta m = meta("http://a.test/first", NULL);
    cdn_store_put(s, &m, "x", 1, blocking_done, NULL);
    sem_wait(&entered); /* the writer is parked in our callback */
    uint64_t w0 = stats(s).write_txns;
    char key[64];
    for (int i = 0; i < 200; i++) {
        snprintf(key, sizeof(key), "http://a.test/g/%d", i);
        struct cdn_store_meta mi = meta(key, NULL);
        cdn_store_put(s, &mi, key, strlen(key), NULL, NULL);
    }
    sem_post(&gate);
    assert_int_equal(cdn_store_flush(s), 0);
    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.puts, 201);
    assert_true(st.write_txns - w0 <= 2); /* 200 puts, one or two commits */
    for (int i = 0; i < 200; i += 37) {
        snprintf(key, sizeof(key), "http://a.test/g/%d", i);
        assert_body(s, key, NULL, key, strlen(key));
    }
    sem_destroy(&entered);
    sem_destroy(&gate);
}

static void
test_put_errors(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    struct cdn_store_meta m = meta("http://a.test/e", NULL);
    m.status = 0;
    assert_int_equal(put_sync(s, &m, "x", 1), CDN_EINVAL);
    m = meta("http://a.test/e", NULL);
    m.key_len = 0;
    assert_int_equal(put_sync(s, &m, "x", 1), CDN_EINVAL);
    m = meta("http://a.test/e", NULL);
    uint8_t *huge = cdn_calloc(1, REC_MAX);
    m.headers = huge;
    m.headers_len = REC_MAX;
    assert_int_equal(put_sync(s, &m, "x", 1), CDN_ETOOBIG);
    free(huge);
    assert_int_equal(raw_entries(s, s->body), 0);
    assert_int_equal(stats(s).objects, 0);

    /* After close began, writes are refused with CDN_ESHUTDOWN. */
    pthread_mutex_lock(&s->q_mu);
    s->stopping = true;
    pthread_mutex_unlock(&s->q_mu);
    int r = 0;
    m = meta("http://a.test/e", NULL);
    cdn_store_put(s, &m, "x", 1, on_done, &r);
    assert_int_equal(r, CDN_ESHUTDOWN);
}

struct reader_arg {
    struct cdn_store *s;
    _Atomic bool *stop;
    int hits;
};

static void *
reader_main(void *arg)
{
    struct reader_arg *a = arg;
    char key[64];
    for (unsigned i = 0; !atomic_load(a->stop); i++) {
        snprintf(key, sizeof(key), "http://a.test/c/%u", i % 50);
        struct cdn_store_lease *l;
        if (cdn_store_lookup(a->s, key, strlen(key), &l) != 0)
            continue;
        const struct iovec *iov;
        unsigned n;
        if (cdn_store_lease_body(l, 0, &iov, &n) == 0) {
            size_t total = 0;
            for (unsigned c = 0; c < n; c++)
                total += iov[c].iov_len;
            CDN_ASSERT(total == cdn_store_lease_meta(l, 0)->body_size);
            CDN_ASSERT(n == 0 || ((const char *)iov[0].iov_base)[0] == 'c');
            a->hits++;
        }
        cdn_store_lease_release(l);
    }
    return NULL;
}

static void
test_concurrent_readers(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    f->o.max_leases = 3;
    struct cdn_store *s = open_fx(f);
    _Atomic bool stop = false;
    struct reader_arg ra[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        ra[i] = (struct reader_arg){s, &stop, 0};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &ra[i]), 0);
    }
    uint8_t *body = cdn_malloc(10000);
    memset(body, 'c', 10000);
    char key[64];
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < 50; i++) {
            snprintf(key, sizeof(key), "http://a.test/c/%d", i);
            struct cdn_store_meta m = meta(key, NULL);
            cdn_store_put(s, &m, body, (size_t)(round * 400 + i), NULL, NULL);
        }
        int r = -1;
        if (round % 5 == 4)
            cdn_store_purge(s, CDN_PURGE_PREFIX, "http://a.test/c/1", 17, false, on_done, &r);
        assert_int_equal(cdn_store_flush(s), 0);
        if (round % 5 == 4)
            assert_int_equal(r, 11); /* c/1 and c/10..c/19 */
    }
    atomic_store(&stop, true);
    int hits = 0;
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        hits += ra[i].hits;
    }
    assert_true(hits > 0);
    assert_int_equal(stats(s).leases_open, 0);
    free(body);
}

/*
 * A child process opens f's store, commits n objects keyed prefix<i> (the key is the body), runs
 * `more` on the store and dies by SIGKILL; returns once it is dead.
 */
static void
commit_then_die(struct fx *f, const char *prefix, int n, void (*more)(struct cdn_store *))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct cdn_store *s;
        if (cdn_store_open(&f->o, &s) != 0)
            _exit(1);
        for (int i = 0; i < n; i++) {
            char key[64];
            snprintf(key, sizeof(key), "%s%d", prefix, i);
            struct cdn_store_meta m = meta(key, NULL);
            cdn_store_put(s, &m, key, strlen(key), NULL, NULL);
        }
        cdn_store_flush(s);
        if (more != NULL)
            more(s);
        raise(SIGKILL);
        _exit(1);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

/* Dies holding a lease and half a streamed put. */
static void
hold_lease_and_half_put(struct cdn_store *s)
{
    struct cdn_store_lease *l;
    if (cdn_store_lookup(s, "http://a.test/k/1", 17, &l) != 0)
        _exit(1);
    struct cdn_store_put *p = cdn_store_put_begin(s);
    static uint8_t junk[3 * 4096];
    cdn_store_put_write(p, junk, sizeof(junk));
    cdn_store_flush(s);
}

static void
test_sigkill_recovery(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    commit_then_die(f, "http://a.test/k/", 100, hold_lease_and_half_put);
    struct cdn_store *s = open_fx(f);
    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.objects, 100);
    assert_int_equal(st.orphans_deleted, 3);
    assert_int_equal(st.corrupt_deleted, 0);
    char key[64];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "http://a.test/k/%d", i);
        assert_body(s, key, NULL, key, strlen(key));
    }
    /* The dead child's reader slot was reclaimed: writes reuse freed pages again. */
    assert_int_equal(put_str(s, "http://a.test/after", NULL, "after"), 0);
    assert_body(s, "http://a.test/after", NULL, "after", 5);
}

static bool
marked(const struct fx *f)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/writemap-open", f->dir);
    return access(path, F_OK) == 0;
}

/*
 * cache_writemap: the data file is reserved whole and marked while open, and nothing else opens
 * it then; a clean close unmarks it and the next open, in either mode, keeps everything; a
 * process killed with the map writable leaves the mark, and the next open starts empty.
 */
static void
test_writemap(void **state)
{
    struct fx *f = *state;
    f->o.chunk_size = 4096;
    f->o.writemap = true;
    struct cdn_store *s = open_fx(f);
    assert_true(marked(f));
    char path[128];
    snprintf(path, sizeof(path), "%s/data.mdb", f->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 >= f->o.map_size);
    uint8_t *big = pattern(20000, 3);
    struct cdn_store_meta m = meta("http://a.test/big", NULL);
    assert_int_equal(put_sync(s, &m, big, 20000), 0);
    assert_int_equal(put_str(s, "http://a.test/small", NULL, "small"), 0);
    assert_body(s, m.key, NULL, big, 20000);
    /* While it is open, no other open of the directory, in either mode, may wipe or share it. */
    for (int mode = 0; mode < 2; mode++) {
        struct cdn_store_opts other = f->o;
        other.writemap = mode == 1;
        struct cdn_store *s2 = NULL;
        assert_int_equal(cdn_store_open(&other, &s2), CDN_EIO);
        assert_null(s2);
    }
    assert_true(marked(f));
    assert_body(s, m.key, NULL, big, 20000);

    cdn_store_close(f->s);
    f->s = NULL;
    assert_false(marked(f));
    f->o.writemap = false;
    s = open_fx(f);
    assert_false(marked(f));
    assert_int_equal(stats(s).objects, 2);
    assert_body(s, m.key, NULL, big, 20000);
    assert_body(s, "http://a.test/small", NULL, "small", 5);
    cdn_store_close(f->s);
    f->s = NULL;

    f->o.writemap = true;
    commit_then_die(f, "http://a.test/w/", 10, NULL);
    assert_true(marked(f));
    f->o.writemap = false;
    s = open_fx(f);
    assert_false(marked(f));
    assert_int_equal(stats(s).objects, 0);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, m.key, strlen(m.key), &l), CDN_ENOTFOUND);
    assert_int_equal(put_str(s, "http://a.test/after", NULL, "after"), 0);
    assert_body(s, "http://a.test/after", NULL, "after", 5);
    free(big);
}

/* Pages of [from, from + len) of this process's address space that have a page table entry. */
static size_t
mapped_pages(const uint8_t *from, size_t len)
{
    long psize = sysconf(_SC_PAGESIZE);
    int fd = open("/proc/self/pagemap", O_RDONLY);
    assert_true(fd >= 0);
    size_t n = 0;
    for (size_t off = 0; off < len; off += (size_t)psize) {
        uint64_t e = 0;
        off_t at = (off_t)(((uintptr_t)from + off) / (uintptr_t)psize * sizeof(e));
        assert_int_equal(pread(fd, &e, sizeof(e), at), (ssize_t)sizeof(e));
        n += (e >> 63) & 1; /* present */
    }
    close(fd);
    return n;
}

/* Fills a writable-map store, then counts the mapped pages just past LMDB's last used one. */
static size_t
mapped_past_end(struct fx *f)
{
    struct cdn_store *s = open_fx(f);
    char key[64];
    uint8_t *body = pattern(8000, 5);
    for (int i = 0; i < 300; i++) {
        snprintf(key, sizeof(key), "http://a.test/p/%d", i);
        struct cdn_store_meta m = meta(key, NULL);
        assert_int_equal(put_sync(s, &m, body, 8000), 0);
    }
    free(body);
    assert_int_equal(cdn_store_flush(s), 0);
    MDB_envinfo info;
    MDB_stat st;
    assert_int_equal(mdb_env_info(s->env, &info), 0);
    assert_int_equal(mdb_env_stat(s->env, &st), 0);
    size_t end = ((size_t)info.me_last_pgno + 1) * st.ms_psize;
    assert_true(end > (1u << 20)); /* the store grew well past its first pages */
    int fd = -1;
    assert_int_equal(mdb_env_get_fd(s->env, &fd), 0);
    uint8_t *base = find_map(fd, info.me_mapsize);
    assert_non_null(base);
    size_t n = mapped_pages(base + end, PREFAULT_LEAD);
    cdn_store_close(f->s);
    f->s = NULL;
    return n;
}

/* cache_writemap: the writer maps pages ahead of the store's growth, so that commits do not
 * fault them in one at a time; without that only what LMDB touched is mapped. */
static void
test_writemap_prefault(void **state)
{
#ifdef MADV_POPULATE_WRITE
    long psize = sysconf(_SC_PAGESIZE);
    void *probe =
        mmap(NULL, (size_t)psize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(probe != MAP_FAILED);
    int supported = madvise(probe, (size_t)psize, MADV_POPULATE_WRITE);
    munmap(probe, (size_t)psize);
    if (supported != 0)
        skip(); /* a kernel before 5.14 */
    struct fx *f = *state;
    size_t lead = PREFAULT_LEAD / (size_t)psize;
    f->o.writemap = true;
    f->o.no_prefault = true;
    size_t lazy = mapped_past_end(f);
    assert_true(lazy < lead / 4);
    /* A second directory, so that the page cache holds nothing of the first. */
    char *slash = strrchr(f->dir, '/');
    strcpy(slash, "/env2");
    f->o.no_prefault = false;
    size_t ahead = mapped_past_end(f);
    assert_int_equal(ahead, lead);
#else
    (void)state;
    skip();
#endif
}

/* find_map() reads /proc/self/maps: the mapping of a file by inode and length, also when the
 * file's path makes its line longer than the read buffer. */
static void
test_find_map(void **state)
{
    struct fx *f = *state;
    char path[1024];
    strcpy(path, f->dir);
    *strrchr(path, '/') = '\0'; /* the fixture's temporary directory: removed with it */
    for (int level = 0; level < 3; level++) {
        char *slash = path + strlen(path);
        *slash = '/';
        memset(slash + 1, 'd' + level, 200);
        slash[201] = '\0';
        assert_int_equal(mkdir(path, 0700), 0);
    }
    strcat(path, "/file");
    assert_true(strlen(path) > 600);
    int fd = open(path, O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    size_t len = 259 * 4096, shorter = 3 * 4096;
    assert_int_equal(ftruncate(fd, (off_t)len), 0);
    void *a = mmap(NULL, shorter, PROT_READ, MAP_SHARED, fd, 0);
    void *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(a != MAP_FAILED && b != MAP_FAILED);
    assert_ptr_equal(find_map(fd, len), b);
    assert_ptr_equal(find_map(fd, shorter), a);
    assert_null(find_map(fd, len + 4096));
    munmap(a, shorter);
    munmap(b, len);
    close(fd);
}

static void
test_readers_full(void **state)
{
    struct fx *f = *state;
    f->o.max_readers = 2;
    f->o.max_leases = 100000;
    struct cdn_store *s = open_fx(f);
    assert_int_equal(put_str(s, "http://a.test/r", NULL, "r"), 0);
    unsigned slots;
    assert_int_equal(mdb_env_get_maxreaders(s->env, &slots), 0);
    struct cdn_store_lease **l = cdn_calloc(slots, sizeof(*l));
    for (unsigned i = 0; i < slots; i++)
        assert_int_equal(cdn_store_lookup(s, "http://a.test/r", 15, &l[i]), 0);
    struct cdn_store_lease *extra;
    assert_int_equal(cdn_store_lookup(s, "http://a.test/r", 15, &extra), CDN_EAGAIN);
    assert_int_equal(stats(s).leases_open, slots);
    /* Writes do not need reader slots. */
    assert_int_equal(put_str(s, "http://a.test/r2", NULL, "r2"), 0);
    cdn_store_lease_release(l[0]);
    assert_int_equal(cdn_store_lookup(s, "http://a.test/r2", 16, &extra), 0);
    cdn_store_lease_release(extra);
    for (unsigned i = 1; i < slots; i++)
        cdn_store_lease_release(l[i]);
    assert_int_equal(stats(s).leases_open, 0);
    free(l);
}

static void
test_purge_tag(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    const char *tags[] = {"red blue", "blue", "reddish", "green red"};
    char key[64];
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof(key), "http://a.test/t/%d", i);
        struct cdn_store_meta m = meta(key, NULL);
        m.tags = tags[i];
        m.tags_len = strlen(tags[i]);
        assert_int_equal(put_sync(s, &m, "x", 1), 0);
    }
    int r = -1;
    cdn_store_purge(s, CDN_PURGE_TAG, "red", 3, false, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 2); /* whole names only: not "reddish" */
    assert_false(present(s, "http://a.test/t/0"));
    assert_true(present(s, "http://a.test/t/1"));
    assert_true(present(s, "http://a.test/t/2"));
    assert_false(present(s, "http://a.test/t/3"));
    cdn_store_purge(s, CDN_PURGE_TAG, "blue", 4, true, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, 1);
    struct cdn_store_lease *l;
    assert_int_equal(cdn_store_lookup(s, "http://a.test/t/1", 17, &l), 0);
    assert_int_equal(cdn_store_lease_meta(l, 0)->flags, CDN_STORE_STALE);
    cdn_store_lease_release(l);
}

static void
test_large_purge_split(void **state)
{
    struct fx *f = *state;
    struct cdn_store *s = open_fx(f);
    char key[64];
    int n = PURGE_TXN_MAX + 1000;
    for (int i = 0; i < n; i++) {
        snprintf(key, sizeof(key), "http://a.test/p/%d", i);
        struct cdn_store_meta m = meta(key, NULL);
        cdn_store_put(s, &m, "x", 1, NULL, NULL);
    }
    assert_int_equal(put_str(s, "http://b.test/keep", NULL, "k"), 0);
    uint64_t w0 = stats(s).write_txns;
    int r = -1;
    cdn_store_purge(s, CDN_PURGE_ALL, NULL, 0, true, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, n + 1);
    assert_true(stats(s).write_txns - w0 >= 2);
    assert_int_equal(stats(s).soft_purges, n + 1);

    w0 = stats(s).write_txns;
    cdn_store_purge(s, CDN_PURGE_PREFIX, "http://a.test/", 14, false, on_done, &r);
    assert_int_equal(cdn_store_flush(s), 0);
    assert_int_equal(r, n);
    assert_true(stats(s).write_txns - w0 >= 2);
    struct cdn_store_stats st = stats(s);
    assert_int_equal(st.objects, 1);
    assert_int_equal(raw_entries(s, s->meta), 1);
    assert_int_equal(raw_entries(s, s->body), 1);
    assert_true(present(s, "http://b.test/keep"));
}

static void
test_recency_order(void **state)
{
    (void)state;
    struct cdn_recency *r = cdn_recency_new();
    uint8_t k[5][CDN_RECENCY_KEY_LEN];
    for (int i = 0; i < 5; i++) {
        memset(k[i], 0, sizeof(k[i]));
        k[i][0] = (uint8_t)i;
        k[i][33] = (uint8_t)(i * 7);
    }
    cdn_recency_put(r, k[0], 10, 0, 1, false, false);
    cdn_recency_put(r, k[1], 20, 50, 2, false, false); /* expired at now=100 */
    cdn_recency_put(r, k[2], 30, 0, 3, true, false);   /* soft-purged */
    cdn_recency_put(r, k[3], 40, 500, 4, false, false);
    cdn_recency_put(r, k[4], 50, 0, 5, false, false);
    assert_true(cdn_recency_touch(r, k[0]));
    assert_int_equal(cdn_recency_count(r), 5);
    assert_int_equal(cdn_recency_bytes(r), 150);
    uint8_t out[5 * CDN_RECENCY_KEY_LEN];
    assert_int_equal(cdn_recency_victims(r, 100, out, 5), 5);
    int want[] = {1, 2, 3, 4, 0};
    for (int i = 0; i < 5; i++)
        assert_memory_equal(out + i * CDN_RECENCY_KEY_LEN, k[want[i]], CDN_RECENCY_KEY_LEN);
    assert_int_equal(cdn_recency_victims(r, 100, out, 2), 2);
    assert_memory_equal(out, k[1], CDN_RECENCY_KEY_LEN);
    assert_memory_equal(out + CDN_RECENCY_KEY_LEN, k[2], CDN_RECENCY_KEY_LEN);
    /* Replacing keeps one entry and fixes the byte count. */
    cdn_recency_put(r, k[3], 100, 500, 4, false, false);
    assert_int_equal(cdn_recency_count(r), 5);
    assert_int_equal(cdn_recency_bytes(r), 210);
    assert_true(cdn_recency_remove(r, k[1]));
    assert_false(cdn_recency_remove(r, k[1]));
    assert_false(cdn_recency_touch(r, k[1]));
    assert_int_equal(cdn_recency_count(r), 4);
    assert_int_equal(cdn_recency_bytes(r), 190);
    cdn_recency_clear(r);
    assert_int_equal(cdn_recency_count(r), 0);
    assert_int_equal(cdn_recency_bytes(r), 0);

    /* Rebuilt entries (stamp 0) come before anything used since, oldest first; the table grows
     * well past its initial size. */
    uint8_t key[CDN_RECENCY_KEY_LEN] = {0};
    for (int i = 0; i < 20000; i++) {
        memcpy(key, &i, sizeof(i));
        cdn_recency_put(r, key, 1, 0, 100000 - i, false, i >= 10000 ? false : true);
    }
    assert_int_equal(cdn_recency_count(r), 20000);
    assert_int_equal(cdn_recency_victims(r, 100, out, 1), 1);
    int first;
    memcpy(&first, out, sizeof(first));
    assert_int_equal(first, 9999); /* rebuilt, smallest born */
    cdn_recency_free(r);
}

int
main(void)
{
    cdn_log_set_level(CDN_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_roundtrip_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_multichunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interleaved_puts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_expect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_default_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_recycled, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_keeps_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_hash_given, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soft_purge, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_foreign_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eviction_watermark, setup, teardown),
        cmocka_unit_test_setup_teardown(test_map_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_pool_and_copy_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aborted_put, setup, teardown),
        cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_recovery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writemap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writemap_prefault, setup, teardown),
        cmocka_unit_test_setup_teardown(test_find_map, setup, teardown),
        cmocka_unit_test_setup_teardown(test_readers_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_tag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_purge_split, setup, teardown),
        cmocka_unit_test(test_recency_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
