/*
 * utf8.h: making bytes valid UTF-8. Detokenized text can hold invalid or split sequences
 * (byte-fallback pieces such as <0xE6>), and JSON output (jansson) needs valid UTF-8: this turns
 * invalid sequences into U+FFFD the way Python and llama.cpp's reference dumps do. Not a Unicode
 * library (no categories, no normalization); holding back an incomplete character while
 * streaming is stop_utf8_pending() in workerd/engine/stop.h.
 */
#ifndef LLORCH_UTF8_H
#define LLORCH_UTF8_H

#include <stddef.h>

/*
 * Copies s[0..len) to out, replacing each maximal invalid subsequence with U+FFFD (EF BF BD), as
 * Unicode's "maximal subpart" practice and Python's errors="replace" do; NUL bytes are kept.
 * Writes at most size bytes and returns the length the whole result needs (at most 3 * len).
 */
size_t utf8_sanitize(const char *s, size_t len, char *out, size_t size);

#endif
