/*
 * test_gguf.c: tests of the GGUF reader (workerd/engine/gguf.h). (a) Every .gguf under
 * ../shared/models opens and reads what the .meta.txt beside it (a gguf-py dump) says: header
 * numbers, every KV value or array summary, every tensor's name, type, shape and offset. (b) A
 * corpus of broken files made here with the writer (tests/gguf_write.h): truncations at every byte,
 * huge counts and lengths, bad magic and versions, bad alignments, dims, types and offsets; each
 * must give the right error code and a message naming the key or tensor at fault. (c) Types llorch
 * cannot compute with still open and list. Also the typed lookups and gguf_open's own errors.
 */
#include "common/err.h"
#include "tests/gguf_write.h"
#include "tests/harness.h"
#include "tests/synth_rand.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/types.h"

#include <ctype.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- (a) the shared models against their .meta.txt ---- */

/*
 * Decodes a Python str repr ('...' or "...", as gguf-py's dump prints values) into out (UTF-8).
 * Returns the length, or -1 when s is not a well-formed repr.
 */
static long
parse_pyrepr(const char *s, char *out, size_t cap)
{
    char q = s[0];
    size_t n = 0;

    if (q != '\'' && q != '"')
        return -1;
    for (s++; *s != q; s++) {
        unsigned long cp;
        int digits = 0;

        if (*s == '\0' || n + 4 >= cap)
            return -1;
        if (*s != '\\') {
            out[n++] = *s;
            continue;
        }
        s++;
        switch (*s) {
        case 'n':
            out[n++] = '\n';
            continue;
        case 't':
            out[n++] = '\t';
            continue;
        case 'r':
            out[n++] = '\r';
            continue;
        case '\\':
        case '\'':
        case '"':
            out[n++] = *s;
            continue;
        case 'x':
            digits = 2;
            break;
        case 'u':
            digits = 4;
            break;
        case 'U':
            digits = 8;
            break;
        default:
            return -1;
        }
        cp = 0;
        for (int i = 0; i < digits; i++) {
            char c = *++s;

            if (!isxdigit((unsigned char)c))
                return -1;
            cp = cp * 16 +
                 (unsigned long)(isdigit((unsigned char)c) ? c - '0' : tolower(c) - 'a' + 10);
        }
        if (cp < 0x80) {
            out[n++] = (char)cp;
        } else if (cp < 0x800) {
            out[n++] = (char)(0xc0 | cp >> 6);
            out[n++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[n++] = (char)(0xe0 | cp >> 12);
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[n++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[n++] = (char)(0xf0 | cp >> 18);
            out[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            out[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[n++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return s[1] == '\0' ? (long)n : -1;
}

static void
test_pyrepr(void)
{
    char out[64];

    CHECK(parse_pyrepr("'llama'", out, sizeof(out)) == 5 && memcmp(out, "llama", 5) == 0);
    CHECK(parse_pyrepr("\"it's\\n\"", out, sizeof(out)) == 5 && memcmp(out, "it's\n", 5) == 0);
    CHECK(parse_pyrepr("'\\x00\\u2581\\\\'", out, sizeof(out)) == 5);
    CHECK(memcmp(out, "\0\xe2\x96\x81\\", 5) == 0);
    CHECK(parse_pyrepr("'open", out, sizeof(out)) == -1);
    CHECK(parse_pyrepr("'a' b", out, sizeof(out)) == -1);
}

/* Checks one "  key = value" line of the meta.txt against the KV read; false on mismatch. */
static bool
kv_matches(const struct gguf_kv *kv, const char *val, char *why, size_t cap)
{
    static char decoded[4096];
    char tname[16], want[2];
    unsigned long long count;
    char *end;
    int used = 0;
    long n;

    switch (kv->type) {
    case GGUF_VTYPE_ARRAY:
        /* "[ARRAY UINT32 x 5]": the type upper-case */
        snprintf(why, cap, "read an array of %llu %s", (unsigned long long)kv->v.arr.n,
                 gguf_vtype_name(kv->v.arr.type));
        return sscanf(val, "[ARRAY %15[A-Z0-9] x %llu%1[]]%n", tname, &count, want, &used) == 3 &&
               val[used] == '\0' && strcasecmp(tname, gguf_vtype_name(kv->v.arr.type)) == 0 &&
               count == kv->v.arr.n;
    case GGUF_VTYPE_STRING:
        n = parse_pyrepr(val, decoded, sizeof(decoded));
        snprintf(why, cap, "read a string of %llu bytes '%.40s'", (unsigned long long)kv->v.str.len,
                 kv->v.str.data);
        if (n < 0)
            return false;
        if ((uint64_t)n == kv->v.str.len && memcmp(decoded, kv->v.str.data, (size_t)n) == 0)
            return true;
        /* the dump cuts long strings and appends "..." */
        return n > 3 && memcmp(decoded + n - 3, "...", 3) == 0 && (uint64_t)n - 3 < kv->v.str.len &&
               memcmp(decoded, kv->v.str.data, (size_t)n - 3) == 0;
    case GGUF_VTYPE_BOOL:
        snprintf(why, cap, "read bool %d", (int)kv->v.u);
        return strcmp(val, kv->v.u ? "True" : "False") == 0;
    case GGUF_VTYPE_FLOAT32:
    case GGUF_VTYPE_FLOAT64:
        snprintf(why, cap, "read %.17g", kv->v.f);
        return strtod(val, &end) == kv->v.f && *end == '\0';
    case GGUF_VTYPE_INT8:
    case GGUF_VTYPE_INT16:
    case GGUF_VTYPE_INT32:
    case GGUF_VTYPE_INT64:
        snprintf(why, cap, "read %lld", (long long)kv->v.i);
        return strtoll(val, &end, 10) == kv->v.i && *end == '\0';
    default:
        snprintf(why, cap, "read %llu", (unsigned long long)kv->v.u);
        return strtoull(val, &end, 10) == kv->v.u && *end == '\0';
    }
}

/* Checks one "  name TYPE [ne0, ne1] off=N" line against the tensor of that name. */
static void
check_tensor_line(const struct gguf *g, const char *file, const char *line)
{
    char name[256], type[16];
    const struct gguf_tensor *t;
    const struct type_traits *tt;
    const char *p;
    unsigned long long off;
    uint32_t d = 0;

    CHECKF(sscanf(line, " %255s %15s", name, type) == 2, "%s: bad tensor line '%s'", file, line);
    t = gguf_find_tensor(g, name);
    CHECKF(t != NULL, "%s: tensor %s listed in meta.txt not found", file, name);
    tt = type_traits(t->type);
    CHECKF(tt != NULL && strcasecmp(tt->name, type) == 0, "%s: tensor %s: type %u, meta says %s",
           file, name, t->type, type);
    p = strchr(line, '[');
    CHECKF(p != NULL, "%s: bad tensor line '%s'", file, line);
    for (p++; *p != ']'; d++) {
        char *end;
        long long ne = strtoll(p, &end, 10);

        CHECKF(end != p && d < GGUF_MAX_DIMS, "%s: bad shape in '%s'", file, line);
        CHECKF(t->ne[d] == ne, "%s: tensor %s: ne[%u] = %lld, meta says %lld", file, name, d,
               (long long)t->ne[d], ne);
        p = end;
        if (*p == ',')
            p += 2;
    }
    CHECKF(t->n_dims == d, "%s: tensor %s: %u dims, meta says %u", file, name, t->n_dims, d);
    CHECKF(sscanf(p, "] off=%llu", &off) == 1, "%s: bad offset in '%s'", file, line);
    CHECKF(t->offset == off, "%s: tensor %s: offset %llu, meta says %llu", file, name,
           (unsigned long long)t->offset, off);
}

/* Opens one model and compares everything its .meta.txt states. */
static void
check_model(const char *path)
{
    char meta[600], line[8192], err[ERR_MSG_MAX] = "", why[128];
    enum { HEAD, KVS, TENSORS } section = HEAD;
    size_t n_kv_lines = 0, n_tensor_lines = 0, n_tensors, n_kv;
    unsigned long long size, data_offset, bytes, vocab;
    unsigned version, alignment;
    bool saw_header = false;
    struct gguf *g;
    FILE *f;
    int rv;

    snprintf(meta, sizeof(meta), "%.*s.meta.txt", (int)(strlen(path) - 5), path);
    f = fopen(meta, "r");
    CHECKF(f != NULL, "%s has no .meta.txt beside it", path);
    rv = gguf_open(&g, path, err);
    if (rv != ERR_OK) {
        fclose(f);
        CHECKF(false, "%s: %s: %s", path, err_str(rv), err);
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strcmp(line, "all scalar kv:") == 0) {
            section = KVS;
        } else if (strncmp(line, "tensors (", 9) == 0) {
            section = TENSORS;
        } else if (line[0] == '\0') {
            section = HEAD;
        } else if (section == HEAD) {
            if (sscanf(line, "size: %llu bytes", &size) == 1)
                CHECKF(gguf_file_size(g) == size, "%s: size %zu, meta %llu", path,
                       gguf_file_size(g), size);
            if (sscanf(line,
                       "gguf version: %u, tensors: %zu, kv: %zu, alignment: %u, data offset: %llu",
                       &version, &n_tensors, &n_kv, &alignment, &data_offset) == 5) {
                saw_header = true;
                CHECKF(
                    gguf_version(g) == version && gguf_n_tensors(g) == n_tensors &&
                        gguf_n_kv(g) == n_kv && gguf_alignment(g) == alignment &&
                        gguf_data_offset(g) == data_offset,
                    "%s: read v%u, %zu tensors, %zu kv, alignment %u, data offset %llu; meta: %s",
                    path, gguf_version(g), gguf_n_tensors(g), gguf_n_kv(g), gguf_alignment(g),
                    (unsigned long long)gguf_data_offset(g), line);
            }
            if (sscanf(line, "tensor data bytes: %llu", &bytes) == 1) {
                unsigned long long sum = 0;

                for (size_t i = 0; i < gguf_n_tensors(g); i++)
                    sum += gguf_tensor_at(g, i)->nbytes;
                CHECKF(sum == bytes, "%s: tensor bytes %llu, meta %llu", path, sum, bytes);
            }
            if (sscanf(line, "vocab size (len tokenizer.ggml.tokens): %llu", &vocab) == 1) {
                const struct gguf_arr *a;

                CHECKF(gguf_get_arr(g, "tokenizer.ggml.tokens", &a, err) == ERR_OK && a->n == vocab,
                       "%s: tokenizer.ggml.tokens: %s", path, err);
            }
        } else if (section == KVS) {
            char *eq = strstr(line, " = ");
            const struct gguf_kv *kv;

            CHECKF(eq != NULL && strncmp(line, "  ", 2) == 0, "%s: bad kv line '%s'", meta, line);
            *eq = '\0';
            if (strncmp(line + 2, "GGUF.", 5) == 0)
                continue; /* version and counts, checked above */
            kv = gguf_find_kv(g, line + 2);
            CHECKF(kv != NULL, "%s: key %s not found", path, line + 2);
            CHECKF(kv_matches(kv, eq + 3, why, sizeof(why)), "%s: key %s: %s, meta says %s", path,
                   line + 2, why, eq + 3);
            n_kv_lines++;
        } else {
            check_tensor_line(g, path, line);
            n_tensor_lines++;
        }
    }
    fclose(f);
    CHECKF(saw_header, "%s: no header line", meta);
    CHECKF(n_kv_lines == gguf_n_kv(g), "%s: %zu kv lines for %zu keys", path, n_kv_lines,
           gguf_n_kv(g));
    CHECKF(n_tensor_lines == gguf_n_tensors(g), "%s: %zu tensor lines for %zu tensors", path,
           n_tensor_lines, gguf_n_tensors(g));
    gguf_close(g);
}

static char **model_paths;
static size_t n_model_paths;

static int
collect_gguf(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    size_t n = strlen(path);
    char **p;

    (void)st;
    (void)ftw;
    if (flag != FTW_F || n < 5 || strcmp(path + n - 5, ".gguf") != 0)
        return 0;
    p = realloc(model_paths, (n_model_paths + 1) * sizeof(*p));
    if (p == NULL)
        return 1;
    model_paths = p;
    model_paths[n_model_paths] = strdup(path);
    return model_paths[n_model_paths++] == NULL;
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
free_model_paths(void)
{
    for (size_t i = 0; i < n_model_paths; i++)
        free(model_paths[i]);
    free(model_paths);
    model_paths = NULL;
    n_model_paths = 0;
}

static void
test_shared_models_match_meta(void)
{
    char dir[512];
    size_t n_vocab = 0, n_small = 0, n_derived = 0;

    if (!harness_shared(dir, sizeof(dir), "models"))
        return;
    CHECK(nftw(dir, collect_gguf, 16, FTW_PHYS) == 0);
    qsort(model_paths, n_model_paths, sizeof(*model_paths), cmp_str);
    for (size_t i = 0; i < n_model_paths; i++) {
        n_vocab += strstr(model_paths[i], "/vocab/") != NULL;
        n_small += strstr(model_paths[i], "/small/") != NULL;
        n_derived += strstr(model_paths[i], "/derived/") != NULL;
        check_model(model_paths[i]);
    }
    printf("  %zu models checked (%zu vocab-only, %zu small, %zu derived)\n", n_model_paths,
           n_vocab, n_small, n_derived);
    free_model_paths();
    CHECKF(n_vocab >= 10 && n_small >= 20 && n_derived >= 4,
           "found %zu vocab, %zu small, %zu derived", n_vocab, n_small, n_derived);
}

/* ---- (b) broken files ---- */

struct bytes {
    uint8_t *p;
    size_t n;
};

/* The valid file the mutations start from, and where its parts are. */
struct base {
    struct bytes b;
    uint64_t kv[5];    /* file offset of each KV */
    uint64_t ti[3];    /* file offset of each tensor info */
    uint64_t ti_end;   /* end of the tensor infos */
    uint64_t data;     /* data section */
    uint64_t data_end; /* end of the last tensor's bytes */
};

static const char *const base_keys[5] = {"general.architecture", "general.alignment",
                                         "tokenizer.ggml.tokens", "llama.block_count",
                                         "tokenizer.ggml.scores"};
static const char *const base_tensors[3] = {"token_embd.weight", "blk.0.attn_q.weight",
                                            "output_norm.weight"};

static struct bytes
finish(struct gguf_writer *w)
{
    struct bytes b = {0};
    char err[ERR_MSG_MAX];

    if (gguf_writer_finish(w, err) != ERR_OK) {
        fprintf(stderr, "writer: %s\n", err);
        abort();
    }
    b.p = gguf_writer_take(w, &b.n);
    gguf_writer_free(w);
    return b;
}

static struct gguf_writer *
new_writer(void)
{
    struct gguf_writer *w;
    char err[ERR_MSG_MAX];

    if (gguf_writer_new_mem(&w, err) != ERR_OK)
        abort();
    return w;
}

static struct base
make_base(void)
{
    static const char *const toks[] = {"a", "bc", "def"};
    static const float scores[] = {0, -1, -2};
    struct gguf_writer *w = new_writer();
    struct base s;

    s.kv[0] = gguf_writer_kv_pos(w);
    gguf_writer_add_str(w, base_keys[0], "llama");
    s.kv[1] = gguf_writer_kv_pos(w);
    gguf_writer_add_u32(w, base_keys[1], 32);
    s.kv[2] = gguf_writer_kv_pos(w);
    gguf_writer_add_arr_str(w, base_keys[2], toks, 3);
    s.kv[3] = gguf_writer_kv_pos(w);
    gguf_writer_add_u32(w, base_keys[3], 1);
    s.kv[4] = gguf_writer_kv_pos(w);
    gguf_writer_add_arr(w, base_keys[4], GGUF_VTYPE_FLOAT32, scores, 3);
    s.ti[0] = gguf_writer_tensor_pos(w);
    gguf_writer_add_tensor(w, base_tensors[0], TYPE_F32, 2, (int64_t[]){8, 3});
    s.ti[1] = gguf_writer_tensor_pos(w);
    gguf_writer_add_tensor(w, base_tensors[1], TYPE_Q4_0, 2, (int64_t[]){32, 2});
    s.ti[2] = gguf_writer_tensor_pos(w);
    gguf_writer_add_tensor(w, base_tensors[2], TYPE_F32, 1, (int64_t[]){8});
    s.ti_end = gguf_writer_tensor_pos(w);
    s.data = gguf_writer_data_offset(w);
    s.data_end = s.data + 96 + 64 + 32; /* 96 bytes, 36 padded to 64, 32 */
    s.b = finish(w);
    return s;
}

static void
put_u32(struct bytes *b, uint64_t off, uint32_t v)
{
    memcpy(b->p + off, &v, 4);
}

static void
put_u64(struct bytes *b, uint64_t off, uint64_t v)
{
    memcpy(b->p + off, &v, 8);
}

/* Offsets inside the base file. */
static uint64_t
kv_value(const struct base *s, int i) /* after key and type */
{
    return s->kv[i] + 8 + strlen(base_keys[i]) + 4;
}

static uint64_t
ti_dims(const struct base *s, int j) /* the n_dims field */
{
    return s->ti[j] + 8 + strlen(base_tensors[j]);
}

static uint64_t
ti_type(const struct base *s, int j, uint32_t n_dims)
{
    return ti_dims(s, j) + 4 + 8 * n_dims;
}

/*
 * Opens a copy of the first n bytes of b in a buffer of exactly that size (so ASan sees any read
 * past it) and checks the outcome: rv, and every non-NULL substring present in the message.
 */
static bool
open_expect(const struct bytes *b, size_t n, int want, const char *sub1, const char *sub2,
            char *err)
{
    uint8_t *copy = malloc(n ? n : 1);
    struct gguf *g = NULL;
    int rv;

    if (copy == NULL)
        abort();
    memcpy(copy, b->p, n);
    err[0] = '\0';
    rv = gguf_open_buffer(&g, copy, n, err);
    gguf_close(g);
    free(copy);
    if (rv != want) {
        char tmp[ERR_MSG_MAX];

        snprintf(tmp, sizeof(tmp), "%s", err);
        snprintf(err, ERR_MSG_MAX, "got %s (%.180s), want %s", err_str(rv), tmp, err_str(want));
        return false;
    }
    if (want == ERR_OK)
        return true;
    return err[0] != '\0' && (sub1 == NULL || strstr(err, sub1) != NULL) &&
           (sub2 == NULL || strstr(err, sub2) != NULL);
}

#define EXPECT(b, want, sub1, sub2)                                                                \
    do {                                                                                           \
        char e_[ERR_MSG_MAX];                                                                      \
        CHECKF(open_expect((b), (b)->n, (want), (sub1), (sub2), e_), "message: %s", e_);           \
    } while (0)

static void
test_base_is_valid(void)
{
    struct base s = make_base();

    EXPECT(&s.b, ERR_OK, NULL, NULL);
    CHECK(s.b.n == s.data_end);
    free(s.b.p);
}

/* Every truncation of the base file before its last tensor byte fails; after, it opens. */
static void
test_truncated_everywhere(void)
{
    struct base s = make_base();
    char err[ERR_MSG_MAX];

    for (size_t n = 0; n <= s.b.n; n++) {
        int want = n < s.data_end ? ERR_FORMAT : ERR_OK;

        CHECKF(open_expect(&s.b, n, want, NULL, NULL, err), "truncated at %zu: %s", n, err);
    }
    free(s.b.p);
}

/* At the section boundaries the message says what was being read. */
static void
test_truncated_at_boundaries(void)
{
    struct base s = make_base();
    char err[ERR_MSG_MAX];
    struct {
        uint64_t at;
        const char *sub1, *sub2;
    } cases[] = {
        {0, "too small", NULL},
        {3, "too small", NULL},
        {4, "version", NULL},
        {8, "header counts", NULL},
        {16, "header counts", NULL},
        {24, "metadata keys", NULL},
        {s.kv[2], "metadata key 2", "string length"},
        {s.ti[0], "tensors", NULL},
        {s.ti[1], "tensors", NULL},
        {s.ti_end, "past the end", NULL},
        {s.data, "token_embd.weight", "past the end"},
        {s.data + 96, "blk.0.attn_q.weight", "past the end"},
        {s.data + 132, "output_norm.weight", "past the end"},
        {s.data_end - 1, "output_norm.weight", "past the end"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CHECKF(open_expect(&s.b, cases[i].at, ERR_FORMAT, cases[i].sub1, cases[i].sub2, err),
               "truncated at %llu: %s", (unsigned long long)cases[i].at, err);
    free(s.b.p);
}

/* A file whose KV section is long enough that the count bounds do not fire first. */
static void
test_truncated_inside_a_kv(void)
{
    static char big[4096];
    struct gguf_writer *w = new_writer();
    struct bytes b;
    char err[ERR_MSG_MAX];
    uint64_t k1, k2;

    memset(big, 'x', sizeof(big));
    gguf_writer_add_strn(w, "a.big", big, sizeof(big));
    k1 = gguf_writer_kv_pos(w);
    gguf_writer_add_u64(w, "a.num", 7);
    k2 = gguf_writer_kv_pos(w);
    gguf_writer_add_strn(w, "a.big2", big, sizeof(big));
    b = finish(w);
    CHECKF(open_expect(&b, k1 + 4, ERR_FORMAT, "metadata key 1", "string length", err), "%s", err);
    CHECKF(open_expect(&b, k1 + 10, ERR_FORMAT, "metadata key 1", NULL, err), "%s", err);
    CHECKF(open_expect(&b, k1 + 13, ERR_FORMAT, "a.num", "value type", err), "%s", err);
    CHECKF(open_expect(&b, k1 + 19, ERR_FORMAT, "a.num", "uint64", err), "%s", err);
    CHECKF(open_expect(&b, k2 + 20, ERR_FORMAT, "a.big2", "string length", err), "%s", err);
    CHECKF(open_expect(&b, k2 + 100, ERR_FORMAT, "a.big2", "exceeds", err), "%s", err);
    free(b.p);
}

/* Random truncations of real models (each copy sized exactly, for ASan). */
static void
test_truncated_real_models(void)
{
    static const char *const rel[] = {"models/stories260K.gguf",
                                      "models/small/p-llama-gqa-Q4_K_M.gguf",
                                      "models/vocab/ggml-vocab-phi-3.gguf"};
    char path[512], err[ERR_MSG_MAX];

    for (size_t m = 0; m < sizeof(rel) / sizeof(rel[0]); m++) {
        struct gguf *g;
        struct bytes b;
        size_t end = 0;
        FILE *f;

        if (!harness_shared(path, sizeof(path), rel[m]))
            return;
        CHECK(gguf_open(&g, path, err) == ERR_OK);
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
            const struct gguf_tensor *t = gguf_tensor_at(g, i);
            size_t e = (size_t)(gguf_data_offset(g) + t->offset + t->nbytes);

            end = e > end ? e : end;
        }
        /* a vocab-only file needs every KV: up to the end of its tensor-info section */
        if (gguf_n_tensors(g) == 0)
            end = gguf_file_size(g);
        gguf_close(g);
        f = fopen(path, "rb");
        CHECK(f != NULL);
        fseek(f, 0, SEEK_END);
        b.n = (size_t)ftell(f);
        rewind(f);
        b.p = malloc(b.n);
        CHECK(b.p != NULL && fread(b.p, 1, b.n, f) == b.n);
        fclose(f);
        for (uint64_t k = 0; k < 200; k++) {
            /* half the points in the header, where the parsing is */
            size_t lim = k % 2 ? b.n : (end < 65536 ? end : 65536);
            size_t n = (size_t)(synth_rand_bits(42, m, k) % lim);
            bool ok = open_expect(&b, n, n < end ? ERR_FORMAT : ERR_OK, NULL, NULL, err);

            if (!ok)
                free(b.p);
            CHECKF(ok, "%s truncated at %zu: %s", rel[m], n, err);
        }
        free(b.p);
    }
}

/* Mutations of the base file: each patches a copy and states the error it must give. */
struct mutation {
    const char *name;
    void (*apply)(struct bytes *b, const struct base *s, uint64_t arg);
    uint64_t arg;
    int want;
    const char *sub1, *sub2;
};

static void
m_magic(struct bytes *b, const struct base *s, uint64_t arg)
{
    (void)s;
    b->p[arg] ^= 0x20;
}

static void
m_version(struct bytes *b, const struct base *s, uint64_t arg)
{
    (void)s;
    put_u32(b, 4, (uint32_t)arg);
}

static void
m_n_tensors(struct bytes *b, const struct base *s, uint64_t arg)
{
    (void)s;
    put_u64(b, 8, arg);
}

static void
m_n_kv(struct bytes *b, const struct base *s, uint64_t arg)
{
    (void)s;
    put_u64(b, 16, arg);
}

static void
m_key_len(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, s->kv[2], arg ? arg : b->n - s->kv[2] - 8 + 1);
}

static void
m_str_len(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, kv_value(s, 0), arg ? arg : b->n - kv_value(s, 0) - 8 + 1);
}

/* Array counts; 0 stands for one element more than the bytes left could hold. */
static void
m_arr_count(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, kv_value(s, 2) + 4, arg ? arg : (b->n - kv_value(s, 2) - 12) / 8 + 1);
}

static void
m_f32_arr_count(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, kv_value(s, 4) + 4, arg ? arg : (b->n - kv_value(s, 4) - 12) / 4 + 1);
}

static void
m_arr_str_len(struct bytes *b, const struct base *s, uint64_t arg)
{
    /* element 1 of the tokens: after element 0 ("a": 8 + 1 bytes) */
    put_u64(b, kv_value(s, 2) + 12 + 9, arg);
}

static void
m_value_type(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u32(b, kv_value(s, 3) - 4, (uint32_t)arg);
}

static void
m_arr_type(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u32(b, kv_value(s, 2), (uint32_t)arg);
}

static void
m_alignment(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u32(b, kv_value(s, 1), (uint32_t)arg);
}

static void
m_name_len(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, s->ti[1], arg ? arg : b->n - s->ti[1] - 8 + 1);
}

static void
m_n_dims(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u32(b, ti_dims(s, 1), (uint32_t)arg);
}

static void
m_dim1(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, ti_dims(s, 1) + 4 + 8, arg);
}

static void
m_tensor_type(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u32(b, ti_type(s, 1, 2), (uint32_t)arg);
}

static void
m_offset1(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, ti_type(s, 1, 2) + 4, arg);
}

static void
m_offset2(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, ti_type(s, 2, 1) + 4, arg);
}

static void
m_offset2_at_end(struct bytes *b, const struct base *s, uint64_t arg)
{
    put_u64(b, ti_type(s, 2, 1) + 4, b->n - s->data + arg);
}

static void
m_bool(struct bytes *b, const struct base *s, uint64_t arg)
{
    /* llama.block_count as a bool: type 7, value byte arg (then 3 stray bytes, never reached) */
    put_u32(b, kv_value(s, 3) - 4, GGUF_VTYPE_BOOL);
    b->p[kv_value(s, 3)] = (uint8_t)arg;
}

static void
m_key_nul(struct bytes *b, const struct base *s, uint64_t arg)
{
    (void)arg;
    b->p[s->kv[3] + 8 + 5] = '\0';
}

static void
m_key_empty(struct bytes *b, const struct base *s, uint64_t arg)
{
    /* key length 0: the key's bytes then read as the type, an unknown one */
    (void)arg;
    put_u64(b, s->kv[3], 0);
}

#define HUGE63 (1ull << 63)
#define HUGE64 UINT64_MAX

static const struct mutation mutations[] = {
    {"bad magic byte 0", m_magic, 0, ERR_FORMAT, "bad magic", NULL},
    {"bad magic byte 3", m_magic, 3, ERR_FORMAT, "bad magic", NULL},
    {"version 0", m_version, 0, ERR_UNSUPPORTED, "unsupported GGUF version 0", NULL},
    {"version 1", m_version, 1, ERR_UNSUPPORTED, "unsupported GGUF version 1", NULL},
    {"version 4", m_version, 4, ERR_UNSUPPORTED, "unsupported GGUF version 4", NULL},
    {"version 2 reads", m_version, 2, ERR_OK, NULL, NULL},
    {"n_tensors 2^63", m_n_tensors, HUGE63, ERR_FORMAT, "9223372036854775808 tensors", NULL},
    {"n_tensors 2^64-1", m_n_tensors, HUGE64, ERR_FORMAT, "tensors", "more than the file"},
    {"n_tensors one more", m_n_tensors, 4, ERR_FORMAT, "tensor", NULL},
    {"n_kv 2^63", m_n_kv, HUGE63, ERR_FORMAT, "9223372036854775808 metadata keys", NULL},
    {"n_kv 2^64-1", m_n_kv, HUGE64, ERR_FORMAT, "metadata keys", "more than the file"},
    {"n_kv one more", m_n_kv, 6, ERR_FORMAT, NULL, NULL},
    {"key length 2^63", m_key_len, HUGE63, ERR_FORMAT, "metadata key 2", "string length"},
    {"key length 2^64-1", m_key_len, HUGE64, ERR_FORMAT, "metadata key 2", "string length"},
    {"key length past the end", m_key_len, 0, ERR_FORMAT, "metadata key 2", "exceeds"},
    {"key with a NUL", m_key_nul, 0, ERR_FORMAT, "metadata key 3", "NUL"},
    {"key empty", m_key_empty, 0, ERR_FORMAT, "metadata key 3", "empty"},
    {"string length 2^63", m_str_len, HUGE63, ERR_FORMAT, "general.architecture", "string length"},
    {"string length 2^64-1", m_str_len, HUGE64, ERR_FORMAT, "general.architecture", "exceeds"},
    {"string length past the end", m_str_len, 0, ERR_FORMAT, "general.architecture", "exceeds"},
    {"string array count 2^63", m_arr_count, HUGE63, ERR_FORMAT, "tokenizer.ggml.tokens",
     "cannot fit"},
    {"string array count 2^64-1", m_arr_count, HUGE64, ERR_FORMAT, "tokenizer.ggml.tokens",
     "cannot fit"},
    {"float array count 2^63", m_f32_arr_count, HUGE63, ERR_FORMAT, "tokenizer.ggml.scores",
     "needs more"},
    {"float array count 2^64-1", m_f32_arr_count, HUGE64, ERR_FORMAT, "tokenizer.ggml.scores",
     "needs more"},
    {"float array count 2^62", m_f32_arr_count, 1ull << 62, ERR_FORMAT, "tokenizer.ggml.scores",
     "needs more"},
    {"float array count past the end", m_f32_arr_count, 0, ERR_FORMAT, "tokenizer.ggml.scores",
     "needs more"},
    {"string array count past the end", m_arr_count, 0, ERR_FORMAT, "tokenizer.ggml.tokens",
     "cannot fit"},
    {"string in array 2^64-1", m_arr_str_len, HUGE64, ERR_FORMAT, "tokenizer.ggml.tokens",
     "string length"},
    {"string in array 2^63", m_arr_str_len, HUGE63, ERR_FORMAT, "tokenizer.ggml.tokens",
     "string length"},
    {"value type 13", m_value_type, 13, ERR_FORMAT, "llama.block_count", "unknown value type 13"},
    {"value type 2^32-1", m_value_type, UINT32_MAX, ERR_FORMAT, "llama.block_count",
     "unknown value type 4294967295"},
    {"array element type 13", m_arr_type, 13, ERR_FORMAT, "tokenizer.ggml.tokens",
     "unknown value type 13"},
    {"bool value 2", m_bool, 2, ERR_FORMAT, "llama.block_count", "bool"},
    {"alignment 0", m_alignment, 0, ERR_FORMAT, "general.alignment", "power of two"},
    {"alignment 3", m_alignment, 3, ERR_FORMAT, "general.alignment", "3"},
    {"alignment 48", m_alignment, 48, ERR_FORMAT, "general.alignment", "power of two"},
    {"alignment 2^31 misaligns", m_alignment, 1u << 31, ERR_FORMAT, "blk.0.attn_q.weight",
     "alignment"},
    {"tensor name 2^63", m_name_len, HUGE63, ERR_FORMAT, "tensor 1 name", "string length"},
    {"tensor name 2^64-1", m_name_len, HUGE64, ERR_FORMAT, "tensor 1 name", "string length"},
    {"tensor name past the end", m_name_len, 0, ERR_FORMAT, "tensor 1 name", "exceeds"},
    {"n_dims 0", m_n_dims, 0, ERR_FORMAT, "blk.0.attn_q.weight", "0 dimensions"},
    {"n_dims 5", m_n_dims, 5, ERR_FORMAT, "blk.0.attn_q.weight", "5 dimensions"},
    {"n_dims 2^32-1", m_n_dims, UINT32_MAX, ERR_FORMAT, "blk.0.attn_q.weight", "dimensions"},
    {"dim 0", m_dim1, 0, ERR_FORMAT, "blk.0.attn_q.weight", "dimension 1 is 0"},
    {"dim -1 as u64", m_dim1, HUGE64, ERR_FORMAT, "blk.0.attn_q.weight", "dimension 1"},
    {"dim 2^63", m_dim1, HUGE63, ERR_FORMAT, "blk.0.attn_q.weight", "dimension 1"},
    {"dim 2^62 overflows", m_dim1, 1ull << 62, ERR_FORMAT, "blk.0.attn_q.weight", NULL},
    {"dim 2^40 past the end", m_dim1, 1ull << 40, ERR_FORMAT, "blk.0.attn_q.weight", NULL},
    {"tensor type 4 (removed)", m_tensor_type, 4, ERR_FORMAT, "blk.0.attn_q.weight",
     "unknown type id 4"},
    {"tensor type 31 (removed)", m_tensor_type, 31, ERR_FORMAT, "blk.0.attn_q.weight",
     "unknown type id 31"},
    {"tensor type 40", m_tensor_type, 40, ERR_FORMAT, "blk.0.attn_q.weight", "unknown type id 40"},
    {"tensor type 2^32-1", m_tensor_type, UINT32_MAX, ERR_FORMAT, "blk.0.attn_q.weight",
     "unknown type id"},
    {"tensor type q4_k: row of 32", m_tensor_type, TYPE_Q4_K, ERR_FORMAT, "blk.0.attn_q.weight",
     "not a multiple"},
    {"offset misaligned", m_offset1, 96 + 16, ERR_FORMAT, "blk.0.attn_q.weight",
     "not a multiple of the alignment 32"},
    {"offset 1", m_offset1, 1, ERR_FORMAT, "blk.0.attn_q.weight", "alignment"},
    {"offset overlaps the previous tensor", m_offset1, 64, ERR_FORMAT, "blk.0.attn_q.weight",
     "overlaps"},
    {"offset equal to another's", m_offset1, 0, ERR_FORMAT, "blk.0.attn_q.weight", "overlaps"},
    {"offset overlaps the next tensor", m_offset2, 96 + 32, ERR_FORMAT, "output_norm.weight",
     "overlaps"},
    {"offset at the end of the file", m_offset2_at_end, 0, ERR_FORMAT, "output_norm.weight",
     "past the end"},
    {"offset just inside the end", m_offset2_at_end, (uint64_t)-32, ERR_OK, NULL, NULL},
    {"offset 2^63", m_offset2, HUGE63, ERR_FORMAT, "output_norm.weight", "past the end"},
    {"offset 2^64-32", m_offset2, HUGE64 - 31, ERR_FORMAT, "output_norm.weight", "past the end"},
};

static void
test_mutations(void)
{
    struct base s = make_base();
    char err[ERR_MSG_MAX];
    struct bytes b;

    b.n = s.b.n;
    b.p = malloc(b.n);
    CHECK(b.p != NULL);
    for (size_t i = 0; i < sizeof(mutations) / sizeof(mutations[0]); i++) {
        const struct mutation *m = &mutations[i];

        memcpy(b.p, s.b.p, b.n);
        m->apply(&b, &s, m->arg);
        if (!open_expect(&b, b.n, m->want, m->sub1, m->sub2, err))
            harness_fail(__FILE__, __LINE__, "%s: message: %s", m->name, err);
    }
    free(b.p);
    free(s.b.p);
}

/* Broken files built with the writer's raw knobs. */
static void
test_duplicates(void)
{
    struct gguf_writer *w = new_writer();
    struct bytes b;

    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_u32(w, "llama.block_count", 1);
    gguf_writer_add_str(w, "general.architecture", "qwen2");
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "duplicate metadata key 'general.architecture'", NULL);
    free(b.p);

    w = new_writer();
    gguf_writer_add_tensor(w, "a.weight", TYPE_F32, 1, (int64_t[]){8});
    gguf_writer_add_tensor(w, "b.weight", TYPE_F32, 1, (int64_t[]){8});
    gguf_writer_add_tensor(w, "a.weight", TYPE_F32, 1, (int64_t[]){8});
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "duplicate tensor name a.weight", NULL);
    free(b.p);
}

static void
test_alignment_variants(void)
{
    struct gguf_writer *w = new_writer();
    struct bytes b;

    gguf_writer_add_u64(w, "general.alignment", 32);
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "general.alignment", "uint64");
    free(b.p);

    w = new_writer();
    gguf_writer_add_str(w, "general.alignment", "32");
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "general.alignment", "string");
    free(b.p);

    /* alignment 64: offset 32 is misaligned there, fine at the default */
    w = new_writer();
    gguf_writer_add_u32(w, "general.alignment", 64);
    gguf_writer_add_tensor(w, "a", TYPE_F32, 1, (int64_t[]){8});
    gguf_writer_add_tensor_raw(w, "b", TYPE_F32, 1, (uint64_t[]){8}, 32);
    gguf_writer_write_zeros(w, 128, NULL);
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "tensor b", "alignment 64");
    free(b.p);

    /* alignment 1 allows any offset */
    w = new_writer();
    gguf_writer_add_u32(w, "general.alignment", 1);
    gguf_writer_add_tensor(w, "a", TYPE_F32, 1, (int64_t[]){1});
    gguf_writer_add_tensor(w, "b", TYPE_Q8_0, 1, (int64_t[]){32});
    b = finish(w);
    EXPECT(&b, ERR_OK, NULL, NULL);
    free(b.p);
}

static void
test_raw_tensor_infos(void)
{
    static const struct {
        const char *name;
        uint32_t type, n_dims;
        uint64_t ne[5];
        const char *sub;
    } cases[] = {
        {"five.dims", TYPE_F32, 5, {1, 1, 1, 1, 1}, "5 dimensions"},
        {"elems.overflow", TYPE_F32, 3, {1ull << 32, 1ull << 32, 1ull << 32}, "overflow"},
        {"elems.overflow2", TYPE_F32, 2, {1ull << 62, 3}, "overflow"},
        {"bytes.overflow", TYPE_F32, 1, {1ull << 62}, "overflow"},
        {"bytes.overflow64", TYPE_F64, 2, {1ull << 61, 2}, "overflow"},
        {"q4_0.rows", TYPE_Q4_0, 2, {16, 2}, "not a multiple of the q4_0 block size 32"},
        {"q6_k.rows", TYPE_Q6_K, 1, {64}, "not a multiple of the q6_k block size 256"},
        {"iq2_xs.rows", TYPE_IQ2_XS, 1, {255}, "not a multiple"},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct gguf_writer *w = new_writer();
        struct bytes b;
        char err[ERR_MSG_MAX];

        gguf_writer_add_tensor_raw(w, cases[i].name, cases[i].type, cases[i].n_dims, cases[i].ne,
                                   0);
        gguf_writer_write_zeros(w, 4096, NULL);
        b = finish(w);
        if (!open_expect(&b, b.n, ERR_FORMAT, cases[i].name, cases[i].sub, err))
            harness_fail(__FILE__, __LINE__, "%s: message: %s", cases[i].name, err);
        free(b.p);
    }
}

static void
test_nesting_and_names(void)
{
    struct gguf_writer *w = new_writer();
    char name[300];
    struct bytes b;

    /* arrays nested 8 deep */
    for (int d = 0; d < 8; d++)
        gguf_writer_begin_arr(w, d ? NULL : "deep", d < 7 ? GGUF_VTYPE_ARRAY : GGUF_VTYPE_UINT8, 1);
    gguf_writer_val_int(w, GGUF_VTYPE_UINT8, 1);
    for (int d = 0; d < 8; d++)
        gguf_writer_end_arr(w);
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "'deep'", "nested");
    free(b.p);

    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    w = new_writer();
    gguf_writer_add_tensor(w, name, TYPE_F32, 1, (int64_t[]){4});
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "tensor 0 name", "299");
    free(b.p);

    /* depth 4 is the most the reader takes */
    w = new_writer();
    for (int d = 0; d < 4; d++)
        gguf_writer_begin_arr(w, d ? NULL : "deep4", d < 3 ? GGUF_VTYPE_ARRAY : GGUF_VTYPE_UINT8,
                              1);
    gguf_writer_val_int(w, GGUF_VTYPE_UINT8, 1);
    for (int d = 0; d < 4; d++)
        gguf_writer_end_arr(w);
    b = finish(w);
    EXPECT(&b, ERR_OK, NULL, NULL);
    free(b.p);

    /* keys: at most 65535 bytes */
    char *key = malloc(65537);
    CHECK(key != NULL);
    memset(key, 'k', 65536);
    key[65536] = '\0';
    w = new_writer();
    gguf_writer_add_u8(w, key + 1, 1);
    b = finish(w);
    EXPECT(&b, ERR_OK, NULL, NULL);
    free(b.p);
    w = new_writer();
    gguf_writer_add_u8(w, key, 1);
    free(key);
    b = finish(w);
    EXPECT(&b, ERR_FORMAT, "metadata key 0", "65536 bytes");
    free(b.p);

    /* bools are 0 or 1, in arrays too */
    w = new_writer();
    gguf_writer_add_arr(w, "flags", GGUF_VTYPE_UINT8, (uint8_t[]){1, 0, 2}, 3);
    b = finish(w);
    b.p[24 + 8 + 5 + 4] = GGUF_VTYPE_BOOL; /* the element type of the first KV */
    EXPECT(&b, ERR_FORMAT, "'flags'", "bool element 2 is 2");
    free(b.p);
}

/* ---- (c) types llorch cannot compute with ---- */

static void
test_unsupported_types_open_and_list(void)
{
    struct gguf_writer *w = new_writer();
    char err[ERR_MSG_MAX];
    struct gguf *g;
    struct bytes b;
    int rv;

    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_tensor(w, "blk.0.attn_q.weight", TYPE_IQ2_XS, 2, (int64_t[]){256, 4});
    gguf_writer_add_tensor(w, "blk.0.attn_k.weight", TYPE_IQ1_M, 1, (int64_t[]){512});
    gguf_writer_add_tensor(w, "blk.0.attn_v.weight", TYPE_TQ2_0, 1, (int64_t[]){256});
    gguf_writer_add_tensor(w, "blk.0.ffn_up.weight", TYPE_MXFP4, 1, (int64_t[]){64});
    b = finish(w);
    rv = gguf_open_buffer(&g, b.p, b.n, err);
    CHECKF(rv == ERR_OK, "%s", err);
    const struct gguf_tensor *t = gguf_find_tensor(g, "blk.0.attn_q.weight");
    CHECK(t != NULL && t->type == TYPE_IQ2_XS && t->nbytes == 4 * 74);
    CHECK(strcmp(type_traits(t->type)->name, "iq2_xs") == 0 && !type_traits(t->type)->supported);
    CHECK(gguf_find_tensor(g, "blk.0.attn_k.weight")->nbytes == 2 * 56);
    CHECK(gguf_find_tensor(g, "blk.0.attn_v.weight")->nbytes == 66);
    CHECK(gguf_find_tensor(g, "blk.0.ffn_up.weight")->nbytes == 2 * 17);
    gguf_close(g);
    free(b.p);
}

/* ---- typed lookups ---- */

static void
test_typed_getters(void)
{
    static const uint16_t u16s[] = {1, 65535};
    static const double f64s[] = {0.5, -3};
    struct gguf_writer *w = new_writer();
    const struct gguf_arr *a;
    char err[ERR_MSG_MAX];
    struct gguf_str str;
    struct gguf *g;
    struct bytes b;
    int64_t n = 42;
    double x;
    bool flag;
    int rv;

    gguf_writer_add_i8(w, "i8", -5);
    gguf_writer_add_u64(w, "u64.big", UINT64_MAX);
    gguf_writer_add_u64(w, "u64.small", 7);
    gguf_writer_add_f32(w, "f32", 0.25f);
    gguf_writer_add_bool(w, "bool", true);
    gguf_writer_add_str(w, "str", "llama");
    gguf_writer_add_arr(w, "u16s", GGUF_VTYPE_UINT16, u16s, 2);
    gguf_writer_add_arr(w, "f64s", GGUF_VTYPE_FLOAT64, f64s, 2);
    b = finish(w);
    rv = gguf_open_buffer(&g, b.p, b.n, err);
    CHECKF(rv == ERR_OK, "%s", err);

    CHECK(gguf_get_int(g, "i8", &n, err) == ERR_OK && n == -5);
    CHECK(gguf_get_int(g, "u64.small", &n, err) == ERR_OK && n == 7);
    n = 42;
    CHECK(gguf_get_int(g, "u64.big", &n, err) == ERR_FORMAT && n == 42);
    CHECKF(strstr(err, "u64.big") != NULL, "%s", err);
    CHECK(gguf_get_int(g, "str", &n, err) == ERR_FORMAT);
    CHECKF(strstr(err, "'str'") != NULL && strstr(err, "string") != NULL, "%s", err);
    CHECK(gguf_get_int(g, "absent", &n, err) == ERR_NOT_FOUND && n == 42);
    CHECK(gguf_get_float(g, "f32", &x, err) == ERR_OK && x == 0.25);
    CHECK(gguf_get_float(g, "i8", &x, err) == ERR_OK && x == -5);
    CHECK(gguf_get_float(g, "bool", &x, err) == ERR_FORMAT);
    CHECK(gguf_get_bool(g, "bool", &flag, err) == ERR_OK && flag);
    CHECK(gguf_get_bool(g, "i8", &flag, err) == ERR_FORMAT);
    CHECK(gguf_get_str(g, "str", &str, err) == ERR_OK && str.len == 5);
    CHECK(memcmp(str.data, "llama", 5) == 0);
    CHECK(gguf_get_str(g, "f32", &str, err) == ERR_FORMAT);
    CHECK(gguf_get_arr(g, "u16s", &a, err) == ERR_OK && a->n == 2);
    CHECK(gguf_arr_get_int(a, 1) == 65535 && gguf_arr_get_float(a, 1) == 65535);
    CHECK(gguf_get_arr(g, "f64s", &a, err) == ERR_OK);
    CHECK(gguf_arr_get_float(a, 0) == 0.5 && gguf_arr_get_int(a, 1) == -3);
    CHECK(gguf_get_arr(g, "str", &a, err) == ERR_FORMAT);
    CHECK(gguf_get_arr(g, "absent", &a, err) == ERR_NOT_FOUND);
    gguf_close(g);
    free(b.p);
}

/* ---- errors from gguf_open itself ---- */

static void
test_open_errors(void)
{
    char err[ERR_MSG_MAX], path[512];
    struct gguf *g = (struct gguf *)&g;
    FILE *f;

    CHECK(gguf_open(&g, "/nonexistent/x.gguf", err) == ERR_IO && g == NULL);
    CHECKF(strstr(err, "/nonexistent/x.gguf") != NULL, "%s", err);
    CHECK(gguf_open(&g, harness_tmpdir(), err) == ERR_IO);
    snprintf(path, sizeof(path), "%s/empty.gguf", harness_tmpdir());
    f = fopen(path, "w");
    CHECK(f != NULL);
    fclose(f);
    CHECK(gguf_open(&g, path, err) == ERR_FORMAT);
    CHECKF(strstr(err, "empty") != NULL, "%s", err);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_pyrepr),
        TEST(test_shared_models_match_meta),
        TEST(test_base_is_valid),
        TEST(test_truncated_everywhere),
        TEST(test_truncated_at_boundaries),
        TEST(test_truncated_inside_a_kv),
        TEST(test_truncated_real_models),
        TEST(test_mutations),
        TEST(test_duplicates),
        TEST(test_alignment_variants),
        TEST(test_raw_tensor_infos),
        TEST(test_nesting_and_names),
        TEST(test_unsupported_types_open_and_list),
        TEST(test_typed_getters),
        TEST(test_open_errors),
        {0},
    };
    return harness_run(tests, argc, argv);
}
