/*
 * threadpool.h: a fixed pool of threads that run one job at a time, each job split into n parts.
 * The caller's thread is part 0, so a pool of n threads starts n - 1 threads once, at
 * threadpool_new(), and none afterwards: a decode step dispatches a few jobs per layer with no
 * thread creation and no allocation. Jobs decide their own split from (ith, nth); the pool never
 * reorders work inside a part. Not a general task queue: one caller at a time.
 */
#ifndef LLORCH_THREADPOOL_H
#define LLORCH_THREADPOOL_H

#include <stdint.h>

struct threadpool;

/* One part of a job: ith in [0, nth). Runs on the caller's thread (ith 0) or a pool thread. */
typedef void (*threadpool_fn)(void *arg, uint32_t ith, uint32_t nth);

/*
 * Starts n_threads - 1 threads (n_threads >= 1; 1 means the caller alone). Returns ERR_OK, or
 * ERR_BAD_REQUEST / ERR_NOMEM / ERR_INTERNAL (thread creation failed) with a detail in err; on
 * failure nothing is left running and *out is NULL.
 */
int threadpool_new(struct threadpool **out, uint32_t n_threads, char *err);

/* Stops and joins the threads and frees the pool. NULL is fine. Not while a job runs. */
void threadpool_free(struct threadpool *p);

/* Number of parts every job is split into (the n_threads given to threadpool_new). */
uint32_t threadpool_size(const struct threadpool *p);

/*
 * Runs fn(arg, ith, nth) for every ith in [0, nth) concurrently and returns when all parts have
 * returned. Blocks the caller, which runs part 0. Only one thread may call it at a time.
 */
void threadpool_run(struct threadpool *p, threadpool_fn fn, void *arg);

#endif
