/*
 * test_common.c: tests of common/ (error names and messages, the monotonic clock, log levels,
 * numeric option values).
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/opt.h"
#include "tests/harness.h"

#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

static void test_err_names_stable(void)
{
    CHECK(strcmp(err_str(ERR_OK), "ok") == 0);
    CHECK(strcmp(err_str(ERR_BAD_REQUEST), "bad_request") == 0);
    CHECK(strcmp(err_str(ERR_BUSY), "busy") == 0);
    CHECK(ERR_BUSY == 7 && ERR_WORKER_CRASHED == 11 && ERR_INTERNAL == 15);
    CHECK(strcmp(err_str(-1), "unknown_error") == 0);
    CHECK(strcmp(err_str(ERR__COUNT), "unknown_error") == 0);
    for (int i = 0; i < ERR__COUNT; i++)
        CHECKF(strcmp(err_str(i), "unknown_error") != 0, "code %d has no name", i);
}

static void test_err_set_formats_and_returns(void)
{
    char err[ERR_MSG_MAX];
    char big[600];

    CHECK(err_set(err, ERR_FORMAT, "tensor %s: %d dims", "x", 5) == ERR_FORMAT);
    CHECK(strcmp(err, "tensor x: 5 dims") == 0);
    CHECK(err_set(NULL, ERR_IO, "ignored") == ERR_IO);
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    err_set(err, ERR_FORMAT, "%s", big);
    CHECK(strlen(err) == ERR_MSG_MAX - 1);
}

static void test_clock_monotonic(void)
{
    uint64_t a = clock_now_ns();
    struct timespec ts = {0, 2000000};

    nanosleep(&ts, NULL);
    uint64_t b = clock_now_ns();
    CHECK(b > a);
    CHECKF(clock_ms_between(a, b) >= 2.0, "slept 2 ms, measured %.3f", clock_ms_between(a, b));
}

static void test_log_level_parse(void)
{
    CHECK(log_level_parse("debug") == LOG_DEBUG);
    CHECK(log_level_parse("WARN") == LOG_WARN);
    CHECK(log_level_parse("loud") == -1);
}

static void test_opt_int_range_and_errors(void)
{
    char err[ERR_MSG_MAX];
    long long v = 7;

    CHECK(opt_int("-n", "42", 0, 100, &v, err) == ERR_OK && v == 42);
    CHECK(opt_int("--seed", "-1", -1, INT64_MAX, &v, err) == ERR_OK && v == -1);
    CHECK(opt_int("-n", "9223372036854775807", 0, INT64_MAX, &v, err) == ERR_OK &&
          v == INT64_MAX);
    v = 7;
    CHECK(opt_int("-t", "0", 1, 1024, &v, err) == ERR_BAD_REQUEST && v == 7);
    CHECKF(strcmp(err, "-t: not an integer in [1, 1024]: '0'") == 0, "%s", err);
    CHECK(opt_int("-n", "12x", 0, 100, &v, err) == ERR_BAD_REQUEST && v == 7);
    CHECKF(strcmp(err, "-n: not an integer in [0, 100]: '12x'") == 0, "%s", err);
    CHECK(opt_int("-n", "", 0, 100, &v, err) == ERR_BAD_REQUEST);
    CHECK(opt_int("-n", "1.5", 0, 100, &v, err) == ERR_BAD_REQUEST);
    CHECK(opt_int("-n", "99999999999999999999", 0, INT64_MAX, &v, err) == ERR_BAD_REQUEST);
    CHECK(opt_int("-n", "101", 0, 100, &v, err) == ERR_BAD_REQUEST && v == 7);
}

static void test_opt_float_range_and_errors(void)
{
    char err[ERR_MSG_MAX];
    float f = 2.0f;

    CHECK(opt_float("--temp", "0.8", -HUGE_VAL, HUGE_VAL, &f, err) == ERR_OK && f == 0.8f);
    CHECK(opt_float("--top-p", "1e-1", 0, 1, &f, err) == ERR_OK && f == 0.1f);
    f = 2.0f;
    CHECK(opt_float("--temp", "hot", -HUGE_VAL, HUGE_VAL, &f, err) == ERR_BAD_REQUEST && f == 2.0f);
    CHECKF(strcmp(err, "--temp: not a number: 'hot'") == 0, "%s", err);
    CHECK(opt_float("--temp", "inf", -HUGE_VAL, HUGE_VAL, &f, err) == ERR_BAD_REQUEST);
    CHECK(opt_float("--temp", "nan", -HUGE_VAL, HUGE_VAL, &f, err) == ERR_BAD_REQUEST);
    CHECK(opt_float("--top-p", "1.5", 0, 1, &f, err) == ERR_BAD_REQUEST && f == 2.0f);
    CHECKF(strcmp(err, "--top-p: not a number in [0, 1]: '1.5'") == 0, "%s", err);
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_err_names_stable),
        TEST(test_err_set_formats_and_returns),
        TEST(test_clock_monotonic),
        TEST(test_log_level_parse),
        TEST(test_opt_int_range_and_errors),
        TEST(test_opt_float_range_and_errors),
        {0},
    };
    return harness_run(tests, argc, argv);
}
