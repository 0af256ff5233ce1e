/*
 * types.h: every tensor type id GGUF defines, and what llorch knows of each: name, block size
 * (elements per block) and bytes per block. The ids are ggml's on-disk enum; ids ggml removed
 * (4, 5, 31-33, 36-38) have no entry. A type in the table but not `supported` can still be listed
 * by `workerd inspect`; the model loader refuses it by tensor name. Each entry also points at the
 * type's scalar reference kernels (workerd/engine/quant.h): row conversions and the dot product.
 * Also the scalar conversions between F32 and F16 / BF16 that readers and writers share.
 */
#ifndef LLORCH_TYPES_H
#define LLORCH_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum type_id {
    TYPE_F32 = 0,
    TYPE_F16 = 1,
    TYPE_Q4_0 = 2,
    TYPE_Q4_1 = 3,
    TYPE_Q5_0 = 6,
    TYPE_Q5_1 = 7,
    TYPE_Q8_0 = 8,
    TYPE_Q8_1 = 9,
    TYPE_Q2_K = 10,
    TYPE_Q3_K = 11,
    TYPE_Q4_K = 12,
    TYPE_Q5_K = 13,
    TYPE_Q6_K = 14,
    TYPE_Q8_K = 15,
    TYPE_IQ2_XXS = 16,
    TYPE_IQ2_XS = 17,
    TYPE_IQ3_XXS = 18,
    TYPE_IQ1_S = 19,
    TYPE_IQ4_NL = 20,
    TYPE_IQ3_S = 21,
    TYPE_IQ2_S = 22,
    TYPE_IQ4_XS = 23,
    TYPE_I8 = 24,
    TYPE_I16 = 25,
    TYPE_I32 = 26,
    TYPE_I64 = 27,
    TYPE_F64 = 28,
    TYPE_IQ1_M = 29,
    TYPE_BF16 = 30,
    TYPE_TQ1_0 = 34,
    TYPE_TQ2_0 = 35,
    TYPE_MXFP4 = 39,
    TYPE__COUNT = 40
};

/* Converts n elements of a row of the type at src into floats at dst. Never fails. */
typedef void (*type_to_float_fn)(const void *src, float *dst, int64_t n);

/*
 * Converts n finite floats at src into a row of the type at dst (type_row_size(type, n) bytes).
 * Never fails.
 */
typedef void (*type_from_float_fn)(const float *src, void *dst, int64_t n);

/*
 * The dot product of n elements: x a row of the type, y a row of the type's vec_dot_type (the
 * activations, quantized once per matrix with that type's from_float). Never fails. The table
 * holds the scalar references; faster kernels of the same shape are held to them.
 */
typedef float (*type_vec_dot_fn)(const void *x, const void *y, int64_t n);

struct type_traits {
    const char *name;              /* lower case, as llama.cpp prints it: "q4_k", "bf16" */
    uint32_t blck;                 /* elements per block */
    uint32_t size;                 /* bytes per block */
    bool supported;                /* the model can compute with it (set as its matmul lands) */
    type_to_float_fn to_float;     /* NULL: llorch cannot read the type */
    type_from_float_fn from_float; /* NULL: llorch cannot write the type */
    type_vec_dot_fn vec_dot;       /* NULL: no dot product */
    uint32_t vec_dot_type;         /* the type of vec_dot's y (F32, Q8_0, Q8_1 or Q8_K) */
};

/* The traits of a type id, or NULL when GGUF defines no such id. */
const struct type_traits *type_traits(uint32_t type);

/* Bytes of a row of n elements of type t; 0 when n is not a multiple of the block size. */
size_t type_row_size(uint32_t type, uint64_t n);

/* IEEE half <-> float, exact for every half (round to nearest even on the way down). */
float fp16_to_f32(uint16_t h);
uint16_t f32_to_fp16(float f);

/* bfloat16 <-> float (round to nearest even; NaN stays NaN). */
float bf16_to_f32(uint16_t h);
uint16_t f32_to_bf16(float f);

#endif
