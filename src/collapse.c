/*
 * collapse.c: the in-flight fetch table (see collapse.h).
 *
 * Model: a chained hash table of entries keyed by the full key string. An entry either holds a
 * fetch (with a reference) or is a hit-for-miss marker with an expiry. Entries holding a fetch are
 * removed only by that fetch's settle hook, so a fetch is never replaced while registered; a
 * fetch too far along to share makes later requests go ALONE rather than evict it. Markers are
 * dropped when found expired and by a sweep when the table grows.
 *
 * Locking: c->mu guards the table and every entry. The settle hook may run on any thread and
 * takes c->mu; the fetch's own mutex is only taken (inside cdn_fetch_try_attach) while c->mu is
 * held, never the other way round.
 */
#include "cdnode/collapse.h"
#include "cdnode/common.h"
#include "cdnode/fetch.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define COLLAPSE_MAGIC 0xc011a95eu
#define NBUCKETS 4096
#define SWEEP_AT 8192 /* entries before markers are swept */

struct entry {
    struct entry *next;
    struct cdn_collapse *c;
    struct cdn_fetch *f; /* NULL: a hit-for-miss marker */
    int64_t hfm_until;   /* monotonic ms */
    size_t klen;
    char key[];
};

struct cdn_collapse {
    uint32_t magic;
    pthread_mutex_t mu;
    int64_t hfm_ms;
    size_t n;
    struct entry *buckets[NBUCKETS];
    _Atomic uint64_t leaders, followers, hfm_hits, markers;
};

static uint32_t
hash(const char *k, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 16777619u;
    }
    return h;
}

struct cdn_collapse *
cdn_collapse_new(int64_t hfm_ms)
{
    struct cdn_collapse *c = cdn_calloc(1, sizeof(*c));
    c->magic = COLLAPSE_MAGIC;
    pthread_mutex_init(&c->mu, NULL);
    c->hfm_ms = hfm_ms;
    return c;
}

void
cdn_collapse_free(struct cdn_collapse *c)
{
    if (c == NULL)
        return;
    CDN_CHECK_MAGIC(c, COLLAPSE_MAGIC);
    for (size_t b = 0; b < NBUCKETS; b++) {
        struct entry *e = c->buckets[b];
        while (e) {
            struct entry *next = e->next;
            CDN_ASSERT(e->f == NULL); /* every registered fetch settled first */
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&c->mu);
    c->magic = 0;
    free(c);
}

/* Under mu. */
static struct entry **
find(struct cdn_collapse *c, const char *key, size_t klen)
{
    struct entry **pp = &c->buckets[hash(key, klen) % NBUCKETS];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0)
            return pp;
    return pp;
}

/* Under mu: drops expired markers everywhere (only when the table has grown). */
static void
sweep(struct cdn_collapse *c, int64_t now)
{
    for (size_t b = 0; b < NBUCKETS; b++) {
        struct entry **pp = &c->buckets[b];
        while (*pp) {
            struct entry *e = *pp;
            if (e->f == NULL && e->hfm_until <= now) {
                *pp = e->next;
                free(e);
                c->n--;
                continue;
            }
            pp = &e->next;
        }
    }
}

static void
settled(void *arg, struct cdn_fetch *f, enum cdn_settle how)
{
    struct entry *e = arg;
    struct cdn_collapse *c = e->c;
    pthread_mutex_lock(&c->mu);
    CDN_ASSERT(e->f == f);
    e->f = NULL;
    bool marker = how == CDN_SETTLE_UNSTORED && cdn_fetch_status(f) != 304 && c->hfm_ms > 0;
    if (marker) {
        e->hfm_until = cdn_now_ms() + c->hfm_ms;
        atomic_fetch_add(&c->markers, 1);
    } else {
        struct entry **pp = find(c, e->key, e->klen);
        CDN_ASSERT(*pp == e);
        *pp = e->next;
        c->n--;
        free(e);
    }
    pthread_mutex_unlock(&c->mu);
    cdn_fetch_unref(f);
}

static void
register_fetch(struct cdn_collapse *c, struct entry **pp, const char *key, size_t klen,
               struct cdn_fetch *f)
{
    struct entry *e = *pp;
    if (e == NULL) {
        e = cdn_calloc(1, sizeof(*e) + klen);
        e->c = c;
        e->klen = klen;
        memcpy(e->key, key, klen);
        *pp = e;
        c->n++;
    }
    e->f = f;
    cdn_fetch_ref(f);
    cdn_fetch_set_settle_hook(f, settled, e);
    atomic_fetch_add(&c->leaders, 1);
}

enum cdn_join
cdn_collapse_join(struct cdn_collapse *c, const char *key, size_t klen, struct cdn_waiter *w,
                  struct cdn_fetch *candidate, struct cdn_fetch **out)
{
    CDN_CHECK_MAGIC(c, COLLAPSE_MAGIC);
    int64_t now = cdn_now_ms();
    pthread_mutex_lock(&c->mu);
    if (c->n > SWEEP_AT)
        sweep(c, now);
    struct entry **pp = find(c, key, klen);
    struct entry *e = *pp;
    enum cdn_join r;
    if (e && e->f) {
        if (cdn_fetch_try_attach(e->f, w)) {
            cdn_fetch_ref(e->f);
            *out = e->f;
            atomic_fetch_add(&c->followers, 1);
            r = CDN_JOIN_FOLLOW;
        } else {
            r = CDN_JOIN_ALONE;
        }
    } else if (e && e->hfm_until > now) {
        atomic_fetch_add(&c->hfm_hits, 1);
        r = CDN_JOIN_ALONE;
    } else {
        register_fetch(c, pp, key, klen, candidate);
        cdn_fetch_attach(candidate, w);
        *out = candidate;
        r = CDN_JOIN_LEAD;
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

bool
cdn_collapse_lead_detached(struct cdn_collapse *c, const char *key, size_t klen,
                           struct cdn_fetch *f)
{
    CDN_CHECK_MAGIC(c, COLLAPSE_MAGIC);
    pthread_mutex_lock(&c->mu);
    struct entry **pp = find(c, key, klen);
    bool ok = *pp == NULL || (*pp)->f == NULL;
    if (ok)
        register_fetch(c, pp, key, klen, f);
    pthread_mutex_unlock(&c->mu);
    return ok;
}

void
cdn_collapse_stats(struct cdn_collapse *c, struct cdn_collapse_stats *out)
{
    out->leaders = atomic_load(&c->leaders);
    out->followers = atomic_load(&c->followers);
    out->hit_for_miss = atomic_load(&c->hfm_hits);
    out->markers = atomic_load(&c->markers);
    pthread_mutex_lock(&c->mu);
    out->entries = c->n;
    pthread_mutex_unlock(&c->mu);
}
