/*
 * purge.h: what a purge names, turned into what the store matches (store.h cdn_store_purge), and
 * the tags a stored response carries.
 *
 * The store matches URL and prefix purges against primary cache keys (cachekey.h), so a purge
 * request's URL is normalized exactly as the front end builds a key. Tags come from the
 * response's Surrogate-Key (space-separated) and Cache-Tag (comma-separated) fields and are
 * stored as one blob of names separated by single spaces, which is what CDN_PURGE_TAG matches.
 *
 * Pure: no clock, no I/O, no global state. Any thread. Strings returned are allocated from the
 * arena given and live until it is freed.
 */
#ifndef CDNODE_PURGE_H
#define CDNODE_PURGE_H

#include <stdbool.h>
#include <stddef.h>

#include "cdnode/store.h"

struct cdn_arena;
struct cdn_hdrs;
struct cdn_key_opts;

/* Bounds on the tags of one stored response (DESIGN.md: tags per object are bounded). */
#define CDN_TAGS_MAX 32     /* tags kept per response; later ones are dropped */
#define CDN_TAG_MAX_LEN 128 /* bytes per tag; longer ones are dropped */

/* Query parameters POST /purge may carry. More is a bad request. */
#define CDN_PURGE_MAX_ARGS 8

/*
 * The primary key of an absolute URL "http(s)://authority[/path][?query][#fragment]": scheme
 * case-insensitive, no userinfo, non-empty host, no byte <= 0x20 or 0x7f; an empty path is "/".
 * Built by cdn_cache_key() with o, so it equals the key the front end uses for that URL. Returns
 * 0 with *key / *klen set (arena memory, NUL-terminated), or CDN_EINVAL.
 */
int cdn_purge_url_key(const char *url, const struct cdn_key_opts *o, struct cdn_arena *a,
                      const char **key, size_t *klen);

/*
 * The key prefix for an absolute URL prefix (same syntax as cdn_purge_url_key, no fragment):
 * scheme lowercased and host normalized as in keys (cdn_key_host), the path and query kept
 * byte for byte as given, "/" when there is no path, so "http://Example.com" covers exactly the
 * keys of that host. Percent-encoding and the query options are not applied: the prefix must be
 * written as keys are (unreserved characters unescaped, other escapes in upper case). Returns 0
 * with *pat / *plen set (arena memory, NUL-terminated), or CDN_EINVAL.
 */
int cdn_purge_prefix(const char *url, struct cdn_arena *a, const char **pat, size_t *plen);

/*
 * The key the PURGE method on the admin listener names: target is the request-target as
 * received; origin-form ("/path?query") is taken for http:// on `host` (the Host field, required
 * then), absolute-form as cdn_purge_url_key. Returns 0 with *key / *klen, or CDN_EINVAL.
 */
int cdn_purge_method_key(const char *host, const char *target, const struct cdn_key_opts *o,
                         struct cdn_arena *a, const char **key, size_t *klen);

/* A purge as the store takes it. */
struct cdn_purge_req {
    enum cdn_store_purge kind;
    const char *pattern; /* arena memory; "" for CDN_PURGE_ALL */
    size_t len;
    bool soft; /* mark stale instead of deleting */
};

/*
 * Parses the query parameters of POST /purge, n pairs (a value may be NULL for a parameter
 * without '='): exactly one selector among url=<absolute URL>, prefix=<absolute URL prefix>,
 * tag=<name> (1..CDN_TAG_MAX_LEN bytes, no byte <= 0x20 or 0x7f) and all=1, and optionally
 * soft=1 or soft=0, each at most once. Returns 0 with *out filled, or CDN_EINVAL with *reason set
 * to a static one-line text (unknown or repeated parameter, no or several selectors, invalid
 * value, more than CDN_PURGE_MAX_ARGS parameters).
 */
int cdn_purge_parse(const char *const *names, const char *const *values, size_t n,
                    const struct cdn_key_opts *o, struct cdn_arena *a, struct cdn_purge_req *out,
                    const char **reason);

/*
 * The tag blob of a response: the names in its Surrogate-Key fields (split on SP and HTAB) then
 * in its Cache-Tag fields (comma-separated list members, trimmed of OWS), in field order,
 * duplicates removed, joined with single spaces. Names with a byte <= 0x20 or 0x7f, names longer
 * than CDN_TAG_MAX_LEN and names past the first CDN_TAGS_MAX are dropped and counted in
 * *dropped. Returns arena memory (NULL with *len 0 when there are no tags).
 */
const char *cdn_tags_build(const struct cdn_hdrs *resp, struct cdn_arena *a, size_t *len,
                           unsigned *dropped);

#endif
