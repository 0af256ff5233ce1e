/*
 * fuzz_tokenizer.c: libFuzzer target for tokenizer_encode/decode on real vocabularies from
 * ../shared (stories260K: 512 tokens, mostly byte fallback; phi-3: 32064 tokens with
 * user-defined and control tokens; llama-bpe: Llama-3's 128256-token BPE with its regex
 * pre-tokenizer). The first input byte picks the vocabulary (bit 3 set: llama-bpe, else bit 0),
 * add_bos and parse_special; the rest is the text. Traps when: encoding fails, needs more ids
 * than tokenizer_max_tokens() says, or gives an id out of range, the count differs when the
 * output buffer is too small, decoding fails or its length is not the pieces' minus the leading
 * space (BPE: at most the pieces', as the clean-up only removes spaces), or (stories260K, valid
 * UTF-8 without U+2581, every token printing something) the text does not come back byte for
 * byte. Without ../shared it tests
 * nothing. Seeds: tests/fuzz-seeds/fuzz_tokenizer/.
 */
#include "common/err.h"
#include "common/utf8.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const files[3] = {
    "../shared/models/stories260K.gguf",
    "../shared/models/vocab/ggml-vocab-phi-3.gguf",
    "../shared/models/vocab/ggml-vocab-llama-bpe.gguf",
};

/* Opened once per process, kept until exit. */
static struct tokenizer *
vocab(int k)
{
    static struct gguf *g[3];
    static struct tokenizer *t[3];
    static bool tried[3];
    char err[ERR_MSG_MAX];

    if (!tried[k]) {
        tried[k] = true;
        if (gguf_open(&g[k], files[k], err) == ERR_OK && tokenizer_load(&t[k], g[k], err) != ERR_OK)
            gguf_close(g[k]);
    }
    return t[k];
}

static void
check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    int k = data[0] & 8 ? 2 : data[0] & 1;
    bool add_bos = data[0] & 2, parse_special = data[0] & 4;
    const char *text = (const char *)data + 1;
    size_t len = size - 1, max, n, n2, dlen, plen = 0;
    struct tokenizer *t = vocab(k);
    char err[ERR_MSG_MAX];

    if (t == NULL)
        return 0;
    max = tokenizer_max_tokens(t, len);
    int32_t *ids = malloc(max * sizeof(*ids));
    char *out = malloc(3 * len + 16), *piece = malloc(3 * len + 16);
    check(ids && out && piece);

    check(tokenizer_encode(t, text, len, add_bos, parse_special, ids, max, &n, err) == ERR_OK);
    bool all_print = true;
    for (size_t i = 0; i < n; i++) {
        check(ids[i] >= 0 && (size_t)ids[i] < tokenizer_n_vocab(t));
        size_t m = tokenizer_piece(t, ids[i], NULL, 0);
        check(m == tokenizer_piece(t, ids[i], piece, 3 * len + 16));
        all_print = all_print && (m > 0 || (add_bos && i == 0));
        plen += m;
    }
    if (n > 0)
        check(tokenizer_encode(t, text, len, add_bos, parse_special, ids, n - 1, &n2, err) ==
                  ERR_BAD_REQUEST &&
              n2 == n);

    check(tokenizer_decode(t, ids, n, out, 3 * len + 16, &dlen, err) == ERR_OK);
    size_t first = n > 0 ? tokenizer_piece(t, ids[0], piece, 3 * len + 16) : 0;
    if (k == 2)
        check(dlen <= plen);
    else
        check(dlen == plen - (first > 0 && piece[0] == ' '));

    bool plain = k == 0 && !parse_special && all_print &&
                 utf8_sanitize(text, len, out, 3 * len + 16) == len &&
                 memcmp(out, text, len) == 0 && memmem(text, len, "\xe2\x96\x81", 3) == NULL;
    if (plain && add_bos)
        check(tokenizer_decode(t, ids + 1, n - 1, out, 3 * len + 16, &dlen, err) == ERR_OK);
    if (plain)
        check(dlen == len && memcmp(out, text, len) == 0);
    free(ids);
    free(out);
    free(piece);
    return 0;
}
