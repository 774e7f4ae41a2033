/*
 * policy.h: the HTTP caching decisions of a shared cache (RFC 9111, RFC 5861 stale-*, RFC 8246
 * immutable, RFC 9213 targeted fields, RFC 9110 conditionals and ranges).
 *
 * Every function is a pure function of (request, stored response, now): no clock, no I/O, no
 * global state; `now` and stored times are int64 seconds since the epoch. Any thread. Header lists
 * are read, never modified, except by the functions documented as editing or building a list.
 * Functions that build lists or strings take their memory from the arena named in their
 * contract; nothing returned needs freeing on its own.
 *
 * "Response directives" below means the directives in force for this cache: those of the first
 * valid targeted field (opts->targeted, e.g. CDN-Cache-Control) when there is one, otherwise
 * those of Cache-Control (RFC 9213 §2.2). Expires is only consulted without a targeted field.
 */
#ifndef CDNODE_POLICY_H
#define CDNODE_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cdnode/cachectl.h"

struct cdn_hdrs;
struct cdn_arena;
struct cdn_config;

struct cdn_policy_opts {
    unsigned heuristic_percent;  /* % of (Date - Last-Modified); 0 disables heuristics */
    int64_t heuristic_max_s;     /* cap on a heuristic lifetime */
    const char *const *targeted; /* target list, most specific first (RFC 9213 §2.2) */
    size_t n_targeted;
    const char *surrogate_id;       /* our device token in Surrogate-Control targeting (cdn_id) */
    int64_t stale_if_error_grace_s; /* serve stale on upstream error this long past expiry even
                                       without stale-if-error; 0: only what directives allow */
    bool cache_set_cookie;          /* store Set-Cookie responses without an explicit public */
};

/*
 * Fills o from the configuration (heuristic_percent, heuristic_max_s, target_cache_control,
 * cdn_id, stale_if_error_grace, cache_set_cookie). o points into c's strings and lives as long as
 * c.
 */
void cdn_policy_opts_from_config(const struct cdn_config *c, struct cdn_policy_opts *o);

/* A stored response as the policy sees it. */
struct cdn_stored {
    int status;
    const struct cdn_hdrs *hdrs; /* stored header fields (after cdn_policy_strip_for_store) */
    int64_t request_time;        /* when the request that fetched it was sent (§4.2.3) */
    int64_t response_time;       /* when its header section was received */
};

/*
 * The response directives in force (see top). Returns true when they came from a targeted field.
 */
bool cdn_response_cc(const struct cdn_hdrs *resp, const struct cdn_policy_opts *o,
                     struct cdn_cc *cc);

/* ---- Storing (RFC 9111 §3) ------------------------------------------------------------------ */

enum cdn_store_verdict {
    CDN_STORE_OK = 0,
    CDN_NOSTORE_METHOD,       /* request method other than GET */
    CDN_NOSTORE_STATUS,       /* 1xx, out of range, 206 (partials are not stored), 304 */
    CDN_NOSTORE_REQ_NO_STORE, /* no-store request directive */
    CDN_NOSTORE_NO_STORE,     /* no-store response directive (not overridden by must-understand) */
    CDN_NOSTORE_MUST_UNDERSTAND, /* must-understand with a status code this cache does not know */
    CDN_NOSTORE_PRIVATE,         /* unqualified private: shared caches do not store it */
    CDN_NOSTORE_AUTHORIZATION,   /* request had Authorization; response lacks public, s-maxage and
                                    must-revalidate (§3.5) */
    CDN_NOSTORE_VARY_STAR,       /* Vary: * (could never be served from cache) */
    CDN_NOSTORE_SET_COOKIE,      /* Set-Cookie without public, s-maxage or a targeted max-age,
                                    and cache_set_cookie off */
    CDN_NOSTORE_NOT_CACHEABLE    /* no explicit freshness, no public, and a status that is not
                                    heuristically cacheable (or not known to this cache) */
};

/*
 * Whether a shared cache may store the response to this request (RFC 9111 §3, §3.5, §5.2.2.3).
 * Only GET responses are stored; a HEAD request is answered from a stored GET by the caller.
 * Response no-store is ignored when must-understand is present and the status code is one this
 * cache knows (§5.2.2.3). A response with Set-Cookie is stored (with its Set-Cookie, served like
 * any other field) only when the origin said explicitly that shared caches may keep it: public,
 * s-maxage, or max-age in a targeted field (RFC 9213) — or when o->cache_set_cookie is set. RFC
 * 9111 §7.3 leaves this to the cache; handing one visitor's session cookie to every other one is
 * the failure this prevents, and Varnish and nginx pass such responses by default too. Response
 * no-cache does not prevent storing (it forces revalidation, see cdn_decide). A known status that
 * is not heuristically cacheable (e.g. 302, 500) needs explicit freshness or public; an unknown
 * final status needs explicit freshness or public too (§3 no longer requires it be understood).
 */
enum cdn_store_verdict cdn_storable(const char *method, const struct cdn_hdrs *req, int status,
                                    const struct cdn_hdrs *resp, const struct cdn_policy_opts *o);

/* cdn_storable with the response directives parsed already: `cc` and `targeted` as
 * cdn_response_cc(resp, o, cc) gives them. */
enum cdn_store_verdict cdn_storable_cc(const char *method, const struct cdn_hdrs *req, int status,
                                       const struct cdn_hdrs *resp, const struct cdn_policy_opts *o,
                                       const struct cdn_cc *cc, bool targeted);

/* Short static token for logs and Cache-Status detail ("ok", "no-store", "private", ...). */
const char *cdn_store_reason(enum cdn_store_verdict v);

/* True for the statuses RFC 9110 §15.1 makes heuristically cacheable: 200, 203, 204, 206, 300,
 * 301, 308, 404, 405, 410, 414, 501. */
bool cdn_status_heuristic(int status);

/*
 * Removes from resp, in place, the fields a shared cache must not store (§3.1): hop-by-hop fields
 * and fields named by Connection (cdn_hop_is_hop_by_hop, which covers every Proxy-* field),
 * Content-Length (the store records the body length and the front end frames the body), and the
 * fields named by a qualified no-cache or private in `cc` (the response directives): a qualified
 * no-cache field may only be sent after revalidation, and this cache keeps it simple by never
 * storing it. Order of the remaining fields is kept. Returns the number removed.
 */
size_t cdn_policy_strip_for_store(struct cdn_hdrs *resp, const struct cdn_cc *cc);

/*
 * cdn_policy_strip_for_store for a caller that goes on using the directives: `cc` holds
 * cdn_response_cc(resp, o, cc) and `targeted` its result on entry, and those of the stripped
 * resp on return (parsed again only when a Cache-Control or targeted line was removed). Returns
 * whether they come from a targeted field.
 */
bool cdn_policy_strip_keep_cc(struct cdn_hdrs *resp, const struct cdn_policy_opts *o,
                              struct cdn_cc *cc, bool targeted);

/* ---- Freshness (RFC 9111 §4.2.1, §4.2.2) ---------------------------------------------------- */

enum cdn_fresh_source {
    CDN_FRESH_NONE, /* no explicit expiry and no heuristic allowed: lifetime 0 */
    CDN_FRESH_S_MAXAGE,
    CDN_FRESH_MAX_AGE,
    CDN_FRESH_EXPIRES, /* Expires - Date (Date missing or invalid: response_time) */
    CDN_FRESH_HEURISTIC
};

struct cdn_freshness {
    int64_t lifetime; /* seconds, >= 0 */
    enum cdn_fresh_source source;
    bool targeted; /* s-maxage / max-age came from a targeted field */
};

/*
 * Freshness lifetime of a response: s-maxage, then max-age of the response directives, then
 * Expires - Date (only without a targeted field). An invalid Expires (including "0") and several
 * Expires lines that disagree mean already expired (lifetime 0, source EXPIRES). Without any of
 * those, a heuristic lifetime of heuristic_percent % of (Date - Last-Modified), capped at
 * heuristic_max_s, applies when the status is heuristically cacheable or public is present and
 * Last-Modified is valid and not after Date; otherwise 0 (no default TTL). `response_time` stands
 * in for a missing Date and is the reference for two-digit years.
 */
void cdn_freshness_lifetime(int status, const struct cdn_hdrs *resp, int64_t response_time,
                            const struct cdn_policy_opts *o, struct cdn_freshness *out);

/* cdn_freshness_lifetime with the response directives parsed already (cdn_response_cc). */
void cdn_freshness_lifetime_cc(int status, const struct cdn_hdrs *resp, int64_t response_time,
                               const struct cdn_policy_opts *o, const struct cdn_cc *cc,
                               bool targeted, struct cdn_freshness *out);

/* ---- Age (RFC 9111 §4.2.3) --------------------------------------------------------------------
 */

struct cdn_age {
    int64_t age_value;             /* Age field (first line; missing or invalid: 0) */
    int64_t date_value;            /* Date field (missing or invalid: response_time) */
    int64_t apparent_age;          /* max(0, response_time - date_value) */
    int64_t response_delay;        /* response_time - request_time (negative clamped to 0) */
    int64_t corrected_age_value;   /* age_value + response_delay */
    int64_t corrected_initial_age; /* max(apparent_age, corrected_age_value) */
    int64_t resident_time;         /* now - response_time (negative clamped to 0) */
    int64_t current_age;           /* corrected_initial_age + resident_time */
};

/*
 * Computes the §4.2.3 quantities. Every value saturates at CDN_DELTA_MAX (§1.2.2), which is also
 * the value a caller sends in Age when the computation overflows.
 */
void cdn_age_compute(const struct cdn_hdrs *resp, int64_t request_time, int64_t response_time,
                     int64_t now, struct cdn_age *out);

/* ---- Serving decision -------------------------------------------------------------------------
 */

enum cdn_decision {
    CDN_DECIDE_FRESH,      /* serve the stored response */
    CDN_DECIDE_STALE,      /* serve it stale (client's max-stale allows it) */
    CDN_DECIDE_STALE_SWR,  /* serve it stale now and revalidate in the background */
    CDN_DECIDE_REVALIDATE, /* send a conditional request (cdn_revalidation_validators) */
    CDN_DECIDE_MISS,       /* forward unconditionally; there is nothing usable stored */
    CDN_DECIDE_504         /* only-if-cached and nothing servable: answer 504 */
};

enum cdn_decide_reason {
    CDN_WHY_FRESH,
    CDN_WHY_NOT_STORED,      /* no stored response */
    CDN_WHY_REQ_NO_STORE,    /* request no-store: bypass the cache both ways */
    CDN_WHY_AUTHORIZATION,   /* Authorization and the response does not allow sharing (§3.5) */
    CDN_WHY_RESP_NO_CACHE,   /* response no-cache (unqualified) */
    CDN_WHY_REQ_NO_CACHE,    /* request no-cache, or Pragma: no-cache without Cache-Control */
    CDN_WHY_REQ_MAX_AGE,     /* older than the request's max-age */
    CDN_WHY_MIN_FRESH,       /* not fresh for the request's min-fresh */
    CDN_WHY_STALE,           /* stale and nothing allows serving it */
    CDN_WHY_MUST_REVALIDATE, /* stale, and must-revalidate / proxy-revalidate / s-maxage forbid
                                serving it stale even though max-stale or SWR would */
    CDN_WHY_MAX_STALE,       /* served stale within the request's max-stale */
    CDN_WHY_SWR,             /* served stale within stale-while-revalidate */
    CDN_WHY_IMMUTABLE        /* fresh and immutable: the request's max-age=0 was not honoured */
};

struct cdn_decide_out {
    enum cdn_decision decision;
    enum cdn_decide_reason reason;
    int64_t age;      /* current age; 0 when there is no stored response or the request
                         has no-store (decided before the entry is read) */
    int64_t lifetime; /* freshness lifetime */
    int64_t ttl;      /* lifetime - age: remaining freshness, negative when stale */
};

/*
 * What to do with a request given the stored response `st` (NULL when there is none) at `now`.
 * The caller has already matched the variant (cdn_vary_match). Order of the checks:
 *  1. no stored response: MISS (504 with only-if-cached)
 *  2. request no-store: MISS. RFC 9111 §5.2.1.5 only forbids storing, but the response fetched for
 *     this request is not stored either, so serving a stored one would be inconsistent: bypass.
 *  3. Authorization in the request and the response lacks public / s-maxage / must-revalidate:
 *     MISS (§3.5)
 *  4. response no-cache (unqualified): REVALIDATE, even when immutable (§5.2.2.4)
 *  5. request no-cache, or Pragma: no-cache with no Cache-Control field (§5.4): REVALIDATE. This is
 *     a browser's force-reload, so it revalidates immutable responses too.
 *  6. request max-age=N with age > N: REVALIDATE, except for a fresh immutable response (RFC 8246
 *     §2: a reload, which browsers send as max-age=0, should not revalidate while fresh; FRESH
 *     with reason IMMUTABLE)
 *  7. request min-fresh=N with lifetime - age < N: REVALIDATE
 *  8. fresh (lifetime > age): FRESH
 *  9. stale: with must-revalidate, proxy-revalidate or s-maxage in the response directives:
 *     REVALIDATE (MUST_REVALIDATE when max-stale or SWR would otherwise have applied, else STALE).
 *     Else within the request's max-stale (no value: any staleness): STALE; else within the
 *     response's stale-while-revalidate: STALE_SWR; else REVALIDATE.
 * Finally, with request only-if-cached, any REVALIDATE or MISS becomes 504 (§5.2.1.7), keeping
 * the reason that made the stored response unusable.
 */
void cdn_decide(const struct cdn_hdrs *req, const struct cdn_stored *st,
                const struct cdn_policy_opts *o, int64_t now, struct cdn_decide_out *out);

/* Short static token for logs ("fresh", "req-no-cache", "swr", ...). */
const char *cdn_decide_reason_str(enum cdn_decide_reason r);

/*
 * Whether a stored response may still be served stale at `now` inside the response's
 * stale-while-revalidate window (RFC 5861 §3). False when must-revalidate, proxy-revalidate,
 * s-maxage or unqualified no-cache are in the response directives. True also for a fresh response.
 */
bool cdn_may_serve_stale_while_revalidate(const struct cdn_stored *st,
                                          const struct cdn_policy_opts *o, int64_t now);

/*
 * Whether a stored response may be served stale at `now` because the upstream failed (connect
 * failure, timeout, or a status for which cdn_status_is_stale_error() holds): its staleness must
 * not exceed the largest of the response's stale-if-error, the request's stale-if-error (RFC 5861
 * §4) and o->stale_if_error_grace_s. Never when must-revalidate, proxy-revalidate, s-maxage or
 * unqualified no-cache are in the response directives (RFC 9111 §4.2.4), whatever stale-if-error
 * says. `req` may be NULL (background refresh). True also for a fresh response.
 */
bool cdn_may_serve_stale_on_error(const struct cdn_hdrs *req, const struct cdn_stored *st,
                                  const struct cdn_policy_opts *o, int64_t now);

/* 500, 502, 503 and 504: the upstream statuses that count as errors for stale-if-error. */
bool cdn_status_is_stale_error(int status);

/* ---- Revalidation (RFC 9111 §4.3) -------------------------------------------------------------
 */

struct cdn_validators {
    const char *etag; /* If-None-Match value, or NULL */
    size_t etag_len;
    const char *last_modified; /* If-Modified-Since value, or NULL */
    size_t lm_len;
};

/*
 * The conditional fields to send when revalidating a stored response (§4.3.1): If-None-Match with
 * the stored ETag when it is a valid entity-tag, and If-Modified-Since with the stored
 * Last-Modified when it is a valid HTTP-date (Date is never used instead). Both when both exist.
 * Values point into the stored list's strings.
 */
void cdn_revalidation_validators(const struct cdn_hdrs *stored, struct cdn_validators *out);

/*
 * Whether a 304 selects the stored response (§4.3.4, single stored response): a strong ETag in
 * the 304 must equal the stored ETag by strong comparison; a weak one by weak comparison; without
 * ETag, a Last-Modified in the 304 must equal the stored one (a two-digit year in the 304 is read
 * in the century of the stored date). A 304 with neither is accepted: it
 * answers the conditional built from this very response (§4.3.4 only accepts it when the stored
 * response has no validator either; origins often omit them from 304s).
 */
bool cdn_304_matches(const struct cdn_hdrs *stored, const struct cdn_hdrs *resp304);

/*
 * Freshens a stored response with a 304 (§3.2, §4.3.4): `out` (initialized by the caller, empty)
 * receives the stored fields whose names the 304 does not carry, then the 304's fields, skipping
 * in both what cdn_policy_strip_for_store would remove given the merged response directives, so
 * Content-Length and hop-by-hop fields are never taken from the 304. Field strings are not copied:
 * `out` points into both inputs, which must outlive it. `cc` receives the response directives of
 * `out`; returns whether they come from a targeted field (as cdn_response_cc).
 */
bool cdn_merge_304(const struct cdn_hdrs *stored, const struct cdn_hdrs *resp304,
                   const struct cdn_policy_opts *o, struct cdn_hdrs *out, struct cdn_cc *cc);

/* ---- Entity tags --------------------------------------------------------------------------------
 */

/*
 * Compares two entity-tags (RFC 9110 §8.8.3.2): strong comparison needs both strong and the same
 * opaque-tag; weak comparison ignores W/. False when either is not a valid entity-tag.
 */
bool cdn_etag_match(const char *a, size_t alen, const char *b, size_t blen, bool weak);

/* ---- Client conditionals (RFC 9110 §13.2.2) ----------------------------------------------------
 */

enum cdn_cond_result {
    CDN_COND_PROCEED, /* serve the stored response (or evaluate Range) */
    CDN_COND_304,
    CDN_COND_412
};

/*
 * Evaluates the request's preconditions against a stored response, in the order of §13.2.2:
 *  1. If-Match: 412 unless "*" or an entity-tag strongly matches the stored ETag
 *  2. else If-Unmodified-Since (one valid date, stored Last-Modified present): 412 when
 *     Last-Modified is later
 *  3. If-None-Match: "*" or a weak match gives 304 for GET/HEAD, 412 for other methods
 *  4. else for GET/HEAD, If-Modified-Since (one valid date): 304 when the stored Last-Modified —
 *     or Date, or response_time, as RFC 9111 §4.3.2 says for caches — is not later
 * Preconditions are ignored (PROCEED) when the stored status is not 2xx (§13.2.1). Invalid dates
 * and malformed entity-tags never match.
 */
enum cdn_cond_result cdn_eval_conditionals(const char *method, const struct cdn_hdrs *req,
                                           const struct cdn_stored *st);

/* ---- Range (RFC 9110 §14) ---------------------------------------------------------------------
 */

enum cdn_range_result {
    CDN_RANGE_FULL,         /* ignore Range: serve 200 with the whole representation */
    CDN_RANGE_PARTIAL,      /* 206 with bytes first..last (inclusive) */
    CDN_RANGE_UNSATISFIABLE /* 416 with Content-Range: bytes * / length */
};

/*
 * Parses one Range value against a representation of `length` bytes: "bytes=" (unit
 * case-insensitive) with exactly one range-spec: first-last, first-, or -suffix. FULL for another
 * unit, a syntax error (including last < first) or more than one range (this cache does not build
 * multipart/byteranges). UNSATISFIABLE when first >= length, or for a suffix of 0 or an empty
 * representation. last is clamped to length - 1; a suffix longer than the representation selects
 * all of it. Numbers too large for uint64 saturate.
 */
enum cdn_range_result cdn_range_parse(const char *s, size_t n, uint64_t length, uint64_t *first,
                                      uint64_t *last);

/*
 * If-Range (RFC 9110 §13.1.5) against the stored response: true when absent; with an entity-tag,
 * true on strong comparison with the stored ETag; with a date, true when it equals the stored
 * Last-Modified exactly and that Last-Modified is at least 60 s before the stored Date (a strong
 * validator for a cache, §8.8.2.2). False otherwise, and for anything malformed.
 */
bool cdn_if_range_ok(const struct cdn_hdrs *req, const struct cdn_hdrs *stored);

/*
 * The whole Range step for serving a stored response: FULL unless the method is GET, the stored
 * status is 200, exactly one Range line is present and If-Range holds; then cdn_range_parse.
 */
enum cdn_range_result cdn_range_eval(const char *method, const struct cdn_hdrs *req,
                                     const struct cdn_stored *st, uint64_t length, uint64_t *first,
                                     uint64_t *last);

/*
 * Content-Range value for a result into buf: "bytes first-last/length" for PARTIAL, the
 * unsatisfied-range form ("bytes *" followed by "/length") for UNSATISFIABLE, "" for FULL.
 * Returns buf; CDN_CONTENT_RANGE_LEN bytes always suffice.
 */
#define CDN_CONTENT_RANGE_LEN 80
char *cdn_content_range(enum cdn_range_result r, uint64_t first, uint64_t last, uint64_t length,
                        char *buf, size_t size);

/* ---- Invalidation (RFC 9111 §4.4) -------------------------------------------------------------
 */

struct cdn_uri {
    const char *scheme; /* "http" / "https" */
    const char *host;   /* lowercased, default port removed */
    const char *target; /* path and query, starting with '/' */
};

/*
 * The URIs whose stored responses must be invalidated after this response: none for safe methods
 * (GET, HEAD, OPTIONS, TRACE) or a status outside 200..399; otherwise the target URI, then the
 * URIs of Location and Content-Location (resolved against the target: absolute, network-path,
 * absolute-path or relative references; fragments dropped; dot-segments not removed) when they
 * have the same origin (scheme, host and port) as the target, without duplicates. `host` and
 * `target` describe the request as cdn_request_validate returns them. Writes at most 3 URIs to out
 * (strings in `arena`, or the inputs themselves) and returns how many.
 */
size_t cdn_invalidation_targets(const char *method, int status, const char *scheme,
                                const char *host, const char *target, const struct cdn_hdrs *resp,
                                struct cdn_arena *arena, struct cdn_uri out[3]);

#endif
