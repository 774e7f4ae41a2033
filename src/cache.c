/*
 * cache.c: lookups with variant selection and the store/freshen sinks (see cache.h).
 *
 * A sink lives from cdn_cache_sink() to its end() call: it owns an arena with copies of the
 * request fields and, when revalidating, of the stored fields and metadata. Its head() runs once
 * on the upstream thread and decides, with the pure policy functions, what the store will do; the
 * store's writer thread does the writing.
 */
#include "cdnode/cache.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/encoding.h"
#include "cdnode/fetch.h"
#include "cdnode/log.h"
#include "cdnode/purge.h"
#include "cdnode/store.h"

#include <string.h>
#include <zlib.h>

#define CACHE_MAGIC 0xcac4e001u
#define SINK_MAGIC 0x5174c0deu
#define FRESHENED_MAGIC 0xf7e54ed0u

struct cdn_cache {
    uint32_t magic;
    const struct cdn_config *cfg;
    struct cdn_store *store;
    struct cdn_policy_opts popts;
    struct cdn_key_opts kopts;
};

int
cdn_cache_open(const struct cdn_config *cfg, struct cdn_cache **out)
{
    struct cdn_cache *c = cdn_calloc(1, sizeof(*c));
    c->magic = CACHE_MAGIC;
    c->cfg = cfg;
    cdn_policy_opts_from_config(cfg, &c->popts);
    cdn_key_opts_from_config(cfg, &c->kopts);
    struct cdn_store_opts so = {
        .dir = cfg->cache_dir,
        .map_size = cfg->cache_size,
        .max_readers = cfg->connection_limit + 64,
        .max_leases = cfg->connection_limit < 1024 ? cfg->connection_limit : 1024,
        .max_object_size = cfg->max_object_size,
        .max_variants = cfg->max_variants,
        .writemap = cfg->cache_writemap,
    };
    int rc = cdn_store_open(&so, &c->store);
    if (rc != 0) {
        cdn_error("cannot open the store in %s: %s", cfg->cache_dir, cdn_strerror(rc));
        free(c);
        return rc;
    }
    *out = c;
    return 0;
}

void
cdn_cache_close(struct cdn_cache *c)
{
    if (c == NULL)
        return;
    CDN_CHECK_MAGIC(c, CACHE_MAGIC);
    cdn_store_close(c->store);
    c->magic = 0;
    free(c);
}

struct cdn_store *
cdn_cache_store(struct cdn_cache *c)
{
    return c->store;
}

const struct cdn_policy_opts *
cdn_cache_policy(const struct cdn_cache *c)
{
    return &c->popts;
}

const struct cdn_key_opts *
cdn_cache_key_opts(const struct cdn_cache *c)
{
    return &c->kopts;
}

const char *
cdn_hdrblock_encode(const struct cdn_hdrs *h, struct cdn_arena *a, size_t *len)
{
    size_t total = 0;
    for (size_t i = 0; i < h->n; i++)
        total += h->v[i].nlen + h->v[i].vlen + 2;
    char *out = cdn_arena_alloc(a, total + 1);
    size_t off = 0;
    for (size_t i = 0; i < h->n; i++) {
        memcpy(out + off, h->v[i].name, h->v[i].nlen);
        off += h->v[i].nlen;
        out[off++] = '\0';
        memcpy(out + off, h->v[i].value, h->v[i].vlen);
        off += h->v[i].vlen;
        out[off++] = '\0';
    }
    *len = off;
    return out;
}

int
cdn_hdrblock_decode(const char *p, size_t n, struct cdn_hdrs *out)
{
    size_t off = 0;
    while (off < n) {
        const char *name = p + off;
        const char *nz = memchr(name, '\0', n - off);
        if (nz == NULL || nz == name)
            return CDN_ECORRUPT;
        size_t nlen = (size_t)(nz - name);
        off += nlen + 1;
        if (off >= n + 1)
            return CDN_ECORRUPT;
        const char *value = p + off;
        const char *vz = memchr(value, '\0', n - off);
        if (vz == NULL)
            return CDN_ECORRUPT;
        size_t vlen = (size_t)(vz - value);
        off += vlen + 1;
        cdn_hdrs_add(out, name, nlen, value, vlen);
    }
    return 0;
}

const struct cdn_freshened *
cdn_cache_freshened(const struct cdn_fetch *f)
{
    const struct cdn_freshened *fr = cdn_fetch_sink_note(f);
    if (fr != NULL)
        CDN_CHECK_MAGIC(fr, FRESHENED_MAGIC);
    return fr;
}

/* Splits a stored variant identity into spec and values. */
static void
split_vary(const struct cdn_store_meta *m, const char **spec, size_t *slen, const char **vals,
           size_t *vlen)
{
    const char *v = m->vary;
    const char *z = m->vary_len ? memchr(v, '\0', m->vary_len) : NULL;
    if (z == NULL) {
        *spec = "";
        *slen = 0;
        *vals = "";
        *vlen = 0;
        return;
    }
    *spec = v;
    *slen = (size_t)(z - v);
    *vals = z + 1;
    *vlen = m->vary_len - *slen - 1;
}

int
cdn_cache_lookup(struct cdn_cache *c, const char *key, size_t klen, const uint8_t *key_hash,
                 const struct cdn_hdrs *req, struct cdn_arena *a, struct cdn_hit *hit,
                 bool *vary_miss)
{
    memset(hit, 0, sizeof(*hit));
    *vary_miss = false;
    struct cdn_store_lease *l;
    if (cdn_store_lookup_hashed(c->store, key, klen, key_hash, &l) != 0)
        return CDN_ENOTFOUND;
    unsigned n = cdn_store_lease_count(l);
    for (unsigned i = 0; i < n; i++) {
        const struct cdn_store_meta *m = cdn_store_lease_meta(l, i);
        const char *spec, *vals;
        size_t slen, vlen;
        split_vary(m, &spec, &slen, &vals, &vlen);
        if (slen > 0 && !cdn_vary_match(spec, slen, vals, vlen, req, a))
            continue;
        cdn_hdrs_init(&hit->hdrs, a);
        if (cdn_hdrblock_decode(m->headers, m->headers_len, &hit->hdrs) != 0) {
            cdn_store_delete(c->store, key, klen, m->vary, m->vary_len, NULL, NULL);
            continue;
        }
        hit->lease = l;
        hit->meta = m;
        hit->idx = i;
        hit->st.status = (int)m->status;
        hit->st.hdrs = &hit->hdrs;
        hit->st.request_time = m->request_time;
        hit->st.response_time = m->response_time;
        return 0;
    }
    *vary_miss = true;
    cdn_store_lease_release(l);
    return CDN_ENOTFOUND;
}

void
cdn_cache_hit_release(struct cdn_hit *hit)
{
    if (hit->lease)
        cdn_store_lease_release(hit->lease);
    hit->lease = NULL;
    hit->meta = NULL;
}

struct sink {
    uint32_t magic;
    struct cdn_cache *c;
    struct cdn_arena *arena;
    char *method;
    const char *key;
    size_t klen;
    uint8_t key_hash[CDN_STORE_KEY_HASH_LEN]; /* cdn_store_key_hash(key) */
    struct cdn_hdrs req;
    int64_t request_time;
    /* revalidation: the stored response */
    bool reval;
    bool updating; /* a 304's update is queued: its commit calls cdn_fetch_stored() */
    struct cdn_hdrs stored;
    int stored_status;
    const char *stored_vary;
    size_t stored_vary_len;
    /* the put in progress */
    struct cdn_store_put *put;
    struct cdn_store_meta meta;
    struct cdn_hdrs kept;    /* stored fields; encoded again at commit when coding adds one */
    /* content coding */
    struct cdn_gz *gz;       /* compressing an identity body as it is stored */
    z_stream *check;         /* inflating an origin gzip body to validate it (output dropped) */
    bool check_done;         /* the gzip stream ended cleanly */
    uint64_t identity_len;
};

/* Bytes an origin gzip body may inflate to before it counts as a bomb and is not stored. */
#define GZIP_CHECK_MAX(c) ((uint64_t)(c)->cfg->max_object_size * 64)


/* When the stored response stops being fresh, as an eviction hint. */
static int64_t
expires_at(struct sink *s, int status, const struct cdn_hdrs *h, const struct cdn_cc *cc,
           bool targeted, int64_t response_time)
{
    struct cdn_freshness fr;
    struct cdn_age age;
    cdn_freshness_lifetime_cc(status, h, response_time, &s->c->popts, cc, targeted, &fr);
    cdn_age_compute(h, s->request_time, response_time, response_time, &age);
    return response_time + fr.lifetime - age.corrected_initial_age;
}

/* The tags of the fields to store, for purge by tag; names past the bounds are dropped. */
static void
set_tags(struct sink *s, const struct cdn_hdrs *h, struct cdn_store_meta *m)
{
    unsigned dropped;
    m->tags = cdn_tags_build(h, s->arena, &m->tags_len, &dropped);
    if (dropped > 0)
        cdn_debug("store: %u tag(s) of %.*s dropped (invalid, over %d bytes or past %d tags)",
                  dropped, (int)s->klen, s->key, CDN_TAG_MAX_LEN, CDN_TAGS_MAX);
}

/* Writer thread: the commit settled; let the fetch's readers have the last byte. */
static void
committed(void *arg, int result)
{
    struct cdn_fetch *f = arg;
    if (result < 0)
        cdn_debug("store: object not stored: %s", cdn_strerror(result));
    cdn_fetch_stored(f);
    cdn_fetch_unref(f);
}

/* Applies a 304 to the stored variant. Returns false when the 304 does not select it. */
static bool
freshen(struct sink *s, struct cdn_fetch *f, const struct cdn_hdrs *resp304)
{
    int64_t now = cdn_wall_s();
    if (!cdn_304_matches(&s->stored, resp304))
        return false;
    /* Kept with the fetch (its arena holds the stored fields and the 304's): the request that
     * revalidated serves these rather than merging the same two again. */
    struct cdn_arena *fa = cdn_fetch_arena(f);
    struct cdn_freshened *fr = cdn_arena_alloc(fa, sizeof(*fr));
    fr->magic = FRESHENED_MAGIC;
    cdn_hdrs_init(&fr->hdrs, fa);
    fr->targeted = cdn_merge_304(&s->stored, resp304, &s->c->popts, &fr->hdrs, &fr->cc);
    const struct cdn_hdrs *merged = &fr->hdrs;
    struct cdn_store_meta m = {
        .key = s->key,
        .key_len = s->klen,
        .key_hash = s->key_hash,
        .vary = s->stored_vary,
        .vary_len = s->stored_vary_len,
        .status = (uint32_t)s->stored_status,
        .request_time = s->request_time,
        .response_time = now,
    };
    m.headers = cdn_hdrblock_encode(merged, s->arena, &m.headers_len);
    set_tags(s, merged, &m);
    m.expires_at = expires_at(s, s->stored_status, merged, &fr->cc, fr->targeted, now);
    if (s->stored.arena == fa) /* made with the fetch: the fields live as long as it does */
        cdn_fetch_set_sink_note(f, fr);
    /* The readers' head waits for this update, so their next request finds it freshened. */
    s->updating = true;
    cdn_fetch_ref(f);
    cdn_store_update(s->c->store, &m, committed, f);
    return true;
}

/* The Vary spec without accept-encoding: the front end negotiates gzip on its own. */
static const char *
spec_without_ae(const char *spec, size_t slen, struct cdn_arena *a, size_t *out_len)
{
    char *out = cdn_arena_alloc(a, slen + 1);
    size_t n = 0;
    const char *p = spec, *end = spec + slen, *e;
    size_t el;
    while (cdn_list_next(&p, end, &e, &el)) {
        if (cdn_name_eq(e, el, "accept-encoding"))
            continue;
        if (n) {
            memcpy(out + n, ", ", 2);
            n += 2;
        }
        memcpy(out + n, e, el);
        n += el;
    }
    out[n] = '\0';
    *out_len = n;
    return out;
}

bool
cdn_vary_lists(const struct cdn_hdrs *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++) {
        if (!cdn_name_eq(h->v[i].name, h->v[i].nlen, "Vary"))
            continue;
        const char *p = h->v[i].value, *end = p + h->v[i].vlen, *e;
        size_t el;
        while (cdn_list_next(&p, end, &e, &el))
            if (cdn_name_eq(e, el, name) || (el == 1 && *e == '*'))
                return true;
    }
    return false;
}

/* The stored fields of a body compressed here: gzip coding, weak validator, Vary. */
static void
mark_compressed(struct sink *s)
{
    struct cdn_hdrs *k = &s->kept;
    const struct cdn_hdr *et = cdn_hdrs_get(k, "ETag");
    const char *weak = et ? cdn_etag_weaken(et->value, et->vlen, s->arena) : NULL;
    cdn_hdrs_remove(k, "ETag");
    cdn_hdrs_remove(k, "Content-Encoding");
    if (weak)
        cdn_hdrs_add_str(k, "ETag", weak);
    cdn_hdrs_add_str(k, "Content-Encoding", "gzip");
    if (!cdn_vary_lists(k, "Accept-Encoding"))
        cdn_hdrs_add_str(k, "Vary", "Accept-Encoding");
}

static void *
zalloc(void *opaque, unsigned items, unsigned size)
{
    (void)opaque;
    return cdn_calloc(items, size);
}

static void
zfree(void *opaque, void *p)
{
    (void)opaque;
    free(p);
}

/* Feeds origin gzip bytes to the validating inflater; false once the stream is broken. */
static bool
check_feed(struct sink *s, const char *p, size_t n)
{
    unsigned char scratch[16384];
    z_stream *z = s->check;
    z->next_in = (unsigned char *)p;
    z->avail_in = (unsigned)n;
    while (z->avail_in > 0) {
        if (s->check_done)
            return false; /* bytes after the end of the stream */
        z->next_out = scratch;
        z->avail_out = sizeof(scratch);
        int rc = inflate(z, Z_NO_FLUSH);
        s->identity_len += sizeof(scratch) - z->avail_out;
        if (s->identity_len > GZIP_CHECK_MAX(s->c))
            return false;
        if (rc == Z_STREAM_END)
            s->check_done = true;
        else if (rc != Z_OK && !(rc == Z_BUF_ERROR && z->avail_out == 0))
            return false;
    }
    return true;
}

static void
drop_put(struct sink *s)
{
    if (s->put)
        cdn_store_put_abort(s->put);
    s->put = NULL;
}

static void
put_emit(void *arg, const void *p, size_t n)
{
    struct sink *s = arg;
    if (s->put && cdn_store_put_write(s->put, p, n) != 0)
        drop_put(s);
}

static enum cdn_sink_take
sink_head(void *arg, struct cdn_fetch *f, int status, const struct cdn_hdrs *resp,
          int64_t content_length)
{
    struct sink *s = arg;
    CDN_CHECK_MAGIC(s, SINK_MAGIC);
    if (s->reval && status == 304)
        return freshen(s, f, resp) ? CDN_SINK_HOLD_HEAD : CDN_SINK_SKIP;
    struct cdn_cc cc;
    bool targeted = cdn_response_cc(resp, &s->c->popts, &cc);
    enum cdn_store_verdict v =
        cdn_storable_cc(s->method, &s->req, status, resp, &s->c->popts, &cc, targeted);
    if (v != CDN_STORE_OK ||
        (content_length >= 0 && (uint64_t)content_length > s->c->cfg->max_object_size)) {
        if (s->reval && status < 500) /* the stored copy is outdated and not replaced */
            cdn_store_delete(s->c->store, s->key, s->klen, s->stored_vary, s->stored_vary_len,
                             NULL, NULL);
        return CDN_SINK_SKIP;
    }
    int64_t now = cdn_wall_s();
    /* The stored list points at the response's strings, which live in the fetch's arena: the
     * fetch ends the sink before it frees that, and the commit takes copies (sink_end).
     * Stripping below only drops lines and adds new ones. */
    struct cdn_hdrs *kept = &s->kept;
    cdn_hdrs_init(kept, s->arena);
    for (size_t i = 0; i < resp->n; i++)
        cdn_hdrs_add(kept, resp->v[i].name, resp->v[i].nlen, resp->v[i].value, resp->v[i].vlen);
    /* Ours only, never from upstream; not a directive line, so cc still holds for kept. */
    cdn_hdrs_remove(kept, CDN_IDENTITY_LENGTH_FIELD);
    targeted = cdn_policy_strip_keep_cc(kept, &s->c->popts, &cc, targeted);
    enum cdn_coding coding = cdn_content_coding(resp);
    bool compress = s->c->cfg->gzip && coding == CDN_CODING_IDENTITY &&
                    cdn_should_compress(status, resp, content_length, CDN_GZIP_MIN_SIZE,
                                        cdn_gzip_default_types, cdn_gzip_default_ntypes);
    bool gzipped = coding == CDN_CODING_GZIP;
    size_t slen, vlen;
    const char *spec = cdn_vary_spec(resp, s->arena, &slen);
    if ((compress || gzipped) && !cdn_vary_is_star(spec, slen)) {
        spec = spec_without_ae(spec, slen, s->arena, &slen);
    } else if (coding == CDN_CODING_OTHER && !cdn_vary_lists(resp, "Accept-Encoding")) {
        /* br, zstd, ...: only for clients that asked the same way, even when the origin forgot
         * to say it varies on Accept-Encoding. */
        spec = slen ? cdn_arena_printf(s->arena, "%.*s, accept-encoding", (int)slen, spec)
                    : "accept-encoding";
        slen = strlen(spec);
        cdn_hdrs_add_str(kept, "Vary", "Accept-Encoding");
    }
    const char *vals = cdn_vary_values(spec, slen, &s->req, s->arena, &vlen);
    if (vals == NULL)
        return CDN_SINK_SKIP; /* Vary: * (cdn_storable refuses it already) */
    struct cdn_store_meta *m = &s->meta;
    memset(m, 0, sizeof(*m));
    m->key = s->key;
    m->key_len = s->klen;
    m->key_hash = s->key_hash;
    if (slen > 0) {
        char *vary = cdn_arena_alloc(s->arena, slen + 1 + vlen);
        memcpy(vary, spec, slen);
        vary[slen] = '\0';
        memcpy(vary + slen + 1, vals, vlen);
        m->vary = vary;
        m->vary_len = slen + 1 + vlen;
    }
    if (compress) {
        mark_compressed(s);
        s->gz = cdn_gz_new(6);
    } else if (gzipped) {
        if (!cdn_vary_lists(kept, "Accept-Encoding"))
            cdn_hdrs_add_str(kept, "Vary", "Accept-Encoding");
        s->check = cdn_calloc(1, sizeof(*s->check));
        s->check->zalloc = zalloc;
        s->check->zfree = zfree;
        if (inflateInit2(s->check, 15 + 16) != Z_OK) {
            free(s->check);
            s->check = NULL;
            return CDN_SINK_SKIP;
        }
    }
    m->headers = cdn_hdrblock_encode(kept, s->arena, &m->headers_len);
    set_tags(s, kept, m);
    m->status = (uint32_t)status;
    m->request_time = s->request_time;
    m->response_time = now;
    m->expires_at = expires_at(s, status, kept, &cc, targeted, now);
    s->put = cdn_store_put_begin(s->c->store);
    if (content_length > 0)
        cdn_store_put_expect(s->put, (uint64_t)content_length);
    return compress || gzipped ? CDN_SINK_BODY_GZIP : CDN_SINK_BODY;
}

static void
sink_data(void *arg, const char *p, size_t n)
{
    struct sink *s = arg;
    if (s->put == NULL)
        return;
    if (s->gz) {
        s->identity_len += n;
        if (cdn_gz_write(s->gz, p, n, put_emit, s) != 0)
            drop_put(s);
        return;
    }
    if (s->check && !check_feed(s, p, n)) {
        cdn_debug("store: %.*s: gzip body from origin does not inflate; not stored",
                  (int)s->klen, s->key);
        drop_put(s);
        return;
    }
    put_emit(s, p, n);
}

/* At commit: finish the coding and record the identity length with the stored fields. */
static void
finish_coding(struct sink *s)
{
    if (s->gz && s->put && cdn_gz_finish(s->gz, put_emit, s) != 0)
        drop_put(s);
    if (s->check && !s->check_done) {
        cdn_debug("store: %.*s: gzip body from origin is truncated; not stored", (int)s->klen,
                  s->key);
        drop_put(s);
    }
    if (s->put && (s->gz || s->check)) {
        cdn_hdrs_add_str(&s->kept, CDN_IDENTITY_LENGTH_FIELD,
                         cdn_arena_printf(s->arena, "%llu", (unsigned long long)s->identity_len));
        s->meta.headers = cdn_hdrblock_encode(&s->kept, s->arena, &s->meta.headers_len);
    }
}

static void
sink_end(void *arg, struct cdn_fetch *f, bool complete)
{
    struct sink *s = arg;
    CDN_CHECK_MAGIC(s, SINK_MAGIC);
    if (complete)
        finish_coding(s);
    if (s->put) {
        if (complete) {
            cdn_fetch_ref(f);
            cdn_store_put_commit(s->put, &s->meta, committed, f);
        } else {
            cdn_store_put_abort(s->put);
        }
    } else if (complete && !s->updating) {
        cdn_fetch_stored(f); /* nothing written, or the put failed earlier: nothing to wait for */
    }
    cdn_gz_free(s->gz);
    if (s->check) {
        inflateEnd(s->check);
        free(s->check);
    }
    cdn_arena_free(s->arena);
    free(s->method);
    s->magic = 0;
    free(s);
}

/* Bytes the store may hold queued for its writer before fetches feeding it pause. */
#define STORE_BACKLOG_MAX (8u << 20)

static bool
sink_busy(void *arg)
{
    struct sink *s = arg;
    return cdn_store_backlog(s->c->store) > STORE_BACKLOG_MAX;
}

static void
copy_hdrs(struct cdn_hdrs *dst, const struct cdn_hdrs *src)
{
    for (size_t i = 0; i < src->n; i++)
        cdn_hdrs_add_copy(dst, src->v[i].name, src->v[i].nlen, src->v[i].value, src->v[i].vlen);
}

void
cdn_cache_sink(struct cdn_cache *c, const struct cdn_cache_sink_req *r, struct cdn_fetch_sink *out)
{
    struct sink *s = cdn_calloc(1, sizeof(*s));
    s->magic = SINK_MAGIC;
    s->c = c;
    s->arena = cdn_arena_new(CDN_ARENA_POOLED);
    s->method = cdn_strdup(r->method);
    s->key = cdn_arena_strndup(s->arena, r->key, r->klen);
    s->klen = r->klen;
    if (r->key_hash != NULL)
        memcpy(s->key_hash, r->key_hash, CDN_STORE_KEY_HASH_LEN);
    else
        cdn_store_key_hash(r->key, r->klen, s->key_hash);
    s->request_time = r->request_time;
    cdn_hdrs_init(&s->req, s->arena);
    copy_hdrs(&s->req, r->req);
    /* In the fetch's arena: the merged fields of a 304 point into them (cdn_cache_freshened). */
    cdn_hdrs_init(&s->stored, r->fetch ? cdn_fetch_arena(r->fetch) : s->arena);
    if (r->reval) {
        s->reval = true;
        copy_hdrs(&s->stored, &r->reval->hdrs);
        s->stored_status = r->reval->st.status;
        s->stored_vary_len = r->reval->meta->vary_len;
        if (s->stored_vary_len) {
            char *v = cdn_arena_alloc(s->arena, s->stored_vary_len);
            memcpy(v, r->reval->meta->vary, s->stored_vary_len);
            s->stored_vary = v;
        }
    }
    *out = (struct cdn_fetch_sink){
        .head = sink_head,
        .data = sink_data,
        .end = sink_end,
        .busy = sink_busy,
        .arg = s,
    };
}

void
cdn_cache_invalidate(struct cdn_cache *c, const struct cdn_uri *uris, size_t n,
                     struct cdn_arena *a, void (*done)(void *arg, int result), void *arg)
{
    for (size_t i = 0; i < n; i++) {
        const char *key;
        size_t klen;
        if (cdn_cache_key(uris[i].scheme, uris[i].host, uris[i].target, &c->kopts, a, &key,
                          &klen) != 0) {
            if (done)
                done(arg, 0);
            continue;
        }
        cdn_store_purge(c->store, CDN_PURGE_URL, key, klen, false, done, arg);
    }
}
