/*
 * arena.h: a per-request memory pool. Allocations are bump-pointer from blocks and are all
 * released together by cdn_arena_free(); there is no per-object free. An arena is not
 * thread-safe: it belongs to one request and is used by one thread at a time.
 */
#ifndef CDNODE_ARENA_H
#define CDNODE_ARENA_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

/* Room for any int64_t in decimal, sign and NUL included. */
#define CDN_I64_CHARS 21

struct cdn_arena;

/* The first-block size whose arenas are recycled (arena.c): what per-request arenas use; at most
 * CDN_ARENA_KEPT of them wait for reuse. */
#define CDN_ARENA_POOLED 4096
#define CDN_ARENA_KEPT 64

/* A new arena whose first block holds at least `first` bytes. Never NULL (aborts on OOM). Any
 * thread may free what another made. */
struct cdn_arena *cdn_arena_new(size_t first);
/* Releases the arena and everything allocated from it (an arena of CDN_ARENA_POOLED bytes is
 * kept, emptied, for the next cdn_arena_new). NULL is fine. */
void cdn_arena_free(struct cdn_arena *a);
/* Frees the kept arenas (at exit, so leak checkers see none). */
void cdn_arena_drain(void);
/* Forgets every allocation and keeps only the first block, for reuse. */
void cdn_arena_reset(struct cdn_arena *a);
/* n bytes aligned for any type, valid until cdn_arena_free(). Never NULL. */
void *cdn_arena_alloc(struct cdn_arena *a, size_t n);
/* Copy of s[0..n) with a terminating NUL. */
char *cdn_arena_strndup(struct cdn_arena *a, const char *s, size_t n);
char *cdn_arena_strdup(struct cdn_arena *a, const char *s);
/* s1, s2, then v in decimal, without printf's cost (it is on every HIT). */
char *cdn_arena_cat_i64(struct cdn_arena *a, const char *s1, const char *s2, int64_t v);
/* The strings up to the terminating NULL, concatenated: printf's cost without its formats, for
 * the fields built on every forwarded request. */
char *cdn_arena_cat(struct cdn_arena *a, const char *s, ...) __attribute__((sentinel));
/* v in decimal into out (NUL-terminated); returns its length. */
size_t cdn_fmt_i64(char out[CDN_I64_CHARS], int64_t v);
/* printf into the arena. */
char *cdn_arena_printf(struct cdn_arena *a, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
