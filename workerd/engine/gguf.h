/*
 * gguf.h: a strict reader for GGUF v2 and v3 files, over a read-only shared mapping.
 *
 * The format (all little-endian):
 *   header:  magic "GGUF" (u32 0x46554747), version u32, n_tensors u64, n_kv u64
 *   kv:      n_kv x { key: string, value_type: u32, value }
 *            string = { len: u64, bytes (no NUL) }
 *            value  = scalar of its type | string | array { elem_type: u32, n: u64, n x value }
 *   tensors: n_tensors x { name: string, n_dims: u32, ne[n_dims]: u64, type: u32, offset: u64 }
 *   padding to general.alignment (u32 key, default 32, a power of two)
 *   data:    tensor i at data_start + offset_i; offsets aligned, in bounds, not overlapping
 * ne[0] is the contiguous (fastest varying) dimension, as in ggml.
 *
 * Nothing in the mapping is copied: strings, arrays and tensor data are views into it, valid until
 * gguf_close(). Only the index (kv and tensor tables, key and tensor names as C strings) is
 * allocated. Everything is checked against the bytes that exist before it is used; every error
 * names the key or tensor at fault. Not thread-hostile: after open, all functions here are
 * read-only.
 */
#ifndef LLORCH_GGUF_H
#define LLORCH_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GGUF_MAGIC             0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS          4

enum gguf_vtype {
    GGUF_VTYPE_UINT8 = 0,
    GGUF_VTYPE_INT8 = 1,
    GGUF_VTYPE_UINT16 = 2,
    GGUF_VTYPE_INT16 = 3,
    GGUF_VTYPE_UINT32 = 4,
    GGUF_VTYPE_INT32 = 5,
    GGUF_VTYPE_FLOAT32 = 6,
    GGUF_VTYPE_BOOL = 7,
    GGUF_VTYPE_STRING = 8,
    GGUF_VTYPE_ARRAY = 9,
    GGUF_VTYPE_UINT64 = 10,
    GGUF_VTYPE_INT64 = 11,
    GGUF_VTYPE_FLOAT64 = 12,
    GGUF_VTYPE__COUNT
};

/* A string inside the mapping: len bytes at data, not NUL-terminated. */
struct gguf_str {
    uint64_t len;
    const char *data;
};

/*
 * An array value. Fixed-size elements are read with gguf_arr_get_*(); they sit unaligned in the
 * mapping. Arrays of strings carry an index (strs); arrays of arrays carry their children (arrs).
 */
struct gguf_arr {
    enum gguf_vtype type;
    uint64_t n;
    const uint8_t *data;   /* first element in the mapping */
    struct gguf_str *strs; /* type STRING: n entries, else NULL */
    struct gguf_arr *arrs; /* type ARRAY: n entries, else NULL */
};

struct gguf_kv {
    const char *key; /* NUL-terminated copy */
    enum gguf_vtype type;
    union {
        uint64_t u; /* UINT8..UINT64 (zero-extended), BOOL (0/1) */
        int64_t i;  /* INT8..INT64 (sign-extended) */
        double f;   /* FLOAT32, FLOAT64 */
        struct gguf_str str;
        struct gguf_arr arr;
    } v;
};

struct gguf_tensor {
    const char *name; /* NUL-terminated copy */
    uint32_t type;    /* enum type_id (types.h); may be one llorch cannot compute with */
    uint32_t n_dims;
    int64_t ne[GGUF_MAX_DIMS]; /* unused dimensions are 1 */
    uint64_t offset;           /* relative to the start of the data section */
    uint64_t n_elements;
    size_t nbytes;
    const void *data; /* into the mapping */
};

struct gguf;

/*
 * Maps path read-only and shared (PROT_READ, MAP_SHARED) and parses it. On success *out owns the
 * mapping; on failure returns an enum err (ERR_IO, ERR_FORMAT, ERR_UNSUPPORTED, ERR_NOMEM) with a
 * one-line detail in err (ERR_MSG_MAX bytes) and nothing is left open.
 */
int gguf_open(struct gguf **out, const char *path, char *err);

/* Parses a buffer the caller owns and keeps alive until gguf_close() (tests, fuzzing). */
int gguf_open_buffer(struct gguf **out, const void *buf, size_t size, char *err);

/* Frees the index and unmaps the file (if gguf_open mapped it). NULL is fine. */
void gguf_close(struct gguf *g);

uint32_t gguf_version(const struct gguf *g);
uint32_t gguf_alignment(const struct gguf *g);
size_t gguf_file_size(const struct gguf *g);
uint64_t gguf_data_offset(const struct gguf *g); /* file offset of the data section */

size_t gguf_n_kv(const struct gguf *g);
const struct gguf_kv *gguf_kv_at(const struct gguf *g, size_t i);
const struct gguf_kv *gguf_find_kv(const struct gguf *g, const char *key); /* NULL if absent */

size_t gguf_n_tensors(const struct gguf *g);
const struct gguf_tensor *gguf_tensor_at(const struct gguf *g, size_t i);
const struct gguf_tensor *gguf_find_tensor(const struct gguf *g, const char *name); /* or NULL */

/*
 * Typed lookups. Each returns ERR_OK, ERR_NOT_FOUND when the key is absent (out untouched), or
 * ERR_FORMAT with a detail naming the key when its type does not fit (an integer that does not fit
 * in the target, a string where a number was expected...).
 * get_int accepts any integer type; get_float accepts FLOAT32/FLOAT64 (and integers);
 * get_str gives a view into the mapping; get_arr a view of an array value.
 */
int gguf_get_int(const struct gguf *g, const char *key, int64_t *out, char *err);
int gguf_get_float(const struct gguf *g, const char *key, double *out, char *err);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out, char *err);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out, char *err);
int gguf_get_arr(const struct gguf *g, const char *key, const struct gguf_arr **out, char *err);

/* Element i (< a->n) of a fixed-size array, converted; the caller checks a->type. */
int64_t gguf_arr_get_int(const struct gguf_arr *a, uint64_t i);
double gguf_arr_get_float(const struct gguf_arr *a, uint64_t i);

/* Name of a value type ("uint32", "string", ...), or "?" for an unknown one. */
const char *gguf_vtype_name(enum gguf_vtype t);

/* Bytes of one element of a fixed-size value type; 0 for STRING, ARRAY and unknown types. */
size_t gguf_vtype_size(enum gguf_vtype t);

#endif
