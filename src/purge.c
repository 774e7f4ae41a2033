/*
 * purge.c: purge selectors and tag blobs (see purge.h).
 *
 * A URL purge must hit the key the front end stored, so absolute URLs are split the way
 * request.c splits absolute-form targets and the key is built by cdn_cache_key() itself; a prefix
 * gets only the scheme and host normalized, because its path may end anywhere (even inside an
 * escape). Tag names are kept byte for byte: the store compares them exactly.
 */
#include "cdnode/purge.h"
#include "cdnode/arena.h"
#include "cdnode/cachekey.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"

#include <string.h>
#include <strings.h>

static bool
visible(unsigned char c)
{
    return c > 0x20 && c != 0x7f;
}

/*
 * Splits "http(s)://authority rest": *scheme is a static "http"/"https", *host the normalized
 * non-empty host, *rest what follows the authority ("", "/...", "?..." or "#...").
 */
static int
split_url(const char *url, bool fragment_ok, struct cdn_arena *a, const char **scheme,
          const char **host, const char **rest)
{
    if (url == NULL)
        return CDN_EINVAL;
    for (const char *p = url; *p; p++)
        if (!visible((unsigned char)*p) || (*p == '#' && !fragment_ok))
            return CDN_EINVAL;
    const char *p;
    if (strncasecmp(url, "http://", 7) == 0) {
        *scheme = "http";
        p = url + 7;
    } else if (strncasecmp(url, "https://", 8) == 0) {
        *scheme = "https";
        p = url + 8;
    } else {
        return CDN_EINVAL;
    }
    size_t alen = strcspn(p, "/?#");
    if (alen == 0 || memchr(p, '@', alen) != NULL)
        return CDN_EINVAL;
    const char *h = cdn_key_host(*scheme, p, alen, a);
    if (h == NULL || h[0] == '\0' || h[0] == ':')
        return CDN_EINVAL;
    *host = h;
    *rest = p + alen;
    return 0;
}

int
cdn_purge_url_key(const char *url, const struct cdn_key_opts *o, struct cdn_arena *a,
                  const char **key, size_t *klen)
{
    const char *scheme, *host, *rest;
    if (split_url(url, true, a, &scheme, &host, &rest) != 0)
        return CDN_EINVAL;
    const char *target = rest[0] == '/' ? rest : cdn_arena_printf(a, "/%s", rest);
    return cdn_cache_key(scheme, host, target, o, a, key, klen);
}

int
cdn_purge_prefix(const char *url, struct cdn_arena *a, const char **pat, size_t *plen)
{
    const char *scheme, *host, *rest;
    if (split_url(url, false, a, &scheme, &host, &rest) != 0)
        return CDN_EINVAL;
    char *p = cdn_arena_printf(a, "%s://%s%s%s", scheme, host, rest[0] == '/' ? "" : "/", rest);
    *pat = p;
    *plen = strlen(p);
    return 0;
}

int
cdn_purge_method_key(const char *host, const char *target, const struct cdn_key_opts *o,
                     struct cdn_arena *a, const char **key, size_t *klen)
{
    if (target == NULL)
        return CDN_EINVAL;
    if (target[0] != '/')
        return cdn_purge_url_key(target, o, a, key, klen);
    for (const char *p = target; *p; p++)
        if (!visible((unsigned char)*p))
            return CDN_EINVAL;
    if (host == NULL)
        return CDN_EINVAL;
    size_t hlen = strlen(host);
    if (hlen == 0 || strcspn(host, "/?#@ \t") != hlen)
        return CDN_EINVAL;
    const char *h = cdn_key_host("http", host, hlen, a);
    if (h == NULL || h[0] == '\0' || h[0] == ':')
        return CDN_EINVAL;
    return cdn_cache_key("http", h, target, o, a, key, klen);
}

static bool
valid_tag(const char *s, size_t n)
{
    if (n == 0 || n > CDN_TAG_MAX_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!visible((unsigned char)s[i]))
            return false;
    return true;
}

int
cdn_purge_parse(const char *const *names, const char *const *values, size_t n,
                const struct cdn_key_opts *o, struct cdn_arena *a, struct cdn_purge_req *out,
                const char **reason)
{
    static const char *const known[] = {"url", "prefix", "tag", "all", "soft"};
    const char *seen[5] = {NULL, NULL, NULL, NULL, NULL};
    if (n > CDN_PURGE_MAX_ARGS) {
        *reason = "too many parameters";
        return CDN_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        size_t k = 0;
        while (k < 5 && strcmp(names[i], known[k]) != 0)
            k++;
        if (k == 5) {
            *reason = "unknown parameter";
            return CDN_EINVAL;
        }
        if (seen[k] != NULL) {
            *reason = "repeated parameter";
            return CDN_EINVAL;
        }
        seen[k] = values[i] ? values[i] : "";
    }
    int selectors = 0;
    for (size_t k = 0; k < 4; k++)
        selectors += seen[k] != NULL;
    if (selectors != 1) {
        *reason = selectors ? "several selectors: give one of url, prefix, tag, all"
                            : "no selector: give one of url, prefix, tag, all";
        return CDN_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (seen[4] != NULL) {
        if (strcmp(seen[4], "1") != 0 && strcmp(seen[4], "0") != 0) {
            *reason = "soft must be 1 or 0";
            return CDN_EINVAL;
        }
        out->soft = seen[4][0] == '1';
    }
    if (seen[0] != NULL) {
        out->kind = CDN_PURGE_URL;
        if (cdn_purge_url_key(seen[0], o, a, &out->pattern, &out->len) != 0) {
            *reason = "url must be an absolute http:// or https:// URL";
            return CDN_EINVAL;
        }
    } else if (seen[1] != NULL) {
        out->kind = CDN_PURGE_PREFIX;
        if (cdn_purge_prefix(seen[1], a, &out->pattern, &out->len) != 0) {
            *reason = "prefix must be an absolute http:// or https:// URL without fragment";
            return CDN_EINVAL;
        }
    } else if (seen[2] != NULL) {
        out->kind = CDN_PURGE_TAG;
        if (!valid_tag(seen[2], strlen(seen[2]))) {
            *reason = "tag must be 1 to 128 visible characters";
            return CDN_EINVAL;
        }
        out->pattern = cdn_arena_strdup(a, seen[2]);
        out->len = strlen(seen[2]);
    } else {
        out->kind = CDN_PURGE_ALL;
        if (strcmp(seen[3], "1") != 0) {
            *reason = "all must be 1";
            return CDN_EINVAL;
        }
        out->pattern = "";
        out->len = 0;
    }
    return 0;
}

struct tagset {
    const char *p[CDN_TAGS_MAX];
    size_t n[CDN_TAGS_MAX];
    size_t count;
    size_t bytes;
    unsigned dropped;
};

static void
tag_add(struct tagset *t, const char *s, size_t n)
{
    if (n == 0)
        return;
    if (!valid_tag(s, n)) {
        t->dropped++;
        return;
    }
    for (size_t i = 0; i < t->count; i++)
        if (t->n[i] == n && memcmp(t->p[i], s, n) == 0)
            return;
    if (t->count == CDN_TAGS_MAX) {
        t->dropped++;
        return;
    }
    t->p[t->count] = s;
    t->n[t->count] = n;
    t->count++;
    t->bytes += n + 1;
}

const char *
cdn_tags_build(const struct cdn_hdrs *resp, struct cdn_arena *a, size_t *len, unsigned *dropped)
{
    struct tagset t = {.count = 0};
    for (size_t i = 0; i < resp->n; i++) {
        const struct cdn_hdr *f = &resp->v[i];
        const char *end = f->value + f->vlen;
        if (cdn_name_eq(f->name, f->nlen, "Surrogate-Key")) {
            for (const char *p = f->value; p < end;) {
                const char *q = p;
                while (q < end && *q != ' ' && *q != '\t')
                    q++;
                tag_add(&t, p, (size_t)(q - p));
                p = q + 1;
            }
        } else if (cdn_name_eq(f->name, f->nlen, "Cache-Tag")) {
            const char *pos = f->value, *e;
            size_t elen;
            while (cdn_list_next(&pos, end, &e, &elen))
                tag_add(&t, e, elen);
        }
    }
    *dropped = t.dropped;
    *len = 0;
    if (t.count == 0)
        return NULL;
    char *out = cdn_arena_alloc(a, t.bytes);
    size_t w = 0;
    for (size_t i = 0; i < t.count; i++) {
        if (i > 0)
            out[w++] = ' ';
        memcpy(out + w, t.p[i], t.n[i]);
        w += t.n[i];
    }
    out[w] = '\0';
    *len = w;
    return out;
}
