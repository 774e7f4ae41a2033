/*
 * evict.h: the store's in-memory recency index, which chooses what eviction deletes.
 *
 * One entry per stored metadata record, keyed by the record's LMDB key (CDN_RECENCY_KEY_LEN
 * bytes). Recency is never written to LMDB: hits bump an entry's stamp in memory only, and after
 * a restart the index is rebuilt from the metadata (all stamps zero, ties broken by the time the
 * response was stored). The index is split into stripes, each with its own mutex, so hits on
 * different keys rarely contend; a hit that finds its stripe busy is skipped rather than waited
 * for (recency is a hint, not a contract).
 *
 * Threads: cdn_recency_put/remove/clear are called by the store's writer thread only (after the
 * LMDB commit that made them true); cdn_recency_touch by any thread; cdn_recency_victims by the
 * writer; the counters from any thread.
 */
#ifndef CDNODE_EVICT_H
#define CDNODE_EVICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* SHA-256 of the primary key (32 bytes) followed by 8 bytes identifying the variant. */
#define CDN_RECENCY_KEY_LEN 40

struct cdn_recency;

/* An empty index. Never NULL. */
struct cdn_recency *cdn_recency_new(void);
/* Frees the index; no other thread may be using it. */
void cdn_recency_free(struct cdn_recency *r);

/*
 * Inserts or replaces the entry for key. size: bytes the object occupies (record + body);
 * expires_at: wall seconds after which the object is only worth revalidating (0: unknown);
 * born: when it was stored (orders entries whose stamps tie); stale: soft-purged, evict early.
 * A new entry gets the current stamp (most recently used); rebuild=true gives stamp 0 instead
 * (used while scanning the store at open). Writer thread only.
 */
void cdn_recency_put(struct cdn_recency *r, const uint8_t *key, uint64_t size, int64_t expires_at,
                     int64_t born, bool stale, bool rebuild);
/* Removes the entry; returns false when there was none. Writer thread only. */
bool cdn_recency_remove(struct cdn_recency *r, const uint8_t *key);
/* Removes every entry. Writer thread only. */
void cdn_recency_clear(struct cdn_recency *r);

/* Marks key as just used. Any thread; never blocks: returns false if the stripe was busy or the
 * key is unknown (the hit is then simply not recorded). */
bool cdn_recency_touch(struct cdn_recency *r, const uint8_t *key);

/*
 * Writes up to max keys into out (max * CDN_RECENCY_KEY_LEN bytes), best victims first: entries
 * that are stale or expired at `now` (wall seconds), then least recently used, then oldest.
 * Returns how many were written. Writer thread only (entries may only disappear through it).
 */
size_t cdn_recency_victims(struct cdn_recency *r, int64_t now, uint8_t *out, size_t max);

uint64_t cdn_recency_count(const struct cdn_recency *r);
uint64_t cdn_recency_bytes(const struct cdn_recency *r);
/* Touches skipped because the stripe was busy. */
uint64_t cdn_recency_touch_skipped(const struct cdn_recency *r);

#endif
