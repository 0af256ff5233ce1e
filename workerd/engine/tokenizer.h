/*
 * tokenizer.h: text <-> token ids for the vocabulary a GGUF file carries (tokenizer.* metadata),
 * giving the ids llama.cpp gives: SentencePiece ("llama": scores-driven merges, U+2581 for
 * spaces, the leading space, byte fallback) and byte-level BPE ("gpt2": the pre-tokenizer
 * regexes named by tokenizer.ggml.pre, merges by rank). Not here: chat templates, sampling,
 * streaming state (stop_utf8_pending() in workerd/engine/stop.h holds back split characters).
 *
 * Thread safety: after tokenizer_load() a tokenizer is read-only; any number of threads may
 * encode and decode with it at once. Each call allocates only scratch sized by its input.
 */
#ifndef LLORCH_TOKENIZER_H
#define LLORCH_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct gguf;
struct tokenizer;

/*
 * Builds the vocabulary from g's tokenizer.* metadata. Token texts stay views into g's mapping, so
 * g must outlive *out. Returns ERR_OK, ERR_UNSUPPORTED naming the tokenizer model for types not
 * implemented (anything but "llama" and "gpt2") or a BPE pre-tokenizer (tokenizer.ggml.pre) not
 * known, ERR_FORMAT naming the key for broken metadata (missing or mistyped tokenizer.ggml.tokens
 * or merges, scores or token types shorter than the vocabulary, a byte token that is not
 * <0xXX>...), or ERR_NOMEM; *out is untouched on failure. A BPE file without tokenizer.ggml.pre
 * gets llama.cpp's "default" pre-tokenizer and a warning in the log.
 */
int tokenizer_load(struct tokenizer **out, const struct gguf *g, char *err);

/* Frees what tokenizer_load built (not the gguf). NULL is fine. */
void tokenizer_free(struct tokenizer *t);

size_t tokenizer_n_vocab(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t); /* -1 if none */
int32_t tokenizer_eos(const struct tokenizer *t); /* -1 if none */

/* tokenizer.ggml.add_bos_token; the default is true for SentencePiece and, for BPE, the
   pre-tokenizer's (true for Llama-3's "llama-bpe", false for the others). */
bool tokenizer_add_bos(const struct tokenizer *t);

/*
 * True for the ids that end generation: EOS, EOT and EOM from metadata, and the tokens llama.cpp
 * recognises by text (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>, ...).
 */
bool tokenizer_is_eog(const struct tokenizer *t, int32_t id);

/*
 * The vocabulary text of id (e.g. "▁Hello", "<0x0A>", "<s>"), len bytes, not NUL-terminated,
 * valid while the gguf is open; NULL for an id out of range.
 */
const char *tokenizer_token_text(const struct tokenizer *t, int32_t id, size_t *len);

/*
 * Tokenizes len bytes of text (any bytes: invalid UTF-8 falls back to byte tokens with
 * SentencePiece and becomes U+FFFD with BPE, as in llama.cpp; NUL is a byte like any other).
 * add_bos is llama.cpp's add_special: prepend BOS (and append EOS for a vocabulary whose
 * add_eos_token is set); callers normally pass tokenizer_add_bos(t). parse_special: recognise
 * control-token texts such as "<s>" in the text (false for the contract's commands and prompts);
 * user-defined tokens are recognised either way, as in llama.cpp. Writes at most max ids to ids
 * (may be NULL when max is 0); *n gets the number needed. Returns ERR_OK, ERR_BAD_REQUEST "text
 * needs N tokens, room for M" when N > max (ids then holds the first max), ERR_UNSUPPORTED when a
 * byte has no token and the vocabulary no unknown token, ERR_INTERNAL when the regex engine fails,
 * or ERR_NOMEM.
 */
int tokenizer_encode(const struct tokenizer *t, const char *text, size_t len, bool add_bos,
                     bool parse_special, int32_t *ids, size_t max, size_t *n, char *err);

/*
 * An upper bound on the ids tokenizer_encode() gives for len bytes of any text (BOS and EOS
 * included), for sizing ids before the call. It is not len + 2: a space can cost up to three
 * byte tokens (U+2581 split by a preceding invalid lead byte) and each plain run after a special
 * token gets a space prefix. Currently 4 * len + 5.
 */
size_t tokenizer_max_tokens(const struct tokenizer *t, size_t len);

/*
 * The bytes id contributes to output text: normal tokens with U+2581 turned into spaces
 * (SentencePiece) or with each GPT-2 byte character turned back into its byte (BPE), <0xXX> byte
 * tokens as that byte (SentencePiece), user-defined tokens as their text, control, unknown and
 * unused tokens as nothing (llama.cpp's token_to_piece with special = false). Writes up to size
 * bytes to buf and returns the full length (0 for an id out of range). A byte piece may be part
 * of a UTF-8 character: a streaming writer holds bytes back with stop_utf8_pending().
 */
size_t tokenizer_piece(const struct tokenizer *t, int32_t id, char *buf, size_t size);

/*
 * Whole-sequence detokenization as llama.cpp's llama_detokenize(remove_special = false,
 * unparse_special = false): the pieces joined, minus the one leading space SentencePiece adds
 * (removed from the first token's piece when the vocabulary adds a space prefix), then, for the
 * BPE vocabularies llama.cpp cleans (clean_spaces), the spaces before , . ? ! 's 'm 're 've and
 * around a lone ' removed. Writes up to size bytes to out (no NUL is added) and *len gets the
 * full length. Returns ERR_OK, ERR_BAD_REQUEST naming an id out of range, ERR_BAD_REQUEST "text
 * needs N bytes, room for M" when *len > size (out then holds the first size bytes), or
 * ERR_NOMEM (the clean-up decodes into a buffer of its own).
 */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, char *out,
                     size_t size, size_t *len, char *err);

#endif
