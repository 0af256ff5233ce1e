/*
 * kernels_impl.h: what the engine's kernel files share (kernels.c: float tiles, dispatch, CPUID;
 * kernels_quant.c: the quantized integer kernels): the x86 target attributes, the token block.
 * Internal to those files; the rest of the engine uses kernels.h.
 */
#ifndef LLORCH_KERNELS_IMPL_H
#define LLORCH_KERNELS_IMPL_H

#include "workerd/engine/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define KERNEL_X86    1
#define AVX2          __attribute__((target("avx2,fma,f16c")))
#define ALWAYS_INLINE inline __attribute__((always_inline))
#endif

/* Tokens that share one conversion of a weight tile (F16/BF16) or one activation quantization. */
#define KERNEL_TOK_BLOCK 64

/* Bytes of per-thread scratch kernel_matmul_quant() needs for matrices of up to cols columns. */
size_t kernel_quant_scratch_bytes(uint32_t cols);

/* kernel_matmul_rows() for a quantized type (one with a vec_dot); scratch as there. */
void kernel_matmul_quant(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                         size_t xs, uint32_t ntok, float *y, size_t ys, void *scratch);

#endif
