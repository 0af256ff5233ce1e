/*
 * test_utf8.c: common/utf8 (invalid UTF-8 to U+FFFD by maximal subparts, as Python's
 * errors="replace" does).
 */
#include "common/utf8.h"
#include "tests/harness.h"

#include <string.h>

#define FFFD "\xef\xbf\xbd"

static bool
sanitizes_to(const char *in, size_t len, const char *want, size_t want_len)
{
    char out[64];
    size_t n = utf8_sanitize(in, len, out, sizeof(out));

    return n == want_len && memcmp(out, want, n) == 0;
}

static void
test_valid_text_unchanged(void)
{
    static const char text[] = "a\0 caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf";

    CHECK(sanitizes_to(text, sizeof(text) - 1, text, sizeof(text) - 1));
    CHECK(sanitizes_to("", 0, "", 0));
}

static void
test_maximal_subparts(void)
{
    /* a truncated 3-byte sequence is one replacement; a stray byte is one */
    CHECK(sanitizes_to("a\xe6\x97(", 4, "a" FFFD "(", 5));
    CHECK(sanitizes_to("\xff", 1, FFFD, 3));
    /* ED A0 80 is a surrogate: ED cannot be followed by A0, so three replacements */
    CHECK(sanitizes_to("\xed\xa0\x80z", 4, FFFD FFFD FFFD "z", 10));
    /* overlong C0 80 and out-of-range F4 90: each byte on its own */
    CHECK(sanitizes_to("\xc0\x80", 2, FFFD FFFD, 6));
    CHECK(sanitizes_to("\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD, 12));
    /* a sequence cut by the end of the buffer */
    CHECK(sanitizes_to("x\xf0\x9f\x98", 4, "x" FFFD, 4));
}

static void
test_small_output_buffer(void)
{
    char out[4] = "....";

    CHECK(utf8_sanitize("ok\xff", 3, out, 3) == 5);
    CHECK(memcmp(out, "ok\xef.", 4) == 0);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_valid_text_unchanged),
        TEST(test_maximal_subparts),
        TEST(test_small_output_buffer),
        {0},
    };
    return harness_run(tests, argc, argv);
}
