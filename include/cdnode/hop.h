/*
 * hop.h: what changes about header fields as a message crosses this node (DESIGN.md §6):
 * hop-by-hop fields dropped both ways, Via and CDN-Loop appended, X-Forwarded-For / Forwarded
 * appended, loops detected, the client address taken through trusted hops only. Pure: no I/O.
 * Any thread.
 */
#ifndef CDNODE_HOP_H
#define CDNODE_HOP_H

#include <stdbool.h>
#include <stddef.h>

struct cdn_hdrs;
struct cdn_arena;

struct cdn_hop_opts {
    const char *cdn_id;      /* our pseudonym / CDN-Loop id (a token) */
    bool x_forwarded_for;    /* append X-Forwarded-For */
    bool forwarded;          /* append Forwarded (RFC 7239) */
    unsigned trusted_hops;   /* how many rightmost X-Forwarded-For entries we trust */
    bool surrogate_capability; /* announce cdn_id as a Surrogate-Control device token */
};

/*
 * True when `name` is a hop-by-hop field that must never be forwarded in either direction:
 * Connection, Keep-Alive, Proxy-* (Proxy-Connection, Proxy-Authenticate, Proxy-Authorization),
 * TE, Trailer, Transfer-Encoding, Upgrade; or a field named in any Connection field of `hdrs`.
 * Every name whose first six characters are "Proxy-" counts. `hdrs` may be NULL (fixed set only).
 */
bool cdn_hop_is_hop_by_hop(const struct cdn_hdrs *hdrs, const char *name, size_t nlen);

/* hop[i] = cdn_hop_is_hop_by_hop(hdrs, name of field i) for every field, with each Connection
 * field parsed once rather than once per field. `hop` holds hdrs->n entries. */
void cdn_hop_mark(const struct cdn_hdrs *hdrs, bool *hop);

/*
 * Builds the header list for the upstream request from the client's fields `in` into `out`
 * (initialized by the caller with an arena): drops hop-by-hop fields, Host (the caller sets it),
 * Content-Length and Expect (the upstream client frames the body itself); keeps everything else in
 * order; appends, in this order and each as a new field line, `Via: <proto> <cdn_id>` where proto
 * is "1.0" for HTTP/1.0 clients and "1.1" otherwise, `CDN-Loop: <cdn_id>`,
 * `Surrogate-Capability: <cdn_id>="Surrogate/1.0"` when enabled (the Edge Architecture's
 * announcement that lets an origin target Surrogate-Control directives at this node),
 * `X-Forwarded-For: <prior>, <peer>` when enabled (every prior X-Forwarded-For field removed, their
 * non-empty elements joined with ", "; just `<peer>` without any), and
 * `Forwarded: for=<peer>;host=<host>;proto=<scheme>` when enabled (an IPv6 peer as
 * for="[addr]", a host that is not a token quoted; host or scheme NULL or "" leaves that
 * parameter out). Prior Via, CDN-Loop, Surrogate-Capability and Forwarded fields are kept
 * untouched. `peer` is an address literal, never NULL. Kept fields point at `in`'s strings (out
 * must not outlive them); new strings come from out's arena. `in` is not modified.
 */
void cdn_hop_request_headers(const struct cdn_hdrs *in, struct cdn_hdrs *out,
                             const struct cdn_hop_opts *o, const char *peer, const char *host,
                             const char *scheme, bool http10);

/*
 * Builds the header list for the client from the upstream response fields `in` into `out`: drops
 * hop-by-hop fields, Content-Length and Transfer-Encoding (the front end frames the body), and
 * appends `Via: 1.1 <cdn_id>`. The response's own Connection fields name the extra hop-by-hop
 * fields. Same ownership as cdn_hop_request_headers().
 */
void cdn_hop_response_headers(const struct cdn_hdrs *in, struct cdn_hdrs *out,
                              const struct cdn_hop_opts *o);

/*
 * How many times the request already passed through a node with our cdn_id: the larger of the
 * number of CDN-Loop members naming it (RFC 8586: the cdn-id before any ';' parameters, OWS
 * trimmed, compared case-insensitively) and the number of Via received-by pseudonyms naming it
 * (the second word of a member, compared case-insensitively; members inside a comment that
 * contains a comma are not counted). Each pass adds one of each, so one pass counts once. Every
 * CDN-Loop and Via field counts. The front end answers 508 when this exceeds the allowance.
 */
unsigned cdn_hop_loop_count(const struct cdn_hdrs *hdrs, const char *cdn_id);

/*
 * The client address for logs and X-Forwarded-For: with trusted_hops = 0 the peer itself;
 * with K > 0 the K-th entry from the right of the X-Forwarded-For chain (all fields joined),
 * or the leftmost entry when the chain is shorter than K (or the peer when there is no chain);
 * when the chosen entry or any entry right of it is malformed (not an IPv4 or IPv6 literal; an
 * IPv6 literal may be bracketed and is returned without the brackets; a ":port" is malformed),
 * the peer. Entries left of the chosen one are untrusted and not inspected. Returns arena memory
 * or `peer` itself.
 */
const char *cdn_hop_client_addr(const struct cdn_hdrs *hdrs, const char *peer,
                                unsigned trusted_hops, struct cdn_arena *arena);

#endif
