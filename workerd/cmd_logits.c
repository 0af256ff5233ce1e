/*
 * cmd_logits.c: `workerd logits -m MODEL --ids 1,403,407 [--top K] [-t THREADS]`: evaluates the
 * ids as one sequence in one batch (teacher-forced) and prints, per position i, one JSON line with
 * the logits after ids[0..i]: {"pos":i,"top":[[id,logit],...],"max":M,"lse":L}, top sorted by
 * logit (lower id first on a tie), lse the log-sum-exp over the vocabulary in double. The output
 * the validation tests and the acceptance checks compare with llama.cpp. Not tokenization.
 */
#include "common/err.h"
#include "common/opt.h"
#include "workerd/cmd.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOGITS_MAX_IDS 65536

struct logits_opts {
    const char *model;
    const char *ids;
    long long top;
    long long threads;
};

static int
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "workerd logits: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (usage: workerd logits -m MODEL --ids 1,403,407 [--top K] [-t THREADS])\n");
    return CMD_EXIT_FATAL;
}

static int
parse_opts(int argc, char **argv, struct logits_opts *o)
{
    char err[ERR_MSG_MAX];
    int i;

    o->top = 10;
    o->threads = sysconf(_SC_NPROCESSORS_ONLN);
    if (o->threads < 1)
        o->threads = 1;
    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (strcmp(a, "-m") != 0 && strcmp(a, "--model") != 0 && strcmp(a, "--ids") != 0 &&
            strcmp(a, "--top") != 0 && strcmp(a, "-t") != 0 && strcmp(a, "--threads") != 0)
            return usage_error("unknown option '%s'", a);
        if (v == NULL)
            return usage_error("option %s needs a value", a);
        i++;
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0)
            o->model = v;
        else if (strcmp(a, "--ids") == 0)
            o->ids = v;
        else if (strcmp(a, "--top") == 0 && opt_int(a, v, 1, 1 << 20, &o->top, err) != ERR_OK)
            return usage_error("%s", err);
        else if ((strcmp(a, "-t") == 0 || strcmp(a, "--threads") == 0) &&
                 opt_int(a, v, 1, 1024, &o->threads, err) != ERR_OK)
            return usage_error("%s", err);
    }
    if (i < argc)
        return usage_error("unexpected argument '%s'", argv[i]);
    if (o->model == NULL)
        return usage_error("%s", "-m MODEL is required");
    if (o->ids == NULL)
        return usage_error("%s", "--ids is required");
    return CMD_EXIT_OK;
}

/* Sorts top entries: higher logit first, then lower id. */
struct top_entry {
    int32_t id;
    float logit;
};

static int
top_cmp(const void *a, const void *b)
{
    const struct top_entry *x = a, *y = b;

    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

/* Prints one position's line; top is scratch of k entries. */
static int
print_position(size_t pos, const float *l, uint32_t n_vocab, struct top_entry *top, uint32_t k)
{
    uint32_t n = 0;
    float max = -INFINITY;
    double sum = 0.0;
    json_t *o, *arr;
    char *s;

    for (uint32_t i = 0; i < n_vocab; i++) {
        struct top_entry e = {(int32_t)i, l[i]};

        max = l[i] > max ? l[i] : max;
        if (n < k) {
            top[n++] = e;
            if (n == k)
                qsort(top, n, sizeof(*top), top_cmp);
        } else if (top_cmp(&e, &top[k - 1]) < 0) {
            uint32_t j = k - 1; /* insert, keeping the order */
            while (j > 0 && top_cmp(&e, &top[j - 1]) < 0) {
                top[j] = top[j - 1];
                j--;
            }
            top[j] = e;
        }
    }
    if (n < k)
        qsort(top, n, sizeof(*top), top_cmp);
    for (uint32_t i = 0; i < n_vocab; i++)
        sum += exp((double)l[i] - (double)max);
    o = json_object();
    arr = json_array();
    for (uint32_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("[i,f]", top[i].id, (double)top[i].logit));
    json_object_set_new(o, "pos", json_integer((json_int_t)pos));
    json_object_set_new(o, "top", arr);
    json_object_set_new(o, "max", json_real(max));
    json_object_set_new(o, "lse", json_real((double)max + log(sum)));
    s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (s == NULL)
        return -1;
    puts(s);
    free(s);
    return 0;
}

int
cmd_logits(int argc, char **argv)
{
    struct logits_opts o = {0};
    char err[ERR_MSG_MAX];
    struct gguf *g = NULL;
    struct model *m = NULL;
    struct context *c = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    struct top_entry *top = NULL;
    int rc, status = CMD_EXIT_ERROR;
    size_t n;

    if ((rc = parse_opts(argc, argv, &o)) != CMD_EXIT_OK)
        return rc;
    if (cmd_parse_ids(o.ids, &ids, &n, err) != ERR_OK)
        return usage_error("%s", err);
    if (n == 0 || n > LOGITS_MAX_IDS) {
        free(ids);
        return usage_error("--ids: %s", n == 0 ? "no ids" : "more than 65536 ids");
    }
    if ((rc = gguf_open(&g, o.model, err)) != ERR_OK || (rc = model_load(&m, g, err)) != ERR_OK) {
        fprintf(stderr, "workerd logits: %s: %s\n", o.model, err);
        status = CMD_EXIT_FATAL;
        goto out;
    }
    const struct model_config *cf = model_config(m);
    uint32_t n_ctx = (uint32_t)n;
    uint32_t k = o.top < (long long)cf->n_vocab ? (uint32_t)o.top : cf->n_vocab;
    logits = malloc((size_t)n * cf->n_vocab * sizeof(float));
    top = malloc(k * sizeof(*top));
    if (logits == NULL || top == NULL) {
        fprintf(stderr, "workerd logits: out of memory for %zu positions\n", n);
        goto out;
    }
    if ((rc = context_new(&c, m, 1, n_ctx, (uint32_t)o.threads, err)) != ERR_OK ||
        (rc = context_eval(c, 0, ids, n, true, logits, err)) != ERR_OK) {
        fprintf(stderr, "workerd logits: %s\n", err);
        status = rc == ERR_BAD_REQUEST ? CMD_EXIT_FATAL : CMD_EXIT_ERROR;
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        if (print_position(i, logits + (size_t)i * cf->n_vocab, cf->n_vocab, top, k) != 0) {
            fprintf(stderr, "workerd logits: out of memory\n");
            goto out;
        }
    status = fflush(stdout) == 0 ? CMD_EXIT_OK : CMD_EXIT_ERROR;
out:
    context_free(c);
    model_free(m);
    gguf_close(g);
    free(ids);
    free(logits);
    free(top);
    return status;
}
