/*
 * proto_samples.c: the sample messages of proto_samples.h. Every optional field is set, so that
 * a round trip exercises all of them; values are chosen so that no key name occurs in a value.
 */
#include "tests/proto_samples.h"

#include <string.h>

static int32_t sample_ids[] = {1, 15043, 0, 2147483647, 29871};
static char stop_a[] = "\nUser:";
static char stop_b[] = "###";
static char *sample_stop[] = {stop_a, stop_b};
static char role_sys[] = "system", role_user[] = "user";
static char content_sys[] = "You are terse.", content_user[] = "Say hi \xc3\xa9 \xe2\x82\xac";
static struct proto_chat_msg sample_chat[] = {{role_sys, content_sys}, {role_user, content_user}};
static char req_a[] = "r-00000001", req_b[] = "r-00000002";
static char *worker_reqs[] = {req_a, req_b};
static char text_nul[] = "He\0llo";
static char tenant_a[] = "alice", tenant_b[] = "bob";
static struct proto_tenant_info sample_tenants[] = {{tenant_a, 3, 1, 12345}, {tenant_b, 0, 2, 7}};
static char detail_ok[] = "", detail_fatal[] = "exit 2: bad model: tensor blk.0.attn_q.weight";
static struct proto_worker_info sample_workers[] = {
    {0, 4242, PROTO_WSTATE_BUSY, 3, worker_reqs, 2, detail_ok, 2, 4},
    {1, 0, PROTO_WSTATE_FATAL, 5, NULL, 0, detail_fatal, 0, 0},
};
static char err_msg[] = "max_tokens must be in [1, 8192], got 0";
static struct proto_frame sample_frames[5];

static void
sample_frames_init(void)
{
    struct proto_frame *f = sample_frames;

    memset(sample_frames, 0, sizeof(sample_frames));
    for (int i = 0; i < 5; i++)
        f[i].seq = 41 + (uint64_t)i;
    f[0].kind = PROTO_FRAME_QUEUED;
    f[0].position = 2;
    f[1].kind = PROTO_FRAME_STARTED;
    f[2].kind = PROTO_FRAME_TOKENS;
    f[2].ids = sample_ids;
    f[2].n_ids = 5;
    f[2].text = text_nul;
    f[2].text_len = 6;
    f[3].kind = PROTO_FRAME_DONE;
    f[3].reason = PROTO_REASON_STOP;
    f[3].stats = (struct proto_stats){17, 128, 1.5, 20.25, 812.125};
    f[4].kind = PROTO_FRAME_ERROR;
    f[4].code = 11;
    f[4].msg = err_msg;
}

void
proto_sample(enum proto_type t, struct proto_msg *m)
{
    static char key[] = "tk_0123456789abcdef", id[] = "r-00000042", client_id[] = "cli-7";
    static char prompt[] = "Once upon a time", busy[] = "queue full (64 queued)";
    static char ready_detail[] = "2 of 2 workers ready";

    memset(m, 0, sizeof(*m));
    m->type = t;
    switch (t) {
    case PROTO_SUBMIT:
        proto_submit_init(m);
        m->key = key;
        m->u.submit.prompt = prompt;
        m->u.submit.sampling = (struct proto_sampling){0.5f, 20, 0.9f, 0.1f, 1.1f, 32, 1234};
        m->u.submit.max_tokens = 64;
        m->u.submit.stop = sample_stop;
        m->u.submit.n_stop = 2;
        m->u.submit.priority = PROTO_PRIO_BATCH;
        m->u.submit.client_id = client_id;
        break;
    case PROTO_POLL:
        m->key = key;
        m->u.poll = (struct proto_poll){id, 41, 2500};
        break;
    case PROTO_CANCEL:
    case PROTO_CANCEL_OK:
        m->u.ref.id = id;
        break;
    case PROTO_STATUS:
    case PROTO_WORKERS:
    case PROTO_HEALTH:
        m->key = key;
        break;
    case PROTO_SUBMITTED:
        m->u.submitted = (struct proto_submitted){id, 3};
        break;
    case PROTO_FRAMES:
        sample_frames_init();
        m->u.frames = (struct proto_frames){id, sample_frames, 5};
        break;
    case PROTO_STATUS_INFO:
        m->u.status =
            (struct proto_status_info){4, 1, 64, 2, 2, 2, 100, 3, 123456, sample_tenants, 2};
        break;
    case PROTO_WORKERS_INFO:
        m->u.workers = (struct proto_workers_info){sample_workers, 2};
        break;
    case PROTO_HEALTH_INFO:
        m->u.health = (struct proto_health_info){true, 2, ready_detail};
        break;
    case PROTO_BUSY:
        m->u.busy = (struct proto_busy){250, busy};
        break;
    case PROTO_ERROR:
        m->u.error = (struct proto_error){5, err_msg, id};
        break;
    case PROTO_PROBE:
        m->u.probe.nonce = 0xfeedfacecafebeefull;
        break;
    case PROTO_DISPATCH:
        m->u.dispatch = (struct proto_dispatch){
            id,  sample_ids,  5, sample_ids + 1, 2, {0.7f, 40, 0.95f, 0.05f, 1.0f, 64, 42},
            100, sample_stop, 2};
        break;
    case PROTO_READY:
        m->u.ready = (struct proto_ready){0xfeedfacecafebeefull, 4250, 2048, 32000, 4};
        break;
    case PROTO_HEARTBEAT:
        m->u.heartbeat = (struct proto_heartbeat){2, 99999};
        break;
    case PROTO_TOKENS:
        m->u.tokens = (struct proto_wtokens){id, 7, sample_ids, 3, text_nul, 6};
        break;
    case PROTO_DONE:
        m->u.done = (struct proto_wdone){id, PROTO_REASON_LENGTH, {5, 100, 0, 12.5, 300.75}};
        break;
    default:
        break;
    }
}

void
proto_sample_chat(struct proto_msg *m)
{
    proto_sample(PROTO_SUBMIT, m);
    m->u.submit.prompt = NULL;
    m->u.submit.messages = sample_chat;
    m->u.submit.n_messages = 2;
}
