/*
 * cmd_generate.c: `workerd generate`, a local completion (../shared/docs/contract.md): loads the
 * model, tokenizes the prompt as llama.cpp does (with --chat: the prompt as one user message in
 * the model's chat template, chat.h, special tokens parsed), runs the engine's generation loop
 * (generate.h) and streams the text to stdout, or prints one JSON object at the end with --json. A
 * thin front-end: options, files and output only; the loop itself is shared with `workerd serve`.
 */
#include "common/err.h"
#include "common/opt.h"
#include "common/utf8.h"
#include "workerd/cmd.h"
#include "workerd/engine/chat.h"
#include "workerd/engine/generate.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"
#include "workerd/engine/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char help[] =
    "usage: workerd generate -m MODEL [OPTIONS] [--] PROMPT\n"
    "Generates a continuation of PROMPT and streams it to stdout.\n"
    "  -m, --model FILE      the GGUF model\n"
    "  -n, --n-predict N     tokens to generate at most (default 128)\n"
    "  --temp T              temperature; 0 = greedy argmax (default 0.8)\n"
    "  --seed S              seed of the draws; -1 = random, reported (default -1)\n"
    "  --top-k K             keep the K most likely tokens; 0 = off (default 40)\n"
    "  --top-p P             keep the smallest set with mass >= P; 1 = off (default 0.95)\n"
    "  --min-p P             drop tokens below P x the top probability; 0 = off (default 0.05)\n"
    "  --repeat-penalty R    penalize the last N tokens' logits; 1 = off (default 1.0)\n"
    "  --repeat-last-n N     the penalty's window, prompt included (default 64)\n"
    "  -t, --threads N       threads (default: the online CPUs)\n"
    "  -c, --ctx N           context length (default: prompt + N)\n"
    "  --ignore-eos          do not stop at end-of-generation tokens\n"
    "  --stop STR            stop when STR appears (cut before it); repeatable\n"
    "  --chat                PROMPT is one user message, rendered with the model's chat\n"
    "                        template (ChatML when it has none llorch recognises, said on\n"
    "                        stderr) and tokenized with special tokens parsed\n"
    "  --json                print one JSON object at the end instead of streaming:\n"
    "                        {prompt_ids, gen_ids, text, prefill_ms, decode_ms, seed, reason}\n"
    "                        (with --chat also chat_format, the template family used)\n"
    "Exit status: 0 done, 1 runtime error, 2 bad options or model file.\n";

/* Bounds on the numeric options: beyond them a value is a typo, not a request. */
#define MAX_PREDICT 1000000
#define MAX_THREADS 512
#define MAX_STOPS   16

struct gen_args {
    const char *model;
    const char *prompt;
    long long n_predict;
    long long n_threads;
    long long n_ctx; /* 0: prompt + n_predict */
    bool ignore_eos;
    bool json;
    bool chat;
    struct sampler_options sampling;
    const char *stops[MAX_STOPS];
    size_t n_stops;
};

/* What the token callback collects for --json (ids and text) or streams (text only). */
struct gen_out {
    bool json;
    int32_t *ids;
    size_t n_ids;
    char *text;
    size_t n_text;
    size_t cap_text;
};

/* Parses argv (argv[0] is "generate"); ERR_BAD_REQUEST with a detail for any bad option. */
static int
parse_args(int argc, char **argv, struct gen_args *a, char *err)
{
    long long v;
    int rc = ERR_OK, i;

    memset(a, 0, sizeof(*a));
    a->n_predict = 128;
    a->n_threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    sampler_options_default(&a->sampling);
    for (i = 1; i < argc && rc == ERR_OK; i++) {
        const char *o = argv[i];
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(o, "--") == 0) {
            i++;
            break;
        }
        if (o[0] != '-' || o[1] == '\0')
            break;
        if (strcmp(o, "--ignore-eos") == 0) {
            a->ignore_eos = true;
            continue;
        }
        if (strcmp(o, "--json") == 0) {
            a->json = true;
            continue;
        }
        if (strcmp(o, "--chat") == 0) {
            a->chat = true;
            continue;
        }
        if (val == NULL)
            return err_set(err, ERR_BAD_REQUEST, "option %s: missing value", o);
        i++;
        if (strcmp(o, "-m") == 0 || strcmp(o, "--model") == 0) {
            a->model = val;
        } else if (strcmp(o, "-n") == 0 || strcmp(o, "--n-predict") == 0) {
            rc = opt_int(o, val, 0, MAX_PREDICT, &a->n_predict, err);
        } else if (strcmp(o, "-t") == 0 || strcmp(o, "--threads") == 0) {
            rc = opt_int(o, val, 1, MAX_THREADS, &a->n_threads, err);
        } else if (strcmp(o, "--ctx") == 0 || strcmp(o, "-c") == 0) {
            rc = opt_int(o, val, 1, UINT32_MAX, &a->n_ctx, err);
        } else if (strcmp(o, "--temp") == 0) {
            rc = opt_float(o, val, -HUGE_VAL, HUGE_VAL, &a->sampling.temp, err);
        } else if (strcmp(o, "--top-p") == 0) {
            rc = opt_float(o, val, -HUGE_VAL, HUGE_VAL, &a->sampling.top_p, err);
        } else if (strcmp(o, "--min-p") == 0) {
            rc = opt_float(o, val, -HUGE_VAL, HUGE_VAL, &a->sampling.min_p, err);
        } else if (strcmp(o, "--repeat-penalty") == 0) {
            rc = opt_float(o, val, -HUGE_VAL, HUGE_VAL, &a->sampling.repeat_penalty, err);
        } else if (strcmp(o, "--top-k") == 0) {
            if ((rc = opt_int(o, val, 0, INT32_MAX, &v, err)) == ERR_OK)
                a->sampling.top_k = (int32_t)v;
        } else if (strcmp(o, "--repeat-last-n") == 0) {
            if ((rc = opt_int(o, val, 0, SAMPLER_MAX_LAST_N, &v, err)) == ERR_OK)
                a->sampling.repeat_last_n = (int32_t)v;
        } else if (strcmp(o, "--seed") == 0) {
            /* -1: random, as in llama.cpp */
            if ((rc = opt_int(o, val, -1, INT64_MAX, &v, err)) == ERR_OK)
                a->sampling.seed = v == -1 ? SAMPLER_SEED_RANDOM : (uint64_t)v;
        } else if (strcmp(o, "--stop") == 0) {
            if (a->n_stops == MAX_STOPS)
                return err_set(err, ERR_BAD_REQUEST, "option --stop: at most %d", MAX_STOPS);
            if (val[0] == '\0')
                return err_set(err, ERR_BAD_REQUEST, "option --stop: empty string");
            a->stops[a->n_stops++] = val;
        } else {
            return err_set(err, ERR_BAD_REQUEST, "unknown option '%s'", o);
        }
    }
    if (rc != ERR_OK)
        return rc;
    if (a->model == NULL)
        return err_set(err, ERR_BAD_REQUEST, "missing -m MODEL");
    if (i >= argc)
        return err_set(err, ERR_BAD_REQUEST, "missing PROMPT");
    if (i + 1 < argc)
        return err_set(err, ERR_BAD_REQUEST, "one PROMPT expected, got '%s' after it", argv[i + 1]);
    a->prompt = argv[i];
    return sampler_options_check(&a->sampling, err);
}

/* Tokenizes the prompt with the model's BOS rule, special tokens parsed or not; *ids is malloc'd.
 */
static int
tokenize_prompt(const struct tokenizer *tok, const char *prompt, size_t len, bool parse_special,
                int32_t **ids, size_t *n, char *err)
{
    size_t max = tokenizer_max_tokens(tok, len);
    int rc;

    *ids = malloc(max * sizeof(**ids));
    if (*ids == NULL)
        return err_set(err, ERR_NOMEM, "prompt: out of memory for %zu ids", max);
    rc = tokenizer_encode(tok, prompt, len, tokenizer_add_bos(tok), parse_special, *ids, max, n,
                          err);
    if (rc == ERR_OK && *n == 0)
        rc = err_set(err, ERR_BAD_REQUEST, "prompt: no tokens (an empty prompt and no BOS)");
    if (rc != ERR_OK) {
        free(*ids);
        *ids = NULL;
    }
    return rc;
}

static int
on_token(void *user, const struct generate_token *t)
{
    struct gen_out *o = user;

    if (!o->json) {
        if (t->n_text > 0 && fwrite(t->text, 1, t->n_text, stdout) != t->n_text)
            return -1;
        return fflush(stdout) == 0 ? 0 : -1;
    }
    o->ids[o->n_ids++] = t->id;
    if (o->n_text + t->n_text > o->cap_text) {
        size_t cap = (o->n_text + t->n_text) * 2;
        char *p = realloc(o->text, cap);

        if (p == NULL)
            return -1;
        o->text = p;
        o->cap_text = cap;
    }
    memcpy(o->text + o->n_text, t->text, t->n_text);
    o->n_text += t->n_text;
    return 0;
}

static json_t *
ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; a != NULL && i < n; i++)
        if (json_array_append_new(a, json_integer(ids[i])) != 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

/*
 * --chat: the prompt as one user message rendered with the model's template (*text malloc'ed,
 * *family the family used; a fallback to ChatML is said on stderr).
 */
static int
render_chat(const struct gguf *g, const struct tokenizer *tok, const char *prompt, char **text,
            size_t *len, const char **family, char *err)
{
    struct chat_format f;
    struct chat_msg msg = {"user", prompt};
    int rc;

    if ((rc = chat_format_from_model(&f, g, tok, err)) != ERR_OK)
        return rc;
    if (f.fallback)
        fprintf(stderr, "workerd generate: the model has no chat template llorch recognises; "
                        "using ChatML\n");
    *family = chat_family_name(f.family);
    return chat_render(&f, &msg, 1, true, text, len, err);
}

/* Prints the --json object; text with invalid UTF-8 replaced by U+FFFD (JSON needs UTF-8). */
static int
print_json(const int32_t *prompt, size_t n_prompt, const struct gen_out *o,
           const struct generate_result *res, const char *chat_format, char *err)
{
    size_t need = utf8_sanitize(o->text, o->n_text, NULL, 0);
    char *clean = malloc(need + 1);
    json_t *j = NULL;
    char *s = NULL;
    int rc = ERR_NOMEM;

    if (clean == NULL)
        goto out;
    utf8_sanitize(o->text, o->n_text, clean, need);
    j = json_pack("{s:o, s:o, s:s%, s:f, s:f, s:I, s:s}", "prompt_ids", ids_json(prompt, n_prompt),
                  "gen_ids", ids_json(o->ids, o->n_ids), "text", clean, need, "prefill_ms",
                  res->prefill_ms, "decode_ms", res->decode_ms, "seed", (json_int_t)res->seed,
                  "reason", generate_reason_str(res->reason));
    if (j != NULL && chat_format != NULL &&
        json_object_set_new(j, "chat_format", json_string(chat_format)) != 0)
        goto out;
    if (j == NULL ||
        (s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9))) == NULL)
        goto out;
    if (printf("%s\n", s) < 0 || fflush(stdout) != 0) {
        rc = err_set(err, ERR_IO, "stdout: %s", strerror(errno));
        goto out;
    }
    rc = ERR_OK;
out:
    if (rc == ERR_NOMEM)
        err_set(err, ERR_NOMEM, "json output: out of memory");
    free(s);
    json_decref(j);
    free(clean);
    return rc;
}

int
cmd_generate(int argc, char **argv)
{
    char err[ERR_MSG_MAX];
    struct gen_args a;
    struct gguf *g = NULL;
    struct tokenizer *tok = NULL;
    struct model *m = NULL;
    struct context *ctx = NULL;
    int32_t *prompt = NULL;
    size_t n_prompt = 0, n_text;
    char *chat_text = NULL;
    const char *chat_format = NULL;
    struct gen_out out = {0};
    struct generate_result res;
    struct generate_request req = {0};
    int status = CMD_EXIT_FATAL;
    uint32_t n_ctx;

    if (argc >= 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(help, stdout);
        return CMD_EXIT_OK;
    }
    if (parse_args(argc, argv, &a, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: %s (see workerd generate --help)\n", err);
        return CMD_EXIT_FATAL;
    }
    if (gguf_open(&g, a.model, err) != ERR_OK || tokenizer_load(&tok, g, err) != ERR_OK ||
        model_load(&m, g, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: %s: %s\n", a.model, err);
        goto out;
    }
    if (a.chat && render_chat(g, tok, a.prompt, &chat_text, &n_text, &chat_format, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: --chat: %s\n", err);
        goto out;
    }
    if (tokenize_prompt(tok, a.chat ? chat_text : a.prompt, a.chat ? n_text : strlen(a.prompt),
                        a.chat, &prompt, &n_prompt, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: %s\n", err);
        goto out;
    }
    /* By default the context holds exactly the prompt and the tokens asked for. */
    n_ctx = a.n_ctx > 0 ? (uint32_t)a.n_ctx : (uint32_t)(n_prompt + (size_t)a.n_predict);
    if (n_prompt > n_ctx) {
        fprintf(stderr, "workerd generate: the prompt has %zu tokens, more than --ctx %u\n",
                n_prompt, n_ctx);
        goto out;
    }
    status = CMD_EXIT_ERROR;
    if (context_new(&ctx, m, 1, n_ctx, (uint32_t)a.n_threads, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: %s\n", err);
        goto out;
    }
    out.json = a.json;
    out.ids = malloc(((size_t)a.n_predict + 1) * sizeof(*out.ids));
    if (out.ids == NULL) {
        fprintf(stderr, "workerd generate: out of memory for %lld ids\n", a.n_predict);
        goto out;
    }
    req.prompt = prompt;
    req.n_prompt = n_prompt;
    req.sampling = a.sampling;
    req.max_tokens = (uint32_t)a.n_predict;
    req.ignore_eos = a.ignore_eos;
    req.stops = a.stops;
    req.n_stops = a.n_stops;
    if (generate_run(m, ctx, tok, &req, on_token, &out, &res, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: %s\n", err);
        goto out;
    }
    if (res.reason == GENERATE_REASON_CANCELLED) {
        fprintf(stderr, "workerd generate: stdout: %s\n", strerror(errno));
        goto out;
    }
    if (a.json && print_json(prompt, n_prompt, &out, &res, chat_format, err) != ERR_OK) {
        fprintf(stderr, "workerd generate: %s\n", err);
        goto out;
    }
    if (!a.json)
        fprintf(stderr,
                "\nworkerd generate: seed %llu, %zu prompt tokens in %.1f ms, %u generated (%s), "
                "%.2f tokens/s after the first\n",
                (unsigned long long)res.seed, n_prompt, res.prefill_ms, res.n_gen,
                generate_reason_str(res.reason),
                res.n_gen > 1 && res.decode_ms > 0 ? (res.n_gen - 1) * 1000.0 / res.decode_ms
                                                   : 0.0);
    status = CMD_EXIT_OK;
out:
    free(out.ids);
    free(out.text);
    free(prompt);
    free(chat_text);
    context_free(ctx);
    model_free(m);
    tokenizer_free(tok);
    gguf_close(g);
    return status;
}
