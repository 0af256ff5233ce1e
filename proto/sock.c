/*
 * sock.c: see sock.h. The close runs on a detached thread; the caller and the thread share a small
 * record with a reference count, so whichever finishes last frees it.
 */
#include "proto/sock.h"

#include "common/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

struct closer {
    nng_socket sock;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int refs; /* the caller and the thread */
};

static atomic_bool abandoned;

/* Drops one reference (c->mu held); frees c after the last. */
static void
closer_release(struct closer *c)
{
    bool last = --c->refs == 0;

    pthread_mutex_unlock(&c->mu);
    if (last) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
}

static void *
closer_main(void *arg)
{
    struct closer *c = arg;

    nng_close(c->sock);
    pthread_mutex_lock(&c->mu);
    c->done = true;
    pthread_cond_signal(&c->cv);
    closer_release(c);
    return NULL;
}

bool
sock_close(nng_socket s)
{
    struct closer *c = calloc(1, sizeof(*c));
    pthread_condattr_t ca;
    pthread_attr_t ta;
    pthread_t th;
    struct timespec until;
    long ms = atomic_load(&abandoned) ? SOCK_CLOSE_AFTER_MS : SOCK_CLOSE_MS;
    bool done;
    int rv = 0;

    if (c == NULL) {
        nng_close(s); /* no memory for the helper: close unbounded */
        return true;
    }
    c->sock = s;
    c->refs = 2;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &ta, closer_main, c) != 0) {
        pthread_attr_destroy(&ta);
        c->refs = 1;
        nng_close(s);
        pthread_mutex_lock(&c->mu);
        closer_release(c);
        return true;
    }
    pthread_attr_destroy(&ta);
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += ms % 1000 * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (!c->done && rv != ETIMEDOUT)
        rv = pthread_cond_timedwait(&c->cv, &c->mu, &until);
    done = c->done;
    closer_release(c);
    if (!done) {
        atomic_store(&abandoned, true);
        log_warn("closing an NNG socket did not finish within %ld ms (NNG 1.5's close can wedge "
                 "when a peer is mid-message); going on without it",
                 ms);
    }
    return done;
}

_Noreturn void
sock_exit(int status)
{
    if (atomic_load(&abandoned)) {
        fflush(NULL);
        _exit(status);
    }
    exit(status);
}
