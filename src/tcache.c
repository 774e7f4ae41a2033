/*
 * tcache.c: see tcache.h. The cache is reached through a thread-local pointer; a pthread key
 * exists only so that its destructor empties the cache of a thread that ends.
 */
#include "cdnode/tcache.h"
#include "cdnode/common.h"

#include <pthread.h>
#include <stdlib.h>

struct slot {
    void *obj;
    void (*destroy)(void *);
};

struct tcache {
    unsigned n[CDN_TC_KINDS];
    struct slot s[CDN_TC_KINDS][CDN_TCACHE_DEPTH];
};

static pthread_once_t once = PTHREAD_ONCE_INIT;
static pthread_key_t key;
static _Thread_local struct tcache *mine;

static void
empty(struct tcache *t)
{
    for (unsigned k = 0; k < CDN_TC_KINDS; k++)
        while (t->n[k] > 0) {
            struct slot *sl = &t->s[k][--t->n[k]];
            sl->destroy(sl->obj);
        }
}

static void
at_thread_end(void *p)
{
    struct tcache *t = p;
    mine = NULL;
    empty(t);
    free(t);
}

static void
make_key(void)
{
    CDN_ASSERT(pthread_key_create(&key, at_thread_end) == 0);
}

void *
cdn_tcache_get(enum cdn_tcache_kind kind)
{
    struct tcache *t = mine;
    if (t == NULL || t->n[kind] == 0)
        return NULL;
    return t->s[kind][--t->n[kind]].obj;
}

void
cdn_tcache_put(enum cdn_tcache_kind kind, void *obj, void (*destroy)(void *))
{
    struct tcache *t = mine;
    if (t == NULL) {
        pthread_once(&once, make_key);
        t = cdn_calloc(1, sizeof(*t));
        CDN_ASSERT(pthread_setspecific(key, t) == 0);
        mine = t;
    }
    if (t->n[kind] == CDN_TCACHE_DEPTH) {
        destroy(obj);
        return;
    }
    t->s[kind][t->n[kind]++] = (struct slot){obj, destroy};
}

void
cdn_tcache_flush(void)
{
    if (mine != NULL)
        empty(mine);
}
