/*
 * test_generate.c: tests of the generation loop (generate.h) on the real stories260K model:
 * a replay from any point continues with the ids and text of the undisturbed run, stop strings
 * end a run with the text cut, the cancel flag and the callback stop it, the context limit ends
 * it, and bad requests are refused with a detail.
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
    struct generate_result res;
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

    if (r->n == MAX_GEN || r->n_text + t->n_text > sizeof(r->text))
        return -1;
    memcpy(r->text + r->n_text, t->text, t->n_text);
    r->n_text += t->n_text;
    r->ids[r->n] = t->id;
    r->index[r->n] = t->index;
    r->text_end[r->n] = r->n_text;
    r->n++;
    if (r->cancel_after_first != NULL)
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

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_replay_continues_identically),
        TEST(test_stop_string_ends_run),
        TEST(test_cancel),
        TEST(test_context_limit_and_bad_requests),
        {0},
    };
    int rc = harness_run(tests, argc, argv);

    model_free(m);
    tokenizer_free(tok);
    gguf_close(g);
    return rc;
}
