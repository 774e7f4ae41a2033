/*
 * encoding.c: gzip negotiation, the compress decision, and zlib streams for the store sink and
 * the HIT path.
 *
 * Model: the store holds one body per stored response, identity or gzip. A gzip body is served as
 * is to clients that accept gzip and decompressed on the fly for the others, straight from the
 * store's segments. Whenever a field is malformed or listings disagree, the reading chosen is the
 * one that serves identity: an identity body never fails to decode.
 *
 * Invariants: a cdn_gunzip never writes more than max_out + 1 bytes in total and keeps nothing
 * proportional to the data (zlib's window, the caller's segment list); errors are sticky. A cdn_gz
 * emits only full CDN_GZ_PIECE pieces until it is finished. zlib allocates through cdn_calloc, so
 * Z_MEM_ERROR cannot happen and every other zlib failure is the data's fault.
 */
#include "cdnode/encoding.h"
#include "cdnode/arena.h"
#include "cdnode/cachectl.h"
#include "cdnode/common.h"
#include "cdnode/headers.h"
#include "cdnode/policy.h"

#include <limits.h>
#include <string.h>
#include <zlib.h>

#define GZ_MAGIC 0x677a6370u     /* "gzcp" */
#define GUNZIP_MAGIC 0x677a6470u /* "gzdp" */

static bool
is_ows(char c)
{
    return c == ' ' || c == '\t';
}

/* ---- Negotiation ------------------------------------------------------------------------------
 */

/* qvalue (RFC 9110 §12.4.2) s[0..n) in thousandths, or -1 when invalid. */
static int
parse_qvalue(const char *s, size_t n)
{
    if (n == 0 || (s[0] != '0' && s[0] != '1'))
        return -1;
    int q = (s[0] - '0') * 1000;
    if (n == 1)
        return q;
    if (s[1] != '.' || n > 5)
        return -1;
    int scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        q += (s[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* One Accept-Encoding member, codings [ OWS ";" OWS "q=" qvalue ]; false when invalid. */
static bool
parse_ae_member(const char *s, size_t n, size_t *clen, int *q)
{
    size_t i = 0;
    while (i < n && cdn_is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0)
        return false;
    *clen = i;
    while (i < n && is_ows(s[i]))
        i++;
    if (i == n) {
        *q = 1000;
        return true;
    }
    if (s[i++] != ';')
        return false;
    while (i < n && is_ows(s[i]))
        i++;
    if (n - i < 2 || (s[i] != 'q' && s[i] != 'Q') || s[i + 1] != '=')
        return false;
    *q = parse_qvalue(s + i + 2, n - i - 2);
    return *q >= 0;
}

/* What the Accept-Encoding lines of a request say; q in thousandths, -1 when not listed. */
struct ae {
    bool present;
    int gzip_lo; /* lowest q of gzip / x-gzip */
    int id_hi;   /* highest q of identity */
    int star_lo, star_hi;
};

static void
ae_parse(const struct cdn_hdrs *req, struct ae *ae)
{
    ae->present = false;
    ae->gzip_lo = ae->id_hi = ae->star_lo = ae->star_hi = -1;
    for (size_t i = 0; i < req->n; i++) {
        const struct cdn_hdr *h = &req->v[i];
        if (!cdn_name_eq(h->name, h->nlen, "Accept-Encoding"))
            continue;
        ae->present = true;
        const char *pos = h->value, *end = h->value + h->vlen, *e;
        size_t elen, clen;
        int q;
        while (cdn_list_next(&pos, end, &e, &elen)) {
            if (!parse_ae_member(e, elen, &clen, &q))
                continue;
            if (cdn_name_eq(e, clen, "gzip") || cdn_name_eq(e, clen, "x-gzip")) {
                if (ae->gzip_lo < 0 || q < ae->gzip_lo)
                    ae->gzip_lo = q;
            } else if (cdn_name_eq(e, clen, "identity")) {
                if (q > ae->id_hi)
                    ae->id_hi = q;
            } else if (clen == 1 && e[0] == '*') {
                if (ae->star_lo < 0 || q < ae->star_lo)
                    ae->star_lo = q;
                if (q > ae->star_hi)
                    ae->star_hi = q;
            }
        }
    }
}

bool
cdn_accepts_gzip(const struct cdn_hdrs *req)
{
    struct ae ae;
    ae_parse(req, &ae);
    if (!ae.present)
        return false;
    if (ae.gzip_lo >= 0)
        return ae.gzip_lo > 0;
    return ae.star_lo > 0;
}

bool
cdn_identity_acceptable(const struct cdn_hdrs *req)
{
    struct ae ae;
    ae_parse(req, &ae);
    if (ae.id_hi >= 0)
        return ae.id_hi > 0;
    return ae.star_hi != 0;
}

/* ---- The compress decision --------------------------------------------------------------------
 */

const char *const cdn_gzip_default_types[] = {
    "text/*",
    "application/javascript",
    "application/x-javascript",
    "application/ecmascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/geo+json",
    "application/problem+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/vnd.api+json",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "image/bmp",
    "font/ttf",
    "font/otf",
    "application/vnd.ms-fontobject",
};
const size_t cdn_gzip_default_ntypes = CDN_ARRAY_LEN(cdn_gzip_default_types);

enum cdn_coding
cdn_content_coding(const struct cdn_hdrs *resp)
{
    size_t lines = 0, members = 0, identity = 0;
    bool gzip = false;
    for (size_t i = 0; i < resp->n; i++) {
        const struct cdn_hdr *h = &resp->v[i];
        if (!cdn_name_eq(h->name, h->nlen, "Content-Encoding"))
            continue;
        lines++;
        const char *pos = h->value, *end = h->value + h->vlen, *e;
        size_t elen;
        while (cdn_list_next(&pos, end, &e, &elen)) {
            members++;
            if (cdn_name_eq(e, elen, "identity"))
                identity++;
            else if (cdn_name_eq(e, elen, "gzip") || cdn_name_eq(e, elen, "x-gzip"))
                gzip = true;
        }
    }
    if (lines == 0 || (members > 0 && identity == members))
        return CDN_CODING_IDENTITY;
    if (members == 1 && gzip)
        return CDN_CODING_GZIP;
    return CDN_CODING_OTHER;
}

/* Whether media type m[0..n) ("type/subtype", valid) matches a configured entry. */
static bool
type_matches(const char *m, size_t n, const char *entry)
{
    size_t elen = strlen(entry);
    if (elen >= 2 && entry[elen - 2] == '/' && entry[elen - 1] == '*') {
        const char *slash = memchr(m, '/', n);
        size_t tlen = (size_t)(slash - m);
        return tlen == elen - 2 && cdn_case_eq(m, entry, tlen);
    }
    return elen == n && cdn_case_eq(m, entry, n);
}

bool
cdn_should_compress(int status, const struct cdn_hdrs *resp, int64_t content_length,
                    size_t min_size, const char *const *types, size_t ntypes)
{
    if (status != 200 || (content_length >= 0 && (uint64_t)content_length < min_size))
        return false;
    /* The type first: it turns most responses away, and the coding is a scan of its own. */
    const struct cdn_hdr *ct = NULL;
    for (size_t i = 0; i < resp->n; i++)
        if (cdn_name_eq(resp->v[i].name, resp->v[i].nlen, "Content-Type")) {
            if (ct)
                return false; /* more than one */
            ct = &resp->v[i];
        }
    if (ct == NULL)
        return false;
    const char *s = ct->value, *end = ct->value + ct->vlen;
    while (s < end && is_ows(*s))
        s++;
    const char *semi = memchr(s, ';', (size_t)(end - s));
    const char *stop = semi ? semi : end;
    while (stop > s && is_ows(stop[-1]))
        stop--;
    size_t n = (size_t)(stop - s);
    const char *slash = memchr(s, '/', n);
    if (slash == NULL || !cdn_is_token(s, (size_t)(slash - s)) ||
        !cdn_is_token(slash + 1, (size_t)(stop - slash - 1)))
        return false;
    size_t i = 0;
    while (i < ntypes && !type_matches(s, n, types[i]))
        i++;
    if (i == ntypes || cdn_content_coding(resp) != CDN_CODING_IDENTITY)
        return false;
    struct cdn_cc cc;
    cdn_cc_from_hdrs(resp, "Cache-Control", &cc);
    return !cc.no_transform;
}

/* ---- zlib plumbing ----------------------------------------------------------------------------
 */

/* For inflate, which writes its window before reading it: no need to zero 40 KiB per response. */
static voidpf
z_alloc(voidpf opaque, uInt items, uInt size)
{
    return cdn_malloc((size_t)items * size);
}

/* For deflate, whose match search may read window bytes it never wrote (harmless, but memory
 * checkers report it); compression happens once per stored object. */
static voidpf
z_calloc(voidpf opaque, uInt items, uInt size)
{
    return cdn_calloc(items, size);
}

static void
z_free(voidpf opaque, voidpf p)
{
    free(p);
}

/* windowBits for deflateInit2 / inflateInit2: 32 KiB window, gzip wrapper only. */
#define GZIP_WBITS (15 + 16)

/* ---- Streaming gzip compressor ----------------------------------------------------------------
 */

struct cdn_gz {
    uint32_t magic;
    bool finished;
    bool failed;
    z_stream zs;
    unsigned char buf[CDN_GZ_PIECE];
};

struct cdn_gz *
cdn_gz_new(int level)
{
    CDN_ASSERT(level >= -1 && level <= 9);
    struct cdn_gz *z = cdn_calloc(1, sizeof(*z));
    z->magic = GZ_MAGIC;
    z->zs.zalloc = z_calloc;
    z->zs.zfree = z_free;
    int rc = deflateInit2(&z->zs, level, Z_DEFLATED, GZIP_WBITS, 8, Z_DEFAULT_STRATEGY);
    CDN_ASSERT(rc == Z_OK);
    z->zs.next_out = z->buf;
    z->zs.avail_out = sizeof(z->buf);
    return z;
}

/* Runs deflate on the pending input, emitting each full buffer; with Z_FINISH, to the end. */
static int
gz_pump(struct cdn_gz *z, int flush, cdn_gz_emit_fn emit, void *arg)
{
    for (;;) {
        int rc = deflate(&z->zs, flush);
        if (rc == Z_STREAM_END) {
            size_t n = sizeof(z->buf) - z->zs.avail_out;
            if (n > 0)
                emit(arg, z->buf, n);
            z->zs.next_out = z->buf;
            z->zs.avail_out = sizeof(z->buf);
            return 0;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return CDN_EIO;
        if (z->zs.avail_out == 0) {
            emit(arg, z->buf, sizeof(z->buf));
            z->zs.next_out = z->buf;
            z->zs.avail_out = sizeof(z->buf);
            continue;
        }
        /* Output room is left: zlib has taken all the input, or (finishing) would have ended. */
        if (flush == Z_FINISH || z->zs.avail_in != 0)
            return CDN_EIO;
        return 0;
    }
}

int
cdn_gz_write(struct cdn_gz *z, const void *in, size_t n, cdn_gz_emit_fn emit, void *arg)
{
    CDN_CHECK_MAGIC(z, GZ_MAGIC);
    CDN_ASSERT(!z->finished);
    if (z->failed)
        return CDN_EIO;
    const unsigned char *p = in;
    while (n > 0) {
        uInt step = n > UINT_MAX ? UINT_MAX : (uInt)n;
        z->zs.next_in = (unsigned char *)p;
        z->zs.avail_in = step;
        if (gz_pump(z, Z_NO_FLUSH, emit, arg) != 0) {
            z->failed = true;
            return CDN_EIO;
        }
        p += step;
        n -= step;
    }
    return 0;
}

int
cdn_gz_finish(struct cdn_gz *z, cdn_gz_emit_fn emit, void *arg)
{
    CDN_CHECK_MAGIC(z, GZ_MAGIC);
    CDN_ASSERT(!z->finished);
    z->finished = true;
    if (z->failed)
        return CDN_EIO;
    z->zs.next_in = NULL;
    z->zs.avail_in = 0;
    if (gz_pump(z, Z_FINISH, emit, arg) != 0) {
        z->failed = true;
        return CDN_EIO;
    }
    return 0;
}

uint64_t
cdn_gz_total_in(const struct cdn_gz *z)
{
    CDN_CHECK_MAGIC(z, GZ_MAGIC);
    return z->zs.total_in;
}

uint64_t
cdn_gz_total_out(const struct cdn_gz *z)
{
    CDN_CHECK_MAGIC(z, GZ_MAGIC);
    return z->zs.total_out;
}

void
cdn_gz_free(struct cdn_gz *z)
{
    if (z == NULL)
        return;
    CDN_CHECK_MAGIC(z, GZ_MAGIC);
    deflateEnd(&z->zs);
    z->magic = 0;
    free(z);
}

/* ---- Bounded streaming gunzip -----------------------------------------------------------------
 */

struct cdn_gunzip {
    uint32_t magic;
    int err;   /* sticky negative code once failed */
    bool done; /* the last member ended and no input is left */
    z_stream zs;
    uint64_t total_out;
    uint64_t max_out;
    struct iovec *iov;
    unsigned niov;
    unsigned next; /* segment the next input comes from */
    size_t off;    /* bytes of iov[next] already handed to zlib */
};

struct cdn_gunzip *
cdn_gunzip_new(const struct iovec *in, unsigned niov, uint64_t max_out)
{
    struct cdn_gunzip *g = cdn_calloc(1, sizeof(*g));
    g->magic = GUNZIP_MAGIC;
    g->max_out = max_out;
    if (niov > 0) {
        g->iov = cdn_malloc(niov * sizeof(*in));
        memcpy(g->iov, in, niov * sizeof(*in));
    }
    g->niov = niov;
    g->zs.zalloc = z_alloc;
    g->zs.zfree = z_free;
    int rc = inflateInit2(&g->zs, GZIP_WBITS);
    CDN_ASSERT(rc == Z_OK);
    return g;
}

/* Hands zlib the next non-empty stretch of input (at most UINT_MAX bytes); false at the end. */
static bool
gunzip_feed(struct cdn_gunzip *g)
{
    while (g->next < g->niov) {
        const struct iovec *v = &g->iov[g->next];
        size_t left = v->iov_len - g->off;
        if (left == 0) {
            g->next++;
            g->off = 0;
            continue;
        }
        uInt step = left > UINT_MAX ? UINT_MAX : (uInt)left;
        g->zs.next_in = (unsigned char *)v->iov_base + g->off;
        g->zs.avail_in = step;
        g->off += step;
        return true;
    }
    return false;
}

static bool
gunzip_more_input(const struct cdn_gunzip *g)
{
    if (g->zs.avail_in > 0)
        return true;
    for (unsigned i = g->next; i < g->niov; i++)
        if (g->iov[i].iov_len > (i == g->next ? g->off : 0))
            return true;
    return false;
}

static ssize_t
gunzip_fail(struct cdn_gunzip *g, int err)
{
    g->err = err;
    return err;
}

ssize_t
cdn_gunzip_read(struct cdn_gunzip *g, char *out, size_t max)
{
    CDN_CHECK_MAGIC(g, GUNZIP_MAGIC);
    CDN_ASSERT(max > 0);
    if (g->err)
        return g->err;
    if (g->done)
        return 0;

    /* Room for one byte past max_out, so that going over it is seen without decoding more. */
    uint64_t room = g->max_out - g->total_out;
    size_t cap = max;
    if (room < cap)
        cap = (size_t)room + 1;
    if (cap > UINT_MAX)
        cap = UINT_MAX;
    g->zs.next_out = (unsigned char *)out;
    g->zs.avail_out = (uInt)cap;

    while (g->zs.avail_out > 0) {
        if (g->zs.avail_in == 0)
            gunzip_feed(g);
        int rc = inflate(&g->zs, Z_NO_FLUSH);
        if (rc == Z_STREAM_END) {
            if (!gunzip_more_input(g)) {
                g->done = true;
                break;
            }
            /* Another member follows (RFC 1952 §2.2). */
            rc = inflateReset(&g->zs);
            CDN_ASSERT(rc == Z_OK);
            continue;
        }
        if (rc == Z_BUF_ERROR) {
            /* No progress with output room left: the input ran out inside a member. */
            return gunzip_fail(g, CDN_ECORRUPT);
        }
        if (rc != Z_OK)
            return gunzip_fail(g, CDN_ECORRUPT);
    }

    size_t produced = cap - g->zs.avail_out;
    g->total_out += produced;
    if (g->total_out > g->max_out)
        return gunzip_fail(g, CDN_ETOOBIG);
    return (ssize_t)produced;
}

void
cdn_gunzip_free(struct cdn_gunzip *g)
{
    if (g == NULL)
        return;
    CDN_CHECK_MAGIC(g, GUNZIP_MAGIC);
    inflateEnd(&g->zs);
    free(g->iov);
    g->magic = 0;
    free(g);
}

int
cdn_gzip_check(const struct iovec *in, unsigned niov, uint64_t max_out, uint64_t *out_len)
{
    char buf[16 * 1024];
    struct cdn_gunzip *g = cdn_gunzip_new(in, niov, max_out);
    ssize_t r;
    while ((r = cdn_gunzip_read(g, buf, sizeof(buf))) > 0)
        ;
    uint64_t total = g->total_out;
    cdn_gunzip_free(g);
    if (r < 0)
        return (int)r;
    *out_len = total;
    return 0;
}

/* ---- ETag -------------------------------------------------------------------------------------
 */

const char *
cdn_etag_weaken(const char *etag, size_t len, struct cdn_arena *a)
{
    /* cdn_etag_match parses both sides by the entity-tag grammar, so a value matches itself by
     * weak comparison exactly when it is one valid entity-tag. */
    if (etag == NULL || !cdn_etag_match(etag, len, etag, len, true))
        return NULL;
    if (etag[0] == 'W')
        return cdn_arena_strndup(a, etag, len);
    char *w = cdn_arena_alloc(a, len + 3);
    memcpy(w, "W/", 2);
    memcpy(w + 2, etag, len);
    w[len + 2] = '\0';
    return w;
}
