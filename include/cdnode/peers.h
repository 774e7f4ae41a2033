/*
 * peers.h: purge fan-out, forwarding one purge this node accepted to the admin listeners of its
 * peer nodes (config keys purge_parents, purge_children, purge_peer_token, purge_peer_timeout).
 *
 * A fan-out sends `POST <peer>/purge?<query>` with `Authorization: Bearer <token>` and
 * `CDN-Purge-Forwarded: <cdn_id>` to every parent at once, waits until each has answered or
 * failed, then does the same with every child, and reports one result per peer, parents first,
 * each in the order given. A node that receives a purge carrying CDN-Purge-Forwarded applies it
 * and does not forward it again: fan-out is one hop. Each peer request is bounded by the timeout
 * (connecting included), so a fan-out ends within two timeouts.
 *
 * One thread owns a libcurl multi handle and runs every fan-out in flight; submitters only queue.
 * The pure functions below build what is sent and read what comes back.
 */
#ifndef CDNODE_PEERS_H
#define CDNODE_PEERS_H

#include <stddef.h>
#include <stdint.h>

struct cdn_arena;
struct cdn_peers;

/* The header that marks a forwarded purge; its value is the forwarding node's cdn_id. */
#define CDN_PEERS_MARKER "CDN-Purge-Forwarded"

enum cdn_peer_role { CDN_PEER_PARENT, CDN_PEER_CHILD };

/* What one peer did with a forwarded purge. */
struct cdn_peer_result {
    const char *url; /* the peer's admin URL, as configured */
    enum cdn_peer_role role;
    int status;      /* HTTP status of its answer; 0 when there was none */
    long purged;     /* its {"purged": N}; -1 unless status is 200 and the answer says N */
    char error[128]; /* "" on success, else why the peer failed, one line of ASCII */
};

/* One fan-out. Everything is copied by cdn_peers_forward(): the caller may free it on return. */
struct cdn_peers_job {
    const char *const *parents;
    size_t n_parents;
    const char *const *children;
    size_t n_children;
    const char *query;   /* what follows "/purge?" (cdn_peers_query, cdn_peers_url_query) */
    const char *token;   /* bearer token for the peers */
    const char *origin;  /* cdn_id of this node: the CDN-Purge-Forwarded value */
    const char *ca_file; /* CA certificates for https:// peers; NULL: the system store */
    unsigned timeout_ms; /* per peer request */
};

/*
 * Called once per fan-out on the peers thread (or, after cdn_peers_stop, on the thread of
 * cdn_peers_forward) with n_parents + n_children results in job order. res lives until the
 * callback returns. Keep it short: it runs on the thread that drives every fan-out.
 */
typedef void (*cdn_peers_done_fn)(void *arg, const struct cdn_peer_result *res, size_t n);

struct cdn_peers_stats {
    uint64_t forwarded; /* peer requests finished, whatever their outcome */
    uint64_t failures;  /* of those, the ones without a 200 {"purged": N} */
};

/* Starts the peers thread. Returns NULL after logging why it could not. Main thread. */
struct cdn_peers *cdn_peers_start(void);
/*
 * Queues a fan-out; done runs when every peer has answered or failed. With no peers, or once the
 * module is stopping, done runs before this returns (stopping: every peer fails with
 * "node stopping"). Any thread.
 */
void cdn_peers_forward(struct cdn_peers *p, const struct cdn_peers_job *job, cdn_peers_done_fn done,
                       void *arg);
/* Counters since start. Any thread. */
void cdn_peers_stats(struct cdn_peers *p, struct cdn_peers_stats *out);
/*
 * Ends the thread: fan-outs still in flight finish at once with "node stopping" for the peers
 * that had not answered, and later ones as cdn_peers_forward says. p stays valid. Main thread.
 */
void cdn_peers_stop(struct cdn_peers *p);
/* Stops p if needed and frees it. NULL is fine. Main thread. */
void cdn_peers_free(struct cdn_peers *p);

/* ---- pure functions: no I/O, no clock; any thread; results in arena memory ---- */

/*
 * The query string of a forwarded POST /purge from the parameters as the listener decoded them
 * (value NULL: a parameter without '='): name=value pairs joined with '&', every byte of names
 * and values other than ALPHA, DIGIT, '-', '.', '_' and '~' percent-encoded, so the peer decodes
 * exactly these pairs again.
 */
const char *cdn_peers_query(const char *const *names, const char *const *values, size_t n,
                            struct cdn_arena *a);

/*
 * The query forwarding a PURGE request: "url=<absolute URL>" (encoded as cdn_peers_query does),
 * with the target as is when it is absolute-form and http://<host><target> when it is origin-form
 * (as the PURGE method is read: purge.h cdn_purge_method_key). Returns NULL when target is
 * NULL, or origin-form without a host.
 */
const char *cdn_peers_url_query(const char *host, const char *target, struct cdn_arena *a);

/*
 * Reads a peer's answer into r (status, purged, error): a 200 whose body is a JSON object with
 * "purged": N (N >= 0) succeeds; anything else fails, with error "HTTP <status>" followed by the
 * peer's {"error": "..."} text when it has one made of printable ASCII. Returns 0 on success,
 * CDN_EPROTO otherwise.
 */
int cdn_peers_read_answer(long status, const char *body, size_t len, struct cdn_peer_result *r);

#endif
