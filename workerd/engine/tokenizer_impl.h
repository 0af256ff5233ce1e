/*
 * tokenizer_impl.h: the inside of struct tokenizer, shared by tokenizer.c (loading, special-token
 * splitting, pieces, decoding: the parts every tokenizer type has) and one file per algorithm
 * that turns a run of plain text into ids (tokenizer_spm.c, tokenizer_bpe.c), which share the
 * pair-merging loop of tokenizer_merge.c. Only those files include it; everyone else uses
 * tokenizer.h.
 */
#ifndef LLORCH_TOKENIZER_IMPL_H
#define LLORCH_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;

/* Which algorithm turns plain text into ids (tokenizer.ggml.model). */
enum tokenizer_kind {
    TOKENIZER_KIND_SPM, /* "llama": SentencePiece */
    TOKENIZER_KIND_BPE, /* "gpt2": byte-level BPE with a regex pre-tokenizer */
};

struct tok_bpe; /* merges and pre-tokenizer, tokenizer_bpe.c */

/* Token attributes, a bit set as in llama.cpp (the GGUF token type, plus what loading adds). */
enum tok_attr {
    TOK_ATTR_NORMAL = 1u << 0,
    TOK_ATTR_UNKNOWN = 1u << 1,
    TOK_ATTR_CONTROL = 1u << 2,
    TOK_ATTR_USER_DEFINED = 1u << 3,
    TOK_ATTR_UNUSED = 1u << 4,
    TOK_ATTR_BYTE = 1u << 5,
    TOK_ATTR_RSTRIP = 1u << 6, /* a special match eats the whitespace after it */
    TOK_ATTR_LSTRIP = 1u << 7, /* ... and before it */
    TOK_ATTR_EOG = 1u << 8,    /* ends generation */
};

struct tok_entry {
    const char *text; /* view into the gguf mapping */
    uint32_t len;
    uint32_t attr; /* enum tok_attr bits */
    float score;
    uint8_t byte; /* the byte a TOK_ATTR_BYTE token stands for */
};

struct tokenizer {
    enum tokenizer_kind kind;
    size_t n_vocab;
    struct tok_entry *vocab;
    uint32_t *slots; /* open-addressing text -> id table: id + 1, 0 = empty */
    size_t slot_mask;
    size_t max_token_len;
    int32_t bos, eos, unk, eot, eom;
    bool add_bos, add_eos, add_space_prefix;
    bool clean_spaces; /* detokenization removes spaces before punctuation (BPE, per pre-tokenizer)
                        */
    int32_t byte_token[256]; /* id emitted for a byte without a token of its own, -1 if none */
    int32_t *specials;       /* control/user-defined/unknown ids, longest text first */
    size_t n_specials;
    struct tok_bpe *bpe; /* TOKENIZER_KIND_BPE only */
};

/* Where encoding writes: the first max ids go to ids, n counts them all. */
struct tok_out {
    int32_t *ids;
    size_t max;
    size_t n;
};

static inline void
tok_out_push(struct tok_out *o, int32_t id)
{
    if (o->n < o->max)
        o->ids[o->n] = id;
    o->n++;
}

/* The id whose text is exactly s[0..len), or -1. */
int32_t tokenizer_lookup(const struct tokenizer *t, const char *s, size_t len);

/*
 * SentencePiece on one run of plain text (no special tokens in it): prefix a space when
 * space_prefix, spaces -> U+2581, merges by score, byte fallback. ERR_OK, ERR_UNSUPPORTED (a
 * byte with no token and no unknown token) or ERR_NOMEM.
 */
int tokenizer_spm_encode(const struct tokenizer *t, const char *text, size_t len, bool space_prefix,
                         struct tok_out *out, char *err);

/*
 * Pair merging, shared by both algorithms: text is cut into UTF-8 characters (length from the
 * first byte, so invalid input still splits), then, repeatedly, the adjacent pair of symbols with
 * the highest score merges (leftmost on equal scores) until no pair scores. score() says whether
 * text[off .. off + left_n + right_n) may merge after its first left_n bytes, and with what score.
 * Scratch lives in struct tok_merge, grown as needed and reused across calls (tok_merge_free).
 */
struct tok_sym {
    int32_t prev, next; /* neighbours in the list, -1 at the ends */
    uint32_t off, n;    /* bytes of the text this symbol covers; n = 0 once merged away */
};

struct tok_pair {
    int32_t left, right;
    float score;
    uint32_t size; /* left.n + right.n when the pair was found */
};

typedef bool (*tok_score_fn)(const struct tokenizer *t, const char *text, uint32_t off,
                             uint32_t left_n, uint32_t right_n, float *score);

struct tok_merge {
    struct tok_sym *syms;  /* the symbols; the first is 0, follow .next */
    struct tok_pair *heap; /* candidate pairs, best first */
    size_t n_syms, n_heap, cap;
};

/* Runs the merges on text[0..len) into m->syms. ERR_OK or ERR_NOMEM. */
int tok_merge_run(struct tok_merge *m, const struct tokenizer *t, const char *text, size_t len,
                  tok_score_fn score, char *err);

/* Frees the scratch of m (not m itself). */
void tok_merge_free(struct tok_merge *m);

/*
 * Loads what BPE adds to a vocabulary: tokenizer.ggml.merges (ranks) and the pre-tokenizer
 * named by tokenizer.ggml.pre (its regular expressions compiled once), and sets t->add_bos and
 * t->clean_spaces to that pre-tokenizer's defaults. ERR_FORMAT naming the key for missing or
 * mistyped merges, ERR_UNSUPPORTED naming an unknown pre-tokenizer, ERR_NOMEM.
 */
int tokenizer_bpe_load(struct tokenizer *t, const struct gguf *g, char *err);

void tokenizer_bpe_free(struct tok_bpe *b);

/*
 * Byte-level BPE on one run of plain text: pre-tokenizer split, bytes to the GPT-2 characters,
 * merges by rank. ERR_OK, ERR_NOMEM, or ERR_INTERNAL when the regex engine fails.
 */
int tokenizer_bpe_encode(const struct tokenizer *t, const char *text, size_t len,
                         struct tok_out *out, char *err);

/* The byte a GPT-2 byte-level character stands for, or -1 for other code points. */
int tokenizer_bpe_byte(uint32_t cp);

/*
 * One code point from s[0..len) (len > 0) as llama.cpp reads UTF-8: the length comes from the
 * first byte, continuation bytes are checked but overlong forms and surrogates are accepted; a
 * sequence that is cut short or has a bad byte gives U+FFFD for its first byte alone. *adv gets
 * the bytes consumed. Code points past U+10FFFF (leads F5-F7, or F4 90 and up) count as invalid.
 */
static inline uint32_t
tok_utf8_decode(const unsigned char *s, size_t len, size_t *adv)
{
    static const uint8_t len_by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 3, 4};
    size_t n = s[0] >= 0xF8 ? 0 : len_by_high_nibble[s[0] >> 4];
    uint32_t cp;

    *adv = 1;
    if (n == 1)
        return s[0];
    if (n == 0 || n > len)
        return 0xFFFD;
    cp = s[0] & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0xFFFD;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp > 0x10FFFF)
        return 0xFFFD;
    *adv = n;
    return cp;
}

/* Writes the UTF-8 form of cp (at most U+10FFFF; surrogates too) to buf; returns its length. */
static inline size_t
tok_utf8_encode(uint32_t cp, char *buf)
{
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (char)(0xC0 | (cp >> 6));
        buf[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xE0 | (cp >> 12));
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        buf[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    buf[0] = (char)(0xF0 | (cp >> 18));
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    buf[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

#endif
