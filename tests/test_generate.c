/*
 * test_generate.c: tests of the generation loop (generate.h) on the real stories260K model:
 * a replay from any point continues with the ids and text of the undisturbed run, stop strings
 * end a run with the text cut, the cancel flag and the callback stop it, the context limit ends
 * it, and bad requests are refused with a detail; the batch gives every request the ids it gets
 * alone, also while a long prompt joins by chunks (the running requests get a token each step).
 */
#include "common/err.h"
#include "tests/harness.h"
#include "workerd/engine/generate.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"
#include "workerd/engine/tokenizer.h"

#include <string.h>

#define MAX_GEN 40

static struct gguf *g;
static struct tokenizer *tok;
static struct model *m;

/* What a run reported: the ids, each token's index, the released text and where each token's
 * part of it ends. */
struct run {
    int32_t ids[MAX_GEN];
    uint32_t index[MAX_GEN];
    size_t text_end[MAX_GEN];
    size_t n;
    char text[4096];
    size_t n_text;
    int stop_after; /* callback returns nonzero after this many tokens (0 = never) */
    atomic_bool *cancel_after_first;
    uint32_t cancel_at; /* with cancel_after_first: set it after this many tokens (0: 1) */
    struct generate_result res;
    int done_calls; /* batch: on_done calls, and the token calls that came after one */
    int late_tokens;
    int done_rc;
};

static bool
load_model(void)
{
    char path[512], err[ERR_MSG_MAX];

    if (m != NULL)
        return true;
    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return false;
    if (gguf_open(&g, path, err) != ERR_OK || tokenizer_load(&tok, g, err) != ERR_OK ||
        model_load(&m, g, err) != ERR_OK) {
        harness_fail(__FILE__, __LINE__, "loading %s: %s", path, err);
        return false;
    }
    return true;
}

static int
record(void *user, const struct generate_token *t)
{
    struct run *r = user;

    if (r->done_calls > 0)
        r->late_tokens++;
    if (r->n == MAX_GEN || r->n_text + t->n_text > sizeof(r->text))
        return -1;
    memcpy(r->text + r->n_text, t->text, t->n_text);
    r->n_text += t->n_text;
    r->ids[r->n] = t->id;
    r->index[r->n] = t->index;
    r->text_end[r->n] = r->n_text;
    r->n++;
    if (r->cancel_after_first != NULL && r->n >= (r->cancel_at > 0 ? r->cancel_at : 1))
        atomic_store(r->cancel_after_first, true);
    return r->stop_after > 0 && (int)r->n >= r->stop_after ? 1 : 0;
}

/* The prompt "Once upon a time" and a seeded sampling request over it. */
static struct generate_request
request(int32_t *prompt, size_t *n_prompt)
{
    struct generate_request req = {0};
    char err[ERR_MSG_MAX];

    tokenizer_encode(tok, "Once upon a time", 16, true, false, prompt, 16, n_prompt, err);
    req.prompt = prompt;
    req.n_prompt = *n_prompt;
    sampler_options_default(&req.sampling);
    req.sampling.temp = 1.2f;
    req.sampling.repeat_penalty = 1.1f;
    req.sampling.seed = 31337;
    req.max_tokens = MAX_GEN;
    req.ignore_eos = true;
    return req;
}

/* Runs req on a fresh context of n_ctx positions (0: enough); returns generate_run's code. */
static int
run(const struct generate_request *req, uint32_t n_ctx, struct run *r, char *err)
{
    struct context *ctx;
    int rc;

    r->n = 0;
    r->n_text = 0;
    if (n_ctx == 0)
        n_ctx = (uint32_t)(req->n_prompt + req->max_tokens);
    if ((rc = context_new(&ctx, m, 1, n_ctx, 1, err)) != ERR_OK)
        return rc;
    rc = generate_run(m, ctx, tok, req, record, r, &r->res, err);
    context_free(ctx);
    return rc;
}

static void
test_replay_continues_identically(void)
{
    static struct run first, again;
    int32_t prompt[16];
    size_t n_prompt, cuts[] = {1, 2, 7, 20, MAX_GEN - 1};
    char err[ERR_MSG_MAX];
    struct generate_request req;

    if (!load_model())
        return;
    req = request(prompt, &n_prompt);
    CHECKF(run(&req, 0, &first, err) == ERR_OK, "%s", err);
    CHECK(first.n == MAX_GEN && first.res.n_gen == MAX_GEN);
    CHECK(first.res.reason == GENERATE_REASON_LENGTH && first.res.seed == 31337);
    for (size_t i = 0; i < MAX_GEN; i++)
        CHECK(first.index[i] == i);
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        size_t cut = cuts[c], done = first.text_end[cut - 1];

        req.replay = first.ids;
        req.n_replay = cut;
        CHECKF(run(&req, 0, &again, err) == ERR_OK, "%s", err);
        CHECKF(again.n == MAX_GEN - cut, "replay from %zu reported %zu tokens", cut, again.n);
        CHECK(again.index[0] == cut && again.res.n_gen == MAX_GEN);
        CHECKF(memcmp(again.ids, first.ids + cut, again.n * sizeof(int32_t)) == 0,
               "replay from %zu: other ids", cut);
        CHECKF(again.n_text == first.n_text - done &&
                   memcmp(again.text, first.text + done, again.n_text) == 0,
               "replay from %zu: text '%.*s'", cut, (int)again.n_text, again.text);
    }
    /* A replay of every id reports nothing and says why it ended. */
    req.n_replay = MAX_GEN;
    CHECKF(run(&req, 0, &again, err) == ERR_OK, "%s", err);
    CHECK(again.n == 0 && again.res.reason == GENERATE_REASON_LENGTH && again.res.n_gen == MAX_GEN);
}

static void
test_stop_string_ends_run(void)
{
    static struct run r, greedy;
    int32_t prompt[16];
    size_t n_prompt;
    char err[ERR_MSG_MAX];
    const char *stops[] = {"named Lily"}, *cut = ", there was a little girl ";
    struct generate_request req;

    if (!load_model())
        return;
    req = request(prompt, &n_prompt);
    req.sampling.temp = 0.0f;
    req.sampling.repeat_penalty = 1.0f;
    CHECKF(run(&req, 0, &greedy, err) == ERR_OK, "%s", err);
    req.stops = stops;
    req.n_stops = 1;
    CHECKF(run(&req, 0, &r, err) == ERR_OK, "%s", err);
    CHECK(r.res.reason == GENERATE_REASON_STOP);
    CHECKF(r.n_text == strlen(cut) && memcmp(r.text, cut, r.n_text) == 0, "'%.*s'", (int)r.n_text,
           r.text);
    CHECK(r.n < MAX_GEN && memcmp(r.ids, greedy.ids, r.n * sizeof(int32_t)) == 0);
    /* The token that brought "named" released none of it: it was held back until " Lily". */
    for (size_t i = 0; i + 1 < r.n; i++)
        if (greedy.text_end[i] > strlen(cut))
            CHECKF(r.text_end[i] == strlen(cut), "token %zu released up to %zu", i, r.text_end[i]);
    /* A replay that already contains the stop string reports nothing. */
    req.replay = greedy.ids;
    req.n_replay = r.n;
    CHECKF(run(&req, 0, &r, err) == ERR_OK, "%s", err);
    CHECK(r.n == 0 && r.res.reason == GENERATE_REASON_STOP);
}

static void
test_cancel(void)
{
    static struct run r;
    int32_t prompt[16];
    size_t n_prompt;
    char err[ERR_MSG_MAX];
    atomic_bool flag;
    struct generate_request req;

    if (!load_model())
        return;
    req = request(prompt, &n_prompt);
    req.cancel = &flag;
    atomic_store(&flag, true);
    CHECKF(run(&req, 0, &r, err) == ERR_OK, "%s", err);
    CHECK(r.n == 0 && r.res.reason == GENERATE_REASON_CANCELLED && r.res.n_gen == 0);
    atomic_store(&flag, false);
    r.cancel_after_first = &flag;
    CHECKF(run(&req, 0, &r, err) == ERR_OK, "%s", err);
    CHECK(r.n == 1 && r.res.reason == GENERATE_REASON_CANCELLED);
    r.cancel_after_first = NULL;
    req.cancel = NULL;
    r.stop_after = 3;
    CHECKF(run(&req, 0, &r, err) == ERR_OK, "%s", err);
    CHECK(r.n == 3 && r.res.reason == GENERATE_REASON_CANCELLED);
    r.stop_after = 0;
}

static void
test_context_limit_and_bad_requests(void)
{
    static struct run r;
    int32_t prompt[16], bad_id = 512;
    size_t n_prompt;
    char err[ERR_MSG_MAX];
    struct generate_request req;

    if (!load_model())
        return;
    req = request(prompt, &n_prompt);
    /* n_prompt + 3 positions: the prompt, then 3 evaluated tokens; the 4th sampled one ends it. */
    CHECKF(run(&req, (uint32_t)n_prompt + 3, &r, err) == ERR_OK, "%s", err);
    CHECKF(r.res.reason == GENERATE_REASON_CONTEXT && r.n == 4, "reason %s, %zu tokens",
           generate_reason_str(r.res.reason), r.n);
    CHECK(run(&req, (uint32_t)n_prompt - 1, &r, err) == ERR_CONTEXT_FULL);
    req.replay = &bad_id;
    req.n_replay = 1;
    CHECK(run(&req, 0, &r, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "replay id 512") != NULL, "%s", err);
    req.replay = prompt;
    req.max_tokens = 0;
    CHECK(run(&req, 0, &r, err) == ERR_BAD_REQUEST && strstr(err, "max_tokens") != NULL);
    req = request(prompt, &n_prompt);
    req.sampling.top_p = 2.0f;
    CHECK(run(&req, 0, &r, err) == ERR_BAD_REQUEST && strstr(err, "top_p") != NULL);
    req = request(prompt, &n_prompt);
    req.n_prompt = 0;
    CHECK(run(&req, 8, &r, err) == ERR_BAD_REQUEST && strstr(err, "prompt") != NULL);
    CHECK(r.n == 0);
}

/* ---- continuous batching ---- */

#define BATCH_CTX 48

static void
record_done(void *user, int rc, const struct generate_result *res, const char *err)
{
    struct run *r = user;

    r->done_calls++;
    r->done_rc = rc;
    r->res = *res;
    CHECKF(rc != ERR_OK || (err != NULL && err[0] == '\0'), "done ERR_OK with '%s'", err);
}

/* One request of the batch test: its prompt text, how it differs from request(), the step it may
 * join at. */
struct batch_case {
    const char *prompt;
    float temp;
    uint64_t seed;
    uint32_t max_tokens;
    bool eos;         /* stop at end-of-generation tokens */
    const char *stop; /* a stop string, or NULL */
    uint32_t replay;  /* replay the first ids of the run alone */
    uint32_t cancel;  /* the cancel flag is set after this many tokens (0: never) */
    int stop_after;   /* the callback returns nonzero after this many */
    uint32_t join;
};

static const struct batch_case batch_cases[] = {
    {"Once upon a time", 1.2f, 31337, MAX_GEN, false, NULL, 0, 0, 0, 0},
    {"Once upon a time", 0.0f, 0, MAX_GEN, false, "named Lily", 0, 0, 0, 0},
    {"The cat sat on", 0.9f, 7, 25, false, NULL, 0, 0, 0, 1},
    {"Once upon a time", 1.2f, 31337, MAX_GEN, false, NULL, 7, 0, 0, 3},
    {"Lily and Ben went", 1.0f, 99, MAX_GEN, false, NULL, 0, 5, 0, 2},
    {"One day", 0.0f, 0, MAX_GEN, true, NULL, 0, 0, 0, 4},
    {"Tom had a big red", 0.7f, 5, MAX_GEN, false, NULL, 0, 0, 4, 6},
    /* 9 prompt ids + 40 do not fit BATCH_CTX: ends with reason context */
    {"Once upon a time there was a dog", 0.8f, 3, MAX_GEN, false, NULL, 0, 0, 0, 9},
};
#define N_BATCH (sizeof(batch_cases) / sizeof(batch_cases[0]))

/* A request for case i into req (prompt ids into prompt, the cancel flag to flag). */
static struct generate_request
batch_request(size_t i, int32_t *prompt, const int32_t *replay, atomic_bool *flag,
              const char **stop)
{
    const struct batch_case *bc = &batch_cases[i];
    struct generate_request req = {0};
    char err[ERR_MSG_MAX];

    tokenizer_encode(tok, bc->prompt, strlen(bc->prompt), true, false, prompt, 16, &req.n_prompt,
                     err);
    req.prompt = prompt;
    sampler_options_default(&req.sampling);
    req.sampling.temp = bc->temp;
    req.sampling.seed = bc->seed;
    req.sampling.repeat_penalty = 1.1f;
    req.max_tokens = bc->max_tokens;
    req.ignore_eos = !bc->eos;
    *stop = bc->stop;
    req.stops = bc->stop != NULL ? stop : NULL;
    req.n_stops = bc->stop != NULL ? 1 : 0;
    req.replay = replay;
    req.n_replay = bc->replay;
    atomic_store(flag, false);
    req.cancel = flag;
    return req;
}

static void
run_setup(struct run *r, const struct batch_case *bc, atomic_bool *flag)
{
    memset(r, 0, sizeof(*r));
    r->stop_after = bc->stop_after;
    r->cancel_after_first = bc->cancel > 0 ? flag : NULL;
    r->cancel_at = bc->cancel;
}

/* Eight requests (greedy and seeded, stop string, replay, cancelled midway, end of generation,
 * the callback stopping one, one running out of context) through a batch of 3 slots, joining
 * when a slot is free and their step has come: each reports exactly what generate_run reports
 * for it alone, and on_done comes once, after its last token. */
static void
test_batch_equals_alone(void)
{
    static struct run alone[N_BATCH], batched[N_BATCH];
    int32_t prompt[N_BATCH][16];
    atomic_bool flag[N_BATCH];
    const char *stop[N_BATCH];
    char err[ERR_MSG_MAX];
    struct generate_batch *b;
    size_t next = 0;
    int rc;

    if (!load_model())
        return;
    for (size_t i = 0; i < N_BATCH; i++) {
        struct generate_request req = batch_request(i, prompt[i], alone[0].ids, &flag[i], &stop[i]);

        run_setup(&alone[i], &batch_cases[i], &flag[i]);
        rc = run(&req, BATCH_CTX, &alone[i], err);
        CHECKF(rc == ERR_OK, "case %zu alone: %s", i, err);
    }
    /* the cases mean what they say */
    CHECK(alone[1].res.reason == GENERATE_REASON_STOP);
    CHECK(alone[3].res.n_gen == MAX_GEN && alone[3].n == MAX_GEN - 7);
    CHECK(alone[4].res.reason == GENERATE_REASON_CANCELLED && alone[4].n == 5);
    CHECK(alone[6].res.reason == GENERATE_REASON_CANCELLED && alone[6].n == 4);
    CHECKF(alone[7].res.reason == GENERATE_REASON_CONTEXT, "case 7: %s",
           generate_reason_str(alone[7].res.reason));

    CHECKF(generate_batch_new(&b, m, tok, 3, BATCH_CTX, 2, err) == ERR_OK, "%s", err);
    CHECK(generate_batch_slots(b) == 3 && generate_batch_active(b) == 0);
    for (uint32_t step = 0; step < 200 && (next < N_BATCH || generate_batch_active(b) > 0);
         step++) {
        while (next < N_BATCH && batch_cases[next].join <= step &&
               generate_batch_active(b) < generate_batch_slots(b)) {
            struct generate_request req =
                batch_request(next, prompt[next], alone[0].ids, &flag[next], &stop[next]);

            run_setup(&batched[next], &batch_cases[next], &flag[next]);
            rc = generate_batch_add(b, &req, record, record_done, &batched[next], err);
            memset(prompt[next], 0xff, sizeof(prompt[next])); /* the batch keeps its own copy */
            if (rc != ERR_OK)
                generate_batch_free(b);
            CHECKF(rc == ERR_OK, "case %zu: %s", next, err);
            next++;
        }
        rc = generate_batch_step(b, err);
        if (rc != ERR_OK)
            generate_batch_free(b);
        CHECKF(rc == ERR_OK, "step %u: %s", step, err);
    }
    CHECK(next == N_BATCH && generate_batch_active(b) == 0);
    generate_batch_free(b);
    for (size_t i = 0; i < N_BATCH; i++) {
        struct run *a = &alone[i], *r = &batched[i];

        CHECKF(r->done_calls == 1 && r->late_tokens == 0 && r->done_rc == ERR_OK,
               "case %zu: %d done calls, %d tokens after, rc %d", i, r->done_calls, r->late_tokens,
               r->done_rc);
        CHECKF(r->n == a->n && memcmp(r->ids, a->ids, a->n * sizeof(int32_t)) == 0 &&
                   memcmp(r->index, a->index, a->n * sizeof(uint32_t)) == 0,
               "case %zu: %zu ids batched, %zu alone, or other ids", i, r->n, a->n);
        CHECKF(r->n_text == a->n_text && memcmp(r->text, a->text, a->n_text) == 0 &&
                   memcmp(r->text_end, a->text_end, a->n * sizeof(size_t)) == 0,
               "case %zu: text '%.*s' vs '%.*s'", i, (int)r->n_text, r->text, (int)a->n_text,
               a->text);
        CHECKF(r->res.reason == a->res.reason && r->res.n_gen == a->res.n_gen &&
                   r->res.seed == a->res.seed,
               "case %zu: %s/%u vs %s/%u", i, generate_reason_str(r->res.reason), r->res.n_gen,
               generate_reason_str(a->res.reason), a->res.n_gen);
    }
}

/* A replay that was complete ends inside generate_batch_add (its on_done came when add returns);
 * one cancelled before its prefill ends in the first step, before any evaluation; one added from
 * an on_done callback takes part from the next step. */
struct chain {
    struct generate_batch *b;
    struct generate_request req;
    struct run *next;
    int rc;
};

static int
chain_token(void *user, const struct generate_token *t)
{
    struct chain *c = user;

    return record(c->next - 1, t);
}

static void
chain_done(void *user, int rc, const struct generate_result *res, const char *err)
{
    struct chain *c = user;
    char e[ERR_MSG_MAX];

    record_done(c->next - 1, rc, res, err);
    c->rc = generate_batch_add(c->b, &c->req, record, record_done, c->next, e);
}

static void
test_batch_ends_in_add_and_chains(void)
{
    static struct run r, first, second, alone;
    int32_t prompt[16];
    size_t n_prompt;
    char err[ERR_MSG_MAX];
    atomic_bool flag = true;
    struct generate_batch *b;
    struct generate_request req;
    struct chain c;
    struct run pair[2];

    if (!load_model())
        return;
    req = request(prompt, &n_prompt);
    CHECKF(run(&req, 0, &alone, err) == ERR_OK, "%s", err);
    CHECKF(generate_batch_new(&b, m, tok, 1, 0, 1, err) == ERR_OK, "%s", err);
    req.cancel = &flag;
    memset(&r, 0, sizeof(r));
    CHECK(generate_batch_add(b, &req, record, record_done, &r, err) == ERR_OK);
    CHECK(r.done_calls == 0 && generate_batch_active(b) == 1);
    CHECK(generate_batch_step(b, err) == ERR_OK);
    CHECK(r.done_calls == 1 && r.n == 0 && r.res.reason == GENERATE_REASON_CANCELLED);
    CHECK(generate_batch_active(b) == 0);
    req.cancel = NULL;
    req.replay = alone.ids;
    req.n_replay = MAX_GEN;
    memset(&r, 0, sizeof(r));
    CHECK(generate_batch_add(b, &req, record, record_done, &r, err) == ERR_OK);
    CHECK(r.done_calls == 1 && r.n == 0 && r.res.reason == GENERATE_REASON_LENGTH);
    CHECK(r.res.n_gen == MAX_GEN && generate_batch_active(b) == 0);
    /* the first request's on_done adds the second into the slot it frees */
    req.replay = NULL;
    req.n_replay = 0;
    req.max_tokens = 5;
    memset(pair, 0, sizeof(pair));
    c = (struct chain){b, req, &pair[1], -1};
    c.req.max_tokens = MAX_GEN;
    CHECK(generate_batch_add(b, &req, chain_token, chain_done, &c, err) == ERR_OK);
    while (generate_batch_active(b) > 0)
        CHECK(generate_batch_step(b, err) == ERR_OK);
    generate_batch_free(b);
    first = pair[0], second = pair[1];
    CHECK(c.rc == ERR_OK && first.done_calls == 1 && second.done_calls == 1);
    CHECK(first.n == 5 && memcmp(first.ids, alone.ids, 5 * sizeof(int32_t)) == 0);
    CHECK(second.n == MAX_GEN && memcmp(second.ids, alone.ids, sizeof(alone.ids)) == 0);
    CHECK(second.n_text == alone.n_text && memcmp(second.text, alone.text, alone.n_text) == 0);
}

/* A long prompt joins a running request: the prompt goes in by chunks, one per step, and the
 * running request gets a token in every one of those steps; both give the ids they give alone. */
#define LONG_PROMPT 300

static void
test_batch_long_prompt_interleaves(void)
{
    static struct run run_a, run_long, alone_a, alone_long;
    int32_t prompt[16], long_prompt[LONG_PROMPT];
    size_t n_prompt;
    char err[ERR_MSG_MAX];
    struct generate_batch *b;
    struct generate_request req, req_long;
    uint32_t steps = 0;
    size_t before;

    if (!load_model())
        return;
    req = request(prompt, &n_prompt);
    req_long = req;
    long_prompt[0] = 1; /* BOS */
    for (size_t i = 1; i < LONG_PROMPT; i++)
        long_prompt[i] = (int32_t)(3 + (i * 37) % 500);
    req_long.prompt = long_prompt;
    req_long.n_prompt = LONG_PROMPT;
    req_long.max_tokens = 8;
    req_long.sampling.seed = 7;
    CHECKF(run(&req, 0, &alone_a, err) == ERR_OK, "%s", err);
    CHECKF(run(&req_long, 0, &alone_long, err) == ERR_OK, "%s", err);
    CHECK(alone_a.n == MAX_GEN && alone_long.n == 8);

    CHECKF(generate_batch_new(&b, m, tok, 2, LONG_PROMPT + MAX_GEN, 1, err) == ERR_OK, "%s", err);
    CHECK(generate_batch_add(b, &req, record, record_done, &run_a, err) == ERR_OK);
    CHECK(generate_batch_step(b, err) == ERR_OK && generate_batch_step(b, err) == ERR_OK);
    CHECK(run_a.n == 2);
    CHECK(generate_batch_add(b, &req_long, record, record_done, &run_long, err) == ERR_OK);
    CHECK(run_long.n == 0 && generate_batch_active(b) == 2);
    before = run_a.n;
    while (run_long.n == 0 && steps < 100) {
        CHECK(generate_batch_step(b, err) == ERR_OK);
        steps++;
    }
    /* 300 prompt rows at 63 per step (64 rows less the running request's one) */
    CHECKF(steps == (LONG_PROMPT + 62) / 63, "the long prompt took %u steps", steps);
    CHECKF(run_a.n == before + steps, "%zu tokens of the running request in %u steps",
           run_a.n - before, steps);
    while (generate_batch_active(b) > 0)
        CHECK(generate_batch_step(b, err) == ERR_OK);
    generate_batch_free(b);
    CHECK(run_a.done_calls == 1 && run_long.done_calls == 1);
    CHECK(run_a.n == MAX_GEN && memcmp(run_a.ids, alone_a.ids, sizeof(alone_a.ids)) == 0);
    CHECK(run_long.n == 8 && memcmp(run_long.ids, alone_long.ids, 8 * sizeof(int32_t)) == 0);
    CHECK(run_long.n_text == alone_long.n_text &&
          memcmp(run_long.text, alone_long.text, alone_long.n_text) == 0);
    CHECK(run_long.res.prefill_ms > 0.0);
}

static void
test_batch_refusals(void)
{
    static struct run r[3];
    int32_t prompt[16], bad_id = 512;
    size_t n_prompt;
    char err[ERR_MSG_MAX];
    struct generate_batch *b;
    struct generate_request req;

    if (!load_model())
        return;
    CHECK(generate_batch_new(&b, m, tok, 0, 64, 1, err) == ERR_BAD_REQUEST && b == NULL);
    CHECKF(strstr(err, "slot") != NULL, "%s", err);
    CHECK(generate_batch_new(&b, m, tok, 2, 64, 0, err) == ERR_BAD_REQUEST && b == NULL);
    CHECKF(generate_batch_new(&b, m, tok, 2, 20, 1, err) == ERR_OK, "%s", err);
    memset(r, 0, sizeof(r));
    req = request(prompt, &n_prompt);
    /* refused requests: no slot taken, no callback */
    req.sampling.top_p = 2.0f;
    CHECK(generate_batch_add(b, &req, record, record_done, &r[0], err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "top_p") != NULL, "%s", err);
    req = request(prompt, &n_prompt);
    req.replay = &bad_id;
    req.n_replay = 1;
    CHECK(generate_batch_add(b, &req, record, record_done, &r[0], err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "replay id 512") != NULL, "%s", err);
    req = request(prompt, &n_prompt);
    req.replay = prompt;
    req.n_replay = 20 - n_prompt + 1;
    CHECKF(generate_batch_add(b, &req, record, record_done, &r[0], err) == ERR_CONTEXT_FULL, "%s",
           err);
    CHECKF(strstr(err, "context of 20") != NULL, "%s", err);
    CHECK(generate_batch_active(b) == 0 && r[0].done_calls == 0);
    /* full */
    req = request(prompt, &n_prompt);
    CHECK(generate_batch_add(b, &req, record, record_done, &r[0], err) == ERR_OK);
    CHECK(generate_batch_add(b, &req, record, record_done, &r[1], err) == ERR_OK);
    CHECK(generate_batch_add(b, &req, record, record_done, &r[2], err) == ERR_BUSY);
    CHECK(generate_batch_active(b) == 2);
    /* both run out of context together (20 positions) */
    while (generate_batch_active(b) > 0)
        CHECK(generate_batch_step(b, err) == ERR_OK);
    CHECK(generate_batch_step(b, err) == ERR_OK); /* nothing active */
    for (int i = 0; i < 2; i++)
        CHECK(r[i].done_calls == 1 && r[i].res.reason == GENERATE_REASON_CONTEXT &&
              r[i].n == 20 - n_prompt + 1);
    CHECK(r[2].done_calls == 0 && r[2].n == 0);
    /* a free with requests in it: no callbacks */
    CHECK(generate_batch_add(b, &req, record, record_done, &r[2], err) == ERR_OK);
    generate_batch_free(b);
    CHECK(r[2].done_calls == 0);
    generate_batch_free(NULL);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_replay_continues_identically),
        TEST(test_stop_string_ends_run),
        TEST(test_cancel),
        TEST(test_context_limit_and_bad_requests),
        TEST(test_batch_equals_alone),
        TEST(test_batch_ends_in_add_and_chains),
        TEST(test_batch_long_prompt_interleaves),
        TEST(test_batch_refusals),
        {0},
    };
    int rc = harness_run(tests, argc, argv);

    model_free(m);
    tokenizer_free(tok);
    gguf_close(g);
    return rc;
}
