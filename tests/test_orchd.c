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
#include "tests/orchd_daemon.h"

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
    CHECK((worker = daemon_worker_pid(&d, 0)) > 0);
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
    CHECK((worker = daemon_worker_pid(&d, 0)) > 0);
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
    return harness_run(tests, argc, argv);
}
