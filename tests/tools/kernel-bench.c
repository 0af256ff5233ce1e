/*
 * kernel-bench.c: `kernel-bench [-T TYPE] [-r ROWS] [-c COLS] [-n NTOK] [-t THREADS] [-i REPS]`:
 * times kernel_matmul_rows() alone on a random matrix in memory (no model file; TYPE f32, f16,
 * bf16 or a quantized type such as q4_0, q4_k: its first 256 rows quantized, repeated): each
 * repetition multiplies all ROWS rows by NTOK activation rows, split over the thread pool as the
 * engine splits a matrix. Prints one JSON line with the best and median repetition, as GFLOP/s and
 * as GB/s of weights read, and the median repetition by the process's CPU time (per thread: less
 * sensitive to other processes taking the cores than the wall clock, not to their use of the
 * caches). Small matrices measure the tiles in cache; large ones (hundreds of MiB) the weight
 * stream. For measuring the kernels, not a benchmark suite.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/opt.h"
#include "tests/synth_rand.h"
#include "workerd/engine/kernels.h"
#include "workerd/engine/threadpool.h"
#include "workerd/engine/types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
    const struct kernel_matrix *w;
    const float *x;
    uint32_t ntok;
    float *y;
    float *scratch;
    size_t scratch_stride;
};

/* Each part takes a contiguous share of the row tiles, as model.c's matmul_part does. */
static void
part(void *arg, uint32_t ith, uint32_t nth)
{
    struct job *j = arg;
    uint64_t tiles = (j->w->rows + KERNEL_TILE_ROWS - 1) / KERNEL_TILE_ROWS;
    uint32_t r0 = (uint32_t)(tiles * ith / nth) * KERNEL_TILE_ROWS;
    uint32_t r1 = (uint32_t)(tiles * (ith + 1) / nth) * KERNEL_TILE_ROWS;

    if (r1 > j->w->rows)
        r1 = j->w->rows;
    if (r0 < r1)
        kernel_matmul_rows(j->w, r0, r1, j->x, j->w->cols, j->ntok, j->y, j->w->rows,
                           j->scratch + ith * j->scratch_stride);
}

/* The process's CPU time so far (all threads), in ms. */
static double
cpu_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void
usage(void)
{
    fprintf(stderr, "usage: kernel-bench [-T TYPE] [-r ROWS] [-w WINDOW] [-c COLS] [-n NTOK] "
                    "[-t THREADS] [-i REPS]\n");
}

int
main(int argc, char **argv)
{
    long long rows = 4096, window = 0, cols = 2048, ntok = 1, threads = 1, reps = 10;
    uint32_t type = TYPE_F16;
    char err[ERR_MSG_MAX];
    struct {
        const char *name;
        long long *v, lo, hi;
    } opts[] = {{"-r", &rows, 1, 1 << 24}, {"-w", &window, 1, 1 << 24}, {"-c", &cols, 1, 1 << 20},
                {"-n", &ntok, 1, 1024},    {"-t", &threads, 1, 1024},   {"-i", &reps, 1, 1 << 20}};

    if (argc % 2 == 0) { /* options come in pairs */
        usage();
        return 2;
    }
    for (int i = 1; i < argc; i += 2) {
        const char *o = argv[i], *v = argv[i + 1];
        size_t k = 0;

        if (strcmp(o, "-T") == 0) {
            for (k = 0; k < TYPE__COUNT; k++) {
                const struct type_traits *t = type_traits((uint32_t)k);
                if (t != NULL && t->from_float != NULL && kernel_type_supported((uint32_t)k) &&
                    strcmp(v, t->name) == 0)
                    break;
            }
            if (k < TYPE__COUNT) {
                type = (uint32_t)k;
                continue;
            }
            fprintf(stderr, "kernel-bench: -T: '%s' is not a type the kernels multiply\n", v);
            return 2;
        }
        while (k < sizeof(opts) / sizeof(opts[0]) && strcmp(o, opts[k].name) != 0)
            k++;
        if (k == sizeof(opts) / sizeof(opts[0])) {
            usage();
            return 2;
        }
        if (opt_int(o, v, opts[k].lo, opts[k].hi, opts[k].v, err) != ERR_OK) {
            fprintf(stderr, "kernel-bench: %s\n", err);
            return 2;
        }
    }

    size_t rb = type_row_size(type, (int64_t)cols);
    /* 64-byte aligned as the engine's buffers (model.c's alloc_floats) */
    size_t stride = (kernel_scratch_floats((uint32_t)cols) + 15) & ~(size_t)15;
    uint8_t *data = rb == 0 ? NULL : aligned_alloc(64, (rb * (size_t)rows + 63) & ~(size_t)63);
    float *x = aligned_alloc(64, ((size_t)ntok * cols * sizeof(float) + 63) & ~(size_t)63);
    float *y = aligned_alloc(64, ((size_t)ntok * rows * sizeof(float) + 63) & ~(size_t)63);
    float *scratch = aligned_alloc(64, (size_t)threads * stride * sizeof(float));
    float *row = malloc((size_t)cols * sizeof(float));
    double *ms = malloc((size_t)reps * sizeof(double)),
           *cms = malloc((size_t)reps * sizeof(double));
    struct threadpool *pool = NULL;
    int status = 1;

    if (rb == 0) {
        fprintf(stderr, "kernel-bench: -c %lld is not a multiple of %s's block (%u)\n", cols,
                type_traits(type)->name, type_traits(type)->blck);
        status = 2;
        goto done;
    }
    if (data == NULL || x == NULL || y == NULL || scratch == NULL || row == NULL || ms == NULL ||
        cms == NULL) {
        fprintf(stderr, "kernel-bench: out of memory\n");
        goto done;
    }
    for (long long r = 0; r < rows; r++) { /* 256 distinct rows (quantizing is slow), repeated */
        if (r >= 256) {
            memcpy(data + (size_t)r * rb, data + (size_t)(r % 256) * rb, rb);
            continue;
        }
        for (long long i = 0; i < cols; i++)
            row[i] = synth_rand_uniform(1, 1, (uint64_t)(r * cols + i)) * 2.0f - 1.0f;
        type_traits(type)->from_float(row, data + (size_t)r * rb, cols);
    }
    for (size_t i = 0; i < (size_t)ntok * cols; i++)
        x[i] = synth_rand_uniform(1, 2, i) * 2.0f - 1.0f;
    if (threadpool_new(&pool, (uint32_t)threads, err) != ERR_OK) {
        fprintf(stderr, "kernel-bench: %s\n", err);
        goto done;
    }
    if (window == 0 || window > rows)
        window = rows;
    struct kernel_matrix all = {data, type, (uint32_t)rows, (uint32_t)cols, rb}, w = all;
    struct job j = {&w, x, (uint32_t)ntok, y, scratch, stride};
    w.rows = (uint32_t)window;
    threadpool_run(pool, part, &j); /* warm up: page faults, CPUID */
    for (long long r = 0, r0 = 0; r < reps; r++, r0 += window) {
        if (r0 + window > rows)
            r0 = 0;
        w.data = data + (size_t)r0 * rb;
        uint64_t t0 = clock_now_ns();
        double c0 = cpu_ms();
        threadpool_run(pool, part, &j);
        ms[r] = clock_ms_between(t0, clock_now_ns());
        cms[r] = (cpu_ms() - c0) / (double)threads;
    }
    qsort(ms, (size_t)reps, sizeof(double), cmp_double);
    qsort(cms, (size_t)reps, sizeof(double), cmp_double);
    double flop = 2.0 * (double)window * (double)cols * (double)ntok, bytes = (double)rb * window;
    double best = ms[0], med = ms[reps / 2], cmed = cms[reps / 2];
    printf("{\"type\":\"%s\",\"rows\":%lld,\"window\":%lld,\"cols\":%lld,\"ntok\":%lld,\"threads\":"
           "%lld,"
           "\"best_ms\":%.3f,\"median_ms\":%.3f,\"gflops\":%.2f,\"gflops_median\":%.2f,"
           "\"gbps\":%.2f,\"gbps_median\":%.2f,\"gflops_cpu_median\":%.2f}\n",
           type_traits(type)->name, rows, window, cols, ntok, threads, best, med, flop / best / 1e6,
           flop / med / 1e6, bytes / best / 1e6, bytes / med / 1e6, flop / cmed / 1e6);
    status = 0;
done:
    threadpool_free(pool);
    free(data), free(x), free(y), free(scratch), free(row), free(ms), free(cms);
    return status;
}
