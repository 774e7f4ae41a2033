/*
 * sha256.h: SHA-256 (FIPS 180-4) of a short buffer, for cache keys and store record keys.
 *
 * OpenSSL's one-shot SHA256() looks the algorithm up and allocates a context on every call, which
 * costs more than hashing a 60-byte key; this is the plain algorithm with no allocation and no
 * state outside the call. Pure; any thread.
 */
#ifndef CDNODE_SHA256_H
#define CDNODE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CDN_SHA256_LEN 32

/* out receives the 32-byte digest of data[0..len). data may be NULL when len is 0. */
void cdn_sha256(const void *data, size_t len, uint8_t out[CDN_SHA256_LEN]);

#endif
