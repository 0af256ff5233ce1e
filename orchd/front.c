/*
 * front.c: see front.h. Each context is a small state machine driven by its aio callback, as in
 * NNG's demo/async/server.c: RECV (waiting for a request) -> handle -> SEND (reply going out) ->
 * RECV, or RECV -> PARKED (a long poll waiting in the scheduler) -> SEND when the scheduler wakes
 * it. Replies are encoded with proto_encode(); a wake runs with the scheduler's lock held and only
 * encodes and starts an asynchronous send.
 */
#include "orchd/front.h"

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "orchd/config.h"
#include "proto/sock.h"
#include "workerd/engine/chat.h"
#include "workerd/engine/tokenizer.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum fctx_state { FCTX_RECV, FCTX_SEND, FCTX_PARKED };

struct fctx {
    struct sched_waiter w; /* first: a waiter is its context */
    struct front *f;
    nng_ctx ctx;
    nng_aio *aio;
    enum fctx_state state;
    bool ctx_open;
};

struct front {
    struct front_config cfg;
    nng_socket socks[FRONT_MAX_URLS];
    int n_socks;
    struct fctx *ctxs;
    int n_ctxs;
    atomic_bool closing;
};

/* Encodes m and starts sending it on c's context. */
static void
send_msg(struct fctx *c, const struct proto_msg *m)
{
    char err[ERR_MSG_MAX];
    void *buf = NULL;
    size_t len = 0;
    nng_msg *msg;
    int rv;

    if (proto_encode(m, &buf, &len, err) != ERR_OK) {
        struct proto_msg e = {.type = PROTO_ERROR};

        log_error("cannot encode a %s reply: %s", proto_type_name(m->type), err);
        e.u.error.code = ERR_INTERNAL;
        e.u.error.msg = err;
        if (proto_encode(&e, &buf, &len, err) != ERR_OK) {
            c->state = FCTX_RECV;
            nng_ctx_recv(c->ctx, c->aio);
            return;
        }
    }
    if ((rv = nng_msg_alloc(&msg, len)) != 0) {
        free(buf);
        log_error("nng_msg_alloc(%zu) failed: %s", len, nng_strerror(rv));
        c->state = FCTX_RECV;
        nng_ctx_recv(c->ctx, c->aio);
        return;
    }
    memcpy(nng_msg_body(msg), buf, len);
    free(buf);
    nng_aio_set_msg(c->aio, msg);
    c->state = FCTX_SEND;
    nng_ctx_send(c->ctx, c->aio);
}

static void
send_error(struct fctx *c, int code, const char *msg, const char *id)
{
    struct proto_msg m = {.type = PROTO_ERROR};

    m.u.error.code = code;
    m.u.error.msg = (char *)msg;
    m.u.error.id = (char *)id;
    send_msg(c, &m);
}

/* The scheduler's answer to a poll: at once, or later from another thread (lock held). */
static void
poll_wake(struct sched_waiter *w, const struct proto_frames *fr)
{
    struct fctx *c = (struct fctx *)w;
    struct proto_msg m = {.type = PROTO_FRAMES};

    if (atomic_load(&c->f->closing))
        return;
    m.u.frames = *fr;
    send_msg(c, &m);
}

static void
status_reply(void *ud, const struct proto_status_info *st)
{
    struct proto_msg m = {.type = PROTO_STATUS_INFO};

    m.u.status = *st;
    send_msg(ud, &m);
}

static void
workers_reply(void *ud, const struct proto_workers_info *wi)
{
    struct proto_msg m = {.type = PROTO_WORKERS_INFO};

    m.u.workers = *wi;
    send_msg(ud, &m);
}

/*
 * The prompt text of a submit: its prompt, or its chat messages rendered with the model's template
 * and the opening of the assistant's turn (*rendered then owns it; the markers in it are special
 * tokens to parse).
 */
static int
prompt_text(const struct front *f, const struct proto_submit *sub, const char **text,
            char **rendered, size_t *len, char *err)
{
    struct chat_msg *msgs;
    int rc;

    *rendered = NULL;
    if (sub->prompt != NULL) {
        *text = sub->prompt;
        *len = strlen(sub->prompt);
        return ERR_OK;
    }
    msgs = calloc(sub->n_messages, sizeof(*msgs));
    if (msgs == NULL)
        return err_set(err, ERR_NOMEM, "messages: out of memory");
    for (uint32_t i = 0; i < sub->n_messages; i++)
        msgs[i] = (struct chat_msg){sub->messages[i].role, sub->messages[i].content};
    rc = chat_render(f->cfg.chat, msgs, sub->n_messages, true, rendered, len, err);
    free(msgs);
    *text = *rendered;
    return rc;
}

/* The prompt's ids (malloc'ed), as llama.cpp tokenizes a prompt: BOS as the model asks, special
 * tokens parsed only in a rendered chat. */
static int
tokenize_prompt(const struct front *f, const struct proto_submit *sub, int32_t **ids, uint32_t *n,
                char *err)
{
    const char *text = NULL;
    char *rendered = NULL;
    size_t len = 0, max, got = 0;
    char detail[ERR_MSG_MAX];
    int rc;

    *ids = NULL;
    if ((rc = prompt_text(f, sub, &text, &rendered, &len, err)) != ERR_OK)
        return rc;
    max = tokenizer_max_tokens(f->cfg.tok, len);
    if (max > PROTO_MAX_IDS)
        max = PROTO_MAX_IDS;
    *ids = malloc(max * sizeof(**ids));
    if (*ids == NULL) {
        free(rendered);
        return err_set(err, ERR_NOMEM, "prompt: out of memory tokenizing %zu bytes", len);
    }
    rc = tokenizer_encode(f->cfg.tok, text, len, tokenizer_add_bos(f->cfg.tok), rendered != NULL,
                          *ids, max, &got, detail);
    free(rendered);
    if (rc == ERR_OK && got == 0)
        rc = err_set(detail, ERR_BAD_REQUEST, "the prompt gives no tokens");
    if (rc != ERR_OK) {
        free(*ids);
        *ids = NULL;
        return err_set(err, rc, "%s: %s", sub->prompt != NULL ? "prompt" : "messages", detail);
    }
    *n = (uint32_t)got;
    return ERR_OK;
}

static void
handle_submit(struct fctx *c, int tenant, const struct proto_submit *sub)
{
    struct sched_submit in = {0};
    struct sched_admit a;
    struct proto_msg m = {0};
    char err[ERR_MSG_MAX];
    int32_t *ids;
    uint32_t n = 0;
    int rc;

    rc = tokenize_prompt(c->f, sub, &ids, &n, err);
    if (rc != ERR_OK) {
        send_error(c, rc, err, NULL);
        return;
    }
    in.prompt_ids = ids;
    in.n_prompt = n;
    in.sampling = sub->sampling;
    in.max_tokens = sub->max_tokens;
    in.stop = sub->stop;
    in.n_stop = sub->n_stop;
    in.priority = sub->priority;
    in.client_id = sub->client_id;
    in.tenant = tenant;
    rc = sched_submit(c->f->cfg.sched, &in, clock_now_ms(), &a, err);
    free(ids);
    if (rc == ERR_BUSY) {
        m.type = PROTO_BUSY;
        m.u.busy.retry_after_ms = a.retry_after_ms;
        m.u.busy.msg = err;
        send_msg(c, &m);
    } else if (rc != ERR_OK) {
        send_error(c, rc, err, NULL);
    } else {
        m.type = PROTO_SUBMITTED;
        m.u.submitted.id = a.id;
        m.u.submitted.position = a.position;
        send_msg(c, &m);
    }
}

/* Answers one decoded request of tenant (or parks it: a long poll). */
static void
handle(struct fctx *c, int tenant, const struct proto_msg *req)
{
    struct sched *s = c->f->cfg.sched;
    struct proto_msg m = {0};
    char err[ERR_MSG_MAX];
    int rc;

    switch (req->type) {
    case PROTO_SUBMIT:
        handle_submit(c, tenant, &req->u.submit);
        break;
    case PROTO_POLL:
        c->state = FCTX_PARKED; /* the wake (maybe at once, on this thread) sends */
        rc = sched_poll(s, tenant, req->u.poll.id, req->u.poll.from, req->u.poll.wait_ms,
                        clock_now_ms(), &c->w, err);
        if (rc != ERR_OK)
            send_error(c, rc, err, req->u.poll.id);
        break;
    case PROTO_CANCEL:
        rc = sched_cancel(s, tenant, req->u.ref.id, clock_now_ms(), err);
        if (rc != ERR_OK) {
            send_error(c, rc, err, req->u.ref.id);
            break;
        }
        m.type = PROTO_CANCEL_OK;
        m.u.ref.id = req->u.ref.id;
        send_msg(c, &m);
        break;
    case PROTO_STATUS:
        sched_status(s, clock_now_ms(), status_reply, c);
        break;
    case PROTO_WORKERS:
        sched_workers(s, tenant, workers_reply, c);
        break;
    case PROTO_HEALTH:
        m.type = PROTO_HEALTH_INFO;
        sched_health(s, &m.u.health);
        send_msg(c, &m);
        break;
    default: /* the decoder admits client requests only */
        send_error(c, ERR_PROTOCOL, "not a request", NULL);
        break;
    }
}

static void
fctx_cb(void *arg)
{
    struct fctx *c = arg;
    struct proto_msg req;
    char err[ERR_MSG_MAX];
    nng_msg *msg;
    int tenant, rv = nng_aio_result(c->aio);

    switch (c->state) {
    case FCTX_SEND:
        if (rv != 0) {
            nng_msg_free(nng_aio_get_msg(c->aio));
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
                return;
            log_warn("reply not sent: %s", nng_strerror(rv));
        }
        c->state = FCTX_RECV;
        nng_ctx_recv(c->ctx, c->aio);
        break;
    case FCTX_RECV:
        if (rv != 0) {
            if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
                return;
            log_warn("receive failed: %s", nng_strerror(rv));
            nng_ctx_recv(c->ctx, c->aio);
            return;
        }
        msg = nng_aio_get_msg(c->aio);
        rv = proto_decode(nng_msg_body(msg), nng_msg_len(msg), PROTO_LINK_CLIENT_REQ, &req, err);
        nng_msg_free(msg);
        if (rv != ERR_OK) {
            log_debug("bad request: %s: %s", err_str(rv), err);
            send_error(c, rv, err, NULL);
            return;
        }
        /* every message of a client is authenticated before any work */
        if ((tenant = config_auth(c->f->cfg.conf, req.key)) < 0)
            send_error(c, ERR_UNAUTHORIZED,
                       req.key == NULL ? "a tenant key is required" : "unknown tenant key", NULL);
        else
            handle(c, tenant, &req);
        proto_msg_free(&req);
        break;
    case FCTX_PARKED:
        break; /* no operation is pending while parked */
    }
}

/* Listens on url with sock: tls+tcp:// with the configured certificate and key, else plain. */
static int
listen_url(const struct front_config *cfg, nng_socket sock, const char *url, char *err)
{
    nng_listener l;
    nng_tls_config *tls;
    int rv;

    if (strncmp(url, "tls+", 4) != 0) {
        if ((rv = nng_listen(sock, url, NULL, 0)) != 0)
            return err_set(err, ERR_IO, "listen on %s: %s", url, nng_strerror(rv));
        return ERR_OK;
    }
    if (cfg->tls_cert_key_file == NULL)
        return err_set(err, ERR_BAD_REQUEST,
                       "%s needs a certificate: cert_key_file in the configuration's [tls]", url);
    if ((rv = nng_listener_create(&l, sock, url)) != 0)
        return err_set(err, ERR_IO, "listen on %s: %s", url, nng_strerror(rv));
    if ((rv = nng_tls_config_alloc(&tls, NNG_TLS_MODE_SERVER)) != 0) {
        nng_listener_close(l);
        return err_set(err, ERR_NOMEM, "TLS configuration: %s", nng_strerror(rv));
    }
    rv = nng_tls_config_cert_key_file(tls, cfg->tls_cert_key_file, NULL);
    if (rv != 0) {
        nng_tls_config_free(tls);
        nng_listener_close(l);
        return err_set(err, ERR_BAD_REQUEST, "certificate and key %s: %s", cfg->tls_cert_key_file,
                       nng_strerror(rv));
    }
    rv = nng_listener_set_ptr(l, NNG_OPT_TLS_CONFIG, tls);
    nng_tls_config_free(tls); /* the listener holds its own reference */
    if (rv != 0 || (rv = nng_listener_start(l, 0)) != 0) {
        nng_listener_close(l);
        return err_set(err, ERR_IO, "listen on %s: %s", url, nng_strerror(rv));
    }
    return ERR_OK;
}

void
front_close(struct front *f)
{
    if (f == NULL)
        return;
    atomic_store(&f->closing, true);
    for (int i = 0; i < f->n_ctxs; i++)
        if (f->ctxs[i].aio != NULL)
            nng_aio_stop(f->ctxs[i].aio);
    /* no callback runs now; a poll parked meanwhile is withdrawn here */
    for (int i = 0; i < f->n_ctxs; i++)
        sched_poll_abandon(f->cfg.sched, &f->ctxs[i].w);
    for (int i = 0; i < f->n_ctxs; i++) {
        if (f->ctxs[i].ctx_open)
            nng_ctx_close(f->ctxs[i].ctx);
        nng_aio_free(f->ctxs[i].aio);
    }
    for (int i = 0; i < f->n_socks; i++)
        sock_close(f->socks[i]);
    free(f->ctxs);
    free(f);
}

int
front_open(struct front **out, const struct front_config *cfg, char *err)
{
    struct front *f;
    int rv, rc = ERR_OK;

    *out = NULL;
    if (cfg->n_urls < 1 || cfg->n_urls > FRONT_MAX_URLS || cfg->contexts < 1)
        return err_set(err, ERR_BAD_REQUEST, "front: 1 to %d URLs and at least one context",
                       FRONT_MAX_URLS);
    f = calloc(1, sizeof(*f));
    if (f == NULL ||
        (f->ctxs = calloc((size_t)cfg->n_urls * cfg->contexts, sizeof(*f->ctxs))) == NULL) {
        free(f);
        return err_set(err, ERR_NOMEM, "front: out of memory");
    }
    f->cfg = *cfg;
    atomic_init(&f->closing, false);
    for (int u = 0; u < cfg->n_urls; u++) {
        nng_socket *sock = &f->socks[u];

        if ((rv = nng_rep0_open(sock)) != 0) {
            rc = err_set(err, ERR_IO, "rep socket for %s: %s", cfg->urls[u], nng_strerror(rv));
            goto fail;
        }
        f->n_socks++;
        if ((rv = nng_socket_set_size(*sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MSG_BYTES)) != 0) {
            rc = err_set(err, ERR_IO, "receive limit on %s: %s", cfg->urls[u], nng_strerror(rv));
            goto fail;
        }
        if ((rc = listen_url(cfg, *sock, cfg->urls[u], err)) != ERR_OK)
            goto fail;
        for (int i = 0; i < cfg->contexts; i++) {
            struct fctx *c = &f->ctxs[f->n_ctxs];

            c->f = f;
            c->w.wake = poll_wake;
            if ((rv = nng_aio_alloc(&c->aio, fctx_cb, c)) != 0) {
                rc = err_set(err, ERR_NOMEM, "nng_aio_alloc: %s", nng_strerror(rv));
                goto fail;
            }
            f->n_ctxs++;
            if ((rv = nng_ctx_open(&c->ctx, *sock)) != 0) {
                rc = err_set(err, ERR_IO, "context on %s: %s", cfg->urls[u], nng_strerror(rv));
                goto fail;
            }
            c->ctx_open = true;
        }
        log_info("listening on %s", cfg->urls[u]);
    }
    for (int i = 0; i < f->n_ctxs; i++) {
        f->ctxs[i].state = FCTX_RECV;
        nng_ctx_recv(f->ctxs[i].ctx, f->ctxs[i].aio);
    }
    *out = f;
    return ERR_OK;
fail:
    front_close(f);
    return rc;
}
