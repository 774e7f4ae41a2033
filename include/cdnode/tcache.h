/*
 * tcache.h: per-thread caches of freed objects that every request makes and drops (the request
 * context, the store lease). A thread's next request takes what its last one put back: no lock,
 * no allocator call. Each cache holds at most CDN_TCACHE_DEPTH objects per kind; a full cache
 * destroys what it is given. What a thread still holds is destroyed when the thread ends, or by
 * cdn_tcache_flush() on that thread (the main thread before exit).
 */
#ifndef CDNODE_TCACHE_H
#define CDNODE_TCACHE_H

enum cdn_tcache_kind { CDN_TC_REQ, CDN_TC_LEASE, CDN_TC_KINDS };

#define CDN_TCACHE_DEPTH 32

/* An object of this kind put back on this thread, or NULL. */
void *cdn_tcache_get(enum cdn_tcache_kind kind);
/* Keeps obj for this thread's next cdn_tcache_get(kind); `destroy` frees it if it is never
 * taken again (now, when the cache is full). */
void cdn_tcache_put(enum cdn_tcache_kind kind, void *obj, void (*destroy)(void *));
/* Destroys everything this thread's cache holds. */
void cdn_tcache_flush(void);

#endif
