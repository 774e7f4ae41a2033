/*
 * sha256.h: SHA-256 (FIPS 180-4) of a short buffer, for cache keys and store record keys, without
 * the per-call algorithm lookup and allocation of OpenSSL's one-shot SHA256(). Any thread.
 */
#ifndef CDNODE_SHA256_H
#define CDNODE_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define CDN_SHA256_LEN 32

/* out receives the 32-byte digest of data[0..len). data may be NULL when len is 0. */
void cdn_sha256(const void *data, size_t len, uint8_t out[CDN_SHA256_LEN]);

#endif
