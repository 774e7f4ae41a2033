/*
 * headers.c: header lists as arrays in an arena. Lists are small (tens of fields), so lookups are
 * linear scans; that beats hashing at these sizes and keeps order, which HTTP needs.
 */
#include "cdnode/headers.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"

#include <string.h>

void
cdn_hdrs_init(struct cdn_hdrs *h, struct cdn_arena *arena)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
    h->arena = arena;
}

void
cdn_hdrs_add(struct cdn_hdrs *h, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (h->n == h->cap) {
        size_t ncap = h->cap ? h->cap * 2 : 16;
        struct cdn_hdr *nv = cdn_arena_alloc(h->arena, ncap * sizeof(*nv));
        if (h->n)
            memcpy(nv, h->v, h->n * sizeof(*nv));
        h->v = nv;
        h->cap = ncap;
    }
    h->v[h->n].name = name;
    h->v[h->n].nlen = nlen;
    h->v[h->n].value = value;
    h->v[h->n].vlen = vlen;
    h->n++;
}

void
cdn_hdrs_add_copy(struct cdn_hdrs *h, const char *name, size_t nlen, const char *value,
                  size_t vlen)
{
    cdn_hdrs_add(h, cdn_arena_strndup(h->arena, name, nlen), nlen,
                 cdn_arena_strndup(h->arena, value, vlen), vlen);
}

void
cdn_hdrs_add_str(struct cdn_hdrs *h, const char *name, const char *value)
{
    cdn_hdrs_add(h, name, strlen(name), value, strlen(value));
}

const struct cdn_hdr *
cdn_hdrs_get(const struct cdn_hdrs *h, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == n && cdn_case_eq(h->v[i].name, name, n))
            return &h->v[i];
    return NULL;
}

size_t
cdn_hdrs_count(const struct cdn_hdrs *h, const char *name)
{
    size_t c = 0, n = strlen(name);
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].nlen == n && cdn_case_eq(h->v[i].name, name, n))
            c++;
    return c;
}

size_t
cdn_hdrs_remove(struct cdn_hdrs *h, const char *name)
{
    size_t w = 0, n = strlen(name);
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].nlen != n || !cdn_case_eq(h->v[i].name, name, n))
            h->v[w++] = h->v[i];
    }
    size_t removed = h->n - w;
    h->n = w;
    return removed;
}

const char *
cdn_hdrs_join(const struct cdn_hdrs *h, const char *name, size_t *len)
{
    size_t total = 0, count = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (cdn_name_eq(h->v[i].name, h->v[i].nlen, name)) {
            total += h->v[i].vlen + (count ? 2 : 0);
            count++;
        }
    }
    if (count == 0)
        return NULL;
    char *out = cdn_arena_alloc(h->arena, total + 1);
    size_t off = 0;
    for (size_t i = 0; i < h->n; i++) {
        if (!cdn_name_eq(h->v[i].name, h->v[i].nlen, name))
            continue;
        if (off) {
            memcpy(out + off, ", ", 2);
            off += 2;
        }
        memcpy(out + off, h->v[i].value, h->v[i].vlen);
        off += h->v[i].vlen;
    }
    out[off] = '\0';
    if (len)
        *len = off;
    return out;
}

bool
cdn_is_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!cdn_is_tchar((unsigned char)s[i]))
            return false;
    return true;
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool
cdn_list_next(const char **pos, const char *end, const char **elem, size_t *elen)
{
    const char *p = *pos;
    for (;;) {
        while (p < end && (is_ows(*p) || *p == ','))
            p++;
        if (p >= end) {
            *pos = p;
            return false;
        }
        const char *start = p;
        bool quoted = false;
        while (p < end) {
            if (quoted) {
                if (*p == '\\' && p + 1 < end)
                    p++;
                else if (*p == '"')
                    quoted = false;
            } else if (*p == '"') {
                quoted = true;
            } else if (*p == ',') {
                break;
            }
            p++;
        }
        const char *stop = p;
        while (stop > start && is_ows(stop[-1]))
            stop--;
        *pos = p;
        if (stop > start) {
            *elem = start;
            *elen = (size_t)(stop - start);
            return true;
        }
    }
}
