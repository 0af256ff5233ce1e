/*
 * config.c: see config.h. A line is blank, a comment (`#` or `;` first), a section header
 * (`[tls]`, `[tenant NAME]`) or `name = value`; a `#` after a value starts a comment. Each value
 * is checked where it is read and an error names the file and line. Key hashes are BLAKE2b-256
 * (crypto_generichash): tenant keys are long random tokens, so a fast hash suffices and keeps
 * per-message authentication cheap; sodium_memcmp compares them in constant time.
 */
#include "orchd/config.h"

#include "common/err.h"
#include "common/opt.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_MAX_BYTES 1024
#define MAX_TENANTS    1024

/* Trims spaces at both ends of s in place; returns the start. */
static char *
trim(char *s)
{
    char *e;

    while (isspace((unsigned char)*s))
        s++;
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Reads "blake2b:HEX" into h. */
static bool
parse_hash(const char *v, uint8_t h[CONFIG_HASH_BYTES])
{
    size_t n = 0;

    if (strncmp(v, "blake2b:", 8) != 0 || strlen(v) != CONFIG_HASH_TEXT - 1)
        return false;
    return sodium_hex2bin(h, CONFIG_HASH_BYTES, v + 8, 2 * CONFIG_HASH_BYTES, NULL, &n, NULL) ==
               0 &&
           n == CONFIG_HASH_BYTES;
}

static bool
valid_name(const char *name)
{
    size_t n = strlen(name);

    if (n < 1 || n > PROTO_MAX_NAME_BYTES)
        return false;
    for (; *name != '\0'; name++)
        if (!isalnum((unsigned char)*name) && *name != '-' && *name != '_' && *name != '.')
            return false;
    return true;
}

static int
add_tenant(struct config *c, const char *name, char *err)
{
    struct sched_tenant *t;
    uint8_t(*h)[CONFIG_HASH_BYTES];

    if (!valid_name(name))
        return err_set(err, ERR_FORMAT, "tenant name '%.40s' must be 1 to 64 of [A-Za-z0-9._-]",
                       name);
    for (int i = 0; i < c->n_tenants; i++)
        if (strcmp(c->tenants[i].name, name) == 0)
            return err_set(err, ERR_FORMAT, "tenant %s is defined twice", name);
    if (c->n_tenants == MAX_TENANTS)
        return err_set(err, ERR_FORMAT, "more than %d tenants", MAX_TENANTS);
    t = realloc(c->tenants, (c->n_tenants + 1) * sizeof(*t));
    if (t == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");
    c->tenants = t;
    h = realloc(c->key_hashes, (c->n_tenants + 1) * sizeof(*h));
    if (h == NULL)
        return err_set(err, ERR_NOMEM, "out of memory");
    c->key_hashes = h;
    t = &c->tenants[c->n_tenants];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->weight = 1;
    t->budget_period_ms = 86400000;
    t->max_finished = SCHED_DEFAULT_FINISHED;
    memset(c->key_hashes[c->n_tenants], 0, CONFIG_HASH_BYTES);
    c->n_tenants++;
    return ERR_OK;
}

/* One `name = value` of the last tenant. has_key notes that `key` was given. */
static int
tenant_field(struct config *c, const char *name, const char *v, bool *has_key, char *err)
{
    struct sched_tenant *t = &c->tenants[c->n_tenants - 1];
    long long n;

    if (strcmp(name, "key") == 0) {
        if (!parse_hash(v, c->key_hashes[c->n_tenants - 1]))
            return err_set(err, ERR_FORMAT,
                           "key must be blake2b: and 64 hex digits (orchctl hash-key KEY)");
        *has_key = true;
        return ERR_OK;
    }
    if (strcmp(name, "weight") == 0) {
        if (opt_int(name, v, 1, 1000, &n, err) != ERR_OK)
            return ERR_FORMAT;
        t->weight = (uint32_t)n;
    } else if (strcmp(name, "max_running") == 0 || strcmp(name, "max_queued") == 0 ||
               strcmp(name, "rate_per_min") == 0) {
        if (opt_int(name, v, 0, 1000000, &n, err) != ERR_OK)
            return ERR_FORMAT;
        if (name[0] == 'r')
            t->rate_per_min = (uint32_t)n;
        else if (name[4] == 'r')
            t->max_running = (uint32_t)n;
        else
            t->max_queued = (uint32_t)n;
    } else if (strcmp(name, "max_finished") == 0) {
        if (opt_int(name, v, 1, 1000000, &n, err) != ERR_OK)
            return ERR_FORMAT;
        t->max_finished = (uint32_t)n;
    } else if (strcmp(name, "token_budget") == 0) {
        if (opt_int(name, v, 0, LLONG_MAX, &n, err) != ERR_OK)
            return ERR_FORMAT;
        t->token_budget = (uint64_t)n;
    } else if (strcmp(name, "budget_period_s") == 0) {
        if (opt_int(name, v, 1, 366 * 86400, &n, err) != ERR_OK)
            return ERR_FORMAT;
        t->budget_period_ms = (uint64_t)n * 1000;
    } else {
        return err_set(err, ERR_FORMAT, "unknown tenant setting '%.40s'", name);
    }
    return ERR_OK;
}

/* Checks the tenant that just ended (its section is over). */
static int
tenant_check(const struct config *c, bool has_key, char *err)
{
    int last = c->n_tenants - 1;

    if (!has_key)
        return err_set(err, ERR_FORMAT, "tenant %s has no key", c->tenants[last].name);
    for (int i = 0; i < last; i++)
        if (sodium_memcmp(c->key_hashes[i], c->key_hashes[last], CONFIG_HASH_BYTES) == 0)
            return err_set(err, ERR_FORMAT, "tenants %s and %s have the same key",
                           c->tenants[i].name, c->tenants[last].name);
    return ERR_OK;
}

/* Parses the open file f; line counts lines for messages. */
static int
parse(struct config *c, FILE *f, int *line, char *err)
{
    enum { NONE, TLS, TENANT } section = NONE;
    char buf[LINE_MAX_BYTES + 2];
    bool has_key = false;
    int rc;

    while (fgets(buf, sizeof(buf), f) != NULL) {
        char *s, *eq, *hash, *name, *v;

        ++*line;
        if (strchr(buf, '\n') == NULL && !feof(f))
            return err_set(err, ERR_FORMAT, "line longer than %d bytes", LINE_MAX_BYTES);
        s = trim(buf);
        if (*s == '\0' || *s == '#' || *s == ';')
            continue;
        if (*s == '[') {
            char *end = strchr(s, ']');

            if (end == NULL || trim(end + 1)[0] != '\0')
                return err_set(err, ERR_FORMAT, "a section header is [tls] or [tenant NAME]");
            *end = '\0';
            s = trim(s + 1);
            if (section == TENANT && (rc = tenant_check(c, has_key, err)) != ERR_OK)
                return rc;
            if (strcmp(s, "tls") == 0) {
                section = TLS;
            } else if (strncmp(s, "tenant", 6) == 0 && isspace((unsigned char)s[6])) {
                if ((rc = add_tenant(c, trim(s + 6), err)) != ERR_OK)
                    return rc;
                section = TENANT;
                has_key = false;
            } else {
                return err_set(err, ERR_FORMAT, "unknown section [%.40s]", s);
            }
            continue;
        }
        if ((eq = strchr(s, '=')) == NULL)
            return err_set(err, ERR_FORMAT, "expected name = value");
        *eq = '\0';
        name = trim(s);
        if ((hash = strchr(eq + 1, '#')) != NULL)
            *hash = '\0';
        v = trim(eq + 1);
        if (section == TENANT) {
            rc = tenant_field(c, name, v, &has_key, err);
        } else if (section == TLS && strcmp(name, "cert_key_file") == 0) {
            free(c->tls_cert_key_file);
            c->tls_cert_key_file = strdup(v);
            rc = c->tls_cert_key_file == NULL ? err_set(err, ERR_NOMEM, "out of memory") : ERR_OK;
        } else {
            rc = err_set(err, ERR_FORMAT, "'%.40s' is not a setting here", name);
        }
        if (rc != ERR_OK)
            return rc;
    }
    if (ferror(f))
        return err_set(err, ERR_IO, "read: %s", strerror(errno));
    if (section == TENANT && (rc = tenant_check(c, has_key, err)) != ERR_OK)
        return rc;
    if (c->n_tenants == 0)
        return err_set(err, ERR_FORMAT, "no [tenant NAME] section");
    return ERR_OK;
}

int
config_load(struct config **out, const char *path, char *err)
{
    struct config *c;
    char detail[ERR_MSG_MAX];
    int line = 0, rc;
    FILE *f;

    *out = NULL;
    if (sodium_init() < 0)
        return err_set(err, ERR_INTERNAL, "libsodium cannot start");
    if ((f = fopen(path, "r")) == NULL)
        return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));
    if ((c = calloc(1, sizeof(*c))) == NULL) {
        fclose(f);
        return err_set(err, ERR_NOMEM, "%s: out of memory", path);
    }
    rc = parse(c, f, &line, detail);
    fclose(f);
    if (rc != ERR_OK) {
        config_free(c);
        if (line > 0)
            return err_set(err, rc, "%s:%d: %s", path, line, detail);
        return err_set(err, rc, "%s: %s", path, detail);
    }
    *out = c;
    return ERR_OK;
}

void
config_free(struct config *c)
{
    if (c == NULL)
        return;
    free(c->tenants);
    free(c->key_hashes);
    free(c->tls_cert_key_file);
    free(c);
}

static void
key_digest(const char *key, uint8_t h[CONFIG_HASH_BYTES])
{
    crypto_generichash(h, CONFIG_HASH_BYTES, (const unsigned char *)key, strlen(key), NULL, 0);
}

int
config_auth(const struct config *c, const char *key)
{
    uint8_t h[CONFIG_HASH_BYTES];
    int found = -1;

    if (c == NULL)
        return 0;
    if (key == NULL)
        return -1;
    key_digest(key, h);
    for (int i = 0; i < c->n_tenants; i++) {
        /* no early exit: every tenant is compared */
        int eq = sodium_memcmp(h, c->key_hashes[i], CONFIG_HASH_BYTES) == 0;

        found = eq ? i : found;
    }
    return found;
}

int
config_hash_key(const char *key, char out[CONFIG_HASH_TEXT], char *err)
{
    uint8_t h[CONFIG_HASH_BYTES];
    size_t n = strlen(key);

    if (n < 1 || n > PROTO_MAX_KEY_BYTES)
        return err_set(err, ERR_BAD_REQUEST, "a key is 1 to %d bytes long, got %zu",
                       PROTO_MAX_KEY_BYTES, n);
    for (size_t i = 0; i < n; i++)
        if (key[i] <= ' ' || key[i] > '~')
            return err_set(err, ERR_BAD_REQUEST, "a key is printable ASCII without spaces");
    if (sodium_init() < 0)
        return err_set(err, ERR_INTERNAL, "libsodium cannot start");
    key_digest(key, h);
    memcpy(out, "blake2b:", 8);
    sodium_bin2hex(out + 8, CONFIG_HASH_TEXT - 8, h, CONFIG_HASH_BYTES);
    return ERR_OK;
}
