/*
 * model.c: see model.h. Laid out as llama2.c's run.c: the hyperparameters (struct model_config),
 * the weights (struct model: views into the mapping, each with its shape), the run state (struct
 * context: every buffer, allocated once), and forward() reading top to bottom like the paper.
 * Matrix products and attention are split over the context's threads by output rows (or by
 * (token, KV head) pairs), so each output element is computed whole by one thread in a fixed order.
 */
#include "workerd/engine/model.h"

#include "common/err.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/kernels.h"
#include "workerd/engine/threadpool.h"
#include "workerd/engine/types.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Below this many multiply-adds a job runs on the calling thread alone: waking the pool costs more
 * (and the result is the same bits either way). */
#define MODEL_PARALLEL_MIN (1u << 18)
/* Query rows whose attention scores are one product over the cache: consecutive rows of one
 * sequence x the query heads of a KV group, up to this many (one 8-token tile; a group of more
 * heads, one row). */
#define ATT_QUERIES 8
/* Sanity bounds on hyperparameters, far above any real model. */
#define MODEL_MAX_DIM    (1u << 20)
#define MODEL_MAX_LAYERS 4096

/* An architecture llorch runs, and what differs between them. */
struct arch {
    const char *name;
    int rope_type;
    bool qkv_bias; /* attn_{q,k,v}.bias present */
};

static const struct arch arches[] = {
    {"llama", MODEL_ROPE_NORM, false},
    {"qwen2", MODEL_ROPE_NEOX, true},
};

struct layer {
    const float *attn_norm;            /* (n_embd) */
    struct kernel_matrix wq;           /* (n_head * head_dim, n_embd) */
    struct kernel_matrix wk, wv;       /* (n_head_kv * head_dim, n_embd) */
    const float *bq, *bk, *bv;         /* biases of the above, or NULL (llama) */
    struct kernel_matrix wo;           /* (n_embd, n_head * head_dim) */
    const float *ffn_norm;             /* (n_embd) */
    struct kernel_matrix w_gate, w_up; /* (n_ff, n_embd) */
    struct kernel_matrix w_down;       /* (n_embd, n_ff) */
};

struct model {
    struct model_config cfg;
    struct kernel_matrix tok_embd; /* (n_vocab, n_embd) */
    struct layer *layers;          /* n_layer */
    const float *output_norm;      /* (n_embd) */
    struct kernel_matrix output;   /* (n_vocab, n_embd); token_embd when tied */
    const float *rope_freqs;       /* (n_rot / 2) frequency divisors (Llama-3.1), or NULL */
};

struct context {
    const struct model *m;
    uint32_t n_seq, n_ctx;
    uint32_t *pos; /* (n_seq) positions cached per sequence */
    struct threadpool *pool;
    float *k_cache, *v_cache; /* (n_seq, n_layer, n_ctx, n_head_kv * head_dim) */
    float *rope;              /* (n_ctx, n_rot): cos, sin of each pair's angle */
    /* The rows of the batch being evaluated: each one's sequence and position. */
    uint32_t row_seq[MODEL_UBATCH], row_pos[MODEL_UBATCH];
    bool row_out[MODEL_UBATCH]; /* its logits are wanted */
    int32_t row_id[MODEL_UBATCH];
    /* The attention units of the batch: run r is rows run[r] .. run[r + 1] - 1 (att_runs()). */
    uint32_t run[MODEL_UBATCH + 1], n_run;
    uint32_t *pos0;  /* (n_seq) positions when the context_batch() in progress began */
    uint32_t *seq_n; /* (n_seq) rows per sequence of the context_batch() being checked */
    float *x;        /* (MODEL_UBATCH, n_embd) residual stream */
    float *xb;       /* (MODEL_UBATCH, n_embd) normed input / projection output */
    float *q;        /* (MODEL_UBATCH, n_head * head_dim) */
    float *k, *v;    /* (MODEL_UBATCH, n_head_kv * head_dim), on their way to the rows' caches */
    float *att;      /* (MODEL_UBATCH, n_head * head_dim) attention output */
    float *hb, *hb2; /* (MODEL_UBATCH, n_ff) gate, up */
    float *scratch;  /* (n_threads, scratch_stride): tiles, a group's attention scores */
    size_t scratch_stride;
    const atomic_bool *abort;
    context_trace_fn trace;
    void *trace_ud;
};

/* ---- loading ---- */

static int
cfg_u32(const struct gguf *g, const char *arch, const char *suffix, bool required, uint32_t dflt,
        uint32_t *out, char *err)
{
    char key[128];
    int64_t v;
    int rc;

    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    rc = gguf_get_int(g, key, &v, err);
    if (rc == ERR_NOT_FOUND) {
        if (required)
            return err_set(err, ERR_FORMAT, "metadata key %s is missing", key);
        *out = dflt;
        return ERR_OK;
    }
    if (rc != ERR_OK)
        return rc;
    if (v <= 0 || v > MODEL_MAX_DIM)
        return err_set(err, ERR_FORMAT, "metadata key %s is %" PRId64 ", expected 1..%u", key, v,
                       MODEL_MAX_DIM);
    *out = (uint32_t)v;
    return ERR_OK;
}

static int
cfg_float(const struct gguf *g, const char *arch, const char *suffix, float dflt, float *out,
          char *err)
{
    char key[128];
    double v;
    int rc;

    snprintf(key, sizeof(key), "%s.%s", arch, suffix);
    rc = gguf_get_float(g, key, &v, err);
    if (rc == ERR_NOT_FOUND) {
        *out = dflt;
        return ERR_OK;
    }
    if (rc != ERR_OK)
        return rc;
    if (!(v > 0.0) || !isfinite(v))
        return err_set(err, ERR_FORMAT, "metadata key %s is %g, expected a positive number", key,
                       v);
    *out = (float)v;
    return ERR_OK;
}

/*
 * <arch>.rope.scaling.type: absent or "none", or "linear" (positions divided by
 * rope.scaling.factor, as in some long-context Llama-2 fine-tunes). Llama-3.1's scaling is not
 * here: its converter writes the per-pair divisors as the tensor rope_freqs.weight (model_load).
 * YaRN and the rest are refused by name.
 */
static int
read_rope_scaling(struct model_config *c, const char *arch, const struct gguf *g, char *err)
{
    char key[128];
    struct gguf_str type;
    float factor;
    int rc;

    c->rope_freq_scale = 1.0f;
    snprintf(key, sizeof(key), "%s.rope.scaling.type", arch);
    rc = gguf_get_str(g, key, &type, err);
    if (rc == ERR_NOT_FOUND || (rc == ERR_OK && type.len == 4 && memcmp(type.data, "none", 4) == 0))
        return ERR_OK;
    if (rc != ERR_OK)
        return rc;
    if (type.len != 6 || memcmp(type.data, "linear", 6) != 0)
        return err_set(err, ERR_UNSUPPORTED,
                       "%s '%.*s' is not supported (llorch runs: none, linear, and "
                       "rope_freqs.weight)",
                       key, (int)(type.len > 32 ? 32 : type.len), type.data);
    snprintf(key, sizeof(key), "%s.rope.scaling.factor", arch);
    if (gguf_find_kv(g, key) == NULL)
        return err_set(err, ERR_FORMAT, "metadata key %s is missing (rope.scaling.type linear)",
                       key);
    if ((rc = cfg_float(g, arch, "rope.scaling.factor", 1.0f, &factor, err)) != ERR_OK)
        return rc;
    c->rope_freq_scale = 1.0f / factor;
    return ERR_OK;
}

static int
read_config(struct model_config *c, const struct arch **arch_out, const struct gguf *g, char *err)
{
    struct gguf_str name;
    const struct arch *arch = NULL;
    int rc;

    rc = gguf_get_str(g, "general.architecture", &name, err);
    if (rc == ERR_NOT_FOUND)
        return err_set(err, ERR_FORMAT, "metadata key general.architecture is missing");
    if (rc != ERR_OK)
        return rc;
    for (size_t i = 0; i < sizeof(arches) / sizeof(arches[0]); i++)
        if (strlen(arches[i].name) == name.len && memcmp(arches[i].name, name.data, name.len) == 0)
            arch = &arches[i];
    if (arch == NULL)
        return err_set(err, ERR_UNSUPPORTED,
                       "architecture '%.*s' is not supported (llorch runs: "
                       "llama, qwen2)",
                       (int)(name.len > 64 ? 64 : name.len), name.data);
    *arch_out = arch;
    memset(c, 0, sizeof(*c));
    snprintf(c->arch, sizeof(c->arch), "%s", arch->name);
    c->rope_type = arch->rope_type;

    if ((rc = cfg_u32(g, arch->name, "embedding_length", true, 0, &c->n_embd, err)) ||
        (rc = cfg_u32(g, arch->name, "block_count", true, 0, &c->n_layer, err)) ||
        (rc = cfg_u32(g, arch->name, "attention.head_count", true, 0, &c->n_head, err)) ||
        (rc = cfg_u32(g, arch->name, "attention.head_count_kv", false, c->n_head, &c->n_head_kv,
                      err)) ||
        (rc = cfg_u32(g, arch->name, "feed_forward_length", true, 0, &c->n_ff, err)) ||
        (rc = cfg_u32(g, arch->name, "context_length", true, 0, &c->n_ctx_train, err)))
        return rc;
    if (c->n_layer > MODEL_MAX_LAYERS)
        return err_set(err, ERR_FORMAT, "%s.block_count is %u, more than %u", arch->name,
                       c->n_layer, MODEL_MAX_LAYERS);
    if (c->n_head % c->n_head_kv != 0)
        return err_set(err, ERR_FORMAT,
                       "%s.attention.head_count %u is not a multiple of "
                       "head_count_kv %u",
                       arch->name, c->n_head, c->n_head_kv);
    if ((rc = cfg_u32(g, arch->name, "attention.key_length", false, 0, &c->head_dim, err)))
        return rc;
    if (c->head_dim == 0 && c->n_embd % c->n_head != 0)
        return err_set(err, ERR_FORMAT,
                       "%s.embedding_length %u is not a multiple of "
                       "attention.head_count %u",
                       arch->name, c->n_embd, c->n_head);
    if (c->head_dim == 0)
        c->head_dim = c->n_embd / c->n_head;
    if ((rc = cfg_u32(g, arch->name, "rope.dimension_count", false, c->head_dim, &c->n_rot, err)))
        return rc;
    if ((uint64_t)c->n_head * c->head_dim > MODEL_MAX_DIM)
        return err_set(err, ERR_FORMAT, "%s: head_count x key_length is too large", arch->name);
    if (c->n_rot > c->head_dim || c->n_rot % 2 != 0)
        return err_set(err, ERR_FORMAT,
                       "%s.rope.dimension_count %u must be even and at most the "
                       "head size %u",
                       arch->name, c->n_rot, c->head_dim);
    if ((rc = cfg_float(g, arch->name, "rope.freq_base", 10000.0f, &c->rope_base, err)) ||
        (rc =
             cfg_float(g, arch->name, "attention.layer_norm_rms_epsilon", 1e-5f, &c->rms_eps, err)))
        return rc;
    return read_rope_scaling(c, arch->name, g, err);
}

static const struct gguf_tensor *
find_tensor(const struct gguf *g, const char *name, bool required, char *err, int *rc)
{
    const struct gguf_tensor *t = gguf_find_tensor(g, name);

    *rc = ERR_OK;
    if (t == NULL && required)
        *rc = err_set(err, ERR_FORMAT, "tensor %s is missing", name);
    return t;
}

/* Binds a (rows, cols) matrix: ne = [cols, rows]. */
static int
bind_matrix(struct kernel_matrix *mx, const struct gguf *g, const char *name, uint32_t rows,
            uint32_t cols, char *err)
{
    int rc;
    const struct gguf_tensor *t = find_tensor(g, name, true, err, &rc);
    const struct type_traits *tt;

    if (t == NULL)
        return rc;
    if (t->n_dims != 2 || t->ne[0] != cols || t->ne[1] != rows)
        return err_set(err, ERR_FORMAT,
                       "tensor %s has shape [%" PRId64 ", %" PRId64 "], expected "
                       "[%u, %u]",
                       name, t->ne[0], t->ne[1], cols, rows);
    tt = type_traits(t->type);
    if (!kernel_type_supported(t->type))
        return err_set(err, ERR_UNSUPPORTED, "%s has type %s, which llorch does not support", name,
                       tt ? tt->name : "unknown");
    mx->data = t->data;
    mx->type = t->type;
    mx->rows = rows;
    mx->cols = cols;
    mx->row_bytes = type_row_size(t->type, cols);
    if (mx->row_bytes == 0)
        return err_set(err, ERR_FORMAT, "tensor %s: rows of %u are not whole %s blocks", name, cols,
                       tt->name);
    return ERR_OK;
}

/* Binds an F32 vector of n (a norm weight or a bias); absent and optional gives NULL. */
static int
bind_vector(const float **out, const struct gguf *g, const char *name, uint32_t n, bool required,
            char *err)
{
    int rc;
    const struct gguf_tensor *t = find_tensor(g, name, required, err, &rc);

    *out = NULL;
    if (t == NULL)
        return rc;
    if (t->n_dims != 1 || t->ne[0] != n)
        return err_set(err, ERR_FORMAT,
                       "tensor %s has %u dims and %" PRId64 " elements, expected "
                       "a vector of %u",
                       name, t->n_dims, t->ne[0], n);
    if (t->type != TYPE_F32) {
        const struct type_traits *tt = type_traits(t->type);
        return err_set(err, ERR_UNSUPPORTED,
                       "%s has type %s, which llorch does not support for "
                       "vectors (f32 only)",
                       name, tt ? tt->name : "unknown");
    }
    *out = t->data;
    return ERR_OK;
}

static int
bind_layer(struct layer *ly, const struct gguf *g, const struct model_config *c,
           const struct arch *arch, uint32_t l, char *err)
{
    uint32_t q_dim = c->n_head * c->head_dim, kv_dim = c->n_head_kv * c->head_dim;
    char n[9][64];
    int rc;

    static const char *const names[9] = {"attn_norm", "attn_q",      "attn_k",
                                         "attn_v",    "attn_output", "ffn_norm",
                                         "ffn_gate",  "ffn_up",      "ffn_down"};
    for (int i = 0; i < 9; i++)
        snprintf(n[i], sizeof(n[i]), "blk.%u.%s.weight", l, names[i]);
    if ((rc = bind_vector(&ly->attn_norm, g, n[0], c->n_embd, true, err)) ||
        (rc = bind_matrix(&ly->wq, g, n[1], q_dim, c->n_embd, err)) ||
        (rc = bind_matrix(&ly->wk, g, n[2], kv_dim, c->n_embd, err)) ||
        (rc = bind_matrix(&ly->wv, g, n[3], kv_dim, c->n_embd, err)) ||
        (rc = bind_matrix(&ly->wo, g, n[4], c->n_embd, q_dim, err)) ||
        (rc = bind_vector(&ly->ffn_norm, g, n[5], c->n_embd, true, err)) ||
        (rc = bind_matrix(&ly->w_gate, g, n[6], c->n_ff, c->n_embd, err)) ||
        (rc = bind_matrix(&ly->w_up, g, n[7], c->n_ff, c->n_embd, err)) ||
        (rc = bind_matrix(&ly->w_down, g, n[8], c->n_embd, c->n_ff, err)))
        return rc;
    if (arch->qkv_bias) {
        char b[3][64];
        for (int i = 0; i < 3; i++)
            snprintf(b[i], sizeof(b[i]), "blk.%u.%s.bias", l, names[1 + i]);
        if ((rc = bind_vector(&ly->bq, g, b[0], q_dim, true, err)) ||
            (rc = bind_vector(&ly->bk, g, b[1], kv_dim, true, err)) ||
            (rc = bind_vector(&ly->bv, g, b[2], kv_dim, true, err)))
            return rc;
    }
    return ERR_OK;
}

int
model_load(struct model **out, const struct gguf *g, char *err)
{
    struct model *m;
    const struct arch *arch = NULL;
    const struct gguf_tensor *te;
    const struct gguf_arr *tokens;
    int rc;

    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return err_set(err, ERR_NOMEM, "model: out of memory");
    if ((rc = read_config(&m->cfg, &arch, g, err)) != ERR_OK)
        goto fail;
    te = find_tensor(g, "token_embd.weight", true, err, &rc);
    if (te == NULL)
        goto fail;
    if (te->n_dims != 2 || te->ne[1] < 1 || te->ne[1] > MODEL_MAX_DIM) {
        rc = err_set(err, ERR_FORMAT,
                     "tensor token_embd.weight has %u dims and %" PRId64
                     " rows, expected [n_embd, n_vocab]",
                     te->n_dims, te->ne[1]);
        goto fail;
    }
    m->cfg.n_vocab = (uint32_t)te->ne[1];
    if (gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, err) == ERR_OK &&
        tokens->n != m->cfg.n_vocab) {
        rc = err_set(err, ERR_FORMAT,
                     "tokenizer.ggml.tokens has %" PRIu64 " entries but "
                     "token_embd.weight has %u rows",
                     tokens->n, m->cfg.n_vocab);
        goto fail;
    }
    if ((rc = bind_matrix(&m->tok_embd, g, "token_embd.weight", m->cfg.n_vocab, m->cfg.n_embd,
                          err)) != ERR_OK ||
        (rc = bind_vector(&m->output_norm, g, "output_norm.weight", m->cfg.n_embd, true, err)))
        goto fail;
    if (gguf_find_tensor(g, "output.weight") == NULL) {
        m->cfg.tied_output = true;
        m->output = m->tok_embd;
    } else if ((rc = bind_matrix(&m->output, g, "output.weight", m->cfg.n_vocab, m->cfg.n_embd,
                                 err)) != ERR_OK) {
        goto fail;
    }
    if ((rc = bind_vector(&m->rope_freqs, g, "rope_freqs.weight", m->cfg.n_rot / 2, false, err)))
        goto fail;
    for (uint32_t i = 0; m->rope_freqs != NULL && i < m->cfg.n_rot / 2; i++)
        if (!(m->rope_freqs[i] > 0.0f) || !isfinite(m->rope_freqs[i])) {
            rc = err_set(err, ERR_FORMAT, "rope_freqs.weight[%u] is %g, expected a positive number",
                         i, (double)m->rope_freqs[i]);
            goto fail;
        }
    m->cfg.rope_freqs = m->rope_freqs != NULL;
    m->layers = calloc(m->cfg.n_layer, sizeof(*m->layers));
    if (m->layers == NULL) {
        rc = err_set(err, ERR_NOMEM, "model: out of memory");
        goto fail;
    }
    for (uint32_t l = 0; l < m->cfg.n_layer; l++)
        if ((rc = bind_layer(&m->layers[l], g, &m->cfg, arch, l, err)) != ERR_OK)
            goto fail;
    *out = m;
    return ERR_OK;
fail:
    model_free(m);
    return rc;
}

void
model_free(struct model *m)
{
    if (m == NULL)
        return;
    free(m->layers);
    free(m);
}

const struct model_config *
model_config(const struct model *m)
{
    return &m->cfg;
}

/* ---- context ---- */

/* n floats, 64-byte aligned (cache lines: no false sharing between threads' slices). */
static float *
alloc_floats(size_t n)
{
    void *p = NULL;

    if (n > SIZE_MAX / sizeof(float) - 16)
        return NULL;
    if (posix_memalign(&p, 64, (n * sizeof(float) + 63) & ~(size_t)63) != 0)
        return NULL;
    return p;
}

/* Rows per attention unit: ATT_QUERIES queries, or one row of a larger KV group. */
static uint32_t
att_rows(const struct model_config *cf)
{
    uint32_t group = cf->n_head / cf->n_head_kv;

    return group >= ATT_QUERIES ? 1 : ATT_QUERIES / group;
}

int
context_new(struct context **out, const struct model *m, uint32_t n_seq, uint32_t n_ctx,
            uint32_t n_threads, char *err)
{
    const struct model_config *cf = &m->cfg;
    size_t kv_dim = (size_t)cf->n_head_kv * cf->head_dim, q_dim = (size_t)cf->n_head * cf->head_dim;
    size_t max_cols = cf->n_embd > cf->n_ff ? cf->n_embd : cf->n_ff, att_q;
    struct context *c;
    int rc;

    *out = NULL;
    if (n_threads == 0)
        return err_set(err, ERR_BAD_REQUEST, "thread count must be at least 1");
    if (n_seq == 0)
        return err_set(err, ERR_BAD_REQUEST, "sequence count must be at least 1");
    if (n_ctx == 0)
        n_ctx = cf->n_ctx_train;
    if (n_ctx > MODEL_MAX_DIM)
        return err_set(err, ERR_BAD_REQUEST, "context length %u is above %u", n_ctx, MODEL_MAX_DIM);
    max_cols = max_cols > q_dim ? max_cols : q_dim;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return err_set(err, ERR_NOMEM, "context: out of memory");
    c->m = m;
    c->n_seq = n_seq;
    c->n_ctx = n_ctx;
    c->scratch_stride = kernel_scratch_floats((uint32_t)max_cols);
    /* an attention unit's queries and their scores */
    att_q = (size_t)att_rows(cf) * (cf->n_head / cf->n_head_kv);
    if (c->scratch_stride < att_q * (cf->head_dim + n_ctx))
        c->scratch_stride = att_q * (cf->head_dim + n_ctx);
    c->scratch_stride = (c->scratch_stride + 15) & ~(size_t)15;
    c->pos = calloc(n_seq, sizeof(*c->pos));
    c->pos0 = calloc(n_seq, sizeof(*c->pos0));
    c->seq_n = calloc(n_seq, sizeof(*c->seq_n));
    c->k_cache = alloc_floats((size_t)n_seq * cf->n_layer * n_ctx * kv_dim);
    c->v_cache = alloc_floats((size_t)n_seq * cf->n_layer * n_ctx * kv_dim);
    c->rope = alloc_floats((size_t)n_ctx * cf->n_rot);
    c->x = alloc_floats((size_t)MODEL_UBATCH * cf->n_embd);
    c->xb = alloc_floats((size_t)MODEL_UBATCH * cf->n_embd);
    c->q = alloc_floats((size_t)MODEL_UBATCH * q_dim);
    c->k = alloc_floats((size_t)MODEL_UBATCH * kv_dim);
    c->v = alloc_floats((size_t)MODEL_UBATCH * kv_dim);
    c->att = alloc_floats((size_t)MODEL_UBATCH * q_dim);
    c->hb = alloc_floats((size_t)MODEL_UBATCH * cf->n_ff);
    c->hb2 = alloc_floats((size_t)MODEL_UBATCH * cf->n_ff);
    c->scratch = alloc_floats(c->scratch_stride * n_threads);
    if (!c->pos || !c->pos0 || !c->seq_n || !c->k_cache || !c->v_cache || !c->rope || !c->x ||
        !c->xb || !c->q || !c->k || !c->v || !c->att || !c->hb || !c->hb2 || !c->scratch) {
        rc = err_set(err, ERR_NOMEM, "context of %u sequences of %u positions: out of memory",
                     n_seq, n_ctx);
        goto fail;
    }
    /* RoPE angles in double: theta = pos * scale * base^(-2i / n_rot) / freqs[i] (scale: linear
     * scaling, else 1; freqs: rope_freqs.weight, else 1) */
    for (uint32_t p = 0; p < n_ctx; p++)
        for (uint32_t i = 0; i < cf->n_rot / 2; i++) {
            double theta =
                p * (double)cf->rope_freq_scale * pow(cf->rope_base, -2.0 * i / cf->n_rot);
            if (m->rope_freqs != NULL)
                theta /= m->rope_freqs[i];
            c->rope[(size_t)p * cf->n_rot + 2 * i] = (float)cos(theta);
            c->rope[(size_t)p * cf->n_rot + 2 * i + 1] = (float)sin(theta);
        }
    if ((rc = threadpool_new(&c->pool, n_threads, err)) != ERR_OK)
        goto fail;
    *out = c;
    return ERR_OK;
fail:
    context_free(c);
    return rc;
}

void
context_free(struct context *c)
{
    if (c == NULL)
        return;
    threadpool_free(c->pool);
    free(c->pos);
    free(c->pos0);
    free(c->seq_n);
    free(c->k_cache);
    free(c->v_cache);
    free(c->rope);
    free(c->x);
    free(c->xb);
    free(c->q);
    free(c->k);
    free(c->v);
    free(c->att);
    free(c->hb);
    free(c->hb2);
    free(c->scratch);
    free(c);
}

uint32_t
context_n_seq(const struct context *c)
{
    return c->n_seq;
}

uint32_t
context_pos(const struct context *c, uint32_t seq)
{
    return c->pos[seq];
}

uint32_t
context_n_ctx(const struct context *c)
{
    return c->n_ctx;
}

void
context_truncate(struct context *c, uint32_t seq, uint32_t pos)
{
    if (pos < c->pos[seq])
        c->pos[seq] = pos;
}

void
context_set_abort(struct context *c, const atomic_bool *flag)
{
    c->abort = flag;
}

void
context_set_trace(struct context *c, context_trace_fn fn, void *ud)
{
    c->trace = fn;
    c->trace_ud = ud;
}

/* ---- parallel jobs ---- */

/* Up to three products with the same input, one pool job: y_i[t*ys_i + r] = W_i[r] . x[t]. */
struct matmul_job {
    struct context *c;
    const float *x;
    size_t xs;
    uint32_t ntok;
    int n;
    const struct kernel_matrix *w[3];
    float *y[3];
    size_t ys[3];
};

/* Each thread takes a contiguous share of every matrix's row tiles. */
static void
matmul_part(void *arg, uint32_t ith, uint32_t nth)
{
    struct matmul_job *j = arg;
    float *scratch = j->c->scratch + ith * j->c->scratch_stride;

    for (int i = 0; i < j->n; i++) {
        const struct kernel_matrix *w = j->w[i];
        uint64_t tiles = (w->rows + KERNEL_TILE_ROWS - 1) / KERNEL_TILE_ROWS;
        uint32_t r0 = (uint32_t)(tiles * ith / nth) * KERNEL_TILE_ROWS;
        uint32_t r1 = (uint32_t)(tiles * (ith + 1) / nth) * KERNEL_TILE_ROWS;

        if (r1 > w->rows)
            r1 = w->rows;
        if (r0 < r1)
            kernel_matmul_rows(w, r0, r1, j->x, j->xs, j->ntok, j->y[i], j->ys[i], scratch);
    }
}

static void
matmul(struct context *c, const float *x, size_t xs, uint32_t ntok, int n,
       const struct kernel_matrix *const *w, float *const *y, const size_t *ys)
{
    struct matmul_job j = {.c = c, .x = x, .xs = xs, .ntok = ntok, .n = n};
    uint64_t work = 0;

    for (int i = 0; i < n; i++) {
        j.w[i] = w[i];
        j.y[i] = y[i];
        j.ys[i] = ys[i];
        work += (uint64_t)w[i]->rows * w[i]->cols * ntok;
    }
    if (work < MODEL_PARALLEL_MIN)
        matmul_part(&j, 0, 1);
    else
        threadpool_run(c->pool, matmul_part, &j);
}

struct attn_job {
    struct context *c;
    uint32_t layer, ntok, tok0;
};

static void
trace(struct context *c, const char *stage, int layer, uint32_t token, uint32_t head, uint32_t rows,
      uint32_t cols, const float *data)
{
    struct context_trace t = {stage, layer, token, head, rows, cols, data};

    if (c->trace != NULL)
        c->trace(c->trace_ud, &t);
}

/* Row pos of layer l of a sequence's K or V cache (kv_dim floats). */
static float *
cache_row(const struct context *c, float *cache, uint32_t seq, uint32_t l, uint32_t pos)
{
    size_t kv_dim = (size_t)c->m->cfg.n_head_kv * c->m->cfg.head_dim;

    return cache + (((size_t)seq * c->m->cfg.n_layer + l) * c->n_ctx + pos) * kv_dim;
}

/* Splits the batch's rows into attention units: runs of consecutive positions of one sequence,
 * at most att_rows() each (c->run, c->n_run). */
static void
att_runs(struct context *c, uint32_t ntok)
{
    uint32_t max = att_rows(&c->m->cfg);

    c->n_run = 0;
    for (uint32_t t = 0; t < ntok; t++)
        if (t == 0 || c->row_seq[t] != c->row_seq[t - 1] ||
            c->row_pos[t] != c->row_pos[t - 1] + 1 || t - c->run[c->n_run - 1] == max)
            c->run[c->n_run++] = t;
    c->run[c->n_run] = ntok;
}

/*
 * Causal attention over the units (run, KV head), every nth one from ith (later rows cost more:
 * interleaved, the threads share them evenly): each row attends to positions 0..its own
 * position of its own sequence's cache. The queries of a unit (its rows x the query heads
 * sharing the KV head) have their scores as one small matrix product (the cache rows up to the
 * last row's position as the matrix, the queries as the tokens; the canonical order as anywhere,
 * so each score has the bits it has alone), each row then reading its own positions' scores.
 */
static void
attn_part(void *arg, uint32_t ith, uint32_t nth)
{
    struct attn_job *j = arg;
    struct context *c = j->c;
    const struct model_config *cf = &c->m->cfg;
    uint32_t hd = cf->head_dim, q_dim = cf->n_head * hd, kv_dim = cf->n_head_kv * hd;
    uint32_t group = cf->n_head / cf->n_head_kv;
    uint32_t units = c->n_run * cf->n_head_kv;
    float *qs = c->scratch + ith * c->scratch_stride;       /* (queries, hd) */
    float *scores = qs + (size_t)att_rows(cf) * group * hd; /* (queries, n) */
    float scale = 1.0f / sqrtf((float)hd);

    for (uint32_t i = ith; i < units; i += nth) {
        uint32_t kvh = i / c->n_run, t0 = c->run[i % c->n_run], t1 = c->run[i % c->n_run + 1];
        uint32_t n = c->row_pos[t1 - 1] + 1, nq = (t1 - t0) * group; /* the last row's view */
        uint32_t kvo = kvh * hd;
        const float *kc = cache_row(c, c->k_cache, c->row_seq[t0], j->layer, 0);
        const float *vc = cache_row(c, c->v_cache, c->row_seq[t0], j->layer, 0);
        struct kernel_matrix keys = {kc + kvo, TYPE_F32, n, hd, (size_t)kv_dim * sizeof(float)};

        for (uint32_t t = t0; t < t1; t++) /* the group's heads of a row are contiguous */
            memcpy(qs + (size_t)(t - t0) * group * hd,
                   c->q + (size_t)t * q_dim + (size_t)kvh * group * hd,
                   (size_t)group * hd * sizeof(float));
        /* scores[q][p] = query q . k_p for every position p the last row sees */
        kernel_matmul_rows(&keys, 0, n, qs, hd, nq, scores, n, NULL);
        for (uint32_t q0 = 0; q0 < nq; q0 += KERNEL_WSUM_MAX) {
            uint32_t m = nq - q0 < KERNEL_WSUM_MAX ? nq - q0 : KERNEL_WSUM_MAX;
            float *o[KERNEL_WSUM_MAX];
            const float *w[KERNEL_WSUM_MAX];
            uint32_t nw[KERNEL_WSUM_MAX];

            for (uint32_t q = q0; q < q0 + m; q++) {
                uint32_t t = t0 + q / group, h = kvh * group + q % group;
                uint32_t nt = c->row_pos[t] + 1; /* positions 0..row_pos are visible */
                float *sc = scores + (size_t)q * n;

                trace(c, "kq", (int)j->layer, j->tok0 + t, h, 1, nt, sc);
                /* softmax(scores / sqrt(head_dim)) */
                for (uint32_t p = 0; p < nt; p++)
                    sc[p] *= scale;
                kernel_softmax(sc, nt);
                trace(c, "kq_softmax", (int)j->layer, j->tok0 + t, h, 1, nt, sc);
                o[q - q0] = c->att + (size_t)t * q_dim + (size_t)h * hd;
                w[q - q0] = sc;
                nw[q - q0] = nt;
            }
            /* o = sum_p softmax_p * v_p, in increasing p, the queries reading v together */
            kernel_weighted_sum(o, w, nw, (int)m, vc + kvo, kv_dim, hd);
            for (uint32_t q = q0; q < q0 + m; q++)
                trace(c, "kqv", (int)j->layer, j->tok0 + t0 + q / group, kvh * group + q % group, 1,
                      hd, o[q - q0]);
        }
    }
}

/* ---- forward ---- */

static bool
aborted(const atomic_bool *abort)
{
    return abort != NULL && atomic_load(abort);
}

/* rows of x (n floats each, row-major) = rmsnorm(rows of x) * w, traced as <rms> and <norm>. */
static void
norm_rows(struct context *c, float *y, const float *x, const float *w, uint32_t rows, uint32_t tok0,
          int layer, const char *rms, const char *norm)
{
    uint32_t n = c->m->cfg.n_embd;

    for (uint32_t t = 0; t < rows; t++)
        kernel_rmsnorm(y + (size_t)t * n, x + (size_t)t * n, n, c->m->cfg.rms_eps);
    trace(c, rms, layer, tok0, 0, rows, n, y);
    for (uint32_t t = 0; t < rows; t++)
        kernel_mul(y + (size_t)t * n, w, n);
    trace(c, norm, layer, tok0, 0, rows, n, y);
}

/*
 * One transformer block over the ntok rows in c->x, row t in sequence c->row_seq[t] at position
 * c->row_pos[t]; tok0 is the index of the first one in the caller's batch. Returns false if
 * cancelled midway (abort checked once, before the FFN).
 */
static bool
block(struct context *c, uint32_t l, uint32_t ntok, uint32_t tok0, const atomic_bool *abort)
{
    const struct model_config *cf = &c->m->cfg;
    const struct layer *ly = &c->m->layers[l];
    uint32_t hd = cf->head_dim, q_dim = cf->n_head * hd, kv_dim = cf->n_head_kv * hd;
    uint32_t n_embd = cf->n_embd, n_ff = cf->n_ff;
    int li = (int)l;

    /* attention: xb = RMSNorm(x) * w; q, k, v = Wq xb, Wk xb, Wv xb */
    norm_rows(c, c->xb, c->x, ly->attn_norm, ntok, tok0, li, "attn_rms", "attn_norm");
    {
        const struct kernel_matrix *w[3] = {&ly->wq, &ly->wk, &ly->wv};
        float *y[3] = {c->q, c->k, c->v};
        size_t ys[3] = {q_dim, kv_dim, kv_dim};
        matmul(c, c->xb, n_embd, ntok, 3, w, y, ys);
    }
    for (uint32_t t = 0; ly->bq != NULL && t < ntok; t++) {
        kernel_add(c->q + (size_t)t * q_dim, ly->bq, q_dim);
        kernel_add(c->k + (size_t)t * kv_dim, ly->bk, kv_dim);
        kernel_add(c->v + (size_t)t * kv_dim, ly->bv, kv_dim);
    }
    trace(c, "q", li, tok0, 0, ntok, q_dim, c->q);
    trace(c, "k", li, tok0, 0, ntok, kv_dim, c->k);
    trace(c, "v", li, tok0, 0, ntok, kv_dim, c->v);
    /* RoPE on every head of q and k, by each row's position; k and v into the rows' caches */
    for (uint32_t t = 0; t < ntok; t++) {
        const float *cs = c->rope + (size_t)c->row_pos[t] * cf->n_rot;
        for (uint32_t h = 0; h < cf->n_head; h++)
            kernel_rope(c->q + (size_t)t * q_dim + h * hd, cs, cf->n_rot, cf->rope_type);
        for (uint32_t h = 0; h < cf->n_head_kv; h++)
            kernel_rope(c->k + (size_t)t * kv_dim + h * hd, cs, cf->n_rot, cf->rope_type);
        memcpy(cache_row(c, c->k_cache, c->row_seq[t], l, c->row_pos[t]), c->k + (size_t)t * kv_dim,
               kv_dim * sizeof(float));
        memcpy(cache_row(c, c->v_cache, c->row_seq[t], l, c->row_pos[t]), c->v + (size_t)t * kv_dim,
               kv_dim * sizeof(float));
    }
    trace(c, "q_rope", li, tok0, 0, ntok, q_dim, c->q);
    trace(c, "k_rope", li, tok0, 0, ntok, kv_dim, c->k);
    /* att = softmax(q k^T / sqrt(hd)) v per head, causal */
    {
        struct attn_job j = {c, l, ntok, tok0};
        uint64_t work = 0;

        for (uint32_t t = 0; t < ntok; t++)
            work += (uint64_t)(c->row_pos[t] + 1) * q_dim * 2;
        if (c->trace != NULL || work < MODEL_PARALLEL_MIN)
            attn_part(&j, 0, 1);
        else
            threadpool_run(c->pool, attn_part, &j);
    }
    trace(c, "attn_out", li, tok0, 0, ntok, q_dim, c->att);
    /* x += Wo att */
    {
        const struct kernel_matrix *w[1] = {&ly->wo};
        float *y[1] = {c->xb};
        size_t ys[1] = {n_embd};
        matmul(c, c->att, q_dim, ntok, 1, w, y, ys);
    }
    trace(c, "attn_proj", li, tok0, 0, ntok, n_embd, c->xb);
    kernel_add(c->x, c->xb, (size_t)ntok * n_embd);
    trace(c, "ffn_inp", li, tok0, 0, ntok, n_embd, c->x);
    if (aborted(abort))
        return false;

    /* FFN: xb = RMSNorm(x) * w; x += W_down (silu(W_gate xb) * (W_up xb)) */
    norm_rows(c, c->xb, c->x, ly->ffn_norm, ntok, tok0, li, "ffn_rms", "ffn_norm");
    {
        const struct kernel_matrix *w[2] = {&ly->w_gate, &ly->w_up};
        float *y[2] = {c->hb, c->hb2};
        size_t ys[2] = {n_ff, n_ff};
        matmul(c, c->xb, n_embd, ntok, 2, w, y, ys);
    }
    trace(c, "ffn_gate", li, tok0, 0, ntok, n_ff, c->hb);
    trace(c, "ffn_up", li, tok0, 0, ntok, n_ff, c->hb2);
    kernel_silu(c->hb, (size_t)ntok * n_ff);
    trace(c, "ffn_silu", li, tok0, 0, ntok, n_ff, c->hb);
    kernel_mul(c->hb, c->hb2, (size_t)ntok * n_ff);
    trace(c, "ffn_swiglu", li, tok0, 0, ntok, n_ff, c->hb);
    {
        const struct kernel_matrix *w[1] = {&ly->w_down};
        float *y[1] = {c->xb};
        size_t ys[1] = {n_embd};
        matmul(c, c->hb, n_ff, ntok, 1, w, y, ys);
    }
    trace(c, "ffn_out", li, tok0, 0, ntok, n_embd, c->xb);
    kernel_add(c->x, c->xb, (size_t)ntok * n_embd);
    trace(c, "l_out", li, tok0, 0, ntok, n_embd, c->x);
    return true;
}

/*
 * Evaluates ntok <= MODEL_UBATCH rows: row t is c->row_id[t] in sequence c->row_seq[t] at
 * c->row_pos[t] (the caller sets them and advances the positions); tok0 is the index of the
 * first one in the caller's call. logits: where the rows with c->row_out set go (n_vocab apart,
 * in row order), or NULL for none. Returns false if abort became true (checked twice per layer).
 */
static bool
forward(struct context *c, uint32_t ntok, uint32_t tok0, float *logits, const atomic_bool *abort)
{
    const struct model *m = c->m;
    const struct model_config *cf = &m->cfg;
    uint32_t n_embd = cf->n_embd, rows = 0, first = 0;

    att_runs(c, ntok); /* the rows' attention units, the same in every layer */

    for (uint32_t t = 0; t < ntok; t++)
        kernel_row_to_f32(&m->tok_embd, (uint32_t)c->row_id[t], c->x + (size_t)t * n_embd);
    trace(c, "inp_embd", -1, tok0, 0, ntok, n_embd, c->x);
    for (uint32_t l = 0; l < cf->n_layer; l++)
        if (aborted(abort) || !block(c, l, ntok, tok0, abort))
            return false;
    if (logits == NULL)
        return true;
    /* the rows asked for, packed at the start of x (the stream is not needed any more) */
    for (uint32_t t = 0; t < ntok; t++) {
        if (!c->row_out[t])
            continue;
        if (rows == 0)
            first = t;
        if (rows != t)
            memcpy(c->x + (size_t)rows * n_embd, c->x + (size_t)t * n_embd, n_embd * sizeof(float));
        rows++;
    }
    if (rows == 0)
        return true;
    /* logits = W_out RMSNorm(x) * w for those rows */
    norm_rows(c, c->xb, c->x, m->output_norm, rows, tok0 + first, -1, "out_rms", "out_norm");
    {
        const struct kernel_matrix *w[1] = {&m->output};
        float *y[1] = {logits};
        size_t ys[1] = {cf->n_vocab};
        matmul(c, c->xb, n_embd, rows, 1, w, y, ys);
    }
    trace(c, "logits", -1, tok0 + first, 0, rows, cf->n_vocab, logits);
    return true;
}

/* Every id in [0, n_vocab), else ERR_BAD_REQUEST naming the first that is not. */
static int
check_id(const struct context *c, int32_t id, size_t i, char *err)
{
    if (id < 0 || (uint32_t)id >= c->m->cfg.n_vocab)
        return err_set(err, ERR_BAD_REQUEST,
                       "token id %d at index %zu is outside the vocabulary [0, %u)", id, i,
                       c->m->cfg.n_vocab);
    return ERR_OK;
}

int
context_eval(struct context *c, uint32_t seq, const int32_t *ids, size_t n, bool all_logits,
             float *logits, char *err)
{
    uint32_t n_vocab = c->m->cfg.n_vocab, start;
    struct context_row rows[MODEL_UBATCH];
    int rc;

    if (seq >= c->n_seq)
        return err_set(err, ERR_BAD_REQUEST, "sequence %u out of range [0, %u)", seq, c->n_seq);
    if (n == 0)
        return err_set(err, ERR_BAD_REQUEST, "no tokens to evaluate");
    start = c->pos[seq];
    if (n > c->n_ctx - start)
        return err_set(err, ERR_CONTEXT_FULL, "position %zu is past the context length %u",
                       (size_t)start + n - 1, c->n_ctx);
    for (size_t i = 0; i < n; i++)
        if ((rc = check_id(c, ids[i], i, err)) != ERR_OK)
            return rc;
    for (size_t t0 = 0; t0 < n; t0 += MODEL_UBATCH) {
        size_t ntok = n - t0 < MODEL_UBATCH ? n - t0 : MODEL_UBATCH;
        float *out = logits == NULL ? NULL : all_logits ? logits + t0 * n_vocab : logits;

        for (size_t t = 0; t < ntok; t++)
            rows[t] = (struct context_row){seq, ids[t0 + t],
                                           logits != NULL && (all_logits || t0 + t == n - 1)};
        if ((rc = context_batch(c, rows, ntok, out, err)) != ERR_OK) {
            c->pos[seq] = start;
            return rc == ERR_CANCELLED ? err_set(err, rc, "evaluation cancelled at position %zu",
                                                 (size_t)start + t0)
                                       : rc;
        }
    }
    return ERR_OK;
}

int
context_batch(struct context *c, const struct context_row *rows, size_t n, float *logits, char *err)
{
    uint32_t n_vocab = c->m->cfg.n_vocab;
    int rc = ERR_OK;

    if (n == 0)
        return err_set(err, ERR_BAD_REQUEST, "no rows to evaluate");
    memset(c->seq_n, 0, c->n_seq * sizeof(*c->seq_n));
    for (size_t i = 0; i < n; i++) {
        uint32_t s = rows[i].seq;

        if (s >= c->n_seq)
            return err_set(err, ERR_BAD_REQUEST, "sequence %u at index %zu out of range [0, %u)", s,
                           i, c->n_seq);
        if ((rc = check_id(c, rows[i].id, i, err)) != ERR_OK)
            return rc;
        if (c->pos[s] + c->seq_n[s] >= c->n_ctx)
            return err_set(err, ERR_CONTEXT_FULL,
                           "sequence %u: position %u is past the context length %u", s,
                           c->pos[s] + c->seq_n[s], c->n_ctx);
        c->seq_n[s]++;
    }
    memcpy(c->pos0, c->pos, c->n_seq * sizeof(*c->pos));
    for (size_t t0 = 0; t0 < n; t0 += MODEL_UBATCH) {
        uint32_t ntok = (uint32_t)(n - t0 < MODEL_UBATCH ? n - t0 : MODEL_UBATCH), n_out = 0;

        for (uint32_t t = 0; t < ntok; t++) {
            const struct context_row *r = &rows[t0 + t];

            c->row_seq[t] = r->seq;
            c->row_pos[t] = c->pos[r->seq]++;
            c->row_id[t] = r->id;
            c->row_out[t] = r->logits;
            n_out += r->logits;
        }
        if (!forward(c, ntok, (uint32_t)t0, n_out > 0 ? logits : NULL, c->abort)) {
            memcpy(c->pos, c->pos0, c->n_seq * sizeof(*c->pos));
            return err_set(err, ERR_CANCELLED, "evaluation cancelled at row %zu", t0);
        }
        if (logits != NULL)
            logits += (size_t)n_out * n_vocab;
    }
    return ERR_OK;
}
