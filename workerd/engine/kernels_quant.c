/*
 * kernels_quant.c: matrix x activations for the quantized weight types (kernel_matmul_quant(),
 * called by kernel_matmul_rows()). Activations are quantized once per matrix call to the type's
 * vec_dot_type (a SIMD quantizer giving the reference quantizer's bytes), then exact integer
 * block sums and the float part in the order of quant.c's reference vec_dot, which is the scalar
 * path: the same bits at every level. The integer kernels exist per CPUID level (AVX2, AVX-VNNI,
 * AVX512-VNNI: kernels_quant_level.h compiled once for each). Not here: the reference kernels
 * themselves (quant.c), the float tiles (kernels.c).
 */
#include "workerd/engine/kernels_impl.h"

#include "workerd/engine/quant.h"
#include "workerd/engine/types.h"

#include <string.h>

#define QTOK        4    /* tokens per quantized tile */
#define QPREFETCH   512  /* bytes ahead each weight row is fetched in decode */
#define QPREFETCH16 512  /* the same in the 16-row decode tiles (AVX-512) */
#define QPACK_BLOCK 320  /* bytes of one block of 8 packed rows: 8 x 32 quants, 8 d, 8 m */
#define QPACK_K     2880 /* bytes of one K super-block of 8 packed rows (qpack8_k) */
#define QPACK16     640  /* bytes of one block of 16 packed rows: 16 x 32 quants, 16 d, 16 m */
#define QTOK16      8    /* tokens per 16-row prefill tile (AVX512-VNNI) */
#define QGRP_BLOCK  352  /* bytes of one block of a group of QTOK16 tokens (qgroup()) */
#define QTOK_MAX    256  /* at most this many tokens quantized at once (qtok_block()) */
#define QX_BYTES    (1024u << 10) /* and about this many bytes of them */
#define QDEC_BLOCK  40            /* bytes per 32 columns of one token laid out for a wide kernel */
#define QWIDE_TOK   8 /* tokens up to which the wide decode tiles run (QTOK at a time) */

/*
 * The activations of one matrix call, quantized: token t's row of the vec_dot_type at
 * q + t * yrb; for Q8_0 / Q8_1, per 32-element block b at [t * nb + b]: the sum of its quants
 * (the kernels take the weights' quants as unsigned bytes q + bias and subtract bias * sum), its
 * d and (Q8_1) s as floats; for Q8_K the sums of its bsums in pairs at [t * nb + 8 * super-block
 * + j] (the sums of the 32-element sub-blocks).
 */
struct qact {
    const uint8_t *q;
    size_t yrb;
    const int16_t *sum;
    const float *dy, *sy;
    size_t nb;
    const uint8_t *dec; /* the tokens laid out by the type's qprep_fn (wide decode), or NULL */
    size_t dec_stride;  /* bytes from one token's layout to the next */
    const uint8_t *grp; /* the tokens in groups for the 16-row tiles (qgroup()), or NULL */
    const char *pf;     /* 16-row tiles: lines to fetch into L2 meanwhile, one per block */
    size_t pf_lines;
};

/* out[j*os + i] = w[i] . y_(tok+j) for KERNEL_TILE_ROWS rows and nt tokens (rows8: out[i] =
 * w0[i*rb] . y_tok for 8 rows, one token). */
typedef void (*qrows_fn)(const void *const *w, const struct qact *a, uint32_t tok, size_t n,
                         float *out, size_t os);
typedef void (*qrows8_fn)(const uint8_t *w0, size_t rb, const struct qact *a, uint32_t tok,
                          size_t n, float *out);

/* 8 rows (rb bytes apart) packed for a qtile8_fn into dst (QPACK_BLOCK bytes per block); y[j*ys +
 * i] = packed row i . y_(tok+j) for nt tokens. */
typedef void (*qpack8_fn)(const uint8_t *w0, size_t rb, size_t n, uint8_t *dst);
typedef void (*qtile8_fn)(const uint8_t *p, const struct qact *a, uint32_t tok, size_t n, float *y,
                          size_t ys);

/* Token tok's activations a (n columns) laid out at dst for a wide decode kernel; returns the
 * bytes written (at most QDEC_BLOCK per 32 columns + 128). */
typedef size_t (*qprep_fn)(const struct qact *a, uint32_t tok, size_t n, uint8_t *dst);

/* y[j*ys + i] = row i of the wide_rows rows at w0 (rb bytes apart) . y_j for the tokens j of a
 * wide kernel (decode at 512 bits). */
typedef void (*qwide_fn)(const uint8_t *w0, size_t rb, const struct qact *a, size_t n, float *y,
                         size_t ys);

/* One level's kernels of a type: rows[nt] for 1..QTOK tokens, rows8 (decode) or NULL, pack8 and
 * tile8[nt] (prefill) or NULL; wide[nt] (decode at 512 bits, wide_rows rows at a time, on the
 * activations prep laid out at a->dec when prep is not NULL; for up to wide_tok tokens, QTOK at
 * a time) or NULL; pack16 and tile16[nt] for 1..QTOK16 tokens (prefill at 512 bits: 16 rows
 * packed, QPACK16 bytes per block) or NULL. */
struct qkern {
    qrows8_fn rows8;
    qrows_fn rows[QTOK + 1];
    qpack8_fn pack8;
    qtile8_fn tile8[QTOK + 1];
    qprep_fn prep;
    qwide_fn wide[QTOK + 1];
    uint32_t wide_rows, wide_tok;
    qpack8_fn pack16;
    qtile8_fn tile16[QTOK16 + 1];
};

/* The offset the kernels add to a 32-element type's quants to make them unsigned bytes (Q8_0
 * only with VNNI: vpmaddubsw would saturate on q + 128). */
static inline int32_t
qbias32(uint32_t type, bool vnni)
{
    switch (type) {
    case TYPE_Q8_0:
        return vnni ? 128 : 0;
    case TYPE_Q4_0:
        return 8;
    case TYPE_Q5_0:
        return 16;
    default:
        return 0;
    }
}

#ifdef KERNEL_X86
/* ---- helpers of every level ---- */

/* The four lane sums of a, b, c, d, in that order (exact: integers). */
AVX2 static ALWAYS_INLINE __m128i
hsum4_i32(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(a, b), _mm256_hadd_epi32(c, d));

    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* The lane sums of a and b in lanes 0 and 1. */
AVX2 static ALWAYS_INLINE __m128i
hsum2_i32(__m256i a, __m256i b)
{
    __m256i h = _mm256_hadd_epi32(a, b);
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));

    return _mm_hadd_epi32(s, s);
}

/* The eight lane sums of s0..s7, in that order. */
AVX2 static ALWAYS_INLINE __m256i
hsum8_i32(__m256i s0, __m256i s1, __m256i s2, __m256i s3, __m256i s4, __m256i s5, __m256i s6,
          __m256i s7)
{
    __m256i u0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
    __m256i u1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s4, s5), _mm256_hadd_epi32(s6, s7));

    return _mm256_add_epi32(_mm256_permute2x128_si256(u0, u1, 0x20),
                            _mm256_permute2x128_si256(u0, u1, 0x31));
}

AVX2 static ALWAYS_INLINE float
half_at(const uint8_t *p)
{
    uint16_t h;

    memcpy(&h, p, 2);
    return _cvtsh_ss(h);
}

static inline short
u16_at(const uint8_t *p)
{
    uint16_t h;

    memcpy(&h, p, 2);
    return (short)h;
}

static inline int
i32_at(const uint8_t *p)
{
    int32_t v;

    memcpy(&v, p, 4);
    return v;
}

/* The halves at p, p + rb, ..., p + 7 rb as floats. */
AVX2 static ALWAYS_INLINE __m256
halves8(const uint8_t *p, size_t rb)
{
    return _mm256_cvtph_ps(_mm_setr_epi16(
        u16_at(p), u16_at(p + rb), u16_at(p + 2 * rb), u16_at(p + 3 * rb), u16_at(p + 4 * rb),
        u16_at(p + 5 * rb), u16_at(p + 6 * rb), u16_at(p + 7 * rb)));
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

/* Q4_K / Q5_K's 12 bytes of 6-bit scales and mins (layout in quant.h): the 8 scales as int16 in
 * *sc, the 8 mins as bytes 0..7 of *m. */
AVX2 static ALWAYS_INLINE void
scales6(const uint8_t *s, __m128i *sc, __m128i *m)
{
    uint32_t a, b, c;

    memcpy(&a, s, 4);
    memcpy(&b, s + 4, 4);
    memcpy(&c, s + 8, 4);
    uint32_t sl = a & 0x3f3f3f3fu, sh = (c & 0x0f0f0f0fu) | ((a >> 2) & 0x30303030u);
    uint32_t ml = b & 0x3f3f3f3fu, mh = ((c >> 4) & 0x0f0f0f0fu) | ((b >> 2) & 0x30303030u);

    *sc = _mm_cvtepu8_epi16(_mm_setr_epi32((int)sl, (int)sh, 0, 0));
    *m = _mm_setr_epi32((int)ml, (int)mh, 0, 0);
}

/* y[j*ys .. j*ys + 7] = f<j> for j < nt. */
AVX2 static ALWAYS_INLINE void
store_tokens(int nt, float *y, size_t ys, __m256 f0, __m256 f1, __m256 f2, __m256 f3)
{
    _mm256_storeu_ps(y, f0);
    if (nt > 1)
        _mm256_storeu_ps(y + ys, f1);
    if (nt > 2)
        _mm256_storeu_ps(y + 2 * ys, f2);
    if (nt > 3)
        _mm256_storeu_ps(y + 3 * ys, f3);
}

/* Stores the 8 x 8 transpose of the 32-bit groups of q[0..7]: vector g (32 bytes at dst +
 * stride g) holds group g of q[0], ..., q[7]. */
AVX2 static ALWAYS_INLINE void
transpose8_store(const __m256i *q, uint8_t *dst, size_t stride)
{
    __m256i u0 = _mm256_unpacklo_epi32(q[0], q[1]), u1 = _mm256_unpackhi_epi32(q[0], q[1]);
    __m256i u2 = _mm256_unpacklo_epi32(q[2], q[3]), u3 = _mm256_unpackhi_epi32(q[2], q[3]);
    __m256i u4 = _mm256_unpacklo_epi32(q[4], q[5]), u5 = _mm256_unpackhi_epi32(q[4], q[5]);
    __m256i u6 = _mm256_unpacklo_epi32(q[6], q[7]), u7 = _mm256_unpackhi_epi32(q[6], q[7]);
    /* v<g>: group g of q[0..3] in the low half, g + 4 in the high half; x<g>: of q[4..7] */
    __m256i v[4] = {_mm256_unpacklo_epi64(u0, u2), _mm256_unpackhi_epi64(u0, u2),
                    _mm256_unpacklo_epi64(u1, u3), _mm256_unpackhi_epi64(u1, u3)};
    __m256i x[4] = {_mm256_unpacklo_epi64(u4, u6), _mm256_unpackhi_epi64(u4, u6),
                    _mm256_unpacklo_epi64(u5, u7), _mm256_unpackhi_epi64(u5, u7)};

    for (int g = 0; g < 4; g++) {
        _mm256_storeu_si256((__m256i *)(dst + stride * g),
                            _mm256_permute2x128_si256(v[g], x[g], 0x20));
        _mm256_storeu_si256((__m256i *)(dst + stride * (g + 4)),
                            _mm256_permute2x128_si256(v[g], x[g], 0x31));
    }
}

/* Elements 32j .. 32j + 31 of a Q4_K / Q5_K super-block (sub-block j) as unsigned bytes. */
AVX2 static ALWAYS_INLINE __m256i
k45_chunk32(const uint8_t *b, bool five, int j)
{
    __m256i q = _mm256_loadu_si256((const __m256i *)(b + (five ? 48 : 16) + 32 * (j / 2)));
    __m256i v = _mm256_and_si256(j % 2 ? _mm256_srli_epi16(q, 4) : q, _mm256_set1_epi8(0x0f));

    if (five) { /* bit j of qh[l] */
        __m256i qh =
            _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(b + 16)), _mm_cvtsi32_si128(j));
        v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(1)), 4));
    }
    return v;
}

/* Elements 32c .. 32c + 31 of a Q6_K super-block as unsigned bytes q + 32 (layout in quant.h). */
AVX2 static ALWAYS_INLINE __m256i
q6_chunk32(const struct block_q6_k *b, int c)
{
    int h = c / 4, i = c % 4;
    __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (i % 2)));
    __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
    __m256i lo = _mm256_and_si256(i < 2 ? l : _mm256_srli_epi16(l, 4), _mm256_set1_epi8(0x0f));

    qh = i == 0   ? _mm256_slli_epi16(qh, 4)
         : i == 1 ? _mm256_slli_epi16(qh, 2)
         : i == 2 ? qh
                  : _mm256_srli_epi16(qh, 2);
    return _mm256_or_si256(lo, _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
}

/* K types: sub-blocks per super-block; the offset added to the quants to make them unsigned
 * (Q3_K, Q6_K: symmetric, no min) or 0 (a min per sub-block). */
static inline int
kq_nsub(uint32_t type)
{
    return type == TYPE_Q4_K || type == TYPE_Q5_K ? 8 : 16;
}

static inline int
kq_offset(uint32_t type)
{
    return type == TYPE_Q6_K ? 32 : type == TYPE_Q3_K ? 4 : 0;
}

/* A K super-block's sub-block scales s[], mins m[] (0 without), d and dmin (0 without). */
AVX2 static ALWAYS_INLINE void
kq_scales(uint32_t type, const uint8_t *b, int16_t *s, int16_t *m, float *d, float *dmin)
{
    *dmin = 0.0f;
    switch (type) {
    case TYPE_Q2_K:
        for (int j = 0; j < 16; j++) {
            s[j] = (int16_t)(b[j] & 0x0f);
            m[j] = (int16_t)(b[j] >> 4);
        }
        *d = half_at(b + 80);
        *dmin = half_at(b + 82);
        return;
    case TYPE_Q3_K:
        for (int j = 0; j < 16; j++) {
            const uint8_t *sc = b + 96;
            int lo = j < 8 ? sc[j] & 0x0f : sc[j - 8] >> 4;
            int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;

            s[j] = (int16_t)((lo | (hi << 4)) - 32);
        }
        *d = half_at(b + 108);
        return;
    case TYPE_Q6_K:
        for (int j = 0; j < 16; j++)
            s[j] = ((const int8_t *)b)[192 + j];
        *d = half_at(b + 208);
        return;
    default: { /* Q4_K, Q5_K */
        __m128i scv, mv;
        uint8_t mb[16];

        scales6(b + 4, &scv, &mv);
        _mm_storeu_si128((__m128i *)s, scv);
        _mm_storeu_si128((__m128i *)mb, mv);
        for (int j = 0; j < 8; j++)
            m[j] = mb[j];
        *d = half_at(b);
        *dmin = half_at(b + 2);
    }
    }
}

/* Elements 32c .. 32c + 31 of a K super-block as unsigned bytes q + kq_offset() (layouts in
 * quant.h). */
AVX2 static ALWAYS_INLINE __m256i
kq_chunk32(uint32_t type, const uint8_t *b, int c)
{
    const __m256i one = _mm256_set1_epi8(1);
    __m128i cnt = _mm_cvtsi32_si128(c);

    switch (type) {
    case TYPE_Q2_K: /* bits 2g..2g+1 of qs[32h + l], c = 4h + g */
        return _mm256_and_si256(
            _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(b + 16 + 32 * (c / 4))),
                             _mm_cvtsi32_si128(2 * (c % 4))),
            _mm256_set1_epi8(3));
    case TYPE_Q3_K: { /* and 4 where bit c of hmask[l] is set */
        __m256i lo = _mm256_and_si256(
            _mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)(b + 32 + 32 * (c / 4))),
                             _mm_cvtsi32_si128(2 * (c % 4))),
            _mm256_set1_epi8(3));
        __m256i hi =
            _mm256_and_si256(_mm256_srl_epi16(_mm256_loadu_si256((const __m256i *)b), cnt), one);

        return _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
    }
    case TYPE_Q6_K:
        return q6_chunk32((const struct block_q6_k *)b, c);
    default: /* Q4_K, Q5_K */
        return k45_chunk32(b, type == TYPE_Q5_K, c);
    }
}

/* ---- the levels ---- */

#define QT       AVX2
#define QS(name) name##_avx2
#define QVNNI    0
#define QAVX512  0
#include "workerd/engine/kernels_quant_level.h"
#undef QT
#undef QS
#undef QVNNI

#define QT       __attribute__((target("avx2,fma,f16c,avxvnni")))
#define QS(name) name##_avxvnni
#define QVNNI    1
#define QDPBUSD  _mm256_dpbusd_avx_epi32
#define QDPWSSD  _mm256_dpwssd_avx_epi32
#include "workerd/engine/kernels_quant_level.h"
#undef QT
#undef QS
#undef QDPBUSD
#undef QDPWSSD

#define QT       __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define QS(name) name##_avx512vnni
#define QDPBUSD  _mm256_dpbusd_epi32
#define QDPWSSD  _mm256_dpwssd_epi32
#undef QAVX512
#define QAVX512 1
#include "workerd/engine/kernels_quant_level.h"
#undef QT
#undef QS
#undef QVNNI
#undef QAVX512
#undef QDPBUSD
#undef QDPWSSD

/* ---- the activation quantizers (AVX2), bytes equal to quant.c's ---- */

/* v rounded to the nearest integer, halves away from zero: roundf(), exactly. */
AVX2 static ALWAYS_INLINE __m256
round_away(__m256 v)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t)); /* exact */
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);

    return _mm256_add_ps(
        t, _mm256_and_ps(up, _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0f))));
}

/* The largest |x| of 8 x n floats. */
AVX2 static ALWAYS_INLINE float
amax_of(const float *x, int n8)
{
    const __m256 sign = _mm256_set1_ps(-0.0f);
    __m256 m = _mm256_setzero_ps();

    for (int i = 0; i < n8; i++)
        m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(x + 8 * i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_max_ss(h, _mm_shuffle_ps(h, h, 1)));
}

/* 4 x 8 int32 in [-128, 127] as 32 bytes, in order. */
AVX2 static ALWAYS_INLINE __m256i
pack32(__m256i i0, __m256i i1, __m256i i2, __m256i i3)
{
    __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));

    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* quant.c's Q8_0 block: d = amax / 127, q = roundf(x / d); returns sum(q). */
AVX2 static int32_t
quantize_q8_32(const float *x, float *d_out, int8_t *q)
{
    float d = amax_of(x, 4) / 127.0f;
    __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    __m256i i[4];

    for (int j = 0; j < 4; j++)
        i[j] = _mm256_cvtps_epi32(round_away(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * j), id)));
    _mm256_storeu_si256((__m256i *)q, pack32(i[0], i[1], i[2], i[3]));
    *d_out = d;
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
    return _mm_cvtsi128_si32(hsum2_i32(s, s));
}

/* quant.c's Q8_K: d = amax / 127 per 256, q = (int)(x / d +- 0.5) clamped to [-127, 127]. */
AVX2 static void
quantize_q8_k_avx2(const float *x, struct block_q8_k *b)
{
    float d = amax_of(x, QUANT_QK_K / 8) / 127.0f;
    __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
    const __m256 half = _mm256_set1_ps(0.5f), sign = _mm256_set1_ps(-0.0f);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);

    b->d = d;
    for (int g = 0; g < QUANT_QK_K / 32; g++) {
        __m256i i[4];

        for (int j = 0; j < 4; j++) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + 32 * g + 8 * j), id);
            /* +0.5 for v >= 0 (-0 included), else -0.5 */
            __m256 h = _mm256_or_ps(
                half, _mm256_and_ps(sign, _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ)));
            __m256i t = _mm256_cvttps_epi32(_mm256_add_ps(v, h));

            i[j] = _mm256_min_epi32(_mm256_max_epi32(t, lo), hi);
        }
        _mm256_storeu_si256((__m256i *)(b->qs + 32 * g), pack32(i[0], i[1], i[2], i[3]));
        __m128i s = hsum2_i32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        b->bsums[2 * g] = (int16_t)_mm_cvtsi128_si32(s);
        b->bsums[2 * g + 1] = (int16_t)_mm_extract_epi32(s, 1);
    }
}
#endif /* KERNEL_X86 */

/* The kernels of a type at the current level, or NULL (the reference vec_dot then). */
static const struct qkern *
qkern_of(uint32_t type)
{
    if (type >= TYPE__COUNT)
        return NULL;
#ifdef KERNEL_X86
    switch (kernel_level()) {
    case KERNEL_LEVEL_SCALAR:
        return NULL;
    case KERNEL_LEVEL_AVX2:
    case KERNEL_LEVEL_AVX512:
        return qkerns_avx2[type];
    case KERNEL_LEVEL_AVXVNNI:
        return qkerns_avxvnni[type];
    case KERNEL_LEVEL_AVX512VNNI:
        return qkerns_avx512vnni[type];
    }
#endif
    return NULL;
}

/* A Q8_K block's bsums summed in pairs (the 32-element sub-blocks of Q4_K / Q5_K) at sum[0..7]. */
static void
bsum_pairs(const struct block_q8_k *b, int16_t *sum)
{
    for (int j = 0; j < 8; j++)
        sum[j] = (int16_t)(b->bsums[2 * j] + b->bsums[2 * j + 1]);
}

/*
 * Token x's activations as a row of type yt (Q8_0, Q8_1 or Q8_K) at dst, and for Q8_0 / Q8_1
 * its blocks' sums, d and s (struct qact) at sum, dy, sy, for Q8_K its bsums in pairs at sum:
 * the SIMD quantizers above when the level has them, else quant.c's.
 */
static void
quantize_act(uint32_t yt, const float *x, size_t n, void *dst, int16_t *sum, float *dy, float *sy)
{
    bool simd = kernel_simd_active();

#ifndef KERNEL_X86
    simd = false;
#endif
    if (!simd) {
        type_traits(yt)->from_float(x, dst, (int64_t)n);
        for (size_t k = 0; yt == TYPE_Q8_K && k < n / QUANT_QK_K; k++)
            bsum_pairs((struct block_q8_k *)dst + k, sum + 8 * k);
        for (size_t k = 0; yt != TYPE_Q8_K && k < n / 32; k++) {
            const struct block_q8_0 *b0 = (const struct block_q8_0 *)dst + k;
            const struct block_q8_1 *b1 = (const struct block_q8_1 *)dst + k;
            int s = 0;

            for (int j = 0; j < 32; j++)
                s += yt == TYPE_Q8_0 ? b0->qs[j] : b1->qs[j];
            sum[k] = (int16_t)s;
            dy[k] = fp16_to_f32(yt == TYPE_Q8_0 ? b0->d : b1->d);
            sy[k] = yt == TYPE_Q8_0 ? 0.0f : fp16_to_f32(b1->s);
        }
        return;
    }
#ifdef KERNEL_X86
    for (size_t k = 0; k < n / (yt == TYPE_Q8_K ? QUANT_QK_K : 32); k++) {
        float d;

        if (yt == TYPE_Q8_K) {
            quantize_q8_k_avx2(x + k * QUANT_QK_K, (struct block_q8_k *)dst + k);
            bsum_pairs((struct block_q8_k *)dst + k, sum + 8 * k);
        } else if (yt == TYPE_Q8_1) {
            struct block_q8_1 *b = (struct block_q8_1 *)dst + k;
            int32_t s = quantize_q8_32(x + 32 * k, &d, b->qs);

            b->d = f32_to_fp16(d);
            b->s = f32_to_fp16(d * (float)s);
            sum[k] = (int16_t)s;
            dy[k] = fp16_to_f32(b->d);
            sy[k] = fp16_to_f32(b->s);
        } else {
            struct block_q8_0 *b = (struct block_q8_0 *)dst + k;

            sum[k] = (int16_t)quantize_q8_32(x + 32 * k, &d, b->qs);
            b->d = f32_to_fp16(d);
            dy[k] = fp16_to_f32(b->d);
            sy[k] = 0.0f;
        }
    }
#endif
}

/* Bytes per token and 32 columns of the quantized activations: the row (at most 37 bytes: Q8_0,
 * Q8_1, Q8_K), its sum, d and s; then the same in groups for the 16-row tiles. */
#define QACT_BYTES (37 + 2 + 4 + 4)
#define QGRP_BYTES (QGRP_BLOCK / QTOK16)

/* Tokens whose activations are quantized together, each packed tile serving them all: as many as
 * QX_BYTES of grouped activations hold (they stay in L2 while the tiles pass over them), a
 * multiple of QTOK16, from KERNEL_TOK_BLOCK to QTOK_MAX. */
static uint32_t
qtok_block(size_t cols)
{
    size_t tb = QX_BYTES / ((cols + 31) / 32 * QGRP_BYTES) / QTOK16 * QTOK16;

    return tb < KERNEL_TOK_BLOCK ? KERNEL_TOK_BLOCK : tb > QTOK_MAX ? QTOK_MAX : (uint32_t)tb;
}

size_t
kernel_quant_scratch_bytes(uint32_t cols)
{
    size_t nb = (cols + 31) / 32, tnb = (size_t)KERNEL_TOK_BLOCK * nb;

    /* qtok_block() tokens' activations and their groups (tokens x blocks at most the larger of
     * KERNEL_TOK_BLOCK x nb and QX_BYTES / QGRP_BYTES, for this and any narrower matrix), then 8
     * or 16 packed rows (QPACK16 >= QPACK_K / 8 >= QPACK_BLOCK bytes per 32 columns), then the
     * tokens laid out for a wide kernel */
    if (tnb < QX_BYTES / QGRP_BYTES)
        tnb = QX_BYTES / QGRP_BYTES;
    return tnb * (QACT_BYTES + QGRP_BYTES) + 64 + nb * QPACK16 +
           QWIDE_TOK * (nb * QDEC_BLOCK + 128) + 16;
}

/*
 * The first ntok tokens of a laid out for the 16-row tiles (qtile16p()) at dst: group G (tokens
 * G * QTOK16 on) block k at dst + (G * nb + k) * QGRP_BLOCK: token j's 32 quants at 32 j, then
 * -bias x the tokens' quant sums as int32 (the bias of the weights' unsigned quants with VNNI:
 * the 16-row tiles need AVX512-VNNI), their d and their s as floats.
 */
static void
qgroup(uint32_t type, const struct qact *a, uint32_t ntok, uint8_t *dst)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;
    int32_t bias = qbias32(type, true);
    size_t ybs = with_min ? sizeof(struct block_q8_1) : sizeof(struct block_q8_0);

    for (uint32_t t = 0; t < ntok; t++) {
        const uint8_t *yq = a->q + t * a->yrb + (with_min ? 4 : 2);
        uint8_t *g = dst + (t / QTOK16) * a->nb * QGRP_BLOCK;
        uint32_t j = t % QTOK16;

        for (size_t k = 0; k < a->nb; k++) {
            uint8_t *b = g + k * QGRP_BLOCK;
            int32_t m = -bias * a->sum[t * a->nb + k];

            memcpy(b + 32 * j, yq + k * ybs, 32);
            memcpy(b + 32 * QTOK16 + 4 * j, &m, 4);
            memcpy(b + 36 * QTOK16 + 4 * j, &a->dy[t * a->nb + k], 4);
            memcpy(b + 40 * QTOK16 + 4 * j, &a->sy[t * a->nb + k], 4);
        }
    }
}

/* A load from each 4 KiB page of the bytes at p: software prefetches that miss the TLB are
 * dropped (a model mapped 4 KiB at a time: a file written recently, or paged out and back in),
 * so the packing's prefetches of the next rows need their pages' translations first. */
static void
touch_pages(const char *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 4096)
        (void)*(const volatile char *)(p + o);
}

/* Tokens from which packing 8 rows pays: 2 for the 32-element types (cheap to unpack), 8 for
 * the K types, whose 4-row tiles share the unpacking among their 4 tokens already (measured
 * with model-bench -b 4: packed Q4_K_M 1.4x the CPU time per step of the 4-row tiles). */
static uint32_t
qpack_min(const struct qkern *qk)
{
    return qk->rows8 != NULL ? 2 : 8;
}

/*
 * Each block of qtok_block() tokens' activations is quantized to the type's vec_dot_type
 * (the reference's bytes, so every thread and batch gets the same), then every (row, token) is
 * the type's dot product: this level's kernel when there is one, else the reference vec_dot;
 * both give the reference's bits. Kernels: up to QWIDE_TOK tokens, the level's wide tiles where
 * it has them (AVX512-VNNI: Q4_0, Q4_K, Q6_K; the tokens laid out once, then each tile of rows
 * against QTOK tokens at a time while its rows stay in cache); for one token, 8-row decode tiles
 * (32-element types) or 4-row tiles (K types); for more, 8 rows packed once per token block
 * then tiles of up to QTOK tokens on them (from qpack_min() tokens; Q2_K / Q3_K: for one token
 * too); the rows left (and the smaller batches) in 4-row tiles.
 */
void
kernel_matmul_quant(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                    size_t xs, uint32_t ntok, float *y, size_t ys, void *scratch)
{
    const struct type_traits *t = type_traits(w->type);
    size_t yrb = type_row_size(t->vec_dot_type, w->cols);
    size_t nb = w->cols / 32;
    const struct qkern *qk = qkern_of(w->type);
    const qrows_fn *rows = qk != NULL && qk->rows[1] != NULL ? qk->rows : NULL;
    const uint8_t *wd = w->data;
    uint32_t tb = qtok_block(w->cols);
    uint8_t *base = scratch;
    int16_t *sums = (int16_t *)(base + (size_t)tb * yrb);
    float *dy = (float *)(base + (((size_t)tb * (yrb + 2 * nb) + 3) & ~(size_t)3));
    float *sy = dy + (size_t)tb * nb;
    uint8_t *grp = (uint8_t *)(((uintptr_t)(sy + (size_t)tb * nb) + 63) & ~(uintptr_t)63);
    uint8_t *packed = grp + (size_t)tb * nb * QGRP_BYTES;
    uint8_t *dec = packed + nb * QPACK16;
    struct qact a = {base, yrb, sums, dy, sy, nb, NULL, 0, NULL, NULL, 0};

    for (uint32_t t0 = 0; t0 < ntok; t0 += tb) {
        uint32_t t1 = ntok - t0 < tb ? ntok : t0 + tb;
        uint32_t r = r0;

        for (uint32_t tk = t0; tk < t1; tk++)
            quantize_act(t->vec_dot_type, x + tk * xs, w->cols, base + (tk - t0) * yrb,
                         sums + (tk - t0) * nb, dy + (tk - t0) * nb, sy + (tk - t0) * nb);
        if (qk != NULL && qk->wide[1] != NULL && t1 - t0 <= qk->wide_tok &&
            r + qk->wide_rows <= r1) {
            a.dec = dec;
            for (uint32_t tk = t0; qk->prep != NULL && tk < t1; tk++)
                a.dec_stride = qk->prep(&a, tk - t0, w->cols, dec + (tk - t0) * a.dec_stride);
            for (; r + qk->wide_rows <= r1; r += qk->wide_rows)
                for (uint32_t tk = t0; tk < t1;) { /* the rows stay in cache for the next */
                    uint32_t nt = t1 - tk < QTOK ? t1 - tk : QTOK, c = tk - t0;
                    struct qact ac = {a.q + c * yrb,
                                      yrb,
                                      a.sum + c * nb,
                                      a.dy + c * nb,
                                      a.sy + c * nb,
                                      nb,
                                      a.dec + c * a.dec_stride,
                                      a.dec_stride,
                                      NULL,
                                      NULL,
                                      0};

                    qk->wide[nt](wd + (size_t)r * w->row_bytes, w->row_bytes, &ac, w->cols,
                                 y + tk * ys + r, ys);
                    tk += nt;
                }
        }
        if (qk != NULL && qk->rows8 != NULL && t1 - t0 == 1)
            for (; r + 8 <= r1; r += 8)
                qk->rows8(wd + (size_t)r * w->row_bytes, w->row_bytes, &a, 0, w->cols,
                          y + t0 * ys + r);
        /* this token block's groups, if the 16-row tiles run on it */
        a.grp = qk != NULL && qk->pack16 != NULL && t1 - t0 >= qpack_min(qk) && r + 16 <= r1 ? grp
                                                                                             : NULL;
        if (a.grp != NULL)
            qgroup(w->type, &a, t1 - t0, grp);
        for (; a.grp != NULL && r + 16 <= r1; r += 16) {
            /* the next 16 rows (contiguous), a share of their lines in every tile */
            size_t lines = r + 32 <= r1 ? 16 * w->row_bytes / 64 + 1 : 0;
            size_t share = lines / ((t1 - t0 + QTOK16 - 1) / QTOK16) + 1;

            a.pf = (const char *)wd + (size_t)(r + 16) * w->row_bytes;
            touch_pages(a.pf, lines * 64);
            qk->pack16(wd + (size_t)r * w->row_bytes, w->row_bytes, w->cols, packed);
            for (uint32_t tk = t0; tk < t1;) {
                uint32_t nt = t1 - tk < QTOK16 ? t1 - tk : QTOK16;

                a.pf_lines = share < lines ? share : lines;
                qk->tile16[nt](packed, &a, tk - t0, w->cols, y + tk * ys + r, ys);
                a.pf += 64 * a.pf_lines;
                lines -= a.pf_lines;
                tk += nt;
            }
        }
        if (qk != NULL && qk->pack8 != NULL && (t1 - t0 >= qpack_min(qk) || rows == NULL))
            for (; r + 8 <= r1; r += 8) {
                if (r + 16 <= r1) /* the next 8 rows, which the K types' packing prefetches */
                    touch_pages((const char *)wd + (size_t)(r + 8) * w->row_bytes,
                                8 * w->row_bytes);
                qk->pack8(wd + (size_t)r * w->row_bytes, w->row_bytes, w->cols, packed);
                for (uint32_t tk = t0; tk < t1;) {
                    uint32_t nt = t1 - tk < QTOK ? t1 - tk : QTOK;

                    qk->tile8[nt](packed, &a, tk - t0, w->cols, y + tk * ys + r, ys);
                    tk += nt;
                }
            }
        for (; r < r1;) {
            uint32_t nr = r1 - r < KERNEL_TILE_ROWS ? r1 - r : KERNEL_TILE_ROWS;
            const void *wr[KERNEL_TILE_ROWS];
            float out[QTOK][KERNEL_TILE_ROWS];

            for (uint32_t i = 0; i < KERNEL_TILE_ROWS; i++) /* a short tile repeats its last row */
                wr[i] = wd + (size_t)(r + (i < nr ? i : nr - 1)) * w->row_bytes;
            for (uint32_t tk = t0; tk < t1;) {
                uint32_t nt = rows == NULL ? 1 : t1 - tk < QTOK ? t1 - tk : QTOK;

                if (rows != NULL)
                    rows[nt](wr, &a, tk - t0, w->cols, out[0], KERNEL_TILE_ROWS);
                else
                    for (uint32_t i = 0; i < nr; i++)
                        out[0][i] = t->vec_dot(wr[i], base + (tk - t0) * yrb, w->cols);
                for (uint32_t j = 0; j < nt; j++)
                    memcpy(y + (tk + j) * ys + r, out[j], nr * sizeof(float));
                tk += nt;
            }
            r += nr;
        }
    }
}
