/*
 * kernels.c: see kernels.h. Two implementations of every dot product: AVX2+FMA+F16C (chosen at run
 * time by CPUID, compiled with per-function target attributes so the rest of the build stays
 * baseline x86-64; with AVX-512VL a wider prefill tile of the same 8-lane vectors) and the scalar
 * reference, which follows the same canonical order with fmaf() so that they agree bit for bit.
 * Quantized weights: activations quantized once per matrix call to the type's vec_dot_type, exact
 * integer block sums (AVX2 maddubs) and the float part in the order of quant.c's reference
 * vec_dot, which is the scalar path. Not here: the reference kernels themselves (quant.c).
 */
#include "workerd/engine/kernels.h"

#include "workerd/engine/quant.h"
#include "workerd/engine/types.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define KERNEL_X86 1
#endif

#define LANES       8
#define TOK_TILE    2  /* tokens per tile */
#define WIDE_TOKENS 6  /* tokens per tile with AVX-512VL's 32 registers */
#define TOK_BLOCK   64 /* tokens that share one conversion of a weight tile */
#define DIRECT_MAX  2  /* up to this many tokens, F16/BF16 rows are converted inside the dot loop */
#define QTOK        4  /* tokens per quantized tile */

/* How a weight row's elements are read: LOAD_NONE types go through their row conversion. */
enum load_kind { LOAD_NONE = 0, LOAD_F32, LOAD_F16, LOAD_BF16 };

/* The direct read of each type's elements in the dot loop, if any (else: row conversion). */
static enum load_kind
direct_kind(uint32_t type)
{
    switch (type) {
    case TYPE_F32:
        return LOAD_F32;
    case TYPE_F16:
        return LOAD_F16;
    case TYPE_BF16:
        return LOAD_BF16;
    default:
        return LOAD_NONE;
    }
}

bool
kernel_type_supported(uint32_t type)
{
    const struct type_traits *t = type_traits(type);

    if (t == NULL || !t->supported || t->to_float == NULL)
        return false;
    return direct_kind(type) != LOAD_NONE ||
           (t->vec_dot != NULL && type_traits(t->vec_dot_type)->from_float != NULL);
}

size_t
kernel_scratch_floats(uint32_t cols)
{
    /* F16/BF16 rows converted to f32, or TOK_BLOCK activation rows quantized to Q8_0, Q8_1 or
     * Q8_K (at most 37 bytes per 32 elements) */
    size_t conv = (size_t)KERNEL_TILE_ROWS * cols;
    size_t quant = ((size_t)TOK_BLOCK * ((cols + 31) / 32) * 37 + 3) / 4;

    return conv > quant ? conv : quant;
}

void
kernel_row_to_f32(const struct kernel_matrix *w, uint32_t r, float *out)
{
    type_traits(w->type)->to_float((const char *)w->data + (size_t)r * w->row_bytes, out, w->cols);
}

/* out[i] = w[i] . y for KERNEL_TILE_ROWS rows of a quantized type and one activation row. */
typedef void (*qrows_fn)(const void *const *w, const void *y, size_t ystride, size_t n, float *out,
                         size_t os);

/* ---- scalar reference ---- */

static inline float
load1(enum load_kind kind, const void *p, size_t k)
{
    switch (kind) {
    case LOAD_F16:
        return fp16_to_f32(((const uint16_t *)p)[k]);
    case LOAD_BF16:
        return bf16_to_f32(((const uint16_t *)p)[k]);
    default:
        return ((const float *)p)[k];
    }
}

static inline float
lane_sum(const float l[LANES])
{
    return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]));
}

static float
dot_scalar(enum load_kind kind, const void *w, const float *x, size_t n)
{
    float l[LANES] = {0};
    size_t k;

    for (k = 0; k < n; k++)
        l[k % LANES] = fmaf(load1(kind, w, k), x[k], l[k % LANES]);
    for (; k % LANES != 0; k++) /* the zero padding of the last block */
        l[k % LANES] = fmaf(0.0f, 0.0f, l[k % LANES]);
    return lane_sum(l);
}

/* y[j*ys + i] = w[i] . x[j] for i < nr, j < nt. */
static void
tile_scalar(enum load_kind kind, int nr, int nt, const void *const *w, const float *const *x,
            size_t n, float *y, size_t ys)
{
    for (int i = 0; i < nr; i++)
        for (int j = 0; j < nt; j++)
            y[j * ys + i] = dot_scalar(kind, w[i], x[j], n);
}

/* ---- AVX2 + FMA + F16C ---- */

#ifdef KERNEL_X86
#define AVX2          __attribute__((target("avx2,fma,f16c")))
#define ALWAYS_INLINE inline __attribute__((always_inline))

AVX2 static ALWAYS_INLINE __m256
load8(enum load_kind kind, const void *p, size_t k)
{
    if (kind == LOAD_F16)
        return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + k)));
    if (kind == LOAD_BF16) {
        __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + k));
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    return _mm256_loadu_ps((const float *)p + k);
}

/* ((l0+l4)+(l2+l6)) + ((l1+l5)+(l3+l7)), as lane_sum(). */
AVX2 static ALWAYS_INLINE float
hsum8(__m256 v)
{
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    __m128 b = _mm_add_ps(a, _mm_movehl_ps(a, a));
    return _mm_cvtss_f32(_mm_add_ss(b, _mm_shuffle_ps(b, b, 1)));
}

/* Copies the last, short block of each of nr rows (or tokens) as f32 into zero-padded lanes. */
static inline void
pad_tail(enum load_kind kind, int nr, const void *const *src, size_t n8, size_t n,
         float dst[][LANES])
{
    for (int i = 0; i < nr; i++) {
        memset(dst[i], 0, sizeof(dst[i]));
        for (size_t k = n8; k < n; k++)
            dst[i][k - n8] = load1(kind, src[i], k);
    }
}

/* One block of 8 columns of a 4-row x 2-token tile: a<row><token> += w<row> * x<token>. */
#define STEP_4X2(kind, w, x, k)                                                                    \
    do {                                                                                           \
        __m256 x0_ = _mm256_loadu_ps((x)[0] + (k)), x1_ = _mm256_loadu_ps((x)[1] + (k)), w_;       \
        w_ = load8(kind, (w)[0], k);                                                               \
        a00 = _mm256_fmadd_ps(w_, x0_, a00);                                                       \
        a01 = _mm256_fmadd_ps(w_, x1_, a01);                                                       \
        w_ = load8(kind, (w)[1], k);                                                               \
        a10 = _mm256_fmadd_ps(w_, x0_, a10);                                                       \
        a11 = _mm256_fmadd_ps(w_, x1_, a11);                                                       \
        w_ = load8(kind, (w)[2], k);                                                               \
        a20 = _mm256_fmadd_ps(w_, x0_, a20);                                                       \
        a21 = _mm256_fmadd_ps(w_, x1_, a21);                                                       \
        w_ = load8(kind, (w)[3], k);                                                               \
        a30 = _mm256_fmadd_ps(w_, x0_, a30);                                                       \
        a31 = _mm256_fmadd_ps(w_, x1_, a31);                                                       \
    } while (0)

/* One block of 8 columns of a 4-row x 1-token tile. */
#define STEP_4X1(kind, w, x, k)                                                                    \
    do {                                                                                           \
        __m256 x0_ = _mm256_loadu_ps((x)[0] + (k));                                                \
        a00 = _mm256_fmadd_ps(load8(kind, (w)[0], k), x0_, a00);                                   \
        a10 = _mm256_fmadd_ps(load8(kind, (w)[1], k), x0_, a10);                                   \
        a20 = _mm256_fmadd_ps(load8(kind, (w)[2], k), x0_, a20);                                   \
        a30 = _mm256_fmadd_ps(load8(kind, (w)[3], k), x0_, a30);                                   \
    } while (0)

/* One block of 8 columns of one row and one token. */
#define STEP_1X1(kind, w, x, k)                                                                    \
    do {                                                                                           \
        a00 = _mm256_fmadd_ps(load8(kind, (w)[0], k), _mm256_loadu_ps((x)[0] + (k)), a00);         \
    } while (0)

/*
 * The tile kernels: y[j*ys + i] = w[i] . x[j] for i < nr rows, j < nt tokens, accumulators in
 * registers (named: compilers keep arrays of vectors in memory). The main loop runs over whole
 * blocks of 8; the short last block, if any, runs the same step on zero-padded f32 copies.
 */
#define TILE_BODY(nr, nt, STEP)                                                                    \
    float wt[KERNEL_TILE_ROWS][LANES], xt[TOK_TILE][LANES];                                        \
    const float *wp[KERNEL_TILE_ROWS] = {wt[0], wt[1], wt[2], wt[3]};                              \
    const float *xp[TOK_TILE] = {xt[0], xt[1]};                                                    \
    size_t n8 = n & ~(size_t)(LANES - 1);                                                          \
    if (n8 < n) { /* before the loop: a call here would spill the accumulators */                  \
        pad_tail(kind, nr, w, n8, n, wt);                                                          \
        pad_tail(LOAD_F32, nt, (const void *const *)x, n8, n, xt);                                 \
    }                                                                                              \
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a10 = a00, a11 = a00;                             \
    __m256 a20 = a00, a21 = a00, a30 = a00, a31 = a00;                                             \
    for (size_t k = 0; k < n8; k += LANES)                                                         \
        STEP(kind, w, x, k);                                                                       \
    if (n8 < n)                                                                                    \
        STEP(LOAD_F32, wp, xp, 0);                                                                 \
    __m256 acc_[KERNEL_TILE_ROWS][TOK_TILE] = {{a00, a01}, {a10, a11}, {a20, a21}, {a30, a31}};    \
    for (int i = 0; i < nr; i++)                                                                   \
        for (int j = 0; j < nt; j++)                                                               \
            y[j * ys + i] = hsum8(acc_[i][j]);

AVX2 static ALWAYS_INLINE void
tile_4x2(enum load_kind kind, const void *const *w, const float *const *x, size_t n, float *y,
         size_t ys){TILE_BODY(KERNEL_TILE_ROWS, 2, STEP_4X2)}

AVX2 static ALWAYS_INLINE
    void tile_4x1(enum load_kind kind, const void *const *w, const float *const *x, size_t n,
                  float *y, size_t ys){TILE_BODY(KERNEL_TILE_ROWS, 1, STEP_4X1)}

AVX2 static ALWAYS_INLINE
    void tile_1x1(enum load_kind kind, const void *const *w, const float *const *x, size_t n,
                  float *y, size_t ys){TILE_BODY(1, 1, STEP_1X1)}

/* y[i] = w[i] . x[0] for 8 rows and one token (decode: more rows in flight per thread). */
AVX2 static ALWAYS_INLINE void tile_8x1(enum load_kind kind, const void *const *w,
                                        const float *const *x, size_t n, float *y)
{
    float wt[8][LANES], xt[1][LANES];
    size_t n8 = n & ~(size_t)(LANES - 1);
    if (n8 < n) {
        pad_tail(kind, 8, w, n8, n, wt);
        pad_tail(LOAD_F32, 1, (const void *const *)x, n8, n, xt);
    }
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t k = 0; k < n8; k += LANES) {
        __m256 xv = _mm256_loadu_ps(x[0] + k);
        a0 = _mm256_fmadd_ps(load8(kind, w[0], k), xv, a0);
        a1 = _mm256_fmadd_ps(load8(kind, w[1], k), xv, a1);
        a2 = _mm256_fmadd_ps(load8(kind, w[2], k), xv, a2);
        a3 = _mm256_fmadd_ps(load8(kind, w[3], k), xv, a3);
        a4 = _mm256_fmadd_ps(load8(kind, w[4], k), xv, a4);
        a5 = _mm256_fmadd_ps(load8(kind, w[5], k), xv, a5);
        a6 = _mm256_fmadd_ps(load8(kind, w[6], k), xv, a6);
        a7 = _mm256_fmadd_ps(load8(kind, w[7], k), xv, a7);
    }
    if (n8 < n) {
        __m256 xv = _mm256_loadu_ps(xt[0]);
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[0]), xv, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[1]), xv, a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[2]), xv, a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[3]), xv, a3);
        a4 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[4]), xv, a4);
        a5 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[5]), xv, a5);
        a6 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[6]), xv, a6);
        a7 = _mm256_fmadd_ps(_mm256_loadu_ps(wt[7]), xv, a7);
    }
    y[0] = hsum8(a0), y[1] = hsum8(a1), y[2] = hsum8(a2), y[3] = hsum8(a3);
    y[4] = hsum8(a4), y[5] = hsum8(a5), y[6] = hsum8(a6), y[7] = hsum8(a7);
}

typedef void (*tile_fn)(const void *const *w, const float *const *x, size_t n, float *y, size_t ys);

#define TILE_FNS(sfx, kind)                                                                        \
    AVX2 static void tile_##sfx##_4x2(const void *const *w, const float *const *x, size_t n,       \
                                      float *y, size_t ys)                                         \
    {                                                                                              \
        tile_4x2(kind, w, x, n, y, ys);                                                            \
    }                                                                                              \
    AVX2 static void tile_##sfx##_4x1(const void *const *w, const float *const *x, size_t n,       \
                                      float *y, size_t ys)                                         \
    {                                                                                              \
        tile_4x1(kind, w, x, n, y, ys);                                                            \
    }                                                                                              \
    AVX2 static void tile_##sfx##_8x1(const void *const *w, const float *const *x, size_t n,       \
                                      float *y, size_t ys)                                         \
    {                                                                                              \
        (void)ys;                                                                                  \
        tile_8x1(kind, w, x, n, y);                                                                \
    }                                                                                              \
    AVX2 static void tile_##sfx##_1x1(const void *const *w, const float *const *x, size_t n,       \
                                      float *y, size_t ys)                                         \
    {                                                                                              \
        tile_1x1(kind, w, x, n, y, ys);                                                            \
    }
TILE_FNS(f32, LOAD_F32)
TILE_FNS(f16, LOAD_F16)
TILE_FNS(bf16, LOAD_BF16)

/* [kind][shape]: shape 0 = 4 rows x 2 tokens, 1 = 4 x 1, 2 = 1 x 1, 3 = 8 x 1. */
static const tile_fn tiles_avx2[][4] = {
    [LOAD_F32] = {tile_f32_4x2, tile_f32_4x1, tile_f32_1x1, tile_f32_8x1},
    [LOAD_F16] = {tile_f16_4x2, tile_f16_4x1, tile_f16_1x1, tile_f16_8x1},
    [LOAD_BF16] = {tile_bf16_4x2, tile_bf16_4x1, tile_bf16_1x1, tile_bf16_8x1},
};

/* dst[0..n) = the n elements of an F16 or BF16 row as f32 (exact). */
AVX2 static void
convert_avx2(enum load_kind kind, const void *src, float *dst, size_t n)
{
    size_t k = 0;

    for (; k + LANES <= n; k += LANES)
        _mm256_storeu_ps(dst + k, load8(kind, src, k));
    for (; k < n; k++)
        dst[k] = load1(kind, src, k);
}

/*
 * With AVX-512VL, 256-bit operations reach 32 registers: a tile of 4 rows x 6 tokens keeps 24
 * accumulators, 6 token vectors and a weight vector in registers (prefill; f32 rows only: the
 * converted tiles or F32 weights). Same lanes, same order: the same bits as the AVX2 tiles.
 */
#define AVX512VL __attribute__((target("avx2,fma,f16c,avx512f,avx512vl")))

#define STEP_4X6(w, x, k)                                                                          \
    do {                                                                                           \
        __m256 x0 = _mm256_loadu_ps((x)[0] + (k)), x1 = _mm256_loadu_ps((x)[1] + (k)),             \
               x2 = _mm256_loadu_ps((x)[2] + (k));                                                 \
        __m256 x3 = _mm256_loadu_ps((x)[3] + (k)), x4 = _mm256_loadu_ps((x)[4] + (k)),             \
               x5 = _mm256_loadu_ps((x)[5] + (k)), w_;                                             \
        w_ = _mm256_loadu_ps((w)[0] + (k));                                                        \
        a00 = _mm256_fmadd_ps(w_, x0, a00);                                                        \
        a01 = _mm256_fmadd_ps(w_, x1, a01);                                                        \
        a02 = _mm256_fmadd_ps(w_, x2, a02);                                                        \
        a03 = _mm256_fmadd_ps(w_, x3, a03);                                                        \
        a04 = _mm256_fmadd_ps(w_, x4, a04);                                                        \
        a05 = _mm256_fmadd_ps(w_, x5, a05);                                                        \
        w_ = _mm256_loadu_ps((w)[1] + (k));                                                        \
        a10 = _mm256_fmadd_ps(w_, x0, a10);                                                        \
        a11 = _mm256_fmadd_ps(w_, x1, a11);                                                        \
        a12 = _mm256_fmadd_ps(w_, x2, a12);                                                        \
        a13 = _mm256_fmadd_ps(w_, x3, a13);                                                        \
        a14 = _mm256_fmadd_ps(w_, x4, a14);                                                        \
        a15 = _mm256_fmadd_ps(w_, x5, a15);                                                        \
        w_ = _mm256_loadu_ps((w)[2] + (k));                                                        \
        a20 = _mm256_fmadd_ps(w_, x0, a20);                                                        \
        a21 = _mm256_fmadd_ps(w_, x1, a21);                                                        \
        a22 = _mm256_fmadd_ps(w_, x2, a22);                                                        \
        a23 = _mm256_fmadd_ps(w_, x3, a23);                                                        \
        a24 = _mm256_fmadd_ps(w_, x4, a24);                                                        \
        a25 = _mm256_fmadd_ps(w_, x5, a25);                                                        \
        w_ = _mm256_loadu_ps((w)[3] + (k));                                                        \
        a30 = _mm256_fmadd_ps(w_, x0, a30);                                                        \
        a31 = _mm256_fmadd_ps(w_, x1, a31);                                                        \
        a32 = _mm256_fmadd_ps(w_, x2, a32);                                                        \
        a33 = _mm256_fmadd_ps(w_, x3, a33);                                                        \
        a34 = _mm256_fmadd_ps(w_, x4, a34);                                                        \
        a35 = _mm256_fmadd_ps(w_, x5, a35);                                                        \
    } while (0)

AVX512VL static void
tile_f32_4x6(const void *const *w, const float *const *x, size_t n, float *y, size_t ys)
{
    float wt[KERNEL_TILE_ROWS][LANES], xt[WIDE_TOKENS][LANES];
    const float *wl[KERNEL_TILE_ROWS] = {wt[0], wt[1], wt[2], wt[3]};
    const float *xl[WIDE_TOKENS] = {xt[0], xt[1], xt[2], xt[3], xt[4], xt[5]};
    const float *const *wf = (const float *const *)w;
    size_t n8 = n & ~(size_t)(LANES - 1);

    if (n8 < n) { /* before the loop: a call there would spill the accumulators */
        pad_tail(LOAD_F32, KERNEL_TILE_ROWS, w, n8, n, wt);
        pad_tail(LOAD_F32, WIDE_TOKENS, (const void *const *)x, n8, n, xt);
    }
    __m256 a00 = _mm256_setzero_ps(), a01 = a00, a02 = a00, a03 = a00, a04 = a00, a05 = a00,
           a10 = a00, a11 = a00, a12 = a00, a13 = a00, a14 = a00, a15 = a00, a20 = a00, a21 = a00,
           a22 = a00, a23 = a00, a24 = a00, a25 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00,
           a34 = a00, a35 = a00;
    for (size_t k = 0; k < n8; k += LANES)
        STEP_4X6(wf, x, k);
    if (n8 < n)
        STEP_4X6(wl, xl, 0);
    y[0 * ys + 0] = hsum8(a00), y[0 * ys + 1] = hsum8(a10), y[0 * ys + 2] = hsum8(a20),
               y[0 * ys + 3] = hsum8(a30);
    y[1 * ys + 0] = hsum8(a01), y[1 * ys + 1] = hsum8(a11), y[1 * ys + 2] = hsum8(a21),
               y[1 * ys + 3] = hsum8(a31);
    y[2 * ys + 0] = hsum8(a02), y[2 * ys + 1] = hsum8(a12), y[2 * ys + 2] = hsum8(a22),
               y[2 * ys + 3] = hsum8(a32);
    y[3 * ys + 0] = hsum8(a03), y[3 * ys + 1] = hsum8(a13), y[3 * ys + 2] = hsum8(a23),
               y[3 * ys + 3] = hsum8(a33);
    y[4 * ys + 0] = hsum8(a04), y[4 * ys + 1] = hsum8(a14), y[4 * ys + 2] = hsum8(a24),
               y[4 * ys + 3] = hsum8(a34);
    y[5 * ys + 0] = hsum8(a05), y[5 * ys + 1] = hsum8(a15), y[5 * ys + 2] = hsum8(a25),
               y[5 * ys + 3] = hsum8(a35);
}

/*
 * Quantized weights (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K) against activations
 * quantized once per matrix call to the type's vec_dot_type: the integer sums of each block (or
 * sub-block) are exact, and the float part runs in the reference's order (quant.c's vec_dot:
 * one float sum per row in increasing block order), so these give the reference's bits. Four rows
 * share one activation block; their four float sums are one 128-bit vector, still one sum per row.
 */

/* The four lane sums of a, b, c, d, in that order (exact: integers). */
AVX2 static ALWAYS_INLINE __m128i
hsum4_i32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));

    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

AVX2 static ALWAYS_INLINE int32_t
hsum_i32(__m256i a)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(a), _mm256_extracti128_si256(a, 1));

    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

AVX2 static ALWAYS_INLINE float
half_at(const uint8_t *p)
{
    uint16_t h;

    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

/* 16 bytes of nibbles: element j < 16 the low nibble of byte j, element j + 16 its high one. */
AVX2 static ALWAYS_INLINE __m256i
nibbles32(const uint8_t *qs)
{
    __m128i q = _mm_loadu_si128((const __m128i *)qs);

    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), _mm256_set1_epi8(0x0f));
}

/* 0x10 in byte j where bit j of the 32 bits at qh is set (the 5th bit of Q5_0 / Q5_1). */
AVX2 static ALWAYS_INLINE __m256i
fifth_bits32(const uint8_t *qh)
{
    uint32_t h;

    memcpy(&h, qh, 4);
    __m256i v =
        _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                            _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2,
                                             2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3));
    __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);

    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

/* One 32-element block of a weight row: its quants as signed bytes, d and m (m 0 without min). */
AVX2 static ALWAYS_INLINE __m256i
unpack32(uint32_t type, const uint8_t *b, float *d, float *m)
{
    *d = half_at(b);
    *m = 0.0f;
    switch (type) {
    case TYPE_Q8_0:
        return _mm256_loadu_si256((const __m256i *)(b + 2));
    case TYPE_Q4_0:
        return _mm256_sub_epi8(nibbles32(b + 2), _mm256_set1_epi8(8));
    case TYPE_Q4_1:
        *m = half_at(b + 2);
        return nibbles32(b + 4);
    case TYPE_Q5_0:
        return _mm256_sub_epi8(_mm256_or_si256(nibbles32(b + 6), fifth_bits32(b + 2)),
                               _mm256_set1_epi8(16));
    default: /* TYPE_Q5_1 */
        *m = half_at(b + 2);
        return _mm256_or_si256(nibbles32(b + 8), fifth_bits32(b + 4));
    }
}

/*
 * out[j*os + i] = w[i] . y_j for 4 rows of a 32-element type and nt activation rows y_j (Q8_0,
 * or Q8_1 for the types with a min; ystride bytes apart): per block sum += d_x d_y isum, then
 * (with a min) sum += m_x s_y. The rows' blocks are unpacked once for the nt tokens.
 */
AVX2 static ALWAYS_INLINE void
qtile32(uint32_t type, size_t bsize, int nt, const void *const *w, const void *y, size_t ystride,
        size_t n, float *out, size_t os)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;
    size_t ybs = with_min ? sizeof(struct block_q8_1) : sizeof(struct block_q8_0);
    const uint8_t *r0 = w[0], *r1 = w[1], *r2 = w[2], *r3 = w[3];
    __m128 acc[QTOK] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};
    const __m256i ones = _mm256_set1_epi16(1);

    for (size_t k = 0; k < n / 32; k++) {
        float d0, d1, d2, d3, m0, m1, m2, m3;
        __m256i x0 = unpack32(type, r0 + k * bsize, &d0, &m0);
        __m256i x1 = unpack32(type, r1 + k * bsize, &d1, &m1);
        __m256i x2 = unpack32(type, r2 + k * bsize, &d2, &m2);
        __m256i x3 = unpack32(type, r3 + k * bsize, &d3, &m3);
        __m256i a0 = _mm256_sign_epi8(x0, x0), a1 = _mm256_sign_epi8(x1, x1);
        __m256i a2 = _mm256_sign_epi8(x2, x2), a3 = _mm256_sign_epi8(x3, x3);
        __m128 dx = _mm_setr_ps(d0, d1, d2, d3), mx = _mm_setr_ps(m0, m1, m2, m3);

        for (int j = 0; j < nt; j++) {
            const uint8_t *yb = (const uint8_t *)y + j * ystride + k * ybs;
            __m256i yq = _mm256_loadu_si256((const __m256i *)(yb + (with_min ? 4 : 2)));
            __m256i s0 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(yq, x0)), ones);
            __m256i s1 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(yq, x1)), ones);
            __m256i s2 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(a2, _mm256_sign_epi8(yq, x2)), ones);
            __m256i s3 =
                _mm256_madd_epi16(_mm256_maddubs_epi16(a3, _mm256_sign_epi8(yq, x3)), ones);
            __m128 isum = _mm_cvtepi32_ps(hsum4_i32(s0, s1, s2, s3));

            acc[j] = _mm_add_ps(acc[j], _mm_mul_ps(_mm_mul_ps(dx, _mm_set1_ps(half_at(yb))), isum));
            if (with_min)
                acc[j] = _mm_add_ps(acc[j], _mm_mul_ps(mx, _mm_set1_ps(half_at(yb + 2))));
        }
    }
    for (int j = 0; j < nt; j++)
        _mm_storeu_ps(out + j * os, acc[j]);
}

/*
 * Q4_K / Q5_K (five: Q5_K's 5th bits) row x against nt Q8_K rows y_j (ystride bytes apart):
 * sum[j] as the reference, the row's quants unpacked once for the nt tokens.
 */
AVX2 static ALWAYS_INLINE void
qdot_k45(const uint8_t *x, size_t bsize, bool five, int nt, const void *y, size_t ystride, size_t n,
         float *sum)
{
    for (int j = 0; j < nt; j++)
        sum[j] = 0.0f;
    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        const uint8_t *b = x + k * bsize;
        const uint8_t *qs = b + (five ? 48 : 16);
        int16_t sc[8], m[8];
        __m256i acc[QTOK], mask = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
        float d = half_at(b), dmin = half_at(b + 2);

        quant_scales6_get(b + 4, sc, m);
        for (int j = 0; j < nt; j++)
            acc[j] = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, mask);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), mask);
            __m256i slo = _mm256_set1_epi16(sc[2 * c]), shi = _mm256_set1_epi16(sc[2 * c + 1]);

            if (five) { /* the 5th bits: bit 2c (low nibbles) and 2c + 1 (high) of qh[l] */
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(qh, one), 4));
                hi = _mm256_or_si256(
                    hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 1), one), 4));
                qh = _mm256_srli_epi16(qh, 2);
            }
            for (int j = 0; j < nt; j++) {
                const int8_t *yq =
                    ((const struct block_q8_k *)((const uint8_t *)y + j * ystride) + k)->qs;
                __m256i plo =
                    _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)(yq + 64 * c)));
                __m256i phi = _mm256_maddubs_epi16(
                    hi, _mm256_loadu_si256((const __m256i *)(yq + 64 * c + 32)));
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(plo, slo));
                acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(phi, shi));
            }
        }
        for (int j = 0; j < nt; j++) {
            const struct block_q8_k *yb =
                (const struct block_q8_k *)((const uint8_t *)y + j * ystride) + k;
            int32_t msum = 0;

            for (int i = 0; i < 8; i++)
                msum += m[i] * (yb->bsums[2 * i] + yb->bsums[2 * i + 1]);
            sum[j] += yb->d * (d * (float)hsum_i32(acc[j]) - dmin * (float)msum);
        }
    }
}

/*
 * Q6_K row x against nt Q8_K rows y_j: quants + 32 as unsigned bytes, 32 * sum(sc bsums) taken
 * off each sum; the row's quants unpacked once for the nt tokens.
 */
AVX2 static ALWAYS_INLINE void
qdot_q6_k(const uint8_t *x, int nt, const void *y, size_t ystride, size_t n, float *sum)
{
    for (int j = 0; j < nt; j++)
        sum[j] = 0.0f;
    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        const struct block_q6_k *b = (const struct block_q6_k *)(x + k * sizeof(*b));
        __m256i acc[QTOK], mask = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);

        for (int j = 0; j < nt; j++)
            acc[j] = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b->ql + 64 * h;
            const int8_t *sc = b->scales + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql);
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            __m256i q[4] = {
                _mm256_or_si256(_mm256_and_si256(l0, mask),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 4), m2)),
                _mm256_or_si256(_mm256_and_si256(l1, mask),
                                _mm256_and_si256(_mm256_slli_epi16(qh, 2), m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), mask),
                                _mm256_and_si256(qh, m2)),
                _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), mask),
                                _mm256_and_si256(_mm256_srli_epi16(qh, 2), m2)),
            };
            for (int i = 0; i < 4; i++) {
                __m256i s =
                    _mm256_set_m128i(_mm_set1_epi16(sc[2 * i + 1]), _mm_set1_epi16(sc[2 * i]));

                for (int j = 0; j < nt; j++) {
                    const int8_t *yq =
                        ((const struct block_q8_k *)((const uint8_t *)y + j * ystride) + k)->qs +
                        128 * h;
                    __m256i p = _mm256_maddubs_epi16(
                        q[i], _mm256_loadu_si256((const __m256i *)(yq + 32 * i)));
                    acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(p, s));
                }
            }
        }
        __m256i scs = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        float d = half_at((const uint8_t *)&b->d);

        for (int j = 0; j < nt; j++) {
            const struct block_q8_k *yb =
                (const struct block_q8_k *)((const uint8_t *)y + j * ystride) + k;
            __m256i bs = _mm256_loadu_si256((const __m256i *)yb->bsums);
            int32_t isum = hsum_i32(acc[j]) - 32 * hsum_i32(_mm256_madd_epi16(bs, scs));

            /* the reference subtracts its zero min term: x - 0 is x */
            sum[j] += yb->d * (d * (float)isum);
        }
    }
}

/* The AVX2 kernels, of shape qrows_fn: 4 rows x 1 token and 4 rows x QTOK tokens per type. */
#define QROWS32(sfx, type, blk)                                                                    \
    AVX2 static void qrows_##sfx##_1(const void *const *w, const void *y, size_t ystride,          \
                                     size_t n, float *out, size_t os)                              \
    {                                                                                              \
        qtile32(type, sizeof(struct blk), 1, w, y, ystride, n, out, os);                           \
    }                                                                                              \
    AVX2 static void qrows_##sfx##_4(const void *const *w, const void *y, size_t ystride,          \
                                     size_t n, float *out, size_t os)                              \
    {                                                                                              \
        qtile32(type, sizeof(struct blk), QTOK, w, y, ystride, n, out, os);                        \
    }
QROWS32(q8_0, TYPE_Q8_0, block_q8_0)
QROWS32(q4_0, TYPE_Q4_0, block_q4_0)
QROWS32(q4_1, TYPE_Q4_1, block_q4_1)
QROWS32(q5_0, TYPE_Q5_0, block_q5_0)
QROWS32(q5_1, TYPE_Q5_1, block_q5_1)

/* Per row (the super-block's float part is per row anyway), the nt tokens at once. */
#define QROWSK(sfx, nt, CALL)                                                                      \
    AVX2 static void qrows_##sfx(const void *const *w, const void *y, size_t ystride, size_t n,    \
                                 float *out, size_t os)                                            \
    {                                                                                              \
        for (int i = 0; i < KERNEL_TILE_ROWS; i++) {                                               \
            float s[QTOK];                                                                         \
            CALL;                                                                                  \
            for (int j = 0; j < (nt); j++)                                                         \
                out[j * os + i] = s[j];                                                            \
        }                                                                                          \
    }
QROWSK(q4_k_1, 1, qdot_k45(w[i], sizeof(struct block_q4_k), false, 1, y, ystride, n, s))
QROWSK(q4_k_4, QTOK, qdot_k45(w[i], sizeof(struct block_q4_k), false, QTOK, y, ystride, n, s))
QROWSK(q5_k_1, 1, qdot_k45(w[i], sizeof(struct block_q5_k), true, 1, y, ystride, n, s))
QROWSK(q5_k_4, QTOK, qdot_k45(w[i], sizeof(struct block_q5_k), true, QTOK, y, ystride, n, s))
QROWSK(q6_k_1, 1, qdot_q6_k(w[i], 1, y, ystride, n, s))
QROWSK(q6_k_4, QTOK, qdot_q6_k(w[i], QTOK, y, ystride, n, s))

/* The AVX2 kernel of a quantized type for 1 or QTOK tokens (wide), or NULL (the type then runs
 * its reference vec_dot). */
static qrows_fn
qrows_avx2(uint32_t type, bool wide)
{
    switch (type) {
    case TYPE_Q8_0:
        return wide ? qrows_q8_0_4 : qrows_q8_0_1;
    case TYPE_Q4_0:
        return wide ? qrows_q4_0_4 : qrows_q4_0_1;
    case TYPE_Q4_1:
        return wide ? qrows_q4_1_4 : qrows_q4_1_1;
    case TYPE_Q5_0:
        return wide ? qrows_q5_0_4 : qrows_q5_0_1;
    case TYPE_Q5_1:
        return wide ? qrows_q5_1_4 : qrows_q5_1_1;
    case TYPE_Q4_K:
        return wide ? qrows_q4_k_4 : qrows_q4_k_1;
    case TYPE_Q5_K:
        return wide ? qrows_q5_k_4 : qrows_q5_k_1;
    case TYPE_Q6_K:
        return wide ? qrows_q6_k_4 : qrows_q6_k_1;
    default:
        return NULL;
    }
}

/* AVX, AVX2, FMA and F16C present and the OS saves the YMM registers. */
static bool
cpu_has_avx2(void)
{
    unsigned a, b, c, d;
    unsigned lo, hi;

    if (!__get_cpuid(1, &a, &b, &c, &d))
        return false;
    if (!(c & (1u << 12)) || !(c & (1u << 27)) || !(c & (1u << 28)) || !(c & (1u << 29)))
        return false;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    if ((lo & 6) != 6)
        return false;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    return (b & (1u << 5)) != 0;
}

/* AVX-512F and VL present and the OS saves the opmask and upper ZMM registers too. */
static bool
cpu_has_avx512vl(void)
{
    unsigned a, b, c, d;
    unsigned lo, hi;

    if (!cpu_has_avx2())
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16)) || !(b & (1u << 31)))
        return false;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 0xe6) == 0xe6;
}
#endif /* KERNEL_X86 */

/* 0 = not yet decided, 1 = AVX2, 2 = scalar, 3 = AVX2 and the AVX-512VL prefill tile. */
static atomic_int simd_mode;

static int
simd_level(void)
{
    int m = atomic_load(&simd_mode);

    if (m == 0) {
#ifdef KERNEL_X86
        m = cpu_has_avx512vl() ? 3 : cpu_has_avx2() ? 1 : 2;
#else
        m = 2;
#endif
        atomic_store(&simd_mode, m);
    }
    return m;
}

bool
kernel_simd_active(void)
{
    return simd_level() != 2;
}

void
kernel_force_scalar(bool scalar)
{
    atomic_store(&simd_mode, 0);
    if (scalar)
        atomic_store(&simd_mode, 2);
}

/* Shapes: 0 = 4 rows x TOK_TILE tokens, 1 = 4 x 1, 2 = 1 x 1, 3 = 8 x 1. */
static void
tile(bool simd, enum load_kind kind, int shape, const void *const *w, const float *const *x,
     size_t n, float *y, size_t ys)
{
    static const int nr[4] = {KERNEL_TILE_ROWS, KERNEL_TILE_ROWS, 1, 8},
                     nt[4] = {TOK_TILE, 1, 1, 1};

#ifdef KERNEL_X86
    if (simd) {
        tiles_avx2[kind][shape](w, x, n, y, ys);
        return;
    }
#else
    (void)simd;
#endif
    tile_scalar(kind, nr[shape], nt[shape], w, x, n, y, ys);
}

/*
 * A quantized type: each block of TOK_BLOCK tokens' activations is quantized to the type's
 * vec_dot_type (its reference quantizer, so every thread and batch gets the same bytes), then
 * every (row, token) is the type's dot product: the AVX2 kernel when there is one, else the
 * reference vec_dot; both give the reference's bits.
 */
static void
matmul_quant(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x, size_t xs,
             uint32_t ntok, float *y, size_t ys, void *scratch)
{
    const struct type_traits *t = type_traits(w->type);
    const struct type_traits *yt = type_traits(t->vec_dot_type);
    size_t yrb = type_row_size(t->vec_dot_type, w->cols);
    qrows_fn fast1 = NULL, fast4 = NULL;

#ifdef KERNEL_X86
    if (kernel_simd_active()) {
        fast1 = qrows_avx2(w->type, false);
        fast4 = qrows_avx2(w->type, true);
    }
#endif
    for (uint32_t t0 = 0; t0 < ntok; t0 += TOK_BLOCK) {
        uint32_t t1 = ntok - t0 < TOK_BLOCK ? ntok : t0 + TOK_BLOCK;

        for (uint32_t tk = t0; tk < t1; tk++)
            yt->from_float(x + tk * xs, (char *)scratch + (tk - t0) * yrb, w->cols);
        for (uint32_t r = r0; r < r1; r += KERNEL_TILE_ROWS) {
            uint32_t nr = r1 - r < KERNEL_TILE_ROWS ? r1 - r : KERNEL_TILE_ROWS;
            const void *wr[KERNEL_TILE_ROWS];
            float out[QTOK][KERNEL_TILE_ROWS];

            for (uint32_t i = 0; i < KERNEL_TILE_ROWS; i++) /* a short tile repeats its last row */
                wr[i] = (const char *)w->data + (size_t)(r + (i < nr ? i : nr - 1)) * w->row_bytes;
            for (uint32_t tk = t0; tk < t1;) {
                const void *yq = (const char *)scratch + (tk - t0) * yrb;
                uint32_t nt = fast4 != NULL && t1 - tk >= QTOK ? QTOK : 1;

                if (nt == QTOK)
                    fast4(wr, yq, yrb, w->cols, out[0], KERNEL_TILE_ROWS);
                else if (fast1 != NULL)
                    fast1(wr, yq, yrb, w->cols, out[0], KERNEL_TILE_ROWS);
                else
                    for (uint32_t i = 0; i < nr; i++)
                        out[0][i] = t->vec_dot(wr[i], yq, w->cols);
                for (uint32_t j = 0; j < nt; j++)
                    memcpy(y + (tk + j) * ys + r, out[j], nr * sizeof(float));
                tk += nt;
            }
        }
    }
}

void
kernel_matmul_rows(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                   size_t xs, uint32_t ntok, float *y, size_t ys, float *scratch)
{
    enum load_kind dk = direct_kind(w->type);
    bool direct = dk == LOAD_F32 || (dk != LOAD_NONE && ntok <= DIRECT_MAX);
    enum load_kind kind = direct ? dk : LOAD_F32;
    bool simd = kernel_simd_active();
#ifdef KERNEL_X86
    bool wide = simd_level() == 3 && kind == LOAD_F32;
#endif
    size_t cols = w->cols;

    if (dk == LOAD_NONE) {
        matmul_quant(w, r0, r1, x, xs, ntok, y, ys, scratch);
        return;
    }
    if (ntok == 1 && direct) /* decode: 8 rows at a time keep more loads in flight */
        for (; r0 + 8 <= r1; r0 += 8) {
            const void *wr[8];
            for (int i = 0; i < 8; i++)
                wr[i] = (const char *)w->data + (size_t)(r0 + i) * w->row_bytes;
            tile(simd, kind, 3, wr, &x, cols, y + r0, ys);
        }
    for (uint32_t t0 = 0; t0 < ntok; t0 += TOK_BLOCK) {
        uint32_t t1 = ntok - t0 < TOK_BLOCK ? ntok : t0 + TOK_BLOCK;

        for (uint32_t r = r0; r < r1; r += KERNEL_TILE_ROWS) {
            uint32_t nr = r1 - r < KERNEL_TILE_ROWS ? r1 - r : KERNEL_TILE_ROWS;
            const void *wr[KERNEL_TILE_ROWS];

            for (uint32_t i = 0; i < nr; i++) {
                const void *src = (const char *)w->data + (size_t)(r + i) * w->row_bytes;
                if (direct) {
                    wr[i] = src;
                    continue;
                }
                wr[i] = scratch + i * cols;
#ifdef KERNEL_X86
                if (simd) { /* F16/BF16: vector conversion */
                    convert_avx2(dk, src, scratch + i * cols, cols);
                    continue;
                }
#endif
                type_traits(w->type)->to_float(src, scratch + i * cols, (int64_t)cols);
            }
            for (uint32_t t = t0; t < t1;) {
                const float *xr[WIDE_TOKENS];
#ifdef KERNEL_X86
                if (wide && nr == KERNEL_TILE_ROWS && t1 - t >= WIDE_TOKENS) {
                    for (int j = 0; j < WIDE_TOKENS; j++)
                        xr[j] = x + (t + j) * xs;
                    tile_f32_4x6(wr, xr, cols, y + t * ys + r, ys);
                    t += WIDE_TOKENS;
                    continue;
                }
#endif
                if (nr == KERNEL_TILE_ROWS && t1 - t >= TOK_TILE) {
                    for (int j = 0; j < TOK_TILE; j++)
                        xr[j] = x + (t + j) * xs;
                    tile(simd, kind, 0, wr, xr, cols, y + t * ys + r, ys);
                    t += TOK_TILE;
                    continue;
                }
                xr[0] = x + t * xs;
                if (nr == KERNEL_TILE_ROWS)
                    tile(simd, kind, 1, wr, xr, cols, y + t * ys + r, ys);
                else
                    for (uint32_t i = 0; i < nr; i++)
                        tile(simd, kind, 2, &wr[i], xr, cols, y + t * ys + r + i, ys);
                t++;
            }
        }
    }
}

/* ---- element-wise stages ---- */

void
kernel_rmsnorm(float *y, const float *x, size_t n, float eps)
{
    double ss = 0.0;

    for (size_t i = 0; i < n; i++)
        ss += (double)(x[i] * x[i]);
    float mean = (float)(ss / (double)n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (size_t i = 0; i < n; i++)
        y[i] = x[i] * scale;
}

void
kernel_rope(float *x, const float *cs, uint32_t n_rot, int rope_type)
{
    uint32_t half = n_rot / 2;

    for (uint32_t i = 0; i < half; i++) {
        float c = cs[2 * i], s = cs[2 * i + 1];
        uint32_t a = rope_type == 2 ? i : 2 * i;
        uint32_t b = rope_type == 2 ? i + half : 2 * i + 1;
        float x0 = x[a], x1 = x[b];

        x[a] = x0 * c - x1 * s;
        x[b] = x0 * s + x1 * c;
    }
}

void
kernel_softmax(float *x, size_t n)
{
    float max = -INFINITY;
    double sum = 0.0;

    for (size_t i = 0; i < n; i++)
        max = x[i] > max ? x[i] : max;
    for (size_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    float inv = (float)(1.0 / sum);
    for (size_t i = 0; i < n; i++)
        x[i] *= inv;
}

void
kernel_silu(float *g, size_t n)
{
    for (size_t i = 0; i < n; i++)
        g[i] = g[i] / (1.0f + expf(-g[i]));
}

void
kernel_mul(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] *= x[i];
}

void
kernel_add(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}
