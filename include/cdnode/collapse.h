/*
 * collapse.h: the table of in-flight cache fetches, so concurrent misses (or revalidations) of
 * one key become one upstream request (DESIGN.md §5).
 *
 * An entry exists from the moment a leader registers its fetch until that fetch settles (body
 * stored, failed, or its head turned out not to be stored). Followers attach to the leader's
 * fetch as extra readers and are woken by the fetch itself, never by polling. When the head says
 * the response will not be stored, the entry becomes a hit-for-miss marker for a while: requests
 * for that key then go upstream in parallel instead of queueing behind each other.
 *
 * One mutex guards the table; it is taken only on the miss path, never on a HIT.
 */
#ifndef CDNODE_COLLAPSE_H
#define CDNODE_COLLAPSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cdn_fetch;
struct cdn_waiter;
struct cdn_collapse;

struct cdn_collapse_stats {
    uint64_t leaders;     /* fetches registered */
    uint64_t followers;   /* requests that joined an in-flight fetch */
    uint64_t hit_for_miss; /* requests sent upstream alone because of a hit-for-miss marker */
    uint64_t markers;     /* hit-for-miss markers set */
    uint64_t entries;     /* entries in the table now */
};

/* hfm_ms: how long a hit-for-miss marker lasts. Never NULL. */
struct cdn_collapse *cdn_collapse_new(int64_t hfm_ms);
/* Every registered fetch must have settled. */
void cdn_collapse_free(struct cdn_collapse *c);

enum cdn_join { CDN_JOIN_LEAD, CDN_JOIN_FOLLOW, CDN_JOIN_ALONE };

/*
 * Joins or leads the fetch for key, attaching w:
 *  - FOLLOW: an in-flight fetch could still be read from its first byte: w is attached to it and
 *    *out holds a new reference to it (candidate is untouched: the caller drops it);
 *  - LEAD: candidate is registered and w attached to it; *out = candidate (the caller's reference
 *    stays the caller's); the caller submits it;
 *  - ALONE: a hit-for-miss marker is set, or the in-flight fetch is too far along to share:
 *    nothing is registered or attached; the caller sends candidate on its own.
 * Any MHD worker.
 */
enum cdn_join cdn_collapse_join(struct cdn_collapse *c, const char *key, size_t klen,
                                struct cdn_waiter *w, struct cdn_fetch *candidate,
                                struct cdn_fetch **out);

/* Registers a fetch nobody reads (a background refresh) unless one is in flight for key.
 * Returns true when registered (the caller submits it). */
bool cdn_collapse_lead_detached(struct cdn_collapse *c, const char *key, size_t klen,
                                struct cdn_fetch *f);

void cdn_collapse_stats(struct cdn_collapse *c, struct cdn_collapse_stats *out);

#endif
