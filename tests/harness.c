/*
 * harness.c: see harness.h.
 */
#include "tests/harness.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * LeakSanitizer's hook, read by the sanitizer build of every test binary (run by make or by hand).
 * NNG 1.5.2's reaper defect (proto/sock.h) strikes at random when a peer dies or a socket closes
 * mid-message, which several tests do on purpose; NNG then never frees the records of the stuck
 * pipes, dialers and listeners. Leaks with libnng in their allocation stack are not reported: the
 * price is that a forgotten nng_msg_free() goes unreported too; everything llorch allocates itself
 * keeps the full check.
 */
const char *__lsan_default_suppressions(void);

const char *
__lsan_default_suppressions(void)
{
    return "leak:libnng.so\n";
}

static bool current_failed;
static const char *current_name;
static char tmpdir[256];

void
harness_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;

    current_failed = true;
    fprintf(stdout, "  %s:%d: %s: ", file, line, current_name);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

bool
harness_shared(char *buf, size_t size, const char *rel)
{
    const char *root = getenv("LLORCH_SHARED");
    const char *ci = getenv("CI");
    struct stat st;

    snprintf(buf, size, "%s/%s", root ? root : "../shared", rel);
    if (stat(buf, &st) == 0)
        return true;
    if (ci != NULL && strcmp(ci, "true") == 0)
        harness_fail(__FILE__, __LINE__, "shared file %s is missing (CI=true)", buf);
    else
        printf("  skip %s: shared file %s is missing\n", current_name, buf);
    return false;
}

static void
remove_tmpdir(void)
{
    char cmd[300];

    if (tmpdir[0] == '\0')
        return;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
}

const char *
harness_tmpdir(void)
{
    if (tmpdir[0] == '\0') {
        const char *base = getenv("TMPDIR");

        snprintf(tmpdir, sizeof(tmpdir), "%s/llorch-test-XXXXXX", base ? base : "/tmp");
        if (mkdtemp(tmpdir) == NULL) {
            perror("mkdtemp");
            abort();
        }
        atexit(remove_tmpdir);
    }
    return tmpdir;
}

static bool
selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return true;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

int
harness_run(const struct test *tests, int argc, char **argv)
{
    int passed = 0, failed = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    for (const struct test *t = tests; t->name != NULL; t++) {
        if (!selected(t->name, argc, argv))
            continue;
        current_name = t->name;
        current_failed = false;
        t->fn();
        printf("%s %s\n", current_failed ? "FAIL" : "ok", t->name);
        if (current_failed)
            failed++;
        else
            passed++;
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}
