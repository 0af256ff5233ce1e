/*
 * test_model.c: the forward pass against llama.cpp (../shared/ref): every case of the reference
 * .jsonl files of the float Llama models, teacher-forced (top-1, top-5 logits, lse, and the full
 * logits where kept) and greedy; stage by stage on stories260K against llama.cpp's intermediate
 * tensors; determinism (1 vs 2 threads, batch vs one token, AVX2 vs scalar: bit-identical);
 * synthetic shapes (GQA, MQA, tied output, rope base 1e6) against a naive double-precision forward
 * written here; context errors. Writes a proof bundle (.proof_bundle/validation/<run_id>/, see
 * docs/engine.md) with what each check measured.
 */
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
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
};

struct case_result {
    double top5, lse, full; /* max |delta| over the reference's top-5 logits, lse, all logits */
    int top1_checked, greedy_checked, greedy_steps;
    char fail[1024]; /* empty when the case passed */
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
    if (context_new(&c, m, (uint32_t)(n + 1), THREADS, err) != ERR_OK ||
        context_eval(c, ids, n, true, logits, err) != ERR_OK) {
        snprintf(r->fail, sizeof(r->fail), "%s", err);
        goto out;
    }
    if (json_array_size(positions) != n) {
        snprintf(r->fail, sizeof(r->fail), "reference has %zu positions, expected %zu",
                 json_array_size(positions), n);
        goto out;
    }
    /* teacher-forced */
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
    context_truncate(c, 0);
    if (context_eval(c, ids, n_prompt, false, logits, err) != ERR_OK) {
        snprintf(r->fail, sizeof(r->fail), "greedy prefill: %s", err);
        goto out;
    }
    for (size_t k = 0; k < n_gen; k++) {
        if (json_real_value(json_array_get(margins, k)) < tol)
            break;
        int32_t tok = (int32_t)argmax(logits, n_vocab);
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
        if (k + 1 < n_gen && context_eval(c, &tok, 1, false, logits, err) != ERR_OK) {
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
    int n_cases = 0, n_failed = 0;
    json_t *entry, *cases = json_array();

    if (!harness_shared(path, sizeof(path), rm->jsonl))
        return;
    if (!load(rm->gguf, &l, err)) {
        CHECKF(err[0] == '\0', "%s: %s", rm->gguf, err);
        return;
    }
    sha256_file_hex(l.path, sha, err);
    entry = json_pack("{s:s, s:s, s:s, s:f}", "model", rm->gguf, "sha256", sha, "type", rm->type,
                      "tolerance", rm->tol);
    json_object_set_new(entry, "cases", cases);
    json_array_append_new(bundle_list("reference_cases"), entry);
    f = fopen(path, "r");
    CHECKF(f != NULL, "%s: %s", path, strerror(errno));
    while (getline(&line, &cap, f) > 0) {
        json_error_t je;
        json_t *cs = json_loads(line, 0, &je);
        const char *full = json_string_value(json_object_get(cs, "full_logits_file"));
        char full_rel[256], full_path[512];
        struct case_result r;

        if (cs == NULL) {
            n_failed++;
            printf("  %s: bad JSON line: %s\n", rm->jsonl, je.text);
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
        json_array_append_new(
            cases,
            json_pack("{s:s, s:O, s:f, s:f, s:f, s:i, s:i, s:i, s:b, s:s}", "id",
                      json_string_value(json_object_get(cs, "id")), "prompt_ids",
                      json_object_get(cs, "prompt_ids"), "max_delta_top5", r.top5, "max_delta_lse",
                      r.lse, "max_delta_full_logits", r.full, "top1_positions_checked",
                      r.top1_checked, "greedy_steps_compared", r.greedy_checked, "greedy_steps",
                      r.greedy_steps, "pass", r.fail[0] == '\0', "failure", r.fail));
        json_decref(cs);
    }
    free(line);
    fclose(f);
    unload(&l);
    CHECKF(n_cases == 8, "%s: %d cases, expected 8", rm->jsonl, n_cases);
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
        json_t *cs = json_loads(line, 0, NULL);
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

    if (context_new(&c, m, (uint32_t)n, n_threads, err) != ERR_OK) {
        free(logits);
        return NULL;
    }
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        if (context_eval(c, ids + i, k, true, logits + i * n_vocab, err) != ERR_OK) {
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

/* 1 vs 2 threads, one batch vs one token at a time vs chunks of 7 (crossing the internal batch of
 * 128): bit-identical logits, on F32, F16 and BF16 weights. */
static void
test_determinism_threads_and_batches(void)
{
    static const char *const models[][2] = {
        {"models/stories260K.gguf", "ref/stories260K.jsonl"},
        {"models/small/p-llama-gqa-F16.gguf", "ref/p-llama-gqa-F16.jsonl"},
        {"models/small/p-llama-gqa-BF16.gguf", "ref/p-llama-gqa-BF16.jsonl"},
    };
    char err[ERR_MSG_MAX];

    for (int mi = 0; mi < 3; mi++) {
        struct loaded l;
        size_t n;
        int32_t *ids = case_ids(models[mi][1], "p08_story_long", &n);

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
    int32_t *ids = case_ids("ref/p-llama-gqa-BF16.jsonl", "p02_once_upon", &n);

    if (ids == NULL)
        return;
    if (!kernel_simd_active() || !load("models/small/p-llama-gqa-BF16.gguf", &l, err)) {
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
    record_determinism("models/small/p-llama-gqa-BF16.gguf", "AVX2 vs scalar kernels", n, same);
    free(a), free(b), free(ids);
    unload(&l);
    CHECK(same);
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
    CHECK(context_new(&c, l.m, 10, 2, err) == ERR_OK);
    CHECK(context_n_ctx(c) == 10 && context_pos(c) == 0);
    CHECK(context_eval(c, ids, 0, false, la, err) == ERR_BAD_REQUEST);
    int32_t bad[2] = {1, 512};
    CHECK(context_eval(c, bad, 2, false, la, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "512") != NULL, "%s", err);
    CHECK(context_pos(c) == 0);
    CHECK(context_eval(c, ids, 10, true, la, err) == ERR_OK);
    CHECK(context_pos(c) == 10);
    CHECK(context_eval(c, ids, 1, false, lb, err) == ERR_CONTEXT_FULL);
    CHECKF(strcmp(err, "position 10 is past the context length 10") == 0, "%s", err);
    CHECK(context_pos(c) == 10);
    /* truncate and evaluate again: the same logits */
    context_truncate(c, 4);
    CHECK(context_pos(c) == 4);
    CHECK(context_eval(c, ids + 4, 6, true, lb, err) == ERR_OK);
    CHECK(memcmp(la + 4 * 512, lb, 6 * 512 * sizeof(float)) == 0);
    /* cancelled: nothing kept; then it goes on as before */
    context_truncate(c, 4);
    atomic_store(&stop, true);
    context_set_abort(c, &stop);
    CHECK(context_eval(c, ids + 4, 6, true, lb, err) == ERR_CANCELLED);
    CHECK(context_pos(c) == 4);
    atomic_store(&stop, false);
    CHECK(context_eval(c, ids + 4, 6, true, lb, err) == ERR_OK);
    CHECK(memcmp(la + 4 * 512, lb, 6 * 512 * sizeof(float)) == 0);
    context_set_abort(c, NULL);
    context_free(c);
    CHECK(context_new(&c, l.m, 10, 0, err) == ERR_BAD_REQUEST && c == NULL);
    free(la), free(lb);
    unload(&l);
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
static void
test_unsupported_type_named(void)
{
    char path[512], out[600], err[ERR_MSG_MAX];
    struct gguf *g, *g2;
    struct gguf_writer *w;
    struct model *m;
    FILE *f;

    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return;
    CHECK(gguf_open(&g, path, err) == ERR_OK);
    snprintf(out, sizeof(out), "%s/i8.gguf", harness_tmpdir());
    f = fopen(out, "wb");
    CHECK(f != NULL && gguf_writer_new_file(&w, f, err) == ERR_OK);
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        gguf_writer_kv_copy(w, gguf_kv_at(g, i), NULL);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        bool i8 = strcmp(t->name, "blk.1.attn_q.weight") == 0;
        gguf_writer_add_tensor(w, t->name, i8 ? TYPE_I8 : t->type, t->n_dims, t->ne);
    }
    CHECKF(gguf_writer_write_header(w, err) == ERR_OK, "%s", err);
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        bool i8 = strcmp(t->name, "blk.1.attn_q.weight") == 0;
        gguf_writer_write_data(w, t->data, i8 ? t->n_elements : t->nbytes, err);
    }
    CHECKF(gguf_writer_finish(w, err) == ERR_OK, "%s", err);
    gguf_writer_free(w);
    fclose(f);
    gguf_close(g);
    CHECKF(gguf_open(&g2, out, err) == ERR_OK, "%s", err);
    CHECK(model_load(&m, g2, err) == ERR_UNSUPPORTED && m == NULL);
    CHECKF(strcmp(err, "blk.1.attn_q.weight has type i8, which llorch does not support") == 0, "%s",
           err);
    gguf_close(g2);
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
        TEST(test_determinism_threads_and_batches),
        TEST(test_determinism_scalar_kernels),
        TEST(test_context_errors),
        TEST(test_config_stories260K),
        TEST(test_unsupported_type_named),
        {0},
    };
    bundle = json_object();
    int rc = harness_run(tests, argc, argv);
    bundle_write(rc);
    json_decref(bundle);
    return rc;
}
