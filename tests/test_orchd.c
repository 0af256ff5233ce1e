/*
 * test_orchd.c: the orchd daemon as a whole: the real binary ($BUILD/orchd) started as a process
 * and driven through the client library. Here the worker binary is a shell script standing in for
 * workerd (one that never connects, one that exits with the fatal code, one that crashes at once),
 * which exercises what orchd does without any worker: queueing, busy replies, cancel, malformed
 * messages, the limits (context length before any worker reported, prompt tokens, message size),
 * the fatal state, restart backoff, graceful stop, and no orphan after kill -9 of orchd.
 * Streams through real workers are in it_orchd.sh.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/client.h"
#include "proto/sock.h"
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
    sock_close(s);
    CHECK(client_health(d.c, &rep, err) == ERR_OK); /* and it keeps serving */
    proto_msg_free(&rep);
    daemon_stop(&d);
}

static int
submit_n(struct daemon *d, const char *prompt, uint32_t max_tokens, struct client_submitted *out,
         char *err)
{
    struct proto_msg m;

    proto_submit_init(&m);
    m.u.submit.prompt = (char *)prompt;
    m.u.submit.max_tokens = max_tokens;
    return client_submit(d->c, &m.u.submit, out, err);
}

/* `test_orchd --send-big URL N`: sends url a message of N bytes and waits 500 ms for an answer;
 * exit status 0 when none came. A process of its own (NNG cannot fork), which exits without
 * closing its socket. */
static int
send_big_main(const char *url, const char *bytes)
{
    size_t n = strtoul(bytes, NULL, 10);
    char *huge = calloc(1, n);
    nng_socket s;
    void *in;
    size_t len;

    if (huge == NULL || nng_req0_open(&s) != 0 || nng_dial(s, url, NULL, 0) != 0 ||
        nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, 500) != 0 || nng_send(s, huge, n, 0) != 0)
        _exit(2);
    _exit(nng_recv(s, &in, &len, NNG_FLAG_ALLOC) == NNG_ETIMEDOUT ? 0 : 1);
}

/* Runs send_big_main in a new process; returns its exit status. */
static int
send_big(const char *url, size_t n)
{
    char bytes[32];
    pid_t pid;
    int status = -1;

    snprintf(bytes, sizeof(bytes), "%zu", n);
    pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", "test_orchd", "--send-big", url, bytes, (char *)NULL);
        _exit(3);
    }
    if (pid > 0)
        waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void
test_limits_before_any_worker(void)
{
    const char *w = worker_script("args", "echo \"$@\" > \"$(dirname \"$0\")/args.txt\"\n"
                                          "exec sleep 1000");
    static const char *const ctx64[] = {"-w", "1", "--ctx", "64", NULL};
    static const char *const ctx4096[] = {"-w", "1", "--ctx", "4096", NULL};
    struct daemon d;
    struct client_submitted a;
    struct proto_msg rep;
    char err[ERR_MSG_MAX], path[600], args[1024] = "";
    size_t n = 70000;
    char *longp = malloc(n + 1);
    FILE *f;

    if (!daemon_start(&d, w, ctx64)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    /* the workers are started with --ctx 64, and until one reports, 64 bounds every submit */
    CHECK(daemon_worker_pid(&d, 0) > 0);
    snprintf(path, sizeof(path), "%s/args.txt", harness_tmpdir());
    for (int i = 0; i < 100 && args[0] == '\0'; i++) {
        sleep_ms(10);
        if ((f = fopen(path, "r")) != NULL) {
            if (fgets(args, sizeof(args), f) == NULL)
                args[0] = '\0';
            fclose(f);
        }
    }
    CHECKF(strstr(args, "serve -m ") == args && strstr(args, " --ctx 64"), "%s", args);
    CHECK(submit_n(&d, "Once upon a time", 60, &a, err) == ERR_CONTEXT_FULL);
    CHECKF(strstr(err, "exceed the context length (64)") != NULL, "%s", err);
    CHECKF(submit_n(&d, "Once upon a time", 8, &a, err) == ERR_OK && a.position == 1, "%s", err);
    /* a prompt of more than 65536 tokens (about one a byte here) is refused, naming the bound */
    CHECK(longp != NULL);
    for (size_t i = 0; longp != NULL && i < n; i++)
        longp[i] = "q z "[i % 4];
    if (longp != NULL) {
        longp[n] = '\0';
        CHECK(submit_n(&d, longp, 8, &a, err) == ERR_BAD_REQUEST);
        CHECKF(strstr(err, "room for 65536") != NULL, "%s", err);
    }
    free(longp);
    /* a message over 4 MiB is dropped unread (no answer), and orchd carries on */
    CHECK(send_big(d.url, PROTO_MAX_MSG_BYTES + 1024) == 0);
    CHECK(client_health(d.c, &rep, err) == ERR_OK);
    proto_msg_free(&rep);
    CHECKF(submit_n(&d, "Once upon a time", 8, &a, err) == ERR_OK && a.position == 2, "%s", err);
    daemon_stop(&d);
    /* --ctx past the model's context length (2048 for stories260K): the model's bounds it */
    if (!daemon_start(&d, w, ctx4096)) {
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    CHECK(submit_n(&d, "Once upon a time", 2045, &a, err) == ERR_CONTEXT_FULL);
    CHECKF(strstr(err, "exceed the context length (2048)") != NULL, "%s", err);
    daemon_stop(&d);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_queue_busy_cancel_and_orphans), TEST(test_fatal_worker_and_backoff),
        TEST(test_graceful_stop_ends_requests),   TEST(test_malformed_messages),
        TEST(test_limits_before_any_worker),      {0},
    };

    if (argc == 4 && strcmp(argv[1], "--send-big") == 0)
        return send_big_main(argv[2], argv[3]);
    log_init("test_orchd", LOG_ERROR);
    sock_exit(harness_run(tests, argc, argv));
}
