/*
 * sha256.c: SHA-256 through OpenSSL's EVP interface with the algorithm fetched once per process
 * and one digest context per thread, reused for every call (OpenSSL uses the CPU's SHA
 * instructions where there are any). The one-shot SHA256() fetches the algorithm from the
 * provider store (a lock shared by every thread) and allocates a context on each call; this
 * costs a third of that for a cache key.
 */
#include "cdnode/sha256.h"
#include "cdnode/common.h"

#include <openssl/evp.h>
#include <pthread.h>

static pthread_once_t once = PTHREAD_ONCE_INIT;
static EVP_MD *md;          /* never freed: lives as long as the process */
static pthread_key_t ctx_key; /* this thread's EVP_MD_CTX, freed when the thread ends */

static void
ctx_free(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void
init(void)
{
    md = EVP_MD_fetch(NULL, "SHA256", NULL);
    CDN_ASSERT(md != NULL);
    CDN_ASSERT(pthread_key_create(&ctx_key, ctx_free) == 0);
}

void
cdn_sha256(const void *data, size_t len, uint8_t out[CDN_SHA256_LEN])
{
    pthread_once(&once, init);
    EVP_MD_CTX *ctx = pthread_getspecific(ctx_key);
    if (ctx == NULL) {
        ctx = EVP_MD_CTX_new();
        CDN_ASSERT(ctx != NULL && pthread_setspecific(ctx_key, ctx) == 0);
    }
    unsigned n = 0;
    CDN_ASSERT(EVP_DigestInit_ex2(ctx, md, NULL) == 1);
    CDN_ASSERT(EVP_DigestUpdate(ctx, len ? data : "", len) == 1);
    CDN_ASSERT(EVP_DigestFinal_ex(ctx, out, &n) == 1 && n == CDN_SHA256_LEN);
}
