/*
 * test_kernels.c: the dot-product kernels and the thread pool. The AVX2 kernels must give the same
 * bits as the scalar reference (both follow the canonical reduction order) for every weight type,
 * shape and batch size, and a product must not depend on how its rows and tokens were grouped.
 */
#include "common/err.h"
#include "tests/harness.h"
#include "tests/synth_rand.h"
#include "workerd/engine/kernels.h"
#include "workerd/engine/quant.h"
#include "workerd/engine/threadpool.h"
#include "workerd/engine/types.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A rows x cols matrix of the given type with values in [-1, 1). */
static void *
make_matrix(uint32_t type, uint32_t rows, uint32_t cols, uint64_t seed, struct kernel_matrix *m)
{
    size_t rb = type_row_size(type, cols);
    uint8_t *data = malloc(rb * rows);

    for (uint32_t r = 0; r < rows; r++)
        for (uint32_t k = 0; k < cols; k++) {
            float v = synth_rand_uniform(seed, 1, (uint64_t)r * cols + k) * 2.0f - 1.0f;
            if (type == TYPE_F32) {
                memcpy(data + r * rb + k * 4, &v, 4);
            } else {
                uint16_t h = type == TYPE_F16 ? f32_to_fp16(v) : f32_to_bf16(v);
                memcpy(data + r * rb + k * 2, &h, 2);
            }
        }
    *m = (struct kernel_matrix){data, type, rows, cols, rb};
    return data;
}

static float *
make_vector(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof(float));

    for (size_t i = 0; i < n; i++)
        x[i] = synth_rand_uniform(seed, 2, i) * 2.0f - 1.0f;
    return x;
}

/* Rows, columns, tokens: odd counts, short last blocks, every token count of the direct tiles
 * (1..9), and past a token block (64) and a column range of the packed AVX-512 tiles (512); past a
 * block of their row tiles (96 rows: 97 leave a one-row tile), with a last range shorter than a
 * block of 8 columns and a short last token block. */
static const uint32_t simd_shapes[][3] = {
    {7, 3, 1},     {9, 8, 2},     {13, 64, 5},    {33, 172, 7},   {4, 300, 40},
    {5, 17, 3},    {13, 37, 1},   {13, 37, 2},    {13, 37, 3},    {13, 37, 4},
    {13, 37, 5},   {13, 37, 6},   {13, 37, 7},    {13, 37, 8},    {13, 37, 9},
    {1, 40, 9},    {2, 16, 12},   {19, 1100, 70}, {6, 1024, 9},   {11, 515, 17},
    {25, 2048, 1}, {17, 520, 64}, {97, 1030, 66}, {7, 1500, 130}, {200, 520, 9},
};

static void
test_simd_equals_scalar(void)
{
    static const uint32_t types[] = {TYPE_F32, TYPE_F16, TYPE_BF16};
    const size_t n_shapes = sizeof(simd_shapes) / sizeof(simd_shapes[0]);

    if (!kernel_simd_active()) {
        printf("  skip: no AVX2/FMA/F16C on this CPU\n");
        return;
    }
    /* the CPU's kernels (the AVX-512 tiles where it has them), then the AVX2 ones */
    for (int avx2 = 0; avx2 < 2; avx2++)
        for (size_t ti = 0; ti < 3; ti++)
            for (size_t s = 0; s < n_shapes; s++) {
                uint32_t rows = simd_shapes[s][0], cols = simd_shapes[s][1];
                uint32_t ntok = simd_shapes[s][2];
                struct kernel_matrix m;
                void *data = make_matrix(types[ti], rows, cols, 11 + s, &m);
                float *x = make_vector((size_t)ntok * cols, 99 + s);
                float *y1 = calloc((size_t)ntok * rows, sizeof(float));
                float *y2 = calloc((size_t)ntok * rows, sizeof(float));
                float *scratch = malloc(kernel_scratch_floats(cols) * sizeof(float));

                kernel_force_avx2(avx2 == 1);
                kernel_matmul_rows(&m, 0, rows, x, cols, ntok, y1, rows, scratch);
                kernel_force_scalar(true);
                kernel_matmul_rows(&m, 0, rows, x, cols, ntok, y2, rows, scratch);
                kernel_force_scalar(false);
                bool same = memcmp(y1, y2, (size_t)ntok * rows * sizeof(float)) == 0;
                free(data), free(x), free(y1), free(y2), free(scratch);
                CHECKF(same, "type %u, %ux%u, %u tokens%s: SIMD and scalar differ", types[ti], rows,
                       cols, ntok, avx2 ? " (AVX2 only)" : "");
            }
}

/* One token at a time over any split of the rows, or all at once: the same bits. */
static void
test_grouping_invariant(void)
{
    static const uint32_t types[] = {TYPE_F32, TYPE_F16, TYPE_BF16};

    for (size_t ti = 0; ti < 3; ti++) {
        uint32_t rows = 23, cols = 100, ntok = 37;
        struct kernel_matrix m;
        void *data = make_matrix(types[ti], rows, cols, 5, &m);
        float *x = make_vector((size_t)ntok * cols, 6);
        float *y1 = calloc((size_t)ntok * rows, sizeof(float));
        float *y2 = calloc((size_t)ntok * rows, sizeof(float));
        float *row = malloc(cols * sizeof(float));
        float *scratch = malloc(kernel_scratch_floats(cols) * sizeof(float));
        double worst = 0;

        kernel_matmul_rows(&m, 0, rows, x, cols, ntok, y1, rows, scratch);
        for (uint32_t t = 0; t < ntok; t++) {
            const float *xt = x + t * cols;
            kernel_matmul_rows(&m, 0, 8, xt, cols, 1, y2 + t * rows, rows, scratch);
            kernel_matmul_rows(&m, 8, 21, xt, cols, 1, y2 + t * rows, rows, scratch);
            kernel_matmul_rows(&m, 21, rows, xt, cols, 1, y2 + t * rows, rows, scratch);
        }
        bool same = memcmp(y1, y2, (size_t)ntok * rows * sizeof(float)) == 0;
        for (uint32_t r = 0; r < rows; r++) { /* and close to the exact product */
            kernel_row_to_f32(&m, r, row);
            for (uint32_t t = 0; t < ntok; t++) {
                double exact = 0;
                for (uint32_t k = 0; k < cols; k++)
                    exact += (double)row[k] * x[t * cols + k];
                worst = fmax(worst, fabs(exact - y1[t * rows + r]));
            }
        }
        free(data), free(x), free(y1), free(y2), free(row), free(scratch);
        CHECKF(same, "type %u: batched and one-token products differ", types[ti]);
        CHECKF(worst < 1e-4, "type %u: off the exact product by %g", types[ti], worst);
    }
}

/* The quantized types and where their half-precision scales sit in a block (offsets of d, then
 * dmin or m when there is one). */
static const struct {
    uint32_t type;
    int d, m;
} qtypes[] = {
    {TYPE_Q8_0, 0, -1}, {TYPE_Q4_0, 0, -1},   {TYPE_Q4_1, 0, 2},    {TYPE_Q5_0, 0, -1},
    {TYPE_Q5_1, 0, 2},  {TYPE_Q2_K, 80, 82},  {TYPE_Q3_K, 108, -1}, {TYPE_Q4_K, 0, 2},
    {TYPE_Q5_K, 0, 2},  {TYPE_Q6_K, 208, -1},
};

/*
 * A rows x cols matrix of quantized type qtypes[qi]: rows quantized from noise of varied scale,
 * or (random) random bytes with sane scales, so every bit pattern of quants, sub-block scales
 * and mins comes up.
 */
static void *
make_qmatrix(size_t qi, uint32_t rows, uint32_t cols, uint64_t seed, bool random,
             struct kernel_matrix *m)
{
    const struct type_traits *t = type_traits(qtypes[qi].type);
    size_t rb = type_row_size(qtypes[qi].type, cols);
    uint8_t *data = malloc(rb * rows);
    float *row = malloc(cols * sizeof(float));

    for (uint32_t r = 0; r < rows; r++) {
        if (!random) {
            for (uint32_t k = 0; k < cols; k++)
                row[k] = (synth_rand_uniform(seed, 1, (uint64_t)r * cols + k) * 2.0f - 1.0f) *
                         (float)(1 + r % 5) * (k % 97 == 3 ? 8.0f : 1.0f);
            t->from_float(row, data + r * rb, cols);
            continue;
        }
        for (size_t i = 0; i < rb; i++)
            data[r * rb + i] = (uint8_t)(synth_rand_uniform(seed, 3, r * rb + i) * 256.0f);
        for (size_t b = 0; b < rb / t->size; b++) {
            uint16_t d = f32_to_fp16(0.01f * (float)(1 + b % 3)), mn = f32_to_fp16(0.003f);
            memcpy(data + r * rb + b * t->size + qtypes[qi].d, &d, 2);
            if (qtypes[qi].m >= 0)
                memcpy(data + r * rb + b * t->size + qtypes[qi].m, &mn, 2);
        }
    }
    free(row);
    *m = (struct kernel_matrix){data, qtypes[qi].type, rows, cols, rb};
    return data;
}

/* The SIMD levels this CPU runs (kernel_force_level() accepts them), in *levels; returns how
 * many. */
static int
simd_levels(enum kernel_level *levels)
{
    static const enum kernel_level all[] = {KERNEL_LEVEL_AVX2, KERNEL_LEVEL_AVXVNNI,
                                            KERNEL_LEVEL_AVX512, KERNEL_LEVEL_AVX512VNNI};
    int n = 0;

    for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
        if (kernel_force_level(all[i]))
            levels[n++] = all[i];
    kernel_force_level(0);
    return n;
}

/*
 * Every quantized type, odd row counts (16- and 8-row decode tiles and short 4-row ones), an odd
 * number of blocks, 1 to 9 tokens and 70 (past one block of 64): at every SIMD level the CPU runs,
 * the kernels give the bits of the scalar path, which gives the bits of the type's reference
 * vec_dot on the activations quantized by its vec_dot_type's reference quantizer (so the SIMD
 * activation quantizers give the reference's bytes too); and one token at a time over any split of
 * the rows gives the same bits as the whole batch.
 */
static void
test_quant_equals_reference(void)
{
    /* 16 and 8 rows: the 512-bit decode tiles (Q4_0: 4 blocks a step, a short last step) */
    static const uint32_t shapes[][2] = {{7, 3}, {13, 5}, {17, 2}, {6, 1}, {33, 4}};
    static const uint32_t ntoks[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 66, 70};
    enum kernel_level levels[4];
    int nlev = simd_levels(levels);

    if (nlev == 0)
        printf("  skip SIMD: no AVX2/FMA/F16C on this CPU\n");
    for (size_t qi = 0; qi < sizeof(qtypes) / sizeof(qtypes[0]); qi++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
            for (size_t nti = 0; nti < sizeof(ntoks) / sizeof(ntoks[0]); nti++)
                for (int random = 0; random < 2; random++) {
                    const struct type_traits *t = type_traits(qtypes[qi].type);
                    const struct type_traits *yt = type_traits(t->vec_dot_type);
                    uint32_t rows = shapes[s][0], cols = shapes[s][1] * t->blck, ntok = ntoks[nti];
                    struct kernel_matrix m;
                    void *data = make_qmatrix(qi, rows, cols, 21 + s, random, &m);
                    float *x = make_vector((size_t)ntok * cols, 7 + s + nti);
                    size_t n = (size_t)ntok * rows, yrb = type_row_size(t->vec_dot_type, cols);
                    float *ref = calloc(n, sizeof(float)), *vd = calloc(n, sizeof(float));
                    float *y1 = calloc(n, sizeof(float)), *y2 = calloc(n, sizeof(float));
                    float *scratch = malloc(kernel_scratch_floats(cols) * sizeof(float));
                    uint8_t *yq = malloc(yrb);
                    bool finite = true;

                    for (uint32_t tk = 0; tk < ntok; tk++) {
                        yt->from_float(x + tk * cols, yq, cols);
                        for (uint32_t r = 0; r < rows; r++) {
                            float v = t->vec_dot((uint8_t *)data + r * m.row_bytes, yq, cols);
                            vd[tk * rows + r] = v;
                            finite = finite && isfinite(v);
                        }
                    }
                    kernel_force_scalar(true);
                    kernel_matmul_rows(&m, 0, rows, x, cols, ntok, ref, rows, scratch);
                    kernel_force_scalar(false);
                    CHECKF(memcmp(ref, vd, n * sizeof(float)) == 0,
                           "%s %ux%u, %u tokens%s: scalar path != vec_dot", t->name, rows, cols,
                           ntok, random ? " (random bytes)" : "");
                    CHECKF(finite, "%s: a non-finite dot product", t->name);
                    for (int l = 0; l < nlev; l++) {
                        kernel_force_level(levels[l]);
                        kernel_matmul_rows(&m, 0, rows, x, cols, ntok, y1, rows, scratch);
                        for (uint32_t tk = 0; tk < ntok; tk++) {
                            const float *xt = x + tk * cols;
                            float *yt1 = y2 + tk * rows;
                            kernel_matmul_rows(&m, 0, 5, xt, cols, 1, yt1, rows, scratch);
                            kernel_matmul_rows(&m, 5, rows, xt, cols, 1, yt1, rows, scratch);
                        }
                        kernel_force_level(0);
                        CHECKF(memcmp(y1, ref, n * sizeof(float)) == 0,
                               "%s %ux%u, %u tokens%s, level %d: SIMD != scalar", t->name, rows,
                               cols, ntok, random ? " (random bytes)" : "", (int)levels[l]);
                        CHECKF(memcmp(y2, ref, n * sizeof(float)) == 0,
                               "%s %ux%u, %u tokens%s, level %d: one token at a time != scalar",
                               t->name, rows, cols, ntok, random ? " (random bytes)" : "",
                               (int)levels[l]);
                    }
                    free(data), free(x), free(ref), free(vd), free(y1), free(y2), free(scratch),
                        free(yq);
                }
}

/* The levels: CPUID's choice is the highest, scalar and the ones below can be forced, and 0
 * goes back to CPUID's. */
static void
test_force_level(void)
{
    enum kernel_level top = kernel_level();

    CHECK(top >= KERNEL_LEVEL_SCALAR && top <= KERNEL_LEVEL_AVX512VNNI);
    CHECK(kernel_force_level(KERNEL_LEVEL_SCALAR));
    CHECK(kernel_level() == KERNEL_LEVEL_SCALAR && !kernel_simd_active());
    CHECK(kernel_force_level(top));
    CHECK(kernel_level() == top);
    if (top < KERNEL_LEVEL_AVX512VNNI)
        CHECK(!kernel_force_level(KERNEL_LEVEL_AVX512VNNI) && kernel_level() == top);
    CHECK(kernel_force_level(0));
    CHECK(kernel_level() == top);
}

/* a . b over 16 floats as a 1-row product */
static float
dot16(const float *a, const float *b)
{
    struct kernel_matrix m = {a, TYPE_F32, 1, 16, 16 * sizeof(float)};
    float y;

    kernel_matmul_rows(&m, 0, 1, b, 16, 1, &y, 1, NULL);
    return y;
}

static void
test_dot_canonical_order(void)
{
    float a[16] = {1e8f, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1e8f, 1, 1, 1};
    float b[16];

    for (int i = 0; i < 16; i++)
        b[i] = 1.0f;
    /* lanes: l0 = 1e8 + 1 = 1e8, l4 = 1 - 1e8 = -1e8, others 2:
     * ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) = (0 + 4) + (4 + 4) = 12 */
    float v = dot16(a, b);
    CHECKF(v == 12.0f, "got %g", v);
    kernel_force_scalar(true);
    v = dot16(a, b);
    kernel_force_scalar(false);
    CHECKF(v == 12.0f, "scalar got %g", v);
}

static void
test_elementwise(void)
{
    float x[4] = {1, 2, 3, 4}, y[4];
    float sm[3] = {0, 1000, 1000};
    float q[4] = {1, 2, 3, 4}, r[4] = {1, 2, 3, 4};
    float cs[4] = {0, 1, 1, 0}; /* pair 0 by 90 degrees, pair 1 by 0 */
    float g[2] = {0, 1};

    kernel_rmsnorm(y, x, 4, 0.0f);
    CHECKF(fabsf(y[3] - 4.0f / sqrtf(7.5f)) < 1e-6f, "rmsnorm %g", y[3]);
    kernel_softmax(sm, 3);
    CHECKF(sm[0] == 0.0f && fabsf(sm[1] - 0.5f) < 1e-7f, "softmax %g %g", sm[0], sm[1]);
    kernel_rope(q, cs, 4, 0);
    CHECKF(q[0] == -2 && q[1] == 1 && q[2] == 3 && q[3] == 4, "rope norm %g %g", q[0], q[1]);
    kernel_rope(r, cs, 4, 2); /* NeoX: pairs (0, 2) by 90 degrees and (1, 3) by 0 */
    CHECKF(r[0] == -3 && r[2] == 1 && r[1] == 2 && r[3] == 4, "rope neox %g %g", r[0], r[2]);
    kernel_silu(g, 2);
    CHECKF(g[0] == 0 && fabsf(g[1] - 1 / (1 + expf(-1))) < 1e-7f, "silu %g", g[1]);
}

/*
 * Softmax and SiLU (their exp): the SIMD forms give the scalar bits, for every length's tail and
 * inputs over the whole range (past ln(FLT_MAX) and below ln(FLT_MIN) too); both within a few ulp
 * of the exact function (computed in double).
 */
static void
test_softmax_silu(void)
{
    enum { N = 1200 };
    static const float scales[] = {1.0f, 30.0f, 95.0f};
    float a[N], b[N], g0[N];
    double worst_sm = 0.0, worst_silu = 0.0;

    for (size_t si = 0; si < sizeof(scales) / sizeof(scales[0]); si++)
        for (size_t n = 1; n <= N; n = n < 20 ? n + 1 : n * 3 + 7) {
            for (size_t i = 0; i < n; i++)
                g0[i] = (synth_rand_uniform(7, (uint64_t)(si * 4099 + n), i) * 2.0f - 1.0f) *
                        scales[si];
            memcpy(a, g0, n * sizeof(float));
            memcpy(b, g0, n * sizeof(float));
            kernel_force_scalar(true);
            kernel_softmax(a, n);
            kernel_force_scalar(false);
            kernel_softmax(b, n);
            CHECKF(memcmp(a, b, n * sizeof(float)) == 0,
                   "softmax of %zu (scale %g): SIMD != scalar", n, scales[si]);
            double max = -INFINITY, sum = 0.0;
            for (size_t i = 0; i < n; i++)
                max = g0[i] > max ? g0[i] : max;
            for (size_t i = 0; i < n; i++) /* of the float differences the kernel takes */
                sum += exp((double)(g0[i] - (float)max));
            for (size_t i = 0; i < n; i++) {
                double want = exp((double)(g0[i] - (float)max)) / sum;
                if (want > 1e-30)
                    worst_sm = fmax(worst_sm, fabs(a[i] - want) / want);
            }
            memcpy(a, g0, n * sizeof(float));
            memcpy(b, g0, n * sizeof(float));
            kernel_force_scalar(true);
            kernel_silu(a, n);
            kernel_force_scalar(false);
            kernel_silu(b, n);
            CHECKF(memcmp(a, b, n * sizeof(float)) == 0, "silu of %zu (scale %g): SIMD != scalar",
                   n, scales[si]);
            for (size_t i = 0; i < n; i++) {
                double want = g0[i] / (1.0 + exp(-(double)g0[i]));
                if (fabs(want) > 1e-30)
                    worst_silu = fmax(worst_silu, fabs(a[i] - want) / fabs(want));
            }
        }
    CHECKF(worst_sm < 5e-7, "softmax: relative error %g", worst_sm);
    CHECKF(worst_silu < 3e-7, "silu: relative error %g", worst_silu);
    printf("  softmax relative error %.3g, silu %.3g\n", worst_sm, worst_silu);
}

/* Attention's weighted sum of value rows: the CPU's kernel equals the plain loop (products
 * rounded, then added in increasing p), for head sizes of whole and partial 64-column chunks. */
static void
test_weighted_sum(void)
{
    static const size_t shapes[][3] = {{1, 64, 64}, {7, 64, 256}, {33, 128, 512},
                                       {5, 70, 70}, {9, 5, 8},    {17, 200, 203}};

    for (int scalar = 0; scalar < 2; scalar++)
        for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
            size_t n = shapes[s][0], d = shapes[s][1], vs = shapes[s][2];
            float *w = make_vector(n, 30 + s), *v = make_vector(n * vs, 40 + s);
            float *o = malloc(d * sizeof(float)), *ref = calloc(d, sizeof(float));

            for (size_t p = 0; p < n; p++)
                for (size_t i = 0; i < d; i++)
                    ref[i] += w[p] * v[p * vs + i];
            uint32_t n32 = (uint32_t)n;

            kernel_force_scalar(scalar == 1);
            kernel_weighted_sum(&o, (const float *const *)&w, &n32, 1, v, vs, d);
            kernel_force_scalar(false);
            bool same = memcmp(o, ref, d * sizeof(float)) == 0;
            free(w), free(v), free(o), free(ref);
            CHECKF(same, "%zu rows of %zu (stride %zu)%s: not the plain loop's bits", n, d, vs,
                   scalar ? ", scalar" : "");
        }
}

/* Several queries in one call (attention's unit): each query's own count of positions, the
 * shared value rows, at every level the CPU runs: every query gets the plain loop's bits. */
static void
test_weighted_sum_queries(void)
{
    static const size_t dims[][2] = {{64, 64}, {128, 4096}, {40, 40}, {96, 130}};
    enum kernel_level levels[5] = {KERNEL_LEVEL_SCALAR};
    int nlev = 1 + simd_levels(levels + 1);

    for (size_t s = 0; s < sizeof(dims) / sizeof(dims[0]); s++)
        for (int m = 1; m <= KERNEL_WSUM_MAX; m++) {
            size_t d = dims[s][0], vs = dims[s][1], nmax = 37 + (size_t)m;
            float *v = make_vector(nmax * vs, 50 + s), *w[KERNEL_WSUM_MAX], *o[KERNEL_WSUM_MAX];
            float *ref = calloc((size_t)m * d, sizeof(float));
            uint32_t n[KERNEL_WSUM_MAX];

            for (int j = 0; j < m; j++) { /* causal rows, or one shorter than the rest */
                n[j] = (uint32_t)(j == m / 2 && s % 2 ? 3 : 30 + j + (s == 3 ? 7 - j : 0));
                w[j] = make_vector(n[j], 60 + s * 8 + (size_t)j);
                o[j] = malloc(d * sizeof(float));
                for (size_t p = 0; p < n[j]; p++)
                    for (size_t i = 0; i < d; i++)
                        ref[(size_t)j * d + i] += w[j][p] * v[p * vs + i];
            }
            for (int l = 0; l < nlev; l++) {
                kernel_force_level(levels[l]);
                kernel_weighted_sum(o, (const float *const *)w, n, m, v, vs, d);
                kernel_force_level(0);
                for (int j = 0; j < m; j++)
                    CHECKF(memcmp(o[j], ref + (size_t)j * d, d * sizeof(float)) == 0,
                           "query %d of %d, %zu columns, level %d: not the plain loop's bits", j, m,
                           d, (int)levels[l]);
            }
            for (int j = 0; j < m; j++)
                free(w[j]), free(o[j]);
            free(v), free(ref);
        }
}

static void
test_types_supported(void)
{
    CHECK(kernel_type_supported(TYPE_F32));
    CHECK(kernel_type_supported(TYPE_F16));
    CHECK(kernel_type_supported(TYPE_BF16));
    CHECK(!kernel_type_supported(TYPE_IQ2_XS));
    CHECK(!kernel_type_supported(TYPE__COUNT + 3));
}

static atomic_int parts_seen[8];

static void
count_part(void *arg, uint32_t ith, uint32_t nth)
{
    atomic_int *calls = arg;

    atomic_fetch_add(&parts_seen[ith], 1);
    atomic_fetch_add(calls, (int)nth);
}

static void
test_threadpool_runs_every_part(void)
{
    struct threadpool *p;
    char err[ERR_MSG_MAX];

    for (uint32_t n = 1; n <= 4; n++) {
        atomic_int calls = 0;

        for (int i = 0; i < 8; i++)
            atomic_store(&parts_seen[i], 0);
        CHECK(threadpool_new(&p, n, err) == ERR_OK);
        CHECK(threadpool_size(p) == n);
        for (int k = 0; k < 500; k++)
            threadpool_run(p, count_part, &calls);
        threadpool_free(p);
        CHECKF(atomic_load(&calls) == 500 * (int)(n * n), "n %u: %d calls", n, atomic_load(&calls));
        for (uint32_t i = 0; i < n; i++)
            CHECKF(atomic_load(&parts_seen[i]) == 500, "n %u part %u ran %d times", n, i,
                   atomic_load(&parts_seen[i]));
    }
    CHECK(threadpool_new(&p, 0, err) == ERR_BAD_REQUEST && p == NULL);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_simd_equals_scalar),
        TEST(test_grouping_invariant),
        TEST(test_quant_equals_reference),
        TEST(test_force_level),
        TEST(test_dot_canonical_order),
        TEST(test_elementwise),
        TEST(test_softmax_silu),
        TEST(test_weighted_sum),
        TEST(test_weighted_sum_queries),
        TEST(test_types_supported),
        TEST(test_threadpool_runs_every_part),
        {0},
    };
    return harness_run(tests, argc, argv);
}
