/*
 * client.c: the client library of client.h. Each call opens an NNG context on the client's req
 * socket, sends one encoded message, waits for the reply with an aio bounded by the call's
 * timeout, and decodes it strictly. The re-send time of a call is its whole timeout, so NNG
 * re-sends only when the connection drops under a pending request (to the redialed server);
 * submits carry a client_id and polls a sequence number, so a re-send is harmless.
 */
#include "proto/client.h"

#include "common/err.h"
#include "proto/sock.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define CLIENT_DEFAULT_TIMEOUT_MS 10000

struct client {
    nng_socket sock;
    nng_dialer dialer;
    nng_tls_config *tls;
    char *key;
    uint32_t timeout_ms;
    char url[256];
};

struct client_stream {
    struct client *c;
    char id[PROTO_MAX_ID_BYTES + 1];
    uint64_t seq;           /* sequence number of the next frame to return */
    struct proto_msg reply; /* the last frames reply */
    uint32_t next;          /* index in reply of the next frame to return */
    bool ended;
};

/* ---- connecting ---- */

static int
nng_fail(char *err, int code, const char *what, const char *url, int rv)
{
    return err_set(err, code, "%s %s: %s", what, url, nng_strerror(rv));
}

static int
setup_tls(struct client *c, const char *url, const char *ca_file, char *err)
{
    int rv;

    if (ca_file == NULL)
        return err_set(err, ERR_BAD_REQUEST, "%s: tls+tcp:// needs a CA file", url);
    if ((rv = nng_tls_config_alloc(&c->tls, NNG_TLS_MODE_CLIENT)) != 0)
        return nng_fail(err, ERR_NOMEM, "TLS configuration for", url, rv);
    if ((rv = nng_tls_config_ca_file(c->tls, ca_file)) != 0)
        return err_set(err, ERR_BAD_REQUEST, "CA file %s: %s", ca_file, nng_strerror(rv));
    if ((rv = nng_tls_config_auth_mode(c->tls, NNG_TLS_AUTH_MODE_REQUIRED)) != 0 ||
        (rv = nng_dialer_set_ptr(c->dialer, NNG_OPT_TLS_CONFIG, c->tls)) != 0)
        return nng_fail(err, ERR_IO, "TLS setup for", url, rv);
    return ERR_OK;
}

int
client_open(struct client **out, const char *url, const struct client_opts *opts, char *err)
{
    static const struct client_opts defaults = {0};
    struct client *c;
    int rv, rc;

    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (url == NULL || strlen(url) >= sizeof(c->url))
        return err_set(err, ERR_BAD_REQUEST, "bad server URL");
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return err_set(err, ERR_NOMEM, "out of memory opening a client");
    snprintf(c->url, sizeof(c->url), "%s", url);
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : CLIENT_DEFAULT_TIMEOUT_MS;
    if (opts->key != NULL && (c->key = strdup(opts->key)) == NULL) {
        free(c);
        return err_set(err, ERR_NOMEM, "out of memory opening a client");
    }
    if ((rv = nng_req0_open(&c->sock)) != 0) {
        free(c->key);
        free(c);
        return nng_fail(err, ERR_IO, "cannot open a req socket for", url, rv);
    }
    if ((rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MSG_BYTES)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT, 100)) != 0 ||
        (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT, 2000)) != 0) {
        rc = nng_fail(err, ERR_IO, "cannot set socket options for", url, rv);
        goto fail;
    }
    if ((rv = nng_dialer_create(&c->dialer, c->sock, url)) != 0) {
        rc = nng_fail(err, rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP ? ERR_BAD_REQUEST : ERR_IO,
                      "bad server URL", url, rv);
        goto fail;
    }
    if (strncmp(url, "tls+", 4) == 0 && (rc = setup_tls(c, url, opts->ca_file, err)) != ERR_OK)
        goto fail;
    if ((rv = nng_dialer_start(c->dialer, opts->lazy ? NNG_FLAG_NONBLOCK : 0)) != 0) {
        rc = nng_fail(err, ERR_IO, "cannot connect to", url, rv);
        goto fail;
    }
    *out = c;
    return ERR_OK;
fail:
    client_close(c);
    return rc;
}

void
client_close(struct client *c)
{
    if (c == NULL)
        return;
    sock_close(c->sock);
    if (c->tls != NULL)
        nng_tls_config_free(c->tls);
    free(c->key);
    free(c);
}

/* ---- one request, one reply ---- */

/*
 * Sends req (with the client's key) and waits up to wait_ms + the timeout for the reply, which
 * must be of type want (or busy/error, turned into their codes). On ERR_OK *reply holds it.
 */
static int
call(struct client *c, struct proto_msg *req, uint32_t wait_ms, enum proto_type want,
     struct proto_msg *reply, uint32_t *retry_after_ms, char *err)
{
    nng_ctx ctx;
    nng_aio *aio = NULL;
    nng_msg *msg = NULL;
    void *buf = NULL;
    size_t len;
    nng_duration total = (nng_duration)(wait_ms + c->timeout_ms);
    int rv, rc;

    memset(reply, 0, sizeof(*reply));
    req->key = c->key;
    if ((rc = proto_encode(req, &buf, &len, err)) != ERR_OK)
        return rc;
    if ((rv = nng_msg_alloc(&msg, 0)) != 0 || (rv = nng_msg_append(msg, buf, len)) != 0) {
        free(buf);
        nng_msg_free(msg);
        return err_set(err, ERR_NOMEM, "out of memory sending a %s", proto_type_name(req->type));
    }
    free(buf);
    if ((rv = nng_aio_alloc(&aio, NULL, NULL)) != 0) {
        nng_msg_free(msg);
        return err_set(err, ERR_NOMEM, "out of memory sending a %s", proto_type_name(req->type));
    }
    if ((rv = nng_ctx_open(&ctx, c->sock)) != 0) {
        nng_msg_free(msg);
        nng_aio_free(aio);
        return nng_fail(err, ERR_IO, "cannot use the socket to", c->url, rv);
    }
    nng_ctx_set_ms(ctx, NNG_OPT_REQ_RESENDTIME, total);
    nng_aio_set_timeout(aio, (nng_duration)c->timeout_ms);
    nng_aio_set_msg(aio, msg);
    nng_ctx_send(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        nng_msg_free(nng_aio_get_msg(aio));
        rc = rv == NNG_ETIMEDOUT ? err_set(err, ERR_TIMEOUT, "%s: no connection within %u ms",
                                           c->url, c->timeout_ms)
                                 : nng_fail(err, ERR_IO, "cannot send to", c->url, rv);
        goto done;
    }
    nng_aio_set_timeout(aio, total);
    nng_ctx_recv(ctx, aio);
    nng_aio_wait(aio);
    if ((rv = nng_aio_result(aio)) != 0) {
        rc = rv == NNG_ETIMEDOUT
                 ? err_set(err, ERR_TIMEOUT, "%s: no reply within %d ms", c->url, (int)total)
                 : nng_fail(err, ERR_IO, "no reply from", c->url, rv);
        goto done;
    }
    msg = nng_aio_get_msg(aio);
    rc = proto_decode(nng_msg_body(msg), nng_msg_len(msg), PROTO_LINK_CLIENT_REP, reply, err);
    nng_msg_free(msg);
    if (rc != ERR_OK) {
        char detail[ERR_MSG_MAX];

        snprintf(detail, sizeof(detail), "%s", err);
        rc = err_set(err, ERR_PROTOCOL, "bad reply from %s: %s", c->url, detail);
        goto done;
    }
    if (reply->type == PROTO_ERROR) {
        rc = err_set(err, reply->u.error.code, "%s", reply->u.error.msg);
        proto_msg_free(reply);
    } else if (reply->type == PROTO_BUSY) {
        if (retry_after_ms != NULL)
            *retry_after_ms = reply->u.busy.retry_after_ms;
        rc = err_set(err, ERR_BUSY, "%s (retry after %u ms)", reply->u.busy.msg,
                     reply->u.busy.retry_after_ms);
        proto_msg_free(reply);
    } else if (reply->type != want) {
        rc = err_set(err, ERR_PROTOCOL, "%s answered a %s with a %s", c->url,
                     proto_type_name(req->type), proto_type_name(reply->type));
        proto_msg_free(reply);
    }
done:
    nng_ctx_close(ctx);
    nng_aio_free(aio);
    return rc;
}

/* ---- submit and frames ---- */

/* A random client_id: "c-" and 16 hex digits. */
static void
random_client_id(char *buf, size_t size)
{
    uint64_t r;

    if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec ^ (uintptr_t)buf;
    }
    snprintf(buf, size, "c-%016llx", (unsigned long long)r);
}

int
client_submit(struct client *c, const struct proto_submit *s, struct client_submitted *out,
              char *err)
{
    struct proto_msg req, reply;
    char cid[24];
    int rc;

    memset(out, 0, sizeof(*out));
    memset(&req, 0, sizeof(req));
    req.type = PROTO_SUBMIT;
    req.u.submit = *s;
    if (s->client_id == NULL) {
        random_client_id(cid, sizeof(cid));
        req.u.submit.client_id = cid;
    }
    rc = call(c, &req, 0, PROTO_SUBMITTED, &reply, &out->retry_after_ms, err);
    if (rc != ERR_OK)
        return rc;
    snprintf(out->id, sizeof(out->id), "%s", reply.u.submitted.id);
    out->position = reply.u.submitted.position;
    proto_msg_free(&reply);
    return ERR_OK;
}

int
client_stream_open(struct client *c, const char *id, uint64_t from, struct client_stream **out,
                   char *err)
{
    struct client_stream *s;

    *out = NULL;
    if (id == NULL || id[0] == '\0' || strlen(id) > PROTO_MAX_ID_BYTES)
        return err_set(err, ERR_BAD_REQUEST, "request id must be 1 to %d bytes long",
                       PROTO_MAX_ID_BYTES);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return err_set(err, ERR_NOMEM, "out of memory opening a stream");
    s->c = c;
    snprintf(s->id, sizeof(s->id), "%s", id);
    s->seq = from;
    *out = s;
    return ERR_OK;
}

/* Returns the next buffered frame, or NULL when the last reply is used up. */
static const struct proto_frame *
take_frame(struct client_stream *s)
{
    const struct proto_frame *f;

    if (s->next >= s->reply.u.frames.n_frames)
        return NULL;
    f = &s->reply.u.frames.frames[s->next++];
    s->seq = f->seq + 1;
    if (f->kind == PROTO_FRAME_DONE || f->kind == PROTO_FRAME_ERROR)
        s->ended = true;
    return f;
}

int
client_stream_next(struct client_stream *s, uint32_t wait_ms, const struct proto_frame **frame,
                   char *err)
{
    struct proto_msg req, reply;
    int rc;

    *frame = NULL;
    if (s->ended)
        return ERR_OK;
    if ((*frame = take_frame(s)) != NULL)
        return ERR_OK;
    if (wait_ms > PROTO_MAX_WAIT_MS)
        wait_ms = PROTO_MAX_WAIT_MS;
    memset(&req, 0, sizeof(req));
    req.type = PROTO_POLL;
    req.u.poll = (struct proto_poll){s->id, s->seq, wait_ms};
    rc = call(s->c, &req, wait_ms, PROTO_FRAMES, &reply, NULL, err);
    if (rc != ERR_OK)
        return rc;
    if (strcmp(reply.u.frames.id, s->id) != 0 ||
        (reply.u.frames.n_frames > 0 && reply.u.frames.frames[0].seq != s->seq)) {
        rc = err_set(err, ERR_PROTOCOL, "%s sent frames of %s from %llu for %s from %llu",
                     s->c->url, reply.u.frames.id,
                     reply.u.frames.n_frames > 0 ? (unsigned long long)reply.u.frames.frames[0].seq
                                                 : 0ull,
                     s->id, (unsigned long long)s->seq);
        proto_msg_free(&reply);
        return rc;
    }
    proto_msg_free(&s->reply);
    s->reply = reply;
    s->next = 0;
    *frame = take_frame(s);
    return ERR_OK;
}

uint64_t
client_stream_seq(const struct client_stream *s)
{
    return s->seq;
}

bool
client_stream_ended(const struct client_stream *s)
{
    return s->ended;
}

void
client_stream_close(struct client_stream *s)
{
    if (s == NULL)
        return;
    proto_msg_free(&s->reply);
    free(s);
}

/* ---- the small calls ---- */

int
client_cancel(struct client *c, const char *id, char *err)
{
    struct proto_msg req, reply;
    int rc;

    memset(&req, 0, sizeof(req));
    req.type = PROTO_CANCEL;
    req.u.ref.id = (char *)id;
    rc = call(c, &req, 0, PROTO_CANCEL_OK, &reply, NULL, err);
    proto_msg_free(&reply);
    return rc;
}

static int
info_call(struct client *c, enum proto_type type, enum proto_type want, struct proto_msg *reply,
          char *err)
{
    struct proto_msg req;

    memset(&req, 0, sizeof(req));
    req.type = type;
    return call(c, &req, 0, want, reply, NULL, err);
}

int
client_status(struct client *c, struct proto_msg *reply, char *err)
{
    return info_call(c, PROTO_STATUS, PROTO_STATUS_INFO, reply, err);
}

int
client_workers(struct client *c, struct proto_msg *reply, char *err)
{
    return info_call(c, PROTO_WORKERS, PROTO_WORKERS_INFO, reply, err);
}

int
client_health(struct client *c, struct proto_msg *reply, char *err)
{
    return info_call(c, PROTO_HEALTH, PROTO_HEALTH_INFO, reply, err);
}
