/*
 * fuzz.h: what every libFuzzer target in this directory shares: splitting the input into lines
 * and turning lines into header fields the way libmicrohttpd and libcurl hand them to the node.
 *
 * Targets check the documented contract of what they call (bounds, invariants of the result)
 * with FUZZ_CHECK, so a contract violation is a crash the fuzzer keeps, like a memory error.
 */
#ifndef CDNODE_FUZZ_H
#define CDNODE_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cdnode/arena.h"
#include "cdnode/headers.h"
#include "cdnode/log.h"

#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: contract violated: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Next '\n'-terminated line of [*pos, end) without its '\n' (it may hold '\r' and NUL bytes). */
static inline bool
fuzz_line(const char **pos, const char *end, const char **line, size_t *len)
{
    if (*pos >= end)
        return false;
    const char *nl = memchr(*pos, '\n', (size_t)(end - *pos));
    *line = *pos;
    *len = (size_t)((nl ? nl : end) - *pos);
    *pos = nl ? nl + 1 : end;
    return true;
}

/*
 * One field per line "name:value" of [*pos, end), split at the first ':' (a line without one is
 * a name with an empty value), until an empty line or the end. Name and value are copied into
 * h's arena so each is NUL-terminated at its length, as libmicrohttpd delivers them; nothing is
 * trimmed: whitespace around either is input under test.
 */
static inline void
fuzz_fields(struct cdn_hdrs *h, const char **pos, const char *end)
{
    const char *line;
    size_t len;
    while (fuzz_line(pos, end, &line, &len) && len > 0) {
        const char *colon = memchr(line, ':', len);
        size_t nlen = colon ? (size_t)(colon - line) : len;
        const char *v = colon ? colon + 1 : line + len;
        cdn_hdrs_add_copy(h, line, nlen, v, (size_t)(line + len - v));
    }
}

/* Counted bytes as a NUL-terminated string in the arena (embedded NULs end it early). */
static inline const char *
fuzz_str(struct cdn_arena *a, const char *s, size_t n)
{
    return cdn_arena_strndup(a, s, n);
}

/* True when [p, p+n) lies inside [base, base+size). */
static inline bool
fuzz_within(const void *p, size_t n, const void *base, size_t size)
{
    const char *c = p, *b = base;
    return n == 0 || (c >= b && c <= b + size && n <= (size_t)(b + size - c));
}

/* The code under test logs its decisions; at fuzzing rates that output only slows things down. */
static inline void
fuzz_quiet(void)
{
    if (getenv("CDNODE_FUZZ_LOG") == NULL)
        cdn_log_set_level(CDN_LOG_ERROR);
}

#endif
