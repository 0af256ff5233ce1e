/*
 * tokenizer_impl.h: the inside of struct tokenizer, shared by tokenizer.c (loading, special-token
 * splitting, pieces, decoding: the parts every tokenizer type has) and one file per algorithm
 * that turns a run of plain text into ids (tokenizer_spm.c now; tokenizer_bpe.c later). Only
 * those files include it; everyone else uses tokenizer.h.
 */
#ifndef LLORCH_TOKENIZER_IMPL_H
#define LLORCH_TOKENIZER_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Which algorithm turns plain text into ids (tokenizer.ggml.model). */
enum tokenizer_kind {
    TOKENIZER_KIND_SPM, /* "llama": SentencePiece */
};

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
    int32_t byte_token[256]; /* id emitted for a byte without a token of its own, -1 if none */
    int32_t *specials;       /* control/user-defined/unknown ids, longest text first */
    size_t n_specials;
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

#endif
