/*
 * test_proto.c: tests of the wire format (proto/proto.h): a round trip of every message type,
 * defaults, links, and strict decoding: each required field missing, each of wrong type, values
 * out of range, unknown version and type, truncation at every length, bit flips, random bytes and
 * huge declared lengths. Malformed messages are made by editing encoded samples with a small
 * msgpack byte writer of this file (an independent reading of the format, not proto's).
 */
#include "common/err.h"
#include "proto/proto.h"
#include "tests/harness.h"
#include "tests/proto_samples.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- bytes and a minimal msgpack writer/skipper for making bad messages ---- */

struct bytes {
    unsigned char *p;
    size_t n;
    size_t cap;
};

static void
b_put(struct bytes *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        if (b->p == NULL)
            abort();
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void
b_byte(struct bytes *b, unsigned v)
{
    unsigned char c = (unsigned char)v;

    b_put(b, &c, 1);
}

static void
b_be(struct bytes *b, uint64_t v, unsigned n)
{
    for (unsigned i = n; i-- > 0;)
        b_byte(b, (unsigned)(v >> (8 * i)));
}

static void
mp_uint(struct bytes *b, uint64_t v)
{
    b_byte(b, 0xcf);
    b_be(b, v, 8);
}

static void
mp_neg(struct bytes *b, int64_t v)
{
    b_byte(b, 0xd3);
    b_be(b, (uint64_t)v, 8);
}

static void
mp_f64(struct bytes *b, double v)
{
    uint64_t u;

    memcpy(&u, &v, 8);
    b_byte(b, 0xcb);
    b_be(b, u, 8);
}

static void
mp_strn(struct bytes *b, const char *s, size_t n)
{
    b_byte(b, 0xdb);
    b_be(b, n, 4);
    b_put(b, s, n);
}

static void
mp_str(struct bytes *b, const char *s)
{
    mp_strn(b, s, strlen(s));
}

/* A string of n copies of c. */
static void
mp_fill(struct bytes *b, size_t n, char c)
{
    char *s = malloc(n + 1);

    memset(s, c, n);
    mp_strn(b, s, n);
    free(s);
}

static void
mp_array(struct bytes *b, uint32_t n)
{
    b_byte(b, 0xdd);
    b_be(b, n, 4);
}

static void
mp_map(struct bytes *b, uint32_t n)
{
    b_byte(b, 0xdf);
    b_be(b, n, 4);
}

/* Length of the msgpack object at p (within n bytes), or 0 when it does not fit. */
static size_t
mp_skip(const unsigned char *p, size_t n)
{
    size_t len = 1, count = 0;
    unsigned b;

    if (n == 0)
        return 0;
    b = p[0];
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xc0 && b <= 0xc3))
        return 1;
    if (b <= 0x8f || (b >= 0x90 && b <= 0x9f)) {
        count = (b & 0x0f) * (b <= 0x8f ? 2 : 1);
    } else if (b <= 0xbf) {
        len += b & 0x1f;
    } else if (b == 0xca || b == 0xcb) {
        len += b == 0xca ? 4 : 8;
    } else if (b >= 0xcc && b <= 0xd3) {
        len += 1u << ((b - 0xcc) & 3);
    } else if (b >= 0xd9 && b <= 0xdb) {
        unsigned h = 1u << (b - 0xd9);
        uint64_t l = 0;

        for (unsigned i = 0; i < h; i++)
            l = l << 8 | p[1 + i];
        len += h + l;
    } else if (b >= 0xdc && b <= 0xdf) {
        unsigned h = (b & 1) ? 4 : 2;

        for (unsigned i = 0; i < h; i++)
            count = count << 8 | p[1 + i];
        count *= b >= 0xde ? 2 : 1;
        len += h;
    } else {
        return 0; /* bin and ext: not in our samples */
    }
    for (size_t i = 0; i < count; i++) {
        size_t l;

        if (len > n)
            return 0;
        l = mp_skip(p + len, n - len);
        if (l == 0)
            return 0;
        len += l;
    }
    return len <= n ? len : 0;
}

/* ---- editing encoded samples ---- */

static struct bytes
encode_sample(const struct proto_msg *m)
{
    struct bytes b = {0};
    char err[ERR_MSG_MAX];
    void *buf;
    size_t len;

    if (proto_encode(m, &buf, &len, err) != ERR_OK) {
        fprintf(stderr, "sample %s does not encode: %s\n", proto_type_name(m->type), err);
        abort();
    }
    b_put(&b, buf, len);
    free(buf);
    return b;
}

static struct bytes
sample_bytes(enum proto_type t)
{
    struct proto_msg m;

    proto_sample(t, &m);
    return encode_sample(&m);
}

/* Offset of the first map key `key` (a fixstr, not the value of "t") in b, or -1. */
static long
find_key(const struct bytes *b, const char *key)
{
    size_t kl = strlen(key);

    for (size_t i = 0; i + 1 + kl <= b->n; i++)
        if (b->p[i] == (0xa0 | kl) && memcmp(b->p + i + 1, key, kl) == 0 &&
            !(i >= 2 && b->p[i - 2] == 0xa1 && b->p[i - 1] == 't'))
            return (long)i;
    return -1;
}

/* Replaces the value of the first key `key` by the bytes of v; returns false if there is none. */
static bool
replace_value(struct bytes *b, const char *key, const struct bytes *v)
{
    long k = find_key(b, key);
    size_t vs, vl;
    struct bytes out = {0};

    if (k < 0)
        return false;
    vs = (size_t)k + 1 + strlen(key);
    vl = mp_skip(b->p + vs, b->n - vs);
    if (vl == 0)
        return false;
    b_put(&out, b->p, vs);
    if (v->n > 0)
        b_put(&out, v->p, v->n);
    b_put(&out, b->p + vs + vl, b->n - vs - vl);
    free(b->p);
    *b = out;
    return true;
}

/* Renames the first key `key` (its last letter becomes '~'): the field goes missing. */
static bool
rename_key(struct bytes *b, const char *key)
{
    long k = find_key(b, key);

    if (k < 0)
        return false;
    b->p[k + strlen(key)] = '~';
    return true;
}

static int
decode(const struct bytes *b, struct proto_msg *m, char *err)
{
    return proto_decode(b->p, b->n, PROTO_LINK_ANY, m, err);
}

/* Decodes b expecting failure with code and a message containing want. */
static bool
expect_fail(const struct bytes *b, int code, const char *want, char *got, size_t size)
{
    struct proto_msg m;
    char err[ERR_MSG_MAX] = "";
    int rc = decode(b, &m, err);

    snprintf(got, size, "rc %d (%s): %s", rc, err_str(rc), err);
    if (rc == ERR_OK) {
        proto_msg_free(&m);
        return false;
    }
    return rc == code && strstr(err, want) != NULL;
}

/* ---- round trips ---- */

static void
test_roundtrip_every_type(void)
{
    for (int t = 1; t <= PROTO__TYPE_COUNT; t++) {
        struct proto_msg in, out;
        struct bytes a, b;
        char err[ERR_MSG_MAX];

        if (t < PROTO__TYPE_COUNT)
            proto_sample((enum proto_type)t, &in);
        else
            proto_sample_chat(&in);
        a = encode_sample(&in);
        CHECKF(decode(&a, &out, err) == ERR_OK, "%s: %s", proto_type_name(in.type), err);
        CHECK(out.type == in.type);
        CHECK((out.key == NULL) == (in.key == NULL));
        /* re-encoding what was decoded gives the same bytes: every field survived */
        b = encode_sample(&out);
        CHECKF(a.n == b.n && memcmp(a.p, b.p, a.n) == 0, "%s differs after a round trip",
               proto_type_name(in.type));
        proto_msg_free(&out);
        CHECK(out.arena == NULL && out.type == 0);
        free(a.p);
        free(b.p);
    }
}

static void
test_roundtrip_fields(void)
{
    struct proto_msg in, out;
    struct bytes b;
    char err[ERR_MSG_MAX];

    proto_sample(PROTO_FRAMES, &in);
    b = encode_sample(&in);
    CHECK(decode(&b, &out, err) == ERR_OK);
    free(b.p);
    struct proto_frames *f = &out.u.frames;
    CHECK(strcmp(f->id, "r-00000042") == 0 && f->n_frames == 5);
    CHECK(f->frames[0].kind == PROTO_FRAME_QUEUED && f->frames[0].position == 2);
    CHECK(f->frames[0].seq == 41 && f->frames[4].seq == 45);
    CHECK(f->frames[2].n_ids == 5 && f->frames[2].ids[1] == 15043);
    CHECK(f->frames[2].ids[3] == 2147483647);
    CHECK(f->frames[2].text_len == 6 && memcmp(f->frames[2].text, "He\0llo", 7) == 0);
    CHECK(f->frames[3].reason == PROTO_REASON_STOP && f->frames[3].stats.gen_tokens == 128);
    CHECK(f->frames[3].stats.decode_ms == 812.125);
    CHECK(f->frames[4].code == ERR_WORKER_CRASHED);
    proto_msg_free(&out);

    proto_sample(PROTO_DISPATCH, &in);
    b = encode_sample(&in);
    CHECK(decode(&b, &out, err) == ERR_OK);
    free(b.p);
    struct proto_dispatch *d = &out.u.dispatch;
    CHECK(d->n_prompt == 5 && d->n_replay == 2 && d->replay_ids[0] == 15043);
    CHECK(d->sampling.seed == 42 && d->sampling.temperature == 0.7f);
    CHECK(d->sampling.top_p == 0.95f && d->sampling.min_p == 0.05f && d->sampling.top_k == 40);
    CHECK(d->n_stop == 2 && strcmp(d->stop[0], "\nUser:") == 0);
    proto_msg_free(&out);

    proto_sample_chat(&in);
    b = encode_sample(&in);
    CHECK(decode(&b, &out, err) == ERR_OK);
    free(b.p);
    CHECK(out.u.submit.prompt == NULL && out.u.submit.n_messages == 2);
    CHECK(strcmp(out.u.submit.messages[1].content, "Say hi \xc3\xa9 \xe2\x82\xac") == 0);
    CHECK(out.u.submit.priority == PROTO_PRIO_BATCH && out.u.submit.sampling.seed == 1234);
    CHECK(strcmp(out.key, "tk_0123456789abcdef") == 0);
    proto_msg_free(&out);
}

static void
test_submit_defaults(void)
{
    struct proto_msg in, out;
    struct bytes b;
    char err[ERR_MSG_MAX];

    proto_submit_init(&in);
    in.u.submit.prompt = "Hello";
    b = encode_sample(&in);
    CHECK(decode(&b, &out, err) == ERR_OK);
    free(b.p);
    CHECK(out.key == NULL && out.u.submit.client_id == NULL && out.u.submit.n_stop == 0);
    CHECK(out.u.submit.max_tokens == 128 && out.u.submit.priority == PROTO_PRIO_INTERACTIVE);
    CHECK(out.u.submit.sampling.temperature == 0.8f && out.u.submit.sampling.top_k == 40);
    CHECK(out.u.submit.sampling.seed == PROTO_SEED_RANDOM);
    CHECK(out.u.submit.sampling.repeat_last_n == 64);
    proto_msg_free(&out);

    /* a submit with nothing but v, t and prompt, and opts with one field, get the defaults */
    struct bytes m = {0};
    b_byte(&m, 0x84);
    mp_str(&m, "v");
    mp_uint(&m, 1);
    mp_str(&m, "t");
    mp_str(&m, "submit");
    mp_str(&m, "prompt");
    mp_str(&m, "");
    mp_str(&m, "opts");
    b_byte(&m, 0x81);
    mp_str(&m, "temperature");
    mp_uint(&m, 0); /* an integer where a float goes is accepted */
    CHECKF(decode(&m, &out, err) == ERR_OK, "%s", err);
    free(m.p);
    CHECK(out.u.submit.sampling.temperature == 0.0f && out.u.submit.sampling.top_p == 0.95f);
    CHECK(strcmp(out.u.submit.prompt, "") == 0 && out.u.submit.max_tokens == 128);
    proto_msg_free(&out);
}

static void
test_links(void)
{
    struct proto_msg m;
    struct bytes b = sample_bytes(PROTO_SUBMIT);
    char err[ERR_MSG_MAX];

    CHECK(proto_decode(b.p, b.n, PROTO_LINK_CLIENT_REQ, &m, err) == ERR_OK);
    proto_msg_free(&m);
    CHECK(proto_decode(b.p, b.n, PROTO_LINK_WORKER_CMD | PROTO_LINK_CLIENT_REP, &m, err) ==
          ERR_PROTOCOL);
    CHECKF(strstr(err, "submit is not valid on this link") != NULL, "%s", err);
    free(b.p);
    b = sample_bytes(PROTO_DISPATCH);
    CHECK(proto_decode(b.p, b.n, PROTO_LINK_CLIENT_REQ, &m, err) == ERR_PROTOCOL);
    CHECK(proto_decode(b.p, b.n, PROTO_LINK_WORKER_CMD, &m, err) == ERR_OK);
    proto_msg_free(&m);
    free(b.p);
    b = sample_bytes(PROTO_CANCEL);
    CHECK(proto_decode(b.p, b.n, PROTO_LINK_CLIENT_REQ, &m, err) == ERR_OK);
    proto_msg_free(&m);
    CHECK(proto_decode(b.p, b.n, PROTO_LINK_WORKER_CMD, &m, err) == ERR_OK);
    proto_msg_free(&m);
    CHECK(proto_decode(b.p, b.n, PROTO_LINK_WORKER_EVT, &m, err) == ERR_PROTOCOL);
    free(b.p);
}

/* ---- strict decoding ---- */

/* Required fields: the sample holding them, the key, and the field as errors name it. */
static const struct {
    int type; /* PROTO__TYPE_COUNT = the chat submit */
    const char *key;
    const char *path;
} required[] = {
    {PROTO__TYPE_COUNT, "role", "messages[0].role"},
    {PROTO__TYPE_COUNT, "content", "messages[0].content"},
    {PROTO_POLL, "id", "id"},
    {PROTO_POLL, "from", "from"},
    {PROTO_POLL, "wait_ms", "wait_ms"},
    {PROTO_CANCEL, "id", "id"},
    {PROTO_CANCEL_OK, "id", "id"},
    {PROTO_SUBMITTED, "id", "id"},
    {PROTO_SUBMITTED, "position", "position"},
    {PROTO_FRAMES, "id", "id"},
    {PROTO_FRAMES, "frames", "frames"},
    {PROTO_FRAMES, "seq", "frames[0].seq"},
    {PROTO_FRAMES, "k", "frames[0].k"},
    {PROTO_FRAMES, "position", "frames[0].position"},
    {PROTO_FRAMES, "ids", "frames[2].ids"},
    {PROTO_FRAMES, "text", "frames[2].text"},
    {PROTO_FRAMES, "reason", "frames[3].reason"},
    {PROTO_FRAMES, "stats", "frames[3].stats"},
    {PROTO_FRAMES, "prompt_tokens", "frames[3].stats.prompt_tokens"},
    {PROTO_FRAMES, "gen_tokens", "frames[3].stats.gen_tokens"},
    {PROTO_FRAMES, "queue_ms", "frames[3].stats.queue_ms"},
    {PROTO_FRAMES, "prefill_ms", "frames[3].stats.prefill_ms"},
    {PROTO_FRAMES, "decode_ms", "frames[3].stats.decode_ms"},
    {PROTO_FRAMES, "code", "frames[4].code"},
    {PROTO_FRAMES, "msg", "frames[4].msg"},
    {PROTO_STATUS_INFO, "queued_interactive", "queued_interactive"},
    {PROTO_STATUS_INFO, "queued_batch", "queued_batch"},
    {PROTO_STATUS_INFO, "queue_max", "queue_max"},
    {PROTO_STATUS_INFO, "running", "running"},
    {PROTO_STATUS_INFO, "workers", "workers"},
    {PROTO_STATUS_INFO, "workers_ready", "workers_ready"},
    {PROTO_STATUS_INFO, "completed", "completed"},
    {PROTO_STATUS_INFO, "failed", "failed"},
    {PROTO_STATUS_INFO, "uptime_ms", "uptime_ms"},
    {PROTO_STATUS_INFO, "tenants", "tenants"},
    {PROTO_STATUS_INFO, "name", "tenants[0].name"},
    {PROTO_STATUS_INFO, "queued", "tenants[0].queued"},
    {PROTO_STATUS_INFO, "gen_tokens", "tenants[0].gen_tokens"},
    {PROTO_WORKERS_INFO, "workers", "workers"},
    {PROTO_WORKERS_INFO, "slot", "workers[0].slot"},
    {PROTO_WORKERS_INFO, "pid", "workers[0].pid"},
    {PROTO_WORKERS_INFO, "state", "workers[0].state"},
    {PROTO_WORKERS_INFO, "restarts", "workers[0].restarts"},
    {PROTO_WORKERS_INFO, "detail", "workers[0].detail"},
    {PROTO_HEALTH_INFO, "ready", "ready"},
    {PROTO_HEALTH_INFO, "workers_ready", "workers_ready"},
    {PROTO_HEALTH_INFO, "detail", "detail"},
    {PROTO_BUSY, "retry_after_ms", "retry_after_ms"},
    {PROTO_BUSY, "msg", "msg"},
    {PROTO_ERROR, "code", "code"},
    {PROTO_ERROR, "msg", "msg"},
    {PROTO_PROBE, "nonce", "nonce"},
    {PROTO_DISPATCH, "id", "id"},
    {PROTO_DISPATCH, "prompt_ids", "prompt_ids"},
    {PROTO_DISPATCH, "replay_ids", "replay_ids"},
    {PROTO_DISPATCH, "opts", "opts"},
    {PROTO_DISPATCH, "temperature", "opts.temperature"},
    {PROTO_DISPATCH, "top_k", "opts.top_k"},
    {PROTO_DISPATCH, "top_p", "opts.top_p"},
    {PROTO_DISPATCH, "min_p", "opts.min_p"},
    {PROTO_DISPATCH, "repeat_penalty", "opts.repeat_penalty"},
    {PROTO_DISPATCH, "repeat_last_n", "opts.repeat_last_n"},
    {PROTO_DISPATCH, "seed", "opts.seed"},
    {PROTO_DISPATCH, "max_tokens", "max_tokens"},
    {PROTO_READY, "nonce", "nonce"},
    {PROTO_READY, "pid", "pid"},
    {PROTO_READY, "n_ctx", "n_ctx"},
    {PROTO_READY, "n_vocab", "n_vocab"},
    {PROTO_READY, "max_batch", "max_batch"},
    {PROTO_HEARTBEAT, "active", "active"},
    {PROTO_HEARTBEAT, "tokens", "tokens"},
    {PROTO_TOKENS, "id", "id"},
    {PROTO_TOKENS, "index", "index"},
    {PROTO_TOKENS, "ids", "ids"},
    {PROTO_TOKENS, "text", "text"},
    {PROTO_DONE, "id", "id"},
    {PROTO_DONE, "reason", "reason"},
    {PROTO_DONE, "stats", "stats"},
    {PROTO_DONE, "gen_tokens", "stats.gen_tokens"},
};

static struct bytes
required_sample(int type)
{
    struct proto_msg m;

    if (type == PROTO__TYPE_COUNT) {
        proto_sample_chat(&m);
        return encode_sample(&m);
    }
    return sample_bytes((enum proto_type)type);
}

static void
test_each_missing_field(void)
{
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        struct bytes b = required_sample(required[i].type);
        char want[128], got[ERR_MSG_MAX + 64];

        CHECKF(rename_key(&b, required[i].key), "no key %s", required[i].key);
        snprintf(want, sizeof(want), "%s is missing", required[i].path);
        CHECKF(expect_fail(&b, ERR_BAD_REQUEST, want, got, sizeof(got)), "%s: want '%s', %s",
               required[i].path, want, got);
        free(b.p);
    }
}

static void
test_each_wrong_type(void)
{
    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
        struct bytes b = required_sample(required[i].type), v = {0}, nil = {0};
        char want[128], got[ERR_MSG_MAX + 64];
        long k = find_key(&b, required[i].key);
        unsigned first;

        CHECK(k >= 0);
        first = b.p[k + 1 + strlen(required[i].key)];
        /* a string becomes an integer, anything else a string */
        if ((first >= 0xa0 && first <= 0xbf) || (first >= 0xd9 && first <= 0xdb))
            mp_uint(&v, 7);
        else
            mp_str(&v, "x");
        CHECK(replace_value(&b, required[i].key, &v));
        snprintf(want, sizeof(want), "%s must be ", required[i].path);
        CHECKF(expect_fail(&b, ERR_BAD_REQUEST, want, got, sizeof(got)), "%s: want '%s', %s",
               required[i].path, want, got);
        /* nil in a required field is a wrong type too */
        b_byte(&nil, 0xc0);
        CHECK(replace_value(&b, required[i].key, &nil));
        snprintf(want, sizeof(want), "%s must be ", required[i].path);
        CHECKF(expect_fail(&b, ERR_BAD_REQUEST, want, got, sizeof(got)), "%s nil: %s",
               required[i].path, got);
        CHECK(strstr(got, "got nil") != NULL);
        free(v.p);
        free(nil.p);
        free(b.p);
    }
}

/* A value replacing key's in the sample of type, and the error expected. */
struct bad_value {
    int type;
    const char *key;
    void (*make)(struct bytes *);
    int code;
    const char *want;
};

#define MAKER(name, body)                                                                          \
    static void name(struct bytes *v)                                                              \
    {                                                                                              \
        body;                                                                                      \
    }

MAKER(v_zero, mp_uint(v, 0))
MAKER(v_8193, mp_uint(v, 8193))
MAKER(v_minus1, mp_neg(v, -1))
MAKER(v_temp_high, mp_f64(v, 100.5))
MAKER(v_nan, mp_f64(v, NAN))
MAKER(v_1_5, mp_f64(v, 1.5))
MAKER(v_minus_0_1, mp_f64(v, -0.1))
MAKER(v_2p21, mp_uint(v, 1u << 21))
MAKER(v_70000, mp_uint(v, 70000))
MAKER(v_u64max, mp_uint(v, UINT64_MAX))
MAKER(v_60001, mp_uint(v, 60001))
MAKER(v_1000, mp_uint(v, 1000))
MAKER(v_1025, mp_uint(v, 1025))
MAKER(v_retry_high, mp_uint(v, PROTO_MAX_RETRY_MS + 1))
MAKER(v_urgent, mp_str(v, "urgent"))
MAKER(v_weird, mp_str(v, "weird\x01"))
MAKER(v_id65, mp_fill(v, 65, 'a'))
MAKER(v_space, mp_str(v, "a b"))
MAKER(v_empty, mp_str(v, ""))
MAKER(v_nul, mp_strn(v, "ab\0cd", 5))
MAKER(v_prompt_big, mp_fill(v, PROTO_MAX_PROMPT_BYTES + 1, 'p'))
MAKER(v_msg_big, mp_fill(v, PROTO_MAX_MSG_TEXT + 1, 'm'))
MAKER(v_float_int, mp_f64(v, 3.0))
MAKER(v_just_above_min, mp_f64(v, 0.0100000001))

static void
v_stop17(struct bytes *v)
{
    mp_array(v, 17);
    for (int i = 0; i < 17; i++)
        mp_str(v, "x");
}

static void
v_stop_empty_elem(struct bytes *v)
{
    mp_array(v, 1);
    mp_str(v, "");
}

static void
v_stop_long_elem(struct bytes *v)
{
    mp_array(v, 2);
    mp_str(v, "ok");
    mp_fill(v, PROTO_MAX_STOP_BYTES + 1, 's');
}

static void
v_stop_int_elem(struct bytes *v)
{
    mp_array(v, 1);
    mp_uint(v, 3);
}

static void
v_ids_empty(struct bytes *v)
{
    mp_array(v, 0);
}

static void
v_ids_neg(struct bytes *v)
{
    mp_array(v, 2);
    mp_uint(v, 1);
    mp_neg(v, -5);
}

static void
v_ids_big(struct bytes *v)
{
    mp_array(v, 1);
    mp_uint(v, 1ull << 31);
}

static void
v_ids_too_many(struct bytes *v)
{
    mp_array(v, PROTO_MAX_IDS + 1);
    for (int i = 0; i <= PROTO_MAX_IDS; i++)
        b_byte(v, 1);
}

static void
v_messages_257(struct bytes *v)
{
    mp_array(v, 257);
    for (int i = 0; i < 257; i++) {
        mp_map(v, 2);
        mp_str(v, "role");
        mp_str(v, "user");
        mp_str(v, "content");
        mp_str(v, "hi");
    }
}

static void
v_messages_not_map(struct bytes *v)
{
    mp_array(v, 1);
    mp_str(v, "hello");
}

static void
v_two_replay(struct bytes *v)
{
    mp_uint(v, 2);
}

static const struct bad_value bad_values[] = {
    {PROTO_SUBMIT, "max_tokens", v_zero, ERR_BAD_REQUEST, "max_tokens must be in [1, 8192], got 0"},
    {PROTO_SUBMIT, "max_tokens", v_8193, ERR_BAD_REQUEST,
     "max_tokens must be in [1, 8192], got 8193"},
    {PROTO_SUBMIT, "max_tokens", v_minus1, ERR_BAD_REQUEST,
     "max_tokens must be in [1, 8192], got -1"},
    {PROTO_SUBMIT, "max_tokens", v_float_int, ERR_BAD_REQUEST,
     "max_tokens must be an integer, got a float"},
    {PROTO_SUBMIT, "temperature", v_temp_high, ERR_BAD_REQUEST,
     "opts.temperature must be in [0, 100], got 100.5"},
    {PROTO_SUBMIT, "temperature", v_nan, ERR_BAD_REQUEST,
     "opts.temperature must be in [0, 100], got nan"},
    {PROTO_SUBMIT, "temperature", v_urgent, ERR_BAD_REQUEST,
     "opts.temperature must be a number, got a string"},
    {PROTO_SUBMIT, "top_p", v_1_5, ERR_BAD_REQUEST, "opts.top_p must be in [0, 1], got 1.5"},
    {PROTO_SUBMIT, "min_p", v_minus_0_1, ERR_BAD_REQUEST, "opts.min_p must be in [0, 1], got -0.1"},
    {PROTO_SUBMIT, "top_k", v_2p21, ERR_BAD_REQUEST,
     "opts.top_k must be in [0, 1048576], got 2097152"},
    {PROTO_SUBMIT, "top_k", v_minus1, ERR_BAD_REQUEST,
     "opts.top_k must be in [0, 1048576], got -1"},
    {PROTO_SUBMIT, "repeat_penalty", v_zero, ERR_BAD_REQUEST,
     "opts.repeat_penalty must be in [0.01, 100], got 0"},
    {PROTO_SUBMIT, "repeat_penalty", v_just_above_min, ERR_OK, ""},
    {PROTO_SUBMIT, "repeat_last_n", v_70000, ERR_BAD_REQUEST,
     "opts.repeat_last_n must be in [0, 65536], got 70000"},
    {PROTO_SUBMIT, "seed", v_u64max, ERR_BAD_REQUEST,
     "opts.seed must be in [0, 18446744073709551614]"},
    {PROTO_SUBMIT, "opts", v_urgent, ERR_BAD_REQUEST, "opts must be a map, got a string"},
    {PROTO_SUBMIT, "priority", v_urgent, ERR_BAD_REQUEST,
     "priority must be one of interactive, batch, got \"urgent\""},
    {PROTO_SUBMIT, "priority", v_weird, ERR_BAD_REQUEST, "got \"weird?\""},
    {PROTO_SUBMIT, "client_id", v_id65, ERR_BAD_REQUEST,
     "client_id must be 1 to 64 bytes long, got 65"},
    {PROTO_SUBMIT, "client_id", v_space, ERR_BAD_REQUEST,
     "client_id must be printable ASCII without spaces"},
    {PROTO_SUBMIT, "key", v_empty, ERR_BAD_REQUEST, "key must be 1 to 256 bytes long, got 0"},
    {PROTO_SUBMIT, "prompt", v_nul, ERR_BAD_REQUEST, "prompt contains a NUL byte at 2"},
    {PROTO_SUBMIT, "prompt", v_prompt_big, ERR_BAD_REQUEST,
     "prompt must be 0 to 1048576 bytes long, got 1048577"},
    {PROTO_SUBMIT, "prompt", v_zero, ERR_BAD_REQUEST, "prompt must be a string, got an integer"},
    {PROTO_SUBMIT, "stop", v_stop17, ERR_BAD_REQUEST, "stop must have 0 to 16 elements, got 17"},
    {PROTO_SUBMIT, "stop", v_stop_empty_elem, ERR_BAD_REQUEST,
     "stop[0] must be 1 to 256 bytes long, got 0"},
    {PROTO_SUBMIT, "stop", v_stop_long_elem, ERR_BAD_REQUEST,
     "stop[1] must be 1 to 256 bytes long, got 257"},
    {PROTO_SUBMIT, "stop", v_stop_int_elem, ERR_BAD_REQUEST,
     "stop[0] must be a string, got an integer"},
    {PROTO__TYPE_COUNT, "messages", v_messages_257, ERR_BAD_REQUEST,
     "messages must have 1 to 256 elements, got 257"},
    {PROTO__TYPE_COUNT, "messages", v_ids_empty, ERR_BAD_REQUEST,
     "messages must have 1 to 256 elements, got 0"},
    {PROTO__TYPE_COUNT, "messages", v_messages_not_map, ERR_BAD_REQUEST,
     "messages[0] must be a map, got a string"},
    {PROTO__TYPE_COUNT, "role", v_empty, ERR_BAD_REQUEST,
     "messages[0].role must be 1 to 32 bytes long, got 0"},
    {PROTO_POLL, "wait_ms", v_60001, ERR_BAD_REQUEST, "wait_ms must be in [0, 60000], got 60001"},
    {PROTO_POLL, "from", v_minus1, ERR_BAD_REQUEST,
     "from must be in [0, 18446744073709551615], got -1"},
    {PROTO_POLL, "id", v_id65, ERR_BAD_REQUEST, "id must be 1 to 64 bytes long, got 65"},
    {PROTO_CANCEL, "id", v_empty, ERR_BAD_REQUEST, "id must be 1 to 64 bytes long, got 0"},
    {PROTO_DISPATCH, "prompt_ids", v_ids_empty, ERR_BAD_REQUEST,
     "prompt_ids must have 1 to 65536 elements, got 0"},
    {PROTO_DISPATCH, "prompt_ids", v_ids_neg, ERR_BAD_REQUEST,
     "prompt_ids[1] must be in [0, 2147483647], got -5"},
    {PROTO_DISPATCH, "prompt_ids", v_ids_big, ERR_BAD_REQUEST,
     "prompt_ids[0] must be in [0, 2147483647], got 2147483648"},
    {PROTO_DISPATCH, "replay_ids", v_ids_too_many, ERR_BAD_REQUEST,
     "replay_ids must have 0 to 65536 elements, got 65537"},
    {PROTO_DISPATCH, "max_tokens", v_two_replay, ERR_BAD_REQUEST,
     "replay_ids must have fewer than max_tokens (2) elements, got 2"},
    {PROTO_DISPATCH, "seed", v_u64max, ERR_BAD_REQUEST, "opts.seed must be in"},
    {PROTO_FRAMES, "k", v_weird, ERR_BAD_REQUEST,
     "frames[0].k must be one of queued, started, tokens, done, error, got \"weird?\""},
    {PROTO_FRAMES, "code", v_zero, ERR_BAD_REQUEST, "frames[4].code must be in [1, 999], got 0"},
    {PROTO_FRAMES, "reason", v_urgent, ERR_BAD_REQUEST,
     "frames[3].reason must be one of eos, length, stop, cancelled, error"},
    {PROTO_FRAMES, "ids", v_ids_empty, ERR_BAD_REQUEST,
     "frames[2].ids must have 1 to 65536 elements, got 0"},
    {PROTO_FRAMES, "decode_ms", v_minus_0_1, ERR_BAD_REQUEST,
     "frames[3].stats.decode_ms must be in [0, 1e+09], got -0.1"},
    {PROTO_FRAMES, "msg", v_msg_big, ERR_BAD_REQUEST,
     "frames[4].msg must be 0 to 1024 bytes long, got 1025"},
    {PROTO_ERROR, "code", v_1000, ERR_BAD_REQUEST, "code must be in [1, 999], got 1000"},
    {PROTO_ERROR, "id", v_space, ERR_BAD_REQUEST, "id must be printable ASCII"},
    {PROTO_READY, "max_batch", v_zero, ERR_BAD_REQUEST, "max_batch must be in [1, 256], got 0"},
    {PROTO_READY, "pid", v_zero, ERR_BAD_REQUEST, "pid must be in [1, 2147483647], got 0"},
    {PROTO_TOKENS, "index", v_1000, ERR_OK, ""},
    {PROTO_TOKENS, "index", v_8193, ERR_BAD_REQUEST, "index must be in [0, 8191], got 8193"},
    {PROTO_WORKERS_INFO, "state", v_urgent, ERR_BAD_REQUEST,
     "workers[0].state must be one of starting, ready"},
    {PROTO_WORKERS_INFO, "requests", v_stop_empty_elem, ERR_BAD_REQUEST,
     "workers[0].requests[0] must be 1 to 64 bytes long"},
    {PROTO_WORKERS_INFO, "slots", v_1000, ERR_BAD_REQUEST,
     "workers[0].slots must be in [0, 256], got 1000"},
    {PROTO_BUSY, "retry_after_ms", v_retry_high, ERR_BAD_REQUEST,
     "retry_after_ms must be in [0, 3600000], got 3600001"},
    {PROTO_STATUS_INFO, "workers", v_1025, ERR_BAD_REQUEST,
     "workers must be in [0, 1024], got 1025"},
    {PROTO_STATUS_INFO, "name", v_space, ERR_BAD_REQUEST,
     "tenants[0].name must be printable ASCII"},
    {PROTO_HEALTH_INFO, "ready", v_zero, ERR_BAD_REQUEST,
     "ready must be a boolean, got an integer"},
};

static void
test_out_of_range_values(void)
{
    for (size_t i = 0; i < sizeof(bad_values) / sizeof(bad_values[0]); i++) {
        const struct bad_value *bv = &bad_values[i];
        struct bytes b = required_sample(bv->type), v = {0};
        char got[ERR_MSG_MAX + 64];

        bv->make(&v);
        CHECKF(replace_value(&b, bv->key, &v), "case %zu: no key %s", i, bv->key);
        if (bv->code == ERR_OK) {
            struct proto_msg m;
            char err[ERR_MSG_MAX];

            void *again;
            size_t len;

            CHECKF(decode(&b, &m, err) == ERR_OK, "case %zu: %s", i, err);
            CHECKF(proto_encode(&m, &again, &len, err) == ERR_OK, "case %zu: %s", i, err);
            free(again);
            proto_msg_free(&m);
        } else {
            CHECKF(expect_fail(&b, bv->code, bv->want, got, sizeof(got)),
                   "case %zu (%s): want '%s', %s", i, bv->key, bv->want, got);
        }
        free(v.p);
        free(b.p);
    }
}

static void
test_encode_refuses_invalid(void)
{
    struct proto_msg m;
    char err[ERR_MSG_MAX];
    void *buf = (void *)1;
    size_t len = 7;

    proto_submit_init(&m);
    m.u.submit.prompt = "Hi";
    m.u.submit.max_tokens = 0;
    CHECK(proto_encode(&m, &buf, &len, err) == ERR_BAD_REQUEST);
    CHECKF(strcmp(err, "max_tokens must be in [1, 8192], got 0") == 0, "%s", err);
    CHECK(buf == NULL && len == 0);
    m.u.submit.max_tokens = 5;
    m.u.submit.sampling.top_k = -3;
    CHECK(proto_encode(&m, &buf, &len, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "opts.top_k must be in [0, 1048576], got -3") != NULL, "%s", err);
    m.u.submit.sampling.top_k = 3;
    m.u.submit.prompt = NULL;
    CHECK(proto_encode(&m, &buf, &len, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "exactly one") != NULL, "%s", err);
    m.type = (enum proto_type)99;
    CHECK(proto_encode(&m, &buf, &len, err) == ERR_PROTOCOL);
    /* a dispatch must carry a resolved seed */
    proto_sample(PROTO_DISPATCH, &m);
    m.u.dispatch.sampling.seed = PROTO_SEED_RANDOM;
    CHECK(proto_encode(&m, &buf, &len, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "opts.seed is missing") != NULL, "%s", err);
}

/* A message {"v": v, "t": t} followed by nothing else. */
static struct bytes
envelope(const struct bytes *v, const char *t)
{
    struct bytes b = {0};

    b_byte(&b, 0x80 | (t != NULL ? 2 : 1));
    mp_str(&b, "v");
    b_put(&b, v->p, v->n);
    if (t != NULL) {
        mp_str(&b, "t");
        mp_str(&b, t);
    }
    return b;
}

static void
test_envelope_errors(void)
{
    struct bytes v = {0}, b;
    char got[ERR_MSG_MAX + 64];

    mp_uint(&v, 2);
    b = envelope(&v, "status");
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "unsupported protocol version 2", got, sizeof(got)), "%s",
           got);
    free(b.p);
    free(v.p);
    v = (struct bytes){0};
    mp_str(&v, "1");
    b = envelope(&v, "status");
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "v must be an integer, got a string", got, sizeof(got)),
           "%s", got);
    free(b.p);
    free(v.p);
    v = (struct bytes){0};
    mp_uint(&v, 1);
    b = envelope(&v, "launch_missiles\x7f");
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "unknown message type \"launch_missiles?\"", got,
                       sizeof(got)),
           "%s", got);
    free(b.p);
    b = envelope(&v, NULL);
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "t (the message type) is missing", got, sizeof(got)), "%s",
           got);
    free(b.p);
    b = envelope(&v, "status");
    struct proto_msg m;
    char err[ERR_MSG_MAX];
    CHECK(decode(&b, &m, err) == ERR_OK && m.type == PROTO_STATUS);
    proto_msg_free(&m);
    free(b.p);
    free(v.p);

    /* not a map; an empty buffer; two messages in one */
    b = (struct bytes){0};
    mp_array(&b, 0);
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "a message must be a map, got an array", got, sizeof(got)),
           "%s", got);
    CHECK(proto_decode(b.p, 0, PROTO_LINK_ANY, &m, err) == ERR_PROTOCOL);
    free(b.p);
    b = sample_bytes(PROTO_STATUS);
    size_t n = b.n;
    b_put(&b, b.p, n);
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "trailing bytes", got, sizeof(got)), "%s", got);
    free(b.p);
    b = (struct bytes){0};
    b_byte(&b, 0xc1);
    CHECKF(expect_fail(&b, ERR_PROTOCOL, "invalid msgpack byte 0xc1", got, sizeof(got)), "%s", got);
    free(b.p);
}

static void
test_unknown_fields_ignored(void)
{
    struct bytes b = sample_bytes(PROTO_POLL), extra = {0};
    struct proto_msg m;
    char err[ERR_MSG_MAX];

    /* the sample is a fixmap: one more entry of any shape, and a non-string key */
    CHECK((b.p[0] & 0xf0) == 0x80 && (b.p[0] & 0x0f) < 14);
    b.p[0] += 2;
    mp_str(&extra, "future_field");
    mp_map(&extra, 1);
    mp_str(&extra, "nested");
    mp_array(&extra, 2);
    mp_f64(&extra, 1.5);
    b_byte(&extra, 0xc0);
    mp_uint(&extra, 77);
    mp_str(&extra, "non-string key");
    b_put(&b, extra.p, extra.n);
    CHECKF(decode(&b, &m, err) == ERR_OK, "%s", err);
    CHECK(m.u.poll.from == 41 && m.u.poll.wait_ms == 2500);
    proto_msg_free(&m);
    free(extra.p);
    free(b.p);
}

static void
test_duplicate_field(void)
{
    struct bytes b = sample_bytes(PROTO_POLL);
    char got[ERR_MSG_MAX + 64];

    b.p[0] += 1;
    mp_str(&b, "wait_ms");
    mp_uint(&b, 5);
    CHECKF(expect_fail(&b, ERR_BAD_REQUEST, "wait_ms is given twice", got, sizeof(got)), "%s", got);
    free(b.p);
}

static void
test_prompt_xor_messages(void)
{
    struct bytes b = sample_bytes(PROTO_SUBMIT);
    char got[ERR_MSG_MAX + 64];

    CHECK(rename_key(&b, "prompt"));
    CHECKF(expect_fail(&b, ERR_BAD_REQUEST, "prompt, messages: a submit needs exactly one", got,
                       sizeof(got)),
           "%s", got);
    free(b.p);
    b = sample_bytes(PROTO_SUBMIT);
    b.p[0] += 1;
    mp_str(&b, "messages");
    mp_array(&b, 1);
    mp_map(&b, 2);
    mp_str(&b, "role");
    mp_str(&b, "user");
    mp_str(&b, "content");
    mp_str(&b, "hi");
    CHECKF(expect_fail(&b, ERR_BAD_REQUEST, "exactly one", got, sizeof(got)), "%s", got);
    free(b.p);
}

static void
test_frames_seq_consecutive(void)
{
    struct bytes b = sample_bytes(PROTO_FRAMES);
    long k;
    char got[ERR_MSG_MAX + 64];

    /* the second "seq" key: skip the first by renaming it, then restore it */
    k = find_key(&b, "seq");
    CHECK(k >= 0);
    b.p[k + 1] = 'X';
    struct bytes v = {0};
    mp_uint(&v, 50);
    CHECK(replace_value(&b, "seq", &v));
    b.p[k + 1] = 's';
    CHECKF(expect_fail(&b, ERR_BAD_REQUEST, "frames[1].seq must be 42, got 50", got, sizeof(got)),
           "%s", got);
    free(v.p);
    free(b.p);
}

/* ---- hostile bytes ---- */

static void
test_truncated_every_length(void)
{
    for (int t = 1; t < PROTO__TYPE_COUNT; t++) {
        struct bytes b = sample_bytes((enum proto_type)t);

        for (size_t n = 0; n < b.n; n++) {
            struct proto_msg m;
            char err[ERR_MSG_MAX];
            /* a copy of exactly n bytes, so that ASan sees any read past the end */
            unsigned char *cut = malloc(n > 0 ? n : 1);

            memcpy(cut, b.p, n);
            int rc = proto_decode(cut, n, PROTO_LINK_ANY, &m, err);
            free(cut);
            CHECKF(rc == ERR_PROTOCOL, "%s cut at %zu of %zu: rc %d %s", proto_type_name(t), n, b.n,
                   rc, err);
            CHECK(m.arena == NULL);
        }
        free(b.p);
    }
}

static void
test_bit_flips(void)
{
    unsigned long accepted = 0, refused = 0;

    for (int t = 1; t < PROTO__TYPE_COUNT; t++) {
        struct bytes b = sample_bytes((enum proto_type)t);
        unsigned char *copy = malloc(b.n);

        for (size_t i = 0; i < b.n; i++) {
            for (int bit = 0; bit < 8; bit++) {
                struct proto_msg m;
                char err[ERR_MSG_MAX];

                memcpy(copy, b.p, b.n);
                copy[i] ^= (unsigned char)(1u << bit);
                int rc = proto_decode(copy, b.n, PROTO_LINK_ANY, &m, err);
                if (rc == ERR_OK) {
                    accepted++;
                    proto_msg_free(&m);
                } else {
                    refused++;
                    CHECKF(rc == ERR_PROTOCOL || rc == ERR_BAD_REQUEST, "rc %d: %s", rc, err);
                    CHECK(err[0] != '\0');
                }
            }
        }
        free(copy);
        free(b.p);
    }
    printf("  bit flips: %lu accepted, %lu refused\n", accepted, refused);
    CHECK(refused > 0 && accepted > 0);
}

static void
test_random_bytes(void)
{
    uint64_t x = 0x9e3779b97f4a7c15ull;
    unsigned char buf[512];

    for (int i = 0; i < 20000; i++) {
        struct proto_msg m;
        char err[ERR_MSG_MAX];
        size_t n;

        for (size_t j = 0; j < sizeof(buf); j++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            buf[j] = (unsigned char)x;
        }
        n = (size_t)(x % sizeof(buf));
        if (i % 2 == 0)
            buf[0] = 0x80 | (buf[0] & 0x0f); /* a map more often than not */
        if (proto_decode(buf, n, PROTO_LINK_ANY, &m, err) == ERR_OK)
            proto_msg_free(&m);
    }
}

static void
test_huge_declared_lengths(void)
{
    static const unsigned char cases[][16] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff},                  /* array32 of 4G */
        {0xdf, 0xff, 0xff, 0xff, 0xff},                  /* map32 of 4G */
        {0xdb, 0xff, 0xff, 0xff, 0xff, 'a'},             /* str32 of 4G */
        {0xc6, 0x7f, 0xff, 0xff, 0xff},                  /* bin32 */
        {0xc9, 0xff, 0xff, 0xff, 0xff, 1},               /* ext32 */
        {0x81, 0xa1, 'x', 0xdd, 0x10, 0, 0, 0, 1, 2, 3}, /* nested array of 256M */
        {0xde, 0xff, 0xff, 0xa1, 'v', 1},                /* map16 of 65535 with one entry */
        {0x81, 0xa1, 'v', 0xdc, 0xff, 0xff},             /* array16 with no elements */
    };
    static const size_t lens[] = {5, 5, 6, 5, 6, 11, 6, 6};

    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        struct proto_msg m;
        char err[ERR_MSG_MAX];

        CHECKF(proto_decode(cases[i], lens[i], PROTO_LINK_ANY, &m, err) == ERR_PROTOCOL, "case %zu",
               i);
        CHECKF(strstr(err, "truncated") != NULL || strstr(err, "declares") != NULL, "case %zu: %s",
               i, err);
    }
    /* a message over the size limit is refused before it is read */
    struct proto_msg m;
    char err[ERR_MSG_MAX];
    CHECK(proto_decode(cases[0], PROTO_MAX_MSG_BYTES + 1, PROTO_LINK_ANY, &m, err) == ERR_PROTOCOL);
    CHECKF(strstr(err, "exceeds the limit") != NULL, "%s", err);
}

static void
test_deep_nesting(void)
{
    struct bytes b = {0};
    struct proto_msg m;
    char err[ERR_MSG_MAX];

    b_byte(&b, 0x83);
    mp_str(&b, "v");
    mp_uint(&b, 1);
    mp_str(&b, "t");
    mp_str(&b, "status");
    mp_str(&b, "deep");
    for (int i = 0; i < 10000; i++)
        b_byte(&b, 0x91);
    b_byte(&b, 0xc0);
    CHECK(decode(&b, &m, err) == ERR_PROTOCOL);
    CHECKF(strstr(err, "nested deeper than 16") != NULL, "%s", err);
    free(b.p);
}

static void
test_names(void)
{
    CHECK(strcmp(proto_type_name(PROTO_SUBMIT), "submit") == 0);
    CHECK(strcmp(proto_type_name(PROTO__TYPE_COUNT), "?") == 0);
    CHECK(strcmp(proto_type_name((enum proto_type)0), "?") == 0);
    CHECK(strcmp(proto_reason_name(PROTO_REASON_CANCELLED), "cancelled") == 0);
    CHECK(strcmp(proto_worker_state_name(PROTO_WSTATE_FATAL), "fatal") == 0);
    CHECK(strcmp(proto_frame_kind_name((enum proto_frame_kind)9), "?") == 0);
    CHECK(strcmp(proto_priority_name(PROTO_PRIO_BATCH), "batch") == 0);
}

/* docs/protocol.md's table of error codes names every code of common/err.h with its number. */
static void
test_doc_error_table(void)
{
    FILE *f = fopen("docs/protocol.md", "r");
    char line[512];
    bool seen[ERR__COUNT] = {false};

    CHECK(f != NULL);
    while (fgets(line, sizeof(line), f) != NULL) {
        int code;
        char name[64];

        if (sscanf(line, "| %d | `%63[a-z_]` |", &code, name) != 2)
            continue;
        CHECKF(code > 0 && code < ERR__COUNT, "docs name code %d, not in common/err.h", code);
        CHECKF(strcmp(name, err_str(code)) == 0, "docs call code %d %s, err.h %s", code, name,
               err_str(code));
        seen[code] = true;
    }
    fclose(f);
    for (int code = 1; code < ERR__COUNT; code++)
        CHECKF(seen[code], "docs/protocol.md lacks error code %d (%s)", code, err_str(code));
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_roundtrip_every_type),
        TEST(test_roundtrip_fields),
        TEST(test_submit_defaults),
        TEST(test_links),
        TEST(test_each_missing_field),
        TEST(test_each_wrong_type),
        TEST(test_out_of_range_values),
        TEST(test_encode_refuses_invalid),
        TEST(test_envelope_errors),
        TEST(test_unknown_fields_ignored),
        TEST(test_duplicate_field),
        TEST(test_prompt_xor_messages),
        TEST(test_frames_seq_consecutive),
        TEST(test_truncated_every_length),
        TEST(test_bit_flips),
        TEST(test_random_bytes),
        TEST(test_huge_declared_lengths),
        TEST(test_deep_nesting),
        TEST(test_names),
        TEST(test_doc_error_table),
        {0},
    };
    return harness_run(tests, argc, argv);
}
