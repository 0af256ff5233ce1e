/*
 * test_synth.c: tests of the synthetic model builder (tests/synth.c) and its command line
 * (build/gguf-synth): models of several shapes and every type open with the reader and have the
 * names, shapes, types, metadata and values they should; the same seed gives the same bytes and
 * another seed other bytes; the tokenizer is copied or built in; bad shapes are refused by name.
 */
#include "common/err.h"
#include "tests/harness.h"
#include "tests/synth.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/quant.h"
#include "workerd/engine/types.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *argv0; /* this binary; gguf-synth sits in the folder above */

/* A path in the test's temporary folder. */
static const char *
tmp_path(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "%s/%s", harness_tmpdir(), name);
    return buf;
}

/* Writes c into the temporary folder and opens it; NULL (test failed) on error. */
static struct gguf *
write_and_open(const struct synth_config *c, const char *name)
{
    char path[512], err[ERR_MSG_MAX];
    struct gguf *g = NULL;

    tmp_path(path, sizeof(path), name);
    if (synth_write_file(c, path, err) != ERR_OK) {
        harness_fail(__FILE__, __LINE__, "synth_write_file %s: %s", name, err);
        return NULL;
    }
    if (gguf_open(&g, path, err) != ERR_OK) {
        harness_fail(__FILE__, __LINE__, "gguf_open %s: %s", name, err);
        return NULL;
    }
    return g;
}

static int64_t
kv_int(const struct gguf *g, const char *key)
{
    char err[ERR_MSG_MAX];
    int64_t v = -1;

    return gguf_get_int(g, key, &v, err) == ERR_OK ? v : -1;
}

static double
kv_float(const struct gguf *g, const char *key)
{
    char err[ERR_MSG_MAX];
    double v = NAN;

    return gguf_get_float(g, key, &v, err) == ERR_OK ? v : NAN;
}

static bool
kv_str_is(const struct gguf *g, const char *key, const char *want)
{
    char err[ERR_MSG_MAX];
    struct gguf_str s;

    return gguf_get_str(g, key, &s, err) == ERR_OK && s.len == strlen(want) &&
           memcmp(s.data, want, s.len) == 0;
}

/* True when the tensor exists with this type and shape (ne1 0: one dimension). */
static bool
has_tensor(const struct gguf *g, const char *name, uint32_t type, int64_t ne0, int64_t ne1)
{
    const struct gguf_tensor *t = gguf_find_tensor(g, name);

    if (t == NULL || t->type != type || t->ne[0] != ne0)
        return false;
    return ne1 == 0 ? t->n_dims == 1 : t->n_dims == 2 && t->ne[1] == ne1;
}

/* Every tensor of a llama/qwen2 model of c's shape, with ne[1] of the KV matrices given. */
static bool
check_layout(const struct gguf *g, const struct synth_config *c, int64_t n_vocab)
{
    const int64_t n_kv = c->n_embd / c->n_head * c->n_head_kv;
    const bool qwen2 = c->arch == SYNTH_ARCH_QWEN2;
    char name[64];

    if (gguf_n_tensors(g) != 2 + (size_t)!c->tied + (size_t)c->n_layer * (qwen2 ? 12 : 9))
        return false;
    if (!has_tensor(g, "token_embd.weight", c->type, c->n_embd, n_vocab) ||
        !has_tensor(g, "output_norm.weight", TYPE_F32, c->n_embd, 0))
        return false;
    if (c->tied ? gguf_find_tensor(g, "output.weight") != NULL
                : !has_tensor(g, "output.weight", c->type, c->n_embd, n_vocab))
        return false;
    for (int64_t l = 0; l < c->n_layer; l++) {
#define HAS(suffix, type, ne0, ne1)                                                                \
    (snprintf(name, sizeof(name), "blk.%lld." suffix, (long long)l),                               \
     has_tensor(g, name, type, ne0, ne1))
        if (!HAS("attn_norm.weight", TYPE_F32, c->n_embd, 0) ||
            !HAS("attn_q.weight", c->type, c->n_embd, c->n_embd) ||
            !HAS("attn_k.weight", c->type, c->n_embd, n_kv) ||
            !HAS("attn_v.weight", c->type, c->n_embd, n_kv) ||
            !HAS("attn_output.weight", c->type, c->n_embd, c->n_embd) ||
            !HAS("ffn_norm.weight", TYPE_F32, c->n_embd, 0) ||
            !HAS("ffn_gate.weight", c->type, c->n_embd, c->n_ff) ||
            !HAS("ffn_up.weight", c->type, c->n_embd, c->n_ff) ||
            !HAS("ffn_down.weight", c->type, c->n_ff, c->n_embd))
            return false;
        if (qwen2 &&
            (!HAS("attn_q.bias", TYPE_F32, c->n_embd, 0) ||
             !HAS("attn_k.bias", TYPE_F32, n_kv, 0) || !HAS("attn_v.bias", TYPE_F32, n_kv, 0)))
            return false;
        if (!qwen2 && gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL)
            return false;
#undef HAS
    }
    return true;
}

/* The hyperparameter keys of c's architecture. */
static bool
check_hparams(const struct gguf *g, const struct synth_config *c, const char *arch)
{
    char key[96];

#define KEY(suffix) (snprintf(key, sizeof(key), "%s." suffix, arch), key)
    return kv_str_is(g, "general.architecture", arch) &&
           kv_int(g, KEY("context_length")) == c->n_ctx &&
           kv_int(g, KEY("embedding_length")) == c->n_embd &&
           kv_int(g, KEY("block_count")) == c->n_layer &&
           kv_int(g, KEY("feed_forward_length")) == c->n_ff &&
           kv_int(g, KEY("attention.head_count")) == c->n_head &&
           kv_int(g, KEY("attention.head_count_kv")) == c->n_head_kv &&
           kv_float(g, KEY("rope.freq_base")) == c->rope_base &&
           kv_float(g, KEY("attention.layer_norm_rms_epsilon")) == c->rms_eps;
#undef KEY
}

static void
test_llama_gqa_f16(void)
{
    struct synth_config c;
    struct gguf *g;

    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.n_head_kv = 2;
    c.n_layer = 3;
    g = write_and_open(&c, "gqa.gguf");
    CHECK(g != NULL);
    bool ok = check_layout(g, &c, 512) && check_hparams(g, &c, "llama") &&
              kv_int(g, "llama.vocab_size") == 512 &&
              kv_int(g, "llama.rope.dimension_count") == 32 &&
              kv_int(g, "general.file_type") == 1 &&
              gguf_find_kv(g, "general.quantization_version") == NULL &&
              kv_int(g, "tokenizer.ggml.bos_token_id") == 1 && gguf_version(g) == 3;
    gguf_close(g);
    CHECK(ok);
}

static void
test_llama_mqa_tied_q8_0(void)
{
    struct synth_config c;
    struct gguf *g;

    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.n_embd = 128;
    c.n_head = 4;
    c.n_head_kv = 1;
    c.n_ff = 320;
    c.n_vocab = 300;
    c.n_layer = 1;
    c.tied = true;
    c.type = TYPE_Q8_0;
    c.rope_base = 500000.0f;
    c.n_ctx = 8192;
    g = write_and_open(&c, "mqa.gguf");
    CHECK(g != NULL);
    bool ok = check_layout(g, &c, 300) && check_hparams(g, &c, "llama") &&
              kv_int(g, "general.file_type") == 7 && kv_int(g, "general.quantization_version") == 2;
    gguf_close(g);
    CHECK(ok);
}

static void
test_qwen2_biases_tied(void)
{
    struct synth_config c;
    struct gguf *g;

    synth_config_default(&c, SYNTH_ARCH_QWEN2);
    c.n_head = 4;
    c.n_head_kv = 2;
    CHECK(c.tied && c.rope_base == 1000000.0f && c.rms_eps == 1e-6f);
    g = write_and_open(&c, "qwen2.gguf");
    CHECK(g != NULL);
    bool ok = check_layout(g, &c, 512) && check_hparams(g, &c, "qwen2") &&
              gguf_find_kv(g, "llama.embedding_length") == NULL;
    gguf_close(g);
    CHECK(ok);
}

/*
 * Each type: matrices of that type, norms F32, and the stored values equal to the generator's
 * (exactly for F32, within the type's rounding otherwise) with the intended spread.
 */
static void
test_every_type_values(void)
{
    static const uint32_t types[] = {TYPE_F32,  TYPE_F16,  TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0,
                                     TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1, TYPE_Q2_K, TYPE_Q3_K,
                                     TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K};
    static const uint32_t file_types[] = {0, 1, 32, 7, 2, 3, 8, 9, 10, 11, 14, 16, 18};
    /* x amax per block of 32 (half a step, a step where a quant clips, and the scale codes) */
    static const double tol[] = {0.0,       0x1p-11,   0x1p-8,    0.6 / 127, 1.01 / 8,
                                 1.01 / 15, 1.01 / 16, 1.01 / 31, 0.4,       0.2,
                                 0.1,       0.05,      0.025};
    enum { N = 256 * 256 };
    static float want[N], got[N];
    char err[ERR_MSG_MAX];

    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        struct synth_config c;
        struct gguf *g;

        synth_config_default(&c, SYNTH_ARCH_LLAMA);
        c.n_layer = 1;
        c.type = types[i];
        c.seed = 42;
        g = write_and_open(&c, "type.gguf");
        CHECK(g != NULL);
        const struct gguf_tensor *q = gguf_find_tensor(g, "blk.0.attn_q.weight");
        const struct gguf_tensor *norm = gguf_find_tensor(g, "blk.0.ffn_norm.weight");
        bool shaped =
            check_layout(g, &c, 512) && kv_int(g, "general.file_type") == (int64_t)file_types[i];
        if (shaped) {
            type_traits(types[i])->to_float(q->data, got, N);
            memcpy(want, norm->data, 256 * sizeof(float)); /* the norm, F32, for its mean below */
        }
        gguf_close(g);
        CHECKF(shaped, "type %s: layout or file type", type_traits(types[i])->name);

        double norm_mean = 0.0;
        for (int j = 0; j < 256; j++)
            norm_mean += want[j] / 256.0;
        CHECKF(fabs(norm_mean - 1.0) < 0.03, "norm mean %g", norm_mean);

        CHECK(synth_tensor_values(&c, "blk.0.attn_q.weight", 0, N, want, err) == ERR_OK);
        double sum2 = 0.0;
        for (int k = 0; k < N / 32; k++) {
            float amax = 0.0f;

            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(want[k * 32 + j]));
            for (int j = 0; j < 32; j++) {
                int e = k * 32 + j;
                double bound = types[i] == TYPE_F16 || types[i] == TYPE_BF16
                                   ? fmax(fabs(want[e]) * tol[i], 0x1p-25)
                                   : amax * tol[i];

                CHECKF(fabs(got[e] - want[e]) <= bound, "type %s element %d: %g, want %g",
                       type_traits(types[i])->name, e, got[e], want[e]);
                sum2 += (double)want[e] * want[e];
            }
        }
        double std = sqrt(sum2 / N);
        CHECKF(fabs(std * 16.0 - 1.0) < 0.02, "attn_q std %g, want 1/sqrt(256)", std);
    }
}

/* The type llama-quantize would give each matrix: want[i] for tensor names[i] of the file. */
static bool
check_types(const struct gguf *g, const char *const *names, const uint32_t *want, size_t n)
{
    bool ok = true;

    for (size_t i = 0; i < n; i++) {
        const struct gguf_tensor *t = gguf_find_tensor(g, names[i]);

        if (t == NULL || t->type != want[i]) {
            harness_fail(__FILE__, __LINE__, "%s: type %s, want %s", names[i],
                         t != NULL ? type_traits(t->type)->name : "(none)",
                         type_traits(want[i])->name);
            ok = false;
        }
    }
    return ok;
}

/*
 * Q4_K_M over 8 layers: Q6_K for the output and for attn_v and ffn_down of layers 0, 3, 6 and 7
 * (llama-quantize's rule: i < n/8, i >= 7n/8, (i - n/8) % 3 == 2), Q4_K elsewhere; n_ff 800 is a
 * multiple of 32 but not of 256, so ffn_down falls back to Q5_0 (Q8_0 where it would be Q6_K).
 */
static void
test_k_mix_and_fallback(void)
{
    struct synth_config c;
    struct gguf *g;
    static const char *const names[] = {
        "output.weight",         "token_embd.weight",     "blk.0.attn_v.weight",
        "blk.1.attn_v.weight",   "blk.3.attn_v.weight",   "blk.6.attn_v.weight",
        "blk.7.attn_v.weight",   "blk.5.attn_q.weight",   "blk.0.ffn_down.weight",
        "blk.1.ffn_down.weight", "blk.2.ffn_gate.weight",
    };
    static const uint32_t want[] = {TYPE_Q6_K, TYPE_Q4_K, TYPE_Q6_K, TYPE_Q4_K,
                                    TYPE_Q6_K, TYPE_Q6_K, TYPE_Q6_K, TYPE_Q4_K,
                                    TYPE_Q8_0, TYPE_Q5_0, TYPE_Q4_K};

    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.n_layer = 8;
    c.n_ff = 800;
    c.type = TYPE_Q4_K;
    c.mix_m = true;
    g = write_and_open(&c, "q4_k_m.gguf");
    CHECK(g != NULL);
    if (g != NULL) {
        CHECK(check_types(g, names, want, sizeof(names) / sizeof(names[0])));
        CHECK(kv_int(g, "general.file_type") == 15);
        gguf_close(g);
    }

    /* Q5_K_M, tied: the embedding is the output, so Q6_K; n_ff 100 leaves ffn_down in F16 */
    static const char *const tied_names[] = {"token_embd.weight", "blk.0.ffn_down.weight",
                                             "blk.1.ffn_down.weight", "blk.1.ffn_up.weight"};
    static const uint32_t tied_want[] = {TYPE_Q6_K, TYPE_F16, TYPE_F16, TYPE_Q5_K};
    synth_config_default(&c, SYNTH_ARCH_QWEN2);
    c.n_ff = 100;
    c.type = TYPE_Q5_K;
    c.mix_m = true;
    g = write_and_open(&c, "q5_k_m.gguf");
    CHECK(g != NULL);
    if (g != NULL) {
        CHECK(check_types(g, tied_names, tied_want, 4));
        CHECK(kv_int(g, "general.file_type") == 17);
        gguf_close(g);
    }

    /* rows of 64 (stories260K's shape): every Q6_K matrix becomes Q8_0 */
    static const char *const small_names[] = {"token_embd.weight", "blk.0.attn_q.weight",
                                              "blk.0.ffn_down.weight"};
    static const uint32_t small_want[] = {TYPE_Q8_0, TYPE_Q8_0, TYPE_Q8_0};
    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.n_embd = 64;
    c.n_head = 4;
    c.n_head_kv = 4;
    c.n_ff = 192;
    c.type = TYPE_Q6_K;
    g = write_and_open(&c, "q6_k.gguf");
    CHECK(g != NULL);
    if (g != NULL) {
        CHECK(check_types(g, small_names, small_want, 3));
        gguf_close(g);
    }
}

/* The generator is counter-based: any slice of a tensor equals the same slice of the whole. */
static void
test_values_any_order(void)
{
    struct synth_config c;
    static float whole[4096], part[100];
    char err[ERR_MSG_MAX];

    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    CHECK(synth_tensor_values(&c, "blk.1.ffn_up.weight", 0, 4096, whole, err) == ERR_OK);
    CHECK(synth_tensor_values(&c, "blk.1.ffn_up.weight", 3000, 100, part, err) == ERR_OK);
    CHECK(memcmp(whole + 3000, part, sizeof(part)) == 0);
    CHECK(synth_tensor_values(&c, "blk.0.ffn_up.weight", 3000, 100, part, err) == ERR_OK);
    CHECK(memcmp(whole + 3000, part, sizeof(part)) != 0);
    CHECK(synth_tensor_values(&c, "blk.2.ffn_up.weight", 0, 1, part, err) == ERR_NOT_FOUND);
    CHECKF(strstr(err, "blk.2.ffn_up.weight") != NULL, "%s", err);
    CHECK(synth_tensor_values(&c, "output.weight", 0, 1, part, err) == ERR_OK);
    c.tied = true;
    CHECK(synth_tensor_values(&c, "output.weight", 0, 1, part, err) == ERR_NOT_FOUND);
}

/* Reads a whole file; NULL on error. */
static uint8_t *
slurp(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    struct stat st;

    if (f == NULL)
        return NULL;
    if (fstat(fileno(f), &st) == 0 && (buf = malloc((size_t)st.st_size + 1)) != NULL &&
        fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        free(buf);
        buf = NULL;
    }
    *size = buf != NULL ? (size_t)st.st_size : 0;
    fclose(f);
    return buf;
}

/* Two files with byte-identical contents? */
static bool
same_bytes(const char *a, const char *b)
{
    size_t na, nb;
    uint8_t *x = slurp(a, &na), *y = slurp(b, &nb);
    bool same = x != NULL && y != NULL && na == nb && memcmp(x, y, na) == 0;

    free(x);
    free(y);
    return same;
}

static void
test_same_seed_same_bytes(void)
{
    struct synth_config c;
    char a[512], b[512], d[512], err[ERR_MSG_MAX];

    synth_config_default(&c, SYNTH_ARCH_QWEN2);
    c.type = TYPE_Q4_0;
    c.seed = 7;
    CHECKF(synth_write_file(&c, tmp_path(a, sizeof(a), "s7a.gguf"), err) == ERR_OK, "%s", err);
    CHECKF(synth_write_file(&c, tmp_path(b, sizeof(b), "s7b.gguf"), err) == ERR_OK, "%s", err);
    c.seed = 8;
    CHECKF(synth_write_file(&c, tmp_path(d, sizeof(d), "s8.gguf"), err) == ERR_OK, "%s", err);
    CHECK(same_bytes(a, b));
    CHECK(!same_bytes(a, d));
}

/* The built-in vocabulary: SentencePiece layout, unique pieces, each filler a merge of two. */
static void
test_builtin_vocab(void)
{
    struct synth_config c;
    const struct gguf_arr *tokens, *scores, *types;
    char err[ERR_MSG_MAX];
    struct gguf *g;

    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.n_layer = 1;
    c.n_embd = 64;
    c.n_head = c.n_head_kv = 2;
    c.n_ff = 64;
    c.n_vocab = 3000;
    g = write_and_open(&c, "vocab.gguf");
    CHECK(g != NULL);
    bool ok = gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, err) == ERR_OK &&
              gguf_get_arr(g, "tokenizer.ggml.scores", &scores, err) == ERR_OK &&
              gguf_get_arr(g, "tokenizer.ggml.token_type", &types, err) == ERR_OK &&
              tokens->n == 3000 && scores->n == 3000 && types->n == 3000 &&
              kv_str_is(g, "tokenizer.ggml.model", "llama") &&
              kv_int(g, "tokenizer.ggml.unknown_token_id") == 0 &&
              kv_int(g, "tokenizer.ggml.eos_token_id") == 2;
    if (!ok) {
        gguf_close(g);
        CHECKF(0, "tokenizer keys: %s", err);
    }
    char *text[3000];
    for (uint64_t i = 0; i < tokens->n; i++)
        text[i] = strndup(tokens->strs[i].data, tokens->strs[i].len);
    int fails = 0;
    fails += strcmp(text[0], "<unk>") != 0 || strcmp(text[1], "<s>") != 0;
    fails += strcmp(text[2], "</s>") != 0 || strcmp(text[3 + 0x0a], "<0x0A>") != 0;
    fails += gguf_arr_get_int(types, 0) != 2 || gguf_arr_get_int(types, 1) != 3;
    fails += gguf_arr_get_int(types, 3) != 6 || gguf_arr_get_int(types, 258) != 6;
    fails += strcmp(text[259], "\xe2\x96\x81") != 0 || strcmp(text[260], "a") != 0;
    for (int i = 259; i < 3000; i++) {
        size_t len = strlen(text[i]);
        bool merge = i == 259 || len == 1;

        /* a piece splits into two earlier pieces (its last letter is one of them) */
        for (int j = 259; j < i && !merge; j++)
            merge = strlen(text[j]) == len - 1 && strncmp(text[j], text[i], len - 1) == 0;
        fails += !merge;
        fails += gguf_arr_get_int(types, i) != 1;
        fails += gguf_arr_get_float(scores, i) >= gguf_arr_get_float(scores, i - 1) && i > 259;
        for (int j = 0; j < i; j++)
            fails += strcmp(text[i], text[j]) == 0;
    }
    for (uint64_t i = 0; i < tokens->n; i++)
        free(text[i]);
    gguf_close(g);
    CHECKF(fails == 0, "%d problems in the built-in vocabulary", fails);
}

/* --vocab-from: every tokenizer.* key of stories260K.gguf, value for value. */
static void
test_vocab_from_copies_tokenizer(void)
{
    struct synth_config c;
    char src[512], path[512], err[ERR_MSG_MAX];
    struct gguf *from = NULL, *g = NULL;
    size_t n_copied = 0;

    if (!harness_shared(src, sizeof(src), "models/stories260K.gguf"))
        return;
    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.vocab_from = src;
    c.n_vocab = 0;
    c.n_layer = 1;
    g = write_and_open(&c, "from.gguf");
    CHECK(g != NULL);
    if (gguf_open(&from, src, err) != ERR_OK) {
        gguf_close(g);
        CHECKF(0, "%s", err);
    }
    bool ok = check_layout(g, &c, 512) && kv_int(g, "llama.vocab_size") == 512;
    for (size_t i = 0; i < gguf_n_kv(from) && ok; i++) {
        const struct gguf_kv *a = gguf_kv_at(from, i), *b;

        if (strncmp(a->key, "tokenizer.", 10) != 0)
            continue;
        b = gguf_find_kv(g, a->key);
        ok = b != NULL && b->type == a->type;
        if (ok && a->type == GGUF_VTYPE_ARRAY) {
            ok = b->v.arr.type == a->v.arr.type && b->v.arr.n == a->v.arr.n;
            for (uint64_t j = 0; ok && a->v.arr.type == GGUF_VTYPE_STRING && j < a->v.arr.n; j++)
                ok =
                    a->v.arr.strs[j].len == b->v.arr.strs[j].len &&
                    memcmp(a->v.arr.strs[j].data, b->v.arr.strs[j].data, a->v.arr.strs[j].len) == 0;
            if (ok && a->v.arr.type != GGUF_VTYPE_STRING)
                ok = memcmp(a->v.arr.data, b->v.arr.data,
                            a->v.arr.n * gguf_vtype_size(a->v.arr.type)) == 0;
        } else if (ok && a->type == GGUF_VTYPE_STRING) {
            ok = a->v.str.len == b->v.str.len &&
                 memcmp(a->v.str.data, b->v.str.data, a->v.str.len) == 0;
        } else if (ok) {
            ok = memcmp(&a->v, &b->v, sizeof(a->v.u)) == 0;
        }
        if (!ok)
            harness_fail(__FILE__, __LINE__, "key %s differs", a->key);
        n_copied++;
    }
    gguf_close(from);
    gguf_close(g);
    CHECK(ok);
    CHECKF(n_copied >= 7, "only %zu tokenizer keys", n_copied);

    c.n_vocab = 600; /* not the file's 512 */
    CHECK(synth_write_file(&c, tmp_path(path, sizeof(path), "bad.gguf"), err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "512") != NULL, "%s", err);
    CHECK(access(path, F_OK) != 0);
}

static void
test_bad_configs_refused(void)
{
    static const struct {
        const char *field;
        int64_t n_embd, n_head, n_head_kv, n_ff, n_vocab;
        uint32_t type;
    } cases[] = {
        {"n_head", 100, 3, 3, 64, 512, TYPE_F16},       /* 100 not a multiple of 3 */
        {"even", 96, 32, 32, 64, 512, TYPE_F16},        /* head size 3 */
        {"n_head_kv", 256, 8, 3, 64, 512, TYPE_F16},    /* 8 not a multiple of 3 */
        {"block size", 256, 8, 8, 100, 512, TYPE_Q8_0}, /* n_ff 100 not a multiple of 32 */
        {"iq2_xs", 256, 8, 8, 256, 512, TYPE_IQ2_XS},   /* no quantizer */
        {"block size", 256, 8, 8, 800, 512, TYPE_Q2_K}, /* its fallback is not written */
        {"q8_k", 256, 8, 8, 256, 512, TYPE_Q8_K},       /* activations only */
        {"vocab", 256, 8, 8, 256, 100, TYPE_F16},       /* too small for the built-in vocab */
        {"n_embd", 0, 8, 8, 256, 512, TYPE_F16},
    };
    char path[512], err[ERR_MSG_MAX];

    tmp_path(path, sizeof(path), "refused.gguf");
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct synth_config c;

        synth_config_default(&c, SYNTH_ARCH_LLAMA);
        c.n_embd = cases[i].n_embd;
        c.n_head = cases[i].n_head;
        c.n_head_kv = cases[i].n_head_kv;
        c.n_ff = cases[i].n_ff;
        c.n_vocab = cases[i].n_vocab;
        c.type = cases[i].type;
        err[0] = '\0';
        CHECKF(synth_write_file(&c, path, err) == ERR_BAD_REQUEST, "case %zu", i);
        CHECKF(strstr(err, cases[i].field) != NULL, "case %zu: '%s' lacks '%s'", i, err,
               cases[i].field);
        CHECKF(access(path, F_OK) != 0, "case %zu left a file", i);
    }

    /* the _M mix is for Q4_K and Q5_K only */
    struct synth_config c;
    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.type = TYPE_Q8_0;
    c.mix_m = true;
    CHECK(synth_write_file(&c, path, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "mix") != NULL, "%s", err);
}

/* Runs build/.../gguf-synth with args (a shell fragment); returns its exit status, -1 if it died.
 */
static int
run_tool(const char *args, const char *stderr_file)
{
    char cmd[2048], dir[512];
    const char *slash = strrchr(argv0, '/');

    snprintf(dir, sizeof(dir), "%.*s", slash != NULL ? (int)(slash - argv0) : 1,
             slash != NULL ? argv0 : ".");
    snprintf(cmd, sizeof(cmd), "%s/../gguf-synth %s >/dev/null 2>%s", dir, args, stderr_file);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Lines in a file. */
static int
count_lines(const char *path)
{
    size_t n;
    uint8_t *buf = slurp(path, &n);
    int lines = 0;

    for (size_t i = 0; buf != NULL && i < n; i++)
        lines += buf[i] == '\n';
    free(buf);
    return lines;
}

/* The command line maps its options onto the config: the same model as synth_write_file. */
static void
test_tool_command_line(void)
{
    struct synth_config c;
    char api[512], cli[512], errf[512], args[1400], err[ERR_MSG_MAX];

    tmp_path(api, sizeof(api), "api.gguf");
    tmp_path(cli, sizeof(cli), "cli.gguf");
    tmp_path(errf, sizeof(errf), "stderr.txt");
    synth_config_default(&c, SYNTH_ARCH_QWEN2);
    c.n_embd = 128;
    c.n_layer = 3;
    c.n_head = 8;
    c.n_head_kv = 2;
    c.n_ff = 352;
    c.n_vocab = 700;
    c.n_ctx = 4096;
    c.rope_base = 20000.0f;
    c.rms_eps = 1e-5f;
    c.tied = false;
    c.type = TYPE_BF16;
    c.seed = 99;
    CHECKF(synth_write_file(&c, api, err) == ERR_OK, "%s", err);
    snprintf(args, sizeof(args),
             "--arch qwen2 --n-embd 128 --n-layer 3 --n-head 8 --n-head-kv 2 --n-ff 352 "
             "--vocab 700 --ctx 4096 --rope-base 20000 --rms-eps 1e-5 --untied-output "
             "--type bf16 --seed 99 -o %s",
             cli);
    CHECK(run_tool(args, errf) == 0);
    CHECK(same_bytes(api, cli));

    /* defaults: a llama with n_head_kv = n_head */
    synth_config_default(&c, SYNTH_ARCH_LLAMA);
    c.n_head = 4;
    c.n_head_kv = 4;
    CHECKF(synth_write_file(&c, api, err) == ERR_OK, "%s", err);
    snprintf(args, sizeof(args), "--n-head 4 -o %s", cli);
    CHECK(run_tool(args, errf) == 0);
    CHECK(same_bytes(api, cli));

    /* a mix by name */
    c.type = TYPE_Q4_K;
    c.mix_m = true;
    CHECKF(synth_write_file(&c, api, err) == ERR_OK, "%s", err);
    snprintf(args, sizeof(args), "--n-head 4 --type q4_k_m -o %s", cli);
    CHECK(run_tool(args, errf) == 0);
    CHECK(same_bytes(api, cli));

    CHECK(run_tool("--help", errf) == 0);
    CHECK(run_tool("", errf) != 0); /* no -o */
    static const char *const bad[] = {
        "--n-embd 12x -o",
        "--type q9_9 -o",
        "--type q8_0_m -o",
        "--arch gpt2 -o",
        "--bogus -o",
        "--n-layer 2 --n-embd",
        "--n-ff 100 --type q4_0 -o",
        "extra -o",
        "--vocab-from /nonexistent -o",
    };
    tmp_path(cli, sizeof(cli), "bad.gguf");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(args, sizeof(args), "%s %s", bad[i], cli);
        int rc = run_tool(args, errf);

        CHECKF(rc > 0, "'%s' exited %d", args, rc);
        CHECKF(count_lines(errf) == 1, "'%s': %d lines on stderr", args, count_lines(errf));
        CHECKF(access(cli, F_OK) != 0, "'%s' left a file", args);
    }
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_llama_gqa_f16),
        TEST(test_llama_mqa_tied_q8_0),
        TEST(test_qwen2_biases_tied),
        TEST(test_every_type_values),
        TEST(test_k_mix_and_fallback),
        TEST(test_values_any_order),
        TEST(test_same_seed_same_bytes),
        TEST(test_builtin_vocab),
        TEST(test_vocab_from_copies_tokenizer),
        TEST(test_bad_configs_refused),
        TEST(test_tool_command_line),
        {0},
    };
    argv0 = argv[0];
    return harness_run(tests, argc, argv);
}
