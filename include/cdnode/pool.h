/*
 * pool.h: choosing which of N upstreams (origins or parent nodes) a request goes to, and keeping
 * score of their health. Pure: no clock, no I/O, no locking; the upstream thread owns a pool and
 * serializes every call on it (the admin thread reads it under the same lock).
 *
 * Policies (DESIGN.md §6):
 *  - round-robin: healthy members in turn.
 *  - least-outstanding: the healthy member with the fewest requests in flight; ties go in
 *    round-robin order, so an idle pool still spreads.
 *  - hash: rendezvous (highest random weight) hashing of the cache key over the healthy members,
 *    so each object lives on one parent, and adding or removing a member moves only the keys that
 *    member wins or held (about 1/N). Requests without a key fall back to round-robin.
 * Unhealthy members are skipped. When every candidate is unhealthy, the one that failed least
 * recently is still chosen rather than refusing the request.
 *
 * Health: `fall` consecutive failures mark a healthy member down, `rise` consecutive successes
 * mark a down member up. What counts as a failure or a success is the caller's business (connect
 * failures, health checks).
 */
#ifndef CDNODE_POOL_H
#define CDNODE_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CDN_POOL_MAX 16 /* members; a bit each in an exclusion mask */

enum cdn_balance {
    CDN_BALANCE_ROUND_ROBIN = 0,
    CDN_BALANCE_LEAST_OUTSTANDING,
    CDN_BALANCE_HASH,
};

/* "round-robin", "least-outstanding" or "hash". Returns 0 or CDN_EINVAL. */
int cdn_balance_parse(const char *s, enum cdn_balance *out);
/* The name cdn_balance_parse() takes (static string). */
const char *cdn_balance_name(enum cdn_balance b);

struct cdn_pool_member {
    uint64_t seed; /* rendezvous identity, from the member's name */
    bool healthy;
    unsigned outstanding; /* requests begun and not ended */
    unsigned fails;       /* consecutive failures */
    unsigned oks;         /* consecutive successes */
    uint64_t failed_seq;  /* pool's failure sequence number of the last failure; 0: never */
    uint64_t requests;    /* requests begun, ever */
    uint64_t failures;    /* failures reported, ever */
};

/* Callers allocate pools (the upstream embeds one); fields are read-only outside pool.c. */
struct cdn_pool {
    enum cdn_balance policy;
    unsigned fall, rise;
    size_t n;
    size_t rr; /* where the next round-robin scan starts */
    uint64_t fail_seq;
    struct cdn_pool_member m[CDN_POOL_MAX];
};

/*
 * Sets up a pool of n (1..CDN_POOL_MAX) members, all healthy. names[i] identifies member i for
 * hashing (the upstream URL): a member keeps its keys whatever its position in the list. fall and
 * rise are at least 1. The names are not kept.
 */
void cdn_pool_init(struct cdn_pool *p, enum cdn_balance policy, unsigned fall, unsigned rise,
                   const char *const *names, size_t n);

/*
 * The member for a request with cache key `key` (NULL: none), never one whose bit is set in
 * `exclude` (bit i = member i, for a retry: the members already tried). Returns its index, or -1
 * when every member is excluded. Advances the round-robin position; does not count the request
 * (cdn_pool_begin does).
 */
int cdn_pool_pick(struct cdn_pool *p, const char *key, uint32_t exclude);

/* A request to member i starts / ends (outstanding count, request total). */
void cdn_pool_begin(struct cdn_pool *p, size_t i);
void cdn_pool_end(struct cdn_pool *p, size_t i);

enum cdn_pool_change { CDN_POOL_SAME, CDN_POOL_WENT_DOWN, CDN_POOL_WENT_UP };
/*
 * One observation of member i: ok = it answered, !ok = it could not be reached. Returns the
 * transition it caused, if any; the consecutive counts (m[i].fails, m[i].oks) say how many
 * observations it took.
 */
enum cdn_pool_change cdn_pool_report(struct cdn_pool *p, size_t i, bool ok);

#endif
