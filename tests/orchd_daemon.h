/*
 * orchd_daemon.h: a real orchd process for tests: started from $BUILD/orchd (default build/) on a
 * private ipc:// URL in the test's temporary directory with its stderr in a log file there, a
 * client connected to it, and helpers to find and watch its workers. An orchd left running by a
 * test that failed early is killed when the next one starts and at exit.
 */
#ifndef LLORCH_TESTS_ORCHD_DAEMON_H
#define LLORCH_TESTS_ORCHD_DAEMON_H

#include "proto/client.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct daemon {
    pid_t pid;
    char url[512];
    char log[512]; /* its stderr */
    struct client *c;
};

/*
 * Starts orchd -m ../shared/models/stories260K.gguf -l URL [--workerd workerd] EXTRA... and waits
 * (5 s at most) until it answers health (or refuses it as unauthorized: tenants configured). workerd NULL: orchd's default (the workerd beside it).
 * The log level is $ORCHD_LOG_LEVEL, default error. False (with a line on stdout) on failure.
 */
bool daemon_start(struct daemon *d, const char *workerd, const char *const *extra);

/* Waits up to 5 s for orchd to exit; returns its wait status, or -1. */
int daemon_wait(struct daemon *d);

/* Prints the last lines of orchd's log (its stderr) to stdout: call it when a check fails. */
void daemon_print_log(const struct daemon *d);

/* Closes the client and kills orchd (SIGKILL) if it still runs. */
void daemon_stop(struct daemon *d);

/* The pid of slot's worker once orchd has started one (2 s bound), or 0. */
pid_t daemon_worker_pid(struct daemon *d, uint32_t slot);

/* True when pid has exited (gone, or a zombie). */
bool process_gone(pid_t pid);

#endif
