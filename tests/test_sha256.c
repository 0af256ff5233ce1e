/*
 * test_sha256.c: SHA-256 against the FIPS 180-4 / NIST example digests, split updates, and a real
 * file's digest against the one its reference data records.
 */
#include "common/err.h"
#include "common/sha256.h"
#include "tests/harness.h"

#include <stdio.h>
#include <string.h>

static void
hex_of(const uint8_t d[32], char hex[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(hex + 2 * i, "%02x", d[i]);
}

static void
digest(const char *msg, size_t len, size_t step, char hex[65])
{
    struct sha256 s;
    uint8_t d[32];

    sha256_init(&s);
    for (size_t i = 0; i < len; i += step)
        sha256_update(&s, msg + i, len - i < step ? len - i : step);
    sha256_final(&s, d);
    hex_of(d, hex);
}

static void
test_nist_vectors(void)
{
    static const char *abc = "abc";
    static const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    char hex[65];

    digest("", 0, 1, hex);
    CHECKF(strcmp(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
           "%s", hex);
    digest(abc, 3, 3, hex);
    CHECKF(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
           "%s", hex);
    for (size_t step = 1; step <= 64; step *= 4) {
        digest(two, strlen(two), step, hex);
        CHECKF(strcmp(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
               "step %zu: %s", step, hex);
    }
}

static void
test_million_a(void)
{
    static char a[1000];
    struct sha256 s;
    uint8_t d[32];
    char hex[65];

    memset(a, 'a', sizeof(a));
    sha256_init(&s);
    for (int i = 0; i < 1000; i++)
        sha256_update(&s, a, sizeof(a));
    sha256_final(&s, d);
    hex_of(d, hex);
    CHECKF(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0,
           "%s", hex);
}

static void
test_file(void)
{
    char path[512], hex[65], err[ERR_MSG_MAX];

    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return;
    CHECKF(sha256_file_hex(path, hex, err) == ERR_OK, "%s", err);
    CHECKF(strcmp(hex, "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d") == 0,
           "%s", hex);
    CHECK(sha256_file_hex("/nonexistent/x", hex, err) == ERR_IO);
    CHECK(strstr(err, "/nonexistent/x") != NULL);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_nist_vectors),
        TEST(test_million_a),
        TEST(test_file),
        {0},
    };
    return harness_run(tests, argc, argv);
}
