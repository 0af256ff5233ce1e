/*
 * cmd_inspect.c: `workerd inspect -m MODEL [--json]`: what a GGUF file holds, as the reader sees
 * it: header numbers, every metadata KV (long arrays summarised by their first elements), the
 * architecture's hyperparameters, and each tensor's name, type, shape (ne0 first), offset and size.
 * Text for people, or one JSON object (jansson) for scripts. It opens the file and reads the header
 * only; it does not load the model (a type llorch cannot compute with is listed, not refused).
 */
#include "common/err.h"
#include "workerd/cmd.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/types.h"

#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARRAY_HEAD   5  /* elements shown of a long array */
#define ARRAY_FULL   8  /* arrays up to this long are shown whole */
#define STRING_SHOWN 80 /* bytes of a string value shown in text */

/*
 * The hyperparameters shown, as `<arch>.<suffix>` keys, with their labels and JSON names; the
 * `always` ones are shown as absent when missing, the others only when present.
 */
static const struct hparam {
    const char *suffix;
    const char *label;
    const char *json;
    bool always;
} hparams[] = {
    {"context_length", "context length", "context_length", true},
    {"embedding_length", "embedding length", "embedding_length", true},
    {"block_count", "block count", "block_count", true},
    {"feed_forward_length", "feed-forward length", "feed_forward_length", true},
    {"attention.head_count", "head count", "head_count", true},
    {"attention.head_count_kv", "head count kv", "head_count_kv", true},
    {"attention.key_length", "key length", "key_length", false},
    {"attention.value_length", "value length", "value_length", false},
    {"rope.dimension_count", "rope dimensions", "rope_dimension_count", true},
    {"rope.freq_base", "rope freq base", "rope_freq_base", true},
    {"attention.layer_norm_rms_epsilon", "rms norm epsilon", "rms_norm_epsilon", true},
    {"attention.layer_norm_epsilon", "layer norm epsilon", "layer_norm_epsilon", false},
    {"vocab_size", "vocab size (arch key)", "vocab_size_key", false},
};

/* Upper-case name of a value type ("UINT32"), as GGUF dumps print it. */
static void
vtype_upper(enum gguf_vtype t, char *out, size_t cap)
{
    const char *s = gguf_vtype_name(t);
    size_t i;

    for (i = 0; s[i] != '\0' && i + 1 < cap; i++)
        out[i] = (char)(s[i] >= 'a' && s[i] <= 'z' ? s[i] - 'a' + 'A' : s[i]);
    out[i] = '\0';
}

/* ---- text ---- */

/* A string, quoted and escaped, cut after max bytes (0: never). */
static void
print_str(FILE *f, const char *s, uint64_t len, uint64_t max)
{
    uint64_t n = max != 0 && len > max ? max : len;

    fputc('"', f);
    for (uint64_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
    if (n < len)
        fprintf(f, "... (%llu bytes)", (unsigned long long)len);
}

static void
print_arr(FILE *f, const struct gguf_arr *a)
{
    char tname[16];
    uint64_t shown = a->n <= ARRAY_FULL ? a->n : ARRAY_HEAD;

    vtype_upper(a->type, tname, sizeof(tname));
    fprintf(f, "[ARRAY %s x %llu] [", tname, (unsigned long long)a->n);
    for (uint64_t i = 0; i < shown; i++) {
        if (i > 0)
            fputs(", ", f);
        if (a->type == GGUF_VTYPE_STRING)
            print_str(f, a->strs[i].data, a->strs[i].len, STRING_SHOWN);
        else if (a->type == GGUF_VTYPE_ARRAY)
            print_arr(f, &a->arrs[i]);
        else if (a->type == GGUF_VTYPE_FLOAT32 || a->type == GGUF_VTYPE_FLOAT64)
            fprintf(f, "%.9g", gguf_arr_get_float(a, i));
        else if (a->type == GGUF_VTYPE_BOOL)
            fputs(gguf_arr_get_int(a, i) ? "true" : "false", f);
        else if (a->type == GGUF_VTYPE_UINT64)
            fprintf(f, "%llu", (unsigned long long)gguf_arr_get_int(a, i));
        else
            fprintf(f, "%lld", (long long)gguf_arr_get_int(a, i));
    }
    fputs(shown < a->n ? ", ...]" : "]", f);
}

static void
print_value(FILE *f, const struct gguf_kv *kv)
{
    switch (kv->type) {
    case GGUF_VTYPE_STRING:
        print_str(f, kv->v.str.data, kv->v.str.len, STRING_SHOWN);
        break;
    case GGUF_VTYPE_ARRAY:
        print_arr(f, &kv->v.arr);
        break;
    case GGUF_VTYPE_FLOAT32:
        fprintf(f, "%.9g", kv->v.f);
        break;
    case GGUF_VTYPE_FLOAT64:
        fprintf(f, "%.17g", kv->v.f);
        break;
    case GGUF_VTYPE_BOOL:
        fputs(kv->v.u ? "true" : "false", f);
        break;
    case GGUF_VTYPE_INT8:
    case GGUF_VTYPE_INT16:
    case GGUF_VTYPE_INT32:
    case GGUF_VTYPE_INT64:
        fprintf(f, "%lld", (long long)kv->v.i);
        break;
    default:
        fprintf(f, "%llu", (unsigned long long)kv->v.u);
        break;
    }
}

/* Vocabulary size: the length of tokenizer.ggml.tokens, or -1 when absent. */
static long long
vocab_size(const struct gguf *g)
{
    const struct gguf_kv *kv = gguf_find_kv(g, "tokenizer.ggml.tokens");

    return kv != NULL && kv->type == GGUF_VTYPE_ARRAY ? (long long)kv->v.arr.n : -1;
}

static void
print_text(FILE *f, const char *path, const struct gguf *g)
{
    struct gguf_str arch = {0, ""};
    char key[256];
    long long vocab = vocab_size(g);

    fprintf(f, "file: %s\nsize: %zu bytes\n", path, gguf_file_size(g));
    fprintf(f, "gguf version: %u\nalignment: %u\ndata offset: %llu\n", gguf_version(g),
            gguf_alignment(g), (unsigned long long)gguf_data_offset(g));
    fprintf(f, "tensors: %zu\nkv: %zu\n", gguf_n_tensors(g), gguf_n_kv(g));

    fprintf(f, "\nmetadata:\n");
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);

        fprintf(f, "  %s (%s) = ", kv->key, gguf_vtype_name(kv->type));
        print_value(f, kv);
        fputc('\n', f);
    }

    gguf_get_str(g, "general.architecture", &arch, NULL);
    fprintf(f, "\nhyperparameters (architecture %.*s):\n", (int)arch.len, arch.data);
    for (size_t i = 0; i < sizeof(hparams) / sizeof(hparams[0]); i++) {
        const struct gguf_kv *kv;

        snprintf(key, sizeof(key), "%.*s.%s", (int)arch.len, arch.data, hparams[i].suffix);
        kv = gguf_find_kv(g, key);
        if (kv == NULL && !hparams[i].always)
            continue;
        fprintf(f, "  %s: ", hparams[i].label);
        if (kv != NULL)
            print_value(f, kv);
        else
            fputs("(absent)", f);
        fputc('\n', f);
    }
    if (vocab >= 0)
        fprintf(f, "  vocab size (tokens): %lld\n", vocab);

    fprintf(f, "\ntensors (name, type, shape ne0..., offset in data, bytes):\n");
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        const struct type_traits *tt = type_traits(t->type);
        char shape[128];
        int n = 0;

        for (uint32_t d = 0; d < t->n_dims; d++)
            n += snprintf(shape + n, sizeof(shape) - (size_t)n, "%s%lld", d ? ", " : "",
                          (long long)t->ne[d]);
        fprintf(f, "  %-36s %-7s [%s] off=%llu size=%zu%s\n", t->name, tt->name, shape,
                (unsigned long long)t->offset, t->nbytes, tt->supported ? "" : " (unsupported)");
    }
}

/* ---- JSON ---- */

/* A JSON string of arbitrary bytes: bytes that are not valid UTF-8 become '?'. */
static json_t *
json_bytes(const char *s, uint64_t len)
{
    json_t *j = json_stringn(s, (size_t)len);
    char *copy;

    if (j != NULL)
        return j;
    copy = malloc(len ? (size_t)len : 1);
    if (copy == NULL)
        return NULL;
    for (uint64_t i = 0; i < len; i++)
        copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
    j = json_stringn(copy, (size_t)len);
    free(copy);
    return j;
}

/* A number for an unsigned value: an integer, or a string above INT64_MAX (jansson's limit). */
static json_t *
json_u64(uint64_t u)
{
    char buf[24];

    if (u <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)u);
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)u);
    return json_string(buf);
}

/* NaN and infinities have no JSON form: null. */
static json_t *
json_float(double x)
{
    json_t *j = json_real(x);

    return j != NULL ? j : json_null();
}

/* {"type": "array", "elem_type", "n", "head": [first elements]} */
static json_t *
json_arr(const struct gguf_arr *a)
{
    uint64_t shown = a->n <= ARRAY_FULL ? a->n : ARRAY_HEAD;
    json_t *head = json_array();

    for (uint64_t i = 0; i < shown; i++) {
        json_t *e;

        if (a->type == GGUF_VTYPE_STRING)
            e = json_bytes(a->strs[i].data, a->strs[i].len);
        else if (a->type == GGUF_VTYPE_ARRAY)
            e = json_arr(&a->arrs[i]);
        else if (a->type == GGUF_VTYPE_FLOAT32 || a->type == GGUF_VTYPE_FLOAT64)
            e = json_float(gguf_arr_get_float(a, i));
        else if (a->type == GGUF_VTYPE_BOOL)
            e = json_boolean(gguf_arr_get_int(a, i));
        else if (a->type == GGUF_VTYPE_UINT64)
            e = json_u64((uint64_t)gguf_arr_get_int(a, i));
        else
            e = json_integer(gguf_arr_get_int(a, i));
        json_array_append_new(head, e);
    }
    return json_pack("{s:s, s:s, s:o, s:o}", "type", "array", "elem_type", gguf_vtype_name(a->type),
                     "n", json_u64(a->n), "head", head);
}

static json_t *
json_value(const struct gguf_kv *kv)
{
    switch (kv->type) {
    case GGUF_VTYPE_STRING:
        return json_bytes(kv->v.str.data, kv->v.str.len);
    case GGUF_VTYPE_ARRAY:
        return json_arr(&kv->v.arr);
    case GGUF_VTYPE_FLOAT32:
    case GGUF_VTYPE_FLOAT64:
        return json_float(kv->v.f);
    case GGUF_VTYPE_BOOL:
        return json_boolean(kv->v.u);
    case GGUF_VTYPE_INT8:
    case GGUF_VTYPE_INT16:
    case GGUF_VTYPE_INT32:
    case GGUF_VTYPE_INT64:
        return json_integer(kv->v.i);
    default:
        return json_u64(kv->v.u);
    }
}

static json_t *
build_json(const char *path, const struct gguf *g)
{
    struct gguf_str arch = {0, ""};
    json_t *meta = json_array(), *hp = json_object(), *tensors = json_array();
    long long vocab = vocab_size(g);
    char key[256];

    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);

        json_array_append_new(meta, json_pack("{s:s, s:s, s:o}", "key", kv->key, "type",
                                              gguf_vtype_name(kv->type), "value", json_value(kv)));
    }
    gguf_get_str(g, "general.architecture", &arch, NULL);
    json_object_set_new(hp, "architecture", json_bytes(arch.data, arch.len));
    for (size_t i = 0; i < sizeof(hparams) / sizeof(hparams[0]); i++) {
        const struct gguf_kv *kv;

        snprintf(key, sizeof(key), "%.*s.%s", (int)arch.len, arch.data, hparams[i].suffix);
        kv = gguf_find_kv(g, key);
        if (kv != NULL || hparams[i].always)
            json_object_set_new(hp, hparams[i].json, kv ? json_value(kv) : json_null());
    }
    if (vocab >= 0)
        json_object_set_new(hp, "vocab_size", json_integer(vocab));
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        const struct type_traits *tt = type_traits(t->type);
        json_t *shape = json_array();

        for (uint32_t d = 0; d < t->n_dims; d++)
            json_array_append_new(shape, json_integer(t->ne[d]));
        json_array_append_new(tensors,
                              json_pack("{s:s, s:s, s:i, s:b, s:o, s:o, s:o}", "name", t->name,
                                        "type", tt->name, "type_id", (int)t->type, "supported",
                                        tt->supported, "shape", shape, "offset",
                                        json_u64(t->offset), "size", json_u64(t->nbytes)));
    }
    return json_pack("{s:s, s:I, s:i, s:i, s:I, s:I, s:I, s:o, s:o, s:o}", "file", path, "size",
                     (json_int_t)gguf_file_size(g), "version", (int)gguf_version(g), "alignment",
                     (int)gguf_alignment(g), "data_offset", (json_int_t)gguf_data_offset(g),
                     "n_tensors", (json_int_t)gguf_n_tensors(g), "n_kv", (json_int_t)gguf_n_kv(g),
                     "metadata", meta, "hyperparameters", hp, "tensors", tensors);
}

/* ---- command ---- */

static void
usage(FILE *f)
{
    fprintf(f, "usage: workerd inspect -m MODEL [--json]\n"
               "  -m, --model FILE   the GGUF file\n"
               "  --json             one JSON object instead of text\n");
}

int
cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char err[ERR_MSG_MAX];
    const char *model = NULL;
    bool as_json = false;
    struct gguf *g;
    int c, rv;

    optind = 1;
    opterr = 0; /* one line of our own instead of getopt's */
    while ((c = getopt_long(argc, argv, "+:m:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            model = optarg;
            break;
        case 'j':
            as_json = true;
            break;
        case 'h':
            usage(stdout);
            return CMD_EXIT_OK;
        case ':':
            fprintf(stderr, "workerd inspect: option %s needs a value\n", argv[optind - 1]);
            return CMD_EXIT_FATAL;
        default:
            fprintf(stderr, "workerd inspect: unknown option %s (see workerd inspect --help)\n",
                    argv[optind - 1]);
            return CMD_EXIT_FATAL;
        }
    }
    if (model == NULL || optind != argc) {
        fprintf(stderr, "workerd inspect: %s (see workerd inspect --help)\n",
                model == NULL ? "-m MODEL is required" : "unexpected argument");
        return CMD_EXIT_FATAL;
    }
    rv = gguf_open(&g, model, err);
    if (rv != ERR_OK) {
        fprintf(stderr, "workerd inspect: %s: %s: %s\n", model, err_str(rv), err);
        return CMD_EXIT_FATAL;
    }
    if (as_json) {
        json_t *j = build_json(model, g);

        rv = j != NULL ? json_dumpf(j, stdout, JSON_COMPACT) : -1;
        json_decref(j);
        if (rv == 0)
            rv = fputc('\n', stdout) == EOF ? -1 : 0;
    } else {
        print_text(stdout, model, g);
        rv = 0;
    }
    gguf_close(g);
    if (rv != 0 || fflush(stdout) != 0) {
        fprintf(stderr, "workerd inspect: %s: could not write the output\n", model);
        return CMD_EXIT_ERROR;
    }
    return CMD_EXIT_OK;
}
