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
 * Purge fan-out (peers.h): with purge_parents or purge_children configured, a purge that was
 * applied here is then forwarded as POST /purge?<same parameters> (a PURGE request as
 * ?url=<its absolute URL>) to every parent at once, then to every child at once, each request
 * bounded by purge_peer_timeout, with the purge_peer_token (else admin_token) and
 * CDN-Purge-Forwarded: <cdn_id>. A purge carrying that field is applied here and not forwarded.
 * The answer then reports each peer, parents first, in configuration order:
 *
 *   {"purged": 3, "peers": [
 *     {"peer": "http://10.0.0.1:9090", "role": "parent", "status": 200, "purged": 2},
 *     {"peer": "http://10.0.1.1:9090", "role": "child", "error": "timeout after 2000 ms"},
 *     {"peer": "http://10.0.1.2:9090", "role": "child", "status": 401, "error": "HTTP 401"}]}
 *
 * and is 200 whatever the peers did (the purge happened here). A local failure is answered as
 * above and not forwarded. /metrics counts purges by origin (cdnode_admin_purges_total{from=
 * "client"|"peer"}), peer requests (cdnode_purge_peer_requests_total) and the failed ones
 * (cdnode_purge_peer_failures_total).
 *
 * Started, reconfigured and stopped by the main thread only.
 */
#ifndef CDNODE_ADMIN_H
#define CDNODE_ADMIN_H

struct cdn_config;
struct cdn_front;
struct cdn_upstream;
struct cdn_cache;
struct cdn_collapse;
struct cdn_admin;

/* Returns NULL after logging why the listener could not start. fe, up, cache and collapse
 * (counters only; may be NULL) must outlive the listener; cfg is only read during the call
 * (what the listener keeps of it is copied). */
struct cdn_admin *cdn_admin_start(const struct cdn_config *cfg, struct cdn_front *fe,
                                  struct cdn_upstream *up, struct cdn_cache *cache,
                                  struct cdn_collapse *collapse);
/*
 * Applies admin_token, purge_parents, purge_children, purge_peer_token and purge_peer_timeout
 * of cfg (copied: cfg may be freed on return) to requests that start from now on; requests in
 * flight, fan-outs included, finish with the values they started with. Connections are kept.
 * Returns 0.
 */
int cdn_admin_reconfigure(struct cdn_admin *a, const struct cdn_config *cfg);
/* Refuses new purges, waits for the store to settle those queued (bounded), then stops. Before
 * the store is closed. Fan-outs waiting on peers are given up to 30 s, then reported failed. */
void cdn_admin_stop(struct cdn_admin *a);

#endif
