/*
 * master.c: see master.h. Follows nginx's ngx_process.c in spirit: a slot table, fork+exec, a
 * waitpid(WNOHANG) reaping loop, fatal exit code 2; adds what nginx lacks: restart backoff, a
 * PR_SET_PDEATHSIG'd child that also checks its parent survived the fork, and escalation to
 * SIGKILL.
 */
#include "orchd/master.h"

#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MASTER_MAX_ARGS 64

struct master {
    struct master_config cfg;
    struct slot slots[MASTER_MAX_SLOTS];
    bool stopping;
};

struct master *
master_new(const struct master_config *cfg)
{
    struct master *m;

    if (cfg->n_slots < 1 || cfg->n_slots > MASTER_MAX_SLOTS)
        return NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->cfg = *cfg;
    for (int i = 0; i < cfg->n_slots; i++) {
        m->slots[i].id = i;
        m->slots[i].link_fd = -1;
    }
    return m;
}

void
master_free(struct master *m)
{
    if (m == NULL)
        return;
    for (int i = 0; i < m->cfg.n_slots; i++)
        if (m->slots[i].link_fd >= 0)
            close(m->slots[i].link_fd);
    free(m);
}

int
master_take_link(struct master *m, int slot_id)
{
    struct slot *s = master_slot(m, slot_id);
    int fd;

    if (s == NULL)
        return -1;
    fd = s->link_fd;
    s->link_fd = -1;
    return fd;
}

int
master_n_slots(const struct master *m)
{
    return m->cfg.n_slots;
}

struct slot *
master_slot(struct master *m, int slot_id)
{
    if (slot_id < 0 || slot_id >= m->cfg.n_slots)
        return NULL;
    return &m->slots[slot_id];
}

struct slot *
master_slot_by_pid(struct master *m, pid_t pid)
{
    for (int i = 0; i < m->cfg.n_slots; i++)
        if (m->slots[i].state != SLOT_EMPTY && m->slots[i].state != SLOT_FATAL &&
            m->slots[i].pid == pid)
            return &m->slots[i];
    return NULL;
}

/*
 * Writes the worker's command line for a slot into bufs/argv, replacing each "%d" in an argument by
 * the slot id (nothing else is interpreted). Done before fork(): the child of a threaded process
 * may only make async-signal-safe calls.
 */
static void
build_argv(const struct master *m, int slot_id, char bufs[][256], char **argv)
{
    char id[16];
    int n = 0;

    snprintf(id, sizeof(id), "%d", slot_id);
    for (; m->cfg.argv[n] != NULL && n < MASTER_MAX_ARGS; n++) {
        const char *src = m->cfg.argv[n];
        size_t len = 0;

        while (*src != '\0' && len < 255) {
            if (src[0] == '%' && src[1] == 'd') {
                for (const char *d = id; *d != '\0' && len < 255; d++)
                    bufs[n][len++] = *d;
                src += 2;
            } else {
                bufs[n][len++] = *src++;
            }
        }
        bufs[n][len] = '\0';
        argv[n] = bufs[n];
    }
    argv[n] = NULL;
}

/* In the child: never returns; async-signal-safe calls only. link is the worker's end of its
 * link (-1: none), made MASTER_LINK_FD and kept across exec. */
static void
exec_worker(char **argv, pid_t parent, int link)
{
    sigset_t none;

    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
        _exit(1); /* the master died before we could ask to follow it */
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (link == MASTER_LINK_FD && fcntl(link, F_SETFD, 0) != 0)
        _exit(1);
    if (link >= 0 && link != MASTER_LINK_FD && dup2(link, MASTER_LINK_FD) != MASTER_LINK_FD)
        _exit(1); /* dup2 clears close-on-exec on the copy */
    execv(argv[0], argv);
    _exit(127);
}

int
master_spawn_due(struct master *m, uint64_t now_ms)
{
    char bufs[MASTER_MAX_ARGS][256];
    char *argv[MASTER_MAX_ARGS + 1];
    pid_t parent = getpid();
    int started = 0;

    if (m->stopping)
        return 0;
    for (int i = 0; i < m->cfg.n_slots; i++) {
        struct slot *s = &m->slots[i];
        int link[2] = {-1, -1};
        pid_t pid;

        if (s->state != SLOT_EMPTY || now_ms < s->next_spawn_ms)
            continue;
        build_argv(m, i, bufs, argv);
        if (m->cfg.link && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, link) != 0) {
            log_error("socketpair() failed while spawning worker %d: %s", i, strerror(errno));
            s->next_spawn_ms = now_ms + m->cfg.backoff_min_ms;
            continue;
        }
        pid = fork();
        if (pid < 0) {
            log_error("fork() failed while spawning worker %d: %s", i, strerror(errno));
            s->next_spawn_ms = now_ms + m->cfg.backoff_min_ms;
            if (m->cfg.link) {
                close(link[0]);
                close(link[1]);
            }
            continue;
        }
        if (pid == 0)
            exec_worker(argv, parent, link[1]);
        if (m->cfg.link) { /* the slot's last link went when its worker was reaped */
            close(link[1]);
            s->link_fd = link[0];
        }
        if (s->started_ms != 0)
            s->restarts++;
        s->pid = pid;
        s->state = SLOT_RUNNING;
        s->started_ms = now_ms;
        log_info("worker %d started (pid %d)", i, (int)pid);
        started++;
    }
    return started;
}

static void
describe_exit(char *buf, size_t size, int status)
{
    if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "ended with wait status %d", status);
}

/* Delay before the next start: doubles with each fast failure, bounded. */
static uint64_t
backoff_ms(const struct master_config *cfg, unsigned fast_failures)
{
    uint64_t d = cfg->backoff_min_ms;

    if (fast_failures == 0)
        return 0;
    for (unsigned i = 1; i < fast_failures && d < cfg->backoff_max_ms; i++)
        d *= 2;
    return d < cfg->backoff_max_ms ? d : cfg->backoff_max_ms;
}

int
master_reap(struct master *m, uint64_t now_ms, void (*on_exit)(void *ud, struct slot *s), void *ud)
{
    int status, reaped = 0;
    pid_t pid;

    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        struct slot *s = master_slot_by_pid(m, pid);

        if (s == NULL)
            continue; /* not a worker of ours */
        reaped++;
        describe_exit(s->last_exit, sizeof(s->last_exit), status);
        s->pid = 0;
        if (s->link_fd >= 0) { /* it died before orchd took its link */
            close(s->link_fd);
            s->link_fd = -1;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == MASTER_EXIT_FATAL) {
            s->state = SLOT_FATAL;
            log_error("worker %d %s (fatal: bad model or configuration); not restarting it", s->id,
                      s->last_exit);
        } else if (m->stopping || s->state == SLOT_STOPPING) {
            s->state = SLOT_EMPTY;
            log_info("worker %d %s", s->id, s->last_exit);
        } else {
            s->state = SLOT_EMPTY;
            if (now_ms < s->started_ms + m->cfg.stable_ms)
                s->fast_failures++;
            else
                s->fast_failures = 0;
            s->next_spawn_ms = now_ms + backoff_ms(&m->cfg, s->fast_failures);
            log_warn("worker %d %s; restarting in %llu ms", s->id, s->last_exit,
                     (unsigned long long)(s->next_spawn_ms - now_ms));
        }
        if (on_exit != NULL)
            on_exit(ud, s);
    }
    return reaped;
}

void
master_kill(struct master *m, int slot_id, const char *why)
{
    struct slot *s = master_slot(m, slot_id);

    if (s == NULL || s->pid <= 0)
        return;
    log_warn("killing worker %d (pid %d): %s", slot_id, (int)s->pid, why);
    if (kill(s->pid, SIGKILL) != 0)
        log_error("kill(%d, SIGKILL) failed: %s", (int)s->pid, strerror(errno));
}

void
master_stop_all(struct master *m, uint64_t now_ms, uint64_t grace_ms)
{
    m->stopping = true;
    for (int i = 0; i < m->cfg.n_slots; i++) {
        struct slot *s = &m->slots[i];

        if (s->state != SLOT_RUNNING)
            continue;
        s->state = SLOT_STOPPING;
        s->stop_deadline_ms = now_ms + grace_ms;
        if (kill(s->pid, SIGTERM) != 0)
            log_error("kill(%d, SIGTERM) failed: %s", (int)s->pid, strerror(errno));
    }
}

bool
master_stop_tick(struct master *m, uint64_t now_ms)
{
    bool all_done = true;

    master_reap(m, now_ms, NULL, NULL);
    for (int i = 0; i < m->cfg.n_slots; i++) {
        struct slot *s = &m->slots[i];

        if (s->state != SLOT_STOPPING)
            continue;
        all_done = false;
        if (now_ms >= s->stop_deadline_ms && s->pid > 0) {
            log_warn("worker %d (pid %d) still running after the grace period: SIGKILL", s->id,
                     (int)s->pid);
            kill(s->pid, SIGKILL);
            s->stop_deadline_ms = UINT64_MAX;
        }
    }
    return all_done;
}
