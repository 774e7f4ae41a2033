/*
 * cache.h: the cache as the request path sees it: the store opened from the configuration,
 * lookups that select the stored variant matching a request (Vary), and fetch sinks that store a
 * response as it streams in or freshen a stored one with a 304.
 *
 * Stored header blocks are "name\0value\0" pairs, so a HIT hands libmicrohttpd NUL-terminated
 * strings that point straight into the LMDB map. The variant identity stored with an object is
 * "<vary spec>\0<request values>" (cachekey.h), empty without Vary.
 *
 * Lookups run on MHD workers, sinks on the upstream thread; the store does its own locking.
 */
#ifndef CDNODE_CACHE_H
#define CDNODE_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdnode/cachekey.h"
#include "cdnode/headers.h"
#include "cdnode/policy.h"

/*
 * Stored with a gzip body (compressed here or by the origin): the length of the identity body,
 * so clients that do not take gzip get a Content-Length too. Never sent to clients.
 */
#define CDN_IDENTITY_LENGTH_FIELD "cdnode-Identity-Length"

/* Identity bodies below this many bytes are not worth compressing. */
#define CDN_GZIP_MIN_SIZE 1024

struct cdn_arena;
struct cdn_config;
struct cdn_fetch;
struct cdn_fetch_sink;
struct cdn_store;
struct cdn_store_lease;
struct cdn_store_meta;
struct cdn_cache;

/* Opens the store under cfg->cache_dir. Returns 0, or CDN_EIO / CDN_EINVAL (logged). */
int cdn_cache_open(const struct cdn_config *cfg, struct cdn_cache **out);
/* Flushes and closes the store; every hit must have been released. */
void cdn_cache_close(struct cdn_cache *c);
struct cdn_store *cdn_cache_store(struct cdn_cache *c);
const struct cdn_policy_opts *cdn_cache_policy(const struct cdn_cache *c);
const struct cdn_key_opts *cdn_cache_key_opts(const struct cdn_cache *c);

struct cdn_hit {
    struct cdn_store_lease *lease;
    const struct cdn_store_meta *meta;
    unsigned idx;
    struct cdn_hdrs hdrs;   /* stored fields; strings NUL-terminated, in the lease */
    struct cdn_stored st;   /* the policy's view (st.hdrs == &hdrs) */
};

/*
 * Looks key up and selects the variant that matches the request's fields. Returns 0 with *hit
 * holding a lease (release with cdn_cache_hit_release), or CDN_ENOTFOUND with *vary_miss set when
 * variants exist but none matches. Store errors read as CDN_ENOTFOUND. `a` gives scratch memory
 * and the header array. key_hash: cdn_store_key_hash() of key, or NULL. Any thread.
 */
int cdn_cache_lookup(struct cdn_cache *c, const char *key, size_t klen, const uint8_t *key_hash,
                     const struct cdn_hdrs *req, struct cdn_arena *a, struct cdn_hit *hit,
                     bool *vary_miss);
/* Ends a hit's lease; NULL-safe on a zeroed hit. */
void cdn_cache_hit_release(struct cdn_hit *hit);

/* True when a Vary field of h lists `name` (case-insensitive) or is "*". */
bool cdn_vary_lists(const struct cdn_hdrs *h, const char *name);

/* Encodes fields as "name\0value\0" pairs into the arena. */
const char *cdn_hdrblock_encode(const struct cdn_hdrs *h, struct cdn_arena *a, size_t *len);
/* Decodes a block (pointers into p). Returns 0, or CDN_ECORRUPT for a malformed block. */
int cdn_hdrblock_decode(const char *p, size_t n, struct cdn_hdrs *out);

struct cdn_cache_sink_req {
    const char *method;
    const char *key;
    size_t klen;
    const struct cdn_hdrs *req;   /* the client's request fields (copied) */
    int64_t request_time;         /* wall seconds when the upstream request was made */
    const struct cdn_hit *reval;  /* the stored response being revalidated, or NULL (copied) */
    struct cdn_fetch *fetch;      /* the fetch the sink is made for, not yet submitted */
    const uint8_t *key_hash;      /* cdn_store_key_hash() of key (copied), or NULL: hashed here */
};

/*
 * Fills *out with a sink for a fetch of this request. On the response head it decides: a 304
 * answering a revalidation freshens the stored variant (metadata only); a storable response
 * (policy.h cdn_storable, body within max_object_size) is stored as it streams and committed when
 * complete (an incomplete body is never stored); an unstorable response that replaces a
 * revalidated one deletes it. Content coding: an identity body the policy finds compressible
 * (encoding.h cdn_should_compress; config `gzip`) is stored gzip-compressed, with a weakened
 * ETag and Vary: Accept-Encoding; a gzip body from the origin is checked as it streams and not
 * stored when it does not inflate. Either way Accept-Encoding leaves the variant key: the front
 * end negotiates gzip itself. Everything the sink needs is copied; it frees itself in end().
 */
void cdn_cache_sink(struct cdn_cache *c, const struct cdn_cache_sink_req *r,
                    struct cdn_fetch_sink *out);

/*
 * What a revalidation's 304 made of the stored variant: the fields cdn_merge_304() gave for the
 * stored ones the sink was made with (cdn_cache_sink_req.reval) and the 304, with what it
 * returned. The request that made the fetch serves them instead of merging again; any other
 * reader holds its own stored copy. NULL unless the fetch's 304 freshened that copy. Lives as
 * long as the fetch; read it only after the head is published.
 */
struct cdn_freshened {
    uint32_t magic;
    struct cdn_hdrs hdrs;
    struct cdn_cc cc;
    bool targeted;
};
const struct cdn_freshened *cdn_cache_freshened(const struct cdn_fetch *f);

/*
 * Deletes every variant stored under each URI (e.g. after an unsafe method, RFC 9111 §4.4). The
 * keys are built as cdn_cache_key builds them. Any thread; asynchronous: done (may be NULL) is
 * called once per URI, on the store's writer thread (or at once for a URI that has no key).
 */
void cdn_cache_invalidate(struct cdn_cache *c, const struct cdn_uri *uris, size_t n,
                          struct cdn_arena *a, void (*done)(void *arg, int result), void *arg);

#endif
