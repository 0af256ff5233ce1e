/*
 * model.h: the Llama forward pass. A model is the hyperparameters and views of the weights in a
 * GGUF mapping (never copied); a context is one or more sequences (a KV cache and a position
 * each) sharing every activation buffer and a thread pool, all allocated once by context_new(),
 * nothing per token. One decode step can evaluate the next token of several sequences in one pass.
 *
 * Per block: RMSNorm -> Q/K/V -> RoPE -> causal attention over the KV cache (GQA/MQA) -> output
 * projection -> residual -> RMSNorm -> SwiGLU FFN -> residual; then the final RMSNorm and the
 * logits. Weights F32/F16/BF16 (and any type kernels.h supports), activations and KV cache F32.
 * Determinism: every output element is reduced in one fixed order (kernels.h), so results are
 * bit-identical for any thread count, whatever batch size a sequence was evaluated in, and
 * whatever other sequences shared its decode steps.
 * Architectures: llama, and qwen2 (Q/K/V biases, NeoX RoPE). Not the tokenizer nor the sampler.
 */
#ifndef LLORCH_MODEL_H
#define LLORCH_MODEL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;

#define MODEL_ROPE_NORM 0 /* rotate adjacent pairs (x[2i], x[2i+1]): llama */
#define MODEL_ROPE_NEOX 2 /* rotate (x[i], x[i + n_rot/2]): qwen2 */

/* Hyperparameters, from GGUF metadata under general.architecture's prefix. */
struct model_config {
    char arch[32];         /* "llama" or "qwen2" */
    uint32_t n_vocab;      /* rows of token_embd.weight */
    uint32_t n_embd;       /* embedding_length */
    uint32_t n_layer;      /* block_count */
    uint32_t n_head;       /* attention.head_count */
    uint32_t n_head_kv;    /* attention.head_count_kv (default n_head); divides n_head */
    uint32_t head_dim;     /* attention.key_length, default n_embd / n_head */
    uint32_t n_ff;         /* feed_forward_length */
    uint32_t n_ctx_train;  /* context_length */
    uint32_t n_rot;        /* rope.dimension_count (default head_dim): leading dims rotated */
    float rope_base;       /* rope.freq_base, default 10000 */
    float rope_freq_scale; /* 1 / rope.scaling.factor with rope.scaling.type "linear", else 1 */
    bool rope_freqs;       /* rope_freqs.weight present: per-pair divisors of the frequencies
                              (Llama-3.1's rope scaling) */
    float rms_eps;         /* attention.layer_norm_rms_epsilon, default 1e-5 */
    int rope_type;         /* MODEL_ROPE_NORM or MODEL_ROPE_NEOX, from the architecture */
    bool tied_output;      /* no output.weight: the logits use token_embd.weight */
};

struct model;

/*
 * Reads the hyperparameters and binds every weight of g, checking each tensor's presence, shape
 * and type. g must stay open until model_free(). Errors: ERR_FORMAT (missing key or tensor, wrong
 * shape), ERR_UNSUPPORTED (architecture, or a tensor type llorch cannot compute with, named:
 * "blk.0.attn_q.weight has type iq2_xs, which llorch does not support"), ERR_NOMEM; *out is NULL.
 */
int model_load(struct model **out, const struct gguf *g, char *err);

/* Frees the model (not the gguf). NULL is fine. Every context on it must be freed first. */
void model_free(struct model *m);

const struct model_config *model_config(const struct model *m);

struct context;

/*
 * A context on model m (which must outlive it): n_seq sequences (numbered 0..n_seq-1), each with
 * its own F32 KV cache of n_ctx positions (0: the model's n_ctx_train; 2 * n_layer * n_ctx *
 * n_head_kv * head_dim floats) and its own position, sharing one pool of n_threads threads (the
 * caller's included) and the activation buffers. Allocates all of it now.
 * Errors: ERR_BAD_REQUEST (n_seq or n_threads 0), ERR_NOMEM, ERR_INTERNAL (threads); *out is NULL.
 */
int context_new(struct context **out, const struct model *m, uint32_t n_seq, uint32_t n_ctx,
                uint32_t n_threads, char *err);

/* Stops the pool and frees everything. NULL is fine. */
void context_free(struct context *c);

/*
 * Evaluates ids[0..n) in sequence seq (< context_n_seq()) at positions context_pos(c, seq) ..
 * + n - 1 (a prompt in one call), appending to its KV cache: context_batch() of those rows, in
 * passes of up to MODEL_UBATCH. Blocks; uses the context's threads. logits: n_vocab floats for the last
 * token, or n * n_vocab (row i for ids[i]) when all_logits; NULL skips the output projection (a
 * prefill whose logits nobody reads). Errors (the sequence unchanged): ERR_BAD_REQUEST (n = 0, seq
 * out of range, an id outside the vocabulary), ERR_CONTEXT_FULL ("position 2048 is past the
 * context length 2048"); ERR_CANCELLED when the abort flag became true: the positions of this call
 * are dropped again.
 */
int context_eval(struct context *c, uint32_t seq, const int32_t *ids, size_t n, bool all_logits,
                 float *logits, char *err);

/* Rows evaluated together: a longer context_batch() or context_eval() is split into passes of
 * this many (the same results). Each weight matrix streams once per pass, and each packed tile of
 * it serves the whole pass; a 7B model's half layer of a full pass stays under ~0.3 s on two cores
 * (the abort checks). */
#define MODEL_UBATCH 256

/* A row of context_batch(): token id in sequence seq; logits: this row's logits are wanted. */
struct context_row {
    uint32_t seq;
    int32_t id;
    bool logits;
};

/*
 * One pass over n rows of any sequences: rows[i].id is evaluated in sequence rows[i].seq at the
 * sequence's next position (the rows of one sequence take consecutive positions in their order:
 * a prompt chunk, or one decode token), appending to its KV cache; each row's attention reads its
 * own sequence up to its own position, including what earlier rows of this call wrote. Every
 * weight matrix is read once per MODEL_UBATCH rows. logits: one row of n_vocab floats per row whose .logits
 * is set, in row order (packed), or NULL for none. Every output is bit-identical to
 * what the same ids give in their sequence alone, however the sequence was split into calls and
 * whatever other rows shared them. Blocks; uses the context's threads. Errors (nothing changed):
 * ERR_BAD_REQUEST (n = 0, a sequence out of range, an id outside the vocabulary), ERR_CONTEXT_FULL
 * (a sequence would pass its context length: "sequence 3: position 2048 is past the context
 * length 2048"), ERR_CANCELLED when the abort flag became true (checked twice per layer): every
 * position of this call is dropped again.
 */
int context_batch(struct context *c, const struct context_row *rows, size_t n, float *logits,
                  char *err);

/* Number of sequences (n_seq of context_new()). */
uint32_t context_n_seq(const struct context *c);

/* Number of positions in the KV cache of sequence seq (the position of its next token). */
uint32_t context_pos(const struct context *c, uint32_t seq);

/* The context length of every sequence, given to context_new(). */
uint32_t context_n_ctx(const struct context *c);

/* Drops the cached positions >= pos of sequence seq (no-op when pos >= context_pos()). */
void context_truncate(struct context *c, uint32_t seq, uint32_t pos);

/* Makes context_eval() and context_batch() stop with ERR_CANCELLED once *flag is true. NULL removes
 * it. The flag must outlive its use; it may be set from any thread. */
void context_set_abort(struct context *c, const atomic_bool *flag);

/*
 * Tests only: a view of one intermediate tensor of context_eval() or context_batch(), rows x cols
 * floats, row-major, valid during the call. Stages, in order, with their rows (T = tokens of the
 * batch, from the token index `token` on) and cols: inp_embd (T, n_embd), layer -1 per layer:
 * attn_rms, attn_norm (T, n_embd); q (T, n_head*head_dim), k, v (T, n_head_kv*head_dim) (after the
 * bias, if any); q_rope, k_rope; per token and query head (`token`, `head`, 1 row): kq (pos+1
 * unscaled scores), kq_softmax (pos+1), kqv (head_dim); attn_out (T, n_head*head_dim, heads
 * concatenated); attn_proj, ffn_inp, ffn_rms, ffn_norm (T, n_embd); ffn_gate, ffn_up, ffn_silu,
 * ffn_swiglu (T, n_ff); ffn_out, l_out (T, n_embd) out_rms, out_norm (R, n_embd), logits (R,
 * n_vocab), layer -1, where R = the rows whose logits were asked (all of them with all_logits,
 * else the last), `token` the first of them. With a trace set,
 * attention runs on the calling thread (so the callback is never concurrent).
 */
struct context_trace {
    const char *stage;
    int layer;      /* -1 outside the blocks */
    uint32_t token; /* batch index of the first row */
    uint32_t head;  /* the query head of kq, kq_softmax and kqv; else 0 */
    uint32_t rows, cols;
    const float *data;
};
typedef void (*context_trace_fn)(void *ud, const struct context_trace *t);

/* Sets (or with NULL clears) the trace callback. */
void context_set_trace(struct context *c, context_trace_fn fn, void *ud);

#endif
