/*
 * cachekey.c: primary keys and Vary variants.
 *
 * Model: a key is a string built only from normalizations that cannot make two different
 * resources share an entry (case of scheme and host, default ports, escapes of unreserved
 * characters) plus the ones the operator asked for (query options). The LMDB key is its SHA-256;
 * the store keeps the string too, to detect collisions and to purge by URL. A variant is the
 * request's values of the fields the stored response's Vary names, in one canonical string
 * compared byte for byte.
 */
#include "cdnode/cachekey.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/config.h"
#include "cdnode/headers.h"

#include "cdnode/sha256.h"

#include <string.h>
#include <strings.h>

void
cdn_key_opts_from_config(const struct cdn_config *c, struct cdn_key_opts *o)
{
    o->ignore_query = c->cache_key_ignore_query;
    o->sort_query = c->cache_key_sort_query;
    o->drop_params = (const char *const *)c->cache_key_drop_params;
    o->n_drop_params = c->n_cache_key_drop_params;
}

static char
lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

const char *
cdn_key_host(const char *scheme, const char *host, size_t len, struct cdn_arena *a)
{
    /* The port separator is the last ':' outside an IPv6 literal's brackets. */
    const char *close = len && host[0] == '[' ? memchr(host, ']', len) : NULL;
    const char *from = close ? close + 1 : host;
    const char *colon = NULL;
    for (const char *p = from; p < host + len; p++)
        if (*p == ':')
            colon = p;
    if (close && colon && colon != close + 1)
        return NULL;
    if (close && !colon && close + 1 != host + len)
        return NULL;
    size_t hlen = colon ? (size_t)(colon - host) : len;
    if (!close && memchr(host, ':', hlen) != NULL)
        return NULL;
    unsigned long port = 0;
    size_t plen = colon ? len - hlen - 1 : 0;
    if (plen > 5)
        return NULL;
    for (size_t i = 0; i < plen; i++) {
        char c = colon[1 + i];
        if (c < '0' || c > '9')
            return NULL;
        port = port * 10 + (unsigned long)(c - '0');
    }
    if (port > 65535)
        return NULL;
    bool dflt = plen == 0 || (cdn_name_eq(scheme, strlen(scheme), "http") && port == 80) ||
                (cdn_name_eq(scheme, strlen(scheme), "https") && port == 443);
    char *out = cdn_arena_alloc(a, hlen + 7);
    for (size_t i = 0; i < hlen; i++)
        out[i] = lower(host[i]);
    out[hlen] = '\0';
    if (!dflt)
        snprintf(out + hlen, 7, ":%lu", port);
    return out;
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool
unreserved(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/*
 * Percent-encoding normalization of s[0..n) into out (at most 3n bytes); returns the length. A
 * '%' that does not start an escape is itself written escaped (%25), so normalizing a key again
 * gives the same key.
 */
static size_t
pct_normalize(const char *s, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 &&
            (lo = hexval(s[i + 2])) >= 0) {
            char c = (char)(hi * 16 + lo);
            if (unreserved(c)) {
                out[w++] = c;
            } else {
                out[w++] = '%';
                out[w++] = hex[hi];
                out[w++] = hex[lo];
            }
            i += 2;
        } else if (s[i] == '%') {
            memcpy(out + w, "%25", 3);
            w += 3;
        } else {
            out[w++] = s[i];
        }
    }
    return w;
}

struct param {
    const char *s;
    size_t len;
    size_t name_len;
    size_t index;
};

static int
param_cmp(const void *pa, const void *pb)
{
    const struct param *a = pa, *b = pb;
    size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
    int c = memcmp(a->s, b->s, n);
    if (c == 0 && a->name_len != b->name_len)
        c = a->name_len < b->name_len ? -1 : 1;
    if (c == 0)
        c = a->index < b->index ? -1 : (a->index > b->index ? 1 : 0);
    return c;
}

static bool
dropped(const struct cdn_key_opts *o, const char *name, size_t n)
{
    for (size_t i = 0; i < o->n_drop_params; i++)
        if (strlen(o->drop_params[i]) == n && memcmp(o->drop_params[i], name, n) == 0)
            return true;
    return false;
}

/* Applies drop_params and sort_query to a normalized query q[0..n) in place; returns its length. */
static size_t
query_options(char *q, size_t n, const struct cdn_key_opts *o, struct cdn_arena *a)
{
    size_t count = 1;
    for (size_t i = 0; i < n; i++)
        count += q[i] == '&';
    struct param *p = cdn_arena_alloc(a, count * sizeof(*p));
    size_t k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && q[i] != '&')
            continue;
        const char *s = q + start;
        size_t len = i - start;
        const char *eq = memchr(s, '=', len);
        size_t name_len = eq ? (size_t)(eq - s) : len;
        if (len > 0 && !dropped(o, s, name_len)) {
            p[k] = (struct param){s, len, name_len, k};
            k++;
        }
        start = i + 1;
    }
    if (o->sort_query)
        qsort(p, k, sizeof(*p), param_cmp);
    char *tmp = cdn_arena_alloc(a, n + 1);
    size_t w = 0;
    for (size_t i = 0; i < k; i++) {
        if (i)
            tmp[w++] = '&';
        memcpy(tmp + w, p[i].s, p[i].len);
        w += p[i].len;
    }
    memcpy(q, tmp, w);
    return w;
}

int
cdn_cache_key(const char *scheme, const char *host, const char *target,
              const struct cdn_key_opts *o, struct cdn_arena *a, const char **key, size_t *klen)
{
    if (target == NULL || target[0] != '/')
        return CDN_EINVAL;
    const char *h = cdn_key_host(scheme, host, strlen(host), a);
    if (h == NULL)
        return CDN_EINVAL;
    size_t slen = strlen(scheme), hlen = strlen(h);
    const char *hash = strchr(target, '#');
    size_t tlen = hash ? (size_t)(hash - target) : strlen(target);
    const char *q = memchr(target, '?', tlen);
    size_t plen = q ? (size_t)(q - target) : tlen;
    char *out = cdn_arena_alloc(a, slen + 3 + hlen + 3 * tlen + 1);
    size_t w = 0;
    for (size_t i = 0; i < slen; i++)
        out[w++] = lower(scheme[i]);
    memcpy(out + w, "://", 3);
    w += 3;
    memcpy(out + w, h, hlen);
    w += hlen;
    w += pct_normalize(target, plen, out + w);
    if (q != NULL && !o->ignore_query) {
        char *qs = out + w + 1;
        size_t qn = pct_normalize(q + 1, tlen - plen - 1, qs);
        if (o->sort_query || o->n_drop_params)
            qn = query_options(qs, qn, o, a);
        if (qn) {
            out[w] = '?';
            w += 1 + qn;
        }
    }
    out[w] = '\0';
    *key = out;
    *klen = w;
    return 0;
}

_Static_assert(CDN_KEY_HASH_LEN == CDN_SHA256_LEN, "the key hash is a SHA-256");

void
cdn_key_hash(const char *key, size_t n, unsigned char *out)
{
    cdn_sha256(key, n, out);
}

/* ---- Vary ------------------------------------------------------------------------------------ */

bool
cdn_vary_is_star(const char *spec, size_t len)
{
    return len == 1 && spec[0] == '*';
}

const char *
cdn_vary_spec(const struct cdn_hdrs *resp, struct cdn_arena *a, size_t *len)
{
    /* Each name is written with ", " before it, where the input may have had a bare ','
     * (or a name of one byte): at most three output bytes per input byte, plus the joins. */
    size_t cap = 1;
    for (size_t i = 0; i < resp->n; i++)
        if (cdn_name_eq(resp->v[i].name, resp->v[i].nlen, "Vary"))
            cap += 3 * resp->v[i].vlen + 2;
    char *out = cdn_arena_alloc(a, cap);
    size_t w = 0, count = 0;
    const char *names[CDN_VARY_MAX_FIELDS];
    size_t lens[CDN_VARY_MAX_FIELDS];
    for (size_t i = 0; i < resp->n; i++) {
        const struct cdn_hdr *f = &resp->v[i];
        if (!cdn_name_eq(f->name, f->nlen, "Vary"))
            continue;
        const char *pos = f->value, *e;
        size_t elen;
        while (cdn_list_next(&pos, f->value + f->vlen, &e, &elen)) {
            if (!cdn_is_token(e, elen) || (elen == 1 && e[0] == '*'))
                goto star;
            bool dup = false;
            for (size_t j = 0; j < count && !dup; j++)
                dup = lens[j] == elen && cdn_case_eq(names[j], e, elen);
            if (dup)
                continue;
            if (count == CDN_VARY_MAX_FIELDS)
                goto star;
            if (count) {
                memcpy(out + w, ", ", 2);
                w += 2;
            }
            names[count] = e;
            lens[count] = elen;
            count++;
            for (size_t j = 0; j < elen; j++)
                out[w++] = lower(e[j]);
        }
    }
    out[w] = '\0';
    *len = w;
    return out;
star:
    *len = 1;
    return "*";
}

/* An Accept-Encoding value reduced to what selects a representation: the acceptable codings
 * (q > 0), lowercased, sorted, without duplicates, joined with ','. Writes at most n bytes. */
static size_t
normalize_ae(const char *v, size_t n, char *out)
{
    struct coding {
        const char *s;
        size_t len;
    } c[16];
    size_t nc = 0;
    const char *pos = v, *e;
    size_t el;
    while (nc < CDN_ARRAY_LEN(c) && cdn_list_next(&pos, v + n, &e, &el)) {
        const char *semi = memchr(e, ';', el);
        size_t tl = semi ? (size_t)(semi - e) : el;
        while (tl && (e[tl - 1] == ' ' || e[tl - 1] == '\t'))
            tl--;
        if (tl == 0)
            continue;
        bool zero = false;
        for (const char *p = semi; p && p < e + el; p = memchr(p + 1, ';', (size_t)(e + el - p - 1))) {
            const char *q = p + 1;
            while (q < e + el && (*q == ' ' || *q == '\t'))
                q++;
            if (e + el - q >= 2 && (q[0] == 'q' || q[0] == 'Q') && q[1] == '=') {
                zero = q + 2 < e + el && q[2] == '0';
                for (const char *d = q + 3; zero && d < e + el && *d != ';' && *d != ' '; d++)
                    zero = *d == '.' || *d == '0';
            }
        }
        if (zero)
            continue;
        size_t k = nc;
        while (k > 0 && (strncasecmp(c[k - 1].s, e, c[k - 1].len < tl ? c[k - 1].len : tl) > 0 ||
                         (strncasecmp(c[k - 1].s, e, c[k - 1].len < tl ? c[k - 1].len : tl) == 0 &&
                          c[k - 1].len > tl)))
            k--;
        if (k > 0 && c[k - 1].len == tl && strncasecmp(c[k - 1].s, e, tl) == 0)
            continue; /* duplicate */
        memmove(c + k + 1, c + k, (nc - k) * sizeof(c[0]));
        c[k].s = e;
        c[k].len = tl;
        nc++;
    }
    size_t w = 0;
    for (size_t i = 0; i < nc; i++) {
        if (i)
            out[w++] = ',';
        for (size_t k = 0; k < c[i].len; k++)
            out[w++] = lower(c[i].s[k]);
    }
    return w;
}

/*
 * A list-based value with the whitespace its syntax allows removed (RFC 9111 §4.1): its non-empty
 * elements (cdn_list_next: trimmed of OWS, commas in quoted strings kept) joined with ','. With
 * fold, for Accept-Language, whose language ranges and weights are case-insensitive and hold no
 * whitespace of their own, an element also loses its inner whitespace and is lowercased.
 * The result is never longer than v. Writes at most n bytes.
 */
static size_t
normalize_list(const char *v, size_t n, bool fold, char *out)
{
    const char *pos = v, *e;
    size_t el, w = 0;
    while (cdn_list_next(&pos, v + n, &e, &el)) {
        if (w)
            out[w++] = ',';
        for (size_t k = 0; k < el; k++) {
            if (!fold)
                out[w++] = e[k];
            else if (e[k] != ' ' && e[k] != '\t')
                out[w++] = lower(e[k]);
        }
    }
    return w;
}

const char *
cdn_vary_values(const char *spec, size_t slen, const struct cdn_hdrs *req, struct cdn_arena *a,
                size_t *len)
{
    if (cdn_vary_is_star(spec, slen))
        return NULL;
    /* Each request line matches at most one (deduplicated) name of the spec. */
    size_t cap = 2 * slen + 2;
    for (size_t i = 0; i < req->n; i++)
        cap += req->v[i].vlen + 2;
    char *out = cdn_arena_alloc(a, cap);
    char *joined = cdn_arena_alloc(a, cap);
    size_t w = 0;
    const char *pos = spec, *name;
    size_t nlen;
    while (cdn_list_next(&pos, spec + slen, &name, &nlen)) {
        memcpy(out + w, name, nlen);
        w += nlen;
        bool present = false;
        size_t j = 0;
        for (size_t i = 0; i < req->n; i++) {
            const struct cdn_hdr *f = &req->v[i];
            if (f->nlen != nlen || !cdn_case_eq(f->name, name, nlen))
                continue;
            const char *v = f->value;
            size_t vlen = f->vlen;
            while (vlen && (*v == ' ' || *v == '\t')) {
                v++;
                vlen--;
            }
            while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                vlen--;
            if (present) {
                memcpy(joined + j, ", ", 2);
                j += 2;
            }
            present = true;
            memcpy(joined + j, v, vlen);
            j += vlen;
        }
        if (present) {
            out[w++] = ':';
            if (cdn_name_eq(name, nlen, "accept-encoding"))
                w += normalize_ae(joined, j, out + w);
            else
                w += normalize_list(joined, j, cdn_name_eq(name, nlen, "accept-language"), out + w);
        }
        out[w++] = '\n';
    }
    out[w] = '\0';
    *len = w;
    return out;
}

void
cdn_variant_id(const char *values, size_t n, unsigned char *out)
{
    cdn_sha256(values, n, out);
}

bool
cdn_vary_match(const char *spec, size_t slen, const char *stored_values, size_t svlen,
               const struct cdn_hdrs *req, struct cdn_arena *a)
{
    size_t n;
    const char *v = cdn_vary_values(spec, slen, req, a, &n);
    return v != NULL && n == svlen && memcmp(v, stored_values, n) == 0;
}
