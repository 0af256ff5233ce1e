/*
 * generate.h: the generation loop shared by `workerd generate` and `workerd serve`: prompt ids ->
 * prefill -> sample -> decode -> stop checks, with a callback per new token carrying the text that
 * may be released with it (stop strings and partial UTF-8 held back). A request can be a replay:
 * the ids a crashed worker already delivered are evaluated with the prompt (the engine gives the
 * same numbers whatever the batching) and only the tokens after them are reported, identical to
 * an undisturbed run. Not tokenization of the prompt, not output formats.
 */
#ifndef LLORCH_GENERATE_H
#define LLORCH_GENERATE_H

#include "workerd/engine/sampler.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct model;
struct context;
struct tokenizer;

struct generate_request {
    const int32_t *prompt; /* prompt ids (BOS included when the model wants it); n_prompt >= 1 */
    size_t n_prompt;
    const int32_t *replay; /* ids already generated and delivered (crash replay); may be NULL */
    size_t n_replay;
    struct sampler_options sampling; /* seed SAMPLER_SEED_RANDOM = pick one (reported) */
    uint32_t max_tokens;             /* generated ids in all, replayed ones included */
    bool ignore_eos;                 /* do not stop at end-of-generation tokens */
    const char *const *stops;        /* stop strings (NUL-terminated); may be NULL */
    size_t n_stops;
    const atomic_bool *cancel; /* checked per token and inside evaluation; may be NULL */
};

/* One new token. text[0..n_text) is the output released with it: possibly empty (held back),
 * possibly with bytes of earlier tokens; on the last token everything left is released, except
 * what follows a stop string. Valid only during the callback. */
struct generate_token {
    int32_t id;
    uint32_t index; /* k: 0 for the first generated token of the request (replays count too) */
    bool last;      /* no token follows (length, end of generation or stop string) */
    const char *text;
    size_t n_text;
};

/* Called once per new token, on the calling thread. Return 0 to go on, nonzero to stop: the run
 * then ends as cancelled. */
typedef int (*generate_token_fn)(void *user, const struct generate_token *tok);

enum generate_reason {
    GENERATE_REASON_LENGTH = 0,    /* max_tokens generated */
    GENERATE_REASON_EOS = 1,       /* an end-of-generation token (it is the last id) */
    GENERATE_REASON_STOP = 2,      /* a stop string occurred (text cut before it) */
    GENERATE_REASON_CANCELLED = 3, /* the cancel flag or the callback */
    GENERATE_REASON_CONTEXT = 4,   /* the context filled up before max_tokens */
};

struct generate_result {
    enum generate_reason reason;
    uint32_t n_gen;    /* ids generated in all (replayed included) */
    uint64_t seed;     /* the seed used (resolved when the request asked for a random one) */
    double prefill_ms; /* evaluating the prompt (and the replayed ids) */
    double decode_ms;  /* from the first new token to the last */
};

/* "length", "eos", "stop", "cancelled", "context". */
const char *generate_reason_str(enum generate_reason r);

/*
 * Runs a request on ctx, a context of model m (emptied first: any context can be reused), with
 * tokenizer tok for the text of the pieces. Sets ctx's abort flag to req->cancel for the run.
 * Blocks until the request ends; calls cb for each new token. Allocates its scratch (logits,
 * sampler, text buffer) at the start, nothing per token. Returns ERR_OK with *res filled (also when
 * cancelled), or: ERR_BAD_REQUEST naming the bad field (empty prompt, id out of range, more
 * replayed ids than max_tokens, sampling options), ERR_CONTEXT_FULL when the prompt and replayed
 * ids do not fit, ERR_NOMEM, or the model's error; detail in err.
 */
int generate_run(const struct model *m, struct context *ctx, const struct tokenizer *tok,
                 const struct generate_request *req, generate_token_fn cb, void *user,
                 struct generate_result *res, char *err);

#endif
