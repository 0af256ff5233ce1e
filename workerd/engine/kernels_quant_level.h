/*
 * kernels_quant_level.h: the body of one level's quantized kernels, included by kernels_quant.c
 * once per level with QT (the functions' target attribute), QS(name) (the level's suffix) and
 * QVNNI (1: vpdpbusd / vpdpwssd, 0: their AVX2 forms vpmaddubsw / vpmaddwd + vpaddd) defined.
 * Defines QS(qkerns)[type], the level's struct qkern of each type. Every integer sum is exact
 * whatever the instructions, and the float operations are the reference's, in its order: the same
 * bits at every level. Not a header of its own: nothing else includes it.
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

        if ((k * bsize) % 64 < bsize)     /* the block starts a new line of the rows */
            for (int i = 0; i < 8; i++) { /* this row ahead, the next tile's into L2 */
                _mm_prefetch((const char *)b + i * rb + QPREFETCH, _MM_HINT_T0);
                _mm_prefetch((const char *)b + (i + 8) * rb, _MM_HINT_T1);
            }
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

#if QAVX512
/*
 * Decode at 512 bits, Q4_0: token tok's activations laid out for wide16_q4_0() at dst: per group
 * of 4 blocks (128 bytes), lane j of the first 64 bytes block 4g + j's quants 0..15, of the next
 * 64 its quants 16..31 (zeros past the last block); then 8 x each block's quant sum as int32 (the
 * bias of the unsigned weights). Returns the bytes written (at most 40 per block + 128).
 */
QT static size_t
QS(qprep_q4_0)(const struct qact *a, uint32_t tok, size_t n, uint8_t *dst)
{
    size_t nb = n / 32, ng = (nb + 3) / 4;
    int32_t *bias = (int32_t *)(dst + 128 * ng);

    memset(dst, 0, 128 * ng);
    for (size_t k = 0; k < nb; k++) {
        const int8_t *q = ((const struct block_q8_0 *)(a->q + tok * a->yrb) + k)->qs;

        memcpy(dst + 128 * (k / 4) + 16 * (k % 4), q, 16);
        memcpy(dst + 128 * (k / 4) + 64 + 16 * (k % 4), q + 16, 16);
        bias[k] = 8 * a->sum[tok * a->nb + k];
    }
    return 128 * ng + 4 * nb;
}

/*
 * The exact integer sums of 16 rows x 4 blocks (nbv < 4: the first nbv) of Q4_0 at p (rows rb
 * bytes apart) against the group's activations ylo, yhi (qprep_q4_0()): v[j] lane i is row i's
 * block j (its unsigned quants' sum, the bias not yet taken off); *dlo, *dhi the rows' d as
 * halves (word 16 j + i: blocks 0, 1 in *dlo, 2, 3 in *dhi). Each row is one 64-byte load and the
 * 8 bytes after it, its quants gathered by one vpermt2w (the 18-byte blocks are 9 words); the
 * 16 rows' 4 partial sums per block reduced and transposed by unpacks and lane shuffles.
 */
QT static ALWAYS_INLINE void
QS(group16_q4_0)(const uint8_t *p, size_t rb, int nbv, __m512i ylo, __m512i yhi, __m512i *v,
                 __m512i *dlo, __m512i *dhi)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    /* word w of the quants: block w / 8's word 1 + w % 8; past word 31 from the 8 bytes after */
    const __m512i qidx =
        _mm512_set_epi16(35, 34, 33, 32, 31, 30, 29, 28, 26, 25, 24, 23, 22, 21, 20, 19, 17, 16, 15,
                         14, 13, 12, 11, 10, 8, 7, 6, 5, 4, 3, 2, 1);
    const __m512i didx_lo = _mm512_set_epi16(9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 0, 0,
                                             0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i didx_hi =
        _mm512_set_epi16(27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 27, 18, 18, 18,
                         18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18, 18);
    __m512i s[16], t[8], u[4], x[4];

#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) {
        const uint8_t *r = p + i * rb;
        __m512i l0, l1 = _mm512_setzero_si512();

        if (nbv == 4) {
            l0 = _mm512_loadu_si512(r);
            l1 = _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)(r + 64)));
        } else {
            l0 = _mm512_maskz_loadu_epi16(((__mmask32)1 << (9 * nbv)) - 1, r);
        }
        /* this row ahead, and the next tile's row into L2 (the hardware prefetchers follow
         * neither 16 interleaved streams nor a new tile soon enough) */
        _mm_prefetch((const char *)r + QPREFETCH16, _MM_HINT_T0);
        _mm_prefetch((const char *)r + 16 * rb, _MM_HINT_T1);
        __m512i q = _mm512_permutex2var_epi16(l0, qidx, l1);
        *dlo = _mm512_mask_permutexvar_epi16(*dlo, (__mmask32)0x00010001u << i, didx_lo, l0);
        *dhi = _mm512_mask_permutexvar_epi16(*dhi, (__mmask32)0x00010001u << i, didx_hi, l0);
        s[i] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_and_si512(q, m4), ylo);
        s[i] = _mm512_dpbusd_epi32(s[i], _mm512_and_si512(_mm512_srli_epi16(q, 4), m4), yhi);
    }
    /* per 128-bit lane (block): rows 2i, 2i + 1's partials pairwise, then 4 rows' sums */
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++)
        t[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2 * i], s[2 * i + 1]),
                                _mm512_unpackhi_epi32(s[2 * i], s[2 * i + 1]));
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi64(t[2 * i], t[2 * i + 1]),
                                _mm512_unpackhi_epi64(t[2 * i], t[2 * i + 1]));
    /* u[i] lane j: rows 4i..4i+3 of block j; v[j] lane i: the same */
    x[0] = _mm512_shuffle_i32x4(u[0], u[1], 0x44);
    x[1] = _mm512_shuffle_i32x4(u[0], u[1], 0xee);
    x[2] = _mm512_shuffle_i32x4(u[2], u[3], 0x44);
    x[3] = _mm512_shuffle_i32x4(u[2], u[3], 0xee);
    v[0] = _mm512_shuffle_i32x4(x[0], x[2], 0x88);
    v[1] = _mm512_shuffle_i32x4(x[0], x[2], 0xdd);
    v[2] = _mm512_shuffle_i32x4(x[1], x[3], 0x88);
    v[3] = _mm512_shuffle_i32x4(x[1], x[3], 0xdd);
}

/* acc += (d_x d_y) (v[j] - bias) per block j < nbv of a group from group16_q4_0(), in block
 * order: the reference's float part for 16 rows. */
QT static ALWAYS_INLINE __m512
QS(float16_q4_0)(__m512 acc, int nbv, const __m512i *v, __m512i dlo, __m512i dhi,
                 const int32_t *bias, const float *dy)
{
#pragma GCC unroll 4
    for (int j = 0; j < nbv; j++) {
        __m512i is = _mm512_sub_epi32(v[j], _mm512_set1_epi32(bias[j]));
        __m256i dh = _mm512_extracti64x4_epi64(j < 2 ? dlo : dhi, 0);

        if (j % 2 == 1)
            dh = _mm512_extracti64x4_epi64(j < 2 ? dlo : dhi, 1);
        acc = _mm512_add_ps(acc,
                            _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtph_ps(dh), _mm512_set1_ps(dy[j])),
                                          _mm512_cvtepi32_ps(is)));
    }
    return acc;
}

/*
 * Decode (and batched decode): y[t*ys + i] = w0[i*rb] . y_t for 16 rows of Q4_0 and nt tokens,
 * their activations laid out by qprep_q4_0() at a->dec, a->dec_stride apart: steps of 4 blocks
 * of the 16 rows in 512-bit registers (group16_q4_0()), token after token (the rows come from
 * memory once, then from L1), the float part in the reference's order for 16 rows at once.
 */
QT static ALWAYS_INLINE void
QS(wide16_q4_0)(int nt, const uint8_t *w0, size_t rb, const struct qact *a, size_t n, float *y,
                size_t ys)
{
    size_t nb = n / 32, k = 0;
    const size_t bo = 128 * ((nb + 3) / 4); /* the bias after the groups */
    __m512 acc[QTOK];
    __m512i v[4];

    for (int t = 0; t < nt; t++)
        acc[t] = _mm512_setzero_ps();
    for (; k + 4 <= nb; k += 4)
        for (int t = 0; t < nt; t++) {
            const uint8_t *dec = a->dec + t * a->dec_stride;
            __m512i dlo = _mm512_setzero_si512(), dhi = dlo;

            QS(group16_q4_0)
            (w0 + k * 18, rb, 4, _mm512_loadu_si512(dec + 32 * k),
             _mm512_loadu_si512(dec + 32 * k + 64), v, &dlo, &dhi);
            acc[t] = QS(float16_q4_0)(acc[t], 4, v, dlo, dhi, (const int32_t *)(dec + bo) + k,
                                      a->dy + t * a->nb + k);
        }
    for (int t = 0; k < nb && t < nt; t++) { /* the last blocks, fewer than 4 */
        const uint8_t *dec = a->dec + t * a->dec_stride;
        __m512i dlo = _mm512_setzero_si512(), dhi = dlo;

        QS(group16_q4_0)
        (w0 + k * 18, rb, (int)(nb - k), _mm512_loadu_si512(dec + 32 * k),
         _mm512_loadu_si512(dec + 32 * k + 64), v, &dlo, &dhi);
        acc[t] = QS(float16_q4_0)(acc[t], (int)(nb - k), v, dlo, dhi,
                                  (const int32_t *)(dec + bo) + k, a->dy + t * a->nb + k);
    }
    for (int t = 0; t < nt; t++)
        _mm512_storeu_ps(y + t * ys, acc[t]);
}

/*
 * Decode at 512 bits, Q4_K: token tok's Q8_K quants laid out for wide8_q4_k() at dst, 256 bytes
 * per super-block: the quants of sub-blocks 0 and 2, 1 and 3, 4 and 6, 5 and 7 (32 bytes each),
 * as a row's 64 quant bytes c = 0, 1 and c = 2, 3 hold them in their low and high nibbles.
 * Returns the bytes written.
 */
QT static size_t
QS(qprep_q4_k)(const struct qact *a, uint32_t tok, size_t n, uint8_t *dst)
{
    static const int order[8] = {0, 2, 1, 3, 4, 6, 5, 7};

    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        const int8_t *q = ((const struct block_q8_k *)(a->q + tok * a->yrb) + k)->qs;

        for (int j = 0; j < 8; j++)
            memcpy(dst + 256 * k + 32 * j, q + 32 * order[j], 32);
    }
    return 256 * (n / QUANT_QK_K);
}

/*
 * Super-block k of 8 rows of Q4_K at w0 (rb bytes apart) against token t (its quants laid out
 * by qprep_q4_k() at y): the rows' terms of the reference's float sum. Per row: its 128 quant
 * bytes in two 512-bit loads, the nibbles times the activations by vpmaddubsw, times the
 * sub-blocks' scales (decoded in general registers, broadcast to their halves by vpermw) by
 * vpdpwssd into one accumulator, the mins against the activations' sub-block sums by vpmaddwd
 * beside it; the 8 rows' sums reduced together by unpacks and lane shuffles, d and dmin gathered
 * by masked broadcasts.
 */
QT static ALWAYS_INLINE __m256
QS(sb8_q4_k)(const uint8_t *w0, size_t rb, size_t k, const struct qact *a, uint32_t t,
             const uint8_t *y)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i ia = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                        0x0002000200020002, 0, 0, 0, 0);
    const __m512i one = _mm512_set1_epi16(1), four = _mm512_set1_epi16(4);
    const __m512i ya = _mm512_loadu_si512(y), yb = _mm512_loadu_si512(y + 64);
    const __m512i yc = _mm512_loadu_si512(y + 128), yd = _mm512_loadu_si512(y + 192);
    const __m128i bs = _mm_loadu_si128((const __m128i *)(a->sum + t * a->nb + 8 * k));
    __m512i s[8], u[4];
    __m256i hdr = _mm256_setzero_si256();

#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        const uint8_t *b = w0 + i * rb + k * 144;
        uint32_t a0, b0, c0;

        memcpy(&a0, b + 4, 4);
        memcpy(&b0, b + 8, 4);
        memcpy(&c0, b + 12, 4);
        uint64_t sc =
            (a0 & 0x3f3f3f3fu) | (uint64_t)((c0 & 0x0f0f0f0fu) | ((a0 >> 2) & 0x30303030u)) << 32;
        uint64_t mn = (b0 & 0x3f3f3f3fu) |
                      (uint64_t)(((c0 >> 4) & 0x0f0f0f0fu) | ((b0 >> 2) & 0x30303030u)) << 32;
        __m512i sv = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)sc)));
        __m512i z0 = _mm512_loadu_si512(b + 16), z1 = _mm512_loadu_si512(b + 80);
        __m512i p;

        for (int l = 0; l < 192; l += 64) { /* this row ahead, the next tile's row into L2 */
            _mm_prefetch((const char *)b + QPREFETCH16 + l, _MM_HINT_T0);
            _mm_prefetch((const char *)b + 8 * rb + l, _MM_HINT_T1);
        }
        hdr = _mm256_mask_set1_epi32(hdr, (__mmask8)(1u << i), i32_at(b));
        /* scale words: sub-blocks (0, 2), (1, 3), (4, 6), (5, 7) in the two halves */
        p = _mm512_maddubs_epi16(_mm512_and_si512(z0, m4), ya);
        s[i] = _mm512_dpwssd_epi32(_mm512_setzero_si512(), p, _mm512_permutexvar_epi16(ia, sv));
        p = _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(z0, 4), m4), yb);
        s[i] =
            _mm512_dpwssd_epi32(s[i], p, _mm512_permutexvar_epi16(_mm512_add_epi16(ia, one), sv));
        p = _mm512_maddubs_epi16(_mm512_and_si512(z1, m4), yc);
        s[i] =
            _mm512_dpwssd_epi32(s[i], p, _mm512_permutexvar_epi16(_mm512_add_epi16(ia, four), sv));
        p = _mm512_maddubs_epi16(_mm512_and_si512(_mm512_srli_epi16(z1, 4), m4), yd);
        s[i] = _mm512_dpwssd_epi32(
            s[i], p, _mm512_permutexvar_epi16(_mm512_add_epi16(ia, _mm512_set1_epi16(5)), sv));
        /* isum partials in lanes 0, 1, the mins' in lane 2 */
        __m256i h =
            _mm256_add_epi32(_mm512_castsi512_si256(s[i]), _mm512_extracti64x4_epi64(s[i], 1));
        __m128i m = _mm_madd_epi16(_mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)mn)), bs);
        s[i] = _mm512_inserti64x4(_mm512_castsi256_si512(h), _mm256_zextsi128_si256(m), 1);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++)
        u[i] = _mm512_add_epi32(_mm512_unpacklo_epi32(s[2 * i], s[2 * i + 1]),
                                _mm512_unpackhi_epi32(s[2 * i], s[2 * i + 1]));
    u[0] = _mm512_add_epi32(_mm512_unpacklo_epi64(u[0], u[1]), _mm512_unpackhi_epi64(u[0], u[1]));
    u[1] = _mm512_add_epi32(_mm512_unpacklo_epi64(u[2], u[3]), _mm512_unpackhi_epi64(u[2], u[3]));
    /* u[h] lane l: rows 4h..4h+3 of lane l; then [isum 0-3, msum 0-3, isum 4-7, msum 4-7] */
    __m512i z = _mm512_add_epi32(_mm512_shuffle_i32x4(u[0], u[1], 0x88),
                                 _mm512_shuffle_i32x4(u[0], u[1], 0xdd));
    z = _mm512_shuffle_i32x4(z, z, 0xd8);
    __m256 fi = _mm256_cvtepi32_ps(_mm512_castsi512_si256(z));
    __m256 fm = _mm256_cvtepi32_ps(_mm512_extracti64x4_epi64(z, 1));
    __m256 d = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(hdr));
    __m256 dmin = _mm256_cvtph_ps(_mm256_cvtepi32_epi16(_mm256_srli_epi32(hdr, 16)));
    float ydk = ((const struct block_q8_k *)(a->q + t * a->yrb) + k)->d;

    return _mm256_mul_ps(_mm256_set1_ps(ydk),
                         _mm256_sub_ps(_mm256_mul_ps(d, fi), _mm256_mul_ps(dmin, fm)));
}

/*
 * Super-block k of 8 rows of Q6_K at w0 (rb bytes apart) against token t (the Q8_K quants read
 * as they are: a row's 64 bytes of ql at 64 h hold chunks 4h, 4h + 1 in their low nibbles and
 * 4h + 2, 4h + 3 in their high ones, the token's 256 quants in the same order): the rows' terms
 * of the reference's float sum. Per row: the quants + 32 as unsigned bytes (ql nibbles, the qh
 * bits shifted into bits 4-5 by per-half word shifts), by vpmaddubsw against the activations,
 * times the sub-block scales (broadcast by vpermw) by vpdpwssd; 32 x sum(scale x bsum) off; the
 * 8 rows' sums reduced together, d gathered by masked broadcasts.
 */
QT static ALWAYS_INLINE __m256
QS(sb8_q6_k)(const uint8_t *w0, size_t rb, size_t k, const struct qact *a, uint32_t t)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    /* word shifts: the low half's chunk takes qh bits 0-1 (left 4) or 4-5 (none), the high
     * half's bits 2-3 (left 2) or 6-7 (right 2) */
    const __m512i shl = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                         0x0002000200020002, 0x0004000400040004, 0x0004000400040004,
                                         0x0004000400040004, 0x0004000400040004);
    const __m512i shr = _mm512_set_epi64(0x0002000200020002, 0x0002000200020002, 0x0002000200020002,
                                         0x0002000200020002, 0, 0, 0, 0);
    /* word w of a 64-element product: sub-block w / 8 of its 4 */
    const __m512i sidx =
        _mm512_set_epi64(0x0003000300030003, 0x0003000300030003, 0x0002000200020002,
                         0x0002000200020002, 0x0001000100010001, 0x0001000100010001, 0, 0);
    const struct block_q8_k *yb = (const struct block_q8_k *)(a->q + t * a->yrb) + k;
    const __m256i bs = _mm256_loadu_si256((const __m256i *)yb->bsums);
    __m256i s[8];
    __m128i dh = _mm_setzero_si128();

#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        const uint8_t *b = w0 + i * rb + k * sizeof(struct block_q6_k);
        __m256i sc = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(b + 192)));
        __m512i scz = _mm512_castsi256_si512(sc), acc_i = _mm512_setzero_si512();

        for (int l = 0; l < 256; l += 64) { /* this row ahead, the next tile's row into L2 */
            _mm_prefetch((const char *)b + QPREFETCH16 + l, _MM_HINT_T0);
            _mm_prefetch((const char *)b + 8 * rb + l, _MM_HINT_T1);
        }
        dh = _mm_mask_set1_epi16(dh, (__mmask8)(1u << i), u16_at(b + 208));
#pragma GCC unroll 2
        for (int h = 0; h < 2; h++) {
            __m512i l = _mm512_loadu_si512(b + 64 * h);
            __m512i qh =
                _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b + 128 + 32 * h)));
            __m512i lo = _mm512_ternarylogic_epi32(_mm512_and_si512(l, m4),
                                                   _mm512_sllv_epi16(qh, shl), m30, 0xf8);
            __m512i hi = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                                   _mm512_srlv_epi16(qh, shr), m30, 0xf8);
            __m512i ilo = _mm512_add_epi16(sidx, _mm512_set1_epi16((short)(8 * h)));
            __m512i ihi = _mm512_add_epi16(sidx, _mm512_set1_epi16((short)(8 * h + 4)));

            acc_i = _mm512_dpwssd_epi32(
                acc_i, _mm512_maddubs_epi16(lo, _mm512_loadu_si512(yb->qs + 128 * h)),
                _mm512_permutexvar_epi16(ilo, scz));
            acc_i = _mm512_dpwssd_epi32(
                acc_i, _mm512_maddubs_epi16(hi, _mm512_loadu_si512(yb->qs + 128 * h + 64)),
                _mm512_permutexvar_epi16(ihi, scz));
        }
        s[i] = _mm256_sub_epi32(
            _mm256_add_epi32(_mm512_castsi512_si256(acc_i), _mm512_extracti64x4_epi64(acc_i, 1)),
            _mm256_slli_epi32(_mm256_madd_epi16(sc, bs), 5));
    }
    __m256i is = hsum8_i32(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);

    /* the reference subtracts its zero min term: x - 0 is x */
    return _mm256_mul_ps(_mm256_set1_ps(yb->d),
                         _mm256_mul_ps(_mm256_cvtph_ps(dh), _mm256_cvtepi32_ps(is)));
}

/*
 * Decode (and batched decode): y[t*ys + i] = w0[i*rb] . y_t for 8 rows of a K type (six: Q6_K,
 * else Q4_K, its activations laid out by qprep_q4_k() at a->dec, a->dec_stride apart) and nt
 * tokens: per super-block, token after token (the rows come from memory once, then from L1),
 * sum += the 8 rows' terms.
 */
QT static ALWAYS_INLINE void
QS(wide8_k)(bool six, int nt, const uint8_t *w0, size_t rb, const struct qact *a, size_t n,
            float *y, size_t ys)
{
    __m256 acc[QTOK];

    for (int t = 0; t < nt; t++)
        acc[t] = _mm256_setzero_ps();
    for (size_t k = 0; k < n / QUANT_QK_K; k++)
        for (int t = 0; t < nt; t++)
            acc[t] =
                _mm256_add_ps(acc[t], six ? QS(sb8_q6_k)(w0, rb, k, a, (uint32_t)t)
                                          : QS(sb8_q4_k)(w0, rb, k, a, (uint32_t)t,
                                                         a->dec + t * a->dec_stride + 256 * k));
    for (int t = 0; t < nt; t++)
        _mm256_storeu_ps(y + t * ys, acc[t]);
}

#define QWIDE(name, nt, call)                                                                      \
    QT static void QS(name##_##nt)(const uint8_t *w0, size_t rb, const struct qact *a, size_t n,   \
                                   float *y, size_t ys)                                            \
    {                                                                                              \
        call;                                                                                      \
    }
QWIDE(wide_q4_0, 1, QS(wide16_q4_0)(1, w0, rb, a, n, y, ys))
QWIDE(wide_q4_0, 2, QS(wide16_q4_0)(2, w0, rb, a, n, y, ys))
QWIDE(wide_q4_0, 3, QS(wide16_q4_0)(3, w0, rb, a, n, y, ys))
QWIDE(wide_q4_0, 4, QS(wide16_q4_0)(QTOK, w0, rb, a, n, y, ys))
QWIDE(wide_q4_k, 1, QS(wide8_k)(false, 1, w0, rb, a, n, y, ys))
QWIDE(wide_q4_k, 2, QS(wide8_k)(false, 2, w0, rb, a, n, y, ys))
QWIDE(wide_q4_k, 3, QS(wide8_k)(false, 3, w0, rb, a, n, y, ys))
QWIDE(wide_q4_k, 4, QS(wide8_k)(false, QTOK, w0, rb, a, n, y, ys))
QWIDE(wide_q6_k, 1, QS(wide8_k)(true, 1, w0, rb, a, n, y, ys))
QWIDE(wide_q6_k, 2, QS(wide8_k)(true, 2, w0, rb, a, n, y, ys))
QWIDE(wide_q6_k, 3, QS(wide8_k)(true, 3, w0, rb, a, n, y, ys))
QWIDE(wide_q6_k, 4, QS(wide8_k)(true, QTOK, w0, rb, a, n, y, ys))
#undef QWIDE
#define QDEC_YES(sfx)                                                                              \
    QS(qprep_##sfx),                                                                               \
        {NULL, QS(wide_##sfx##_1), QS(wide_##sfx##_2), QS(wide_##sfx##_3), QS(wide_##sfx##_4)},    \
        16, QWIDE_TOK
#define QDEC_K(sfx)                                                                                \
    QS(qprep_##sfx),                                                                               \
        {NULL, QS(wide_##sfx##_1), QS(wide_##sfx##_2), QS(wide_##sfx##_3), QS(wide_##sfx##_4)}, 8, \
        QWIDE_TOK
#define QDEC_Q6K                                                                                   \
    NULL, {NULL, QS(wide_q6_k_1), QS(wide_q6_k_2), QS(wide_q6_k_3), QS(wide_q6_k_4)}, 8, QWIDE_TOK
#else
#define QDEC_YES(sfx) NULL, {NULL}, 0, 0
#define QDEC_K(sfx)   NULL, {NULL}, 0, 0
#define QDEC_Q6K      NULL, {NULL}, 0, 0
#endif
#define QDEC_NO(sfx) NULL, {NULL}, 0, 0

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

        for (size_t l = 0; l < bsize; l += 64)
            _mm_prefetch((const char *)b + QPREFETCH + l, _MM_HINT_T0);
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

        for (size_t l = 0; l < sizeof(*b); l += 64)
            _mm_prefetch((const char *)b + QPREFETCH + l, _MM_HINT_T0);
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

/*
 * Packs 8 nh rows (rb bytes apart) of a 32-element type for qtile8p() (nh = 1) or qtile16p() (nh
 * = 2): per block, the rows' unsigned quants transposed so that 4-byte group g of the rows is one
 * vector of 32 nh bytes (lane i: row i), then the rows' d and (with a min) m as floats;
 * QPACK_BLOCK (nh = 1) or QPACK16 (nh = 2) bytes per block.
 */
QT static ALWAYS_INLINE void
QS(qpack8)(uint32_t type, size_t bsize, int nh, const uint8_t *w0, size_t rb, size_t n,
           uint8_t *dst)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;

    for (size_t k = 0; k < n / 32; k++) {
        const uint8_t *b = w0 + k * bsize;
        uint8_t *p = dst + k * (size_t)(nh == 1 ? QPACK_BLOCK : QPACK16);

        for (int h = 0; h < nh; h++) {
            __m256i q[8];

            for (int i = 0; i < 8; i++)
                q[i] = QS(unpack32)(type, b + (8 * h + i) * rb).u;
            transpose8_store(q, p + 32 * h, 32 * (size_t)nh);
            _mm256_storeu_ps((float *)(p + 256 * nh + 32 * h), halves8(b + 8 * h * rb, rb));
            if (with_min)
                _mm256_storeu_ps((float *)(p + 288 * nh + 32 * h), halves8(b + 8 * h * rb + 2, rb));
        }
    }
}

/*
 * s<j> += the packed groups g0 .. g1 - 1 (32 bytes each at p + 32 g: lane i row i's 4 bytes)
 * against token j's 4 bytes at y + j * yrb + 4 g, broadcast, for j < nt.
 */
QT static ALWAYS_INLINE void
QS(dot_groups)(int nt, const uint8_t *p, const uint8_t *y, size_t yrb, int g0, int g1, __m256i *s0,
               __m256i *s1, __m256i *s2, __m256i *s3)
{
    for (int g = g0; g < g1; g++) {
        __m256i wv = _mm256_loadu_si256((const __m256i *)(p + 32 * g));

        *s0 = DOT_U8S8(*s0, wv, _mm256_set1_epi32(i32_at(y + 4 * g)));
        if (nt > 1)
            *s1 = DOT_U8S8(*s1, wv, _mm256_set1_epi32(i32_at(y + yrb + 4 * g)));
        if (nt > 2)
            *s2 = DOT_U8S8(*s2, wv, _mm256_set1_epi32(i32_at(y + 2 * yrb + 4 * g)));
        if (nt > 3)
            *s3 = DOT_U8S8(*s3, wv, _mm256_set1_epi32(i32_at(y + 3 * yrb + 4 * g)));
    }
}

/*
 * Prefill: y[j*ys + i] = row i . y_(tok+j) for 8 rows packed by qpack8() and nt tokens. Per
 * block, lane i of the sums of 4 products (group g of row i against group g of the token,
 * broadcast) is row i's exact block sum, with no horizontal sums; the float part as the
 * reference's, 8 rows at once.
 */
QT static ALWAYS_INLINE void
QS(qtile8p)(uint32_t type, int nt, const uint8_t *p, const struct qact *a, uint32_t tok, size_t n,
            float *y, size_t ys)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;
    int32_t bias = qbias32(type, QVNNI);
    size_t ybs = with_min ? sizeof(struct block_q8_1) : sizeof(struct block_q8_0);
    const uint8_t *yq = a->q + tok * a->yrb + (with_min ? 4 : 2);
    __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;

    for (size_t k = 0; k < n / 32; k++) {
        const uint8_t *pk = p + k * QPACK_BLOCK, *yk = yq + k * ybs;
        __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;

        QS(dot_groups)(nt, pk, yk, a->yrb, 0, 8, &s0, &s1, &s2, &s3);
        __m256 dx = _mm256_loadu_ps((const float *)(pk + 256));
        __m256 mx = with_min ? _mm256_loadu_ps((const float *)(pk + 288)) : _mm256_setzero_ps();
        size_t yi = tok * a->nb + k;

#define QTILE8P_TOKEN(j, s, f)                                                                     \
    if (nt > (j)) {                                                                                \
        size_t yj = yi + (j)*a->nb;                                                                \
        if (bias != 0)                                                                             \
            s = _mm256_sub_epi32(s, _mm256_set1_epi32(bias * a->sum[yj]));                         \
        f = _mm256_add_ps(f, _mm256_mul_ps(_mm256_mul_ps(dx, _mm256_set1_ps(a->dy[yj])),           \
                                           _mm256_cvtepi32_ps(s)));                                \
        if (with_min)                                                                              \
            f = _mm256_add_ps(f, _mm256_mul_ps(mx, _mm256_set1_ps(a->sy[yj])));                    \
    }
        QTILE8P_TOKEN(0, s0, f0)
        QTILE8P_TOKEN(1, s1, f1)
        QTILE8P_TOKEN(2, s2, f2)
        QTILE8P_TOKEN(3, s3, f3)
#undef QTILE8P_TOKEN
    }
    store_tokens(nt, y, ys, f0, f1, f2, f3);
}

#if QAVX512
/*
 * Prefill at 512 bits: y[j*ys + i] = row i . y_(tok+j) for 16 rows packed by qpack8() (nh = 2) and
 * nt <= QTOK16 tokens from tok (a multiple of QTOK16) laid out by qgroup() at a->grp (and
 * a->pf_lines lines from a->pf fetched into L2 on the way, one per block): as qtile8p(), with twice
 * the rows per vector and twice the tokens per packed group loaded, every operand of a block at a
 * fixed offset; each token's block sum starts at -bias x its quants' sum, exact.
 */
QT static ALWAYS_INLINE void
QS(qtile16p)(uint32_t type, int nt, const uint8_t *p, const struct qact *a, uint32_t tok, size_t n,
             float *y, size_t ys)
{
    bool with_min = type == TYPE_Q4_1 || type == TYPE_Q5_1;
    const uint8_t *yg = a->grp + tok / QTOK16 * a->nb * QGRP_BLOCK;
    __m512 f[QTOK16];

#pragma GCC unroll 8
    for (int j = 0; j < nt; j++)
        f[j] = _mm512_setzero_ps();
    for (size_t k = 0; k < n / 32; k++) {
        const uint8_t *pk = p + k * QPACK16, *yk = yg + k * QGRP_BLOCK;
        __m512i s[QTOK16];

        if (k < a->pf_lines)
            _mm_prefetch(a->pf + 64 * k, _MM_HINT_T1);
#pragma GCC unroll 8
        for (int j = 0; j < nt; j++)
            s[j] = _mm512_set1_epi32(i32_at(yk + 32 * QTOK16 + 4 * j));
#pragma GCC unroll 8
        for (int g = 0; g < 8; g++) {
            __m512i wv = _mm512_loadu_si512((const void *)(pk + 64 * g));

#pragma GCC unroll 8
            for (int j = 0; j < nt; j++)
                s[j] =
                    _mm512_dpbusd_epi32(s[j], wv, _mm512_set1_epi32(i32_at(yk + 32 * j + 4 * g)));
        }
        __m512 dx = _mm512_loadu_ps((const float *)(pk + 512));

#pragma GCC unroll 8
        for (int j = 0; j < nt; j++) {
            const float *dy = (const float *)(yk + 36 * QTOK16), *sy = dy + QTOK16;

            f[j] = _mm512_add_ps(f[j], _mm512_mul_ps(_mm512_mul_ps(dx, _mm512_set1_ps(dy[j])),
                                                     _mm512_cvtepi32_ps(s[j])));
            if (with_min)
                f[j] = _mm512_add_ps(f[j], _mm512_mul_ps(_mm512_loadu_ps((const float *)(pk + 576)),
                                                         _mm512_set1_ps(sy[j])));
        }
    }
#pragma GCC unroll 8
    for (int j = 0; j < nt; j++)
        _mm512_storeu_ps(y + j * ys, f[j]);
}
#endif

/*
 * Packs 8 rows (rb bytes apart) of a K type for qtile8p_k(): per super-block, the rows' quants as
 * unsigned bytes (q + kq_offset()) transposed so that elements 4G..4G+3 of the 8 rows are one
 * vector (lane i: row i, G = 0..63); then per sub-block the rows' scales as int32; per pair of
 * sub-blocks the rows' mins (the types with one) or scales (the others) as two int16; d, dmin.
 */
QT static ALWAYS_INLINE void
QS(qpack8_k)(uint32_t type, size_t bsize, const uint8_t *w0, size_t rb, size_t n, uint8_t *dst)
{
    int nsub = kq_nsub(type);

    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        uint8_t *p = dst + k * QPACK_K;
        int32_t *sc = (int32_t *)(p + 2048), *pairs = sc + 8 * nsub;
        float *d = (float *)(pairs + 4 * nsub), *dmin = d + 8;
        __m256i q[8];

        for (int i = 0; i < 8; i++) {
            int16_t s[16], m[16];
            const int16_t *v = kq_offset(type) != 0 ? s : m;

            for (size_t l = 0; l < bsize; l += 64) { /* ahead, and the next tile's row */
                _mm_prefetch((const char *)w0 + i * rb + k * bsize + QPREFETCH + l, _MM_HINT_T0);
                _mm_prefetch((const char *)w0 + (i + 8) * rb + k * bsize + l, _MM_HINT_T1);
            }
            kq_scales(type, w0 + i * rb + k * bsize, s, m, &d[i], &dmin[i]);
            for (int j = 0; j < nsub; j++)
                sc[8 * j + i] = s[j];
            for (int j = 0; j < nsub / 2; j++)
                pairs[8 * j + i] = (int32_t)((uint32_t)(uint16_t)v[2 * j] |
                                             ((uint32_t)(uint16_t)v[2 * j + 1] << 16));
        }
        for (int c = 0; c < 8; c++) { /* elements 32c .. 32c + 31 */
            for (int i = 0; i < 8; i++)
                q[i] = kq_chunk32(type, w0 + i * rb + k * bsize, c);
            transpose8_store(q, p + 256 * c, 32);
        }
    }
}

/*
 * Prefill: y[j*ys + i] = row i . y_(tok+j) for 8 rows packed by qpack8_k() and nt tokens (Q8_K):
 * per sub-block, the 8 rows' exact integer sums in one vector (as qtile8p()) times their scales,
 * the min (or Q6_K's offset) term from the activations' bsums by vpmaddwd; the float part as the
 * reference's, 8 rows at once.
 */
QT static ALWAYS_INLINE void
QS(qtile8p_k)(uint32_t type, int nt, const uint8_t *p, const struct qact *a, uint32_t tok, size_t n,
              float *y, size_t ys)
{
    int nsub = kq_nsub(type), gsub = 64 / nsub, offset = kq_offset(type);
    __m256 f0 = _mm256_setzero_ps(), f1 = f0, f2 = f0, f3 = f0;

    for (size_t k = 0; k < n / QUANT_QK_K; k++) {
        const uint8_t *pk = p + k * QPACK_K;
        const int32_t *sc = (const int32_t *)(pk + 2048), *pairs = sc + 8 * nsub;
        const float *d = (const float *)(pairs + 4 * nsub);
        const struct block_q8_k *yb = (const struct block_q8_k *)(a->q + tok * a->yrb) + k;
        const uint8_t *y0 = (const uint8_t *)yb->qs;
        __m256i i0 = _mm256_setzero_si256(), i1 = i0, i2 = i0, i3 = i0;
        __m256i m0 = i0, m1 = i0, m2 = i0, m3 = i0;

        for (int sb = 0; sb < nsub; sb++) {
            __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0;
            __m256i scv = _mm256_loadu_si256((const __m256i *)(sc + 8 * sb));

            QS(dot_groups)(nt, pk, y0, a->yrb, sb * gsub, (sb + 1) * gsub, &s0, &s1, &s2, &s3);
            i0 = _mm256_add_epi32(i0, _mm256_mullo_epi32(s0, scv));
            i1 = _mm256_add_epi32(i1, _mm256_mullo_epi32(s1, scv));
            i2 = _mm256_add_epi32(i2, _mm256_mullo_epi32(s2, scv));
            i3 = _mm256_add_epi32(i3, _mm256_mullo_epi32(s3, scv));
        }
        /* Q4_K / Q5_K: sum of m_j (bsums 2j + 2j+1), the pair sums kept in a->sum; Q6_K:
         * sum of sc_j bsums_j */
        for (int j = 0; j < nsub / 2; j++) {
            __m256i pv = _mm256_loadu_si256((const __m256i *)(pairs + 8 * j));
            size_t o = tok * a->nb + k * 8 + 2 * j;

#define QPAIR(t)                                                                                   \
    (nsub == 16 ? i32_at((const uint8_t *)(yb->bsums + 2 * j) + (t)*a->yrb)                        \
                : i32_at((const uint8_t *)(a->sum + o + (t)*a->nb)))
            m0 = DOT_S16S16(m0, pv, _mm256_set1_epi32(QPAIR(0)));
            if (nt > 1)
                m1 = DOT_S16S16(m1, pv, _mm256_set1_epi32(QPAIR(1)));
            if (nt > 2)
                m2 = DOT_S16S16(m2, pv, _mm256_set1_epi32(QPAIR(2)));
            if (nt > 3)
                m3 = DOT_S16S16(m3, pv, _mm256_set1_epi32(QPAIR(3)));
#undef QPAIR
        }
        __m256 dv = _mm256_loadu_ps(d);
        __m256 dminv = _mm256_loadu_ps(d + 8);

#define QTILE8PK_TOKEN(j, is, ms, f)                                                               \
    if (nt > (j)) {                                                                                \
        __m256 yd =                                                                                \
            _mm256_set1_ps(((const struct block_q8_k *)((const uint8_t *)yb + (j)*a->yrb))->d);    \
        if (offset != 0) /* the reference subtracts its zero min term: x - 0 is x */               \
            f = _mm256_add_ps(                                                                     \
                f, _mm256_mul_ps(                                                                  \
                       yd, _mm256_mul_ps(                                                          \
                               dv, _mm256_cvtepi32_ps(_mm256_sub_epi32(                            \
                                       is, _mm256_mullo_epi32(ms, _mm256_set1_epi32(offset))))))); \
        else                                                                                       \
            f = _mm256_add_ps(                                                                     \
                f,                                                                                 \
                _mm256_mul_ps(yd, _mm256_sub_ps(_mm256_mul_ps(dv, _mm256_cvtepi32_ps(is)),         \
                                                _mm256_mul_ps(dminv, _mm256_cvtepi32_ps(ms)))));   \
    }
        QTILE8PK_TOKEN(0, i0, m0, f0)
        QTILE8PK_TOKEN(1, i1, m1, f1)
        QTILE8PK_TOKEN(2, i2, m2, f2)
        QTILE8PK_TOKEN(3, i3, m3, f3)
#undef QTILE8PK_TOKEN
    }
    store_tokens(nt, y, ys, f0, f1, f2, f3);
}

/* The kernels of shape qrows_fn: 4 rows x nt tokens per 32-element type, 8 rows x 1 token;
 * the packed prefill tiles (not for Q8_0 without VNNI: its quants are not unsigned bytes). */
#define QTILE8P(sfx, type, nt)                                                                     \
    QT static void QS(qtile8p_##sfx##_##nt)(const uint8_t *p, const struct qact *a, uint32_t tok,  \
                                            size_t n, float *y, size_t ys)                         \
    {                                                                                              \
        QS(qtile8p)(type, nt, p, a, tok, n, y, ys);                                                \
    }
#define PACKED(type, fn) (QVNNI || (type) != TYPE_Q8_0 ? (fn) : NULL)
#if QAVX512
#define QTILE16P(sfx, type, nt)                                                                    \
    QT static void QS(qtile16p_##sfx##_##nt)(const uint8_t *p, const struct qact *a, uint32_t tok, \
                                             size_t n, float *y, size_t ys)                        \
    {                                                                                              \
        QS(qtile16p)(type, nt, p, a, tok, n, y, ys);                                               \
    }
#define QP16_FNS(sfx, type, blk)                                                                   \
    QT static void QS(qpack16_##sfx)(const uint8_t *w0, size_t rb, size_t n, uint8_t *dst)         \
    {                                                                                              \
        QS(qpack8)(type, sizeof(struct blk), 2, w0, rb, n, dst);                                   \
    }                                                                                              \
    QTILE16P(sfx, type, 1)                                                                         \
    QTILE16P(sfx, type, 2)                                                                         \
    QTILE16P(sfx, type, 3)                                                                         \
    QTILE16P(sfx, type, 4)                                                                         \
    QTILE16P(sfx, type, 5)                                                                         \
    QTILE16P(sfx, type, 6)                                                                         \
    QTILE16P(sfx, type, 7)                                                                         \
    QTILE16P(sfx, type, 8)
#define QP16(sfx)                                                                                  \
    QS(qpack16_##sfx),                                                                             \
    {                                                                                              \
        NULL, QS(qtile16p_##sfx##_1), QS(qtile16p_##sfx##_2), QS(qtile16p_##sfx##_3),              \
            QS(qtile16p_##sfx##_4), QS(qtile16p_##sfx##_5), QS(qtile16p_##sfx##_6),                \
            QS(qtile16p_##sfx##_7), QS(qtile16p_##sfx##_8)                                         \
    }
#else
#define QP16_FNS(sfx, type, blk)
#define QP16(sfx)                                                                                  \
    NULL,                                                                                          \
    {                                                                                              \
        NULL                                                                                       \
    }
#endif
#define QROWS32T(sfx, type, blk, nt)                                                               \
    QT static void QS(qrows_##sfx##_t##nt)(const void *const *w, const struct qact *a,             \
                                           uint32_t tok, size_t n, float *out, size_t os)          \
    {                                                                                              \
        QS(qtile32)(type, sizeof(struct blk), nt, w, a, tok, n, out, os);                          \
    }
#define QROWS32(sfx, type, blk, dec)                                                               \
    QT static void QS(qrows_##sfx##_8)(const uint8_t *w0, size_t rb, const struct qact *a,         \
                                       uint32_t tok, size_t n, float *out)                         \
    {                                                                                              \
        QS(qrows8_32)(type, sizeof(struct blk), w0, rb, a, tok, n, out);                           \
    }                                                                                              \
    QROWS32T(sfx, type, blk, 1)                                                                    \
    QROWS32T(sfx, type, blk, 2)                                                                    \
    QROWS32T(sfx, type, blk, 3)                                                                    \
    QROWS32T(sfx, type, blk, 4)                                                                    \
    QT static void QS(qpack_##sfx)(const uint8_t *w0, size_t rb, size_t n, uint8_t *dst)           \
    {                                                                                              \
        QS(qpack8)(type, sizeof(struct blk), 1, w0, rb, n, dst);                                   \
    }                                                                                              \
    QTILE8P(sfx, type, 1)                                                                          \
    QTILE8P(sfx, type, 2)                                                                          \
    QTILE8P(sfx, type, 3)                                                                          \
    QTILE8P(sfx, type, 4)                                                                          \
    QP16_FNS(sfx, type, blk)                                                                       \
    static const struct qkern QS(qkern_##sfx) = {                                                  \
        QS(qrows_##sfx##_8),                                                                       \
        {NULL, QS(qrows_##sfx##_t1), QS(qrows_##sfx##_t2), QS(qrows_##sfx##_t3),                   \
         QS(qrows_##sfx##_t4)},                                                                    \
        PACKED(type, QS(qpack_##sfx)),                                                             \
        {NULL, PACKED(type, QS(qtile8p_##sfx##_1)), PACKED(type, QS(qtile8p_##sfx##_2)),           \
         PACKED(type, QS(qtile8p_##sfx##_3)), PACKED(type, QS(qtile8p_##sfx##_4))},                \
        QDEC_##dec(sfx),                                                                           \
        QP16(sfx)};
QROWS32(q8_0, TYPE_Q8_0, block_q8_0, NO)
QROWS32(q4_0, TYPE_Q4_0, block_q4_0, YES)
QROWS32(q4_1, TYPE_Q4_1, block_q4_1, NO)
QROWS32(q5_0, TYPE_Q5_0, block_q5_0, NO)
QROWS32(q5_1, TYPE_Q5_1, block_q5_1, NO)
#undef QROWS32
#undef QROWS32T
#undef QTILE8P
#undef PACKED
#undef QTILE16P
#undef QP16_FNS
#undef QP16

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
#define QPACK_K_FNS(sfx, type, blk)                                                                \
    QT static void QS(qpack_##sfx)(const uint8_t *w0, size_t rb, size_t n, uint8_t *dst)           \
    {                                                                                              \
        QS(qpack8_k)(type, sizeof(struct blk), w0, rb, n, dst);                                    \
    }                                                                                              \
    QTILE8PK(sfx, type, 1)                                                                         \
    QTILE8PK(sfx, type, 2)                                                                         \
    QTILE8PK(sfx, type, 3)                                                                         \
    QTILE8PK(sfx, type, 4)
#define QTILE8PK(sfx, type, nt)                                                                    \
    QT static void QS(qtile8p_##sfx##_##nt)(const uint8_t *p, const struct qact *a, uint32_t tok,  \
                                            size_t n, float *y, size_t ys)                         \
    {                                                                                              \
        QS(qtile8p_k)(type, nt, p, a, tok, n, y, ys);                                              \
    }
#define QROWS_K45(sfx, blk, five, dec)                                                             \
    QROWSK(sfx, 1, QS(qdot_k45)(w[i], sizeof(struct blk), five, 1, a, tok, n, s))                  \
    QROWSK(sfx, 2, QS(qdot_k45)(w[i], sizeof(struct blk), five, 2, a, tok, n, s))                  \
    QROWSK(sfx, 3, QS(qdot_k45)(w[i], sizeof(struct blk), five, 3, a, tok, n, s))                  \
    QROWSK(sfx, 4, QS(qdot_k45)(w[i], sizeof(struct blk), five, QTOK, a, tok, n, s))               \
    static const struct qkern QS(qkern_##sfx) = {                                                  \
        NULL,                                                                                      \
        {NULL, QS(qrows_##sfx##_t1), QS(qrows_##sfx##_t2), QS(qrows_##sfx##_t3),                   \
         QS(qrows_##sfx##_t4)},                                                                    \
        QS(qpack_##sfx),                                                                           \
        {NULL, QS(qtile8p_##sfx##_1), QS(qtile8p_##sfx##_2), QS(qtile8p_##sfx##_3),                \
         QS(qtile8p_##sfx##_4)},                                                                   \
        dec,                                                                                       \
        NULL,                                                                                      \
        {NULL}};
QPACK_K_FNS(q4_k, TYPE_Q4_K, block_q4_k)
QPACK_K_FNS(q5_k, TYPE_Q5_K, block_q5_k)
QPACK_K_FNS(q6_k, TYPE_Q6_K, block_q6_k)
QPACK_K_FNS(q2_k, TYPE_Q2_K, block_q2_k)
QPACK_K_FNS(q3_k, TYPE_Q3_K, block_q3_k)
QROWS_K45(q4_k, block_q4_k, false, QDEC_K(q4_k))
QROWS_K45(q5_k, block_q5_k, true, QDEC_NO(q5_k))
QROWSK(q6_k, 1, QS(qdot_q6_k)(w[i], 1, a, tok, n, s))
QROWSK(q6_k, 2, QS(qdot_q6_k)(w[i], 2, a, tok, n, s))
QROWSK(q6_k, 3, QS(qdot_q6_k)(w[i], 3, a, tok, n, s))
QROWSK(q6_k, 4, QS(qdot_q6_k)(w[i], QTOK, a, tok, n, s))
static const struct qkern QS(qkern_q6_k) = {
    NULL,
    {NULL, QS(qrows_q6_k_t1), QS(qrows_q6_k_t2), QS(qrows_q6_k_t3), QS(qrows_q6_k_t4)},
    QS(qpack_q6_k),
    {NULL, QS(qtile8p_q6_k_1), QS(qtile8p_q6_k_2), QS(qtile8p_q6_k_3), QS(qtile8p_q6_k_4)},
    QDEC_Q6K,
    NULL,
    {NULL}};
#undef QROWS_K45
#undef QPACK_K_FNS
#undef QTILE8PK
#undef QROWSK

/* Q2_K / Q3_K: the packed tiles only (for one token too) */
static const struct qkern QS(qkern_q2_k) = {
    NULL,
    {NULL},
    QS(qpack_q2_k),
    {NULL, QS(qtile8p_q2_k_1), QS(qtile8p_q2_k_2), QS(qtile8p_q2_k_3), QS(qtile8p_q2_k_4)},
    QDEC_NO(q2_k),
    NULL,
    {NULL}};
static const struct qkern QS(qkern_q3_k) = {
    NULL,
    {NULL},
    QS(qpack_q3_k),
    {NULL, QS(qtile8p_q3_k_1), QS(qtile8p_q3_k_2), QS(qtile8p_q3_k_3), QS(qtile8p_q3_k_4)},
    QDEC_NO(q3_k),
    NULL,
    {NULL}};

#undef QDEC_YES
#undef QDEC_NO
#undef QDEC_K
#undef QDEC_Q6K

/* This level's kernels of each quantized type, or NULL (the type runs its reference vec_dot). */
static const struct qkern *const QS(qkerns)[TYPE__COUNT] = {
    [TYPE_Q8_0] = &QS(qkern_q8_0), [TYPE_Q4_0] = &QS(qkern_q4_0), [TYPE_Q4_1] = &QS(qkern_q4_1),
    [TYPE_Q5_0] = &QS(qkern_q5_0), [TYPE_Q5_1] = &QS(qkern_q5_1), [TYPE_Q2_K] = &QS(qkern_q2_k),
    [TYPE_Q3_K] = &QS(qkern_q3_k), [TYPE_Q4_K] = &QS(qkern_q4_k), [TYPE_Q5_K] = &QS(qkern_q5_k),
    [TYPE_Q6_K] = &QS(qkern_q6_k),
};

#undef DOT_U8S8
#undef DOT_S16S16
