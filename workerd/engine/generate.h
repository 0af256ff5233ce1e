/*
 * generate.h: the generation loop shared by `workerd generate` and `workerd serve`: prompt ids ->
 * prefill -> sample -> decode -> stop checks, with a callback per new token carrying the text that
 * may be released with it (stop strings and partial UTF-8 held back). A request can be a replay:
 * the ids a crashed worker already delivered are evaluated with the prompt (the engine gives the
 * same numbers whatever the batching) and only the tokens after them are reported, identical to
 * an undisturbed run. Several requests can run together, one token each per engine call, with
 * joining prompts fed in chunks into the same calls (continuous batching, generate_batch_*). Not
 * tokenization of the prompt, not output formats.
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
    double prefill_ms; /* from the add to the prompt's (and replayed ids') last chunk evaluated */
    double decode_ms;  /* from the first new token to the last */
};

/* "length", "eos", "stop", "cancelled", "context". */
const char *generate_reason_str(enum generate_reason r);

/*
 * Runs a request on sequence 0 of ctx, a context of model m (emptied first: any context can be
 * reused), with tokenizer tok for the text of the pieces: a batch of one slot on ctx (the same
 * code as generate_batch_*: the prompt goes in by passes of 64). ctx's abort flag is req->cancel
 * during each pass (checked twice per layer); the flag is checked again before each new token. Blocks until the request ends; calls cb for each new
 * token. Allocates its scratch (logits, sampler, text buffer) at the start, nothing per token.
 * Returns ERR_OK with *res filled (also when cancelled), or: ERR_BAD_REQUEST naming the bad field
 * (empty prompt, id out of range, more replayed ids than max_tokens, sampling options),
 * ERR_CONTEXT_FULL when the prompt and replayed ids do not fit, ERR_NOMEM, or the model's error;
 * detail in err.
 */
int generate_run(const struct model *m, struct context *ctx, const struct tokenizer *tok,
                 const struct generate_request *req, generate_token_fn cb, void *user,
                 struct generate_result *res, char *err);

/*
 * Continuous batching: up to n_slots requests on one model, advanced together. Each step is ONE
 * engine call (context_batch: the weights stream once per step, whatever the number of requests)
 * evaluating every decoding request's next token and, in the rows left of 64 (at least 16),
 * chunks of the prompts (and replayed ids) of requests still prefilling, first come first served;
 * then every request with logits samples its next token. So a joining prompt delays the running
 * requests by one chunk per step, not by its whole prefill, and a request's first token comes in
 * the step its prefill completes. A request joins between steps (generate_batch_add only queues
 * it) and leaves when it ends. A request's tokens are exactly the ones generate_run gives it
 * alone, for greedy and seeded sampling alike (the engine is batch-invariant: fixed reduction
 * order, whatever the split of a prompt into passes). Single-threaded use: every call from one thread; callbacks run on that thread and may
 * call generate_batch_add (the new request takes part from the next step on), not _step or _free.
 */
struct generate_batch;

/* Called exactly once per request that generate_batch_add accepted, when it ends (after its last
 * token callback, if any). rc ERR_OK: res says why it ended (length, eos, stop, cancelled,
 * context) and err is ""; else the request failed (err says why; res->n_gen counts what was
 * delivered). res and err are valid during the call only. */
typedef void (*generate_done_fn)(void *user, int rc, const struct generate_result *res,
                                 const char *err);

/* n_slots sequences of n_ctx positions each (0: the model's n_ctx_train), one thread pool of
 * n_threads. Allocates every KV cache and buffer now. Errors: ERR_BAD_REQUEST (0 slots/threads),
 * ERR_NOMEM, ERR_INTERNAL; *out is NULL. m and tok must outlive the batch. */
int generate_batch_new(struct generate_batch **out, const struct model *m,
                       const struct tokenizer *tok, uint32_t n_slots, uint32_t n_ctx,
                       uint32_t n_threads, char *err);

/* Frees the batch. NULL is fine; active requests are dropped without callbacks. */
void generate_batch_free(struct generate_batch *b);

uint32_t generate_batch_slots(const struct generate_batch *b);  /* n_slots */
uint32_t generate_batch_active(const struct generate_batch *b); /* requests in it now */

/*
 * Adds req to a free slot. Copies what it keeps (prompt, replay, stops, sampling): req and its
 * arrays need not outlive the call, but req->cancel (if not NULL) must outlive the request.
 * Validates and queues it; its prompt and replayed ids go in over the next steps (add does not
 * evaluate anything and does not block). Returns ERR_BUSY when no slot is free; a validation error
 * (ERR_BAD_REQUEST naming the field, ERR_CONTEXT_FULL when prompt + replay do not fit) or
 * ERR_NOMEM: the request was not added and no callback will come. ERR_OK: the request is in; it
 * may already have ended (a replay that was complete), in which case on_done has been called
 * already.
 */
int generate_batch_add(struct generate_batch *b, const struct generate_request *req,
                       generate_token_fn on_token, generate_done_fn on_done, void *user, char *err);

/*
 * One step: every active request whose cancel flag is set ends (done: cancelled; prefilling ones
 * too); the others' rows (each decoding request's last token, prompt chunks) are evaluated in one
 * engine call, with the abort flag set when they are all one request's; then every request
 * whose prefill is complete samples its next token from the new logits and reports it (on_token;
 * a nonzero return cancels it); requests whose token was their last end (on_done), and so do
 * those whose context is full (done: context). Blocks for the evaluation. Returns ERR_OK (also
 * when nothing was active), or an engine error, which ends every request it was evaluating with
 * that error (on_done with rc).
 */
int generate_batch_step(struct generate_batch *b, char *err);

#endif
