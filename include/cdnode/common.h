/*
 * common.h: the error convention, allocation that dies on failure, assertions and magic tags.
 *
 * Every function that can fail returns int: 0 on success, a negative CDN_E* code otherwise.
 * cdn_strerror() names a code. Allocation failure is not an error path: cdn_malloc() and friends
 * abort the process, as a cache that cannot allocate cannot do anything useful.
 */
#ifndef CDNODE_COMMON_H
#define CDNODE_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

enum {
    CDN_OK = 0,
    CDN_ENOMEM = -1,    /* a bounded resource is exhausted (not malloc: that aborts) */
    CDN_EINVAL = -2,    /* malformed input */
    CDN_ETOOBIG = -3,   /* input over a configured bound */
    CDN_EIO = -4,       /* I/O or system call failure */
    CDN_ENOTFOUND = -5, /* no such entry */
    CDN_EEXIST = -6,    /* entry already present */
    CDN_ETIMEDOUT = -7, /* a deadline passed */
    CDN_ECONNECT = -8,  /* could not connect to a peer */
    CDN_EPROTO = -9,    /* peer violated the protocol */
    CDN_ELOOP = -10,    /* forwarding loop detected */
    CDN_ECORRUPT = -11, /* stored data failed validation */
    CDN_EFULL = -12,    /* store is full */
    CDN_EAGAIN = -13,   /* try again later */
    CDN_ESHUTDOWN = -14 /* the component is stopping */
};

/* Returns a static string naming the error code (never NULL). Any thread. */
const char *cdn_strerror(int err);

/* Abort with a message: for states that cannot happen. */
#define CDN_ASSERT(cond)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cdn_panic(__FILE__, __LINE__, #cond);                                                  \
    } while (0)

/* Check the magic tag of a struct that crosses threads. */
#define CDN_CHECK_MAGIC(obj, m)                                                                    \
    do {                                                                                           \
        CDN_ASSERT((obj) != NULL);                                                                 \
        CDN_ASSERT((obj)->magic == (m));                                                           \
    } while (0)

_Noreturn void cdn_panic(const char *file, int line, const char *what);

/* Allocators that abort on failure; memory is released with free(). */
void *cdn_malloc(size_t n);
void *cdn_calloc(size_t n, size_t size);
void *cdn_realloc(void *p, size_t n);
char *cdn_strdup(const char *s);
char *cdn_strndup(const char *s, size_t n);

#define CDN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Monotonic clock in milliseconds (for timers) and wall clock in seconds (for HTTP dates). */
int64_t cdn_now_ms(void);
int64_t cdn_now_us(void); /* monotonic microseconds, for timings */
int64_t cdn_wall_s(void);

#endif
