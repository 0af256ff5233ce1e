/*
 * tokenizer_spm.c: SentencePiece as llama.cpp applies it to a GGUF vocabulary, on one run of
 * plain text (tokenizer.c has already split out special tokens and decides the space prefix).
 *
 * The text (with a leading space when asked) has its spaces replaced by U+2581; then the pair
 * merging of tokenizer_merge.c runs with a pair's score being the score of the vocabulary token
 * its concatenation spells (pairs that spell no token never merge). Each final symbol that is not
 * a token becomes byte tokens. Scratch is sized by the text: the escaped text, and 64 bytes per
 * character (symbols and heap).
 */
#include "workerd/engine/tokenizer_impl.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

/* A pair scores the score of the token its concatenation is, if any. */
static bool
spm_score(const struct tokenizer *t, const char *text, uint32_t off, uint32_t left_n,
          uint32_t right_n, float *score)
{
    uint32_t size = left_n + right_n;
    int32_t id;

    if (size > t->max_token_len || (id = tokenizer_lookup(t, text + off, size)) < 0)
        return false;
    *score = t->vocab[id].score;
    return true;
}

int
tokenizer_spm_encode(const struct tokenizer *t, const char *text, size_t len, bool space_prefix,
                     struct tok_out *out, char *err)
{
    struct tok_merge m = {NULL, NULL, 0, 0, 0};
    char *esc;
    size_t n_esc = 0;
    int rc;

    if (len == 0 && !space_prefix)
        return ERR_OK;
    esc = malloc(3 * (len + 1)); /* every byte a space, plus the prefix */
    if (esc == NULL)
        return err_set(err, ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
    for (size_t i = 0; i < len + space_prefix; i++) {
        char c = space_prefix ? (i == 0 ? ' ' : text[i - 1]) : text[i];
        if (c == ' ') {
            memcpy(esc + n_esc, "\xe2\x96\x81", 3);
            n_esc += 3;
        } else {
            esc[n_esc++] = c;
        }
    }
    if ((rc = tok_merge_run(&m, t, esc, n_esc, spm_score, err)) != ERR_OK)
        goto done;

    for (int32_t i = m.n_syms > 0 ? 0 : -1; i >= 0; i = m.syms[i].next) {
        const struct tok_sym *s = &m.syms[i];
        int32_t id = tokenizer_lookup(t, esc + s->off, s->n);
        if (id >= 0) {
            tok_out_push(out, id);
            continue;
        }
        for (uint32_t k = 0; k < s->n; k++) {
            unsigned char b = (unsigned char)esc[s->off + k];
            if (t->byte_token[b] < 0) {
                rc = err_set(err, ERR_UNSUPPORTED,
                             "tokenize: byte 0x%02X has no token and the vocabulary no unknown "
                             "token",
                             b);
                goto done;
            }
            tok_out_push(out, t->byte_token[b]);
        }
    }
done:
    tok_merge_free(&m);
    free(esc);
    return rc;
}
