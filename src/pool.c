/*
 * pool.c: upstream selection and health scoring (see pool.h).
 *
 * Model: a fixed array of members, each with a healthy flag and consecutive failure/success
 * counts. Selection first narrows to the candidates (not excluded), then to the healthy ones among
 * them; if none is healthy the candidate whose last failure is oldest is returned, so a pool that
 * looks entirely down still gets traffic and can prove itself back. "Oldest" is a failure sequence
 * number, not a clock, which keeps the module pure.
 *
 * Rendezvous hashing: every (member, key) pair gets a pseudo-random weight from the member's seed
 * (a hash of its name) and the key's hash; the key goes to the candidate with the highest weight.
 * A member's weights do not depend on the other members, which is what keeps keys in place when
 * the pool changes.
 */
#include "cdnode/pool.h"
#include "cdnode/common.h"

#include <limits.h>
#include <string.h>

static const char *const balance_names[] = {
    [CDN_BALANCE_ROUND_ROBIN] = "round-robin",
    [CDN_BALANCE_LEAST_OUTSTANDING] = "least-outstanding",
    [CDN_BALANCE_HASH] = "hash",
};

int
cdn_balance_parse(const char *s, enum cdn_balance *out)
{
    for (size_t i = 0; i < CDN_ARRAY_LEN(balance_names); i++) {
        if (strcmp(s, balance_names[i]) == 0) {
            *out = (enum cdn_balance)i;
            return 0;
        }
    }
    return CDN_EINVAL;
}

const char *
cdn_balance_name(enum cdn_balance b)
{
    CDN_ASSERT((size_t)b < CDN_ARRAY_LEN(balance_names));
    return balance_names[b];
}

/* FNV-1a: cheap, and the finalizer below spreads its bits. */
static uint64_t
hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* The splitmix64 finalizer: a bijection whose every output bit depends on every input bit. */
static uint64_t
mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

void
cdn_pool_init(struct cdn_pool *p, enum cdn_balance policy, unsigned fall, unsigned rise,
              const char *const *names, size_t n)
{
    CDN_ASSERT(n >= 1 && n <= CDN_POOL_MAX);
    CDN_ASSERT(fall >= 1 && rise >= 1);
    memset(p, 0, sizeof(*p));
    p->policy = policy;
    p->fall = fall;
    p->rise = rise;
    p->n = n;
    for (size_t i = 0; i < n; i++) {
        p->m[i].seed = mix(hash_str(names[i]));
        p->m[i].healthy = true;
    }
}

static bool
candidate(const struct cdn_pool *p, size_t i, uint32_t exclude)
{
    return (exclude & (1u << i)) == 0;
}

/* First healthy candidate from the round-robin position, the fewest outstanding when asked. */
static int
pick_in_turn(struct cdn_pool *p, uint32_t exclude, bool least)
{
    int best = -1;
    for (size_t k = 0; k < p->n; k++) {
        size_t i = (p->rr + k) % p->n;
        if (!candidate(p, i, exclude) || !p->m[i].healthy)
            continue;
        if (best < 0 || (least && p->m[i].outstanding < p->m[best].outstanding))
            best = (int)i;
        if (!least)
            break;
    }
    CDN_ASSERT(best >= 0); /* the caller saw a healthy candidate */
    p->rr = ((size_t)best + 1) % p->n;
    return best;
}

static int
pick_hash(const struct cdn_pool *p, const char *key, uint32_t exclude)
{
    uint64_t kh = hash_str(key);
    int best = -1;
    uint64_t best_w = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!candidate(p, i, exclude) || !p->m[i].healthy)
            continue;
        uint64_t w = mix(p->m[i].seed ^ kh);
        if (best < 0 || w > best_w) {
            best = (int)i;
            best_w = w;
        }
    }
    return best;
}

int
cdn_pool_pick(struct cdn_pool *p, const char *key, uint32_t exclude)
{
    int fallback = -1;
    bool any_healthy = false;
    for (size_t i = 0; i < p->n; i++) {
        if (!candidate(p, i, exclude))
            continue;
        any_healthy |= p->m[i].healthy;
        if (fallback < 0 || p->m[i].failed_seq < p->m[fallback].failed_seq)
            fallback = (int)i;
    }
    if (!any_healthy)
        return fallback; /* -1 when every member is excluded */
    switch (p->policy) {
    case CDN_BALANCE_HASH:
        if (key != NULL)
            return pick_hash(p, key, exclude);
        return pick_in_turn(p, exclude, false);
    case CDN_BALANCE_LEAST_OUTSTANDING:
        return pick_in_turn(p, exclude, true);
    case CDN_BALANCE_ROUND_ROBIN:
        return pick_in_turn(p, exclude, false);
    }
    cdn_panic(__FILE__, __LINE__, "unknown balance policy");
}

void
cdn_pool_begin(struct cdn_pool *p, size_t i)
{
    CDN_ASSERT(i < p->n);
    p->m[i].outstanding++;
    p->m[i].requests++;
}

void
cdn_pool_end(struct cdn_pool *p, size_t i)
{
    CDN_ASSERT(i < p->n && p->m[i].outstanding > 0);
    p->m[i].outstanding--;
}

enum cdn_pool_change
cdn_pool_report(struct cdn_pool *p, size_t i, bool ok)
{
    CDN_ASSERT(i < p->n);
    struct cdn_pool_member *m = &p->m[i];
    if (ok) {
        m->fails = 0;
        if (m->oks < UINT_MAX)
            m->oks++;
        if (!m->healthy && m->oks >= p->rise) {
            m->healthy = true;
            return CDN_POOL_WENT_UP;
        }
        return CDN_POOL_SAME;
    }
    m->oks = 0;
    if (m->fails < UINT_MAX)
        m->fails++;
    m->failures++;
    m->failed_seq = ++p->fail_seq;
    if (m->healthy && m->fails >= p->fall) {
        m->healthy = false;
        return CDN_POOL_WENT_DOWN;
    }
    return CDN_POOL_SAME;
}
