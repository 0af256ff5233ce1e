/*
 * quant.h: the block layouts of the quantized tensor types, as GGUF stores them, and the scalar
 * reference kernels of each: whole-row conversions between F32 and the type, and the dot product
 * of a row of the type with a row of quantized activations (Q8_0, Q8_1 or Q8_K). These are the
 * slow, obviously-correct versions; the type table (types.h) points at them, and fast (SIMD)
 * kernels elsewhere are held to them by tests. Row lengths n must be a multiple of the type's
 * block size (type_traits()->blck); callers check that (the GGUF reader does for tensors).
 */
#ifndef LLORCH_QUANT_H
#define LLORCH_QUANT_H

#include <stdint.h>

#define QUANT_QK8_0 32  /* elements per Q8_0 / Q8_1 block */
#define QUANT_QK4_0 32  /* elements per Q4_0 / Q4_1 / Q5_0 / Q5_1 block */
#define QUANT_QK_K  256 /* elements per K-quant super-block */

/* Q8_0: value i = qs[i] * d. 34 bytes. */
struct block_q8_0 {
    uint16_t d; /* scale, IEEE half */
    int8_t qs[QUANT_QK8_0];
};

/* Q8_1: Q8_0 plus s = d * sum(qs) (a half), the activation type of Q4_1 and Q5_1. 36 bytes. */
struct block_q8_1 {
    uint16_t d; /* scale, IEEE half */
    uint16_t s; /* d * (qs[0] + ... + qs[31]), IEEE half */
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

/* Q4_1: nibbles as Q4_0; value = nibble * d + m. 20 bytes. */
struct block_q4_1 {
    uint16_t d; /* scale, IEEE half */
    uint16_t m; /* the block's minimum, IEEE half */
    uint8_t qs[QUANT_QK4_0 / 2];
};

/*
 * Q5_0: 22 bytes. The low 4 bits of element j as Q4_0's nibble j; its 5th bit is bit j of qh
 * (bit j % 8 of qh[j / 8]); value = (q - 16) * d.
 */
struct block_q5_0 {
    uint16_t d; /* scale, IEEE half */
    uint8_t qh[4];
    uint8_t qs[QUANT_QK4_0 / 2];
};

/* Q5_1: 5-bit quants as Q5_0; value = q * d + m. 24 bytes. */
struct block_q5_1 {
    uint16_t d; /* scale, IEEE half */
    uint16_t m; /* the block's minimum, IEEE half */
    uint8_t qh[4];
    uint8_t qs[QUANT_QK4_0 / 2];
};

/*
 * Q2_K: 256 elements in 16 sub-blocks of 16; 84 bytes. scales[j]: the low nibble is sub-block j's
 * scale, the high nibble its min; value = d * scale * q - dmin * min, q of 2 bits. Element
 * e = 128 h + 32 g + l (h < 2, g < 4, l < 32) is bits 2g..2g+1 of qs[32 h + l], in sub-block e
 * / 16.
 */
struct block_q2_k {
    uint8_t scales[QUANT_QK_K / 16];
    uint8_t qs[QUANT_QK_K / 4];
    uint16_t d;    /* super-block scale of the scales, IEEE half */
    uint16_t dmin; /* super-block scale of the mins, IEEE half */
};

/*
 * Q3_K: 256 elements in 16 sub-blocks of 16; 110 bytes. The low 2 bits of element e as Q2_K's;
 * its 3rd bit is bit 4h + g of hmask[l]; q = low bits - (3rd bit ? 0 : 4), in [-4, 3]. The 16
 * scales have 6 bits, stored +32: the low 4 bits of scale j are the low nibble of scales[j] (j < 8)
 * or the high nibble of scales[j - 8]; its high 2 bits are bits 2 (j / 4) .. +1 of scales[8 + j %
 * 4]. value = d * (scale - 32) * q.
 */
struct block_q3_k {
    uint8_t hmask[QUANT_QK_K / 8];
    uint8_t qs[QUANT_QK_K / 4];
    uint8_t scales[12];
    uint16_t d; /* super-block scale, IEEE half */
};

/*
 * Q4_K: 256 elements in 8 sub-blocks of 32; 144 bytes. 8 scales and 8 mins of 6 bits in 12 bytes:
 * for j < 4, scale j = scales[j] & 63 and min j = scales[j + 4] & 63; for j >= 4, the low 4 bits of
 * scale j are the low nibble of scales[j + 4] and of min j its high nibble, their high 2 bits the
 * top 2 bits of scales[j - 4] and scales[j] respectively. Element 64 c + l (c < 4, l < 32) is the
 * low nibble of qs[32 c + l] (sub-block 2c), element 64 c + 32 + l its high nibble (sub-block
 * 2c + 1). value = d * scale * q - dmin * min.
 */
struct block_q4_k {
    uint16_t d;    /* super-block scale of the scales, IEEE half */
    uint16_t dmin; /* super-block scale of the mins, IEEE half */
    uint8_t scales[12];
    uint8_t qs[QUANT_QK_K / 2];
};

/*
 * Q5_K: Q4_K plus a 5th bit per element (q in [0, 31]); 176 bytes. The 5th bit of element
 * 64 c + l is bit 2c of qh[l], of element 64 c + 32 + l bit 2c + 1 of qh[l].
 */
struct block_q5_k {
    uint16_t d;    /* super-block scale of the scales, IEEE half */
    uint16_t dmin; /* super-block scale of the mins, IEEE half */
    uint8_t scales[12];
    uint8_t qh[QUANT_QK_K / 8];
    uint8_t qs[QUANT_QK_K / 2];
};

/*
 * Q6_K: 256 elements in 16 sub-blocks of 16 with signed 8-bit scales; 210 bytes. In each half h
 * (128 elements; ql + 64 h, qh + 32 h), for l < 32: element l is the low nibble of ql[l],
 * l + 32 the low nibble of ql[l + 32], l + 64 the high nibble of ql[l], l + 96 the high nibble of
 * ql[l + 32]; their upper 2 bits are bits 0-1, 2-3, 4-5, 6-7 of qh[l]. value = d * scale * (q -
 * 32), scale = scales[e / 16].
 */
struct block_q6_k {
    uint8_t ql[QUANT_QK_K / 2];
    uint8_t qh[QUANT_QK_K / 4];
    int8_t scales[QUANT_QK_K / 16];
    uint16_t d; /* super-block scale, IEEE half */
};

/*
 * Q8_K: the activation type of the K-quants; value = qs[i] * d, d a float; bsums[j] is the sum
 * of qs[16 j .. 16 j + 15] (so K-quant dot products get the min terms cheaply). 292 bytes.
 */
struct block_q8_k {
    float d;
    int8_t qs[QUANT_QK_K];
    int16_t bsums[QUANT_QK_K / 16];
};

_Static_assert(sizeof(struct block_q8_0) == 34, "Q8_0 block is 34 bytes in GGUF");
_Static_assert(sizeof(struct block_q8_1) == 36, "Q8_1 block is 36 bytes in GGUF");
_Static_assert(sizeof(struct block_q4_0) == 18, "Q4_0 block is 18 bytes in GGUF");
_Static_assert(sizeof(struct block_q4_1) == 20, "Q4_1 block is 20 bytes in GGUF");
_Static_assert(sizeof(struct block_q5_0) == 22, "Q5_0 block is 22 bytes in GGUF");
_Static_assert(sizeof(struct block_q5_1) == 24, "Q5_1 block is 24 bytes in GGUF");
_Static_assert(sizeof(struct block_q2_k) == 84, "Q2_K block is 84 bytes in GGUF");
_Static_assert(sizeof(struct block_q3_k) == 110, "Q3_K block is 110 bytes in GGUF");
_Static_assert(sizeof(struct block_q4_k) == 144, "Q4_K block is 144 bytes in GGUF");
_Static_assert(sizeof(struct block_q5_k) == 176, "Q5_K block is 176 bytes in GGUF");
_Static_assert(sizeof(struct block_q6_k) == 210, "Q6_K block is 210 bytes in GGUF");
_Static_assert(sizeof(struct block_q8_k) == 292, "Q8_K block is 292 bytes in GGUF");

/*
 * Every function below has one of the three shapes of types.h's type_to_float_fn (src row of the
 * type -> n floats), type_from_float_fn (n finite floats -> a row of the type) and type_vec_dot_fn
 * (x a row of the type, y a row of its vec_dot_type -> their dot product). None fails.
 */
void quant_dequantize_row_f32(const void *src, float *dst, int64_t n);
void quant_quantize_row_f32(const float *src, void *dst, int64_t n);
void quant_dequantize_row_f16(const void *src, float *dst, int64_t n);
void quant_quantize_row_f16(const float *src, void *dst, int64_t n);
void quant_dequantize_row_bf16(const void *src, float *dst, int64_t n);
void quant_quantize_row_bf16(const float *src, void *dst, int64_t n);

/* Q8_0: d = max|x| / 127 per block, q = round(x / d) (halves away from zero). */
void quant_dequantize_row_q8_0(const void *src, float *dst, int64_t n);
void quant_quantize_row_q8_0(const float *src, void *dst, int64_t n);

/* Q8_1: as Q8_0, and s = d * sum(q) (the float d) stored as a half. */
void quant_dequantize_row_q8_1(const void *src, float *dst, int64_t n);
void quant_quantize_row_q8_1(const float *src, void *dst, int64_t n);

/*
 * Q4_0: m = the element of largest magnitude (with its sign), d = m / -8,
 * q = min(15, (int)(x / d + 8.5)), so m itself maps to 0 (-8 d) and the other extreme clips at 15.
 * Q5_0 likewise with 16 and 31.
 */
void quant_dequantize_row_q4_0(const void *src, float *dst, int64_t n);
void quant_quantize_row_q4_0(const float *src, void *dst, int64_t n);
void quant_dequantize_row_q5_0(const void *src, float *dst, int64_t n);
void quant_quantize_row_q5_0(const float *src, void *dst, int64_t n);

/* Q4_1 / Q5_1: m = min(x), d = (max(x) - m) / 15 (31), q = min(15 (31), (int)((x - m) / d + 0.5)).
 */
void quant_dequantize_row_q4_1(const void *src, float *dst, int64_t n);
void quant_quantize_row_q4_1(const float *src, void *dst, int64_t n);
void quant_dequantize_row_q5_1(const void *src, float *dst, int64_t n);
void quant_quantize_row_q5_1(const float *src, void *dst, int64_t n);

/*
 * The K-quants: llorch's own quantizers (not byte-identical to llama-quantize, which searches for
 * the scales that minimise the squared error and may clip). Ours keep every element within half
 * a step of its sub-block: Q2_K / Q4_K / Q5_K take each sub-block's min as min(0, min x) and round
 * the codes of the mins and scales up, so the quants span the sub-block's range; Q3_K / Q6_K use
 * step = max|x| / 3.5 (31.5) per sub-block, rounded up to its code, with quants in [-4, 3]
 * ([-32, 31]): +max rounds to 4 (32) and clamps to 3 (31), still half a step away.
 */
void quant_dequantize_row_q2_k(const void *src, float *dst, int64_t n);
void quant_quantize_row_q2_k(const float *src, void *dst, int64_t n);
void quant_dequantize_row_q3_k(const void *src, float *dst, int64_t n);
void quant_quantize_row_q3_k(const float *src, void *dst, int64_t n);
void quant_dequantize_row_q4_k(const void *src, float *dst, int64_t n);
void quant_quantize_row_q4_k(const float *src, void *dst, int64_t n);
void quant_dequantize_row_q5_k(const void *src, float *dst, int64_t n);
void quant_quantize_row_q5_k(const float *src, void *dst, int64_t n);
void quant_dequantize_row_q6_k(const void *src, float *dst, int64_t n);
void quant_quantize_row_q6_k(const float *src, void *dst, int64_t n);

/* The 8 scales and 8 mins of a Q4_K / Q5_K super-block from its 12 packed bytes (the SIMD
 * kernels share the layout with the references through this). */
void quant_scales6_get(const uint8_t *s, int16_t *sc, int16_t *m);

/* Q8_K: d = max|x| / 127 per 256 elements, q = round(x / d) in [-127, 127], and the bsums. */
void quant_dequantize_row_q8_k(const void *src, float *dst, int64_t n);
void quant_quantize_row_q8_k(const float *src, void *dst, int64_t n);

/*
 * Dot products: x a row of the first type, y of the activation type named. Integer products
 * within each block (sub-block for the K-quants), scaled and summed in float in element order.
 * For Q4_1 / Q5_1 the min term uses y's stored s.
 */
float quant_vec_dot_f32(const void *x, const void *y, int64_t n);  /* y F32 */
float quant_vec_dot_f16(const void *x, const void *y, int64_t n);  /* y F32 */
float quant_vec_dot_bf16(const void *x, const void *y, int64_t n); /* y F32 */
float quant_vec_dot_q8_0(const void *x, const void *y, int64_t n); /* y Q8_0 */
float quant_vec_dot_q4_0(const void *x, const void *y, int64_t n); /* y Q8_0 */
float quant_vec_dot_q5_0(const void *x, const void *y, int64_t n); /* y Q8_0 */
float quant_vec_dot_q4_1(const void *x, const void *y, int64_t n); /* y Q8_1 */
float quant_vec_dot_q5_1(const void *x, const void *y, int64_t n); /* y Q8_1 */
float quant_vec_dot_q2_k(const void *x, const void *y, int64_t n); /* y Q8_K */
float quant_vec_dot_q3_k(const void *x, const void *y, int64_t n); /* y Q8_K */
float quant_vec_dot_q4_k(const void *x, const void *y, int64_t n); /* y Q8_K */
float quant_vec_dot_q5_k(const void *x, const void *y, int64_t n); /* y Q8_K */
float quant_vec_dot_q6_k(const void *x, const void *y, int64_t n); /* y Q8_K */

#endif
