/*
 * test_quant.c: tests of the scalar reference kernels (workerd/engine/quant.c) of every type: block
 * sizes against the type table, hand-computed blocks in both directions, round trips within each
 * type's error bound, dot products against the float dot product of the dequantized rows, and the
 * quantized tensors of real files (../shared/models) against the F16 / F32 file of the same model.
 */
#include "common/err.h"
#include "tests/harness.h"
#include "tests/synth_rand.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/quant.h"
#include "workerd/engine/types.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The largest magnitude among the 32 values of the block at x. */
static float
block_amax(const float *x)
{
    float amax = 0.0f;

    for (int j = 0; j < 32; j++)
        amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

static void
test_block_sizes_match_type_table(void)
{
    static const struct {
        uint32_t type;
        size_t size, blck;
    } want[] = {
        {TYPE_Q8_0, sizeof(struct block_q8_0), QUANT_QK8_0},
        {TYPE_Q8_1, sizeof(struct block_q8_1), QUANT_QK8_0},
        {TYPE_Q4_0, sizeof(struct block_q4_0), QUANT_QK4_0},
        {TYPE_Q4_1, sizeof(struct block_q4_1), QUANT_QK4_0},
        {TYPE_Q5_0, sizeof(struct block_q5_0), QUANT_QK4_0},
        {TYPE_Q5_1, sizeof(struct block_q5_1), QUANT_QK4_0},
        {TYPE_Q2_K, sizeof(struct block_q2_k), QUANT_QK_K},
        {TYPE_Q3_K, sizeof(struct block_q3_k), QUANT_QK_K},
        {TYPE_Q4_K, sizeof(struct block_q4_k), QUANT_QK_K},
        {TYPE_Q5_K, sizeof(struct block_q5_k), QUANT_QK_K},
        {TYPE_Q6_K, sizeof(struct block_q6_k), QUANT_QK_K},
        {TYPE_Q8_K, sizeof(struct block_q8_k), QUANT_QK_K},
    };

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct type_traits *t = type_traits(want[i].type);

        CHECKF(t->size == want[i].size && t->blck == want[i].blck, "type %s", t->name);
    }
}

/* Which types have which kernels, and the activation type of each dot product. */
static void
test_type_table_kernels(void)
{
    static const struct {
        uint32_t type;
        bool write, dot;
        uint32_t dot_type;
    } want[] = {
        {TYPE_F32, true, true, TYPE_F32},   {TYPE_F16, true, true, TYPE_F32},
        {TYPE_BF16, true, true, TYPE_F32},  {TYPE_Q8_0, true, true, TYPE_Q8_0},
        {TYPE_Q4_0, true, true, TYPE_Q8_0}, {TYPE_Q5_0, true, true, TYPE_Q8_0},
        {TYPE_Q4_1, true, true, TYPE_Q8_1}, {TYPE_Q5_1, true, true, TYPE_Q8_1},
        {TYPE_Q8_1, true, false, 0},        {TYPE_Q2_K, true, true, TYPE_Q8_K},
        {TYPE_Q3_K, true, true, TYPE_Q8_K}, {TYPE_Q4_K, true, true, TYPE_Q8_K},
        {TYPE_Q5_K, true, true, TYPE_Q8_K}, {TYPE_Q6_K, true, true, TYPE_Q8_K},
        {TYPE_Q8_K, true, false, 0},
    };

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct type_traits *t = type_traits(want[i].type);

        CHECKF(t->to_float != NULL, "type %s", t->name);
        CHECKF((t->from_float != NULL) == want[i].write, "type %s", t->name);
        CHECKF((t->vec_dot != NULL) == want[i].dot, "type %s", t->name);
        if (want[i].dot) {
            const struct type_traits *y = type_traits(t->vec_dot_type);

            CHECKF(t->vec_dot_type == want[i].dot_type && y->from_float != NULL, "type %s",
                   t->name);
        }
    }
    CHECK(type_traits(TYPE_Q8_0)->to_float == quant_dequantize_row_q8_0);
    CHECK(type_traits(TYPE_Q4_K)->from_float == quant_quantize_row_q4_k);
    CHECK(type_traits(TYPE_Q6_K)->vec_dot == quant_vec_dot_q6_k);
    /* the rest of GGUF's types are listed but have no kernels */
    static const uint32_t none[] = {TYPE_IQ2_XS, TYPE_IQ4_NL, TYPE_I8,
                                    TYPE_F64,    TYPE_TQ1_0,  TYPE_MXFP4};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        const struct type_traits *t = type_traits(none[i]);

        CHECKF(t->to_float == NULL && t->from_float == NULL && t->vec_dot == NULL && !t->supported,
               "type %s", t->name);
    }
}

/* max |x| = 127 makes d exactly 1, so the quants are round(x): halves go away from zero. */
static void
test_q8_0_known_block(void)
{
    float x[32], y[32];
    struct block_q8_0 b;
    static const int8_t want[32] = {-127, 3,   -3,  2,   -2,  0,   1,   -1,  10,  20,  30,
                                    40,   50,  60,  70,  80,  90,  100, 110, 120, 126, 127,
                                    -10,  -20, -30, -40, -50, -60, -70, -80, -90, -100};

    for (int j = 0; j < 32; j++)
        x[j] = want[j];
    x[1] = 2.5f;   /* -> 3 */
    x[2] = -2.5f;  /* -> -3 */
    x[3] = 2.49f;  /* -> 2 */
    x[4] = -1.51f; /* -> -2 */
    x[5] = 0.4f;   /* -> 0 */
    x[6] = 0.5f;   /* -> 1 */
    x[7] = -0.5f;  /* -> -1 */
    quant_quantize_row_q8_0(x, &b, 32);
    CHECKF(b.d == 0x3c00, "d = 0x%04x, want 0x3c00 (1.0)", b.d);
    for (int j = 0; j < 32; j++)
        CHECKF(b.qs[j] == want[j], "qs[%d] = %d, want %d", j, b.qs[j], want[j]);

    /* and the raw bytes as GGUF stores them: little-endian half, then the quants */
    const uint8_t *raw = (const uint8_t *)&b;
    CHECK(raw[0] == 0x00 && raw[1] == 0x3c && raw[2] == 0x81 && raw[3] == 0x03);

    quant_dequantize_row_q8_0(&b, y, 32);
    for (int j = 0; j < 32; j++)
        CHECKF(y[j] == (float)want[j], "y[%d] = %g", j, y[j]);
}

/* A block from raw bytes: d = 0.5 (0x3800), nibbles chosen so each position is distinct. */
static void
test_q4_0_known_block_dequantize(void)
{
    struct block_q4_0 b;
    float y[64];
    struct block_q4_0 two[2];

    b.d = 0x3800;
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    quant_dequantize_row_q4_0(&b, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECKF(y[j] == (float)(j - 8) * 0.5f, "y[%d] = %g", j, y[j]);
        CHECKF(y[j + 16] == (float)(7 - j) * 0.5f, "y[%d] = %g", j + 16, y[j + 16]);
    }

    /* a second block with its own scale: d = -2 (0xc000), all nibbles 0xa9 */
    two[0] = b;
    two[1].d = 0xc000;
    memset(two[1].qs, 0xa9, sizeof(two[1].qs));
    quant_dequantize_row_q4_0(two, y, 64);
    CHECK(y[0] == -4.0f && y[31] == -4.0f);
    for (int j = 0; j < 16; j++) {
        CHECKF(y[32 + j] == -2.0f, "y[%d] = %g", 32 + j, y[32 + j]); /* (9 - 8) * -2 */
        CHECKF(y[48 + j] == -4.0f, "y[%d] = %g", 48 + j, y[48 + j]); /* (10 - 8) * -2 */
    }
}

/* max = -8 (largest magnitude, negative) gives d = 1, so q = min(15, (int)(x + 8.5)). */
static void
test_q4_0_known_block_quantize(void)
{
    float x[32];
    struct block_q4_0 b;
    int want[32];

    for (int j = 0; j < 16; j++) {
        x[j] = (float)(j - 8); /* -8..7: exact */
        want[j] = j;
    }
    static const float hi[16] = {7.4f,  7.6f,  8.0f, 0.5f,  -0.5f, 0.49f, -0.51f, 3.5f,
                                 -3.5f, 6.99f, 0.0f, -7.9f, 1.0f,  2.0f,  -1.0f,  4.6f};
    static const int hi_want[16] = {15, 15, 15, 9, 8, 8, 7, 12, 5, 15, 8, 0, 9, 10, 7, 13};
    for (int j = 0; j < 16; j++) {
        x[16 + j] = hi[j];
        want[16 + j] = hi_want[j];
    }
    quant_quantize_row_q4_0(x, &b, 32);
    CHECKF(b.d == 0x3c00, "d = 0x%04x, want 0x3c00 (1.0)", b.d);
    for (int j = 0; j < 16; j++) {
        CHECKF((b.qs[j] & 0x0f) == want[j], "element %d: %d, want %d", j, b.qs[j] & 0x0f, want[j]);
        CHECKF((b.qs[j] >> 4) == want[16 + j], "element %d: %d, want %d", 16 + j, b.qs[j] >> 4,
               want[16 + j]);
    }

    /* positive extreme: max = 16 gives d = -2; 16 -> 0, -14 -> (int)(7 + 8.5) = 15 */
    for (int j = 0; j < 32; j++)
        x[j] = 0.0f;
    x[0] = 16.0f;
    x[1] = -14.0f;
    x[2] = -16.0f; /* same magnitude as x[0], later: x[0] keeps the sign */
    quant_quantize_row_q4_0(x, &b, 32);
    CHECKF(b.d == 0xc000, "d = 0x%04x, want 0xc000 (-2.0)", b.d);
    CHECK((b.qs[0] & 0x0f) == 0 && (b.qs[1] & 0x0f) == 15 && (b.qs[2] & 0x0f) == 15);
    CHECK((b.qs[0] >> 4) == 8);
}

static void
test_zero_blocks(void)
{
    float x[32] = {0}, y[32];
    struct block_q8_0 b8;
    struct block_q4_0 b4;

    quant_quantize_row_q8_0(x, &b8, 32);
    CHECK(b8.d == 0);
    for (int j = 0; j < 32; j++)
        CHECK(b8.qs[j] == 0);
    quant_quantize_row_q4_0(x, &b4, 32);
    CHECK(b4.d == 0x8000); /* 0 / -8 is -0, as ggml stores it */
    for (int j = 0; j < 16; j++)
        CHECK(b4.qs[j] == 0x88);
    quant_dequantize_row_q4_0(&b4, y, 32);
    for (int j = 0; j < 32; j++)
        CHECK(y[j] == 0.0f);
}

/* Q4_1 from raw bytes: d = 0.5, m = -1, nibble j of the low half j, of the high half 15 - j. */
static void
test_q4_1_known_block(void)
{
    struct block_q4_1 b;
    float x[32], y[32];

    b.d = 0x3800;
    b.m = 0xbc00;
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | ((15 - j) << 4));
    quant_dequantize_row_q4_1(&b, y, 32);
    for (int j = 0; j < 16; j++) {
        CHECKF(y[j] == (float)j * 0.5f - 1.0f, "y[%d] = %g", j, y[j]);
        CHECKF(y[j + 16] == (float)(15 - j) * 0.5f - 1.0f, "y[%d] = %g", j + 16, y[j + 16]);
    }
    /* min -3, max 12: d = 1, q = min(15, (int)(x + 3 + 0.5)) */
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j % 16) - 3.0f;
    x[1] = -2.6f; /* 0.9 -> 0 */
    x[2] = -2.4f; /* 1.1 -> 1 */
    x[3] = -1.5f; /* 2.0 -> 2 */
    quant_quantize_row_q4_1(x, &b, 32);
    CHECK(b.d == 0x3c00 && b.m == 0xc200); /* 1.0, -3.0 */
    CHECK(b.qs[0] == 0x00 && b.qs[1] == 0x10 && b.qs[2] == 0x21 && b.qs[3] == 0x32);
    CHECK(b.qs[15] == 0xff);
}

/* Q5_0: d = 1, nibbles j, 5th bits only for elements 0 and 31; value = q - 16. */
static void
test_q5_0_known_block(void)
{
    struct block_q5_0 b;
    float x[32], y[32];

    b.d = 0x3c00;
    for (int j = 0; j < 16; j++)
        b.qs[j] = (uint8_t)(j | (j << 4));
    b.qh[0] = 0x01;
    b.qh[1] = b.qh[2] = 0x00;
    b.qh[3] = 0x80;
    quant_dequantize_row_q5_0(&b, y, 32);
    CHECK(y[0] == 0.0f && y[31] == 15.0f);
    for (int j = 1; j < 16; j++)
        CHECKF(y[j] == (float)(j - 16), "y[%d] = %g", j, y[j]);
    for (int j = 0; j < 15; j++)
        CHECKF(y[16 + j] == (float)(j - 16), "y[%d] = %g", 16 + j, y[16 + j]);

    /* extreme -16: d = 1, q = min(31, (int)(x + 16.5)) */
    memset(x, 0, sizeof(x));
    x[0] = -16.0f; /* 0 */
    x[1] = 15.6f;  /* 32 clips to 31 */
    x[2] = 0.5f;   /* 17 */
    x[20] = -0.6f; /* 15 */
    quant_quantize_row_q5_0(x, &b, 32);
    CHECK(b.d == 0x3c00);
    CHECK(b.qs[0] == 0x00 && b.qs[1] == 0x0f && b.qs[2] == 0x01 && b.qs[4] == 0xf0);
    CHECKF(b.qh[0] == 0xfe && b.qh[1] == 0xff && b.qh[2] == 0xef && b.qh[3] == 0xff,
           "qh %02x %02x %02x %02x", b.qh[0], b.qh[1], b.qh[2], b.qh[3]);
}

/* Q5_1: d = 0.25, m = 2, every quant 31 but elements 0..7 (5th bit cleared: 15). */
static void
test_q5_1_known_block(void)
{
    struct block_q5_1 b;
    float y[32];

    b.d = 0x3400;
    b.m = 0x4000;
    memset(b.qs, 0xff, sizeof(b.qs));
    memset(b.qh, 0xff, sizeof(b.qh));
    b.qh[0] = 0x00;
    quant_dequantize_row_q5_1(&b, y, 32);
    for (int j = 0; j < 32; j++)
        CHECKF(y[j] == (j < 8 ? 5.75f : 9.75f), "y[%d] = %g", j, y[j]);
}

/* An element index and the value a hand-made super-block must give there. */
struct known {
    int e;
    float v;
};

static void
check_known(const char *type, const float *y, const struct known *k, size_t n)
{
    for (size_t i = 0; i < n; i++)
        CHECKF(y[k[i].e] == k[i].v, "%s element %d: %g, want %g", type, k[i].e, y[k[i].e], k[i].v);
}

/*
 * Q2_K: d = 1, dmin = 0.5, sub-block j has scale j and min 15 - j; every qs byte 0xe4 makes the
 * quant of element 128 h + 32 g + l equal to g. Element 200 is in sub-block 12 with q = 2.
 */
static void
test_q2_k_known_block(void)
{
    struct block_q2_k b;
    float y[256];
    static const struct known k[] = {{0, -7.5f},   {16, -7.0f},  {40, -4.5f},
                                     {200, 22.5f}, {255, 45.0f}, {127, 17.0f}};

    b.d = 0x3c00;
    b.dmin = 0x3800;
    for (int j = 0; j < 16; j++)
        b.scales[j] = (uint8_t)(j | ((15 - j) << 4));
    memset(b.qs, 0xe4, sizeof(b.qs));
    quant_dequantize_row_q2_k(&b, y, 256);
    check_known("q2_k", y, k, sizeof(k) / sizeof(k[0]));
}

/*
 * Q3_K: d = 1, every scale code 33 (scale 1) but code 0 = 17 (the high bits in scales[8] set to
 * 01: scale -15) and code 8 = 35 (its low nibble, the high nibble of scales[0], 3: scale 3); low
 * bits g as in Q2_K; every high bit set (no -4) but those of elements 0 and 128.
 */
static void
test_q3_k_known_block(void)
{
    struct block_q3_k b;
    float y[256];
    static const struct known k[] = {{0, 60.0f},    {1, 0.0f},   {32, 1.0f},
                                     {128, -12.0f}, {129, 0.0f}, {255, 3.0f}};

    b.d = 0x3c00;
    memset(b.scales, 0x11, 8);
    memset(b.scales + 8, 0xaa, 4);
    b.scales[8] = 0xa9;
    b.scales[0] = 0x31;
    memset(b.qs, 0xe4, sizeof(b.qs));
    memset(b.hmask, 0xff, sizeof(b.hmask));
    b.hmask[0] = 0xee; /* bit 0 (h 0, g 0) and bit 4 (h 1, g 0) of element l = 0 */
    quant_dequantize_row_q3_k(&b, y, 256);
    check_known("q3_k", y, k, sizeof(k) / sizeof(k[0]));
}

/*
 * Q4_K / Q5_K scales: 6-bit scales 1, 2, 3, 4, 17, 33, 49, 63 and mins 0, 1, 2, 3, 16, 32, 48, 63
 * packed by hand; d = 1, dmin = 0.5; every qs byte 0x5a (low nibble 10, high 5). Sub-block j's
 * value is scale * q - min / 2: 10, 9.5, 29, 18.5, 162, 149, 466, 283.5.
 */
static const uint8_t k_scales[12] = {0x41, 0x82, 0xc3, 0xc4, 0x40, 0x81,
                                     0xc2, 0xc3, 0x01, 0x01, 0x01, 0xff};

static void
test_q4_k_known_block(void)
{
    struct block_q4_k b;
    float y[256];
    static const float sub[8] = {10.0f, 9.5f, 29.0f, 18.5f, 162.0f, 149.0f, 466.0f, 283.5f};

    b.d = 0x3c00;
    b.dmin = 0x3800;
    memcpy(b.scales, k_scales, 12);
    memset(b.qs, 0x5a, sizeof(b.qs));
    quant_dequantize_row_q4_k(&b, y, 256);
    for (int e = 0; e < 256; e++)
        CHECKF(y[e] == sub[e / 32], "element %d: %g, want %g", e, y[e], sub[e / 32]);
}

static void
test_q5_k_known_block(void)
{
    struct block_q5_k b;
    float y[256];
    static const struct known k[] = {
        {0, 26.0f}, {1, 10.0f}, {33, 9.5f}, {224, 1291.5f}, {225, 283.5f}};

    b.d = 0x3c00;
    b.dmin = 0x3800;
    memcpy(b.scales, k_scales, 12);
    memset(b.qs, 0x5a, sizeof(b.qs));
    memset(b.qh, 0, sizeof(b.qh));
    b.qh[0] = 0x81; /* 5th bit of element 0 (bit 0) and of element 64 * 3 + 32 (bit 7) */
    quant_dequantize_row_q5_k(&b, y, 256);
    check_known("q5_k", y, k, sizeof(k) / sizeof(k[0]));
}

/*
 * Q6_K: d = 0.5, scales j - 8; every ql byte 0x21 and qh byte 0xe4, so in each half elements
 * l, l + 32, l + 64, l + 96 hold 1, 17, 34, 50 (minus 32: -31, -15, 2, 18).
 */
static void
test_q6_k_known_block(void)
{
    struct block_q6_k b;
    float y[256];
    static const struct known k[] = {{0, 124.0f},  {16, 108.5f}, {32, 45.0f},   {64, -4.0f},
                                     {96, -18.0f}, {128, 0.0f},  {160, -15.0f}, {255, 63.0f}};

    b.d = 0x3800;
    for (int j = 0; j < 16; j++)
        b.scales[j] = (int8_t)(j - 8);
    memset(b.ql, 0x21, sizeof(b.ql));
    memset(b.qh, 0xe4, sizeof(b.qh));
    quant_dequantize_row_q6_k(&b, y, 256);
    check_known("q6_k", y, k, sizeof(k) / sizeof(k[0]));
}

/* Q8_K: amax 127 gives d = 1 (a float), q = round(x), and bsums the sums of 16. */
static void
test_q8_k_known_block(void)
{
    struct block_q8_k b;
    float x[256], y[256];

    for (int e = 0; e < 256; e++)
        x[e] = (float)(e % 16) - 7.0f; /* each 16 sums to 8 */
    x[0] = -127.0f;                    /* sub-block 0 sums to 8 - 120 */
    x[17] = 2.5f;                      /* 3 (was -6) */
    x[18] = -2.5f;                     /* -3 (was -5) */
    quant_quantize_row_q8_k(x, &b, 256);
    CHECK(b.d == 1.0f);
    CHECK(b.qs[0] == -127 && b.qs[17] == 3 && b.qs[18] == -3 && b.qs[255] == 8);
    CHECKF(b.bsums[0] == -112 && b.bsums[1] == 19 && b.bsums[15] == 8, "bsums %d %d %d", b.bsums[0],
           b.bsums[1], b.bsums[15]);
    quant_dequantize_row_q8_k(&b, y, 256);
    CHECK(y[0] == -127.0f && y[17] == 3.0f && y[200] == x[200]);
}

/*
 * Round trip of random rows of several scales through each type; the bound per element:
 * f16 / bf16: half an ulp (relative 2^-11 / 2^-8) for values in the normal range;
 * q8_0: d/2 plus 127 times the error of storing d as a half (h = max(d 2^-11, 2^-25): relative
 * for normal halves, absolute below 2^-14), d = amax / 127;
 * q4_0: d/2 plus 8 h where the quant is not clipped, d + 8 h where it is (the extreme opposite
 * the element of largest magnitude maps to 15, i.e. 7 d, not 8 d).
 */
static void
test_round_trip_bounds(void)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t buf[N * 4];
    static const float scales[] = {1e-3f, 0.02f, 1.0f, 300.0f};

    for (size_t s = 0; s < sizeof(scales) / sizeof(scales[0]); s++) {
        synth_rand_normal(7, s, 0, N, 0.0f, scales[s], x);
        x[5] = 0.0f;
        x[77] = 4.0f * scales[s]; /* an outlier in one block */

        quant_quantize_row_f32(x, buf, N);
        quant_dequantize_row_f32(buf, y, N);
        CHECK(memcmp(x, y, sizeof(x)) == 0);

        quant_quantize_row_f16(x, buf, N);
        quant_dequantize_row_f16(buf, y, N);
        for (int i = 0; i < N; i++)
            CHECKF(fabsf(y[i] - x[i]) <= fmaxf(fabsf(x[i]) * 0x1p-11f, 0x1p-25f),
                   "f16 scale %g element %d: %g -> %g", scales[s], i, x[i], y[i]);

        quant_quantize_row_bf16(x, buf, N);
        quant_dequantize_row_bf16(buf, y, N);
        for (int i = 0; i < N; i++)
            CHECKF(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f,
                   "bf16 scale %g element %d: %g -> %g", scales[s], i, x[i], y[i]);

        quant_quantize_row_q8_0(x, buf, N);
        quant_dequantize_row_q8_0(buf, y, N);
        for (int k = 0; k < N / 32; k++) {
            float d = block_amax(x + k * 32) / 127.0f;
            for (int j = 0; j < 32; j++) {
                int i = k * 32 + j;

                CHECKF(fabsf(y[i] - x[i]) <=
                           (0.5f * d + 127.0f * fmaxf(d * 0x1p-11f, 0x1p-25f)) * 1.0001f,
                       "q8_0 scale %g element %d: %g -> %g (d %g)", scales[s], i, x[i], y[i], d);
            }
        }

        quant_quantize_row_q4_0(x, buf, N);
        quant_dequantize_row_q4_0(buf, y, N);
        for (int k = 0; k < N / 32; k++) {
            float d = block_amax(x + k * 32) / 8.0f;
            int n_clipped = 0;
            for (int j = 0; j < 32; j++) {
                int i = k * 32 + j;
                float e = fabsf(y[i] - x[i]);
                float fp16_err = 8.0f * fmaxf(d * 0x1p-11f, 0x1p-25f);

                if (fabsf(x[i]) > 7.5f * d) {
                    CHECKF(e <= (d + fp16_err) * 1.0001f, "q4_0 scale %g element %d: %g -> %g",
                           scales[s], i, x[i], y[i]);
                    n_clipped += e > (0.5f * d + fp16_err) * 1.0001f;
                } else {
                    CHECKF(e <= (0.5f * d + fp16_err) * 1.0001f,
                           "q4_0 scale %g element %d: %g -> %g (d %g)", scales[s], i, x[i], y[i],
                           d);
                }
            }
            /* at most the elements on the side opposite the extreme clip */
            CHECK(n_clipped <= 31);
        }
    }
}

/* The error of storing v as a half: half an ulp for normal halves, 2^-25 below them. */
static double
half_err(double v)
{
    return fmax(fabs(v) * 0x1p-11, 0x1p-25);
}

/*
 * Round trips of the other 32-element types, per element: Q5_0 as Q4_0 with 16 levels each side
 * (d = amax / 16; the extreme opposite the largest magnitude clips at 15 d, error up to d);
 * Q4_1 / Q5_1: d = (max - min) / 15 (31), error d/2 plus 15 (31) times d's half error plus m's;
 * Q8_1 as Q8_0, and its s within a half's rounding of d * sum(q).
 */
static void
test_round_trip_bounds_32(void)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static uint8_t buf[N * 2];
    static const float scales[] = {1e-3f, 0.02f, 1.0f, 300.0f};

    for (size_t s = 0; s < sizeof(scales) / sizeof(scales[0]); s++) {
        synth_rand_normal(7, s, 0, N, 0.0f, scales[s], x);
        x[77] = 4.0f * scales[s];
        x[100] = 2.0f * scales[s]; /* a block with its min > 0 */
        for (int j = 96; j < 128; j++)
            x[j] = fabsf(x[j]) + scales[s];

        quant_quantize_row_q5_0(x, buf, N);
        quant_dequantize_row_q5_0(buf, y, N);
        for (int k = 0; k < N / 32; k++) {
            double d = block_amax(x + k * 32) / 16.0, h = 16.0 * half_err(d);

            for (int i = k * 32; i < k * 32 + 32; i++) {
                double e = fabs((double)y[i] - x[i]);

                CHECKF(e <= ((fabs(x[i]) > 15.5 * d ? d : 0.5 * d) + h) * 1.0001,
                       "q5_0 scale %g element %d: %g -> %g", scales[s], i, x[i], y[i]);
            }
        }

        for (int levels = 15; levels <= 31; levels += 16) {
            (levels == 15 ? quant_quantize_row_q4_1 : quant_quantize_row_q5_1)(x, buf, N);
            (levels == 15 ? quant_dequantize_row_q4_1 : quant_dequantize_row_q5_1)(buf, y, N);
            for (int k = 0; k < N / 32; k++) {
                float lo = x[k * 32], hi = x[k * 32];

                for (int i = k * 32; i < k * 32 + 32; i++) {
                    lo = fminf(lo, x[i]);
                    hi = fmaxf(hi, x[i]);
                }
                double d = ((double)hi - lo) / levels;
                double bound = (0.5 * d + levels * half_err(d) + half_err(lo)) * 1.0001;
                for (int i = k * 32; i < k * 32 + 32; i++)
                    CHECKF(fabs((double)y[i] - x[i]) <= bound,
                           "q%d_1 scale %g element %d: %g -> %g", levels == 15 ? 4 : 5, scales[s],
                           i, x[i], y[i]);
            }
        }

        struct block_q8_1 *b = (struct block_q8_1 *)buf;
        quant_quantize_row_q8_1(x, buf, N);
        quant_dequantize_row_q8_1(buf, y, N);
        for (int k = 0; k < N / 32; k++) {
            double d = block_amax(x + k * 32) / 127.0, sum = 0.0;

            for (int i = k * 32; i < k * 32 + 32; i++) {
                CHECKF(fabs((double)y[i] - x[i]) <= (0.5 * d + 127.0 * half_err(d)) * 1.0001,
                       "q8_1 scale %g element %d: %g -> %g", scales[s], i, x[i], y[i]);
                sum += b[k].qs[i - k * 32];
            }
            CHECKF(fabs(fp16_to_f32(b[k].s) - (float)d * sum) <= half_err(d * sum) * 1.001,
                   "q8_1 block %d: s %g, d * sum %g", k, fp16_to_f32(b[k].s), d * sum);
        }
    }
}

/* The largest |x| and the range [min(0, min x), max(0, max x)] of n values. */
static void
span(const float *x, int n, double *amax, double *lo, double *hi)
{
    *amax = *lo = *hi = 0.0;
    for (int i = 0; i < n; i++) {
        *amax = fmax(*amax, fabs(x[i]));
        *lo = fmin(*lo, x[i]);
        *hi = fmax(*hi, x[i]);
    }
}

/*
 * Round trips of the K-quants: each element within half its sub-block's step.
 * Bounds from the data alone: a half rounded up is at most v (1 + 2^-10) + 2^-24 (subnormals).
 * Q2_K / Q4_K / Q5_K (quants 0..L, codes up to C): mins m_j = -min(0, min x) coded from
 * dm = max m_j / C, steps from need_j = (max_j + m_j + dm) / L coded from dd = max need_j / C:
 * error <= (need_j + dd) / 2. Q3_K / Q6_K (quants in [-L - 0.5, L - 0.5], L = 3.5 / 31.5):
 * need_j = amax_j / L, dd = max need_j / C, same bound. Q8_K: amax / 254.
 */
static double
half_up_bound(double v)
{
    return v * (1.0 + 0x1p-10) + 0x1p-24;
}

static void
check_round_trip_k(uint32_t type, const float *x, float scale)
{
    enum { N = 4096 };
    static float y[N];
    static uint8_t buf[N * 2];
    const struct type_traits *t = type_traits(type);
    static const struct {
        uint32_t type;
        int sub;
        bool sym;
        double levels, codes;
    } fmts[] = {
        {TYPE_Q2_K, 16, false, 3.0, 15.0},  {TYPE_Q3_K, 16, true, 3.5, 31.0},
        {TYPE_Q4_K, 32, false, 15.0, 63.0}, {TYPE_Q5_K, 32, false, 31.0, 63.0},
        {TYPE_Q6_K, 16, true, 31.5, 127.0},
    };
    size_t f = 0;
    while (fmts[f].type != type)
        f++;
    const int sub = fmts[f].sub, nsub = 256 / sub;
    const double levels = fmts[f].levels, codes = fmts[f].codes;

    t->from_float(x, buf, N);
    t->to_float(buf, y, N);
    for (int k = 0; k < N / 256; k++) {
        double amax[16], lo[16], hi[16], need[16], max_lo = 0.0, max_need = 0.0, dd;

        for (int j = 0; j < nsub; j++) {
            span(x + k * 256 + j * sub, sub, &amax[j], &lo[j], &hi[j]);
            max_lo = fmax(max_lo, -lo[j]);
        }
        for (int j = 0; j < nsub; j++) {
            need[j] = fmts[f].sym ? amax[j] / levels
                                  : (hi[j] - lo[j] + half_up_bound(max_lo / codes)) / levels;
            max_need = fmax(max_need, need[j]);
        }
        dd = half_up_bound(max_need / codes);
        for (int j = 0; j < nsub; j++) {
            for (int i = k * 256 + j * sub; i < k * 256 + (j + 1) * sub; i++)
                CHECKF(fabs((double)y[i] - x[i]) <= 0.5 * (need[j] + dd) * 1.0001 + 1e-30,
                       "%s scale %g element %d: %g -> %g (step <= %g)", t->name, scale, i, x[i],
                       y[i], need[j] + dd);
        }
    }
}

static void
test_round_trip_bounds_k(void)
{
    enum { N = 4096 };
    static float x[N], y[N];
    static struct block_q8_k b[N / 256];
    static const float scales[] = {1e-3f, 0.02f, 1.0f, 300.0f};

    for (size_t s = 0; s < sizeof(scales) / sizeof(scales[0]); s++) {
        synth_rand_normal(9, s, 0, N, 0.0f, scales[s], x);
        x[77] = 6.0f * scales[s]; /* an outlier, so the other sub-blocks get small scale codes */
        for (int i = 512; i < 544; i++)
            x[i] = fabsf(x[i]) + scales[s]; /* a sub-block with its min > 0 */
        for (int i = 1024; i < 1280; i++)
            x[i] = -fabsf(x[i]); /* a super-block of negative values */
        for (int i = 2048; i < 2080; i++)
            x[i] = 0.0f; /* a zero sub-block */

        check_round_trip_k(TYPE_Q2_K, x, scales[s]);
        check_round_trip_k(TYPE_Q3_K, x, scales[s]);
        check_round_trip_k(TYPE_Q4_K, x, scales[s]);
        check_round_trip_k(TYPE_Q5_K, x, scales[s]);
        check_round_trip_k(TYPE_Q6_K, x, scales[s]);

        quant_quantize_row_q8_k(x, b, N);
        quant_dequantize_row_q8_k(b, y, N);
        for (int k = 0; k < N / 256; k++) {
            double amax, lo, hi;

            span(x + k * 256, 256, &amax, &lo, &hi);
            for (int i = k * 256; i < k * 256 + 256; i++)
                CHECKF(fabs((double)y[i] - x[i]) <= amax / 254.0 * 1.0001,
                       "q8_k scale %g element %d: %g -> %g", scales[s], i, x[i], y[i]);
            for (int j = 0; j < 16; j++) {
                int sum = 0;

                for (int i = 0; i < 16; i++)
                    sum += b[k].qs[16 * j + i];
                CHECK(b[k].bsums[j] == sum);
            }
        }
    }
    /* all zero: zero scales and quants, zero values */
    static const uint32_t types[] = {TYPE_Q2_K, TYPE_Q3_K, TYPE_Q4_K,
                                     TYPE_Q5_K, TYPE_Q6_K, TYPE_Q8_K};
    static uint8_t buf[N * 2];
    memset(x, 0, sizeof(x));
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        type_traits(types[t])->from_float(x, buf, 256);
        type_traits(types[t])->to_float(buf, y, 256);
        for (int i = 0; i < 256; i++)
            CHECKF(y[i] == 0.0f, "%s element %d: %g", type_traits(types[t])->name, i, y[i]);
    }
}

/* Dequantizing what was quantized and quantizing again gives the same bytes (a fixed point). */
static void
test_requantize_is_stable(void)
{
    enum { N = 1024 };
    static float x[N], y[N];
    static uint8_t a[N * 2], b[N * 2];
    /* not Q8_1: its s = d * sum(q) uses the float d, which the round trip moves by an ulp */
    static const uint32_t types[] = {TYPE_F16,  TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0,
                                     TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1};

    synth_rand_normal(11, 0, 0, N, 0.0f, 0.5f, x);
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        const struct type_traits *f = type_traits(types[t]);
        size_t bytes = type_row_size(types[t], N);

        f->from_float(x, a, N);
        f->to_float(a, y, N);
        f->from_float(y, b, N);
        CHECKF(memcmp(a, b, bytes) == 0, "type %s", type_traits(types[t])->name);
    }
}

/*
 * A row of n elements of the type at buf: quantized from noise (seed 1), or for the K-quants
 * with seed 2 random bytes with sane scales, so every bit pattern of their scales, mins and quants
 * is met.
 */
static void
random_row(uint32_t type, uint64_t seed, void *buf, float *tmp, int64_t n)
{
    const struct type_traits *t = type_traits(type);
    uint8_t *p = buf;

    synth_rand_normal(seed, type, 0, n, 0.0f, 0.5f, tmp);
    if (t->blck < QUANT_QK_K || seed == 1) {
        t->from_float(tmp, buf, n);
        return;
    }
    for (size_t i = 0; i < type_row_size(type, (uint64_t)n); i++)
        p[i] = (uint8_t)synth_rand_bits(seed, type, i);
    for (int64_t k = 0; k < n / QUANT_QK_K; k++) {
        uint16_t d = f32_to_fp16(0.001f + 0.01f * synth_rand_uniform(seed, 1000 + type, k));
        uint16_t dmin = f32_to_fp16(0.001f + 0.01f * synth_rand_uniform(seed, 2000 + type, k));
        void *blk = p + k * t->size;

        switch (type) {
        case TYPE_Q2_K:
            ((struct block_q2_k *)blk)->d = d;
            ((struct block_q2_k *)blk)->dmin = dmin;
            break;
        case TYPE_Q3_K:
            ((struct block_q3_k *)blk)->d = d;
            break;
        case TYPE_Q4_K:
            ((struct block_q4_k *)blk)->d = d;
            ((struct block_q4_k *)blk)->dmin = dmin;
            break;
        case TYPE_Q5_K:
            ((struct block_q5_k *)blk)->d = d;
            ((struct block_q5_k *)blk)->dmin = dmin;
            break;
        default: /* Q6_K */
            ((struct block_q6_k *)blk)->d = d;
            break;
        }
    }
}

/*
 * The largest offset term of element e of a row: |m| for Q4_1 / Q5_1, dmin times the largest
 * min code for Q2_K / Q4_K / Q5_K, else 0. It bounds the terms a dot product cancels.
 */
static double
offset_bound(uint32_t type, const void *row, int64_t e)
{
    const uint8_t *p = row;
    const struct type_traits *t = type_traits(type);
    const void *blk = p + (e / t->blck) * t->size;

    switch (type) {
    case TYPE_Q4_1:
        return fabs(fp16_to_f32(((const struct block_q4_1 *)blk)->m));
    case TYPE_Q5_1:
        return fabs(fp16_to_f32(((const struct block_q5_1 *)blk)->m));
    case TYPE_Q2_K:
        return 15.0 * fabs(fp16_to_f32(((const struct block_q2_k *)blk)->dmin));
    case TYPE_Q4_K:
        return 63.0 * fabs(fp16_to_f32(((const struct block_q4_k *)blk)->dmin));
    case TYPE_Q5_K:
        return 63.0 * fabs(fp16_to_f32(((const struct block_q5_k *)blk)->dmin));
    default:
        return 0.0;
    }
}

/*
 * vec_dot of the row xq (n elements of the type) with noise activations quantized to its
 * vec_dot_type, against the dot product (in double) of the dequantized row and activations. They
 * differ only by float rounding: at most (additions in sequence + 8) * 2^-24 times the sum of
 * |x_e y_e| plus the cancelled offset terms, and for Q8_1 activations by the rounding of the
 * stored s (|m| |s - d sum(q)| per block). what names the row in messages.
 */
static void
check_vec_dot(uint32_t type, const void *xq, int64_t n, uint64_t seed, const char *what)
{
    const struct type_traits *t = type_traits(type);
    const struct type_traits *yt = type_traits(t->vec_dot_type);
    float *xf = malloc((size_t)n * sizeof(float)), *yf = malloc((size_t)n * sizeof(float));
    uint8_t *yq = malloc((size_t)n * sizeof(float));
    double ref = 0.0, mag = 0.0, s_err = 0.0;

    if (xf == NULL || yf == NULL || yq == NULL) {
        harness_fail(__FILE__, __LINE__, "out of memory");
        goto out;
    }
    synth_rand_normal(seed, 100 + type, 0, n, 0.0f, 1.0f, yf);
    yt->from_float(yf, yq, n);
    t->to_float(xq, xf, n);
    yt->to_float(yq, yf, n);
    for (int64_t e = 0; e < n; e++) {
        ref += (double)xf[e] * yf[e];
        mag += (fabs(xf[e]) + 2.0 * offset_bound(type, xq, e)) * fabs(yf[e]);
    }
    if (t->vec_dot_type == TYPE_Q8_1) {
        const struct block_q8_1 *y1 = (const struct block_q8_1 *)yq;

        for (int64_t k = 0; k < n / 32; k++) {
            double sum = 0.0;

            for (int j = 0; j < 32; j++)
                sum += y1[k].qs[j];
            s_err += offset_bound(type, xq, k * 32) *
                     fabs(fp16_to_f32(y1[k].s) - fp16_to_f32(y1[k].d) * sum);
        }
    }
    float got = t->vec_dot(xq, yq, n);
    double bound = (double)(n / t->blck + 8) * 0x1p-24 * mag + s_err * 1.001;

    CHECKF(fabs(got - ref) <= bound, "%s %s: vec_dot %.9g, float dot %.9g (bound %g)", t->name,
           what, got, ref, bound);
    /* and the bound is tight enough to matter: a hundredth of the dot's magnitude at most */
    CHECKF(bound < 0.01 * mag, "%s %s: bound %g of %g", t->name, what, bound, mag);
out:
    free(xf);
    free(yf);
    free(yq);
}

/* Each type's vec_dot on rows quantized from noise (seed 1) and, for the K-quants, random bytes. */
static void
test_vec_dot_against_float(void)
{
    enum { N = 4096 };
    static const uint32_t types[] = {TYPE_F32,  TYPE_F16,  TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0,
                                     TYPE_Q4_1, TYPE_Q5_0, TYPE_Q5_1, TYPE_Q2_K, TYPE_Q3_K,
                                     TYPE_Q4_K, TYPE_Q5_K, TYPE_Q6_K};
    static uint8_t xq[N * 4];
    static float tmp[N];

    for (uint64_t seed = 1; seed <= 2; seed++) {
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
            random_row(types[i], seed, xq, tmp, N);
            check_vec_dot(types[i], xq, N, seed, seed == 1 ? "quantized noise" : "random bytes");
        }
    }
}

/* vec_dot is linear in its row: one element flipped changes the dot by that product alone. */
static void
test_vec_dot_single_element(void)
{
    struct block_q8_k y[1];
    struct block_q4_k x;
    float ones[256], yf[256];

    for (int e = 0; e < 256; e++)
        ones[e] = (float)(e % 7) - 3.0f;
    quant_quantize_row_q8_k(ones, y, 256);
    quant_dequantize_row_q8_k(y, yf, 256);
    memset(&x, 0, sizeof(x));
    x.d = 0x3c00; /* 1.0 */
    x.scales[0] = 1;
    x.qs[0] = 0x03; /* element 0: scale 1, q 3 */
    CHECK(quant_vec_dot_q4_k(&x, y, 256) == 3.0f * yf[0]);
    x.qs[0] = 0x30; /* element 32: scale of sub-block 1 (0): nothing */
    CHECK(quant_vec_dot_q4_k(&x, y, 256) == 0.0f);
}

/* What a real file's tensors of one type are held to (see check_against_ref). */
struct real_case {
    const char *file, *ref; /* under ../shared */
    uint32_t type;
    size_t n_tensors; /* tensors of the type in the file */
    int sub;          /* elements per (sub-)block for the bound */
    bool sym;         /* step = amax / levels (symmetric types) or range / levels */
    double levels;
    double steps;      /* bound on |file - ref| in steps (plus the F16 rounding of ref) */
    double max_rmse;   /* bound on the RMS error relative to the RMS of the values */
    double max_differ; /* share of blocks our quantizer may write differently; < 0: not compared */
};

/*
 * The tensors of one type in a real file against the F16 or F32 file of the same model: both were
 * made from the same weights, so per (sub-)block the difference is at most the type's
 * quantization error plus the F16 rounding: `steps` steps, a step being amax / levels for the
 * symmetric types and (max(0, max) - min(0, min)) / levels for those with a min, over the
 * sub-block. A layout read wrongly (a scale or bit from the wrong place) breaks this bound by far.
 * The RMS error is held to the type's (measured, with a few % of margin). For the types whose
 * quantizer copies ggml's rounding, our quantizer applied to the reference values must reproduce
 * the file's blocks: each value within 1.2 steps (F16 rounding can move a value across a
 * rounding boundary, or nudge a stored scale by an ulp), at most max_differ of the blocks not
 * byte-identical.
 */
static void
check_against_ref(const struct real_case *c)
{
    char qpath[512], fpath[512], err[ERR_MSG_MAX];
    struct gguf *qg = NULL, *fg = NULL;
    float *want = NULL, *got = NULL, *again = NULL;
    uint8_t *requant = NULL;
    size_t n_tensors = 0, blocks = 0, differ = 0;
    double se = 0.0, sw = 0.0;
    const struct type_traits *tt = type_traits(c->type);

    if (!harness_shared(qpath, sizeof(qpath), c->file) ||
        !harness_shared(fpath, sizeof(fpath), c->ref))
        return;
    CHECKF(gguf_open(&qg, qpath, err) == ERR_OK, "%s", err);
    if (gguf_open(&fg, fpath, err) != ERR_OK) {
        gguf_close(qg);
        CHECKF(0, "%s", err);
    }
    for (size_t t = 0; t < gguf_n_tensors(qg); t++) {
        const struct gguf_tensor *q = gguf_tensor_at(qg, t);
        const struct gguf_tensor *f = gguf_find_tensor(fg, q->name);
        size_t n = q->n_elements;

        if (q->type != c->type)
            continue;
        if (f == NULL || f->n_elements != n || (f->type != TYPE_F16 && f->type != TYPE_F32)) {
            harness_fail(__FILE__, __LINE__, "%s: no matching F16/F32 tensor", q->name);
            goto out;
        }
        free(want);
        free(got);
        free(again);
        free(requant);
        want = malloc(n * sizeof(float));
        got = malloc(n * sizeof(float));
        again = malloc(n * sizeof(float));
        requant = malloc(n / tt->blck * tt->size);
        if (want == NULL || got == NULL || again == NULL || requant == NULL) {
            harness_fail(__FILE__, __LINE__, "out of memory");
            goto out;
        }
        type_traits(f->type)->to_float(f->data, want, (int64_t)n);
        tt->to_float(q->data, got, (int64_t)n);
        if (c->max_differ >= 0.0) {
            tt->from_float(want, requant, (int64_t)n);
            tt->to_float(requant, again, (int64_t)n);
        }
        for (size_t k = 0; k < n / (size_t)c->sub; k++) {
            double amax, lo, hi, step;

            span(want + k * c->sub, c->sub, &amax, &lo, &hi);
            step = (c->sym ? amax : hi - lo) / c->levels;
            for (size_t i = k * c->sub; i < (k + 1) * c->sub; i++) {
                double e = fabs((double)got[i] - want[i]);

                se += e * e;
                sw += (double)want[i] * want[i];
                if (e > c->steps * step + fabs(want[i]) * 0x1p-11) {
                    harness_fail(__FILE__, __LINE__, "%s element %zu: %g in %s, %g in %s (step %g)",
                                 q->name, i, got[i], c->file, want[i], c->ref, step);
                    goto out;
                }
                if (c->max_differ >= 0.0 && fabs((double)again[i] - got[i]) > 1.2 * step) {
                    harness_fail(__FILE__, __LINE__,
                                 "%s element %zu: requantized %g, file %g (step %g)", q->name, i,
                                 again[i], got[i], step);
                    goto out;
                }
            }
        }
        check_vec_dot(c->type, q->data, q->ne[0], 3, q->name); /* the first row */
        for (size_t k = 0; c->max_differ >= 0.0 && k < n / tt->blck; k++) {
            differ += memcmp(requant + k * tt->size, (const uint8_t *)q->data + k * tt->size,
                             tt->size) != 0;
            blocks++;
        }
        n_tensors++;
    }
    CHECKF(n_tensors == c->n_tensors, "%s: %zu tensors of type %s, want %zu", c->file, n_tensors,
           tt->name, c->n_tensors);
    CHECKF(sqrt(se / sw) <= c->max_rmse, "%s %s: relative RMS error %.4f, want <= %.4f", c->file,
           tt->name, sqrt(se / sw), c->max_rmse);
    CHECKF((double)differ <= c->max_differ * (double)blocks,
           "%s: %zu of %zu blocks differ when requantized from %s", c->file, differ, blocks,
           c->ref);
out:
    free(want);
    free(got);
    free(again);
    free(requant);
    gguf_close(qg);
    gguf_close(fg);
}

#define SMALL(name) "models/small/p-llama-gqa-" name ".gguf"
#define F16_REF     SMALL("F16")

/*
 * The scales amax / 127 (Q8_0) and (max - min) / 15 or 31 (Q4_1, Q5_1) move by an ulp with the
 * F16 rounding of the values, so many blocks differ; Q4_0's and Q5_0's (m / -8, m / -16) survive
 * it, only values on a rounding boundary differ.
 */
static void
test_real_32_types_against_f16(void)
{
    static const struct real_case cases[] = {
        {SMALL("Q8_0"), F16_REF, TYPE_Q8_0, 16, 32, true, 127.0, 0.57, 0.006, 0.6},
        {SMALL("Q4_0"), F16_REF, TYPE_Q4_0, 15, 32, true, 8.0, 1.01, 0.09, 0.05},
        {SMALL("Q4_1"), F16_REF, TYPE_Q4_1, 15, 32, false, 15.0, 0.55, 0.082, 0.3},
        {SMALL("Q5_0"), F16_REF, TYPE_Q5_0, 15, 32, true, 16.0, 1.01, 0.045, 0.05},
        {SMALL("Q5_1"), F16_REF, TYPE_Q5_1, 15, 32, false, 31.0, 0.55, 0.04, 0.3},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_against_ref(&cases[i]);
}

/* Every K-quant type in the pure files and the llama-quantize mixes. */
static void
test_real_k_types_against_f16(void)
{
    static const struct real_case cases[] = {
        {SMALL("pure-Q2_K"), F16_REF, TYPE_Q2_K, 16, 16, false, 3.0, 1.25, 0.31, -1.0},
        {SMALL("pure-Q3_K"), F16_REF, TYPE_Q3_K, 16, 16, true, 4.0, 1.25, 0.16, -1.0},
        {SMALL("pure-Q4_K"), F16_REF, TYPE_Q4_K, 16, 32, false, 15.0, 1.25, 0.075, -1.0},
        {SMALL("pure-Q5_K"), F16_REF, TYPE_Q5_K, 16, 32, false, 31.0, 1.4, 0.038, -1.0},
        {SMALL("Q6_K"), F16_REF, TYPE_Q6_K, 16, 16, true, 32.0, 1.1, 0.019, -1.0},
        {SMALL("Q2_K"), F16_REF, TYPE_Q2_K, 9, 16, false, 3.0, 1.25, 0.31, -1.0},
        {SMALL("Q2_K"), F16_REF, TYPE_Q3_K, 4, 16, true, 4.0, 1.25, 0.16, -1.0},
        {SMALL("Q2_K"), F16_REF, TYPE_Q4_K, 2, 32, false, 15.0, 1.25, 0.075, -1.0},
        {SMALL("Q2_K"), F16_REF, TYPE_Q6_K, 1, 16, true, 32.0, 1.1, 0.019, -1.0},
        {SMALL("Q3_K_M"), F16_REF, TYPE_Q3_K, 9, 16, true, 4.0, 1.25, 0.16, -1.0},
        {SMALL("Q3_K_M"), F16_REF, TYPE_Q5_K, 2, 32, false, 31.0, 1.4, 0.038, -1.0},
        {SMALL("Q4_K_M"), F16_REF, TYPE_Q4_K, 13, 32, false, 15.0, 1.25, 0.075, -1.0},
        {SMALL("Q4_K_M"), F16_REF, TYPE_Q6_K, 3, 16, true, 32.0, 1.1, 0.019, -1.0},
        {SMALL("Q5_K_M"), F16_REF, TYPE_Q5_K, 13, 32, false, 31.0, 1.4, 0.038, -1.0},
        {SMALL("Q5_K_M"), F16_REF, TYPE_Q6_K, 3, 16, true, 32.0, 1.1, 0.019, -1.0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_against_ref(&cases[i]);
}

/*
 * Other models and their F32 originals: the Qwen2 Q4_K_M mix and Q8_0 file, and stories260K's
 * K-quant files, whose rows of 64 and 172 fell back to Q5_0, Q5_1 and Q8_0 (and F16 for rows of
 * 172). Quantized from the same F32 values, our Q5_0 / Q5_1 / Q8_0 blocks are byte-identical.
 */
static void
test_real_mixes_against_f32(void)
{
#define STORIES(name) "models/derived/stories260K-" name ".gguf"
#define qwen          "models/small/p-qwen2-bias-Q4_K_M.gguf"
#define qwen_ref      "models/small/p-qwen2-bias-F32.gguf"
#define qwen_q8       "models/small/p-qwen2-bias-Q8_0.gguf"
#define stories_ref   "models/stories260K.gguf"
    static const struct real_case cases[] = {
        {qwen, qwen_ref, TYPE_Q4_K, 12, 32, false, 15.0, 1.25, 0.075, -1.0},
        {qwen, qwen_ref, TYPE_Q6_K, 3, 16, true, 32.0, 1.1, 0.019, -1.0},
        {STORIES("Q4_K_M"), stories_ref, TYPE_Q5_0, 29, 32, true, 16.0, 1.01, 0.045, 0.0},
        {STORIES("Q4_K_M"), stories_ref, TYPE_Q8_0, 3, 32, true, 127.0, 0.57, 0.006, 0.0},
        {STORIES("Q5_K_M"), stories_ref, TYPE_Q5_1, 29, 32, false, 31.0, 0.55, 0.04, 0.0},
        {STORIES("Q6_K"), stories_ref, TYPE_Q8_0, 32, 32, true, 127.0, 0.57, 0.006, 0.0},
        {qwen_q8, qwen_ref, TYPE_Q8_0, 15, 32, true, 127.0, 0.57, 0.006, 0.0},
    };
#undef STORIES
#undef qwen
#undef qwen_ref
#undef qwen_q8
#undef stories_ref

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        check_against_ref(&cases[i]);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_block_sizes_match_type_table),
        TEST(test_type_table_kernels),
        TEST(test_q8_0_known_block),
        TEST(test_q4_0_known_block_dequantize),
        TEST(test_q4_0_known_block_quantize),
        TEST(test_zero_blocks),
        TEST(test_q4_1_known_block),
        TEST(test_q5_0_known_block),
        TEST(test_q5_1_known_block),
        TEST(test_q2_k_known_block),
        TEST(test_q3_k_known_block),
        TEST(test_q4_k_known_block),
        TEST(test_q5_k_known_block),
        TEST(test_q6_k_known_block),
        TEST(test_q8_k_known_block),
        TEST(test_round_trip_bounds),
        TEST(test_round_trip_bounds_32),
        TEST(test_round_trip_bounds_k),
        TEST(test_requantize_is_stable),
        TEST(test_vec_dot_against_float),
        TEST(test_vec_dot_single_element),
        TEST(test_real_32_types_against_f16),
        TEST(test_real_k_types_against_f16),
        TEST(test_real_mixes_against_f32),
        {0},
    };
    return harness_run(tests, argc, argv);
}
