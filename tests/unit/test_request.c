/* Unit tests for request validation: request line, field syntax, framing, target and Host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"
#include "cdnode/request.h"

#include <stdint.h>
#include <string.h>

#define NOCL (-1)

struct field {
    const char *n;
    const char *v;
    size_t vlen; /* 0: strlen(v); set it for values with an embedded NUL */
};

struct vcase {
    const char *label;
    const char *method;  /* NULL: "GET" */
    const char *version; /* NULL: "HTTP/1.1" */
    const char *url;
    bool tls;
    struct field f[4];
    int status;
    const char *reason; /* exact reason when status != 0 */
    /* expected on success */
    const char *host;
    const char *target;
    const char *scheme; /* NULL: the listener's */
    int64_t cl;
    bool chunked;
    bool body;
};

#define H(v)                                                                                       \
    {                                                                                              \
        "Host", v, 0                                                                               \
    }

static const struct cdn_request_limits limits = {.max_body = 1000, .max_target = 64};

static void
run_cases(const struct vcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct vcase *c = &cases[i];
        struct cdn_arena *a = cdn_arena_new(0);
        struct cdn_hdrs h;
        cdn_hdrs_init(&h, a);
        for (size_t k = 0; k < CDN_ARRAY_LEN(c->f) && c->f[k].n; k++)
            cdn_hdrs_add(&h, c->f[k].n, strlen(c->f[k].n), c->f[k].v,
                         c->f[k].vlen ? c->f[k].vlen : strlen(c->f[k].v));
        struct cdn_request_info info;
        const char *reason = "unset";
        const char *version = c->version ? c->version : "HTTP/1.1";
        int st = cdn_request_validate(c->method ? c->method : "GET", version, c->url, &h, c->tls,
                                      &limits, a, &info, &reason);
        if (st != c->status)
            fail_msg("%s: status %d (%s), want %d", c->label, st, reason ? reason : "-", c->status);
        if (st != 0) {
            if (reason == NULL || strcmp(reason, c->reason) != 0)
                fail_msg("%s: reason \"%s\", want \"%s\"", c->label, reason ? reason : "(null)",
                         c->reason);
            cdn_arena_free(a);
            continue;
        }
        const char *scheme = c->scheme ? c->scheme : c->tls ? "https" : "http";
        if (reason != NULL)
            fail_msg("%s: reason set on success", c->label);
        if (strcmp(info.host, c->host) != 0)
            fail_msg("%s: host \"%s\", want \"%s\"", c->label, info.host, c->host);
        if (strcmp(info.target, c->target) != 0)
            fail_msg("%s: target \"%s\", want \"%s\"", c->label, info.target, c->target);
        if (strcmp(info.scheme, scheme) != 0)
            fail_msg("%s: scheme \"%s\", want \"%s\"", c->label, info.scheme, scheme);
        if (info.content_length != c->cl || info.chunked != c->chunked || info.has_body != c->body)
            fail_msg("%s: cl %lld chunked %d body %d, want %lld %d %d", c->label,
                     (long long)info.content_length, info.chunked, info.has_body, (long long)c->cl,
                     c->chunked, c->body);
        if (info.http10 != (strcmp(version, "HTTP/1.0") == 0))
            fail_msg("%s: http10 %d", c->label, info.http10);
        cdn_arena_free(a);
    }
}

static void
test_request_line(void **state)
{
    (void)state;
    static const struct vcase cases[] = {
        {"plain GET", .url = "/", .f = {H("example.com")}, .host = "example.com", .target = "/",
         .cl = NOCL},
        {"path and query kept", .url = "/a%20b?x=1&y", .f = {H("h")}, .host = "h",
         .target = "/a%20b?x=1&y", .cl = NOCL},
        {"non-ASCII path bytes pass", .url = "/caf\xc3\xa9", .f = {H("h")}, .host = "h",
         .target = "/caf\xc3\xa9", .cl = NOCL},
        {"unknown token method", .method = "PURGEX", .url = "/", .f = {H("h")}, .host = "h",
         .target = "/", .cl = NOCL},
        {"token method with dash", .method = "M-SEARCH", .url = "/", .f = {H("h")}, .host = "h",
         .target = "/", .cl = NOCL},
        {"HTTP/1.0", .version = "HTTP/1.0", .url = "/", .f = {H("h")}, .host = "h", .target = "/",
         .cl = NOCL},
        {"tls listener scheme", .url = "/", .tls = true, .f = {H("h")}, .host = "h", .target = "/",
         .cl = NOCL},
        {"method with space", .method = "GE T", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "invalid method"},
        {"empty method", .method = "", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "invalid method"},
        {"method with slash", .method = "GET/", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "invalid method"},
        {"HTTP/2.0", .version = "HTTP/2.0", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "unsupported HTTP version"},
        {"HTTP/1.2", .version = "HTTP/1.2", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "unsupported HTTP version"},
        {"lowercase version", .version = "http/1.1", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "unsupported HTTP version"},
        {"version trailing space", .version = "HTTP/1.1 ", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "unsupported HTTP version"},
        {"HTTP/0.9", .version = "HTTP/0.9", .url = "/", .f = {H("h")}, .status = 400,
         .reason = "unsupported HTTP version"},
        {"CONNECT", .method = "CONNECT", .url = "h:443", .f = {H("h:443")}, .status = 501,
         .reason = "CONNECT not supported"},
    };
    run_cases(cases, CDN_ARRAY_LEN(cases));
}

static void
test_fields(void **state)
{
    (void)state;
    static const struct vcase cases[] = {
        {"tab and empty values are fine", .url = "/",
         .f = {H("h"), {"X-A", "a\tb", 0}, {"X-Empty", "", 0}}, .host = "h", .target = "/",
         .cl = NOCL},
        {"name with trailing space", .url = "/", .f = {H("h"), {"X-Bad ", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"TE name with space before colon", .url = "/",
         .f = {H("h"), {"Transfer-Encoding ", "chunked", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"CL name with space before colon", .url = "/", .f = {H("h"), {"Content-Length ", "5", 0}},
         .status = 400, .reason = "invalid header field name"},
        {"tab in name", .url = "/", .f = {H("h"), {"X\tBad", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"leading space in name", .url = "/", .f = {H("h"), {" X-Bad", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"colon in name", .url = "/", .f = {H("h"), {"X:Y", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"empty name", .url = "/", .f = {H("h"), {"", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"non-ASCII name", .url = "/", .f = {H("h"), {"X-\xc3\xa9", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"quote in name", .url = "/", .f = {H("h"), {"X\"", "1", 0}}, .status = 400,
         .reason = "invalid header field name"},
        {"CR in value", .url = "/", .f = {H("h"), {"X-A", "a\rb", 0}}, .status = 400,
         .reason = "invalid header field value"},
        {"LF in value", .url = "/", .f = {H("h"), {"X-A", "a\nTransfer-Encoding: chunked", 0}},
         .status = 400, .reason = "invalid header field value"},
        {"NUL in value", .url = "/", .f = {H("h"), {"X-A", "a\0b", 3}}, .status = 400,
         .reason = "invalid header field value"},
        {"NUL in Host value", .url = "/", .f = {{"Host", "h\0evil", 6}}, .status = 400,
         .reason = "invalid header field value"},
    };
    run_cases(cases, CDN_ARRAY_LEN(cases));
}

static void
test_framing(void **state)
{
    (void)state;
    static const struct vcase cases[] = {
        {"CL 0", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "0", 0}},
         .host = "h", .target = "/", .cl = 0},
        {"CL 5", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "5", 0}},
         .host = "h", .target = "/", .cl = 5, .body = true},
        {"CL leading zeros", .method = "POST", .url = "/",
         .f = {H("h"), {"content-length", "007", 0}}, .host = "h", .target = "/", .cl = 7,
         .body = true},
        {"CL 18 digits", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "000000000000000005", 0}}, .host = "h", .target = "/",
         .cl = 5, .body = true},
        {"TE chunked", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked", 0}}, .host = "h", .target = "/", .cl = NOCL,
         .chunked = true, .body = true},
        {"TE case-insensitive", .method = "POST", .url = "/",
         .f = {H("h"), {"transfer-encoding", "ChUnKeD", 0}}, .host = "h", .target = "/", .cl = NOCL,
         .chunked = true, .body = true},
        {"TE with OWS", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", " \tchunked\t ", 0}}, .host = "h", .target = "/",
         .cl = NOCL, .chunked = true, .body = true},
        {"CL twice same", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5", 0}, {"Content-Length", "5", 0}}, .status = 400,
         .reason = "duplicate Content-Length"},
        {"CL twice different", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5", 0}, {"content-length", "6", 0}}, .status = 400,
         .reason = "duplicate Content-Length"},
        {"CL list", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "5,5", 0}},
         .status = 400, .reason = "invalid Content-Length"},
        {"CL list with space", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5, 5", 0}}, .status = 400,
         .reason = "invalid Content-Length"},
        {"CL plus sign", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "+5", 0}},
         .status = 400, .reason = "invalid Content-Length"},
        {"CL negative", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "-1", 0}},
         .status = 400, .reason = "invalid Content-Length"},
        {"CL inner space", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5 5", 0}}, .status = 400,
         .reason = "invalid Content-Length"},
        {"CL empty", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "", 0}},
         .status = 400, .reason = "invalid Content-Length"},
        {"CL hex", .method = "POST", .url = "/", .f = {H("h"), {"Content-Length", "0x10", 0}},
         .status = 400, .reason = "invalid Content-Length"},
        {"CL 19 digits", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "1234567890123456789", 0}}, .status = 400,
         .reason = "invalid Content-Length"},
        {"CL 19 digits, small value", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "0000000000000000001", 0}}, .status = 400,
         .reason = "invalid Content-Length"},
        {"CL overflowing int64", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "99999999999999999999999", 0}}, .status = 400,
         .reason = "invalid Content-Length"},
        {"CL then TE", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5", 0}, {"Transfer-Encoding", "chunked", 0}},
         .status = 400, .reason = "Content-Length with Transfer-Encoding"},
        {"TE then CL", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked", 0}, {"Content-Length", "0", 0}},
         .status = 400, .reason = "Content-Length with Transfer-Encoding"},
        {"CL with bogus TE", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5", 0}, {"Transfer-Encoding", "identity", 0}},
         .status = 400, .reason = "Content-Length with Transfer-Encoding"},
        {"TE chunked twice", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked", 0}, {"Transfer-Encoding", "chunked", 0}},
         .status = 400, .reason = "multiple Transfer-Encoding"},
        {"TE gzip, chunked", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "gzip, chunked", 0}}, .status = 400,
         .reason = "unsupported Transfer-Encoding"},
        {"TE chunked, chunked", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked, chunked", 0}}, .status = 400,
         .reason = "unsupported Transfer-Encoding"},
        {"TE chunked trailing comma", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked,", 0}}, .status = 400,
         .reason = "unsupported Transfer-Encoding"},
        {"TE identity", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "identity", 0}}, .status = 400,
         .reason = "unsupported Transfer-Encoding"},
        {"TE with parameter", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked;x=1", 0}}, .status = 400,
         .reason = "unsupported Transfer-Encoding"},
        {"TE empty", .method = "POST", .url = "/", .f = {H("h"), {"Transfer-Encoding", "", 0}},
         .status = 400, .reason = "unsupported Transfer-Encoding"},
        {"TE xchunked", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "xchunked", 0}}, .status = 400,
         .reason = "unsupported Transfer-Encoding"},
        {"TE on HTTP/1.0", .method = "POST", .version = "HTTP/1.0", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked", 0}}, .status = 400,
         .reason = "Transfer-Encoding on HTTP/1.0"},
    };
    run_cases(cases, CDN_ARRAY_LEN(cases));
}

static void
test_host(void **state)
{
    (void)state;
    static const struct vcase cases[] = {
        {"lowercased", .url = "/", .f = {H("Example.COM")}, .host = "example.com", .target = "/",
         .cl = NOCL},
        {"default http port stripped", .url = "/", .f = {H("example.com:80")},
         .host = "example.com", .target = "/", .cl = NOCL},
        {"default https port stripped", .url = "/", .tls = true, .f = {H("example.com:443")},
         .host = "example.com", .target = "/", .cl = NOCL},
        {"443 kept on http", .url = "/", .f = {H("example.com:443")}, .host = "example.com:443",
         .target = "/", .cl = NOCL},
        {"80 kept on https", .url = "/", .tls = true, .f = {H("example.com:80")},
         .host = "example.com:80", .target = "/", .cl = NOCL},
        {"other port kept", .url = "/", .f = {H("example.com:8080")}, .host = "example.com:8080",
         .target = "/", .cl = NOCL},
        {"default port with zeros", .url = "/", .f = {H("h:080")}, .host = "h", .target = "/",
         .cl = NOCL},
        {"port leading zeros dropped", .url = "/", .f = {H("h:08080")}, .host = "h:8080",
         .target = "/", .cl = NOCL},
        {"port 65535", .url = "/", .f = {H("h:65535")}, .host = "h:65535", .target = "/",
         .cl = NOCL},
        {"IPv4", .url = "/", .f = {H("192.0.2.1:81")}, .host = "192.0.2.1:81", .target = "/",
         .cl = NOCL},
        {"IPv6 with port", .url = "/", .f = {H("[::1]:8080")}, .host = "[::1]:8080", .target = "/",
         .cl = NOCL},
        {"IPv6 lowercased", .url = "/", .f = {H("[FE80::1]")}, .host = "[fe80::1]", .target = "/",
         .cl = NOCL},
        {"IPv6 default port", .url = "/", .f = {H("[2001:db8::1]:80")}, .host = "[2001:db8::1]",
         .target = "/", .cl = NOCL},
        {"IPv4-mapped IPv6", .url = "/", .f = {H("[::ffff:192.0.2.1]")},
         .host = "[::ffff:192.0.2.1]", .target = "/", .cl = NOCL},
        {"pct-encoded reg-name", .url = "/", .f = {H("a%4Fb")}, .host = "a%4fb", .target = "/",
         .cl = NOCL},
        {"sub-delims in reg-name", .url = "/", .f = {H("a!b$c")}, .host = "a!b$c", .target = "/",
         .cl = NOCL},
        {"HTTP/1.0 without Host", .version = "HTTP/1.0", .url = "/", .host = "", .target = "/",
         .cl = NOCL},
        {"missing Host", .url = "/", .status = 400, .reason = "missing Host"},
        {"Host twice, same", .url = "/", .f = {H("h"), H("h")}, .status = 400,
         .reason = "multiple Host"},
        {"Host twice, differing case of name", .url = "/", .f = {H("a"), {"host", "b", 0}},
         .status = 400, .reason = "multiple Host"},
        {"Host twice on HTTP/1.0", .version = "HTTP/1.0", .url = "/", .f = {H("a"), H("b")},
         .status = 400, .reason = "multiple Host"},
        {"empty Host", .url = "/", .f = {H("")}, .status = 400, .reason = "invalid Host"},
        {"space in Host", .url = "/", .f = {H("a b")}, .status = 400, .reason = "invalid Host"},
        {"empty port", .url = "/", .f = {H("h:")}, .status = 400, .reason = "invalid Host"},
        {"port only", .url = "/", .f = {H(":80")}, .status = 400, .reason = "invalid Host"},
        {"non-digit port", .url = "/", .f = {H("h:8a")}, .status = 400, .reason = "invalid Host"},
        {"port 65536", .url = "/", .f = {H("h:65536")}, .status = 400, .reason = "invalid Host"},
        {"port six digits", .url = "/", .f = {H("h:000080")}, .status = 400,
         .reason = "invalid Host"},
        {"two ports", .url = "/", .f = {H("h:80:80")}, .status = 400, .reason = "invalid Host"},
        {"userinfo in Host", .url = "/", .f = {H("u@h")}, .status = 400, .reason = "invalid Host"},
        {"path in Host", .url = "/", .f = {H("h/p")}, .status = 400, .reason = "invalid Host"},
        {"bad pct-encoding", .url = "/", .f = {H("a%zzb")}, .status = 400,
         .reason = "invalid Host"},
        {"truncated pct-encoding", .url = "/", .f = {H("ab%4")}, .status = 400,
         .reason = "invalid Host"},
        {"unclosed IPv6", .url = "/", .f = {H("[::1")}, .status = 400, .reason = "invalid Host"},
        {"bad IPv6", .url = "/", .f = {H("[zz::1]")}, .status = 400, .reason = "invalid Host"},
        {"IPv6 without brackets", .url = "/", .f = {H("::1")}, .status = 400,
         .reason = "invalid Host"},
        {"junk after IPv6", .url = "/", .f = {H("[::1]x")}, .status = 400,
         .reason = "invalid Host"},
        {"IPvFuture", .url = "/", .f = {H("[v1.fe]")}, .status = 400, .reason = "invalid Host"},
        {"IPv6 zone", .url = "/", .f = {H("[fe80::1%25eth0]")}, .status = 400,
         .reason = "invalid Host"},
    };
    run_cases(cases, CDN_ARRAY_LEN(cases));
}

static void
test_target(void **state)
{
    (void)state;
    static const struct vcase cases[] = {
        {"absolute-form", .url = "http://Example.COM:80/p?q", .f = {H("other")},
         .host = "example.com", .target = "/p?q", .scheme = "http", .cl = NOCL},
        {"absolute-form wins over Host", .url = "http://a.example/x", .f = {H("b.example:9")},
         .host = "a.example", .target = "/x", .scheme = "http", .cl = NOCL},
        {"absolute-form empty path", .url = "http://h", .f = {H("h")}, .host = "h", .target = "/",
         .scheme = "http", .cl = NOCL},
        {"absolute-form query without path", .url = "http://h?q=1", .f = {H("h")}, .host = "h",
         .target = "/?q=1", .scheme = "http", .cl = NOCL},
        {"absolute-form https on plain listener", .url = "https://h:443/", .f = {H("h")},
         .host = "h", .target = "/", .scheme = "https", .cl = NOCL},
        {"absolute-form http on tls listener", .url = "http://h:443/", .tls = true, .f = {H("h")},
         .host = "h:443", .target = "/", .scheme = "http", .cl = NOCL},
        {"absolute-form scheme case", .url = "HTTP://h/x", .f = {H("h")}, .host = "h",
         .target = "/x", .scheme = "http", .cl = NOCL},
        {"absolute-form IPv6", .url = "http://[::1]:8080/x", .f = {H("h")}, .host = "[::1]:8080",
         .target = "/x", .scheme = "http", .cl = NOCL},
        {"absolute-form on HTTP/1.0 without Host", .version = "HTTP/1.0", .url = "http://h/x",
         .host = "h", .target = "/x", .scheme = "http", .cl = NOCL},
        {"OPTIONS *", .method = "OPTIONS", .url = "*", .f = {H("h")}, .host = "h", .target = "*",
         .cl = NOCL},
        {"absolute-form still needs Host on 1.1", .url = "http://h/", .status = 400,
         .reason = "missing Host"},
        {"absolute-form with invalid Host", .url = "http://h/", .f = {H("a b")}, .status = 400,
         .reason = "invalid Host"},
        {"userinfo", .url = "http://u@h/", .f = {H("h")}, .status = 400,
         .reason = "userinfo in request-target"},
        {"userinfo with password", .url = "http://u:p@h/", .f = {H("h")}, .status = 400,
         .reason = "userinfo in request-target"},
        {"empty authority", .url = "http:///p", .f = {H("h")}, .status = 400,
         .reason = "invalid authority in request-target"},
        {"bad port in authority", .url = "http://h:99999/", .f = {H("h")}, .status = 400,
         .reason = "invalid authority in request-target"},
        {"ftp scheme", .url = "ftp://h/", .f = {H("h")}, .status = 400,
         .reason = "invalid request-target"},
        {"missing slashes", .url = "http:h/", .f = {H("h")}, .status = 400,
         .reason = "invalid request-target"},
        {"relative path", .url = "p/q", .f = {H("h")}, .status = 400,
         .reason = "invalid request-target"},
        {"authority-form with GET", .url = "h:443", .f = {H("h")}, .status = 400,
         .reason = "invalid request-target"},
        {"asterisk with GET", .url = "*", .f = {H("h")}, .status = 400,
         .reason = "asterisk-form request-target without OPTIONS"},
        {"empty target", .url = "", .f = {H("h")}, .status = 400, .reason = "empty request-target"},
        {"space in target", .url = "/a b", .f = {H("h")}, .status = 400,
         .reason = "invalid byte in request-target"},
        {"tab in target", .url = "/a\tb", .f = {H("h")}, .status = 400,
         .reason = "invalid byte in request-target"},
        {"CTL in target", .url = "/a\x01", .f = {H("h")}, .status = 400,
         .reason = "invalid byte in request-target"},
        {"DEL in target", .url = "/a\x7f", .f = {H("h")}, .status = 400,
         .reason = "invalid byte in request-target"},
        {"CR in target", .url = "/a\r", .f = {H("h")}, .status = 400,
         .reason = "invalid byte in request-target"},
        {"space in absolute-form", .url = "http://h/a b", .f = {H("h")}, .status = 400,
         .reason = "invalid byte in request-target"},
        {"fragment", .url = "/a#f", .f = {H("h")}, .status = 400,
         .reason = "fragment in request-target"},
    };
    run_cases(cases, CDN_ARRAY_LEN(cases));
}

#define URL64 "/123456789012345678901234567890123456789012345678901234567890123"

static void
test_limits(void **state)
{
    (void)state;
    static const struct vcase cases[] = {
        {"target at the limit", .url = URL64, .f = {H("h")}, .host = "h", .target = URL64,
         .cl = NOCL},
        {"target over the limit", .url = URL64 "4", .f = {H("h")}, .status = 414,
         .reason = "request-target too long"},
        {"long absolute-form", .url = "http://h" URL64, .f = {H("h")}, .status = 414,
         .reason = "request-target too long"},
        {"body at the limit", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "1000", 0}}, .host = "h", .target = "/", .cl = 1000,
         .body = true},
        {"body over the limit", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "1001", 0}}, .status = 413,
         .reason = "request body too large"},
        {"18-digit body", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "999999999999999999", 0}}, .status = 413,
         .reason = "request body too large"},
        {"smuggling beats 413", .method = "POST", .url = "/",
         .f = {H("h"), {"Content-Length", "5000", 0}, {"Transfer-Encoding", "chunked", 0}},
         .status = 400, .reason = "Content-Length with Transfer-Encoding"},
        {"bad Host beats 413", .method = "POST", .url = "/",
         .f = {H("a b"), {"Content-Length", "5000", 0}}, .status = 400, .reason = "invalid Host"},
        {"chunked has no length to check", .method = "POST", .url = "/",
         .f = {H("h"), {"Transfer-Encoding", "chunked", 0}}, .host = "h", .target = "/", .cl = NOCL,
         .chunked = true, .body = true},
    };
    run_cases(cases, CDN_ARRAY_LEN(cases));
}

/* The memory a head takes in the front end's pool, and the 431 past limits.max_head. */
static void
test_head_memory(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    cdn_hdrs_add_str(&h, "Host", "h");
    /* "GET / HTTP/1.1\r\n" is 16; "Host: h\r\n" 9 plus 64 of bookkeeping. */
    assert_int_equal(cdn_request_head_memory("GET", "HTTP/1.1", "/", &h), 16 + 9 + 64);
    /* A Cookie counts twice, plus 64 per cookie: "Cookie: a=1; b=2\r\n" is 18 + 64, its
     * parsed copy 9 + 2 * 64. Names compare case-insensitively. */
    cdn_hdrs_add_str(&h, "cookie", "a=1; b=2");
    size_t want = 16 + 9 + 64 + 18 + 64 + 9 + 2 * 64;
    assert_int_equal(cdn_request_head_memory("GET", "HTTP/1.1", "/", &h), want);
    /* Another field is counted once. */
    cdn_hdrs_add_str(&h, "X-Cookie", "a=1; b=2");
    want += 20 + 64;
    assert_int_equal(cdn_request_head_memory("GET", "HTTP/1.1", "/", &h), want);

    struct cdn_request_limits lim = limits;
    struct cdn_request_info info;
    const char *reason = NULL;
    lim.max_head = want;
    assert_int_equal(
        cdn_request_validate("GET", "HTTP/1.1", "/", &h, false, &lim, a, &info, &reason), 0);
    lim.max_head = want - 1;
    assert_int_equal(
        cdn_request_validate("GET", "HTTP/1.1", "/", &h, false, &lim, a, &info, &reason), 431);
    assert_string_equal(reason, "request header fields too large");
    lim.max_head = 0; /* no limit */
    assert_int_equal(
        cdn_request_validate("GET", "HTTP/1.1", "/", &h, false, &lim, a, &info, &reason), 0);
    cdn_arena_free(a);
}

/* Names with an embedded NUL cannot be written in the tables above. */
static void
test_nul_in_name(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    cdn_hdrs_add_str(&h, "Host", "h");
    cdn_hdrs_add(&h, "Content-Length\0X", 16, "5", 1);
    struct cdn_request_info info;
    const char *reason;
    assert_int_equal(
        cdn_request_validate("POST", "HTTP/1.1", "/", &h, false, &limits, a, &info, &reason), 400);
    assert_string_equal(reason, "invalid header field name");
    cdn_arena_free(a);
}

/* The result must not point into the caller's strings: the arena owns it. */
static void
test_info_in_arena(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    char host[] = "Example.com";
    char url[] = "/x?y";
    cdn_hdrs_add_str(&h, "Host", host);
    struct cdn_request_info info;
    const char *reason;
    assert_int_equal(
        cdn_request_validate("GET", "HTTP/1.1", url, &h, false, &limits, a, &info, &reason), 0);
    memset(host, 'z', sizeof(host) - 1);
    memset(url + 1, 'z', sizeof(url) - 2);
    assert_string_equal(info.host, "example.com");
    assert_string_equal(info.target, "/x?y");
    cdn_arena_free(a);
}

static void
test_method_idempotent(void **state)
{
    (void)state;
    static const struct {
        const char *m;
        bool want;
    } rows[] = {
        {"GET", true},   {"HEAD", true},     {"OPTIONS", true}, {"TRACE", true},
        {"POST", false}, {"PUT", false},     {"DELETE", false}, {"PATCH", false},
        {"get", false},  {"CONNECT", false}, {"PURGE", false},  {"", false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++)
        if (cdn_method_idempotent(rows[i].m) != rows[i].want)
            fail_msg("%s: want %d", rows[i].m, rows[i].want);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line),  cmocka_unit_test(test_fields),
        cmocka_unit_test(test_framing),       cmocka_unit_test(test_host),
        cmocka_unit_test(test_target),        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_head_memory),   cmocka_unit_test(test_nul_in_name),
        cmocka_unit_test(test_info_in_arena), cmocka_unit_test(test_method_idempotent),
    };
    return cmocka_run_group_tests_name("request", tests, NULL, NULL);
}
