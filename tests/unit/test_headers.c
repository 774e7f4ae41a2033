/* Unit tests for header lists, list iteration and the arena. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "cdnode/arena.h"
#include "cdnode/headers.h"

#include <stdint.h>
#include <string.h>

static void
test_add_get_count_remove(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    for (int i = 0; i < 40; i++) /* forces growth */
        cdn_hdrs_add_str(&h, "X-N", "v");
    cdn_hdrs_add_str(&h, "Set-Cookie", "a=1");
    cdn_hdrs_add_str(&h, "set-cookie", "b=2");
    assert_int_equal(h.n, 42);
    assert_int_equal(cdn_hdrs_count(&h, "SET-COOKIE"), 2);
    assert_string_equal(cdn_hdrs_get(&h, "Set-Cookie")->value, "a=1");
    assert_null(cdn_hdrs_get(&h, "Set-Cookie2"));
    assert_int_equal(cdn_hdrs_remove(&h, "x-n"), 40);
    assert_int_equal(h.n, 2);
    assert_string_equal(h.v[1].value, "b=2"); /* order kept */
    cdn_arena_free(a);
}

static void
test_join(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    assert_null(cdn_hdrs_join(&h, "Vary", NULL));
    cdn_hdrs_add_str(&h, "Vary", "Accept");
    cdn_hdrs_add_str(&h, "Other", "x");
    cdn_hdrs_add_str(&h, "vary", "Accept-Encoding");
    size_t len;
    const char *j = cdn_hdrs_join(&h, "VARY", &len);
    assert_string_equal(j, "Accept, Accept-Encoding");
    assert_int_equal(len, strlen(j));
    cdn_arena_free(a);
}

static void
test_add_copy_owns(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(0);
    struct cdn_hdrs h;
    cdn_hdrs_init(&h, a);
    char name[] = "ETag", value[] = "\"x\"";
    cdn_hdrs_add_copy(&h, name, 4, value, 3);
    name[0] = 'Z';
    value[1] = 'y';
    assert_string_equal(cdn_hdrs_get(&h, "etag")->value, "\"x\"");
    cdn_arena_free(a);
}

static void
test_tchar_token(void **state)
{
    (void)state;
    assert_true(cdn_is_token("X-Good_1!", 9));
    assert_false(cdn_is_token("X-Bad ", 6));
    assert_false(cdn_is_token("a:b", 3));
    assert_false(cdn_is_token("", 0));
    assert_false(cdn_is_tchar('"'));
    assert_false(cdn_is_tchar(0x7f));
    assert_false(cdn_is_tchar(0xc3));
    assert_true(cdn_is_tchar('~'));
    /* Every byte against the RFC 9110 grammar, spelled out. */
    for (unsigned c = 0; c < 256; c++) {
        bool want = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    (c != 0 && strchr("!#$%&'*+-.^_`|~", (int)c) != NULL);
        if (cdn_is_tchar((unsigned char)c) != want)
            fail_msg("byte 0x%02x: want %d", c, want);
    }
}

static void
test_name_eq_ascii_only(void **state)
{
    (void)state;
    assert_true(cdn_name_eq("content-LENGTH", 14, "Content-Length"));
    assert_false(cdn_name_eq("Content-Lengt", 13, "Content-Length"));
    assert_false(cdn_name_eq("Content-Lengthx", 15, "Content-Length"));
    assert_true(cdn_name_eq("Content-Lengthx", 14, "Content-Length"));
    assert_true(cdn_name_eq("", 0, ""));
    /* Counted: a NUL inside the name is a byte like any other, not an end. */
    assert_false(cdn_name_eq("ab\0d", 4, "ab"));
    assert_false(cdn_case_eq("ab\0d", "ab\0e", 4));
    assert_true(cdn_case_eq("AB\0D", "ab\0d", 4));
    /* Only A-Z fold: bytes outside ASCII compare as they are, whatever the locale. */
    assert_false(cdn_case_eq("\xc4", "\xe4", 1));
    assert_false(cdn_case_eq("@", "`", 1));
    assert_false(cdn_case_eq("[", "{", 1));
    for (unsigned c = 0; c < 256; c++)
        for (unsigned d = 0; d < 256; d++) {
            char a = (char)c, b = (char)d;
            bool want = c == d || (c >= 'A' && c <= 'Z' && d == c + 32) ||
                        (d >= 'A' && d <= 'Z' && c == d + 32);
            if (cdn_case_eq(&a, &b, 1) != want)
                fail_msg("0x%02x vs 0x%02x: want %d", c, d, want);
        }
}

static void
test_list_next(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *want[4];
    } rows[] = {
        {"a, b,c", {"a", "b", "c", NULL}},
        {" ,, a ,\t", {"a", NULL}},
        {"x=\"1,2\", y", {"x=\"1,2\"", "y", NULL}},
        {"", {NULL}},
        {"q=\"a\\\",b\", z", {"q=\"a\\\",b\"", "z", NULL}},
    };
    for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
        const char *p = rows[r].in, *end = p + strlen(p), *e;
        size_t el, k = 0;
        while (cdn_list_next(&p, end, &e, &el)) {
            assert_non_null(rows[r].want[k]);
            assert_int_equal(el, strlen(rows[r].want[k]));
            assert_memory_equal(e, rows[r].want[k], el);
            k++;
        }
        assert_null(rows[r].want[k]);
    }
}

static void
test_arena_alignment_and_large(void **state)
{
    (void)state;
    struct cdn_arena *a = cdn_arena_new(256);
    for (int i = 0; i < 1000; i++) {
        void *p = cdn_arena_alloc(a, (size_t)(i % 37) + 1);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        memset(p, 0xab, (size_t)(i % 37) + 1);
    }
    char *big = cdn_arena_alloc(a, 1 << 20);
    memset(big, 1, 1 << 20);
    assert_string_equal(cdn_arena_printf(a, "%s-%d", "x", 42), "x-42");
    assert_string_equal(cdn_arena_strndup(a, "abcdef", 3), "abc");
    cdn_arena_free(a);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_get_count_remove),
        cmocka_unit_test(test_join),
        cmocka_unit_test(test_add_copy_owns),
        cmocka_unit_test(test_tchar_token),
        cmocka_unit_test(test_name_eq_ascii_only),
        cmocka_unit_test(test_list_next),
        cmocka_unit_test(test_arena_alignment_and_large),
    };
    return cmocka_run_group_tests_name("headers", tests, NULL, NULL);
}
