/*
 * kernels.c: see kernels.h. Two implementations of every dot product: AVX2+FMA+F16C (chosen at run
 * time by CPUID, compiled with per-function target attributes so the rest of the build stays
 * baseline x86-64; with AVX-512VL a wider prefill tile of the same 8-lane vectors) and the scalar
 * reference, which follows the same canonical order with fmaf() so that they agree bit for bit.
 * Also the CPUID level and the element-wise stages. Not here: the quantized types' kernels
 * (kernels_quant.c) and their references (quant.c).
 */
#include "workerd/engine/kernels.h"

#include "workerd/engine/kernels_impl.h"
#include "workerd/engine/types.h"

#include <math.h>
#include <stdatomic.h>
#include <string.h>

#ifdef KERNEL_X86
#include <cpuid.h>
#endif

#define LANES       8
#define TOK_TILE    2 /* tokens per tile */
#define WIDE_TOKENS 6 /* tokens per tile with AVX-512VL's 32 registers */
#define DIRECT_MAX  2 /* up to this many tokens, F16/BF16 rows are converted inside the dot loop */

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
    /* F16/BF16 rows converted to f32, or KERNEL_TOK_BLOCK activation rows quantized to Q8_0, Q8_1
     * or Q8_K (at most 37 bytes per 32 elements) */
    size_t conv = (size_t)KERNEL_TILE_ROWS * cols;
    size_t quant = ((size_t)KERNEL_TOK_BLOCK * ((cols + 31) / 32) * 37 + 3) / 4;

    return conv > quant ? conv : quant;
}

void
kernel_row_to_f32(const struct kernel_matrix *w, uint32_t r, float *out)
{
    type_traits(w->type)->to_float((const char *)w->data + (size_t)r * w->row_bytes, out, w->cols);
}

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

/* An enum kernel_level, or 0 = not yet decided. */
static atomic_int simd_mode;

enum kernel_level
kernel_level(void)
{
    int m = atomic_load(&simd_mode);

    if (m == 0) {
#ifdef KERNEL_X86
        m = cpu_has_avx512vl() ? KERNEL_LEVEL_AVX512VL
            : cpu_has_avx2()   ? KERNEL_LEVEL_AVX2
                               : KERNEL_LEVEL_SCALAR;
#else
        m = KERNEL_LEVEL_SCALAR;
#endif
        atomic_store(&simd_mode, m);
    }
    return (enum kernel_level)m;
}

bool
kernel_simd_active(void)
{
    return kernel_level() != KERNEL_LEVEL_SCALAR;
}

void
kernel_force_scalar(bool scalar)
{
    atomic_store(&simd_mode, 0);
    if (scalar)
        atomic_store(&simd_mode, KERNEL_LEVEL_SCALAR);
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

void
kernel_matmul_rows(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                   size_t xs, uint32_t ntok, float *y, size_t ys, float *scratch)
{
    enum load_kind dk = direct_kind(w->type);
    bool direct = dk == LOAD_F32 || (dk != LOAD_NONE && ntok <= DIRECT_MAX);
    enum load_kind kind = direct ? dk : LOAD_F32;
    bool simd = kernel_simd_active();
#ifdef KERNEL_X86
    bool wide = kernel_level() == KERNEL_LEVEL_AVX512VL && kind == LOAD_F32;
#endif
    size_t cols = w->cols;

    if (dk == LOAD_NONE) {
        kernel_matmul_quant(w, r0, r1, x, xs, ntok, y, ys, scratch);
        return;
    }
    if (ntok == 1 && direct) /* decode: 8 rows at a time keep more loads in flight */
        for (; r0 + 8 <= r1; r0 += 8) {
            const void *wr[8];
            for (int i = 0; i < 8; i++)
                wr[i] = (const char *)w->data + (size_t)(r0 + i) * w->row_bytes;
            tile(simd, kind, 3, wr, &x, cols, y + r0, ys);
        }
    for (uint32_t t0 = 0; t0 < ntok; t0 += KERNEL_TOK_BLOCK) {
        uint32_t t1 = ntok - t0 < KERNEL_TOK_BLOCK ? ntok : t0 + KERNEL_TOK_BLOCK;

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
