/*
 * upstream.h: the upstream thread. It owns one libcurl multi handle and carries out fetches
 * (fetch.h) against origins or parent nodes: connections are kept alive and reused, response
 * framing and header sizes are checked before anything reaches a client, and connect, first-byte
 * and idle timeouts are enforced here (suspended MHD connections never time out by themselves).
 *
 * Any thread may submit; everything else happens on the upstream thread, which never touches MHD
 * responses (readers build those on their own workers).
 */
#ifndef CDNODE_UPSTREAM_H
#define CDNODE_UPSTREAM_H

#include <stdint.h>

struct cdn_config;
struct cdn_fetch;
struct cdn_upstream;

struct cdn_upstream_stats {
    uint64_t requests;      /* transfers started */
    uint64_t errors;        /* transfers that failed (connect, timeout, protocol) */
    uint64_t bytes_in;      /* response body bytes received */
    uint64_t active;        /* transfers in flight now */
};

/*
 * Starts the thread. The config must outlive the upstream. Returns NULL (and logs) if libcurl
 * cannot be initialized or the thread cannot start.
 */
struct cdn_upstream *cdn_upstream_start(const struct cdn_config *cfg);
/* Queues the fetch; the upstream takes its own reference. Any thread. After stop has begun the
 * fetch fails at once with 503. */
void cdn_upstream_submit(struct cdn_upstream *up, struct cdn_fetch *f);
/* Fails every fetch still in flight (their readers are woken), joins the thread, frees. */
void cdn_upstream_stop(struct cdn_upstream *up);
void cdn_upstream_stats(struct cdn_upstream *up, struct cdn_upstream_stats *out);

#endif
