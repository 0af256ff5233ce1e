/*
 * test_orchd.c: the orchd daemon as a whole: the real binary ($BUILD/orchd) started as a process
 * and driven through the client library. Here the worker binary is a shell script standing in for
 * workerd (one that never connects, one that exits with the fatal code, one that crashes at once),
 * which exercises what orchd does without any worker: queueing, busy replies, cancel, malformed
 * messages, the fatal state, restart backoff, graceful stop, and no orphan after kill -9 of orchd.
 * Streams through real workers are in it_orchd.sh.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/client.h"
#include "tests/harness.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void
sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    nanosleep(&ts, NULL);
}

/* Writes an executable shell script standing in for workerd; returns its path (static). */
static const char *
worker_script(const char *name, const char *body)
{
    static char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", harness_tmpdir(), name);
    f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    chmod(path, 0755);
    return path;
}

struct daemon {
    pid_t pid;
    char url[512];
    struct client *c;
};

static pid_t running; /* the daemon of the current test: killed if the test fails early */

/* At the start of each daemon and at exit: no orchd outlives the test that started it. */
static void
kill_leftover(void)
{
    if (running > 0) {
        kill(running, SIGKILL);
        waitpid(running, NULL, 0);
        running = 0;
    }
}

/* Starts orchd with the stand-in worker and extra options; waits until it answers health. */
static bool
daemon_start(struct daemon *d, const char *workerd, const char *const *extra)
{
    const char *build = getenv("BUILD");
    char orchd[512], model[512], err[ERR_MSG_MAX], log[512];
    const char *argv[32];
    static int serial;
    int n = 0;

    kill_leftover();
    memset(d, 0, sizeof(*d));
    if (!harness_shared(model, sizeof(model), "models/stories260K.gguf"))
        return false;
    snprintf(orchd, sizeof(orchd), "%s/orchd", build != NULL ? build : "build");
    serial++;
    snprintf(d->url, sizeof(d->url), "ipc://%s/orchd-%d.sock", harness_tmpdir(), serial);
    snprintf(log, sizeof(log), "%s/orchd-%d.log", harness_tmpdir(), serial);
    argv[n++] = orchd;
    argv[n++] = "-m";
    argv[n++] = model;
    argv[n++] = "-l";
    argv[n++] = d->url;
    argv[n++] = "--workerd";
    argv[n++] = workerd;
    argv[n++] = "--log-level";
    argv[n++] = getenv("ORCHD_LOG_LEVEL") != NULL ? getenv("ORCHD_LOG_LEVEL") : "error";
    for (; extra != NULL && *extra != NULL; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    d->pid = fork();
    if (d->pid == 0) {
        if (freopen(log, "w", stderr) == NULL)
            _exit(126);
        execv(orchd, (char **)argv);
        _exit(127);
    }
    running = d->pid;
    for (int i = 0; i < 500; i++) {
        struct proto_msg rep;

        if (d->c == NULL && client_open(&d->c, d->url, NULL, err) != ERR_OK) {
            sleep_ms(10);
            continue;
        }
        if (client_health(d->c, &rep, err) == ERR_OK) {
            proto_msg_free(&rep);
            return true;
        }
        sleep_ms(10);
    }
    printf("  orchd did not answer: %s\n", err);
    return false;
}

/* Waits up to 5 s for orchd to exit; returns its wait status, or -1. */
static int
daemon_wait(struct daemon *d)
{
    int status;

    for (int i = 0; i < 500; i++) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            running = 0;
            return status;
        }
        sleep_ms(10);
    }
    return -1;
}

static void
daemon_stop(struct daemon *d)
{
    client_close(d->c);
    d->c = NULL;
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        daemon_wait(d);
    }
}

static int
submit(struct daemon *d, const char *prompt, struct client_submitted *out, char *err)
{
    struct proto_msg m;

    proto_submit_init(&m);
    m.u.submit.prompt = (char *)prompt;
    m.u.submit.max_tokens = 8;
    return client_submit(d->c, &m.u.submit, out, err);
}

/* The next frame of id from `from` on, waiting up to wait_ms; its kind, or -1. */
static int
next_kind(struct daemon *d, const char *id, uint64_t from, uint32_t wait_ms, int32_t *code)
{
    struct client_stream *s;
    const struct proto_frame *f = NULL;
    char err[ERR_MSG_MAX];
    int kind = -1;

    if (client_stream_open(d->c, id, from, &s, err) != ERR_OK)
        return -1;
    if (client_stream_next(s, wait_ms, &f, err) == ERR_OK && f != NULL) {
        kind = (int)f->kind;
        if (code != NULL)
            *code = f->code;
    }
    client_stream_close(s);
    return kind;
}

/* The pid of slot's worker once orchd has started one (2 s bound), or 0. */
static pid_t
worker_pid(struct daemon *d, uint32_t slot)
{
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    pid_t pid = 0;

    for (int i = 0; i < 200 && pid == 0; i++) {
        if (client_workers(d->c, &rep, err) == ERR_OK && slot < rep.u.workers.n_workers)
            pid = rep.u.workers.workers[slot].pid;
        proto_msg_free(&rep);
        if (pid == 0)
            sleep_ms(10);
    }
    return pid;
}

static bool
process_gone(pid_t pid)
{
    char path[64], state = '?';
    FILE *f;

    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return true;
    if (fscanf(f, "%*d %*s %c", &state) != 1)
        state = '?';
    fclose(f);
    return state == 'Z';
}

static void
test_queue_busy_cancel_and_orphans(void)
{
    const char *w = worker_script("never-ready", "exec sleep 1000");
    static const char *const extra[] = {"-w", "1", "--queue-max", "2", NULL};
    struct daemon d;
    struct client_submitted a, b, c;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    pid_t worker;

    if (!daemon_start(&d, w, extra)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    CHECKF(submit(&d, "Once upon a time", &a, err) == ERR_OK, "%s", err);
    CHECK(a.position == 1);
    CHECKF(submit(&d, "There was", &b, err) == ERR_OK, "%s", err);
    CHECK(b.position == 2);
    CHECK(submit(&d, "Three", &c, err) == ERR_BUSY && c.retry_after_ms > 0);
    CHECK(next_kind(&d, a.id, 0, 0, NULL) == PROTO_FRAME_QUEUED);
    CHECK(client_cancel(d.c, a.id, err) == ERR_OK);
    CHECK(next_kind(&d, a.id, 1, 1000, NULL) == PROTO_FRAME_DONE);
    CHECK(client_cancel(d.c, "r9999", err) == ERR_NOT_FOUND);
    CHECK(client_status(d.c, &rep, err) == ERR_OK);
    CHECK(rep.u.status.queued_interactive == 1 && rep.u.status.queue_max == 2);
    proto_msg_free(&rep);
    CHECK((worker = worker_pid(&d, 0)) > 0);
    CHECK(client_workers(d.c, &rep, err) == ERR_OK && rep.u.workers.n_workers == 1);
    CHECKF(rep.u.workers.workers[0].state == PROTO_WSTATE_STARTING, "state %s: %s",
           proto_worker_state_name(rep.u.workers.workers[0].state),
           rep.u.workers.workers[0].detail);
    proto_msg_free(&rep);
    CHECK(!process_gone(worker));
    CHECK(client_health(d.c, &rep, err) == ERR_OK && !rep.u.health.ready);
    proto_msg_free(&rep);
    /* kill -9 of orchd: its worker goes with it */
    kill(d.pid, SIGKILL);
    CHECK(daemon_wait(&d) != -1);
    for (int i = 0; i < 200 && !process_gone(worker); i++)
        sleep_ms(10);
    CHECKF(process_gone(worker), "worker %d outlived orchd", (int)worker);
    daemon_stop(&d);
}

static void
test_fatal_worker_and_backoff(void)
{
    const char *fatal = worker_script("fatal", "echo 'bad model' >&2; exit 2");
    static const char *const extra[] = {"-w", "2", NULL};
    struct daemon d;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    const char *crash;
    uint32_t restarts;

    if (!daemon_start(&d, fatal, extra)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    sleep_ms(300);
    CHECK(client_workers(d.c, &rep, err) == ERR_OK && rep.u.workers.n_workers == 2);
    for (uint32_t i = 0; i < 2; i++) {
        CHECK(rep.u.workers.workers[i].state == PROTO_WSTATE_FATAL);
        CHECK(rep.u.workers.workers[i].restarts == 0 && rep.u.workers.workers[i].pid == 0);
        CHECKF(strstr(rep.u.workers.workers[i].detail, "status 2") != NULL, "%s",
               rep.u.workers.workers[i].detail);
    }
    proto_msg_free(&rep);
    CHECK(client_health(d.c, &rep, err) == ERR_OK && !rep.u.health.ready);
    proto_msg_free(&rep);
    kill(d.pid, SIGTERM);
    CHECK(daemon_wait(&d) == 0); /* exit status 0 */
    daemon_stop(&d);

    /* a worker that crashes at start is restarted with a growing delay, not in a fork loop */
    crash = worker_script("crash", "exit 1");
    if (!daemon_start(&d, crash, extra)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    sleep_ms(1000);
    CHECK(client_workers(d.c, &rep, err) == ERR_OK);
    restarts = rep.u.workers.workers[0].restarts;
    CHECKF(restarts >= 2 && restarts <= 5, "%u restarts in 1 s", restarts);
    CHECKF(strstr(rep.u.workers.workers[0].detail, "status 1") != NULL, "%s",
           rep.u.workers.workers[0].detail);
    proto_msg_free(&rep);
    daemon_stop(&d);
}

static void
test_graceful_stop_ends_requests(void)
{
    const char *w = worker_script("never-ready", "exec sleep 1000");
    static const char *const extra[] = {"-w", "1", "--grace-ms", "300", NULL};
    struct daemon d;
    struct client_submitted a, late;
    char err[ERR_MSG_MAX];
    int32_t code = 0;
    pid_t worker;

    if (!daemon_start(&d, w, extra)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    CHECKF(submit(&d, "Once upon a time", &a, err) == ERR_OK, "%s", err);
    CHECK((worker = worker_pid(&d, 0)) > 0);
    kill(d.pid, SIGTERM);
    sleep_ms(50);
    CHECK(submit(&d, "too late", &late, err) == ERR_SHUTTING_DOWN);
    CHECK(next_kind(&d, a.id, 1, 3000, &code) == PROTO_FRAME_ERROR && code == ERR_SHUTTING_DOWN);
    CHECK(daemon_wait(&d) == 0);
    CHECK(process_gone(worker));
    daemon_stop(&d);
}

static void
test_malformed_messages(void)
{
    const char *w = worker_script("never-ready", "exec sleep 1000");
    static const char *const extra[] = {"-w", "1", NULL};
    static const unsigned char junk[] = {0xc1, 0x93, 0xff, 0x00, 0x7f};
    struct daemon d;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    nng_socket s;
    void *buf;
    size_t len;

    if (!daemon_start(&d, w, extra)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    CHECK(nng_req0_open(&s) == 0 && nng_dial(s, d.url, NULL, 0) == 0);
    nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 3000);
    for (int i = 0; i < 20; i++) {
        CHECK(nng_send(s, (void *)junk, sizeof(junk) - (size_t)(i % 4), 0) == 0);
        CHECK(nng_recv(s, &buf, &len, NNG_FLAG_ALLOC) == 0);
        CHECK(proto_decode(buf, len, PROTO_LINK_CLIENT_REP, &rep, err) == ERR_OK);
        nng_free(buf, len);
        CHECK(rep.type == PROTO_ERROR && rep.u.error.code == ERR_PROTOCOL);
        proto_msg_free(&rep);
    }
    nng_close(s);
    CHECK(client_health(d.c, &rep, err) == ERR_OK); /* and it keeps serving */
    proto_msg_free(&rep);
    daemon_stop(&d);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_queue_busy_cancel_and_orphans),
        TEST(test_fatal_worker_and_backoff),
        TEST(test_graceful_stop_ends_requests),
        TEST(test_malformed_messages),
        {0},
    };

    log_init("test_orchd", LOG_ERROR);
    atexit(kill_leftover);
    return harness_run(tests, argc, argv);
}
