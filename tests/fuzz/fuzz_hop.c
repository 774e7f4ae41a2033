/*
 * Fuzz target for hop.h: hop-by-hop filtering both ways, Via / CDN-Loop / X-Forwarded-For /
 * Forwarded appending, loop counting and the client address through trusted hops.
 *
 * Input: a flag byte (bit 0 X-Forwarded-For, bit 1 Forwarded, bit 2 HTTP/1.0, bits 3-5 trusted
 * hops), the peer address on the first line, the Host on the second, then "name:value" fields.
 *
 * Checks: no hop-by-hop field, Host, Content-Length or Expect is forwarded upstream, no framing
 * or hop-by-hop field reaches the client, the appended fields come last and in the documented
 * order, and a client address taken from X-Forwarded-For is an IP literal.
 */
#include "fuzz.h"

#include "cdnode/hop.h"

#include <arpa/inet.h>

#define CDN_ID "edge1"

static bool
field_is(const struct cdn_hdr *e, const char *name, const char *value)
{
    return cdn_name_eq(e->name, e->nlen, name) &&
           (value == NULL || (e->vlen == strlen(value) && memcmp(e->value, value, e->vlen) == 0));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fuzz_quiet();
    struct cdn_hop_opts o = {.cdn_id = CDN_ID,
                             .x_forwarded_for = data[0] & 1,
                             .forwarded = data[0] & 2,
                             .trusted_hops = (data[0] >> 3) & 7};
    bool http10 = data[0] & 4;
    struct cdn_arena *a = cdn_arena_new(1024);
    const char *pos = (const char *)data + 1, *end = (const char *)data + size, *line = "";
    size_t len = 0;
    fuzz_line(&pos, end, &line, &len);
    const char *peer = fuzz_str(a, line, len);
    line = "";
    len = 0;
    fuzz_line(&pos, end, &line, &len);
    const char *host = fuzz_str(a, line, len);
    struct cdn_hdrs in;
    cdn_hdrs_init(&in, a);
    fuzz_fields(&in, &pos, end);

    for (size_t i = 0; i < in.n; i++)
        (void)cdn_hop_is_hop_by_hop(NULL, in.v[i].name, in.v[i].nlen);

    struct cdn_hdrs out;
    cdn_hdrs_init(&out, a);
    cdn_hop_request_headers(&in, &out, &o, peer, host, (data[0] & 0x40) ? "https" : "http",
                            http10);
    size_t added = 2 + o.x_forwarded_for + o.forwarded;
    FUZZ_CHECK(out.n >= added);
    size_t kept = out.n - added;
    for (size_t i = 0; i < kept; i++) {
        const struct cdn_hdr *e = &out.v[i];
        FUZZ_CHECK(!cdn_hop_is_hop_by_hop(&in, e->name, e->nlen));
        FUZZ_CHECK(!field_is(e, "Host", NULL) && !field_is(e, "Content-Length", NULL) &&
                   !field_is(e, "Expect", NULL));
        FUZZ_CHECK(!o.x_forwarded_for || !field_is(e, "X-Forwarded-For", NULL));
    }
    FUZZ_CHECK(field_is(&out.v[kept], "Via", http10 ? "1.0 " CDN_ID : "1.1 " CDN_ID));
    FUZZ_CHECK(field_is(&out.v[kept + 1], "CDN-Loop", CDN_ID));
    if (o.x_forwarded_for)
        FUZZ_CHECK(field_is(&out.v[kept + 2], "X-Forwarded-For", NULL));
    if (o.forwarded)
        FUZZ_CHECK(field_is(&out.v[out.n - 1], "Forwarded", NULL));

    cdn_hdrs_init(&out, a);
    cdn_hop_response_headers(&in, &out, &o);
    FUZZ_CHECK(out.n >= 1 && field_is(&out.v[out.n - 1], "Via", "1.1 " CDN_ID));
    for (size_t i = 0; i + 1 < out.n; i++) {
        const struct cdn_hdr *e = &out.v[i];
        FUZZ_CHECK(!cdn_hop_is_hop_by_hop(&in, e->name, e->nlen));
        FUZZ_CHECK(!field_is(e, "Content-Length", NULL) &&
                   !field_is(e, "Transfer-Encoding", NULL));
    }

    (void)cdn_hop_loop_count(&in, CDN_ID);
    const char *client = cdn_hop_client_addr(&in, peer, o.trusted_hops, a);
    FUZZ_CHECK(client != NULL);
    if (client != peer) {
        unsigned char buf[16];
        FUZZ_CHECK(inet_pton(AF_INET, client, buf) == 1 || inet_pton(AF_INET6, client, buf) == 1);
    }
    cdn_arena_free(a);
    return 0;
}
