/*
 * store.c: cached objects in one LMDB environment (see store.h for the contract).
 *
 * Data model. Two sub-databases:
 *  - "meta": key = SHA-256(primary key) || 8 bytes of SHA-256(vary string) (0s when vary is
 *    empty), so the variants of one URL are adjacent and found with one MDB_SET_RANGE.
 *    Value = a record: fixed little-endian header (magic, format version, CRC-32 of the rest,
 *    lengths, times, body id/size/chunking) followed by the key, vary, header block and tags.
 *  - "body": key = body id (8 bytes, big-endian) || chunk index (4 bytes, big-endian), so an
 *    object's chunks sort together and in order. Value = raw bytes, served zero-copy.
 *
 * Invariants:
 *  - A record is trusted only after rec_parse() validated all of it. Anything else is a miss,
 *    and the writer deletes it (re-checking in its own transaction first).
 *  - Body ids are never reused (a counter restored from the maximum seen at open), so a record
 *    and the chunks it names can only be created together, and a reader holding an old snapshot
 *    can never mix one object's metadata with another's body.
 *  - An object becomes visible only when its metadata is written, after all of its chunks, in
 *    the same or a later transaction. Chunks no record names are garbage: deleted on abort or
 *    failed commit, and swept at open (after a crash mid-put).
 *  - In-memory state (recency index, counters) changes only after the commit that makes it true.
 *
 * Threads and locking:
 *  - One writer thread owns every write transaction. Others append ops to a queue (q_mu); the
 *    writer takes a group and applies it in one transaction (group commit). On failure (e.g.
 *    MDB_MAP_FULL) it evicts synchronously and retries each op alone once; what still fails is
 *    dropped and counted.
 *  - Readers take a read transaction from a pool of reset handles: first the one their thread
 *    put back last (a thread-local slot, no lock), else the shared list (pool_mu, held only to
 *    push or pop). MDB_NOTLS ties reader slots to transaction handles rather than threads, so a
 *    lease taken on one MHD worker may be released on another. Every handle is also on the
 *    store's `all` list, so closing the store aborts the ones parked in other threads' slots;
 *    a slot names its store by a generation number, so a stale slot is never used.
 *  - The recency index has its own striped locks (evict.c).
 */
#include "cdnode/store.h"
#include "cdnode/common.h"
#include "cdnode/evict.h"
#include "cdnode/log.h"
#include "cdnode/sha256.h"
#include "cdnode/tcache.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define STORE_MAGIC 0x570e0001u
#define LEASE_MAGIC 0x1ea5e001u
#define PUT_MAGIC 0x9a7c0001u
#define OP_MAGIC 0x0b0e0001u

#define REC_MAGIC 0x4d4e4443u /* "CDNM" */
#define REC_VERSION 1
#define REC_HDR 88
#define REC_MAX (1u << 20) /* bound on one metadata record */

#define KEY_LEN CDN_RECENCY_KEY_LEN
#define HASH_LEN 32
#define BODY_KEY_LEN 12

#define GROUP_MAX_OPS 512
/* Records one purge changes per transaction: bounds dirty pages (MDB_TXN_FULL) and the time
 * other writes wait behind a large purge, which resumes in the next group. */
#define PURGE_TXN_MAX 4096
#define GROUP_MAX_BYTES (32u << 20)
/* cache_writemap: bytes kept mapped past the store's last page, and mapped per call. */
#define PREFAULT_LEAD (4u << 20)
#define PREFAULT_STEP (1u << 20)

_Static_assert(KEY_LEN == HASH_LEN + 8, "meta key = hash + variant");

/* ---- byte order ---- */

static void
le16_put(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void
le32_put(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void
le64_put(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t
le16_get(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t
le32_get(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t
le64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void
body_key(uint64_t id, uint32_t idx, uint8_t out[BODY_KEY_LEN])
{
    for (int i = 0; i < 8; i++)
        out[i] = (uint8_t)(id >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        out[8 + i] = (uint8_t)(idx >> (24 - 8 * i));
}

static uint64_t
body_key_id(const uint8_t *k)
{
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = (id << 8) | k[i];
    return id;
}

_Static_assert(CDN_STORE_KEY_HASH_LEN == HASH_LEN, "the public key hash is the meta key's");

void
cdn_store_key_hash(const char *key, size_t key_len, uint8_t out[CDN_STORE_KEY_HASH_LEN])
{
    cdn_sha256(key, key_len, out);
}

/* key_hash: cdn_store_key_hash(key), or NULL to compute it. */
static void
meta_key(const char *key, size_t klen, const uint8_t *key_hash, const void *vary, size_t vlen,
         uint8_t out[KEY_LEN])
{
    if (key_hash != NULL)
        memcpy(out, key_hash, HASH_LEN);
    else
        cdn_sha256(key, klen, out);
    memset(out + HASH_LEN, 0, KEY_LEN - HASH_LEN);
    if (vlen > 0) {
        uint8_t h[HASH_LEN];
        cdn_sha256(vary, vlen, h);
        memcpy(out + HASH_LEN, h, KEY_LEN - HASH_LEN);
    }
}

/* ---- metadata records ----
 * off  0 magic u32 | 4 version u16 | 6 header size u16 | 8 crc32 of [12, end) u32
 *     12 flags u32 | 16 status u32 | 20 chunk_size u32 | 24 nchunks u32
 *     28 key_len u32 | 32 vary_len u32 | 36 headers_len u32 | 40 tags_len u32 | 44 zero u32
 *     48 request_time i64 | 56 response_time i64 | 64 expires_at i64 | 72 body_id u64
 *     80 body_size u64 | 88 key, vary, headers, tags
 */

struct rec {
    struct cdn_store_meta m; /* pointers into the record */
    uint32_t chunk_size;
    uint32_t nchunks;
    uint64_t body_id;
};

static uint32_t
chunks_for(uint64_t size, uint32_t chunk_size)
{
    return (uint32_t)(size / chunk_size + (size % chunk_size != 0));
}

static void
rec_seal(uint8_t *r, size_t len)
{
    le32_put(r + 8, (uint32_t)crc32(0, r + 12, (uInt)(len - 12)));
}

static void
rec_set_body(uint8_t *r, uint64_t body_id, uint64_t body_size, uint32_t chunk_size)
{
    le32_put(r + 20, chunk_size);
    le32_put(r + 24, chunks_for(body_size, chunk_size));
    le64_put(r + 72, body_id);
    le64_put(r + 80, body_size);
}

/* A record for m (malloc'd, not sealed yet), or NULL with *err set when m is unusable. */
static uint8_t *
rec_build(const struct cdn_store_meta *m, uint64_t body_id, uint64_t body_size, uint32_t chunk_size,
          size_t *len, int *err)
{
    uint64_t total = (uint64_t)REC_HDR + m->key_len + m->vary_len + m->headers_len + m->tags_len;
    if (m->key == NULL || m->key_len == 0 || m->status < 100 || m->status > 999 ||
        (m->vary_len > 0 && m->vary == NULL) || (m->headers_len > 0 && m->headers == NULL) ||
        (m->tags_len > 0 && m->tags == NULL)) {
        *err = CDN_EINVAL;
        return NULL;
    }
    if (total > REC_MAX) {
        *err = CDN_ETOOBIG;
        return NULL;
    }
    uint8_t *r = cdn_calloc(1, total);
    le32_put(r, REC_MAGIC);
    le16_put(r + 4, REC_VERSION);
    le16_put(r + 6, REC_HDR);
    le32_put(r + 12, m->flags);
    le32_put(r + 16, m->status);
    le32_put(r + 28, (uint32_t)m->key_len);
    le32_put(r + 32, (uint32_t)m->vary_len);
    le32_put(r + 36, (uint32_t)m->headers_len);
    le32_put(r + 40, (uint32_t)m->tags_len);
    le64_put(r + 48, (uint64_t)m->request_time);
    le64_put(r + 56, (uint64_t)m->response_time);
    le64_put(r + 64, (uint64_t)m->expires_at);
    uint8_t *p = r + REC_HDR;
    memcpy(p, m->key, m->key_len);
    p += m->key_len;
    if (m->vary_len)
        memcpy(p, m->vary, m->vary_len);
    p += m->vary_len;
    if (m->headers_len)
        memcpy(p, m->headers, m->headers_len);
    p += m->headers_len;
    if (m->tags_len)
        memcpy(p, m->tags, m->tags_len);
    *len = (size_t)total;
    rec_set_body(r, body_id, body_size, chunk_size);
    return r;
}

/*
 * Reads a record's fields, checking everything but the checksum; 0 with *out filled, or
 * CDN_ECORRUPT. Only for records this process built (rec_build): a stored one needs rec_parse.
 */
static int
rec_unpack(const void *data, size_t len, struct rec *out)
{
    const uint8_t *r = data;
    if (len < REC_HDR || le32_get(r) != REC_MAGIC || le16_get(r + 4) != REC_VERSION ||
        le16_get(r + 6) != REC_HDR)
        return CDN_ECORRUPT;
    uint32_t klen = le32_get(r + 28), vlen = le32_get(r + 32), hlen = le32_get(r + 36),
             tlen = le32_get(r + 40);
    if ((uint64_t)REC_HDR + klen + vlen + hlen + tlen != len || klen == 0)
        return CDN_ECORRUPT;
    memset(out, 0, sizeof(*out));
    out->m.flags = le32_get(r + 12);
    out->m.status = le32_get(r + 16);
    out->chunk_size = le32_get(r + 20);
    out->nchunks = le32_get(r + 24);
    out->m.request_time = (int64_t)le64_get(r + 48);
    out->m.response_time = (int64_t)le64_get(r + 56);
    out->m.expires_at = (int64_t)le64_get(r + 64);
    out->body_id = le64_get(r + 72);
    out->m.body_size = le64_get(r + 80);
    if (out->m.status < 100 || out->m.status > 999 || out->chunk_size == 0 ||
        out->m.body_size / out->chunk_size >= UINT32_MAX ||
        out->nchunks != chunks_for(out->m.body_size, out->chunk_size))
        return CDN_ECORRUPT;
    const uint8_t *p = r + REC_HDR;
    out->m.key = (const char *)p;
    out->m.key_len = klen;
    p += klen;
    out->m.vary = p;
    out->m.vary_len = vlen;
    p += vlen;
    out->m.headers = p;
    out->m.headers_len = hlen;
    p += hlen;
    out->m.tags = p;
    out->m.tags_len = tlen;
    return 0;
}

/* Validates a stored record completely; 0 with *out filled, or CDN_ECORRUPT. */
static int
rec_parse(const void *data, size_t len, struct rec *out)
{
    const uint8_t *r = data;
    if (len < REC_HDR || le32_get(r + 8) != (uint32_t)crc32(0, r + 12, (uInt)(len - 12)))
        return CDN_ECORRUPT;
    return rec_unpack(data, len, out);
}

static bool
same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* ---- the store ---- */

struct rtxn {
    MDB_txn *txn;
    MDB_cursor *meta_cur; /* on s->meta, renewed with the transaction; NULL until first used */
    struct rtxn *next;                /* in the shared pool */
    struct rtxn *all_prev, *all_next; /* every handle of the store (pool_mu) */
};

/* The read transaction this thread put back last, and the store generation it belongs to. */
static _Thread_local struct {
    uint64_t gen;
    struct rtxn *rt;
} tls_rtxn;

static _Atomic uint64_t store_generation;

enum op_kind { OP_CHUNK, OP_COMMIT, OP_ABORT, OP_UPDATE, OP_DELETE, OP_PURGE, OP_DROP, OP_BARRIER };

struct op {
    uint32_t magic;
    struct op *next;
    enum op_kind kind;
    struct cdn_store_put *put; /* CHUNK, COMMIT, ABORT */
    uint32_t idx;              /* CHUNK */
    uint8_t *data;             /* CHUNK bytes, or the record (COMMIT, UPDATE) */
    size_t len;
    uint8_t mkey[KEY_LEN]; /* COMMIT, UPDATE, DELETE, DROP */
    char *pattern;         /* PURGE; DELETE: the key */
    size_t plen;
    void *vary; /* DELETE */
    size_t vlen;
    enum cdn_store_purge purge;
    bool soft;
    bool durable;
    bool more;    /* PURGE: stopped at PURGE_TXN_MAX, continues from next_resume */
    bool resumed; /* PURGE: start from resume instead of the beginning */
    uint8_t resume[KEY_LEN], next_resume[KEY_LEN];
    int64_t total;    /* PURGE: records affected by the parts already committed */
    uint64_t body_id; /* DROP: the body found damaged, 0 for a bad record */
    cdn_store_done_fn done;
    void *arg;
    int result;
};

struct cdn_store_put {
    uint32_t magic;
    struct cdn_store *s;
    uint64_t body_id;
    uint8_t *buf; /* the chunk being filled, cap bytes allocated (up to chunk_size) */
    size_t fill;
    size_t cap;
    uint64_t expect; /* the body's announced length; 0: unknown */
    uint32_t nchunks; /* chunks handed to the writer */
    uint64_t size;
    _Atomic int err; /* set by the writer when a chunk could not be stored */
};

struct variant {
    struct cdn_store_meta m;
    uint8_t mkey[KEY_LEN];
    uint64_t body_id;
    uint32_t chunk_size;
    uint32_t nchunks;
};

struct cdn_store_lease {
    uint32_t magic;
    struct cdn_store *s;
    struct rtxn *rt; /* NULL for a copy-out lease */
    unsigned n;
    struct variant *v;
    uint8_t *copy; /* copy-out: every variant's strings */
    struct iovec *iov;
    unsigned iov_cap;
    unsigned v_cap; /* entries in v */
    uint8_t *body_copy;
};

/* A change to in-memory state, applied once its transaction committed. */
struct effect {
    enum { EFF_PUT, EFF_REMOVE, EFF_CLEAR } kind;
    uint8_t key[KEY_LEN];
    uint64_t size;
    int64_t expires_at, born;
    bool stale;
};

struct counts {
    uint64_t puts, updates, deletes, soft_purges, evictions, map_full_drops, corrupt_deleted;
};

struct cdn_store {
    uint32_t magic;
    MDB_env *env;
    MDB_dbi meta, body, state;
    char *dir;
    bool sync, writemap;
    int mark_fd; /* writemap: the locked marker */
    uint8_t *map_base; /* writemap: the map, while pages are faulted in ahead (else NULL) */
    size_t prefaulted; /* ... bytes from its start known mapped (writer thread only) */
    size_t page_bytes; /* LMDB's page size */
    uint64_t ticks;
    uint32_t chunk_size;
    uint64_t max_object;
    unsigned max_variants, max_leases, evict_batch;
    uint64_t map_pages, high_pages, low_pages;
    struct cdn_recency *rec;

    pthread_mutex_t pool_mu;
    struct rtxn *pool;
    struct rtxn *all;
    uint64_t gen; /* unique among the stores this process opened */

    pthread_mutex_t q_mu;
    pthread_cond_t q_cond;
    struct op *q_head, *q_tail;
    bool stopping;
    pthread_t writer;

    /* writer thread only */
    struct effect *eff;
    size_t neff, eff_cap;
    struct counts pend;

    _Atomic uint64_t next_body_id;
    _Atomic uint64_t leases_open;
    _Atomic uint64_t used_pages;
    _Atomic uint64_t backlog; /* body bytes queued for the writer, not yet applied */
    _Atomic uint64_t c_puts, c_updates, c_deletes, c_soft, c_evictions, c_drops, c_corrupt;
    _Atomic uint64_t c_orphans, c_lookups, c_copies, c_txn_created, c_txn_renewed, c_wtxns;
};

static void
add_effect(struct cdn_store *s, int kind, const uint8_t *key, const struct rec *r, size_t rec_len)
{
    if (s->neff == s->eff_cap) {
        s->eff_cap = s->eff_cap ? s->eff_cap * 2 : 64;
        s->eff = cdn_realloc(s->eff, s->eff_cap * sizeof(*s->eff));
    }
    struct effect *e = &s->eff[s->neff++];
    memset(e, 0, sizeof(*e));
    e->kind = kind;
    if (key != NULL)
        memcpy(e->key, key, KEY_LEN);
    if (r != NULL) {
        e->size = rec_len + r->m.body_size;
        e->expires_at = r->m.expires_at;
        e->born = r->m.response_time;
        e->stale = (r->m.flags & CDN_STORE_STALE) != 0;
    }
}

static void
apply_effects(struct cdn_store *s)
{
    for (size_t i = 0; i < s->neff; i++) {
        struct effect *e = &s->eff[i];
        if (e->kind == EFF_PUT)
            cdn_recency_put(s->rec, e->key, e->size, e->expires_at, e->born, e->stale, false);
        else if (e->kind == EFF_REMOVE)
            cdn_recency_remove(s->rec, e->key);
        else
            cdn_recency_clear(s->rec);
    }
    s->neff = 0;
    atomic_fetch_add(&s->c_puts, s->pend.puts);
    atomic_fetch_add(&s->c_updates, s->pend.updates);
    atomic_fetch_add(&s->c_deletes, s->pend.deletes);
    atomic_fetch_add(&s->c_soft, s->pend.soft_purges);
    atomic_fetch_add(&s->c_evictions, s->pend.evictions);
    atomic_fetch_add(&s->c_drops, s->pend.map_full_drops);
    atomic_fetch_add(&s->c_corrupt, s->pend.corrupt_deleted);
    memset(&s->pend, 0, sizeof(s->pend));
}

static int
mdb_to_cdn(int rc)
{
    switch (rc) {
    case 0:
        return 0;
    case MDB_NOTFOUND:
        return CDN_ENOTFOUND;
    case MDB_MAP_FULL:
        return CDN_EFULL;
    case MDB_READERS_FULL:
        return CDN_EAGAIN;
    default:
        return CDN_EIO;
    }
}

/* Pages holding live data: every tree (freelist and catalogue included) plus the two meta
 * pages. Freed pages do not count: LMDB reuses them. */
static uint64_t
used_pages(struct cdn_store *s, MDB_txn *t)
{
    MDB_dbi dbis[] = {0, 1, s->meta, s->body, s->state}; /* FREE_DBI, MAIN_DBI, ours */
    uint64_t n = 2;
    for (size_t i = 0; i < CDN_ARRAY_LEN(dbis); i++) {
        MDB_stat st;
        if (mdb_stat(t, dbis[i], &st) == 0)
            n += st.ms_branch_pages + st.ms_leaf_pages + st.ms_overflow_pages;
    }
    return n;
}

/* ---- read transaction pool ---- */

/* Ends a handle's transaction; a read-only transaction's cursor must be closed on its own. */
static void
rtxn_close(struct rtxn *rt)
{
    if (rt->meta_cur != NULL)
        mdb_cursor_close(rt->meta_cur);
    rt->meta_cur = NULL;
    mdb_txn_abort(rt->txn);
}

static void
rtxn_forget(struct cdn_store *s, struct rtxn *rt)
{
    pthread_mutex_lock(&s->pool_mu);
    if (rt->all_prev)
        rt->all_prev->all_next = rt->all_next;
    else
        s->all = rt->all_next;
    if (rt->all_next)
        rt->all_next->all_prev = rt->all_prev;
    pthread_mutex_unlock(&s->pool_mu);
    free(rt);
}

static int
rtxn_get(struct cdn_store *s, struct rtxn **out)
{
    struct rtxn *rt = NULL;
    if (tls_rtxn.rt != NULL && tls_rtxn.gen == s->gen) {
        rt = tls_rtxn.rt;
        tls_rtxn.rt = NULL;
    } else {
        pthread_mutex_lock(&s->pool_mu);
        rt = s->pool;
        if (rt != NULL)
            s->pool = rt->next;
        pthread_mutex_unlock(&s->pool_mu);
    }
    int rc;
    if (rt != NULL) {
        rc = mdb_txn_renew(rt->txn);
        if (rc == 0) {
            atomic_fetch_add_explicit(&s->c_txn_renewed, 1, memory_order_relaxed);
            *out = rt;
            return 0;
        }
        rtxn_close(rt);
        rtxn_forget(s, rt);
    } else {
        rt = cdn_calloc(1, sizeof(*rt));
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &rt->txn);
        if (rc == 0) {
            atomic_fetch_add(&s->c_txn_created, 1);
            pthread_mutex_lock(&s->pool_mu);
            rt->all_next = s->all;
            if (s->all)
                s->all->all_prev = rt;
            s->all = rt;
            pthread_mutex_unlock(&s->pool_mu);
            *out = rt;
            return 0;
        }
        free(rt);
    }
    if (rc != MDB_READERS_FULL)
        cdn_error("store: read transaction: %s", mdb_strerror(rc));
    return mdb_to_cdn(rc);
}

static void
rtxn_put(struct cdn_store *s, struct rtxn *rt)
{
    mdb_txn_reset(rt->txn);
    if (tls_rtxn.rt == NULL || tls_rtxn.gen != s->gen) {
        /* A slot of a store closed since holds a handle that store has freed: just replace it. */
        tls_rtxn.rt = rt;
        tls_rtxn.gen = s->gen;
        return;
    }
    pthread_mutex_lock(&s->pool_mu);
    rt->next = s->pool;
    s->pool = rt;
    pthread_mutex_unlock(&s->pool_mu);
}

/* ---- op queue ---- */

static struct op *
op_new(enum op_kind kind, cdn_store_done_fn done, void *arg)
{
    struct op *op = cdn_calloc(1, sizeof(*op));
    op->magic = OP_MAGIC;
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    return op;
}

static void
put_free(struct cdn_store_put *p)
{
    p->magic = 0;
    free(p->buf);
    free(p);
}

/* Reports the result and frees the op (and the put, which its last op owns). */
static void
op_finish(struct op *op)
{
    CDN_CHECK_MAGIC(op, OP_MAGIC);
    if (op->kind == OP_CHUNK)
        atomic_fetch_sub(&op->put->s->backlog, op->len);
    if (op->kind == OP_CHUNK && op->result < 0) {
        int none = 0;
        atomic_compare_exchange_strong(&op->put->err, &none, op->result);
    }
    if (op->done != NULL)
        op->done(op->arg, op->result);
    if (op->kind == OP_COMMIT || op->kind == OP_ABORT)
        put_free(op->put);
    free(op->data);
    free(op->pattern);
    free(op->vary);
    op->magic = 0;
    free(op);
}

static void
submit(struct cdn_store *s, struct op *op)
{
    pthread_mutex_lock(&s->q_mu);
    if (s->stopping) {
        pthread_mutex_unlock(&s->q_mu);
        op->result = CDN_ESHUTDOWN;
        op_finish(op);
        return;
    }
    if (s->q_tail != NULL)
        s->q_tail->next = op;
    else
        s->q_head = op;
    s->q_tail = op;
    pthread_cond_signal(&s->q_cond);
    pthread_mutex_unlock(&s->q_mu);
}

static void
queue_drop(struct cdn_store *s, const uint8_t *mkey, uint64_t body_id)
{
    struct op *op = op_new(OP_DROP, NULL, NULL);
    memcpy(op->mkey, mkey, KEY_LEN);
    op->body_id = body_id;
    submit(s, op);
}

/* ---- writer: applying ops inside a write transaction ----
 * Each apply_* returns 0 or the LMDB error that spoils the transaction, and sets op->result. */

/* Deletes every chunk of a body. */
static int
del_body(struct cdn_store *s, MDB_txn *t, uint64_t id)
{
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->body, &c);
    if (rc != 0)
        return rc;
    uint8_t kb[BODY_KEY_LEN];
    body_key(id, 0, kb);
    MDB_val k = {BODY_KEY_LEN, kb}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == BODY_KEY_LEN && body_key_id(k.mv_data) == id) {
        rc = mdb_cursor_del(c, 0);
        if (rc == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND || rc == 0 || rc == EINVAL ? 0 : rc;
}

/*
 * Deletes the record at mkey and its body. *r gets the parsed record (r->m.key_len 0 when it
 * was invalid); returns MDB_NOTFOUND when there is no record.
 */
static int
del_record(struct cdn_store *s, MDB_txn *t, const uint8_t *mkey, struct rec *r)
{
    MDB_val k = {KEY_LEN, (void *)mkey}, v;
    int rc = mdb_get(t, s->meta, &k, &v);
    if (rc != 0)
        return rc;
    if (rec_parse(v.mv_data, v.mv_size, r) == 0) {
        rc = del_body(s, t, r->body_id);
        if (rc != 0)
            return rc;
    } else {
        memset(r, 0, sizeof(*r));
        s->pend.corrupt_deleted++;
    }
    rc = mdb_del(t, s->meta, &k, NULL);
    if (rc == 0)
        add_effect(s, EFF_REMOVE, mkey, NULL, 0);
    return rc;
}

/* Makes room for one more variant under mkey's URL hash: deletes the oldest other variants
 * (invalid ones first) while max_variants or more remain. */
static int
enforce_variants(struct cdn_store *s, MDB_txn *t, const uint8_t *mkey)
{
    struct other {
        uint8_t key[KEY_LEN];
        int64_t born;
        bool bad;
    } *o = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->meta, &c);
    if (rc != 0)
        return rc;
    uint8_t start[KEY_LEN] = {0};
    memcpy(start, mkey, HASH_LEN);
    MDB_val k = {KEY_LEN, start}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == KEY_LEN && memcmp(k.mv_data, mkey, HASH_LEN) == 0) {
        if (memcmp(k.mv_data, mkey, KEY_LEN) != 0) {
            if (n == cap) {
                cap = cap ? cap * 2 : 16;
                o = cdn_realloc(o, cap * sizeof(*o));
            }
            struct rec r;
            memcpy(o[n].key, k.mv_data, KEY_LEN);
            o[n].bad = rec_parse(v.mv_data, v.mv_size, &r) != 0;
            o[n].born = o[n].bad ? INT64_MIN : r.m.response_time;
            n++;
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    while (rc == 0 && n >= s->max_variants) {
        size_t oldest = 0;
        for (size_t i = 1; i < n; i++)
            if (o[i].born < o[oldest].born)
                oldest = i;
        struct rec r;
        rc = del_record(s, t, o[oldest].key, &r);
        if (rc == 0 && r.m.key_len > 0)
            s->pend.evictions++;
        o[oldest] = o[--n];
    }
    free(o);
    return rc;
}

static int
apply_chunk(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    int err = atomic_load(&op->put->err);
    if (err != 0) {
        op->result = err;
        return 0;
    }
    uint8_t kb[BODY_KEY_LEN];
    body_key(op->put->body_id, op->idx, kb);
    MDB_val k = {BODY_KEY_LEN, kb}, v = {op->len, op->data};
    op->result = 0;
    /* Body ids only grow, so a chunk usually sorts after every key stored: appended, LMDB
     * neither searches nor splits the last page in half, and body pages stay full. A chunk of
     * an object that started before another one's is the exception (MDB_KEYEXIST, nothing
     * written): it goes in by search. */
    int rc = mdb_put(t, s->body, &k, &v, MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        rc = mdb_put(t, s->body, &k, &v, 0);
    return rc;
}

static int
apply_commit(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    struct cdn_store_put *p = op->put;
    int err = atomic_load(&p->err);
    if (err != 0) {
        op->result = err;
        if (err == CDN_EFULL)
            s->pend.map_full_drops++;
        return del_body(s, t, p->body_id);
    }
    MDB_val k = {KEY_LEN, op->mkey}, v;
    int rc = mdb_get(t, s->meta, &k, &v);
    if (rc == 0) {
        struct rec old;
        if (rec_parse(v.mv_data, v.mv_size, &old) == 0)
            rc = old.body_id != p->body_id ? del_body(s, t, old.body_id) : 0;
        else
            s->pend.corrupt_deleted++;
    } else if (rc == MDB_NOTFOUND) {
        rc = enforce_variants(s, t, op->mkey);
    }
    if (rc != 0)
        return rc;
    v.mv_size = op->len;
    v.mv_data = op->data;
    rc = mdb_put(t, s->meta, &k, &v, 0);
    if (rc != 0)
        return rc;
    struct rec r;
    CDN_ASSERT(rec_unpack(op->data, op->len, &r) == 0);
    add_effect(s, EFF_PUT, op->mkey, &r, op->len);
    s->pend.puts++;
    op->result = 0;
    return 0;
}

static int
apply_update(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    MDB_val k = {KEY_LEN, op->mkey}, v;
    op->result = CDN_ENOTFOUND;
    int rc = mdb_get(t, s->meta, &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    struct rec old, nw;
    CDN_ASSERT(rec_unpack(op->data, op->len, &nw) == 0);
    if (rec_parse(v.mv_data, v.mv_size, &old) != 0) {
        struct rec gone;
        return del_record(s, t, op->mkey, &gone);
    }
    if (!same_bytes(old.m.key, old.m.key_len, nw.m.key, nw.m.key_len) ||
        !same_bytes(old.m.vary, old.m.vary_len, nw.m.vary, nw.m.vary_len))
        return 0;
    rec_set_body(op->data, old.body_id, old.m.body_size, old.chunk_size);
    rec_seal(op->data, op->len);
    v.mv_size = op->len;
    v.mv_data = op->data;
    rc = mdb_put(t, s->meta, &k, &v, 0);
    if (rc != 0)
        return rc;
    CDN_ASSERT(rec_unpack(op->data, op->len, &nw) == 0);
    add_effect(s, EFF_PUT, op->mkey, &nw, op->len);
    s->pend.updates++;
    op->result = 0;
    return 0;
}

static int
apply_delete(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    MDB_val k = {KEY_LEN, op->mkey}, v;
    op->result = 0;
    int rc = mdb_get(t, s->meta, &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    struct rec r;
    if (rec_parse(v.mv_data, v.mv_size, &r) == 0 &&
        (!same_bytes(r.m.key, r.m.key_len, op->pattern, op->plen) ||
         !same_bytes(r.m.vary, r.m.vary_len, op->vary, op->vlen)))
        return 0;
    rc = del_record(s, t, op->mkey, &r);
    if (rc == 0 && r.m.key_len > 0) {
        s->pend.deletes++;
        op->result = 1;
    }
    return rc;
}

static bool
purge_matches(const struct op *op, const struct rec *r)
{
    switch (op->purge) {
    case CDN_PURGE_URL:
        return same_bytes(r->m.key, r->m.key_len, op->pattern, op->plen);
    case CDN_PURGE_PREFIX:
        return r->m.key_len >= op->plen && memcmp(r->m.key, op->pattern, op->plen) == 0;
    case CDN_PURGE_TAG:
        for (size_t i = 0; i < r->m.tags_len;) {
            const char *tags = r->m.tags;
            size_t end = i;
            while (end < r->m.tags_len && tags[end] != ' ')
                end++;
            if (same_bytes(tags + i, end - i, op->pattern, op->plen))
                return true;
            i = end + 1;
        }
        return false;
    case CDN_PURGE_ALL:
        return true;
    }
    return false;
}

static int
apply_purge(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    op->result = 0;
    op->more = false;
    if (op->purge == CDN_PURGE_ALL && !op->soft) {
        MDB_stat st;
        int rc = mdb_stat(t, s->meta, &st);
        if (rc == 0)
            rc = mdb_drop(t, s->meta, 0);
        if (rc == 0)
            rc = mdb_drop(t, s->body, 0);
        if (rc != 0)
            return rc;
        add_effect(s, EFF_CLEAR, NULL, NULL, 0);
        s->pend.deletes += st.ms_entries;
        op->result = (int)(st.ms_entries > INT32_MAX ? INT32_MAX : st.ms_entries);
        return 0;
    }
    /* Collect the matching keys first, then change them: no cursor walks a tree being edited. */
    uint8_t *keys = NULL;
    size_t n = 0, cap = 0;
    uint8_t start[KEY_LEN] = {0}, hash[HASH_LEN];
    if (op->purge == CDN_PURGE_URL) {
        cdn_sha256(op->pattern, op->plen, hash);
        memcpy(start, hash, HASH_LEN);
    }
    if (op->resumed)
        memcpy(start, op->resume, KEY_LEN);
    MDB_cursor *c;
    int rc = mdb_cursor_open(t, s->meta, &c);
    if (rc != 0)
        return rc;
    MDB_val k = {KEY_LEN, start}, v;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (op->purge == CDN_PURGE_URL &&
            (k.mv_size < HASH_LEN || memcmp(k.mv_data, hash, HASH_LEN) != 0))
            break;
        if (n == PURGE_TXN_MAX) {
            op->more = true;
            memcpy(op->next_resume, keys + (n - 1) * KEY_LEN, KEY_LEN);
            break;
        }
        struct rec r;
        if (k.mv_size == KEY_LEN &&
            (rec_parse(v.mv_data, v.mv_size, &r) != 0 || purge_matches(op, &r))) {
            if (n == cap) {
                cap = cap ? cap * 2 : 64;
                keys = cdn_realloc(keys, cap * KEY_LEN);
            }
            memcpy(keys + n++ * KEY_LEN, k.mv_data, KEY_LEN);
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    int affected = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        uint8_t *mk = keys + i * KEY_LEN;
        MDB_val kk = {KEY_LEN, mk};
        struct rec r;
        rc = mdb_get(t, s->meta, &kk, &v);
        if (rc != 0)
            break;
        if (!op->soft || rec_parse(v.mv_data, v.mv_size, &r) != 0) {
            rc = del_record(s, t, mk, &r);
            if (rc == 0 && r.m.key_len > 0) {
                s->pend.deletes++;
                affected++;
            }
            continue;
        }
        if (r.m.flags & CDN_STORE_STALE)
            continue;
        size_t len = v.mv_size;
        uint8_t *copy = cdn_malloc(len);
        memcpy(copy, v.mv_data, len);
        le32_put(copy + 12, r.m.flags | CDN_STORE_STALE);
        rec_seal(copy, len);
        MDB_val nv = {len, copy};
        rc = mdb_put(t, s->meta, &kk, &nv, 0);
        if (rc == 0) {
            CDN_ASSERT(rec_unpack(copy, len, &r) == 0);
            add_effect(s, EFF_PUT, mk, &r, len);
            s->pend.soft_purges++;
            affected++;
        }
        free(copy);
    }
    free(keys);
    op->result = affected;
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* A reader found the record at mkey invalid (body_id 0) or its body damaged: delete it if that
 * is still true in this transaction. */
static int
apply_drop(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    MDB_val k = {KEY_LEN, op->mkey}, v;
    op->result = 0;
    int rc = mdb_get(t, s->meta, &k, &v);
    if (rc != 0)
        return rc == MDB_NOTFOUND ? 0 : rc;
    struct rec r;
    if (rec_parse(v.mv_data, v.mv_size, &r) == 0) {
        if (op->body_id == 0 || r.body_id != op->body_id)
            return 0;
        bool bad = false;
        for (uint32_t i = 0; i < r.nchunks && !bad; i++) {
            uint8_t kb[BODY_KEY_LEN];
            body_key(r.body_id, i, kb);
            MDB_val bk = {BODY_KEY_LEN, kb}, bv;
            uint64_t want =
                i + 1 < r.nchunks ? r.chunk_size : r.m.body_size - (uint64_t)i * r.chunk_size;
            rc = mdb_get(t, s->body, &bk, &bv);
            if (rc != 0 && rc != MDB_NOTFOUND)
                return rc;
            bad = rc == MDB_NOTFOUND || bv.mv_size != want;
        }
        if (!bad)
            return 0;
        s->pend.corrupt_deleted++;
    }
    rc = del_record(s, t, op->mkey, &r);
    op->result = rc == 0 ? 1 : 0;
    return rc;
}

static int
apply(struct cdn_store *s, MDB_txn *t, struct op *op)
{
    switch (op->kind) {
    case OP_CHUNK:
        return apply_chunk(s, t, op);
    case OP_COMMIT:
        return apply_commit(s, t, op);
    case OP_ABORT:
        op->result = 0;
        return del_body(s, t, op->put->body_id);
    case OP_UPDATE:
        return apply_update(s, t, op);
    case OP_DELETE:
        return apply_delete(s, t, op);
    case OP_PURGE:
        return apply_purge(s, t, op);
    case OP_DROP:
        return apply_drop(s, t, op);
    case OP_BARRIER:
        return 0; /* result preset: 0, or an error found at submission */
    }
    return 0;
}

/*
 * Pages faulted in ahead of the store's growth (cache_writemap).
 *
 * With the writable map a commit writes straight into the file's pages, so the first write to
 * each page the store grows into is a page fault, taken by the writer mid-commit. Where page
 * tables are shadowed by a hypervisor, a fault is expensive: 11-15 us a page on the VM this was
 * measured on, and a store filling with 1 KiB objects grows by a page every second miss (the
 * writer's minor faults per miss: 0.51). madvise(MADV_POPULATE_WRITE) maps a run of pages in one
 * call, for 0.4-0.8 us a page once the host backs the memory, so after each commit the writer keeps
 * PREFAULT_LEAD bytes mapped past the last page LMDB has used, a step at a time. Measured the same
 * way: 0.025 faults per miss, and 2-3 us less of the writer's CPU time per miss. Only page tables
 * change, never a page's content, and the pages are the file's own, already reserved by
 * reserve_map(). Anything unexpected (no /proc, a kernel before 5.14) leaves the pages to fault in
 * as before.
 */

/*
 * Where LMDB mapped the data file: the mapping of fd's inode that is len bytes long. Some file
 * systems (btrfs subvolumes) give stat() another device number than the one the mapping shows;
 * then a single mapping of that inode and length is taken.
 */
static uint8_t *
find_map(int fd, size_t len)
{
    struct stat st;
    FILE *f;
    if (fstat(fd, &st) != 0 || (f = fopen("/proc/self/maps", "r")) == NULL)
        return NULL;
    uint8_t *exact = NULL, *other = NULL;
    unsigned others = 0;
    char line[512];
    bool continued = false; /* the rest of a line longer than the buffer (a long path) */
    while (exact == NULL && fgets(line, sizeof(line), f) != NULL) {
        bool partial = strchr(line, '\n') == NULL;
        bool skip = continued;
        continued = partial;
        unsigned long lo, hi, off, ino;
        unsigned maj, mnr;
        if (skip ||
            sscanf(line, "%lx-%lx %*s %lx %x:%x %lu", &lo, &hi, &off, &maj, &mnr, &ino) != 6 ||
            off != 0 || hi - lo != len || ino != (unsigned long)st.st_ino)
            continue;
        if (maj == major(st.st_dev) && mnr == minor(st.st_dev)) {
            exact = (uint8_t *)(uintptr_t)lo;
        } else {
            other = (uint8_t *)(uintptr_t)lo;
            others++;
        }
    }
    fclose(f);
    return exact ? exact : others == 1 ? other : NULL;
}

static void
prefault_start(struct cdn_store *s)
{
#ifdef MADV_POPULATE_WRITE
    int fd = -1;
    MDB_envinfo info;
    MDB_stat st;
    if (mdb_env_get_fd(s->env, &fd) != 0 || mdb_env_info(s->env, &info) != 0 ||
        mdb_env_stat(s->env, &st) != 0)
        return;
    s->map_base = find_map(fd, info.me_mapsize);
    s->page_bytes = st.ms_psize;
    if (s->map_base == NULL)
        cdn_info("store: %s: pages are not mapped ahead (the map was not found in "
                 "/proc/self/maps)",
                 s->dir);
#else
    (void)s;
#endif
}

/* After a commit: keeps PREFAULT_LEAD bytes past the last used page mapped. */
static void
prefault_ahead(struct cdn_store *s)
{
#ifdef MADV_POPULATE_WRITE
    MDB_envinfo info;
    if (s->map_base == NULL || mdb_env_info(s->env, &info) != 0)
        return;
    size_t end = ((size_t)info.me_last_pgno + 1) * s->page_bytes;
    if (s->prefaulted < end)
        s->prefaulted = end; /* LMDB's own writes mapped those */
    while (s->prefaulted < info.me_mapsize && s->prefaulted < end + PREFAULT_LEAD) {
        size_t len = info.me_mapsize - s->prefaulted;
        if (len > PREFAULT_STEP)
            len = PREFAULT_STEP;
        if (madvise(s->map_base + s->prefaulted, len, MADV_POPULATE_WRITE) != 0) {
            if (errno == EINTR)
                continue;
            cdn_info("store: %s: pages are no longer mapped ahead (madvise: %s)", s->dir,
                     strerror(errno));
            s->map_base = NULL;
            return;
        }
        s->prefaulted += len;
    }
#else
    (void)s;
#endif
}

/* Commits a write transaction and publishes what it changed (page count, counters). */
static int
commit_txn(struct cdn_store *s, MDB_txn *t)
{
    uint64_t used = used_pages(s, t);
    int rc = mdb_txn_commit(t);
    if (rc != 0)
        return rc;
    atomic_fetch_add(&s->c_wtxns, 1);
    atomic_store(&s->used_pages, used);
    apply_effects(s);
    prefault_ahead(s);
    return 0;
}

/* Applies ops [first, stop) in one write transaction; returns 0 or the LMDB error. */
static int
run_txn(struct cdn_store *s, struct op *first, struct op *stop)
{
    MDB_txn *t;
    s->neff = 0;
    memset(&s->pend, 0, sizeof(s->pend));
    int rc = mdb_txn_begin(s->env, NULL, 0, &t);
    if (rc != 0)
        return rc;
    for (struct op *op = first; op != stop; op = op->next) {
        rc = apply(s, t, op);
        if (rc != 0) {
            mdb_txn_abort(t);
            return rc;
        }
    }
    return commit_txn(s, t);
}

/* Deletes victims[0..n) in one transaction; returns 0 or the LMDB error. */
static int
evict_txn(struct cdn_store *s, const uint8_t *victims, size_t n)
{
    MDB_txn *t;
    s->neff = 0;
    memset(&s->pend, 0, sizeof(s->pend));
    int rc = mdb_txn_begin(s->env, NULL, 0, &t);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        struct rec r;
        rc = del_record(s, t, victims + i * KEY_LEN, &r);
        if (rc == MDB_NOTFOUND) {
            /* Gone already: the index was behind; make it agree. */
            add_effect(s, EFF_REMOVE, victims + i * KEY_LEN, NULL, 0);
            rc = 0;
        } else if (rc == 0) {
            s->pend.evictions++;
        } else {
            mdb_txn_abort(t);
            return rc;
        }
    }
    return commit_txn(s, t);
}

/*
 * Brings used pages down to the low watermark once they passed the high one. forced (the map
 * was full): evicts at least one batch even below the watermarks, since MDB_MAP_FULL also comes
 * from fragmentation and pages pinned by readers.
 */
static void
evict(struct cdn_store *s, bool forced)
{
    uint64_t used = atomic_load(&s->used_pages);
    if (!forced && used <= s->high_pages)
        return;
    bool did_batch = false;
    while (!did_batch || used > s->low_pages) {
        uint64_t objects = cdn_recency_count(s->rec);
        if (objects == 0)
            return;
        /* Enough victims for this round, judged by the average object size in pages. */
        uint64_t want = s->evict_batch;
        if (used > s->low_pages)
            want += (used - s->low_pages) / (used / objects + 1);
        if (want > objects)
            want = objects;
        uint8_t *victims = cdn_malloc(want * KEY_LEN);
        size_t n = cdn_recency_victims(s->rec, cdn_wall_s(), victims, want);
        for (size_t off = 0; off < n && (!did_batch || used > s->low_pages);) {
            size_t batch = n - off < s->evict_batch ? n - off : s->evict_batch;
            int rc = evict_txn(s, victims + off * KEY_LEN, batch);
            /* Deleting needs pages too: when even that does not fit, go one at a time. */
            for (size_t i = 0; rc == MDB_MAP_FULL && i < batch; i++)
                rc = evict_txn(s, victims + (off + i) * KEY_LEN, 1);
            if (rc != 0) {
                cdn_error("store: eviction failed: %s", mdb_strerror(rc));
                free(victims);
                return;
            }
            off += batch;
            did_batch = true;
            used = atomic_load(&s->used_pages);
        }
        free(victims);
        if (n == 0)
            return;
    }
}

/*
 * LMDB hands out pages freed by transaction N only from transaction N+2 on (N must be older than
 * the snapshot before the current one). A small commit after a forced eviction lets the retry
 * that follows reuse what the eviction freed.
 */
static void
tick(struct cdn_store *s)
{
    MDB_txn *t;
    uint8_t v[8];
    le64_put(v, ++s->ticks);
    MDB_val k = {4, "tick"}, val = {sizeof(v), v};
    int rc = mdb_txn_begin(s->env, NULL, 0, &t);
    if (rc == 0) {
        rc = mdb_put(t, s->state, &k, &val, 0);
        if (rc == 0)
            rc = mdb_txn_commit(t);
        else
            mdb_txn_abort(t);
    }
    if (rc == 0)
        atomic_fetch_add(&s->c_wtxns, 1);
}

/* An op that failed even alone after making room: drop it. */
static void
fail_op(struct cdn_store *s, struct op *op, int rc)
{
    op->result = rc == MDB_MAP_FULL ? CDN_EFULL : CDN_EIO;
    if (op->kind == OP_CHUNK) {
        int none = 0;
        atomic_compare_exchange_strong(&op->put->err, &none, op->result);
    } else if (op->kind == OP_COMMIT || op->kind == OP_UPDATE) {
        atomic_fetch_add(&s->c_drops, 1);
    }
    if (op->kind == OP_COMMIT || op->kind == OP_ABORT) {
        /* Its chunks may be in the map already: a deletion-only op cleans them up. */
        struct op cleanup = {.magic = OP_MAGIC, .kind = OP_ABORT, .put = op->put};
        int crc = run_txn(s, &cleanup, NULL);
        if (crc != 0)
            cdn_error("store: cannot delete chunks of a dropped object: %s", mdb_strerror(crc));
    }
    cdn_warn("store: write dropped: %s", mdb_strerror(rc));
}

static void
run_group(struct cdn_store *s, struct op *list)
{
    int rc = run_txn(s, list, NULL);
    if (rc != 0) {
        cdn_warn("store: group commit failed (%s), retrying each op", mdb_strerror(rc));
        if (rc == MDB_MAP_FULL) {
            evict(s, true);
            tick(s);
        }
        for (struct op *op = list; op != NULL; op = op->next) {
            rc = run_txn(s, op, op->next);
            if (rc != 0)
                fail_op(s, op, rc);
        }
    }
    evict(s, false);
    bool durable = false;
    for (struct op *op = list; op != NULL; op = op->next)
        durable |= op->durable;
    if (durable && !s->sync) {
        rc = mdb_env_sync(s->env, 1);
        if (rc != 0)
            cdn_error("store: sync: %s", mdb_strerror(rc));
    }
    /* Purges that stopped at their per-transaction bound go back to the head of the queue, and
     * so do the barriers behind them: a flush waits for the whole purge. */
    struct op *again = NULL, *again_last = NULL;
    while (list != NULL) {
        struct op *next = list->next;
        bool requeue = list->kind == OP_BARRIER && again != NULL;
        if (list->kind == OP_PURGE && list->result >= 0) {
            list->total += list->result;
            requeue = list->more;
            if (list->more) {
                memcpy(list->resume, list->next_resume, KEY_LEN);
                list->resumed = true;
            } else {
                list->result = (int)(list->total > INT32_MAX ? INT32_MAX : list->total);
            }
        }
        if (requeue) {
            list->next = NULL;
            if (again_last != NULL)
                again_last->next = list;
            else
                again = list;
            again_last = list;
        } else {
            op_finish(list);
        }
        list = next;
    }
    if (again != NULL) {
        pthread_mutex_lock(&s->q_mu);
        again_last->next = s->q_head;
        if (s->q_head == NULL)
            s->q_tail = again_last;
        s->q_head = again;
        pthread_mutex_unlock(&s->q_mu);
    }
}

static void *
writer_main(void *arg)
{
    struct cdn_store *s = arg;
    pthread_setname_np(pthread_self(), "cdn-store"); /* visible in top -H and perf */
    for (;;) {
        pthread_mutex_lock(&s->q_mu);
        bool slept = false;
        while (s->q_head == NULL && !s->stopping) {
            pthread_cond_wait(&s->q_cond, &s->q_mu);
            slept = true;
        }
        if (s->q_head == NULL) {
            pthread_mutex_unlock(&s->q_mu);
            return NULL;
        }
        if (slept) {
            /* Woken by the first op of a burst: let the threads that are ready to queue more
             * run first (a no-op when nobody else is runnable), so one commit takes them all.
             * Measured with 64 clients revalidating: 2.9 -> 30 updates per transaction, +20%
             * requests per second and a lower p99. */
            pthread_mutex_unlock(&s->q_mu);
            sched_yield();
            pthread_mutex_lock(&s->q_mu);
        }
        /* Take a group: everything queued, up to the per-transaction bounds. */
        struct op *list = s->q_head, *last = list;
        size_t nops = 1, bytes = list->kind == OP_CHUNK ? list->len : 0;
        while (last->next != NULL && nops < GROUP_MAX_OPS && bytes < GROUP_MAX_BYTES) {
            last = last->next;
            nops++;
            if (last->kind == OP_CHUNK)
                bytes += last->len;
        }
        s->q_head = last->next;
        if (s->q_head == NULL)
            s->q_tail = NULL;
        last->next = NULL;
        pthread_mutex_unlock(&s->q_mu);
        run_group(s, list);
    }
}

/* ---- open / close ---- */

static int
mkdir_p(const char *dir)
{
    char *path = cdn_strdup(dir);
    int rc = 0;
    for (char *p = path + 1; rc == 0; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0700) != 0 && errno != EEXIST)
            rc = -1;
        *p = c;
        if (c == '\0')
            break;
    }
    free(path);
    return rc;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * At open, in the first write transaction: deletes invalid records and chunks no record names,
 * fills the recency index, and restores the body id counter.
 */
static int
scan_at_open(struct cdn_store *s, MDB_txn *t)
{
    uint64_t *ids = NULL, max_id = 0;
    size_t nids = 0, cap = 0;
    uint8_t *bad = NULL; /* keys to delete, each up to 511 bytes, stored as len + bytes */
    size_t nbad = 0, bad_cap = 0;
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(t, s->meta, &c);
    if (rc != 0)
        return rc;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        struct rec r;
        if (k.mv_size == KEY_LEN && rec_parse(v.mv_data, v.mv_size, &r) == 0) {
            cdn_recency_put(s->rec, k.mv_data, v.mv_size + r.m.body_size, r.m.expires_at,
                            r.m.response_time, (r.m.flags & CDN_STORE_STALE) != 0, true);
            if (nids == cap) {
                cap = cap ? cap * 2 : 256;
                ids = cdn_realloc(ids, cap * sizeof(*ids));
            }
            ids[nids++] = r.body_id;
            if (r.body_id > max_id)
                max_id = r.body_id;
            continue;
        }
        if (nbad + 1 + k.mv_size > bad_cap) {
            bad_cap = (bad_cap + 1 + k.mv_size) * 2;
            bad = cdn_realloc(bad, bad_cap);
        }
        bad[nbad] = (uint8_t)(k.mv_size > 255 ? 255 : k.mv_size);
        memcpy(bad + nbad + 1, k.mv_data, bad[nbad]);
        nbad += 1 + bad[nbad];
    }
    mdb_cursor_close(c);
    rc = rc == MDB_NOTFOUND ? 0 : rc;
    for (size_t off = 0; rc == 0 && off < nbad; off += 1 + bad[off]) {
        MDB_val bk = {bad[off], bad + off + 1};
        rc = mdb_del(t, s->meta, &bk, NULL);
        if (rc == 0) {
            atomic_fetch_add(&s->c_corrupt, 1);
            if (bk.mv_size == KEY_LEN)
                cdn_recency_remove(s->rec, bk.mv_data);
        }
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    free(bad);
    if (rc == 0 && nbad > 0)
        cdn_warn("store: deleted invalid metadata records at open");
    if (nids > 1)
        qsort(ids, nids, sizeof(*ids), cmp_u64);
    if (rc == 0)
        rc = mdb_cursor_open(t, s->body, &c);
    if (rc == 0) {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
        while (rc == 0) {
            uint64_t id = k.mv_size == BODY_KEY_LEN ? body_key_id(k.mv_data) : 0;
            if (id > max_id)
                max_id = id;
            if (id == 0 || nids == 0 || !bsearch(&id, ids, nids, sizeof(*ids), cmp_u64)) {
                rc = mdb_cursor_del(c, 0);
                if (rc != 0)
                    break;
                atomic_fetch_add(&s->c_orphans, 1);
                rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
                if (rc == EINVAL) /* deleted the last item */
                    rc = MDB_NOTFOUND;
                continue;
            }
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
        mdb_cursor_close(c);
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    free(ids);
    atomic_store(&s->next_body_id, max_id + 1);
    return rc;
}

/*
 * The writable map (opts.writemap). Commits then write pages in place instead of copying them
 * out with pwrite, but the store's pages are writable memory of this process: a stray write, or
 * a crash of the host with pages flushed out of order, could damage committed objects. So a node
 * using it holds the marker WRITEMAP_MARK in the directory, created before the environment opens
 * and locked (flock) for as long as it stays open, and removes it once the store is closed and
 * synced. An open that finds the marker unlocked (left by a node that crashed or was killed while
 * using the map) wipes the store instead of trusting it; one that finds it locked refuses, since
 * another process is using that store right now. A store closed cleanly opens in either mode.
 *
 * The data file is reserved at its full size (fallocate): a write into a hole the filesystem
 * cannot fill would be a SIGBUS in the map rather than a failed commit.
 */
#define WRITEMAP_MARK "writemap-open"

/* dir/name into buf; false if it does not fit. */
static bool
dir_path(char *buf, size_t n, const char *dir, const char *name)
{
    int w = snprintf(buf, n, "%s/%s", dir, name);
    return w > 0 && (size_t)w < n;
}

static void
sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* The marker, open and locked by us; -1 with errno (EWOULDBLOCK: another process holds it). */
static int
lock_mark(const char *path, bool create)
{
    int fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
    if (fd < 0)
        return -1;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/*
 * Before the environment opens, in either mode: wipes a store a dead node left marked, refuses
 * one a live node holds, and with writemap marks the directory (*mark_fd keeps the lock).
 */
static int
writemap_guard(const char *dir, bool writemap, int *mark_fd)
{
    *mark_fd = -1;
    char mark[4096], data[4096], lock[4096];
    if (!dir_path(mark, sizeof(mark), dir, WRITEMAP_MARK) ||
        !dir_path(data, sizeof(data), dir, "data.mdb") ||
        !dir_path(lock, sizeof(lock), dir, "lock.mdb"))
        return CDN_EINVAL;
    int fd = lock_mark(mark, false);
    bool left = fd >= 0;
    if (!left && errno != ENOENT) {
        if (errno == EWOULDBLOCK)
            cdn_error("store: %s is already open with its map writable, by another node "
                      "(cache_writemap)",
                      dir);
        else
            cdn_error("store: cannot open %s: %s", mark, strerror(errno));
        return CDN_EIO;
    }
    if (left) {
        cdn_warn("store: %s was not closed cleanly while its map was writable "
                 "(cache_writemap); starting empty",
                 dir);
        if ((unlink(data) != 0 && errno != ENOENT) || (unlink(lock) != 0 && errno != ENOENT)) {
            cdn_error("store: cannot wipe %s: %s", dir, strerror(errno));
            close(fd);
            return CDN_EIO;
        }
    }
    if (!writemap) {
        if (left) {
            unlink(mark);
            close(fd);
            sync_dir(dir);
        }
        return 0;
    }
    if (!left && (fd = lock_mark(mark, true)) < 0) {
        cdn_error("store: cannot create %s: %s", mark,
                  errno == EWOULDBLOCK ? "another process holds it" : strerror(errno));
        return CDN_EIO;
    }
    if (fsync(fd) != 0) {
        cdn_error("store: cannot sync %s: %s", mark, strerror(errno));
        unlink(mark);
        close(fd);
        return CDN_EIO;
    }
    sync_dir(dir);
    *mark_fd = fd;
    return 0;
}

/* After a clean close (or a failed open): the marker goes, then its lock. */
static void
unmark_writemap(const char *dir, int mark_fd)
{
    char mark[4096];
    if (dir_path(mark, sizeof(mark), dir, WRITEMAP_MARK) && unlink(mark) == 0)
        sync_dir(dir);
    close(mark_fd);
}

/* Every block of the data file allocated now, so no write into the map can fail later. */
static int
reserve_map(MDB_env *env)
{
    int fd = -1;
    MDB_envinfo info;
    if (mdb_env_get_fd(env, &fd) != 0 || mdb_env_info(env, &info) != 0)
        return EBADF;
    int rc;
    while ((rc = posix_fallocate(fd, 0, (off_t)info.me_mapsize)) == EINTR)
        ;
    return rc;
}

int
cdn_store_open(const struct cdn_store_opts *o, struct cdn_store **out)
{
    if (o == NULL || o->dir == NULL || o->dir[0] == '\0' || o->map_size < (1u << 20))
        return CDN_EINVAL;
    struct cdn_store *s = cdn_calloc(1, sizeof(*s));
    s->magic = STORE_MAGIC;
    s->gen = atomic_fetch_add(&store_generation, 1) + 1;
    s->sync = o->sync;
    s->chunk_size = o->chunk_size ? o->chunk_size : 256 * 1024;
    s->max_object = o->max_object_size ? o->max_object_size : o->map_size / 8;
    s->max_variants = o->max_variants ? o->max_variants : 8;
    s->max_leases = o->max_leases ? o->max_leases : 64;
    s->evict_batch = o->evict_batch ? o->evict_batch : 100;
    unsigned high = o->high_pct ? o->high_pct : 80, low = o->low_pct ? o->low_pct : 70;
    unsigned readers = o->max_readers ? o->max_readers : 126;
    if (high > 100 || low >= high || readers < 2) {
        free(s);
        return CDN_EINVAL;
    }
    if (mkdir_p(o->dir) != 0) {
        cdn_error("store: cannot create %s: %s", o->dir, strerror(errno));
        free(s);
        return CDN_EIO;
    }
    int wrc = writemap_guard(o->dir, o->writemap, &s->mark_fd);
    if (wrc != 0) {
        free(s);
        return wrc;
    }
    s->writemap = o->writemap;
    s->dir = cdn_strdup(o->dir);
    s->rec = cdn_recency_new();
    pthread_mutex_init(&s->pool_mu, NULL);
    pthread_mutex_init(&s->q_mu, NULL);
    pthread_cond_init(&s->q_cond, NULL);

    const char *what = "mdb_env_create";
    MDB_txn *t = NULL;
    int rc = mdb_env_create(&s->env);
    if (rc == 0 && (what = "mdb_env_set_mapsize", 1))
        rc = mdb_env_set_mapsize(s->env, o->map_size);
    if (rc == 0 && (what = "mdb_env_set_maxreaders", 1))
        rc = mdb_env_set_maxreaders(s->env, readers);
    if (rc == 0 && (what = "mdb_env_set_maxdbs", 1))
        rc = mdb_env_set_maxdbs(s->env, 3);
    if (rc == 0 && (what = "mdb_env_open", 1))
        rc = mdb_env_open(s->env, o->dir,
                          MDB_NOTLS | (o->sync ? 0 : MDB_NOSYNC) | (o->writemap ? MDB_WRITEMAP : 0),
                          0600);
    if (rc == 0 && o->writemap && (what = "reserving the map's full size (cache_writemap)", 1))
        rc = reserve_map(s->env);
    if (rc == 0) {
        /* Reader slots left behind by a killed process would pin pages forever. */
        int dead = 0;
        mdb_reader_check(s->env, &dead);
        what = "open sub-databases";
        rc = mdb_txn_begin(s->env, NULL, 0, &t);
    }
    if (rc == 0)
        rc = mdb_dbi_open(t, "meta", MDB_CREATE, &s->meta);
    if (rc == 0)
        rc = mdb_dbi_open(t, "body", MDB_CREATE, &s->body);
    if (rc == 0)
        rc = mdb_dbi_open(t, "state", MDB_CREATE, &s->state);
    if (rc == 0 && (what = "scan", 1))
        rc = scan_at_open(s, t);
    if (rc == 0) {
        MDB_envinfo info;
        MDB_stat st;
        mdb_env_info(s->env, &info);
        mdb_env_stat(s->env, &st);
        s->map_pages = info.me_mapsize / st.ms_psize;
        s->high_pages = s->map_pages * high / 100;
        s->low_pages = s->map_pages * low / 100;
        atomic_store(&s->used_pages, used_pages(s, t));
        what = "commit";
        rc = mdb_txn_commit(t);
        t = NULL;
    }
    if (rc != 0) {
        cdn_error("store: %s in %s: %s", what, o->dir, mdb_strerror(rc));
        if (t != NULL)
            mdb_txn_abort(t);
        mdb_env_close(s->env);
        if (s->writemap)
            unmark_writemap(o->dir, s->mark_fd);
        cdn_recency_free(s->rec);
        free(s->dir);
        free(s);
        return CDN_EIO;
    }
    if (s->writemap && !o->no_prefault) {
        prefault_start(s);
        prefault_ahead(s);
    }
    rc = pthread_create(&s->writer, NULL, writer_main, s);
    CDN_ASSERT(rc == 0);
    cdn_info("store: %s: %llu objects, %llu of %llu pages used", o->dir,
             (unsigned long long)cdn_recency_count(s->rec),
             (unsigned long long)atomic_load(&s->used_pages), (unsigned long long)s->map_pages);
    *out = s;
    return 0;
}

void
cdn_store_close(struct cdn_store *s)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    pthread_mutex_lock(&s->q_mu);
    s->stopping = true;
    pthread_cond_signal(&s->q_cond);
    pthread_mutex_unlock(&s->q_mu);
    pthread_join(s->writer, NULL);
    CDN_ASSERT(atomic_load(&s->leases_open) == 0);
    /* Every handle, pooled or parked in some thread's slot (no lease is open, so none is in
     * use); the slots still naming this generation are never read again. */
    if (tls_rtxn.gen == s->gen)
        tls_rtxn.rt = NULL;
    while (s->all != NULL) {
        struct rtxn *rt = s->all;
        s->all = rt->all_next;
        rtxn_close(rt);
        free(rt);
    }
    s->pool = NULL;
    int synced = s->sync ? 0 : mdb_env_sync(s->env, 1);
    mdb_env_close(s->env);
    /* Only once every page is on disk may the next open trust them. */
    if (s->writemap && synced == 0)
        unmark_writemap(s->dir, s->mark_fd);
    else if (s->writemap)
        close(s->mark_fd); /* left for the next open to wipe */
    free(s->dir);
    cdn_recency_free(s->rec);
    free(s->eff);
    pthread_mutex_destroy(&s->pool_mu);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cond);
    s->magic = 0;
    free(s);
}

/* ---- reads ---- */

static void
lease_destroy(void *p)
{
    struct cdn_store_lease *l = p;
    free(l->v);
    free(l->iov);
    free(l);
}

/* Ends a lease's life: its arrays are kept for this thread's next lookup (tcache.h). */
static void
lease_free(struct cdn_store_lease *l)
{
    l->magic = 0;
    free(l->copy);
    l->copy = NULL;
    free(l->body_copy);
    l->body_copy = NULL;
    cdn_tcache_put(CDN_TC_LEASE, l, lease_destroy);
}

/* A lease for store s: a recycled one when this thread has one big enough. */
static struct cdn_store_lease *
lease_new(struct cdn_store *s)
{
    struct cdn_store_lease *l = cdn_tcache_get(CDN_TC_LEASE);
    if (l != NULL && l->v_cap < s->max_variants) {
        lease_destroy(l);
        l = NULL;
    }
    if (l == NULL) {
        l = cdn_calloc(1, sizeof(*l));
        l->v_cap = s->max_variants;
        l->v = cdn_calloc(l->v_cap, sizeof(*l->v));
    }
    l->magic = LEASE_MAGIC;
    l->s = s;
    l->rt = NULL;
    l->n = 0;
    return l;
}

/* Moves every variant's strings out of the map into one buffer the lease owns. */
static void
lease_copy_out(struct cdn_store_lease *l)
{
    size_t total = 0;
    for (unsigned i = 0; i < l->n; i++) {
        const struct cdn_store_meta *m = &l->v[i].m;
        total += m->key_len + m->vary_len + m->headers_len + m->tags_len;
    }
    uint8_t *p = l->copy = cdn_malloc(total);
    for (unsigned i = 0; i < l->n; i++) {
        struct cdn_store_meta *m = &l->v[i].m;
        memcpy(p, m->key, m->key_len);
        m->key = (const char *)p;
        p += m->key_len;
        memcpy(p, m->vary, m->vary_len);
        m->vary = p;
        p += m->vary_len;
        memcpy(p, m->headers, m->headers_len);
        m->headers = p;
        p += m->headers_len;
        memcpy(p, m->tags, m->tags_len);
        m->tags = p;
        p += m->tags_len;
    }
}

int
cdn_store_lookup(struct cdn_store *s, const char *key, size_t key_len, struct cdn_store_lease **out)
{
    return cdn_store_lookup_hashed(s, key, key_len, NULL, out);
}

int
cdn_store_lookup_hashed(struct cdn_store *s, const char *key, size_t key_len,
                        const uint8_t *key_hash, struct cdn_store_lease **out)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    if (key == NULL || key_len == 0)
        return CDN_EINVAL;
    atomic_fetch_add_explicit(&s->c_lookups, 1, memory_order_relaxed);
    bool copy = atomic_fetch_add(&s->leases_open, 1) >= s->max_leases;
    if (copy)
        atomic_fetch_sub(&s->leases_open, 1);
    struct rtxn *rt;
    int rc = rtxn_get(s, &rt);
    if (rc != 0) {
        if (!copy)
            atomic_fetch_sub(&s->leases_open, 1);
        return rc;
    }
    struct cdn_store_lease *l = lease_new(s);
    uint8_t start[KEY_LEN] = {0};
    meta_key(key, key_len, key_hash, NULL, 0, start); /* at or before every variant of key */
    /* A read-only transaction's cursor outlives a reset: renewing it allocates nothing. */
    MDB_cursor *c = rt->meta_cur;
    rc = c != NULL ? mdb_cursor_renew(rt->txn, c) : mdb_cursor_open(rt->txn, s->meta, &c);
    if (rc == 0) {
        rt->meta_cur = c;
        MDB_val k = {KEY_LEN, start}, v;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        while (rc == 0 && l->n < s->max_variants && k.mv_size >= HASH_LEN &&
               memcmp(k.mv_data, start, HASH_LEN) == 0) {
            struct rec r;
            if (k.mv_size != KEY_LEN) {
                /* not ours: the open-time scan removes it */
            } else if (rec_parse(v.mv_data, v.mv_size, &r) != 0) {
                queue_drop(s, k.mv_data, 0);
            } else if (same_bytes(r.m.key, r.m.key_len, key, key_len)) {
                struct variant *var = &l->v[l->n++];
                var->m = r.m;
                memcpy(var->mkey, k.mv_data, KEY_LEN);
                var->body_id = r.body_id;
                var->chunk_size = r.chunk_size;
                var->nchunks = r.nchunks;
            }
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        }
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
        cdn_error("store: lookup: %s", mdb_strerror(rc));
        l->n = 0;
    }
    if (l->n == 0) {
        rtxn_put(s, rt);
        if (!copy)
            atomic_fetch_sub(&s->leases_open, 1);
        lease_free(l);
        return rc != 0 && rc != MDB_NOTFOUND ? CDN_EIO : CDN_ENOTFOUND;
    }
    if (copy) {
        lease_copy_out(l);
        rtxn_put(s, rt);
        atomic_fetch_add(&s->c_copies, 1);
    } else {
        l->rt = rt;
    }
    *out = l;
    return 0;
}

unsigned
cdn_store_lease_count(const struct cdn_store_lease *l)
{
    CDN_CHECK_MAGIC(l, LEASE_MAGIC);
    return l->n;
}

const struct cdn_store_meta *
cdn_store_lease_meta(const struct cdn_store_lease *l, unsigned i)
{
    CDN_CHECK_MAGIC(l, LEASE_MAGIC);
    CDN_ASSERT(i < l->n);
    return &l->v[i].m;
}

bool
cdn_store_lease_copied(const struct cdn_store_lease *l)
{
    CDN_CHECK_MAGIC(l, LEASE_MAGIC);
    return l->rt == NULL;
}

int
cdn_store_lease_body(struct cdn_store_lease *l, unsigned i, const struct iovec **iov,
                     unsigned *niov)
{
    CDN_CHECK_MAGIC(l, LEASE_MAGIC);
    if (i >= l->n)
        return CDN_EINVAL;
    struct cdn_store *s = l->s;
    const struct variant *var = &l->v[i];
    free(l->body_copy);
    l->body_copy = NULL;
    if (var->m.body_size > s->max_object) {
        /* No put writes a body this large: a damaged or foreign record (its size would
         * otherwise size the allocations below). */
        queue_drop(s, var->mkey, var->body_id);
        return l->rt == NULL ? CDN_ENOTFOUND : CDN_ECORRUPT;
    }
    if (l->iov_cap < var->nchunks || l->iov == NULL) {
        l->iov_cap = var->nchunks > 0 ? var->nchunks : 1;
        free(l->iov);
        l->iov = cdn_calloc(l->iov_cap, sizeof(*l->iov));
    }
    struct rtxn *rt = l->rt;
    if (rt == NULL && var->nchunks > 0) {
        int rc = rtxn_get(s, &rt);
        if (rc != 0)
            return rc;
    }
    int rc = 0;
    for (uint32_t c = 0; c < var->nchunks; c++) {
        uint8_t kb[BODY_KEY_LEN];
        body_key(var->body_id, c, kb);
        MDB_val k = {BODY_KEY_LEN, kb}, v;
        uint64_t want = c + 1 < var->nchunks ? var->chunk_size
                                             : var->m.body_size - (uint64_t)c * var->chunk_size;
        rc = mdb_get(rt->txn, s->body, &k, &v);
        if (rc != 0 || v.mv_size != want) {
            if (rc != 0 && rc != MDB_NOTFOUND)
                cdn_error("store: body read: %s", mdb_strerror(rc));
            rc = rc == 0 || rc == MDB_NOTFOUND ? CDN_ECORRUPT : CDN_EIO;
            break;
        }
        l->iov[c].iov_base = v.mv_data;
        l->iov[c].iov_len = v.mv_size;
    }
    unsigned n = var->nchunks;
    if (rc == 0 && l->rt == NULL && n > 0) {
        uint8_t *p = l->body_copy = cdn_malloc(var->m.body_size);
        for (unsigned c = 0; c < n; c++) {
            memcpy(p, l->iov[c].iov_base, l->iov[c].iov_len);
            p += l->iov[c].iov_len;
        }
        l->iov[0].iov_base = l->body_copy;
        l->iov[0].iov_len = var->m.body_size;
        n = 1;
    }
    if (rt != l->rt)
        rtxn_put(s, rt);
    if (rc == CDN_ECORRUPT) {
        /* In a copy-out lease the object may simply have been replaced since the lookup; the
         * writer re-checks before deleting anything. */
        queue_drop(s, var->mkey, var->body_id);
        return l->rt == NULL ? CDN_ENOTFOUND : CDN_ECORRUPT;
    }
    if (rc != 0)
        return rc;
    cdn_recency_touch(s->rec, var->mkey);
    *iov = l->iov;
    *niov = n;
    return 0;
}

void
cdn_store_lease_release(struct cdn_store_lease *l)
{
    CDN_CHECK_MAGIC(l, LEASE_MAGIC);
    struct cdn_store *s = l->s;
    if (l->rt != NULL) {
        rtxn_put(s, l->rt);
        atomic_fetch_sub(&s->leases_open, 1);
    }
    lease_free(l);
}

/* ---- writes ---- */

struct cdn_store_put *
cdn_store_put_begin(struct cdn_store *s)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    struct cdn_store_put *p = cdn_calloc(1, sizeof(*p));
    p->magic = PUT_MAGIC;
    p->s = s;
    p->body_id = atomic_fetch_add(&s->next_body_id, 1);
    return p;
}

static void
put_send_chunk(struct cdn_store_put *p)
{
    struct op *op = op_new(OP_CHUNK, NULL, NULL);
    op->put = p;
    op->idx = p->nchunks++;
    op->data = p->buf;
    op->len = p->fill;
    p->buf = NULL;
    p->fill = 0;
    p->cap = 0;
    atomic_fetch_add(&p->s->backlog, op->len);
    submit(p->s, op);
}

int
cdn_store_put_write(struct cdn_store_put *p, const void *data, size_t n)
{
    CDN_CHECK_MAGIC(p, PUT_MAGIC);
    struct cdn_store *s = p->s;
    int err = atomic_load(&p->err);
    if (err != 0)
        return err;
    if (n > s->max_object || p->size + n > s->max_object) {
        atomic_store(&p->err, CDN_ETOOBIG);
        return CDN_ETOOBIG;
    }
    const uint8_t *src = data;
    while (n > 0) {
        if (p->fill == p->cap) {
            /* A chunk buffer no larger than the body needs: what is announced and not yet
             * written, else 16 KiB growing fourfold, up to a whole chunk. */
            size_t want = p->cap * 4;
            if (p->cap == 0)
                want = p->expect > p->size && p->expect - p->size >= n ? p->expect - p->size
                                                                        : 16 * 1024;
            if (want > s->chunk_size)
                want = s->chunk_size;
            p->buf = cdn_realloc(p->buf, want);
            p->cap = want;
        }
        size_t take = p->cap - p->fill < n ? p->cap - p->fill : n;
        memcpy(p->buf + p->fill, src, take);
        p->fill += take;
        p->size += take;
        src += take;
        n -= take;
        if (p->fill == s->chunk_size)
            put_send_chunk(p);
    }
    return 0;
}

void
cdn_store_put_expect(struct cdn_store_put *p, uint64_t size)
{
    CDN_CHECK_MAGIC(p, PUT_MAGIC);
    p->expect = size;
}

void
cdn_store_put_commit(struct cdn_store_put *p, const struct cdn_store_meta *m,
                     cdn_store_done_fn done, void *arg)
{
    CDN_CHECK_MAGIC(p, PUT_MAGIC);
    struct cdn_store *s = p->s;
    if (p->fill > 0 && atomic_load(&p->err) == 0)
        put_send_chunk(p);
    struct op *op = op_new(OP_COMMIT, done, arg);
    op->put = p;
    int err = 0;
    op->data = rec_build(m, p->body_id, p->size, s->chunk_size, &op->len, &err);
    if (op->data == NULL) {
        int none = 0;
        atomic_compare_exchange_strong(&p->err, &none, err);
    } else {
        rec_seal(op->data, op->len);
        meta_key(m->key, m->key_len, m->key_hash, m->vary, m->vary_len, op->mkey);
    }
    submit(s, op);
}

void
cdn_store_put_abort(struct cdn_store_put *p)
{
    CDN_CHECK_MAGIC(p, PUT_MAGIC);
    struct op *op = op_new(OP_ABORT, NULL, NULL);
    op->put = p;
    submit(p->s, op);
}

void
cdn_store_put(struct cdn_store *s, const struct cdn_store_meta *m, const void *body, size_t len,
              cdn_store_done_fn done, void *arg)
{
    struct cdn_store_put *p = cdn_store_put_begin(s);
    if (len > 0)
        cdn_store_put_write(p, body, len);
    cdn_store_put_commit(p, m, done, arg);
}

void
cdn_store_update(struct cdn_store *s, const struct cdn_store_meta *m, cdn_store_done_fn done,
                 void *arg)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    int err = 0;
    struct op *op = op_new(OP_UPDATE, done, arg);
    op->data = rec_build(m, 0, 0, s->chunk_size, &op->len, &err);
    if (op->data == NULL) {
        /* Nothing to apply: the error is reported through the writer like any result. */
        op->kind = OP_BARRIER;
        op->result = err;
        submit(s, op);
        return;
    }
    meta_key(m->key, m->key_len, m->key_hash, m->vary, m->vary_len, op->mkey);
    submit(s, op);
}

void
cdn_store_delete(struct cdn_store *s, const char *key, size_t key_len, const void *vary,
                 size_t vary_len, cdn_store_done_fn done, void *arg)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    struct op *op = op_new(OP_DELETE, done, arg);
    meta_key(key, key_len, NULL, vary, vary_len, op->mkey);
    op->pattern = cdn_malloc(key_len);
    memcpy(op->pattern, key, key_len);
    op->plen = key_len;
    op->vary = cdn_malloc(vary_len);
    if (vary_len > 0)
        memcpy(op->vary, vary, vary_len);
    op->vlen = vary_len;
    submit(s, op);
}

void
cdn_store_purge(struct cdn_store *s, enum cdn_store_purge kind, const char *pattern, size_t len,
                bool soft, cdn_store_done_fn done, void *arg)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    struct op *op = op_new(OP_PURGE, done, arg);
    op->purge = kind;
    op->soft = soft;
    op->durable = true;
    if (kind == CDN_PURGE_ALL)
        len = 0;
    op->pattern = cdn_malloc(len);
    if (len > 0)
        memcpy(op->pattern, pattern, len);
    op->plen = len;
    submit(s, op);
}

struct flush_wait {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
    int result;
};

static void
flush_done(void *arg, int result)
{
    struct flush_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->done = true;
    w->result = result;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

int
cdn_store_flush(struct cdn_store *s)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    CDN_ASSERT(!pthread_equal(pthread_self(), s->writer));
    struct flush_wait w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cond, NULL);
    submit(s, op_new(OP_BARRIER, flush_done, &w));
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cond, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cond);
    return w.result;
}

void
cdn_store_stats(struct cdn_store *s, struct cdn_store_stats *out)
{
    CDN_CHECK_MAGIC(s, STORE_MAGIC);
    memset(out, 0, sizeof(*out));
    out->objects = cdn_recency_count(s->rec);
    out->bytes = cdn_recency_bytes(s->rec);
    out->puts = atomic_load(&s->c_puts);
    out->updates = atomic_load(&s->c_updates);
    out->deletes = atomic_load(&s->c_deletes);
    out->soft_purges = atomic_load(&s->c_soft);
    out->evictions = atomic_load(&s->c_evictions);
    out->map_full_drops = atomic_load(&s->c_drops);
    out->corrupt_deleted = atomic_load(&s->c_corrupt);
    out->orphans_deleted = atomic_load(&s->c_orphans);
    out->lookups = atomic_load(&s->c_lookups);
    out->lease_copies = atomic_load(&s->c_copies);
    out->leases_open = atomic_load(&s->leases_open);
    out->txn_created = atomic_load(&s->c_txn_created);
    out->txn_renewed = atomic_load(&s->c_txn_renewed);
    out->write_txns = atomic_load(&s->c_wtxns);
    out->used_pages = atomic_load(&s->used_pages);
    out->map_pages = s->map_pages;
    out->high_pages = s->high_pages;
    out->touch_skipped = cdn_recency_touch_skipped(s->rec);
}

uint64_t
cdn_store_backlog(struct cdn_store *s)
{
    return atomic_load_explicit(&s->backlog, memory_order_relaxed);
}
