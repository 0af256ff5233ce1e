/*
 * sha256.h: SHA-256 (FIPS 180-4), for model digests in proof bundles and anywhere a file must be
 * identified by content. Incremental (init / update / final) and one-shot over a file. Not for
 * secrets: no constant-time guarantees beyond what the algorithm gives.
 */
#ifndef LLORCH_SHA256_H
#define LLORCH_SHA256_H

#include <stddef.h>
#include <stdint.h>

struct sha256 {
    uint32_t h[8];
    uint64_t len; /* bytes hashed so far */
    uint8_t buf[64];
    size_t n; /* bytes waiting in buf */
};

void sha256_init(struct sha256 *s);
void sha256_update(struct sha256 *s, const void *data, size_t len);

/* Writes the 32-byte digest; s must be initialised again before reuse. */
void sha256_final(struct sha256 *s, uint8_t out[32]);

/* The digest of a file as 64 lowercase hex digits plus NUL in hex. ERR_IO with a detail in err. */
int sha256_file_hex(const char *path, char hex[65], char *err);

#endif
