/*
 * master.h: orchd's process table, nginx style: a fixed number of worker slots, each holding at
 * most one workerd process. The master forks and execs workers, reaps them with waitpid(WNOHANG),
 * restarts a dead slot after an exponential backoff, and stops restarting a slot whose worker
 * exited with the fatal code (2: bad model or configuration), keeping the reason for `orchctl
 * workers`.
 *
 * Not thread-safe: only orchd's main thread calls these. Readiness, heartbeats and the requests a
 * slot runs are tracked by the scheduler; this module knows processes only.
 */
#ifndef LLORCH_ORCHD_MASTER_H
#define LLORCH_ORCHD_MASTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define MASTER_MAX_SLOTS  64
#define MASTER_EXIT_FATAL 2 /* a worker exiting with this code is not restarted */
#define MASTER_LINK_FD    3 /* the worker's end of its link (master_config.link) */

enum slot_state {
    SLOT_EMPTY = 0,    /* no process; waiting for its backoff to pass */
    SLOT_RUNNING = 1,  /* a process exists (starting, ready or busy: the scheduler knows which) */
    SLOT_STOPPING = 2, /* asked to stop (SIGTERM sent); SIGKILL after the grace period */
    SLOT_FATAL = 3,    /* the worker exited with the fatal code: not restarted */
};

struct slot {
    int id;
    enum slot_state state;
    pid_t pid;
    unsigned restarts;      /* processes started after the first */
    unsigned fast_failures; /* consecutive deaths soon after start, driving the backoff */
    uint64_t started_ms;
    uint64_t next_spawn_ms; /* when an EMPTY slot may be forked again */
    uint64_t stop_deadline_ms;
    char last_exit[96]; /* "exited with status 1", "killed by signal 9", ... */
    int link_fd;        /* orchd's end of the running worker's link until taken; else -1 */
};

struct master_config {
    const char *const
        *argv; /* the worker's command line, argv[0] the binary's path; NULL-terminated.
                  "%d" in an argument becomes the slot id */
    int n_slots;
    uint64_t backoff_min_ms; /* first restart delay after a fast failure */
    uint64_t backoff_max_ms;
    uint64_t stable_ms; /* a worker alive this long resets the backoff */
    bool link; /* each worker gets one end of a new AF_UNIX socketpair as fd MASTER_LINK_FD; the
                  other end waits in its slot for master_take_link */
};

struct master;

/* Creates the table; forks nothing yet. Returns NULL on allocation failure. */
struct master *master_new(const struct master_config *cfg);
void master_free(struct master *m);

/*
 * Forks every EMPTY slot whose backoff has passed. Each child gets PR_SET_PDEATHSIG(SIGKILL),
 * checks its parent is still alive, restores the default signal mask, gets its link (cfg.link) and
 * execs `workerd serve ARGS`. Returns the number of workers started; fork() and socketpair()
 * failures are logged and retried on the next call.
 */
int master_spawn_due(struct master *m, uint64_t now_ms);

/*
 * Reaps every exited child (waitpid(-1, WNOHANG) loop), records how it ended, and schedules the
 * slot's restart or marks it FATAL. Calls on_exit (may be NULL) for each reaped slot so the
 * scheduler can re-dispatch its requests. Returns the number reaped.
 */
int master_reap(struct master *m, uint64_t now_ms, void (*on_exit)(void *ud, struct slot *s),
                void *ud);

/* orchd's end of the link of slot's newest worker, once (the caller owns it); -1 when there is
 * none to take. A link not taken is closed when its worker is reaped. */
int master_take_link(struct master *m, int slot_id);

/* Sends SIGKILL to a slot's process (a hung worker); the reap that follows restarts it. */
void master_kill(struct master *m, int slot_id, const char *why);

/*
 * Shutdown: SIGTERM to every running worker, then SIGKILL to those still alive at the deadline.
 * Call master_stop_all once, then master_stop_tick until it returns true (all exited and reaped).
 */
void master_stop_all(struct master *m, uint64_t now_ms, uint64_t grace_ms);
bool master_stop_tick(struct master *m, uint64_t now_ms);

int master_n_slots(const struct master *m);
struct slot *master_slot(struct master *m, int slot_id);
/* The slot running pid, or NULL. */
struct slot *master_slot_by_pid(struct master *m, pid_t pid);

#endif
