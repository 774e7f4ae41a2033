/*
 * admin.h: the admin listener, a second libmicrohttpd daemon on its own address (default
 * 127.0.0.1:9090). GET /healthz answers 200 without credentials; every other path requires
 * `Authorization: Bearer <admin_token>`, compared in constant time, else 401. With no token
 * configured, only /healthz is reachable. Serves GET /metrics (Prometheus text) from the
 * counters of the front end and the upstream, and purges (DESIGN.md §7):
 *
 *   POST /purge?url=<absolute URL>      every variant of that URL's cache key (purge.h)
 *   POST /purge?prefix=<URL prefix>     every object whose key starts with it
 *   POST /purge?tag=<name>              every object tagged so (Surrogate-Key, Cache-Tag)
 *   POST /purge?all=1                   everything
 *   PURGE /path?query + Host: h         every variant of http://h/path?query (or PURGE <abs URL>)
 *
 * each with optional &soft=1 (mark stale: served again only after revalidation) for POST. The
 * answer, 200 {"purged": N} with N the records affected, is sent only once the store has synced
 * the purge to disk. Bad parameters: 400 {"error": "..."}; another method on /purge: 405; store
 * failure: 500, or 503 while stopping.
 *
 * Started and stopped by the main thread only.
 */
#ifndef CDNODE_ADMIN_H
#define CDNODE_ADMIN_H

struct cdn_config;
struct cdn_front;
struct cdn_upstream;
struct cdn_cache;
struct cdn_collapse;
struct cdn_admin;

/* Returns NULL after logging why the listener could not start. cfg, fe, up, cache and collapse
 * (counters only; may be NULL) must outlive the listener. */
struct cdn_admin *cdn_admin_start(const struct cdn_config *cfg, struct cdn_front *fe,
                                  struct cdn_upstream *up, struct cdn_cache *cache,
                                  struct cdn_collapse *collapse);
/* Refuses new purges, waits for the store to settle those queued (bounded), then stops. Before
 * the store is closed. */
void cdn_admin_stop(struct cdn_admin *a);

#endif
