/*
 * test_types.c: the tensor type table (every GGUF id, block layouts) and the F16/BF16 conversions,
 * checked exhaustively over all 65536 half and bfloat16 values and against hand-computed roundings.
 */
#include "tests/harness.h"
#include "workerd/engine/types.h"

#include <math.h>
#include <string.h>

static void test_table_layouts(void)
{
    static const struct {
        uint32_t id;
        const char *name;
        uint32_t blck, size;
    } want[] = {
        {TYPE_F32, "f32", 1, 4},       {TYPE_F16, "f16", 1, 2},
        {TYPE_BF16, "bf16", 1, 2},     {TYPE_Q4_0, "q4_0", 32, 18},
        {TYPE_Q8_0, "q8_0", 32, 34},   {TYPE_Q4_K, "q4_k", 256, 144},
        {TYPE_Q6_K, "q6_k", 256, 210}, {TYPE_IQ2_XS, "iq2_xs", 256, 74},
        {TYPE_MXFP4, "mxfp4", 32, 17}, {TYPE_TQ1_0, "tq1_0", 256, 54},
    };

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        const struct type_traits *t = type_traits(want[i].id);

        CHECKF(t != NULL, "type %u missing", want[i].id);
        CHECK(strcmp(t->name, want[i].name) == 0);
        CHECK(t->blck == want[i].blck && t->size == want[i].size);
    }
    /* ids ggml removed, and past the end, have no entry */
    CHECK(type_traits(4) == NULL && type_traits(5) == NULL && type_traits(31) == NULL);
    CHECK(type_traits(TYPE__COUNT) == NULL && type_traits(UINT32_MAX) == NULL);
    CHECK(type_row_size(TYPE_Q4_0, 64) == 36);
    CHECK(type_row_size(TYPE_Q4_0, 48) == 0);
    CHECK(type_row_size(TYPE_F16, 7) == 14);
}

static void test_fp16_round_trip_all(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = fp16_to_f32((uint16_t)h);

        if (isnan(f)) {
            CHECKF(isnan(fp16_to_f32(f32_to_fp16(f))), "NaN %04x lost", h);
            continue;
        }
        CHECKF(f32_to_fp16(f) == h, "half %04x -> %g -> %04x", h, f, f32_to_fp16(f));
    }
}

static void test_fp16_rounding(void)
{
    CHECK(fp16_to_f32(0x3c00) == 1.0f);
    CHECK(fp16_to_f32(0x0001) == 0x1p-24f);
    CHECK(f32_to_fp16(65504.0f) == 0x7bff);
    CHECK(f32_to_fp16(65520.0f) == 0x7c00); /* rounds up past the largest half */
    CHECK(f32_to_fp16(1e10f) == 0x7c00);
    CHECK(f32_to_fp16(-1e10f) == 0xfc00);
    /* 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even (1.0) */
    CHECK(f32_to_fp16(1.0f + 0x1p-11f) == 0x3c00);
    CHECK(f32_to_fp16(1.0f + 0x1p-11f + 0x1p-20f) == 0x3c01);
    CHECK(f32_to_fp16(0x1p-25f) == 0x0000); /* halfway to the smallest subnormal: even */
    CHECK(f32_to_fp16(0x1p-25f + 0x1p-30f) == 0x0001);
    CHECK(f32_to_fp16(-0.0f) == 0x8000);
}

static void test_bf16(void)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);

        if (isnan(f))
            continue;
        CHECKF(f32_to_bf16(f) == h, "bf16 %04x -> %g -> %04x", h, f, f32_to_bf16(f));
    }
    CHECK(f32_to_bf16(1.0f) == 0x3f80);
    CHECK(f32_to_bf16(1.0f + 0x1p-8f) == 0x3f80); /* tie to even */
    CHECK(f32_to_bf16(1.0f + 0x1p-8f + 0x1p-15f) == 0x3f81);
    CHECK(isnan(bf16_to_f32(f32_to_bf16(NAN))));
}

int main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_table_layouts),
        TEST(test_fp16_round_trip_all),
        TEST(test_fp16_rounding),
        TEST(test_bf16),
        {0},
    };
    return harness_run(tests, argc, argv);
}
