/* Unit tests for gzip negotiation, the compress decision, the zlib streams and ETag weakening. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/common.h"
#include "cdnode/encoding.h"
#include "cdnode/headers.h"

#include <malloc.h>
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#include "hdrs_of.h"

/* ---- Negotiation ------------------------------------------------------------------------------
 */

static void
test_accept_encoding(void **state)
{
    static const struct {
        const char *hdrs;
        bool gzip;
        bool identity;
    } rows[] = {
        {"", false, true}, /* absent: identity, by choice */
        {"Accept-Encoding:", false, true},
        {"Accept-Encoding: gzip", true, true},
        {"Accept-Encoding: GZIP", true, true},
        {"Accept-Encoding: GZip", true, true},
        {"Accept-Encoding: x-gzip", true, true},
        {"Accept-Encoding: X-GZIP;q=0.5", true, true},
        {"Accept-Encoding: gzip, deflate, br", true, true},
        {"Accept-Encoding: br, gzip", true, true},
        {"Accept-Encoding: deflate, br", false, true},
        {"Accept-Encoding: br;q=1.0, gzip;q=0.8, *;q=0.1", true, true},
        {"Accept-Encoding: gzip;q=0", false, true},
        {"Accept-Encoding: gzip;q=0.", false, true},
        {"Accept-Encoding: gzip;q=0.0", false, true},
        {"Accept-Encoding: gzip;q=0.000", false, true},
        {"Accept-Encoding: gzip;q=0.001", true, true},
        {"Accept-Encoding: gzip;q=0.5", true, true},
        {"Accept-Encoding: gzip;q=1", true, true},
        {"Accept-Encoding: gzip;q=1.", true, true},
        {"Accept-Encoding: gzip;q=1.000", true, true},
        {"Accept-Encoding: gzip;Q=0", false, true},
        {"Accept-Encoding: gzip ; q=0", false, true},
        {"Accept-Encoding: gzip\t;\tq=0", false, true},
        {"Accept-Encoding:   gzip  ,  br  ", true, true},
        /* Invalid weights: the member is ignored as if absent. */
        {"Accept-Encoding: gzip;q=1.001", false, true},
        {"Accept-Encoding: gzip;q=2", false, true},
        {"Accept-Encoding: gzip;q=0.0001", false, true},
        {"Accept-Encoding: gzip;q=.5", false, true},
        {"Accept-Encoding: gzip;q=", false, true},
        {"Accept-Encoding: gzip;q", false, true},
        {"Accept-Encoding: gzip;q=-1", false, true},
        {"Accept-Encoding: gzip;q=0.5x", false, true},
        {"Accept-Encoding: gzip;q = 0.5", false, true},
        {"Accept-Encoding: gzip;q=\"0.5\"", false, true},
        {"Accept-Encoding: gzip;level=1", false, true},
        {"Accept-Encoding: gzip;q=0.5;x=1", false, true},
        {"Accept-Encoding: gzip;", false, true},
        {"Accept-Encoding: gzip;q=1.5, *", true, true}, /* bad gzip ignored, '*' remains */
        {"Accept-Encoding: gzip;q=abc, br", false, true},
        {"Accept-Encoding: gz ip", false, true},
        {"Accept-Encoding: gzip/deflate", false, true},
        {"Accept-Encoding: garbage;;;", false, true},
        {"Accept-Encoding: \"gzip\"", false, true},
        {"Accept-Encoding: ,,, ,", false, true},
        {"Accept-Encoding: gzips", false, true},
        {"Accept-Encoding: gzi", false, true},
        {"Accept-Encoding: x-gzip2", false, true},
        /* Wildcard. */
        {"Accept-Encoding: *", true, true},
        {"Accept-Encoding: *;q=0.1", true, true},
        {"Accept-Encoding: *;q=0", false, false},
        {"Accept-Encoding: *, gzip;q=0", false, true},
        {"Accept-Encoding: gzip;q=0, *", false, true},
        {"Accept-Encoding: *, x-gzip;q=0", false, true},
        {"Accept-Encoding: *;q=0, gzip", true, false},
        {"Accept-Encoding: *;q=0, identity", false, true},
        {"Accept-Encoding: *;q=0, identity;q=0.5", false, true},
        {"Accept-Encoding: *;q=0, identity;q=0", false, false},
        {"Accept-Encoding: *;q=0, gzip, identity", true, true},
        {"Accept-Encoding: *, *;q=0", false, true}, /* disagreeing: towards identity */
        /* identity. */
        {"Accept-Encoding: identity", false, true},
        {"Accept-Encoding: IDENTITY;q=0", false, false},
        {"Accept-Encoding: identity;q=0, gzip", true, false},
        {"Accept-Encoding: identity;q=0, identity", false, true},
        {"Accept-Encoding: identity;q=0.5, gzip;q=0.1", true, true},
        {"Accept-Encoding: identity;q=bad", false, true},
        /* Disagreeing gzip listings refuse gzip. */
        {"Accept-Encoding: gzip, x-gzip;q=0", false, true},
        {"Accept-Encoding: gzip;q=0, gzip", false, true},
        {"Accept-Encoding: gzip;q=0.3, gzip;q=0.9", true, true},
        /* Several lines combine. */
        {"Accept-Encoding: br\naccept-encoding: gzip", true, true},
        {"Accept-Encoding: gzip\nAccept-Encoding: gzip;q=0", false, true},
        {"Accept-Encoding: br\nAccept-Encoding:", false, true},
        {"Accept-Encoding: identity;q=0\nAccept-Encoding: *", true, false},
        /* Other fields do not count. */
        {"TE: gzip\nContent-Encoding: gzip", false, true},
        {"Accept-Encodings: gzip", false, true},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(1024);
        struct cdn_hdrs h = hdrs_of(a, rows[i].hdrs);
        if (cdn_accepts_gzip(&h) != rows[i].gzip)
            fail_msg("row \"%s\": accepts_gzip = %d", rows[i].hdrs, !rows[i].gzip);
        if (cdn_identity_acceptable(&h) != rows[i].identity)
            fail_msg("row \"%s\": identity_acceptable = %d", rows[i].hdrs, !rows[i].identity);
        cdn_arena_free(a);
    }
}

/* ---- The compress decision --------------------------------------------------------------------
 */

static void
test_content_coding(void **state)
{
    static const struct {
        const char *hdrs;
        enum cdn_coding want;
    } rows[] = {
        {"", CDN_CODING_IDENTITY},
        {"Content-Type: text/html", CDN_CODING_IDENTITY},
        {"Content-Encoding: identity", CDN_CODING_IDENTITY},
        {"Content-Encoding: Identity, identity", CDN_CODING_IDENTITY},
        {"Content-Encoding: gzip", CDN_CODING_GZIP},
        {"content-encoding: GZIP", CDN_CODING_GZIP},
        {"Content-Encoding: x-gzip", CDN_CODING_GZIP},
        {"Content-Encoding:  gzip  ", CDN_CODING_GZIP},
        {"Content-Encoding: gzip, gzip", CDN_CODING_OTHER},
        {"Content-Encoding: gzip\nContent-Encoding: br", CDN_CODING_OTHER},
        {"Content-Encoding: deflate, gzip", CDN_CODING_OTHER},
        {"Content-Encoding: gzip, identity", CDN_CODING_OTHER},
        {"Content-Encoding: gzip;q=1", CDN_CODING_OTHER},
        {"Content-Encoding: br", CDN_CODING_OTHER},
        {"Content-Encoding: compress", CDN_CODING_OTHER},
        {"Content-Encoding:", CDN_CODING_OTHER},
        {"Content-Encoding: ,", CDN_CODING_OTHER},
        {"Content-Encoding: identity\nContent-Encoding:", CDN_CODING_IDENTITY},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(1024);
        struct cdn_hdrs h = hdrs_of(a, rows[i].hdrs);
        enum cdn_coding got = cdn_content_coding(&h);
        if (got != rows[i].want)
            fail_msg("row \"%s\": coding %d, want %d", rows[i].hdrs, (int)got, (int)rows[i].want);
        cdn_arena_free(a);
    }
}

static void
test_should_compress(void **state)
{
    static const char *const types[] = {"text/*", "application/json", "Image/SVG+XML",
                                        "application/javascript"};
    static const struct {
        int status;
        const char *hdrs;
        int64_t len;
        size_t min;
        bool want;
    } rows[] = {
        {200, "Content-Type: text/html", 5000, 1024, true},
        {200, "Content-Type: text/css; charset=utf-8", 5000, 1024, true},
        {200, "Content-Type: TEXT/Plain;charset=\"utf-8\"", 5000, 1024, true},
        {200, "Content-Type: text/html   ;  charset=utf-8", 5000, 1024, true},
        {200, "Content-Type: application/json", 5000, 1024, true},
        {200, "Content-Type: Application/JSON; charset=utf-8", 5000, 1024, true},
        {200, "Content-Type: image/svg+xml", 5000, 1024, true},
        {200, "Content-Type: application/javascript", 5000, 1024, true},
        /* Not in the list. */
        {200, "Content-Type: image/png", 5000, 1024, false},
        {200, "Content-Type: application/octet-stream", 5000, 1024, false},
        {200, "Content-Type: application/jsonx", 5000, 1024, false},
        {200, "Content-Type: application/json-seq", 5000, 1024, false},
        {200, "Content-Type: application/javascrip", 5000, 1024, false},
        {200, "Content-Type: texts/html", 5000, 1024, false},
        {200, "Content-Type: tex/html", 5000, 1024, false},
        {200, "Content-Type: application/text", 5000, 1024, false},
        /* Malformed or missing Content-Type. */
        {200, "", 5000, 1024, false},
        {200, "Content-Type:", 5000, 1024, false},
        {200, "Content-Type: text", 5000, 1024, false},
        {200, "Content-Type: text/", 5000, 1024, false},
        {200, "Content-Type: /html", 5000, 1024, false},
        {200, "Content-Type: text/ html", 5000, 1024, false},
        {200, "Content-Type: text/html/x", 5000, 1024, false},
        {200, "Content-Type: ;charset=utf-8", 5000, 1024, false},
        {200, "Content-Type: text/html\nContent-Type: text/css", 5000, 1024, false},
        /* Status. */
        {206, "Content-Type: text/html", 5000, 1024, false},
        {203, "Content-Type: text/html", 5000, 1024, false},
        {204, "Content-Type: text/html", 5000, 1024, false},
        {304, "Content-Type: text/html", 5000, 1024, false},
        {404, "Content-Type: text/html", 5000, 1024, false},
        /* Existing codings. */
        {200, "Content-Type: text/html\nContent-Encoding: gzip", 5000, 1024, false},
        {200, "Content-Type: text/html\nContent-Encoding: br", 5000, 1024, false},
        {200, "Content-Type: text/html\nContent-Encoding:", 5000, 1024, false},
        {200, "Content-Type: text/html\nContent-Encoding: identity", 5000, 1024, true},
        {200, "Content-Type: text/html\nContent-Encoding: IDENTITY", 5000, 1024, true},
        /* no-transform. */
        {200, "Content-Type: text/html\nCache-Control: no-transform", 5000, 1024, false},
        {200, "Content-Type: text/html\nCache-Control: max-age=60, No-Transform", 5000, 1024,
         false},
        {200, "Content-Type: text/html\nCache-Control: max-age=60\nCache-Control: no-transform",
         5000, 1024, false},
        {200, "Content-Type: text/html\nCache-Control: max-age=60, public", 5000, 1024, true},
        {200, "Content-Type: text/html\nCache-Control: no-transformer", 5000, 1024, true},
        /* Sizes. */
        {200, "Content-Type: text/html", -1, 1024, true},
        {200, "Content-Type: text/html", 1024, 1024, true},
        {200, "Content-Type: text/html", 1023, 1024, false},
        {200, "Content-Type: text/html", 0, 1024, false},
        {200, "Content-Type: text/html", 0, 0, true},
        {200, "Content-Type: text/html", INT64_MAX, SIZE_MAX, false},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(1024);
        struct cdn_hdrs h = hdrs_of(a, rows[i].hdrs);
        bool got = cdn_should_compress(rows[i].status, &h, rows[i].len, rows[i].min, types,
                                       CDN_ARRAY_LEN(types));
        if (got != rows[i].want)
            fail_msg("row %zu (%d \"%s\" len %lld min %zu): got %d", i, rows[i].status,
                     rows[i].hdrs, (long long)rows[i].len, rows[i].min, got);
        cdn_arena_free(a);
    }

    /* No types: nothing is compressed. */
    struct cdn_arena *a = cdn_arena_new(1024);
    struct cdn_hdrs h = hdrs_of(a, "Content-Type: text/html");
    assert_false(cdn_should_compress(200, &h, 5000, 0, types, 0));
    cdn_arena_free(a);
}

static void
test_default_types(void **state)
{
    static const struct {
        const char *ct;
        bool want;
    } rows[] = {
        {"text/html; charset=utf-8", true},
        {"text/css", true},
        {"text/plain", true},
        {"text/javascript", true},
        {"application/javascript", true},
        {"application/json", true},
        {"application/xml", true},
        {"application/rss+xml", true},
        {"application/atom+xml", true},
        {"image/svg+xml", true},
        {"image/png", false},
        {"image/jpeg", false},
        {"image/webp", false},
        {"font/woff2", false},
        {"application/wasm", false},
        {"application/zip", false},
        {"application/gzip", false},
        {"application/octet-stream", false},
        {"video/mp4", false},
    };
    assert_true(cdn_gzip_default_ntypes > 5);
    for (size_t i = 0; i < cdn_gzip_default_ntypes; i++) {
        const char *t = cdn_gzip_default_types[i];
        const char *slash = strchr(t, '/');
        assert_non_null(slash);
        assert_true(cdn_is_token(t, (size_t)(slash - t)));
        assert_true(cdn_is_token(slash + 1, strlen(slash + 1)));
        for (const char *p = t; *p; p++)
            assert_false(*p >= 'A' && *p <= 'Z');
    }
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct cdn_arena *a = cdn_arena_new(1024);
        struct cdn_hdrs h;
        cdn_hdrs_init(&h, a);
        cdn_hdrs_add_str(&h, "Content-Type", rows[i].ct);
        if (cdn_should_compress(200, &h, -1, 0, cdn_gzip_default_types, cdn_gzip_default_ntypes) !=
            rows[i].want)
            fail_msg("%s: want %d", rows[i].ct, rows[i].want);
        cdn_arena_free(a);
    }
}

/* ---- Buffers, data and oracles ----------------------------------------------------------------
 */

struct buf {
    unsigned char *p;
    size_t n;
    size_t cap;
};

static void
buf_add(struct buf *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2;
        b->p = cdn_realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

/* Collects compressed output and checks the piece contract. */
struct sink {
    struct buf out;
    size_t pieces;
    bool finishing;  /* set before cdn_gz_finish */
    bool short_seen; /* a piece shorter than CDN_GZ_PIECE arrived */
    bool violated;
};

static void
sink_emit(void *arg, const void *p, size_t n)
{
    struct sink *s = arg;
    if (n == 0 || n > CDN_GZ_PIECE || s->short_seen || (n < CDN_GZ_PIECE && !s->finishing))
        s->violated = true;
    if (n < CDN_GZ_PIECE)
        s->short_seen = true;
    s->pieces++;
    buf_add(&s->out, p, n);
}

/* Compresses data with cdn_gz, writing `step` bytes at a time; checks the pieces and totals. */
static struct buf
gz_compress(const void *data, size_t n, int level, size_t step)
{
    struct sink s = {0};
    struct cdn_gz *z = cdn_gz_new(level);
    const unsigned char *p = data;
    for (size_t off = 0; off < n; off += step) {
        size_t k = n - off < step ? n - off : step;
        assert_int_equal(cdn_gz_write(z, p + off, k, sink_emit, &s), 0);
    }
    assert_int_equal(cdn_gz_write(z, p, 0, sink_emit, &s), 0);
    s.finishing = true;
    assert_int_equal(cdn_gz_finish(z, sink_emit, &s), 0);
    assert_false(s.violated);
    assert_true(s.pieces >= 1);
    assert_int_equal(s.pieces, (s.out.n + CDN_GZ_PIECE - 1) / CDN_GZ_PIECE);
    assert_int_equal(cdn_gz_total_in(z), n);
    assert_int_equal(cdn_gz_total_out(z), s.out.n);
    cdn_gz_free(z);
    return s.out;
}

/* zlib's one-shot deflate with the same parameters: the oracle for cdn_gz's bytes. */
static struct buf
oracle_gzip(const void *data, size_t n, int level)
{
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    struct buf b = {0};
    b.cap = deflateBound(&zs, n);
    b.p = cdn_malloc(b.cap);
    zs.next_in = (unsigned char *)data;
    zs.avail_in = (uInt)n;
    zs.next_out = b.p;
    zs.avail_out = (uInt)b.cap;
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    b.n = zs.total_out;
    deflateEnd(&zs);
    return b;
}

/* zlib's one-shot inflate of a single gzip member: the oracle for what cdn_gz wrote. */
static void
oracle_gunzip_equal(const struct buf *gz, const void *data, size_t n)
{
    unsigned char *out = cdn_malloc(n + 1);
    z_stream zs = {0};
    assert_int_equal(inflateInit2(&zs, 15 + 16), Z_OK);
    zs.next_in = gz->p;
    zs.avail_in = (uInt)gz->n;
    zs.next_out = out;
    zs.avail_out = (uInt)n + 1;
    assert_int_equal(inflate(&zs, Z_FINISH), Z_STREAM_END);
    assert_int_equal(zs.total_out, n);
    assert_int_equal(zs.avail_in, 0);
    assert_memory_equal(out, data, n);
    inflateEnd(&zs);
    free(out);
}

static uint64_t rng_state;

static uint64_t
rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

enum kind { K_RANDOM, K_TEXT, K_ZEROS, K_PATTERN };

static unsigned char *
make_data(enum kind k, size_t n)
{
    static const char *const words[] = {"cache", "node", "gzip ", "the ",   "stale", "\n",
                                        "fresh", "vary", "<div>", "</div>", "etag",  "age "};
    unsigned char *d = cdn_malloc(n ? n : 1);
    rng_state = 0x9e3779b97f4a7c15u ^ n ^ (uint64_t)k;
    size_t i = 0;
    while (i < n) {
        switch (k) {
        case K_RANDOM:
            d[i++] = (unsigned char)(rng() >> 24);
            break;
        case K_ZEROS:
            d[i++] = 0;
            break;
        case K_PATTERN:
            d[i] = (unsigned char)("abcdefgh"[i % 8]);
            i++;
            break;
        case K_TEXT: {
            const char *w = words[rng() % CDN_ARRAY_LEN(words)];
            for (size_t j = 0; w[j] && i < n; j++)
                d[i++] = (unsigned char)w[j];
            break;
        }
        }
    }
    return d;
}

/* Splits b into segments of varying sizes drawn from sizes[] (0 gives empty segments). */
static struct iovec *
split(const struct buf *b, const size_t *sizes, size_t nsizes, unsigned *niov)
{
    size_t cap = 16, n = 0, off = 0, k = 0;
    struct iovec *v = cdn_malloc(cap * sizeof(*v));
    while (off < b->n || n == 0) {
        if (n == cap) {
            cap *= 2;
            v = cdn_realloc(v, cap * sizeof(*v));
        }
        size_t len = sizes[k++ % nsizes];
        if (len > b->n - off)
            len = b->n - off;
        v[n].iov_base = b->p + off;
        v[n].iov_len = len;
        off += len;
        n++;
        if (b->n == 0)
            break;
    }
    *niov = (unsigned)n;
    return v;
}

/* Reads the whole stream with reads of at most `max`; returns the final code (0 or negative). */
static ssize_t
gunzip_all(const struct iovec *v, unsigned niov, uint64_t max_out, size_t max, struct buf *out)
{
    struct cdn_gunzip *g = cdn_gunzip_new(v, niov, max_out);
    char *tmp = cdn_malloc(max);
    ssize_t r;
    while ((r = cdn_gunzip_read(g, tmp, max)) > 0) {
        assert_true((size_t)r <= max);
        buf_add(out, tmp, (size_t)r);
    }
    if (r == 0)
        assert_int_equal(cdn_gunzip_read(g, tmp, max), 0); /* the end stays the end */
    else
        assert_int_equal(cdn_gunzip_read(g, tmp, max), r); /* errors are sticky */
    free(tmp);
    cdn_gunzip_free(g);
    return r;
}

static const size_t whole[] = {SIZE_MAX};
static const size_t small_segs[] = {1, 0, 3, 17, 2, 0, 0, 64, 5, 1000, 7};
static const size_t chunky_segs[] = {4096, 65536, 1, 32768, 100000};

/* ---- Round trips ------------------------------------------------------------------------------
 */

static void
check_roundtrip(enum kind k, size_t n, int level)
{
    unsigned char *data = make_data(k, n);
    static const size_t steps[] = {1, 7, 4096, 100000, SIZE_MAX};
    struct buf ref = {0};
    for (size_t s = 0; s < CDN_ARRAY_LEN(steps); s++) {
        if (steps[s] == 1 && n > 70000)
            continue; /* byte-at-a-time over a MiB adds time, not coverage */
        struct buf gz = gz_compress(data, n, level, steps[s]);
        oracle_gunzip_equal(&gz, data, n);
        if (s == 0 || ref.p == NULL) {
            free(ref.p);
            ref = gz;
            continue;
        }
        /* Input chunking must not change the bytes (level 0 excepted: zlib sizes stored blocks
         * by the input it is given). */
        if (level != 0) {
            assert_int_equal(gz.n, ref.n);
            assert_memory_equal(gz.p, ref.p, gz.n);
        }
        free(gz.p);
    }
    if (level != 0) {
        struct buf o = oracle_gzip(data, n, level);
        assert_int_equal(ref.n, o.n);
        assert_memory_equal(ref.p, o.p, o.n);
        free(o.p);
    }
    if (k != K_RANDOM && n >= 4096 && level != 0)
        assert_true(ref.n < n / 2);

    static const struct {
        const size_t *sizes;
        size_t n;
    } splits[] = {{whole, 1},
                  {small_segs, CDN_ARRAY_LEN(small_segs)},
                  {chunky_segs, CDN_ARRAY_LEN(chunky_segs)}};
    static const size_t maxes[] = {1, 7, 4096, 1 << 20};
    for (size_t sp = 0; sp < CDN_ARRAY_LEN(splits); sp++) {
        unsigned niov;
        struct iovec *v = split(&ref, splits[sp].sizes, splits[sp].n, &niov);
        for (size_t m = 0; m < CDN_ARRAY_LEN(maxes); m++) {
            if (maxes[m] < 4096 && n > 70000 && sp != 1)
                continue;
            struct buf out = {0};
            assert_int_equal(gunzip_all(v, niov, n, maxes[m], &out), 0);
            assert_int_equal(out.n, n);
            if (n)
                assert_memory_equal(out.p, data, n);
            free(out.p);
        }
        uint64_t len = 12345;
        assert_int_equal(cdn_gzip_check(v, niov, n, &len), 0);
        assert_int_equal(len, n);
        free(v);
    }
    free(ref.p);
    free(data);
}

static void
test_roundtrip(void **state)
{
    static const struct {
        enum kind k;
        size_t n;
    } rows[] = {
        {K_ZEROS, 0},          {K_RANDOM, 1},        {K_TEXT, 1},        {K_PATTERN, 2},
        {K_TEXT, 1000},        {K_RANDOM, 32767},    {K_RANDOM, 32768},  {K_RANDOM, 32769},
        {K_TEXT, 65536},       {K_RANDOM, 1u << 20}, {K_TEXT, 1u << 20}, {K_ZEROS, 1u << 20},
        {K_PATTERN, 1u << 20}, {K_PATTERN, 3000001},
    };
    static const int levels[] = {-1, 1, 9, 0};
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++)
        for (size_t l = 0; l < CDN_ARRAY_LEN(levels); l++) {
            if (rows[i].n > (1u << 20) && levels[l] != -1)
                continue;
            check_roundtrip(rows[i].k, rows[i].n, levels[l]);
        }
}

static void
test_gz_empty(void **state)
{
    struct buf gz = gz_compress("", 0, -1, 1);
    assert_true(gz.n >= 18 && gz.n <= 24);
    assert_int_equal(gz.p[0], 0x1f);
    assert_int_equal(gz.p[1], 0x8b);
    struct iovec v = {gz.p, gz.n};
    struct cdn_gunzip *g = cdn_gunzip_new(&v, 1, 0);
    char c;
    assert_int_equal(cdn_gunzip_read(g, &c, 1), 0);
    cdn_gunzip_free(g);
    free(gz.p);
    cdn_gz_free(NULL);
    cdn_gunzip_free(NULL);
}

/* A compressor freed before finishing releases everything (the sanitizer build checks). */
static void
test_gz_abandoned(void **state)
{
    struct sink s = {0};
    unsigned char *data = make_data(K_RANDOM, 100000);
    struct cdn_gz *z = cdn_gz_new(6);
    assert_int_equal(cdn_gz_write(z, data, 100000, sink_emit, &s), 0);
    assert_false(s.violated);
    assert_true(s.pieces >= 2); /* random data: pieces already went out */
    cdn_gz_free(z);
    free(s.out.p);
    free(data);
}

/* ---- Bounds -----------------------------------------------------------------------------------
 */

static void
test_max_out_exact(void **state)
{
    static const size_t sizes[] = {0, 1, 100, 4096, 70000};
    static const size_t maxes[] = {1, 4096, 1 << 20};
    for (size_t i = 0; i < CDN_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        unsigned char *data = make_data(K_TEXT, n);
        struct buf gz = gz_compress(data, n, -1, SIZE_MAX);
        unsigned niov;
        struct iovec *v = split(&gz, small_segs, CDN_ARRAY_LEN(small_segs), &niov);
        for (size_t m = 0; m < CDN_ARRAY_LEN(maxes); m++) {
            struct buf out = {0};
            assert_int_equal(gunzip_all(v, niov, n, maxes[m], &out), 0);
            assert_int_equal(out.n, n);
            free(out.p);
            if (n == 0)
                continue;
            out = (struct buf){0};
            assert_int_equal(gunzip_all(v, niov, n - 1, maxes[m], &out), CDN_ETOOBIG);
            assert_true(out.n <= n - 1);
            free(out.p);
        }
        uint64_t len = 7;
        if (n > 0) {
            assert_int_equal(cdn_gzip_check(v, niov, n - 1, &len), CDN_ETOOBIG);
            assert_int_equal(len, 7);
        }
        assert_int_equal(cdn_gzip_check(v, niov, n, &len), 0);
        assert_int_equal(len, n);
        free(v);
        free(gz.p);
        free(data);
    }
}

static void
test_zip_bomb(void **state)
{
    const size_t chunk = 1 << 20, total = 100 * chunk;
    unsigned char *zeros = calloc(1, chunk);
    struct sink s = {0};
    struct cdn_gz *z = cdn_gz_new(9);
    for (size_t off = 0; off < total; off += chunk)
        assert_int_equal(cdn_gz_write(z, zeros, chunk, sink_emit, &s), 0);
    s.finishing = true;
    assert_int_equal(cdn_gz_finish(z, sink_emit, &s), 0);
    assert_int_equal(cdn_gz_total_in(z), total);
    cdn_gz_free(z);
    free(zeros);
    assert_true(s.out.n < total / 500); /* about 100 KiB */

    unsigned niov;
    struct iovec *v = split(&s.out, chunky_segs, CDN_ARRAY_LEN(chunky_segs), &niov);
    const uint64_t max_out = 10 * (uint64_t)chunk;

    struct mallinfo2 before = mallinfo2();
    struct cdn_gunzip *g = cdn_gunzip_new(v, niov, max_out);
    static char out[64 * 1024];
    uint64_t got = 0;
    ssize_t r;
    size_t peak = 0;
    while ((r = cdn_gunzip_read(g, out, sizeof(out))) > 0) {
        got += (uint64_t)r;
        size_t used = mallinfo2().uordblks;
        if (used > peak)
            peak = used;
    }
    assert_int_equal(r, CDN_ETOOBIG);
    assert_true(got <= max_out);
    assert_true(got >= max_out - sizeof(out));
    /* Nothing proportional to the output is held (mallinfo reads 0 under ASan: still true). */
    assert_true(peak <= before.uordblks + 256 * 1024);
    cdn_gunzip_free(g);

    uint64_t len = 0;
    assert_int_equal(cdn_gzip_check(v, niov, max_out, &len), CDN_ETOOBIG);
    assert_int_equal(cdn_gzip_check(v, niov, total, &len), 0);
    assert_int_equal(len, total);
    free(v);
    free(s.out.p);
}

/* ---- Corrupt and truncated input --------------------------------------------------------------
 */

static void
test_corrupt(void **state)
{
    static const size_t sizes[] = {1, 300, 5000};
    for (size_t i = 0; i < CDN_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        unsigned char *data = make_data(K_TEXT, n);
        struct buf gz = gz_compress(data, n, -1, SIZE_MAX);
        for (size_t pos = 0; pos < gz.n; pos++) {
            /* MTIME (4..7), XFL (8) and OS (9) are informational: no decoder checks them. */
            if (pos >= 4 && pos <= 9)
                continue;
            gz.p[pos] ^= 0xff;
            unsigned niov;
            struct iovec *v = split(&gz, small_segs, CDN_ARRAY_LEN(small_segs), &niov);
            struct buf out = {0};
            ssize_t r = gunzip_all(v, niov, UINT64_MAX, 4096, &out);
            if (r != CDN_ECORRUPT)
                fail_msg("size %zu, byte %zu flipped: %zd", n, pos, r);
            uint64_t len = 99;
            assert_int_equal(cdn_gzip_check(v, niov, UINT64_MAX, &len), CDN_ECORRUPT);
            assert_int_equal(len, 99);
            free(out.p);
            free(v);
            gz.p[pos] ^= 0xff;
        }
        free(gz.p);
        free(data);
    }
}

static void
test_truncated(void **state)
{
    static const size_t sizes[] = {0, 1, 5000, 200000};
    for (size_t i = 0; i < CDN_ARRAY_LEN(sizes); i++) {
        size_t n = sizes[i];
        unsigned char *data = make_data(K_RANDOM, n);
        struct buf gz = gz_compress(data, n, -1, SIZE_MAX);
        size_t full = gz.n;
        size_t stride = full > 10000 ? 997 : 1;
        for (size_t cut = 0; cut < full; cut += (cut + 16 >= full ? 1 : stride)) {
            gz.n = cut;
            unsigned niov;
            struct iovec *v = split(&gz, chunky_segs, CDN_ARRAY_LEN(chunky_segs), &niov);
            struct buf out = {0};
            ssize_t r = gunzip_all(v, niov, UINT64_MAX, 1 << 16, &out);
            if (r != CDN_ECORRUPT)
                fail_msg("size %zu cut at %zu of %zu: %zd", n, cut, full, r);
            assert_true(out.n <= n);
            if (out.n)
                assert_memory_equal(out.p, data, out.n); /* what came out was right */
            uint64_t len;
            assert_int_equal(cdn_gzip_check(v, niov, UINT64_MAX, &len), CDN_ECORRUPT);
            free(out.p);
            free(v);
        }
        free(gz.p);
        free(data);
    }
}

static void
test_not_gzip(void **state)
{
    /* zlib format and raw text are not gzip; neither is nothing. */
    unsigned char z[64];
    uLongf zn = sizeof(z);
    assert_int_equal(compress(z, &zn, (const Bytef *)"hello hello", 11), Z_OK);
    static const char text[] = "<html>hello</html>";
    static const unsigned char magic_only[] = {0x1f, 0x8b};
    static const unsigned char bad_method[] = {0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 3, 0, 0};
    const struct {
        const void *p;
        size_t n;
    } rows[] = {
        {z, zn}, {text, sizeof(text) - 1}, {magic_only, 2}, {bad_method, sizeof(bad_method)},
        {"", 0},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        struct iovec v = {(void *)rows[i].p, rows[i].n};
        struct buf out = {0};
        assert_int_equal(gunzip_all(&v, 1, UINT64_MAX, 100, &out), CDN_ECORRUPT);
        assert_int_equal(out.n, 0);
        uint64_t len;
        assert_int_equal(cdn_gzip_check(&v, 1, UINT64_MAX, &len), CDN_ECORRUPT);
    }
    /* No segments at all. */
    struct buf out = {0};
    assert_int_equal(gunzip_all(NULL, 0, UINT64_MAX, 100, &out), CDN_ECORRUPT);
    uint64_t len;
    assert_int_equal(cdn_gzip_check(NULL, 0, UINT64_MAX, &len), CDN_ECORRUPT);
}

/* ---- Concatenated members ---------------------------------------------------------------------
 */

static void
test_concatenated(void **state)
{
    size_t na = 40000, nb = 3000;
    unsigned char *a = make_data(K_TEXT, na);
    unsigned char *b = make_data(K_RANDOM, nb);
    struct buf ga = gz_compress(a, na, -1, SIZE_MAX);
    struct buf gb = gz_compress(b, nb, 1, SIZE_MAX);
    struct buf ge = gz_compress("", 0, -1, SIZE_MAX);
    struct buf want = {0};
    buf_add(&want, a, na);
    buf_add(&want, b, nb);
    buf_add(&want, a, na);

    /* a + b + empty + a: the output is the concatenation. */
    struct buf all = {0};
    buf_add(&all, ga.p, ga.n);
    buf_add(&all, gb.p, gb.n);
    buf_add(&all, ge.p, ge.n);
    buf_add(&all, ga.p, ga.n);
    static const struct {
        const size_t *sizes;
        size_t n;
    } splits[] = {{whole, 1},
                  {small_segs, CDN_ARRAY_LEN(small_segs)},
                  {chunky_segs, CDN_ARRAY_LEN(chunky_segs)}};
    static const size_t maxes[] = {1, 13, 65536};
    for (size_t sp = 0; sp < CDN_ARRAY_LEN(splits); sp++) {
        unsigned niov;
        struct iovec *v = split(&all, splits[sp].sizes, splits[sp].n, &niov);
        for (size_t m = 0; m < CDN_ARRAY_LEN(maxes); m++) {
            struct buf out = {0};
            assert_int_equal(gunzip_all(v, niov, want.n, maxes[m], &out), 0);
            assert_int_equal(out.n, want.n);
            assert_memory_equal(out.p, want.p, want.n);
            free(out.p);
            out = (struct buf){0};
            /* The bound covers all members together. */
            assert_int_equal(gunzip_all(v, niov, want.n - 1, maxes[m], &out), CDN_ETOOBIG);
            free(out.p);
        }
        uint64_t len;
        assert_int_equal(cdn_gzip_check(v, niov, UINT64_MAX, &len), 0);
        assert_int_equal(len, want.n);
        free(v);
    }

    /* Each member boundary falling exactly between two segments. */
    struct iovec v3[] = {{ga.p, ga.n}, {gb.p, gb.n}, {NULL, 0}, {ga.p, ga.n}, {NULL, 0}};
    struct buf out = {0};
    assert_int_equal(gunzip_all(v3, 5, UINT64_MAX, 4096, &out), 0);
    assert_int_equal(out.n, want.n);
    assert_memory_equal(out.p, want.p, want.n);
    free(out.p);

    /* Whatever follows a member must itself be a complete member. */
    static const struct {
        const char *what;
        size_t n;
    } tails[] = {
        {"garbage", 7}, {"\0\0\0\0", 4}, {"\x1f", 1}, {"\x1f\x8b", 2}, {"\n", 1},
    };
    for (size_t i = 0; i < CDN_ARRAY_LEN(tails); i++) {
        struct buf bad = {0};
        buf_add(&bad, ga.p, ga.n);
        buf_add(&bad, tails[i].what, tails[i].n);
        struct iovec v = {bad.p, bad.n};
        out = (struct buf){0};
        assert_int_equal(gunzip_all(&v, 1, UINT64_MAX, 4096, &out), CDN_ECORRUPT);
        free(out.p);
        uint64_t len;
        assert_int_equal(cdn_gzip_check(&v, 1, UINT64_MAX, &len), CDN_ECORRUPT);
        free(bad.p);
    }
    /* A second member cut short. */
    struct buf cut = {0};
    buf_add(&cut, ga.p, ga.n);
    buf_add(&cut, gb.p, gb.n / 2);
    struct iovec vc = {cut.p, cut.n};
    uint64_t len;
    assert_int_equal(cdn_gzip_check(&vc, 1, UINT64_MAX, &len), CDN_ECORRUPT);

    free(cut.p);
    free(all.p);
    free(want.p);
    free(ga.p);
    free(gb.p);
    free(ge.p);
    free(a);
    free(b);
}

/* Origin-style gzip (file name, comment, header CRC, extra field) decodes like ours. */
static void
test_gzip_header_fields(void **state)
{
    static const char text[] = "origin body origin body origin body";
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    gz_header h = {0};
    h.name = (Bytef *)"index.html";
    h.comment = (Bytef *)"made elsewhere";
    h.extra = (Bytef *)"AB\x02\x00xy";
    h.extra_len = 6;
    h.hcrc = 1;
    h.time = 1700000000;
    h.os = 3;
    assert_int_equal(deflateSetHeader(&zs, &h), Z_OK);
    unsigned char gz[512];
    zs.next_in = (Bytef *)text;
    zs.avail_in = sizeof(text) - 1;
    zs.next_out = gz;
    zs.avail_out = sizeof(gz);
    assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
    size_t n = zs.total_out;
    deflateEnd(&zs);

    struct buf b = {gz, n, n};
    unsigned niov;
    struct iovec *v = split(&b, small_segs, CDN_ARRAY_LEN(small_segs), &niov);
    struct buf out = {0};
    assert_int_equal(gunzip_all(v, niov, 100, 3, &out), 0);
    assert_int_equal(out.n, sizeof(text) - 1);
    assert_memory_equal(out.p, text, out.n);
    free(out.p);
    /* The header CRC is checked. */
    gz[18] ^= 1; /* the file name: XLEN and the extra field take bytes 10..17 */
    out = (struct buf){0};
    assert_int_equal(gunzip_all(v, niov, 100, 3, &out), CDN_ECORRUPT);
    free(out.p);
    free(v);
}

/* ---- ETag -------------------------------------------------------------------------------------
 */

static void
test_etag_weaken(void **state)
{
    static const struct {
        const char *in;
        const char *want; /* NULL: invalid */
    } rows[] = {
        {"\"abc\"", "W/\"abc\""},
        {"\"\"", "W/\"\""},
        {"W/\"abc\"", "W/\"abc\""},
        {"W/\"\"", "W/\"\""},
        {"\"a-b_c.1:2\"", "W/\"a-b_c.1:2\""},
        {"\"caf\xc3\xa9\"", "W/\"caf\xc3\xa9\""},
        {"", NULL},
        {"abc", NULL},
        {"\"abc", NULL},
        {"abc\"", NULL},
        {"\"", NULL},
        {"w/\"abc\"", NULL},
        {"W/abc", NULL},
        {"W/", NULL},
        {"W\"abc\"", NULL},
        {" \"abc\"", NULL},
        {"\"abc\" ", NULL},
        {"\"a\"b\"", NULL},
        {"\"a b\"", NULL},
        {"\"abc\", \"def\"", NULL},
        {"*", NULL},
        {"W/W/\"abc\"", NULL},
    };
    struct cdn_arena *a = cdn_arena_new(1024);
    for (size_t i = 0; i < CDN_ARRAY_LEN(rows); i++) {
        const char *got = cdn_etag_weaken(rows[i].in, strlen(rows[i].in), a);
        if (rows[i].want == NULL) {
            if (got != NULL)
                fail_msg("[%s]: got [%s], want NULL", rows[i].in, got);
            continue;
        }
        if (got == NULL || strcmp(got, rows[i].want) != 0)
            fail_msg("[%s]: got [%s], want [%s]", rows[i].in, got ? got : "NULL", rows[i].want);
        assert_ptr_not_equal(got, rows[i].in); /* always a copy in the arena */
    }
    /* Counted input: bytes past len are not read. */
    const char *got = cdn_etag_weaken("\"xy\"garbage", 4, a);
    assert_non_null(got);
    assert_string_equal(got, "W/\"xy\"");
    cdn_arena_free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_accept_encoding), cmocka_unit_test(test_content_coding),
        cmocka_unit_test(test_should_compress), cmocka_unit_test(test_default_types),
        cmocka_unit_test(test_roundtrip),       cmocka_unit_test(test_gz_empty),
        cmocka_unit_test(test_gz_abandoned),    cmocka_unit_test(test_max_out_exact),
        cmocka_unit_test(test_zip_bomb),        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_truncated),       cmocka_unit_test(test_not_gzip),
        cmocka_unit_test(test_concatenated),    cmocka_unit_test(test_gzip_header_fields),
        cmocka_unit_test(test_etag_weaken),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
