/*
 * synth.h: synthetic Llama-family models of any shape, written as GGUF with deterministic
 * pseudo-random weights, for tests and benchmarks (build/gguf-synth is the command-line front).
 * The weights are noise scaled so a forward pass stays in range (matrices ~ N(0, 1/fan_in), norms
 * ~ 1, logits of standard deviation ~3); the text such a model writes is noise too.
 * Weights stream to the file in row chunks, so a 7B-shaped file needs a few MB of memory.
 * Not a general GGUF writer (tests/gguf_write.h is) and not a converter of real models.
 */
#ifndef LLORCH_TESTS_SYNTH_H
#define LLORCH_TESTS_SYNTH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum synth_arch {
    SYNTH_ARCH_LLAMA = 0, /* llama: no biases */
    SYNTH_ARCH_QWEN2 = 1, /* qwen2: Q/K/V biases, NeoX RoPE (the reader's business), tied output */
};

struct synth_config {
    enum synth_arch arch;
    int64_t n_embd;
    int64_t n_layer;
    int64_t n_head;
    int64_t n_head_kv;
    int64_t n_ff;
    int64_t n_vocab; /* 0: that of vocab_from (else an error) */
    int64_t n_ctx;
    float rope_base;
    float rms_eps;
    bool rope_freqs;         /* Llama-3.1's rope scaling: a rope_freqs.weight tensor (F32, head
                                size / 2) of the frequency divisors of Meta's rule with factor 8,
                                low/high frequency factors 1/4, original context 8192 */
    float rope_scale_linear; /* > 0: rope.scaling.type "linear", rope.scaling.factor this; 0 none */
    bool tied;               /* no output.weight: the output reuses token_embd.weight */
    uint32_t type; /* type of the matrices (enum type_id): F32, F16, BF16, Q8_0, Q4_0, Q4_1,
                      Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (Q4_K..Q6_K: rows not a multiple
                      of 256 fall back to Q5_0 / Q5_1 / Q8_0, or F16, as llama-quantize does) */
    bool mix_m;    /* with Q4_K or Q5_K: llama-quantize's _M mix, Q6_K for the output (or the
                      tied embedding) and for attn_v and ffn_down of about half the layers */
    uint64_t seed;
    const char *vocab_from; /* GGUF whose tokenizer.* keys are copied, or NULL: a built-in vocab */
};

/*
 * Fills c with the defaults of an architecture: n_embd 256, 2 layers, 8 heads (8 KV heads), n_ff
 * 768, vocab 512, ctx 2048, F16, seed 1; llama: rope base 10000, rms eps 1e-5, untied; qwen2: rope
 * base 1000000, rms eps 1e-6, tied.
 */
void synth_config_default(struct synth_config *c, enum synth_arch arch);

/* "llama" / "qwen2" to an arch; returns false for anything else. */
bool synth_arch_parse(const char *s, enum synth_arch *out);

/*
 * Writes the model c describes as GGUF v3 onto f (opened by the caller for writing, at its start;
 * the caller closes it). Checks c first (ERR_BAD_REQUEST naming the field: shapes that do not
 * divide, a type without a quantizer, a row not a multiple of the type's block (but K types fall
 * back), the _M mix with another type, a vocab too small for the built-in tokenizer...); ERR_IO /
 * ERR_FORMAT / ERR_NOT_FOUND for vocab_from, ERR_IO for writing. Blocks until the file is written;
 * the same c gives the same bytes.
 */
int synth_write(const struct synth_config *c, FILE *f, char *err);

/* synth_write into a new file at path (replaced if it exists; removed again on failure). */
int synth_write_file(const struct synth_config *c, const char *path, char *err);

/*
 * The values (as floats, before conversion to c->type) of elements [first, first + n) of the
 * tensor called name, in the order of the file (row-major, ne[0] fastest), as synth_write writes
 * them. Depends only on (seed, name, element index, the tensor's role and fan-in): any part of any
 * tensor can be computed alone. Returns ERR_NOT_FOUND for a name the model does not have.
 */
int synth_tensor_values(const struct synth_config *c, const char *name, uint64_t first, int64_t n,
                        float *out, char *err);

#endif
