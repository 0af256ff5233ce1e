/*
 * gguf_write.c: see gguf_write.h. The KV and tensor-info sections are built in memory (they are
 * small); the header is written in one go, then tensor data streams straight to the sink.
 */
#include "tests/gguf_write.h"

#include "common/err.h"
#include "workerd/engine/types.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define WRITER_MAX_NEST 8

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

/* A tensor from add_tensor: where its data goes in the data section. */
struct wtensor {
    uint64_t offset;
    uint64_t nbytes;
};

/* An array being written with begin_arr: its element type and the elements still expected. */
struct nest {
    enum gguf_vtype type;
    uint64_t left;
};

struct gguf_writer {
    FILE *f;        /* NULL: memory sink (mem) */
    struct buf mem; /* the memory sink */
    struct buf kv;  /* KV section */
    struct buf ti;  /* tensor-info section */
    uint32_t version;
    uint32_t alignment;
    bool raw_counts;
    uint64_t n_tensors_raw, n_kv_raw;
    uint64_t n_kv, n_ti;
    struct wtensor *tensors; /* computed tensors, in order */
    size_t n_tensors, cap_tensors;
    uint64_t next_offset; /* end of the last computed tensor */
    struct nest nest[WRITER_MAX_NEST];
    int depth;
    bool header_done, finished;
    uint64_t data_pos; /* bytes written into the data section */
    size_t cur;        /* first computed tensor whose data is not complete */
    int error;
    char msg[ERR_MSG_MAX];
};

/* Records the first error (sticky) and returns its code. */
static int fail(struct gguf_writer *w, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int
fail(struct gguf_writer *w, int code, const char *fmt, ...)
{
    va_list ap;

    if (w->error == ERR_OK) {
        w->error = code;
        va_start(ap, fmt);
        vsnprintf(w->msg, sizeof(w->msg), fmt, ap);
        va_end(ap);
    }
    return w->error;
}

static int
report(struct gguf_writer *w, char *err)
{
    if (w->error != ERR_OK && err != NULL)
        memcpy(err, w->msg, ERR_MSG_MAX);
    return w->error;
}

static int
buf_put(struct gguf_writer *w, struct buf *b, const void *data, size_t len)
{
    if (len > b->cap - b->len) {
        size_t cap = b->cap ? b->cap : 4096;
        uint8_t *p;

        while (cap - b->len < len) {
            if (cap > SIZE_MAX / 2)
                return fail(w, ERR_NOMEM, "gguf writer: buffer too large");
            cap *= 2;
        }
        p = realloc(b->data, cap);
        if (p == NULL)
            return fail(w, ERR_NOMEM, "gguf writer: out of memory (%zu bytes)", cap);
        b->data = p;
        b->cap = cap;
    }
    if (len > 0)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return ERR_OK;
}

/* Little-endian integer of `size` bytes. */
static int
put_le(struct gguf_writer *w, struct buf *b, uint64_t v, size_t size)
{
    uint8_t bytes[8];

    for (size_t i = 0; i < size; i++)
        bytes[i] = (uint8_t)(v >> (8 * i));
    return buf_put(w, b, bytes, size);
}

static int
put_str(struct gguf_writer *w, struct buf *b, const char *s, uint64_t len)
{
    if (put_le(w, b, len, 8) != ERR_OK)
        return w->error;
    return buf_put(w, b, s, (size_t)len);
}

/*
 * Checks that something may still be added to the sections: no error so far, no header written,
 * and no array left open unless it is an element of that array (in_array).
 */
static int
can_add(struct gguf_writer *w, const char *what, bool in_array)
{
    if (w->error != ERR_OK)
        return w->error;
    if (w->header_done)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: %s added after the header was written", what);
    if (w->depth > 0 && !in_array)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: %s added inside an unfinished array", what);
    return ERR_OK;
}

static int
new_writer(struct gguf_writer **out, FILE *f, char *err)
{
    struct gguf_writer *w = calloc(1, sizeof(*w));

    *out = NULL;
    if (w == NULL)
        return err_set(err, ERR_NOMEM, "gguf writer: out of memory");
    w->f = f;
    w->version = 3;
    w->alignment = GGUF_DEFAULT_ALIGNMENT;
    *out = w;
    return ERR_OK;
}

int
gguf_writer_new_file(struct gguf_writer **out, FILE *f, char *err)
{
    if (f == NULL) {
        *out = NULL;
        return err_set(err, ERR_BAD_REQUEST, "gguf writer: no file");
    }
    return new_writer(out, f, err);
}

int
gguf_writer_new_mem(struct gguf_writer **out, char *err)
{
    return new_writer(out, NULL, err);
}

void
gguf_writer_free(struct gguf_writer *w)
{
    if (w == NULL)
        return;
    free(w->mem.data);
    free(w->kv.data);
    free(w->ti.data);
    free(w->tensors);
    free(w);
}

uint8_t *
gguf_writer_take(struct gguf_writer *w, size_t *size)
{
    uint8_t *p = w->mem.data;

    *size = w->mem.len;
    memset(&w->mem, 0, sizeof(w->mem));
    return p;
}

void
gguf_writer_set_version(struct gguf_writer *w, uint32_t version)
{
    w->version = version;
}

void
gguf_writer_set_counts(struct gguf_writer *w, uint64_t n_tensors, uint64_t n_kv)
{
    w->raw_counts = true;
    w->n_tensors_raw = n_tensors;
    w->n_kv_raw = n_kv;
}

/* Key and value type of a top-level KV. */
static int
kv_begin(struct gguf_writer *w, const char *key, enum gguf_vtype t)
{
    if (can_add(w, "KV", false) != ERR_OK)
        return w->error;
    if (put_str(w, &w->kv, key, strlen(key)) != ERR_OK || put_le(w, &w->kv, t, 4) != ERR_OK)
        return w->error;
    w->n_kv++;
    return ERR_OK;
}

static int
kv_scalar(struct gguf_writer *w, const char *key, enum gguf_vtype t, uint64_t bits)
{
    if (kv_begin(w, key, t) != ERR_OK)
        return w->error;
    if (t == GGUF_VTYPE_UINT32 && bits != 0 && strcmp(key, "general.alignment") == 0)
        w->alignment = (uint32_t)bits;
    return put_le(w, &w->kv, bits, gguf_vtype_size(t));
}

int
gguf_writer_add_u8(struct gguf_writer *w, const char *key, uint8_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_UINT8, v);
}

int
gguf_writer_add_i8(struct gguf_writer *w, const char *key, int8_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_INT8, (uint64_t)(int64_t)v);
}

int
gguf_writer_add_u16(struct gguf_writer *w, const char *key, uint16_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_UINT16, v);
}

int
gguf_writer_add_i16(struct gguf_writer *w, const char *key, int16_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_INT16, (uint64_t)(int64_t)v);
}

int
gguf_writer_add_u32(struct gguf_writer *w, const char *key, uint32_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_UINT32, v);
}

int
gguf_writer_add_i32(struct gguf_writer *w, const char *key, int32_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_INT32, (uint64_t)(int64_t)v);
}

int
gguf_writer_add_u64(struct gguf_writer *w, const char *key, uint64_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_UINT64, v);
}

int
gguf_writer_add_i64(struct gguf_writer *w, const char *key, int64_t v)
{
    return kv_scalar(w, key, GGUF_VTYPE_INT64, (uint64_t)v);
}

/* A top-level KV whose value is the size(t) native (little-endian) bytes at p. */
static int
kv_bytes(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *p)
{
    if (kv_begin(w, key, t) != ERR_OK)
        return w->error;
    return buf_put(w, &w->kv, p, gguf_vtype_size(t));
}

int
gguf_writer_add_f32(struct gguf_writer *w, const char *key, float v)
{
    return kv_bytes(w, key, GGUF_VTYPE_FLOAT32, &v);
}

int
gguf_writer_add_f64(struct gguf_writer *w, const char *key, double v)
{
    return kv_bytes(w, key, GGUF_VTYPE_FLOAT64, &v);
}

int
gguf_writer_add_bool(struct gguf_writer *w, const char *key, bool v)
{
    return kv_scalar(w, key, GGUF_VTYPE_BOOL, v ? 1 : 0);
}

int
gguf_writer_add_str(struct gguf_writer *w, const char *key, const char *s)
{
    return gguf_writer_add_strn(w, key, s, strlen(s));
}

int
gguf_writer_add_strn(struct gguf_writer *w, const char *key, const char *s, uint64_t len)
{
    if (kv_begin(w, key, GGUF_VTYPE_STRING) != ERR_OK)
        return w->error;
    return put_str(w, &w->kv, s, len);
}

/* Reads a native value of fixed-size type t at p as little-endian bits. */
static uint64_t
native_bits(enum gguf_vtype t, const uint8_t *p)
{
    uint64_t u = 0;
    uint32_t u32;
    uint16_t u16;

    switch (gguf_vtype_size(t)) {
    case 1:
        return p[0];
    case 2:
        memcpy(&u16, p, 2);
        return u16;
    case 4:
        memcpy(&u32, p, 4);
        return u32;
    default:
        memcpy(&u, p, 8);
        return u;
    }
}

int
gguf_writer_add_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t, const void *data,
                    uint64_t n)
{
    size_t size = gguf_vtype_size(t);
    const uint8_t *p = data;

    if (size == 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: %s: add_arr takes fixed-size elements", key);
    if (gguf_writer_begin_arr(w, key, t, n) != ERR_OK)
        return w->error;
    for (uint64_t i = 0; i < n; i++)
        if (gguf_writer_val_int(w, t, native_bits(t, p + i * size)) != ERR_OK)
            return w->error;
    return gguf_writer_end_arr(w);
}

int
gguf_writer_add_arr_str(struct gguf_writer *w, const char *key, const char *const *strs, uint64_t n)
{
    if (gguf_writer_begin_arr(w, key, GGUF_VTYPE_STRING, n) != ERR_OK)
        return w->error;
    for (uint64_t i = 0; i < n; i++)
        if (gguf_writer_val_str(w, strs[i], strlen(strs[i])) != ERR_OK)
            return w->error;
    return gguf_writer_end_arr(w);
}

/* Accounts for one element of type t in the innermost open array. */
static int
element(struct gguf_writer *w, enum gguf_vtype t)
{
    struct nest *n;

    if (can_add(w, "array element", true) != ERR_OK)
        return w->error;
    if (w->depth == 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: %s value outside an array",
                    gguf_vtype_name(t));
    n = &w->nest[w->depth - 1];
    if (n->type != t)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: %s element in an array of another type",
                    gguf_vtype_name(t));
    if (n->left == 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: more %s elements than the array's count",
                    gguf_vtype_name(t));
    n->left--;
    return ERR_OK;
}

int
gguf_writer_begin_arr(struct gguf_writer *w, const char *key, enum gguf_vtype t, uint64_t n)
{
    if (key != NULL) {
        if (kv_begin(w, key, GGUF_VTYPE_ARRAY) != ERR_OK)
            return w->error;
    } else if (element(w, GGUF_VTYPE_ARRAY) != ERR_OK) {
        return w->error;
    }
    if (w->depth == WRITER_MAX_NEST)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: arrays nested deeper than %d",
                    WRITER_MAX_NEST);
    w->nest[w->depth].type = t;
    w->nest[w->depth].left = n;
    w->depth++;
    if (put_le(w, &w->kv, t, 4) != ERR_OK)
        return w->error;
    return put_le(w, &w->kv, n, 8);
}

int
gguf_writer_end_arr(struct gguf_writer *w)
{
    if (w->error != ERR_OK)
        return w->error;
    if (w->depth == 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: end_arr without begin_arr");
    if (w->nest[w->depth - 1].left != 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: array of %s ended before its count",
                    gguf_vtype_name(w->nest[w->depth - 1].type));
    w->depth--;
    return ERR_OK;
}

int
gguf_writer_val_int(struct gguf_writer *w, enum gguf_vtype t, uint64_t bits)
{
    if (gguf_vtype_size(t) == 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: val_int of %s", gguf_vtype_name(t));
    if (element(w, t) != ERR_OK)
        return w->error;
    return put_le(w, &w->kv, bits, gguf_vtype_size(t));
}

int
gguf_writer_val_f32(struct gguf_writer *w, float v)
{
    if (element(w, GGUF_VTYPE_FLOAT32) != ERR_OK)
        return w->error;
    return buf_put(w, &w->kv, &v, sizeof(v));
}

int
gguf_writer_val_f64(struct gguf_writer *w, double v)
{
    if (element(w, GGUF_VTYPE_FLOAT64) != ERR_OK)
        return w->error;
    return buf_put(w, &w->kv, &v, sizeof(v));
}

int
gguf_writer_val_str(struct gguf_writer *w, const char *s, uint64_t len)
{
    if (element(w, GGUF_VTYPE_STRING) != ERR_OK)
        return w->error;
    return put_str(w, &w->kv, s, len);
}

/* Writes the elements of a (possibly nested) array read by the reader. */
static int
copy_arr(struct gguf_writer *w, const struct gguf_arr *a)
{
    size_t size = gguf_vtype_size(a->type);

    for (uint64_t i = 0; i < a->n; i++) {
        if (a->type == GGUF_VTYPE_STRING) {
            gguf_writer_val_str(w, a->strs[i].data, a->strs[i].len);
        } else if (a->type == GGUF_VTYPE_ARRAY) {
            if (gguf_writer_begin_arr(w, NULL, a->arrs[i].type, a->arrs[i].n) == ERR_OK &&
                copy_arr(w, &a->arrs[i]) == ERR_OK)
                gguf_writer_end_arr(w);
        } else {
            /* the mapping holds the elements little-endian already */
            if (element(w, a->type) == ERR_OK)
                buf_put(w, &w->kv, a->data + i * size, size);
        }
        if (w->error != ERR_OK)
            return w->error;
    }
    return ERR_OK;
}

int
gguf_writer_kv_copy(struct gguf_writer *w, const struct gguf_kv *kv, const char *key)
{
    if (key == NULL)
        key = kv->key;
    switch (kv->type) {
    case GGUF_VTYPE_UINT8:
    case GGUF_VTYPE_UINT16:
    case GGUF_VTYPE_UINT32:
    case GGUF_VTYPE_UINT64:
    case GGUF_VTYPE_BOOL:
        return kv_scalar(w, key, kv->type, kv->v.u);
    case GGUF_VTYPE_INT8:
    case GGUF_VTYPE_INT16:
    case GGUF_VTYPE_INT32:
    case GGUF_VTYPE_INT64:
        return kv_scalar(w, key, kv->type, (uint64_t)kv->v.i);
    case GGUF_VTYPE_FLOAT32:
        return gguf_writer_add_f32(w, key, (float)kv->v.f);
    case GGUF_VTYPE_FLOAT64:
        return kv_bytes(w, key, kv->type, &kv->v.f);
    case GGUF_VTYPE_STRING:
        return gguf_writer_add_strn(w, key, kv->v.str.data, kv->v.str.len);
    case GGUF_VTYPE_ARRAY:
        if (gguf_writer_begin_arr(w, key, kv->v.arr.type, kv->v.arr.n) != ERR_OK ||
            copy_arr(w, &kv->v.arr) != ERR_OK)
            return w->error;
        return gguf_writer_end_arr(w);
    default:
        return fail(w, ERR_BAD_REQUEST, "gguf writer: %s: unknown value type", key);
    }
}

int
gguf_writer_add_raw_kv(struct gguf_writer *w, const void *bytes, size_t len, uint64_t n_kv)
{
    if (can_add(w, "raw KV", false) != ERR_OK || buf_put(w, &w->kv, bytes, len) != ERR_OK)
        return w->error;
    w->n_kv += n_kv;
    return ERR_OK;
}

static uint64_t
align_up(uint64_t x, uint32_t a)
{
    return (x + a - 1) / a * a;
}

static int
tensor_info(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
            const uint64_t *ne, uint64_t offset)
{
    if (put_str(w, &w->ti, name, strlen(name)) != ERR_OK || put_le(w, &w->ti, n_dims, 4) != ERR_OK)
        return w->error;
    for (uint32_t i = 0; i < n_dims; i++)
        if (put_le(w, &w->ti, ne[i], 8) != ERR_OK)
            return w->error;
    if (put_le(w, &w->ti, type, 4) != ERR_OK || put_le(w, &w->ti, offset, 8) != ERR_OK)
        return w->error;
    w->n_ti++;
    return ERR_OK;
}

int
gguf_writer_add_tensor(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                       const int64_t *ne)
{
    uint64_t une[GGUF_MAX_DIMS];
    uint64_t nbytes, rows = 1;
    struct wtensor *t;

    if (can_add(w, "tensor", false) != ERR_OK)
        return w->error;
    if (type_traits(type) == NULL)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: tensor %s: unknown type id", name);
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: tensor %s: n_dims not in [1, 4]", name);
    for (uint32_t i = 0; i < n_dims; i++) {
        if (ne[i] < 1)
            return fail(w, ERR_BAD_REQUEST, "gguf writer: tensor %s: a dimension < 1", name);
        une[i] = (uint64_t)ne[i];
        if (i > 0 && __builtin_mul_overflow(rows, une[i], &rows))
            return fail(w, ERR_BAD_REQUEST, "gguf writer: tensor %s: too many elements", name);
    }
    nbytes = type_row_size(type, une[0]);
    if (nbytes == 0)
        return fail(w, ERR_BAD_REQUEST, "gguf writer: tensor %s: ne[0] not a multiple of the block",
                    name);
    if (__builtin_mul_overflow(nbytes, rows, &nbytes))
        return fail(w, ERR_BAD_REQUEST, "gguf writer: tensor %s: too many bytes", name);
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        struct wtensor *p = realloc(w->tensors, cap * sizeof(*p));

        if (p == NULL)
            return fail(w, ERR_NOMEM, "gguf writer: tensor %s: out of memory", name);
        w->tensors = p;
        w->cap_tensors = cap;
    }
    t = &w->tensors[w->n_tensors];
    t->offset = align_up(w->next_offset, w->alignment);
    t->nbytes = nbytes;
    if (tensor_info(w, name, type, n_dims, une, t->offset) != ERR_OK)
        return w->error;
    w->n_tensors++;
    w->next_offset = t->offset + nbytes;
    return ERR_OK;
}

int
gguf_writer_add_tensor_raw(struct gguf_writer *w, const char *name, uint32_t type, uint32_t n_dims,
                           const uint64_t *ne, uint64_t offset)
{
    if (can_add(w, "tensor", false) != ERR_OK)
        return w->error;
    return tensor_info(w, name, type, n_dims, ne, offset);
}

uint64_t
gguf_writer_next_offset(const struct gguf_writer *w)
{
    return align_up(w->next_offset, w->alignment);
}

uint64_t
gguf_writer_kv_pos(const struct gguf_writer *w)
{
    return 24 + w->kv.len;
}

uint64_t
gguf_writer_tensor_pos(const struct gguf_writer *w)
{
    return 24 + w->kv.len + w->ti.len;
}

uint64_t
gguf_writer_data_offset(const struct gguf_writer *w)
{
    return align_up(gguf_writer_tensor_pos(w), w->alignment);
}

/* Sends bytes to the sink. */
static int
sink(struct gguf_writer *w, const void *data, size_t len)
{
    if (w->f == NULL)
        return buf_put(w, &w->mem, data, len);
    if (len > 0 && fwrite(data, 1, len, w->f) != len)
        return fail(w, ERR_IO, "gguf writer: fwrite() failed: %s", strerror(errno));
    return ERR_OK;
}

static int
sink_zeros(struct gguf_writer *w, uint64_t len)
{
    static const uint8_t zeros[4096];

    while (len > 0 && w->error == ERR_OK) {
        size_t n = len < sizeof(zeros) ? (size_t)len : sizeof(zeros);

        sink(w, zeros, n);
        len -= n;
    }
    return w->error;
}

int
gguf_writer_write_header(struct gguf_writer *w, char *err)
{
    struct buf h = {0};
    uint64_t end;

    if (w->error == ERR_OK && w->header_done)
        fail(w, ERR_BAD_REQUEST, "gguf writer: header written twice");
    if (w->error == ERR_OK && w->depth > 0)
        fail(w, ERR_BAD_REQUEST, "gguf writer: header written inside an unfinished array");
    if (w->error != ERR_OK)
        return report(w, err);
    put_le(w, &h, GGUF_MAGIC, 4);
    put_le(w, &h, w->version, 4);
    put_le(w, &h, w->raw_counts ? w->n_tensors_raw : w->n_ti, 8);
    put_le(w, &h, w->raw_counts ? w->n_kv_raw : w->n_kv, 8);
    if (w->error == ERR_OK)
        sink(w, h.data, h.len);
    free(h.data);
    end = gguf_writer_tensor_pos(w);
    if (w->error == ERR_OK && sink(w, w->kv.data, w->kv.len) == ERR_OK &&
        sink(w, w->ti.data, w->ti.len) == ERR_OK)
        sink_zeros(w, align_up(end, w->alignment) - end);
    w->header_done = true;
    return report(w, err);
}

/* Zero padding up to the current tensor's offset before its first byte. */
static int
pad_to_current(struct gguf_writer *w)
{
    uint64_t off = w->tensors[w->cur].offset;

    if (w->data_pos > off)
        return fail(w, ERR_BAD_REQUEST,
                    "gguf writer: data position %llu is past the offset %llu of tensor #%zu",
                    (unsigned long long)w->data_pos, (unsigned long long)off, w->cur);
    if (sink_zeros(w, off - w->data_pos) == ERR_OK)
        w->data_pos = off;
    return w->error;
}

int
gguf_writer_write_data(struct gguf_writer *w, const void *data, size_t len, char *err)
{
    const uint8_t *p = data;

    if (w->error == ERR_OK && !w->header_done)
        gguf_writer_write_header(w, err);
    if (w->error == ERR_OK && w->finished)
        fail(w, ERR_BAD_REQUEST, "gguf writer: data written after finish");
    while (w->error == ERR_OK && len > 0) {
        struct wtensor *t;
        uint64_t left;
        size_t n;

        if (w->cur == w->n_tensors) {
            fail(w, ERR_BAD_REQUEST, "gguf writer: more data than the tensors hold");
            break;
        }
        t = &w->tensors[w->cur];
        if (w->data_pos < t->offset && pad_to_current(w) != ERR_OK)
            break;
        left = t->offset + t->nbytes - w->data_pos;
        n = len < left ? len : (size_t)left;
        if (n < len && w->cur + 1 == w->n_tensors) {
            fail(w, ERR_BAD_REQUEST, "gguf writer: more data than the tensors hold");
            break;
        }
        if (sink(w, p, n) != ERR_OK)
            break;
        w->data_pos += n;
        p += n;
        len -= n;
        if (w->data_pos == t->offset + t->nbytes)
            w->cur++;
    }
    return report(w, err);
}

int
gguf_writer_write_zeros(struct gguf_writer *w, uint64_t len, char *err)
{
    if (w->error == ERR_OK && !w->header_done)
        gguf_writer_write_header(w, err);
    if (w->error == ERR_OK && w->finished)
        fail(w, ERR_BAD_REQUEST, "gguf writer: data written after finish");
    if (w->error == ERR_OK && sink_zeros(w, len) == ERR_OK)
        w->data_pos += len;
    return report(w, err);
}

int
gguf_writer_finish(struct gguf_writer *w, char *err)
{
    if (w->error == ERR_OK && !w->header_done)
        gguf_writer_write_header(w, err);
    if (w->error == ERR_OK && w->finished)
        fail(w, ERR_BAD_REQUEST, "gguf writer: finish called twice");
    /* zeros up to the end of each tensor not written (write_zeros may have covered some) */
    for (; w->error == ERR_OK && w->cur < w->n_tensors; w->cur++) {
        uint64_t end = w->tensors[w->cur].offset + w->tensors[w->cur].nbytes;

        if (w->data_pos < end && sink_zeros(w, end - w->data_pos) == ERR_OK)
            w->data_pos = end;
    }
    if (w->error == ERR_OK)
        sink_zeros(w, align_up(w->data_pos, w->alignment) - w->data_pos);
    if (w->error == ERR_OK && w->f != NULL && fflush(w->f) != 0)
        fail(w, ERR_IO, "gguf writer: fflush() failed: %s", strerror(errno));
    w->finished = true;
    return report(w, err);
}
