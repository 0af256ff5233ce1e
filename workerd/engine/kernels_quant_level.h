/*
 * kernels_quant_level.h: the body of one level's quantized kernels, included by kernels_quant.c
 * once per level with QT (the functions' target attribute), QS(name) (the level's suffix) and
 * QVNNI (1: vpdpbusd / vpdpwssd, 0: their AVX2 forms vpmaddubsw / vpmaddwd + vpaddd) defined.
 * Defines QS(qkern_get)(type), the level's struct qkern. Every integer sum is exact whatever the
 * instructions, and the float operations are the reference's, in its order: the same bits at
 * every level. Not a header of its own: nothing else includes it.
 */

#if QVNNI
/* acc + the sums of 4 adjacent products u8 x s8 / s16 x s16, exact (no saturation). */
#define DOT_U8S8(acc, u, s)   QDPBUSD(acc, u, s)
#define DOT_S16S16(acc, a, b) QDPWSSD(acc, a, b)
#else
#define DOT_U8S8(acc, u, s)                                                                        \
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)))
#define DOT_S16S16(acc, a, b) _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
#endif

/* One block of a 32-element type, unpacked once for several tokens: u unsigned bytes, s (Q8_0
 * without VNNI) the sign source of the sign trick. */
struct QS(b32) {
    __m256i u, s;
};

/*
 * The 32 quants q of the block at b as unsigned bytes u = q + bias (bias: qbias32()). Q8_0
 * without VNNI: u = |q| and s = q, the product taken as |q| * sign(y, q) (vpmaddubsw would
 * saturate on q + 128).
 */
QT static ALWAYS_INLINE struct QS(b32) QS(unpack32)(uint32_t type, const uint8_t *b)
{
    struct QS(b32) r;

    switch (type) {
    case TYPE_Q8_0:
        r.s = _mm256_loadu_si256((const __m256i *)(b + 2));
#if QVNNI
        r.u = _mm256_xor_si256(r.s, _mm256_set1_epi8((char)0x80));
#else
        r.u = _mm256_sign_epi8(r.s, r.s);
#endif
        return r;
    case TYPE_Q4_0:
        r.u = nibbles32(b + 2);
        break;
    case TYPE_Q4_1:
        r.u = nibbles32(b + 4);
        break;
    case TYPE_Q5_0:
        r.u = _mm256_or_si256(nibbles32(b + 6), fifth_bits32(b + 2));
        break;
    default: /* TYPE_Q5_1 */
        r.u = _mm256_or_si256(nibbles32(b + 8), fifth_bits32(b + 4));
        break;
    }
    r.s = r.u;
    return r;
}

/* Lanes summing to sum_j u_j y_j for a block unpacked by unpack32() and activation quants y. */
QT static ALWAYS_INLINE __m256i
QS(dot32)(uint32_t type, struct QS(b32) x, __m256i y)
{
    if (type == TYPE_Q8_0 && !QVNNI)
        y = _mm256_sign_epi8(y, x.s);
    return DOT_U8S8(_mm256_setzero_si256(), x.u, y);
}

/*
 * out[j*os + i] = w[i] . y_(tok+j) for 4 rows of a 32-element type and nt tokens: per block
 * sum += (d_x d_y) isum, then (with a min) sum += m_x s_y, the four rows side by side in one
 * 128-bit vector; the rows' blocks are unpacked once for the nt tokens.
 */
QT static ALWAYS_INLINE void
QS(qtile32)(uint32_t type, size_t bsize, int nt, const void *const *w, const struct qact *a,
            uint32_t tok, size_t n, float *out, size_t os)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;
    int32_t bias = qbias32(type, QVNNI);
    size_t ybs = with_min ? sizeof(struct block_q8_1) : sizeof(struct block_q8_0);
    const uint8_t *r0 = w[0], *r1 = w[1], *r2 = w[2], *r3 = w[3];
    __m128 acc[QTOK] = {_mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps(), _mm_setzero_ps()};

    for (size_t k = 0; k < n / 32; k++) {
        struct QS(b32) x0 = QS(unpack32)(type, r0 + k * bsize);
        struct QS(b32) x1 = QS(unpack32)(type, r1 + k * bsize);
        struct QS(b32) x2 = QS(unpack32)(type, r2 + k * bsize);
        struct QS(b32) x3 = QS(unpack32)(type, r3 + k * bsize);
        __m128 dx = _mm_setr_ps(half_at(r0 + k * bsize), half_at(r1 + k * bsize),
                                half_at(r2 + k * bsize), half_at(r3 + k * bsize));
        __m128 mx = _mm_setzero_ps();

        if (with_min)
            mx = _mm_setr_ps(half_at(r0 + k * bsize + 2), half_at(r1 + k * bsize + 2),
                             half_at(r2 + k * bsize + 2), half_at(r3 + k * bsize + 2));
        for (int j = 0; j < nt; j++) {
            const uint8_t *yb = a->q + (tok + j) * a->yrb + k * ybs;
            __m256i yq = _mm256_loadu_si256((const __m256i *)(yb + (with_min ? 4 : 2)));
            __m128i is = hsum4_i32(QS(dot32)(type, x0, yq), QS(dot32)(type, x1, yq),
                                   QS(dot32)(type, x2, yq), QS(dot32)(type, x3, yq));

            if (bias != 0)
                is = _mm_sub_epi32(is, _mm_set1_epi32(bias * a->sum[(tok + j) * a->nb + k]));
            acc[j] = _mm_add_ps(
                acc[j], _mm_mul_ps(_mm_mul_ps(dx, _mm_set1_ps(half_at(yb))), _mm_cvtepi32_ps(is)));
            if (with_min)
                acc[j] = _mm_add_ps(acc[j], _mm_mul_ps(mx, _mm_set1_ps(half_at(yb + 2))));
        }
    }
    for (int j = 0; j < nt; j++)
        _mm_storeu_ps(out + j * os, acc[j]);
}

/*
 * Decode: out[i] = w0[i*rb] . y_tok for 8 rows (rb bytes apart) of a 32-element type and one
 * token; eight blocks' integer sums reduced into one vector of 8 rows, the float part in the
 * reference's order for the 8 rows at once. Each row is fetched QPREFETCH bytes ahead.
 */
QT static ALWAYS_INLINE void
QS(qrows8_32)(uint32_t type, size_t bsize, const uint8_t *w0, size_t rb, const struct qact *a,
              uint32_t tok, size_t n, float *out)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;
    int32_t bias = qbias32(type, QVNNI);
    size_t ybs = with_min ? sizeof(struct block_q8_1) : sizeof(struct block_q8_0);
    const uint8_t *y = a->q + tok * a->yrb;
    const int16_t *ysum = a->sum + tok * a->nb;
    __m256 acc = _mm256_setzero_ps();

    for (size_t k = 0; k < n / 32; k++) {
        const uint8_t *b = w0 + k * bsize, *yb = y + k * ybs;
        __m256i yq = _mm256_loadu_si256((const __m256i *)(yb + (with_min ? 4 : 2)));
        __m256i s0, s1, s2, s3, s4, s5, s6, s7;

        if ((k * bsize) % 64 < bsize) /* the block starts a new line of the rows */
            for (int i = 0; i < 8; i++)
                _mm_prefetch((const char *)b + i * rb + QPREFETCH, _MM_HINT_T0);
        s0 = QS(dot32)(type, QS(unpack32)(type, b), yq);
        s1 = QS(dot32)(type, QS(unpack32)(type, b + rb), yq);
        s2 = QS(dot32)(type, QS(unpack32)(type, b + 2 * rb), yq);
        s3 = QS(dot32)(type, QS(unpack32)(type, b + 3 * rb), yq);
        s4 = QS(dot32)(type, QS(unpack32)(type, b + 4 * rb), yq);
        s5 = QS(dot32)(type, QS(unpack32)(type, b + 5 * rb), yq);
        s6 = QS(dot32)(type, QS(unpack32)(type, b + 6 * rb), yq);
        s7 = QS(dot32)(type, QS(unpack32)(type, b + 7 * rb), yq);
        __m256i is = hsum8_i32(s0, s1, s2, s3, s4, s5, s6, s7);
        if (bias != 0)
            is = _mm256_sub_epi32(is, _mm256_set1_epi32(bias * ysum[k]));
        acc = _mm256_add_ps(
            acc, _mm256_mul_ps(_mm256_mul_ps(halves8(b, rb), _mm256_set1_ps(half_at(yb))),
                               _mm256_cvtepi32_ps(is)));
        if (with_min)
            acc = _mm256_add_ps(acc,
                                _mm256_mul_ps(halves8(b + 2, rb), _mm256_set1_ps(half_at(yb + 2))));
    }
    _mm256_storeu_ps(out, acc);
}

/*
 * Q4_K / Q5_K (five: Q5_K's 5th bits) row x against nt Q8_K rows y_(tok+j): sum[j] as the
 * reference, the row's quants and scales unpacked once for the nt tokens; the min term from the
 * activations' bsums in one vpmaddwd.
 */
QT static ALWAYS_INLINE void
QS(qdot_k45)(const uint8_t *x, size_t bsize, bool five, int nt, const struct qact *a, uint32_t tok,
             size_t n, float *sum)
{
    const __m256i mask = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);

    for (int j = 0; j < nt; j++)
        sum[j] = 0.0f;
    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        const uint8_t *b = x + k * bsize;
        const uint8_t *qs = b + (five ? 48 : 16);
        int16_t sc[8];
        __m128i scv, mv;
        __m256i acc[QTOK];
        __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(b + 16)) : _mm256_setzero_si256();
        float d = half_at(b), dmin = half_at(b + 2);

        scales6(b + 4, &scv, &mv);
        _mm_storeu_si128((__m128i *)sc, scv);
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
                    ((const struct block_q8_k *)(a->q + (tok + j) * a->yrb) + k)->qs + 64 * c;
                __m256i plo = _mm256_maddubs_epi16(lo, _mm256_loadu_si256((const __m256i *)yq));
                __m256i phi =
                    _mm256_maddubs_epi16(hi, _mm256_loadu_si256((const __m256i *)(yq + 32)));

                acc[j] = DOT_S16S16(acc[j], plo, slo);
                acc[j] = DOT_S16S16(acc[j], phi, shi);
            }
        }
        /* the min of sub-block i against bsums 2i and 2i + 1 */
        __m256i mdup = _mm256_cvtepu8_epi16(
            _mm_shuffle_epi8(mv, _mm_setr_epi8(0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7)));

        for (int j = 0; j < nt; j++) {
            const struct block_q8_k *yb =
                (const struct block_q8_k *)(a->q + (tok + j) * a->yrb) + k;
            __m256i ms = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)yb->bsums), mdup);
            __m128i s2 = hsum2_i32(acc[j], ms);

            sum[j] +=
                yb->d * (d * (float)_mm_cvtsi128_si32(s2) - dmin * (float)_mm_extract_epi32(s2, 1));
        }
    }
}

/*
 * Q6_K row x against nt Q8_K rows y_(tok+j): quants + 32 as unsigned bytes, 32 * sum(sc bsums)
 * taken off each sum; the row's quants unpacked once for the nt tokens.
 */
QT static ALWAYS_INLINE void
QS(qdot_q6_k)(const uint8_t *x, int nt, const struct qact *a, uint32_t tok, size_t n, float *sum)
{
    const __m256i mask = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30);

    for (int j = 0; j < nt; j++)
        sum[j] = 0.0f;
    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        const struct block_q6_k *b = (const struct block_q6_k *)(x + k * sizeof(*b));
        __m256i acc[QTOK];

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
                        ((const struct block_q8_k *)(a->q + (tok + j) * a->yrb) + k)->qs + 128 * h +
                        32 * i;
                    __m256i p = _mm256_maddubs_epi16(q[i], _mm256_loadu_si256((const __m256i *)yq));

                    acc[j] = DOT_S16S16(acc[j], p, s);
                }
            }
        }
        __m256i scs = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        float d = half_at((const uint8_t *)&b->d);

        for (int j = 0; j < nt; j++) {
            const struct block_q8_k *yb =
                (const struct block_q8_k *)(a->q + (tok + j) * a->yrb) + k;
            __m256i bs = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)yb->bsums), scs);
            __m128i s2 = hsum2_i32(acc[j], bs);
            int32_t isum = _mm_cvtsi128_si32(s2) - 32 * _mm_extract_epi32(s2, 1);

            /* the reference subtracts its zero min term: x - 0 is x */
            sum[j] += yb->d * (d * (float)isum);
        }
    }
}

/* The kernels of shape qrows_fn: 4 rows x nt tokens per 32-element type, 8 rows x 1 token. */
#define QROWS32(sfx, type, blk)                                                                    \
    QT static void QS(qrows_##sfx##_8)(const uint8_t *w0, size_t rb, const struct qact *a,         \
                                       uint32_t tok, size_t n, float *out)                         \
    {                                                                                              \
        QS(qrows8_32)(type, sizeof(struct blk), w0, rb, a, tok, n, out);                           \
    }                                                                                              \
    QT static void QS(qrows_##sfx##_t1)(const void *const *w, const struct qact *a, uint32_t tok,  \
                                        size_t n, float *out, size_t os)                           \
    {                                                                                              \
        QS(qtile32)(type, sizeof(struct blk), 1, w, a, tok, n, out, os);                           \
    }                                                                                              \
    QT static void QS(qrows_##sfx##_t2)(const void *const *w, const struct qact *a, uint32_t tok,  \
                                        size_t n, float *out, size_t os)                           \
    {                                                                                              \
        QS(qtile32)(type, sizeof(struct blk), 2, w, a, tok, n, out, os);                           \
    }                                                                                              \
    QT static void QS(qrows_##sfx##_t3)(const void *const *w, const struct qact *a, uint32_t tok,  \
                                        size_t n, float *out, size_t os)                           \
    {                                                                                              \
        QS(qtile32)(type, sizeof(struct blk), 3, w, a, tok, n, out, os);                           \
    }                                                                                              \
    QT static void QS(qrows_##sfx##_t4)(const void *const *w, const struct qact *a, uint32_t tok,  \
                                        size_t n, float *out, size_t os)                           \
    {                                                                                              \
        QS(qtile32)(type, sizeof(struct blk), QTOK, w, a, tok, n, out, os);                        \
    }                                                                                              \
    static const struct qkern QS(qkern_##sfx) = {QS(qrows_##sfx##_8),                              \
                                                 {NULL, QS(qrows_##sfx##_t1),                      \
                                                  QS(qrows_##sfx##_t2), QS(qrows_##sfx##_t3),      \
                                                  QS(qrows_##sfx##_t4)}};
QROWS32(q8_0, TYPE_Q8_0, block_q8_0)
QROWS32(q4_0, TYPE_Q4_0, block_q4_0)
QROWS32(q4_1, TYPE_Q4_1, block_q4_1)
QROWS32(q5_0, TYPE_Q5_0, block_q5_0)
QROWS32(q5_1, TYPE_Q5_1, block_q5_1)
#undef QROWS32

/* The K types: per row (the super-block's float part is per row anyway), nt tokens at once. */
#define QROWSK(sfx, nt, CALL)                                                                      \
    QT static void QS(qrows_##sfx##_t##nt)(const void *const *w, const struct qact *a,             \
                                           uint32_t tok, size_t n, float *out, size_t os)          \
    {                                                                                              \
        for (int i = 0; i < KERNEL_TILE_ROWS; i++) {                                               \
            float s[QTOK];                                                                         \
            CALL;                                                                                  \
            for (int j = 0; j < (nt); j++)                                                         \
                out[j * os + i] = s[j];                                                            \
        }                                                                                          \
    }
#define QROWS_K45(sfx, blk, five)                                                                  \
    QROWSK(sfx, 1, QS(qdot_k45)(w[i], sizeof(struct blk), five, 1, a, tok, n, s))                  \
    QROWSK(sfx, 2, QS(qdot_k45)(w[i], sizeof(struct blk), five, 2, a, tok, n, s))                  \
    QROWSK(sfx, 3, QS(qdot_k45)(w[i], sizeof(struct blk), five, 3, a, tok, n, s))                  \
    QROWSK(sfx, 4, QS(qdot_k45)(w[i], sizeof(struct blk), five, QTOK, a, tok, n, s))               \
    static const struct qkern QS(qkern_##sfx) = {NULL,                                             \
                                                 {NULL, QS(qrows_##sfx##_t1),                      \
                                                  QS(qrows_##sfx##_t2), QS(qrows_##sfx##_t3),      \
                                                  QS(qrows_##sfx##_t4)}};
QROWS_K45(q4_k, block_q4_k, false)
QROWS_K45(q5_k, block_q5_k, true)
QROWSK(q6_k, 1, QS(qdot_q6_k)(w[i], 1, a, tok, n, s))
QROWSK(q6_k, 2, QS(qdot_q6_k)(w[i], 2, a, tok, n, s))
QROWSK(q6_k, 3, QS(qdot_q6_k)(w[i], 3, a, tok, n, s))
QROWSK(q6_k, 4, QS(qdot_q6_k)(w[i], QTOK, a, tok, n, s))
static const struct qkern QS(qkern_q6_k) = {
    NULL, {NULL, QS(qrows_q6_k_t1), QS(qrows_q6_k_t2), QS(qrows_q6_k_t3), QS(qrows_q6_k_t4)}};
#undef QROWS_K45
#undef QROWSK

/* This level's kernels of a quantized type, or NULL (the type runs its reference vec_dot). */
static const struct qkern *
QS(qkern_get)(uint32_t type)
{
    switch (type) {
    case TYPE_Q8_0:
        return &QS(qkern_q8_0);
    case TYPE_Q4_0:
        return &QS(qkern_q4_0);
    case TYPE_Q4_1:
        return &QS(qkern_q4_1);
    case TYPE_Q5_0:
        return &QS(qkern_q5_0);
    case TYPE_Q5_1:
        return &QS(qkern_q5_1);
    case TYPE_Q4_K:
        return &QS(qkern_q4_k);
    case TYPE_Q5_K:
        return &QS(qkern_q5_k);
    case TYPE_Q6_K:
        return &QS(qkern_q6_k);
    default:
        return NULL;
    }
}

#undef DOT_U8S8
#undef DOT_S16S16
