/*
 * test_batch.c: several sequences in one context (model.h): a context_batch() pass that mixes
 * decode tokens of several sequences with prompt chunks of others gives each of them, bit for
 * bit, the logits it gets evaluated alone. Sequences at different positions, joining at
 * different steps, prompts fed in chunks of varied sizes, slots reused, rows given in any order,
 * passes wider than the internal batch of 64; on stories260K and on synthetic GQA models in F16,
 * Q8_0 and Q4_0, with 1 and 2 threads. And the errors of context_batch(), which change nothing.
 */
#include "common/err.h"
#include "tests/harness.h"
#include "tests/synth.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"
#include "workerd/engine/types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A sequence of the schedule: its slot, prompt length, decode steps and the step it joins at. */
struct seq_plan {
    uint32_t slot, n_prompt, n_decode, start;
};

/* Slot 3 is used twice (the second sequence joins after the first has ended); prompt lengths
 * cross the internal batch of 64; up to 7 sequences share a step (tiles of 6 tokens and more). */
static const struct seq_plan plan[] = {
    {3, 1, 5, 0}, {1, 5, 12, 0}, {7, 17, 9, 2}, {2, 70, 8, 3}, {5, 3, 14, 5},
    {4, 9, 3, 1}, {3, 4, 6, 8},  {0, 2, 10, 4}, {6, 6, 8, 5},
};
#define N_PLAN  (sizeof(plan) / sizeof(plan[0]))
#define N_SLOTS 8
#define MAX_DEC 14

static int32_t
plan_id(size_t i, uint32_t j, uint32_t n_vocab)
{
    return (int32_t)((i * 131 + j * 7919 + 1) % n_vocab);
}

/* The ids of sequence i: its prompt, then its decode tokens. */
static void
plan_ids(size_t i, uint32_t n_vocab, int32_t *ids)
{
    for (uint32_t j = 0; j < plan[i].n_prompt + plan[i].n_decode; j++)
        ids[j] = plan_id(i, j, n_vocab);
}

/*
 * Each planned sequence alone, in a context of one sequence: the logits after its prompt (row 0)
 * and after each decode token (rows 1..n_decode). n_vocab * (MAX_DEC + 1) floats per sequence.
 */
static float *
reference(const struct model *m, char *err)
{
    uint32_t n_vocab = model_config(m)->n_vocab;
    size_t per = (size_t)n_vocab * (MAX_DEC + 1);
    float *ref = calloc(N_PLAN * per, sizeof(float));
    struct context *c = NULL;
    int32_t ids[128];

    if (ref == NULL || context_new(&c, m, 1, 128, 1, err) != ERR_OK)
        goto fail;
    for (size_t i = 0; i < N_PLAN; i++) {
        float *r = ref + i * per;

        plan_ids(i, n_vocab, ids);
        context_truncate(c, 0, 0);
        if (context_eval(c, 0, ids, plan[i].n_prompt, false, r, err) != ERR_OK)
            goto fail;
        for (uint32_t j = 0; j < plan[i].n_decode; j++)
            if (context_eval(c, 0, ids + plan[i].n_prompt + j, 1, false, r + (j + 1) * n_vocab,
                             err) != ERR_OK)
                goto fail;
    }
    context_free(c);
    return ref;
fail:
    context_free(c);
    free(ref);
    return NULL;
}

/* Prompt chunk sizes, taken in turn: single rows, a few, and chunks that cross the internal
 * batch of 64 rows with the decode rows of the pass. */
static const uint32_t chunks[] = {1, 4, 13, 61, 2, 7};
#define N_CHUNKS (sizeof(chunks) / sizeof(chunks[0]))

/*
 * Runs the plan in one context of N_SLOTS sequences with n_threads, one context_batch() per step:
 * every decoding sequence's next token (in a different order each step) and, among them, a
 * chunk of the prompt of each sequence that joined and is still prefilling (its logits asked on
 * its last prompt row); a sequence decodes from the step after its prefill's last chunk. Returns
 * the number of rows compared; *diff the first row that differed from ref ("" when none);
 * *widest the most sequences in one pass, *mixed the passes with prompt and decode rows.
 */
static int
run_plan(const struct model *m, uint32_t n_threads, const float *ref, size_t *widest, size_t *mixed,
         char *diff, size_t n_diff, char *err)
{
    uint32_t n_vocab = model_config(m)->n_vocab;
    size_t per = (size_t)n_vocab * (MAX_DEC + 1);
    struct context *c = NULL;
    float *logits = malloc((size_t)N_PLAN * n_vocab * sizeof(float));
    struct context_row rows[256];
    int32_t ids[N_PLAN][128];
    uint32_t fed[N_PLAN] = {0}, done[N_PLAN] = {0}, n_chunk = 0;
    size_t who[N_PLAN];
    int compared = 0;

    diff[0] = '\0';
    if (logits == NULL || context_new(&c, m, N_SLOTS, 128, n_threads, err) != ERR_OK)
        goto fail;
    for (size_t i = 0; i < N_PLAN; i++)
        plan_ids(i, n_vocab, ids[i]);
    for (uint32_t step = 0; step < 48; step++) {
        size_t n = 0, n_out = 0, n_seqs = 0, n_dec = 0;

        for (size_t k = 0; k < N_PLAN; k++) {
            size_t i = step % 2 ? N_PLAN - 1 - k : (k + step) % N_PLAN;
            uint32_t s = plan[i].slot;

            if (plan[i].start > step || done[i] == plan[i].n_decode)
                continue;
            if (fed[i] == 0)
                context_truncate(c, s, 0);
            if (context_pos(c, s) != fed[i] + done[i]) {
                snprintf(diff, n_diff, "sequence %zu: position %u, expected %u", i,
                         context_pos(c, s), fed[i] + done[i]);
                goto fail;
            }
            n_seqs++;
            if (fed[i] < plan[i].n_prompt) { /* a prompt chunk */
                uint32_t len = chunks[n_chunk++ % N_CHUNKS];

                if (len > plan[i].n_prompt - fed[i])
                    len = plan[i].n_prompt - fed[i];
                for (uint32_t j = 0; j < len; j++)
                    rows[n++] = (struct context_row){s, ids[i][fed[i] + j], false};
                fed[i] += len;
                if (fed[i] < plan[i].n_prompt)
                    continue;
                rows[n - 1].logits = true;
            } else {
                rows[n++] = (struct context_row){s, ids[i][fed[i] + done[i]], true};
                n_dec++;
            }
            who[n_out++] = i;
        }
        if (n == 0)
            continue;
        *widest = n_seqs > *widest ? n_seqs : *widest;
        *mixed += n_dec > 0 && n_dec < n;
        if (context_batch(c, rows, n, logits, err) != ERR_OK)
            goto fail;
        for (size_t r = 0; r < n_out; r++) {
            size_t i = who[r];
            bool prefill = context_pos(c, plan[i].slot) == plan[i].n_prompt;

            compared++;
            if (memcmp(logits + r * n_vocab, ref + i * per + (prefill ? 0 : done[i] + 1) * n_vocab,
                       n_vocab * sizeof(float)) != 0 &&
                diff[0] == '\0')
                snprintf(diff, n_diff, "sequence %zu: %s (in a pass of %zu rows) differs", i,
                         prefill ? "prefill" : "a decode step", n);
            done[i] += !prefill;
        }
    }
    for (size_t i = 0; i < N_PLAN; i++)
        if (done[i] != plan[i].n_decode && diff[0] == '\0')
            snprintf(diff, n_diff, "sequence %zu: %u of %u steps", i, done[i], plan[i].n_decode);
    context_free(c);
    free(logits);
    return compared;
fail:
    context_free(c);
    free(logits);
    return -1;
}

/* The plan on m with 1 and 2 threads against the single-sequence reference on 1 thread. */
static void
check_model(const char *name, const struct model *m)
{
    char err[ERR_MSG_MAX] = "", diff[256] = "";
    float *ref = reference(m, err);
    int expect = 0, rows = 0;
    size_t widest = 0, mixed = 0;
    uint32_t threads;

    CHECKF(ref != NULL, "%s: reference: %s", name, err);
    for (size_t i = 0; i < N_PLAN; i++)
        expect += 1 + (int)plan[i].n_decode;
    for (threads = 1; threads <= 2; threads++)
        if ((rows = run_plan(m, threads, ref, &widest, &mixed, diff, sizeof(diff), err)) !=
                expect ||
            diff[0] != '\0')
            break;
    free(ref);
    CHECKF(rows >= 0, "%s, %u threads: %s %s", name, threads, err, diff);
    CHECKF(diff[0] == '\0', "%s, %u threads: %s", name, threads, diff);
    CHECKF(rows == expect, "%s: %d rows compared, expected %d", name, rows, expect);
    CHECKF(widest >= 7, "%s: at most %zu sequences in a pass, expected 7 or more", name, widest);
    CHECKF(mixed >= 10, "%s: %zu passes mixed prompt chunks and decode rows", name, mixed);
}

static void
test_batch_invariance_stories260K(void)
{
    char path[512], err[ERR_MSG_MAX];
    struct gguf *g;
    struct model *m;

    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return;
    CHECKF(gguf_open(&g, path, err) == ERR_OK, "%s", err);
    CHECKF(model_load(&m, g, err) == ERR_OK, "%s", err);
    check_model("stories260K", m);
    model_free(m);
    gguf_close(g);
}

/* GQA (8 heads, 2 KV heads), big enough for the matrix products to use both threads. */
static void
test_batch_invariance_synthetic_gqa(void)
{
    static const uint32_t types[] = {TYPE_F16, TYPE_Q8_0, TYPE_Q4_0};

    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        struct synth_config cfg;
        char path[600], err[ERR_MSG_MAX];
        const char *name = type_traits(types[t])->name;
        struct gguf *g;
        struct model *m;

        synth_config_default(&cfg, SYNTH_ARCH_LLAMA);
        cfg.n_head_kv = 2;
        cfg.type = types[t];
        cfg.seed = 11 + t;
        snprintf(path, sizeof(path), "%s/gqa-%s.gguf", harness_tmpdir(), name);
        CHECKF(synth_write_file(&cfg, path, err) == ERR_OK, "%s: %s", name, err);
        CHECKF(gguf_open(&g, path, err) == ERR_OK, "%s: %s", name, err);
        CHECKF(model_load(&m, g, err) == ERR_OK, "%s: %s", name, err);
        check_model(name, m);
        model_free(m);
        gguf_close(g);
    }
}

/* 70 sequences in one step (two internal batches: 64 + 6), rows in a scrambled order. */
#define WIDE 70

static void
test_batch_wider_than_ubatch(void)
{
    char path[512], err[ERR_MSG_MAX];
    struct gguf *g;
    struct model *m;
    struct context *one, *many;
    static float ref[WIDE][512], out[WIDE * 512], tmp[512];
    struct context_row rows[WIDE];
    int32_t ids[WIDE], prompt[3];

    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return;
    CHECKF(gguf_open(&g, path, err) == ERR_OK, "%s", err);
    CHECKF(model_load(&m, g, err) == ERR_OK, "%s", err);
    CHECKF(context_new(&one, m, 1, 8, 2, err) == ERR_OK, "%s", err);
    CHECKF(context_new(&many, m, WIDE, 8, 2, err) == ERR_OK, "%s", err);
    CHECK(context_n_seq(many) == WIDE && context_n_ctx(many) == 8);
    for (uint32_t r = 0; r < WIDE; r++) {
        uint32_t s = (r * 17 + 5) % WIDE; /* row r is sequence s */
        size_t n_prompt = 1 + s % 3;

        for (size_t j = 0; j < n_prompt; j++)
            prompt[j] = (int32_t)((s * 37 + j * 11 + 1) % 512);
        ids[r] = (int32_t)((s * 53 + 7) % 512);
        rows[r] = (struct context_row){s, ids[r], true};
        context_truncate(one, 0, 0);
        CHECKF(context_eval(one, 0, prompt, n_prompt, false, tmp, err) == ERR_OK, "%s", err);
        CHECKF(context_eval(one, 0, &ids[r], 1, false, ref[r], err) == ERR_OK, "%s", err);
        CHECKF(context_eval(many, s, prompt, n_prompt, false, tmp, err) == ERR_OK, "%s", err);
    }
    CHECKF(context_batch(many, rows, WIDE, out, err) == ERR_OK, "%s", err);
    for (uint32_t r = 0; r < WIDE; r++) {
        CHECKF(memcmp(out + (size_t)r * 512, ref[r], sizeof(ref[r])) == 0,
               "row %u (sequence %u) differs", r, rows[r].seq);
        CHECK(context_pos(many, rows[r].seq) == 2 + rows[r].seq % 3);
    }
    context_free(one);
    context_free(many);
    model_free(m);
    gguf_close(g);
}

/* The errors of context_batch(), which change nothing; a sequence's rows take its next
 * positions (given twice: two positions); rows without logits asked give none. */
static void
test_batch_errors(void)
{
    char path[512], err[ERR_MSG_MAX];
    struct gguf *g;
    struct model *m;
    struct context *c;
    static float out[4 * 512];
    int32_t ids[4] = {1, 403, 407, 261};
    struct context_row three[3] = {{0, 1, true}, {2, 403, true}, {1, 407, true}};
    struct context_row far[2] = {{0, 1, true}, {3, 1, true}};
    struct context_row bad[2] = {{0, 1, true}, {2, 512, true}};
    struct context_row twice[3] = {{1, 1, false}, {0, 403, true}, {1, 407, true}};

    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return;
    CHECKF(gguf_open(&g, path, err) == ERR_OK, "%s", err);
    CHECKF(model_load(&m, g, err) == ERR_OK, "%s", err);
    CHECK(context_new(&c, m, 0, 4, 1, err) == ERR_BAD_REQUEST && c == NULL);
    CHECKF(strstr(err, "sequence count") != NULL, "%s", err);
    CHECKF(context_new(&c, m, 3, 4, 1, err) == ERR_OK, "%s", err);
    CHECK(context_eval(c, 3, ids, 1, false, out, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "sequence 3") != NULL, "%s", err);
    CHECK(context_eval(c, 2, ids, 2, false, out, err) == ERR_OK);
    CHECK(context_batch(c, three, 0, out, err) == ERR_BAD_REQUEST);
    CHECK(context_batch(c, far, 2, out, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "sequence 3 at index 1") != NULL, "%s", err);
    CHECK(context_batch(c, bad, 2, out, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "512 at index 1") != NULL, "%s", err);
    CHECK(context_pos(c, 0) == 0 && context_pos(c, 1) == 0 && context_pos(c, 2) == 2);
    CHECK(context_batch(c, twice, 3, out, err) == ERR_OK);
    CHECK(context_pos(c, 0) == 1 && context_pos(c, 1) == 2 && context_pos(c, 2) == 2);
    CHECK(context_batch(c, three, 3, out, err) == ERR_OK);
    CHECK(context_pos(c, 0) == 2 && context_pos(c, 1) == 3 && context_pos(c, 2) == 3);
    /* sequence 1 given twice more does not fit: nothing moves, the others included */
    CHECK(context_batch(c, twice, 3, out, err) == ERR_CONTEXT_FULL);
    CHECKF(strcmp(err, "sequence 1: position 4 is past the context length 4") == 0, "%s", err);
    CHECK(context_pos(c, 0) == 2 && context_pos(c, 1) == 3 && context_pos(c, 2) == 3);
    CHECK(context_batch(c, three, 3, NULL, err) == ERR_OK);
    CHECK(context_pos(c, 0) == 3 && context_pos(c, 1) == 4 && context_pos(c, 2) == 4);
    context_free(c);
    model_free(m);
    gguf_close(g);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_batch_invariance_stories260K),
        TEST(test_batch_invariance_synthetic_gqa),
        TEST(test_batch_wider_than_ubatch),
        TEST(test_batch_errors),
        {0},
    };

    return harness_run(tests, argc, argv);
}
