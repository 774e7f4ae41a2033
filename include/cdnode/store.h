/*
 * store.h: the object store, one LMDB environment holding cached responses.
 *
 * An object is one metadata record (status, stored header block, times, Vary data, tags, body
 * size) plus its body in fixed-size chunks. Objects are addressed by their primary cache key (the
 * full key string) and, within it, by their variant: the caller's `vary` byte string (e.g. the
 * Vary spec and the request's values of the varied fields). Equal vary strings are the same
 * variant; an empty one is the object without Vary. A key holds at most max_variants variants.
 *
 * Threads:
 *  - cdn_store_open/close: one controlling thread, before any other call / after every other.
 *  - Reads (cdn_store_lookup, cdn_store_lease_*): any thread, concurrently. They never wait for a
 *    write: LMDB readers see the last committed snapshot.
 *  - Writes (put, update, delete, purge): any thread; they only queue an op for the store's writer
 *    thread, the one LMDB writer, which applies many queued ops per transaction. A write is
 *    visible to lookups once its transaction committed; `done` reports that.
 *  - `done` callbacks run on the writer thread (or, once close has begun, on the submitting
 *    thread before the call returns, with CDN_ESHUTDOWN): they must be short and must not call
 *    cdn_store_flush() or cdn_store_close(); queueing more writes from them is fine.
 *
 * Errors are CDN_E* codes (common.h). Invalid records found on the way (bad magic, foreign format
 * version, wrong lengths or checksum, missing body chunks) read as a miss and are deleted by the
 * writer; they never reach the caller.
 */
#ifndef CDNODE_STORE_H
#define CDNODE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct cdn_store;
struct cdn_store_lease;
struct cdn_store_put;

struct cdn_store_opts {
    const char *dir;          /* environment directory, created (0700) if missing */
    uint64_t map_size;        /* bytes; fixed for the life of the environment */
    unsigned max_readers;     /* LMDB reader slots: connection limit + slack. 0: 126 */
    unsigned max_leases;      /* zero-copy leases open at once; lookups past it copy out. 0: 64 */
    uint32_t chunk_size;      /* body chunk bytes. 0: 256 KiB */
    uint64_t max_object_size; /* bodies above this are refused. 0: map_size / 8 */
    unsigned max_variants;    /* variants per primary key. 0: 8 */
    unsigned high_pct;        /* start evicting above this share of the map's pages. 0: 80 */
    unsigned low_pct;         /* ... and stop at this share. 0: 70 */
    unsigned evict_batch;     /* deletes per eviction transaction. 0: 100 */
    bool sync;                /* fsync every commit (no MDB_NOSYNC); purges are always synced */
    bool writemap;            /* MDB_WRITEMAP: see cdn_store_open */
    bool no_prefault;         /* writemap: let pages fault in as the store grows (tests) */
};

/* The soft-purge flag: the object may only be served after revalidation. */
#define CDN_STORE_STALE 0x1u

/*
 * What is stored for one object. Passed in to put/update (copied before the call returns), and
 * handed out by lookups (then every pointer points into the lease, see cdn_store_lease_meta).
 * The header block and vary string are opaque to the store; tags matter only to CDN_PURGE_TAG.
 */
struct cdn_store_meta {
    const char *key; /* full primary cache key; not NUL-terminated on output */
    size_t key_len;
    const void *vary; /* variant identity and Vary data; may be NULL with vary_len 0 */
    size_t vary_len;
    const void *headers; /* serialized stored header block */
    size_t headers_len;
    const void *tags; /* names separated by single spaces (CDN_PURGE_TAG matches one) */
    size_t tags_len;
    uint32_t status;
    uint32_t flags;        /* CDN_STORE_STALE */
    int64_t request_time;  /* wall seconds */
    int64_t response_time; /* wall seconds */
    int64_t expires_at;    /* wall seconds when it stops being fresh; 0 unknown; eviction hint */
    uint64_t body_size;    /* output only: put takes it from the bytes written */
    /* input only (put, update), may be NULL: cdn_store_key_hash() of key, when the caller has it
     * from its lookup, so the key is not hashed twice */
    const uint8_t *key_hash;
};

/* Length of cdn_store_key_hash()'s output. */
#define CDN_STORE_KEY_HASH_LEN 32
/* The hash of a primary key the store files its variants under (SHA-256). */
void cdn_store_key_hash(const char *key, size_t key_len, uint8_t out[CDN_STORE_KEY_HASH_LEN]);

/*
 * Called on the writer thread when a queued write is settled. result >= 0: committed (for
 * delete and purge, the number of records affected); < 0: CDN_EFULL (dropped: the store could
 * not make room), CDN_ENOTFOUND (update of a missing object), CDN_ETOOBIG, CDN_ESHUTDOWN (queued
 * after close began), CDN_EIO.
 */
typedef void (*cdn_store_done_fn)(void *arg, int result);

struct cdn_store_stats {
    uint64_t objects;         /* metadata records (variants count separately) */
    uint64_t bytes;           /* their record and body bytes */
    uint64_t puts;            /* objects committed */
    uint64_t updates;         /* metadata-only rewrites committed */
    uint64_t deletes;         /* records removed by delete and purge */
    uint64_t soft_purges;     /* records marked stale */
    uint64_t evictions;       /* records removed to stay under the watermark or make room */
    uint64_t map_full_drops;  /* writes dropped because the map stayed full after evicting */
    uint64_t corrupt_deleted; /* invalid records deleted */
    uint64_t orphans_deleted; /* body chunks without metadata removed at open */
    uint64_t lookups;
    uint64_t lease_copies; /* lookups that copied out because max_leases were open */
    uint64_t leases_open;
    uint64_t txn_created;   /* read transaction handles created (the pool grows) */
    uint64_t txn_renewed;   /* read transactions taken from the pool */
    uint64_t write_txns;    /* write transactions committed */
    uint64_t used_pages;    /* pages in use after the last commit */
    uint64_t map_pages;     /* pages in the map */
    uint64_t high_pages;    /* the high watermark in pages */
    uint64_t touch_skipped; /* hits not recorded in the recency index (busy stripe) */
};

/*
 * Opens (creating if needed) the environment in o->dir, deletes invalid records and orphaned
 * body chunks, rebuilds the recency index and starts the writer thread. Returns 0 with *out set,
 * CDN_EINVAL (bad options), CDN_EIO (directory or LMDB failure, logged).
 */
int cdn_store_open(const struct cdn_store_opts *o, struct cdn_store **out);
/*
 * Applies every queued write, stops the writer and closes the environment. All leases must have
 * been released and every put committed or aborted.
 */
void cdn_store_close(struct cdn_store *s);

/* ---- reads: any thread ---- */

/*
 * Finds the variants stored for key. Returns 0 with *out set to a lease holding at least one
 * variant, CDN_ENOTFOUND, CDN_EINVAL (empty key), CDN_EAGAIN (no LMDB reader slot free), CDN_EIO.
 * A zero-copy lease keeps an LMDB read transaction open (holding old pages) until released; when
 * max_leases are already open the lease copies what it returns into memory it owns instead.
 * Release it with cdn_store_lease_release() from any thread (e.g. MHD's free callback).
 */
int cdn_store_lookup(struct cdn_store *s, const char *key, size_t key_len,
                     struct cdn_store_lease **out);
/* The same, given cdn_store_key_hash() of key (NULL: computed here). */
int cdn_store_lookup_hashed(struct cdn_store *s, const char *key, size_t key_len,
                            const uint8_t *key_hash, struct cdn_store_lease **out);
/* Number of variants in the lease (>= 1). */
unsigned cdn_store_lease_count(const struct cdn_store_lease *l);
/* Variant i's metadata; it and every pointer in it live until the lease is released. */
const struct cdn_store_meta *cdn_store_lease_meta(const struct cdn_store_lease *l, unsigned i);
/*
 * The body of variant i as *niov segments (in order; *niov 0 for an empty body) and records a hit
 * for it in the recency index. The segments point into the LMDB map (or into the lease's copy)
 * and live until the lease is released; the iovec array lives until the next call on this lease.
 * Returns 0, CDN_EINVAL (i out of range), CDN_ECORRUPT (body missing or damaged: treat as a miss;
 * the object is queued for deletion), CDN_ENOTFOUND (copy-out lease: the object was replaced or
 * removed since the lookup), CDN_EAGAIN / CDN_EIO as for lookup.
 */
int cdn_store_lease_body(struct cdn_store_lease *l, unsigned i, const struct iovec **iov,
                         unsigned *niov);
/* True when the lease holds copies rather than pointers into the map. */
bool cdn_store_lease_copied(const struct cdn_store_lease *l);
/* Ends the lease: the read transaction goes back to the pool and copies are freed. */
void cdn_store_lease_release(struct cdn_store_lease *l);

/* ---- writes: any thread, applied by the writer thread ---- */

/*
 * Starts a streaming put: the body is fed with cdn_store_put_write() as it arrives, full chunks
 * are written to LMDB as they fill (possibly over many transactions), and nothing is visible
 * until cdn_store_put_commit() writes the metadata. Never NULL. The handle belongs to the caller
 * (one thread at a time) until commit or abort, which consume it.
 */
struct cdn_store_put *cdn_store_put_begin(struct cdn_store *s);
/*
 * Appends n body bytes (copied). Returns 0; CDN_ETOOBIG past max_object_size; CDN_EFULL when an
 * earlier chunk could not be stored; CDN_ESHUTDOWN when the store is closing. After an error the
 * put can only be aborted (or committed, which then reports the same error).
 */
int cdn_store_put_write(struct cdn_store_put *p, const void *data, size_t n);
/* The body's announced length, before the first write: chunk buffers are then sized to it (a
 * hint; more or fewer bytes may still come). */
void cdn_store_put_expect(struct cdn_store_put *p, uint64_t size);
/*
 * Writes the metadata (m is copied; m->body_size is ignored, the bytes written count), making the
 * object visible and replacing the variant of m->key with the same vary string, if any. When the
 * key already holds max_variants other variants the oldest is deleted. done (may be NULL) gets 0
 * or an error (CDN_EINVAL: empty key, status outside 100..999; CDN_ETOOBIG: record over 1 MiB or
 * body over max_object_size; CDN_EFULL); on error every chunk of this put is deleted.
 */
void cdn_store_put_commit(struct cdn_store_put *p, const struct cdn_store_meta *m,
                          cdn_store_done_fn done, void *arg);
/* Drops the put: chunks already written are deleted. */
void cdn_store_put_abort(struct cdn_store_put *p);
/* put_begin + put_write + put_commit for a body already in memory. */
void cdn_store_put(struct cdn_store *s, const struct cdn_store_meta *m, const void *body,
                   size_t len, cdn_store_done_fn done, void *arg);

/*
 * Rewrites the metadata of the variant (m->key, m->vary) keeping its body (e.g. after a 304):
 * status, headers, tags, flags and times come from m. done gets 0 or CDN_ENOTFOUND.
 */
void cdn_store_update(struct cdn_store *s, const struct cdn_store_meta *m, cdn_store_done_fn done,
                      void *arg);
/* Deletes one variant; done gets the number of records deleted (0 or 1). */
void cdn_store_delete(struct cdn_store *s, const char *key, size_t key_len, const void *vary,
                      size_t vary_len, cdn_store_done_fn done, void *arg);

enum cdn_store_purge {
    CDN_PURGE_URL,    /* every variant of the key equal to pattern */
    CDN_PURGE_PREFIX, /* every object whose key starts with pattern */
    CDN_PURGE_TAG,    /* every object whose tags include the name pattern (scans all records) */
    CDN_PURGE_ALL     /* everything; pattern ignored */
};
/*
 * Deletes (soft=false) or marks CDN_STORE_STALE (soft=true) the matching objects. The commit is
 * synced to disk before done is called with the number of records affected, so an acknowledged
 * purge survives a crash. A purge touching many records is split over several transactions
 * (other writes proceed in between; objects stored meanwhile may or may not be purged). The
 * pattern is copied.
 */
void cdn_store_purge(struct cdn_store *s, enum cdn_store_purge kind, const char *pattern,
                     size_t len, bool soft, cdn_store_done_fn done, void *arg);

/*
 * Blocks until every write queued before the call is settled (and eviction it caused is done).
 * Returns 0 or CDN_ESHUTDOWN. Not from the writer thread (a done callback).
 */
int cdn_store_flush(struct cdn_store *s);

/* Body bytes handed to put_write and not yet written by the writer: producers pause above a
 * bound of their choosing so a slow disk cannot make memory grow. Any thread. */
uint64_t cdn_store_backlog(struct cdn_store *s);

/* A snapshot of the counters. Any thread. */
void cdn_store_stats(struct cdn_store *s, struct cdn_store_stats *out);

#endif
