/*
 * proto.c: the names on the wire, the request defaults, and proto_encode(), which writes a
 * message as one msgpack map with msgpack-c's packer and then checks it with proto_decode(), so
 * that the two sides cannot disagree about what is valid. The decoder is in decode.c.
 */
#include "proto/proto.h"

#include "common/err.h"
#include "workerd/engine/sampler.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[PROTO__TYPE_COUNT] = {
    [PROTO_SUBMIT] = "submit",
    [PROTO_POLL] = "poll",
    [PROTO_CANCEL] = "cancel",
    [PROTO_STATUS] = "status",
    [PROTO_WORKERS] = "workers",
    [PROTO_HEALTH] = "health",
    [PROTO_SUBMITTED] = "submitted",
    [PROTO_FRAMES] = "frames",
    [PROTO_CANCEL_OK] = "cancel_ok",
    [PROTO_STATUS_INFO] = "status_info",
    [PROTO_WORKERS_INFO] = "workers_info",
    [PROTO_HEALTH_INFO] = "health_info",
    [PROTO_BUSY] = "busy",
    [PROTO_ERROR] = "error",
    [PROTO_PROBE] = "probe",
    [PROTO_DISPATCH] = "dispatch",
    [PROTO_READY] = "ready",
    [PROTO_HEARTBEAT] = "heartbeat",
    [PROTO_TOKENS] = "tokens",
    [PROTO_DONE] = "done",
};

static const char *const priority_names[] = {"interactive", "batch"};
static const char *const reason_names[] = {"eos", "length", "stop", "cancelled", "error"};
static const char *const kind_names[] = {"queued", "started", "tokens", "done", "error"};
static const char *const wstate_names[] = {"starting", "ready",    "busy",   "backoff",
                                           "fatal",    "stopping", "stopped"};

#define NAME_OF(table, i)                                                                          \
    ((unsigned)(i) < sizeof(table) / sizeof(table[0]) && table[i] != NULL ? table[i] : "?")

const char *
proto_type_name(enum proto_type t)
{
    return NAME_OF(type_names, t);
}

const char *
proto_priority_name(enum proto_priority p)
{
    return NAME_OF(priority_names, p);
}

const char *
proto_reason_name(enum proto_reason r)
{
    return NAME_OF(reason_names, r);
}

const char *
proto_frame_kind_name(enum proto_frame_kind k)
{
    return NAME_OF(kind_names, k);
}

const char *
proto_worker_state_name(enum proto_worker_state s)
{
    return NAME_OF(wstate_names, s);
}

/* The engine's defaults (llama.cpp's), one source for both. */
void
proto_sampling_default(struct proto_sampling *s)
{
    struct sampler_options o;

    sampler_options_default(&o);
    *s = (struct proto_sampling){.temperature = o.temp,
                                 .top_k = o.top_k,
                                 .top_p = o.top_p,
                                 .min_p = o.min_p,
                                 .repeat_penalty = o.repeat_penalty,
                                 .repeat_last_n = o.repeat_last_n,
                                 .seed = PROTO_SEED_RANDOM};
}

void
proto_submit_init(struct proto_msg *m)
{
    memset(m, 0, sizeof(*m));
    m->type = PROTO_SUBMIT;
    proto_sampling_default(&m->u.submit.sampling);
    m->u.submit.max_tokens = 128;
    m->u.submit.priority = PROTO_PRIO_INTERACTIVE;
}

/* ---- encoding ---- */

/* The packer writes into sb; the first failed write (out of memory) is remembered. */
struct enc {
    msgpack_sbuffer sb;
    msgpack_packer pk;
    bool failed;
};

static int
enc_write(void *data, const char *buf, size_t len)
{
    struct enc *e = data;

    if (!e->failed && msgpack_sbuffer_write(&e->sb, buf, len) != 0)
        e->failed = true;
    return e->failed ? -1 : 0;
}

static void
put_bytes(struct enc *e, const char *s, size_t n)
{
    msgpack_pack_str(&e->pk, n);
    msgpack_pack_str_body(&e->pk, s != NULL ? s : "", n);
}

static void
put_str(struct enc *e, const char *s)
{
    put_bytes(e, s, s != NULL ? strlen(s) : 0);
}

/* Each put_k* writes a key and its value. */
static void
put_kstr(struct enc *e, const char *k, const char *v)
{
    put_str(e, k);
    put_str(e, v);
}

static void
put_ku(struct enc *e, const char *k, uint64_t v)
{
    put_str(e, k);
    msgpack_pack_uint64(&e->pk, v);
}

static void
put_kf(struct enc *e, const char *k, double v)
{
    put_str(e, k);
    msgpack_pack_double(&e->pk, v);
}

/* Signed values stay signed, so that a negative one reads back as out of range. */
static void
put_ki(struct enc *e, const char *k, int64_t v)
{
    put_str(e, k);
    msgpack_pack_int64(&e->pk, v);
}

static void
put_kids(struct enc *e, const char *k, const int32_t *ids, uint32_t n)
{
    put_str(e, k);
    msgpack_pack_array(&e->pk, n);
    for (uint32_t i = 0; i < n; i++)
        msgpack_pack_int64(&e->pk, ids[i]);
}

static void
put_kstrs(struct enc *e, const char *k, char *const *v, uint32_t n)
{
    put_str(e, k);
    msgpack_pack_array(&e->pk, n);
    for (uint32_t i = 0; i < n; i++)
        put_str(e, v[i]);
}

static void
put_sampling(struct enc *e, const struct proto_sampling *s)
{
    bool seed = s->seed != PROTO_SEED_RANDOM;

    put_str(e, "opts");
    msgpack_pack_map(&e->pk, 6 + seed);
    put_kf(e, "temperature", s->temperature);
    put_ki(e, "top_k", s->top_k);
    put_kf(e, "top_p", s->top_p);
    put_kf(e, "min_p", s->min_p);
    put_kf(e, "repeat_penalty", s->repeat_penalty);
    put_ki(e, "repeat_last_n", s->repeat_last_n);
    if (seed)
        put_ku(e, "seed", s->seed);
}

static void
put_stats(struct enc *e, const struct proto_stats *st)
{
    put_str(e, "stats");
    msgpack_pack_map(&e->pk, 5);
    put_ku(e, "prompt_tokens", st->prompt_tokens);
    put_ku(e, "gen_tokens", st->gen_tokens);
    put_kf(e, "queue_ms", st->queue_ms);
    put_kf(e, "prefill_ms", st->prefill_ms);
    put_kf(e, "decode_ms", st->decode_ms);
}

/* Number of map entries of m's body (beside v, t and key). */
static uint32_t
body_fields(const struct proto_msg *m)
{
    switch (m->type) {
    case PROTO_SUBMIT:
        return 4 + (m->u.submit.prompt != NULL || m->u.submit.messages != NULL) +
               (m->u.submit.client_id != NULL);
    case PROTO_POLL:
    case PROTO_HEALTH_INFO:
    case PROTO_ERROR:
        return 3 - (m->type == PROTO_ERROR && m->u.error.id == NULL);
    case PROTO_CANCEL:
    case PROTO_CANCEL_OK:
    case PROTO_PROBE:
    case PROTO_WORKERS_INFO:
        return 1;
    case PROTO_SUBMITTED:
    case PROTO_BUSY:
    case PROTO_FRAMES:
    case PROTO_HEARTBEAT:
        return 2;
    case PROTO_STATUS_INFO:
        return 10;
    case PROTO_DISPATCH:
        return 6;
    case PROTO_READY:
        return 5;
    case PROTO_TOKENS:
        return 4;
    case PROTO_DONE:
        return 3;
    default: /* status, workers, health */
        return 0;
    }
}

static void
put_submit(struct enc *e, const struct proto_submit *s)
{
    if (s->prompt != NULL)
        put_kstr(e, "prompt", s->prompt);
    else if (s->messages != NULL) {
        put_str(e, "messages");
        msgpack_pack_array(&e->pk, s->n_messages);
        for (uint32_t i = 0; i < s->n_messages; i++) {
            msgpack_pack_map(&e->pk, 2);
            put_kstr(e, "role", s->messages[i].role);
            put_kstr(e, "content", s->messages[i].content);
        }
    }
    put_sampling(e, &s->sampling);
    put_ku(e, "max_tokens", s->max_tokens);
    put_kstrs(e, "stop", s->stop, s->n_stop);
    put_kstr(e, "priority", proto_priority_name(s->priority));
    if (s->client_id != NULL)
        put_kstr(e, "client_id", s->client_id);
}

static void
put_frame(struct enc *e, const struct proto_frame *f)
{
    uint32_t n = f->kind == PROTO_FRAME_QUEUED ? 1 : f->kind == PROTO_FRAME_STARTED ? 0 : 2;

    msgpack_pack_map(&e->pk, 2 + n);
    put_ku(e, "seq", f->seq);
    put_kstr(e, "k", proto_frame_kind_name(f->kind));
    switch (f->kind) {
    case PROTO_FRAME_QUEUED:
        put_ku(e, "position", f->position);
        break;
    case PROTO_FRAME_STARTED:
        break;
    case PROTO_FRAME_TOKENS:
        put_kids(e, "ids", f->ids, f->n_ids);
        put_str(e, "text");
        put_bytes(e, f->text, f->text_len);
        break;
    case PROTO_FRAME_DONE:
        put_kstr(e, "reason", proto_reason_name(f->reason));
        put_stats(e, &f->stats);
        break;
    case PROTO_FRAME_ERROR:
        put_ki(e, "code", f->code);
        put_kstr(e, "msg", f->msg);
        break;
    }
}

static void
put_status(struct enc *e, const struct proto_status_info *s)
{
    put_ku(e, "queued_interactive", s->queued_interactive);
    put_ku(e, "queued_batch", s->queued_batch);
    put_ku(e, "queue_max", s->queue_max);
    put_ku(e, "running", s->running);
    put_ku(e, "workers", s->workers);
    put_ku(e, "workers_ready", s->workers_ready);
    put_ku(e, "completed", s->completed);
    put_ku(e, "failed", s->failed);
    put_ku(e, "uptime_ms", s->uptime_ms);
    put_str(e, "tenants");
    msgpack_pack_array(&e->pk, s->n_tenants);
    for (uint32_t i = 0; i < s->n_tenants; i++) {
        msgpack_pack_map(&e->pk, 4);
        put_kstr(e, "name", s->tenants[i].name);
        put_ku(e, "queued", s->tenants[i].queued);
        put_ku(e, "running", s->tenants[i].running);
        put_ku(e, "gen_tokens", s->tenants[i].gen_tokens);
    }
}

static void
put_workers(struct enc *e, const struct proto_workers_info *w)
{
    put_str(e, "workers");
    msgpack_pack_array(&e->pk, w->n_workers);
    for (uint32_t i = 0; i < w->n_workers; i++) {
        const struct proto_worker_info *wi = &w->workers[i];

        msgpack_pack_map(&e->pk, 8);
        put_ku(e, "slot", wi->slot);
        put_ki(e, "pid", wi->pid);
        put_kstr(e, "state", proto_worker_state_name(wi->state));
        put_ku(e, "restarts", wi->restarts);
        put_kstrs(e, "requests", wi->requests, wi->n_requests);
        put_kstr(e, "detail", wi->detail);
        put_ku(e, "in_flight", wi->in_flight);
        put_ku(e, "slots", wi->slots);
    }
}

static void
put_dispatch(struct enc *e, const struct proto_dispatch *x)
{
    put_kstr(e, "id", x->id);
    put_kids(e, "prompt_ids", x->prompt_ids, x->n_prompt);
    put_kids(e, "replay_ids", x->replay_ids, x->n_replay);
    put_sampling(e, &x->sampling);
    put_ku(e, "max_tokens", x->max_tokens);
    put_kstrs(e, "stop", x->stop, x->n_stop);
}

/* Writes the body_fields(m) entries of m's body. */
static void
put_body(struct enc *e, const struct proto_msg *m)
{
    switch (m->type) {
    case PROTO_SUBMIT:
        put_submit(e, &m->u.submit);
        break;
    case PROTO_POLL:
        put_kstr(e, "id", m->u.poll.id);
        put_ku(e, "from", m->u.poll.from);
        put_ku(e, "wait_ms", m->u.poll.wait_ms);
        break;
    case PROTO_CANCEL:
    case PROTO_CANCEL_OK:
        put_kstr(e, "id", m->u.ref.id);
        break;
    case PROTO_SUBMITTED:
        put_kstr(e, "id", m->u.submitted.id);
        put_ku(e, "position", m->u.submitted.position);
        break;
    case PROTO_FRAMES:
        put_kstr(e, "id", m->u.frames.id);
        put_str(e, "frames");
        msgpack_pack_array(&e->pk, m->u.frames.n_frames);
        for (uint32_t i = 0; i < m->u.frames.n_frames; i++)
            put_frame(e, &m->u.frames.frames[i]);
        break;
    case PROTO_STATUS_INFO:
        put_status(e, &m->u.status);
        break;
    case PROTO_WORKERS_INFO:
        put_workers(e, &m->u.workers);
        break;
    case PROTO_HEALTH_INFO:
        put_str(e, "ready");
        if (m->u.health.ready)
            msgpack_pack_true(&e->pk);
        else
            msgpack_pack_false(&e->pk);
        put_ku(e, "workers_ready", m->u.health.workers_ready);
        put_kstr(e, "detail", m->u.health.detail);
        break;
    case PROTO_BUSY:
        put_ku(e, "retry_after_ms", m->u.busy.retry_after_ms);
        put_kstr(e, "msg", m->u.busy.msg);
        break;
    case PROTO_ERROR:
        put_ki(e, "code", m->u.error.code);
        put_kstr(e, "msg", m->u.error.msg);
        if (m->u.error.id != NULL)
            put_kstr(e, "id", m->u.error.id);
        break;
    case PROTO_PROBE:
        put_ku(e, "nonce", m->u.probe.nonce);
        break;
    case PROTO_DISPATCH:
        put_dispatch(e, &m->u.dispatch);
        break;
    case PROTO_READY:
        put_ku(e, "nonce", m->u.ready.nonce);
        put_ki(e, "pid", m->u.ready.pid);
        put_ku(e, "n_ctx", m->u.ready.n_ctx);
        put_ku(e, "n_vocab", m->u.ready.n_vocab);
        put_ku(e, "max_batch", m->u.ready.max_batch);
        break;
    case PROTO_HEARTBEAT:
        put_ku(e, "active", m->u.heartbeat.active);
        put_ku(e, "tokens", m->u.heartbeat.tokens);
        break;
    case PROTO_TOKENS:
        put_kstr(e, "id", m->u.tokens.id);
        put_ku(e, "index", m->u.tokens.index);
        put_kids(e, "ids", m->u.tokens.ids, m->u.tokens.n_ids);
        put_str(e, "text");
        put_bytes(e, m->u.tokens.text, m->u.tokens.text_len);
        break;
    case PROTO_DONE:
        put_kstr(e, "id", m->u.done.id);
        put_kstr(e, "reason", proto_reason_name(m->u.done.reason));
        put_stats(e, &m->u.done.stats);
        break;
    default: /* status, workers, health: no fields */
        break;
    }
}

int
proto_encode(const struct proto_msg *m, void **out, size_t *len, char *err)
{
    struct enc e;
    struct proto_msg check;
    int rc;

    *out = NULL;
    *len = 0;
    if (m->type < 1 || m->type >= PROTO__TYPE_COUNT)
        return err_set(err, ERR_PROTOCOL, "t: no message type %d", (int)m->type);
    e.failed = false;
    msgpack_sbuffer_init(&e.sb);
    msgpack_packer_init(&e.pk, &e, enc_write);
    msgpack_pack_map(&e.pk, 2 + (m->key != NULL) + body_fields(m));
    put_ku(&e, "v", PROTO_VERSION);
    put_kstr(&e, "t", proto_type_name(m->type));
    if (m->key != NULL)
        put_kstr(&e, "key", m->key);
    put_body(&e, m);
    if (e.failed) {
        msgpack_sbuffer_destroy(&e.sb);
        return err_set(err, ERR_NOMEM, "out of memory encoding a %s message",
                       proto_type_name(m->type));
    }
    rc = proto_decode(e.sb.data, e.sb.size, PROTO_LINK_ANY, &check, err);
    if (rc != ERR_OK) {
        msgpack_sbuffer_destroy(&e.sb);
        return rc;
    }
    proto_msg_free(&check);
    *len = e.sb.size;
    *out = msgpack_sbuffer_release(&e.sb);
    return ERR_OK;
}
