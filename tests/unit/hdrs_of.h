/*
 * hdrs_of.h: a field list from test text, for the unit tests. Include after cmocka.h.
 */
#ifndef CDNODE_TEST_HDRS_OF_H
#define CDNODE_TEST_HDRS_OF_H

#include "cdnode/headers.h"

#include <string.h>

/* "Name: value" lines separated by '\n', copied into the arena. */
static inline struct cdn_hdrs
hdrs_of(struct cdn_arena *a, const char *text)
{
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *colon = memchr(p, ':', len);
        assert_non_null(colon);
        const char *v = colon + 1;
        while (*v == ' ')
            v++;
        cdn_hdrs_add_copy(&h, p, (size_t)(colon - p), v, (size_t)(p + len - v));
        p = nl ? nl + 1 : NULL;
    }
    return h;
}

#endif
