/*
 * cmd_tokenize.c: `workerd tokenize` and `workerd detokenize` (../shared/docs/contract.md): text
 * to ids and ids to text with a model's vocabulary, printed as one JSON object. They read only the
 * tokenizer metadata, so vocab-only GGUF files work. Also cmd_parse_ids(), the parser of the
 * `--ids 1,403,407` option other commands take too.
 */
#include "common/err.h"
#include "common/utf8.h"
#include "workerd/cmd.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOKENIZE_USAGE   "-m MODEL [--no-bos] [--] TEXT"
#define DETOKENIZE_USAGE "-m MODEL --ids ID,ID,..."

/* What both commands read from the command line. */
struct tok_args {
    const char *model;
    const char *text; /* tokenize */
    const char *ids;  /* detokenize */
    bool no_bos;
};

/*
 * Options first, then (tokenize) exactly one TEXT; `--` ends the options so TEXT may start with
 * '-'. Returns CMD_EXIT_OK, or CMD_EXIT_FATAL after printing one line to stderr. *help is set for
 * -h/--help (usage printed to stdout).
 */
static int
parse_args(int argc, char **argv, bool detok, struct tok_args *a, bool *help)
{
    const char *name = argv[0], *usage = detok ? DETOKENIZE_USAGE : TOKENIZE_USAGE;
    int i = 1;

    memset(a, 0, sizeof(*a));
    *help = false;
    for (; i < argc; i++) {
        const char *o = argv[i];
        if (strcmp(o, "--") == 0) {
            i++;
            break;
        }
        if (o[0] != '-' || o[1] == '\0')
            break;
        if (strcmp(o, "-h") == 0 || strcmp(o, "--help") == 0) {
            printf("usage: workerd %s %s\n", name, usage);
            *help = true;
            return CMD_EXIT_OK;
        } else if (strcmp(o, "-m") == 0 || strcmp(o, "--model") == 0) {
            if (++i == argc)
                goto missing_value;
            a->model = argv[i];
        } else if (detok && strcmp(o, "--ids") == 0) {
            if (++i == argc)
                goto missing_value;
            a->ids = argv[i];
        } else if (!detok && strcmp(o, "--no-bos") == 0) {
            a->no_bos = true;
        } else {
            fprintf(stderr, "workerd %s: unknown option '%.64s' (usage: workerd %s %s)\n", name, o,
                    name, usage);
            return CMD_EXIT_FATAL;
        }
    }
    if (!detok && i < argc)
        a->text = argv[i++];
    if (i < argc) {
        fprintf(stderr, "workerd %s: unexpected argument '%.64s' (usage: workerd %s %s)\n", name,
                argv[i], name, usage);
        return CMD_EXIT_FATAL;
    }
    if (a->model == NULL || (detok ? a->ids == NULL : a->text == NULL)) {
        fprintf(stderr, "workerd %s: %s is required (usage: workerd %s %s)\n", name,
                a->model == NULL ? "-m MODEL"
                : detok          ? "--ids"
                                 : "TEXT",
                name, usage);
        return CMD_EXIT_FATAL;
    }
    return CMD_EXIT_OK;
missing_value:
    fprintf(stderr, "workerd %s: option %s needs a value\n", name, argv[i - 1]);
    return CMD_EXIT_FATAL;
}

/* Opens the model and its tokenizer; prints the error and returns CMD_EXIT_FATAL on failure. */
static int
open_vocab(const char *name, const char *model, struct gguf **g, struct tokenizer **t)
{
    char err[ERR_MSG_MAX];

    if (gguf_open(g, model, err) != ERR_OK) {
        fprintf(stderr, "workerd %s: %s\n", name, err);
        return CMD_EXIT_FATAL;
    }
    if (tokenizer_load(t, *g, err) != ERR_OK) {
        fprintf(stderr, "workerd %s: %s: %s\n", name, model, err);
        gguf_close(*g);
        return CMD_EXIT_FATAL;
    }
    return CMD_EXIT_OK;
}

/* Prints obj as one compact JSON line on stdout and releases it. */
static int
print_json(const char *name, json_t *obj)
{
    int rc = obj != NULL && json_dumpf(obj, stdout, JSON_COMPACT) == 0 && putchar('\n') != EOF &&
                     fflush(stdout) == 0
                 ? CMD_EXIT_OK
                 : CMD_EXIT_ERROR;

    if (rc != CMD_EXIT_OK)
        fprintf(stderr, "workerd %s: could not write the JSON output\n", name);
    json_decref(obj);
    return rc;
}

int
cmd_parse_ids(const char *s, int32_t **ids, size_t *n, char *err)
{
    size_t cap = 1, count = 0;
    int32_t *a;

    for (const char *p = s; *p; p++)
        cap += *p == ',';
    a = malloc(cap * sizeof(*a));
    if (a == NULL)
        return err_set(err, ERR_NOMEM, "no memory for %zu ids", cap);
    for (const char *p = s; *p != '\0';) {
        char *end;
        errno = 0;
        long v = *p >= '0' && *p <= '9' ? strtol(p, &end, 10) : -1;
        if (v < 0 || errno != 0 || v > INT32_MAX || (*end != ',' && *end != '\0') ||
            (*end == ',' && end[1] == '\0')) {
            free(a);
            return err_set(err, ERR_BAD_REQUEST,
                           "--ids: expected comma-separated token ids, got '%.40s' at item %zu", s,
                           count + 1);
        }
        a[count++] = (int32_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    *ids = a;
    *n = count;
    return ERR_OK;
}

int
cmd_tokenize(int argc, char **argv)
{
    struct tok_args a;
    struct gguf *g;
    struct tokenizer *t;
    char err[ERR_MSG_MAX];
    bool help;
    int rc = parse_args(argc, argv, false, &a, &help);

    if (rc != CMD_EXIT_OK || help)
        return rc;
    if ((rc = open_vocab(argv[0], a.model, &g, &t)) != CMD_EXIT_OK)
        return rc;

    size_t len = strlen(a.text), max = tokenizer_max_tokens(t, len), n = 0;
    bool add_bos = tokenizer_add_bos(t) && !a.no_bos;
    int32_t *ids = malloc(max * sizeof(*ids));
    int erc = ids == NULL ? err_set(err, ERR_NOMEM, "no memory for %zu ids", max)
                          : tokenizer_encode(t, a.text, len, add_bos, false, ids, max, &n, err);
    if (erc != ERR_OK) {
        fprintf(stderr, "workerd %s: %s\n", argv[0], err);
        rc = CMD_EXIT_ERROR;
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; arr != NULL && i < n; i++)
            if (json_array_append_new(arr, json_integer(ids[i])) != 0) {
                json_decref(arr);
                arr = NULL;
            }
        rc = print_json(argv[0], arr ? json_pack("{s:o}", "ids", arr) : NULL);
    }
    free(ids);
    tokenizer_free(t);
    gguf_close(g);
    return rc;
}

int
cmd_detokenize(int argc, char **argv)
{
    struct tok_args a;
    struct gguf *g;
    struct tokenizer *t;
    char err[ERR_MSG_MAX];
    int32_t *ids = NULL;
    char *text = NULL, *clean = NULL;
    size_t n, len = 0;
    bool help;
    int rc = parse_args(argc, argv, true, &a, &help);

    if (rc != CMD_EXIT_OK || help)
        return rc;
    if (cmd_parse_ids(a.ids, &ids, &n, err) != ERR_OK) {
        fprintf(stderr, "workerd %s: %s\n", argv[0], err);
        return CMD_EXIT_FATAL;
    }
    if ((rc = open_vocab(argv[0], a.model, &g, &t)) != CMD_EXIT_OK) {
        free(ids);
        return rc;
    }
    /* sized once: the first call counts the bytes */
    int erc = tokenizer_decode(t, ids, n, NULL, 0, &len, err);
    if (erc == ERR_BAD_REQUEST && len > 0) {
        text = malloc(len);
        clean = malloc(3 * len); /* each invalid byte may become U+FFFD */
        erc = text == NULL || clean == NULL
                  ? err_set(err, ERR_NOMEM, "no memory for %zu bytes of text", len)
                  : tokenizer_decode(t, ids, n, text, len, &len, err);
    }
    if (erc != ERR_OK) {
        fprintf(stderr, "workerd %s: %s\n", argv[0], err);
        rc = CMD_EXIT_FATAL;
    } else {
        size_t clen = len > 0 ? utf8_sanitize(text, len, clean, 3 * len) : 0;
        rc = print_json(argv[0], json_pack("{s:s%}", "text", clean ? clean : "", clen));
    }
    free(text);
    free(clean);
    free(ids);
    tokenizer_free(t);
    gguf_close(g);
    return rc;
}
