/*
 * quant.c: scalar reference row conversions between F32 and F32/F16/BF16/Q8_0/Q4_0, and the table
 * that finds them by type id. Written for clarity, one element at a time; the quantizers reproduce
 * the rounding of ggml's reference quantizers (llama-quantize without an importance matrix).
 * Not here: dot products and SIMD kernels.
 */
#include "workerd/engine/quant.h"

#include "workerd/engine/types.h"

#include <math.h>
#include <string.h>

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

void
quant_dequantize_row_q8_0(const void *src, float *dst, int64_t n)
{
    const struct block_q8_0 *b = src;

    for (int64_t k = 0; k < n / QUANT_QK8_0; k++) {
        float d = fp16_to_f32(b[k].d);

        for (int j = 0; j < QUANT_QK8_0; j++)
            dst[k * QUANT_QK8_0 + j] = (float)b[k].qs[j] * d;
    }
}

void
quant_quantize_row_q8_0(const float *src, void *dst, int64_t n)
{
    struct block_q8_0 *b = dst;

    for (int64_t k = 0; k < n / QUANT_QK8_0; k++) {
        const float *x = src + k * QUANT_QK8_0;
        float amax = 0.0f;

        for (int j = 0; j < QUANT_QK8_0; j++)
            amax = fmaxf(amax, fabsf(x[j]));
        /* the quants are computed with the float scale; the stored scale is its half */
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;

        b[k].d = f32_to_fp16(d);
        for (int j = 0; j < QUANT_QK8_0; j++)
            b[k].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void
quant_dequantize_row_q4_0(const void *src, float *dst, int64_t n)
{
    const struct block_q4_0 *b = src;
    const int half = QUANT_QK4_0 / 2;

    for (int64_t k = 0; k < n / QUANT_QK4_0; k++) {
        float d = fp16_to_f32(b[k].d);
        float *y = dst + k * QUANT_QK4_0;

        for (int j = 0; j < half; j++) {
            y[j] = (float)((b[k].qs[j] & 0x0f) - 8) * d;
            y[j + half] = (float)((b[k].qs[j] >> 4) - 8) * d;
        }
    }
}

void
quant_quantize_row_q4_0(const float *src, void *dst, int64_t n)
{
    struct block_q4_0 *b = dst;
    const int half = QUANT_QK4_0 / 2;

    for (int64_t k = 0; k < n / QUANT_QK4_0; k++) {
        const float *x = src + k * QUANT_QK4_0;
        float amax = 0.0f, max = 0.0f;

        /* the element of largest magnitude, keeping its sign; the first one wins a tie */
        for (int j = 0; j < QUANT_QK4_0; j++) {
            if (fabsf(x[j]) > amax) {
                amax = fabsf(x[j]);
                max = x[j];
            }
        }
        float d = max / -8.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;

        b[k].d = f32_to_fp16(d);
        for (int j = 0; j < half; j++) {
            /* x/d + 8 lies in [0, 16]; +0.5 and truncation round it, 16 clips to 15 */
            int q0 = (int8_t)(x[j] * id + 8.5f);
            int q1 = (int8_t)(x[j + half] * id + 8.5f);

            q0 = q0 < 15 ? q0 : 15;
            q1 = q1 < 15 ? q1 : 15;
            b[k].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static const struct quant_row_fns row_fns[TYPE__COUNT] = {
    [TYPE_F32] = {quant_dequantize_row_f32, quant_quantize_row_f32},
    [TYPE_F16] = {quant_dequantize_row_f16, quant_quantize_row_f16},
    [TYPE_BF16] = {quant_dequantize_row_bf16, quant_quantize_row_bf16},
    [TYPE_Q8_0] = {quant_dequantize_row_q8_0, quant_quantize_row_q8_0},
    [TYPE_Q4_0] = {quant_dequantize_row_q4_0, quant_quantize_row_q4_0},
};

const struct quant_row_fns *
quant_row_fns(uint32_t type)
{
    if (type >= TYPE__COUNT || row_fns[type].to_float == NULL)
        return NULL;
    return &row_fns[type];
}
