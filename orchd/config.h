/*
 * config.h: orchd's configuration file (`orchd -c FILE`): the tenants (name, key hash, weight for
 * fair sharing, limits and quotas) and the TLS certificate for tls+tcp:// listeners. The format is
 * a small INI dialect, parsed here by hand (docs/operations.md has the reference):
 *   [tls]             cert_key_file = PEM with the certificate then its private key
 *   [tenant NAME]     key = blake2b:HEX, weight, max_running, max_queued, max_finished,
 *                     token_budget, budget_period_s, rate_per_min
 * Keys are stored as BLAKE2b-256 digests (libsodium) and compared in constant time.
 * Not here: what the limits do (sched.h), the listeners (front.h).
 */
#ifndef LLORCH_ORCHD_CONFIG_H
#define LLORCH_ORCHD_CONFIG_H

#include "orchd/sched.h"

#include <stdint.h>

#define CONFIG_HASH_BYTES 32
/* "blake2b:" and 64 hex digits, with the terminating NUL */
#define CONFIG_HASH_TEXT (8 + 2 * CONFIG_HASH_BYTES + 1)

struct config {
    struct sched_tenant *tenants; /* n_tenants, in file order; index = tenant number */
    uint8_t (*key_hashes)[CONFIG_HASH_BYTES];
    int n_tenants;
    char *tls_cert_key_file; /* NULL when the file has no [tls] section */
};

/*
 * Reads and checks the file at path. On success *out owns everything (config_free). Errors:
 * ERR_IO (cannot read it), ERR_FORMAT naming the line ("tenants.conf:7: weight must be in
 * [1, 1000], got 0"), ERR_NOMEM. Needs at least one tenant; names and key hashes are unique.
 */
int config_load(struct config **out, const char *path, char *err);

void config_free(struct config *c);

/*
 * The tenant a client's key belongs to: its index, or -1 (key NULL or unknown). Every tenant's
 * hash is compared, in constant time, whatever matches, so the time does not depend on the key.
 * c NULL (no configuration): every request belongs to tenant 0, the local default.
 * Thread-safe (reads only).
 */
int config_auth(const struct config *c, const char *key);

/* Writes "blake2b:HEX" of key (what a [tenant] section's `key =` holds) into out. ERR_BAD_REQUEST
 * for an empty key or one that the protocol would not carry; ERR_INTERNAL if libsodium fails. */
int config_hash_key(const char *key, char out[CONFIG_HASH_TEXT], char *err);

#endif
