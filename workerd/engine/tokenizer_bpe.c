/*
 * tokenizer_bpe.c: byte-level BPE ("gpt2" vocabularies: GPT-2, Llama-3, Qwen2, DeepSeek,
 * Falcon, StarCoder, MPT...) on one run of plain text, as llama.cpp applies it (tokenizer.c has
 * already split out special tokens). Three steps:
 *  1. Pre-tokenizer: the regular expressions of the model's tokenizer.json (chosen by
 *     tokenizer.ggml.pre), run through PCRE2 one after the other: the first splits the text into
 *     matches and the gaps between them, each next one splits every piece again.
 *  2. Each piece's bytes become GPT-2's printable characters (bytes_to_unicode: printable
 *     Latin-1 bytes stand for themselves, the 68 others for U+0100 onwards).
 *  3. Merges: adjacent symbols merge by the rank of the pair in tokenizer.ggml.merges (lowest
 *     first, leftmost on ties; tokenizer_merge.c), looked up in a hash table of the merges.
 * Not here: special tokens, BOS/EOS, pieces and detokenization (tokenizer.c).
 */
#include "workerd/engine/tokenizer_impl.h"

#include "common/err.h"
#include "common/log.h"
#include "workerd/engine/gguf.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#define PRE_MAX_REGEX 6

/*
 * The pre-tokenizers, from the models' tokenizer.json files, in the form llama.cpp runs them (a
 * sequence of expressions splitting one after the other). \s here means what llama.cpp's splitter
 * treats as whitespace: the subject has every non-ASCII White_Space character replaced by \v
 * before matching (see pre_subject), which is also what makes the DeepSeek classes below, which
 * contain U+3000, behave as in llama.cpp. One change to a tokenizer.json regex: DeepSeek-LLM's
 * \s+$ is written (?<!\s)\s+$, which finds the same match (the leftmost one starts where the
 * trailing whitespace starts) without trying every position of a long whitespace run that is not
 * at the end (quadratic without JIT: minutes for 100 KB).
 */
#define RE_GPT2        "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define RE_LLAMA3_TAIL "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_CONTRACTIONS_ANY_CASE                                                                   \
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+"
#define RE_CJK "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* DeepSeek-LLM's cased letters (Unicode LC, as its tokenizer.json lists them) */
#define RE_DEEPSEEK_LETTERS                                                                        \
    "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"                 \
    "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}"         \
    "\\x{37F}\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-"         \
    "\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"             \
    "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}"                 \
    "\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"                 \
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}"         \
    "\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-"                 \
    "\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-"                 \
    "\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}"         \
    "\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-"         \
    "\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"          \
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}"                  \
    "\\x{A640}-\\x{A66D}\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}"                 \
    "\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}"                 \
    "\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}"             \
    "\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"         \
    "\\x{1E900}-\\x{1E943}"

static const struct pre_def {
    const char *names; /* tokenizer.ggml.pre values, '|'-separated */
    const char *regex[PRE_MAX_REGEX];
    bool add_bos;       /* default of tokenizer.ggml.add_bos_token */
    bool ignore_merges; /* a piece that is a whole token is taken as it is */
    bool clean_spaces;  /* detokenization drops spaces before punctuation */
} pre_defs[] = {
    {"default", /* no tokenizer.ggml.pre: GPT-NeoX and older conversions */
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"},
     false,
     false,
     true},
    {"llama3|llama-v3|llama-bpe|falcon3",
     {RE_CONTRACTIONS_ANY_CASE "|\\p{N}{1,3}" RE_LLAMA3_TAIL},
     true,
     true,
     true},
    {"qwen2|deepseek-r1-qwen|megrez",
     {RE_CONTRACTIONS_ANY_CASE "|\\p{N}" RE_LLAMA3_TAIL},
     false,
     false,
     false},
    {"gpt-2|phi-2|roberta-bpe|olmo|jais|mpt", {RE_GPT2}, false, false, true},
    {"starcoder|refact|codeshell|exaone|minerva-7b", {"\\p{N}", RE_GPT2}, false, false, true},
    {"command-r|smollm", {"\\p{N}", RE_GPT2}, false, false, false},
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}, false, false, true},
    {"deepseek-llm",
     {"[\\r\\n]", "\\s?[" RE_DEEPSEEK_LETTERS "]+",
      "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      "(?<!\\s)\\s+$", RE_CJK, "\\p{N}+"},
     false,
     false,
     false},
    {"deepseek-coder",
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_CJK, "\\p{N}"},
     false,
     false,
     false},
};

/* One merge "a b": the two texts (views into the gguf mapping). */
struct bpe_merge {
    const char *a, *b;
    uint32_t la, lb;
};

struct tok_bpe {
    const struct pre_def *pre;
    pcre2_code *re[PRE_MAX_REGEX];
    size_t n_re;
    struct bpe_merge *merges;
    uint32_t *slots; /* open addressing (a, b) -> rank + 1, 0 = empty */
    size_t slot_mask;
};

static uint32_t
fnv_step(uint32_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

/* The hash of the pair (s[0..la), s[la..la + lb)) whatever the two parts sit in memory. */
static uint32_t
pair_hash(const char *a, uint32_t la, const char *b, uint32_t lb)
{
    uint32_t h = fnv_step(fnv_step(2166136261u, a, la), b, lb);
    return (h ^ (la * 0x9E3779B1u)) * 0x85EBCA6Bu;
}

/* The rank of merging s[0..la) with s[la..la + lb), or -1. */
static int64_t
merge_rank(const struct tok_bpe *b, const char *s, uint32_t la, uint32_t lb)
{
    for (size_t i = pair_hash(s, la, s + la, lb) & b->slot_mask;; i = (i + 1) & b->slot_mask) {
        uint32_t slot = b->slots[i];
        if (slot == 0)
            return -1;
        const struct bpe_merge *m = &b->merges[slot - 1];
        if (m->la == la && m->lb == lb && memcmp(m->a, s, la) == 0 && memcmp(m->b, s + la, lb) == 0)
            return slot - 1;
    }
}

static int
load_merges(struct tok_bpe *b, const struct gguf *g, char *err)
{
    const struct gguf_arr *arr;
    size_t cap = 16;
    int rc = gguf_get_arr(g, "tokenizer.ggml.merges", &arr, err);

    if (rc == ERR_NOT_FOUND)
        return err_set(err, ERR_FORMAT, "key 'tokenizer.ggml.merges' is missing (BPE needs it)");
    if (rc != ERR_OK)
        return rc;
    /* ranks become float scores for tokenizer_merge.c: exact below 2^24 */
    if (arr->type != GGUF_VTYPE_STRING || arr->n >= (1u << 24))
        return err_set(err, ERR_FORMAT,
                       "key 'tokenizer.ggml.merges' must be an array of fewer than 2^24 strings "
                       "(has %llu %s)",
                       (unsigned long long)arr->n, gguf_vtype_name(arr->type));
    while (cap < 2 * arr->n)
        cap *= 2;
    b->merges = calloc(arr->n ? arr->n : 1, sizeof(*b->merges));
    b->slots = calloc(cap, sizeof(*b->slots));
    if (b->merges == NULL || b->slots == NULL)
        return err_set(err, ERR_NOMEM, "tokenizer: no memory for %llu merges",
                       (unsigned long long)arr->n);
    b->slot_mask = cap - 1;
    for (size_t r = 0; r < arr->n; r++) {
        const struct gguf_str *s = &arr->strs[r];
        /* split at the first space after the first byte; a merge without one never applies */
        const char *sp = s->len > 1 ? memchr(s->data + 1, ' ', s->len - 1) : NULL;
        if (sp == NULL || s->len > UINT32_MAX)
            continue;
        struct bpe_merge m = {s->data, sp + 1, (uint32_t)(sp - s->data),
                              (uint32_t)(s->len - (size_t)(sp - s->data) - 1)};
        size_t i = pair_hash(m.a, m.la, m.b, m.lb) & b->slot_mask;
        bool dup = false;
        for (; b->slots[i] != 0; i = (i + 1) & b->slot_mask) {
            const struct bpe_merge *o = &b->merges[b->slots[i] - 1];
            if (o->la == m.la && o->lb == m.lb && memcmp(o->a, m.a, m.la) == 0 &&
                memcmp(o->b, m.b, m.lb) == 0) {
                dup = true; /* the first (lowest) rank stays */
                break;
            }
        }
        b->merges[r] = m;
        if (!dup)
            b->slots[i] = (uint32_t)r + 1;
    }
    return ERR_OK;
}

/* True when name is one of the '|'-separated names. */
static bool
name_in(const char *names, const char *name, size_t len)
{
    for (const char *p = names;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && memcmp(p, name, len) == 0)
            return true;
        if (bar == NULL)
            return false;
        p = bar + 1;
    }
}

static int
load_pre(struct tok_bpe *b, const struct gguf *g, char *err)
{
    struct gguf_str pre = {7, "default"};
    int rc = gguf_get_str(g, "tokenizer.ggml.pre", &pre, err);

    if (rc == ERR_NOT_FOUND)
        log_warn("tokenizer: no tokenizer.ggml.pre in the file, using the 'default' "
                 "pre-tokenizer (as llama.cpp does)");
    else if (rc != ERR_OK)
        return rc;
    for (size_t i = 0; b->pre == NULL && i < sizeof(pre_defs) / sizeof(pre_defs[0]); i++)
        if (name_in(pre_defs[i].names, pre.data, pre.len))
            b->pre = &pre_defs[i];
    if (b->pre == NULL)
        return err_set(err, ERR_UNSUPPORTED,
                       "tokenizer.ggml.pre '%.*s': unknown BPE pre-tokenizer (docs/tokenizer.md "
                       "lists the supported ones)",
                       (int)(pre.len < 64 ? pre.len : 64), pre.data);
    for (; b->n_re < PRE_MAX_REGEX && b->pre->regex[b->n_re] != NULL; b->n_re++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re =
            pcre2_compile((PCRE2_SPTR)b->pre->regex[b->n_re], PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &code, &at, NULL);
        if (re == NULL) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof(msg));
            return err_set(err, ERR_INTERNAL, "tokenizer: pre-tokenizer regex %zu: %s at %zu",
                           b->n_re, (const char *)msg, (size_t)at);
        }
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* the interpreter runs without it */
        b->re[b->n_re] = re;
    }
    return ERR_OK;
}

int
tokenizer_bpe_load(struct tokenizer *t, const struct gguf *g, char *err)
{
    struct tok_bpe *b = calloc(1, sizeof(*b));
    int rc;

    if (b == NULL)
        return err_set(err, ERR_NOMEM, "tokenizer: no memory");
    if ((rc = load_merges(b, g, err)) != ERR_OK || (rc = load_pre(b, g, err)) != ERR_OK) {
        tokenizer_bpe_free(b);
        return rc;
    }
    t->bpe = b;
    t->add_bos = b->pre->add_bos;
    t->clean_spaces = b->pre->clean_spaces;
    return ERR_OK;
}

void
tokenizer_bpe_free(struct tok_bpe *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->n_re; i++)
        pcre2_code_free(b->re[i]);
    free(b->merges);
    free(b->slots);
    free(b);
}

/* GPT-2's bytes_to_unicode: the code point byte x is written as. */
static uint32_t
byte_cp(unsigned x)
{
    if (x <= 0x20)
        return 0x100 + x;
    if (x >= 0x7F && x <= 0xA0)
        return 0x100 + 0x21 + (x - 0x7F);
    if (x == 0xAD)
        return 0x100 + 0x21 + 0x22;
    return x;
}

int
tokenizer_bpe_byte(uint32_t cp)
{
    if (cp >= 0x100 && cp < 0x100 + 0x21)
        return (int)(cp - 0x100);
    if (cp >= 0x100 + 0x21 && cp < 0x100 + 0x21 + 0x22)
        return (int)(cp - 0x100 - 0x21 + 0x7F);
    if (cp == 0x100 + 0x21 + 0x22)
        return 0xAD;
    if (cp < 0x100 && byte_cp(cp) == cp)
        return (int)cp;
    return -1;
}

/* Merging two symbols costs the rank of their pair (lower merges first). */
static bool
bpe_score(const struct tokenizer *t, const char *text, uint32_t off, uint32_t left_n,
          uint32_t right_n, float *score)
{
    int64_t rank = merge_rank(t->bpe, text + off, left_n, right_n);

    if (rank < 0)
        return false;
    *score = -(float)rank;
    return true;
}

/* Per-call scratch of one plain run. */
struct bpe_work {
    char *real;        /* the text as llama.cpp re-encodes it (bad bytes -> U+FFFD) */
    char *sub;         /* what the regexes see: \v for non-ASCII spaces, U+FFFD for surrogates */
    uint32_t *to_real; /* sub offset (at a character start) -> real offset */
    size_t n_real, n_sub;
    uint32_t *cuts[2]; /* piece ends in sub, ascending */
    size_t n_cuts;
    char *enc; /* one piece in GPT-2 characters */
    struct tok_merge merge;
};

static bool
is_wide_space(uint32_t cp)
{
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Decodes text into w->real and w->sub (llama.cpp's code points, re-encoded). */
static void
pre_subject(struct bpe_work *w, const char *text, size_t len)
{
    w->n_real = w->n_sub = 0;
    for (size_t i = 0, adv; i < len; i += adv) {
        uint32_t cp = tok_utf8_decode((const unsigned char *)text + i, len - i, &adv);
        size_t n = tok_utf8_encode(cp, w->real + w->n_real);

        w->to_real[w->n_sub] = (uint32_t)w->n_real;
        if (is_wide_space(cp))
            w->sub[w->n_sub++] = '\v';
        else
            w->n_sub +=
                tok_utf8_encode(cp >= 0xD800 && cp <= 0xDFFF ? 0xFFFD : cp, w->sub + w->n_sub);
        w->n_real += n;
    }
    w->to_real[w->n_sub] = (uint32_t)w->n_real;
}

/* Splits every piece of cuts[0] with re into cuts[1] (matches and the gaps between them). */
static int
pre_split(struct bpe_work *w, const pcre2_code *re, pcre2_match_data *md, char *err)
{
    size_t n_out = 0, start = 0;

    for (size_t c = 0; c < w->n_cuts; c++) {
        size_t end = w->cuts[0][c], pos = start;
        while (pos < end) {
            int rc = pcre2_match(re, (PCRE2_SPTR)w->sub + start, end - start, pos - start,
                                 PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY, md, NULL);
            if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
                rc = pcre2_match(re, (PCRE2_SPTR)w->sub + start, end - start, pos - start,
                                 PCRE2_NO_UTF_CHECK | PCRE2_NOTEMPTY | PCRE2_NO_JIT, md, NULL);
            if (rc == PCRE2_ERROR_NOMATCH)
                break;
            if (rc < 0) {
                PCRE2_UCHAR msg[128];
                pcre2_get_error_message(rc, msg, sizeof(msg));
                return err_set(err, ERR_INTERNAL, "tokenize: pre-tokenizer regex failed: %s",
                               (const char *)msg);
            }
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
            if (start + ov[0] > pos)
                w->cuts[1][n_out++] = (uint32_t)(start + ov[0]);
            pos = start + ov[1];
            w->cuts[1][n_out++] = (uint32_t)pos;
        }
        if (pos < end)
            w->cuts[1][n_out++] = (uint32_t)end;
        start = end;
    }
    uint32_t *tmp = w->cuts[0];
    w->cuts[0] = w->cuts[1];
    w->cuts[1] = tmp;
    w->n_cuts = n_out;
    return ERR_OK;
}

/* BPE on one piece (real bytes [a, b)). */
static int
bpe_piece(const struct tokenizer *t, struct bpe_work *w, size_t a, size_t b, struct tok_out *out,
          char *err)
{
    size_t n = 0;
    int32_t id;
    int rc;

    for (size_t i = a; i < b; i++)
        n += tok_utf8_encode(byte_cp((unsigned char)w->real[i]), w->enc + n);
    if (t->bpe->pre->ignore_merges && (id = tokenizer_lookup(t, w->enc, n)) >= 0) {
        tok_out_push(out, id);
        return ERR_OK;
    }
    if ((rc = tok_merge_run(&w->merge, t, w->enc, n, bpe_score, err)) != ERR_OK)
        return rc;
    for (int32_t i = w->merge.n_syms > 0 ? 0 : -1; i >= 0; i = w->merge.syms[i].next) {
        const struct tok_sym *s = &w->merge.syms[i];
        if ((id = tokenizer_lookup(t, w->enc + s->off, s->n)) >= 0) {
            tok_out_push(out, id);
            continue;
        }
        /* a merge result that is not a token: its single bytes, where they are tokens (as in
           llama.cpp; the bytes of a multi-byte character are not, so they are dropped) */
        for (uint32_t k = 0; k < s->n; k++)
            if ((id = tokenizer_lookup(t, w->enc + s->off + k, 1)) >= 0)
                tok_out_push(out, id);
    }
    return ERR_OK;
}

int
tokenizer_bpe_encode(const struct tokenizer *t, const char *text, size_t len, struct tok_out *out,
                     char *err)
{
    const struct tok_bpe *b = t->bpe;
    struct bpe_work w;
    pcre2_match_data *md = NULL;
    int rc = ERR_OK;

    if (len == 0)
        return ERR_OK;
    memset(&w, 0, sizeof(w));
    if (len > UINT32_MAX / 8)
        return err_set(err, ERR_BAD_REQUEST, "tokenize: text of %zu bytes is too long", len);
    /* each input byte becomes at most 3 bytes (U+FFFD) and one piece */
    w.real = malloc(3 * len);
    w.sub = malloc(3 * len);
    w.to_real = malloc((3 * len + 1) * sizeof(*w.to_real));
    w.cuts[0] = malloc(2 * len * sizeof(*w.cuts[0]));
    w.cuts[1] = malloc(2 * len * sizeof(*w.cuts[1]));
    w.enc = malloc(6 * len);
    md = pcre2_match_data_create(1, NULL);
    if (w.real == NULL || w.sub == NULL || w.to_real == NULL || w.cuts[0] == NULL ||
        w.cuts[1] == NULL || w.enc == NULL || md == NULL) {
        rc = err_set(err, ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
        goto done;
    }
    pre_subject(&w, text, len);
    w.cuts[0][0] = (uint32_t)w.n_sub;
    w.n_cuts = 1;
    for (size_t i = 0; i < b->n_re; i++)
        if ((rc = pre_split(&w, b->re[i], md, err)) != ERR_OK)
            goto done;
    for (size_t c = 0, start = 0; c < w.n_cuts; start = w.cuts[0][c++])
        if ((rc = bpe_piece(t, &w, w.to_real[start], w.to_real[w.cuts[0][c]], out, err)) != ERR_OK)
            goto done;
done:
    pcre2_match_data_free(md);
    tok_merge_free(&w.merge);
    free(w.real);
    free(w.sub);
    free(w.to_real);
    free(w.cuts[0]);
    free(w.cuts[1]);
    free(w.enc);
    return rc;
}
