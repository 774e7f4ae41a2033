/*
 * headers.h: an ordered list of HTTP header fields and the small lexical helpers every module
 * that reads fields needs (tchar, case-insensitive names, comma-separated lists).
 *
 * A list does not own its strings unless they were added with cdn_hdrs_add_copy(); the backing
 * array and copies come from the arena given at init, so the list lives as long as that arena.
 * Names keep the case they arrived with; every lookup is case-insensitive. Not thread-safe.
 */
#ifndef CDNODE_HEADERS_H
#define CDNODE_HEADERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct cdn_arena;

struct cdn_hdr {
    const char *name;
    size_t nlen;
    const char *value;
    size_t vlen;
};

struct cdn_hdrs {
    struct cdn_hdr *v;
    size_t n;
    size_t cap;
    struct cdn_arena *arena;
};

void cdn_hdrs_init(struct cdn_hdrs *h, struct cdn_arena *arena);
/* Appends a field pointing at the given strings (not copied: they must outlive the list). */
void cdn_hdrs_add(struct cdn_hdrs *h, const char *name, size_t nlen, const char *value,
                  size_t vlen);
/* Appends a field whose name and value are copied into the list's arena. */
void cdn_hdrs_add_copy(struct cdn_hdrs *h, const char *name, size_t nlen, const char *value,
                       size_t vlen);
/* NUL-terminated convenience form of cdn_hdrs_add (not copied). */
void cdn_hdrs_add_str(struct cdn_hdrs *h, const char *name, const char *value);
/* The first field with that name (case-insensitive), or NULL. */
const struct cdn_hdr *cdn_hdrs_get(const struct cdn_hdrs *h, const char *name);
/* How many fields carry that name. */
size_t cdn_hdrs_count(const struct cdn_hdrs *h, const char *name);
/* Removes every field with that name; returns how many were removed. Order is kept. */
size_t cdn_hdrs_remove(struct cdn_hdrs *h, const char *name);
/* All values of that name joined with ", " into the arena (RFC 9110 §5.3), or NULL if absent. */
const char *cdn_hdrs_join(const struct cdn_hdrs *h, const char *name, size_t *len);

/* RFC 9110 tchar: ALPHA, DIGIT and !#$%&'*+-.^_`|~, as bit sets over ASCII codes 0-63 and
 * 64-127 (test_headers checks every byte against the grammar). Inline: header names and
 * Cache-Control directives are checked a byte at a time. */
static inline bool
cdn_is_tchar(unsigned char c)
{
    if (c < 64)
        return (UINT64_C(0x03ff6cfa00000000) >> c) & 1u;
    return c < 128 && ((UINT64_C(0x57ffffffc7fffffe) >> (c - 64)) & 1u);
}
/* True when s[0..n) is a non-empty token. */
bool cdn_is_token(const char *s, size_t n);

/* ASCII lower case. Field names, tokens and schemes are ASCII (RFC 9110 §5.1, §5.6.2), so the
 * locale never takes part in comparing them (strncasecmp would ask it, byte by byte). */
static inline unsigned char
cdn_ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c | 0x20) : c;
}

/* True when a[0..n) and b[0..n) are equal ignoring ASCII case. */
static inline bool
cdn_case_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (cdn_ascii_lower((unsigned char)a[i]) != cdn_ascii_lower((unsigned char)b[i]))
            return false;
    return true;
}

/* Case-insensitive comparison of a counted string with a NUL-terminated one. Inline: with a
 * literal b the length test is a constant, and most calls end there. */
static inline bool
cdn_name_eq(const char *a, size_t alen, const char *b)
{
    return strlen(b) == alen && cdn_case_eq(a, b, alen);
}

/*
 * Iterates a comma-separated list (RFC 9110 §5.6.1): on each call stores the next non-empty
 * element, trimmed of OWS, in *elem and *elen and returns true; returns false at the end. *pos starts
 * at s and is advanced. Commas inside quoted strings do not split.
 */
bool cdn_list_next(const char **pos, const char *end, const char **elem, size_t *elen);

#endif
