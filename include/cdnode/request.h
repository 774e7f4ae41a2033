/*
 * request.h: strict validation of a client request's line and header fields, before anything is
 * forwarded or looked up. Pure: no I/O, no clock. Any thread.
 *
 * The front end calls cdn_request_validate() on the first access-handler call with the fields MHD
 * parsed. A non-zero status means: answer that status with the reason as the body, close the
 * connection, contact nobody. This is where request smuggling is stopped (DESIGN.md §3).
 */
#ifndef CDNODE_REQUEST_H
#define CDNODE_REQUEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cdn_hdrs;
struct cdn_arena;

struct cdn_request_info {
    const char *host;      /* lowercased authority host[:port] (from the URI if absolute-form,
                              else from Host), port without leading zeros and omitted when it is
                              the scheme's default; "" for HTTP/1.0 without Host; arena memory */
    const char *target;    /* origin-form path and query ("/a?b"; "/" when an absolute-form URI
                              has an empty path), or "*" for OPTIONS *; arena memory */
    const char *scheme;    /* "http" or "https": the absolute-form scheme, else the listener's */
    int64_t content_length; /* -1 when there is no Content-Length */
    bool chunked;          /* Transfer-Encoding: chunked */
    bool has_body;         /* content_length > 0 or chunked */
    bool http10;           /* HTTP/1.0 request */
    size_t head_memory;    /* cdn_request_head_memory() of the request */
};

struct cdn_request_limits {
    size_t max_body;       /* Content-Length above it: 413 */
    size_t max_target;     /* request-target longer: 414 */
    size_t max_head;       /* cdn_request_head_memory() above it: 431; 0 for no limit */
};

/*
 * Memory a request's head takes in the connection's pool of libmicrohttpd 0.9.75: the request
 * line and each field as received, 64 bytes of bookkeeping per field, and a Cookie field once
 * more with 64 bytes per cookie (the library parses cookies into a copy of their own). The rest
 * of the pool has to hold the response's header block, or the library closes the connection
 * without a response.
 */
size_t cdn_request_head_memory(const char *method, const char *version, const char *url,
                               const struct cdn_hdrs *hdrs);

/*
 * Validates and extracts. `url` is the request-target exactly as received (path + query, or
 * absolute-form). `tls` tells the scheme of origin-form targets. Returns 0 with *info filled, or
 * the HTTP status to answer (400, 413, 414, 431, 501) with *reason set to a static one-line text:
 *  - method not a token (400); version other than exactly "HTTP/1.0" or "HTTP/1.1" (505 is not
 *    used: 400); CONNECT (501: this node does not tunnel); any other token method is accepted
 *  - a field name with a character outside tchar, e.g. "X-Bad " (400)
 *  - a field value with CR, LF or NUL (400)
 *  - more than one Content-Length field, or a value that is not 1*DIGIT or has more than 18
 *    digits (400)
 *  - Content-Length together with Transfer-Encoding (400)
 *  - Transfer-Encoding other than exactly one field "chunked", case-insensitive, OWS around it
 *    allowed (400), or on HTTP/1.0 (400)
 *  - HTTP/1.1 without Host, more than one Host, or a Host that is not a valid non-empty
 *    authority (400); Host is checked even when an absolute-form authority replaces it
 *  - absolute-form target that is not http(s)://authority[/path][?query], with userinfo, or with
 *    an invalid authority (400); its authority wins over Host
 *    (authority = reg-name or IPv4 or "[" IPv6 "]", optional ":" port of 1-5 digits <= 65535)
 *  - request-target not starting with '/' in origin-form, "*" with a method other than OPTIONS,
 *    a byte <= 0x20 or 0x7f, or a '#' (400)
 *  - request-target (strlen(url)) longer than limits->max_target (414)
 *  - a head taking more than limits->max_head of the connection's memory (431), unless 0
 *  - Content-Length above limits->max_body (413), checked after everything above
 * info->host and info->target live in `arena`; info->scheme is a static string. On a non-zero
 * return *info holds nothing meaningful.
 */
int cdn_request_validate(const char *method, const char *version, const char *url,
                         const struct cdn_hdrs *hdrs, bool tls,
                         const struct cdn_request_limits *limits, struct cdn_arena *arena,
                         struct cdn_request_info *info, const char **reason);

/* True for methods whose requests are safe and idempotent for retries (GET, HEAD, OPTIONS, TRACE). */
bool cdn_method_idempotent(const char *method);

#endif
