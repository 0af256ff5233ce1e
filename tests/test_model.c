/*
 * test_model.c: the forward pass against llama.cpp (../shared/ref): every case of the reference
 * .jsonl files of every model there (float and quantized), teacher-forced (top-1, top-5 logits,
 * lse, and the full logits where kept) and greedy; stage by stage on stories260K against
 * llama.cpp's intermediate tensors; determinism (1 vs 2 threads, batch vs one token, AVX2 vs
 * scalar: bit-identical); synthetic shapes (GQA, MQA, tied output, rope bases 5e5 / 1e6,
 * Llama-3.1 and linear rope scaling) against a naive double-precision forward written here;
 * context errors; refusals by name (tensor type, architecture, rope scaling). Writes a proof
 * bundle (.proof_bundle/validation/<run_id>/, see docs/engine.md) with what each check measured.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/sha256.h"
#include "tests/gguf_write.h"
#include "tests/harness.h"
#include "tests/synth.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/kernels.h"
#include "workerd/engine/model.h"
#include "workerd/engine/types.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define THREADS 2

/* What the proof bundle collects while the tests run; written at the end of main(). */
static json_t *bundle;

static json_t *
bundle_list(const char *key)
{
    json_t *a = json_object_get(bundle, key);

    if (a == NULL) {
        a = json_array();
        json_object_set_new(bundle, key, a);
    }
    return a;
}

/* A model from ../shared, opened and loaded; false (after a skip or failure line) if not. */
struct loaded {
    char path[512];
    struct gguf *g;
    struct model *m;
};

static bool
load(const char *rel, struct loaded *l, char *err)
{
    memset(l, 0, sizeof(*l));
    err[0] = '\0';
    if (!harness_shared(l->path, sizeof(l->path), rel))
        return false;
    if (gguf_open(&l->g, l->path, err) != ERR_OK || model_load(&l->m, l->g, err) != ERR_OK) {
        gguf_close(l->g);
        l->g = NULL;
        return false;
    }
    return true;
}

static void
unload(struct loaded *l)
{
    model_free(l->m);
    gguf_close(l->g);
}

static uint32_t
argmax(const float *l, uint32_t n)
{
    uint32_t best = 0;

    for (uint32_t i = 1; i < n; i++)
        if (l[i] > l[best]) /* strict: the lowest id wins a tie */
            best = i;
    return best;
}

static double
lse(const float *l, uint32_t n)
{
    float max = l[argmax(l, n)];
    double s = 0;

    for (uint32_t i = 0; i < n; i++)
        s += exp((double)l[i] - max);
    return max + log(s);
}

static int32_t *
json_ids(const json_t *a, size_t extra, size_t *n)
{
    int32_t *ids = malloc((json_array_size(a) + extra + 1) * sizeof(*ids));

    for (size_t i = 0; i < json_array_size(a); i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    *n = json_array_size(a);
    return ids;
}

/* ---- reference cases ---- */

struct ref_model {
    const char *gguf;
    const char *jsonl;
    const char *type;
    float tol;
};

static const struct ref_model ref_models[] = {
    {"models/stories260K.gguf", "ref/stories260K.jsonl", "f32", 1e-2f},
    {"models/derived/stories260K-F16.gguf", "ref/stories260K-F16.jsonl", "f16", 5e-2f},
    {"models/llama-2-tiny-random.gguf", "ref/llama-2-tiny-random.jsonl", "f16", 5e-2f},
    {"models/small/p-llama-gqa-F16.gguf", "ref/p-llama-gqa-F16.jsonl", "f16", 5e-2f},
    {"models/small/p-llama-gqa-BF16.gguf", "ref/p-llama-gqa-BF16.jsonl", "bf16", 0.15f},
    {"models/small/p-qwen2-bias-F32.gguf", "ref/p-qwen2-bias-F32.jsonl", "f32", 1e-2f},
    {"models/small/p-qwen2-bias-F16.gguf", "ref/p-qwen2-bias-F16.jsonl", "f16", 5e-2f},
};

/*
 * Quantized files (tolerance 0.5): every quantized model in ../shared/ref. The type column is
 * what the file's matrices are (mixes fall back to 32-element types where a row is not a
 * multiple of 256; p-llama-gqa's 32-element files keep a Q6_K output).
 */
static const struct ref_model quant_models[] = {
    {"models/derived/stories260K-Q4_K_M.gguf", "ref/stories260K-Q4_K_M.jsonl", "q5_0+q8_0+f16",
     0.5f},
    {"models/derived/stories260K-Q5_K_M.gguf", "ref/stories260K-Q5_K_M.jsonl", "q5_1+q8_0+f16",
     0.5f},
    {"models/derived/stories260K-Q6_K.gguf", "ref/stories260K-Q6_K.jsonl", "q8_0+f16", 0.5f},
    {"models/small/p-llama-gqa-Q8_0.gguf", "ref/p-llama-gqa-Q8_0.jsonl", "q8_0", 0.5f},
    {"models/small/p-llama-gqa-Q4_0.gguf", "ref/p-llama-gqa-Q4_0.jsonl", "q4_0+q6_k", 0.5f},
    {"models/small/p-llama-gqa-Q4_1.gguf", "ref/p-llama-gqa-Q4_1.jsonl", "q4_1+q6_k", 0.5f},
    {"models/small/p-llama-gqa-Q5_0.gguf", "ref/p-llama-gqa-Q5_0.jsonl", "q5_0+q6_k", 0.5f},
    {"models/small/p-llama-gqa-Q5_1.gguf", "ref/p-llama-gqa-Q5_1.jsonl", "q5_1+q6_k", 0.5f},
    {"models/small/p-llama-gqa-Q2_K.gguf", "ref/p-llama-gqa-Q2_K.jsonl", "q2_k+q3_k+q4_k+q6_k",
     0.5f},
    {"models/small/p-llama-gqa-Q3_K_M.gguf", "ref/p-llama-gqa-Q3_K_M.jsonl", "q3_k+q4_k+q5_k+q6_k",
     0.5f},
    {"models/small/p-llama-gqa-Q4_K_M.gguf", "ref/p-llama-gqa-Q4_K_M.jsonl", "q4_k+q6_k", 0.5f},
    {"models/small/p-llama-gqa-Q5_K_M.gguf", "ref/p-llama-gqa-Q5_K_M.jsonl", "q5_k+q6_k", 0.5f},
    {"models/small/p-llama-gqa-Q6_K.gguf", "ref/p-llama-gqa-Q6_K.jsonl", "q6_k", 0.5f},
    {"models/small/p-llama-gqa-pure-Q2_K.gguf", "ref/p-llama-gqa-pure-Q2_K.jsonl", "q2_k", 0.5f},
    {"models/small/p-llama-gqa-pure-Q3_K.gguf", "ref/p-llama-gqa-pure-Q3_K.jsonl", "q3_k", 0.5f},
    {"models/small/p-llama-gqa-pure-Q4_K.gguf", "ref/p-llama-gqa-pure-Q4_K.jsonl", "q4_k", 0.5f},
    {"models/small/p-llama-gqa-pure-Q5_K.gguf", "ref/p-llama-gqa-pure-Q5_K.jsonl", "q5_k", 0.5f},
    {"models/small/p-qwen2-bias-Q8_0.gguf", "ref/p-qwen2-bias-Q8_0.jsonl", "q8_0", 0.5f},
    {"models/small/p-qwen2-bias-Q4_K_M.gguf", "ref/p-qwen2-bias-Q4_K_M.jsonl", "q4_k+q6_k", 0.5f},
};

/*
 * Under AddressSanitizer the integer kernels' scalar paths run ~25x slower, so each quantized
 * model runs two of its eight cases there (BOS alone, and 151 positions across three batches):
 * every type's code is still exercised under the sanitizers; `make test` runs every case.
 */
#if defined(__SANITIZE_ADDRESS__)
#define QUANT_CASES_SANITIZED 1
#else
#define QUANT_CASES_SANITIZED 0
#endif

static bool
case_wanted(const struct ref_model *rm, const json_t *cs)
{
    const char *id = json_string_value(json_object_get(cs, "id"));

    if (!QUANT_CASES_SANITIZED || rm->tol < 0.5f)
        return true;
    return id != NULL &&
           (strcmp(id, "p01_empty_bos_only") == 0 || strcmp(id, "p03_digits_punct") == 0);
}

struct case_result {
    double top5, lse, full; /* max |delta| over the reference's top-5 logits, lse, all logits */
    int top1_checked, greedy_checked, greedy_steps;
    char logits_sha256[65];  /* of the teacher-forced logits' bytes: compare runs and machines */
    int32_t greedy_ids[256]; /* the tokens greedy generation produced (until a near-tie) */
    char fail[1024];         /* empty when the case passed */
};

/* |mine - ref| over ref's top-5 ids and the lse of one position; false on a top-1 mismatch. */
static bool
check_position(const float *l, uint32_t n_vocab, const json_t *ref, float tol, double *top5,
               double *dl, int *top1_checked)
{
    const json_t *top = json_object_get(ref, "top");
    double margin = json_real_value(json_array_get(json_array_get(top, 0), 1)) -
                    json_real_value(json_array_get(json_array_get(top, 1), 1));

    for (size_t k = 0; k < 5 && k < json_array_size(top); k++) {
        const json_t *e = json_array_get(top, k);
        uint32_t id = (uint32_t)json_integer_value(json_array_get(e, 0));
        *top5 = fmax(*top5, fabs(l[id] - json_real_value(json_array_get(e, 1))));
    }
    *dl = fmax(*dl, fabs(lse(l, n_vocab) - json_real_value(json_object_get(ref, "lse"))));
    if (margin <= tol)
        return true;
    (*top1_checked)++;
    return argmax(l, n_vocab) ==
           (uint32_t)json_integer_value(json_array_get(json_array_get(top, 0), 0));
}

static void
run_case(const struct model *m, const json_t *cs, float tol, const char *full_path,
         struct case_result *r)
{
    uint32_t n_vocab = model_config(m)->n_vocab;
    const json_t *positions = json_object_get(cs, "positions");
    const json_t *gen = json_object_get(cs, "gen_ids");
    const json_t *margins = json_object_get(cs, "gen_margin");
    const json_t *steps = json_object_get(cs, "gen_steps");
    size_t n_prompt, n_gen = json_array_size(gen), n;
    int32_t *ids = json_ids(json_object_get(cs, "prompt_ids"), n_gen, &n_prompt);
    float *logits = NULL;
    struct context *c = NULL;
    char err[ERR_MSG_MAX];

    memset(r, 0, sizeof(*r));
    for (size_t i = 0; i + 1 < n_gen; i++)
        ids[n_prompt + i] = (int32_t)json_integer_value(json_array_get(gen, i));
    n = n_prompt + n_gen - 1;
    logits = malloc(n * n_vocab * sizeof(float));
    if (context_new(&c, m, 1, (uint32_t)(n + 1), THREADS, err) != ERR_OK ||
        context_eval(c, 0, ids, n, true, logits, err) != ERR_OK) {
        snprintf(r->fail, sizeof(r->fail), "%s", err);
        goto out;
    }
    if (json_array_size(positions) != n) {
        snprintf(r->fail, sizeof(r->fail), "reference has %zu positions, expected %zu",
                 json_array_size(positions), n);
        goto out;
    }
    /* teacher-forced */
    {
        struct sha256 h;
        uint8_t d[32];
        sha256_init(&h);
        sha256_update(&h, logits, n * n_vocab * sizeof(float));
        sha256_final(&h, d);
        for (int i = 0; i < 32; i++)
            snprintf(r->logits_sha256 + 2 * i, 3, "%02x", d[i]);
    }
    for (size_t i = 0; i < n; i++)
        if (!check_position(logits + i * n_vocab, n_vocab, json_array_get(positions, i), tol,
                            &r->top5, &r->lse, &r->top1_checked) &&
            r->fail[0] == '\0')
            snprintf(r->fail, sizeof(r->fail), "position %zu: top-1 %u differs from llama.cpp's", i,
                     argmax(logits + i * n_vocab, n_vocab));
    if (full_path != NULL) {
        FILE *f = fopen(full_path, "rb");
        float *ref = malloc(n * n_vocab * sizeof(float));
        size_t got = f ? fread(ref, sizeof(float), n * n_vocab, f) : 0;
        if (f)
            fclose(f);
        if (got != n * n_vocab && r->fail[0] == '\0')
            snprintf(r->fail, sizeof(r->fail), "%s: %zu floats, expected %zu", full_path, got,
                     n * n_vocab);
        for (size_t i = 0; got == n * n_vocab && i < n * n_vocab; i++)
            r->full = fmax(r->full, fabs(logits[i] - ref[i]));
        free(ref);
    }
    /* greedy: prefill the prompt, then one token per step, up to the first near-tie */
    context_truncate(c, 0, 0);
    if (context_eval(c, 0, ids, n_prompt, false, logits, err) != ERR_OK) {
        snprintf(r->fail, sizeof(r->fail), "greedy prefill: %s", err);
        goto out;
    }
    for (size_t k = 0; k < n_gen; k++) {
        if (json_real_value(json_array_get(margins, k)) < tol)
            break;
        int32_t tok = (int32_t)argmax(logits, n_vocab);
        if (k < sizeof(r->greedy_ids) / sizeof(r->greedy_ids[0]))
            r->greedy_ids[k] = tok;
        double top5 = 0, dl = 0;
        int checked = 0;
        check_position(logits, n_vocab, json_array_get(steps, k), tol, &top5, &dl, &checked);
        r->top5 = fmax(r->top5, top5);
        r->lse = fmax(r->lse, dl);
        r->greedy_checked++;
        if (tok != (int32_t)json_integer_value(json_array_get(gen, k))) {
            if (r->fail[0] == '\0')
                snprintf(r->fail, sizeof(r->fail), "greedy step %zu: %d, llama.cpp %d", k, tok,
                         (int)json_integer_value(json_array_get(gen, k)));
            break;
        }
        if (k + 1 < n_gen && context_eval(c, 0, &tok, 1, false, logits, err) != ERR_OK) {
            snprintf(r->fail, sizeof(r->fail), "greedy step %zu: %s", k, err);
            break;
        }
    }
    r->greedy_steps = (int)n_gen;
    if (r->fail[0] == '\0' && (r->top5 > tol || r->lse > tol || r->full > tol))
        snprintf(r->fail, sizeof(r->fail), "max |delta| top-5 %.4g, lse %.4g, full %.4g > %g",
                 r->top5, r->lse, r->full, tol);
out:
    context_free(c);
    free(ids);
    free(logits);
}

static void
run_ref_model(const struct ref_model *rm)
{
    char path[512], err[ERR_MSG_MAX], sha[65] = "";
    struct loaded l;
    FILE *f;
    char *line = NULL;
    size_t cap = 0;
    int n_cases = 0, n_failed = 0, n_skipped = 0;
    json_t *entry, *cases;

    if (!harness_shared(path, sizeof(path), rm->jsonl))
        return;
    if (!load(rm->gguf, &l, err)) {
        CHECKF(err[0] == '\0', "%s: %s", rm->gguf, err);
        return;
    }
    sha256_file_hex(l.path, sha, err);
    cases = json_array();
    entry = json_pack("{s:s, s:s, s:s, s:f}", "model", rm->gguf, "sha256", sha, "type", rm->type,
                      "tolerance", rm->tol);
    json_object_set_new(entry, "cases", cases);
    json_array_append_new(bundle_list("reference_cases"), entry);
    f = fopen(path, "r");
    CHECKF(f != NULL, "%s: %s", path, strerror(errno));
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *cs = json_loads(line, JSON_ALLOW_NUL, &je);
        const char *full = json_string_value(json_object_get(cs, "full_logits_file"));
        char full_rel[256], full_path[512];
        struct case_result r;

        if (cs == NULL) {
            n_failed++;
            printf("  %s: bad JSON line: %s\n", rm->jsonl, je.text);
            continue;
        }
        if (!case_wanted(rm, cs)) {
            n_skipped++;
            json_decref(cs);
            continue;
        }
        snprintf(full_rel, sizeof(full_rel), "ref/%s", full ? full : "");
        bool have_full = full != NULL && harness_shared(full_path, sizeof(full_path), full_rel);
        run_case(l.m, cs, rm->tol, have_full ? full_path : NULL, &r);
        n_cases++;
        if (r.fail[0] != '\0') {
            n_failed++;
            printf("  %s %s: %s\n", rm->gguf, json_string_value(json_object_get(cs, "id")), r.fail);
        }
        json_t *greedy = json_array();
        for (int k = 0; k < r.greedy_checked && k < 256; k++)
            json_array_append_new(greedy, json_integer(r.greedy_ids[k]));
        json_array_append_new(
            cases,
            json_pack("{s:s, s:O, s:f, s:f, s:f, s:i, s:i, s:i, s:o, s:s, s:b, s:s}", "id",
                      json_string_value(json_object_get(cs, "id")), "prompt_ids",
                      json_object_get(cs, "prompt_ids"), "max_delta_top5", r.top5, "max_delta_lse",
                      r.lse, "max_delta_full_logits", r.full, "top1_positions_checked",
                      r.top1_checked, "greedy_steps_compared", r.greedy_checked, "greedy_steps",
                      r.greedy_steps, "greedy_ids", greedy, "logits_sha256", r.logits_sha256,
                      "pass", r.fail[0] == '\0', "failure", r.fail));
        json_decref(cs);
    }
    free(line);
    fclose(f);
    unload(&l);
    CHECKF(n_cases + n_skipped == 8 && n_cases >= 2,
           "%s: %d cases (%d left for make test), expected 8", rm->jsonl, n_cases, n_skipped);
    CHECKF(n_failed == 0, "%s: %d of %d cases failed", rm->gguf, n_failed, n_cases);
}

static void
test_ref_stories260K(void)
{
    run_ref_model(&ref_models[0]);
}

static void
test_ref_stories260K_F16(void)
{
    run_ref_model(&ref_models[1]);
}

static void
test_ref_llama2_tiny_random(void)
{
    run_ref_model(&ref_models[2]);
}

static void
test_ref_p_llama_gqa_F16(void)
{
    run_ref_model(&ref_models[3]);
}

static void
test_ref_p_llama_gqa_BF16(void)
{
    run_ref_model(&ref_models[4]);
}

static void
test_ref_p_qwen2_bias_F32(void)
{
    run_ref_model(&ref_models[5]);
}

static void
test_ref_p_qwen2_bias_F16(void)
{
    run_ref_model(&ref_models[6]);
}

/* The quantized models whose path contains `family`, in table order. */
static void
run_quant_family(const char *family)
{
    int n = 0;

    for (size_t i = 0; i < sizeof(quant_models) / sizeof(quant_models[0]); i++)
        if (strstr(quant_models[i].gguf, family) != NULL) {
            run_ref_model(&quant_models[i]);
            n++;
        }
    CHECKF(n > 0, "no quantized model of %s in the table", family);
}

static void
test_ref_quant_stories260K(void)
{
    run_quant_family("/stories260K-Q");
}

static void
test_ref_quant_p_llama_gqa(void)
{
    run_quant_family("/p-llama-gqa-");
}

static void
test_ref_quant_p_qwen2_bias(void)
{
    run_quant_family("/p-qwen2-bias-");
}

/* ---- determinism ---- */

/* The ids of a reference case: its prompt and all but the last generated token. */
static int32_t *
case_ids(const char *jsonl_rel, const char *id, size_t *n)
{
    char path[512], *line = NULL;
    size_t cap = 0;
    int32_t *ids = NULL;
    FILE *f;

    *n = 0;
    if (!harness_shared(path, sizeof(path), jsonl_rel) || (f = fopen(path, "r")) == NULL)
        return NULL;
    while (ids == NULL && getline(&line, &cap, f) > 0) {
        json_t *cs = json_loads(line, JSON_ALLOW_NUL, NULL);
        if (cs != NULL && strcmp(json_string_value(json_object_get(cs, "id")), id) == 0) {
            const json_t *gen = json_object_get(cs, "gen_ids");
            size_t np;
            ids = json_ids(json_object_get(cs, "prompt_ids"), json_array_size(gen), &np);
            for (size_t i = 0; i + 1 < json_array_size(gen); i++)
                ids[np + i] = (int32_t)json_integer_value(json_array_get(gen, i));
            *n = np + json_array_size(gen) - 1;
        }
        json_decref(cs);
    }
    free(line);
    fclose(f);
    return ids;
}

/* Logits of ids evaluated in chunks of `chunk` tokens (all logits) with n_threads threads. */
static float *
eval_chunks(const struct model *m, const int32_t *ids, size_t n, size_t chunk, uint32_t n_threads,
            char *err)
{
    uint32_t n_vocab = model_config(m)->n_vocab;
    float *logits = malloc(n * n_vocab * sizeof(float));
    struct context *c;

    if (context_new(&c, m, 1, (uint32_t)n, n_threads, err) != ERR_OK) {
        free(logits);
        return NULL;
    }
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        if (context_eval(c, 0, ids + i, k, true, logits + i * n_vocab, err) != ERR_OK) {
            free(logits);
            logits = NULL;
            break;
        }
    }
    context_free(c);
    return logits;
}

static void
record_determinism(const char *model, const char *what, size_t n, bool same)
{
    json_array_append_new(bundle_list("determinism"),
                          json_pack("{s:s, s:s, s:i, s:b}", "model", model, "check", what, "tokens",
                                    (int)n, "bit_identical", same));
}

/* 1 vs 2 threads, one batch vs one token at a time vs chunks of 7: bit-identical logits, on F32,
 * F16 and BF16 weights. */
static void
test_determinism_threads_and_batches(void)
{
    /* stories260K with the longest case (past the internal batch of 64, twice); shorter on the
     * others */
    static const char *const models[][3] = {
        {"models/stories260K.gguf", "ref/stories260K.jsonl", "p08_story_long"},
        {"models/small/p-llama-gqa-F16.gguf", "ref/p-llama-gqa-F16.jsonl", "p06_story_short"},
        {"models/small/p-llama-gqa-BF16.gguf", "ref/p-llama-gqa-BF16.jsonl", "p06_story_short"},
    };
    char err[ERR_MSG_MAX];

    for (int mi = 0; mi < 3; mi++) {
        struct loaded l;
        size_t n;
        int32_t *ids = case_ids(models[mi][1], models[mi][2], &n);

        if (ids == NULL)
            return;
        if (!load(models[mi][0], &l, err)) {
            free(ids);
            CHECKF(err[0] == '\0', "%s", err);
            return;
        }
        size_t bytes = n * model_config(l.m)->n_vocab * sizeof(float);
        float *a = eval_chunks(l.m, ids, n, n, 2, err);
        float *b = eval_chunks(l.m, ids, n, n, 1, err);
        float *c = eval_chunks(l.m, ids, n, 1, 2, err);
        float *d = eval_chunks(l.m, ids, n, 7, 2, err);
        bool ok = a && b && c && d;
        bool threads = ok && memcmp(a, b, bytes) == 0;
        bool single = ok && memcmp(a, c, bytes) == 0;
        bool chunks = ok && memcmp(a, d, bytes) == 0;
        record_determinism(models[mi][0], "1 vs 2 threads", n, threads);
        record_determinism(models[mi][0], "one batch vs one token at a time", n, single);
        record_determinism(models[mi][0], "one batch vs chunks of 7", n, chunks);
        free(a), free(b), free(c), free(d), free(ids);
        unload(&l);
        CHECKF(ok, "%s: %s", models[mi][0], err);
        CHECKF(threads, "%s: 1 and 2 threads differ", models[mi][0]);
        CHECKF(single, "%s: batched and one-token logits differ", models[mi][0]);
        CHECKF(chunks, "%s: batched and chunked logits differ", models[mi][0]);
    }
}

static void
test_determinism_scalar_kernels(void)
{
    char err[ERR_MSG_MAX];
    struct loaded l;
    size_t n;
    int32_t *ids = case_ids("ref/stories260K-F16.jsonl", "p02_once_upon", &n);

    if (ids == NULL)
        return;
    if (!kernel_simd_active() || !load("models/derived/stories260K-F16.gguf", &l, err)) {
        free(ids);
        CHECKF(err[0] == '\0' || !kernel_simd_active(), "%s", err);
        return;
    }
    size_t bytes = n * model_config(l.m)->n_vocab * sizeof(float);
    float *a = eval_chunks(l.m, ids, n, n, 2, err);
    kernel_force_scalar(true);
    float *b = eval_chunks(l.m, ids, n, n, 2, err);
    kernel_force_scalar(false);
    bool same = a && b && memcmp(a, b, bytes) == 0;
    record_determinism("models/derived/stories260K-F16.gguf", "AVX2 vs scalar kernels", n, same);
    free(a), free(b), free(ids);
    unload(&l);
    CHECK(same);
}

/* ---- synthetic shapes against a naive forward pass ---- */

/* A weight of the file as doubles (rows x cols, row-major). */
static double *
weight(const struct gguf *g, const char *name)
{
    const struct gguf_tensor *t = gguf_find_tensor(g, name);
    const struct type_traits *tt = type_traits(t->type);
    size_t cols = (size_t)t->ne[0], rows = (size_t)(t->n_elements / cols);
    float *row = malloc(cols * sizeof(float));
    double *w = malloc(t->n_elements * sizeof(double));

    for (size_t r = 0; r < rows; r++) {
        tt->to_float((const char *)t->data + r * type_row_size(t->type, cols), row, (int64_t)cols);
        for (size_t i = 0; i < cols; i++)
            w[r * cols + i] = row[i];
    }
    free(row);
    return w;
}

static double *
layer_weight(const struct gguf *g, int l, const char *what)
{
    char name[64];

    snprintf(name, sizeof(name), "blk.%d.%s", l, what);
    if (strchr(what, '.') == NULL)
        snprintf(name, sizeof(name), "blk.%d.%s.weight", l, what);
    return gguf_find_tensor(g, name) ? weight(g, name) : NULL;
}

/* y += b (n), when there is a bias */
static void
naive_bias(double *y, const double *b, size_t n)
{
    for (size_t i = 0; b != NULL && i < n; i++)
        y[i] += b[i];
}

/* y (rows) = W (rows x cols) x */
static void
naive_matvec(double *y, const double *w, const double *x, size_t rows, size_t cols)
{
    for (size_t r = 0; r < rows; r++) {
        double s = 0;
        for (size_t i = 0; i < cols; i++)
            s += w[r * cols + i] * x[i];
        y[r] = s;
    }
}

static void
naive_rmsnorm(double *y, const double *x, const double *w, size_t n, double eps)
{
    double ss = 0;

    for (size_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] / sqrt(ss / n + eps) * w[i];
}

/*
 * The Llama forward pass in double precision, written as plainly as possible, with no code in
 * common with model.c: logits (n x n_vocab) of ids evaluated at positions 0..n-1.
 */
/*
 * The RoPE frequency of pair i as the file describes it: base^(-2i/n_rot), times 1 / factor
 * under rope.scaling.type "linear", divided by rope_freqs.weight[i] when present (Llama-3.1).
 * unscaled: base^(-2i/n_rot) alone (to show the scaling matters).
 */
static double
naive_rope_freq(const struct gguf *g, const struct model_config *c, size_t i, bool unscaled)
{
    const struct gguf_tensor *rf = gguf_find_tensor(g, "rope_freqs.weight");
    char key[96], err[ERR_MSG_MAX];
    struct gguf_str type;
    double freq = pow(c->rope_base, -2.0 * i / c->n_rot), factor;

    if (unscaled)
        return freq;
    if (rf != NULL)
        freq /= ((const float *)rf->data)[i];
    snprintf(key, sizeof(key), "%s.rope.scaling.type", c->arch);
    if (gguf_get_str(g, key, &type, err) == ERR_OK && type.len == 6 &&
        memcmp(type.data, "linear", 6) == 0) {
        snprintf(key, sizeof(key), "%s.rope.scaling.factor", c->arch);
        if (gguf_get_float(g, key, &factor, err) == ERR_OK)
            freq /= factor;
    }
    return freq;
}

static double *
naive_forward(const struct gguf *g, const struct model_config *c, const int32_t *ids, size_t n,
              bool unscaled_rope)
{
    size_t d = c->n_embd, hd = c->head_dim, qd = c->n_head * hd, kvd = c->n_head_kv * hd;
    size_t ff = c->n_ff, nv = c->n_vocab;
    double *x = calloc(n * d, sizeof(double)), *xn = malloc(d * sizeof(double));
    double *q = malloc(n * qd * sizeof(double)), *k = malloc(n * kvd * sizeof(double));
    double *v = malloc(n * kvd * sizeof(double)), *att = malloc(qd * sizeof(double));
    double *o = malloc(d * sizeof(double)), *gt = malloc(ff * sizeof(double));
    double *up = malloc(ff * sizeof(double)), *sc = malloc(n * sizeof(double));
    double *emb = weight(g, "token_embd.weight");
    double *logits = malloc(n * nv * sizeof(double));

    for (size_t t = 0; t < n; t++)
        memcpy(x + t * d, emb + (size_t)ids[t] * d, d * sizeof(double));
    for (uint32_t l = 0; l < c->n_layer; l++) {
        double *an = layer_weight(g, (int)l, "attn_norm"), *wq = layer_weight(g, (int)l, "attn_q");
        double *wk = layer_weight(g, (int)l, "attn_k"), *wv = layer_weight(g, (int)l, "attn_v");
        double *wo = layer_weight(g, (int)l, "attn_output");
        double *fn = layer_weight(g, (int)l, "ffn_norm"), *wg = layer_weight(g, (int)l, "ffn_gate");
        double *wu = layer_weight(g, (int)l, "ffn_up"), *wd = layer_weight(g, (int)l, "ffn_down");
        double *bq = layer_weight(g, (int)l, "attn_q.bias");
        double *bk = layer_weight(g, (int)l, "attn_k.bias");
        double *bv = layer_weight(g, (int)l, "attn_v.bias");
        size_t half = c->n_rot / 2;
        bool neox = c->rope_type == MODEL_ROPE_NEOX;

        for (size_t t = 0; t < n; t++) {
            naive_rmsnorm(xn, x + t * d, an, d, c->rms_eps);
            naive_matvec(q + t * qd, wq, xn, qd, d);
            naive_matvec(k + t * kvd, wk, xn, kvd, d);
            naive_matvec(v + t * kvd, wv, xn, kvd, d);
            naive_bias(q + t * qd, bq, qd);
            naive_bias(k + t * kvd, bk, kvd);
            naive_bias(v + t * kvd, bv, kvd);
            for (size_t h = 0; h < qd / hd + kvd / hd;
                 h++) { /* pairs (2i, 2i+1), NeoX (i, i+half) */
                double *p = h < qd / hd ? q + t * qd + h * hd : k + t * kvd + (h - qd / hd) * hd;
                for (size_t i = 0; i < half; i++) {
                    double th = t * naive_rope_freq(g, c, i, unscaled_rope);
                    size_t i0 = neox ? i : 2 * i, i1 = neox ? i + half : 2 * i + 1;
                    double a = p[i0], b = p[i1];
                    p[i0] = a * cos(th) - b * sin(th);
                    p[i1] = a * sin(th) + b * cos(th);
                }
            }
        }
        for (size_t t = 0; t < n; t++) {
            for (size_t h = 0; h < c->n_head; h++) {
                size_t kh = h / (c->n_head / c->n_head_kv);
                double max = -INFINITY, sum = 0;
                for (size_t p = 0; p <= t; p++) {
                    double s = 0;
                    for (size_t i = 0; i < hd; i++)
                        s += q[t * qd + h * hd + i] * k[p * kvd + kh * hd + i];
                    sc[p] = s / sqrt((double)hd);
                    max = fmax(max, sc[p]);
                }
                for (size_t p = 0; p <= t; p++)
                    sum += (sc[p] = exp(sc[p] - max));
                for (size_t i = 0; i < hd; i++) {
                    double a = 0;
                    for (size_t p = 0; p <= t; p++)
                        a += sc[p] / sum * v[p * kvd + kh * hd + i];
                    att[h * hd + i] = a;
                }
            }
            naive_matvec(o, wo, att, d, qd);
            for (size_t i = 0; i < d; i++)
                x[t * d + i] += o[i];
            naive_rmsnorm(xn, x + t * d, fn, d, c->rms_eps);
            naive_matvec(gt, wg, xn, ff, d);
            naive_matvec(up, wu, xn, ff, d);
            for (size_t i = 0; i < ff; i++)
                gt[i] = gt[i] / (1 + exp(-gt[i])) * up[i];
            naive_matvec(o, wd, gt, d, ff);
            for (size_t i = 0; i < d; i++)
                x[t * d + i] += o[i];
        }
        free(an), free(wq), free(wk), free(wv), free(wo), free(fn), free(wg), free(wu), free(wd);
        free(bq), free(bk), free(bv);
    }
    double *on = weight(g, "output_norm.weight");
    double *out = c->tied_output ? emb : weight(g, "output.weight");
    for (size_t t = 0; t < n; t++) {
        naive_rmsnorm(xn, x + t * d, on, d, c->rms_eps);
        naive_matvec(logits + t * nv, out, xn, nv, d);
    }
    if (out != emb)
        free(out);
    free(on), free(emb), free(x), free(xn), free(q), free(k), free(v), free(att), free(o);
    free(gt), free(up), free(sc);
    return logits;
}

/* Tokens per synthetic case: past the engine's internal batch of 64. */
#define SYNTH_TOKENS 140

struct synth_case {
    const char *name;
    enum synth_arch arch;
    int64_t n_embd, n_head, n_head_kv, n_ff;
    float rope_base;
    bool tied;
    uint32_t type;
    bool rope_freqs;         /* Llama-3.1's rope_freqs.weight */
    float rope_scale_linear; /* rope.scaling.type linear with this factor; 0 none */
};

static const struct synth_case synth_cases[] = {
    {"gqa-f32", SYNTH_ARCH_LLAMA, 128, 8, 2, 320, 10000.0f, false, TYPE_F32, false, 0},
    {"mqa-f16", SYNTH_ARCH_LLAMA, 96, 6, 1, 200, 10000.0f, false, TYPE_F16, false, 0},
    /* CodeLlama's rope base */
    {"tied-rope1e6-bf16", SYNTH_ARCH_LLAMA, 128, 4, 4, 256, 1e6f, true, TYPE_BF16, false, 0},
    {"head24-rope5e5-f32", SYNTH_ARCH_LLAMA, 72, 3, 3, 100, 500000.0f, true, TYPE_F32, false, 0},
    {"qwen2-gqa-f16", SYNTH_ARCH_QWEN2, 128, 8, 2, 256, 1e6f, true, TYPE_F16, false, 0},
    /* Llama-3 (base 5e5, GQA 4:1) with Llama-3.1's rope scaling; float weights, since quantized
     * ones multiply against quantized activations, which the naive pass does not model */
    {"llama31-rope-freqs-f16", SYNTH_ARCH_LLAMA, 256, 8, 2, 512, 500000.0f, false, TYPE_F16, true,
     0},
    {"linear-rope-scale4-f32", SYNTH_ARCH_LLAMA, 128, 4, 2, 256, 10000.0f, false, TYPE_F32, false,
     4.0f},
};

/* Each shape: logits within 1e-3 of the naive forward pass (both use the same rounded weights),
 * one batch = one token at a time = 1 thread (bit for bit), the config read back. */
static void
test_synthetic_shapes(void)
{
    for (size_t i = 0; i < sizeof(synth_cases) / sizeof(synth_cases[0]); i++) {
        const struct synth_case *sc = &synth_cases[i];
        struct synth_config cfg;
        char path[600], err[ERR_MSG_MAX];
        struct gguf *g;
        struct model *m;
        int32_t ids[SYNTH_TOKENS];

        synth_config_default(&cfg, sc->arch);
        cfg.n_embd = sc->n_embd, cfg.n_head = sc->n_head, cfg.n_head_kv = sc->n_head_kv;
        cfg.n_ff = sc->n_ff, cfg.rope_base = sc->rope_base, cfg.tied = sc->tied;
        cfg.type = sc->type, cfg.n_layer = 2, cfg.seed = 7 + i;
        cfg.rope_freqs = sc->rope_freqs;
        cfg.rope_scale_linear = sc->rope_scale_linear;
        snprintf(path, sizeof(path), "%s/%s.gguf", harness_tmpdir(), sc->name);
        CHECKF(synth_write_file(&cfg, path, err) == ERR_OK, "%s: %s", sc->name, err);
        CHECKF(gguf_open(&g, path, err) == ERR_OK, "%s: %s", sc->name, err);
        CHECKF(model_load(&m, g, err) == ERR_OK, "%s: %s", sc->name, err);
        const struct model_config *c = model_config(m);
        CHECK(c->n_head_kv == (uint32_t)sc->n_head_kv && c->tied_output == sc->tied);
        CHECK(c->rope_base == sc->rope_base && c->head_dim == sc->n_embd / sc->n_head);
        for (int t = 0; t < SYNTH_TOKENS; t++)
            ids[t] = (int32_t)((t * 7919 + 13 * i) % c->n_vocab);
        size_t bytes = SYNTH_TOKENS * c->n_vocab * sizeof(float);
        float *a = eval_chunks(m, ids, SYNTH_TOKENS, SYNTH_TOKENS, 2, err);
        float *b = eval_chunks(m, ids, SYNTH_TOKENS, 1, 1, err);
        bool scaled = sc->rope_freqs || sc->rope_scale_linear > 0;
        double *ref = naive_forward(g, c, ids, SYNTH_TOKENS, false);
        double *unscaled = scaled ? naive_forward(g, c, ids, SYNTH_TOKENS, true) : NULL;
        double worst = 0, scale = 0, scaling_effect = 0;
        for (size_t k = 0; a != NULL && k < SYNTH_TOKENS * c->n_vocab; k++) {
            worst = fmax(worst, fabs(a[k] - ref[k]));
            scale = fmax(scale, fabs(ref[k]));
            if (unscaled != NULL)
                scaling_effect = fmax(scaling_effect, fabs(a[k] - unscaled[k]));
        }
        CHECK(c->rope_freqs == sc->rope_freqs);
        CHECK(c->rope_freq_scale == (sc->rope_scale_linear > 0 ? 1 / sc->rope_scale_linear : 1));
        /* the scaling moves the logits 10x the tolerance or more: the check above has teeth (only
         * the slow pairs are scaled, and they turn little in 140 positions) */
        CHECKF(!scaled || scaling_effect > 1e-2, "%s: rope scaling moved the logits by only %g",
               sc->name, scaling_effect);
        bool same = a && b && memcmp(a, b, bytes) == 0;
        json_array_append_new(
            bundle_list("synthetic"),
            json_pack("{s:s, s:i, s:i, s:i, s:f, s:b, s:s, s:b, s:f, s:f, "
                      "s:f, s:f, s:b}",
                      "shape", sc->name, "n_head", (int)sc->n_head, "n_head_kv", (int)sc->n_head_kv,
                      "n_ff", (int)sc->n_ff, "rope_base", sc->rope_base, "tied", sc->tied, "type",
                      type_traits(sc->type)->name, "rope_freqs", sc->rope_freqs,
                      "rope_scale_linear", sc->rope_scale_linear, "max_delta_vs_naive", worst,
                      "max_delta_vs_unscaled_rope", scaling_effect, "max_abs_logit", scale,
                      "batch_thread_identical", same));
        free(a), free(b), free(ref), free(unscaled);
        model_free(m);
        gguf_close(g);
        CHECKF(same, "%s: batched/2 threads and one token/1 thread differ", sc->name);
        CHECKF(worst < 1e-3, "%s: %g off the naive forward (logits up to %g)", sc->name, worst,
               scale);
    }
}

/* ---- context behaviour ---- */

static void
test_context_errors(void)
{
    char err[ERR_MSG_MAX];
    struct loaded l;
    struct context *c;
    int32_t ids[10] = {1, 403, 407, 261, 378, 432, 383, 286, 261, 376};
    float *la, *lb;
    atomic_bool stop = false;

    if (!load("models/stories260K.gguf", &l, err)) {
        CHECKF(err[0] == '\0', "%s", err);
        return;
    }
    la = malloc(10 * 512 * sizeof(float));
    lb = malloc(10 * 512 * sizeof(float));
    CHECK(context_new(&c, l.m, 1, 10, 2, err) == ERR_OK);
    CHECK(context_n_ctx(c) == 10 && context_pos(c, 0) == 0);
    CHECK(context_eval(c, 0, ids, 0, false, la, err) == ERR_BAD_REQUEST);
    int32_t bad[2] = {1, 512};
    CHECK(context_eval(c, 0, bad, 2, false, la, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "512") != NULL, "%s", err);
    CHECK(context_pos(c, 0) == 0);
    CHECK(context_eval(c, 0, ids, 10, true, la, err) == ERR_OK);
    CHECK(context_pos(c, 0) == 10);
    CHECK(context_eval(c, 0, ids, 1, false, lb, err) == ERR_CONTEXT_FULL);
    CHECKF(strcmp(err, "position 10 is past the context length 10") == 0, "%s", err);
    CHECK(context_pos(c, 0) == 10);
    /* truncate and evaluate again: the same logits */
    context_truncate(c, 0, 4);
    CHECK(context_pos(c, 0) == 4);
    CHECK(context_eval(c, 0, ids + 4, 6, true, lb, err) == ERR_OK);
    CHECK(memcmp(la + 4 * 512, lb, 6 * 512 * sizeof(float)) == 0);
    /* cancelled: nothing kept; then it goes on as before */
    context_truncate(c, 0, 4);
    atomic_store(&stop, true);
    context_set_abort(c, &stop);
    CHECK(context_eval(c, 0, ids + 4, 6, true, lb, err) == ERR_CANCELLED);
    CHECK(context_pos(c, 0) == 4);
    atomic_store(&stop, false);
    CHECK(context_eval(c, 0, ids + 4, 6, true, lb, err) == ERR_OK);
    CHECK(memcmp(la + 4 * 512, lb, 6 * 512 * sizeof(float)) == 0);
    context_set_abort(c, NULL);
    /* no logits wanted: the cache still fills, the next step sees it */
    context_truncate(c, 0, 4);
    CHECK(context_eval(c, 0, ids + 4, 5, true, NULL, err) == ERR_OK && context_pos(c, 0) == 9);
    CHECK(context_eval(c, 0, ids + 9, 1, false, lb, err) == ERR_OK);
    CHECK(memcmp(la + 9 * 512, lb, 512 * sizeof(float)) == 0);
    context_free(c);
    CHECK(context_new(&c, l.m, 1, 10, 0, err) == ERR_BAD_REQUEST && c == NULL);
    free(la), free(lb);
    unload(&l);
}

/* Sets the abort flag after a delay, noting when. */
struct canceller {
    atomic_bool flag;
    uint64_t delay_ms, set_ns;
};

static void *
cancel_later(void *p)
{
    struct canceller *k = p;
    struct timespec ts = {0, (long)(k->delay_ms * 1000000)};

    nanosleep(&ts, NULL);
    k->set_ns = clock_now_ns();
    atomic_store(&k->flag, true);
    return NULL;
}

/* A long prefill (2048 tokens on a 4-layer model) cancelled from another thread stops promptly
 * (checked twice per layer of each batch of 64) and leaves the context as it was. */
static void
test_cancel_midway(void)
{
    struct synth_config cfg;
    char path[600], err[ERR_MSG_MAX];
    struct gguf *g;
    struct model *m;
    struct context *c;
    struct canceller k = {.delay_ms = 20};
    pthread_t th;
    int32_t *ids = malloc(2048 * sizeof(*ids));

    synth_config_default(&cfg, SYNTH_ARCH_LLAMA);
    cfg.n_layer = 4;
    snprintf(path, sizeof(path), "%s/cancel.gguf", harness_tmpdir());
    CHECKF(synth_write_file(&cfg, path, err) == ERR_OK, "%s", err);
    CHECKF(gguf_open(&g, path, err) == ERR_OK, "%s", err);
    CHECKF(model_load(&m, g, err) == ERR_OK, "%s", err);
    CHECKF(context_new(&c, m, 1, 2048, THREADS, err) == ERR_OK, "%s", err);
    for (int i = 0; i < 2048; i++)
        ids[i] = (int32_t)(i * 31 % 512);
    atomic_init(&k.flag, false);
    context_set_abort(c, &k.flag);
    pthread_create(&th, NULL, cancel_later, &k);
    int rc = context_eval(c, 0, ids, 2048, false, NULL, err);
    uint64_t done = clock_now_ns();
    pthread_join(th, NULL);
    double late_ms = clock_ms_between(k.set_ns, done);
    uint32_t pos = context_pos(c, 0);
    json_object_set_new(bundle, "cancel",
                        json_pack("{s:i, s:f, s:b}", "prompt_tokens", 2048, "ms_after_flag",
                                  late_ms, "cancelled", rc == ERR_CANCELLED));
    context_free(c);
    model_free(m);
    gguf_close(g);
    free(ids);
    CHECKF(rc == ERR_CANCELLED, "eval returned %d (%s)", rc, err);
    CHECKF(pos == 0, "position %u after a cancelled call", pos);
    CHECKF(late_ms < 1000, "stopped %.1f ms after the flag", late_ms);
}

static void
test_config_stories260K(void)
{
    char err[ERR_MSG_MAX];
    struct loaded l;

    if (!load("models/stories260K.gguf", &l, err)) {
        CHECKF(err[0] == '\0', "%s", err);
        return;
    }
    const struct model_config *c = model_config(l.m);
    CHECK(strcmp(c->arch, "llama") == 0);
    CHECK(c->n_vocab == 512 && c->n_embd == 64 && c->n_layer == 5 && c->n_head == 8);
    CHECK(c->n_head_kv == 4 && c->head_dim == 8 && c->n_ff == 172 && c->n_ctx_train == 2048);
    CHECK(c->n_rot == 8 && c->rope_base == 10000.0f && fabsf(c->rms_eps - 1e-5f) < 1e-12f);
    CHECK(c->rope_type == MODEL_ROPE_NORM && !c->tied_output);
    unload(&l);
}

/* A copy of stories260K whose blk.1.attn_q.weight is stored as i8 (which no kernel reads). */
/*
 * Copies stories260K to tmpdir/name with one change: tensor i8_tensor retyped to I8 (its bytes
 * reinterpreted), or the string key set to val (replaced, or added). Returns model_load's code on
 * the copy with its message in err.
 */
static int
load_edited_stories(const char *name, const char *i8_tensor, const char *key, const char *val,
                    char *err)
{
    char path[512], out[600];
    struct gguf *g = NULL, *g2 = NULL;
    struct gguf_writer *w = NULL;
    struct model *m = NULL;
    FILE *f = NULL;
    int rc;

    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return err_set(err, ERR_NOT_FOUND, "models/stories260K.gguf is missing");
    snprintf(out, sizeof(out), "%s/%s", harness_tmpdir(), name);
    if ((rc = gguf_open(&g, path, err)) != ERR_OK)
        return rc;
    if ((f = fopen(out, "wb")) == NULL) {
        rc = err_set(err, ERR_IO, "%s: %s", out, strerror(errno));
        goto out;
    }
    if ((rc = gguf_writer_new_file(&w, f, err)) != ERR_OK)
        goto out;
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        if (key == NULL || strcmp(gguf_kv_at(g, i)->key, key) != 0)
            gguf_writer_kv_copy(w, gguf_kv_at(g, i), NULL);
    if (key != NULL)
        gguf_writer_add_str(w, key, val);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        bool i8 = i8_tensor != NULL && strcmp(t->name, i8_tensor) == 0;
        gguf_writer_add_tensor(w, t->name, i8 ? TYPE_I8 : t->type, t->n_dims, t->ne);
    }
    if ((rc = gguf_writer_write_header(w, err)) != ERR_OK)
        goto out;
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        bool i8 = i8_tensor != NULL && strcmp(t->name, i8_tensor) == 0;
        if ((rc = gguf_writer_write_data(w, t->data, i8 ? t->n_elements : t->nbytes, err)))
            goto out;
    }
    if ((rc = gguf_writer_finish(w, err)) != ERR_OK)
        goto out;
    fclose(f);
    f = NULL;
    if ((rc = gguf_open(&g2, out, err)) == ERR_OK)
        rc = model_load(&m, g2, err);
    if ((rc == ERR_OK) != (m != NULL))
        rc = err_set(err, ERR_INTERNAL, "model_load returned %d with model %p", rc, (void *)m);
out:
    model_free(m);
    gguf_close(g2);
    gguf_writer_free(w);
    if (f != NULL)
        fclose(f);
    gguf_close(g);
    return rc;
}

static void
test_unsupported_type_named(void)
{
    char err[ERR_MSG_MAX];

    CHECK(load_edited_stories("i8.gguf", "blk.1.attn_q.weight", NULL, NULL, err) ==
          ERR_UNSUPPORTED);
    CHECKF(strcmp(err, "blk.1.attn_q.weight has type i8, which llorch does not support") == 0, "%s",
           err);
}

/* An architecture llorch does not run, and RoPE scalings it does not implement: refused by name. */
static void
test_unsupported_architecture_named(void)
{
    char err[ERR_MSG_MAX];

    CHECK(load_edited_stories("gpt2.gguf", NULL, "general.architecture", "gpt2", err) ==
          ERR_UNSUPPORTED);
    CHECKF(strcmp(err, "architecture 'gpt2' is not supported (llorch runs: llama, qwen2)") == 0,
           "%s", err);
    CHECK(load_edited_stories("yarn.gguf", NULL, "llama.rope.scaling.type", "yarn", err) ==
          ERR_UNSUPPORTED);
    CHECKF(strcmp(err, "llama.rope.scaling.type 'yarn' is not supported (llorch runs: none, "
                       "linear, and rope_freqs.weight)") == 0,
           "%s", err);
    CHECK(load_edited_stories("linear.gguf", NULL, "llama.rope.scaling.type", "linear", err) ==
          ERR_FORMAT);
    CHECKF(strstr(err, "llama.rope.scaling.factor is missing") != NULL, "%s", err);
    CHECK(load_edited_stories("none.gguf", NULL, "llama.rope.scaling.type", "none", err) == ERR_OK);
}

/* ---- stage by stage against llama.cpp's intermediate tensors ---- */

/* How a traced stage maps onto llama.cpp's graph: node name (with "-L" for a layer), op, which
 * occurrence of that (name, op) pair, layout, tolerance (relative to the tensor's largest value).
 */
enum layout { LAYOUT_ROWS, LAYOUT_KQ, LAYOUT_KQV };

struct stage_map {
    const char *stage, *ref, *op;
    int occurrence;
    enum layout layout;
    double tol;
};

static const struct stage_map stage_maps[] = {
    {"inp_embd", "inp_embd", "GET_ROWS", 0, LAYOUT_ROWS, 1e-4},
    {"attn_rms", "norm", "RMS_NORM", 0, LAYOUT_ROWS, 1e-5},
    {"attn_norm", "attn_norm", "MUL", 0, LAYOUT_ROWS, 1e-5},
    {"q", "Qcur", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"k", "Kcur", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"v", "Vcur", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"q_rope", "Qcur", "ROPE", 0, LAYOUT_ROWS, 1e-5},
    {"k_rope", "Kcur", "ROPE", 0, LAYOUT_ROWS, 1e-5},
    {"kq", "kq", "MUL_MAT", 0, LAYOUT_KQ, 1e-4},
    {"kq_softmax", "kq_soft_max_ext", "SOFT_MAX", 0, LAYOUT_KQ, 1e-4},
    {"kqv", "kqv", "MUL_MAT", 0, LAYOUT_KQV, 1e-4},
    {"attn_out", "kqv_merged_cont", "CONT", 0, LAYOUT_ROWS, 1e-4},
    {"attn_proj", "kqv_out", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"ffn_inp", "ffn_inp", "ADD", 0, LAYOUT_ROWS, 1e-4},
    {"ffn_rms", "norm", "RMS_NORM", 1, LAYOUT_ROWS, 1e-5},
    {"ffn_norm", "ffn_norm", "MUL", 0, LAYOUT_ROWS, 1e-5},
    {"ffn_gate", "ffn_gate", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"ffn_up", "ffn_up", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"ffn_silu", "ffn_silu", "SILU", 0, LAYOUT_ROWS, 1e-4},
    {"ffn_swiglu", "ffn_gate_par", "MUL", 0, LAYOUT_ROWS, 1e-4},
    {"ffn_out", "ffn_out", "MUL_MAT", 0, LAYOUT_ROWS, 1e-4},
    {"l_out", "l_out", "ADD", 0, LAYOUT_ROWS, 1e-4},
    {"out_rms", "norm", "RMS_NORM", 0, LAYOUT_ROWS, 1e-5},
    {"out_norm", "result_norm", "MUL", 0, LAYOUT_ROWS, 1e-5},
    {"logits", "result_output", "MUL_MAT", 0, LAYOUT_ROWS, 1e-3},
};

#define MAX_STAGE_RESULTS 512

struct stage_result {
    const struct stage_map *map;
    int layer;
    double max_abs, max_ref;
    size_t count;
};

struct stage_check {
    json_t *index; /* the index lines, in order */
    const float *data;
    size_t n_data;
    size_t n_tokens;
    struct stage_result results[MAX_STAGE_RESULTS];
    int n_results;
    char fail[512];
};

/* The index line of node `name` with `op`, the occurrence-th such (in graph order). */
static const json_t *
find_node(const json_t *index, const char *name, const char *op, int occurrence)
{
    for (size_t i = 0; i < json_array_size(index); i++) {
        const json_t *e = json_array_get(index, i);
        const char *n = json_string_value(json_object_get(e, "name"));
        const char *o = json_string_value(json_object_get(e, "op"));
        if (n != NULL && o != NULL && strcmp(n, name) == 0 && strcmp(o, op) == 0 &&
            occurrence-- == 0)
            return e;
    }
    return NULL;
}

static void
stage_trace(void *ud, const struct context_trace *t)
{
    struct stage_check *sc = ud;
    const struct stage_map *map = NULL;
    struct stage_result *r = NULL;
    char name[96];

    for (size_t i = 0; i < sizeof(stage_maps) / sizeof(stage_maps[0]); i++)
        if (strcmp(stage_maps[i].stage, t->stage) == 0)
            map = &stage_maps[i];
    if (map == NULL) {
        snprintf(sc->fail, sizeof(sc->fail), "unknown stage %s", t->stage);
        return;
    }
    if (t->layer >= 0)
        snprintf(name, sizeof(name), "%s-%d", map->ref, t->layer);
    else
        snprintf(name, sizeof(name), "%s", map->ref);
    const json_t *node = NULL;
    if (strcmp(map->op, "MUL_MAT") == 0 && strlen(t->stage) == 1) /* q, k, v */
        node = find_node(sc->index, name, "ADD", 0);
    if (node == NULL)
        node = find_node(sc->index, name, map->op, map->occurrence);
    if (node == NULL) {
        snprintf(sc->fail, sizeof(sc->fail), "no node %s (%s) in the reference", name, map->op);
        return;
    }
    for (int i = 0; i < sc->n_results; i++)
        if (sc->results[i].map == map && sc->results[i].layer == t->layer)
            r = &sc->results[i];
    if (r == NULL) {
        if (sc->n_results == MAX_STAGE_RESULTS)
            return;
        r = &sc->results[sc->n_results++];
        *r = (struct stage_result){map, t->layer, 0, 0, 0};
    }
    const json_t *ne = json_object_get(node, "ne");
    size_t ne0 = (size_t)json_integer_value(json_array_get(ne, 0));
    size_t ne1 = (size_t)json_integer_value(json_array_get(ne, 1));
    size_t off = (size_t)json_integer_value(json_object_get(node, "offset")) / sizeof(float);
    /* a token's row in the ROWS layout: everything but the last dimension ({8, 4, T} after RoPE) */
    size_t row_len = (size_t)json_integer_value(json_object_get(node, "count")) / sc->n_tokens;
    for (uint32_t row = 0; row < t->rows; row++)
        for (uint32_t i = 0; i < t->cols; i++) {
            size_t tok = t->token + row, at;
            size_t lim = map->layout == LAYOUT_ROWS ? row_len : ne0;
            if (map->layout == LAYOUT_ROWS) /* {cols, T}: token-major rows */
                at = off + tok * row_len + i;
            else /* {n_kv or head_dim, T, n_head} */
                at = off + i + ne0 * (tok + ne1 * t->head);
            if (at >= sc->n_data || i >= lim) {
                snprintf(sc->fail, sizeof(sc->fail), "%s: element outside the reference", name);
                return;
            }
            r->max_abs = fmax(r->max_abs, fabs((double)t->data[row * t->cols + i] - sc->data[at]));
            r->max_ref = fmax(r->max_ref, fabs(sc->data[at]));
            r->count++;
        }
}

/* One forward pass over the dump's prompt with every stage traced and compared; the results go
 * into the bundle under key. */
static void
run_stages(const char *model, const char *index_rel, const char *data_rel, const char *key)
{
    char ipath[512], dpath[512], err[ERR_MSG_MAX], *line = NULL;
    size_t cap = 0, n_ids = 0;
    struct stage_check *sc = calloc(1, sizeof(*sc));
    int32_t ids[16];
    struct loaded l;
    struct context *c;
    FILE *f;

    if (!harness_shared(ipath, sizeof(ipath), index_rel) ||
        !harness_shared(dpath, sizeof(dpath), data_rel)) {
        free(sc);
        return;
    }
    if (!load(model, &l, err)) {
        free(sc);
        CHECKF(err[0] == '\0', "%s", err);
        return;
    }
    sc->index = json_array();
    f = fopen(ipath, "r");
    while (f != NULL && getline(&line, &cap, f) > 0) {
        json_t *e = json_loads(line, JSON_ALLOW_NUL, NULL);
        const json_t *prompt = json_object_get(e, "prompt_ids");
        for (size_t i = 0; prompt != NULL && i < json_array_size(prompt) && i < 16; i++)
            ids[n_ids++] = (int32_t)json_integer_value(json_array_get(prompt, i));
        json_array_append_new(sc->index, e);
    }
    free(line);
    if (f != NULL)
        fclose(f);
    struct stat st;
    size_t bytes = stat(dpath, &st) == 0 ? (size_t)st.st_size : 0;
    float *data = malloc(bytes + sizeof(float));
    f = fopen(dpath, "rb");
    sc->n_data = f ? fread(data, sizeof(float), bytes / sizeof(float), f) : 0;
    if (f != NULL)
        fclose(f);
    sc->data = data;
    sc->n_tokens = n_ids;
    uint32_t n_layer = model_config(l.m)->n_layer;
    float *logits = malloc(n_ids * model_config(l.m)->n_vocab * sizeof(float));
    CHECK(n_ids == 5 && sc->n_data > 0);
    CHECK(context_new(&c, l.m, 1, 16, THREADS, err) == ERR_OK);
    context_set_trace(c, stage_trace, sc);
    int rc = context_eval(c, 0, ids, n_ids, true, logits, err);
    context_free(c);
    unload(&l);

    json_t *stages = json_array();
    int bad = 0;
    for (int i = 0; i < sc->n_results; i++) {
        struct stage_result *r = &sc->results[i];
        double rel = r->max_abs / fmax(r->max_ref, 1e-30);
        bool pass = rel <= r->map->tol;
        bad += !pass;
        if (!pass)
            printf("  stage %s layer %d: max |delta| %.3g, %.3g of the largest value, over %g\n",
                   r->map->stage, r->layer, r->max_abs, rel, r->map->tol);
        json_array_append_new(stages, json_pack("{s:s, s:i, s:s, s:f, s:f, s:f, s:i, s:b}", "stage",
                                                r->map->stage, "layer", r->layer, "llama_cpp_node",
                                                r->map->ref, "max_abs_delta", r->max_abs,
                                                "max_rel_delta", rel, "tolerance", r->map->tol,
                                                "elements", (int)r->count, "pass", pass));
    }
    json_object_set_new(bundle, key,
                        json_pack("{s:s, s:O, s:o}", "prompt", "Once upon a time", "ids",
                                  json_object_get(json_array_get(sc->index, 0), "prompt_ids"),
                                  "stages", stages));
    int n_results = sc->n_results;
    char fail[512];
    snprintf(fail, sizeof(fail), "%s", sc->fail);
    json_decref(sc->index);
    free(sc), free(data), free(logits);
    CHECKF(rc == ERR_OK, "%s", err);
    CHECKF(fail[0] == '\0', "%s", fail);
    CHECKF(n_results == 4 + (int)n_layer * 21, "%d stage results, expected %d", n_results,
           4 + (int)n_layer * 21);
    CHECKF(bad == 0, "%d stages off", bad);
}

static void
test_stages_stories260K(void)
{
    run_stages("models/stories260K.gguf", "ref/tensors-stories260K.index.jsonl",
               "ref/tensors-stories260K.f32", "stages_stories260K");
}

/* Qwen2: Q/K/V biases, NeoX RoPE, tied output. */
static void
test_stages_p_qwen2_bias_F32(void)
{
    run_stages("models/small/p-qwen2-bias-F32.gguf", "ref/tensors-p-qwen2-bias-F32.index.jsonl",
               "ref/tensors-p-qwen2-bias-F32.f32", "stages_p-qwen2-bias-F32");
}

/* ---- workerd logits ---- */

/* Runs a shell command; its stdout lines into *out (malloc'ed), returns the exit status. */
static int
run_command(const char *cmd, char **out)
{
    FILE *p = popen(cmd, "r");
    size_t len = 0, cap = 1 << 16;
    int st;

    *out = malloc(cap);
    while (p != NULL && len + 1 < cap && !feof(p))
        len += fread(*out + len, 1, cap - 1 - len, p);
    (*out)[len] = '\0';
    st = p ? pclose(p) : -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The contract's output: one JSON line per position with pos, top (sorted, K long), max, lse, and
 * the values of llama.cpp's teacher-forced run; errors exit nonzero with one line on stderr. */
static void
test_cmd_logits(void)
{
    char model[512], ref[512], cmd[1400], *out, *line = NULL;
    const char *build = getenv("BUILD") ? getenv("BUILD") : "build";
    size_t cap = 0;
    json_t *cs = NULL;
    FILE *f;

    if (!harness_shared(model, sizeof(model), "models/stories260K.gguf") ||
        !harness_shared(ref, sizeof(ref), "ref/stories260K.jsonl"))
        return;
    f = fopen(ref, "r");
    while (cs == NULL && f != NULL && getline(&line, &cap, f) > 0) {
        cs = json_loads(line, JSON_ALLOW_NUL, NULL);
        if (cs != NULL && strcmp(json_string_value(json_object_get(cs, "id")), "p02_once_upon")) {
            json_decref(cs);
            cs = NULL;
        }
    }
    free(line);
    if (f != NULL)
        fclose(f);
    CHECK(cs != NULL);
    snprintf(cmd, sizeof(cmd), "%s/workerd logits -m '%s' --ids 1,403,407,261,378 --top 5 -t 2",
             build, model);
    int st = run_command(cmd, &out);
    int n = 0;
    char *save = NULL;
    for (char *l = strtok_r(out, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save), n++) {
        json_t *o = json_loads(l, 0, NULL), *top = json_object_get(o, "top");
        const json_t *rp = json_array_get(json_object_get(cs, "positions"), (size_t)n);
        const json_t *rtop = json_object_get(rp, "top");
        bool ok = o != NULL && json_integer_value(json_object_get(o, "pos")) == n &&
                  json_array_size(top) == 5 && json_is_real(json_object_get(o, "max")) &&
                  fabs(json_real_value(json_object_get(o, "lse")) -
                       json_real_value(json_object_get(rp, "lse"))) < 1e-2;
        for (size_t k = 0; ok && k < 5; k++) {
            const json_t *e = json_array_get(top, k), *r = json_array_get(rtop, k);
            ok = json_integer_value(json_array_get(e, 0)) ==
                     json_integer_value(json_array_get(r, 0)) &&
                 fabs(json_real_value(json_array_get(e, 1)) -
                      json_real_value(json_array_get(r, 1))) < 1e-2 &&
                 (k == 0 || json_real_value(json_array_get(e, 1)) <=
                                json_real_value(json_array_get(json_array_get(top, k - 1), 1)));
        }
        json_decref(o);
        if (!ok) {
            json_decref(cs);
            free(out);
            CHECKF(ok, "line %d: %s", n, l);
        }
    }
    json_decref(cs);
    free(out);
    CHECKF(st == 0 && n == 5, "exit %d, %d lines", st, n);
    snprintf(cmd, sizeof(cmd), "%s/workerd logits -m /nonexistent.gguf --ids 1 2>&1", build);
    st = run_command(cmd, &out);
    bool one_line = strchr(out, '\n') == out + strlen(out) - 1 && strstr(out, "/nonexistent");
    free(out);
    CHECKF(st == 2 && one_line, "bad model: exit %d", st);
    snprintf(cmd, sizeof(cmd), "%s/workerd logits -m '%s' --ids 1,99999 2>&1", build, model);
    st = run_command(cmd, &out);
    one_line = strchr(out, '\n') == out + strlen(out) - 1 && strstr(out, "99999");
    free(out);
    CHECKF(st == 2 && one_line, "id out of range: exit %d", st);
}

/* ---- the proof bundle ---- */

static void
bundle_environment(void)
{
    char cpu[256] = "unknown", *line = NULL;
    size_t cap = 0;
    struct utsname u;
    FILE *f = fopen("/proc/cpuinfo", "r");

    while (f != NULL && getline(&line, &cap, f) > 0)
        if (strncmp(line, "model name", 10) == 0) {
            char *v = strchr(line, ':');
            snprintf(cpu, sizeof(cpu), "%s", v ? v + 2 : line);
            cpu[strcspn(cpu, "\n")] = '\0';
            break;
        }
    free(line);
    if (f != NULL)
        fclose(f);
    uname(&u);
    json_object_set_new(bundle, "environment",
                        json_pack("{s:s, s:i, s:i, s:s, s:s, s:s, s:s}", "cpu", cpu, "online_cpus",
                                  (int)sysconf(_SC_NPROCESSORS_ONLN), "threads", THREADS, "kernels",
                                  kernel_simd_active() ? "avx2+fma+f16c" : "scalar", "compiler",
#ifdef __clang__
                                  "clang " __clang_version__,
#else
                                  "gcc " __VERSION__,
#endif
                                  "kernel", u.release, "machine", u.machine));
}

static int
mkdirs(char *path)
{
    for (char *p = path + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    return mkdir(path, 0755) != 0 && errno != EEXIST ? -1 : 0;
}

/* Writes bundle.json into $LLORCH_PROOF_DIR/validation/$LLORCH_RUN_ID/ (defaults .proof_bundle,
 * a UTC timestamp and the pid). */
static void
bundle_write(int failed)
{
    const char *root = getenv("LLORCH_PROOF_DIR"), *run = getenv("LLORCH_RUN_ID");
    char id[64], dir[1024], file[1100];
    time_t now = time(NULL);

    if (run == NULL || run[0] == '\0') {
        size_t k = strftime(id, sizeof(id), "%Y%m%dT%H%M%SZ", gmtime(&now));
        snprintf(id + k, sizeof(id) - k, "-%d", (int)getpid());
        run = id;
    }
    snprintf(dir, sizeof(dir), "%s/validation/%s", root && root[0] ? root : ".proof_bundle", run);
    bundle_environment();
    json_object_set_new(bundle, "run_id", json_string(run));
    json_object_set_new(bundle, "finished_unix", json_integer((json_int_t)now));
    json_object_set_new(bundle, "tests_failed", json_integer(failed));
    json_object_set_new(bundle, "pass", json_boolean(failed == 0));
    snprintf(file, sizeof(file), "%s/bundle.json", dir);
    if (mkdirs(dir) != 0 || json_dump_file(bundle, file, JSON_INDENT(1) | JSON_SORT_KEYS) != 0)
        printf("  could not write the proof bundle %s: %s\n", file, strerror(errno));
    else
        printf("proof bundle: %s\n", file);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_ref_stories260K),
        TEST(test_ref_stories260K_F16),
        TEST(test_ref_llama2_tiny_random),
        TEST(test_ref_p_llama_gqa_F16),
        TEST(test_ref_p_llama_gqa_BF16),
        TEST(test_ref_p_qwen2_bias_F32),
        TEST(test_ref_p_qwen2_bias_F16),
        TEST(test_ref_quant_stories260K),
        TEST(test_ref_quant_p_llama_gqa),
        TEST(test_ref_quant_p_qwen2_bias),
        TEST(test_stages_stories260K),
        TEST(test_stages_p_qwen2_bias_F32),
        TEST(test_determinism_threads_and_batches),
        TEST(test_determinism_scalar_kernels),
        TEST(test_synthetic_shapes),
        TEST(test_context_errors),
        TEST(test_cancel_midway),
        TEST(test_config_stories260K),
        TEST(test_unsupported_type_named),
        TEST(test_unsupported_architecture_named),
        TEST(test_cmd_logits),
        {0},
    };
    bundle = json_object();
    int rc = harness_run(tests, argc, argv);
    bundle_write(rc);
    json_decref(bundle);
    return rc;
}
