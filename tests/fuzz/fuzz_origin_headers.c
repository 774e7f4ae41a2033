/*
 * Fuzz target for the validation of an origin's response head: upstream.c's libcurl header
 * callback, reached by including upstream.c. The input is the header block as libcurl delivers
 * it, one call per line (each line with its '\n'); like libcurl, the harness makes every block
 * start with a status line. First input byte: bit 0 HEAD instead of GET, bit 1 a small
 * max_origin_headers. Lines after the final block's empty line are trailers and are fed too.
 *
 * Checks, when the head is accepted and published: a final status, field names that are
 * tokens, values without CR, LF, NUL or surrounding whitespace, unambiguous framing.
 */
#include "fuzz.h"

#include "upstream.c"

static struct cdn_config cfg;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_quiet();
    cdn_config_defaults(&cfg);
    return 0;
}

static void
check_published(struct xfer *x, struct cdn_fetch *f)
{
    FUZZ_CHECK(cdn_fetch_state(f) == CDN_FETCH_HEADERS);
    int status = cdn_fetch_status(f);
    FUZZ_CHECK(status >= 200 && status <= 999);
    const struct cdn_hdrs *h = cdn_fetch_resp_headers(f);
    size_t ncl = 0;
    for (size_t i = 0; i < h->n; i++) {
        const struct cdn_hdr *e = &h->v[i];
        FUZZ_CHECK(cdn_is_token(e->name, e->nlen) && e->name[e->nlen] == '\0');
        FUZZ_CHECK(e->value[e->vlen] == '\0');
        for (size_t j = 0; j < e->vlen; j++)
            FUZZ_CHECK(e->value[j] != '\r' && e->value[j] != '\n' && e->value[j] != '\0');
        if (e->vlen > 0)
            FUZZ_CHECK(e->value[0] != ' ' && e->value[0] != '\t' && e->value[e->vlen - 1] != ' ' &&
                       e->value[e->vlen - 1] != '\t');
        ncl += cdn_name_eq(e->name, e->nlen, "Content-Length");
    }
    bool te = cdn_hdrs_get(h, "Transfer-Encoding") != NULL;
    FUZZ_CHECK(!(te && ncl > 0));
    int64_t cl = cdn_fetch_content_length(f);
    FUZZ_CHECK(cl >= -1);
    if (strcmp(cdn_fetch_method(f), "HEAD") != 0)
        FUZZ_CHECK(te ? cl == -1 : (ncl > 0) == (cl >= 0));
    FUZZ_CHECK(x->hdr_bytes <= x->up->cfg->max_origin_headers);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cfg.max_origin_headers = (data[0] & 2) ? 128 : 16 * 1024;
    struct cdn_upstream up = {.magic = UPSTREAM_MAGIC, .cfg = &cfg};
    struct cdn_fetch_req req = {.method = (data[0] & 1) ? "HEAD" : "GET", .target = "/", .body_len = -1};
    struct cdn_fetch *f = cdn_fetch_new(&req);
    struct xfer x = {.up = &up, .f = f};

    const char *pos = (const char *)data + 1, *end = (const char *)data + size;
    bool want_status = true;
    char buf[64 * 1024];
    while (pos < end && !x.failed) {
        const char *nl = memchr(pos, '\n', (size_t)(end - pos));
        size_t n = (size_t)((nl ? nl + 1 : end) - pos);
        if (n > sizeof(buf))
            n = sizeof(buf);
        if (want_status && !x.headers_done && (n < 5 || memcmp(pos, "HTTP/", 5) != 0)) {
            static const char status[] = "HTTP/1.1 200 OK\r\n";
            memcpy(buf, status, sizeof(status) - 1);
            if (on_header(buf, 1, sizeof(status) - 1, &x) != sizeof(status) - 1)
                break;
        }
        /* The callback may write nothing, but give it its own copy as libcurl does. */
        memcpy(buf, pos, n);
        size_t len = n;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            len--;
        want_status = len == 0 && x.status < 200;
        if (on_header(buf, 1, n, &x) != n)
            break;
        pos += n;
    }
    if (x.headers_done)
        check_published(&x, f);
    else if (x.failed)
        FUZZ_CHECK(x.fail_status == 502 && x.reason[0] != '\0');
    cdn_fetch_unref(f);
    return 0;
}
