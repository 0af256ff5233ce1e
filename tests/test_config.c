/*
 * test_config.c: orchd's configuration file (orchd/config.h): the example deploy/tenants.conf
 * loads with its values, malformed files are refused naming the line, key hashes round-trip
 * through `orchctl hash-key`'s function, authentication finds the right tenant and refuses a
 * wrong or missing key, and its time does not depend on how much of a key is right.
 */
#include "common/err.h"
#include "orchd/config.h"
#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Writes text to a file in the test's directory; returns its path (static). */
static const char *
write_conf(const char *text)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/test.conf", harness_tmpdir());
    f = fopen(path, "w");
    if (f == NULL)
        return "/nonexistent";
    fputs(text, f);
    fclose(f);
    return path;
}

static void
test_example_loads(void)
{
    struct config *c;
    char err[ERR_MSG_MAX];

    CHECKF(config_load(&c, "deploy/tenants.conf", err) == ERR_OK, "%s", err);
    if (c == NULL)
        return;
    CHECK(c->n_tenants == 2 && c->tls_cert_key_file == NULL);
    CHECK(strcmp(c->tenants[0].name, "alice") == 0 && c->tenants[0].weight == 2);
    CHECK(c->tenants[0].max_running == 4 && c->tenants[0].max_queued == 32);
    CHECK(c->tenants[0].token_budget == 2000000 && c->tenants[0].budget_period_ms == 86400000);
    CHECK(c->tenants[0].rate_per_min == 120 && c->tenants[0].max_finished == 1000);
    CHECK(strcmp(c->tenants[1].name, "bob") == 0 && c->tenants[1].weight == 1);
    CHECK(c->tenants[1].max_finished == SCHED_DEFAULT_FINISHED);
    CHECK(config_auth(c, "alice-secret-key-1") == 0);
    CHECK(config_auth(c, "bob-secret-key-2") == 1);
    CHECK(config_auth(c, "bob-secret-key-3") == -1);
    CHECK(config_auth(c, NULL) == -1);
    CHECK(config_auth(NULL, NULL) == 0); /* no configuration: the local default */
    config_free(c);
}

static void
test_hash_roundtrip_and_tls(void)
{
    struct config *c;
    char h[CONFIG_HASH_TEXT], text[512], err[ERR_MSG_MAX];

    CHECK(config_hash_key("k-123", h, err) == ERR_OK && strncmp(h, "blake2b:", 8) == 0);
    CHECK(strlen(h) == CONFIG_HASH_TEXT - 1);
    snprintf(text, sizeof(text),
             "; a comment\n[tls]\ncert_key_file = /etc/x.pem # the server's\n\n"
             "[tenant t1]\nkey = %s\n",
             h);
    CHECKF(config_load(&c, write_conf(text), err) == ERR_OK, "%s", err);
    if (c == NULL)
        return;
    CHECK(strcmp(c->tls_cert_key_file, "/etc/x.pem") == 0);
    CHECK(c->tenants[0].weight == 1 && c->tenants[0].max_running == 0); /* defaults */
    CHECK(config_auth(c, "k-123") == 0 && config_auth(c, "k-124") == -1);
    config_free(c);
    CHECK(config_hash_key("", h, err) == ERR_BAD_REQUEST);
    CHECK(config_hash_key("has space", h, err) == ERR_BAD_REQUEST);
}

static void
test_errors_name_the_line(void)
{
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"[tenant a]\nweight = 0\n", "test.conf:2: weight: not an integer in [1, 1000]: '0'"},
        {"[tenant a]\nmax_finished = 0\n",
         "test.conf:2: max_finished: not an integer in [1, 1000000]: '0'"},
        {"[tenant a]\nkey = plain\n", "test.conf:2: key must be blake2b:"},
        {"[tenant a]\nweight = 2\n", "tenant a has no key"},
        {"[tenant a b]\n", "test.conf:1: tenant name 'a b'"},
        {"[tenants]\n", "test.conf:1: unknown section"},
        {"[tenant a]\ncolour = red\n", "test.conf:2: unknown tenant setting 'colour'"},
        {"weight = 2\n", "test.conf:1: 'weight' is not a setting here"},
        {"[tenant a]\nkey\n", "test.conf:2: expected name = value"},
        {"# nothing\n", "no [tenant NAME] section"},
        {"[tenant a]\nkey = "
         "blake2b:5449e97207994c40f74e02f19446980b22a867e16a9b5dfb00def2382a7288e2\n"
         "[tenant b]\nkey = "
         "blake2b:5449e97207994c40f74e02f19446980b22a867e16a9b5dfb00def2382a7288e2\n",
         "tenants a and b have the same key"},
        {"[tenant a]\nkey = "
         "blake2b:5449e97207994c40f74e02f19446980b22a867e16a9b5dfb00def2382a7288e2\n"
         "[tenant a]\n",
         "test.conf:3: tenant a is defined twice"},
    };
    struct config *c;
    char err[ERR_MSG_MAX];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int rc = config_load(&c, write_conf(cases[i].text), err);

        CHECKF(rc == ERR_FORMAT && c == NULL && strstr(err, cases[i].want) != NULL,
               "case %zu: rc %d: %s", i, rc, err);
    }
    CHECK(config_load(&c, "/nonexistent/x.conf", err) == ERR_IO);
}

static uint64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int
cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Median time of one batch of authentications of key, over rounds interleaved with the others. */
static void
test_auth_time_ignores_the_prefix(void)
{
    enum { ROUNDS = 301, BATCH = 200, TENANTS = 64 };
    static const char *const keys[3] = {
        "key-of-tenant-000017-xxxxxxxxxxxxxxxx", /* right */
        "key-of-tenant-000017-xxxxxxxxxxxxxxxy", /* right but for the last byte */
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", /* wrong from the first byte */
    };
    static uint64_t t[3][ROUNDS];
    char text[TENANTS * 120], h[CONFIG_HASH_TEXT], key[64], err[ERR_MSG_MAX];
    struct config *c;
    size_t len = 0;
    double med[3];

    for (int i = 0; i < TENANTS; i++) {
        snprintf(key, sizeof(key), "key-of-tenant-%06d-xxxxxxxxxxxxxxxx", i);
        CHECK(config_hash_key(key, h, err) == ERR_OK);
        len += (size_t)snprintf(text + len, sizeof(text) - len, "[tenant t%d]\nkey = %s\n", i, h);
    }
    CHECKF(config_load(&c, write_conf(text), err) == ERR_OK, "%s", err);
    if (c == NULL)
        return;
    CHECK(config_auth(c, keys[0]) == 17 && config_auth(c, keys[1]) == -1);
    for (int r = 0; r < ROUNDS; r++)
        for (int k = 0; k < 3; k++) {
            uint64_t t0 = now_ns();
            volatile int sink = 0;

            for (int b = 0; b < BATCH; b++)
                sink += config_auth(c, keys[k]);
            t[k][r] = now_ns() - t0;
            (void)sink;
        }
    for (int k = 0; k < 3; k++) {
        qsort(t[k], ROUNDS, sizeof(t[k][0]), cmp_u64);
        med[k] = (double)t[k][ROUNDS / 2];
    }
    printf("  auth of 64 tenants, %d calls: right %.0f us, last byte wrong %.0f us, first byte "
           "wrong %.0f us\n",
           BATCH, med[0] / 1e3, med[1] / 1e3, med[2] / 1e3);
    for (int k = 1; k < 3; k++)
        CHECKF(med[k] / med[0] < 1.25 && med[0] / med[k] < 1.25, "median %.0f vs %.0f ns", med[k],
               med[0]);
    config_free(c);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_example_loads),
        TEST(test_hash_roundtrip_and_tls),
        TEST(test_errors_name_the_line),
        TEST(test_auth_time_ignores_the_prefix),
        {0},
    };

    return harness_run(tests, argc, argv);
}
