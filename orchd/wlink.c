/*
 * wlink.c: see wlink.h. Each slot has a pair1 socket, one receive aio whose callback decodes a
 * worker event (proto_decode, worker-event link only) and hands it to the scheduler, and a pipe
 * notification that sends the probe when a worker connects. A ready whose nonce is not the
 * current probe's (a stale message of an earlier process) is ignored.
 * A slot's socket is replaced by a new one after each of its workers ends (wlink_reset): NNG
 * 1.5.2's pair1 lets a new peer in only once the old pipe has been reaped, and when a worker dies
 * in the middle of a message its pipe can wedge NNG's one reaper thread for good (the scheduler
 * then never sees another worker: every later connection is refused). A fresh socket takes the
 * next worker whatever became of the old pipe.
 */
#include "orchd/wlink.h"

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/sock.h"
#include "workerd/engine/sampler.h"

#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WLINK_SENDBUF 256 /* messages queued towards one worker */

struct wslotlink {
    struct wlink *wl;
    int slot;
    char url[512];
    _Atomic uint32_t sock_id; /* the slot's nng_socket (replaced by wlink_reset) */
    bool open;
    nng_aio *aio;
    _Atomic uint64_t nonce;     /* the probe sent to the connected worker */
    _Atomic uint32_t connected; /* the connected pipe's id, 0 when none */
};

struct wlink {
    struct sched *sched;
    int n_slots;
    struct wslotlink links[SCHED_MAX_SLOTS];
};

void
wlink_url(char *buf, size_t size, const char *rundir, const char *slot)
{
    snprintf(buf, size, "ipc://%s/w%s.sock", rundir, slot);
}

static nng_socket
sock_of(struct wslotlink *l)
{
    nng_socket s = NNG_SOCKET_INITIALIZER;

    s.id = atomic_load(&l->sock_id);
    return s;
}

/* Encodes m and queues it towards slot's worker without blocking. */
static int
send_to(struct wslotlink *l, const struct proto_msg *m, char *err)
{
    void *buf;
    size_t len;
    nng_msg *msg;
    int rc, rv;

    if (atomic_load(&l->connected) == 0)
        return err_set(err, ERR_IO, "worker %d: not connected", l->slot);
    if ((rc = proto_encode(m, &buf, &len, err)) != ERR_OK)
        return rc;
    if ((rv = nng_msg_alloc(&msg, len)) != 0) {
        free(buf);
        return err_set(err, ERR_NOMEM, "worker %d: nng_msg_alloc: %s", l->slot, nng_strerror(rv));
    }
    memcpy(nng_msg_body(msg), buf, len);
    free(buf);
    if ((rv = nng_sendmsg(sock_of(l), msg, NNG_FLAG_NONBLOCK)) != 0) {
        nng_msg_free(msg);
        return err_set(err, ERR_IO, "worker %d: send %s: %s", l->slot, proto_type_name(m->type),
                       nng_strerror(rv));
    }
    return ERR_OK;
}

int
wlink_dispatch(struct wlink *wl, int slot, const struct proto_dispatch *d, char *err)
{
    struct proto_msg m = {.type = PROTO_DISPATCH};

    if (slot < 0 || slot >= wl->n_slots)
        return err_set(err, ERR_BAD_REQUEST, "no worker slot %d", slot);
    m.u.dispatch = *d;
    return send_to(&wl->links[slot], &m, err);
}

void
wlink_cancel(struct wlink *wl, int slot, const char *id)
{
    struct proto_msg m = {.type = PROTO_CANCEL};
    char err[ERR_MSG_MAX];

    if (slot < 0 || slot >= wl->n_slots)
        return;
    m.u.ref.id = (char *)id;
    if (send_to(&wl->links[slot], &m, err) != ERR_OK)
        log_debug("cancel of %s not sent: %s", id, err);
}

/* A worker connected (send it the probe) or went away. */
static void
pipe_event(nng_pipe p, nng_pipe_ev ev, void *arg)
{
    struct wslotlink *l = arg;
    struct proto_msg m = {.type = PROTO_PROBE};
    char err[ERR_MSG_MAX];

    if (ev == NNG_PIPE_EV_REM_POST) {
        uint32_t id = nng_pipe_id(p);

        atomic_compare_exchange_strong(&l->connected, &id, 0);
        log_debug("worker %d disconnected", l->slot);
        return;
    }
    log_debug("worker %d connected (pipe %u)", l->slot, (unsigned)nng_pipe_id(p));
    m.u.probe.nonce = sampler_seed_random() << 32 | (uint64_t)nng_pipe_id(p);
    atomic_store(&l->nonce, m.u.probe.nonce);
    atomic_store(&l->connected, (uint32_t)nng_pipe_id(p));
    if (send_to(l, &m, err) != ERR_OK)
        log_warn("probe not sent: %s", err);
}

static void
handle_event(struct wslotlink *l, const struct proto_msg *m)
{
    struct sched *s = l->wl->sched;
    uint64_t now = clock_now_ms();

    switch (m->type) {
    case PROTO_READY:
        if (m->u.ready.nonce != atomic_load(&l->nonce)) {
            log_warn("worker %d: ready with a stale nonce: ignored", l->slot);
            break;
        }
        sched_worker_ready(s, l->slot, &m->u.ready, now);
        break;
    case PROTO_HEARTBEAT:
        sched_worker_heartbeat(s, l->slot, &m->u.heartbeat, now);
        break;
    case PROTO_TOKENS:
        sched_worker_tokens(s, l->slot, &m->u.tokens, now);
        break;
    case PROTO_DONE:
        sched_worker_done(s, l->slot, &m->u.done, now);
        break;
    case PROTO_ERROR:
        sched_worker_error(s, l->slot, &m->u.error, now);
        break;
    default: /* the decoder admits worker events only */
        break;
    }
}

static void
recv_cb(void *arg)
{
    struct wslotlink *l = arg;
    struct proto_msg m;
    char err[ERR_MSG_MAX];
    nng_msg *msg;
    int rv = nng_aio_result(l->aio);

    if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        return;
    if (rv != 0) {
        log_warn("worker %d: receive failed: %s", l->slot, nng_strerror(rv));
    } else {
        msg = nng_aio_get_msg(l->aio);
        rv = proto_decode(nng_msg_body(msg), nng_msg_len(msg), PROTO_LINK_WORKER_EVT, &m, err);
        nng_msg_free(msg);
        if (rv != ERR_OK) {
            log_warn("worker %d: bad message: %s: %s", l->slot, err_str(rv), err);
        } else {
            handle_event(l, &m);
            proto_msg_free(&m);
        }
    }
    nng_recv_aio(sock_of(l), l->aio);
}

/* Opens l's socket and listens on l->url (receiving is started by the caller). */
static int
link_listen(struct wslotlink *l, char *err)
{
    nng_socket sock;
    int rv;

    if ((rv = nng_pair1_open(&sock)) != 0)
        return err_set(err, ERR_IO, "pair socket for %s: %s", l->url, nng_strerror(rv));
    atomic_store(&l->sock_id, sock.id);
    l->open = true;
    if ((rv = nng_socket_set_size(sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MSG_BYTES)) != 0 ||
        (rv = nng_socket_set_int(sock, NNG_OPT_SENDBUF, WLINK_SENDBUF)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_ADD_POST, pipe_event, l)) != 0 ||
        (rv = nng_pipe_notify(sock, NNG_PIPE_EV_REM_POST, pipe_event, l)) != 0 ||
        (rv = nng_listen(sock, l->url, NULL, 0)) != 0)
        return err_set(err, ERR_IO, "listen on %s: %s", l->url, nng_strerror(rv));
    return ERR_OK;
}

int
wlink_reset(struct wlink *wl, int slot, char *err)
{
    struct wslotlink *l;
    int rc, rv;

    if (slot < 0 || slot >= wl->n_slots)
        return err_set(err, ERR_BAD_REQUEST, "no worker slot %d", slot);
    l = &wl->links[slot];
    nng_aio_stop(l->aio); /* for good: a stopped aio takes no new operation */
    nng_aio_free(l->aio);
    l->aio = NULL;
    atomic_store(&l->connected, 0);
    if (l->open && !sock_close(sock_of(l)))
        log_warn("worker %d: its link's old socket did not close; a new one takes over", slot);
    l->open = false;
    if ((rc = link_listen(l, err)) != ERR_OK)
        return rc;
    if ((rv = nng_aio_alloc(&l->aio, recv_cb, l)) != 0)
        return err_set(err, ERR_NOMEM, "nng_aio_alloc: %s", nng_strerror(rv));
    nng_recv_aio(sock_of(l), l->aio);
    return ERR_OK;
}

void
wlink_close(struct wlink *wl)
{
    if (wl == NULL)
        return;
    for (int i = 0; i < wl->n_slots; i++)
        if (wl->links[i].aio != NULL)
            nng_aio_stop(wl->links[i].aio);
    for (int i = 0; i < wl->n_slots; i++) {
        if (wl->links[i].open)
            sock_close(sock_of(&wl->links[i]));
        nng_aio_free(wl->links[i].aio);
    }
    free(wl);
}

int
wlink_open(struct wlink **out, const char *rundir, int n_slots, struct sched *s, char *err)
{
    struct wlink *wl;
    char slot[16];
    int rv, rc;

    *out = NULL;
    if (n_slots < 1 || n_slots > SCHED_MAX_SLOTS)
        return err_set(err, ERR_BAD_REQUEST, "worker links: 1 to %d slots", SCHED_MAX_SLOTS);
    wl = calloc(1, sizeof(*wl));
    if (wl == NULL)
        return err_set(err, ERR_NOMEM, "worker links: out of memory");
    wl->sched = s;
    for (int i = 0; i < n_slots; i++) {
        struct wslotlink *l = &wl->links[i];

        l->wl = wl;
        l->slot = i;
        wl->n_slots++;
        snprintf(slot, sizeof(slot), "%d", i);
        wlink_url(l->url, sizeof(l->url), rundir, slot);
        if ((rc = link_listen(l, err)) != ERR_OK)
            goto fail;
        if ((rv = nng_aio_alloc(&l->aio, recv_cb, l)) != 0) {
            rc = err_set(err, ERR_NOMEM, "nng_aio_alloc: %s", nng_strerror(rv));
            goto fail;
        }
    }
    for (int i = 0; i < n_slots; i++)
        nng_recv_aio(sock_of(&wl->links[i]), wl->links[i].aio);
    *out = wl;
    return ERR_OK;
fail:
    wlink_close(wl);
    return rc;
}
