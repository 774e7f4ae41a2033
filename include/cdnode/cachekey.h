/*
 * cachekey.h: the primary cache key (normalized URI and its SHA-256, the LMDB key) and the
 * secondary key of a variant (Vary, RFC 9111 §4.1).
 *
 * Pure: no clock, no I/O, no global state. Any thread. Strings returned are allocated from the
 * arena given and live until it is freed.
 */
#ifndef CDNODE_CACHEKEY_H
#define CDNODE_CACHEKEY_H

#include <stdbool.h>
#include <stddef.h>

struct cdn_arena;
struct cdn_hdrs;
struct cdn_config;

#define CDN_KEY_HASH_LEN 32 /* SHA-256 */

struct cdn_key_opts {
    bool ignore_query;              /* the key has no query at all */
    bool sort_query;                /* parameters sorted by name (stable: equal names keep order) */
    const char *const *drop_params; /* parameters removed by exact (case-sensitive) name */
    size_t n_drop_params;
};

/* Fills o from cache_key_ignore_query, cache_key_sort_query and cache_key_drop_params; o points
 * into c and lives as long as c. */
void cdn_key_opts_from_config(const struct cdn_config *c, struct cdn_key_opts *o);

/*
 * Normalizes an authority host[:port] for `scheme` ("http" or "https", case-insensitive): host
 * lowercased (IPv6 literals keep their brackets), port without leading zeros, and no port when it
 * is empty or the scheme's default (80, 443). Returns arena memory, or NULL when the port is not
 * 1-5 digits up to 65535.
 */
const char *cdn_key_host(const char *scheme, const char *host, size_t len, struct cdn_arena *a);

/*
 * The primary key "scheme://host/path?query" for a request: scheme lowercased, host as
 * cdn_key_host, path and query from `target` (origin-form, starting with '/'; a fragment is
 * dropped). Percent-encoding is normalized in path and query (RFC 3986 §6.2.2.2): escapes of
 * unreserved characters (ALPHA DIGIT - . _ ~) are decoded and the hex digits of the others are
 * uppercased; malformed escapes are kept as they are. Then the options: ignore_query drops the
 * query; otherwise parameters ('&'-separated; name is what precedes the first '=') named in
 * drop_params are removed (after normalization, so "%61=1" is parameter "a"), and sort_query
 * orders them by name; empty parameters are removed whenever either option applies. A query left
 * empty loses its '?'. Returns 0 with *key / *klen set (arena memory, NUL-terminated), or
 * CDN_EINVAL when target does not start with '/' or the host's port is invalid.
 */
int cdn_cache_key(const char *scheme, const char *host, const char *target,
                  const struct cdn_key_opts *o, struct cdn_arena *a, const char **key,
                  size_t *klen);

/* SHA-256 of key[0..n) into out (CDN_KEY_HASH_LEN bytes): the store's LMDB key. */
void cdn_key_hash(const char *key, size_t n, unsigned char *out);

/* ---- Vary ------------------------------------------------------------------------------------ */

/* Field names one Vary spec may hold; a response naming more is treated as Vary: *. */
#define CDN_VARY_MAX_FIELDS 16

/*
 * The Vary spec of a response, to store with it: the field names of all its Vary lines,
 * lowercased, in Vary order, duplicates removed, joined with ", " ("" when there is no Vary).
 * "*" when a member is "*", is not a token, or there are more than CDN_VARY_MAX_FIELDS names:
 * such a response can never be selected. Returns arena memory (or a static string) and its length
 * through *len.
 */
const char *cdn_vary_spec(const struct cdn_hdrs *resp, struct cdn_arena *a, size_t *len);

/* True when a spec is "*". */
bool cdn_vary_is_star(const char *spec, size_t len);

/*
 * The request's values of the fields named by spec, in a canonical string stored with the
 * variant: for each name, "name:value\n", or "name\n" when the request lacks the field (absent
 * differs from empty). The value is all its lines read as one comma-separated list (RFC 9111
 * §4.1: combining lines and whitespace where the syntax allows it do not select another
 * variant): its non-empty elements, trimmed of OWS, joined with ',' in their order (so "a, b"
 * and "a,b" share a variant, "b, a" does not). Accept-Language also loses the whitespace inside
 * its elements and is lowercased (language tags are case-insensitive). Accept-Encoding is
 * normalized to what selects a coding: the acceptable codings (q > 0), lowercased, sorted,
 * unique, joined with ',' (so "gzip, br" and "br;q=0.9,GZIP" share a variant). "" for an empty
 * spec. NULL for "*". Arena memory; length through *len.
 */
const char *cdn_vary_values(const char *spec, size_t slen, const struct cdn_hdrs *req,
                            struct cdn_arena *a, size_t *len);

/* The variant id: SHA-256 of a cdn_vary_values string (CDN_KEY_HASH_LEN bytes into out). */
void cdn_variant_id(const char *values, size_t n, unsigned char *out);

/*
 * Whether a stored variant (its spec and the values stored with it) may serve this request:
 * the request's cdn_vary_values for that spec must equal the stored ones byte for byte. Never for
 * "*". Uses the arena for scratch.
 */
bool cdn_vary_match(const char *spec, size_t slen, const char *stored_values, size_t svlen,
                    const struct cdn_hdrs *req, struct cdn_arena *a);

#endif
