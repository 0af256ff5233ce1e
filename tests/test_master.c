/*
 * test_master.c: orchd's process table with real child processes (/bin/sleep and /bin/sh stand in
 * for the worker command line; the table does not care what it runs): start, reap, restart with
 * backoff, the fatal exit code, "%d" slot substitution, stopping with escalation to SIGKILL, and
 * each worker's link (fd 3 in the child, the other end for orchd, held by nobody else).
 */
#include "common/clock.h"
#include "common/log.h"
#include "orchd/master.h"
#include "tests/harness.h"

#include <poll.h>
#include <signal.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

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
    struct master_config cfg = {argv, 2, 200, 1000, 60000, false};
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
    struct master_config cfg = {argv, 1, 10, 100, 60000, false};
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
    struct master_config cfg = {argv, 2, 10, 100, 60000, false};
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
    struct master_config cfg = {argv, 1, 10, 100, 60000, false};
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

/* Reads from fd until "\n" or end of file (2 s at most); returns the bytes read. */
static size_t
read_line(int fd, char *buf, size_t size)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    size_t len = 0;

    while (len + 1 < size && poll(&p, 1, 2000) == 1) {
        ssize_t n = read(fd, buf + len, 1);

        if (n <= 0)
            break;
        if (buf[len++] == '\n')
            break;
    }
    buf[len] = '\0';
    return len;
}

static void
test_link_per_worker(void)
{
    /* each child greets on its link, then waits for the end of file before exiting */
    static const char *const argv[] = {"/bin/sh", "-c", "echo slot %d >&3; cat <&3 >/dev/null",
                                       NULL};
    struct master_config cfg = {argv, 2, 10, 100, 60000, true};
    struct master *m = master_new(&cfg);
    char line[64];
    int fd[2];

    CHECK(master_spawn_due(m, clock_now_ms()) == 2);
    fd[0] = master_take_link(m, 0);
    fd[1] = master_take_link(m, 1);
    CHECK(fd[0] >= 0 && fd[1] >= 0 && master_take_link(m, 0) == -1);
    read_line(fd[0], line, sizeof(line));
    CHECKF(strcmp(line, "slot 0\n") == 0, "slot 0 said '%s'", line);
    read_line(fd[1], line, sizeof(line));
    CHECKF(strcmp(line, "slot 1\n") == 0, "slot 1 said '%s'", line);
    /* closing orchd's end ends worker 0: worker 1 holds no copy of it */
    close(fd[0]);
    CHECK(reap_n(m, 1) == 1 && master_slot(m, 0)->state == SLOT_EMPTY);
    CHECKF(strstr(master_slot(m, 0)->last_exit, "status 0") != NULL, "%s",
           master_slot(m, 0)->last_exit);
    CHECK(master_slot(m, 1)->state == SLOT_RUNNING);
    /* a restarted worker gets a new link; one not taken is closed when its worker is reaped */
    sleep_ms(20);
    CHECK(master_spawn_due(m, clock_now_ms()) == 1);
    read_line(master_slot(m, 0)->link_fd, line, sizeof(line));
    CHECKF(strcmp(line, "slot 0\n") == 0, "the new slot 0 said '%s'", line);
    kill(master_slot(m, 0)->pid, SIGKILL);
    CHECK(reap_n(m, 1) == 1 && master_slot(m, 0)->link_fd == -1);
    close(fd[1]);
    CHECK(reap_n(m, 1) == 1);
    master_free(m);
}

static void
test_bad_slot_count(void)
{
    static const char *const argv[] = {"/bin/true", NULL};
    struct master_config cfg = {argv, 0, 10, 100, 60000, false};

    CHECK(master_new(&cfg) == NULL);
    cfg.n_slots = MASTER_MAX_SLOTS + 1;
    CHECK(master_new(&cfg) == NULL);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_restart_with_backoff),
        TEST(test_fatal_exit_not_restarted),
        TEST(test_slot_id_substituted),
        TEST(test_stop_escalates_to_sigkill),
        TEST(test_bad_slot_count),
        TEST(test_link_per_worker),
        {0},
    };
    log_init("test_master", LOG_ERROR);
    return harness_run(tests, argc, argv);
}
