/*
 * synth_rand.c: the counter-based generator of synth_rand.h. Each value is the SplitMix64 finalizer
 * applied to a per-(seed, stream) key plus the index times the golden-ratio constant; the normals
 * sum the four 16-bit quarters of one such value (Irwin-Hall), which needs no log or sine and is
 * fast enough to fill a 7B-shaped model in minutes.
 */
#include "tests/synth_rand.h"

#include <math.h>

#define GOLDEN 0x9e3779b97f4a7c15ull

static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t
stream_key(uint64_t seed, uint64_t stream)
{
    return mix64(mix64(seed + GOLDEN) ^ (stream * 0xd1b54a32d192ed03ull + 1));
}

uint64_t
synth_rand_bits(uint64_t seed, uint64_t stream, uint64_t index)
{
    return mix64(stream_key(seed, stream) + index * GOLDEN);
}

float
synth_rand_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (float)(synth_rand_bits(seed, stream, index) >> 40) * 0x1p-24f;
}

void
synth_rand_normal(uint64_t seed, uint64_t stream, uint64_t first, int64_t n, float mean, float std,
                  float *out)
{
    uint64_t key = stream_key(seed, stream);
    /* four uniforms on [0, 65536) sum to mean 131070, variance 4 * (65536^2 - 1) / 12 */
    const double scale = std / (65536.0 / sqrt(3.0));

    for (int64_t i = 0; i < n; i++) {
        uint64_t h = mix64(key + (first + (uint64_t)i) * GOLDEN);
        uint32_t s = (uint32_t)(h & 0xffff) + (uint32_t)((h >> 16) & 0xffff) +
                     (uint32_t)((h >> 32) & 0xffff) + (uint32_t)(h >> 48);

        out[i] = mean + (float)(((double)s - 131070.0) * scale);
    }
}
