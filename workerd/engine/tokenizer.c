/*
 * tokenizer.c: the parts of tokenization every vocabulary type shares, following llama.cpp's
 * llama-vocab as of the reference commit (c392e50): loading tokenizer.* metadata into a table of
 * tokens (text view, score, attribute bits) with a hash index, the special ids and the fixes
 * llama.cpp applies by token text and model name, splitting the input around special tokens
 * before the algorithm runs, and pieces / detokenization (with the space clean-up BPE
 * vocabularies ask for). The algorithms themselves live in tokenizer_<kind>.c (tokenizer_impl.h).
 */
#include "workerd/engine/tokenizer.h"

#include "common/err.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer_impl.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* GGUF token types (tokenizer.ggml.token_type). */
enum gguf_token_type {
    GGUF_TOKEN_TYPE_NORMAL = 1,
    GGUF_TOKEN_TYPE_UNKNOWN = 2,
    GGUF_TOKEN_TYPE_CONTROL = 3,
    GGUF_TOKEN_TYPE_USER_DEFINED = 4,
    GGUF_TOKEN_TYPE_UNUSED = 5,
    GGUF_TOKEN_TYPE_BYTE = 6,
};

/*
 * Tokens llama.cpp recognises by text whatever their type in the file: they become control
 * tokens, and those marked eog end generation (end-of-turn and fill-in-the-middle markers).
 */
static const struct {
    const char *text;
    bool eog;
} known_tokens[] = {
    {"<|eot_id|>", true},
    {"<|im_end|>", true},
    {"<|end|>", true},
    {"<end_of_turn>", true},
    {"<|endoftext|>", true},
    {"<|eom_id|>", true},
    {"<EOT>", true},
    {"_<EOT>", true},
    {"<\xef\xbd\x9c"
     "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
     true}, /* DeepSeek */
    {"<|fim_prefix|>", false},
    {"<fim-prefix>", false},
    {"<\xef\xbd\x9c"
     "fim\xe2\x96\x81"
     "begin\xef\xbd\x9c>",
     false},
    {"<PRE>", false},
    {"\xe2\x96\x81<PRE>", false},
    {"<|fim_suffix|>", false},
    {"<fim-suffix>", false},
    {"<\xef\xbd\x9c"
     "fim\xe2\x96\x81hole\xef\xbd\x9c>",
     false},
    {"<SUF>", false},
    {"\xe2\x96\x81<SUF>", false},
    {"<|fim_middle|>", false},
    {"<fim-middle>", false},
    {"<\xef\xbd\x9c"
     "fim\xe2\x96\x81"
     "end\xef\xbd\x9c>",
     false},
    {"<MID>", false},
    {"\xe2\x96\x81<MID>", false},
};

static uint32_t
text_hash(const char *s, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

int32_t
tokenizer_lookup(const struct tokenizer *t, const char *s, size_t len)
{
    for (size_t i = text_hash(s, len) & t->slot_mask;; i = (i + 1) & t->slot_mask) {
        uint32_t slot = t->slots[i];
        if (slot == 0)
            return -1;
        const struct tok_entry *e = &t->vocab[slot - 1];
        if (e->len == len && memcmp(e->text, s, len) == 0)
            return (int32_t)(slot - 1);
    }
}

/* Indexes every non-empty token text; a later duplicate replaces an earlier one. */
static int
build_index(struct tokenizer *t, char *err)
{
    size_t cap = 16;

    while (cap < 2 * t->n_vocab)
        cap *= 2;
    t->slots = calloc(cap, sizeof(*t->slots));
    if (t->slots == NULL)
        return err_set(err, ERR_NOMEM, "tokenizer: no memory for a %zu-slot index", cap);
    t->slot_mask = cap - 1;
    for (size_t id = 0; id < t->n_vocab; id++) {
        const struct tok_entry *e = &t->vocab[id];
        if (e->len == 0)
            continue;
        size_t i = text_hash(e->text, e->len) & t->slot_mask;
        while (t->slots[i] != 0) {
            const struct tok_entry *o = &t->vocab[t->slots[i] - 1];
            if (o->len == e->len && memcmp(o->text, e->text, e->len) == 0)
                break;
            i = (i + 1) & t->slot_mask;
        }
        t->slots[i] = (uint32_t)id + 1;
        if (e->len > t->max_token_len)
            t->max_token_len = e->len;
    }
    return ERR_OK;
}

static uint32_t
attr_of_type(int64_t type)
{
    switch (type) {
    case GGUF_TOKEN_TYPE_NORMAL:
        return TOK_ATTR_NORMAL;
    case GGUF_TOKEN_TYPE_UNKNOWN:
        return TOK_ATTR_UNKNOWN;
    case GGUF_TOKEN_TYPE_CONTROL:
        return TOK_ATTR_CONTROL;
    case GGUF_TOKEN_TYPE_USER_DEFINED:
        return TOK_ATTR_USER_DEFINED;
    case GGUF_TOKEN_TYPE_UNUSED:
        return TOK_ATTR_UNUSED;
    case GGUF_TOKEN_TYPE_BYTE:
        return TOK_ATTR_BYTE;
    default:
        return 0; /* undefined: never output, never matched as special */
    }
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Reads tokens, scores and token types into t->vocab. */
static int
load_vocab(struct tokenizer *t, const struct gguf *g, char *err)
{
    const struct gguf_arr *tokens, *scores = NULL, *types = NULL;
    int rc;

    rc = gguf_get_arr(g, "tokenizer.ggml.tokens", &tokens, err);
    if (rc == ERR_NOT_FOUND)
        return err_set(err, ERR_FORMAT, "key 'tokenizer.ggml.tokens' is missing");
    if (rc != ERR_OK)
        return rc;
    if (tokens->type != GGUF_VTYPE_STRING || tokens->n == 0 || tokens->n >= INT32_MAX)
        return err_set(err, ERR_FORMAT,
                       "key 'tokenizer.ggml.tokens' must be a non-empty array of strings "
                       "(has %llu %s)",
                       (unsigned long long)tokens->n, gguf_vtype_name(tokens->type));
    t->n_vocab = tokens->n;

    rc = gguf_get_arr(g, "tokenizer.ggml.scores", &scores, err);
    if (rc == ERR_NOT_FOUND)
        scores = NULL;
    else if (rc != ERR_OK)
        return rc;
    else if ((scores->type != GGUF_VTYPE_FLOAT32 && scores->type != GGUF_VTYPE_INT32) ||
             scores->n < t->n_vocab)
        return err_set(err, ERR_FORMAT,
                       "key 'tokenizer.ggml.scores' must hold %zu float32 values (has %llu %s)",
                       t->n_vocab, (unsigned long long)scores->n, gguf_vtype_name(scores->type));

    rc = gguf_get_arr(g, "tokenizer.ggml.token_type", &types, err);
    if (rc == ERR_NOT_FOUND)
        types = NULL;
    else if (rc != ERR_OK)
        return rc;
    else if (types->type != GGUF_VTYPE_INT32 || types->n < t->n_vocab)
        return err_set(err, ERR_FORMAT,
                       "key 'tokenizer.ggml.token_type' must hold %zu int32 values (has %llu %s)",
                       t->n_vocab, (unsigned long long)types->n, gguf_vtype_name(types->type));

    t->vocab = calloc(t->n_vocab, sizeof(*t->vocab));
    if (t->vocab == NULL)
        return err_set(err, ERR_NOMEM, "tokenizer: no memory for %zu tokens", t->n_vocab);
    for (size_t i = 0; i < t->n_vocab; i++) {
        struct tok_entry *e = &t->vocab[i];

        if (tokens->strs[i].len > UINT32_MAX / 2)
            return err_set(err, ERR_FORMAT, "tokenizer.ggml.tokens[%zu]: text too long", i);
        e->text = tokens->strs[i].data;
        e->len = (uint32_t)tokens->strs[i].len;
        e->score = scores ? (float)gguf_arr_get_float(scores, i) : 0.0f;
        e->attr = types ? attr_of_type(gguf_arr_get_int(types, i)) : TOK_ATTR_NORMAL;
        if (e->attr & TOK_ATTR_BYTE) {
            int hi = e->len == 6 ? hex_digit(e->text[3]) : -1;
            int lo = e->len == 6 ? hex_digit(e->text[4]) : -1;
            if (hi < 0 || lo < 0 || memcmp(e->text, "<0x", 3) != 0 || e->text[5] != '>')
                return err_set(err, ERR_FORMAT,
                               "tokenizer.ggml.tokens[%zu]: byte token '%.*s' is not <0xXX>", i,
                               (int)(e->len < 32 ? e->len : 32), e->text);
            e->byte = (uint8_t)(hi * 16 + lo);
        }
    }
    return ERR_OK;
}

/*
 * Reads an optional token id key into *id; an id outside the vocabulary keeps the default, as in
 * llama.cpp (files write 4294967295 for "none").
 */
static int
load_id(const struct tokenizer *t, const struct gguf *g, const char *key, int32_t *id, char *err)
{
    int64_t v;
    int rc = gguf_get_int(g, key, &v, err);

    if (rc == ERR_NOT_FOUND)
        return ERR_OK;
    if (rc != ERR_OK)
        return rc;
    if (v >= 0 && (uint64_t)v < t->n_vocab)
        *id = (int32_t)v;
    return ERR_OK;
}

static int
load_flag(const struct gguf *g, const char *key, bool *flag, char *err)
{
    int rc = gguf_get_bool(g, key, flag, err);

    return rc == ERR_NOT_FOUND ? ERR_OK : rc;
}

/* Special ids, flags, and the attributes llama.cpp derives from token texts. */
static int
load_specials(struct tokenizer *t, const struct gguf *g, char *err)
{
    static const struct {
        const char *key;
        size_t field;
    } ids[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(struct tokenizer, bos)},
        {"tokenizer.ggml.eos_token_id", offsetof(struct tokenizer, eos)},
        {"tokenizer.ggml.eot_token_id", offsetof(struct tokenizer, eot)},
        {"tokenizer.ggml.eom_token_id", offsetof(struct tokenizer, eom)},
        {"tokenizer.ggml.unknown_token_id", offsetof(struct tokenizer, unk)},
    };
    int rc;

    /* llama.cpp's defaults per type (SentencePiece 1, 2, 0; BPE 11, 11, none), dropped when the
       vocabulary is too small for them; tokenizer_load set add_bos's default */
    int32_t bos = t->kind == TOKENIZER_KIND_SPM ? 1 : 11,
            eos = t->kind == TOKENIZER_KIND_SPM ? 2 : 11;
    t->bos = (size_t)bos < t->n_vocab ? bos : -1;
    t->eos = (size_t)eos < t->n_vocab ? eos : -1;
    t->unk = t->kind == TOKENIZER_KIND_SPM ? 0 : -1;
    t->eot = t->eom = -1;
    t->add_eos = false;
    t->add_space_prefix = t->kind == TOKENIZER_KIND_SPM;
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++)
        if ((rc = load_id(t, g, ids[i].key, (int32_t *)((char *)t + ids[i].field), err)) != 0)
            return rc;
    if ((rc = load_flag(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err)) != 0 ||
        (rc = load_flag(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err)) != 0 ||
        (rc = load_flag(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix, err)) != 0)
        return rc;
    if (t->add_bos && t->bos < 0)
        return err_set(err, ERR_FORMAT,
                       "tokenizer.ggml.add_bos_token is true but there is no BOS token");
    if (t->add_eos && t->eos < 0)
        return err_set(err, ERR_FORMAT,
                       "tokenizer.ggml.add_eos_token is true but there is no EOS token");

    for (size_t i = 0; i < sizeof(known_tokens) / sizeof(known_tokens[0]); i++) {
        int32_t id = tokenizer_lookup(t, known_tokens[i].text, strlen(known_tokens[i].text));
        if (id < 0)
            continue;
        t->vocab[id].attr |= TOK_ATTR_CONTROL | (known_tokens[i].eog ? TOK_ATTR_EOG : 0);
    }
    if (t->eos >= 0)
        t->vocab[t->eos].attr |= TOK_ATTR_EOG;
    if (t->eot >= 0)
        t->vocab[t->eot].attr |= TOK_ATTR_EOG;
    if (t->eom >= 0)
        t->vocab[t->eom].attr |= TOK_ATTR_EOG;
    return ERR_OK;
}

/* The id a byte falls back to: its <0xXX> token, else a token of that one byte, else unk. */
static void
load_byte_tokens(struct tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char hex[7], one = (char)b;

        snprintf(hex, sizeof(hex), "<0x%02X>", b);
        int32_t id = tokenizer_lookup(t, hex, 6);
        if (id < 0)
            id = tokenizer_lookup(t, &one, 1);
        t->byte_token[b] = id >= 0 ? id : t->unk;
    }
}

/* Longest text first, then lowest id (llama.cpp leaves equal lengths in no set order). */
static int
cmp_special(const void *a, const void *b, void *ctx)
{
    const struct tokenizer *t = ctx;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint32_t lx = t->vocab[x].len, ly = t->vocab[y].len;

    if (lx != ly)
        return lx > ly ? -1 : 1;
    return x < y ? -1 : x > y;
}

static bool
contains_nocase(const char *s, size_t len, const char *word)
{
    size_t n = strlen(word);

    for (size_t i = 0; i + n <= len; i++)
        if (strncasecmp(s + i, word, n) == 0)
            return true;
    return false;
}

/*
 * The tokens split out of the input before the algorithm runs, longest first, and llama.cpp's
 * per-model strip rules (Phi-3: special tokens swallow the whitespace that follows them).
 */
static int
load_special_list(struct tokenizer *t, const struct gguf *g, char *err)
{
    const uint32_t special = TOK_ATTR_CONTROL | TOK_ATTR_USER_DEFINED | TOK_ATTR_UNKNOWN;
    struct gguf_str name = {0, NULL};
    int rc;

    t->specials = malloc(t->n_vocab * sizeof(*t->specials));
    if (t->specials == NULL)
        return err_set(err, ERR_NOMEM, "tokenizer: no memory for the special-token list");
    for (size_t id = 0; id < t->n_vocab; id++)
        if ((t->vocab[id].attr & special) && t->vocab[id].len > 0)
            t->specials[t->n_specials++] = (int32_t)id;
    qsort_r(t->specials, t->n_specials, sizeof(*t->specials), cmp_special, t);

    rc = gguf_get_str(g, "general.name", &name, err);
    if (rc != ERR_OK && rc != ERR_NOT_FOUND)
        return rc;
    if (contains_nocase(name.data, name.len, "phi-3") ||
        contains_nocase(name.data, name.len, "phi3")) {
        static const char *const no_strip[] = {"<unk>", "<s>", "<|endoftext|>"};
        int32_t id;

        for (size_t i = 0; i < t->n_specials; i++)
            t->vocab[t->specials[i]].attr |= TOK_ATTR_RSTRIP;
        if ((id = tokenizer_lookup(t, "</s>", 4)) >= 0)
            t->vocab[id].attr |= TOK_ATTR_RSTRIP;
        for (size_t i = 0; i < 3; i++)
            if ((id = tokenizer_lookup(t, no_strip[i], strlen(no_strip[i]))) >= 0)
                t->vocab[id].attr &= ~(uint32_t)TOK_ATTR_RSTRIP;
    }
    return ERR_OK;
}

int
tokenizer_load(struct tokenizer **out, const struct gguf *g, char *err)
{
    struct gguf_str model;
    struct tokenizer *t;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model, err);

    if (rc == ERR_NOT_FOUND)
        return err_set(err, ERR_FORMAT, "key 'tokenizer.ggml.model' is missing (no vocabulary)");
    if (rc != ERR_OK)
        return rc;
    bool spm = model.len == 5 && memcmp(model.data, "llama", 5) == 0;
    bool bpe = model.len == 4 && memcmp(model.data, "gpt2", 4) == 0;
    if (!spm && !bpe)
        return err_set(err, ERR_UNSUPPORTED, "tokenizer.ggml.model '%.*s' is not supported",
                       (int)(model.len < 64 ? model.len : 64), model.data);
    t = calloc(1, sizeof(*t));
    if (t == NULL)
        return err_set(err, ERR_NOMEM, "tokenizer: no memory");
    t->kind = spm ? TOKENIZER_KIND_SPM : TOKENIZER_KIND_BPE;
    t->add_bos = spm; /* BPE: the pre-tokenizer's default, set by tokenizer_bpe_load */
    if ((rc = load_vocab(t, g, err)) != ERR_OK || (rc = build_index(t, err)) != ERR_OK ||
        (bpe && (rc = tokenizer_bpe_load(t, g, err)) != ERR_OK) ||
        (rc = load_specials(t, g, err)) != ERR_OK || (rc = load_special_list(t, g, err)) != 0)
        goto fail;
    if (spm)
        load_byte_tokens(t);
    *out = t;
    return ERR_OK;
fail:
    tokenizer_free(t);
    return rc;
}

void
tokenizer_free(struct tokenizer *t)
{
    if (t == NULL)
        return;
    free(t->vocab);
    free(t->slots);
    free(t->specials);
    tokenizer_bpe_free(t->bpe);
    free(t);
}

size_t
tokenizer_n_vocab(const struct tokenizer *t)
{
    return t->n_vocab;
}

int32_t
tokenizer_bos(const struct tokenizer *t)
{
    return t->bos;
}

int32_t
tokenizer_eos(const struct tokenizer *t)
{
    return t->eos;
}

bool
tokenizer_add_bos(const struct tokenizer *t)
{
    return t->add_bos;
}

bool
tokenizer_is_eog(const struct tokenizer *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_vocab && (t->vocab[id].attr & TOK_ATTR_EOG);
}

const char *
tokenizer_token_text(const struct tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || (size_t)id >= t->n_vocab)
        return NULL;
    *len = t->vocab[id].len;
    return t->vocab[id].text;
}

/* A run of the input: plain text (id -1) or one special token. */
struct frag {
    size_t off, len;
    int32_t id;
};

struct frag_list {
    struct frag *a;
    size_t n, cap;
};

static bool
frag_push(struct frag_list *l, size_t off, size_t len, int32_t id)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        struct frag *a = realloc(l->a, cap * sizeof(*a));
        if (a == NULL)
            return false;
        l->a = a;
        l->cap = cap;
    }
    l->a[l->n++] = (struct frag){off, len, id};
    return true;
}

static bool
is_c_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/*
 * Splits text into plain runs and special tokens, as llama.cpp's tokenizer_st_partition: each
 * special token in turn (longest first) is cut out of every plain run at each leftmost
 * non-overlapping occurrence, with its strip rules applied to the neighbouring runs. Control and
 * unknown tokens take part only when parse_special; user-defined tokens always do. A token
 * whose first two bytes (its byte, for one-byte tokens) appear nowhere in the text is skipped
 * without a search: vocabularies with thousands of user-defined tokens stay linear in practice.
 */
static int
partition(const struct tokenizer *t, const char *text, size_t len, bool parse_special,
          struct frag_list *out, char *err)
{
    struct frag_list next = {NULL, 0, 0};
    uint64_t *pairs = calloc(65536 / 64 + 256 / 64, sizeof(*pairs)); /* byte pairs, then bytes */
    const unsigned char *u = (const unsigned char *)text;

    if (pairs == NULL || (len > 0 && !frag_push(out, 0, len, -1)))
        goto nomem;
    for (size_t i = 0; i < len; i++) {
        unsigned b = 65536u + u[i], p = i + 1 < len ? (unsigned)u[i] << 8 | u[i + 1] : b;
        pairs[b / 64] |= 1ull << (b % 64);
        pairs[p / 64] |= 1ull << (p % 64);
    }
    for (size_t s = 0; s < t->n_specials; s++) {
        int32_t id = t->specials[s];
        const struct tok_entry *e = &t->vocab[id];
        const unsigned char *et = (const unsigned char *)e->text;
        unsigned key = e->len == 1 ? 65536u + et[0] : (unsigned)et[0] << 8 | et[1];

        if (!parse_special && (e->attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN)))
            continue;
        if (!(pairs[key / 64] >> (key % 64) & 1))
            continue;
        next.n = 0;
        for (size_t f = 0; f < out->n; f++) {
            struct frag fr = out->a[f];
            if (fr.id >= 0) {
                if (!frag_push(&next, fr.off, fr.len, fr.id))
                    goto nomem;
                continue;
            }
            size_t off = fr.off, n = fr.len;
            for (;;) {
                const char *m = memmem(text + off, n, e->text, e->len);
                if (m == NULL) {
                    if (n > 0 && !frag_push(&next, off, n, -1))
                        goto nomem;
                    break;
                }
                size_t at = (size_t)(m - text), left = at - off;
                if (e->attr & TOK_ATTR_LSTRIP)
                    while (left > 0 && is_c_space(text[off + left - 1]))
                        left--;
                if ((left > 0 && !frag_push(&next, off, left, -1)) ||
                    !frag_push(&next, at, e->len, id))
                    goto nomem;
                n = off + n - (at + e->len);
                off = at + e->len;
                if (e->attr & TOK_ATTR_RSTRIP)
                    while (n > 0 && is_c_space(text[off])) {
                        off++;
                        n--;
                    }
            }
        }
        struct frag_list tmp = *out;
        *out = next;
        next = tmp;
    }
    free(pairs);
    free(next.a);
    return ERR_OK;
nomem:
    free(pairs);
    free(next.a);
    return err_set(err, ERR_NOMEM, "tokenize: no memory to split %zu bytes of text", len);
}

int
tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                 bool parse_special, int32_t *ids, size_t max, size_t *n, char *err)
{
    struct frag_list frags = {NULL, 0, 0};
    struct tok_out out = {ids, max, 0};
    bool prev_special = true; /* the text start counts as after a special token */
    int rc;

    if (add_bos && t->bos < 0)
        return err_set(err, ERR_BAD_REQUEST, "tokenize: the vocabulary has no BOS token");
    if ((rc = partition(t, text, len, parse_special, &frags, err)) != ERR_OK)
        goto done;
    if (add_bos)
        tok_out_push(&out, t->bos);
    for (size_t f = 0; f < frags.n; f++) {
        const struct frag *fr = &frags.a[f];
        if (fr->id >= 0) {
            tok_out_push(&out, fr->id);
            prev_special = true;
            continue;
        }
        switch (t->kind) {
        case TOKENIZER_KIND_SPM:
            rc = tokenizer_spm_encode(t, text + fr->off, fr->len,
                                      t->add_space_prefix && prev_special, &out, err);
            break;
        case TOKENIZER_KIND_BPE:
            rc = tokenizer_bpe_encode(t, text + fr->off, fr->len, &out, err);
            break;
        }
        if (rc != ERR_OK)
            goto done;
        prev_special = false;
    }
    if (add_bos && t->add_eos)
        tok_out_push(&out, t->eos);
    *n = out.n;
    if (out.n > max)
        rc = err_set(err, ERR_BAD_REQUEST, "text needs %zu tokens, room for %zu", out.n, max);
done:
    free(frags.a);
    return rc;
}

size_t
tokenizer_max_tokens(const struct tokenizer *t, size_t len)
{
    /* SentencePiece: every id covers at least one byte of the escaped text, which has at most 3
       bytes per input byte plus a 3-byte prefix per plain run; S special tokens cover at least S
       input bytes and start at most S + 1 runs: 3 (len - S) + 3 (S + 1) + S + BOS + EOS <= 4 len
       + 5. BPE: an input byte becomes at most 3 bytes (U+FFFD), each at most one id; no prefix */
    (void)t;
    return 4 * len + 5;
}

/* Collects output bytes: counts them all, stores what fits, drops one leading space if asked. */
struct sink {
    char *buf;
    size_t size, n;
    bool strip;
};

static void
sink_put(struct sink *s, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (s->strip) {
        s->strip = false;
        if (p[0] == ' ') {
            p++;
            n--;
        }
    }
    if (s->n < s->size)
        memcpy(s->buf + s->n, p, n <= s->size - s->n ? n : s->size - s->n);
    s->n += n;
}

/*
 * A normal BPE token's bytes: each GPT-2 character of its text as the byte it stands for; any
 * other character gives "[UNK_BYTE_0x<its UTF-8 in hex>" + the token text + "]" (llama.cpp).
 */
static void
bpe_piece_put(const struct tok_entry *e, struct sink *s)
{
    const unsigned char *p = (const unsigned char *)e->text;

    for (size_t i = 0, adv; i < e->len; i += adv) {
        uint32_t cp = tok_utf8_decode(p + i, e->len - i, &adv);
        int b = tokenizer_bpe_byte(cp);
        if (b >= 0) {
            char c = (char)b;
            sink_put(s, &c, 1);
            continue;
        }
        char u[4], hex[9];
        size_t n = tok_utf8_encode(cp, u);
        for (size_t k = 0; k < n; k++)
            snprintf(hex + 2 * k, 3, "%02x", (unsigned char)u[k]);
        sink_put(s, "[UNK_BYTE_0x", 12);
        sink_put(s, hex, 2 * n);
        sink_put(s, e->text, e->len);
        sink_put(s, "]", 1);
    }
}

/* The piece of a valid id into s (llama.cpp's token_to_piece, special = false). */
static void
piece_put(const struct tokenizer *t, int32_t id, struct sink *s)
{
    const struct tok_entry *e = &t->vocab[id];

    if (e->attr & (TOK_ATTR_CONTROL | TOK_ATTR_UNKNOWN))
        return;
    if (e->attr & TOK_ATTR_USER_DEFINED) {
        sink_put(s, e->text, e->len);
    } else if ((e->attr & TOK_ATTR_NORMAL) && t->kind == TOKENIZER_KIND_BPE) {
        bpe_piece_put(e, s);
    } else if (e->attr & TOK_ATTR_NORMAL) {
        size_t start = 0;
        for (size_t i = 0; i + 3 <= e->len; i++) {
            if (memcmp(e->text + i, "\xe2\x96\x81", 3) != 0)
                continue;
            sink_put(s, e->text + start, i - start);
            sink_put(s, " ", 1);
            start = i + 3;
            i += 2;
        }
        sink_put(s, e->text + start, e->len - start);
    } else if ((e->attr & TOK_ATTR_BYTE) && t->kind == TOKENIZER_KIND_SPM) {
        sink_put(s, (const char *)&e->byte, 1);
    }
}

size_t
tokenizer_piece(const struct tokenizer *t, int32_t id, char *buf, size_t size)
{
    struct sink s = {buf, size, 0, false};

    if (id < 0 || (size_t)id >= t->n_vocab)
        return 0;
    piece_put(t, id, &s);
    return s.n;
}

/*
 * llama.cpp's clean-up of detokenized BPE text (its clean_spaces, after Hugging Face's
 * clean_up_tokenization), three passes over a[0..n) using b as scratch; returns the new length
 * (the result is in a). 1: a space before '?', '!', '.' or ',' goes. 2: " ' " becomes "'" (the
 * space after it is consumed, so it cannot start another match). 3: a space before "'s", "'m",
 * "'re" or "'ve" goes (not before "'t", "'d" or "'ll"), when the apostrophe is not the last byte
 * (two bytes from the end for "'re"/"'ve").
 */
static size_t
clean_spaces(char *a, char *b, size_t n)
{
    size_t m = 0;

    for (size_t i = 0; i < n; i++)
        if (!(a[i] == ' ' && i + 1 < n && strchr("?!.,", a[i + 1]) != NULL && a[i + 1] != '\0'))
            b[m++] = a[i];
    n = m;
    m = 0;
    for (size_t i = 0; i < n; i++) {
        if (i > 0 && b[i] == '\'' && i + 1 < n && b[i - 1] == ' ' && b[i + 1] == ' ') {
            a[m - 1] = '\'';
            b[i + 1] = '\0'; /* consumed: the next apostrophe does not see a space before it */
            i++;
            continue;
        }
        a[m++] = b[i];
    }
    n = m;
    m = 0;
    for (size_t i = 0; i < n; i++) {
        bool drop = false;
        if (a[i] == ' ' && i + 2 < n && a[i + 1] == '\'') {
            char x1 = a[i + 2], x2 = i + 3 < n ? a[i + 3] : '\0';
            drop = x1 == 's' || x1 == 'm' || (i + 3 < n && (x1 == 'r' || x1 == 'v') && x2 == 'e');
        }
        if (!drop)
            b[m++] = a[i];
    }
    memcpy(a, b, m);
    return m;
}

int
tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char *out, size_t size,
                 size_t *len, char *err)
{
    struct sink s = {out, size, 0, t->add_space_prefix};
    char *full = NULL;

    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab)
            return err_set(err, ERR_BAD_REQUEST, "token id %ld (at %zu) is out of range [0, %zu)",
                           (long)ids[i], i, t->n_vocab);
    for (int pass = 0; pass < 1 + t->clean_spaces; pass++) {
        if (pass == 1) {
            /* the clean-up needs the whole text: count, then decode into a buffer of our own */
            full = malloc(2 * s.n + 1);
            if (full == NULL)
                return err_set(err, ERR_NOMEM, "detokenize: no memory for %zu bytes", s.n);
            s = (struct sink){full, s.n, 0, t->add_space_prefix};
        }
        for (size_t i = 0; i < n; i++) {
            piece_put(t, ids[i], &s);
            s.strip = false; /* only the first token loses its space, even when it prints nothing */
        }
    }
    if (full != NULL) {
        s.n = clean_spaces(full, full + s.n + 1, s.n);
        if (size > 0)
            memcpy(out, full, s.n < size ? s.n : size);
        free(full);
    }
    *len = s.n;
    if (s.n > size)
        return err_set(err, ERR_BAD_REQUEST, "text needs %zu bytes, room for %zu", s.n, size);
    return ERR_OK;
}
