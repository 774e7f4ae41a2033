/*
 * Fuzz target for cdn_request_validate (request.h). Input: one flag byte (bit 0: TLS listener;
 * bits 1-2: max_target; bits 3-4: max_body), then the request line "METHOD TARGET VERSION"
 * (split at its first and last space), then "name:value" field lines.
 *
 * Beyond memory safety it checks what an accepted request promises to the rest of the node:
 * unambiguous framing, a clean target and host, limits honoured, and a cache key that builds.
 */
#include "fuzz.h"

#include "cdnode/cachekey.h"
#include "cdnode/request.h"

static const size_t max_targets[] = {8192, 64, 1, 0};
static const size_t max_bodies[] = {16u << 20, 0, 100, SIZE_MAX};

static void
check_accepted(const char *method, const char *url, const struct cdn_hdrs *h,
               const struct cdn_request_limits *lim, const struct cdn_request_info *info,
               struct cdn_arena *a)
{
    FUZZ_CHECK(info->host != NULL && info->target != NULL && info->scheme != NULL);
    FUZZ_CHECK(strcmp(info->scheme, "http") == 0 || strcmp(info->scheme, "https") == 0);
    FUZZ_CHECK(strcmp(method, "CONNECT") != 0);
    FUZZ_CHECK(strlen(url) <= lim->max_target);
    FUZZ_CHECK(info->target[0] == '/' ||
               (strcmp(info->target, "*") == 0 && strcmp(method, "OPTIONS") == 0));
    for (const unsigned char *c = (const unsigned char *)info->target; *c; c++)
        FUZZ_CHECK(*c > 0x20 && *c != 0x7f && *c != '#');
    for (const char *c = info->host; *c; c++)
        FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z'));
    FUZZ_CHECK(info->http10 || info->host[0] != '\0');
    /* Framing: at most one of each field, never both, a length within the limit. */
    size_t ncl = cdn_hdrs_count(h, "Content-Length"), nte = cdn_hdrs_count(h, "Transfer-Encoding");
    FUZZ_CHECK(ncl <= 1 && nte <= 1 && !(ncl && nte));
    FUZZ_CHECK(!(info->chunked && info->content_length >= 0));
    FUZZ_CHECK(info->chunked == (nte == 1) && !(info->chunked && info->http10));
    FUZZ_CHECK(info->content_length >= -1);
    FUZZ_CHECK(info->content_length < 0 || (uint64_t)info->content_length <= lim->max_body);
    FUZZ_CHECK((ncl == 1) == (info->content_length >= 0));
    FUZZ_CHECK(info->has_body == (info->content_length > 0 || info->chunked));
    /* The front end builds the cache key from what validation returned. */
    if (info->target[0] == '/') {
        struct cdn_key_opts ko = {0};
        const char *key;
        size_t klen;
        FUZZ_CHECK(cdn_cache_key(info->scheme, info->host, info->target, &ko, a, &key, &klen) ==
                   0);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_quiet();
    const char *pos = (const char *)data + 1, *end = (const char *)data + size;
    struct cdn_request_limits lim = {.max_target = max_targets[(data[0] >> 1) & 3],
                                     .max_body = max_bodies[(data[0] >> 3) & 3]};
    bool tls = data[0] & 1;
    struct cdn_arena *a = cdn_arena_new(1024);
    const char *line = "";
    size_t len = 0;
    fuzz_line(&pos, end, &line, &len);
    const char *sp1 = memchr(line, ' ', len), *sp2 = NULL;
    for (const char *c = line + len; sp1 && c > sp1 + 1; c--)
        if (c[-1] == ' ') {
            sp2 = c - 1;
            break;
        }
    const char *method = fuzz_str(a, line, sp1 ? (size_t)(sp1 - line) : len);
    const char *url = sp1 ? fuzz_str(a, sp1 + 1, (size_t)((sp2 ? sp2 : line + len) - sp1 - 1)) : "";
    const char *version = sp2 ? fuzz_str(a, sp2 + 1, (size_t)(line + len - sp2 - 1)) : "";
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    fuzz_fields(&h, &pos, end);

    struct cdn_request_info info;
    const char *reason = NULL;
    int st = cdn_request_validate(method, version, url, &h, tls, &lim, a, &info, &reason);
    if (st == 0) {
        check_accepted(method, url, &h, &lim, &info, a);
    } else {
        FUZZ_CHECK(st == 400 || st == 413 || st == 414 || st == 501);
        FUZZ_CHECK(reason != NULL && reason[0] != '\0');
    }
    (void)cdn_method_idempotent(method);
    cdn_arena_free(a);
    return 0;
}
