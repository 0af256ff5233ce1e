/*
 * quant.h: the block layouts of the quantized tensor types, as GGUF stores them, and the scalar
 * reference conversions of whole rows between F32 and each type llorch can read or write.
 * These are the slow, obviously-correct versions: fast kernels (dot products, SIMD) live elsewhere
 * and are held to these by tests. Row lengths n must be a multiple of the type's block size
 * (type_traits()->blck); callers check that (the GGUF reader already guarantees it for tensors).
 */
#ifndef LLORCH_QUANT_H
#define LLORCH_QUANT_H

#include <stdint.h>

#define QUANT_QK8_0 32 /* elements per Q8_0 block */
#define QUANT_QK4_0 32 /* elements per Q4_0 block */

/* Q8_0: value i = qs[i] * d. 34 bytes. */
struct block_q8_0 {
    uint16_t d; /* scale, IEEE half */
    int8_t qs[QUANT_QK8_0];
};

/*
 * Q4_0: 18 bytes. Element j (j < 16) is the low nibble of qs[j], element j + 16 the high nibble
 * of qs[j]; value = (nibble - 8) * d.
 */
struct block_q4_0 {
    uint16_t d; /* scale, IEEE half */
    uint8_t qs[QUANT_QK4_0 / 2];
};

_Static_assert(sizeof(struct block_q8_0) == 34, "Q8_0 block is 34 bytes in GGUF");
_Static_assert(sizeof(struct block_q4_0) == 18, "Q4_0 block is 18 bytes in GGUF");

/* Converts n elements of a row of the type at src into floats at dst. Never fails. */
typedef void (*quant_to_float_fn)(const void *src, float *dst, int64_t n);

/*
 * Converts n finite floats at src into a row of the type at dst (type_row_size(type, n) bytes),
 * rounding as ggml's reference quantizers do, so the bytes match what llama-quantize writes.
 * Never fails.
 */
typedef void (*quant_from_float_fn)(const float *src, void *dst, int64_t n);

/* The row conversions of one type; this is what the type table gains per type later. */
struct quant_row_fns {
    quant_to_float_fn to_float;
    quant_from_float_fn from_float;
};

/* The row conversions of a type id (enum type_id), or NULL when llorch has none for it. */
const struct quant_row_fns *quant_row_fns(uint32_t type);

void quant_dequantize_row_f32(const void *src, float *dst, int64_t n);
void quant_quantize_row_f32(const float *src, void *dst, int64_t n);
void quant_dequantize_row_f16(const void *src, float *dst, int64_t n);
void quant_quantize_row_f16(const float *src, void *dst, int64_t n);
void quant_dequantize_row_bf16(const void *src, float *dst, int64_t n);
void quant_quantize_row_bf16(const float *src, void *dst, int64_t n);

/* Q8_0: d = max|x| / 127 per block, q = round(x / d) (halves away from zero). */
void quant_dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void quant_quantize_row_q8_0(const float *src, void *dst, int64_t n);

/*
 * Q4_0: m = the element of largest magnitude (with its sign), d = m / -8,
 * q = min(15, (int)(x / d + 8.5)), so m itself maps to 0 (-8 d) and the other extreme clips at 15.
 */
void quant_dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void quant_quantize_row_q4_0(const float *src, void *dst, int64_t n);

#endif
