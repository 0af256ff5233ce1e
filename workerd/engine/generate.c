/*
 * generate.c: the generation loop (generate.h). A request in progress is a struct gen: its copy of
 * the request, its sampler, the text not released yet, its callbacks. A batch step evaluates, in
 * one context_batch() pass, every decoding request's next token and prompt chunks of joining
 * ones, then runs gen_next() (sample, stop checks, report) for every request that has logits;
 * generate_run() is a batch of one slot on the caller's context. The text side keeps only the
 * bytes not yet released (a held-back stop-string start, a partial UTF-8 character, the newest
 * piece); what has been released after a list of ids is a function of those ids, so a replay
 * rebuilds it by running the same steps without reporting them.
 */
#include "workerd/engine/generate.h"

#include "common/clock.h"
#include "common/err.h"
#include "workerd/engine/model.h"
#include "workerd/engine/stop.h"
#include "workerd/engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Room for the pieces of ordinary tokens; a longer piece grows the buffer (once per size). */
#define PIECE_ROOM 256
/*
 * Rows of one step's pass while requests decode: the decode rows, and prompt rows of joining
 * requests up to this in all (a pass of 64 rows reads the weights once, about as long as a decode
 * step of many streams, so a joining prompt delays the running streams by one such pass per
 * step). At least STEP_PROMPT_MIN prompt rows per step whatever the number of decode rows, so a
 * prefill always advances. A step with no decode rows (prefill alone) takes up to MODEL_UBATCH
 * prompt rows: the engine's full pass, whose packed weight tiles serve 4x the rows.
 */
#define STEP_ROWS       64
#define STEP_PROMPT_MIN 16

/* One request in progress: what it carries from token to token. */
struct gen {
    struct generate_request req; /* its arrays point into mem */
    void *mem;                   /* the copies of prompt, replay and stop strings */
    const struct tokenizer *tok;
    struct sampler *s;
    char *text; /* the bytes not released yet */
    size_t n_text;
    size_t cap;
    generate_token_fn on_token;
    generate_done_fn on_done;
    void *user;
    struct generate_result res;
    uint64_t decode_start; /* when its first new token was sampled (0: none yet) */
    uint64_t joined;       /* when it was added (clock), for prefill_ms */
    uint64_t order;        /* join order: prompts are fed first come, first served */
    size_t n_fed;          /* prompt and replayed ids evaluated so far */
    int32_t next;          /* once prefilled: the id to evaluate in the next step */
    bool active;
    bool in_step;        /* active when the step in progress began */
    uint32_t step_rows;  /* rows of the step in progress */
    int32_t step_logits; /* its row of logits in the step's output, or -1 */
};

struct generate_batch {
    const struct tokenizer *tok;
    struct context *ctx; /* slot i is sequence i */
    bool own_ctx;        /* false for generate_run's borrowed context */
    uint32_t n_slots, n_active, n_vocab;
    uint64_t n_joined; /* requests added so far (their order) */
    struct gen *slots;
    struct context_row *rows; /* (n_slots + MODEL_UBATCH) one step's pass */
    float *out;               /* (n_slots, n_vocab): its logits, one row per request at most */
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
    size_t n = stop_scan(g->req.stops, g->req.n_stops, g->text, g->n_text, 0, hit);

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

/*
 * Runs the text steps of the delivered ids without reporting them, so that the unreleased text is
 * what the first run held after them. *done is set with *reason when those ids already end the
 * request.
 */
static int
replay_text(struct gen *g, bool *done, enum generate_reason *reason, char *err)
{
    const struct generate_request *req = &g->req;
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

/* ---- one request ---- */

/*
 * Copies req (its arrays into one block) into g and builds its sampler and text buffer; the
 * result starts as a replay's: n_gen the delivered ids. Errors: ERR_BAD_REQUEST (sampling
 * options), ERR_NOMEM; gen_free() cleans up either way.
 */
static int
gen_init(struct gen *g, const struct generate_request *req, const struct tokenizer *tok,
         size_t n_vocab, char *err)
{
    size_t n_ids = req->n_prompt + req->n_replay, bytes = req->n_stops * sizeof(char *);
    char *p;
    int rc;

    memset(g, 0, sizeof(*g));
    g->req = *req;
    g->tok = tok;
    for (size_t i = 0; i < req->n_stops; i++) {
        bytes += strlen(req->stops[i]) + 1;
        g->cap += strlen(req->stops[i]);
    }
    g->cap += PIECE_ROOM;
    g->mem = malloc(n_ids * sizeof(int32_t) + bytes);
    g->text = malloc(g->cap);
    if (g->mem == NULL || g->text == NULL)
        return err_set(err, ERR_NOMEM, "generate: out of memory for a request of %zu ids", n_ids);
    /* the stop pointers first (aligned), then the ids, then the stop strings */
    g->req.stops = g->mem;
    g->req.prompt = (int32_t *)((char *)g->mem + req->n_stops * sizeof(char *));
    g->req.replay = g->req.prompt + req->n_prompt;
    memcpy((int32_t *)g->req.prompt, req->prompt, req->n_prompt * sizeof(int32_t));
    if (req->n_replay > 0)
        memcpy((int32_t *)g->req.replay, req->replay, req->n_replay * sizeof(int32_t));
    p = (char *)(g->req.replay + req->n_replay);
    for (size_t i = 0; i < req->n_stops; i++) {
        size_t n = strlen(req->stops[i]) + 1;

        ((const char **)g->mem)[i] = memcpy(p, req->stops[i], n);
        p += n;
    }
    if ((rc = sampler_new(&g->s, &req->sampling, n_vocab, err)) != ERR_OK)
        return rc;
    sampler_restore(g->s, g->req.prompt, g->req.n_prompt, g->req.replay, g->req.n_replay);
    g->res.reason = GENERATE_REASON_LENGTH;
    g->res.n_gen = (uint32_t)req->n_replay;
    g->res.seed = sampler_get_options(g->s)->seed;
    return ERR_OK;
}

static void
gen_free(struct gen *g)
{
    sampler_free(g->s);
    free(g->text);
    free(g->mem);
    g->s = NULL;
    g->text = NULL;
    g->mem = NULL;
}

/*
 * The next token of g from its logits: cancel check, sample, stop checks, report. *ended (with
 * g->res.reason) when the request ends here, else *id is the token to evaluate next. Nothing is
 * reported once the cancel flag is seen. Errors: ERR_NOMEM (a piece did not fit).
 */
static int
gen_next(struct gen *g, const float *logits, int32_t *id, bool *ended, char *err)
{
    const struct generate_request *req = &g->req;
    uint32_t k = g->res.n_gen;
    struct generate_token t = {.index = k, .text = g->text};
    bool eog, hit;
    int rc;

    *ended = true;
    if (cancelled(req)) {
        g->res.reason = GENERATE_REASON_CANCELLED;
        return ERR_OK;
    }
    t.id = sampler_next(g->s, logits);
    if (k == req->n_replay)
        g->decode_start = clock_now_ns(); /* decode time counts the tokens after the first */
    eog = !req->ignore_eos && tokenizer_is_eog(g->tok, t.id);
    if ((rc = text_append(g, t.id, err)) != ERR_OK)
        return rc;
    g->res.n_gen = k + 1;
    t.n_text = text_releasable(g, eog || k + 1 == req->max_tokens, &hit);
    t.last = eog || hit || k + 1 == req->max_tokens;
    if (g->on_token(g->user, &t) != 0) {
        g->res.reason = GENERATE_REASON_CANCELLED;
        return ERR_OK;
    }
    text_drop(g, t.n_text);
    if (t.last) {
        g->res.reason = hit   ? GENERATE_REASON_STOP
                        : eog ? GENERATE_REASON_EOS
                              : GENERATE_REASON_LENGTH;
        return ERR_OK;
    }
    *ended = false;
    *id = t.id;
    return ERR_OK;
}

/* ---- the batch ---- */

/* A batch of n_slots on ctx (sequences 0..n_slots-1), owning ctx when own (freed with it, also
 * on failure). */
static int
batch_new(struct generate_batch **out, const struct model *m, const struct tokenizer *tok,
          struct context *ctx, bool own, uint32_t n_slots, char *err)
{
    struct generate_batch *b = calloc(1, sizeof(*b));
    size_t n_vocab = model_config(m)->n_vocab;

    *out = NULL;
    if (b == NULL) {
        if (own)
            context_free(ctx);
        return err_set(err, ERR_NOMEM, "generate: out of memory");
    }
    b->tok = tok;
    b->ctx = ctx;
    b->own_ctx = own;
    b->n_slots = n_slots;
    b->n_vocab = (uint32_t)n_vocab;
    b->slots = calloc(n_slots, sizeof(*b->slots));
    b->rows = malloc((n_slots + MODEL_UBATCH) * sizeof(*b->rows));
    b->out = malloc(n_slots * n_vocab * sizeof(float));
    if (!b->slots || !b->rows || !b->out) {
        generate_batch_free(b);
        return err_set(err, ERR_NOMEM, "generate: out of memory for %u slots of %zu logits",
                       n_slots, n_vocab);
    }
    *out = b;
    return ERR_OK;
}

int
generate_batch_new(struct generate_batch **out, const struct model *m, const struct tokenizer *tok,
                   uint32_t n_slots, uint32_t n_ctx, uint32_t n_threads, char *err)
{
    struct context *ctx;
    int rc;

    *out = NULL;
    if (n_slots == 0)
        return err_set(err, ERR_BAD_REQUEST, "slot count must be at least 1");
    if ((rc = context_new(&ctx, m, n_slots, n_ctx, n_threads, err)) != ERR_OK)
        return rc;
    return batch_new(out, m, tok, ctx, true, n_slots, err);
}

void
generate_batch_free(struct generate_batch *b)
{
    if (b == NULL)
        return;
    for (uint32_t i = 0; b->slots != NULL && i < b->n_slots; i++)
        gen_free(&b->slots[i]);
    if (b->own_ctx)
        context_free(b->ctx);
    free(b->slots);
    free(b->rows);
    free(b->out);
    free(b);
}

uint32_t
generate_batch_slots(const struct generate_batch *b)
{
    return b->n_slots;
}

uint32_t
generate_batch_active(const struct generate_batch *b)
{
    return b->n_active;
}

/* Ends the request of slot i: frees what it holds, then calls its on_done (which may add a new
 * request to the slot). */
static void
batch_finish(struct generate_batch *b, uint32_t i, int rc, const char *err)
{
    struct gen *g = &b->slots[i];
    struct generate_result res = g->res;
    generate_done_fn done = g->on_done;
    void *user = g->user;

    if (g->decode_start != 0)
        res.decode_ms = clock_ms_between(g->decode_start, clock_now_ns());
    if (g->active)
        b->n_active--;
    g->active = false;
    g->in_step = false; /* a request on_done adds here waits for the next step */
    gen_free(g);
    done(user, rc, &res, rc == ERR_OK ? "" : err);
}

int
generate_batch_add(struct generate_batch *b, const struct generate_request *req,
                   generate_token_fn on_token, generate_done_fn on_done, void *user, char *err)
{
    uint32_t i, n_ctx = context_n_ctx(b->ctx);
    struct gen *g;
    bool done;
    int rc;

    for (i = 0; i < b->n_slots && b->slots[i].active; i++)
        ;
    if (i == b->n_slots)
        return err_set(err, ERR_BUSY, "all %u slots are busy", b->n_slots);
    if ((rc = check_request(req, b->n_vocab, err)) != ERR_OK)
        return rc;
    g = &b->slots[i];
    if ((rc = gen_init(g, req, b->tok, b->n_vocab, err)) != ERR_OK)
        goto fail;
    g->on_token = on_token;
    g->on_done = on_done;
    g->user = user;
    if ((rc = replay_text(g, &done, &g->res.reason, err)) != ERR_OK)
        goto fail;
    if (done) { /* the delivered ids end it: nothing to evaluate */
        batch_finish(b, i, ERR_OK, "");
        return ERR_OK;
    }
    if (req->n_prompt + req->n_replay > n_ctx) {
        rc = err_set(err, ERR_CONTEXT_FULL,
                     "prompt (%zu ids) and replay (%zu ids) do not fit the context of %u "
                     "positions",
                     req->n_prompt, req->n_replay, n_ctx);
        goto fail;
    }
    context_truncate(b->ctx, i, 0);
    g->joined = clock_now_ns();
    g->order = b->n_joined++;
    g->active = true;
    b->n_active++;
    return ERR_OK;
fail:
    gen_free(g);
    return rc;
}

/* Prompt and replayed ids of g (contiguous in its copy: the replay follows the prompt). */
static size_t
gen_n_feed(const struct gen *g)
{
    return g->req.n_prompt + g->req.n_replay;
}

/*
 * Adds prompt chunks to the step's rows (from b->rows[*n] on) for the requests of this step still
 * prefilling, first come first served, up to budget rows in all. The replayed ids go in with the
 * prompt: the engine's results do not depend on how a sequence is split into passes, so this is
 * the state the first run reached. A chunk that ends the prefill asks for its last row's logits.
 */
static void
step_prompts(struct generate_batch *b, uint32_t budget, size_t *n, uint32_t *n_out)
{
    while (budget > 0) {
        struct gen *g = NULL;
        uint32_t slot = 0, len;

        for (uint32_t i = 0; i < b->n_slots; i++) {
            struct gen *o = &b->slots[i];

            if (o->in_step && o->step_rows == 0 && o->n_fed < gen_n_feed(o) &&
                (g == NULL || o->order < g->order)) {
                g = o;
                slot = i;
            }
        }
        if (g == NULL)
            return;
        len = gen_n_feed(g) - g->n_fed < budget ? (uint32_t)(gen_n_feed(g) - g->n_fed) : budget;
        for (uint32_t k = 0; k < len; k++)
            b->rows[(*n)++] = (struct context_row){slot, g->req.prompt[g->n_fed + k], false};
        g->step_rows = len;
        if (g->n_fed + len == gen_n_feed(g)) {
            b->rows[*n - 1].logits = true;
            g->step_logits = (int32_t)(*n_out)++;
        }
        budget -= len;
    }
}

/* After the pass: slot i's prefill progress, then its next token if it has logits. */
static void
step_advance(struct generate_batch *b, uint32_t i, char *err)
{
    struct gen *g = &b->slots[i];
    int32_t id;
    bool ended;
    int rc;

    if (g->n_fed < gen_n_feed(g)) {
        g->n_fed += g->step_rows;
        if (g->n_fed == gen_n_feed(g))
            g->res.prefill_ms = clock_ms_between(g->joined, clock_now_ns());
    }
    if (g->step_logits < 0)
        return;
    rc = gen_next(g, b->out + (size_t)g->step_logits * b->n_vocab, &id, &ended, err);
    if (rc == ERR_OK && !ended && context_pos(b->ctx, i) >= context_n_ctx(b->ctx)) {
        g->res.reason = GENERATE_REASON_CONTEXT;
        ended = true;
    }
    if (rc != ERR_OK || ended)
        batch_finish(b, i, rc, err);
    else
        g->next = id;
}

int
generate_batch_step(struct generate_batch *b, char *err)
{
    uint32_t n_dec = 0, n_out = 0, only = 0, n_in = 0;
    size_t n = 0;
    int rc;

    /* the requests of this step: one added by a callback waits for the next */
    for (uint32_t i = 0; i < b->n_slots; i++) {
        b->slots[i].in_step = b->slots[i].active;
        b->slots[i].step_rows = 0;
        b->slots[i].step_logits = -1;
    }
    /* cancelled ones end, prefilling ones too; the decoding ones' next tokens */
    for (uint32_t i = 0; i < b->n_slots; i++) {
        struct gen *g = &b->slots[i];

        if (!g->in_step)
            continue;
        if (cancelled(&g->req)) {
            g->res.reason = GENERATE_REASON_CANCELLED;
            batch_finish(b, i, ERR_OK, "");
        } else if (g->n_fed == gen_n_feed(g)) {
            b->rows[n++] = (struct context_row){i, g->next, true};
            g->step_rows = 1;
            g->step_logits = (int32_t)n_out++;
            n_dec++;
        }
    }
    step_prompts(b,
                 n_dec == 0                            ? MODEL_UBATCH
                 : STEP_ROWS > n_dec + STEP_PROMPT_MIN ? STEP_ROWS - n_dec
                                                       : STEP_PROMPT_MIN,
                 &n, &n_out);
    if (n == 0)
        return ERR_OK;
    for (uint32_t i = 0; i < b->n_slots; i++)
        if (b->slots[i].in_step && b->slots[i].step_rows > 0) {
            only = i;
            n_in++;
        }
    /* a pass of one request stops as soon as it is cancelled (generate_run's prefill) */
    context_set_abort(b->ctx, n_in == 1 ? b->slots[only].req.cancel : NULL);
    rc = context_batch(b->ctx, b->rows, n, b->out, err);
    context_set_abort(b->ctx, NULL);
    if (rc == ERR_CANCELLED && n_in == 1) {
        b->slots[only].res.reason = GENERATE_REASON_CANCELLED;
        batch_finish(b, only, ERR_OK, "");
        return ERR_OK;
    }
    for (uint32_t i = 0; i < b->n_slots; i++) {
        if (!b->slots[i].in_step || b->slots[i].step_rows == 0)
            continue;
        if (rc != ERR_OK)
            batch_finish(b, i, rc, err);
        else
            step_advance(b, i, err);
    }
    return rc;
}

/* ---- one request alone ---- */

/* generate_run's callbacks around the caller's. */
struct run {
    generate_token_fn cb;
    void *user;
    struct generate_result *res;
    int rc;
    char *err;
};

static int
run_token(void *user, const struct generate_token *t)
{
    struct run *r = user;

    return r->cb(r->user, t);
}

static void
run_done(void *user, int rc, const struct generate_result *res, const char *err)
{
    struct run *r = user;

    *r->res = *res;
    r->rc = rc;
    if (rc != ERR_OK)
        snprintf(r->err, ERR_MSG_MAX, "%s", err);
}

int
generate_run(const struct model *m, struct context *ctx, const struct tokenizer *tok,
             const struct generate_request *req, generate_token_fn cb, void *user,
             struct generate_result *res, char *err)
{
    struct run r = {cb, user, res, ERR_OK, err};
    struct generate_batch *b;
    char step_err[ERR_MSG_MAX];
    int rc;

    memset(res, 0, sizeof(*res));
    if ((rc = batch_new(&b, m, tok, ctx, false, 1, err)) != ERR_OK)
        return rc;
    rc = generate_batch_add(b, req, run_token, run_done, &r, err);
    while (rc == ERR_OK && generate_batch_active(b) > 0)
        generate_batch_step(b, step_err); /* an engine error comes to run_done too */
    generate_batch_free(b);
    return rc != ERR_OK ? rc : r.rc;
}
