/*
 * request.c: the front end's gate. A request is refused here unless its framing is unambiguous
 * (at most one Content-Length of plain digits, or exactly one "Transfer-Encoding: chunked" on
 * HTTP/1.1, never both), every field name is a token, no field value can split a line, and it
 * names exactly one authority. Anything an upstream parser could read differently from us is a 400,
 * because the upstream request is rebuilt from what we extracted and a disagreement is smuggling.
 *
 * Checks run cheapest and most fundamental first: request line, target length, field syntax,
 * framing, target and Host, then the body bound, so a smuggling attempt with a huge length is
 * reported as smuggling. Pure: the only outputs are *info (arena strings) and a static reason.
 */
#include "cdnode/request.h"
#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

/* 18 decimal digits always fit in int64_t; longer lengths are not worth supporting. */
#define MAX_CL_DIGITS 18

static bool
is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool
is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* RFC 3986 unreserved / sub-delims, the characters of a reg-name besides pct-encoded. */
static bool
is_regname_char(char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c))
        return true;
    return c != '\0' && strchr("-._~!$&'()*+,;=", c) != NULL;
}

static bool
is_regname(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n || !is_hex(s[i + 1]) || !is_hex(s[i + 2]))
                return false;
            i += 2;
        } else if (!is_regname_char(s[i])) {
            return false;
        }
    }
    return true;
}

static bool
is_ipv6_literal(const char *s, size_t n)
{
    char buf[INET6_ADDRSTRLEN];
    struct in6_addr addr;
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET6, buf, &addr) == 1;
}

/*
 * Parses authority = host [":" port] (no userinfo) and returns its canonical form in the arena:
 * lowercased, port without leading zeros, the scheme's default port removed. NULL when invalid.
 */
static const char *
parse_authority(const char *s, size_t n, const char *scheme, struct cdn_arena *arena)
{
    size_t hlen;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (close == NULL || !is_ipv6_literal(s + 1, (size_t)(close - s) - 1))
            return NULL;
        hlen = (size_t)(close - s) + 1;
    } else {
        const char *colon = memchr(s, ':', n);
        hlen = colon ? (size_t)(colon - s) : n;
        if (!is_regname(s, hlen))
            return NULL;
    }
    long port = -1;
    if (hlen < n) {
        if (s[hlen] != ':')
            return NULL;
        size_t plen = n - hlen - 1;
        if (plen < 1 || plen > 5)
            return NULL;
        port = 0;
        for (size_t i = hlen + 1; i < n; i++) {
            if (!is_digit(s[i]))
                return NULL;
            port = port * 10 + (s[i] - '0');
        }
        if (port > 65535)
            return NULL;
    }
    long dflt = strcmp(scheme, "https") == 0 ? 443 : 80;
    char *out;
    if (port < 0 || port == dflt)
        out = cdn_arena_strndup(arena, s, hlen);
    else {
        char num[CDN_I64_CHARS];
        size_t nl = cdn_fmt_i64(num, port);
        out = cdn_arena_alloc(arena, hlen + 1 + nl + 1);
        memcpy(out, s, hlen);
        out[hlen] = ':';
        memcpy(out + hlen + 1, num, nl + 1);
    }
    for (char *p = out; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return out;
}

/* Content-Length = 1*DIGIT, bounded so that it cannot overflow. */
static bool
parse_content_length(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > MAX_CL_DIGITS)
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* Exactly "chunked", case-insensitive, surrounding OWS allowed and nothing else. */
static bool
is_plain_chunked(const char *s, size_t n)
{
    while (n > 0 && is_ows(s[0])) {
        s++;
        n--;
    }
    while (n > 0 && is_ows(s[n - 1]))
        n--;
    return cdn_name_eq(s, n, "chunked");
}

/* Field syntax: names are tokens (this also refuses "Name :" and "Name\t"), values cannot end a
 * line or hide a terminator. */
static int
check_fields(const struct cdn_hdrs *hdrs, const char **reason)
{
    for (size_t i = 0; i < hdrs->n; i++) {
        const struct cdn_hdr *f = &hdrs->v[i];
        if (!cdn_is_token(f->name, f->nlen)) {
            *reason = "invalid header field name";
            return 400;
        }
        for (size_t j = 0; j < f->vlen; j++) {
            char c = f->value[j];
            if (c == '\r' || c == '\n' || c == '\0') {
                *reason = "invalid header field value";
                return 400;
            }
        }
    }
    return 0;
}

static int
check_framing(const struct cdn_hdrs *hdrs, bool http10, struct cdn_request_info *info,
              const char **reason)
{
    size_t ncl = cdn_hdrs_count(hdrs, "Content-Length");
    size_t nte = cdn_hdrs_count(hdrs, "Transfer-Encoding");
    if (ncl > 1) {
        *reason = "duplicate Content-Length";
        return 400;
    }
    if (ncl == 1 && nte > 0) {
        *reason = "Content-Length with Transfer-Encoding";
        return 400;
    }
    if (nte > 1) {
        *reason = "multiple Transfer-Encoding";
        return 400;
    }
    if (ncl == 1) {
        const struct cdn_hdr *cl = cdn_hdrs_get(hdrs, "Content-Length");
        if (!parse_content_length(cl->value, cl->vlen, &info->content_length)) {
            *reason = "invalid Content-Length";
            return 400;
        }
    }
    if (nte == 1) {
        const struct cdn_hdr *te = cdn_hdrs_get(hdrs, "Transfer-Encoding");
        if (http10) {
            *reason = "Transfer-Encoding on HTTP/1.0";
            return 400;
        }
        if (!is_plain_chunked(te->value, te->vlen)) {
            *reason = "unsupported Transfer-Encoding";
            return 400;
        }
        info->chunked = true;
    }
    return 0;
}

static bool
has_prefix_nocase(const char *s, const char *prefix)
{
    return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * Splits the request-target: absolute-form yields scheme, canonical authority and origin-form
 * target; origin-form and asterisk-form yield the target only (*authority stays NULL).
 */
static int
parse_target(const char *method, const char *url, bool tls, struct cdn_arena *arena,
             struct cdn_request_info *info, const char **authority, const char **reason)
{
    for (const char *p = url; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c == 0x7f) {
            *reason = "invalid byte in request-target";
            return 400;
        }
        if (c == '#') {
            *reason = "fragment in request-target";
            return 400;
        }
    }
    info->scheme = tls ? "https" : "http";
    *authority = NULL;
    if (url[0] == '/') {
        info->target = cdn_arena_strdup(arena, url);
        return 0;
    }
    if (strcmp(url, "*") == 0) {
        if (strcmp(method, "OPTIONS") != 0) {
            *reason = "asterisk-form request-target without OPTIONS";
            return 400;
        }
        info->target = cdn_arena_strdup(arena, url);
        return 0;
    }
    const char *rest;
    if (has_prefix_nocase(url, "http://")) {
        info->scheme = "http";
        rest = url + 7;
    } else if (has_prefix_nocase(url, "https://")) {
        info->scheme = "https";
        rest = url + 8;
    } else {
        *reason = "invalid request-target";
        return 400;
    }
    size_t alen = strcspn(rest, "/?");
    if (memchr(rest, '@', alen) != NULL) {
        *reason = "userinfo in request-target";
        return 400;
    }
    *authority = parse_authority(rest, alen, info->scheme, arena);
    if (*authority == NULL) {
        *reason = "invalid authority in request-target";
        return 400;
    }
    const char *path = rest + alen;
    if (*path == '/')
        info->target = cdn_arena_strdup(arena, path);
    else
        info->target = cdn_arena_printf(arena, "/%s", path); /* "" or "?query" */
    return 0;
}

static int
check_host(const struct cdn_hdrs *hdrs, bool http10, const char *scheme, struct cdn_arena *arena,
           const char **host, const char **reason)
{
    size_t n = cdn_hdrs_count(hdrs, "Host");
    *host = NULL;
    if (n > 1) {
        *reason = "multiple Host";
        return 400;
    }
    if (n == 0) {
        if (http10)
            return 0;
        *reason = "missing Host";
        return 400;
    }
    const struct cdn_hdr *h = cdn_hdrs_get(hdrs, "Host");
    *host = parse_authority(h->value, h->vlen, scheme, arena);
    if (*host == NULL) {
        *reason = "invalid Host";
        return 400;
    }
    return 0;
}

/* What libmicrohttpd 0.9.75 keeps per header field (struct MHD_HTTP_Header, aligned), and per
 * cookie it parses out of a Cookie field. */
#define FIELD_BOOKKEEPING 64

size_t
cdn_request_head_memory(const char *method, const char *version, const char *url,
                        const struct cdn_hdrs *hdrs)
{
    size_t n = strlen(method) + 1 + strlen(url) + 1 + strlen(version) + 2;
    for (size_t i = 0; i < hdrs->n; i++) {
        const struct cdn_hdr *f = &hdrs->v[i];
        n += f->nlen + 2 + f->vlen + 2 + FIELD_BOOKKEEPING;
        if (cdn_name_eq(f->name, f->nlen, "Cookie")) {
            n += f->vlen + 1 + FIELD_BOOKKEEPING;
            for (size_t j = 0; j < f->vlen; j++)
                if (f->value[j] == ';')
                    n += FIELD_BOOKKEEPING;
        }
    }
    return n;
}

int
cdn_request_validate(const char *method, const char *version, const char *url,
                     const struct cdn_hdrs *hdrs, bool tls, const struct cdn_request_limits *limits,
                     struct cdn_arena *arena, struct cdn_request_info *info, const char **reason)
{
    *info = (struct cdn_request_info){.content_length = -1};
    *reason = NULL;
    if (method == NULL || !cdn_is_token(method, strlen(method))) {
        *reason = "invalid method";
        return 400;
    }
    if (version == NULL || (strcmp(version, "HTTP/1.1") != 0 && strcmp(version, "HTTP/1.0") != 0)) {
        *reason = "unsupported HTTP version";
        return 400;
    }
    info->http10 = strcmp(version, "HTTP/1.0") == 0;
    if (strcmp(method, "CONNECT") == 0) {
        *reason = "CONNECT not supported";
        return 501;
    }
    if (url == NULL || url[0] == '\0') {
        *reason = "empty request-target";
        return 400;
    }
    if (strlen(url) > limits->max_target) {
        *reason = "request-target too long";
        return 414;
    }
    info->head_memory = cdn_request_head_memory(method, version, url, hdrs);
    if (limits->max_head > 0 && info->head_memory > limits->max_head) {
        *reason = "request header fields too large";
        return 431;
    }
    int st;
    if ((st = check_fields(hdrs, reason)) != 0)
        return st;
    if ((st = check_framing(hdrs, info->http10, info, reason)) != 0)
        return st;
    const char *authority, *host;
    if ((st = parse_target(method, url, tls, arena, info, &authority, reason)) != 0)
        return st;
    if ((st = check_host(hdrs, info->http10, info->scheme, arena, &host, reason)) != 0)
        return st;
    /* RFC 9112 §3.2.2: the absolute-form authority replaces Host. */
    info->host = authority ? authority : host ? host : "";
    if (info->content_length > 0 && (uint64_t)info->content_length > limits->max_body) {
        *reason = "request body too large";
        return 413;
    }
    info->has_body = info->chunked || info->content_length > 0;
    return 0;
}

bool
cdn_method_idempotent(const char *method)
{
    static const char *const safe[] = {"GET", "HEAD", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < CDN_ARRAY_LEN(safe); i++)
        if (strcmp(method, safe[i]) == 0)
            return true;
    return false;
}
