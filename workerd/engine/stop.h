/*
 * stop.h: what part of the text generated so far may be released to a client. Two things hold text
 * back: a stop string that may be starting at the end (its first bytes generated, the rest maybe
 * to come), and an incomplete UTF-8 sequence (byte-fallback tokens give one byte at a time).
 * Pure functions over caller-owned bytes: the generation loop (generate.h), orchd and the commands
 * share them. Not the tokenizer, not the sampler.
 */
#ifndef LLORCH_STOP_H
#define LLORCH_STOP_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Scans text[0..len) for the stop strings (NUL-terminated; empty ones are ignored) and returns how
 * many bytes of text may be released now:
 * - a stop string occurs starting at or after `from`: *hit = true and the result is where the
 *   earliest occurrence starts (the text is cut there; the stop string is not part of the output);
 * - otherwise *hit = false and the result is len minus the longest tail of text[from..len) that
 *   is the beginning of some stop string (held back until the next bytes decide).
 * `from` is the number of bytes already released: no stop string can start before it.
 */
size_t stop_scan(const char *const *stops, size_t n_stops, const char *text, size_t len,
                 size_t from, bool *hit);

/*
 * Bytes at the end of text[0..len) that are the start of a UTF-8 sequence still missing bytes
 * (0 to 3). Invalid bytes are not held back: they can never complete.
 */
size_t stop_utf8_pending(const char *text, size_t len);

#endif
