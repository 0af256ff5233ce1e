/*
 * cmd_serve.c: `workerd serve`, the worker process orchd forks into a slot. It maps the model
 * (shared, read-only), dials orchd's link for its slot (an NNG pair1 socket over ipc://), answers
 * orchd's probe with READY once the model is loaded, then runs dispatched requests one at a time
 * through the engine's generation loop (generate.h), sending each token as it is produced, then
 * DONE or ERROR.
 *
 * Two threads: the link thread receives (probe, dispatch, cancel), sends heartbeats carrying a
 * progress counter, and watches for orchd's death; the main thread generates. Cancel sets the
 * running request's flag, which the engine polls per prefill chunk, per layer and per token, so
 * work stops within ~100 ms. Exit status: 0 after SIGTERM or when orchd went away, 2 (fatal, not
 * restarted) when the model or the options are bad, 1 on other errors.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/opt.h"
#include "common/log.h"
#include "proto/proto.h"
#include "proto/sock.h"
#include "workerd/cmd.h"
#include "workerd/engine/generate.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"
#include "workerd/engine/tokenizer.h"

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>

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

struct serve {
    nng_socket sock;
    pid_t parent;
    int slot;
    /* the engine */
    struct gguf *gguf;
    struct model *model;
    struct tokenizer *tok;
    struct context *ctx;
    uint32_t n_ctx;
    /* the request handed from the link thread to the main thread */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct proto_msg job; /* a decoded DISPATCH, owned here while has_job or busy */
    bool has_job;
    bool busy;
    atomic_bool cancel;          /* the running request's cancel flag */
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
    rv = nng_send(s->sock, buf, len, 0);
    free(buf);
    if (rv != 0) {
        log_error("nng_send(%s) failed: %s", proto_type_name(m->type), nng_strerror(rv));
        atomic_store(&s->failed_send, true);
        return false;
    }
    return true;
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
        out.u.ready.max_batch = 1;
        serve_send(s, &out);
        break;
    case PROTO_DISPATCH:
        pthread_mutex_lock(&s->mu);
        if (s->busy || s->has_job) {
            pthread_mutex_unlock(&s->mu);
            send_error(s, m->u.dispatch.id, ERR_BUSY, "worker is already running a request");
            break;
        }
        s->job = *m; /* take ownership of the decoded message */
        memset(m, 0, sizeof(*m));
        s->has_job = true;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        break;
    case PROTO_CANCEL:
        pthread_mutex_lock(&s->mu);
        if ((s->busy || s->has_job) && strcmp(s->job.u.dispatch.id, m->u.ref.id) == 0)
            atomic_store(&s->cancel, true);
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
        size_t len;
        void *buf;
        int rv;

        if (getppid() != s->parent || atomic_load(&s->failed_send)) {
            log_info("orchd is gone; exiting");
            atomic_store(&serve_quit, true);
            break;
        }
        if (now >= next_beat) {
            struct proto_msg hb = {.type = PROTO_HEARTBEAT};

            pthread_mutex_lock(&s->mu);
            hb.u.heartbeat.active = (s->busy || s->has_job) ? 1 : 0;
            pthread_mutex_unlock(&s->mu);
            hb.u.heartbeat.tokens = atomic_load(&s->tokens);
            serve_send(s, &hb);
            next_beat = now + SERVE_HEARTBEAT_MS;
        }
        rv = nng_recv(s->sock, &buf, &len, NNG_FLAG_ALLOC);
        if (rv == NNG_ETIMEDOUT)
            continue;
        if (rv != 0) {
            log_error("nng_recv failed: %s", nng_strerror(rv));
            atomic_store(&serve_quit, true);
            break;
        }
        rv = proto_decode(buf, len, PROTO_LINK_WORKER_CMD, &m, err);
        nng_free(buf, len);
        if (rv != ERR_OK) {
            log_error("bad message from orchd: %s: %s", err_str(rv), err);
            continue;
        }
        handle_cmd(s, &m);
        proto_msg_free(&m);
    }
    pthread_mutex_lock(&s->mu);
    atomic_store(&s->cancel, true);
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

struct token_sink {
    struct serve *s;
    const char *id;
};

static int
on_token(void *user, const struct generate_token *tok)
{
    struct token_sink *sink = user;
    struct proto_msg m = {.type = PROTO_TOKENS};
    int32_t id = tok->id;

    m.u.tokens.id = (char *)sink->id;
    m.u.tokens.index = tok->index;
    m.u.tokens.ids = &id;
    m.u.tokens.n_ids = 1;
    m.u.tokens.text = (char *)tok->text;
    m.u.tokens.text_len = tok->n_text;
    atomic_fetch_add(&sink->s->tokens, 1);
    if (atomic_load(&sink->s->cancel))
        return 1;
    return serve_send(sink->s, &m) ? 0 : 1;
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

/* How a request ended: what run_job() leaves for the main loop to report once the worker is free.
 */
struct job_end {
    char id[PROTO_MAX_ID_BYTES + 1];
    int rv; /* ERR_OK: done with res; else an error with err */
    struct generate_result res;
    uint32_t n_prompt;
    char err[ERR_MSG_MAX];
};

/* Runs one dispatched request to its end; tokens go out as they come, the end is reported later. */
static void
run_job(struct serve *s, const struct proto_dispatch *d, struct job_end *end)
{
    struct generate_request req = {0};
    struct token_sink sink = {s, d->id};

    snprintf(end->id, sizeof(end->id), "%s", d->id);
    end->n_prompt = d->n_prompt;
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
    req.cancel = &s->cancel;
    context_truncate(s->ctx, 0, 0);
    end->rv = generate_run(s->model, s->ctx, s->tok, &req, on_token, &sink, &end->res, end->err);
}

/* Reports a request's end: DONE with its statistics, or ERROR. Called once the worker is free, so
 * orchd may dispatch again as soon as it reads this. */
static void
report_end(struct serve *s, const struct job_end *end)
{
    struct proto_msg done = {.type = PROTO_DONE};

    if (end->rv != ERR_OK) {
        log_warn("request %s failed: %s: %s", end->id, err_str(end->rv), end->err);
        send_error(s, end->id, end->rv, end->err);
        return;
    }
    done.u.done.id = (char *)end->id;
    done.u.done.reason = reason_of(end->res.reason);
    done.u.done.stats.prompt_tokens = end->n_prompt;
    done.u.done.stats.gen_tokens = end->res.n_gen;
    done.u.done.stats.prefill_ms = end->res.prefill_ms;
    done.u.done.stats.decode_ms = end->res.decode_ms;
    serve_send(s, &done);
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
    if ((rv = context_new(&s->ctx, s->model, 1, s->n_ctx, n_threads, err)) != ERR_OK) {
        log_error("%s: %s", path, err);
        return rv;
    }
    return ERR_OK;
}

static void
serve_unload(struct serve *s)
{
    context_free(s->ctx);
    tokenizer_free(s->tok);
    model_free(s->model);
    gguf_close(s->gguf);
}

static int
serve_link(struct serve *s, const char *url)
{
    int rv;

    if ((rv = nng_pair1_open(&s->sock)) != 0 ||
        (rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MSG_BYTES)) != 0 ||
        (rv = nng_socket_set_ms(s->sock, NNG_OPT_RECVTIMEO, SERVE_RECV_TICK_MS)) != 0 ||
        (rv = nng_socket_set_ms(s->sock, NNG_OPT_SENDTIMEO, SERVE_SEND_TIMEOUT_MS)) != 0) {
        log_error("cannot open the link socket: %s", nng_strerror(rv));
        return ERR_IO;
    }
    /* non-blocking: NNG keeps redialing until orchd's listener answers */
    if ((rv = nng_dial(s->sock, url, NULL, NNG_FLAG_NONBLOCK)) != 0) {
        log_error("nng_dial(%s) failed: %s", url, nng_strerror(rv));
        sock_close(s->sock);
        return ERR_IO;
    }
    return ERR_OK;
}

int
cmd_serve(int argc, char **argv)
{
    struct serve s = {0};
    const char *model = NULL, *url = NULL;
    long long threads = 1, n_ctx = 0, slot = 0;
    struct sigaction sa = {0};
    pthread_t link;
    char name[32], err[ERR_MSG_MAX];

    /* every option takes one value: step over both */
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i];
        const char *v = (i + 1 < argc) ? argv[i + 1] : NULL;

        if (v == NULL)
            return usage_error("missing value or unknown option", a);
        if (strcmp(a, "-m") == 0)
            model = v;
        else if (strcmp(a, "--link") == 0)
            url = v;
        else if (strcmp(a, "--slot") == 0) {
            if (opt_int(a, v, 0, 1023, &slot, err) != ERR_OK)
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
    if (model == NULL || url == NULL)
        return usage_error("needs -m MODEL and --link URL", NULL);
    snprintf(name, sizeof(name), "workerd.%lld", slot);
    log_init(name, LOG_INFO);
    s.parent = getppid();
    s.slot = (int)slot;

    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (serve_load(&s, model, (uint32_t)threads, n_ctx) != ERR_OK) {
        serve_unload(&s);
        return CMD_EXIT_FATAL;
    }
    if (serve_link(&s, url) != ERR_OK) {
        serve_unload(&s);
        return CMD_EXIT_ERROR;
    }
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    if (pthread_create(&link, NULL, link_thread, &s) != 0) {
        log_error("pthread_create failed");
        sock_close(s.sock);
        serve_unload(&s);
        return CMD_EXIT_ERROR;
    }
    log_info("serving %s on %s (n_ctx %u, %lld threads)", model, url, s.n_ctx, threads);

    pthread_mutex_lock(&s.mu);
    while (!atomic_load(&serve_quit)) {
        struct job_end end;
        struct timespec until;

        if (!s.has_job) {
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += SERVE_RECV_TICK_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&s.cv, &s.mu, &until);
            continue;
        }
        s.has_job = false;
        s.busy = true;
        atomic_store(&s.cancel, false);
        pthread_mutex_unlock(&s.mu);
        run_job(&s, &s.job.u.dispatch, &end);
        pthread_mutex_lock(&s.mu);
        s.busy = false;
        proto_msg_free(&s.job);
        pthread_mutex_unlock(&s.mu);
        report_end(&s, &end);
        pthread_mutex_lock(&s.mu);
    }
    pthread_mutex_unlock(&s.mu);

    pthread_join(link, NULL);
    sock_close(s.sock);
    proto_msg_free(&s.job);
    pthread_cond_destroy(&s.cv);
    pthread_mutex_destroy(&s.mu);
    serve_unload(&s);
    log_info("stopped");
    return CMD_EXIT_OK;
}
