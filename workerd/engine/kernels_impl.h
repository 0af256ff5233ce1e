/*
 * kernels_impl.h: what the engine's kernel files share (kernels.c: float tiles, dispatch, CPUID;
 * kernels_quant.c: the quantized integer kernels): the x86 target attributes, the token block,
 * the CPUID level. Internal to those files; the rest of the engine uses kernels.h.
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

/* The kernels in use, decided once by CPUID (kernel_force_scalar/avx2() reset it). */
enum kernel_level {
    KERNEL_LEVEL_SCALAR = 1, /* the scalar references */
    KERNEL_LEVEL_AVX2,       /* AVX2 + FMA + F16C */
    KERNEL_LEVEL_AVX512VL,   /* and AVX-512F/VL: the float tiles of two rows per register */
};

enum kernel_level kernel_level(void);

/* kernel_matmul_rows() for a quantized type (one with a vec_dot); scratch as there. */
void kernel_matmul_quant(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                         size_t xs, uint32_t ntok, float *y, size_t ys, void *scratch);

#endif
