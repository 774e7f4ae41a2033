/*
 * front.h: the client-facing HTTP listener(s), built on libmicrohttpd with an epoll thread pool
 * and suspend/resume (DESIGN.md §3). Validates each request, refuses loops, forwards through the
 * upstream thread and streams responses back. Enforces connection_limit (a connection beyond it
 * gets a 503 and is closed at once) and request_head_timeout (a connection without a complete
 * request head that long after opening or after its previous response is closed), for both
 * listeners together; a thread of its own closes the overdue connections.
 *
 * Started and stopped by the main thread only.
 */
#ifndef CDNODE_FRONT_H
#define CDNODE_FRONT_H

#include <stdint.h>

struct cdn_accesslog;
struct cdn_cache;
struct cdn_collapse;
struct cdn_config;
struct cdn_upstream;
struct cdn_front;

/* Upper bounds (microseconds) of the request latency histogram's buckets; one more bucket
 * counts everything slower. */
#define CDN_LATENCY_BUCKETS 14
extern const uint64_t cdn_latency_bounds_us[CDN_LATENCY_BUCKETS];

struct cdn_front_stats {
    uint64_t requests;     /* requests received */
    uint64_t rejected;     /* refused as malformed (400/413/414/431) */
    uint64_t loops;        /* answered 508 */
    uint64_t active;       /* requests in progress now */
    uint64_t bytes_out;    /* response body bytes handed to libmicrohttpd */
    uint64_t hits;         /* served fresh from the store */
    uint64_t stale;        /* served stale (max-stale, stale-while-revalidate, stale-if-error) */
    uint64_t revalidated;  /* served from the store after a 304 from upstream */
    uint64_t misses;       /* GET/HEAD that went upstream */
    uint64_t stored;       /* responses the store took */
    uint64_t unshared;     /* followers that went upstream alone (response not shareable) */
    uint64_t connections;  /* client connections open now (both listeners) */
    uint64_t conn_refused; /* connections answered 503 (TLS: closed) at connection_limit */
    uint64_t head_timeouts; /* connections closed for want of a request head within
                               request_head_timeout (after opening or after a response) */
    uint64_t latency[CDN_LATENCY_BUCKETS + 1]; /* requests by total time, per bucket (not
                                                  cumulative; the last is +Inf) */
    uint64_t latency_sum_us;
};

/*
 * Opens the plain listener (cfg->listen) and, when configured, the TLS one. Returns NULL after
 * logging why (address in use, unreadable certificate, ...). cfg, up, cache (NULL: forward
 * everything), collapse (NULL: no collapsing) and alog (NULL: no access log) must outlive the
 * front; collapse must also outlive the cache, whose last commits settle fetches registered in it.
 */
struct cdn_front *cdn_front_start(const struct cdn_config *cfg, struct cdn_upstream *up,
                                  struct cdn_cache *cache, struct cdn_collapse *collapse,
                                  struct cdn_accesslog *alog);
/* Stops accepting new connections; requests in progress continue. */
void cdn_front_quiesce(struct cdn_front *fe);
/* Requests in progress now. */
uint64_t cdn_front_active(struct cdn_front *fe);
/* Closes every connection and frees. Every suspended request must have been woken first
 * (cdn_upstream_stop does that by failing the fetches). */
void cdn_front_stop(struct cdn_front *fe);
void cdn_front_stats(struct cdn_front *fe, struct cdn_front_stats *out);
/* Port actually bound by the plain listener (useful with port 0). */
unsigned cdn_front_port(struct cdn_front *fe);

#endif
