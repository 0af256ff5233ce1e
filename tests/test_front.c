/*
 * test_front.c: orchd's front over real NNG sockets (ipc:// in a temporary directory and tcp://
 * on loopback) with the real scheduler and the real tokenizer of stories260K: submit, poll (at
 * once and parked), cancel, status, workers, health, busy, and malformed messages (random bytes,
 * wrong types, unknown version, a worker-link type) answered with errors while the front keeps
 * serving. Worker events are fed to the scheduler directly; no worker process runs here.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "orchd/front.h"
#include "proto/sock.h"
#include "tests/harness.h"
#include "tests/wire.h"
#include "workerd/engine/chat.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <nng/supplemental/util/platform.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_dispatched;

static int
ops_dispatch(void *ud, int slot, const struct proto_dispatch *d, char *err)
{
    (void)ud, (void)slot, (void)d, (void)err;
    n_dispatched++;
    return 0;
}

static void
ops_cancel(void *ud, int slot, const char *id)
{
    (void)ud, (void)slot, (void)id;
}

static void
ops_kill(void *ud, int slot, const char *why)
{
    (void)ud, (void)slot, (void)why;
}

static const struct sched_ops ops = {NULL, ops_dispatch, ops_cancel, ops_kill};

/* A front on url with a 2-slot scheduler, and a req socket dialled to it. */
struct rig {
    struct gguf *g;
    struct tokenizer *tok;
    struct chat_format chat;
    struct sched *s;
    struct front *f;
    nng_socket req;
};

static bool
rig_open(struct rig *r, const char *url, uint32_t queue_max)
{
    char path[512], err[ERR_MSG_MAX];
    struct sched_config cfg;
    struct front_config fc = {0};
    const char *urls[] = {url};

    memset(r, 0, sizeof(*r));
    if (!harness_shared(path, sizeof(path), "models/stories260K.gguf"))
        return false;
    if (gguf_open(&r->g, path, err) != ERR_OK || tokenizer_load(&r->tok, r->g, err) != ERR_OK ||
        chat_format_from_model(&r->chat, r->g, r->tok, err) != ERR_OK) {
        printf("  %s: %s\n", path, err);
        return false;
    }
    sched_config_default(&cfg);
    cfg.n_slots = 2;
    cfg.queue_max = queue_max;
    r->s = sched_new(&cfg, &ops, clock_now_ms());
    fc.urls = urls;
    fc.n_urls = 1;
    fc.contexts = 4;
    fc.sched = r->s;
    fc.tok = r->tok;
    fc.chat = &r->chat;
    if (front_open(&r->f, &fc, err) != ERR_OK) {
        printf("  front_open: %s\n", err);
        return false;
    }
    if (nng_req0_open(&r->req) != 0 || nng_dial(r->req, url, NULL, 0) != 0)
        return false;
    nng_socket_set_ms(r->req, NNG_OPT_RECVTIMEO, 3000);
    return true;
}

static void
rig_close(struct rig *r)
{
    sock_close(r->req);
    front_close(r->f);
    sched_free(r->s);
    tokenizer_free(r->tok);
    gguf_close(r->g);
}

/* Sends raw bytes and decodes the reply into *rep; returns 0 or an NNG error. */
static int
call_raw(struct rig *r, const void *buf, size_t len, struct proto_msg *rep)
{
    char err[ERR_MSG_MAX];
    void *in;
    size_t n;
    int rv;

    memset(rep, 0, sizeof(*rep));
    if ((rv = nng_send(r->req, (void *)buf, len, 0)) != 0)
        return rv;
    if ((rv = nng_recv(r->req, &in, &n, NNG_FLAG_ALLOC)) != 0)
        return rv;
    rv = proto_decode(in, n, PROTO_LINK_CLIENT_REP, rep, err);
    nng_free(in, n);
    if (rv != ERR_OK)
        printf("  reply does not decode: %s\n", err);
    return rv == ERR_OK ? 0 : NNG_EINVAL;
}

static int
call(struct rig *r, const struct proto_msg *m, struct proto_msg *rep)
{
    void *buf;
    size_t len;
    int rv;

    if (!wire_encode(m, &buf, &len))
        return NNG_EINVAL;
    rv = call_raw(r, buf, len, rep);
    free(buf);
    return rv;
}

static int
submit(struct rig *r, const char *prompt, const char *client_id, struct proto_msg *rep)
{
    struct proto_msg m;

    proto_submit_init(&m);
    m.u.submit.prompt = (char *)prompt;
    m.u.submit.client_id = (char *)client_id;
    m.u.submit.max_tokens = 16;
    return call(r, &m, rep);
}

static int
poll_id(struct rig *r, const char *id, uint64_t from, uint32_t wait_ms, struct proto_msg *rep)
{
    struct proto_msg m = {.type = PROTO_POLL};

    m.u.poll.id = (char *)id;
    m.u.poll.from = from;
    m.u.poll.wait_ms = wait_ms;
    return call(r, &m, rep);
}

static int
simple(struct rig *r, enum proto_type t, struct proto_msg *rep)
{
    struct proto_msg m = {.type = t};

    return call(r, &m, rep);
}

static void
test_requests_over_ipc(void)
{
    struct rig r;
    struct proto_msg rep, m = {.type = PROTO_CANCEL};
    struct proto_ready rd = {1, 4242, 512, 512, 1};
    char url[300], id[PROTO_MAX_ID_BYTES + 1];

    snprintf(url, sizeof(url), "ipc://%s/front.sock", harness_tmpdir());
    if (!rig_open(&r, url, 4))
        CHECK(!"rig");
    CHECK(simple(&r, PROTO_HEALTH, &rep) == 0 && rep.type == PROTO_HEALTH_INFO);
    CHECK(!rep.u.health.ready && rep.u.health.workers_ready == 0);
    proto_msg_free(&rep);
    CHECK(submit(&r, "Once upon a time", "c1", &rep) == 0 && rep.type == PROTO_SUBMITTED);
    CHECK(rep.u.submitted.position == 1);
    snprintf(id, sizeof(id), "%s", rep.u.submitted.id);
    proto_msg_free(&rep);
    /* the same client_id again: the same request */
    CHECK(submit(&r, "Once upon a time", "c1", &rep) == 0 && rep.type == PROTO_SUBMITTED);
    CHECK(strcmp(rep.u.submitted.id, id) == 0);
    proto_msg_free(&rep);
    CHECK(poll_id(&r, id, 0, 0, &rep) == 0 && rep.type == PROTO_FRAMES);
    CHECK(rep.u.frames.n_frames == 1 && rep.u.frames.frames[0].kind == PROTO_FRAME_QUEUED);
    proto_msg_free(&rep);
    CHECK(simple(&r, PROTO_STATUS, &rep) == 0 && rep.type == PROTO_STATUS_INFO);
    CHECK(rep.u.status.queued_interactive == 1 && rep.u.status.workers == 2);
    proto_msg_free(&rep);
    /* a worker becomes ready: dispatch happens; the stream shows it */
    sched_worker_started(r.s, 0, 4242, 0, clock_now_ms());
    sched_worker_ready(r.s, 0, &rd, clock_now_ms());
    CHECK(n_dispatched == 1);
    CHECK(simple(&r, PROTO_WORKERS, &rep) == 0 && rep.type == PROTO_WORKERS_INFO);
    CHECK(rep.u.workers.n_workers == 2 && rep.u.workers.workers[0].state == PROTO_WSTATE_BUSY);
    CHECK(rep.u.workers.workers[0].n_requests == 1);
    CHECK(strcmp(rep.u.workers.workers[0].requests[0], id) == 0);
    CHECK(rep.u.workers.workers[1].state == PROTO_WSTATE_BACKOFF);
    proto_msg_free(&rep);
    CHECK(poll_id(&r, id, 1, 1000, &rep) == 0 && rep.u.frames.n_frames == 1);
    CHECK(rep.u.frames.frames[0].kind == PROTO_FRAME_STARTED);
    proto_msg_free(&rep);
    m.u.ref.id = id;
    CHECK(call(&r, &m, &rep) == 0 && rep.type == PROTO_CANCEL_OK);
    proto_msg_free(&rep);
    CHECK(poll_id(&r, id, 2, 1000, &rep) == 0 && rep.u.frames.n_frames == 1);
    CHECK(rep.u.frames.frames[0].kind == PROTO_FRAME_DONE);
    CHECK(rep.u.frames.frames[0].reason == PROTO_REASON_CANCELLED);
    CHECK(rep.u.frames.frames[0].stats.prompt_tokens == 5); /* BOS + 4 */
    proto_msg_free(&rep);
    CHECK(poll_id(&r, "r404", 0, 0, &rep) == 0 && rep.type == PROTO_ERROR);
    CHECK(rep.u.error.code == ERR_NOT_FOUND && strcmp(rep.u.error.id, "r404") == 0);
    proto_msg_free(&rep);
    rig_close(&r);
}

/* Sends a token from another thread while a poll is parked in the front. */
struct later {
    struct sched *s;
    const char *id;
};

static void
send_token_later(void *arg)
{
    struct later *l = arg;
    struct proto_wtokens t = {(char *)l->id, 0, (int32_t[]){300}, 1, (char *)" cat", 4};

    nng_msleep(150);
    sched_worker_tokens(l->s, 0, &t, clock_now_ms());
}

static void
test_long_poll_over_tcp(void)
{
    struct rig r;
    struct proto_msg rep;
    struct proto_ready rd = {1, 4242, 512, 512, 4};
    struct later l;
    nng_thread *th;
    uint64_t t0;

    char url[64];

    snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", 20000 + (int)(getpid() % 20000));
    if (!rig_open(&r, url, 4))
        CHECK(!"rig");
    sched_worker_started(r.s, 0, 4242, 0, clock_now_ms());
    sched_worker_ready(r.s, 0, &rd, clock_now_ms());
    CHECK(submit(&r, "Hello", NULL, &rep) == 0 && rep.type == PROTO_SUBMITTED);
    CHECK(rep.u.submitted.position == 0);
    l.s = r.s;
    l.id = strdup(rep.u.submitted.id);
    proto_msg_free(&rep);
    CHECK(nng_thread_create(&th, send_token_later, &l) == 0);
    t0 = clock_now_ms();
    CHECK(poll_id(&r, l.id, 2, 5000, &rep) == 0 && rep.type == PROTO_FRAMES);
    CHECKF(clock_now_ms() - t0 >= 100 && clock_now_ms() - t0 < 2000, "%llu ms",
           (unsigned long long)(clock_now_ms() - t0));
    CHECK(rep.u.frames.n_frames == 1 && rep.u.frames.frames[0].kind == PROTO_FRAME_TOKENS);
    CHECK(rep.u.frames.frames[0].ids[0] == 300 && strcmp(rep.u.frames.frames[0].text, " cat") == 0);
    proto_msg_free(&rep);
    nng_thread_destroy(th);
    /* a poll that nothing answers comes back empty after its wait (sched_tick runs the timer) */
    t0 = clock_now_ms();
    {
        struct proto_msg m = {.type = PROTO_POLL};
        void *buf;
        size_t len;
        char err[ERR_MSG_MAX];
        void *in;
        size_t n;

        m.u.poll.id = (char *)l.id;
        m.u.poll.from = 3;
        m.u.poll.wait_ms = 200;
        CHECK(proto_encode(&m, &buf, &len, err) == ERR_OK);
        CHECK(nng_send(r.req, buf, len, 0) == 0);
        free(buf);
        for (int i = 0; i < 30; i++) {
            nng_msleep(20);
            sched_tick(r.s, clock_now_ms());
        }
        CHECK(nng_recv(r.req, &in, &n, NNG_FLAG_ALLOC) == 0);
        CHECK(proto_decode(in, n, PROTO_LINK_CLIENT_REP, &rep, err) == ERR_OK);
        nng_free(in, n);
        CHECK(rep.type == PROTO_FRAMES && rep.u.frames.n_frames == 0);
        proto_msg_free(&rep);
    }
    /* a prompt that needs more ids than bytes + 2 (a space after a bad lead byte costs three) */
    {
        char odd[201];

        for (int i = 0; i < 200; i += 2)
            memcpy(odd + i, "\xc3 ", 2);
        odd[200] = '\0';
        CHECK(submit(&r, odd, NULL, &rep) == 0);
        CHECKF(rep.type == PROTO_SUBMITTED, "%s: %s", proto_type_name(rep.type),
               rep.type == PROTO_ERROR ? rep.u.error.msg : "");
        proto_msg_free(&rep);
    }
    free((void *)l.id);
    rig_close(&r);
}

static void
test_busy_and_bad_messages(void)
{
    struct rig r;
    struct proto_msg rep, m = {.type = PROTO_SUBMIT};
    char url[300];
    /* {"v":2,"t":"health"} */
    static const unsigned char v2[] = {0x82, 0xa1, 'v', 0x02, 0xa1, 't', 0xa6,
                                       'h',  'e',  'a', 'l',  't',  'h'};
    /* {"v":1,"t":"submit","prompt":"hi","max_tokens":"x"} */
    static const unsigned char bad_type[] = {0x84, 0xa1, 'v',  0x01, 0xa1, 't',  0xa6, 's',  'u',
                                             'b',  'm',  'i',  't',  0xa6, 'p',  'r',  'o',  'm',
                                             'p',  't',  0xa2, 'h',  'i',  0xaa, 'm',  'a',  'x',
                                             '_',  't',  'o',  'k',  'e',  'n',  's',  0xa1, 'x'};
    /* {"v":1,"t":"probe","nonce":1}: a worker-link message */
    static const unsigned char probe[] = {0x83, 0xa1, 'v',  0x01, 0xa1, 't', 0xa5, 'p', 'r', 'o',
                                          'b',  'e',  0xa5, 'n',  'o',  'n', 'c',  'e', 0x01};
    static const unsigned char junk[] = {0xc1, 0x00, 0xff, 0x13};
    struct chat_msg msgs[] = {{"system", "Be brief."}, {"user", "hi"}};
    char err[ERR_MSG_MAX], id[PROTO_MAX_ID_BYTES + 1], *text;
    int32_t ids[256];
    size_t len, n;

    snprintf(url, sizeof(url), "ipc://%s/busy.sock", harness_tmpdir());
    if (!rig_open(&r, url, 2))
        CHECK(!"rig");
    CHECK(call_raw(&r, junk, sizeof(junk), &rep) == 0 && rep.type == PROTO_ERROR);
    CHECK(rep.u.error.code == ERR_PROTOCOL);
    proto_msg_free(&rep);
    CHECK(call_raw(&r, v2, sizeof(v2), &rep) == 0 && rep.type == PROTO_ERROR);
    CHECK(rep.u.error.code == ERR_PROTOCOL && strstr(rep.u.error.msg, "v") != NULL);
    proto_msg_free(&rep);
    CHECK(call_raw(&r, bad_type, sizeof(bad_type), &rep) == 0 && rep.type == PROTO_ERROR);
    CHECKF(rep.u.error.code == ERR_BAD_REQUEST && strstr(rep.u.error.msg, "max_tokens") != NULL,
           "%s", rep.u.error.msg);
    proto_msg_free(&rep);
    CHECK(call_raw(&r, probe, sizeof(probe), &rep) == 0 && rep.type == PROTO_ERROR);
    CHECK(rep.u.error.code == ERR_PROTOCOL);
    proto_msg_free(&rep);
    /* a message over the 4 MiB limit never reaches the decoder: no answer, the pipe is dropped;
       the front goes on serving, and every close after it is bounded (proto/sock.h) */
    {
        nng_socket big;
        size_t n = PROTO_MAX_MSG_BYTES + 1024;
        char *huge = calloc(1, n);
        void *in;
        size_t len;

        CHECK(huge != NULL && nng_req0_open(&big) == 0 && nng_dial(big, url, NULL, 0) == 0);
        nng_socket_set_ms(big, NNG_OPT_RECVTIMEO, 300);
        CHECK(nng_send(big, huge, n, 0) == 0);
        CHECK(nng_recv(big, &in, &len, NNG_FLAG_ALLOC) == NNG_ETIMEDOUT);
        sock_close(big);
        free(huge);
        CHECK(call_raw(&r, probe, sizeof(probe), &rep) == 0 && rep.type == PROTO_ERROR);
        CHECK(rep.u.error.code == ERR_PROTOCOL);
        proto_msg_free(&rep);
    }
    /* chat messages are rendered with the model's template (ChatML here: stories260K has none)
       and their markers tokenized as special tokens */
    proto_submit_init(&m);
    m.u.submit.messages = (struct proto_chat_msg[]){{"system", "Be brief."}, {"user", "hi"}};
    m.u.submit.n_messages = 2;
    CHECK(call(&r, &m, &rep) == 0 && rep.type == PROTO_SUBMITTED);
    snprintf(id, sizeof(id), "%s", rep.u.submitted.id);
    proto_msg_free(&rep);
    CHECK(chat_render(&r.chat, msgs, 2, true, &text, &len, err) == ERR_OK);
    CHECK(strstr(text, "<|im_start|>assistant") != NULL);
    CHECK(tokenizer_encode(r.tok, text, len, true, true, ids, 256, &n, err) == ERR_OK);
    free(text);
    CHECK(sched_cancel(r.s, 0, id, clock_now_ms(), err) == ERR_OK);
    CHECK(poll_id(&r, id, 1, 0, &rep) == 0 && rep.u.frames.n_frames == 1);
    CHECKF(rep.u.frames.frames[0].stats.prompt_tokens == n, "%u prompt tokens, want %zu",
           rep.u.frames.frames[0].stats.prompt_tokens, n);
    proto_msg_free(&rep);
    /* the queue holds two; the third is busy at once */
    CHECK(submit(&r, "a", NULL, &rep) == 0 && rep.type == PROTO_SUBMITTED);
    proto_msg_free(&rep);
    CHECK(submit(&r, "b", NULL, &rep) == 0 && rep.type == PROTO_SUBMITTED);
    proto_msg_free(&rep);
    CHECK(submit(&r, "c", NULL, &rep) == 0 && rep.type == PROTO_BUSY);
    CHECK(rep.u.busy.retry_after_ms > 0);
    proto_msg_free(&rep);
    /* and it still serves */
    CHECK(simple(&r, PROTO_STATUS, &rep) == 0 && rep.type == PROTO_STATUS_INFO);
    CHECK(rep.u.status.queued_interactive == 2);
    proto_msg_free(&rep);
    rig_close(&r);
}

static void
test_open_errors(void)
{
    struct front *f;
    struct front_config fc = {0};
    const char *urls[] = {"bogus://x"};
    char err[ERR_MSG_MAX];
    struct sched_config cfg;
    struct sched *s;

    sched_config_default(&cfg);
    s = sched_new(&cfg, &ops, 0);
    fc.urls = urls;
    fc.n_urls = 1;
    fc.contexts = 2;
    fc.sched = s;
    CHECK(front_open(&f, &fc, err) == ERR_IO && f == NULL);
    CHECKF(strstr(err, "bogus://x") != NULL, "%s", err);
    sched_free(s);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_requests_over_ipc),
        TEST(test_long_poll_over_tcp),
        TEST(test_busy_and_bad_messages),
        TEST(test_open_errors),
        {0},
    };

    log_init("test_front", LOG_ERROR);
    sock_exit(harness_run(tests, argc, argv));
}
