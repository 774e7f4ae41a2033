/*
 * upstream.h: the upstream thread. It owns one libcurl multi handle and carries out fetches
 * (fetch.h) against origins or parent nodes: connections are kept alive and reused, response
 * framing and header sizes are checked before anything reaches a client, and connect, first-byte
 * and idle timeouts are enforced here (suspended MHD connections never time out by themselves).
 *
 * Any thread may submit; everything else happens on the upstream thread, which never touches MHD
 * responses (readers build those on their own workers).
 *
 * The configured origins form a pool (pool.h): each transfer goes to the member the balance policy
 * picks. Connect failures (refused, unresolvable, connect timeout) count against a member and mark
 * it down after origin_fall in a row; an idempotent request without a body whose connect failed is
 * started again once on another member, unseen by the fetch's readers (nothing was published).
 * Health checks run on the same multi handle: an HTTP GET of origin_health_path to every member
 * when configured (2xx/3xx: success), else a TCP connect to each member that is down; either way
 * every origin_health_interval. At most max_inflight_misses transfers are queued or running; more
 * fail at once with 503.
 */
#ifndef CDNODE_UPSTREAM_H
#define CDNODE_UPSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cdn_config;
struct cdn_fetch;
struct cdn_upstream;

struct cdn_upstream_stats {
    uint64_t requests;      /* transfers started */
    uint64_t errors;        /* transfers that failed (connect, timeout, protocol) */
    uint64_t bytes_in;      /* response body bytes received */
    uint64_t active;        /* transfers in flight now */
    uint64_t retries;       /* transfers started again on another origin after a connect failure */
    uint64_t shed;          /* fetches refused with 503: max_inflight_misses were in flight */
    uint64_t marked_down;   /* origins marked down (healthy -> down transitions) */
    uint64_t marked_up;     /* origins marked up again (down -> healthy transitions) */
    uint64_t health_checks; /* health checks (HTTP or connect) completed */
};

/* One upstream (parent or origin) as the status page shows it. */
struct cdn_origin_status {
    char url[256]; /* the configured URL (cut short past 255 bytes) */
    bool parent;   /* a parent node rather than an origin */
    bool healthy;
    unsigned outstanding; /* transfers to it in flight now */
    uint64_t requests;    /* transfers started to it, ever */
    uint64_t failures;    /* failures counted against it (connects, health checks), ever */
};

/*
 * Starts the thread. The config must outlive the upstream (its parents and origins are copied, and
 * cdn_upstream_reconfigure replaces them). Returns NULL (and logs) if libcurl
 * cannot be initialized or the thread cannot start.
 */
struct cdn_upstream *cdn_upstream_start(const struct cdn_config *cfg);
/*
 * Queues the fetch; the upstream takes its own reference. Any thread. The fetch fails at once with
 * 503 after stop has begun ("node is shutting down"), or when max_inflight_misses transfers are
 * already queued or running ("node overloaded: N requests in flight upstream"; counted in shed).
 */
void cdn_upstream_submit(struct cdn_upstream *up, struct cdn_fetch *f);
/* Fails every fetch still in flight (their readers are woken), joins the thread, frees. */
void cdn_upstream_stop(struct cdn_upstream *up);
/* Counters. Any thread. */
void cdn_upstream_stats(struct cdn_upstream *up, struct cdn_upstream_stats *out);
/* Fills out[0..max) with the upstreams, parents then origins, each in configuration order;
 * returns how many there are (may exceed max). Any thread; a consistent snapshot. */
size_t cdn_upstream_origins(struct cdn_upstream *up, struct cdn_origin_status *out, size_t max);
/*
 * Applies cfg's parents and origins (and their balance, fall and rise): fetches starting from now
 * on use them, fetches in flight finish where they are, and an upstream present before and after
 * keeps its health. cfg need not outlive the call (the URLs are copied). Any thread; returns
 * before the upstream thread has installed the new set.
 */
void cdn_upstream_reconfigure(struct cdn_upstream *up, const struct cdn_config *cfg);

#endif
