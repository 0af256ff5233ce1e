/*
 * test_master.c: orchd's process table with real child processes (/bin/sleep and /bin/sh stand in
 * for the worker command line; the table does not care what it runs): start, reap, restart with
 * backoff, the fatal exit code, "%d" slot substitution, and stopping with escalation to SIGKILL.
 */
#include "common/clock.h"
#include "common/log.h"
#include "orchd/master.h"
#include "tests/harness.h"

#include <signal.h>
#include <string.h>
#include <time.h>

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Reaps until n slots were reaped or 3 s passed; returns how many were. */
static int
reap_n(struct master *m, int n)
{
    int got = 0;

    for (int i = 0; i < 300 && got < n; i++) {
        got += master_reap(m, clock_now_ms(), NULL, NULL);
        if (got < n)
            sleep_ms(10);
    }
    return got;
}

static void
test_restart_with_backoff(void)
{
    static const char *const argv[] = {"/bin/sleep", "30", NULL};
    struct master_config cfg = {argv, 2, 200, 1000, 60000};
    struct master *m = master_new(&cfg);
    uint64_t now = clock_now_ms();

    CHECK(m != NULL);
    CHECK(master_spawn_due(m, now) == 2);
    CHECK(master_slot(m, 0)->state == SLOT_RUNNING && master_slot(m, 0)->pid > 0);
    kill(master_slot(m, 0)->pid, SIGKILL);
    CHECK(reap_n(m, 1) == 1);
    CHECK(master_slot(m, 0)->state == SLOT_EMPTY);
    CHECKF(strstr(master_slot(m, 0)->last_exit, "signal 9") != NULL, "%s",
           master_slot(m, 0)->last_exit);
    /* it died right after starting: not again before the backoff has passed */
    CHECK(master_spawn_due(m, clock_now_ms()) == 0);
    sleep_ms((long)(master_slot(m, 0)->next_spawn_ms - clock_now_ms()) + 1);
    CHECK(master_spawn_due(m, clock_now_ms()) == 1);
    CHECK(master_slot(m, 0)->restarts == 1 && master_slot(m, 1)->restarts == 0);
    /* a second fast failure doubles the delay */
    now = clock_now_ms();
    kill(master_slot(m, 0)->pid, SIGKILL);
    CHECK(reap_n(m, 1) == 1);
    CHECKF(master_slot(m, 0)->next_spawn_ms - now >= 400, "delay %llu",
           (unsigned long long)(master_slot(m, 0)->next_spawn_ms - now));
    master_stop_all(m, clock_now_ms(), 1000);
    for (int i = 0; i < 300 && !master_stop_tick(m, clock_now_ms()); i++)
        sleep_ms(10);
    CHECK(master_slot(m, 1)->state == SLOT_EMPTY && master_slot(m, 1)->pid == 0);
    CHECK(master_spawn_due(m, UINT64_MAX) == 0); /* stopping: nothing starts again */
    master_free(m);
}

static void
test_fatal_exit_not_restarted(void)
{
    static const char *const argv[] = {"/bin/sh", "-c", "exit 2", NULL};
    struct master_config cfg = {argv, 1, 10, 100, 60000};
    struct master *m = master_new(&cfg);

    CHECK(master_spawn_due(m, clock_now_ms()) == 1);
    CHECK(reap_n(m, 1) == 1);
    CHECK(master_slot(m, 0)->state == SLOT_FATAL);
    CHECK(strcmp(master_slot(m, 0)->last_exit, "exited with status 2") == 0);
    CHECK(master_spawn_due(m, UINT64_MAX - 1) == 0);
    master_free(m);
}

static void
test_slot_id_substituted(void)
{
    static const char *const argv[] = {"/bin/sh", "-c", "exit 1%d", NULL};
    struct master_config cfg = {argv, 2, 10, 100, 60000};
    struct master *m = master_new(&cfg);

    CHECK(master_spawn_due(m, clock_now_ms()) == 2);
    CHECK(reap_n(m, 2) == 2);
    CHECK(strcmp(master_slot(m, 0)->last_exit, "exited with status 10") == 0);
    CHECK(strcmp(master_slot(m, 1)->last_exit, "exited with status 11") == 0);
    master_free(m);
}

static void
test_stop_escalates_to_sigkill(void)
{
    /* a worker that ignores SIGTERM is killed at the deadline */
    static const char *const argv[] = {"/bin/sh", "-c", "trap '' TERM; sleep 30 & wait", NULL};
    struct master_config cfg = {argv, 1, 10, 100, 60000};
    struct master *m = master_new(&cfg);
    uint64_t start;
    bool done = false;

    CHECK(master_spawn_due(m, clock_now_ms()) == 1);
    sleep_ms(100); /* let the shell install its trap */
    start = clock_now_ms();
    master_stop_all(m, start, 200);
    for (int i = 0; i < 300 && !done; i++) {
        done = master_stop_tick(m, clock_now_ms());
        if (!done)
            sleep_ms(10);
    }
    CHECK(done);
    CHECKF(clock_now_ms() - start >= 200, "stopped after %llu ms",
           (unsigned long long)(clock_now_ms() - start));
    CHECKF(strstr(master_slot(m, 0)->last_exit, "signal 9") != NULL, "%s",
           master_slot(m, 0)->last_exit);
    master_free(m);
}

static void
test_bad_slot_count(void)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct master_config cfg = {argv, 0, 10, 100, 60000};

    CHECK(master_new(&cfg) == NULL);
    cfg.n_slots = MASTER_MAX_SLOTS + 1;
    CHECK(master_new(&cfg) == NULL);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_restart_with_backoff), TEST(test_fatal_exit_not_restarted),
        TEST(test_slot_id_substituted),  TEST(test_stop_escalates_to_sigkill),
        TEST(test_bad_slot_count),       {0},
    };
    log_init("test_master", LOG_ERROR);
    return harness_run(tests, argc, argv);
}
