/*
 * wlink.c: see wlink.h. One link thread polls every attached worker's socket and an eventfd that
 * wakes it when the set changes or bytes wait to go out; it reads under the lock, then decodes
 * and hands the events to the scheduler without it (the scheduler's ops call wlink_dispatch with
 * the scheduler's lock held: the lock order is scheduler, then link). Senders queue a frame and
 * write what the socket takes at once; the link thread writes the rest when the socket has room.
 * Every attach and detach bumps the slot's generation, so bytes polled for a closed socket are
 * never read from another one that took its number. A link whose peer closed or whose framing
 * broke is down (left out of the poll) until it is detached; a broken framing also shuts the
 * socket down, so the worker sees orchd gone and exits.
 */
#include "orchd/wlink.h"

#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/link.h"
#include "workerd/engine/sampler.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

struct wslotlink {
    int slot;
    int fd;       /* orchd's end of the worker's socketpair, -1 when none */
    bool up;      /* attached, and no end of file or broken frame seen */
    bool busy;    /* the link thread is handling events read from this fd */
    uint64_t gen; /* bumped by every attach and detach */
    uint64_t nonce;
    struct link_buf out; /* frames towards the worker */
    struct link_buf in;  /* bytes from the worker: filled under the lock, parsed while busy */
};

struct wlink {
    struct sched *sched;
    int n_slots;
    int wake; /* eventfd */
    bool quit;
    bool started;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* a link stopped being busy */
    struct wslotlink links[SCHED_MAX_SLOTS];
};

static void
wake(struct wlink *wl)
{
    uint64_t one = 1;

    if (write(wl->wake, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_warn("worker links: eventfd write: %s", strerror(errno));
}

/* Marks l down after an error on its socket. Lock held. */
static void
link_down(struct wslotlink *l, const char *why)
{
    if (l->up)
        log_debug("worker %d: link down: %s", l->slot, why);
    l->up = false;
}

/* Encodes m, queues it towards l's worker and writes what the socket takes now. Lock held. */
static int
send_locked(struct wlink *wl, struct wslotlink *l, const struct proto_msg *m, char *err)
{
    bool idle = link_buf_pending(&l->out) == 0;
    char why[ERR_MSG_MAX];
    void *buf;
    size_t len;
    int rc;

    if (l->fd < 0 || !l->up)
        return err_set(err, ERR_IO, "worker %d: not connected", l->slot);
    if ((rc = proto_encode(m, &buf, &len, err)) != ERR_OK)
        return rc;
    rc = link_queue(&l->out, buf, len, WLINK_OUT_MAX, why);
    free(buf);
    if (rc != ERR_OK)
        return err_set(err, ERR_IO, "worker %d: send %s: %s", l->slot, proto_type_name(m->type),
                       why);
    if (!idle)
        return ERR_OK; /* the link thread is writing already */
    if ((rc = link_flush(&l->out, l->fd, why)) != ERR_OK) {
        link_down(l, why);
        return err_set(err, ERR_IO, "worker %d: send %s: %s", l->slot, proto_type_name(m->type),
                       why);
    }
    if (link_buf_pending(&l->out) > 0)
        wake(wl); /* the rest goes when the socket has room */
    return ERR_OK;
}

static int
send_to(struct wlink *wl, int slot, const struct proto_msg *m, char *err)
{
    int rc;

    if (slot < 0 || slot >= wl->n_slots)
        return err_set(err, ERR_BAD_REQUEST, "no worker slot %d", slot);
    pthread_mutex_lock(&wl->mu);
    rc = send_locked(wl, &wl->links[slot], m, err);
    pthread_mutex_unlock(&wl->mu);
    return rc;
}

int
wlink_dispatch(struct wlink *wl, int slot, const struct proto_dispatch *d, char *err)
{
    struct proto_msg m = {.type = PROTO_DISPATCH};

    m.u.dispatch = *d;
    return send_to(wl, slot, &m, err);
}

void
wlink_cancel(struct wlink *wl, int slot, const char *id)
{
    struct proto_msg m = {.type = PROTO_CANCEL};
    char err[ERR_MSG_MAX];

    m.u.ref.id = (char *)id;
    if (send_to(wl, slot, &m, err) != ERR_OK)
        log_debug("cancel of %s not sent: %s", id, err);
}

static void
handle_event(struct wlink *wl, struct wslotlink *l, const struct proto_msg *m)
{
    struct sched *s = wl->sched;
    uint64_t now = clock_now_ms();

    switch (m->type) {
    case PROTO_READY:
        if (m->u.ready.nonce != l->nonce) {
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

/* Decodes and handles every whole frame in l->in. l is busy: only this thread touches l->in. */
static void
handle_frames(struct wlink *wl, struct wslotlink *l)
{
    char err[ERR_MSG_MAX];
    struct proto_msg m;
    const uint8_t *msg;
    size_t len;
    int rc;

    for (;;) {
        if ((rc = link_next(&l->in, PROTO_MAX_MSG_BYTES, &msg, &len, err)) != ERR_OK) {
            log_warn("worker %d: %s: closing its link", l->slot, err);
            pthread_mutex_lock(&wl->mu);
            if (l->fd >= 0) { /* not detached meanwhile (a detach waits for us to return) */
                link_down(l, err);
                shutdown(l->fd, SHUT_RDWR); /* the worker sees orchd gone and exits */
            }
            pthread_mutex_unlock(&wl->mu);
            return;
        }
        if (msg == NULL)
            return;
        if ((rc = proto_decode(msg, len, PROTO_LINK_WORKER_EVT, &m, err)) != ERR_OK) {
            log_warn("worker %d: bad message: %s: %s", l->slot, err_str(rc), err);
            continue;
        }
        handle_event(wl, l, &m);
        proto_msg_free(&m);
    }
}

/* Reads and writes what slot's socket is ready for, then handles what came. */
static void
service(struct wlink *wl, int slot, uint64_t gen, short revents)
{
    struct wslotlink *l = &wl->links[slot];
    char err[ERR_MSG_MAX];
    int rc = ERR_OK;

    pthread_mutex_lock(&wl->mu);
    if (l->gen != gen || !l->up) { /* detached, or re-attached, since the poll */
        pthread_mutex_unlock(&wl->mu);
        return;
    }
    if (revents & POLLOUT)
        rc = link_flush(&l->out, l->fd, err);
    if (rc == ERR_OK && (revents & (POLLIN | POLLHUP | POLLERR)))
        rc = link_read(&l->in, l->fd, err);
    if (rc != ERR_OK)
        link_down(l, err);
    l->busy = true;
    pthread_mutex_unlock(&wl->mu);
    handle_frames(wl, l);
    pthread_mutex_lock(&wl->mu);
    l->busy = false;
    pthread_cond_broadcast(&wl->idle);
    pthread_mutex_unlock(&wl->mu);
}

static void *
link_thread(void *arg)
{
    struct wlink *wl = arg;
    struct pollfd pfd[SCHED_MAX_SLOTS + 1];
    int slot_of[SCHED_MAX_SLOTS + 1];
    uint64_t gen_of[SCHED_MAX_SLOTS + 1];

    for (;;) {
        int n = 1;

        pthread_mutex_lock(&wl->mu);
        if (wl->quit) {
            pthread_mutex_unlock(&wl->mu);
            return NULL;
        }
        pfd[0] = (struct pollfd){.fd = wl->wake, .events = POLLIN};
        for (int i = 0; i < wl->n_slots; i++) {
            struct wslotlink *l = &wl->links[i];

            if (l->fd < 0 || !l->up)
                continue;
            pfd[n] = (struct pollfd){.fd = l->fd, .events = POLLIN};
            if (link_buf_pending(&l->out) > 0)
                pfd[n].events |= POLLOUT;
            slot_of[n] = i;
            gen_of[n++] = l->gen;
        }
        pthread_mutex_unlock(&wl->mu);
        if (poll(pfd, (nfds_t)n, -1) < 0) {
            if (errno != EINTR)
                log_error("worker links: poll: %s", strerror(errno));
            continue;
        }
        if (pfd[0].revents & POLLIN) {
            uint64_t count;

            if (read(wl->wake, &count, sizeof(count)) < 0 && errno != EAGAIN)
                log_warn("worker links: eventfd read: %s", strerror(errno));
        }
        for (int k = 1; k < n; k++)
            if (pfd[k].revents != 0)
                service(wl, slot_of[k], gen_of[k], pfd[k].revents);
    }
}

/* Closes l's socket and waits until no event read from it is being handled. Lock held. */
static void
detach_locked(struct wlink *wl, struct wslotlink *l)
{
    if (l->fd < 0)
        return;
    l->gen++;
    l->up = false;
    close(l->fd);
    l->fd = -1;
    while (l->busy)
        pthread_cond_wait(&wl->idle, &wl->mu);
    link_buf_reset(&l->in);
    link_buf_reset(&l->out);
}

void
wlink_detach(struct wlink *wl, int slot)
{
    if (slot < 0 || slot >= wl->n_slots)
        return;
    pthread_mutex_lock(&wl->mu);
    detach_locked(wl, &wl->links[slot]);
    pthread_mutex_unlock(&wl->mu);
    wake(wl); /* the thread may be polling the closed socket */
}

int
wlink_attach(struct wlink *wl, int slot, int fd, char *err)
{
    struct proto_msg m = {.type = PROTO_PROBE};
    struct wslotlink *l;
    int rc;

    if (slot < 0 || slot >= wl->n_slots) {
        close(fd);
        return err_set(err, ERR_BAD_REQUEST, "no worker slot %d", slot);
    }
    l = &wl->links[slot];
    pthread_mutex_lock(&wl->mu);
    detach_locked(wl, l);
    l->fd = fd;
    l->up = true;
    l->gen++;
    l->nonce = sampler_seed_random() << 32 | (l->gen & 0xffffffffu);
    m.u.probe.nonce = l->nonce;
    rc = send_locked(wl, l, &m, err);
    pthread_mutex_unlock(&wl->mu);
    wake(wl);
    return rc;
}

void
wlink_close(struct wlink *wl)
{
    if (wl == NULL)
        return;
    if (wl->started) {
        pthread_mutex_lock(&wl->mu);
        wl->quit = true;
        pthread_mutex_unlock(&wl->mu);
        wake(wl);
        pthread_join(wl->thread, NULL);
    }
    for (int i = 0; i < wl->n_slots; i++) {
        if (wl->links[i].fd >= 0)
            close(wl->links[i].fd);
        link_buf_free(&wl->links[i].in);
        link_buf_free(&wl->links[i].out);
    }
    if (wl->wake >= 0)
        close(wl->wake);
    pthread_cond_destroy(&wl->idle);
    pthread_mutex_destroy(&wl->mu);
    free(wl);
}

int
wlink_open(struct wlink **out, int n_slots, struct sched *s, char *err)
{
    struct wlink *wl;
    int rv;

    *out = NULL;
    if (n_slots < 1 || n_slots > SCHED_MAX_SLOTS)
        return err_set(err, ERR_BAD_REQUEST, "worker links: 1 to %d slots", SCHED_MAX_SLOTS);
    wl = calloc(1, sizeof(*wl));
    if (wl == NULL)
        return err_set(err, ERR_NOMEM, "worker links: out of memory");
    wl->sched = s;
    wl->n_slots = n_slots;
    pthread_mutex_init(&wl->mu, NULL);
    pthread_cond_init(&wl->idle, NULL);
    for (int i = 0; i < n_slots; i++) {
        wl->links[i].slot = i;
        wl->links[i].fd = -1;
    }
    if ((wl->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        rv = err_set(err, ERR_IO, "worker links: eventfd: %s", strerror(errno));
        goto fail;
    }
    if ((rv = pthread_create(&wl->thread, NULL, link_thread, wl)) != 0) {
        rv = err_set(err, ERR_IO, "worker links: thread: %s", strerror(rv));
        goto fail;
    }
    wl->started = true;
    *out = wl;
    return ERR_OK;
fail:
    wlink_close(wl);
    return rv;
}
