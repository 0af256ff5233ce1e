/*
 * sampler.h: turns one step's logits into the next token id: repeat penalty, then greedy (temp 0)
 * or top-k -> top-p -> min-p -> temperature -> a random draw, in llama.cpp's order and with its
 * defaults. The draw for the k-th generated token is a pure function of (seed, k), so a request
 * replayed on another worker after a crash, or run under any load, samples the same tokens.
 * The state is small and explicit (the options, the recent-token window, k) and is rebuilt from
 * (options, prompt ids, generated ids) by sampler_restore(). Not the model, not stop strings
 * (stop.h).
 */
#ifndef LLORCH_SAMPLER_H
#define LLORCH_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The seed value that asks sampler_new() to pick a random seed (llama.cpp's "-1"). */
#define SAMPLER_SEED_RANDOM UINT64_MAX

/* Upper bound on repeat_last_n (the window is allocated at sampler_new). */
#define SAMPLER_MAX_LAST_N 65536

struct sampler_options {
    float temp;            /* <= 0 is greedy: argmax of the (penalized) logits; default 0.8 */
    int32_t top_k;         /* keep the k most likely; 0 = off; default 40 */
    float top_p;           /* keep the smallest prefix with probability mass >= p; 1 = off; 0.95 */
    float min_p;           /* drop tokens with p < min_p * p_max; 0 = off; default 0.05 */
    float repeat_penalty;  /* on ids in the window: logit > 0 divided, else multiplied; 1 = off */
    int32_t repeat_last_n; /* window size in tokens (prompt included); 0 = off; default 64 */
    uint64_t seed;         /* SAMPLER_SEED_RANDOM (the default) = pick one in sampler_new */
};

struct sampler;

/* Fills o with llama.cpp's defaults (temp 0.8, top_k 40, top_p 0.95, min_p 0.05, penalty 1.0
 * over 64 tokens, a random seed). */
void sampler_options_default(struct sampler_options *o);

/*
 * Checks every field's range; returns ERR_BAD_REQUEST naming the field ("top_p must be in
 * [0, 1], got 1.5") or ERR_OK. Shared by the command line and the wire protocol.
 */
int sampler_options_check(const struct sampler_options *o, char *err);

/*
 * Builds a sampler for a vocabulary of n_vocab ids: checks the options, resolves a random seed,
 * allocates all scratch (nothing is allocated per token). The window starts empty and k at 0;
 * call sampler_restore() to prime it with the prompt. Returns ERR_BAD_REQUEST or ERR_NOMEM with a
 * detail in err; *out is then NULL.
 */
int sampler_new(struct sampler **out, const struct sampler_options *o, size_t n_vocab, char *err);

/* Frees the sampler; NULL is fine. */
void sampler_free(struct sampler *s);

/* The options in use, with the seed resolved (report it so that a run can be repeated). */
const struct sampler_options *sampler_get_options(const struct sampler *s);

/*
 * Rebuilds the state a run reaches after the prompt and the generated ids gen[0..n_gen): the
 * window holds the last repeat_last_n ids of prompt + gen and the next draw is number n_gen.
 * With n_gen = 0 this is the start of a request; with n_gen > 0 it is the replay of one.
 */
void sampler_restore(struct sampler *s, const int32_t *prompt, size_t n_prompt, const int32_t *gen,
                     size_t n_gen);

/*
 * Samples the next token from logits[0..n_vocab) (not modified; NaN counts as -inf), then
 * accepts it (window push, k + 1). Deterministic: the result depends only on the options, the
 * window, k and the logits. Exact logit ties go to the lowest id. Never fails.
 */
int32_t sampler_next(struct sampler *s, const float *logits);

/* Index k of the next generated token (the number sampled or restored so far). */
uint64_t sampler_count(const struct sampler *s);

/* The uniform draw in [0, 1) used for the k-th generated token under seed (53 random bits). */
double sampler_uniform(uint64_t seed, uint64_t k);

/* A fresh random seed below 2^32 (getrandom, else the clock), like llama.cpp's seeds. */
uint64_t sampler_seed_random(void);

#endif
