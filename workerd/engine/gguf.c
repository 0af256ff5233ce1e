/*
 * gguf.c: the strict GGUF v2/v3 reader (format summary in gguf.h).
 *
 * Parsing walks a cursor over the mapped bytes; every read checks the bytes left first, every count
 * is bounded by what the remaining bytes could hold before anything is allocated, and every size is
 * computed with overflow checks. The index (kv and tensor tables, C-string copies of keys and
 * tensor names, string and nested array indexes) lives in one allocation list freed by
 * gguf_close(); values stay in the mapping.
 */
#include "workerd/engine/gguf.h"

#include "common/err.h"
#include "workerd/engine/types.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_MAX_KEY_LEN     65535 /* the spec's bound on key length */
#define GGUF_MAX_NAME_LEN    255   /* tensor names; ggml's own bound is 63 */
#define GGUF_MAX_ARRAY_DEPTH 4     /* nested arrays deeper than this are refused */

struct gguf {
    const uint8_t *base;
    size_t size;
    bool mapped;
    uint32_t version;
    uint32_t alignment;
    uint64_t data_offset;
    size_t n_kv;
    struct gguf_kv *kvs;
    size_t n_tensors;
    struct gguf_tensor *tensors;
    void **allocs; /* every index allocation, freed at close */
    size_t n_allocs, cap_allocs;
};

struct cursor {
    const uint8_t *p;
    size_t left;
};

static const char *const vtype_names[GGUF_VTYPE__COUNT] = {
    [GGUF_VTYPE_UINT8] = "uint8",     [GGUF_VTYPE_INT8] = "int8",
    [GGUF_VTYPE_UINT16] = "uint16",   [GGUF_VTYPE_INT16] = "int16",
    [GGUF_VTYPE_UINT32] = "uint32",   [GGUF_VTYPE_INT32] = "int32",
    [GGUF_VTYPE_FLOAT32] = "float32", [GGUF_VTYPE_BOOL] = "bool",
    [GGUF_VTYPE_STRING] = "string",   [GGUF_VTYPE_ARRAY] = "array",
    [GGUF_VTYPE_UINT64] = "uint64",   [GGUF_VTYPE_INT64] = "int64",
    [GGUF_VTYPE_FLOAT64] = "float64",
};

static const uint8_t vtype_sizes[GGUF_VTYPE__COUNT] = {
    [GGUF_VTYPE_UINT8] = 1,   [GGUF_VTYPE_INT8] = 1,    [GGUF_VTYPE_UINT16] = 2,
    [GGUF_VTYPE_INT16] = 2,   [GGUF_VTYPE_UINT32] = 4,  [GGUF_VTYPE_INT32] = 4,
    [GGUF_VTYPE_FLOAT32] = 4, [GGUF_VTYPE_BOOL] = 1,    [GGUF_VTYPE_UINT64] = 8,
    [GGUF_VTYPE_INT64] = 8,   [GGUF_VTYPE_FLOAT64] = 8,
};

const char *
gguf_vtype_name(enum gguf_vtype t)
{
    if ((unsigned)t >= GGUF_VTYPE__COUNT)
        return "?";
    return vtype_names[t];
}

size_t
gguf_vtype_size(enum gguf_vtype t)
{
    if ((unsigned)t >= GGUF_VTYPE__COUNT)
        return 0;
    return vtype_sizes[t];
}

/* Allocates zeroed memory owned by g (freed at close). */
static void *
gguf_alloc(struct gguf *g, size_t n, size_t size)
{
    void *p;

    if (g->n_allocs == g->cap_allocs) {
        size_t cap = g->cap_allocs ? g->cap_allocs * 2 : 16;
        void **a = realloc(g->allocs, cap * sizeof(*a));

        if (a == NULL)
            return NULL;
        g->allocs = a;
        g->cap_allocs = cap;
    }
    p = calloc(n ? n : 1, size);
    if (p != NULL)
        g->allocs[g->n_allocs++] = p;
    return p;
}

static bool
cur_read(struct cursor *c, void *dst, size_t n)
{
    if (c->left < n)
        return false;
    memcpy(dst, c->p, n);
    c->p += n;
    c->left -= n;
    return true;
}

static bool
cur_u32(struct cursor *c, uint32_t *v)
{
    return cur_read(c, v, sizeof(*v));
}

static bool
cur_u64(struct cursor *c, uint64_t *v)
{
    return cur_read(c, v, sizeof(*v));
}

/* Reads a string header and returns a view of its bytes; what names where it failed. */
static int
cur_str(struct cursor *c, struct gguf_str *s, const char *what, char *err)
{
    if (!cur_u64(c, &s->len))
        return err_set(err, ERR_FORMAT, "%s: file ends inside the string length", what);
    if (s->len > c->left)
        return err_set(err, ERR_FORMAT, "%s: string length %llu exceeds the %zu bytes left", what,
                       (unsigned long long)s->len, c->left);
    s->data = (const char *)c->p;
    c->p += s->len;
    c->left -= s->len;
    return ERR_OK;
}

/* Copies a name into a NUL-terminated string owned by g; refuses embedded NULs and long names. */
static int
copy_name(struct gguf *g, const struct gguf_str *s, size_t max, const char **out, const char *what,
          char *err)
{
    char *p;

    if (s->len == 0)
        return err_set(err, ERR_FORMAT, "%s is empty", what);
    if (s->len > max)
        return err_set(err, ERR_FORMAT, "%s is %llu bytes long, more than %zu", what,
                       (unsigned long long)s->len, max);
    if (memchr(s->data, '\0', s->len) != NULL)
        return err_set(err, ERR_FORMAT, "%s contains a NUL byte", what);
    p = gguf_alloc(g, s->len + 1, 1);
    if (p == NULL)
        return err_set(err, ERR_NOMEM, "out of memory copying %s", what);
    memcpy(p, s->data, s->len);
    *out = p;
    return ERR_OK;
}

static int read_array(struct gguf *g, struct cursor *c, struct gguf_arr *a, const char *key,
                      int depth, char *err);

/* Reads a scalar of fixed-size type t into kv's union. */
static int
read_scalar(struct cursor *c, struct gguf_kv *kv, char *err)
{
    uint8_t b[8];
    size_t n = vtype_sizes[kv->type];

    if (!cur_read(c, b, n))
        return err_set(err, ERR_FORMAT, "key '%s': file ends inside its %s value", kv->key,
                       vtype_names[kv->type]);
    switch (kv->type) {
    case GGUF_VTYPE_UINT8:
        kv->v.u = b[0];
        break;
    case GGUF_VTYPE_INT8:
        kv->v.i = (int8_t)b[0];
        break;
    case GGUF_VTYPE_UINT16: {
        uint16_t x;
        memcpy(&x, b, 2);
        kv->v.u = x;
        break;
    }
    case GGUF_VTYPE_INT16: {
        int16_t x;
        memcpy(&x, b, 2);
        kv->v.i = x;
        break;
    }
    case GGUF_VTYPE_UINT32: {
        uint32_t x;
        memcpy(&x, b, 4);
        kv->v.u = x;
        break;
    }
    case GGUF_VTYPE_INT32: {
        int32_t x;
        memcpy(&x, b, 4);
        kv->v.i = x;
        break;
    }
    case GGUF_VTYPE_UINT64:
        memcpy(&kv->v.u, b, 8);
        break;
    case GGUF_VTYPE_INT64:
        memcpy(&kv->v.i, b, 8);
        break;
    case GGUF_VTYPE_FLOAT32: {
        float x;
        memcpy(&x, b, 4);
        kv->v.f = x;
        break;
    }
    case GGUF_VTYPE_FLOAT64:
        memcpy(&kv->v.f, b, 8);
        break;
    case GGUF_VTYPE_BOOL:
        if (b[0] > 1)
            return err_set(err, ERR_FORMAT, "key '%s': bool value is %u, not 0 or 1", kv->key,
                           b[0]);
        kv->v.u = b[0];
        break;
    default:
        return err_set(err, ERR_INTERNAL, "key '%s': %s is not a scalar type", kv->key,
                       gguf_vtype_name(kv->type));
    }
    return ERR_OK;
}

static int
read_array(struct gguf *g, struct cursor *c, struct gguf_arr *a, const char *key, int depth,
           char *err)
{
    uint32_t t;
    int rv;

    if (depth > GGUF_MAX_ARRAY_DEPTH)
        return err_set(err, ERR_FORMAT, "key '%s': arrays nested deeper than %d", key,
                       GGUF_MAX_ARRAY_DEPTH);
    if (!cur_u32(c, &t) || !cur_u64(c, &a->n))
        return err_set(err, ERR_FORMAT, "key '%s': file ends inside an array header", key);
    if (t >= GGUF_VTYPE__COUNT)
        return err_set(err, ERR_FORMAT, "key '%s': array of unknown value type %u", key, t);
    a->type = (enum gguf_vtype)t;
    a->data = c->p;
    if (a->type == GGUF_VTYPE_STRING) {
        /* each element takes at least its 8-byte length */
        if (a->n > c->left / 8)
            return err_set(err, ERR_FORMAT,
                           "key '%s': array of %llu strings cannot fit in the %zu bytes left", key,
                           (unsigned long long)a->n, c->left);
        a->strs = gguf_alloc(g, a->n, sizeof(*a->strs));
        if (a->strs == NULL)
            return err_set(err, ERR_NOMEM, "key '%s': out of memory for %llu strings", key,
                           (unsigned long long)a->n);
        for (uint64_t i = 0; i < a->n; i++)
            if ((rv = cur_str(c, &a->strs[i], key, err)) != ERR_OK)
                return rv;
        return ERR_OK;
    }
    if (a->type == GGUF_VTYPE_ARRAY) {
        /* each nested array takes at least its 12-byte header */
        if (a->n > c->left / 12)
            return err_set(err, ERR_FORMAT,
                           "key '%s': array of %llu arrays cannot fit in the %zu bytes left", key,
                           (unsigned long long)a->n, c->left);
        a->arrs = gguf_alloc(g, a->n, sizeof(*a->arrs));
        if (a->arrs == NULL)
            return err_set(err, ERR_NOMEM, "key '%s': out of memory for %llu arrays", key,
                           (unsigned long long)a->n);
        for (uint64_t i = 0; i < a->n; i++)
            if ((rv = read_array(g, c, &a->arrs[i], key, depth + 1, err)) != ERR_OK)
                return rv;
        return ERR_OK;
    }
    if (a->n > c->left / vtype_sizes[a->type])
        return err_set(err, ERR_FORMAT,
                       "key '%s': array of %llu %s needs more than the %zu bytes left", key,
                       (unsigned long long)a->n, vtype_names[a->type], c->left);
    if (a->type == GGUF_VTYPE_BOOL)
        for (uint64_t i = 0; i < a->n; i++)
            if (a->data[i] > 1)
                return err_set(err, ERR_FORMAT, "key '%s': bool element %llu is %u, not 0 or 1",
                               key, (unsigned long long)i, a->data[i]);
    c->p += a->n * vtype_sizes[a->type];
    c->left -= a->n * vtype_sizes[a->type];
    return ERR_OK;
}

/* FNV-1a over a C string, for the duplicate checks. */
static uint64_t
hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;

    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

/*
 * Returns the index of the first name that repeats an earlier one, or n when all are distinct.
 * names(i) yields the i-th name. Open addressing over a table twice the size; allocation failure
 * reports -1.
 */
static long long
find_duplicate(size_t n, const char *(*name)(const void *, size_t), const void *ctx)
{
    size_t cap = 16;
    size_t *slots;
    long long dup = (long long)n;

    while (cap < 2 * n)
        cap *= 2;
    slots = malloc(cap * sizeof(*slots));
    if (slots == NULL)
        return -1;
    for (size_t i = 0; i < cap; i++)
        slots[i] = SIZE_MAX;
    for (size_t i = 0; i < n && dup == (long long)n; i++) {
        const char *s = name(ctx, i);
        size_t h = (size_t)hash_str(s) & (cap - 1);

        while (slots[h] != SIZE_MAX) {
            if (strcmp(name(ctx, slots[h]), s) == 0) {
                dup = (long long)i;
                break;
            }
            h = (h + 1) & (cap - 1);
        }
        slots[h] = i;
    }
    free(slots);
    return dup;
}

static const char *
kv_name(const void *ctx, size_t i)
{
    return ((const struct gguf_kv *)ctx)[i].key;
}

static const char *
tensor_name(const void *ctx, size_t i)
{
    return ((const struct gguf_tensor *)ctx)[i].name;
}

static int
read_kvs(struct gguf *g, struct cursor *c, uint64_t n_kv, char *err)
{
    long long dup;
    int rv;

    /* each kv takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes */
    if (n_kv > c->left / 14)
        return err_set(err, ERR_FORMAT,
                       "header claims %llu metadata keys, more than the file can hold",
                       (unsigned long long)n_kv);
    g->kvs = gguf_alloc(g, n_kv, sizeof(*g->kvs));
    if (g->kvs == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for %llu metadata keys",
                       (unsigned long long)n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        struct gguf_kv *kv = &g->kvs[i];
        struct gguf_str key;
        char what[48];
        uint32_t t;

        snprintf(what, sizeof(what), "metadata key %llu", (unsigned long long)i);
        if ((rv = cur_str(c, &key, what, err)) != ERR_OK)
            return rv;
        if ((rv = copy_name(g, &key, GGUF_MAX_KEY_LEN, &kv->key, what, err)) != ERR_OK)
            return rv;
        if (!cur_u32(c, &t))
            return err_set(err, ERR_FORMAT, "key '%s': file ends inside its value type", kv->key);
        if (t >= GGUF_VTYPE__COUNT)
            return err_set(err, ERR_FORMAT, "key '%s' has unknown value type %u", kv->key, t);
        kv->type = (enum gguf_vtype)t;
        if (kv->type == GGUF_VTYPE_STRING)
            rv = cur_str(c, &kv->v.str, kv->key, err);
        else if (kv->type == GGUF_VTYPE_ARRAY)
            rv = read_array(g, c, &kv->v.arr, kv->key, 1, err);
        else
            rv = read_scalar(c, kv, err);
        if (rv != ERR_OK)
            return rv;
        g->n_kv = i + 1;
    }
    dup = find_duplicate(g->n_kv, kv_name, g->kvs);
    if (dup < 0)
        return err_set(err, ERR_NOMEM, "out of memory checking metadata keys");
    if ((size_t)dup < g->n_kv)
        return err_set(err, ERR_FORMAT, "duplicate metadata key '%s'", g->kvs[dup].key);
    return ERR_OK;
}

static int
read_alignment(struct gguf *g, char *err)
{
    const struct gguf_kv *kv = gguf_find_kv(g, "general.alignment");

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (kv == NULL)
        return ERR_OK;
    if (kv->type != GGUF_VTYPE_UINT32)
        return err_set(err, ERR_FORMAT, "key 'general.alignment' has type %s, expected uint32",
                       gguf_vtype_name(kv->type));
    if (kv->v.u == 0 || (kv->v.u & (kv->v.u - 1)) != 0)
        return err_set(err, ERR_FORMAT, "key 'general.alignment' is %llu, not a power of two",
                       (unsigned long long)kv->v.u);
    g->alignment = (uint32_t)kv->v.u;
    return ERR_OK;
}

/* Reads one tensor info and checks its shape and type; offsets are checked once all are read. */
static int
read_tensor_info(struct gguf *g, struct cursor *c, struct gguf_tensor *t, uint64_t index, char *err)
{
    const struct type_traits *tt;
    struct gguf_str name;
    char what[48];
    uint64_t row_bytes, nrows = 1;
    int rv;

    snprintf(what, sizeof(what), "tensor %llu name", (unsigned long long)index);
    if ((rv = cur_str(c, &name, what, err)) != ERR_OK)
        return rv;
    if ((rv = copy_name(g, &name, GGUF_MAX_NAME_LEN, &t->name, what, err)) != ERR_OK)
        return rv;
    if (!cur_u32(c, &t->n_dims))
        return err_set(err, ERR_FORMAT, "tensor %s: file ends inside its dimension count", t->name);
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return err_set(err, ERR_FORMAT, "tensor %s has %u dimensions, expected 1 to %d", t->name,
                       t->n_dims, GGUF_MAX_DIMS);
    for (int d = 0; d < GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    t->n_elements = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        uint64_t ne;

        if (!cur_u64(c, &ne))
            return err_set(err, ERR_FORMAT, "tensor %s: file ends inside its shape", t->name);
        if (ne == 0 || ne > (uint64_t)INT64_MAX)
            return err_set(err, ERR_FORMAT, "tensor %s: dimension %u is %llu", t->name, d,
                           (unsigned long long)ne);
        if (t->n_elements > (uint64_t)INT64_MAX / ne)
            return err_set(err, ERR_FORMAT, "tensor %s: element count overflows", t->name);
        t->ne[d] = (int64_t)ne;
        t->n_elements *= ne;
        if (d > 0)
            nrows *= ne;
    }
    if (!cur_u32(c, &t->type))
        return err_set(err, ERR_FORMAT, "tensor %s: file ends inside its type", t->name);
    tt = type_traits(t->type);
    if (tt == NULL)
        return err_set(err, ERR_FORMAT, "tensor %s has unknown type id %u", t->name, t->type);
    if ((uint64_t)t->ne[0] % tt->blck != 0)
        return err_set(err, ERR_FORMAT,
                       "tensor %s: row of %lld elements is not a multiple of the %s block size %u",
                       t->name, (long long)t->ne[0], tt->name, tt->blck);
    /* ne[0] may reach 2^63 - 1, so the bytes of one row can overflow 64 bits */
    if (__builtin_mul_overflow((uint64_t)t->ne[0] / tt->blck, (uint64_t)tt->size, &row_bytes) ||
        (nrows != 0 && row_bytes > SIZE_MAX / nrows))
        return err_set(err, ERR_FORMAT, "tensor %s: byte size overflows", t->name);
    t->nbytes = (size_t)(row_bytes * nrows);
    if (!cur_u64(c, &t->offset))
        return err_set(err, ERR_FORMAT, "tensor %s: file ends inside its data offset", t->name);
    if (t->offset % g->alignment != 0)
        return err_set(err, ERR_FORMAT,
                       "tensor %s: data offset %llu is not a multiple of the alignment %u", t->name,
                       (unsigned long long)t->offset, g->alignment);
    return ERR_OK;
}

static int
cmp_offset(const void *a, const void *b)
{
    const struct gguf_tensor *x = *(const struct gguf_tensor *const *)a;
    const struct gguf_tensor *y = *(const struct gguf_tensor *const *)b;

    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Checks every tensor's data lies inside the file and no two overlap; sets the data pointers. */
static int
place_tensors(struct gguf *g, char *err)
{
    const struct gguf_tensor **order;
    uint64_t data_size;

    if (g->n_tensors == 0)
        return ERR_OK;
    if (g->data_offset > g->size)
        return err_set(err, ERR_FORMAT,
                       "data section starts at %llu, past the end of the %zu-byte file",
                       (unsigned long long)g->data_offset, g->size);
    data_size = g->size - g->data_offset;
    for (size_t i = 0; i < g->n_tensors; i++) {
        struct gguf_tensor *t = &g->tensors[i];

        if (t->offset > data_size || t->nbytes > data_size - t->offset)
            return err_set(
                err, ERR_FORMAT,
                "tensor %s: data [%llu, +%zu) runs past the end of the data section (%llu bytes)",
                t->name, (unsigned long long)t->offset, t->nbytes, (unsigned long long)data_size);
        t->data = g->base + g->data_offset + t->offset;
    }
    order = malloc(g->n_tensors * sizeof(*order));
    if (order == NULL)
        return err_set(err, ERR_NOMEM, "out of memory checking tensor offsets");
    for (size_t i = 0; i < g->n_tensors; i++)
        order[i] = &g->tensors[i];
    qsort(order, g->n_tensors, sizeof(*order), cmp_offset);
    for (size_t i = 1; i < g->n_tensors; i++) {
        if (order[i - 1]->offset + order[i - 1]->nbytes > order[i]->offset) {
            int rv = err_set(err, ERR_FORMAT, "tensor %s: data overlaps tensor %s", order[i]->name,
                             order[i - 1]->name);
            free(order);
            return rv;
        }
    }
    free(order);
    return ERR_OK;
}

static int
parse(struct gguf *g, char *err)
{
    struct cursor c = {g->base, g->size};
    uint32_t magic;
    uint64_t n_tensors, n_kv, pos;
    long long dup;
    int rv;

    if (!cur_u32(&c, &magic))
        return err_set(err, ERR_FORMAT, "file is %zu bytes, too small for a GGUF header", g->size);
    if (magic != GGUF_MAGIC)
        return err_set(err, ERR_FORMAT, "bad magic %02x %02x %02x %02x, expected \"GGUF\"",
                       g->base[0], g->base[1], g->base[2], g->base[3]);
    if (!cur_u32(&c, &g->version))
        return err_set(err, ERR_FORMAT, "file ends inside the GGUF version");
    if (g->version == 1)
        return err_set(err, ERR_UNSUPPORTED, "unsupported GGUF version 1 (convert the file again)");
    if (g->version != 2 && g->version != 3) {
        if ((g->version & 0xffff) == 0 && (g->version >> 16) != 0)
            return err_set(err, ERR_UNSUPPORTED, "big-endian GGUF files are not supported");
        return err_set(err, ERR_UNSUPPORTED, "unsupported GGUF version %u (llorch reads 2 and 3)",
                       g->version);
    }
    if (!cur_u64(&c, &n_tensors) || !cur_u64(&c, &n_kv))
        return err_set(err, ERR_FORMAT, "file ends inside the GGUF header counts");
    if ((rv = read_kvs(g, &c, n_kv, err)) != ERR_OK)
        return rv;
    if ((rv = read_alignment(g, err)) != ERR_OK)
        return rv;
    /* each tensor info takes at least 8 + 1 (name) + 4 + 8 (one dim) + 4 + 8 bytes */
    if (n_tensors > c.left / 33)
        return err_set(err, ERR_FORMAT, "header claims %llu tensors, more than the file can hold",
                       (unsigned long long)n_tensors);
    g->tensors = gguf_alloc(g, n_tensors, sizeof(*g->tensors));
    if (g->tensors == NULL)
        return err_set(err, ERR_NOMEM, "out of memory for %llu tensors",
                       (unsigned long long)n_tensors);
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((rv = read_tensor_info(g, &c, &g->tensors[i], i, err)) != ERR_OK)
            return rv;
        g->n_tensors = i + 1;
    }
    dup = find_duplicate(g->n_tensors, tensor_name, g->tensors);
    if (dup < 0)
        return err_set(err, ERR_NOMEM, "out of memory checking tensor names");
    if ((size_t)dup < g->n_tensors)
        return err_set(err, ERR_FORMAT, "duplicate tensor name %s", g->tensors[dup].name);
    pos = g->size - c.left;
    g->data_offset = (pos + g->alignment - 1) / g->alignment * g->alignment;
    return place_tensors(g, err);
}

int
gguf_open_buffer(struct gguf **out, const void *buf, size_t size, char *err)
{
    struct gguf *g = calloc(1, sizeof(*g));
    int rv;

    *out = NULL;
    if (g == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");
    g->base = buf;
    g->size = size;
    if ((rv = parse(g, err)) != ERR_OK) {
        gguf_close(g);
        return rv;
    }
    *out = g;
    return ERR_OK;
}

int
gguf_open(struct gguf **out, const char *path, char *err)
{
    struct stat st;
    void *map;
    int fd, rv;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, ERR_IO, "open(%s): %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rv = err_set(err, ERR_IO, "fstat(%s): %s", path, strerror(errno));
        close(fd);
        return rv;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return err_set(err, ERR_IO, "%s is not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return err_set(err, ERR_FORMAT, "file is empty");
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED)
        return err_set(err, ERR_IO, "mmap(%s): %s", path, strerror(errno));
    rv = gguf_open_buffer(out, map, (size_t)st.st_size, err);
    if (rv != ERR_OK) {
        munmap(map, (size_t)st.st_size);
        return rv;
    }
    (*out)->mapped = true;
    return ERR_OK;
}

void
gguf_close(struct gguf *g)
{
    if (g == NULL)
        return;
    for (size_t i = 0; i < g->n_allocs; i++)
        free(g->allocs[i]);
    free(g->allocs);
    if (g->mapped)
        munmap((void *)g->base, g->size);
    free(g);
}

uint32_t
gguf_version(const struct gguf *g)
{
    return g->version;
}

uint32_t
gguf_alignment(const struct gguf *g)
{
    return g->alignment;
}

size_t
gguf_file_size(const struct gguf *g)
{
    return g->size;
}

uint64_t
gguf_data_offset(const struct gguf *g)
{
    return g->data_offset;
}

size_t
gguf_n_kv(const struct gguf *g)
{
    return g->n_kv;
}

const struct gguf_kv *
gguf_kv_at(const struct gguf *g, size_t i)
{
    return i < g->n_kv ? &g->kvs[i] : NULL;
}

const struct gguf_kv *
gguf_find_kv(const struct gguf *g, const char *key)
{
    for (size_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kvs[i].key, key) == 0)
            return &g->kvs[i];
    return NULL;
}

size_t
gguf_n_tensors(const struct gguf *g)
{
    return g->n_tensors;
}

const struct gguf_tensor *
gguf_tensor_at(const struct gguf *g, size_t i)
{
    return i < g->n_tensors ? &g->tensors[i] : NULL;
}

const struct gguf_tensor *
gguf_find_tensor(const struct gguf *g, const char *name)
{
    for (size_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0)
            return &g->tensors[i];
    return NULL;
}

static bool
is_signed(enum gguf_vtype t)
{
    return t == GGUF_VTYPE_INT8 || t == GGUF_VTYPE_INT16 || t == GGUF_VTYPE_INT32 ||
           t == GGUF_VTYPE_INT64;
}

static bool
is_unsigned(enum gguf_vtype t)
{
    return t == GGUF_VTYPE_UINT8 || t == GGUF_VTYPE_UINT16 || t == GGUF_VTYPE_UINT32 ||
           t == GGUF_VTYPE_UINT64;
}

int
gguf_get_int(const struct gguf *g, const char *key, int64_t *out, char *err)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);

    if (kv == NULL)
        return err_set(err, ERR_NOT_FOUND, "key '%s' is missing", key);
    if (is_signed(kv->type)) {
        *out = kv->v.i;
        return ERR_OK;
    }
    if (is_unsigned(kv->type)) {
        if (kv->v.u > (uint64_t)INT64_MAX)
            return err_set(err, ERR_FORMAT, "key '%s' is %llu, too large", key,
                           (unsigned long long)kv->v.u);
        *out = (int64_t)kv->v.u;
        return ERR_OK;
    }
    return err_set(err, ERR_FORMAT, "key '%s' has type %s, expected an integer", key,
                   gguf_vtype_name(kv->type));
}

int
gguf_get_float(const struct gguf *g, const char *key, double *out, char *err)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);

    if (kv == NULL)
        return err_set(err, ERR_NOT_FOUND, "key '%s' is missing", key);
    if (kv->type == GGUF_VTYPE_FLOAT32 || kv->type == GGUF_VTYPE_FLOAT64)
        *out = kv->v.f;
    else if (is_signed(kv->type))
        *out = (double)kv->v.i;
    else if (is_unsigned(kv->type))
        *out = (double)kv->v.u;
    else
        return err_set(err, ERR_FORMAT, "key '%s' has type %s, expected a number", key,
                       gguf_vtype_name(kv->type));
    return ERR_OK;
}

int
gguf_get_bool(const struct gguf *g, const char *key, bool *out, char *err)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);

    if (kv == NULL)
        return err_set(err, ERR_NOT_FOUND, "key '%s' is missing", key);
    if (kv->type != GGUF_VTYPE_BOOL)
        return err_set(err, ERR_FORMAT, "key '%s' has type %s, expected bool", key,
                       gguf_vtype_name(kv->type));
    *out = kv->v.u != 0;
    return ERR_OK;
}

int
gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out, char *err)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);

    if (kv == NULL)
        return err_set(err, ERR_NOT_FOUND, "key '%s' is missing", key);
    if (kv->type != GGUF_VTYPE_STRING)
        return err_set(err, ERR_FORMAT, "key '%s' has type %s, expected string", key,
                       gguf_vtype_name(kv->type));
    *out = kv->v.str;
    return ERR_OK;
}

int
gguf_get_arr(const struct gguf *g, const char *key, const struct gguf_arr **out, char *err)
{
    const struct gguf_kv *kv = gguf_find_kv(g, key);

    if (kv == NULL)
        return err_set(err, ERR_NOT_FOUND, "key '%s' is missing", key);
    if (kv->type != GGUF_VTYPE_ARRAY)
        return err_set(err, ERR_FORMAT, "key '%s' has type %s, expected array", key,
                       gguf_vtype_name(kv->type));
    *out = &kv->v.arr;
    return ERR_OK;
}

int64_t
gguf_arr_get_int(const struct gguf_arr *a, uint64_t i)
{
    const uint8_t *p = a->data + i * vtype_sizes[a->type];

    switch (a->type) {
    case GGUF_VTYPE_UINT8:
    case GGUF_VTYPE_BOOL:
        return p[0];
    case GGUF_VTYPE_INT8:
        return (int8_t)p[0];
    case GGUF_VTYPE_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_VTYPE_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        return x;
    }
    case GGUF_VTYPE_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_VTYPE_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        return x;
    }
    case GGUF_VTYPE_UINT64:
    case GGUF_VTYPE_INT64: {
        int64_t x;
        memcpy(&x, p, 8);
        return x;
    }
    case GGUF_VTYPE_FLOAT32:
    case GGUF_VTYPE_FLOAT64:
        return (int64_t)gguf_arr_get_float(a, i);
    default:
        return 0;
    }
}

double
gguf_arr_get_float(const struct gguf_arr *a, uint64_t i)
{
    const uint8_t *p = a->data + i * vtype_sizes[a->type];

    if (a->type == GGUF_VTYPE_FLOAT32) {
        float x;
        memcpy(&x, p, 4);
        return x;
    }
    if (a->type == GGUF_VTYPE_FLOAT64) {
        double x;
        memcpy(&x, p, 8);
        return x;
    }
    return (double)gguf_arr_get_int(a, i);
}
