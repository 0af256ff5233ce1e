/*
 * decode.c: proto_decode(), the strict reader of llorch messages. A message is first walked byte by
 * byte (wire_check) so that no declared length or element count is trusted before msgpack-c
 * unpacks it: every element must fit in the bytes that follow, so the unpacked tree is at most a
 * small multiple of the message. Then each field is looked up, type- and range-checked, and copied
 * into an arena the decoded message owns. Errors name the field ("frames[2].ids[5] must be ...").
 */
#include "proto/proto.h"

#include "common/err.h"

#include <math.h>
#include <msgpack.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena: every string and array of a decoded message, freed at once ---- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used;
    size_t cap;
    alignas(max_align_t) unsigned char data[];
};

struct proto_arena {
    struct arena_chunk *head;
};

#define ARENA_CHUNK 16384

static void *
arena_alloc(struct proto_arena *a, size_t size)
{
    struct arena_chunk *c = a->head;
    size_t need = (size + 15) & ~(size_t)15;

    if (c == NULL || c->cap - c->used < need) {
        size_t cap = need > ARENA_CHUNK ? need : ARENA_CHUNK;

        c = malloc(sizeof(*c) + cap);
        if (c == NULL)
            return NULL;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += need;
    memset(p, 0, size);
    return p;
}

static void
arena_free(struct proto_arena *a)
{
    if (a == NULL)
        return;
    for (struct arena_chunk *c = a->head, *next; c != NULL; c = next) {
        next = c->next;
        free(c);
    }
    free(a);
}

void
proto_msg_free(struct proto_msg *m)
{
    if (m == NULL || m->arena == NULL)
        return;
    arena_free(m->arena);
    memset(m, 0, sizeof(*m));
}

/* ---- wire_check: a structural walk that trusts no length ---- */

static uint64_t
read_be(const unsigned char *p, unsigned n)
{
    uint64_t v = 0;

    for (unsigned i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Nesting allowed in a message (ours nest 4 deep; msgpack-c itself stops at 32). */
#define WIRE_MAX_DEPTH 16

/*
 * Checks that buf[0..len) is exactly one well-formed msgpack object: every header complete, every
 * body inside the buffer, no byte 0xc1, nesting at most WIRE_MAX_DEPTH, no trailing bytes, and at
 * every point no more elements pending than bytes left (each takes at least one).
 */
static int
wire_check(const unsigned char *p, size_t len, char *err)
{
    size_t i = 0;
    uint64_t pending = 1;
    uint64_t left[WIRE_MAX_DEPTH + 1]; /* elements left in each open container */
    int depth = 0;

    left[0] = 1;
    while (pending > 0) {
        unsigned char b;
        unsigned hdr = 0;   /* bytes of a length or count field */
        uint64_t body = 0;  /* bytes of payload */
        uint64_t items = 0; /* elements that follow */
        enum { FIXED, STR, EXT, ARRAY, MAP } kind = FIXED;

        while (left[depth] == 0)
            depth--;
        left[depth]--;
        if (i >= len)
            return err_set(err, ERR_PROTOCOL, "message truncated at byte %zu", len);
        b = p[i++];
        if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
            ;
        else if (b <= 0x8f)
            items = 2 * (uint64_t)(b & 0x0f);
        else if (b <= 0x9f)
            items = b & 0x0f;
        else if (b <= 0xbf)
            body = b & 0x1f;
        else {
            switch (b) {
            case 0xc4:
            case 0xc5:
            case 0xc6: /* bin 8/16/32 */
                kind = STR, hdr = 1u << (b - 0xc4);
                break;
            case 0xc7:
            case 0xc8:
            case 0xc9: /* ext 8/16/32 */
                kind = EXT, hdr = 1u << (b - 0xc7);
                break;
            case 0xca:
                body = 4;
                break;
            case 0xcb:
                body = 8;
                break;
            case 0xcc:
            case 0xcd:
            case 0xce:
            case 0xcf: /* uint 8..64 */
                body = 1u << (b - 0xcc);
                break;
            case 0xd0:
            case 0xd1:
            case 0xd2:
            case 0xd3: /* int 8..64 */
                body = 1u << (b - 0xd0);
                break;
            case 0xd4:
            case 0xd5:
            case 0xd6:
            case 0xd7:
            case 0xd8: /* fixext 1..16 */
                body = 1 + (1u << (b - 0xd4));
                break;
            case 0xd9:
            case 0xda:
            case 0xdb: /* str 8/16/32 */
                kind = STR, hdr = 1u << (b - 0xd9);
                break;
            case 0xdc:
            case 0xdd:
                kind = ARRAY, hdr = b == 0xdc ? 2 : 4;
                break;
            case 0xde:
            case 0xdf:
                kind = MAP, hdr = b == 0xde ? 2 : 4;
                break;
            default:
                return err_set(err, ERR_PROTOCOL, "invalid msgpack byte 0x%02x at offset %zu", b,
                               i - 1);
            }
        }
        if (hdr > 0) {
            uint64_t n;

            if (len - i < hdr)
                return err_set(err, ERR_PROTOCOL, "message truncated at byte %zu", len);
            n = read_be(p + i, hdr);
            i += hdr;
            if (kind == STR)
                body = n;
            else if (kind == EXT)
                body = n + 1;
            else if (kind == ARRAY)
                items = n;
            else
                items = 2 * n;
        }
        if (body > len - i)
            return err_set(err, ERR_PROTOCOL,
                           "message truncated: %llu bytes declared at offset %zu",
                           (unsigned long long)body, i);
        i += body;
        if (items > 0) {
            if (depth == WIRE_MAX_DEPTH)
                return err_set(err, ERR_PROTOCOL, "message nested deeper than %d levels",
                               WIRE_MAX_DEPTH);
            left[++depth] = items;
        }
        pending = pending - 1 + items;
        if (pending > len - i)
            return err_set(err, ERR_PROTOCOL,
                           "message declares %llu more elements but only %zu bytes follow",
                           (unsigned long long)pending, len - i);
    }
    if (i != len)
        return err_set(err, ERR_PROTOCOL, "%zu trailing bytes after the message", len - i);
    return ERR_OK;
}

/* ---- field readers: path is the prefix ("", "opts.", "frames[2].") of key ---- */

struct dec {
    struct proto_arena *arena;
    char *err;
};

typedef msgpack_object obj_t;

static const char *
obj_type_name(const obj_t *o)
{
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "a boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "an integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "a float";
    case MSGPACK_OBJECT_STR:
        return "a string";
    case MSGPACK_OBJECT_ARRAY:
        return "an array";
    case MSGPACK_OBJECT_MAP:
        return "a map";
    case MSGPACK_OBJECT_BIN:
        return "binary";
    default:
        return "an extension";
    }
}

/* Writes a printable, cut copy of s[0..n) for echoing in an error message. */
static const char *
echo(const char *s, size_t n, char *buf, size_t size)
{
    size_t i, j = 0;

    for (i = 0; i < n && j + 4 < size; i++)
        buf[j++] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
    if (i < n) {
        memcpy(buf + j, "...", 3);
        j += 3;
    }
    buf[j] = '\0';
    return buf;
}

/*
 * Finds key in map. Absent, or nil when not required: *out = NULL. Missing when required, or given
 * twice: ERR_BAD_REQUEST naming the field.
 */
static int
field(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
      const obj_t **out)
{
    size_t klen = strlen(key);

    *out = NULL;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const obj_t *k = &map->via.map.ptr[i].key;

        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != klen ||
            memcmp(k->via.str.ptr, key, klen) != 0)
            continue;
        if (*out != NULL)
            return err_set(d->err, ERR_BAD_REQUEST, "%s%s is given twice", path, key);
        *out = &map->via.map.ptr[i].val;
    }
    if (*out != NULL && (*out)->type == MSGPACK_OBJECT_NIL && !required)
        *out = NULL;
    if (*out == NULL && required)
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s is missing", path, key);
    return ERR_OK;
}

static int
type_error(struct dec *d, const char *path, const char *key, const char *want, const obj_t *o)
{
    return err_set(d->err, ERR_BAD_REQUEST, "%s%s must be %s, got %s", path, key, want,
                   obj_type_name(o));
}

static int
check_uint(struct dec *d, const obj_t *o, const char *path, const char *key, uint64_t lo,
           uint64_t hi, uint64_t *out)
{
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s must be in [%llu, %llu], got %lld", path, key,
                       (unsigned long long)lo, (unsigned long long)hi, (long long)o->via.i64);
    if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
        return type_error(d, path, key, "an integer", o);
    if (o->via.u64 < lo || o->via.u64 > hi)
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s must be in [%llu, %llu], got %llu", path, key,
                       (unsigned long long)lo, (unsigned long long)hi,
                       (unsigned long long)o->via.u64);
    *out = o->via.u64;
    return ERR_OK;
}

/* Reads an unsigned integer field in [lo, hi]; an absent optional field leaves *out as it is. */
static int
rd_u64(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
       uint64_t lo, uint64_t hi, uint64_t *out)
{
    const obj_t *o;
    int rc = field(d, map, path, key, required, &o);

    if (rc != ERR_OK || o == NULL)
        return rc;
    return check_uint(d, o, path, key, lo, hi, out);
}

static int
rd_u32(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
       uint64_t lo, uint64_t hi, uint32_t *out)
{
    uint64_t v = *out;
    int rc = rd_u64(d, map, path, key, required, lo, hi, &v);

    *out = (uint32_t)v;
    return rc;
}

static int
rd_i32(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
       uint64_t lo, uint64_t hi, int32_t *out)
{
    uint64_t v = (uint64_t)*out;
    int rc = rd_u64(d, map, path, key, required, lo, hi, &v);

    *out = (int32_t)v;
    return rc;
}

/* Reads a number (float or integer) in [lo, hi] (NaN is out of range). */
static int
rd_f64(struct dec *d, const obj_t *map, const char *path, const char *key, bool required, double lo,
       double hi, double *out)
{
    const obj_t *o;
    double v;
    int rc = field(d, map, path, key, required, &o);

    if (rc != ERR_OK || o == NULL)
        return rc;
    if (o->type == MSGPACK_OBJECT_FLOAT32 || o->type == MSGPACK_OBJECT_FLOAT64)
        v = o->via.f64;
    else if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
        v = (double)o->via.u64;
    else if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
        v = (double)o->via.i64;
    else
        return type_error(d, path, key, "a number", o);
    if (!(v >= lo && v <= hi))
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s must be in [%g, %g], got %g", path, key, lo,
                       hi, v);
    *out = v;
    return ERR_OK;
}

static int
rd_f32(struct dec *d, const obj_t *map, const char *path, const char *key, bool required, double lo,
       double hi, float *out)
{
    double v = *out;
    int rc = rd_f64(d, map, path, key, required, lo, hi, &v);
    float f = (float)v;

    /* rounding to float must not leave the range, or the value would not encode again */
    if ((double)f < lo)
        f = nextafterf(f, INFINITY);
    if ((double)f > hi)
        f = nextafterf(f, -INFINITY);
    *out = f;
    return rc;
}

static int
rd_bool(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
        bool *out)
{
    const obj_t *o;
    int rc = field(d, map, path, key, required, &o);

    if (rc != ERR_OK || o == NULL)
        return rc;
    if (o->type != MSGPACK_OBJECT_BOOLEAN)
        return type_error(d, path, key, "a boolean", o);
    *out = o->via.boolean;
    return ERR_OK;
}

/* What a string may hold. */
enum str_kind {
    STR_BYTES, /* anything; the length is kept (token text) */
    STR_TEXT,  /* no NUL byte (prompts, messages, stop strings) */
    STR_WORD   /* printable ASCII without spaces (ids, keys) */
};

/* Copies a string object of min..max bytes into the arena (NUL-terminated). */
static int
copy_str(struct dec *d, const obj_t *o, const char *path, const char *key, size_t min, size_t max,
         enum str_kind kind, char **out, size_t *out_len)
{
    const char *s;
    size_t n;
    char *c;

    if (o->type != MSGPACK_OBJECT_STR)
        return type_error(d, path, key, "a string", o);
    s = o->via.str.ptr;
    n = o->via.str.size;
    if (n < min || n > max)
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s must be %zu to %zu bytes long, got %zu", path,
                       key, min, max, n);
    for (size_t i = 0; i < n && kind != STR_BYTES; i++) {
        if (s[i] == '\0')
            return err_set(d->err, ERR_BAD_REQUEST, "%s%s contains a NUL byte at %zu", path, key,
                           i);
        if (kind == STR_WORD && (s[i] <= 0x20 || s[i] >= 0x7f))
            return err_set(d->err, ERR_BAD_REQUEST,
                           "%s%s must be printable ASCII without spaces (byte %zu)", path, key, i);
    }
    c = arena_alloc(d->arena, n + 1);
    if (c == NULL)
        return err_set(d->err, ERR_NOMEM, "out of memory copying %s%s", path, key);
    if (n > 0)
        memcpy(c, s, n);
    c[n] = '\0';
    *out = c;
    if (out_len != NULL)
        *out_len = n;
    return ERR_OK;
}

static int
rd_str(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
       size_t min, size_t max, enum str_kind kind, char **out)
{
    const obj_t *o;
    int rc = field(d, map, path, key, required, &o);

    if (rc != ERR_OK || o == NULL)
        return rc;
    return copy_str(d, o, path, key, min, max, kind, out, NULL);
}

/* Reads a string naming one of count values (name(i) for i < count); *out gets its index. */
static int
rd_enum(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
        const char *(*name)(int), int count, int *out)
{
    const obj_t *o;
    char list[160] = "", shown[48];
    size_t used = 0;
    int rc = field(d, map, path, key, required, &o);

    if (rc != ERR_OK || o == NULL)
        return rc;
    if (o->type != MSGPACK_OBJECT_STR)
        return type_error(d, path, key, "a string", o);
    for (int i = 0; i < count; i++) {
        const char *n = name(i);

        if (strlen(n) == o->via.str.size && memcmp(n, o->via.str.ptr, o->via.str.size) == 0) {
            *out = i;
            return ERR_OK;
        }
        if (used < sizeof(list))
            used +=
                (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i > 0 ? ", " : "", n);
    }
    return err_set(d->err, ERR_BAD_REQUEST, "%s%s must be one of %s, got \"%s\"", path, key, list,
                   echo(o->via.str.ptr, o->via.str.size, shown, sizeof(shown)));
}

/* Finds an array field of min..max elements. */
static int
rd_array(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
         uint32_t min, uint32_t max, const obj_t **out)
{
    int rc = field(d, map, path, key, required, out);

    if (rc != ERR_OK || *out == NULL)
        return rc;
    if ((*out)->type != MSGPACK_OBJECT_ARRAY)
        return type_error(d, path, key, "an array", *out);
    if ((*out)->via.array.size < min || (*out)->via.array.size > max)
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s must have %u to %u elements, got %u", path,
                       key, min, max, (*out)->via.array.size);
    return ERR_OK;
}

/* Finds a map field. */
static int
rd_map(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
       const obj_t **out)
{
    int rc = field(d, map, path, key, required, out);

    if (rc != ERR_OK || *out == NULL)
        return rc;
    if ((*out)->type != MSGPACK_OBJECT_MAP)
        return type_error(d, path, key, "a map", *out);
    return ERR_OK;
}

/* Allocates n elements of size bytes (n may be 0: a valid empty array). */
static void *
alloc_n(struct dec *d, size_t n, size_t size, const char *path, const char *key)
{
    void *p = arena_alloc(d->arena, n == 0 ? 1 : n * size);

    if (p == NULL)
        err_set(d->err, ERR_NOMEM, "out of memory decoding %s%s", path, key);
    return p;
}

static int
rd_ids(struct dec *d, const obj_t *map, const char *path, const char *key, bool required,
       uint32_t min, int32_t **ids, uint32_t *n)
{
    const obj_t *a;
    char elem[96];
    int rc = rd_array(d, map, path, key, required, min, PROTO_MAX_IDS, &a);

    if (rc != ERR_OK || a == NULL)
        return rc;
    *n = a->via.array.size;
    *ids = alloc_n(d, *n, sizeof(int32_t), path, key);
    if (*ids == NULL)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < *n; i++) {
        const obj_t *o = &a->via.array.ptr[i];
        uint64_t v;

        if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= PROTO_MAX_TOKEN_ID) {
            (*ids)[i] = (int32_t)o->via.u64;
            continue;
        }
        /* not an id: the element's name only for the error */
        snprintf(elem, sizeof(elem), "%s[%u]", key, i);
        return check_uint(d, o, path, elem, 0, PROTO_MAX_TOKEN_ID, &v);
    }
    return ERR_OK;
}

/* An array of strings of min..max bytes each. */
static int
rd_strs(struct dec *d, const obj_t *map, const char *path, const char *key, uint32_t max_n,
        size_t min, size_t max, enum str_kind kind, char ***out, uint32_t *n)
{
    const obj_t *a;
    char elem[96];
    int rc = rd_array(d, map, path, key, false, 0, max_n, &a);

    if (rc != ERR_OK || a == NULL)
        return rc;
    *n = a->via.array.size;
    *out = alloc_n(d, *n, sizeof(char *), path, key);
    if (*out == NULL)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < *n; i++) {
        snprintf(elem, sizeof(elem), "%s[%u]", key, i);
        rc = copy_str(d, &a->via.array.ptr[i], path, elem, min, max, kind, &(*out)[i], NULL);
        if (rc != ERR_OK)
            return rc;
    }
    return ERR_OK;
}

/* The element i of array a must be a map; its field prefix is written into sub. */
static int
elem_map(struct dec *d, const obj_t *a, uint32_t i, const char *path, const char *key, char *sub,
         size_t size, const obj_t **out)
{
    *out = &a->via.array.ptr[i];
    snprintf(sub, size, "%s%s[%u].", path, key, i);
    if ((*out)->type != MSGPACK_OBJECT_MAP)
        return err_set(d->err, ERR_BAD_REQUEST, "%s%s[%u] must be a map, got %s", path, key, i,
                       obj_type_name(*out));
    return ERR_OK;
}

/* ---- the messages ---- */

#define TRY(x)                                                                                     \
    do {                                                                                           \
        int rc_ = (x);                                                                             \
        if (rc_ != ERR_OK)                                                                         \
            return rc_;                                                                            \
    } while (0)

static const char *
prio_name(int i)
{
    return proto_priority_name((enum proto_priority)i);
}

static const char *
reason_name(int i)
{
    return proto_reason_name((enum proto_reason)i);
}

static const char *
kind_name(int i)
{
    return proto_frame_kind_name((enum proto_frame_kind)i);
}

static const char *
wstate_name(int i)
{
    return proto_worker_state_name((enum proto_worker_state)i);
}

/* "opts": every field optional in a submit (defaults preset), all required in a dispatch. */
static int
dec_sampling(struct dec *d, const obj_t *map, bool all, struct proto_sampling *s)
{
    const obj_t *o;
    const char *p = "opts.";

    TRY(rd_map(d, map, "", "opts", all, &o));
    if (o == NULL)
        return ERR_OK;
    TRY(rd_f32(d, o, p, "temperature", all, 0, 100, &s->temperature));
    TRY(rd_i32(d, o, p, "top_k", all, 0, 1u << 20, &s->top_k));
    TRY(rd_f32(d, o, p, "top_p", all, 0, 1, &s->top_p));
    TRY(rd_f32(d, o, p, "min_p", all, 0, 1, &s->min_p));
    TRY(rd_f32(d, o, p, "repeat_penalty", all, 0.01, 100, &s->repeat_penalty));
    TRY(rd_i32(d, o, p, "repeat_last_n", all, 0, 65536, &s->repeat_last_n));
    /* PROTO_SEED_RANDOM is "absent": a dispatch must carry a resolved seed */
    TRY(rd_u64(d, o, p, "seed", all, 0, PROTO_SEED_RANDOM - 1, &s->seed));
    return ERR_OK;
}

static int
dec_stats(struct dec *d, const obj_t *map, const char *path, struct proto_stats *st)
{
    const obj_t *o;
    char sub[96];

    TRY(rd_map(d, map, path, "stats", true, &o));
    snprintf(sub, sizeof(sub), "%sstats.", path);
    TRY(rd_u32(d, o, sub, "prompt_tokens", true, 0, PROTO_MAX_IDS, &st->prompt_tokens));
    TRY(rd_u32(d, o, sub, "gen_tokens", true, 0, PROTO_MAX_TOKENS, &st->gen_tokens));
    TRY(rd_f64(d, o, sub, "queue_ms", true, 0, PROTO_MAX_MS, &st->queue_ms));
    TRY(rd_f64(d, o, sub, "prefill_ms", true, 0, PROTO_MAX_MS, &st->prefill_ms));
    TRY(rd_f64(d, o, sub, "decode_ms", true, 0, PROTO_MAX_MS, &st->decode_ms));
    return ERR_OK;
}

static int
rd_id(struct dec *d, const obj_t *map, const char *path, const char *key, bool required, char **out)
{
    return rd_str(d, map, path, key, required, 1, PROTO_MAX_ID_BYTES, STR_WORD, out);
}

static int
rd_msg_text(struct dec *d, const obj_t *map, const char *path, const char *key, char **out)
{
    return rd_str(d, map, path, key, true, 0, PROTO_MAX_MSG_TEXT, STR_TEXT, out);
}

static int
dec_submit(struct dec *d, const obj_t *m, struct proto_submit *s)
{
    const obj_t *a;
    int prio = PROTO_PRIO_INTERACTIVE;

    TRY(rd_str(d, m, "", "prompt", false, 0, PROTO_MAX_PROMPT_BYTES, STR_TEXT, &s->prompt));
    TRY(rd_array(d, m, "", "messages", false, 1, PROTO_MAX_MESSAGES, &a));
    if ((s->prompt == NULL) == (a == NULL))
        return err_set(d->err, ERR_BAD_REQUEST,
                       "prompt, messages: a submit needs exactly one of them");
    if (a != NULL) {
        s->n_messages = a->via.array.size;
        s->messages = alloc_n(d, s->n_messages, sizeof(*s->messages), "", "messages");
        if (s->messages == NULL)
            return ERR_NOMEM;
        for (uint32_t i = 0; i < s->n_messages; i++) {
            const obj_t *e;
            char sub[64];

            TRY(elem_map(d, a, i, "", "messages", sub, sizeof(sub), &e));
            TRY(rd_str(d, e, sub, "role", true, 1, PROTO_MAX_ROLE_BYTES, STR_WORD,
                       &s->messages[i].role));
            TRY(rd_str(d, e, sub, "content", true, 0, PROTO_MAX_PROMPT_BYTES, STR_TEXT,
                       &s->messages[i].content));
        }
    }
    TRY(dec_sampling(d, m, false, &s->sampling));
    TRY(rd_u32(d, m, "", "max_tokens", false, 1, PROTO_MAX_TOKENS, &s->max_tokens));
    TRY(rd_strs(d, m, "", "stop", PROTO_MAX_STOP, 1, PROTO_MAX_STOP_BYTES, STR_TEXT, &s->stop,
                &s->n_stop));
    TRY(rd_enum(d, m, "", "priority", false, prio_name, 2, &prio));
    s->priority = (enum proto_priority)prio;
    TRY(rd_id(d, m, "", "client_id", false, &s->client_id));
    return ERR_OK;
}

static int
dec_poll(struct dec *d, const obj_t *m, struct proto_poll *p)
{
    TRY(rd_id(d, m, "", "id", true, &p->id));
    TRY(rd_u64(d, m, "", "from", true, 0, UINT64_MAX, &p->from));
    TRY(rd_u32(d, m, "", "wait_ms", true, 0, PROTO_MAX_WAIT_MS, &p->wait_ms));
    return ERR_OK;
}

static int
dec_frame(struct dec *d, const obj_t *f, const char *sub, struct proto_frame *fr)
{
    int kind = 0, reason = 0;

    TRY(rd_u64(d, f, sub, "seq", true, 0, UINT64_MAX, &fr->seq));
    TRY(rd_enum(d, f, sub, "k", true, kind_name, PROTO_FRAME_ERROR + 1, &kind));
    fr->kind = (enum proto_frame_kind)kind;
    switch (fr->kind) {
    case PROTO_FRAME_QUEUED:
        return rd_u32(d, f, sub, "position", true, 0, UINT32_MAX, &fr->position);
    case PROTO_FRAME_STARTED:
        return ERR_OK;
    case PROTO_FRAME_TOKENS: {
        const obj_t *o;

        TRY(rd_ids(d, f, sub, "ids", true, 1, &fr->ids, &fr->n_ids));
        TRY(field(d, f, sub, "text", true, &o));
        return copy_str(d, o, sub, "text", 0, PROTO_MAX_TEXT_BYTES, STR_BYTES, &fr->text,
                        &fr->text_len);
    }
    case PROTO_FRAME_DONE:
        TRY(rd_enum(d, f, sub, "reason", true, reason_name, PROTO_REASON_ERROR + 1, &reason));
        fr->reason = (enum proto_reason)reason;
        return dec_stats(d, f, sub, &fr->stats);
    case PROTO_FRAME_ERROR:
        TRY(rd_i32(d, f, sub, "code", true, 1, 999, &fr->code));
        return rd_msg_text(d, f, sub, "msg", &fr->msg);
    }
    return ERR_OK;
}

static int
dec_frames(struct dec *d, const obj_t *m, struct proto_frames *fs)
{
    const obj_t *a;

    TRY(rd_id(d, m, "", "id", true, &fs->id));
    TRY(rd_array(d, m, "", "frames", true, 0, PROTO_MAX_FRAMES, &a));
    fs->n_frames = a->via.array.size;
    fs->frames = alloc_n(d, fs->n_frames, sizeof(*fs->frames), "", "frames");
    if (fs->frames == NULL)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < fs->n_frames; i++) {
        const obj_t *f;
        char sub[64];

        TRY(elem_map(d, a, i, "", "frames", sub, sizeof(sub), &f));
        TRY(dec_frame(d, f, sub, &fs->frames[i]));
        if (i > 0 && fs->frames[i].seq != fs->frames[0].seq + i)
            return err_set(d->err, ERR_BAD_REQUEST, "%sseq must be %llu, got %llu", sub,
                           (unsigned long long)(fs->frames[0].seq + i),
                           (unsigned long long)fs->frames[i].seq);
    }
    return ERR_OK;
}

static int
dec_status_info(struct dec *d, const obj_t *m, struct proto_status_info *s)
{
    const obj_t *a;

    TRY(rd_u32(d, m, "", "queued_interactive", true, 0, UINT32_MAX, &s->queued_interactive));
    TRY(rd_u32(d, m, "", "queued_batch", true, 0, UINT32_MAX, &s->queued_batch));
    TRY(rd_u32(d, m, "", "queue_max", true, 0, UINT32_MAX, &s->queue_max));
    TRY(rd_u32(d, m, "", "running", true, 0, UINT32_MAX, &s->running));
    TRY(rd_u32(d, m, "", "workers", true, 0, PROTO_MAX_SLOTS, &s->workers));
    TRY(rd_u32(d, m, "", "workers_ready", true, 0, PROTO_MAX_SLOTS, &s->workers_ready));
    TRY(rd_u64(d, m, "", "completed", true, 0, UINT64_MAX, &s->completed));
    TRY(rd_u64(d, m, "", "failed", true, 0, UINT64_MAX, &s->failed));
    TRY(rd_u64(d, m, "", "uptime_ms", true, 0, UINT64_MAX, &s->uptime_ms));
    TRY(rd_array(d, m, "", "tenants", true, 0, PROTO_MAX_TENANTS, &a));
    s->n_tenants = a->via.array.size;
    s->tenants = alloc_n(d, s->n_tenants, sizeof(*s->tenants), "", "tenants");
    if (s->tenants == NULL)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < s->n_tenants; i++) {
        const obj_t *e;
        char sub[64];
        struct proto_tenant_info *t = &s->tenants[i];

        TRY(elem_map(d, a, i, "", "tenants", sub, sizeof(sub), &e));
        TRY(rd_str(d, e, sub, "name", true, 1, PROTO_MAX_NAME_BYTES, STR_WORD, &t->name));
        TRY(rd_u32(d, e, sub, "queued", true, 0, UINT32_MAX, &t->queued));
        TRY(rd_u32(d, e, sub, "running", true, 0, UINT32_MAX, &t->running));
        TRY(rd_u64(d, e, sub, "gen_tokens", true, 0, UINT64_MAX, &t->gen_tokens));
    }
    return ERR_OK;
}

static int
dec_workers_info(struct dec *d, const obj_t *m, struct proto_workers_info *w)
{
    const obj_t *a;

    TRY(rd_array(d, m, "", "workers", true, 0, PROTO_MAX_SLOTS, &a));
    w->n_workers = a->via.array.size;
    w->workers = alloc_n(d, w->n_workers, sizeof(*w->workers), "", "workers");
    if (w->workers == NULL)
        return ERR_NOMEM;
    for (uint32_t i = 0; i < w->n_workers; i++) {
        const obj_t *e;
        char sub[64];
        int state = 0;
        struct proto_worker_info *wi = &w->workers[i];

        TRY(elem_map(d, a, i, "", "workers", sub, sizeof(sub), &e));
        TRY(rd_u32(d, e, sub, "slot", true, 0, PROTO_MAX_SLOTS - 1, &wi->slot));
        TRY(rd_i32(d, e, sub, "pid", true, 0, INT32_MAX, &wi->pid));
        TRY(rd_enum(d, e, sub, "state", true, wstate_name, PROTO_WSTATE_STOPPED + 1, &state));
        wi->state = (enum proto_worker_state)state;
        TRY(rd_u32(d, e, sub, "restarts", true, 0, UINT32_MAX, &wi->restarts));
        TRY(rd_strs(d, e, sub, "requests", PROTO_MAX_BATCH, 1, PROTO_MAX_ID_BYTES, STR_WORD,
                    &wi->requests, &wi->n_requests));
        TRY(rd_msg_text(d, e, sub, "detail", &wi->detail));
        wi->in_flight = wi->slots = 0; /* optional: 0 when absent */
        TRY(rd_u32(d, e, sub, "in_flight", false, 0, PROTO_MAX_BATCH, &wi->in_flight));
        TRY(rd_u32(d, e, sub, "slots", false, 0, PROTO_MAX_BATCH, &wi->slots));
    }
    return ERR_OK;
}

static int
dec_dispatch(struct dec *d, const obj_t *m, struct proto_dispatch *x)
{
    TRY(rd_id(d, m, "", "id", true, &x->id));
    TRY(rd_ids(d, m, "", "prompt_ids", true, 1, &x->prompt_ids, &x->n_prompt));
    TRY(rd_ids(d, m, "", "replay_ids", true, 0, &x->replay_ids, &x->n_replay));
    TRY(dec_sampling(d, m, true, &x->sampling));
    TRY(rd_u32(d, m, "", "max_tokens", true, 1, PROTO_MAX_TOKENS, &x->max_tokens));
    if (x->n_replay >= x->max_tokens)
        return err_set(d->err, ERR_BAD_REQUEST,
                       "replay_ids must have fewer than max_tokens (%u) elements, got %u",
                       x->max_tokens, x->n_replay);
    TRY(rd_strs(d, m, "", "stop", PROTO_MAX_STOP, 1, PROTO_MAX_STOP_BYTES, STR_TEXT, &x->stop,
                &x->n_stop));
    return ERR_OK;
}

static int
dec_body(struct dec *d, const obj_t *m, struct proto_msg *msg)
{
    int reason = 0;

    switch (msg->type) {
    case PROTO_SUBMIT:
        return dec_submit(d, m, &msg->u.submit);
    case PROTO_POLL:
        return dec_poll(d, m, &msg->u.poll);
    case PROTO_CANCEL:
    case PROTO_CANCEL_OK:
        return rd_id(d, m, "", "id", true, &msg->u.ref.id);
    case PROTO_STATUS:
    case PROTO_WORKERS:
    case PROTO_HEALTH:
        return ERR_OK;
    case PROTO_SUBMITTED:
        TRY(rd_id(d, m, "", "id", true, &msg->u.submitted.id));
        return rd_u32(d, m, "", "position", true, 0, UINT32_MAX, &msg->u.submitted.position);
    case PROTO_FRAMES:
        return dec_frames(d, m, &msg->u.frames);
    case PROTO_STATUS_INFO:
        return dec_status_info(d, m, &msg->u.status);
    case PROTO_WORKERS_INFO:
        return dec_workers_info(d, m, &msg->u.workers);
    case PROTO_HEALTH_INFO:
        TRY(rd_bool(d, m, "", "ready", true, &msg->u.health.ready));
        TRY(rd_u32(d, m, "", "workers_ready", true, 0, PROTO_MAX_SLOTS,
                   &msg->u.health.workers_ready));
        return rd_msg_text(d, m, "", "detail", &msg->u.health.detail);
    case PROTO_BUSY:
        TRY(rd_u32(d, m, "", "retry_after_ms", true, 0, PROTO_MAX_RETRY_MS,
                   &msg->u.busy.retry_after_ms));
        return rd_msg_text(d, m, "", "msg", &msg->u.busy.msg);
    case PROTO_ERROR:
        TRY(rd_i32(d, m, "", "code", true, 1, 999, &msg->u.error.code));
        TRY(rd_msg_text(d, m, "", "msg", &msg->u.error.msg));
        return rd_id(d, m, "", "id", false, &msg->u.error.id);
    case PROTO_PROBE:
        return rd_u64(d, m, "", "nonce", true, 0, UINT64_MAX, &msg->u.probe.nonce);
    case PROTO_DISPATCH:
        return dec_dispatch(d, m, &msg->u.dispatch);
    case PROTO_READY:
        TRY(rd_u64(d, m, "", "nonce", true, 0, UINT64_MAX, &msg->u.ready.nonce));
        TRY(rd_i32(d, m, "", "pid", true, 1, INT32_MAX, &msg->u.ready.pid));
        TRY(rd_u32(d, m, "", "n_ctx", true, 1, PROTO_MAX_CTX, &msg->u.ready.n_ctx));
        TRY(rd_u32(d, m, "", "n_vocab", true, 1, PROTO_MAX_TOKEN_ID, &msg->u.ready.n_vocab));
        return rd_u32(d, m, "", "max_batch", true, 1, PROTO_MAX_BATCH, &msg->u.ready.max_batch);
    case PROTO_HEARTBEAT:
        TRY(rd_u32(d, m, "", "active", true, 0, PROTO_MAX_BATCH, &msg->u.heartbeat.active));
        return rd_u64(d, m, "", "tokens", true, 0, UINT64_MAX, &msg->u.heartbeat.tokens);
    case PROTO_TOKENS: {
        struct proto_wtokens *t = &msg->u.tokens;
        const obj_t *o;

        TRY(rd_id(d, m, "", "id", true, &t->id));
        TRY(rd_u32(d, m, "", "index", true, 0, PROTO_MAX_TOKENS - 1, &t->index));
        TRY(rd_ids(d, m, "", "ids", true, 1, &t->ids, &t->n_ids));
        TRY(field(d, m, "", "text", true, &o));
        return copy_str(d, o, "", "text", 0, PROTO_MAX_TEXT_BYTES, STR_BYTES, &t->text,
                        &t->text_len);
    }
    case PROTO_DONE:
        TRY(rd_id(d, m, "", "id", true, &msg->u.done.id));
        TRY(rd_enum(d, m, "", "reason", true, reason_name, PROTO_REASON_ERROR + 1, &reason));
        msg->u.done.reason = (enum proto_reason)reason;
        return dec_stats(d, m, "", &msg->u.done.stats);
    default:
        return err_set(d->err, ERR_INTERNAL, "no decoder for message type %d", (int)msg->type);
    }
}

/* The links each type may travel on. */
static unsigned
type_links(enum proto_type t)
{
    switch (t) {
    case PROTO_SUBMIT:
    case PROTO_POLL:
    case PROTO_STATUS:
    case PROTO_WORKERS:
    case PROTO_HEALTH:
        return PROTO_LINK_CLIENT_REQ;
    case PROTO_CANCEL:
        return PROTO_LINK_CLIENT_REQ | PROTO_LINK_WORKER_CMD;
    case PROTO_ERROR:
        return PROTO_LINK_CLIENT_REP | PROTO_LINK_WORKER_EVT;
    case PROTO_PROBE:
    case PROTO_DISPATCH:
        return PROTO_LINK_WORKER_CMD;
    case PROTO_READY:
    case PROTO_HEARTBEAT:
    case PROTO_TOKENS:
    case PROTO_DONE:
        return PROTO_LINK_WORKER_EVT;
    default:
        return PROTO_LINK_CLIENT_REP;
    }
}

/* Reads "v" and "t" and picks the type; all failures are ERR_PROTOCOL. */
static int
dec_envelope(const obj_t *root, unsigned links, enum proto_type *type, char *err)
{
    const obj_t *v = NULL, *t = NULL;
    char shown[48];

    if (root->type != MSGPACK_OBJECT_MAP)
        return err_set(err, ERR_PROTOCOL, "a message must be a map, got %s", obj_type_name(root));
    for (uint32_t i = 0; i < root->via.map.size; i++) {
        const obj_t *k = &root->via.map.ptr[i].key;

        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 1 && k->via.str.ptr[0] == 'v')
            v = &root->via.map.ptr[i].val;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == 1 && k->via.str.ptr[0] == 't')
            t = &root->via.map.ptr[i].val;
    }
    if (v == NULL)
        return err_set(err, ERR_PROTOCOL, "v (the protocol version) is missing");
    if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER || v->via.u64 != PROTO_VERSION) {
        if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            return err_set(err, ERR_PROTOCOL,
                           "v: unsupported protocol version %llu (this side "
                           "speaks %d)",
                           (unsigned long long)v->via.u64, PROTO_VERSION);
        return err_set(err, ERR_PROTOCOL, "v must be an integer, got %s", obj_type_name(v));
    }
    if (t == NULL)
        return err_set(err, ERR_PROTOCOL, "t (the message type) is missing");
    if (t->type != MSGPACK_OBJECT_STR)
        return err_set(err, ERR_PROTOCOL, "t must be a string, got %s", obj_type_name(t));
    for (int i = 1; i < PROTO__TYPE_COUNT; i++) {
        const char *n = proto_type_name((enum proto_type)i);

        if (strlen(n) != t->via.str.size || memcmp(n, t->via.str.ptr, t->via.str.size) != 0)
            continue;
        if ((type_links((enum proto_type)i) & links) == 0)
            return err_set(err, ERR_PROTOCOL, "t: message type %s is not valid on this link", n);
        *type = (enum proto_type)i;
        return ERR_OK;
    }
    return err_set(err, ERR_PROTOCOL, "t: unknown message type \"%s\"",
                   echo(t->via.str.ptr, t->via.str.size, shown, sizeof(shown)));
}

int
proto_decode(const void *buf, size_t len, unsigned links, struct proto_msg *m, char *err)
{
    msgpack_unpacked up;
    size_t off = 0;
    struct dec d = {NULL, err};
    int rc;

    memset(m, 0, sizeof(*m));
    if (buf == NULL || len == 0)
        return err_set(err, ERR_PROTOCOL, "empty message");
    if (len > PROTO_MAX_MSG_BYTES)
        return err_set(err, ERR_PROTOCOL, "message of %zu bytes exceeds the limit of %u", len,
                       PROTO_MAX_MSG_BYTES);
    rc = wire_check(buf, len, err);
    if (rc != ERR_OK)
        return rc;
    msgpack_unpacked_init(&up);
    switch (msgpack_unpack_next(&up, buf, len, &off)) {
    case MSGPACK_UNPACK_SUCCESS:
        break;
    case MSGPACK_UNPACK_NOMEM_ERROR:
        rc = err_set(err, ERR_NOMEM, "out of memory unpacking a message of %zu bytes", len);
        goto done;
    default:
        rc = err_set(err, ERR_PROTOCOL, "not a msgpack message (or nested too deeply)");
        goto done;
    }
    rc = dec_envelope(&up.data, links, &m->type, err);
    if (rc != ERR_OK)
        goto done;
    d.arena = calloc(1, sizeof(*d.arena));
    if (d.arena == NULL) {
        rc = err_set(err, ERR_NOMEM, "out of memory decoding a message");
        goto done;
    }
    m->arena = d.arena;
    if (m->type == PROTO_SUBMIT) {
        struct proto_arena *a = m->arena;

        proto_submit_init(m);
        m->arena = a;
    }
    rc = rd_str(&d, &up.data, "", "key", false, 1, PROTO_MAX_KEY_BYTES, STR_WORD, &m->key);
    if (rc == ERR_OK)
        rc = dec_body(&d, &up.data, m);
    if (rc != ERR_OK)
        proto_msg_free(m);
done:
    msgpack_unpacked_destroy(&up);
    if (rc != ERR_OK)
        memset(m, 0, sizeof(*m));
    return rc;
}
