/*
 * test_serve.c: a real `workerd serve --slots 2` on stories260K, the test playing orchd's side of
 * the link (one end of a socketpair, the worker's fd 3, as orchd does): READY carries the slot
 * count; two dispatches run at once, their tokens interleaved and each tagged with its id at
 * consecutive indices; a third is refused with error(busy) naming it while both slots are taken; a
 * cancel stops only the request it names; a freed slot takes the next dispatch; the heartbeat's
 * counter counts the tokens of every request; the worker exits when orchd's end closes. orchd's own
 * handling of several slots is in test_sched.c and test_orchd_serve.c.
 */
#include "common/err.h"
#include "common/log.h"
#include "proto/proto.h"
#include "tests/harness.h"
#include "tests/wire.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* orchd's end of one worker's link, and what the worker reported on it. */
struct link {
    int fd;
    struct link_buf in, out;
    pid_t pid;
    uint64_t beat_tokens; /* the last heartbeat's counter */
};

static bool
to_worker(struct link *l, const struct proto_msg *m)
{
    return wire_send(&l->out, l->fd, m);
}

/* The next event (a heartbeat is also noted in l); false after 5 s without one. */
static bool
from_worker(struct link *l, struct proto_msg *m)
{
    memset(m, 0, sizeof(*m));
    if (wire_recv(&l->in, l->fd, PROTO_LINK_WORKER_EVT, 5000, m) != ERR_OK)
        return false;
    if (m->type == PROTO_HEARTBEAT)
        l->beat_tokens = m->u.heartbeat.tokens;
    return true;
}

/* Starts workerd serve --slots 2 on one end of a socketpair (its fd 3, as orchd does), probes it;
 * false (and printed) on failure. */
static bool
worker_start(struct link *l, struct proto_ready *rd)
{
    const char *build = getenv("BUILD");
    char model[512], workerd[512], log[600];
    struct proto_msg m = {.type = PROTO_PROBE};
    int sv[2];

    memset(l, 0, sizeof(*l));
    l->fd = -1;
    if (!harness_shared(model, sizeof(model), "models/stories260K.gguf"))
        return false;
    snprintf(workerd, sizeof(workerd), "%s/workerd", build != NULL ? build : "build");
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        printf("  socketpair: %s\n", strerror(errno));
        return false;
    }
    l->fd = sv[0];
    snprintf(log, sizeof(log), "%s/serve.log", harness_tmpdir());
    if ((l->pid = fork()) == 0) {
        if (freopen(log, "w", stderr) == NULL ||
            (sv[1] == 3 ? fcntl(3, F_SETFD, 0) != 0 : dup2(sv[1], 3) != 3))
            _exit(127);
        execl(workerd, "workerd", "serve", "-m", model, "--link-fd", "3", "--slots", "2", "--ctx",
              "1024", (char *)NULL);
        _exit(127);
    }
    close(sv[1]);
    m.u.probe.nonce = 4242;
    if (l->pid < 0 || !to_worker(l, &m))
        return false;
    do { /* heartbeats may come first */
        proto_msg_free(&m);
        if (!from_worker(l, &m)) {
            printf("  no answer to the probe from %s\n", workerd);
            return false;
        }
    } while (m.type == PROTO_HEARTBEAT);
    if (m.type == PROTO_READY)
        *rd = m.u.ready;
    proto_msg_free(&m);
    return true;
}

static void
worker_stop(struct link *l)
{
    int status;

    if (l->pid > 0) {
        kill(l->pid, SIGTERM);
        waitpid(l->pid, &status, 0);
    }
    if (l->fd >= 0)
        close(l->fd);
    link_buf_free(&l->in);
    link_buf_free(&l->out);
}

static bool
dispatch(struct link *l, char *id, uint32_t max_tokens, uint64_t seed)
{
    static int32_t prompt[] = {1, 403, 407, 261};
    struct proto_msg m = {.type = PROTO_DISPATCH};

    m.u.dispatch.id = id;
    m.u.dispatch.prompt_ids = prompt;
    m.u.dispatch.n_prompt = 4;
    proto_sampling_default(&m.u.dispatch.sampling);
    m.u.dispatch.sampling.seed = seed;
    m.u.dispatch.max_tokens = max_tokens;
    return to_worker(l, &m);
}

/* What the test saw of one request. */
struct seen {
    char id[8];
    uint32_t n;       /* tokens received, at indices 0..n-1 */
    bool bad_index;   /* a token came at another index */
    bool done, error; /* its end */
    enum proto_reason reason;
    int32_t code;
};

static struct seen *
seen_of(struct seen *s, int n, const char *id)
{
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].id, id) == 0)
            return &s[i];
    return NULL;
}

/* Takes one event into the request it names (a heartbeat: nothing to take); false for an event
 * naming no known request. */
static bool
take(struct seen *s, int n, const struct proto_msg *m)
{
    struct seen *r;

    switch (m->type) {
    case PROTO_TOKENS:
        if ((r = seen_of(s, n, m->u.tokens.id)) == NULL)
            return false;
        r->bad_index |= m->u.tokens.index != r->n;
        r->n += m->u.tokens.n_ids;
        return true;
    case PROTO_DONE:
        if ((r = seen_of(s, n, m->u.done.id)) == NULL)
            return false;
        r->done = true;
        r->reason = m->u.done.reason;
        return true;
    case PROTO_ERROR:
        if (m->u.error.id == NULL || (r = seen_of(s, n, m->u.error.id)) == NULL)
            return false;
        r->error = true;
        r->code = m->u.error.code;
        return true;
    case PROTO_HEARTBEAT:
        return true;
    default:
        return false;
    }
}

static void
test_two_slots_busy_cancel_and_reuse(void)
{
    struct link l;
    struct proto_ready rd = {0};
    struct proto_msg m;
    struct seen s[3] = {{.id = "a"}, {.id = "b"}, {.id = "c"}};
    bool ok = true, cancelled = false;

    if (!worker_start(&l, &rd)) {
        worker_stop(&l);
        CHECK(!"workerd serve answered the probe");
    }
    CHECKF(rd.nonce == 4242 && rd.pid == l.pid && rd.max_batch == 2 && rd.n_ctx == 1024,
           "ready: nonce %llu, pid %d, max_batch %u, n_ctx %u", (unsigned long long)rd.nonce,
           rd.pid, rd.max_batch, rd.n_ctx);
    /* a and b take both slots; c is refused while they run */
    ok = dispatch(&l, s[0].id, 1000, 1) && dispatch(&l, s[1].id, 300, 2) &&
         dispatch(&l, s[2].id, 50, 3);
    /* a is cancelled once both have streamed; b goes on to its length */
    while (ok && !(s[0].done && s[1].done)) {
        ok = from_worker(&l, &m) && take(s, 3, &m);
        proto_msg_free(&m);
        if (ok && !cancelled && s[0].n > 0 && s[1].n > 0) {
            struct proto_msg c = {.type = PROTO_CANCEL};

            c.u.ref.id = s[0].id;
            ok = to_worker(&l, &c);
            cancelled = true;
        }
    }
    /* c again, into the freed slots */
    ok = ok && dispatch(&l, s[2].id, 50, 3);
    while (ok && !s[2].done) {
        ok = from_worker(&l, &m) && take(s, 3, &m);
        proto_msg_free(&m);
    }
    /* a heartbeat after the last token counts every request's tokens */
    while (ok && l.beat_tokens < (uint64_t)s[0].n + s[1].n + s[2].n) {
        ok = from_worker(&l, &m);
        proto_msg_free(&m);
    }
    worker_stop(&l);
    CHECKF(ok, "the link failed or an event named no request");
    CHECKF(s[2].error && s[2].code == ERR_BUSY, "c while both slots ran: error %d", s[2].code);
    CHECKF(s[0].done && s[0].reason == PROTO_REASON_CANCELLED && s[0].n > 0 && s[0].n < 1000,
           "a: reason %d after %u tokens", s[0].reason, s[0].n);
    CHECKF(s[1].done && s[1].reason == PROTO_REASON_LENGTH && s[1].n == 300,
           "b: reason %d after %u tokens", s[1].reason, s[1].n);
    CHECKF(s[2].done && s[2].reason == PROTO_REASON_LENGTH && s[2].n == 50,
           "c: reason %d after %u tokens", s[2].reason, s[2].n);
    CHECK(!s[0].bad_index && !s[1].bad_index && !s[2].bad_index);
}

/* orchd gone (its end of the link closed): the worker exits 0 within 2 s. */
static void
test_exits_when_orchd_is_gone(void)
{
    struct proto_ready rd = {0};
    struct link l;
    int status = -1;
    pid_t done = 0;

    if (!worker_start(&l, &rd)) {
        worker_stop(&l);
        CHECK(false);
        return;
    }
    close(l.fd);
    l.fd = -1;
    for (int i = 0; i < 200 && done == 0; i++) {
        done = waitpid(l.pid, &status, WNOHANG);
        if (done == 0)
            usleep(10000);
    }
    CHECKF(done == l.pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "worker: waitpid %d, status %d", (int)done, status);
    if (done == l.pid)
        l.pid = 0;
    worker_stop(&l);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_two_slots_busy_cancel_and_reuse),
        TEST(test_exits_when_orchd_is_gone),
        {0},
    };

    log_init("test_serve", LOG_ERROR);
    return harness_run(tests, argc, argv);
}
