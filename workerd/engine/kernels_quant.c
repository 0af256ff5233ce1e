/*
 * kernels_quant.c: matrix x activations for the quantized weight types (kernel_matmul_quant(),
 * called by kernel_matmul_rows()). Activations are quantized once per matrix call to the type's
 * vec_dot_type, then exact integer block sums (AVX2 maddubs, chosen at run time by CPUID) and the
 * float part in the order of quant.c's reference vec_dot, which is the scalar path: the same bits
 * either way. Not here: the reference kernels themselves (quant.c), the float tiles (kernels.c).
 */
#include "workerd/engine/kernels_impl.h"

#include "workerd/engine/quant.h"
#include "workerd/engine/types.h"

#include <string.h>

#define QTOK 4 /* tokens per quantized tile */

/* out[i] = w[i] . y for KERNEL_TILE_ROWS rows of a quantized type and one activation row. */
typedef void (*qrows_fn)(const void *const *w, const void *y, size_t ystride, size_t n, float *out,
                         size_t os);

#ifdef KERNEL_X86
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
#endif /* KERNEL_X86 */

/*
 * A quantized type: each block of KERNEL_TOK_BLOCK tokens' activations is quantized to the type's
 * vec_dot_type (its reference quantizer, so every thread and batch gets the same bytes), then
 * every (row, token) is the type's dot product: the AVX2 kernel when there is one, else the
 * reference vec_dot; both give the reference's bits.
 */
void
kernel_matmul_quant(const struct kernel_matrix *w, uint32_t r0, uint32_t r1, const float *x,
                    size_t xs, uint32_t ntok, float *y, size_t ys, void *scratch)
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
    for (uint32_t t0 = 0; t0 < ntok; t0 += KERNEL_TOK_BLOCK) {
        uint32_t t1 = ntok - t0 < KERNEL_TOK_BLOCK ? ntok : t0 + KERNEL_TOK_BLOCK;

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
