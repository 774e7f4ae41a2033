/*
 * Fuzz target for stored-record decoding: the input is written as a raw metadata record (and body
 * chunks) straight into the store's LMDB environment, then read back through cdn_store_lookup,
 * cdn_store_lease_body and cdn_cache_lookup (which also decodes the stored header block). Includes
 * store.c to reach the environment; writes happen only while the store's writer is idle (after
 * cdn_store_flush), as tests/unit/test_store.c does.
 *
 * Input: flags (1 byte), record length (2 bytes LE), variant suffix of the LMDB key (8 bytes),
 * the record, then body bytes cut into chunks as the record's chunk fields say (at most 64).
 * Flags let the fuzzer get past the checks it cannot solve by mutation alone:
 *   0x01 reseal the CRC-32   0x02 set magic, version and header size   0x04 look up the record's
 *   own key (else a fixed one)   0x08 reopen the store before reading (the open-time scan)
 *   0x10 copy-out leases   0x20 variant suffix hashed from the record's vary bytes
 *   0x40 soft-purge by tag afterwards   0x80 rewrite the metadata with cdn_store_update
 *
 * The contract under test: whatever the record holds, readers see a consistent object or a miss.
 */
#include "fuzz.h"

#include "store.c"

#include "cdnode/cache.h"
#include "cdnode/config.h"

#include <ftw.h>
#include <unistd.h>

#define FIXED_KEY "http://fuzz.test/"
#define MAX_CHUNKS 64

static struct cdn_config cfg;
static struct cdn_cache *cache;
static char dir[64];

static int
rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void
cleanup(void)
{
    cdn_cache_close(cache);
    cache = NULL;
    nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    snprintf(dir, sizeof(dir), "%s/cdnode-fuzz-XXXXXX",
             access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    CDN_ASSERT(mkdtemp(dir) != NULL);
    cdn_config_defaults(&cfg);
    free(cfg.cache_dir);
    cfg.cache_dir = cdn_strdup(dir);
    cfg.cache_size = 64u << 20;
    CDN_ASSERT(cdn_cache_open(&cfg, &cache) == 0);
    atexit(cleanup);
    return 0;
}

static void
check_meta(const struct cdn_store_meta *m, const char *key, size_t klen)
{
    FUZZ_CHECK(m->key_len == klen && memcmp(m->key, key, klen) == 0);
    FUZZ_CHECK(m->status >= 100 && m->status <= 999);
    FUZZ_CHECK(m->vary_len == 0 || m->vary != NULL);
    FUZZ_CHECK(m->headers_len == 0 || m->headers != NULL);
    FUZZ_CHECK(m->tags_len == 0 || m->tags != NULL);
}

static void
check_body(struct cdn_store_lease *l, unsigned i)
{
    const struct iovec *iov;
    unsigned niov;
    int rc = cdn_store_lease_body(l, i, &iov, &niov);
    FUZZ_CHECK(rc == 0 || rc == CDN_ECORRUPT || rc == CDN_ENOTFOUND);
    if (rc != 0)
        return;
    uint64_t total = 0;
    for (unsigned c = 0; c < niov; c++) {
        FUZZ_CHECK(iov[c].iov_len == 0 || iov[c].iov_base != NULL);
        total += iov[c].iov_len;
    }
    FUZZ_CHECK(total == cdn_store_lease_meta(l, i)->body_size);
}

/* Writes the record and its chunks as the only contents of the store. */
static void
inject(struct cdn_store *s, const uint8_t mkey[KEY_LEN], const uint8_t *rec, size_t rlen,
       const uint8_t *body, size_t blen)
{
    MDB_txn *t;
    CDN_ASSERT(mdb_txn_begin(s->env, NULL, 0, &t) == 0);
    CDN_ASSERT(mdb_drop(t, s->meta, 0) == 0 && mdb_drop(t, s->body, 0) == 0);
    MDB_val k = {KEY_LEN, (void *)mkey}, v = {rlen, (void *)rec};
    CDN_ASSERT(mdb_put(t, s->meta, &k, &v, 0) == 0);
    if (rlen >= REC_HDR) {
        uint64_t id = le64_get(rec + 72);
        uint32_t csize = le32_get(rec + 20), nchunks = le32_get(rec + 24);
        for (uint32_t c = 0; c < nchunks && c < MAX_CHUNKS && blen > 0; c++) {
            size_t take = csize == 0 || csize > blen ? blen : csize;
            uint8_t kb[BODY_KEY_LEN];
            body_key(id, c, kb);
            MDB_val bk = {BODY_KEY_LEN, kb}, bv = {take, (void *)body};
            CDN_ASSERT(mdb_put(t, s->body, &bk, &bv, 0) == 0);
            body += take;
            blen -= take;
        }
    }
    CDN_ASSERT(mdb_txn_commit(t) == 0);
}

/* Key, vary, headers and tags of the record, when its length fields fit it. */
static bool
rec_fields(const uint8_t *rec, size_t rlen, struct cdn_store_meta *m)
{
    if (rlen < REC_HDR)
        return false;
    uint64_t kl = le32_get(rec + 28), vl = le32_get(rec + 32), hl = le32_get(rec + 36),
             tl = le32_get(rec + 40);
    if (REC_HDR + kl + vl + hl + tl > rlen)
        return false;
    m->key = (const char *)rec + REC_HDR;
    m->key_len = kl;
    m->vary = rec + REC_HDR + kl;
    m->vary_len = vl;
    m->headers = rec + REC_HDR + kl + vl;
    m->headers_len = hl;
    m->tags = rec + REC_HDR + kl + vl + hl;
    m->tags_len = tl;
    return true;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 11)
        return 0;
    uint8_t flags = data[0];
    size_t rlen = le16_get(data + 1);
    const uint8_t *suffix = data + 3;
    if (rlen > size - 11)
        rlen = size - 11;
    uint8_t *rec = cdn_malloc(rlen ? rlen : 1);
    memcpy(rec, data + 11, rlen);
    const uint8_t *body = data + 11 + rlen;
    size_t blen = size - 11 - rlen;

    if ((flags & 0x02) && rlen >= 8) {
        le32_put(rec, REC_MAGIC);
        le16_put(rec + 4, REC_VERSION);
        le16_put(rec + 6, REC_HDR);
    }
    if ((flags & 0x01) && rlen >= 12)
        rec_seal(rec, rlen);

    struct cdn_store_meta f = {0};
    bool fields = rec_fields(rec, rlen, &f);
    const char *key = FIXED_KEY;
    size_t klen = strlen(FIXED_KEY);
    if ((flags & 0x04) && fields && f.key_len > 0) {
        key = f.key;
        klen = f.key_len;
    }
    uint8_t mkey[KEY_LEN];
    meta_key(key, klen, NULL, NULL, 0, mkey);
    if ((flags & 0x20) && fields)
        meta_key(key, klen, NULL, f.vary, f.vary_len, mkey);
    else
        memcpy(mkey + HASH_LEN, suffix, KEY_LEN - HASH_LEN);

    struct cdn_store *s = cdn_cache_store(cache);
    inject(s, mkey, rec, rlen, body, blen);
    if (flags & 0x08) {
        cdn_cache_close(cache);
        CDN_ASSERT(cdn_cache_open(&cfg, &cache) == 0);
        s = cdn_cache_store(cache);
    }
    unsigned max_leases = s->max_leases;
    if (flags & 0x10)
        s->max_leases = 0;

    struct cdn_store_lease *l;
    int rc = cdn_store_lookup(s, key, klen, &l);
    FUZZ_CHECK(rc == 0 || rc == CDN_ENOTFOUND);
    if (rc == 0) {
        unsigned n = cdn_store_lease_count(l);
        FUZZ_CHECK(n >= 1 && n <= s->max_variants);
        for (unsigned i = 0; i < n; i++) {
            check_meta(cdn_store_lease_meta(l, i), key, klen);
            check_body(l, i);
        }
        cdn_store_lease_release(l);
    }

    struct cdn_arena *a = cdn_arena_new(1024);
    struct cdn_hdrs req;
    cdn_hdrs_init(&req, a);
    cdn_hdrs_add_str(&req, "Accept-Encoding", "gzip");
    cdn_hdrs_add_str(&req, "Accept-Language", "en");
    struct cdn_hit hit;
    bool vary_miss;
    if (cdn_cache_lookup(cache, key, klen, NULL, &req, a, &hit, &vary_miss) == 0) {
        check_meta(hit.meta, key, klen);
        for (size_t i = 0; i < hit.hdrs.n; i++) {
            const struct cdn_hdr *e = &hit.hdrs.v[i];
            FUZZ_CHECK(e->nlen > 0 && e->name[e->nlen] == '\0' && e->value[e->vlen] == '\0');
        }
        check_body(hit.lease, hit.idx);
        cdn_cache_hit_release(&hit);
    }
    cdn_arena_free(a);
    s->max_leases = max_leases;

    if ((flags & 0x80) && fields && f.key_len > 0) {
        struct cdn_store_meta m = f;
        m.status = 200;
        cdn_store_update(s, &m, NULL, NULL);
    }
    if (flags & 0x40)
        cdn_store_purge(s, CDN_PURGE_TAG, "t", 1, true, NULL, NULL);
    CDN_ASSERT(cdn_store_flush(s) == 0);
    free(rec);
    return 0;
}
