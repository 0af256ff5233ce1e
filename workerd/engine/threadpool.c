/*
 * threadpool.c: see threadpool.h. A job is published by bumping a generation counter under the
 * mutex; workers spin on it for up to 200 us (a decode step's jobs follow each other within
 * microseconds, its tokens within tens), then sleep on a condition variable. The last worker to
 * finish wakes the caller the same way.
 */
#include "workerd/engine/threadpool.h"

#include "common/clock.h"
#include "common/err.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* How long a thread spins before it sleeps, measured on the clock (a pause instruction lasts
 * 10 to 140 ns depending on the CPU: 2000 of them were 26 us here, less than the main thread's
 * work between two decode tokens, so the worker slept and was woken at every token). */
#define THREADPOOL_SPIN_NS    200000
#define THREADPOOL_SPIN_CHECK 64 /* pauses between two readings of the clock */

struct worker {
    struct threadpool *pool;
    pthread_t thread;
    uint32_t ith;
};

struct threadpool {
    uint32_t n;
    struct worker *workers; /* n - 1 entries */
    uint32_t n_started;
    pthread_mutex_t mu;
    pthread_cond_t start; /* signalled when gen moves on or stop is set */
    pthread_cond_t done;  /* signalled when the last worker of a job finishes */
    atomic_uint gen;      /* job generation */
    atomic_uint n_done;   /* workers that finished the current job */
    atomic_bool stop;
    threadpool_fn fn;
    void *arg;
};

static inline void
cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Spins until *v differs from old (or *stop is set, when stop is not NULL) or THREADPOOL_SPIN_NS
 * have passed; returns whether it did. */
static bool
spin_until_change(const atomic_uint *v, unsigned old, const atomic_bool *stop)
{
    uint64_t t0 = clock_now_ns();

    for (;;) {
        for (int i = 0; i < THREADPOOL_SPIN_CHECK; i++) {
            if (atomic_load(v) != old || (stop != NULL && atomic_load(stop)))
                return true;
            cpu_relax();
        }
        if (clock_now_ns() - t0 > THREADPOOL_SPIN_NS)
            return false;
    }
}

static void *
worker_main(void *p)
{
    struct worker *w = p;
    struct threadpool *pool = w->pool;
    unsigned seen = 0; /* the generation at creation: a job may be published before we run */

    for (;;) {
        if (!spin_until_change(&pool->gen, seen, &pool->stop)) {
            pthread_mutex_lock(&pool->mu);
            while (atomic_load(&pool->gen) == seen && !atomic_load(&pool->stop))
                pthread_cond_wait(&pool->start, &pool->mu);
            pthread_mutex_unlock(&pool->mu);
        }
        if (atomic_load(&pool->stop))
            return NULL;
        seen = atomic_load(&pool->gen);
        pool->fn(pool->arg, w->ith, pool->n);
        if (atomic_fetch_add(&pool->n_done, 1) + 1 == pool->n - 1) {
            pthread_mutex_lock(&pool->mu);
            pthread_cond_signal(&pool->done);
            pthread_mutex_unlock(&pool->mu);
        }
    }
}

int
threadpool_new(struct threadpool **out, uint32_t n_threads, char *err)
{
    struct threadpool *p;
    int rc;

    *out = NULL;
    if (n_threads < 1 || n_threads > 1024)
        return err_set(err, ERR_BAD_REQUEST, "thread count must be in [1, 1024], got %u",
                       n_threads);
    p = calloc(1, sizeof(*p));
    if (p == NULL)
        return err_set(err, ERR_NOMEM, "thread pool: out of memory");
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    atomic_init(&p->gen, 0);
    atomic_init(&p->n_done, 0);
    atomic_init(&p->stop, false);
    if (n_threads > 1) {
        p->workers = calloc(n_threads - 1, sizeof(*p->workers));
        if (p->workers == NULL) {
            threadpool_free(p);
            return err_set(err, ERR_NOMEM, "thread pool: out of memory");
        }
    }
    for (uint32_t i = 0; i + 1 < n_threads; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i + 1;
        rc = pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]);
        if (rc != 0) {
            threadpool_free(p);
            return err_set(err, ERR_INTERNAL, "pthread_create() failed: %s", strerror(rc));
        }
        p->n_started++;
    }
    *out = p;
    return ERR_OK;
}

void
threadpool_free(struct threadpool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->n_started; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

uint32_t
threadpool_size(const struct threadpool *p)
{
    return p->n;
}

void
threadpool_run(struct threadpool *p, threadpool_fn fn, void *arg)
{
    if (p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->n_done, 0);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->mu);

    fn(arg, 0, p->n);

    /* n_done moves from 0 to n - 1: spin while it changes, then sleep */
    for (unsigned d = 0; (d = atomic_load(&p->n_done)) != p->n - 1;)
        if (!spin_until_change(&p->n_done, d, NULL))
            break;
    if (atomic_load(&p->n_done) != p->n - 1) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->n_done) != p->n - 1)
            pthread_cond_wait(&p->done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}
