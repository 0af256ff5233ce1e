/*
 * membw.c: the machine's memory read bandwidth, for scripts/bench: sums a large buffer (1 GiB by
 * default) with N threads, each reading its own contiguous slice, and reports the best and mean
 * rate over a few repetitions. Decode at batch 1 reads every weight once per token, so this rate
 * over the bytes of weights bounds decode tokens/s. Not a cache benchmark (the buffer is far
 * larger than any cache) nor a write benchmark.
 *   membw [--mib N] [--threads N] [--reps N] [--json]
 */
#include "common/clock.h"
#include "common/err.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 256

/* 16-byte GCC vectors: native on every x86-64 (SSE2) and arm64 (NEON), so nothing spills. */
typedef uint64_t u64x2 __attribute__((vector_size(16)));

struct membw {
    const u64x2 *buf;
    size_t n_vec; /* u64x2 elements in buf */
    int n_threads;
    int reps;
    pthread_barrier_t start, end;
    uint64_t sums[MAX_THREADS]; /* each thread's checksum, so the reads cannot be elided */
    double secs[64];            /* each repetition's wall time, as thread 0 saw it */
};

struct worker {
    struct membw *b;
    int id;
};

/* Sums one slice with four independent accumulators (a 64-byte line per step). */
static uint64_t
sum_slice(const u64x2 *p, size_t n)
{
    u64x2 a = {0, 0}, c = {0, 0}, d = {0, 0}, e = {0, 0};
    size_t i;

    for (i = 0; i + 4 <= n; i += 4) {
        a += p[i];
        c += p[i + 1];
        d += p[i + 2];
        e += p[i + 3];
    }
    for (; i < n; i++)
        a += p[i];
    a += c + d + e;
    return a[0] + a[1];
}

/* One thread: per repetition, wait at the start line, sum its slice, wait at the end line. */
static void *
worker_run(void *arg)
{
    struct worker *w = arg;
    struct membw *b = w->b;
    size_t per = b->n_vec / (size_t)b->n_threads;
    size_t lo = per * (size_t)w->id;
    size_t n = w->id == b->n_threads - 1 ? b->n_vec - lo : per;

    for (int r = 0; r < b->reps; r++) {
        uint64_t t0 = 0;

        pthread_barrier_wait(&b->start);
        if (w->id == 0)
            t0 = clock_now_ns();
        b->sums[w->id] += sum_slice(b->buf + lo, n);
        pthread_barrier_wait(&b->end);
        if (w->id == 0)
            b->secs[r] = (double)(clock_now_ns() - t0) / 1e9;
    }
    return NULL;
}

/* Reads the value after option argv[*i] into *out when it is an integer in [lo, hi]. */
static int
opt_value(int argc, char **argv, int *i, long lo, long hi, long *out, char *err)
{
    const char *opt = argv[*i];
    char tail;

    if (*i + 1 >= argc || sscanf(argv[*i + 1], "%ld%c", out, &tail) != 1 || *out < lo || *out > hi)
        return err_set(err, ERR_BAD_REQUEST, "option %s: expected an integer in [%ld, %ld]", opt,
                       lo, hi);
    (*i)++;
    return ERR_OK;
}

/* Fills the buffer (touching every page, each thread its own slice: first touch places it) and
 * runs the repetitions. */
static int
membw_run(struct membw *b, size_t bytes, char *err)
{
    struct worker w[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    u64x2 *buf;
    int i, started = 0, rc = ERR_OK;

    buf = aligned_alloc(64, bytes);
    if (buf == NULL)
        return err_set(err, ERR_NOMEM, "cannot allocate %zu bytes", bytes);
    memset(buf, 1, bytes);
    b->buf = buf;
    b->n_vec = bytes / sizeof(u64x2);
    pthread_barrier_init(&b->start, NULL, (unsigned)b->n_threads);
    pthread_barrier_init(&b->end, NULL, (unsigned)b->n_threads);
    for (i = 1; i < b->n_threads; i++) {
        w[i] = (struct worker){b, i};
        if ((errno = pthread_create(&th[i], NULL, worker_run, &w[i])) != 0) {
            rc = err_set(err, ERR_INTERNAL, "pthread_create() failed: %s", strerror(errno));
            break;
        }
        started++;
    }
    if (rc == ERR_OK) {
        w[0] = (struct worker){b, 0};
        worker_run(&w[0]);
    }
    for (i = 1; i <= started; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&b->start);
    pthread_barrier_destroy(&b->end);
    free(buf);
    return rc;
}

int
main(int argc, char **argv)
{
    static struct membw b;
    char err[ERR_MSG_MAX];
    long mib = 1024, threads = 1, reps = 5;
    int json = 0, rc = ERR_OK;
    double best = 0, mean = 0;
    uint64_t check = 0;

    for (int i = 1; i < argc && rc == ERR_OK; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "--mib") == 0)
            rc = opt_value(argc, argv, &i, 1, 1 << 20, &mib, err);
        else if (strcmp(argv[i], "--threads") == 0 || strcmp(argv[i], "-t") == 0)
            rc = opt_value(argc, argv, &i, 1, MAX_THREADS, &threads, err);
        else if (strcmp(argv[i], "--reps") == 0)
            rc = opt_value(argc, argv, &i, 1, 64, &reps, err);
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            printf("usage: membw [--mib N] [--threads N] [--reps N] [--json]\n"
                   "Sums an N MiB buffer (default 1024) with N threads (default 1), --reps times\n"
                   "(default 5); prints the best and mean read rate in GB/s (1e9 bytes/s).\n");
            return 0;
        } else
            rc = err_set(err, ERR_BAD_REQUEST, "unknown option '%s'", argv[i]);
    }
    if (rc != ERR_OK) {
        fprintf(stderr, "membw: %s (see membw --help)\n", err);
        return 2;
    }
    b.n_threads = (int)threads;
    b.reps = (int)reps;
    if (membw_run(&b, (size_t)mib << 20, err) != ERR_OK) {
        fprintf(stderr, "membw: %s\n", err);
        return 1;
    }
    for (int r = 0; r < b.reps; r++) {
        double gbps = (double)((size_t)mib << 20) / b.secs[r] / 1e9;

        best = gbps > best ? gbps : best;
        mean += gbps / b.reps;
    }
    for (int i = 0; i < b.n_threads; i++)
        check += b.sums[i];
    if (json)
        printf("{\"mib\":%ld,\"threads\":%ld,\"reps\":%ld,\"best_gbps\":%.2f,\"mean_gbps\":%.2f,"
               "\"checksum\":%llu}\n",
               mib, threads, reps, best, mean, (unsigned long long)check);
    else
        printf("membw: %ld MiB, %ld threads, %ld reps: best %.2f GB/s, mean %.2f GB/s\n", mib,
               threads, reps, best, mean);
    return 0;
}
