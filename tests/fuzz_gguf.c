/*
 * fuzz_gguf.c: libFuzzer target for the GGUF reader. Each input is parsed with gguf_open_buffer();
 * when it opens, every KV (array elements and nested arrays included, and through each typed
 * getter) and every tensor's data is read, so ASan sees any view that points outside the input, and
 * each tensor's size is checked against its shape and type (a mismatch traps). Seeds:
 * tests/fuzz-seeds/fuzz_gguf/. Long runs: see docs/testing.md.
 */
#include "common/err.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/types.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

static void
touch(const void *p, uint64_t n)
{
    const uint8_t *b = p;

    if (n > 0)
        sink += b[0] + b[n - 1];
}

static void
walk_arr(const struct gguf_arr *a)
{
    for (uint64_t i = 0; i < a->n; i++) {
        if (a->type == GGUF_VTYPE_STRING)
            touch(a->strs[i].data, a->strs[i].len);
        else if (a->type == GGUF_VTYPE_ARRAY)
            walk_arr(&a->arrs[i]);
        else if (a->type == GGUF_VTYPE_FLOAT32 || a->type == GGUF_VTYPE_FLOAT64)
            sink += (uint64_t)(gguf_arr_get_float(a, i) != 0);
        else
            sink += (uint64_t)gguf_arr_get_int(a, i);
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[ERR_MSG_MAX];
    struct gguf *g;

    if (gguf_open_buffer(&g, data, size, err) != ERR_OK) {
        sink += strlen(err);
        return 0;
    }
    for (size_t i = 0; i < gguf_n_kv(g); i++) {
        const struct gguf_kv *kv = gguf_kv_at(g, i);

        const struct gguf_arr *a;
        struct gguf_str str;
        int64_t n;
        double x;
        bool b;

        sink += strlen(kv->key) + (gguf_find_kv(g, kv->key) == kv);
        /* the typed getters on every key: each either fits or says why */
        sink += (uint64_t)gguf_get_int(g, kv->key, &n, err) +
                (uint64_t)gguf_get_bool(g, kv->key, &b, err) +
                (uint64_t)gguf_get_float(g, kv->key, &x, err) +
                (uint64_t)gguf_get_str(g, kv->key, &str, err) +
                (uint64_t)gguf_get_arr(g, kv->key, &a, err);
        if (kv->type == GGUF_VTYPE_STRING)
            touch(kv->v.str.data, kv->v.str.len);
        else if (kv->type == GGUF_VTYPE_ARRAY)
            walk_arr(&kv->v.arr);
        else
            sink += kv->v.u;
    }
    for (size_t i = 0; i < gguf_n_tensors(g); i++) {
        const struct gguf_tensor *t = gguf_tensor_at(g, i);
        const struct type_traits *tt = type_traits(t->type);
        const uint8_t *p = t->data;

        /* what an opened file promises: a known type, whole blocks, the bytes its shape needs,
         * inside the input */
        if (tt == NULL || t->n_elements % tt->blck != 0 ||
            (unsigned __int128)t->n_elements / tt->blck * tt->size != t->nbytes ||
            p < data + gguf_data_offset(g) || (size_t)(p - data) + t->nbytes > size)
            __builtin_trap();
        sink += strlen(t->name) + (gguf_find_tensor(g, t->name) == t);
        touch(t->data, t->nbytes);
    }
    gguf_close(g);
    return 0;
}
