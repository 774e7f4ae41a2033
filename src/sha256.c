/*
 * sha256.c: SHA-256 through OpenSSL's SHA256_Init/Update/Final, with the context on the stack
 * (OpenSSL uses the CPU's SHA instructions where there are any).
 *
 * These functions are deprecated in OpenSSL 3 in favour of EVP, and stay in every 3.x release.
 * Measured here for a 50-byte cache key: 55 ns and no allocation, against 81 ns and a malloc
 * per digest for EVP with a fetched algorithm and a reused context (EVP_DigestInit_ex2 makes a
 * new provider context each time), and 372 ns for the one-shot SHA256(), which also fetches the
 * algorithm under a lock every thread shares. Every request hashes its key, so the old
 * interface is used on purpose; nothing else in the node calls it.
 */
#define OPENSSL_SUPPRESS_DEPRECATED
#include "cdnode/sha256.h"

#include <openssl/sha.h>

_Static_assert(CDN_SHA256_LEN == SHA256_DIGEST_LENGTH, "SHA-256 digest length");

void
cdn_sha256(const void *data, size_t len, uint8_t out[CDN_SHA256_LEN])
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, len ? data : "", len);
    SHA256_Final(out, &c);
}
