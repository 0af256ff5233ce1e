/*
 * test_quant.c: tests of the scalar reference row conversions (workerd/engine/quant.c): block sizes
 * against the type table, hand-computed blocks in both directions, round trips within each type's
 * error bound, and the quantized tensors of real files (../shared/models/small) against the F16
 * file of the same model.
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
    CHECK(type_traits(TYPE_Q8_0)->size == sizeof(struct block_q8_0));
    CHECK(type_traits(TYPE_Q8_0)->blck == QUANT_QK8_0);
    CHECK(type_traits(TYPE_Q4_0)->size == sizeof(struct block_q4_0));
    CHECK(type_traits(TYPE_Q4_0)->blck == QUANT_QK4_0);
}

static void
test_row_fns_table(void)
{
    static const uint32_t have[] = {TYPE_F32, TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};

    for (size_t i = 0; i < sizeof(have) / sizeof(have[0]); i++) {
        const struct quant_row_fns *f = quant_row_fns(have[i]);

        CHECKF(f != NULL && f->to_float != NULL && f->from_float != NULL, "type %u", have[i]);
    }
    CHECK(quant_row_fns(TYPE_Q8_0)->to_float == quant_dequantize_row_q8_0);
    CHECK(quant_row_fns(TYPE_Q4_0)->from_float == quant_quantize_row_q4_0);
    CHECK(quant_row_fns(TYPE_Q4_K) == NULL);
    CHECK(quant_row_fns(TYPE_IQ2_XS) == NULL);
    CHECK(quant_row_fns(4) == NULL); /* an id ggml removed */
    CHECK(quant_row_fns(TYPE__COUNT) == NULL);
    CHECK(quant_row_fns(UINT32_MAX) == NULL);
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

/* Dequantizing what was quantized and quantizing again gives the same bytes (a fixed point). */
static void
test_requantize_is_stable(void)
{
    enum { N = 1024 };
    static float x[N], y[N];
    static uint8_t a[N * 2], b[N * 2];
    static const uint32_t types[] = {TYPE_F16, TYPE_BF16, TYPE_Q8_0, TYPE_Q4_0};

    synth_rand_normal(11, 0, 0, N, 0.0f, 0.5f, x);
    for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
        const struct quant_row_fns *f = quant_row_fns(types[t]);
        size_t bytes = type_row_size(types[t], N);

        f->from_float(x, a, N);
        f->to_float(a, y, N);
        f->from_float(y, b, N);
        CHECKF(memcmp(a, b, bytes) == 0, "type %s", type_traits(types[t])->name);
    }
}

/*
 * The quantized tensors of a real file against the F16 file of the same (F32) model: both were
 * made from the same weights, so per block the difference is at most the quantization error of
 * the type plus the F16 rounding (bound_in_d steps of d = amax / levels). Our quantizer applied to
 * the F16 values must reproduce the file's blocks: each value within one step (F16 rounding can
 * move a value across a rounding boundary, and for Q8_0 nudge the stored scale by an ulp), and at
 * most max_differ of the blocks not byte-identical.
 */
static void
check_against_f16(const char *qname, uint32_t qtype, double levels, double bound_in_d,
                  double max_differ)
{
    char qpath[512], fpath[512], err[ERR_MSG_MAX];
    struct gguf *qg = NULL, *fg = NULL;
    float *want = NULL, *got = NULL, *again = NULL;
    uint8_t *requant = NULL;
    size_t n_tensors = 0, blocks = 0, differ = 0;
    const struct quant_row_fns *fns = quant_row_fns(qtype);
    const size_t qk = type_traits(qtype)->blck, bsize = type_traits(qtype)->size;

    if (!harness_shared(qpath, sizeof(qpath), qname) ||
        !harness_shared(fpath, sizeof(fpath), "models/small/p-llama-gqa-F16.gguf"))
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

        if (q->type != qtype)
            continue;
        if (f == NULL || f->n_elements != n || f->type != TYPE_F16) {
            harness_fail(__FILE__, __LINE__, "%s: no matching F16 tensor", q->name);
            goto out;
        }
        free(want);
        free(got);
        free(again);
        free(requant);
        want = malloc(n * sizeof(float));
        got = malloc(n * sizeof(float));
        again = malloc(n * sizeof(float));
        requant = malloc(n / qk * bsize);
        if (want == NULL || got == NULL || again == NULL || requant == NULL) {
            harness_fail(__FILE__, __LINE__, "out of memory");
            goto out;
        }
        quant_dequantize_row_f16(f->data, want, (int64_t)n);
        fns->to_float(q->data, got, (int64_t)n);
        fns->from_float(want, requant, (int64_t)n);
        fns->to_float(requant, again, (int64_t)n);
        for (size_t k = 0; k < n / qk; k++) {
            double d = block_amax(want + k * qk) / levels;
            for (size_t j = 0; j < qk; j++) {
                size_t i = k * qk + j;

                if (fabs((double)got[i] - want[i]) > bound_in_d * d + fabs(want[i]) * 0x1p-11) {
                    harness_fail(__FILE__, __LINE__, "%s element %zu: %g in %s, %g in F16 (d %g)",
                                 q->name, i, got[i], qname, want[i], d);
                    goto out;
                }
                if (fabs((double)again[i] - got[i]) > 1.2 * d) {
                    harness_fail(__FILE__, __LINE__,
                                 "%s element %zu: requantized %g, file %g (d %g)", q->name, i,
                                 again[i], got[i], d);
                    goto out;
                }
            }
            differ += memcmp(requant + k * bsize, (const uint8_t *)q->data + k * bsize, bsize) != 0;
            blocks++;
        }
        n_tensors++;
    }
    if (n_tensors < 15)
        harness_fail(__FILE__, __LINE__, "%s: only %zu tensors of the type", qname, n_tensors);
    else if ((double)differ > max_differ * (double)blocks)
        harness_fail(__FILE__, __LINE__, "%s: %zu of %zu blocks differ when requantized from F16",
                     qname, differ, blocks);
out:
    free(want);
    free(got);
    free(again);
    free(requant);
    gguf_close(qg);
    gguf_close(fg);
}

/* Q8_0's scale amax / 127 moves with the F16 rounding of amax, so many blocks differ by a step. */
static void
test_real_q8_0_against_f16(void)
{
    check_against_f16("models/small/p-llama-gqa-Q8_0.gguf", TYPE_Q8_0, 127.0, 0.57, 0.6);
}

/* Q4_0's scale max / -8 survives F16 rounding exactly; only values on a boundary differ (~2%). */
static void
test_real_q4_0_against_f16(void)
{
    check_against_f16("models/small/p-llama-gqa-Q4_0.gguf", TYPE_Q4_0, 8.0, 1.01, 0.05);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_block_sizes_match_type_table),
        TEST(test_row_fns_table),
        TEST(test_q8_0_known_block),
        TEST(test_q4_0_known_block_dequantize),
        TEST(test_q4_0_known_block_quantize),
        TEST(test_zero_blocks),
        TEST(test_round_trip_bounds),
        TEST(test_requantize_is_stable),
        TEST(test_real_q8_0_against_f16),
        TEST(test_real_q4_0_against_f16),
        {0},
    };
    return harness_run(tests, argc, argv);
}
