/*
 * utf8.h: small UTF-8 helpers for text that comes out of a tokenizer byte by byte.
 * A detokenized stream can stop in the middle of a character (byte-fallback pieces such as
 * <0xE6>), and JSON needs valid UTF-8: these say where the complete characters end and turn
 * invalid sequences into U+FFFD. Not a Unicode library (no categories, no normalization).
 */
#ifndef LLORCH_UTF8_H
#define LLORCH_UTF8_H

#include <stddef.h>

/*
 * The number of leading bytes of s[0..len) a streaming writer can emit now: everything but a
 * trailing sequence that is the valid start of a character still missing bytes. Invalid bytes
 * are not held back (they can never complete). The caller keeps the rest (at most 3 bytes) and
 * prepends it to the next piece.
 */
size_t utf8_complete(const char *s, size_t len);

/*
 * Copies s[0..len) to out, replacing each maximal invalid subsequence with U+FFFD (EF BF BD), as
 * Unicode's "maximal subpart" practice and Python's errors="replace" do; NUL bytes are kept.
 * Writes at most size bytes and returns the length the whole result needs (at most 3 * len).
 */
size_t utf8_sanitize(const char *s, size_t len, char *out, size_t size);

#endif
