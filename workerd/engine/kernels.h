/*
 * kernels.h: the arithmetic of the forward pass: matrix x activations (the weights in their file
 * type, used in place), dot products, RMSNorm, RoPE, softmax, SiLU.
 *
 * Every dot product, whatever the kernel, the batch size or the thread that runs it, is reduced in
 * one canonical order: 8 lanes, element k accumulated into lane k % 8 with a fused multiply-add in
 * increasing k (a short last block is padded with zeros), then the lanes summed as
 * ((l0+l4)+(l2+l6))+((l1+l5)+(l3+l7)). The AVX2 kernels and the scalar reference both follow it,
 * so they give bit-identical results, and so do 1 or 2 threads, one token or a batch.
 * Quantized weight types reduce in the order of their reference vec_dot (quant.c): exact integer
 * sums per block against activations quantized to the type's vec_dot_type, then one float sum per
 * row in block order. F32, F16 and BF16 are read directly in the dot loop (kernel_type_supported()
 * says which types run).
 */
#ifndef LLORCH_KERNELS_H
#define LLORCH_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A 2-D weight in the mapping: rows x cols (cols = ne[0], contiguous), row_bytes apart. */
struct kernel_matrix {
    const void *data;
    uint32_t type; /* enum type_id */
    uint32_t rows, cols;
    size_t row_bytes;
};

/* Rows converted at once by kernel_matmul_rows(); its scratch holds this many rows of f32. */
#define KERNEL_TILE_ROWS 4

/* Floats of per-thread scratch kernel_matmul_rows() needs for matrices of up to cols columns. */
size_t kernel_scratch_floats(uint32_t cols);

/* Whether matrices of this type can be multiplied (and rows read as f32): `supported` in the type
 * table, and read directly (F32, F16, BF16) or with a vec_dot. */
bool kernel_type_supported(uint32_t type);

/* The kernels in use, decided once by CPUID (the highest this CPU runs), or forced by tests. */
enum kernel_level {
    KERNEL_LEVEL_SCALAR = 1, /* the scalar references */
    KERNEL_LEVEL_AVX2,       /* AVX2 + FMA + F16C */
    KERNEL_LEVEL_AVXVNNI,    /* and AVX-VNNI (vpdpbusd on 256 bits, VEX): the integer kernels */
    KERNEL_LEVEL_AVX512,     /* AVX2 + AVX-512 F/BW/VL: the float tiles of two rows per register */
    KERNEL_LEVEL_AVX512VNNI, /* and AVX512-VNNI (vpdpbusd, EVEX) */
};

enum kernel_level kernel_level(void);

/* Whether the AVX2/FMA/F16C kernels are in use (kernel_level() above scalar). */
bool kernel_simd_active(void);

/* Tests: force the scalar reference kernels (true) or go back to the CPUID choice (false). */
void kernel_force_scalar(bool scalar);

/* Tests: at most the AVX2 kernels (true: not the AVX-512 tiles nor VNNI even where the CPU has
 * them) or go back to the CPUID choice (false). */
void kernel_force_avx2(bool avx2);

/* Tests: force a level (false, and nothing changes, if this CPU cannot run it); 0 goes back to
 * the CPUID choice. */
bool kernel_force_level(enum kernel_level level);

/*
 * y[t*ys + r] = W[r] . x[t*xs ...] for rows r in [r0, r1) and tokens t in [0, ntok), in the
 * canonical order. scratch: kernel_scratch_floats(w->cols) floats owned by the calling thread
 * (unused, and may be NULL, for F32 weights).
 * The type must be supported (checked by the caller when the model is loaded).
 */
void kernel_matmul_rows(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                        size_t xs, uint32_t ntok, float *y, size_t ys, float *scratch);

/* Row r of w as n = w->cols floats (the embedding lookup). */
void kernel_row_to_f32(const struct kernel_matrix *w, uint32_t r, float *out);

/* y = x / sqrt(mean(x^2) + eps) over n floats (the sum of squares in double). y may equal x.
 * The weight is applied apart (kernel_mul), as llama.cpp does: the same roundings. */
void kernel_rmsnorm(float *y, const float *x, size_t n, float eps);

/*
 * Rotates one head of n_rot <= head_dim leading dims in place by the angles of one position:
 * cs[2i], cs[2i+1] = cos, sin of pos * base^(-2i/n_rot). rope_type 0 rotates adjacent pairs
 * (x[2i], x[2i+1]), rope_type 2 (NeoX) the pairs (x[i], x[i + n_rot/2]).
 */
void kernel_rope(float *x, const float *cs, uint32_t n_rot, int rope_type);

/* In place softmax over n floats: max subtracted, the engine's exp (within 2 ulp of e^x), the sum
 * in double in 8 lanes (element i in lane i % 8) combined as a dot product's; the same bits at
 * every level. */
void kernel_softmax(float *x, size_t n);

/* g = silu(g) = g / (1 + exp(-g)) over n floats, in place (the exp as softmax's). */
void kernel_silu(float *g, size_t n);

/* y = y * x (element-wise) over n floats. */
void kernel_mul(float *y, const float *x, size_t n);

/* y = y + x (element-wise) over n floats. */
void kernel_add(float *y, const float *x, size_t n);

/* Queries at most per kernel_weighted_sum() call. */
#define KERNEL_WSUM_MAX 8

/*
 * For each query j < m <= KERNEL_WSUM_MAX: o[j][i] = sum over p < n[j], in increasing p, of
 * w[j][p] * v[p*vs + i], for i < d: each product rounded, then added to a sum that starts at 0
 * (no fused multiply-add): attention's weighted sums of the value rows, of the queries that
 * read the same rows (AVX-512: each row loaded once for all of them). Every level gives the
 * plain loop's bits, however many queries share the call.
 */
void kernel_weighted_sum(float *const *o, const float *const *w, const uint32_t *n, int m,
                         const float *v, size_t vs, size_t d);

#endif
