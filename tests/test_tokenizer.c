/*
 * test_tokenizer.c: the SentencePiece and BPE tokenizers against llama.cpp's own answers: every
 * line of the ../shared/ref tokenize-*.jsonl files of every vocabulary (ids with and without BOS,
 * token texts, pieces, detokenization), llama.cpp's test-tokenizer-0 vectors (.inp/.out) of every
 * vocab file that has them, and the prompt ids of every case of every model's reference file.
 * Then robustness (invalid UTF-8, NUL bytes, 100 KB of text, the empty string, small output
 * buffers), merge rules and the load errors, on the real files and on small GGUF files built
 * here in memory.
 */
#include "common/err.h"
#include "tests/gguf_write.h"
#include "tests/harness.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <glob.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_IDS 4096

/* A vocabulary opened from ../shared; both NULL when the file is missing (test skipped). */
struct vocab {
    struct gguf *g;
    struct tokenizer *t;
};

static bool
vocab_open(struct vocab *v, const char *rel)
{
    char path[512], err[ERR_MSG_MAX];

    v->g = NULL;
    v->t = NULL;
    if (!harness_shared(path, sizeof(path), rel))
        return false;
    if (gguf_open(&v->g, path, err) != ERR_OK) {
        printf("  %s: %s\n", path, err);
        return false;
    }
    if (tokenizer_load(&v->t, v->g, err) != ERR_OK) {
        printf("  %s: %s\n", path, err);
        gguf_close(v->g);
        v->g = NULL;
        return false;
    }
    return true;
}

static void
vocab_close(struct vocab *v)
{
    tokenizer_free(v->t);
    gguf_close(v->g);
}

/* Reads a whole file; NULL on error. *len gets its size; a NUL follows the bytes. */
static char *
slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;

    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* Hex string -> bytes in out (size bytes); returns the length. */
static size_t
unhex(const char *hex, char *out, size_t size)
{
    size_t n = 0;

    for (; hex[0] && hex[1] && n < size; hex += 2) {
        unsigned v;
        sscanf(hex, "%2x", &v);
        out[n++] = (char)v;
    }
    return n;
}

static bool
ids_equal(const int32_t *got, size_t n, const json_t *want)
{
    if (!json_is_array(want) || json_array_size(want) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        if (json_integer_value(json_array_get(want, i)) != got[i])
            return false;
    return true;
}

static void
print_ids(const char *what, const int32_t *ids, size_t n)
{
    printf("    %s:", what);
    for (size_t i = 0; i < n && i < 40; i++)
        printf(" %d", ids[i]);
    printf("%s\n", n > 40 ? " ..." : "");
}

/* Checks one tokenize-*.jsonl line; returns the number of mismatches (printed). */
static int
check_ref_line(const struct tokenizer *t, json_t *j)
{
    static char text[65536], buf[65536], want[65536];
    static int32_t ids[MAX_IDS];
    const char *id = json_string_value(json_object_get(j, "id"));
    size_t len = unhex(json_string_value(json_object_get(j, "text_hex")), text, sizeof(text));
    size_t n, wlen, out_len;
    char err[ERR_MSG_MAX];
    int bad = 0;

    if (tokenizer_encode(t, text, len, tokenizer_add_bos(t), false, ids, MAX_IDS, &n, err) != 0 ||
        !ids_equal(ids, n, json_object_get(j, "ids_bos"))) {
        printf("  %s: ids_bos differ\n", id);
        print_ids("got", ids, n);
        bad++;
    }
    if (tokenizer_encode(t, text, len, false, false, ids, MAX_IDS, &n, err) != 0 ||
        !ids_equal(ids, n, json_object_get(j, "ids_nobos"))) {
        printf("  %s: ids_nobos differ\n", id);
        print_ids("got", ids, n);
        return bad + 1; /* the rest depends on the ids */
    }

    json_t *texts = json_object_get(j, "token_texts");
    for (size_t i = 0; i < n; i++) {
        size_t tl;
        const char *tt = tokenizer_token_text(t, ids[i], &tl);
        const char *w = json_string_value(json_array_get(texts, i));
        if (tt == NULL || w == NULL || tl != strlen(w) || memcmp(tt, w, tl) != 0) {
            printf("  %s: token_texts[%zu] differs\n", id, i);
            bad++;
            break;
        }
    }

    size_t plen = 0;
    for (size_t i = 0; i < n; i++)
        plen += tokenizer_piece(t, ids[i], buf + plen, sizeof(buf) - plen);
    wlen = unhex(json_string_value(json_object_get(j, "pieces_concat_hex")), want, sizeof(want));
    if (plen != wlen || memcmp(buf, want, wlen) != 0) {
        printf("  %s: pieces differ (%zu bytes, want %zu)\n", id, plen, wlen);
        bad++;
    }

    wlen = unhex(json_string_value(json_object_get(j, "detok_hex")), want, sizeof(want));
    if (tokenizer_decode(t, ids, n, buf, sizeof(buf), &out_len, err) != ERR_OK || out_len != wlen ||
        memcmp(buf, want, wlen) != 0) {
        printf("  %s: detok differs (%zu bytes, want %zu)\n", id, out_len, wlen);
        bad++;
    }
    return bad;
}

/* Runs every line of a ../shared/ref tokenize file on a vocabulary; returns mismatches. */
static int
run_ref_file(const char *model_rel, const char *jsonl_rel, int *lines)
{
    char path[512];
    struct vocab v;
    char *line = NULL;
    size_t cap = 0;
    int bad = 0;
    FILE *f;

    *lines = 0;
    if (!harness_shared(path, sizeof(path), jsonl_rel))
        return -1;
    if (!vocab_open(&v, model_rel))
        return -1;
    f = fopen(path, "r");
    while (f != NULL && getline(&line, &cap, f) > 0) {
        json_error_t jerr;
        json_t *j = json_loads(line, JSON_ALLOW_NUL, &jerr);
        if (j == NULL) {
            printf("  %s:%d: %s\n", path, jerr.line, jerr.text);
            bad++;
            continue;
        }
        bad += check_ref_line(v.t, j);
        (*lines)++;
        json_decref(j);
    }
    if (f != NULL)
        fclose(f);
    free(line);
    vocab_close(&v);
    return bad;
}

#define REF_TEST(fn, model, jsonl)                                                                 \
    static void fn(void)                                                                           \
    {                                                                                              \
        int lines, bad = run_ref_file(model, jsonl, &lines);                                       \
        if (bad < 0)                                                                               \
            return;                                                                                \
        CHECKF(bad == 0, "%d mismatches", bad);                                                    \
        CHECKF(lines == 40, "%d lines", lines);                                                    \
    }

REF_TEST(test_ref_stories260k, "models/stories260K.gguf", "ref/tokenize-stories260K.jsonl")
REF_TEST(test_ref_llama2_tiny, "models/llama-2-tiny-random.gguf",
         "ref/tokenize-llama-2-tiny-random.jsonl")
REF_TEST(test_ref_llama_spm, "models/vocab/ggml-vocab-llama-spm.gguf",
         "ref/tokenize-ggml-vocab-llama-spm.jsonl")
REF_TEST(test_ref_phi3, "models/vocab/ggml-vocab-phi-3.gguf", "ref/tokenize-ggml-vocab-phi-3.jsonl")
REF_TEST(test_ref_baichuan, "models/vocab/ggml-vocab-baichuan.gguf",
         "ref/tokenize-ggml-vocab-baichuan.jsonl")
REF_TEST(test_ref_llama_bpe, "models/vocab/ggml-vocab-llama-bpe.gguf",
         "ref/tokenize-ggml-vocab-llama-bpe.jsonl")
REF_TEST(test_ref_qwen2, "models/vocab/ggml-vocab-qwen2.gguf",
         "ref/tokenize-ggml-vocab-qwen2.jsonl")
REF_TEST(test_ref_gpt2, "models/vocab/ggml-vocab-gpt-2.gguf", "ref/tokenize-ggml-vocab-gpt-2.jsonl")
REF_TEST(test_ref_gpt_neox, "models/vocab/ggml-vocab-gpt-neox.gguf",
         "ref/tokenize-ggml-vocab-gpt-neox.jsonl")
REF_TEST(test_ref_deepseek_llm, "models/vocab/ggml-vocab-deepseek-llm.gguf",
         "ref/tokenize-ggml-vocab-deepseek-llm.jsonl")
REF_TEST(test_ref_deepseek_coder, "models/vocab/ggml-vocab-deepseek-coder.gguf",
         "ref/tokenize-ggml-vocab-deepseek-coder.jsonl")
REF_TEST(test_ref_falcon, "models/vocab/ggml-vocab-falcon.gguf",
         "ref/tokenize-ggml-vocab-falcon.jsonl")
REF_TEST(test_ref_starcoder, "models/vocab/ggml-vocab-starcoder.gguf",
         "ref/tokenize-ggml-vocab-starcoder.jsonl")
REF_TEST(test_ref_refact, "models/vocab/ggml-vocab-refact.gguf",
         "ref/tokenize-ggml-vocab-refact.jsonl")
REF_TEST(test_ref_mpt, "models/vocab/ggml-vocab-mpt.gguf", "ref/tokenize-ggml-vocab-mpt.jsonl")

/*
 * llama.cpp's test-tokenizer-0 vectors: the .inp file holds the texts, each followed by
 * "\n__ggml_vocab_test__\n"; line i of the .out file holds the ids of text i (no BOS).
 */
static int
run_vectors(const char *vocab_rel, int *count)
{
    static const char sep[] = "\n__ggml_vocab_test__\n";
    static int32_t ids[MAX_IDS];
    char path[512], rel[512], err[ERR_MSG_MAX];
    char *inp = NULL, *outp = NULL;
    size_t inp_len, out_len, n;
    struct vocab v;
    int bad = 0;

    *count = 0;
    if (!vocab_open(&v, vocab_rel))
        return -1;
    snprintf(rel, sizeof(rel), "%s.inp", vocab_rel);
    if (harness_shared(path, sizeof(path), rel))
        inp = slurp(path, &inp_len);
    snprintf(rel, sizeof(rel), "%s.out", vocab_rel);
    if (harness_shared(path, sizeof(path), rel))
        outp = slurp(path, &out_len);
    if (inp == NULL || outp == NULL) {
        bad = -1;
        goto done;
    }
    char *text = inp, *line = outp;
    for (char *end; (end = strstr(text, sep)) != NULL; text = end + strlen(sep)) {
        char *eol = strchr(line, '\n');
        if (eol == NULL) {
            printf("  %s: .out has fewer lines than .inp has texts\n", vocab_rel);
            bad++;
            break;
        }
        *eol = '\0';
        int32_t want[MAX_IDS];
        size_t nw = 0;
        for (char *p = line, *q; nw < MAX_IDS; p = q) {
            long x = strtol(p, &q, 10);
            if (q == p)
                break;
            want[nw++] = (int32_t)x;
        }
        if (tokenizer_encode(v.t, text, (size_t)(end - text), false, false, ids, MAX_IDS, &n,
                             err) != ERR_OK ||
            n != nw || memcmp(ids, want, n * sizeof(*ids)) != 0) {
            printf("  %s: text %d (%.40s) differs\n", vocab_rel, *count, text);
            print_ids("got ", ids, n);
            print_ids("want", want, nw);
            bad++;
        }
        (*count)++;
        line = eol + 1;
    }
done:
    free(inp);
    free(outp);
    vocab_close(&v);
    return bad;
}

#define VECTOR_TEST(fn, vocab)                                                                     \
    static void fn(void)                                                                           \
    {                                                                                              \
        int count, bad = run_vectors(vocab, &count);                                               \
        if (bad < 0)                                                                               \
            return;                                                                                \
        CHECKF(bad == 0, "%d of %d texts differ", bad, count);                                     \
        CHECKF(count == 46, "%d texts", count);                                                    \
    }

VECTOR_TEST(test_vectors_llama_spm, "models/vocab/ggml-vocab-llama-spm.gguf")
VECTOR_TEST(test_vectors_phi3, "models/vocab/ggml-vocab-phi-3.gguf")
VECTOR_TEST(test_vectors_llama_bpe, "models/vocab/ggml-vocab-llama-bpe.gguf")
VECTOR_TEST(test_vectors_qwen2, "models/vocab/ggml-vocab-qwen2.gguf")
VECTOR_TEST(test_vectors_gpt2, "models/vocab/ggml-vocab-gpt-2.gguf")
VECTOR_TEST(test_vectors_deepseek_llm, "models/vocab/ggml-vocab-deepseek-llm.gguf")
VECTOR_TEST(test_vectors_deepseek_coder, "models/vocab/ggml-vocab-deepseek-coder.gguf")
VECTOR_TEST(test_vectors_falcon, "models/vocab/ggml-vocab-falcon.gguf")
VECTOR_TEST(test_vectors_starcoder, "models/vocab/ggml-vocab-starcoder.gguf")
VECTOR_TEST(test_vectors_refact, "models/vocab/ggml-vocab-refact.gguf")
VECTOR_TEST(test_vectors_mpt, "models/vocab/ggml-vocab-mpt.gguf")

/*
 * prompt_ids and prompt_text (the pieces joined) of every case of one <model>.jsonl reference
 * file, on the model it names (found under models/, models/small/ or models/derived/). Returns
 * the mismatches (printed), or -1 when the model cannot be opened.
 */
static int
run_prompt_file(const char *path, const char *models, int *cases)
{
    static const char *const dirs[] = {"", "small/", "derived/"};
    static int32_t ids[MAX_IDS];
    static char buf[65536];
    char model[1200], err[ERR_MSG_MAX];
    struct gguf *g = NULL;
    struct tokenizer *t = NULL;
    char *line = NULL;
    size_t cap = 0, n;
    int bad = 0;
    FILE *f = fopen(path, "r");

    *cases = 0;
    while (f != NULL && getline(&line, &cap, f) > 0) {
        json_t *j = json_loads(line, JSON_ALLOW_NUL, NULL);
        json_t *prompt = json_object_get(j, "prompt");
        const char *id = json_string_value(json_object_get(j, "id"));
        const char *want_text = json_string_value(json_object_get(j, "prompt_text"));
        size_t plen = 0;

        for (size_t d = 0; t == NULL && d < sizeof(dirs) / sizeof(dirs[0]); d++) {
            snprintf(model, sizeof(model), "%s/%s%s", models, dirs[d],
                     json_string_value(json_object_get(j, "model")));
            if (access(model, R_OK) == 0 &&
                (gguf_open(&g, model, err) != ERR_OK || tokenizer_load(&t, g, err) != ERR_OK))
                printf("  %s: %s\n", model, err);
        }
        if (t == NULL) {
            json_decref(j);
            bad = -1;
            break;
        }
        if (tokenizer_encode(t, json_string_value(prompt), json_string_length(prompt),
                             json_is_true(json_object_get(j, "add_bos")), false, ids, MAX_IDS, &n,
                             err) != ERR_OK ||
            !ids_equal(ids, n, json_object_get(j, "prompt_ids"))) {
            printf("  %s %s: prompt_ids differ\n", path, id);
            bad++;
        }
        for (size_t i = 0; i < n; i++)
            plen += tokenizer_piece(t, ids[i], buf + plen, sizeof(buf) - plen);
        if (want_text == NULL || plen != strlen(want_text) || memcmp(buf, want_text, plen) != 0) {
            printf("  %s %s: prompt_text differs\n", path, id);
            bad++;
        }
        (*cases)++;
        json_decref(j);
    }
    if (f != NULL)
        fclose(f);
    free(line);
    tokenizer_free(t);
    gguf_close(g);
    return bad;
}

/* Every reference case of every model in ../shared/ref (llama and qwen2 files, all types). */
static void
test_model_prompts(void)
{
    char ref[512], models[512], pattern[600];
    glob_t gl;
    int files = 0, bad = 0;

    if (!harness_shared(ref, sizeof(ref), "ref") ||
        !harness_shared(models, sizeof(models), "models"))
        return;
    snprintf(pattern, sizeof(pattern), "%s/*.jsonl", ref);
    CHECK(glob(pattern, 0, NULL, &gl) == 0);
    for (size_t i = 0; i < gl.gl_pathc; i++) {
        const char *base = strrchr(gl.gl_pathv[i], '/') + 1;
        int cases;

        if (strncmp(base, "tokenize-", 9) == 0 || strncmp(base, "tensors-", 8) == 0 ||
            strcmp(base, "cases.jsonl") == 0)
            continue;
        int r = run_prompt_file(gl.gl_pathv[i], models, &cases);
        if (r < 0 || cases != 8) {
            printf("  %s: model not opened or %d cases\n", base, cases);
            bad++;
        } else {
            bad += r;
        }
        files++;
    }
    globfree(&gl);
    printf("  %d model files\n", files);
    CHECKF(bad == 0, "%d mismatches", bad);
    CHECKF(files >= 20, "only %d model reference files", files);
}

/* decode(encode(s)) == s for bytes without U+2581 (which comes back as a space). */
static bool
round_trips(const struct tokenizer *t, const char *s, size_t len)
{
    size_t max = 3 * len + 8, n, olen;
    int32_t *ids = malloc(max * sizeof(*ids));
    char *out = malloc(len + 1);
    char err[ERR_MSG_MAX];
    bool ok = ids != NULL && out != NULL &&
              tokenizer_encode(t, s, len, true, false, ids, max, &n, err) == ERR_OK && n >= 1 &&
              ids[0] == tokenizer_bos(t);

    for (size_t i = 0; ok && i < n; i++)
        ok = ids[i] >= 0 && (size_t)ids[i] < tokenizer_n_vocab(t);
    ok = ok && tokenizer_decode(t, ids + 1, n - 1, out, len + 1, &olen, err) == ERR_OK &&
         olen == len && memcmp(out, s, len) == 0;
    free(ids);
    free(out);
    return ok;
}

static void
test_invalid_utf8_and_nul(void)
{
    static const struct {
        const char *s;
        size_t len;
    } cases[] = {
        {"\xff\xfe"
         "abc \xc3",
         8},
        {"\xc3(", 2},
        {"\xe6\x97", 2},
        {"a\0b\0\0c", 6},
        {"\0", 1},
        {"\xf0\x9f\x98", 3},
        {"\x80\x80 x \xbf", 7},
        {"\xed\xa0\x80", 3},
        {"caf\xc3\xa9\xc3", 6},
        {" \xf4\x90\x80\x80 ", 6},
    };
    struct vocab v[2];
    const char *files[2] = {"models/stories260K.gguf", "models/llama-2-tiny-random.gguf"};

    for (int k = 0; k < 2; k++) {
        if (!vocab_open(&v[k], files[k]))
            return;
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            bool ok = round_trips(v[k].t, cases[i].s, cases[i].len);
            if (!ok)
                vocab_close(&v[k]);
            CHECKF(ok, "%s: case %zu does not round-trip", files[k], i);
        }
        vocab_close(&v[k]);
    }

    /* llama.cpp escapes spaces before it cuts characters, so an invalid lead byte claims the
       bytes of the U+2581 after it: "\xff x" gives <0xFF> <0xE2> <0x96> <0x81>, and comes
       back with those bytes, not a space */
    int32_t ids[16];
    size_t n;
    char err[ERR_MSG_MAX];
    if (!vocab_open(&v[0], files[0]))
        return;
    int rc = tokenizer_encode(v[0].t, "\xff x", 3, false, false, ids, 16, &n, err);
    /* so "\xc3 " costs 4 tokens, plus the prefix and BOS: more than len + 2, within the bound */
    size_t n2;
    int rc2 = tokenizer_encode(v[0].t, "\xc3 \xc3 ", 4, true, false, NULL, 0, &n2, err);
    size_t bound = tokenizer_max_tokens(v[0].t, 4);
    vocab_close(&v[0]);
    CHECK(rc == ERR_OK && n >= 5);
    CHECKF(ids[0] == 410 && ids[1] == 258 && ids[2] == 229 && ids[3] == 153 && ids[4] == 132,
           "%d %d %d %d %d", ids[0], ids[1], ids[2], ids[3], ids[4]);
    CHECKF(rc2 == ERR_BAD_REQUEST && n2 == 10 && n2 <= bound, "n %zu bound %zu", n2, bound);
}

/* 100 KB of mixed text through the 32000-token vocabulary, in well under a second of CPU time
 * (the thread's, not the wall clock: load does not fail it, a quadratic tokenizer does). */
static void
test_big_input_fast(void)
{
    static const char chunk[] = "Once upon a time, in a land far away, there lived a caf\xc3\xa9 "
                                "owner named \xe6\x97\xa5\xe6\x9c\xac who loved \xf0\x9f\x8d\x95 "
                                "and\tnumbers like 3.14159!\n";
    size_t len = 100 * 1024, n, n2;
    char *text = malloc(len);
    int32_t *ids = malloc(len * sizeof(*ids));
    char err[ERR_MSG_MAX];
    struct vocab v;
    struct timespec a, b;
    bool ok;

    if (!vocab_open(&v, "models/llama-2-tiny-random.gguf")) {
        free(text);
        free(ids);
        return;
    }
    for (size_t i = 0; i < len; i++)
        text[i] = chunk[i % (sizeof(chunk) - 1)];
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
    ok = tokenizer_encode(v.t, text, len, true, false, ids, len, &n, err) == ERR_OK;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
    double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
    printf("  100 KB -> %zu tokens in %.1f ms of CPU\n", n, ms);
    ok = ok && round_trips(v.t, text, len);
    ok = ok &&
         tokenizer_encode(v.t, text, len, true, false, NULL, 0, &n2, err) == ERR_BAD_REQUEST &&
         n2 == n;
    vocab_close(&v);
    free(text);
    free(ids);
    CHECKF(ok, "encode failed: %s", err);
    CHECKF(ms < 2000, "100 KB took %.1f ms of CPU", ms);
}

static void
test_empty_and_small_buffers(void)
{
    struct vocab v;
    int32_t ids[4];
    char out[8], err[ERR_MSG_MAX];
    size_t n = 99, len;
    int rc;

    if (!vocab_open(&v, "models/llama-2-tiny-random.gguf"))
        return;
    rc = tokenizer_encode(v.t, "", 0, true, false, ids, 4, &n, err);
    bool empty_bos = rc == ERR_OK && n == 1 && ids[0] == 1;
    rc = tokenizer_encode(v.t, "", 0, false, false, ids, 4, &n, err);
    bool empty_nobos = rc == ERR_OK && n == 0;
    /* "Hello world" is 2 ids: with BOS 3 do not fit in 2, and the first 2 are written */
    rc = tokenizer_encode(v.t, "Hello world", 11, true, false, ids, 2, &n, err);
    bool small = rc == ERR_BAD_REQUEST && n == 3 && ids[0] == 1 && ids[1] == 15043 &&
                 strcmp(err, "text needs 3 tokens, room for 2") == 0;
    int32_t hello[2] = {15043, 3186};
    rc = tokenizer_decode(v.t, hello, 2, out, sizeof(out), &len, err);
    bool dsmall = rc == ERR_BAD_REQUEST && len == 11 && memcmp(out, "Hello wo", 8) == 0;
    int32_t bad_id[2] = {15043, 32000};
    rc = tokenizer_decode(v.t, bad_id, 2, out, sizeof(out), &len, err);
    bool drange = rc == ERR_BAD_REQUEST && strstr(err, "32000") != NULL;
    bool dempty = tokenizer_decode(v.t, NULL, 0, out, 0, &len, err) == ERR_OK && len == 0;
    vocab_close(&v);
    CHECK(empty_bos);
    CHECK(empty_nobos);
    CHECKF(small, "small buffer: rc %d n %zu err '%s'", rc, n, err);
    CHECK(dsmall);
    CHECK(drange);
    CHECK(dempty);
}

/* Special ids, eog, pieces of control and byte tokens, the leading-space rule on BOS. */
static void
test_specials_and_pieces(void)
{
    struct vocab v;
    char buf[64], err[ERR_MSG_MAX];
    size_t len;

    if (!vocab_open(&v, "models/vocab/ggml-vocab-phi-3.gguf"))
        return;
    bool ids_ok = tokenizer_n_vocab(v.t) == 32064 && tokenizer_bos(v.t) == 1 &&
                  tokenizer_eos(v.t) == 32000 && tokenizer_add_bos(v.t);
    /* <|endoftext|> (EOS) and <|end|> (EOT, found by its text) end generation; BOS does not */
    size_t tl;
    const char *end_text = tokenizer_token_text(v.t, 32007, &tl);
    bool eog_ok = tokenizer_is_eog(v.t, 32000) && end_text != NULL && tl == 7 &&
                  memcmp(end_text, "<|end|>", 7) == 0 && tokenizer_is_eog(v.t, 32007) &&
                  !tokenizer_is_eog(v.t, 1) && !tokenizer_is_eog(v.t, -1) &&
                  !tokenizer_is_eog(v.t, 99999);
    /* control tokens print nothing; byte tokens their byte; ▁ becomes a space */
    bool piece_ok = tokenizer_piece(v.t, 1, buf, sizeof(buf)) == 0 &&
                    tokenizer_piece(v.t, 32007, buf, sizeof(buf)) == 0 &&
                    tokenizer_piece(v.t, 13, buf, sizeof(buf)) == 1 && buf[0] == '\n' &&
                    tokenizer_piece(v.t, 29871, buf, sizeof(buf)) == 1 && buf[0] == ' ' &&
                    tokenizer_piece(v.t, -5, buf, sizeof(buf)) == 0;
    /* <|end|> is control now: as plain text it is not recognised, with parse_special it is */
    int32_t ids[32];
    size_t n;
    bool plain =
        tokenizer_encode(v.t, "<|end|>", 7, false, false, ids, 32, &n, err) == ERR_OK && n > 1;
    bool parsed =
        tokenizer_encode(v.t, "hi<|end|>  x", 12, false, true, ids, 32, &n, err) == ERR_OK &&
        n >= 2 && ids[n - 2] == 32007;
    /* detok: BOS first means the next token keeps its space (llama.cpp strips only token 0) */
    int32_t seq[3] = {1, 15043, 3186};
    bool dec = tokenizer_decode(v.t, seq, 3, buf, sizeof(buf), &len, err) == ERR_OK && len == 12 &&
               memcmp(buf, " Hello world", 12) == 0;
    vocab_close(&v);
    CHECK(ids_ok);
    CHECK(eog_ok);
    CHECK(piece_ok);
    CHECK(plain);
    CHECK(parsed);
    CHECKF(dec, "got '%.*s'", (int)len, buf);
}

/*
 * BPE vocabularies: BOS per metadata and pre-tokenizer (Llama-3 adds <|begin_of_text|>, Qwen2
 * does not), end-of-generation tokens found by text, special tokens parsed only when asked,
 * detokenization with and without llama.cpp's space clean-up.
 */
static void
test_bpe_specials(void)
{
    struct vocab l, q, g2;
    int32_t ids[64];
    char buf[256], err[ERR_MSG_MAX];
    size_t n, len;

    if (!vocab_open(&l, "models/vocab/ggml-vocab-llama-bpe.gguf"))
        return;
    if (!vocab_open(&q, "models/vocab/ggml-vocab-qwen2.gguf")) {
        vocab_close(&l);
        return;
    }
    if (!vocab_open(&g2, "models/vocab/ggml-vocab-gpt-2.gguf")) {
        vocab_close(&l);
        vocab_close(&q);
        return;
    }
    bool bos = tokenizer_add_bos(l.t) && tokenizer_bos(l.t) == 128000 && !tokenizer_add_bos(q.t) &&
               !tokenizer_add_bos(g2.t);
    bool eog = tokenizer_is_eog(l.t, 128009) && tokenizer_is_eog(l.t, 128001) &&
               !tokenizer_is_eog(l.t, 128000) && !tokenizer_is_eog(l.t, 128006) &&
               tokenizer_is_eog(q.t, 151645) && tokenizer_is_eog(q.t, 151643) &&
               !tokenizer_is_eog(q.t, 151644) && tokenizer_is_eog(g2.t, 50256);
    /* "<|eot_id|>" is one id only with parse_special; control pieces print nothing */
    bool plain = tokenizer_encode(l.t, "hi<|eot_id|>", 12, true, false, ids, 64, &n, err) == 0 &&
                 n > 3 && ids[0] == 128000;
    bool parsed = tokenizer_encode(l.t, "hi<|eot_id|>", 12, true, true, ids, 64, &n, err) == 0 &&
                  n == 3 && ids[0] == 128000 && ids[2] == 128009;
    bool dec = parsed && tokenizer_decode(l.t, ids, n, buf, sizeof(buf), &len, err) == 0 &&
               len == 2 && memcmp(buf, "hi", 2) == 0;
    /* clean-up: GPT-2 drops the spaces before , . and 's 're, and around a lone ' (llama.cpp's
       clean_spaces); Qwen2 keeps the text as it was */
    static const char text[] = "a , b . c ' d it 's we 're do 't";
    static const char cleaned[] = "a, b. c'd it's we're do 't";
    bool clean = tokenizer_encode(g2.t, text, strlen(text), false, false, ids, 64, &n, err) == 0 &&
                 tokenizer_decode(g2.t, ids, n, buf, sizeof(buf), &len, err) == 0 &&
                 len == strlen(cleaned) && memcmp(buf, cleaned, len) == 0;
    size_t small_len;
    bool small = tokenizer_decode(g2.t, ids, n, buf, 3, &small_len, err) == ERR_BAD_REQUEST &&
                 small_len == strlen(cleaned) && memcmp(buf, "a, ", 3) == 0 &&
                 tokenizer_decode(g2.t, ids, n, NULL, 0, &small_len, err) == ERR_BAD_REQUEST &&
                 small_len == strlen(cleaned);
    bool kept = tokenizer_encode(q.t, text, strlen(text), false, false, ids, 64, &n, err) == 0 &&
                tokenizer_decode(q.t, ids, n, buf, sizeof(buf), &len, err) == 0 &&
                len == strlen(text) && memcmp(buf, text, len) == 0;
    vocab_close(&l);
    vocab_close(&q);
    vocab_close(&g2);
    CHECK(bos);
    CHECK(eog);
    CHECK(plain);
    CHECK(parsed);
    CHECK(dec);
    CHECKF(clean, "got '%.*s'", (int)len, buf);
    CHECK(small);
    CHECK(kept);
}

/*
 * Any bytes through every BPE vocabulary: invalid UTF-8 becomes U+FFFD (as llama.cpp reads
 * it), NUL is a byte like any other, and valid UTF-8 round-trips byte for byte (no vocabulary
 * here drops a byte: every single-byte character is a token). Then 100 KB in well under a second.
 */
static void
test_bpe_robust(void)
{
    static const char *const files[] = {
        "models/vocab/ggml-vocab-llama-bpe.gguf",      "models/vocab/ggml-vocab-qwen2.gguf",
        "models/vocab/ggml-vocab-gpt-2.gguf",          "models/vocab/ggml-vocab-deepseek-llm.gguf",
        "models/vocab/ggml-vocab-deepseek-coder.gguf", "models/vocab/ggml-vocab-falcon.gguf",
    };
    static const char chunk[] =
        "Once upon a time, in a land far away, there lived a caf\xc3\xa9 "
        "owner named \xe6\x97\xa5\xe6\x9c\xac who loved \xf0\x9f\x8d\x95 "
        "and\tnumbers like 3.14159!\n  \xc2\xa0 x\x00y 'll \xe3\x80\x80\xe3\x80\x82";
    static const char bad[] = "a\xff b\xc3 \xed\xa0\x80 \xf5\x80\x80\x80z";
    /* U+FFFD for \xff, for \xc3 (cut short), a surrogate kept as its bytes, U+FFFD x4 */
    static const char bad_out[] = "a\xef\xbf\xbd b\xef\xbf\xbd \xed\xa0\x80 "
                                  "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbdz";
    size_t len = 100 * 1024;
    char *text = malloc(len), *out = malloc(len + 1);
    int32_t *ids = malloc(4 * len * sizeof(*ids));
    char err[ERR_MSG_MAX];

    for (size_t i = 0; i < len; i++)
        text[i] = chunk[i % (sizeof(chunk) - 1)];
    for (size_t f = 0; f < sizeof(files) / sizeof(files[0]); f++) {
        struct vocab v;
        struct timespec a, b;
        size_t n, olen;

        if (!vocab_open(&v, files[f]))
            break;
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        int rc = tokenizer_encode(v.t, text, len, false, false, ids, 4 * len, &n, err);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        printf("  %s: 100 KB -> %zu tokens in %.1f ms of CPU\n", files[f] + 13, n, ms);
        bool rt = rc == ERR_OK && n <= tokenizer_max_tokens(v.t, len) &&
                  tokenizer_decode(v.t, ids, n, out, len + 1, &olen, err) == ERR_OK;
        /* the clean-up of some vocabularies changes " ," and friends: compare without it where
           the chunk has none of those */
        rt = rt && olen == len && memcmp(out, text, len) == 0;
        rc = tokenizer_encode(v.t, bad, sizeof(bad) - 1, false, false, ids, 64, &n, err);
        bool inv = rc == ERR_OK && tokenizer_decode(v.t, ids, n, out, 64, &olen, err) == 0 &&
                   olen == sizeof(bad_out) - 1 && memcmp(out, bad_out, olen) == 0;
        bool empty = tokenizer_encode(v.t, "", 0, false, false, ids, 4, &n, err) == 0 && n == 0 &&
                     tokenizer_encode(v.t, "", 0, true, false, ids, 4, &n, err) == 0 && n == 1 &&
                     ids[0] == tokenizer_bos(v.t);
        vocab_close(&v);
        CHECKF(rt, "%s: 100 KB do not round-trip (%s)", files[f], err);
        CHECKF(ms < 1000, "%s: 100 KB took %.1f ms of CPU", files[f], ms);
        CHECKF(inv, "%s: invalid UTF-8 came back as %zu bytes", files[f], olen);
        CHECK(empty);
    }

    /* 100 KB of one character in one piece: a long merge, and 2398 user-defined tokens that are
       never there (the special-token split skips them without a search) */
    struct vocab v;
    if (vocab_open(&v, "models/vocab/ggml-vocab-deepseek-llm.gguf")) {
        struct timespec a, b;
        size_t n;
        memset(text, '\t', len);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &a);
        int rc = tokenizer_encode(v.t, text, len, false, false, ids, 4 * len, &n, err);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &b);
        double ms = (b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) / 1e6;
        printf("  100 KB of tabs -> %zu tokens in %.1f ms of CPU\n", n, ms);
        vocab_close(&v);
        CHECK(rc == ERR_OK && n > 0);
        CHECKF(ms < 2000, "100 KB of tabs took %.1f ms of CPU", ms);
    }
    free(text);
    free(out);
    free(ids);
}

/*
 * Tokenizer metadata written into a tensor-less GGUF in memory (tests/gguf_write.h): small
 * vocabularies whose scores we choose, and broken metadata.
 */
struct synth {
    struct gguf_writer *w;
    uint8_t *buf;
    struct gguf *g;
    struct tokenizer *t;
};

static struct gguf_writer *
synth_begin(struct synth *s)
{
    memset(s, 0, sizeof(*s));
    gguf_writer_new_mem(&s->w, NULL);
    return s->w;
}

/* Finishes the file and loads it: tokenizer_load's code, or a writer/reader failure's + 1000. */
static int
synth_load(struct synth *s, char *err)
{
    size_t size;
    int rc = gguf_writer_finish(s->w, err);

    if (rc != ERR_OK)
        return 1000 + rc;
    s->buf = gguf_writer_take(s->w, &size);
    if ((rc = gguf_open_buffer(&s->g, s->buf, size, err)) != ERR_OK)
        return 1000 + rc;
    return tokenizer_load(&s->t, s->g, err);
}

static void
synth_end(struct synth *s)
{
    tokenizer_free(s->t);
    gguf_close(s->g);
    free(s->buf);
    gguf_writer_free(s->w);
}

static const char *const tiny_tokens[] = {
    "<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b", "c", "ab", "bc", "ca", "<0x41>", "<X>", "<C>",
};
static const float tiny_scores[] = {0, 0, 0, -1, -2, -2, -2, -5, -5, -3, 0, 0, 0};
static const int32_t tiny_types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 6, 4, 3};

/* Encodes s on a tiny vocabulary; returns the ids as "a b c" text (or the error). */
static const char *
tiny_encode(const struct tokenizer *t, const char *s, bool special)
{
    static char out[256], err[ERR_MSG_MAX];
    int32_t ids[64];
    size_t n, o = 0;

    if (tokenizer_encode(t, s, strlen(s), false, special, ids, 64, &n, err) != ERR_OK)
        return err;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, sizeof(out) - o, "%s%d", i ? " " : "", ids[i]);
    return out;
}

static void
test_merge_rules(void)
{
    static const struct {
        const char *text;
        bool special;
        const char *want;
    } cases[] = {
        {"abc", false, "7 6"},       /* "ab" and "bc" score the same: the leftmost pair merges */
        {"abca", false, "7 9"},      /* "ca" scores higher than both and merges first */
        {"x", false, "0"},           /* no token, no byte token: unknown */
        {"A<X>b", false, "10 11 5"}, /* <0x41> for "A"; user-defined <X> always splits */
        {"<C>", false, "0 0 0"},     /* control <C> is plain text without parse_special */
        {"<C>", true, "12"},
    };
    struct synth s;
    struct gguf_writer *w = synth_begin(&s);
    char err[ERR_MSG_MAX];
    int bad = 0;

    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tiny_tokens, 13);
    gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, tiny_scores, 13);
    gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, tiny_types, 13);
    gguf_writer_add_bool(w, "tokenizer.ggml.add_space_prefix", false);
    int rc = synth_load(&s, err);
    for (size_t i = 0; rc == ERR_OK && i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = tiny_encode(s.t, cases[i].text, cases[i].special);
        if (strcmp(got, cases[i].want) != 0) {
            printf("  '%s' (special %d): got %s, want %s\n", cases[i].text, cases[i].special, got,
                   cases[i].want);
            bad++;
        }
    }
    synth_end(&s);
    CHECKF(rc == ERR_OK, "%s", err);
    CHECKF(bad == 0, "%d cases differ", bad);
}

/*
 * A small byte-level BPE vocabulary: "Ġ" (U+0120) is the space, "Ã" "©" the bytes of "é".
 * Merges: "b c" first, then "a b", "a bc", "Ġ a", "b a" ("ba" is no token; no merge makes "ca").
 */
static const char *const bpe_tokens[] = {
    "a",
    "b",
    "c",
    "ab",
    "bc",
    "abc",
    "\xc4\xa0",
    "\xc4\xa0"
    "a",
    "<|endoftext|>",
    "ca",
    "\xe2\x82\xac",
    "\xc3\x83",
};
static const int32_t bpe_types[] = {1, 1, 1, 1, 1, 1, 1, 1, 3, 1, 1, 1};
static const char *const bpe_merges[] = {"b c", "a b", "a bc", "\xc4\xa0 a", "b a", "nospace"};

static int
bpe_synth(struct synth *s, const char *pre, char *err)
{
    struct gguf_writer *w = synth_begin(s);

    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre != NULL)
        gguf_writer_add_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", bpe_tokens, 12);
    gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, bpe_types, 12);
    gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", bpe_merges, 6);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 8);
    return synth_load(s, err);
}

static void
test_bpe_merge_rules(void)
{
    static const struct {
        const char *pre, *text, *want;
    } cases[] = {
        {"gpt-2", "abc", "5"},          /* "b c" ranks before "a b": bc, then a+bc */
        {"gpt-2", "ab", "3"},           /* "a b" */
        {"gpt-2", "ba", "1 0"},         /* "b a" merges into no token: its bytes, one by one */
        {"gpt-2", "ca", "2 0"},         /* no merge makes the token "ca"... */
        {"llama-bpe", "ca", "9"},       /* ...but Llama-3 takes a piece that is a token as it is */
        {"gpt-2", " a", "7"},           /* the space is "Ġ" and merges with the letter */
        {"gpt-2", "a\xc3\xa9", "0 11"}, /* "Ã" "©": © is no token and is dropped (llama.cpp) */
        {"gpt-2", "bab", "1 3"},        /* "a b" ranks before "b a" */
        {NULL, "a1", "0"},              /* no pre: the "default" splitter; "1" is no token */
    };
    char err[ERR_MSG_MAX];
    int bad = 0;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct synth s;
        int rc = bpe_synth(&s, cases[i].pre, err);
        const char *got = rc == ERR_OK ? tiny_encode(s.t, cases[i].text, false) : err;
        if (strcmp(got, cases[i].want) != 0) {
            printf("  %s '%s': got %s, want %s\n", cases[i].pre, cases[i].text, got, cases[i].want);
            bad++;
        }
        synth_end(&s);
    }
    CHECKF(bad == 0, "%d cases differ", bad);

    /* pieces: GPT-2 characters back to bytes; a character outside the map as llama.cpp prints it */
    struct synth s;
    char buf[64];
    int rc = bpe_synth(&s, "gpt-2", err);
    size_t n1 = rc == 0 ? tokenizer_piece(s.t, 7, buf, sizeof(buf)) : 0;
    bool space = n1 == 2 && memcmp(buf, " a", 2) == 0;
    size_t n2 = rc == 0 ? tokenizer_piece(s.t, 10, buf, sizeof(buf)) : 0;
    bool unk = n2 == 22 && memcmp(buf, "[UNK_BYTE_0xe282ac\xe2\x82\xac]", 22) == 0;
    size_t n3 = rc == 0 ? tokenizer_piece(s.t, 11, buf, sizeof(buf)) : 0;
    bool byte = n3 == 1 && buf[0] == '\xc3';
    bool special = rc == 0 && strcmp(tiny_encode(s.t, "ab<|endoftext|>c", true), "3 8 2") == 0;
    bool eog = rc == 0 && tokenizer_is_eog(s.t, 8) && tokenizer_eos(s.t) == 8 &&
               tokenizer_bos(s.t) == 11 && !tokenizer_add_bos(s.t) &&
               tokenizer_piece(s.t, 8, buf, sizeof(buf)) == 0;
    synth_end(&s);
    CHECK(space);
    CHECKF(unk, "%zu '%.*s'", n2, (int)n2, buf);
    CHECK(byte);
    CHECK(special);
    CHECK(eog);
}

/* Builds a vocabulary with one thing broken (by fill) and checks the error's code and words. */
static bool
load_fails(void (*fill)(struct gguf_writer *), int want, const char *words)
{
    struct synth s;
    char err[ERR_MSG_MAX] = "";

    fill(synth_begin(&s));
    int rc = synth_load(&s, err);
    bool ok = rc == want && s.t == NULL && strstr(err, words) != NULL;
    if (!ok)
        printf("  got %d '%s', want %d '%s'\n", rc, err, want, words);
    synth_end(&s);
    return ok;
}

static const char *const three[] = {"<unk>", "<s>", "</s>"};

static void
fill_no_model(struct gguf_writer *w)
{
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
}

static void
fill_t5(struct gguf_writer *w)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "t5");
}

static void
fill_int_tokens(struct gguf_writer *w)
{
    static const int32_t ints[3] = {1, 2, 3};

    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr(w, "tokenizer.ggml.tokens", GGUF_VTYPE_INT32, ints, 3);
}

static void
fill_short_scores(struct gguf_writer *w)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
    gguf_writer_add_arr(w, "tokenizer.ggml.scores", GGUF_VTYPE_FLOAT32, tiny_scores, 2);
}

static void
fill_float_types(struct gguf_writer *w)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
    gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_FLOAT32, tiny_scores, 3);
}

static void
fill_bad_byte(struct gguf_writer *w)
{
    static const char *const tokens[] = {"<unk>", "<s>", "<0xZZ>"};
    static const int32_t types[] = {2, 3, 6};

    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", tokens, 3);
    gguf_writer_add_arr(w, "tokenizer.ggml.token_type", GGUF_VTYPE_INT32, types, 3);
}

static void
fill_string_bos(struct gguf_writer *w)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
    gguf_writer_add_str(w, "tokenizer.ggml.bos_token_id", "one");
}

static void
fill_bpe_no_merges(struct gguf_writer *w)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
}

static void
fill_bpe_unknown_pre(struct gguf_writer *w)
{
    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_str(w, "tokenizer.ggml.pre", "chameleon");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
    gguf_writer_add_arr_str(w, "tokenizer.ggml.merges", three, 3);
}

static void
fill_bpe_int_merges(struct gguf_writer *w)
{
    static const int32_t ints[3] = {1, 2, 3};

    gguf_writer_add_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
    gguf_writer_add_arr(w, "tokenizer.ggml.merges", GGUF_VTYPE_INT32, ints, 3);
}

static void
test_load_errors(void)
{
    CHECK(load_fails(fill_no_model, ERR_FORMAT, "tokenizer.ggml.model"));
    CHECK(load_fails(fill_t5, ERR_UNSUPPORTED, "'t5'"));
    CHECK(load_fails(fill_int_tokens, ERR_FORMAT, "tokenizer.ggml.tokens"));
    CHECK(load_fails(fill_short_scores, ERR_FORMAT, "tokenizer.ggml.scores"));
    CHECK(load_fails(fill_float_types, ERR_FORMAT, "tokenizer.ggml.token_type"));
    CHECK(load_fails(fill_bad_byte, ERR_FORMAT, "tokenizer.ggml.tokens[2]"));
    CHECK(load_fails(fill_string_bos, ERR_FORMAT, "tokenizer.ggml.bos_token_id"));
    CHECK(load_fails(fill_bpe_no_merges, ERR_FORMAT, "tokenizer.ggml.merges"));
    CHECK(load_fails(fill_bpe_unknown_pre, ERR_UNSUPPORTED, "tokenizer.ggml.pre 'chameleon'"));
    CHECK(load_fails(fill_bpe_int_merges, ERR_FORMAT, "tokenizer.ggml.merges"));
}

/* No scores or types is fine (all normal, score 0); an id outside the vocabulary keeps the
   default, as llama.cpp does with the 4294967295 files write for "none". */
static void
test_load_defaults(void)
{
    struct synth s;
    struct gguf_writer *w = synth_begin(&s);
    char err[ERR_MSG_MAX];

    gguf_writer_add_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_add_arr_str(w, "tokenizer.ggml.tokens", three, 3);
    gguf_writer_add_u32(w, "tokenizer.ggml.eos_token_id", 4294967295u);
    int rc = synth_load(&s, err);
    bool ok = rc == ERR_OK && tokenizer_eos(s.t) == 2 && tokenizer_bos(s.t) == 1 &&
              tokenizer_is_eog(s.t, 2) && !tokenizer_is_eog(s.t, 1) && tokenizer_add_bos(s.t);
    synth_end(&s);
    CHECKF(ok, "%d %s", rc, err);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_ref_stories260k),
        TEST(test_ref_llama2_tiny),
        TEST(test_ref_llama_spm),
        TEST(test_ref_phi3),
        TEST(test_ref_baichuan),
        TEST(test_ref_llama_bpe),
        TEST(test_ref_qwen2),
        TEST(test_ref_gpt2),
        TEST(test_ref_gpt_neox),
        TEST(test_ref_deepseek_llm),
        TEST(test_ref_deepseek_coder),
        TEST(test_ref_falcon),
        TEST(test_ref_starcoder),
        TEST(test_ref_refact),
        TEST(test_ref_mpt),
        TEST(test_vectors_llama_spm),
        TEST(test_vectors_phi3),
        TEST(test_vectors_llama_bpe),
        TEST(test_vectors_qwen2),
        TEST(test_vectors_gpt2),
        TEST(test_vectors_deepseek_llm),
        TEST(test_vectors_deepseek_coder),
        TEST(test_vectors_falcon),
        TEST(test_vectors_starcoder),
        TEST(test_vectors_refact),
        TEST(test_vectors_mpt),
        TEST(test_model_prompts),
        TEST(test_invalid_utf8_and_nul),
        TEST(test_big_input_fast),
        TEST(test_empty_and_small_buffers),
        TEST(test_specials_and_pieces),
        TEST(test_bpe_specials),
        TEST(test_bpe_robust),
        TEST(test_bpe_merge_rules),
        TEST(test_merge_rules),
        TEST(test_load_errors),
        TEST(test_load_defaults),
        {0},
    };
    return harness_run(tests, argc, argv);
}
