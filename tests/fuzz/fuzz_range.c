/*
 * Fuzz target for Range handling (policy.h): cdn_range_parse, cdn_if_range_ok, cdn_range_eval,
 * cdn_content_range, and the client conditionals evaluated just before them.
 *
 * Input: a length selector (a byte below 0x80 is the representation length itself; otherwise
 * the next 8 bytes, little-endian, are), the Range value on the first line, then the request's
 * "name:value" fields up to an empty line, then the stored response's fields.
 *
 * Checks: a partial range lies inside the representation and the Content-Range value fits.
 */
#include "fuzz.h"

#include "cdnode/policy.h"

static void
check_range(enum cdn_range_result r, uint64_t first, uint64_t last, uint64_t length)
{
    FUZZ_CHECK(r == CDN_RANGE_FULL || r == CDN_RANGE_PARTIAL || r == CDN_RANGE_UNSATISFIABLE);
    if (r == CDN_RANGE_PARTIAL)
        FUZZ_CHECK(first <= last && last < length);
    char buf[CDN_CONTENT_RANGE_LEN];
    FUZZ_CHECK(cdn_content_range(r, first, last, length, buf, sizeof(buf)) == buf);
    FUZZ_CHECK(strlen(buf) < sizeof(buf));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_quiet();
    uint64_t length = data[0];
    size_t off = 1;
    if (data[0] >= 0x80) {
        if (size < 9)
            return 0;
        length = 0;
        for (int i = 8; i >= 1; i--)
            length = (length << 8) | data[i];
        off = 9;
    }
    const char *pos = (const char *)data + off, *end = (const char *)data + size, *line = "";
    size_t len = 0;
    fuzz_line(&pos, end, &line, &len);

    struct cdn_arena *a = cdn_arena_new(1024);
    /* Counted and not NUL-terminated first, as the contract allows; then as a field value. */
    uint64_t first = 0, last = 0;
    check_range(cdn_range_parse(line, len, length, &first, &last), first, last, length);

    struct cdn_hdrs req, stored;
    cdn_hdrs_init(&req, a);
    cdn_hdrs_init(&stored, a);
    cdn_hdrs_add_copy(&req, "Range", 5, line, len);
    fuzz_fields(&req, &pos, end);
    fuzz_fields(&stored, &pos, end);
    (void)cdn_if_range_ok(&req, &stored);
    struct cdn_stored st = {.status = 200, .hdrs = &stored, .request_time = 1700000000,
                            .response_time = 1700000001};
    first = last = 0;
    check_range(cdn_range_eval("GET", &req, &st, length, &first, &last), first, last, length);
    enum cdn_cond_result c = cdn_eval_conditionals("GET", &req, &st);
    FUZZ_CHECK(c == CDN_COND_PROCEED || c == CDN_COND_304 || c == CDN_COND_412);
    c = cdn_eval_conditionals("PUT", &req, &st);
    FUZZ_CHECK(c != CDN_COND_304);
    cdn_arena_free(a);
    return 0;
}
