/*
 * synth_rand.h: counter-based pseudo-random numbers for synthetic models and tests. A value depends
 * only on (seed, stream, index), never on what was drawn before, so any tensor (stream) can be
 * generated in any order and in any chunks and still give the same bytes. Not cryptographic, and
 * the normals are an approximation (a scaled sum of four uniforms: bounded by +-3.47, variance 1).
 */
#ifndef LLORCH_SYNTH_RAND_H
#define LLORCH_SYNTH_RAND_H

#include <stdint.h>

/* 64 well-mixed bits for (seed, stream, index). */
uint64_t synth_rand_bits(uint64_t seed, uint64_t stream, uint64_t index);

/* Uniform in [0, 1) for (seed, stream, index). */
float synth_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/*
 * Writes n approximately normal values of mean `mean` and standard deviation `std` into out:
 * out[i] is the value for index first + i of (seed, stream).
 */
void synth_rand_normal(uint64_t seed, uint64_t stream, uint64_t first, int64_t n, float mean,
                       float std, float *out);

#endif
