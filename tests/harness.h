/*
 * harness.h: the tiny test harness. A test binary declares named test functions and a table, and
 * main() calls harness_run(), which runs them (all, or those named on the command line), prints
 * "ok NAME" / "FAIL NAME" per test and ends with the line "N passed, N failed". Exit status 1 when
 * any test failed. CHECK failures print file:line and the condition and end the current test.
 *
 *   static void test_open(void) { CHECK(x == 1); CHECKF(y < 2, "y = %d", y); }
 *   int main(int argc, char **argv) {
 *       static const struct test tests[] = {TEST(test_open), {0}};
 *       return harness_run(tests, argc, argv);
 *   }
 */
#ifndef LLORCH_HARNESS_H
#define LLORCH_HARNESS_H

#include <stdbool.h>
#include <stddef.h>

struct test {
    const char *name;
    void (*fn)(void);
};

#define TEST(fn)                                                                                   \
    {                                                                                              \
#fn, fn                                                                                    \
    }

/* Records a failure of the running test with a formatted message. */
void harness_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            harness_fail(__FILE__, __LINE__, "%s", #cond);                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

#define CHECKF(cond, ...)                                                                          \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            harness_fail(__FILE__, __LINE__, __VA_ARGS__);                                         \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* Runs the table (terminated by a zeroed entry); returns the process exit status. */
int harness_run(const struct test *tests, int argc, char **argv);

/*
 * Path of a file under the shared folder (LLORCH_SHARED, default "../shared" from the repo root,
 * where make runs tests) written into buf. Returns true when the file exists. When it does not,
 * returns false after: failing the running test when CI is set ("CI=true"), else printing a "skip"
 * line; the caller then returns from the test.
 */
bool harness_shared(char *buf, size_t size, const char *rel);

/* A fresh temporary directory for the running binary (removed at exit), as a path. */
const char *harness_tmpdir(void);

/* Sleeps ms milliseconds (tests that wait for another process or thread poll with it). */
void sleep_ms(long ms);

#endif
