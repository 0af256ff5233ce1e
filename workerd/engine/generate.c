/*
 * generate.c: the generation loop (generate.h). The text side keeps only the bytes not yet
 * released (a held-back stop-string start, a partial UTF-8 character, the newest piece); what
 * has been released after a list of ids is a function of those ids, so a replay rebuilds it by
 * running the same steps without reporting them.
 */
#include "workerd/engine/generate.h"

#include "common/clock.h"
#include "common/err.h"
#include "workerd/engine/model.h"
#include "workerd/engine/stop.h"
#include "workerd/engine/tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* Room for the pieces of ordinary tokens; a longer piece grows the buffer (once per size). */
#define PIECE_ROOM 256

/* What one request carries from token to token. */
struct gen {
    const struct generate_request *req;
    const struct tokenizer *tok;
    char *text; /* the bytes not released yet */
    size_t n_text;
    size_t cap;
};

const char *
generate_reason_str(enum generate_reason r)
{
    switch (r) {
    case GENERATE_REASON_LENGTH:
        return "length";
    case GENERATE_REASON_EOS:
        return "eos";
    case GENERATE_REASON_STOP:
        return "stop";
    case GENERATE_REASON_CANCELLED:
        return "cancelled";
    case GENERATE_REASON_CONTEXT:
        return "context";
    }
    return "unknown";
}

static bool
cancelled(const struct generate_request *req)
{
    return req->cancel != NULL && atomic_load(req->cancel);
}

static int
check_request(const struct generate_request *req, size_t n_vocab, char *err)
{
    if (req->n_prompt == 0)
        return err_set(err, ERR_BAD_REQUEST, "prompt: no tokens");
    if (req->n_replay > req->max_tokens)
        return err_set(err, ERR_BAD_REQUEST, "replay: %zu ids, more than max_tokens %u",
                       req->n_replay, req->max_tokens);
    for (size_t i = 0; i < req->n_prompt + req->n_replay; i++) {
        int32_t id = i < req->n_prompt ? req->prompt[i] : req->replay[i - req->n_prompt];

        if (id < 0 || (size_t)id >= n_vocab)
            return err_set(err, ERR_BAD_REQUEST, "%s id %d at %zu out of range [0, %zu)",
                           i < req->n_prompt ? "prompt" : "replay", id,
                           i < req->n_prompt ? i : i - req->n_prompt, n_vocab);
    }
    return sampler_options_check(&req->sampling, err);
}

/* Appends the piece of id to the unreleased text, growing the buffer if the piece needs it. */
static int
text_append(struct gen *g, int32_t id, char *err)
{
    size_t n = tokenizer_piece(g->tok, id, g->text + g->n_text, g->cap - g->n_text);

    if (n > g->cap - g->n_text) {
        size_t cap = g->n_text + n + PIECE_ROOM;
        char *t = realloc(g->text, cap);

        if (t == NULL)
            return err_set(err, ERR_NOMEM, "generate: out of memory for a %zu-byte piece", n);
        g->text = t;
        g->cap = cap;
        n = tokenizer_piece(g->tok, id, g->text + g->n_text, g->cap - g->n_text);
    }
    g->n_text += n;
    return ERR_OK;
}

/*
 * How many unreleased bytes may go out after the newest piece: up to a stop string (*hit set),
 * everything when this is the last token, else all but a possible stop-string start and a
 * partial UTF-8 character.
 */
static size_t
text_releasable(const struct gen *g, bool last, bool *hit)
{
    size_t n = stop_scan(g->req->stops, g->req->n_stops, g->text, g->n_text, 0, hit);

    if (*hit || last)
        return *hit ? n : g->n_text;
    return n - stop_utf8_pending(g->text, n);
}

static void
text_drop(struct gen *g, size_t n)
{
    memmove(g->text, g->text + n, g->n_text - n);
    g->n_text -= n;
}

/* Evaluates ids[0..n) (nothing when n is 0); *stopped when the cancel flag aborted it. */
static int
eval_ids(struct context *ctx, const int32_t *ids, size_t n, float *logits, bool *stopped, char *err)
{
    int rc = n > 0 ? context_eval(ctx, 0, ids, n, false, logits, err) : ERR_OK;

    *stopped = rc == ERR_CANCELLED;
    return *stopped ? ERR_OK : rc;
}

/*
 * Runs the text steps of the delivered ids without reporting them, so that the unreleased text is
 * what the first run held after them. *done is set with *reason when those ids already end the
 * request.
 */
static int
replay_text(struct gen *g, bool *done, enum generate_reason *reason, char *err)
{
    const struct generate_request *req = g->req;
    int rc;

    *done = false;
    for (size_t k = 0; k < req->n_replay; k++) {
        int32_t id = req->replay[k];
        bool eog = !req->ignore_eos && tokenizer_is_eog(g->tok, id);
        bool last = eog || k + 1 == req->max_tokens;
        bool hit;

        if ((rc = text_append(g, id, err)) != ERR_OK)
            return rc;
        text_drop(g, text_releasable(g, last, &hit));
        if (last || hit) {
            *done = true;
            *reason = hit   ? GENERATE_REASON_STOP
                      : eog ? GENERATE_REASON_EOS
                            : GENERATE_REASON_LENGTH;
            return ERR_OK;
        }
    }
    return ERR_OK;
}

/* The new tokens: sample, report, evaluate, until a stop condition. Nothing is reported once the
 * cancel flag is seen. */
static int
decode(struct gen *g, struct context *ctx, struct sampler *s, float *logits, generate_token_fn cb,
       void *user, struct generate_result *res, char *err)
{
    const struct generate_request *req = g->req;
    uint64_t start = clock_now_ns();
    int rc = ERR_OK;

    for (uint32_t k = (uint32_t)req->n_replay; k < req->max_tokens; k++) {
        struct generate_token t = {.index = k, .text = g->text};
        bool eog, hit;

        if (cancelled(req)) {
            res->reason = GENERATE_REASON_CANCELLED;
            break;
        }
        t.id = sampler_next(s, logits);
        if (k == req->n_replay)
            start = clock_now_ns(); /* decode time counts the tokens after the first */
        res->n_gen = k + 1;
        eog = !req->ignore_eos && tokenizer_is_eog(g->tok, t.id);
        if ((rc = text_append(g, t.id, err)) != ERR_OK)
            break;
        t.n_text = text_releasable(g, eog || k + 1 == req->max_tokens, &hit);
        t.last = eog || hit || k + 1 == req->max_tokens;
        if (cb(user, &t) != 0) {
            res->reason = GENERATE_REASON_CANCELLED;
            break;
        }
        text_drop(g, t.n_text);
        if (t.last) {
            res->reason = hit   ? GENERATE_REASON_STOP
                          : eog ? GENERATE_REASON_EOS
                                : GENERATE_REASON_LENGTH;
            break;
        }
        rc = context_eval(ctx, 0, &t.id, 1, false, logits, err);
        if (rc == ERR_CANCELLED || rc == ERR_CONTEXT_FULL) {
            res->reason = rc == ERR_CANCELLED ? GENERATE_REASON_CANCELLED : GENERATE_REASON_CONTEXT;
            rc = ERR_OK;
            break;
        }
        if (rc != ERR_OK)
            break;
    }
    res->decode_ms = clock_ms_between(start, clock_now_ns());
    return rc;
}

int
generate_run(const struct model *m, struct context *ctx, const struct tokenizer *tok,
             const struct generate_request *req, generate_token_fn cb, void *user,
             struct generate_result *res, char *err)
{
    size_t n_vocab = model_config(m)->n_vocab;
    struct gen g = {.req = req, .tok = tok};
    struct sampler *s = NULL;
    float *logits = NULL;
    uint64_t t0;
    bool done;
    int rc;

    memset(res, 0, sizeof(*res));
    res->reason = GENERATE_REASON_LENGTH;
    res->n_gen = (uint32_t)req->n_replay;
    if ((rc = check_request(req, n_vocab, err)) != ERR_OK)
        return rc;
    if ((rc = sampler_new(&s, &req->sampling, n_vocab, err)) != ERR_OK)
        return rc;
    res->seed = sampler_get_options(s)->seed;
    sampler_restore(s, req->prompt, req->n_prompt, req->replay, req->n_replay);
    for (size_t i = 0; i < req->n_stops; i++)
        g.cap += strlen(req->stops[i]);
    g.cap += PIECE_ROOM;
    logits = malloc(n_vocab * sizeof(*logits));
    g.text = malloc(g.cap);
    if (logits == NULL || g.text == NULL) {
        rc = err_set(err, ERR_NOMEM, "generate: out of memory for %zu logits", n_vocab);
        goto out;
    }

    /* The replayed ids go in with the prompt: the engine's results do not depend on how a
     * sequence is split into batches, so this is the state the first run reached. */
    context_truncate(ctx, 0, 0);
    context_set_abort(ctx, req->cancel);
    t0 = clock_now_ns();
    if ((rc = replay_text(&g, &done, &res->reason, err)) != ERR_OK || done)
        goto out;
    if ((rc = eval_ids(ctx, req->prompt, req->n_prompt, logits, &done, err)) != ERR_OK)
        goto out;
    if (!done && (rc = eval_ids(ctx, req->replay, req->n_replay, logits, &done, err)) != ERR_OK)
        goto out;
    res->prefill_ms = clock_ms_between(t0, clock_now_ns());
    if (done)
        res->reason = GENERATE_REASON_CANCELLED;
    else
        rc = decode(&g, ctx, s, logits, cb, user, res, err);

out:
    context_set_abort(ctx, NULL);
    free(g.text);
    free(logits);
    sampler_free(s);
    return rc;
}
