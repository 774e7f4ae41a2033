/*
 * micro.c: ns/op of the pure functions on the request path (cache key, Cache-Control, dates,
 * freshness and serving decisions, stored header blocks, response header building).
 *
 * Each case runs a batch of iterations sized so one batch takes about 20 ms (between 2^10 and
 * 2^24 iterations, so every loop is bounded), then times five batches and prints the fastest and
 * the median per operation. The inputs are what a typical CDN request and response carry. Cases
 * that allocate take the memory from an arena that is freed every ARENA_ROUNDS iterations, as the
 * front end frees one per request, so the figure includes the arena's amortized cost.
 * Results are kept in a volatile sink so the compiler cannot drop the work.
 */
#include "cdnode/arena.h"
#include "cdnode/cache.h"
#include "cdnode/cachectl.h"
#include "cdnode/cachekey.h"
#include "cdnode/headers.h"
#include "cdnode/hop.h"
#include "cdnode/policy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA_ROUNDS 256
#define SAMPLES 5

static volatile uint64_t sink;

static struct cdn_arena *arena;
static unsigned arena_uses;

/* The arena for one operation: a fresh one every ARENA_ROUNDS calls. */
static struct cdn_arena *
op_arena(void)
{
    if (++arena_uses == ARENA_ROUNDS || arena == NULL) {
        cdn_arena_free(arena);
        arena = cdn_arena_new(64 * 1024);
        arena_uses = 0;
    }
    return arena;
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- Inputs ---------------------------------------------------------------------------------- */

static const int64_t now = 1767225600; /* 2026-01-01 00:00:00 UTC */

static struct cdn_hdrs req_hdrs, resp_hdrs, reval_hdrs, inm_hdrs;
static struct cdn_policy_opts popts;
static struct cdn_key_opts kplain, kquery;
static struct cdn_hop_opts hopts;
static const char *stored_block;
static size_t stored_block_len;
static const char *const drop[] = {"utm_source", "utm_medium", "utm_campaign", "fbclid"};
static const char *const targeted[] = {"CDN-Cache-Control", "Surrogate-Control"};

static void
setup(void)
{
    struct cdn_arena *a = cdn_arena_new(16 * 1024); /* lives for the whole run */
    cdn_hdrs_init(&req_hdrs, a);
    cdn_hdrs_add_str(&req_hdrs, "Host", "static.example.com");
    cdn_hdrs_add_str(&req_hdrs, "User-Agent",
                     "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0");
    cdn_hdrs_add_str(&req_hdrs, "Accept", "image/avif,image/webp,*/*");
    cdn_hdrs_add_str(&req_hdrs, "Accept-Language", "en-US,en;q=0.5");
    cdn_hdrs_add_str(&req_hdrs, "Accept-Encoding", "gzip, deflate, br, zstd");
    cdn_hdrs_add_str(&req_hdrs, "Referer", "https://www.example.com/");
    cdn_hdrs_add_str(&req_hdrs, "Connection", "keep-alive");
    cdn_hdrs_add_str(&req_hdrs, "Cache-Control", "max-age=0");

    cdn_hdrs_init(&inm_hdrs, a);
    for (size_t i = 0; i < req_hdrs.n; i++)
        cdn_hdrs_add(&inm_hdrs, req_hdrs.v[i].name, req_hdrs.v[i].nlen, req_hdrs.v[i].value,
                     req_hdrs.v[i].vlen);
    cdn_hdrs_add_str(&inm_hdrs, "If-None-Match", "\"64c8f2a1-400\"");

    cdn_hdrs_init(&resp_hdrs, a);
    cdn_hdrs_add_str(&resp_hdrs, "Server", "nginx");
    cdn_hdrs_add_str(&resp_hdrs, "Date", "Wed, 31 Dec 2025 23:59:00 GMT");
    cdn_hdrs_add_str(&resp_hdrs, "Content-Type", "image/webp");
    cdn_hdrs_add_str(&resp_hdrs, "Content-Length", "1024");
    cdn_hdrs_add_str(&resp_hdrs, "Last-Modified", "Mon, 01 Dec 2025 10:00:00 GMT");
    cdn_hdrs_add_str(&resp_hdrs, "Connection", "keep-alive");
    cdn_hdrs_add_str(&resp_hdrs, "ETag", "\"64c8f2a1-400\"");
    cdn_hdrs_add_str(&resp_hdrs, "Cache-Control",
                     "public, max-age=3600, stale-while-revalidate=60, stale-if-error=86400");
    cdn_hdrs_add_str(&resp_hdrs, "Accept-Ranges", "bytes");
    cdn_hdrs_add_str(&resp_hdrs, "Access-Control-Allow-Origin", "*");

    cdn_hdrs_init(&reval_hdrs, a);
    for (size_t i = 0; i < resp_hdrs.n; i++)
        if (!cdn_name_eq(resp_hdrs.v[i].name, resp_hdrs.v[i].nlen, "Cache-Control"))
            cdn_hdrs_add(&reval_hdrs, resp_hdrs.v[i].name, resp_hdrs.v[i].nlen,
                         resp_hdrs.v[i].value, resp_hdrs.v[i].vlen);
    cdn_hdrs_add_str(&reval_hdrs, "Cache-Control", "max-age=0, must-revalidate");

    popts.heuristic_percent = 10;
    popts.heuristic_max_s = 86400;
    popts.targeted = targeted;
    popts.n_targeted = 2;

    kquery.sort_query = true;
    kquery.drop_params = drop;
    kquery.n_drop_params = 4;

    hopts.cdn_id = "edge-1";

    stored_block = cdn_hdrblock_encode(&resp_hdrs, a, &stored_block_len);
}

/* ---- Cases ----------------------------------------------------------------------------------- */

static void
b_key_plain(void)
{
    const char *k;
    size_t n;
    cdn_cache_key("http", "Static.Example.com:80", "/img/2025/12/hero-1920.webp", &kplain,
                  op_arena(), &k, &n);
    sink += n;
}

static void
b_key_query(void)
{
    const char *k;
    size_t n;
    cdn_cache_key("https", "static.example.com",
                  "/search?q=caf%c3%a9&utm_source=news&page=2&%7Euser=x&fbclid=abc&lang=en",
                  &kquery, op_arena(), &k, &n);
    sink += n;
}

static void
b_key_hash(void)
{
    static const char key[] = "http://static.example.com/img/2025/12/hero-1920.webp";
    unsigned char h[CDN_KEY_HASH_LEN];
    cdn_key_hash(key, sizeof(key) - 1, h);
    sink += h[0];
}

static void
b_cc_parse_resp(void)
{
    static const char v[] =
        "public, max-age=3600, s-maxage=600, stale-while-revalidate=60, stale-if-error=86400";
    struct cdn_cc cc;
    cdn_cc_init(&cc);
    cdn_cc_parse(v, sizeof(v) - 1, &cc);
    sink += (uint64_t)cc.max_age;
}

static void
b_cc_parse_req(void)
{
    struct cdn_cc cc;
    cdn_cc_init(&cc);
    cdn_cc_parse("max-age=0", 9, &cc);
    sink += (uint64_t)cc.max_age;
}

static void
b_cc_targeted(void)
{
    static const char v[] = "max-age=86400, stale-while-revalidate=60";
    struct cdn_cc cc;
    cdn_cc_init(&cc);
    sink += (uint64_t)cdn_cc_parse_targeted(v, sizeof(v) - 1, &cc);
}

static void
b_date_parse(void)
{
    int64_t t;
    cdn_http_date_parse("Wed, 31 Dec 2025 23:59:00 GMT", 29, now, &t);
    sink += (uint64_t)t;
}

static void
b_date_format(void)
{
    char buf[CDN_HTTP_DATE_LEN + 1];
    cdn_http_date_format(now, buf);
    sink += (unsigned char)buf[5];
}

static void
b_freshness(void)
{
    struct cdn_freshness f;
    cdn_freshness_lifetime(200, &resp_hdrs, now - 60, &popts, &f);
    sink += (uint64_t)f.lifetime;
}

static void
b_age(void)
{
    struct cdn_age age;
    cdn_age_compute(&resp_hdrs, now - 61, now - 60, now, &age);
    sink += (uint64_t)age.current_age;
}

static void
b_decide_fresh(void)
{
    struct cdn_stored st = {200, &resp_hdrs, now - 61, now - 60};
    struct cdn_decide_out d;
    /* a request without max-age=0 in it: the plain HIT case */
    struct cdn_hdrs r = req_hdrs;
    r.n--;
    cdn_decide(&r, &st, &popts, now, &d);
    sink += (uint64_t)d.decision;
}

static void
b_decide_reval(void)
{
    struct cdn_stored st = {200, &reval_hdrs, now - 61, now - 60};
    struct cdn_decide_out d;
    cdn_decide(&req_hdrs, &st, &popts, now, &d);
    sink += (uint64_t)d.decision;
}

static void
b_conditional(void)
{
    struct cdn_stored st = {200, &resp_hdrs, now - 61, now - 60};
    sink += (uint64_t)cdn_eval_conditionals("GET", &inm_hdrs, &st);
}

static void
b_validators(void)
{
    struct cdn_validators v;
    cdn_revalidation_validators(&reval_hdrs, &v);
    sink += v.etag_len;
}

static void
b_vary_values(void)
{
    size_t n;
    cdn_vary_values("accept-encoding", 15, &req_hdrs, op_arena(), &n);
    sink += n;
}

static void
b_hdrblock_encode(void)
{
    size_t n;
    cdn_hdrblock_encode(&resp_hdrs, op_arena(), &n);
    sink += n;
}

static void
b_hdrblock_decode(void)
{
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, op_arena());
    cdn_hdrblock_decode(stored_block, stored_block_len, &h);
    sink += h.n;
}

static void
b_hop_response(void)
{
    struct cdn_hdrs out;
    cdn_hdrs_init(&out, op_arena());
    cdn_hop_response_headers(&resp_hdrs, &out, &hopts);
    sink += out.n;
}

static void
b_hop_request(void)
{
    struct cdn_hdrs out;
    cdn_hdrs_init(&out, op_arena());
    cdn_hop_request_headers(&req_hdrs, &out, &hopts, "192.0.2.10", "static.example.com", "https",
                            false);
    sink += out.n;
}

static void
b_hdrs_get(void)
{
    const struct cdn_hdr *h = cdn_hdrs_get(&resp_hdrs, "Access-Control-Allow-Origin");
    sink += h->vlen;
}

struct bench {
    const char *name;
    const char *what;
    void (*fn)(void);
};

static const struct bench benches[] = {
    {"cache_key_plain", "cachekey.h cdn_cache_key, path only, default port dropped", b_key_plain},
    {"cache_key_query", "cdn_cache_key, 6 params, escapes, sort + drop 4 names", b_key_query},
    {"key_hash", "cdn_key_hash, SHA-256 of a 52-byte key", b_key_hash},
    {"cc_parse_response", "cachectl.h cdn_cc_parse, 5 response directives", b_cc_parse_resp},
    {"cc_parse_request", "cdn_cc_parse \"max-age=0\"", b_cc_parse_req},
    {"cc_parse_targeted", "cdn_cc_parse_targeted, RFC 8941 dictionary, 2 members", b_cc_targeted},
    {"http_date_parse", "cdn_http_date_parse IMF-fixdate", b_date_parse},
    {"http_date_format", "cdn_http_date_format", b_date_format},
    {"freshness_lifetime", "policy.h cdn_freshness_lifetime, 10 response fields", b_freshness},
    {"age_compute", "cdn_age_compute", b_age},
    {"decide_fresh", "cdn_decide, fresh stored response (HIT)", b_decide_fresh},
    {"decide_revalidate", "cdn_decide, max-age=0 must-revalidate, request max-age=0",
     b_decide_reval},
    {"eval_conditionals", "cdn_eval_conditionals, If-None-Match matches (304)", b_conditional},
    {"reval_validators", "cdn_revalidation_validators", b_validators},
    {"vary_values", "cachekey.h cdn_vary_values accept-encoding", b_vary_values},
    {"hdrblock_encode", "cache.h cdn_hdrblock_encode, 10 fields (store)", b_hdrblock_encode},
    {"hdrblock_decode", "cdn_hdrblock_decode, 10 fields (every HIT)", b_hdrblock_decode},
    {"hop_response_headers", "hop.h cdn_hop_response_headers, 10 fields + Via", b_hop_response},
    {"hop_request_headers", "cdn_hop_request_headers, 8 fields + Via, CDN-Loop, XFF",
     b_hop_request},
    {"hdrs_get_last", "headers.h cdn_hdrs_get, 10th of 10 fields", b_hdrs_get},
};

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int
main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    setup();
    printf("| function | ns/op (best of %d) | ns/op (median) | input |\n", SAMPLES);
    printf("|---|---:|---:|---|\n");
    for (size_t b = 0; b < sizeof(benches) / sizeof(benches[0]); b++) {
        const struct bench *bm = &benches[b];
        if (only && strstr(bm->name, only) == NULL)
            continue;
        /* calibrate: double the batch until it takes 20 ms, within [2^10, 2^24] */
        uint64_t iters = 1024;
        for (;;) {
            double t0 = now_s();
            for (uint64_t i = 0; i < iters; i++)
                bm->fn();
            if (now_s() - t0 >= 0.02 || iters >= (1u << 24))
                break;
            iters *= 2;
        }
        double ns[SAMPLES];
        for (int s = 0; s < SAMPLES; s++) {
            double t0 = now_s();
            for (uint64_t i = 0; i < iters; i++)
                bm->fn();
            ns[s] = (now_s() - t0) * 1e9 / (double)iters;
        }
        qsort(ns, SAMPLES, sizeof(ns[0]), cmp_double);
        printf("| %s | %.1f | %.1f | %s |\n", bm->name, ns[0], ns[SAMPLES / 2], bm->what);
    }
    cdn_arena_free(arena);
    return 0;
}
