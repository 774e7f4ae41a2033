/*
 * Fuzz target for cdn_hdrblock_decode (cache.h), which turns a stored header block
 * ("name\0value\0" pairs read from the store) back into fields served zero-copy to clients.
 *
 * Checks: a block that decodes has non-empty names, every name and value is NUL-terminated at
 * its length inside the block, and encoding the result gives back exactly the same bytes.
 */
#include "fuzz.h"

#include "cdnode/cache.h"
#include "cdnode/common.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_quiet();
    const char *p = (const char *)data;
    struct cdn_arena *a = cdn_arena_new(1024);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    int rc = cdn_hdrblock_decode(p, size, &h);
    FUZZ_CHECK(rc == 0 || rc == CDN_ECORRUPT);
    if (rc == 0) {
        for (size_t i = 0; i < h.n; i++) {
            const struct cdn_hdr *e = &h.v[i];
            FUZZ_CHECK(e->nlen > 0 && fuzz_within(e->name, e->nlen + 1, p, size));
            FUZZ_CHECK(fuzz_within(e->value, e->vlen + 1, p, size));
            FUZZ_CHECK(e->name[e->nlen] == '\0' && e->value[e->vlen] == '\0');
            FUZZ_CHECK(memchr(e->name, '\0', e->nlen) == NULL);
        }
        size_t len;
        const char *again = cdn_hdrblock_encode(&h, a, &len);
        FUZZ_CHECK(len == size && memcmp(again, p, size) == 0);
    }
    cdn_arena_free(a);
    return 0;
}
