/*
 * quant.c: scalar reference kernels of every type llorch reads: row conversions between F32 and
 * F32/F16/BF16, the 32-element block types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1) and the K-quants
 * (Q2_K..Q6_K, Q8_K), and their dot products with quantized activations. Each block type is
 * unpacked into integer quants plus float scales (one struct for the 32-element types, one for the
 * K-quants) and everything else works on that, one element at a time: the layouts are written down
 * once, in the unpack (and pack) functions. The quantizers of the 32-element types reproduce the
 * rounding of ggml's reference quantizers; those of the K-quants are llorch's own (see quant.h).
 * Not here: SIMD kernels.
 */
#include "workerd/engine/quant.h"

#include "workerd/engine/types.h"

#include <math.h>
#include <string.h>

/* ---- F32, F16, BF16 ---- */

void
quant_dequantize_row_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

void
quant_quantize_row_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

/* F16 and BF16 rows: one 16-bit value per element, converted by types.h. */
static void
halves_to_float(const void *src, float *dst, int64_t n, float (*conv)(uint16_t))
{
    const uint16_t *h = src;

    for (int64_t i = 0; i < n; i++)
        dst[i] = conv(h[i]);
}

static void
float_to_halves(const float *src, void *dst, int64_t n, uint16_t (*conv)(float))
{
    uint16_t *h = dst;

    for (int64_t i = 0; i < n; i++)
        h[i] = conv(src[i]);
}

void
quant_dequantize_row_f16(const void *src, float *dst, int64_t n)
{
    halves_to_float(src, dst, n, fp16_to_f32);
}

void
quant_quantize_row_f16(const float *src, void *dst, int64_t n)
{
    float_to_halves(src, dst, n, f32_to_fp16);
}

void
quant_dequantize_row_bf16(const void *src, float *dst, int64_t n)
{
    halves_to_float(src, dst, n, bf16_to_f32);
}

void
quant_quantize_row_bf16(const float *src, void *dst, int64_t n)
{
    float_to_halves(src, dst, n, f32_to_bf16);
}

float
quant_vec_dot_f32(const void *x, const void *y, int64_t n)
{
    const float *a = x, *b = y;
    float sum = 0.0f;

    for (int64_t i = 0; i < n; i++)
        sum += a[i] * b[i];
    return sum;
}

static float
halves_dot(const void *x, const void *y, int64_t n, float (*conv)(uint16_t))
{
    const uint16_t *a = x;
    const float *b = y;
    float sum = 0.0f;

    for (int64_t i = 0; i < n; i++)
        sum += conv(a[i]) * b[i];
    return sum;
}

float
quant_vec_dot_f16(const void *x, const void *y, int64_t n)
{
    return halves_dot(x, y, n, fp16_to_f32);
}

float
quant_vec_dot_bf16(const void *x, const void *y, int64_t n)
{
    return halves_dot(x, y, n, bf16_to_f32);
}

/* ---- the 32-element block types ---- */

/* A block of 32 unpacked: value j = d * q[j] + m. */
struct b32 {
    float d, m;
    int8_t q[32];
};

typedef void (*unpack32_fn)(const void *blk, struct b32 *u);

/* 4-bit quants: element j < 16 the low nibble of qs[j], element j + 16 its high nibble. */
static void
nibbles_get(const uint8_t *qs, int8_t *q)
{
    for (int j = 0; j < 16; j++) {
        q[j] = (int8_t)(qs[j] & 0x0f);
        q[j + 16] = (int8_t)(qs[j] >> 4);
    }
}

static void
nibbles_set(const int8_t *q, uint8_t *qs)
{
    for (int j = 0; j < 16; j++)
        qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
}

/* 5-bit quants: the low 4 bits as nibbles, the 5th bit of element j is bit j of qh. */
static void
fives_get(const uint8_t *qh, const uint8_t *qs, int8_t *q)
{
    nibbles_get(qs, q);
    for (int j = 0; j < 32; j++)
        q[j] = (int8_t)(q[j] | (((qh[j / 8] >> (j % 8)) & 1) << 4));
}

static void
fives_set(const int8_t *q, uint8_t *qh, uint8_t *qs)
{
    nibbles_set(q, qs);
    memset(qh, 0, 4);
    for (int j = 0; j < 32; j++)
        qh[j / 8] = (uint8_t)(qh[j / 8] | (((q[j] >> 4) & 1) << (j % 8)));
}

static void
unpack_q8_0(const void *blk, struct b32 *u)
{
    const struct block_q8_0 *b = blk;

    u->d = fp16_to_f32(b->d);
    u->m = 0.0f;
    memcpy(u->q, b->qs, 32);
}

static void
unpack_q8_1(const void *blk, struct b32 *u)
{
    const struct block_q8_1 *b = blk;

    u->d = fp16_to_f32(b->d);
    u->m = 0.0f;
    memcpy(u->q, b->qs, 32);
}

static void
unpack_q4_0(const void *blk, struct b32 *u)
{
    const struct block_q4_0 *b = blk;

    u->d = fp16_to_f32(b->d);
    u->m = 0.0f;
    nibbles_get(b->qs, u->q);
    for (int j = 0; j < 32; j++)
        u->q[j] = (int8_t)(u->q[j] - 8);
}

static void
unpack_q4_1(const void *blk, struct b32 *u)
{
    const struct block_q4_1 *b = blk;

    u->d = fp16_to_f32(b->d);
    u->m = fp16_to_f32(b->m);
    nibbles_get(b->qs, u->q);
}

static void
unpack_q5_0(const void *blk, struct b32 *u)
{
    const struct block_q5_0 *b = blk;

    u->d = fp16_to_f32(b->d);
    u->m = 0.0f;
    fives_get(b->qh, b->qs, u->q);
    for (int j = 0; j < 32; j++)
        u->q[j] = (int8_t)(u->q[j] - 16);
}

static void
unpack_q5_1(const void *blk, struct b32 *u)
{
    const struct block_q5_1 *b = blk;

    u->d = fp16_to_f32(b->d);
    u->m = fp16_to_f32(b->m);
    fives_get(b->qh, b->qs, u->q);
}

static void
dequantize_row_32(const void *src, size_t bsize, unpack32_fn unpack, float *dst, int64_t n)
{
    struct b32 u;

    for (int64_t k = 0; k < n / 32; k++) {
        unpack((const uint8_t *)src + k * bsize, &u);
        for (int j = 0; j < 32; j++)
            dst[k * 32 + j] = u.d * (float)u.q[j] + u.m;
    }
}

/*
 * x (32-element blocks of bsize bytes) against y (Q8_0, or Q8_1 when the type has a min m):
 * per block d_x d_y sum(q_x q_y) + m_x s_y, since s_y = d_y sum(q_y).
 */
static float
vec_dot_32(const void *x, size_t bsize, unpack32_fn unpack, const void *y, int with_min, int64_t n)
{
    const struct block_q8_0 *y0 = y;
    const struct block_q8_1 *y1 = y;
    struct b32 u;
    float sum = 0.0f;

    for (int64_t k = 0; k < n / 32; k++) {
        const int8_t *qy = with_min ? y1[k].qs : y0[k].qs;
        float dy = fp16_to_f32(with_min ? y1[k].d : y0[k].d);
        int32_t isum = 0;

        unpack((const uint8_t *)x + k * bsize, &u);
        for (int j = 0; j < 32; j++)
            isum += u.q[j] * qy[j];
        sum += u.d * dy * (float)isum;
        if (with_min)
            sum += u.m * fp16_to_f32(y1[k].s);
    }
    return sum;
}

/* Per block: the largest |x| and, with its sign, the first element of that magnitude; min, max. */
struct extremes {
    float amax, max_signed, min, max;
};

static struct extremes
extremes_of(const float *x, int n)
{
    struct extremes e = {0.0f, 0.0f, x[0], x[0]};

    /* comparisons rather than fminf / fmaxf, which are calls unless NaNs are ruled out */
    for (int j = 0; j < n; j++) {
        if (fabsf(x[j]) > e.amax) {
            e.amax = fabsf(x[j]);
            e.max_signed = x[j];
        }
        e.min = x[j] < e.min ? x[j] : e.min;
        e.max = x[j] > e.max ? x[j] : e.max;
    }
    return e;
}

/*
 * Symmetric 32-element quantization with an offset (Q4_0: 8, Q5_0: 16): d = m / -offset for m
 * the signed extreme, q = min(2 offset - 1, (int)(x / d + offset + 0.5)) stored unsigned.
 */
static float
quantize_sym32(const float *x, int offset, int8_t *q)
{
    struct extremes e = extremes_of(x, 32);
    float d = e.max_signed / (float)-offset;
    float id = d != 0.0f ? 1.0f / d : 0.0f;

    for (int j = 0; j < 32; j++) {
        /* x/d + offset lies in [0, 2 offset]; +0.5 and truncation round it, the top clips */
        int v = (int8_t)(x[j] * id + (float)offset + 0.5f);

        q[j] = (int8_t)(v < 2 * offset - 1 ? v : 2 * offset - 1);
    }
    return d;
}

/* Asymmetric: m = min x, d = (max - min) / levels, q = min(levels, (int)((x - m) / d + 0.5)). */
static float
quantize_asym32(const float *x, int levels, float *m, int8_t *q)
{
    struct extremes e = extremes_of(x, 32);
    float d = (e.max - e.min) / (float)levels;
    float id = d != 0.0f ? 1.0f / d : 0.0f;

    *m = e.min;
    for (int j = 0; j < 32; j++) {
        int v = (int8_t)((x[j] - e.min) * id + 0.5f);

        q[j] = (int8_t)(v < levels ? v : levels);
    }
    return d;
}

void
quant_dequantize_row_q8_0(const void *src, float *dst, int64_t n)
{
    dequantize_row_32(src, sizeof(struct block_q8_0), unpack_q8_0, dst, n);
}

/* d = amax / 127 (float; stored as a half), q = round(x / d); returns the sum of the quants. */
static int
quantize_q8(const float *x, float *d_out, int8_t *q)
{
    struct extremes e = extremes_of(x, 32);
    float d = e.amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    int sum = 0;

    for (int j = 0; j < 32; j++) {
        q[j] = (int8_t)roundf(x[j] * id);
        sum += q[j];
    }
    *d_out = d;
    return sum;
}

void
quant_quantize_row_q8_0(const float *src, void *dst, int64_t n)
{
    struct block_q8_0 *b = dst;

    for (int64_t k = 0; k < n / 32; k++) {
        float d;

        quantize_q8(src + k * 32, &d, b[k].qs);
        b[k].d = f32_to_fp16(d);
    }
}

void
quant_dequantize_row_q8_1(const void *src, float *dst, int64_t n)
{
    dequantize_row_32(src, sizeof(struct block_q8_1), unpack_q8_1, dst, n);
}

void
quant_quantize_row_q8_1(const float *src, void *dst, int64_t n)
{
    struct block_q8_1 *b = dst;

    for (int64_t k = 0; k < n / 32; k++) {
        float d;
        int sum = quantize_q8(src + k * 32, &d, b[k].qs);

        b[k].d = f32_to_fp16(d);
        b[k].s = f32_to_fp16(d * (float)sum);
    }
}

void
quant_dequantize_row_q4_0(const void *src, float *dst, int64_t n)
{
    dequantize_row_32(src, sizeof(struct block_q4_0), unpack_q4_0, dst, n);
}

void
quant_quantize_row_q4_0(const float *src, void *dst, int64_t n)
{
    struct block_q4_0 *b = dst;
    int8_t q[32];

    for (int64_t k = 0; k < n / 32; k++) {
        b[k].d = f32_to_fp16(quantize_sym32(src + k * 32, 8, q));
        nibbles_set(q, b[k].qs);
    }
}

void
quant_dequantize_row_q4_1(const void *src, float *dst, int64_t n)
{
    dequantize_row_32(src, sizeof(struct block_q4_1), unpack_q4_1, dst, n);
}

void
quant_quantize_row_q4_1(const float *src, void *dst, int64_t n)
{
    struct block_q4_1 *b = dst;
    int8_t q[32];
    float m;

    for (int64_t k = 0; k < n / 32; k++) {
        b[k].d = f32_to_fp16(quantize_asym32(src + k * 32, 15, &m, q));
        b[k].m = f32_to_fp16(m);
        nibbles_set(q, b[k].qs);
    }
}

void
quant_dequantize_row_q5_0(const void *src, float *dst, int64_t n)
{
    dequantize_row_32(src, sizeof(struct block_q5_0), unpack_q5_0, dst, n);
}

void
quant_quantize_row_q5_0(const float *src, void *dst, int64_t n)
{
    struct block_q5_0 *b = dst;
    int8_t q[32];

    for (int64_t k = 0; k < n / 32; k++) {
        b[k].d = f32_to_fp16(quantize_sym32(src + k * 32, 16, q));
        fives_set(q, b[k].qh, b[k].qs);
    }
}

void
quant_dequantize_row_q5_1(const void *src, float *dst, int64_t n)
{
    dequantize_row_32(src, sizeof(struct block_q5_1), unpack_q5_1, dst, n);
}

void
quant_quantize_row_q5_1(const float *src, void *dst, int64_t n)
{
    struct block_q5_1 *b = dst;
    int8_t q[32];
    float m;

    for (int64_t k = 0; k < n / 32; k++) {
        b[k].d = f32_to_fp16(quantize_asym32(src + k * 32, 31, &m, q));
        b[k].m = f32_to_fp16(m);
        fives_set(q, b[k].qh, b[k].qs);
    }
}

float
quant_vec_dot_q8_0(const void *x, const void *y, int64_t n)
{
    return vec_dot_32(x, sizeof(struct block_q8_0), unpack_q8_0, y, 0, n);
}

float
quant_vec_dot_q4_0(const void *x, const void *y, int64_t n)
{
    return vec_dot_32(x, sizeof(struct block_q4_0), unpack_q4_0, y, 0, n);
}

float
quant_vec_dot_q5_0(const void *x, const void *y, int64_t n)
{
    return vec_dot_32(x, sizeof(struct block_q5_0), unpack_q5_0, y, 0, n);
}

float
quant_vec_dot_q4_1(const void *x, const void *y, int64_t n)
{
    return vec_dot_32(x, sizeof(struct block_q4_1), unpack_q4_1, y, 1, n);
}

float
quant_vec_dot_q5_1(const void *x, const void *y, int64_t n)
{
    return vec_dot_32(x, sizeof(struct block_q5_1), unpack_q5_1, y, 1, n);
}

/* ---- the K-quants ---- */

/* A super-block unpacked: value e = d * sc[e / sub] * q[e] - dmin * m[e / sub]. */
struct bk {
    float d, dmin;
    int sub; /* elements per sub-block: 16 or 32 */
    int8_t q[QUANT_QK_K];
    int16_t sc[16];
    int16_t m[16];
};

typedef void (*unpackk_fn)(const void *blk, struct bk *u);

/* Q2_K / Q3_K 2-bit fields: element 128 h + 32 g + l is bits 2g..2g+1 of qs[32 h + l]. */
static void
twos_get(const uint8_t *qs, int8_t *q)
{
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++)
                q[128 * h + 32 * g + l] = (int8_t)((qs[32 * h + l] >> (2 * g)) & 3);
}

static void
unpack_q2_k(const void *blk, struct bk *u)
{
    const struct block_q2_k *b = blk;

    u->d = fp16_to_f32(b->d);
    u->dmin = fp16_to_f32(b->dmin);
    u->sub = 16;
    twos_get(b->qs, u->q);
    for (int j = 0; j < 16; j++) {
        u->sc[j] = (int16_t)(b->scales[j] & 0x0f);
        u->m[j] = (int16_t)(b->scales[j] >> 4);
    }
}

static void
twos_set(const int8_t *q, uint8_t *qs)
{
    memset(qs, 0, QUANT_QK_K / 4);
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++)
                qs[32 * h + l] =
                    (uint8_t)(qs[32 * h + l] | ((q[128 * h + 32 * g + l] & 3) << (2 * g)));
}

static void
pack_q2_k(const struct bk *u, uint16_t d, uint16_t dmin, void *blk)
{
    struct block_q2_k *b = blk;

    b->d = d;
    b->dmin = dmin;
    for (int j = 0; j < 16; j++)
        b->scales[j] = (uint8_t)(u->sc[j] | (u->m[j] << 4));
    twos_set(u->q, b->qs);
}

static void
unpack_q3_k(const void *blk, struct bk *u)
{
    const struct block_q3_k *b = blk;

    u->d = fp16_to_f32(b->d);
    u->dmin = 0.0f;
    u->sub = 16;
    twos_get(b->qs, u->q);
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                int e = 128 * h + 32 * g + l;

                if (((b->hmask[l] >> (4 * h + g)) & 1) == 0)
                    u->q[e] = (int8_t)(u->q[e] - 4);
            }
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? b->scales[j] & 0x0f : b->scales[j - 8] >> 4;
        int hi = (b->scales[8 + j % 4] >> (2 * (j / 4))) & 3;

        u->sc[j] = (int16_t)((lo | (hi << 4)) - 32);
        u->m[j] = 0;
    }
}

/* q in [-4, 3]: the 3rd bit set for q >= 0, else the low bits hold q + 4; scales stored + 32. */
static void
pack_q3_k(const struct bk *u, uint16_t d, uint16_t dmin, void *blk)
{
    struct block_q3_k *b = blk;
    int8_t low[QUANT_QK_K];

    (void)dmin;
    b->d = d;
    memset(b->hmask, 0, sizeof(b->hmask));
    for (int h = 0; h < 2; h++)
        for (int g = 0; g < 4; g++)
            for (int l = 0; l < 32; l++) {
                int e = 128 * h + 32 * g + l, high = u->q[e] >= 0;

                low[e] = (int8_t)(high ? u->q[e] : u->q[e] + 4);
                b->hmask[l] = (uint8_t)(b->hmask[l] | (high << (4 * h + g)));
            }
    twos_set(low, b->qs);
    memset(b->scales, 0, sizeof(b->scales));
    for (int j = 0; j < 16; j++) {
        int v = u->sc[j] + 32;

        b->scales[j % 8] = (uint8_t)(b->scales[j % 8] | ((v & 0x0f) << (j < 8 ? 0 : 4)));
        b->scales[8 + j % 4] = (uint8_t)(b->scales[8 + j % 4] | ((v >> 4) << (2 * (j / 4))));
    }
}

/* Q4_K / Q5_K: 8 scales and 8 mins of 6 bits packed into 12 bytes (layout in quant.h). */
void
quant_scales6_get(const uint8_t *s, int16_t *sc, int16_t *m)
{
    for (int j = 0; j < 4; j++) {
        sc[j] = (int16_t)(s[j] & 63);
        m[j] = (int16_t)(s[j + 4] & 63);
        sc[j + 4] = (int16_t)((s[j + 8] & 0x0f) | ((s[j] >> 6) << 4));
        m[j + 4] = (int16_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
    }
}

static void
scales6_set(const int16_t *sc, const int16_t *m, uint8_t *s)
{
    for (int j = 0; j < 4; j++) {
        s[j] = (uint8_t)(sc[j] | ((sc[j + 4] >> 4) << 6));
        s[j + 4] = (uint8_t)(m[j] | ((m[j + 4] >> 4) << 6));
        s[j + 8] = (uint8_t)((sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4));
    }
}

/* Q4_K / Q5_K nibbles: element 64 c + l the low nibble of qs[32 c + l], 64 c + 32 + l the high. */
static void
nibbles_k_get(const uint8_t *qs, int8_t *q)
{
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            q[64 * c + l] = (int8_t)(qs[32 * c + l] & 0x0f);
            q[64 * c + 32 + l] = (int8_t)(qs[32 * c + l] >> 4);
        }
}

static void
nibbles_k_set(const int8_t *q, uint8_t *qs)
{
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            qs[32 * c + l] = (uint8_t)((q[64 * c + l] & 0x0f) | ((q[64 * c + 32 + l] & 0x0f) << 4));
}

static void
unpack_q4_k(const void *blk, struct bk *u)
{
    const struct block_q4_k *b = blk;

    u->d = fp16_to_f32(b->d);
    u->dmin = fp16_to_f32(b->dmin);
    u->sub = 32;
    quant_scales6_get(b->scales, u->sc, u->m);
    nibbles_k_get(b->qs, u->q);
}

static void
pack_q4_k(const struct bk *u, uint16_t d, uint16_t dmin, void *blk)
{
    struct block_q4_k *b = blk;

    b->d = d;
    b->dmin = dmin;
    scales6_set(u->sc, u->m, b->scales);
    nibbles_k_set(u->q, b->qs);
}

/* The 5th bit of element 64 c + l is bit 2c of qh[l]; of element 64 c + 32 + l bit 2c + 1. */
static void
unpack_q5_k(const void *blk, struct bk *u)
{
    const struct block_q5_k *b = blk;

    u->d = fp16_to_f32(b->d);
    u->dmin = fp16_to_f32(b->dmin);
    u->sub = 32;
    quant_scales6_get(b->scales, u->sc, u->m);
    nibbles_k_get(b->qs, u->q);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            u->q[64 * c + l] = (int8_t)(u->q[64 * c + l] | (((b->qh[l] >> (2 * c)) & 1) << 4));
            u->q[64 * c + 32 + l] =
                (int8_t)(u->q[64 * c + 32 + l] | (((b->qh[l] >> (2 * c + 1)) & 1) << 4));
        }
}

static void
pack_q5_k(const struct bk *u, uint16_t d, uint16_t dmin, void *blk)
{
    struct block_q5_k *b = blk;

    b->d = d;
    b->dmin = dmin;
    scales6_set(u->sc, u->m, b->scales);
    nibbles_k_set(u->q, b->qs);
    memset(b->qh, 0, sizeof(b->qh));
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b->qh[l] = (uint8_t)(b->qh[l] | (((u->q[64 * c + l] >> 4) & 1) << (2 * c)) |
                                 (((u->q[64 * c + 32 + l] >> 4) & 1) << (2 * c + 1)));
}

/*
 * Q6_K: in half h, for l < 32, elements l, l + 32, l + 64, l + 96 take the low nibbles of ql[l],
 * ql[l + 32], then the high nibbles, and bits 0-1, 2-3, 4-5, 6-7 of qh[l]; q is stored + 32.
 */
static void
unpack_q6_k(const void *blk, struct bk *u)
{
    const struct block_q6_k *b = blk;

    u->d = fp16_to_f32(b->d);
    u->dmin = 0.0f;
    u->sub = 16;
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        int8_t *q = u->q + 128 * h;

        for (int l = 0; l < 32; l++) {
            q[l] = (int8_t)(((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32);
            q[l + 32] = (int8_t)(((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
            q[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
            q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
        }
    }
    for (int j = 0; j < 16; j++) {
        u->sc[j] = b->scales[j];
        u->m[j] = 0;
    }
}

static void
pack_q6_k(const struct bk *u, uint16_t d, uint16_t dmin, void *blk)
{
    struct block_q6_k *b = blk;

    (void)dmin;
    b->d = d;
    for (int h = 0; h < 2; h++) {
        uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
        const int8_t *q = u->q + 128 * h;

        for (int l = 0; l < 32; l++) {
            int q0 = q[l] + 32, q1 = q[l + 32] + 32, q2 = q[l + 64] + 32, q3 = q[l + 96] + 32;

            ql[l] = (uint8_t)((q0 & 0x0f) | ((q2 & 0x0f) << 4));
            ql[l + 32] = (uint8_t)((q1 & 0x0f) | ((q3 & 0x0f) << 4));
            qh[l] = (uint8_t)((q0 >> 4) | ((q1 >> 4) << 2) | ((q2 >> 4) << 4) | ((q3 >> 4) << 6));
        }
    }
    for (int j = 0; j < 16; j++)
        b->scales[j] = (int8_t)u->sc[j];
}

static void
dequantize_row_k(const void *src, size_t bsize, unpackk_fn unpack, float *dst, int64_t n)
{
    struct bk u;

    for (int64_t k = 0; k < n / QUANT_QK_K; k++) {
        unpack((const uint8_t *)src + k * bsize, &u);
        for (int e = 0; e < QUANT_QK_K; e++) {
            int j = e / u.sub;

            dst[k * QUANT_QK_K + e] = u.d * (float)u.sc[j] * (float)u.q[e] - u.dmin * (float)u.m[j];
        }
    }
}

/*
 * x (super-blocks of bsize bytes) against y (Q8_K), per super-block:
 * d_y (d sum_j sc_j sum_{e in j} q_e q_y,e - dmin sum_j m_j bsums_y(j)).
 */
static float
vec_dot_k(const void *x, size_t bsize, unpackk_fn unpack, const void *y, int64_t n)
{
    const struct block_q8_k *yb = y;
    struct bk u;
    float sum = 0.0f;

    for (int64_t k = 0; k < n / QUANT_QK_K; k++) {
        int64_t isum = 0, msum = 0;

        unpack((const uint8_t *)x + k * bsize, &u);
        for (int j = 0; j < QUANT_QK_K / u.sub; j++) {
            int32_t s = 0, bsum = 0;

            for (int e = j * u.sub; e < (j + 1) * u.sub; e++)
                s += u.q[e] * yb[k].qs[e];
            for (int i = j * u.sub / 16; i < (j + 1) * u.sub / 16; i++)
                bsum += yb[k].bsums[i];
            isum += (int64_t)u.sc[j] * s;
            msum += (int64_t)u.m[j] * bsum;
        }
        sum += yb[k].d * (u.d * (float)isum - u.dmin * (float)msum);
    }
    return sum;
}

/* The smallest half not below v >= 0 (so a scale rounded to a half still covers v). */
static uint16_t
half_up(float v)
{
    uint16_t h = f32_to_fp16(v);

    if (fp16_to_f32(h) < v)
        h++;
    return h;
}

/* v rounded to the nearest integer (halves away from zero), clamped to [lo, hi]. */
static int8_t
round_clamp(float v, int lo, int hi)
{
    int q = (int)(v + (v >= 0.0f ? 0.5f : -0.5f));

    return (int8_t)(q < lo ? lo : q > hi ? hi : q);
}

/* ceil(v / d) in [0, max] for v >= 0; 0 when d is 0. */
static int
code_up(float v, float d, int max)
{
    int c = d > 0.0f ? (int)ceilf(v / d) : 0;

    return c < max ? c : max;
}

/* How llorch quantizes a K type: sub-block size, range of the quants, largest scale code. */
struct kfmt {
    int sub;        /* elements per sub-block */
    int qmin, qmax; /* qmin 0: a min per sub-block (value d sc q - dmin m); else symmetric */
    int code_max;   /* largest scale (and min) code */
};

static const struct kfmt kfmt_q2_k = {16, 0, 3, 15};
static const struct kfmt kfmt_q3_k = {16, -4, 3, 31};
static const struct kfmt kfmt_q4_k = {32, 0, 15, 63};
static const struct kfmt kfmt_q5_k = {32, 0, 31, 63};
static const struct kfmt kfmt_q6_k = {16, -32, 31, 127};

/*
 * One super-block, never clipping. With a min (Q2_K, Q4_K, Q5_K): sub-block j gets
 * min_j = -min(0, min x); the min codes are rounded up from dmin = max min_j / code_max (a half
 * rounded up), so the stored min reaches every element; the scale a sub-block needs to reach its
 * max from there, need_j = (max x + stored min) / qmax, is coded the same way from
 * d = max need_j / code_max. Symmetric (Q3_K, Q6_K): need_j = max|x| / 3.5 (31.5), coded
 * likewise: x / step lies in [-3.5, 3.5], so rounding to [-4, 3] errs by at most half a step.
 * Then q = round((x + stored min) / (d code)), clamped to the quants' range.
 */
static void
quantize_k(const float *x, const struct kfmt *f, struct bk *u, uint16_t *d_h, uint16_t *dmin_h)
{
    const int nsub = QUANT_QK_K / f->sub;
    float mn[16], need[16], max_mn = 0.0f, max_need = 0.0f;

    u->sub = f->sub;
    for (int j = 0; j < nsub; j++) {
        struct extremes e = extremes_of(x + f->sub * j, f->sub);

        mn[j] = f->qmin == 0 && e.min < 0.0f ? -e.min : 0.0f;
        max_mn = fmaxf(max_mn, mn[j]);
        need[j] = f->qmin == 0 ? e.max : e.amax; /* completed once the min is stored */
    }
    *dmin_h = half_up(max_mn / (float)f->code_max);
    u->dmin = fp16_to_f32(*dmin_h);
    for (int j = 0; j < nsub; j++) {
        u->m[j] = (int16_t)code_up(mn[j], u->dmin, f->code_max);
        /* symmetric: half the quants' span, so -amax and amax land at most half a step out */
        need[j] = (need[j] + u->dmin * (float)u->m[j]) /
                  (f->qmin == 0 ? (float)f->qmax : 0.5f * (float)(f->qmax - f->qmin));
        max_need = fmaxf(max_need, need[j]);
    }
    *d_h = half_up(max_need / (float)f->code_max);
    u->d = fp16_to_f32(*d_h);
    for (int j = 0; j < nsub; j++) {
        float step = u->d * (float)(u->sc[j] = (int16_t)code_up(need[j], u->d, f->code_max));
        float lo = u->dmin * (float)u->m[j], istep = step > 0.0f ? 1.0f / step : 0.0f;

        for (int e = f->sub * j; e < f->sub * (j + 1); e++)
            u->q[e] = round_clamp((x[e] + lo) * istep, f->qmin, f->qmax);
    }
}

/* A row of a K type: quantize_k per super-block, then the type's packing. */
static void
quantize_row_k(const float *src, void *dst, int64_t n, const struct kfmt *f, size_t bsize,
               void (*pack)(const struct bk *u, uint16_t d, uint16_t dmin, void *blk))
{
    struct bk u;
    uint16_t d, dmin;

    for (int64_t k = 0; k < n / QUANT_QK_K; k++) {
        quantize_k(src + k * QUANT_QK_K, f, &u, &d, &dmin);
        pack(&u, d, dmin, (uint8_t *)dst + k * bsize);
    }
}

void
quant_dequantize_row_q2_k(const void *src, float *dst, int64_t n)
{
    dequantize_row_k(src, sizeof(struct block_q2_k), unpack_q2_k, dst, n);
}

void
quant_dequantize_row_q3_k(const void *src, float *dst, int64_t n)
{
    dequantize_row_k(src, sizeof(struct block_q3_k), unpack_q3_k, dst, n);
}

void
quant_quantize_row_q2_k(const float *src, void *dst, int64_t n)
{
    quantize_row_k(src, dst, n, &kfmt_q2_k, sizeof(struct block_q2_k), pack_q2_k);
}

void
quant_quantize_row_q3_k(const float *src, void *dst, int64_t n)
{
    quantize_row_k(src, dst, n, &kfmt_q3_k, sizeof(struct block_q3_k), pack_q3_k);
}

void
quant_dequantize_row_q4_k(const void *src, float *dst, int64_t n)
{
    dequantize_row_k(src, sizeof(struct block_q4_k), unpack_q4_k, dst, n);
}

void
quant_quantize_row_q4_k(const float *src, void *dst, int64_t n)
{
    quantize_row_k(src, dst, n, &kfmt_q4_k, sizeof(struct block_q4_k), pack_q4_k);
}

void
quant_dequantize_row_q5_k(const void *src, float *dst, int64_t n)
{
    dequantize_row_k(src, sizeof(struct block_q5_k), unpack_q5_k, dst, n);
}

void
quant_quantize_row_q5_k(const float *src, void *dst, int64_t n)
{
    quantize_row_k(src, dst, n, &kfmt_q5_k, sizeof(struct block_q5_k), pack_q5_k);
}

void
quant_dequantize_row_q6_k(const void *src, float *dst, int64_t n)
{
    dequantize_row_k(src, sizeof(struct block_q6_k), unpack_q6_k, dst, n);
}

void
quant_quantize_row_q6_k(const float *src, void *dst, int64_t n)
{
    quantize_row_k(src, dst, n, &kfmt_q6_k, sizeof(struct block_q6_k), pack_q6_k);
}

void
quant_dequantize_row_q8_k(const void *src, float *dst, int64_t n)
{
    const struct block_q8_k *b = src;

    for (int64_t k = 0; k < n / QUANT_QK_K; k++)
        for (int e = 0; e < QUANT_QK_K; e++)
            dst[k * QUANT_QK_K + e] = b[k].d * (float)b[k].qs[e];
}

void
quant_quantize_row_q8_k(const float *src, void *dst, int64_t n)
{
    struct block_q8_k *b = dst;

    for (int64_t k = 0; k < n / QUANT_QK_K; k++) {
        const float *x = src + k * QUANT_QK_K;
        float d = extremes_of(x, QUANT_QK_K).amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;

        b[k].d = d;
        for (int e = 0; e < QUANT_QK_K; e++)
            b[k].qs[e] = round_clamp(x[e] * id, -127, 127);
        for (int j = 0; j < 16; j++) {
            int s = 0;

            for (int e = 16 * j; e < 16 * j + 16; e++)
                s += b[k].qs[e];
            b[k].bsums[j] = (int16_t)s;
        }
    }
}

float
quant_vec_dot_q2_k(const void *x, const void *y, int64_t n)
{
    return vec_dot_k(x, sizeof(struct block_q2_k), unpack_q2_k, y, n);
}

float
quant_vec_dot_q3_k(const void *x, const void *y, int64_t n)
{
    return vec_dot_k(x, sizeof(struct block_q3_k), unpack_q3_k, y, n);
}

float
quant_vec_dot_q4_k(const void *x, const void *y, int64_t n)
{
    return vec_dot_k(x, sizeof(struct block_q4_k), unpack_q4_k, y, n);
}

float
quant_vec_dot_q5_k(const void *x, const void *y, int64_t n)
{
    return vec_dot_k(x, sizeof(struct block_q5_k), unpack_q5_k, y, n);
}

float
quant_vec_dot_q6_k(const void *x, const void *y, int64_t n)
{
    return vec_dot_k(x, sizeof(struct block_q6_k), unpack_q6_k, y, n);
}
