/*
 * cmd_serve.c: `workerd serve`, the worker process orchd forks into a slot. It maps the model
 * (shared, read-only), talks to orchd on its link (an AF_UNIX socket orchd hands it as --link-fd;
 * frames as in proto/link.h), answers
 * orchd's probe with READY (carrying its number of request slots, --slots) once the model is
 * loaded, then runs up to that many dispatched requests at once through the engine's continuous
 * batch (generate.h): a request joins between steps and its prompt goes in by chunks alongside
 * the running ones' tokens, every active one advances by one token per step, and each token goes
 * to orchd as it is produced, then DONE or ERROR, every message tagged with its request's id.
 *
 * Two threads: the link thread receives (probe, dispatch, cancel), sends heartbeats carrying a
 * progress counter (tokens of all requests), and watches for orchd's death; the main thread runs
 * the batch. Cancel sets that request's flag only, which the batch checks at each step (a pass
 * of at most 64 rows; inside the pass too when it is that request's alone), so its work stops
 * within ~100 ms. Exit status: 0 after SIGTERM or when orchd
 * went away, 2 (fatal, not restarted) when the model or the options are bad, 1 on other errors.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/opt.h"
#include "common/log.h"
#include "proto/link.h"
#include "proto/proto.h"
#include "workerd/cmd.h"
#include "workerd/engine/generate.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"
#include "workerd/engine/tokenizer.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SERVE_HEARTBEAT_MS    250
#define SERVE_RECV_TICK_MS    50
#define SERVE_SEND_TIMEOUT_MS 5000
#define SERVE_DEFAULT_CTX     2048
#define SERVE_DEFAULT_SLOTS   4

enum job_state {
    JOB_FREE,    /* the slot takes a dispatch */
    JOB_PENDING, /* dispatched; the main thread has not added it to the batch yet */
    JOB_RUNNING  /* in the batch (or being added), until its end is reported */
};

/* One request slot: a dispatched request from its acceptance by the link thread to the report of
 * its end by the main thread. */
struct job {
    struct serve *s;
    enum job_state state; /* under s->mu */
    uint64_t seq;         /* acceptance order: the main thread adds pending jobs in it */
    struct proto_msg msg; /* the decoded DISPATCH, owned while not FREE; read-only once PENDING */
    atomic_bool cancel;   /* the request's cancel flag, polled by the engine */
    /* main thread only */
    bool ended; /* its end came (on_done, or a refused add): report it */
    int rv;     /* ERR_OK: done with res; else an error with err */
    struct generate_result res;
    char err[ERR_MSG_MAX];
};

struct serve {
    int link;                /* orchd's link */
    pthread_mutex_t send_mu; /* one sender at a time on the link; guards out */
    struct link_buf out;
    struct link_buf in; /* the link thread's */
    pid_t parent;
    int slot;
    /* the engine: one batch of n_jobs sequences */
    struct gguf *gguf;
    struct model *model;
    struct tokenizer *tok;
    struct generate_batch *batch;
    uint32_t n_ctx;
    /* the request slots, shared by the link thread (accepts, cancels) and the main thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *jobs;
    uint32_t n_jobs;
    uint64_t next_seq;
    atomic_uint_fast64_t tokens; /* generated since start: the heartbeat's progress counter */
    atomic_bool failed_send;
};

static atomic_bool serve_quit; /* lock-free: safe to set from the signal handler */

static void
on_term(int sig)
{
    (void)sig;
    atomic_store(&serve_quit, true);
}

/* Encodes and sends one message to orchd; false when the link is gone (the worker then exits). */
static bool
serve_send(struct serve *s, const struct proto_msg *m)
{
    char err[ERR_MSG_MAX];
    void *buf;
    size_t len;
    int rv;

    if ((rv = proto_encode(m, &buf, &len, err)) != ERR_OK) {
        log_error("cannot encode %s: %s", proto_type_name(m->type), err);
        return false;
    }
    pthread_mutex_lock(&s->send_mu);
    if (!atomic_load(&s->failed_send) &&
        (rv = link_send(&s->out, s->link, buf, len, SERVE_SEND_TIMEOUT_MS, err)) != ERR_OK) {
        /* a frame may be half sent: the link is unusable, and the worker exits */
        log_error("sending %s: %s", proto_type_name(m->type), err);
        atomic_store(&s->failed_send, true);
    }
    pthread_mutex_unlock(&s->send_mu);
    free(buf);
    return !atomic_load(&s->failed_send);
}

static void
send_error(struct serve *s, const char *id, int code, const char *msg)
{
    struct proto_msg m = {.type = PROTO_ERROR};

    m.u.error.code = code;
    m.u.error.msg = (char *)msg;
    m.u.error.id = (char *)id;
    serve_send(s, &m);
}

/* Requests taken (pending or running). Lock held. */
static uint32_t
jobs_taken(const struct serve *s)
{
    uint32_t n = 0;

    for (uint32_t i = 0; i < s->n_jobs; i++)
        n += s->jobs[i].state != JOB_FREE;
    return n;
}

/* Takes a DISPATCH into a free slot (ownership of m moves there), or refuses it as busy. */
static void
accept_dispatch(struct serve *s, struct proto_msg *m)
{
    struct job *j = NULL;

    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < s->n_jobs && j == NULL; i++)
        if (s->jobs[i].state == JOB_FREE)
            j = &s->jobs[i];
    if (j == NULL) {
        pthread_mutex_unlock(&s->mu);
        send_error(s, m->u.dispatch.id, ERR_BUSY, "worker: every request slot is taken");
        return;
    }
    j->msg = *m;
    memset(m, 0, sizeof(*m));
    atomic_store(&j->cancel, false);
    j->seq = ++s->next_seq;
    j->state = JOB_PENDING;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void
handle_cmd(struct serve *s, struct proto_msg *m)
{
    struct proto_msg out = {0};

    switch (m->type) {
    case PROTO_PROBE:
        out.type = PROTO_READY;
        out.u.ready.nonce = m->u.probe.nonce;
        out.u.ready.pid = (int32_t)getpid();
        out.u.ready.n_ctx = s->n_ctx;
        out.u.ready.n_vocab = (uint32_t)model_config(s->model)->n_vocab;
        out.u.ready.max_batch = s->n_jobs;
        serve_send(s, &out);
        break;
    case PROTO_DISPATCH:
        accept_dispatch(s, m);
        break;
    case PROTO_CANCEL:
        pthread_mutex_lock(&s->mu);
        for (uint32_t i = 0; i < s->n_jobs; i++)
            if (s->jobs[i].state != JOB_FREE &&
                strcmp(s->jobs[i].msg.u.dispatch.id, m->u.ref.id) == 0)
                atomic_store(&s->jobs[i].cancel, true);
        pthread_mutex_unlock(&s->mu);
        break;
    default:
        log_warn("ignoring a %s message on the worker link", proto_type_name(m->type));
        break;
    }
}

/* The link thread: receives commands, sends heartbeats, notices that orchd is gone. */
static void *
link_thread(void *arg)
{
    struct serve *s = arg;
    uint64_t next_beat = 0;
    char err[ERR_MSG_MAX];

    while (!atomic_load(&serve_quit)) {
        uint64_t now = clock_now_ms();
        struct proto_msg m;
        const uint8_t *buf;
        size_t len;
        int rv;

        if (getppid() != s->parent || atomic_load(&s->failed_send)) {
            log_info("orchd is gone; exiting");
            atomic_store(&serve_quit, true);
            break;
        }
        if (now >= next_beat) {
            struct proto_msg hb = {.type = PROTO_HEARTBEAT};

            pthread_mutex_lock(&s->mu);
            hb.u.heartbeat.active = jobs_taken(s);
            pthread_mutex_unlock(&s->mu);
            hb.u.heartbeat.tokens = atomic_load(&s->tokens);
            serve_send(s, &hb);
            next_beat = now + SERVE_HEARTBEAT_MS;
        }
        rv = link_recv(&s->in, s->link, PROTO_MAX_MSG_BYTES, SERVE_RECV_TICK_MS, &buf, &len, err);
        if (rv == ERR_TIMEOUT)
            continue;
        if (rv != ERR_OK) {
            log_info("orchd's link: %s; exiting", err);
            atomic_store(&serve_quit, true);
            break;
        }
        if ((rv = proto_decode(buf, len, PROTO_LINK_WORKER_CMD, &m, err)) != ERR_OK) {
            log_error("bad message from orchd: %s: %s", err_str(rv), err);
            continue;
        }
        handle_cmd(s, &m);
        proto_msg_free(&m);
    }
    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < s->n_jobs; i++)
        atomic_store(&s->jobs[i].cancel, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The engine's token callback: the token goes to orchd at once, tagged with its request's id. */
static int
on_token(void *user, const struct generate_token *tok)
{
    struct job *j = user;
    struct proto_msg m = {.type = PROTO_TOKENS};
    int32_t id = tok->id;

    m.u.tokens.id = j->msg.u.dispatch.id;
    m.u.tokens.index = tok->index;
    m.u.tokens.ids = &id;
    m.u.tokens.n_ids = 1;
    m.u.tokens.text = (char *)tok->text;
    m.u.tokens.text_len = tok->n_text;
    atomic_fetch_add(&j->s->tokens, 1);
    if (atomic_load(&j->cancel))
        return 1;
    return serve_send(j->s, &m) ? 0 : 1;
}

/* The engine's end callback: kept for report_ends(), once the step is over. */
static void
on_done(void *user, int rc, const struct generate_result *res, const char *err)
{
    struct job *j = user;

    j->rv = rc;
    j->res = *res;
    snprintf(j->err, sizeof(j->err), "%s", err != NULL ? err : "");
    j->ended = true;
}

static enum proto_reason
reason_of(enum generate_reason r)
{
    switch (r) {
    case GENERATE_REASON_EOS:
        return PROTO_REASON_EOS;
    case GENERATE_REASON_STOP:
        return PROTO_REASON_STOP;
    case GENERATE_REASON_CANCELLED:
        return PROTO_REASON_CANCELLED;
    case GENERATE_REASON_LENGTH:
    case GENERATE_REASON_CONTEXT:
        return PROTO_REASON_LENGTH;
    }
    return PROTO_REASON_ERROR;
}

/* Adds job j's request to the batch (queued: its prompt goes in by chunks over the next steps);
 * a refusal ends it at once. Main thread. */
static void
job_add(struct serve *s, struct job *j)
{
    const struct proto_dispatch *d = &j->msg.u.dispatch;
    struct generate_request req = {0};
    char err[ERR_MSG_MAX];
    int rv;

    j->ended = false;
    req.prompt = d->prompt_ids;
    req.n_prompt = d->n_prompt;
    req.replay = d->replay_ids;
    req.n_replay = d->n_replay;
    req.sampling.temp = d->sampling.temperature;
    req.sampling.top_k = d->sampling.top_k;
    req.sampling.top_p = d->sampling.top_p;
    req.sampling.min_p = d->sampling.min_p;
    req.sampling.repeat_penalty = d->sampling.repeat_penalty;
    req.sampling.repeat_last_n = d->sampling.repeat_last_n;
    req.sampling.seed = d->sampling.seed;
    req.max_tokens = d->max_tokens;
    req.stops = (const char *const *)d->stop;
    req.n_stops = d->n_stop;
    req.cancel = &j->cancel;
    if ((rv = generate_batch_add(s->batch, &req, on_token, on_done, j, err)) != ERR_OK) {
        j->rv = rv;
        memset(&j->res, 0, sizeof(j->res));
        snprintf(j->err, sizeof(j->err), "%s", err);
        j->ended = true;
    }
}

/* Reports every ended request (DONE with its statistics, or ERROR) after freeing its slot, so
 * orchd may dispatch again as soon as it reads the report. Main thread. */
static void
report_ends(struct serve *s)
{
    for (uint32_t i = 0; i < s->n_jobs; i++) {
        struct job *j = &s->jobs[i];
        struct proto_msg out = {0}, msg;
        char *id;

        if (j->state != JOB_RUNNING || !j->ended)
            continue;
        j->ended = false;
        msg = j->msg; /* moved out: the slot may be taken again before the report is sent */
        id = msg.u.dispatch.id;
        if (j->rv != ERR_OK) {
            log_warn("request %s failed: %s: %s", id, err_str(j->rv), j->err);
            out.type = PROTO_ERROR;
            out.u.error.code = j->rv;
            out.u.error.msg = j->err;
            out.u.error.id = id;
        } else {
            out.type = PROTO_DONE;
            out.u.done.id = id;
            out.u.done.reason = reason_of(j->res.reason);
            out.u.done.stats.prompt_tokens = msg.u.dispatch.n_prompt;
            out.u.done.stats.gen_tokens = j->res.n_gen;
            out.u.done.stats.prefill_ms = j->res.prefill_ms;
            out.u.done.stats.decode_ms = j->res.decode_ms;
        }
        pthread_mutex_lock(&s->mu);
        memset(&j->msg, 0, sizeof(j->msg));
        j->state = JOB_FREE;
        pthread_mutex_unlock(&s->mu);
        serve_send(s, &out);
        proto_msg_free(&msg);
    }
}

static int
usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "workerd serve: %s%s%s\n", msg, arg ? " " : "", arg ? arg : "");
    return CMD_EXIT_FATAL;
}

static int
serve_load(struct serve *s, const char *path, uint32_t n_threads, long want_ctx)
{
    char err[ERR_MSG_MAX];
    uint32_t n_train;
    int rv;

    if ((rv = gguf_open(&s->gguf, path, err)) != ERR_OK ||
        (rv = model_load(&s->model, s->gguf, err)) != ERR_OK ||
        (rv = tokenizer_load(&s->tok, s->gguf, err)) != ERR_OK) {
        log_error("%s: %s", path, err);
        return rv;
    }
    n_train = model_config(s->model)->n_ctx_train;
    s->n_ctx = want_ctx > 0 ? (uint32_t)want_ctx : SERVE_DEFAULT_CTX;
    if (n_train > 0 && s->n_ctx > n_train)
        s->n_ctx = n_train;
    if ((rv = generate_batch_new(&s->batch, s->model, s->tok, s->n_jobs, s->n_ctx, n_threads,
                                 err)) != ERR_OK) {
        log_error("%s: %s", path, err);
        return rv;
    }
    return ERR_OK;
}

static void
serve_unload(struct serve *s)
{
    generate_batch_free(s->batch);
    tokenizer_free(s->tok);
    model_free(s->model);
    gguf_close(s->gguf);
}

/* Waits up to SERVE_RECV_TICK_MS for a dispatch (or the quit). Lock held. */
static void
wait_tick(struct serve *s)
{
    struct timespec until;

    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += SERVE_RECV_TICK_MS * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->cv, &s->mu, &until);
}

/* The pending job dispatched first, or NULL. Lock held. */
static struct job *
next_pending(struct serve *s)
{
    struct job *first = NULL;

    for (uint32_t i = 0; i < s->n_jobs; i++)
        if (s->jobs[i].state == JOB_PENDING && (first == NULL || s->jobs[i].seq < first->seq))
            first = &s->jobs[i];
    return first;
}

/*
 * The main thread's loop. Each turn: adds every newly dispatched request to the batch (oldest
 * first; an add only queues it), then runs one step (every active request's next token, and a
 * chunk of the prompts still prefilling), then reports the requests that ended; sleeps on the
 * condition variable when there is nothing to do. A joining prompt delays the running requests
 * by one chunk per step, never by its whole prefill.
 */
static void
serve_loop(struct serve *s)
{
    char err[ERR_MSG_MAX];
    struct job *j;
    int rv;

    pthread_mutex_lock(&s->mu);
    while (!atomic_load(&serve_quit)) {
        if ((j = next_pending(s)) == NULL && generate_batch_active(s->batch) == 0) {
            wait_tick(s);
            continue;
        }
        for (; j != NULL; j = next_pending(s)) {
            j->state = JOB_RUNNING;
            pthread_mutex_unlock(&s->mu);
            job_add(s, j);
            pthread_mutex_lock(&s->mu);
        }
        pthread_mutex_unlock(&s->mu);
        if (generate_batch_active(s->batch) > 0 &&
            (rv = generate_batch_step(s->batch, err)) != ERR_OK)
            log_error("step failed: %s: %s", err_str(rv), err);
        report_ends(s);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
}

int
cmd_serve(int argc, char **argv)
{
    struct serve s = {0};
    const char *model = NULL;
    long long threads = 1, n_ctx = 0, slot = 0, slots = SERVE_DEFAULT_SLOTS, link_fd = -1;
    struct sigaction sa = {0};
    pthread_t link;
    char name[32], err[ERR_MSG_MAX];
    int status = CMD_EXIT_ERROR;

    /* every option takes one value: step over both */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

        if (v == NULL)
            return usage_error("missing value or unknown option", a);
        if (strcmp(a, "-m") == 0)
            model = v;
        else if (strcmp(a, "--link-fd") == 0) {
            if (opt_int(a, v, 0, 1 << 20, &link_fd, err) != ERR_OK)
                return usage_error(err, NULL);
        } else if (strcmp(a, "--slot") == 0) {
            if (opt_int(a, v, 0, 1023, &slot, err) != ERR_OK)
                return usage_error(err, NULL);
        } else if (strcmp(a, "--slots") == 0) {
            if (opt_int(a, v, 1, PROTO_MAX_BATCH, &slots, err) != ERR_OK)
                return usage_error(err, NULL);
        } else if (strcmp(a, "-t") == 0) {
            if (opt_int(a, v, 1, 256, &threads, err) != ERR_OK)
                return usage_error(err, NULL);
        } else if (strcmp(a, "--ctx") == 0) {
            if (opt_int(a, v, 16, 1 << 20, &n_ctx, err) != ERR_OK)
                return usage_error(err, NULL);
        } else
            return usage_error("unknown option", a);
    }
    if (model == NULL || link_fd < 0)
        return usage_error("needs -m MODEL and --link-fd FD", NULL);
    snprintf(name, sizeof(name), "workerd.%lld", slot);
    log_init(name, LOG_INFO);
    s.parent = getppid();
    s.link = (int)link_fd;
    s.slot = (int)slot;
    s.n_jobs = (uint32_t)slots;
    s.jobs = calloc(s.n_jobs, sizeof(*s.jobs));
    if (s.jobs == NULL) {
        log_error("out of memory");
        return CMD_EXIT_ERROR;
    }
    for (uint32_t i = 0; i < s.n_jobs; i++)
        s.jobs[i].s = &s;

    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (serve_load(&s, model, (uint32_t)threads, n_ctx) != ERR_OK) {
        status = CMD_EXIT_FATAL;
        goto out;
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_mutex_init(&s.send_mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    if (pthread_create(&link, NULL, link_thread, &s) != 0) {
        log_error("pthread_create failed");
        goto out_sync;
    }
    log_info("serving %s on link fd %d (n_ctx %u, %lld threads, %u request slots)", model, s.link,
             s.n_ctx, threads, s.n_jobs);
    serve_loop(&s);
    pthread_join(link, NULL);
    log_info("stopped");
    status = CMD_EXIT_OK;
out_sync:
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.send_mu);
    pthread_mutex_destroy(&s.mu);
out:
    close(s.link);
    link_buf_free(&s.in);
    link_buf_free(&s.out);
    for (uint32_t i = 0; i < s.n_jobs; i++)
        proto_msg_free(&s.jobs[i].msg);
    free(s.jobs);
    serve_unload(&s);
    return status;
}
