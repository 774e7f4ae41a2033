/*
 * hop.c: header fields at the boundary of a hop. A field is either end-to-end (kept, order
 * preserved) or hop-by-hop: the fixed RFC 9110 §7.6.1 set, anything "Proxy-*", and whatever the
 * message's own Connection fields name. Hop-by-hop fields never cross this node in either
 * direction.
 *
 * What we add is always appended as new field lines (Via, CDN-Loop, Forwarded), so other hops'
 * entries are never rewritten; the one exception is X-Forwarded-For, which is collapsed into a
 * single line because many consumers read only the first field. Kept fields point at the input
 * list's strings; new strings come from the output list's arena. Pure: no I/O, no state.
 */
#include "cdnode/hop.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static bool
counted_eq(const char *a, size_t alen, const char *b, size_t blen)
{
    return alen == blen && cdn_case_eq(a, b, alen);
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* The fixed set (Connection, Keep-Alive, TE, Trailer, Transfer-Encoding, Upgrade) and the
 * "Proxy-" prefix, which covers Proxy-Connection, -Authenticate and -Authorization. By length
 * first: it runs for every field that crosses the node. */
static bool
fixed_hop(const char *name, size_t nlen)
{
    if (nlen >= 6 && cdn_case_eq(name, "Proxy-", 6))
        return true;
    switch (nlen) {
    case 2:
        return cdn_case_eq(name, "TE", 2);
    case 7:
        return cdn_case_eq(name, "Trailer", 7) || cdn_case_eq(name, "Upgrade", 7);
    case 10:
        return cdn_case_eq(name, "Connection", 10) || cdn_case_eq(name, "Keep-Alive", 10);
    case 17:
        return cdn_case_eq(name, "Transfer-Encoding", 17);
    default:
        return false;
    }
}

/* Where next_connection_elem() is: field index and position in that field's value. */
struct conn_iter {
    size_t i;
    const char *pos;
};

/* The next element of any Connection field of hdrs, in order; false after the last. */
static bool
next_connection_elem(const struct cdn_hdrs *hdrs, struct conn_iter *it, const char **elem,
                     size_t *elen)
{
    for (; it->i < hdrs->n; it->i++, it->pos = NULL) {
        const struct cdn_hdr *f = &hdrs->v[it->i];
        if (!cdn_name_eq(f->name, f->nlen, "Connection"))
            continue;
        if (it->pos == NULL)
            it->pos = f->value;
        if (cdn_list_next(&it->pos, f->value + f->vlen, elem, elen))
            return true;
    }
    return false;
}

bool
cdn_hop_is_hop_by_hop(const struct cdn_hdrs *hdrs, const char *name, size_t nlen)
{
    if (fixed_hop(name, nlen))
        return true;
    if (hdrs == NULL)
        return false;
    struct conn_iter it = {0, NULL};
    const char *elem;
    size_t elen;
    while (next_connection_elem(hdrs, &it, &elem, &elen))
        if (counted_eq(elem, elen, name, nlen))
            return true;
    return false;
}

void
cdn_hop_mark(const struct cdn_hdrs *hdrs, bool *hop)
{
    for (size_t i = 0; i < hdrs->n; i++)
        hop[i] = fixed_hop(hdrs->v[i].name, hdrs->v[i].nlen);
    struct conn_iter it = {0, NULL};
    const char *elem;
    size_t elen;
    while (next_connection_elem(hdrs, &it, &elem, &elen))
        for (size_t j = 0; j < hdrs->n; j++)
            if (!hop[j] && counted_eq(hdrs->v[j].name, hdrs->v[j].nlen, elem, elen))
                hop[j] = true;
}

/* s as a Forwarded parameter value: a token as is, anything else as a quoted-string. */
static const char *
fwd_value(struct cdn_arena *a, const char *s)
{
    size_t n = strlen(s);
    if (cdn_is_token(s, n))
        return s;
    char *out = cdn_arena_alloc(a, 2 * n + 3);
    size_t k = 0;
    out[k++] = '"';
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '"' || s[i] == '\\')
            out[k++] = '\\';
        out[k++] = s[i];
    }
    out[k++] = '"';
    out[k] = '\0';
    return out;
}

/* RFC 7239 §6: an IPv6 node name is bracketed (and therefore quoted). */
static const char *
fwd_node(struct cdn_arena *a, const char *peer)
{
    if (strchr(peer, ':') != NULL && peer[0] != '[')
        return fwd_value(a, cdn_arena_printf(a, "[%s]", peer));
    return fwd_value(a, peer);
}

/* Every X-Forwarded-For element of `in`, in order, then `peer`, as one ", "-separated list. */
static const char *
xff_chain(const struct cdn_hdrs *in, struct cdn_arena *a, const char *peer)
{
    size_t total = strlen(peer) + 1;
    for (size_t i = 0; i < in->n; i++)
        if (cdn_name_eq(in->v[i].name, in->v[i].nlen, "X-Forwarded-For"))
            total += 3 * in->v[i].vlen; /* each element grows by at most ", " */
    char *out = cdn_arena_alloc(a, total);
    size_t k = 0;
    for (size_t i = 0; i < in->n; i++) {
        const struct cdn_hdr *f = &in->v[i];
        if (!cdn_name_eq(f->name, f->nlen, "X-Forwarded-For"))
            continue;
        const char *pos = f->value, *elem;
        size_t elen;
        while (cdn_list_next(&pos, f->value + f->vlen, &elem, &elen)) {
            memcpy(out + k, elem, elen);
            k += elen;
            memcpy(out + k, ", ", 2);
            k += 2;
        }
    }
    strcpy(out + k, peer);
    return out;
}

void
cdn_hop_request_headers(const struct cdn_hdrs *in, struct cdn_hdrs *out,
                        const struct cdn_hop_opts *o, const char *peer, const char *host,
                        const char *scheme, bool http10)
{
    struct cdn_arena *a = out->arena;
    bool *hop = cdn_arena_alloc(a, in->n + 1);
    cdn_hop_mark(in, hop);
    for (size_t i = 0; i < in->n; i++) {
        const struct cdn_hdr *f = &in->v[i];
        if (hop[i] || cdn_name_eq(f->name, f->nlen, "Host") ||
            cdn_name_eq(f->name, f->nlen, "Content-Length") ||
            cdn_name_eq(f->name, f->nlen, "Expect"))
            continue;
        if (o->x_forwarded_for && cdn_name_eq(f->name, f->nlen, "X-Forwarded-For"))
            continue;
        cdn_hdrs_add(out, f->name, f->nlen, f->value, f->vlen);
    }
    cdn_hdrs_add_str(out, "Via", cdn_arena_cat(a, http10 ? "1.0 " : "1.1 ", o->cdn_id, NULL));
    cdn_hdrs_add_str(out, "CDN-Loop", o->cdn_id);
    if (o->surrogate_capability)
        cdn_hdrs_add_str(out, "Surrogate-Capability",
                         cdn_arena_cat(a, o->cdn_id, "=\"Surrogate/1.0\"", NULL));
    if (o->x_forwarded_for)
        cdn_hdrs_add_str(out, "X-Forwarded-For", xff_chain(in, a, peer));
    if (o->forwarded) {
        const char *v = cdn_arena_printf(a, "for=%s", fwd_node(a, peer));
        if (host != NULL && host[0] != '\0')
            v = cdn_arena_printf(a, "%s;host=%s", v, fwd_value(a, host));
        if (scheme != NULL && scheme[0] != '\0')
            v = cdn_arena_printf(a, "%s;proto=%s", v, scheme);
        cdn_hdrs_add_str(out, "Forwarded", v);
    }
}

void
cdn_hop_response_headers(const struct cdn_hdrs *in, struct cdn_hdrs *out,
                         const struct cdn_hop_opts *o)
{
    bool *hop = cdn_arena_alloc(out->arena, in->n + 1);
    cdn_hop_mark(in, hop);
    for (size_t i = 0; i < in->n; i++) {
        const struct cdn_hdr *f = &in->v[i];
        if (hop[i] || cdn_name_eq(f->name, f->nlen, "Content-Length"))
            continue;
        cdn_hdrs_add(out, f->name, f->nlen, f->value, f->vlen);
    }
    cdn_hdrs_add_str(out, "Via", cdn_arena_cat(out->arena, "1.1 ", o->cdn_id, NULL));
}

/* The pseudonym of a Via member "proto pseudonym [comment]": its second word. */
static bool
via_pseudonym(const char *s, size_t n, const char **word, size_t *wlen)
{
    size_t i = 0;
    while (i < n && !is_ows(s[i]))
        i++;
    while (i < n && is_ows(s[i]))
        i++;
    size_t start = i;
    while (i < n && !is_ows(s[i]))
        i++;
    *word = s + start;
    *wlen = i - start;
    return *wlen > 0;
}

/* Net change in comment nesting over s[0..n), honouring quoted-pairs. */
static int
paren_delta(const char *s, size_t n)
{
    int d = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '(')
            d++;
        else if (s[i] == ')')
            d--;
    }
    return d;
}

unsigned
cdn_hop_loop_count(const struct cdn_hdrs *hdrs, const char *cdn_id)
{
    size_t idlen = strlen(cdn_id);
    /* Each pass through one of our nodes adds our id to both CDN-Loop and Via: the passes are
     * the larger of the two counts, not their sum (a node that drops one field still counts). */
    unsigned in_loop = 0, in_via = 0;
    for (size_t i = 0; i < hdrs->n; i++) {
        const struct cdn_hdr *f = &hdrs->v[i];
        bool loop = cdn_name_eq(f->name, f->nlen, "CDN-Loop");
        if (!loop && !cdn_name_eq(f->name, f->nlen, "Via"))
            continue;
        const char *pos = f->value, *end = f->value + f->vlen, *elem;
        size_t elen;
        int depth = 0; /* inside a Via comment that a comma split */
        while (cdn_list_next(&pos, end, &elem, &elen)) {
            if (loop) {
                const char *semi = memchr(elem, ';', elen);
                size_t n = semi ? (size_t)(semi - elem) : elen;
                while (n > 0 && is_ows(elem[n - 1]))
                    n--;
                if (counted_eq(elem, n, cdn_id, idlen))
                    in_loop++;
                continue;
            }
            const char *word;
            size_t wlen;
            if (depth == 0 && via_pseudonym(elem, elen, &word, &wlen) &&
                counted_eq(word, wlen, cdn_id, idlen))
                in_via++;
            depth += paren_delta(elem, elen);
            if (depth < 0)
                depth = 0;
        }
    }
    return in_loop > in_via ? in_loop : in_via;
}

/* Whether an X-Forwarded-For entry is a bare address: an IPv4 or IPv6 literal, the latter
 * optionally bracketed (the brackets are trimmed from *s, *n). A port, a name, "unknown" or
 * garbage is not. */
static bool
xff_addr(const char **s, size_t *n)
{
    const char *p = *s;
    size_t len = *n;
    if (len >= 2 && p[0] == '[' && p[len - 1] == ']') {
        p++;
        len -= 2;
    }
    char buf[INET6_ADDRSTRLEN];
    if (len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, p, len);
    buf[len] = '\0';
    struct in6_addr addr;
    if (inet_pton(AF_INET, buf, &addr) != 1 && inet_pton(AF_INET6, buf, &addr) != 1)
        return false;
    *s = p;
    *n = len;
    return true;
}

const char *
cdn_hop_client_addr(const struct cdn_hdrs *hdrs, const char *peer, unsigned trusted_hops,
                    struct cdn_arena *arena)
{
    if (trusted_hops == 0)
        return peer;
    size_t total = 0;
    for (size_t i = 0; i < hdrs->n; i++) {
        const struct cdn_hdr *f = &hdrs->v[i];
        if (!cdn_name_eq(f->name, f->nlen, "X-Forwarded-For"))
            continue;
        const char *pos = f->value, *elem;
        size_t elen;
        while (cdn_list_next(&pos, f->value + f->vlen, &elem, &elen))
            total++;
    }
    if (total == 0)
        return peer;
    /* The chosen entry and every entry right of it come from trusted hops and must be sound;
     * entries left of it are whatever the client wrote and are not looked at. */
    size_t want = total > trusted_hops ? total - trusted_hops : 0;
    size_t idx = 0;
    const char *chosen = NULL;
    size_t clen = 0;
    for (size_t i = 0; i < hdrs->n; i++) {
        const struct cdn_hdr *f = &hdrs->v[i];
        if (!cdn_name_eq(f->name, f->nlen, "X-Forwarded-For"))
            continue;
        const char *pos = f->value, *elem;
        size_t elen;
        while (cdn_list_next(&pos, f->value + f->vlen, &elem, &elen)) {
            if (idx >= want) {
                if (!xff_addr(&elem, &elen))
                    return peer;
                if (idx == want) {
                    chosen = elem;
                    clen = elen;
                }
            }
            idx++;
        }
    }
    return cdn_arena_strndup(arena, chosen, clen);
}
