/*
 * test_gguf_write.c: tests of the GGUF writer (tests/gguf_write.h) by round trip through the
 * reader: every value type, nested arrays, any alignment, streamed tensor data into memory and into
 * a file, KV copies, the raw knobs for broken files, and the writer's own misuse errors.
 */
#include "common/err.h"
#include "tests/gguf_write.h"
#include "tests/harness.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/types.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Finishes w into memory and opens the result; the caller frees *buf after closing *g. */
static int
finish_open(struct gguf_writer *w, struct gguf **g, uint8_t **buf, size_t *size, char *err)
{
    int rv = gguf_writer_finish(w, err);

    *g = NULL;
    *buf = gguf_writer_take(w, size);
    gguf_writer_free(w);
    if (rv != ERR_OK)
        return rv;
    return gguf_open_buffer(g, *buf, *size, err);
}

/* Adds one KV of every kind, nested arrays included. */
static void
add_every_kv(struct gguf_writer *w)
{
    static const int32_t i32s[] = {-1, 0, 2147483647};
    static const float f32s[] = {0.5f, -2.25f};
    static const bool bools[] = {true, false, true};
    static const char *const strs[] = {"a", "", "\xe2\x96\x81hello"};

    gguf_writer_add_u8(w, "t.u8", 200);
    gguf_writer_add_i8(w, "t.i8", -100);
    gguf_writer_add_u16(w, "t.u16", 65000);
    gguf_writer_add_i16(w, "t.i16", -32000);
    gguf_writer_add_u32(w, "t.u32", 4000000000u);
    gguf_writer_add_i32(w, "t.i32", -2000000000);
    gguf_writer_add_u64(w, "t.u64", UINT64_MAX);
    gguf_writer_add_i64(w, "t.i64", INT64_MIN);
    gguf_writer_add_f32(w, "t.f32", 1e-5f);
    gguf_writer_add_f64(w, "t.f64", 3.141592653589793);
    gguf_writer_add_bool(w, "t.bool", true);
    gguf_writer_add_str(w, "t.str", "llama");
    gguf_writer_add_strn(w, "t.strn", "a\0b", 3);
    gguf_writer_add_arr(w, "t.arr_i32", GGUF_VTYPE_INT32, i32s, 3);
    gguf_writer_add_arr(w, "t.arr_f32", GGUF_VTYPE_FLOAT32, f32s, 2);
    gguf_writer_add_arr(w, "t.arr_bool", GGUF_VTYPE_BOOL, bools, 3);
    gguf_writer_add_arr_str(w, "t.arr_str", strs, 3);
    /* [[1, 2], [], [["x"]]] is not expressible (mixed types); [[1, 2], []] and [[["x", "yz"]]] are
     */
    gguf_writer_begin_arr(w, "t.nested", GGUF_VTYPE_ARRAY, 2);
    gguf_writer_begin_arr(w, NULL, GGUF_VTYPE_UINT16, 2);
    gguf_writer_val_int(w, GGUF_VTYPE_UINT16, 1);
    gguf_writer_val_int(w, GGUF_VTYPE_UINT16, 2);
    gguf_writer_end_arr(w);
    gguf_writer_begin_arr(w, NULL, GGUF_VTYPE_UINT16, 0);
    gguf_writer_end_arr(w);
    gguf_writer_end_arr(w);
    gguf_writer_begin_arr(w, "t.nested_str", GGUF_VTYPE_ARRAY, 1);
    gguf_writer_begin_arr(w, NULL, GGUF_VTYPE_ARRAY, 1);
    gguf_writer_begin_arr(w, NULL, GGUF_VTYPE_STRING, 2);
    gguf_writer_val_str(w, "x", 1);
    gguf_writer_val_str(w, "yz", 2);
    gguf_writer_end_arr(w);
    gguf_writer_end_arr(w);
    gguf_writer_end_arr(w);
    gguf_writer_begin_arr(w, "t.arr_f64", GGUF_VTYPE_FLOAT64, 1);
    gguf_writer_val_f64(w, -0.125);
    gguf_writer_end_arr(w);
}

/* A tensor-less file with every kind of KV, opened. */
static int
open_every_kv(struct gguf **g, uint8_t **buf, size_t *size, char *err)
{
    struct gguf_writer *w;
    int rv = gguf_writer_new_mem(&w, err);

    if (rv != ERR_OK)
        return rv;
    add_every_kv(w);
    return finish_open(w, g, buf, size, err);
}

static void
test_write_every_value_type(void)
{
    char err[ERR_MSG_MAX] = "";
    struct gguf *g;
    const struct gguf_kv *kv;
    const struct gguf_arr *a;
    uint8_t *buf;
    size_t size;
    int rv;

    rv = open_every_kv(&g, &buf, &size, err);
    CHECKF(rv == ERR_OK, "%s", err);
    CHECK(gguf_version(g) == 3 && gguf_n_kv(g) == 20 && gguf_n_tensors(g) == 0);
    CHECK(gguf_find_kv(g, "t.u8")->v.u == 200 && gguf_find_kv(g, "t.i8")->v.i == -100);
    CHECK(gguf_find_kv(g, "t.u16")->v.u == 65000 && gguf_find_kv(g, "t.i16")->v.i == -32000);
    CHECK(gguf_find_kv(g, "t.u32")->v.u == 4000000000u);
    CHECK(gguf_find_kv(g, "t.i32")->v.i == -2000000000);
    CHECK(gguf_find_kv(g, "t.u64")->v.u == UINT64_MAX);
    CHECK(gguf_find_kv(g, "t.i64")->v.i == INT64_MIN);
    CHECK(gguf_find_kv(g, "t.f32")->type == GGUF_VTYPE_FLOAT32);
    CHECK(gguf_find_kv(g, "t.f32")->v.f == (double)1e-5f);
    CHECK(gguf_find_kv(g, "t.f64")->v.f == 3.141592653589793);
    CHECK(gguf_find_kv(g, "t.bool")->type == GGUF_VTYPE_BOOL && gguf_find_kv(g, "t.bool")->v.u);
    kv = gguf_find_kv(g, "t.strn");
    CHECK(kv->v.str.len == 3 && memcmp(kv->v.str.data, "a\0b", 3) == 0);
    CHECK(gguf_get_arr(g, "t.arr_i32", &a, err) == ERR_OK);
    CHECK(a->type == GGUF_VTYPE_INT32 && a->n == 3 && gguf_arr_get_int(a, 0) == -1);
    CHECK(gguf_arr_get_int(a, 2) == 2147483647);
    CHECK(gguf_get_arr(g, "t.arr_f32", &a, err) == ERR_OK);
    CHECK(gguf_arr_get_float(a, 1) == -2.25);
    CHECK(gguf_get_arr(g, "t.arr_bool", &a, err) == ERR_OK);
    CHECK(a->n == 3 && gguf_arr_get_int(a, 0) == 1 && gguf_arr_get_int(a, 1) == 0);
    CHECK(gguf_get_arr(g, "t.arr_str", &a, err) == ERR_OK);
    CHECK(a->type == GGUF_VTYPE_STRING && a->n == 3 && a->strs[1].len == 0);
    CHECK(a->strs[2].len == 8 && memcmp(a->strs[2].data, "\xe2\x96\x81hello", 8) == 0);
    CHECK(gguf_get_arr(g, "t.nested", &a, err) == ERR_OK);
    CHECK(a->type == GGUF_VTYPE_ARRAY && a->n == 2 && a->arrs[0].n == 2 && a->arrs[1].n == 0);
    CHECK(a->arrs[0].type == GGUF_VTYPE_UINT16 && gguf_arr_get_int(&a->arrs[0], 1) == 2);
    CHECK(gguf_get_arr(g, "t.nested_str", &a, err) == ERR_OK);
    CHECK(a->arrs[0].arrs[0].type == GGUF_VTYPE_STRING && a->arrs[0].arrs[0].n == 2);
    CHECK(a->arrs[0].arrs[0].strs[1].len == 2 &&
          memcmp(a->arrs[0].arrs[0].strs[1].data, "yz", 2) == 0);
    CHECK(gguf_get_arr(g, "t.arr_f64", &a, err) == ERR_OK);
    CHECK(gguf_arr_get_float(a, 0) == -0.125);
    gguf_close(g);
    free(buf);
}

/* Writes three tensors with the given alignment (0: default) and checks layout and data. */
static void
check_tensors_aligned(uint32_t alignment)
{
    char err[ERR_MSG_MAX] = "";
    struct gguf_writer *w;
    struct gguf *g;
    uint8_t *buf, q4[3 * 18];
    float f[7];
    uint16_t h[64 * 2];
    size_t size;
    int rv;

    for (int i = 0; i < 7; i++)
        f[i] = (float)i - 3.5f;
    for (int i = 0; i < 128; i++)
        h[i] = f32_to_fp16((float)i / 8);
    for (size_t i = 0; i < sizeof(q4); i++)
        q4[i] = (uint8_t)(i * 7);
    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    if (alignment != 0)
        gguf_writer_add_u32(w, "general.alignment", alignment);
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_tensor(w, "odd.weight", TYPE_F32, 1, (int64_t[]){7});
    gguf_writer_add_tensor(w, "q.weight", TYPE_Q4_0, 2, (int64_t[]){32, 3});
    gguf_writer_add_tensor(w, "h.weight", TYPE_F16, 3, (int64_t[]){4, 16, 2});
    CHECKF(gguf_writer_write_header(w, err) == ERR_OK, "%s", err);
    CHECK(gguf_writer_write_data(w, f, sizeof(f), err) == ERR_OK);
    /* chunks of any size within one tensor */
    CHECK(gguf_writer_write_data(w, q4, 5, err) == ERR_OK);
    CHECK(gguf_writer_write_data(w, q4 + 5, sizeof(q4) - 5, err) == ERR_OK);
    CHECK(gguf_writer_write_data(w, h, sizeof(h), err) == ERR_OK);
    rv = finish_open(w, &g, &buf, &size, err);
    CHECKF(rv == ERR_OK, "alignment %u: %s", alignment, err);
    uint32_t a = alignment ? alignment : 32;
    CHECK(gguf_alignment(g) == a);
    CHECK(gguf_data_offset(g) % a == 0 && size % a == 0);
    const struct gguf_tensor *t0 = gguf_find_tensor(g, "odd.weight");
    const struct gguf_tensor *t1 = gguf_find_tensor(g, "q.weight");
    const struct gguf_tensor *t2 = gguf_find_tensor(g, "h.weight");
    CHECK(t0 && t1 && t2);
    CHECK(t0->offset == 0 && t0->nbytes == sizeof(f) && memcmp(t0->data, f, sizeof(f)) == 0);
    CHECK(t1->offset == (28 + a - 1) / a * a && t1->nbytes == sizeof(q4));
    CHECK(memcmp(t1->data, q4, sizeof(q4)) == 0);
    CHECK(t2->ne[0] == 4 && t2->ne[1] == 16 && t2->ne[2] == 2 && t2->ne[3] == 1);
    CHECK(t2->n_dims == 3 && t2->n_elements == 128 && memcmp(t2->data, h, sizeof(h)) == 0);
    CHECK(t2->offset % a == 0 && t2->offset >= t1->offset + t1->nbytes);
    gguf_close(g);
    free(buf);
}

static void
test_write_tensors_any_alignment(void)
{
    static const uint32_t aligns[] = {0, 1, 2, 8, 64, 4096};

    for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++)
        check_tensors_aligned(aligns[i]);
}

/* Streams a few MB into a FILE in small chunks and reads it back through gguf_open (mmap). */
static void
test_write_streams_to_file(void)
{
    char err[ERR_MSG_MAX] = "", path[512];
    struct gguf_writer *w;
    struct gguf *g;
    enum { ROWS = 1024, COLS = 1024 };
    float row[COLS];
    FILE *f;
    int rv = ERR_OK;

    snprintf(path, sizeof(path), "%s/stream.gguf", harness_tmpdir());
    f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(gguf_writer_new_file(&w, f, err) == ERR_OK);
    gguf_writer_add_str(w, "general.architecture", "llama");
    gguf_writer_add_tensor(w, "a", TYPE_F32, 2, (int64_t[]){COLS, ROWS});
    gguf_writer_add_tensor(w, "b", TYPE_F32, 1, (int64_t[]){3});
    for (int r = 0; r < ROWS && rv == ERR_OK; r++) {
        for (int c = 0; c < COLS; c++)
            row[c] = (float)(r * COLS + c);
        rv = gguf_writer_write_data(w, row, sizeof(row), err);
    }
    rv = gguf_writer_write_data(w, row, 3 * sizeof(float), err);
    CHECKF(rv == ERR_OK, "%s", err);
    rv = gguf_writer_finish(w, err);
    CHECK(gguf_writer_take(w, &(size_t){0}) == NULL);
    gguf_writer_free(w);
    CHECK(fclose(f) == 0);
    CHECKF(rv == ERR_OK, "%s", err);
    rv = gguf_open(&g, path, err);
    CHECKF(rv == ERR_OK, "%s", err);
    const struct gguf_tensor *t = gguf_find_tensor(g, "a");
    const float *d = t->data;
    CHECK(t->nbytes == (size_t)ROWS * COLS * 4 && d[0] == 0 &&
          d[ROWS * COLS - 1] == ROWS * COLS - 1);
    CHECK(((const float *)gguf_find_tensor(g, "b")->data)[2] == (ROWS - 1) * COLS + 2);
    gguf_close(g);
}

/* Copying every KV of a tensor-less file in order gives the same bytes up to the tensor infos. */
static void
check_copy_identical(const struct gguf *src, const uint8_t *bytes, size_t size)
{
    char err[ERR_MSG_MAX] = "";
    struct gguf_writer *w;
    uint8_t *buf;
    size_t out_size;
    uint64_t end;

    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    for (size_t i = 0; i < gguf_n_kv(src); i++)
        gguf_writer_kv_copy(w, gguf_kv_at(src, i), NULL);
    CHECKF(gguf_writer_finish(w, err) == ERR_OK, "%s", err);
    end = gguf_writer_tensor_pos(w);
    buf = gguf_writer_take(w, &out_size);
    gguf_writer_free(w);
    CHECK(end <= out_size && end <= size);
    CHECK(memcmp(buf, bytes, end) == 0);
    free(buf);
}

static void
test_write_kv_copy(void)
{
    char err[ERR_MSG_MAX] = "", path[512];
    struct gguf_writer *w;
    struct gguf *g;
    uint8_t *buf;
    size_t size;
    int rv;

    rv = open_every_kv(&g, &buf, &size, err);
    CHECKF(rv == ERR_OK, "%s", err);
    check_copy_identical(g, buf, size);
    /* under another key */
    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    gguf_writer_kv_copy(w, gguf_find_kv(g, "t.nested_str"), "renamed");
    gguf_close(g);
    free(buf);
    rv = finish_open(w, &g, &buf, &size, err);
    CHECKF(rv == ERR_OK, "%s", err);
    CHECK(gguf_n_kv(g) == 1 && gguf_find_kv(g, "renamed")->v.arr.arrs[0].arrs[0].strs[0].len == 1);
    gguf_close(g);
    free(buf);

    if (!harness_shared(path, sizeof(path), "models/vocab/ggml-vocab-llama-spm.gguf"))
        return;
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    size = (size_t)ftell(f);
    rewind(f);
    buf = malloc(size);
    CHECK(buf != NULL);
    CHECK(fread(buf, 1, size, f) == size);
    fclose(f);
    rv = gguf_open_buffer(&g, buf, size, err);
    CHECKF(rv == ERR_OK, "%s", err);
    check_copy_identical(g, buf, size);
    gguf_close(g);
    free(buf);
}

static void
test_write_raw_knobs(void)
{
    char err[ERR_MSG_MAX] = "";
    struct gguf_writer *w;
    struct gguf *g;
    uint8_t *buf;
    size_t size;
    uint64_t v;
    int rv;

    /* version and counts as asked */
    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    gguf_writer_set_version(w, 1);
    gguf_writer_set_counts(w, 7, UINT64_MAX);
    gguf_writer_add_u32(w, "k", 1);
    CHECK(gguf_writer_finish(w, err) == ERR_OK);
    buf = gguf_writer_take(w, &size);
    gguf_writer_free(w);
    CHECK(memcmp(buf, "GGUF\x01\0\0\0\x07\0\0\0\0\0\0\0", 16) == 0);
    memcpy(&v, buf + 16, 8);
    CHECK(v == UINT64_MAX);
    CHECK(size == 64);
    free(buf);

    /* raw tensor info and raw KV bytes are written as given, positions are reported */
    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    CHECK(gguf_writer_kv_pos(w) == 24);
    gguf_writer_add_raw_kv(w, "\x01\0\0\0\0\0\0\0kM\0\0\0", 13, 1); /* key "k", type 77 */
    CHECK(gguf_writer_kv_pos(w) == 37 && gguf_writer_tensor_pos(w) == 37);
    gguf_writer_add_tensor_raw(w, "t", 2, 5, (uint64_t[]){32, 1, 1, 1, 1}, 3);
    CHECK(gguf_writer_tensor_pos(w) == 37 + 9 + 4 + 40 + 4 + 8);
    CHECK(gguf_writer_data_offset(w) == 128);
    CHECK(gguf_writer_write_zeros(w, 100, err) == ERR_OK);
    CHECK(gguf_writer_finish(w, err) == ERR_OK);
    buf = gguf_writer_take(w, &size);
    gguf_writer_free(w);
    CHECK(size == 128 + 128);
    memcpy(&v, buf + 8, 8);
    CHECK(v == 1);
    CHECK(buf[37 + 9] == 5 && buf[37 + 9 + 4 + 40] == 2 && buf[37 + 9 + 4 + 40 + 4] == 3);
    rv = gguf_open_buffer(&g, buf, size, err);
    CHECK(rv == ERR_FORMAT && g == NULL);
    CHECKF(strstr(err, "'k'") != NULL && strstr(err, "77") != NULL, "%s", err);
    free(buf);
}

static void
test_write_misuse_is_sticky(void)
{
    char err[ERR_MSG_MAX] = "";
    struct gguf_writer *w;
    uint8_t *buf;
    size_t size;
    float x[4] = {0};

    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    CHECK(gguf_writer_add_tensor(w, "q", TYPE_Q4_0, 1, (int64_t[]){16}) == ERR_BAD_REQUEST);
    CHECK(gguf_writer_add_u32(w, "k", 1) == ERR_BAD_REQUEST);
    CHECK(gguf_writer_finish(w, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "tensor q") != NULL && strstr(err, "block") != NULL, "%s", err);
    gguf_writer_free(w);

    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    CHECK(gguf_writer_add_tensor(w, "x", TYPE_F32, 1, (int64_t[]){2}) == ERR_OK);
    CHECK(gguf_writer_write_data(w, x, sizeof(x), err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "more data") != NULL, "%s", err);
    gguf_writer_free(w);

    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    CHECK(gguf_writer_write_header(w, err) == ERR_OK);
    CHECK(gguf_writer_add_str(w, "late", "x") == ERR_BAD_REQUEST);
    gguf_writer_free(w);

    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    gguf_writer_begin_arr(w, "a", GGUF_VTYPE_UINT8, 2);
    gguf_writer_val_int(w, GGUF_VTYPE_UINT8, 1);
    CHECK(gguf_writer_end_arr(w) == ERR_BAD_REQUEST);
    CHECK(gguf_writer_finish(w, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "ended before its count") != NULL, "%s", err);
    CHECK(gguf_writer_take(w, &size) == NULL && size == 0);
    gguf_writer_free(w);

    CHECK(gguf_writer_new_mem(&w, err) == ERR_OK);
    gguf_writer_begin_arr(w, "a", GGUF_VTYPE_UINT8, 1);
    CHECK(gguf_writer_add_u32(w, "b", 1) == ERR_BAD_REQUEST);
    CHECK(gguf_writer_finish(w, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "inside an unfinished array") != NULL, "%s", err);
    buf = gguf_writer_take(w, &size);
    CHECK(buf == NULL && size == 0);
    gguf_writer_free(w);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_write_every_value_type),
        TEST(test_write_tensors_any_alignment),
        TEST(test_write_streams_to_file),
        TEST(test_write_kv_copy),
        TEST(test_write_raw_knobs),
        TEST(test_write_misuse_is_sticky),
        {0},
    };
    return harness_run(tests, argc, argv);
}
