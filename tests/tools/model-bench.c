/*
 * model-bench.c: `model-bench -m MODEL [-p N_PROMPT] [-n N_GEN] [-t THREADS] [-b BATCH] [-j
 * N_JOIN]`: times the forward pass alone (no tokenizer, no sampler): BATCH sequences (default 1),
 * each a prompt of N_PROMPT ids evaluated as one batch (prefill), then N_GEN decode steps, each
 * one context_batch() of one token per sequence, fed the argmax of its last logits. Prints one
 * JSON line with tokens/s of both (decode: all sequences' tokens, the aggregate) and the process
 * CPU time of the decode. With -j, a prompt of N_JOIN ids then joins the running sequences twice:
 * prefilled whole between two decode steps, and in chunks inside the steps (64 rows a pass, as
 * generate_batch does); the line adds the running streams' longest gap between two tokens in
 * each case. For measuring the engine, not a benchmark suite.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/opt.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* CPU time of the process (every thread), in nanoseconds. */
static uint64_t
cpu_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
usage(void)
{
    fprintf(stderr, "usage: model-bench -m MODEL [-p N_PROMPT] [-n N_GEN] [-t THREADS] [-b BATCH] "
                    "[-j N_JOIN]\n");
}

/* The join figures: the gap a prompt of n_join ids puts between two tokens of the n_seq running
 * sequences when prefilled whole between two steps, then when fed by chunks of what 64 rows a
 * pass leave (the decode ids are not sampled: any ids time the same). */
struct join {
    double whole_ms, chunk_max_ms, chunk_mean_ms;
    uint32_t steps;
};

static int
join_bench(struct context *c, uint32_t n_seq, struct context_row *rows, const int32_t *jids,
           uint32_t n_join, float *logits, struct join *out, char *err)
{
    uint64_t t0 = clock_now_ns(), t1;
    uint32_t fed = 0;
    int rc;

    if ((rc = context_eval(c, n_seq, jids, n_join, false, logits, err)) != ERR_OK ||
        (rc = context_batch(c, rows, n_seq, logits, err)) != ERR_OK)
        return rc;
    out->whole_ms = clock_ms_between(t0, clock_now_ns());
    context_truncate(c, n_seq, 0);
    t0 = clock_now_ns();
    for (t1 = t0; fed < n_join; out->steps++) {
        uint32_t n = n_seq, len = n_join - fed < 64 - n_seq ? n_join - fed : 64 - n_seq;
        uint64_t t2;

        for (uint32_t k = 0; k < len; k++)
            rows[n++] = (struct context_row){n_seq, jids[fed + k], fed + k + 1 == n_join};
        fed += len;
        if ((rc = context_batch(c, rows, n, logits, err)) != ERR_OK)
            return rc;
        t2 = clock_now_ns();
        if (clock_ms_between(t1, t2) > out->chunk_max_ms)
            out->chunk_max_ms = clock_ms_between(t1, t2);
        t1 = t2;
    }
    out->chunk_mean_ms = clock_ms_between(t0, t1) / out->steps;
    return ERR_OK;
}

int
main(int argc, char **argv)
{
    const char *path = NULL;
    long long n_prompt = 128, n_gen = 32, threads = 2, batch = 1, n_join = 0;
    struct join join = {0};
    char err[ERR_MSG_MAX];
    struct gguf *g = NULL;
    struct model *m = NULL;
    struct context *c = NULL;
    int status = 1;

    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = ERR_OK;
        if (v == NULL) {
            usage();
            return 2;
        }
        if (strcmp(argv[i], "-m") == 0)
            path = v;
        else if (strcmp(argv[i], "-p") == 0)
            rc = opt_int("-p", v, 1, 1 << 20, &n_prompt, err);
        else if (strcmp(argv[i], "-n") == 0)
            rc = opt_int("-n", v, 0, 1 << 20, &n_gen, err);
        else if (strcmp(argv[i], "-t") == 0)
            rc = opt_int("-t", v, 1, 1024, &threads, err);
        else if (strcmp(argv[i], "-b") == 0)
            rc = opt_int("-b", v, 1, 256, &batch, err);
        else if (strcmp(argv[i], "-j") == 0)
            rc = opt_int("-j", v, 0, 1 << 20, &n_join, err);
        else {
            usage();
            return 2;
        }
        if (rc != ERR_OK) {
            fprintf(stderr, "model-bench: %s\n", err);
            return 2;
        }
        i++;
    }
    if (path == NULL) {
        usage();
        return 2;
    }
    if (gguf_open(&g, path, err) != ERR_OK || model_load(&m, g, err) != ERR_OK) {
        fprintf(stderr, "model-bench: %s: %s\n", path, err);
        gguf_close(g);
        return 2;
    }
    uint32_t n_vocab = model_config(m)->n_vocab, n_seq = (uint32_t)batch;
    size_t n_ids = (size_t)(n_prompt > n_join ? n_prompt : n_join);
    int32_t *ids = malloc(n_ids * sizeof(*ids));
    struct context_row *rows = malloc((n_seq + 64) * sizeof(*rows));
    float *logits = malloc((size_t)(n_seq + 1) * n_vocab * sizeof(float));
    /* room for the join's steps (-j) after the decode, and the joining sequence itself */
    uint32_t n_ctx = (uint32_t)(n_prompt + n_gen + 2 + (n_join > 0 ? n_join : 0));
    if (batch + (n_join > 0) > 63) {
        snprintf(err, sizeof(err), "-j: at most 62 running sequences");
        goto fail;
    }
    if (context_new(&c, m, n_seq + (n_join > 0), n_ctx, (uint32_t)threads, err) != ERR_OK)
        goto fail;
    uint64_t t0 = clock_now_ns();
    for (uint32_t s = 0; s < n_seq; s++) { /* each sequence its own prompt */
        for (long i = 0; i < n_prompt; i++)
            ids[i] = (int32_t)(1 + (i * 7919 + s * 104729) % (n_vocab - 1));
        if (context_eval(c, s, ids, (size_t)n_prompt, false, logits + (size_t)s * n_vocab, err) !=
            ERR_OK)
            goto fail;
    }
    uint64_t t1 = clock_now_ns(), cpu1 = cpu_now_ns();
    for (long k = 0; k < n_gen; k++) {
        for (uint32_t s = 0; s < n_seq; s++) {
            const float *l = logits + (size_t)s * n_vocab;
            rows[s] = (struct context_row){s, 0, true};
            for (uint32_t i = 1; i < n_vocab; i++)
                rows[s].id = l[i] > l[rows[s].id] ? (int32_t)i : rows[s].id;
        }
        if (context_batch(c, rows, n_seq, logits, err) != ERR_OK)
            goto fail;
    }
    uint64_t t2 = clock_now_ns(), cpu2 = cpu_now_ns();
    double pms = clock_ms_between(t0, t1), dms = clock_ms_between(t1, t2);
    double cpu_ms = clock_ms_between(cpu1, cpu2);
    for (long i = 0; i < n_join; i++)
        ids[i] = (int32_t)(1 + (i * 104723) % (n_vocab - 1));
    if (n_join > 0 &&
        join_bench(c, n_seq, rows, ids, (uint32_t)n_join, logits, &join, err) != ERR_OK)
        goto fail;
    printf("{\"model\":\"%s\",\"threads\":%lld,\"batch\":%lld,\"prefill_tokens\":%lld,"
           "\"prefill_ms\":%.1f,\"prefill_tps\":%.2f,\"decode_tokens\":%lld,\"decode_ms\":%.1f,"
           "\"decode_tps\":%.2f,\"decode_cpu_ms\":%.1f",
           path, threads, batch, n_prompt * batch, pms, n_prompt * batch * 1000.0 / pms,
           n_gen * batch, dms, n_gen > 0 ? n_gen * batch * 1000.0 / dms : 0.0, cpu_ms);
    if (n_join > 0)
        printf(",\"join_tokens\":%lld,\"join_whole_gap_ms\":%.1f,\"join_chunk_steps\":%u,"
               "\"join_chunk_max_gap_ms\":%.1f,\"join_chunk_mean_gap_ms\":%.1f",
               n_join, join.whole_ms, join.steps, join.chunk_max_ms, join.chunk_mean_ms);
    printf("}\n");
    status = 0;
fail:
    if (status != 0)
        fprintf(stderr, "model-bench: %s\n", err);
    context_free(c);
    model_free(m);
    gguf_close(g);
    free(ids);
    free(rows);
    free(logits);
    return status;
}
