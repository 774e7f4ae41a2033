/*
 * evict.c: the recency index (see evict.h for the model).
 *
 * Data: STRIPES independent chained hash tables, each under its own mutex. An entry carries a
 * stamp taken from one global counter (relaxed atomic increment: no lock is shared between
 * stripes). Least recently used = smallest stamp. There is no LRU list: keeping a list in order
 * would need one lock over all stripes on every hit, while victims are chosen rarely (when the
 * store crosses its high watermark), so a bounded heap pass over all entries is the cheaper
 * trade.
 *
 * Invariants: an entry is in exactly one stripe, chosen from its key hash; count and bytes equal
 * the sums over all stripes (updated under the stripe lock, read without it).
 */
#include "cdnode/evict.h"
#include "cdnode/common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#define STRIPES 64
#define INITIAL_BUCKETS 64

struct entry {
    struct entry *next;
    uint8_t key[CDN_RECENCY_KEY_LEN];
    bool stale;
    uint64_t size;
    int64_t expires_at;
    int64_t born;
    uint64_t stamp;
};

struct stripe {
    pthread_mutex_t mu;
    struct entry **buckets;
    size_t nbuckets; /* power of two */
    size_t n;
};

struct cdn_recency {
    struct stripe stripes[STRIPES];
    _Atomic uint64_t clock;
    _Atomic uint64_t count;
    _Atomic uint64_t bytes;
    _Atomic uint64_t touch_skipped;
};

static uint64_t
key_hash(const uint8_t *key)
{
    /* The key is a SHA-256 prefix plus a variant hash: already uniform, so mixing two words is
     * enough, and the variant part keeps variants of one URL apart. */
    uint64_t a, b;
    memcpy(&a, key, 8);
    memcpy(&b, key + 32, 8);
    return a ^ (b * 0x9e3779b97f4a7c15ull);
}

static struct stripe *
stripe_of(struct cdn_recency *r, uint64_t h)
{
    return &r->stripes[h % STRIPES];
}

static struct entry **
slot_of(struct stripe *st, uint64_t h, const uint8_t *key)
{
    struct entry **pp = &st->buckets[(h / STRIPES) & (st->nbuckets - 1)];
    while (*pp != NULL && memcmp((*pp)->key, key, CDN_RECENCY_KEY_LEN) != 0)
        pp = &(*pp)->next;
    return pp;
}

static void
stripe_grow(struct stripe *st)
{
    size_t nb = st->nbuckets * 2;
    struct entry **b = cdn_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < st->nbuckets; i++) {
        struct entry *e = st->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            struct entry **head = &b[(key_hash(e->key) / STRIPES) & (nb - 1)];
            e->next = *head;
            *head = e;
            e = next;
        }
    }
    free(st->buckets);
    st->buckets = b;
    st->nbuckets = nb;
}

struct cdn_recency *
cdn_recency_new(void)
{
    struct cdn_recency *r = cdn_calloc(1, sizeof(*r));
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_init(&r->stripes[i].mu, NULL);
        r->stripes[i].nbuckets = INITIAL_BUCKETS;
        r->stripes[i].buckets = cdn_calloc(INITIAL_BUCKETS, sizeof(struct entry *));
    }
    atomic_init(&r->clock, 1);
    return r;
}

static void
stripe_empty(struct stripe *st)
{
    for (size_t i = 0; i < st->nbuckets; i++) {
        struct entry *e = st->buckets[i];
        while (e != NULL) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
        st->buckets[i] = NULL;
    }
    st->n = 0;
}

void
cdn_recency_free(struct cdn_recency *r)
{
    if (r == NULL)
        return;
    for (size_t i = 0; i < STRIPES; i++) {
        stripe_empty(&r->stripes[i]);
        free(r->stripes[i].buckets);
        pthread_mutex_destroy(&r->stripes[i].mu);
    }
    free(r);
}

void
cdn_recency_put(struct cdn_recency *r, const uint8_t *key, uint64_t size, int64_t expires_at,
                int64_t born, bool stale, bool rebuild)
{
    uint64_t h = key_hash(key);
    struct stripe *st = stripe_of(r, h);
    uint64_t stamp = rebuild ? 0 : atomic_fetch_add_explicit(&r->clock, 1, memory_order_relaxed);
    pthread_mutex_lock(&st->mu);
    struct entry **pp = slot_of(st, h, key);
    struct entry *e = *pp;
    if (e == NULL) {
        e = cdn_calloc(1, sizeof(*e));
        memcpy(e->key, key, CDN_RECENCY_KEY_LEN);
        *pp = e;
        st->n++;
        atomic_fetch_add(&r->count, 1);
    } else {
        atomic_fetch_sub(&r->bytes, e->size);
    }
    e->size = size;
    e->expires_at = expires_at;
    e->born = born;
    e->stale = stale;
    e->stamp = stamp;
    atomic_fetch_add(&r->bytes, size);
    if (st->n > st->nbuckets * 2)
        stripe_grow(st);
    pthread_mutex_unlock(&st->mu);
}

bool
cdn_recency_remove(struct cdn_recency *r, const uint8_t *key)
{
    uint64_t h = key_hash(key);
    struct stripe *st = stripe_of(r, h);
    pthread_mutex_lock(&st->mu);
    struct entry **pp = slot_of(st, h, key);
    struct entry *e = *pp;
    if (e != NULL) {
        *pp = e->next;
        st->n--;
        atomic_fetch_sub(&r->count, 1);
        atomic_fetch_sub(&r->bytes, e->size);
        free(e);
    }
    pthread_mutex_unlock(&st->mu);
    return e != NULL;
}

void
cdn_recency_clear(struct cdn_recency *r)
{
    for (size_t i = 0; i < STRIPES; i++) {
        pthread_mutex_lock(&r->stripes[i].mu);
        stripe_empty(&r->stripes[i]);
        pthread_mutex_unlock(&r->stripes[i].mu);
    }
    atomic_store(&r->count, 0);
    atomic_store(&r->bytes, 0);
}

bool
cdn_recency_touch(struct cdn_recency *r, const uint8_t *key)
{
    uint64_t h = key_hash(key);
    struct stripe *st = stripe_of(r, h);
    if (pthread_mutex_trylock(&st->mu) != 0) {
        atomic_fetch_add_explicit(&r->touch_skipped, 1, memory_order_relaxed);
        return false;
    }
    struct entry *e = *slot_of(st, h, key);
    if (e != NULL)
        e->stamp = atomic_fetch_add_explicit(&r->clock, 1, memory_order_relaxed);
    pthread_mutex_unlock(&st->mu);
    return e != NULL;
}

/* ---- victim selection: a max-heap of the best `max` candidates seen so far ---- */

struct cand {
    int rank; /* 0: stale or expired, 1: live */
    uint64_t stamp;
    int64_t born;
    uint8_t key[CDN_RECENCY_KEY_LEN];
};

/* Whether a should be evicted before b. */
static bool
cand_before(const struct cand *a, const struct cand *b)
{
    if (a->rank != b->rank)
        return a->rank < b->rank;
    if (a->stamp != b->stamp)
        return a->stamp < b->stamp;
    if (a->born != b->born)
        return a->born < b->born;
    return memcmp(a->key, b->key, CDN_RECENCY_KEY_LEN) < 0;
}

static void
heap_sift_down(struct cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, top = i;
        if (l < n && cand_before(&h[top], &h[l]))
            top = l;
        if (r < n && cand_before(&h[top], &h[r]))
            top = r;
        if (top == i)
            return;
        struct cand t = h[i];
        h[i] = h[top];
        h[top] = t;
        i = top;
    }
}

static void
heap_sift_up(struct cand *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_before(&h[p], &h[i]))
            return;
        struct cand t = h[i];
        h[i] = h[p];
        h[p] = t;
        i = p;
    }
}

size_t
cdn_recency_victims(struct cdn_recency *r, int64_t now, uint8_t *out, size_t max)
{
    if (max == 0)
        return 0;
    struct cand *heap = cdn_malloc(max * sizeof(*heap));
    size_t n = 0;
    for (size_t s = 0; s < STRIPES; s++) {
        struct stripe *st = &r->stripes[s];
        pthread_mutex_lock(&st->mu);
        for (size_t b = 0; b < st->nbuckets; b++) {
            for (struct entry *e = st->buckets[b]; e != NULL; e = e->next) {
                struct cand c = {
                    .rank = (e->stale || (e->expires_at > 0 && e->expires_at <= now)) ? 0 : 1,
                    .stamp = e->stamp,
                    .born = e->born,
                };
                memcpy(c.key, e->key, CDN_RECENCY_KEY_LEN);
                if (n < max) {
                    heap[n] = c;
                    heap_sift_up(heap, n++);
                } else if (cand_before(&c, &heap[0])) {
                    heap[0] = c;
                    heap_sift_down(heap, n, 0);
                }
            }
        }
        pthread_mutex_unlock(&st->mu);
    }
    /* Heap sort: pop the worst to the end until the array is ordered best first. */
    for (size_t end = n; end > 1; end--) {
        struct cand t = heap[0];
        heap[0] = heap[end - 1];
        heap[end - 1] = t;
        heap_sift_down(heap, end - 1, 0);
    }
    for (size_t i = 0; i < n; i++)
        memcpy(out + i * CDN_RECENCY_KEY_LEN, heap[i].key, CDN_RECENCY_KEY_LEN);
    free(heap);
    return n;
}

uint64_t
cdn_recency_count(const struct cdn_recency *r)
{
    return atomic_load(&((struct cdn_recency *)r)->count);
}

uint64_t
cdn_recency_bytes(const struct cdn_recency *r)
{
    return atomic_load(&((struct cdn_recency *)r)->bytes);
}

uint64_t
cdn_recency_touch_skipped(const struct cdn_recency *r)
{
    return atomic_load(&((struct cdn_recency *)r)->touch_skipped);
}
