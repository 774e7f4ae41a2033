/*
 * Fuzz target for cachekey.h: the primary key (host and target normalization, query options)
 * and the Vary secondary key.
 *
 * Input: a flag byte (bit 0 https, bit 1 ignore_query, bit 2 sort_query, bit 3 drop parameters),
 * the authority on the first line, the request-target on the second, then "name:value" fields
 * used both as the response (for its Vary) and as the request.
 *
 * Checks: a key is "scheme://host/..." without a fragment, normalizing it again changes nothing,
 * a normalized host is lowercase, and a request always matches the variant built from itself.
 */
#include "fuzz.h"

#include "cdnode/cachekey.h"
#include "cdnode/common.h"

static const char *const drop[] = {"utm_source", "a", "%61", ""};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_quiet();
    const char *scheme = (data[0] & 1) ? "https" : "http";
    struct cdn_key_opts ko = {.ignore_query = data[0] & 2,
                              .sort_query = data[0] & 4,
                              .drop_params = drop,
                              .n_drop_params = (data[0] & 8) ? CDN_ARRAY_LEN(drop) : 0};
    struct cdn_arena *a = cdn_arena_new(1024);
    const char *pos = (const char *)data + 1, *end = (const char *)data + size, *line = "";
    size_t len = 0;
    fuzz_line(&pos, end, &line, &len);
    const char *host_in = fuzz_str(a, line, len);
    size_t host_len = strlen(host_in); /* as validation hands it over: a C string */
    line = "";
    len = 0;
    fuzz_line(&pos, end, &line, &len);
    const char *target = fuzz_str(a, line, len);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    fuzz_fields(&h, &pos, end);

    const char *host = cdn_key_host(scheme, host_in, host_len, a);
    if (host != NULL) {
        for (const char *c = host; *c; c++)
            FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z'));
        const char *key;
        size_t klen;
        if (cdn_cache_key(scheme, host, target, &ko, a, &key, &klen) == 0) {
            size_t slen = strlen(scheme);
            FUZZ_CHECK(strlen(key) == klen && klen > slen + 3);
            FUZZ_CHECK(memcmp(key, scheme, slen) == 0 && memcmp(key + slen, "://", 3) == 0);
            /* Hosts are checked by request validation, not here: look past the host only. */
            const char *path = key + slen + 3 + strlen(host);
            FUZZ_CHECK(memcmp(key + slen + 3, host, strlen(host)) == 0 && path[0] == '/');
            FUZZ_CHECK(strchr(path, '#') == NULL);
            /* The key's own path and query are already normal: a second pass is the identity. */
            const char *again;
            size_t alen;
            FUZZ_CHECK(cdn_cache_key(scheme, host, path, &ko, a, &again, &alen) == 0);
            FUZZ_CHECK(alen == klen && memcmp(again, key, klen) == 0);
            unsigned char hash[CDN_KEY_HASH_LEN];
            cdn_key_hash(key, klen, hash);
        }
    }

    size_t slen, vlen;
    const char *spec = cdn_vary_spec(&h, a, &slen);
    FUZZ_CHECK(spec != NULL && strlen(spec) == slen);
    const char *values = cdn_vary_values(spec, slen, &h, a, &vlen);
    if (cdn_vary_is_star(spec, slen)) {
        FUZZ_CHECK(values == NULL);
        FUZZ_CHECK(!cdn_vary_match(spec, slen, "", 0, &h, a));
    } else {
        FUZZ_CHECK(values != NULL);
        FUZZ_CHECK(cdn_vary_match(spec, slen, values, vlen, &h, a));
        for (const char *c = spec; *c; c++)
            FUZZ_CHECK(!(*c >= 'A' && *c <= 'Z'));
        unsigned char id[CDN_KEY_HASH_LEN];
        cdn_variant_id(values, vlen, id);
    }
    cdn_arena_free(a);
    return 0;
}
