/*
 * synth.c: the synthetic model builder of synth.h. It plans the tensors of the architecture (names
 * and shapes as llama.cpp's GGUF files have them), writes the metadata and a tokenizer (copied or
 * built in) through tests/gguf_write.h, then generates each tensor in row chunks from the
 * counter-based generator (tests/synth_rand.h), converts the rows to each tensor's type (the
 * type table's reference quantizers, workerd/engine/types.h) and streams them out.
 */
#include "tests/synth.h"

#include "common/err.h"
#include "tests/gguf_write.h"
#include "tests/synth_rand.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/types.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_MAX_LEN 64
#define DIM_MAX      (1 << 24) /* bound on each shape number: products stay far from overflow */
#define CHUNK_ELEMS  (1 << 18) /* floats generated per chunk (1 MB), at least one row */
#define LOGIT_STD    3.0f      /* standard deviation of the logits the output matrix aims at */
#define SPM_SPACE    "\xe2\x96\x81" /* U+2581, SentencePiece's word-start mark */

/* One tensor of the plan: its name, shape, type and the distribution of its values. */
struct plan_tensor {
    char name[NAME_MAX_LEN];
    uint32_t n_dims;
    int64_t ne[2];
    uint32_t type;
    float mean;
    float std;
};

struct plan {
    struct plan_tensor *t;
    size_t n;
};

/* Llama-3.1's per-pair RoPE frequency divisors (synth_config.rope_freqs) */
#define ROPE_FREQS "rope_freqs.weight"

static const char *const arch_names[] = {
    [SYNTH_ARCH_LLAMA] = "llama",
    [SYNTH_ARCH_QWEN2] = "qwen2",
};

void
synth_config_default(struct synth_config *c, enum synth_arch arch)
{
    memset(c, 0, sizeof(*c));
    c->arch = arch;
    c->n_embd = 256;
    c->n_layer = 2;
    c->n_head = 8;
    c->n_head_kv = 8;
    c->n_ff = 768;
    c->n_vocab = 512;
    c->n_ctx = 2048;
    c->rope_base = arch == SYNTH_ARCH_QWEN2 ? 1000000.0f : 10000.0f;
    c->rms_eps = arch == SYNTH_ARCH_QWEN2 ? 1e-6f : 1e-5f;
    c->tied = arch == SYNTH_ARCH_QWEN2;
    c->type = TYPE_F16;
    c->seed = 1;
}

bool
synth_arch_parse(const char *s, enum synth_arch *out)
{
    for (size_t i = 0; i < sizeof(arch_names) / sizeof(arch_names[0]); i++) {
        if (strcmp(s, arch_names[i]) == 0) {
            *out = (enum synth_arch)i;
            return true;
        }
    }
    return false;
}

/*
 * llama.cpp's general.file_type for the model's type: the _M mixes are Q4_K_M 15 / Q5_K_M 17,
 * plain K types the nearest llama.cpp name (Q2_K 10, Q3_K_S 11, Q4_K_S 14, Q5_K_S 16, Q6_K 18).
 */
static uint32_t
file_type_of(const struct synth_config *c)
{
    switch (c->type) {
    case TYPE_F32:
        return 0;
    case TYPE_F16:
        return 1;
    case TYPE_Q4_0:
        return 2;
    case TYPE_Q4_1:
        return 3;
    case TYPE_Q8_0:
        return 7;
    case TYPE_Q5_0:
        return 8;
    case TYPE_Q5_1:
        return 9;
    case TYPE_Q2_K:
        return 10;
    case TYPE_Q3_K:
        return 11;
    case TYPE_Q4_K:
        return c->mix_m ? 15 : 14;
    case TYPE_Q5_K:
        return c->mix_m ? 17 : 16;
    case TYPE_Q6_K:
        return 18;
    default: /* TYPE_BF16: the only other type check_config lets through */
        return 32;
    }
}

/* llama-quantize's rule for the layers whose attn_v and ffn_down the _M mixes keep in Q6_K. */
static bool
more_bits_layer(int64_t i, int64_t n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/*
 * The type of a matrix with rows of ne0: the model's type, Q6_K where the _M mix wants more bits
 * (the output, or the tied embedding; attn_v and ffn_down of more_bits_layer), and for K types a
 * row not a multiple of 256 falls back as llama-quantize does: Q4_K -> Q5_0, Q5_K -> Q5_1,
 * Q6_K -> Q8_0, and F16 when the row is not a multiple of 32 either.
 */
static uint32_t
matrix_type(const struct synth_config *c, bool more_bits, int64_t ne0)
{
    uint32_t t = c->mix_m && more_bits ? TYPE_Q6_K : c->type;

    if (ne0 % type_traits(t)->blck == 0)
        return t;
    switch (t) {
    case TYPE_Q4_K:
        t = TYPE_Q5_0;
        break;
    case TYPE_Q5_K:
        t = TYPE_Q5_1;
        break;
    case TYPE_Q6_K:
        t = TYPE_Q8_0;
        break;
    default: /* check_config refuses the other types' bad rows (Q2_K's, Q3_K's included) */
        return t;
    }
    return ne0 % 32 == 0 ? t : TYPE_F16;
}

static int
check_dim(const char *what, int64_t v, int64_t min, char *err)
{
    if (v < min || v > DIM_MAX)
        return err_set(err, ERR_BAD_REQUEST, "%s must be in [%lld, %d], got %lld", what,
                       (long long)min, DIM_MAX, (long long)v);
    return ERR_OK;
}

/* Everything about c that does not need the vocab file; n_vocab is checked once it is known. */
static int
check_config(const struct synth_config *c, char *err)
{
    const struct type_traits *tt = type_traits(c->type);
    int rc;

    if ((unsigned)c->arch >= sizeof(arch_names) / sizeof(arch_names[0]))
        return err_set(err, ERR_BAD_REQUEST, "unknown architecture %d", (int)c->arch);
    if ((rc = check_dim("n_embd", c->n_embd, 1, err)) != ERR_OK ||
        (rc = check_dim("n_layer", c->n_layer, 1, err)) != ERR_OK ||
        (rc = check_dim("n_head", c->n_head, 1, err)) != ERR_OK ||
        (rc = check_dim("n_head_kv", c->n_head_kv, 1, err)) != ERR_OK ||
        (rc = check_dim("n_ff", c->n_ff, 1, err)) != ERR_OK ||
        (rc = check_dim("n_ctx", c->n_ctx, 1, err)) != ERR_OK)
        return rc;
    if (c->n_layer > 9999)
        return err_set(err, ERR_BAD_REQUEST, "n_layer must be at most 9999, got %lld",
                       (long long)c->n_layer);
    if (c->n_embd % c->n_head != 0)
        return err_set(err, ERR_BAD_REQUEST, "n_embd %lld is not a multiple of n_head %lld",
                       (long long)c->n_embd, (long long)c->n_head);
    if ((c->n_embd / c->n_head) % 2 != 0)
        return err_set(err, ERR_BAD_REQUEST, "head size n_embd / n_head = %lld must be even (RoPE)",
                       (long long)(c->n_embd / c->n_head));
    if (c->n_head % c->n_head_kv != 0)
        return err_set(err, ERR_BAD_REQUEST, "n_head %lld is not a multiple of n_head_kv %lld",
                       (long long)c->n_head, (long long)c->n_head_kv);
    if (!(c->rope_base > 0.0f) || !isfinite(c->rope_base))
        return err_set(err, ERR_BAD_REQUEST, "rope base must be positive, got %g",
                       (double)c->rope_base);
    if (c->rope_scale_linear < 0.0f || !isfinite(c->rope_scale_linear))
        return err_set(err, ERR_BAD_REQUEST, "linear rope scale must be positive, got %g",
                       (double)c->rope_scale_linear);
    if (!(c->rms_eps > 0.0f) || !isfinite(c->rms_eps))
        return err_set(err, ERR_BAD_REQUEST, "rms eps must be positive, got %g",
                       (double)c->rms_eps);
    if (tt == NULL || tt->from_float == NULL || tt->vec_dot == NULL)
        return err_set(err, ERR_BAD_REQUEST, "type %s: gguf-synth cannot write it",
                       tt != NULL ? tt->name : "(unknown id)");
    if (c->mix_m && c->type != TYPE_Q4_K && c->type != TYPE_Q5_K)
        return err_set(err, ERR_BAD_REQUEST, "the _M mix needs type q4_k or q5_k, not %s",
                       tt->name);
    /* Q4_K..Q6_K fall back where a row does not fit (matrix_type); the others must fit (Q2_K's and
     * Q3_K's fallback, IQ4_NL, is not written) */
    if ((tt->blck < 256 || c->type == TYPE_Q2_K || c->type == TYPE_Q3_K) &&
        (c->n_embd % tt->blck != 0 || c->n_ff % tt->blck != 0))
        return err_set(err, ERR_BAD_REQUEST,
                       "n_embd %lld and n_ff %lld must be multiples of %s's block size %u",
                       (long long)c->n_embd, (long long)c->n_ff, tt->name, tt->blck);
    return ERR_OK;
}

/* Adds a tensor to the plan (sized by plan_build), with its value distribution. */
static void
plan_add(struct plan *p, const char *name, int64_t ne0, int64_t ne1, uint32_t type, float mean,
         float std)
{
    struct plan_tensor *t = &p->t[p->n++];

    snprintf(t->name, sizeof(t->name), "%s", name);
    t->n_dims = ne1 > 0 ? 2 : 1;
    t->ne[0] = ne0;
    t->ne[1] = ne1 > 0 ? ne1 : 1;
    t->type = type;
    t->mean = mean;
    t->std = std;
}

/*
 * The tensors of the model in file order. Matrices are N(0, 1/fan_in) (std 1/sqrt(ne0)) so each
 * projection keeps the scale of its input; norms N(1, 0.1); biases N(0, 0.1); the embedding N(0, 1)
 * when untied; the output (or the tied embedding) scaled for logits of std LOGIT_STD.
 */
static int
plan_build(const struct synth_config *c, int64_t n_vocab, struct plan *p, char *err)
{
    const int64_t hd = c->n_embd / c->n_head, n_kv = hd * c->n_head_kv;
    const bool bias = c->arch == SYNTH_ARCH_QWEN2;
    const size_t per_layer = bias ? 12 : 9;
    const float s_embd = 1.0f / sqrtf((float)c->n_embd), s_ff = 1.0f / sqrtf((float)c->n_ff);
    const float s_logit = LOGIT_STD * s_embd;
    char name[NAME_MAX_LEN];

    p->n = 0;
    p->t = calloc(4 + (size_t)c->n_layer * per_layer, sizeof(*p->t));
    if (p->t == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for %lld layers", (long long)c->n_layer);
    const int64_t e = c->n_embd, f = c->n_ff;

    if (c->rope_freqs) /* values from rope_freqs_values(), not the generator */
        plan_add(p, ROPE_FREQS, hd / 2, 0, TYPE_F32, 0.0f, 0.0f);

    plan_add(p, "token_embd.weight", e, n_vocab, matrix_type(c, c->tied, e), 0.0f,
             c->tied ? s_logit : 1.0f);
    for (int64_t l = 0; l < c->n_layer; l++) {
        const bool more = more_bits_layer(l, c->n_layer);

#define LAYER(suffix, ne0, ne1, type, mean, std)                                                   \
    do {                                                                                           \
        snprintf(name, sizeof(name), "blk.%lld." suffix, (long long)l);                            \
        plan_add(p, name, ne0, ne1, type, mean, std);                                              \
    } while (0)
        LAYER("attn_norm.weight", e, 0, TYPE_F32, 1.0f, 0.1f);
        LAYER("attn_q.weight", e, e, matrix_type(c, false, e), 0.0f, s_embd);
        LAYER("attn_k.weight", e, n_kv, matrix_type(c, false, e), 0.0f, s_embd);
        LAYER("attn_v.weight", e, n_kv, matrix_type(c, more, e), 0.0f, s_embd);
        if (bias) {
            LAYER("attn_q.bias", c->n_embd, 0, TYPE_F32, 0.0f, 0.1f);
            LAYER("attn_k.bias", n_kv, 0, TYPE_F32, 0.0f, 0.1f);
            LAYER("attn_v.bias", n_kv, 0, TYPE_F32, 0.0f, 0.1f);
        }
        LAYER("attn_output.weight", e, e, matrix_type(c, false, e), 0.0f, s_embd);
        LAYER("ffn_norm.weight", e, 0, TYPE_F32, 1.0f, 0.1f);
        LAYER("ffn_gate.weight", e, f, matrix_type(c, false, e), 0.0f, s_embd);
        LAYER("ffn_up.weight", e, f, matrix_type(c, false, e), 0.0f, s_embd);
        LAYER("ffn_down.weight", f, e, matrix_type(c, more, f), 0.0f, s_ff);
#undef LAYER
    }
    plan_add(p, "output_norm.weight", c->n_embd, 0, TYPE_F32, 1.0f, 0.1f);
    if (!c->tied)
        plan_add(p, "output.weight", e, n_vocab, matrix_type(c, true, e), 0.0f, s_logit);
    return ERR_OK;
}

/* The generator stream of a tensor: FNV-1a of its name, so values do not depend on file order. */
static uint64_t
name_stream(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (const unsigned char *s = (const unsigned char *)name; *s != '\0'; s++)
        h = (h ^ *s) * 0x100000001b3ull;
    return h;
}

/*
 * Llama-3.1's frequency divisors, as its converter writes rope_freqs.weight: for pair i of a head
 * of hd, the frequency f = base^(-2i/hd) has the wavelength 2 pi / f; wavelengths under
 * 8192 / 4 keep f (divisor 1), over 8192 / 1 are slowed by the factor 8, and between the two the
 * new frequency blends f / 8 and f by s = (8192 / wavelength - 1) / (4 - 1).
 */
static float
rope_freq_divisor(const struct synth_config *c, int64_t i)
{
    const double factor = 8, low = 1, high = 4, ctx0 = 8192;
    const double hd = (double)(c->n_embd / c->n_head);
    double f = pow(c->rope_base, -2.0 * (double)i / hd), wavelen = 2 * M_PI / f;

    if (wavelen < ctx0 / high)
        return 1.0f;
    if (wavelen > ctx0 / low)
        return (float)factor;
    double s = (ctx0 / wavelen - low) / (high - low);
    return (float)(1.0 / ((1 - s) / factor + s));
}

static void
tensor_values(const struct synth_config *c, const struct plan_tensor *t, uint64_t first, int64_t n,
              float *out)
{
    if (strcmp(t->name, ROPE_FREQS) == 0) {
        for (int64_t k = 0; k < n; k++)
            out[k] = rope_freq_divisor(c, (int64_t)first + k);
        return;
    }
    synth_rand_normal(c->seed, name_stream(t->name), first, n, t->mean, t->std, out);
}

/* The number of tokens of the vocab file's tokenizer.ggml.tokens. */
static int
vocab_file_size(const struct gguf *g, const char *path, int64_t *n, char *err)
{
    const struct gguf_arr *a;
    char e[ERR_MSG_MAX];
    int rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &a, e);

    if (rc != ERR_OK)
        return err_set(err, rc, "%s: %s", path,
                       rc == ERR_NOT_FOUND ? "no tokenizer.ggml.tokens" : e);
    if (a->type != GGUF_VTYPE_STRING || a->n == 0)
        return err_set(err, ERR_FORMAT, "%s: tokenizer.ggml.tokens is not a non-empty string array",
                       path);
    *n = (int64_t)a->n;
    return ERR_OK;
}

/* Copies every tokenizer.* KV of the vocab file (writer errors surface at write_header). */
static void
add_vocab_copy(struct gguf_writer *w, const struct gguf *g)
{
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);

        if (strncmp(kv->key, "tokenizer.", 10) == 0)
            gguf_writer_kv_copy(w, kv, NULL);
    }
}

/*
 * The built-in SentencePiece-style vocabulary of n tokens: <unk>, <s>, </s>, the 256 byte tokens
 * <0x00>..<0xFF>, then filler pieces by falling score: "▁", the letters, "▁" + letter, then every
 * two-letter piece without and with "▁", and so on. Every piece is the merge of two earlier ones,
 * so a SentencePiece tokenizer can reach each of them. Fails only for lack of memory (writer
 * errors surface at write_header).
 */
static int
add_vocab_builtin(struct gguf_writer *w, int64_t n, char *err)
{
    enum { N_FIXED = 3 + 256, PIECE_MAX = 3 + 16 + 1 };
    char **tokens = calloc((size_t)n, sizeof(*tokens));
    char *text = malloc((size_t)n * PIECE_MAX);
    float *scores = calloc((size_t)n, sizeof(*scores));
    int32_t *types = calloc((size_t)n, sizeof(*types));
    int rc = ERR_OK;

    if (tokens == NULL || text == NULL || scores == NULL || types == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory for a vocabulary of %lld tokens", (long long)n);
        goto out;
    }
    for (int64_t i = 0; i < n; i++)
        tokens[i] = text + i * PIECE_MAX;
    strcpy(tokens[0], "<unk>");
    strcpy(tokens[1], "<s>");
    strcpy(tokens[2], "</s>");
    types[0] = 2;            /* unknown */
    types[1] = types[2] = 3; /* control */
    for (int b = 0; b < 256; b++) {
        snprintf(tokens[3 + b], PIECE_MAX, "<0x%02X>", b);
        types[3 + b] = 6; /* byte */
    }
    int64_t i = N_FIXED;
    if (i < n) {
        strcpy(tokens[i], SPM_SPACE);
        scores[i] = -1.0f;
        types[i++] = 1;
    }
    /* k letters, first without then with the word-start mark; ranks counted in base 26 */
    for (int k = 1; i < n && k <= 16; k++) {
        for (int space = 0; space < 2 && i < n; space++) {
            uint64_t count = 1;

            for (int j = 0; j < k; j++)
                count = count < (UINT64_MAX / 26) ? count * 26 : UINT64_MAX;
            for (uint64_t r = 0; r < count && i < n; r++) {
                char *s = tokens[i];
                uint64_t v = r;

                if (space) {
                    memcpy(s, SPM_SPACE, 3);
                    s += 3;
                }
                for (int j = k - 1; j >= 0; j--) {
                    s[j] = (char)('a' + v % 26);
                    v /= 26;
                }
                s[k] = '\0';
                scores[i] = -(float)(i - N_FIXED + 1);
                types[i++] = 1; /* normal */
            }
        }
    }
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tokens, (uint64_t)n);
    gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, scores, (uint64_t)n);
    gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, types, (uint64_t)n);
    gguf_writer_add_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_add_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_add_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_writer_add_bool(w, "tokenizer.ggml.add_eos_token", false);
out:
    free(tokens);
    free(text);
    free(scores);
    free(types);
    return rc;
}

/* general.* and the architecture's hyperparameters (writer errors surface at write_header). */
static void
add_metadata(struct gguf_writer *w, const struct synth_config *c, int64_t n_vocab)
{
    const char *arch = arch_names[c->arch];
    char key[96], desc[160];

#define ARCH_KEY(suffix) (snprintf(key, sizeof(key), "%s." suffix, arch), key)
    snprintf(desc, sizeof(desc), "synthetic random weights (llorch gguf-synth seed=%llu)",
             (unsigned long long)c->seed);
    gguf_writer_add_str(w, "general.architecture", arch);
    gguf_writer_add_str(w, "general.type", "model");
    gguf_writer_add_str(w, "general.name", "llorch-synth");
    gguf_writer_add_str(w, "general.description", desc);
    gguf_writer_add_u32(w, "general.file_type", file_type_of(c));
    if (type_traits(c->type)->blck > 1)
        gguf_writer_add_u32(w, "general.quantization_version", 2);
    gguf_writer_add_u32(w, ARCH_KEY("context_length"), (uint32_t)c->n_ctx);
    gguf_writer_add_u32(w, ARCH_KEY("embedding_length"), (uint32_t)c->n_embd);
    gguf_writer_add_u32(w, ARCH_KEY("block_count"), (uint32_t)c->n_layer);
    gguf_writer_add_u32(w, ARCH_KEY("feed_forward_length"), (uint32_t)c->n_ff);
    gguf_writer_add_u32(w, ARCH_KEY("attention.head_count"), (uint32_t)c->n_head);
    gguf_writer_add_u32(w, ARCH_KEY("attention.head_count_kv"), (uint32_t)c->n_head_kv);
    gguf_writer_add_f32(w, ARCH_KEY("rope.freq_base"), c->rope_base);
    gguf_writer_add_f32(w, ARCH_KEY("attention.layer_norm_rms_epsilon"), c->rms_eps);
    if (c->rope_scale_linear > 0.0f) {
        gguf_writer_add_str(w, ARCH_KEY("rope.scaling.type"), "linear");
        gguf_writer_add_f32(w, ARCH_KEY("rope.scaling.factor"), c->rope_scale_linear);
    }
    if (c->arch == SYNTH_ARCH_LLAMA) {
        gguf_writer_add_u32(w, ARCH_KEY("vocab_size"), (uint32_t)n_vocab);
        gguf_writer_add_u32(w, ARCH_KEY("rope.dimension_count"), (uint32_t)(c->n_embd / c->n_head));
    }
#undef ARCH_KEY
}

/* Generates, converts and writes one tensor, CHUNK_ELEMS floats (or one row) at a time. */
static int
write_tensor(struct gguf_writer *w, const struct synth_config *c, const struct plan_tensor *t,
             float *vals, uint8_t *bytes, char *err)
{
    const struct type_traits *fns = type_traits(t->type);
    const int64_t ne0 = t->ne[0];
    const int64_t rows_per_chunk = ne0 >= CHUNK_ELEMS ? 1 : CHUNK_ELEMS / ne0;
    const size_t row_bytes = type_row_size(t->type, (uint64_t)ne0);

    for (int64_t r = 0; r < t->ne[1]; r += rows_per_chunk) {
        int64_t rows = t->ne[1] - r < rows_per_chunk ? t->ne[1] - r : rows_per_chunk;
        int rc;

        tensor_values(c, t, (uint64_t)(r * ne0), rows * ne0, vals);
        for (int64_t i = 0; i < rows; i++)
            fns->from_float(vals + i * ne0, bytes + (size_t)i * row_bytes, ne0);
        if ((rc = gguf_writer_write_data(w, bytes, (size_t)rows * row_bytes, err)) != ERR_OK)
            return rc;
    }
    return ERR_OK;
}

int
synth_write(const struct synth_config *c, FILE *f, char *err)
{
    struct gguf *vocab = NULL;
    struct gguf_writer *w = NULL;
    struct plan p = {NULL, 0};
    float *vals = NULL;
    uint8_t *bytes = NULL;
    int64_t n_vocab = c->n_vocab;
    int rc;

    if ((rc = check_config(c, err)) != ERR_OK)
        return rc;
    if (c->vocab_from != NULL) {
        int64_t n_file = 0;

        if ((rc = gguf_open(&vocab, c->vocab_from, err)) != ERR_OK ||
            (rc = vocab_file_size(vocab, c->vocab_from, &n_file, err)) != ERR_OK)
            goto out;
        if (n_vocab != 0 && n_vocab != n_file) {
            rc = err_set(err, ERR_BAD_REQUEST, "vocab %lld differs from the %lld tokens of %s",
                         (long long)n_vocab, (long long)n_file, c->vocab_from);
            goto out;
        }
        n_vocab = n_file;
    } else if (n_vocab < 3 + 256) {
        rc = err_set(err, ERR_BAD_REQUEST,
                     "vocab must be at least 259 (<unk> <s> </s> and 256 byte tokens), got %lld",
                     (long long)n_vocab);
        goto out;
    }
    if ((rc = check_dim("vocab", n_vocab, 1, err)) != ERR_OK ||
        (rc = plan_build(c, n_vocab, &p, err)) != ERR_OK ||
        (rc = gguf_writer_new_file(&w, f, err)) != ERR_OK)
        goto out;

    add_metadata(w, c, n_vocab);
    if (vocab != NULL)
        add_vocab_copy(w, vocab);
    else if ((rc = add_vocab_builtin(w, n_vocab, err)) != ERR_OK)
        goto out;
    for (size_t i = 0; i < p.n; i++)
        gguf_writer_add_tensor(w, p.t[i].name, p.t[i].type, p.t[i].n_dims, p.t[i].ne);
    if ((rc = gguf_writer_write_header(w, err)) != ERR_OK)
        goto out;

    size_t max_elems = CHUNK_ELEMS;
    for (size_t i = 0; i < p.n; i++)
        max_elems = (size_t)p.t[i].ne[0] > max_elems ? (size_t)p.t[i].ne[0] : max_elems;
    vals = malloc(max_elems * sizeof(float));
    bytes = malloc(max_elems * sizeof(float));
    if (vals == NULL || bytes == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory for a chunk of %zu values", max_elems);
        goto out;
    }
    for (size_t i = 0; i < p.n; i++)
        if ((rc = write_tensor(w, c, &p.t[i], vals, bytes, err)) != ERR_OK)
            goto out;
    rc = gguf_writer_finish(w, err);
out:
    gguf_writer_free(w);
    gguf_close(vocab);
    free(p.t);
    free(vals);
    free(bytes);
    return rc;
}

int
synth_write_file(const struct synth_config *c, const char *path, char *err)
{
    struct stat st;
    FILE *f;
    int rc;

    /* refuse a bad shape before touching the file */
    if ((rc = check_config(c, err)) != ERR_OK)
        return rc;
    if ((f = fopen(path, "wb")) == NULL)
        return err_set(err, ERR_IO, "fopen() failed: %s", strerror(errno));
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    rc = synth_write(c, f, err);
    if (fclose(f) != 0 && rc == ERR_OK)
        rc = err_set(err, ERR_IO, "fclose() failed: %s", strerror(errno));
    /* a half-written model must not stay behind (but /dev/stdout and the like stay) */
    if (rc != ERR_OK && stat(path, &st) == 0 && S_ISREG(st.st_mode))
        unlink(path);
    return rc;
}

int
synth_tensor_values(const struct synth_config *c, const char *name, uint64_t first, int64_t n,
                    float *out, char *err)
{
    struct plan p;
    int rc;

    /* the values do not depend on the vocabulary size, only the shape of two tensors does */
    if ((rc = check_config(c, err)) != ERR_OK || (rc = plan_build(c, 1, &p, err)) != ERR_OK)
        return rc;
    for (size_t i = 0; i < p.n; i++) {
        if (strcmp(p.t[i].name, name) == 0) {
            tensor_values(c, &p.t[i], first, n, out);
            free(p.t);
            return ERR_OK;
        }
    }
    free(p.t);
    return err_set(err, ERR_NOT_FOUND, "tensor %s: not in this model", name);
}
