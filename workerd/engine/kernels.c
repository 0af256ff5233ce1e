/*
 * kernels.c: see kernels.h. Two implementations of every dot product: AVX2+FMA+F16C (chosen at run
 * time by CPUID, compiled with per-function target attributes so the rest of the build stays
 * baseline x86-64; with AVX-512F/VL, tiles of two rows' 8 lanes per 512-bit register for 2 tokens
 * or more) and the scalar reference, which follows the same canonical order with fmaf() so that
 * they agree bit for bit.
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
#define DIRECT_MAX  2 /* up to this many tokens, F16/BF16 rows are converted inside the dot loop */
#define ZDIRECT_MAX 8 /* the same with AVX-512 (and for F32: always direct below it) */
#define ZPAIRS      3 /* AVX-512 tiles: row pairs per tile */
#define ZROWS       (2 * ZPAIRS)
#define ZTOK        8   /* AVX-512 tiles: tokens per tile */
#define ZCOLS       512 /* AVX-512 prefill: columns per pass over a packed tile */
#define ZBLOCK      16  /* AVX-512 prefill: row tiles that pass over a column range in turn */
#define ZAHEAD      2   /* AVX-512 prefill: a tile prefetches the weights of the tile so many on */

/* How a weight row's elements are read: LOAD_NONE types go through their row conversion. */
enum load_kind { LOAD_NONE = 0, LOAD_F32, LOAD_F16, LOAD_BF16 };
#define ESIZE(kind) ((kind) == LOAD_F32 ? 4 : 2) /* bytes per element of a direct kind */

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
    /* F16/BF16 rows converted to f32 (KERNEL_TILE_ROWS rows), or the AVX-512 prefill's packed
     * copy of ZROWS rows' range of ZCOLS columns, the copy of KERNEL_TOK_BLOCK activation rows in
     * ranges of ZCOLS and ZBLOCK tiles' accumulators; or the quantized kernels' activations and
     * packed rows */
    size_t c8 = (cols + LANES - 1) & ~(size_t)(LANES - 1);
    size_t conv = (size_t)KERNEL_TILE_ROWS * c8;
    size_t packed = (size_t)ZROWS * ZCOLS + (size_t)KERNEL_TOK_BLOCK * (c8 + ZCOLS) +
                    (size_t)ZBLOCK * KERNEL_TOK_BLOCK * ZPAIRS * 2 * LANES;
    size_t quant = (kernel_quant_scratch_bytes(cols) + 3) / 4;

    conv = conv > packed ? conv : packed;
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

AVX2 static ALWAYS_INLINE void tile_1x1(enum load_kind kind, const void *const *w,
                                        const float *const *x, size_t n, float *y, size_t ys)
{
    TILE_BODY(1, 1, STEP_1X1)
}

/*
 * Prefetches into L2 the share of the next tile (rows * n elements from pf, contiguous) that
 * matches column k of this one. Rows are a page or two long and the hardware prefetcher stops at
 * every page boundary; this keeps the stream going across them.
 */
#define PREFETCH_NEXT(kind, pf, rows, k)                                                           \
    do {                                                                                           \
        for (int j_ = 0; j_ < (rows)*ESIZE(kind) * LANES; j_ += 64)                                \
            _mm_prefetch((pf) + (k) * (rows)*ESIZE(kind) + j_, _MM_HINT_T1);                       \
    } while (0)

/*
 * y[i] = w[i] . x[0] for 8 rows and one token (decode: more rows in flight per thread); pf: the
 * next tile's first row (its 8 rows contiguous), prefetched meanwhile.
 */
AVX2 static ALWAYS_INLINE void
tile_8x1(enum load_kind kind, const void *const *w, const float *const *x, size_t n, float *y,
         const char *pf)
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
        PREFETCH_NEXT(kind, pf, 8, k);
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
    AVX2 static void tile_##sfx##_1x1(const void *const *w, const float *const *x, size_t n,       \
                                      float *y, size_t ys)                                         \
    {                                                                                              \
        tile_1x1(kind, w, x, n, y, ys);                                                            \
    }
TILE_FNS(f32, LOAD_F32)
TILE_FNS(f16, LOAD_F16)
TILE_FNS(bf16, LOAD_BF16)

/* tile_8x1 per kind: y[0..8) for rows w[0..8), prefetching the 8 rows from pf. */
typedef void (*tile8_fn)(const void *const *w, const float *x, size_t n, float *y, const char *pf);

#define TILE8_FN(sfx, kind)                                                                        \
    AVX2 static void tile_##sfx##_8x1(const void *const *w, const float *x, size_t n, float *y,    \
                                      const char *pf)                                              \
    {                                                                                              \
        tile_8x1(kind, w, &x, n, y, pf);                                                           \
    }
TILE8_FN(f32, LOAD_F32)
TILE8_FN(f16, LOAD_F16)
TILE8_FN(bf16, LOAD_BF16)

static const tile8_fn tiles8_avx2[] = {
    [LOAD_F32] = tile_f32_8x1,
    [LOAD_F16] = tile_f16_8x1,
    [LOAD_BF16] = tile_bf16_8x1,
};

/* [kind][shape]: shape 0 = 4 rows x 2 tokens, 1 = 4 x 1, 2 = 1 x 1. */
static const tile_fn tiles_avx2[][3] = {
    [LOAD_F32] = {tile_f32_4x2, tile_f32_4x1, tile_f32_1x1},
    [LOAD_F16] = {tile_f16_4x2, tile_f16_4x1, tile_f16_1x1},
    [LOAD_BF16] = {tile_bf16_4x2, tile_bf16_4x1, tile_bf16_1x1},
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
 * AVX-512: one 512-bit register holds the 8 lanes of two rows (row 2p in lanes 0-7, row 2p+1 in
 * lanes 8-15) and the token's 8 elements are broadcast to both halves, so every lane still
 * accumulates element k of its own row into lane k % 8 in increasing k: the canonical order, the
 * same bits as the AVX2 tiles and the scalar reference, at twice the products per instruction.
 * A tile is ZPAIRS pairs of rows x up to ZTOK tokens (24 accumulators of the 32 registers). The
 * weights come straight from the rows (converted in registers; few tokens) or from a packed f32
 * copy made once per KERNEL_TOK_BLOCK tokens (prefill): pair-major, each 8-column block of a pair
 * 16 consecutive floats, the short last block zero-padded.
 */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512vl")))

/* Rows a and b's 8 elements from k, as f32: a in lanes 0-7, b in lanes 8-15. */
AVX512 static ALWAYS_INLINE __m512
zload_pair(enum load_kind kind, const void *a, const void *b, size_t k)
{
    if (kind == LOAD_F32) {
        __m256d lo = _mm256_loadu_pd((const double *)((const float *)a + k));
        __m256d hi = _mm256_loadu_pd((const double *)((const float *)b + k));
        return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(lo), hi, 1));
    }
    __m256i h = _mm256_inserti128_si256(
        _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)((const uint16_t *)a + k))),
        _mm_loadu_si128((const __m128i *)((const uint16_t *)b + k)), 1);
    if (kind == LOAD_F16)
        return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* x[0..8) in both halves. */
AVX512 static ALWAYS_INLINE __m512
zbroadcast(const float *x)
{
    return _mm512_castpd_ps(_mm512_broadcast_f64x4(_mm256_loadu_pd((const double *)x)));
}

/* The two rows' sums of a pair's accumulator, each as hsum8(). */
AVX512 static ALWAYS_INLINE void
zstore_pair(__m512 a, float *y0, float *y1, bool second)
{
    *y0 = hsum8(_mm512_castps512_ps256(a));
    if (second)
        *y1 = hsum8(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

/* One block of 8 columns: acc[p][t] += (pair p's weights, WLOAD) * (token t's 8 elements at XP). */
#define ZSTEP(WLOAD, XP)                                                                           \
    do {                                                                                           \
        __m512 wv[ZPAIRS];                                                                         \
        _Pragma("GCC unroll 8") for (int p = 0; p < ZPAIRS; p++) wv[p] = (WLOAD);                  \
        _Pragma("GCC unroll 8") for (int t = 0; t < NT; t++)                                       \
        {                                                                                          \
            __m512 xv = zbroadcast(XP);                                                            \
            _Pragma("GCC unroll 8") for (int p = 0; p < ZPAIRS; p++) acc[p][t] =                   \
                _mm512_fmadd_ps(wv[p], xv, acc[p][t]);                                             \
        }                                                                                          \
    } while (0)

/* One tile's operands: y[t*ys + i] = w[i] . x[t] for i < nr <= ZROWS rows, t < NT <= ZTOK tokens,
 * over m columns: the whole rows, or one range of a longer product (its accumulators kept in acc
 * between ranges; every range but the last a multiple of 8 columns). */
struct ztile_args {
    const void *const *w; /* the rows (from nr on: repeats of row nr - 1), or: */
    const float *pk;      /* the packed copy of the range, pair p at pk + p * pstride */
    size_t pstride;
    const float *const *x; /* the tokens' first column of the range */
    size_t m;
    bool first, last; /* the range starts / ends the product */
    float *acc;       /* ZPAIRS * ZTOK * 16 floats (unused when first and last) */
    const char *pf;   /* rows: the next tile's first row (its rows contiguous), prefetched */
    float *y;
    size_t ys;
    int nr;
};

/*
 * The tile of a (kind LOAD_NONE: the packed copy; else the rows of that kind). The accumulators
 * start at zero in the first range, else from a->acc; they end summed into y after the last one,
 * else in a->acc. Rows from nr on are computed but not stored.
 */
AVX512 static ALWAYS_INLINE void
ztile(enum load_kind kind, int NT, const struct ztile_args *a)
{
    const void *const *w = a->w;
    const float *const *x = a->x;
    const float *pk = a->pk;
    size_t pstride = a->pstride, n = a->m, n8 = n & ~(size_t)(LANES - 1);
    float wt[ZROWS][LANES], xt[ZTOK][LANES];
    __m512 acc[ZPAIRS][ZTOK];

    if (n8 < n) { /* before the loop: a call there would spill the accumulators */
        if (kind != LOAD_NONE)
            pad_tail(kind, ZROWS, w, n8, n, wt);
        pad_tail(LOAD_F32, NT, (const void *const *)x, n8, n, xt);
    }
#pragma GCC unroll 8
    for (int p = 0; p < ZPAIRS; p++)
#pragma GCC unroll 8
        for (int t = 0; t < NT; t++)
            acc[p][t] = a->first ? _mm512_setzero_ps()
                                 : _mm512_loadu_ps(a->acc + (p * ZTOK + t) * 2 * LANES);
    for (size_t k = 0; k < n8; k += LANES) {
        if (kind != LOAD_NONE)
            PREFETCH_NEXT(kind, a->pf, ZROWS, k);
        ZSTEP(kind == LOAD_NONE ? _mm512_loadu_ps(pk + p * pstride + 2 * k)
                                : zload_pair(kind, w[2 * p], w[2 * p + 1], k),
              x[t] + k);
    }
    if (n8 < n)
        ZSTEP(kind == LOAD_NONE ? _mm512_loadu_ps(pk + p * pstride + 2 * n8)
                                : zload_pair(LOAD_F32, wt[2 * p], wt[2 * p + 1], 0),
              xt[t]);
#pragma GCC unroll 8
    for (int t = 0; t < NT; t++)
#pragma GCC unroll 8
        for (int p = 0; p < ZPAIRS; p++) {
            float *y = a->y + t * a->ys + 2 * p;
            if (!a->last)
                _mm512_storeu_ps(a->acc + (p * ZTOK + t) * 2 * LANES, acc[p][t]);
            else if (2 * p < a->nr)
                zstore_pair(acc[p][t], y, y + 1, 2 * p + 1 < a->nr);
        }
}

typedef void (*ztile_fn)(const struct ztile_args *a);

#define ZTILE_FN(sfx, kind, nt)                                                                    \
    AVX512 static void ztile_##sfx##_##nt(const struct ztile_args *a)                              \
    {                                                                                              \
        ztile(kind, nt, a);                                                                        \
    }
#define ZTILE_FNS(sfx, kind)                                                                       \
    ZTILE_FN(sfx, kind, 1)                                                                         \
    ZTILE_FN(sfx, kind, 2)                                                                         \
    ZTILE_FN(sfx, kind, 3)                                                                         \
    ZTILE_FN(sfx, kind, 4)                                                                         \
    ZTILE_FN(sfx, kind, 5)                                                                         \
    ZTILE_FN(sfx, kind, 6)                                                                         \
    ZTILE_FN(sfx, kind, 7)                                                                         \
    ZTILE_FN(sfx, kind, 8)
ZTILE_FNS(packed, LOAD_NONE)
ZTILE_FNS(f32, LOAD_F32)
ZTILE_FNS(f16, LOAD_F16)
ZTILE_FNS(bf16, LOAD_BF16)

/* [kind (LOAD_NONE: packed)][tokens - 1] */
static const ztile_fn ztiles[][ZTOK] = {
#define ZROW(sfx)                                                                                  \
    {                                                                                              \
        ztile_##sfx##_1, ztile_##sfx##_2, ztile_##sfx##_3, ztile_##sfx##_4, ztile_##sfx##_5,       \
            ztile_##sfx##_6, ztile_##sfx##_7, ztile_##sfx##_8                                      \
    }
    [LOAD_NONE] = ZROW(packed),
    [LOAD_F32] = ZROW(f32),
    [LOAD_F16] = ZROW(f16),
    [LOAD_BF16] = ZROW(bf16),
#undef ZROW
};

/* The packed copy of ZROWS rows w[] of this kind (n columns): pair p at pk + p * pstride; the six
 * rows read side by side (more lines in flight when they were not prefetched). */
AVX512 static ALWAYS_INLINE void
zpack_kind(enum load_kind kind, const void *const *w, size_t n, float *pk, size_t pstride)
{
    size_t n8 = n & ~(size_t)(LANES - 1);

    for (size_t k = 0; k < n8; k += LANES)
#pragma GCC unroll 8
        for (int p = 0; p < ZPAIRS; p++)
            _mm512_storeu_ps(pk + p * pstride + 2 * k, zload_pair(kind, w[2 * p], w[2 * p + 1], k));
    for (int p = 0; p < ZPAIRS && n8 < n; p++) {
        float *d = pk + p * pstride + 2 * n8;
        memset(d, 0, 2 * LANES * sizeof(float));
        for (size_t k = n8; k < n; k++) {
            d[k - n8] = load1(kind, w[2 * p], k);
            d[LANES + k - n8] = load1(kind, w[2 * p + 1], k);
        }
    }
}

AVX512 static void
zpack(enum load_kind kind, const void *const *w, size_t n, float *pk, size_t pstride)
{
    if (kind == LOAD_F16)
        zpack_kind(LOAD_F16, w, n, pk, pstride);
    else
        zpack_kind(LOAD_BF16, w, n, pk, pstride);
}

/* The rows of tile r (nr <= ZROWS of them from row r; the rest repeat the last one) into wr. */
static void
zrows(const struct kernel_matrix *w, uint32_t r, int nr, const void *wr[ZROWS])
{
    for (int i = 0; i < ZROWS; i++)
        wr[i] = (const char *)w->data + (size_t)(r + (i < nr ? i : nr - 1)) * w->row_bytes;
}

/* F32 weights, or up to ZDIRECT_MAX tokens: every tile reads its rows directly. */
static void
zmatmul_direct(enum load_kind kind, const struct kernel_matrix *w, uint32_t r0, uint32_t r1,
               const float *x, size_t xs, uint32_t ntok, float *y, size_t ys)
{
    for (uint32_t r = r0; r < r1; r += ZROWS) {
        const void *wr[ZROWS];
        const float *xr[ZTOK];
        int nr = r1 - r < ZROWS ? (int)(r1 - r) : ZROWS;
        struct ztile_args a = {wr, NULL, 0, xr, w->cols, true, true, NULL, NULL, NULL, ys, nr};

        zrows(w, r, nr, wr);
        for (uint32_t t = 0; t < ntok; t += ZTOK) {
            uint32_t nt = ntok - t < ZTOK ? ntok - t : ZTOK;

            for (uint32_t j = 0; j < nt; j++)
                xr[j] = x + (t + j) * xs;
            /* the first token tile brings the next tile's rows (the last tile: its own) */
            a.pf = (const char *)wr[0] + (t == 0 && r + 2 * ZROWS <= r1 ? ZROWS * w->row_bytes : 0);
            a.y = y + t * ys + r;
            ztiles[kind][nt - 1](&a);
        }
    }
}

/* The prefetch into L2 of a later tile's share of a range while a tile runs: nr rows of seg bytes
 * from p, row_bytes apart, step more bytes of each row after every tile call. */
struct zprefetch {
    const char *p;
    size_t row_bytes, seg, step, off;
    int nr;
};

static inline void
zprefetch_step(struct zprefetch *f)
{
    size_t end = f->seg - f->off < f->step ? f->seg : f->off + f->step;

    for (int i = 0; i < f->nr; i++)
        for (size_t o = f->off; o < end; o += 64)
            _mm_prefetch(f->p + i * f->row_bytes + o, _MM_HINT_T1);
    f->off = end;
}

/* The tile after the one at row r, range k0 of the block from row rb in zmatmul_packed()'s order
 * over rows up to r1: the block's next, or its first at the next range, or the next block's first
 * (r = r1 after the last). */
static void
znext(uint32_t r1, size_t cols, size_t kc, uint32_t *rb, uint32_t *r, size_t *k0)
{
    uint32_t re = r1 - *rb < ZBLOCK * ZROWS ? r1 : *rb + ZBLOCK * ZROWS;

    if (*r + ZROWS < re) {
        *r += ZROWS;
    } else if (*k0 + kc < cols) {
        *r = *rb;
        *k0 += kc;
    } else {
        *rb = *r = re;
        *k0 = 0;
    }
}

/*
 * More tokens of F16/BF16: per KERNEL_TOK_BLOCK tokens, the activations are copied into scratch
 * in ranges of ZCOLS columns, token after token (so a tile's 8 tokens are one contiguous run: rows
 * 2^k floats apart would compete for the same L1 sets). Then per block of ZBLOCK row tiles, range
 * by range, each tile in turn converts its rows' share of the range into the packed copy and
 * multiplies it by the token tiles, its weights staying in L1 while the token tiles pass, its
 * accumulators kept in scratch from one range to the next. The range's activations (128 KiB) and
 * the block's accumulators (192 KiB) stay in L2 while the block's tiles pass over them: the whole
 * width of activations would not (2.75 MiB at 11008 columns, re-read from L3 by every tile). The
 * share of the tile ZAHEAD on is prefetched into L2 meanwhile.
 */
static void
zmatmul_packed(enum load_kind kind, const struct kernel_matrix *w, uint32_t r0, uint32_t r1,
               const float *x, size_t xs, uint32_t ntok, float *y, size_t ys, float *scratch)
{
    size_t cols = w->cols, c8 = (cols + LANES - 1) & ~(size_t)(LANES - 1);
    size_t kc = c8 < ZCOLS ? c8 : ZCOLS, nk = (cols + kc - 1) / kc, pstride = 2 * kc;
    float *xp = scratch + ZPAIRS * pstride;        /* nk ranges of KERNEL_TOK_BLOCK x kc floats */
    float *accs = xp + nk * KERNEL_TOK_BLOCK * kc; /* per tile of the block */
    const size_t tacc = ZPAIRS * ZTOK * 2 * LANES, bacc = KERNEL_TOK_BLOCK / ZTOK * tacc;

    for (uint32_t t0 = 0; t0 < ntok; t0 += KERNEL_TOK_BLOCK) {
        uint32_t t1 = ntok - t0 < KERNEL_TOK_BLOCK ? ntok : t0 + KERNEL_TOK_BLOCK;
        size_t calls = (t1 - t0 + ZTOK - 1) / ZTOK; /* per tile and range */

        for (size_t k0 = 0; k0 < cols; k0 += kc)
            for (uint32_t t = t0; t < t1; t++)
                memcpy(xp + (k0 / kc * KERNEL_TOK_BLOCK + t - t0) * kc, x + t * xs + k0,
                       (cols - k0 < kc ? cols - k0 : kc) * sizeof(float));
        for (uint32_t rb = r0; rb < r1; rb += ZBLOCK * ZROWS) {
            uint32_t re = r1 - rb < ZBLOCK * ZROWS ? r1 : rb + ZBLOCK * ZROWS;

            for (size_t k0 = 0; k0 < cols; k0 += kc) {
                const float *xk = xp + k0 / kc * KERNEL_TOK_BLOCK * kc;
                size_t m = cols - k0 < kc ? cols - k0 : kc;

                for (uint32_t r = rb; r < re; r += ZROWS) {
                    const void *wr[ZROWS];
                    const float *xr[ZTOK];
                    int nr = re - r < ZROWS ? (int)(re - r) : ZROWS;
                    struct ztile_args a = {wr,   scratch, pstride, xr, m, k0 == 0, k0 + m == cols,
                                           NULL, NULL,    NULL,    ys, nr};
                    float *acc = accs + (r - rb) / ZROWS * bacc;
                    uint32_t pb = rb, pr = r; /* the tile ZAHEAD on in this order */
                    size_t pk0 = k0;
                    for (int i = 0; i < ZAHEAD; i++)
                        znext(r1, cols, kc, &pb, &pr, &pk0);
                    int pnr = pr < r1 ? (r1 - pr < ZROWS ? (int)(r1 - pr) : ZROWS) : 0;
                    size_t pseg = (cols - pk0 < kc ? cols - pk0 : kc) * ESIZE(kind);
                    struct zprefetch pf = {(const char *)w->data + pr * w->row_bytes +
                                               pk0 * ESIZE(kind),
                                           w->row_bytes,
                                           pseg,
                                           ((pseg + calls - 1) / calls + 63) & ~(size_t)63,
                                           0,
                                           pnr};

                    zrows(w, r, nr, wr);
                    for (int i = 0; i < ZROWS; i++)
                        wr[i] = (const char *)wr[i] + k0 * ESIZE(kind);
                    zpack(kind, wr, m, scratch, pstride);
                    for (uint32_t t = t0; t < t1; t += ZTOK) {
                        uint32_t nt = t1 - t < ZTOK ? t1 - t : ZTOK;

                        for (uint32_t j = 0; j < nt; j++)
                            xr[j] = xk + (t - t0 + j) * kc;
                        a.acc = acc + (t - t0) / ZTOK * tacc;
                        a.y = y + t * ys + r;
                        ztiles[LOAD_NONE][nt - 1](&a);
                        zprefetch_step(&pf);
                    }
                }
            }
        }
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

/* AVX-512 F, BW and VL present and the OS saves the opmask and upper ZMM registers too. */
static bool
cpu_has_avx512(void)
{
    unsigned a, b, c, d;
    unsigned lo, hi;

    if (!cpu_has_avx2())
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    if (!(b & (1u << 16)) || !(b & (1u << 30)) || !(b & (1u << 31)))
        return false;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    (void)hi;
    return (lo & 0xe6) == 0xe6;
}

/* The highest level this CPU runs. */
static enum kernel_level
cpu_level(void)
{
    unsigned a, b, c, d;

    if (!cpu_has_avx2())
        return KERNEL_LEVEL_SCALAR;
    __cpuid_count(7, 0, a, b, c, d);
    if (cpu_has_avx512())
        return (c & (1u << 11)) ? KERNEL_LEVEL_AVX512VNNI : KERNEL_LEVEL_AVX512;
    __cpuid_count(7, 1, a, b, c, d);
    return (a & (1u << 4)) ? KERNEL_LEVEL_AVXVNNI : KERNEL_LEVEL_AVX2;
}
#endif /* KERNEL_X86 */

/* An enum kernel_level, or 0 = not yet decided. */
static atomic_int simd_mode;

/* The highest level this CPU runs (CPUID, once). */
static enum kernel_level
kernel_level_max(void)
{
    static atomic_int max;
    int m = atomic_load(&max);

    if (m == 0) {
#ifdef KERNEL_X86
        m = (int)cpu_level();
#else
        m = KERNEL_LEVEL_SCALAR;
#endif
        atomic_store(&max, m);
    }
    return (enum kernel_level)m;
}

enum kernel_level
kernel_level(void)
{
    int m = atomic_load(&simd_mode);

    if (m == 0) {
        m = (int)kernel_level_max();
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
    kernel_force_level(scalar ? KERNEL_LEVEL_SCALAR : 0);
}

bool
kernel_force_level(enum kernel_level level)
{
    enum kernel_level max = kernel_level_max();

    /* AVX-VNNI is not implied by AVX-512 VNNI (nor the reverse) */
    if (level > max || (level == KERNEL_LEVEL_AVXVNNI && max == KERNEL_LEVEL_AVX512))
        return false;
#ifdef KERNEL_X86
    if (level == KERNEL_LEVEL_AVXVNNI && max == KERNEL_LEVEL_AVX512VNNI) {
        unsigned a, b, c, d;

        __cpuid_count(7, 1, a, b, c, d);
        if (!(a & (1u << 4)))
            return false;
    }
#endif
    atomic_store(&simd_mode, (int)level);
    return true;
}

void
kernel_force_avx2(bool avx2)
{
    atomic_store(&simd_mode, 0);
    if (avx2 && kernel_level() > KERNEL_LEVEL_AVX2)
        atomic_store(&simd_mode, KERNEL_LEVEL_AVX2);
}

/* Shapes: 0 = 4 rows x TOK_TILE tokens, 1 = 4 x 1, 2 = 1 x 1. */
static void
tile(bool simd, enum load_kind kind, int shape, const void *const *w, const float *const *x,
     size_t n, float *y, size_t ys)
{
    static const int nr[3] = {KERNEL_TILE_ROWS, KERNEL_TILE_ROWS, 1}, nt[3] = {TOK_TILE, 1, 1};

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
    size_t cols = w->cols;

    if (dk == LOAD_NONE) {
        kernel_matmul_quant(w, r0, r1, x, xs, ntok, y, ys, scratch);
        return;
    }
#ifdef KERNEL_X86
    if (ntok > 1 && kernel_level() >= KERNEL_LEVEL_AVX512) {
        if (dk == LOAD_F32 || ntok <= ZDIRECT_MAX)
            zmatmul_direct(dk, w, r0, r1, x, xs, ntok, y, ys);
        else
            zmatmul_packed(dk, w, r0, r1, x, xs, ntok, y, ys, scratch);
        return;
    }
#endif
    if (ntok == 1 && direct) /* decode: 8 rows at a time keep more loads in flight */
        for (; r0 + 8 <= r1; r0 += 8) {
            const void *wr[8];
            for (int i = 0; i < 8; i++)
                wr[i] = (const char *)w->data + (size_t)(r0 + i) * w->row_bytes;
#ifdef KERNEL_X86
            if (simd) {
                /* the next tile's rows, or (the last tile) its own again */
                tiles8_avx2[kind](wr, x, cols, y + r0,
                                  wr[0] + (r0 + 16 <= r1 ? 8 * w->row_bytes : 0));
                continue;
            }
#endif
            tile_scalar(kind, 8, 1, wr, &x, cols, y + r0, ys);
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
                const float *xr[TOK_TILE];

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

/*
 * e^x in single precision, the same bits in the scalar and the AVX2 form (both made of correctly
 * rounded operations only: multiplies, fused multiply-adds, rounding to the nearest integer):
 * x = n ln2 + r, n the nearest integer to x log2(e), r taken off in two parts of ln2 (Cody and
 * Waite), e^r = 1 + r + r^2 p(r) with Cephes' degree-5 p on |r| <= ln2 / 2, then times 2^n in two
 * exact steps (2^(n - h) 2^h, h = floor(n / 2)). 0 below ln(FLT_MIN), +inf above ln(FLT_MAX).
 * Within 2 ulp of the exact value (test_kernels); libm's expf, which is slow to call per element,
 * is not what llama.cpp's vector softmax and SiLU use either.
 */
#define EXP_LO     -87.33654f /* ln(FLT_MIN) */
#define EXP_HI     88.72283f  /* ln(FLT_MAX) */
#define EXP_LOG2E  1.44269504088896341f
#define EXP_LN2_HI 0.693359375f /* 8 significant bits: n * EXP_LN2_HI is exact */
#define EXP_LN2_LO -2.12194440e-4f
static const float exp_poly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                  4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

static float
exp_scalar(float x)
{
    if (x != x || x < EXP_LO)
        return x != x ? x : 0.0f;
    if (x > EXP_HI)
        return INFINITY;

    float n = nearbyintf(x * EXP_LOG2E);
    float r = fmaf(n, -EXP_LN2_LO, fmaf(n, -EXP_LN2_HI, x));
    float p = exp_poly[0];

    for (int i = 1; i < 6; i++)
        p = fmaf(p, r, exp_poly[i]);

    int32_t ni = (int32_t)n, h = (ni >= 0 ? ni : ni - 1) / 2;
    uint32_t b1 = (uint32_t)(ni - h + 127) << 23, b2 = (uint32_t)(h + 127) << 23;
    float s1, s2;

    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    return (fmaf(p, r * r, r) + 1.0f) * s1 * s2;
}

#ifdef KERNEL_X86
/* exp_scalar() of 8 floats. */
AVX2 static ALWAYS_INLINE __m256
exp_avx2(__m256 x)
{
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fmadd_ps(n, _mm256_set1_ps(-EXP_LN2_LO),
                               _mm256_fmadd_ps(n, _mm256_set1_ps(-EXP_LN2_HI), x));
    __m256 p = _mm256_set1_ps(exp_poly[0]);

    for (int i = 1; i < 6; i++)
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_poly[i]));

    __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 =
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), bias), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, bias), 23));
    __m256 e = _mm256_mul_ps(
        _mm256_mul_ps(
            _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f)), s1),
        s2);

    e = _mm256_blendv_ps(e, _mm256_setzero_ps(),
                         _mm256_cmp_ps(x, _mm256_set1_ps(EXP_LO), _CMP_LT_OQ));
    e = _mm256_blendv_ps(e, _mm256_set1_ps(INFINITY),
                         _mm256_cmp_ps(x, _mm256_set1_ps(EXP_HI), _CMP_GT_OQ));
    return _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q)); /* NaN stays */
}

/* kernel_softmax()'s steps over i < n rounded down to 8 (returns how many), the lanes as its:
 * m[k] = the largest x[i] of i % 8 = k; x[i] = exp(x[i] - *max); s[k] += x[i] in increasing i;
 * x[i] *= inv. */
AVX2 static size_t
softmax_max_avx2(const float *x, size_t n, float *m)
{
    __m256 v = _mm256_loadu_ps(m);
    size_t i = 0;

    for (; i + 8 <= n; i += 8) /* vmaxps is x > m ? x : m, as the scalar loop */
        v = _mm256_max_ps(_mm256_loadu_ps(x + i), v);
    _mm256_storeu_ps(m, v);
    return i;
}

AVX2 static size_t
softmax_exp_sum_avx2(float *x, size_t n, float max, double *s)
{
    __m256d lo = _mm256_loadu_pd(s), hi = _mm256_loadu_pd(s + 4);
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(max)));

        _mm256_storeu_ps(x + i, e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    _mm256_storeu_pd(s, lo);
    _mm256_storeu_pd(s + 4, hi);
    return i;
}

AVX2 static size_t
softmax_scale_avx2(float *x, size_t n, float inv)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(inv)));
    return i;
}

/* g[i] = g[i] / (1 + exp(-g[i])) for i < n rounded down to 8; returns how many. */
AVX2 static size_t
silu_avx2(float *g, size_t n)
{
    size_t i = 0;

    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(g + i, _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e)));
    }
    return i;
}
#endif

void
kernel_softmax(float *x, size_t n)
{
    float m[LANES] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY,
                      -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    double s[LANES] = {0};
    bool simd = kernel_simd_active();
    size_t i = 0;

    /* LANES independent chains, element i in lane i % LANES: the max (the same value whatever
     * the order), the sum in double, combined as lane_sum() */
#ifdef KERNEL_X86
    if (simd)
        i = softmax_max_avx2(x, n, m);
#endif
    for (; i < n; i++)
        m[i % LANES] = x[i] > m[i % LANES] ? x[i] : m[i % LANES];
    for (int k = 1; k < LANES; k++)
        m[0] = m[k] > m[0] ? m[k] : m[0];

    float max = m[0];

    i = 0;
#ifdef KERNEL_X86
    if (simd)
        i = softmax_exp_sum_avx2(x, n, max, s);
#endif
    for (; i < n; i++) {
        x[i] = exp_scalar(x[i] - max);
        s[i % LANES] += x[i];
    }

    float inv = (float)(1.0 / (((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))));

    i = 0;
#ifdef KERNEL_X86
    if (simd)
        i = softmax_scale_avx2(x, n, inv);
#endif
    for (; i < n; i++)
        x[i] *= inv;
}

void
kernel_silu(float *g, size_t n)
{
    size_t done = 0;

#ifdef KERNEL_X86
    if (kernel_simd_active())
        done = silu_avx2(g, n);
#endif
    for (size_t i = done; i < n; i++)
        g[i] = g[i] / (1.0f + exp_scalar(-g[i]));
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

/* The scalar kernel_weighted_sum() over columns [i0, i1). */
static void
weighted_sum_scalar(float *o, const float *w, const float *v, size_t vs, size_t n, size_t i0,
                    size_t i1)
{
    for (size_t i = i0; i < i1; i++)
        o[i] = 0.0f;
    for (size_t p = 0; p < n; p++)
        for (size_t i = i0; i < i1; i++)
            o[i] += w[p] * v[p * vs + i];
}

#ifdef KERNEL_X86
/* One query of kernel_weighted_sum() on 64 columns at a time (8 sums of 8 in registers);
 * returns the columns done. */
AVX2 static size_t
weighted_sum_avx2(float *o, const float *w, const float *v, size_t vs, size_t n, size_t d)
{
    size_t i0 = 0;

    for (; i0 + 64 <= d; i0 += 64) {
        __m256 s[8];
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            s[j] = _mm256_setzero_ps();
        for (size_t p = 0; p < n; p++) {
            __m256 wp = _mm256_set1_ps(w[p]);
            const float *vp = v + p * vs + i0;
#pragma GCC unroll 8
            for (int j = 0; j < 8; j++)
                s[j] = _mm256_add_ps(s[j], _mm256_mul_ps(wp, _mm256_loadu_ps(vp + 8 * j)));
        }
#pragma GCC unroll 8
        for (int j = 0; j < 8; j++)
            _mm256_storeu_ps(o + i0 + 8 * j, s[j]);
    }
    return i0;
}

/*
 * All m queries of kernel_weighted_sum() on 32 columns at a time: each value row's 32 columns
 * loaded once for the m queries (2 x m sums of 16 in registers): the positions every query sees
 * for all of them, then each query's further positions; returns the columns done.
 */
AVX512 static size_t
weighted_sums_avx512(float *const *o, const float *const *w, const uint32_t *n, int m,
                     const float *v, size_t vs, size_t d)
{
    uint32_t lo = n[0];
    size_t i0 = 0;

    for (int j = 1; j < m; j++)
        lo = n[j] < lo ? n[j] : lo;
    for (; i0 + 32 <= d; i0 += 32) {
        __m512 s[KERNEL_WSUM_MAX][2];

#pragma GCC unroll 8
        for (int j = 0; j < KERNEL_WSUM_MAX; j++)
            s[j][0] = s[j][1] = _mm512_setzero_ps();
        for (size_t p = 0; p < lo; p++) {
            __m512 v0 = _mm512_loadu_ps(v + p * vs + i0),
                   v1 = _mm512_loadu_ps(v + p * vs + i0 + 16);
#pragma GCC unroll 8
            for (int j = 0; j < KERNEL_WSUM_MAX; j++)
                if (j < m) {
                    __m512 wp = _mm512_set1_ps(w[j][p]);

                    s[j][0] = _mm512_add_ps(s[j][0], _mm512_mul_ps(wp, v0));
                    s[j][1] = _mm512_add_ps(s[j][1], _mm512_mul_ps(wp, v1));
                }
        }
#pragma GCC unroll 8
        for (int j = 0; j < KERNEL_WSUM_MAX; j++)
            if (j < m) {
                for (size_t p = lo; p < n[j]; p++) {
                    __m512 wp = _mm512_set1_ps(w[j][p]);

                    s[j][0] =
                        _mm512_add_ps(s[j][0], _mm512_mul_ps(wp, _mm512_loadu_ps(v + p * vs + i0)));
                    s[j][1] = _mm512_add_ps(
                        s[j][1], _mm512_mul_ps(wp, _mm512_loadu_ps(v + p * vs + i0 + 16)));
                }
                _mm512_storeu_ps(o[j] + i0, s[j][0]);
                _mm512_storeu_ps(o[j] + i0 + 16, s[j][1]);
            }
    }
    return i0;
}
#endif

void
kernel_weighted_sum(float *const *o, const float *const *w, const uint32_t *n, int m,
                    const float *v, size_t vs, size_t d)
{
    size_t done = 0;

#ifdef KERNEL_X86
    if (kernel_level() >= KERNEL_LEVEL_AVX512)
        done = weighted_sums_avx512(o, w, n, m, v, vs, d);
#endif
    for (int j = 0; j < m; j++) {
        size_t dj = done;

#ifdef KERNEL_X86
        if (dj == 0 && kernel_simd_active())
            dj = weighted_sum_avx2(o[j], w[j], v, vs, n[j], d);
#endif
        weighted_sum_scalar(o[j], w[j], v, vs, n[j], dj, d);
    }
}
