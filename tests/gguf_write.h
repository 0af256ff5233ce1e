/*
 * gguf_write.h: a streaming GGUF writer for tests and tools (build/gguf-synth). It writes valid
 * GGUF v3 files by default and, on request, deliberately broken ones: any version number, raw
 * header counts, raw tensor infos (any dims, type ids, offsets) and raw bytes in the KV section.
 * Not the reader (workerd/engine/gguf.h) and not a model builder: it knows the format, not Llama.
 *
 * Use: new -> add KVs and tensor infos (buffered; they are small) -> write_header (header, KVs,
 * tensor infos, padding) -> write_data for each tensor in order, in as many chunks as wanted (the
 * writer pads between tensors) -> finish. Tensor data is never buffered, so a 13.5 GB file costs
 * no more memory than its metadata. All numbers are written little-endian.
 *
 *   gguf_writer_new_mem(&w, err);
 *   gguf_writer_add_str(w, "general.architecture", "llama");
 *   gguf_writer_add_tensor(w, "output_norm.weight", TYPE_F32, 1, (int64_t[]){64});
 *   gguf_writer_write_header(w, err);
 *   gguf_writer_write_data(w, weights, 64 * sizeof(float), err);
 *   gguf_writer_finish(w, err);
 *   buf = gguf_writer_take(w, &size); gguf_writer_free(w);
 */
#ifndef LLORCH_TESTS_GGUF_WRITE_H
#define LLORCH_TESTS_GGUF_WRITE_H

#include "workerd/engine/gguf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Errors: every function that can fail returns an enum err (common/err.h). The first failure is
 * sticky: the writer remembers its code and message, later calls do nothing and return the same
 * code, and the functions taking `char *err` (write_header, write_data, finish) copy the message.
 * So a builder may check each call or only the last one.
 */
struct gguf_writer;

/* A writer onto f, which the caller opened for writing and closes after gguf_writer_free(). */
int gguf_writer_new_file(struct gguf_writer **out, FILE *f, char *err);

/* A writer into a growable memory buffer (see gguf_writer_take). */
int gguf_writer_new_mem(struct gguf_writer **out, char *err);

/* Frees the writer and its buffers (the memory buffer too, unless taken). NULL is fine. */
void gguf_writer_free(struct gguf_writer *w);

/*
 * The memory buffer written so far, handed over: the caller free()s it. *size gets its length.
 * Returns NULL (size 0) for a file writer or when nothing was written. Later writes start a new
 * buffer.
 */
uint8_t *gguf_writer_take(struct gguf_writer *w, size_t *size);

/* The version number to write (default 3); any value, so tests can write 0, 1, 2 or 4. */
void gguf_writer_set_version(struct gguf_writer *w, uint32_t version);

/*
 * Raw header counts, written instead of the real numbers of tensor infos and KVs (tests: huge or
 * wrong counts). The section contents are unchanged.
 */
void gguf_writer_set_counts(struct gguf_writer *w, uint64_t n_tensors, uint64_t n_kv);

/*
 * KVs, written in the order added; nothing is checked (duplicate keys are written as asked). Adding
 * "general.alignment" as a nonzero UINT32 (by add_u32 or kv_copy) also makes the writer lay out the
 * data with that alignment (default 32), whatever the value; any other type or 0 changes nothing
 * but the KV, so a test can write an inconsistent file.
 */
int gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v);
int gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v);
int gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v);
int gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v);
int gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v);
int gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v);
int gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v);
int gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v);
int gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v);
int gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v);
int gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v);

/* A string value: NUL-terminated, or len bytes (any bytes, NULs included). */
int gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s);
int gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, uint64_t len);

/*
 * An array of n fixed-size elements of type t (not STRING or ARRAY): data holds them as native
 * C values of that type (uint8_t, int32_t, float, bool as one byte...).
 */
int gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *data,
                        uint64_t n);

/* An array of n NUL-terminated strings. */
int gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *strs,
                            uint64_t n);

/*
 * Nested arrays and other hand-built values: begin_arr writes the key (or nothing when key is
 * NULL: an element of an enclosing array of ARRAY), the array type, elem type t and count n; then
 * exactly n elements follow, each written with gguf_writer_val_*() (or a NULL-key begin_arr/end_arr
 * pair when t is ARRAY); end_arr checks the count. Arrays nest to any depth.
 */
int gguf_writer_begin_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t, uint64_t n);
int gguf_writer_end_arr(struct gguf_writer *w);
int gguf_writer_val_int(struct gguf_writer *w, enum gguf_vtype t, uint64_t bits);
int gguf_writer_val_f32(struct gguf_writer *w, float v);
int gguf_writer_val_f64(struct gguf_writer *w, double v);
int gguf_writer_val_str(struct gguf_writer *w, const char *s, uint64_t len);

/*
 * Copies a KV read by the reader (any type, arrays of strings and nested arrays included) byte for
 * byte, under its own key (key NULL) or under another one. The kv's reader must stay open during
 * the call only.
 */
int gguf_writer_kv_copy(struct gguf_writer *w, const struct gguf_kv *kv, const char *key);

/*
 * Raw bytes appended to the KV section, counted as `n_kv` KVs (tests: unknown value types,
 * huge string lengths, truncated values). The caller encodes them (little-endian).
 */
int gguf_writer_add_raw_kv(struct gguf_writer *w, const void *bytes, size_t len, uint64_t n_kv);

/*
 * A tensor info with its offset computed: the end of the previous tensor rounded up to the
 * alignment. Checked: type known to types.h, 1 <= n_dims <= GGUF_MAX_DIMS, every ne >= 1, ne[0] a
 * multiple of the type's block, size without overflow (ERR_BAD_REQUEST otherwise). ne[0] is the
 * contiguous dimension. Its data is written by write_data, or zero-filled by finish.
 */
int gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne);

/*
 * A tensor info written exactly as given, unchecked: n_dims values from ne, the type id and the
 * offset (relative to the data section). It has no data in the data phase (write_data skips it;
 * see write_zeros); a following add_tensor continues after the last computed tensor.
 */
int gguf_writer_add_tensor_raw(struct gguf_writer *w, const char *name, uint32_t type,
                               uint32_t n_dims, const uint64_t *ne, uint64_t offset);

/* Where the next tensor added with add_tensor would start, relative to the data section. */
uint64_t gguf_writer_next_offset(const struct gguf_writer *w);

/*
 * File offsets, for tests that patch bytes afterwards: where the next KV would start (final once
 * written: KVs are written in order), where the next tensor info would start (final once every KV
 * is added), and where the data section starts (final once every KV and tensor info is added).
 */
uint64_t gguf_writer_kv_pos(const struct gguf_writer *w);
uint64_t gguf_writer_tensor_pos(const struct gguf_writer *w);
uint64_t gguf_writer_data_offset(const struct gguf_writer *w);

/*
 * Writes the header, KVs, tensor infos and the padding up to the data section. Afterwards no KV or
 * tensor may be added (ERR_BAD_REQUEST). Blocks on the FILE; ERR_IO names the failed call.
 */
int gguf_writer_write_header(struct gguf_writer *w, char *err);

/*
 * Appends len bytes of tensor data. Tensors (those from add_tensor) are filled in the order added;
 * a chunk may not run past the end of the current tensor (ERR_BAD_REQUEST). Zero padding up to each
 * tensor's offset is written before its first byte. Writes the header first if not done yet.
 */
int gguf_writer_write_data(struct gguf_writer *w, const void *data, size_t len, char *err);

/*
 * Appends len zero bytes to the data section, whatever the tensors (tests: room behind raw tensor
 * infos). Tensor data written afterwards must still start at or after its offset.
 */
int gguf_writer_write_zeros(struct gguf_writer *w, uint64_t len, char *err);

/*
 * Zero-fills the data of every tensor not (fully) written (up to its end: bytes already written by
 * write_zeros count), pads the data section to the alignment
 * (as ggml does), and flushes a FILE. The writer accepts nothing afterwards but take and free.
 */
int gguf_writer_finish(struct gguf_writer *w, char *err);

#endif
