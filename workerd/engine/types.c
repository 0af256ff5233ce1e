/*
 * types.c: the type table (ids and block layouts as GGUF defines them, and each type's scalar
 * reference kernels from quant.c) and the F16/BF16 scalar conversions.
 */
#include "workerd/engine/types.h"

#include "workerd/engine/quant.h"

#include <string.h>

/* The scalar reference kernels of a type: to_float, from_float, vec_dot, vec_dot_type. */
#define KERNELS(t, dot_type)                                                                       \
    quant_dequantize_row_##t, quant_quantize_row_##t, quant_vec_dot_##t, TYPE_##dot_type
#define ACTIVATION(t) quant_dequantize_row_##t, quant_quantize_row_##t, NULL, 0
#define NO_KERNELS    NULL, NULL, NULL, 0

static const struct type_traits traits[TYPE__COUNT] = {
    [TYPE_F32] = {"f32", 1, 4, true, KERNELS(f32, F32)},
    [TYPE_F16] = {"f16", 1, 2, true, KERNELS(f16, F32)},
    [TYPE_Q4_0] = {"q4_0", 32, 18, true, KERNELS(q4_0, Q8_0)},
    [TYPE_Q4_1] = {"q4_1", 32, 20, true, KERNELS(q4_1, Q8_1)},
    [TYPE_Q5_0] = {"q5_0", 32, 22, true, KERNELS(q5_0, Q8_0)},
    [TYPE_Q5_1] = {"q5_1", 32, 24, true, KERNELS(q5_1, Q8_1)},
    [TYPE_Q8_0] = {"q8_0", 32, 34, true, KERNELS(q8_0, Q8_0)},
    [TYPE_Q8_1] = {"q8_1", 32, 36, false, ACTIVATION(q8_1)},
    [TYPE_Q2_K] = {"q2_k", 256, 84, true, KERNELS(q2_k, Q8_K)},
    [TYPE_Q3_K] = {"q3_k", 256, 110, true, KERNELS(q3_k, Q8_K)},
    [TYPE_Q4_K] = {"q4_k", 256, 144, true, KERNELS(q4_k, Q8_K)},
    [TYPE_Q5_K] = {"q5_k", 256, 176, true, KERNELS(q5_k, Q8_K)},
    [TYPE_Q6_K] = {"q6_k", 256, 210, true, KERNELS(q6_k, Q8_K)},
    [TYPE_Q8_K] = {"q8_k", 256, 292, false, ACTIVATION(q8_k)},
    [TYPE_IQ2_XXS] = {"iq2_xxs", 256, 66, false, NO_KERNELS},
    [TYPE_IQ2_XS] = {"iq2_xs", 256, 74, false, NO_KERNELS},
    [TYPE_IQ3_XXS] = {"iq3_xxs", 256, 98, false, NO_KERNELS},
    [TYPE_IQ1_S] = {"iq1_s", 256, 50, false, NO_KERNELS},
    [TYPE_IQ4_NL] = {"iq4_nl", 32, 18, false, NO_KERNELS},
    [TYPE_IQ3_S] = {"iq3_s", 256, 110, false, NO_KERNELS},
    [TYPE_IQ2_S] = {"iq2_s", 256, 82, false, NO_KERNELS},
    [TYPE_IQ4_XS] = {"iq4_xs", 256, 136, false, NO_KERNELS},
    [TYPE_I8] = {"i8", 1, 1, false, NO_KERNELS},
    [TYPE_I16] = {"i16", 1, 2, false, NO_KERNELS},
    [TYPE_I32] = {"i32", 1, 4, false, NO_KERNELS},
    [TYPE_I64] = {"i64", 1, 8, false, NO_KERNELS},
    [TYPE_F64] = {"f64", 1, 8, false, NO_KERNELS},
    [TYPE_IQ1_M] = {"iq1_m", 256, 56, false, NO_KERNELS},
    [TYPE_BF16] = {"bf16", 1, 2, true, KERNELS(bf16, F32)},
    [TYPE_TQ1_0] = {"tq1_0", 256, 54, false, NO_KERNELS},
    [TYPE_TQ2_0] = {"tq2_0", 256, 66, false, NO_KERNELS},
    [TYPE_MXFP4] = {"mxfp4", 32, 17, false, NO_KERNELS},
};

const struct type_traits *
type_traits(uint32_t type)
{
    if (type >= TYPE__COUNT || traits[type].name == NULL)
        return NULL;
    return &traits[type];
}

size_t
type_row_size(uint32_t type, uint64_t n)
{
    const struct type_traits *t = type_traits(type);

    if (t == NULL || n % t->blck != 0)
        return 0;
    return (size_t)(n / t->blck) * t->size;
}

static uint32_t
f32_bits(float f)
{
    uint32_t u;

    memcpy(&u, &f, sizeof(u));
    return u;
}

static float
bits_f32(uint32_t u)
{
    float f;

    memcpy(&f, &u, sizeof(f));
    return f;
}

float
fp16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;

    if (exp == 0x1f) /* inf or NaN */
        return bits_f32(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        /* subnormal: man * 2^-24, exact in float */
        float v = (float)man * 0x1p-24f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t
f32_to_fp16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t abs = u & 0x7fffffffu;

    if (abs >= 0x7f800000u) /* inf or NaN (keep NaN quiet and nonzero) */
        return sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0);
    if (abs >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return sign | 0x7c00;
    if (abs < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* scale so the half's subnormal step (2^-24) becomes one unit, rounding to nearest even */
        float a = bits_f32(abs) * 0x1p24f;
        float r = __builtin_rintf(a); /* default rounding mode: nearest even */
        return sign | (uint16_t)r;
    }
    /* normal: drop 13 mantissa bits with round to nearest even */
    uint32_t rounded = abs + 0xfff + ((abs >> 13) & 1);
    return sign | (uint16_t)((rounded - 0x38000000u) >> 13);
}

float
bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t
f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);

    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a quiet NaN */
        return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}
