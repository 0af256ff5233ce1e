/*
 * test_sched.c: orchd's scheduler as pure logic, driven by hand: admission and the bounded queue,
 * priorities, dispatch choice, frames (sequence numbers, coalescing, resume), long polls, text
 * hold-back for stop strings and UTF-8, crash replay, cancel, timeouts and the watchdog, reports.
 * The ops and waiter callbacks record what the scheduler sent; no sockets or processes.
 */
#include "common/err.h"
#include "common/log.h"
#include "orchd/sched.h"
#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 64

/* What went out through sched_ops. */
struct sent {
    char kind; /* 'd' dispatch, 'c' cancel, 'k' kill */
    int slot;
    char id[PROTO_MAX_ID_BYTES + 1];
    uint32_t n_prompt, n_replay;
    int32_t replay[16];
    uint64_t seed;
};

static struct sent sent[MAX_EVENTS];
static int n_sent;
static int fail_dispatch; /* a bit per slot whose dispatches fail */

static int
rec_dispatch(void *ud, int slot, const struct proto_dispatch *d, char *err)
{
    struct sent *e = &sent[n_sent++ % MAX_EVENTS];

    (void)ud;
    if (fail_dispatch & (1 << slot))
        return err_set(err, ERR_IO, "link down");
    memset(e, 0, sizeof(*e));
    e->kind = 'd';
    e->slot = slot;
    snprintf(e->id, sizeof(e->id), "%s", d->id);
    e->n_prompt = d->n_prompt;
    e->n_replay = d->n_replay;
    for (uint32_t i = 0; i < d->n_replay && i < 16; i++)
        e->replay[i] = d->replay_ids[i];
    e->seed = d->sampling.seed;
    return 0;
}

static void
rec_cancel(void *ud, int slot, const char *id)
{
    struct sent *e = &sent[n_sent++ % MAX_EVENTS];

    (void)ud;
    memset(e, 0, sizeof(*e));
    e->kind = 'c';
    e->slot = slot;
    snprintf(e->id, sizeof(e->id), "%s", id);
}

static void
rec_kill(void *ud, int slot, const char *why)
{
    struct sent *e = &sent[n_sent++ % MAX_EVENTS];

    (void)ud;
    memset(e, 0, sizeof(*e));
    e->kind = 'k';
    e->slot = slot;
    snprintf(e->id, sizeof(e->id), "%s", why);
}

static const struct sched_ops ops = {NULL, rec_dispatch, rec_cancel, rec_kill};

/* A waiter that copies what it is woken with. */
struct catcher {
    struct sched_waiter w;
    int wakes;
    uint32_t n;
    struct {
        uint64_t seq;
        enum proto_frame_kind kind;
        uint32_t position, n_ids;
        int32_t ids[32];
        char text[128];
        enum proto_reason reason;
        struct proto_stats stats;
        int32_t code;
    } f[16];
};

static void
catch_wake(struct sched_waiter *w, const struct proto_frames *fr)
{
    struct catcher *c = (struct catcher *)w;

    c->wakes++;
    c->n = fr->n_frames;
    for (uint32_t i = 0; i < fr->n_frames && i < 16; i++) {
        const struct proto_frame *f = &fr->frames[i];

        c->f[i].seq = f->seq;
        c->f[i].kind = f->kind;
        c->f[i].position = f->position;
        c->f[i].n_ids = f->n_ids;
        for (uint32_t j = 0; j < f->n_ids && j < 32; j++)
            c->f[i].ids[j] = f->ids[j];
        snprintf(c->f[i].text, sizeof(c->f[i].text), "%s", f->text ? f->text : "");
        c->f[i].reason = f->reason;
        c->f[i].stats = f->stats;
        c->f[i].code = f->code;
    }
}

static void
catcher_init(struct catcher *c)
{
    memset(c, 0, sizeof(*c));
    c->w.wake = catch_wake;
}

/* Polls id from `from` without waiting; the frames land in *c. */
static int
poll_now(struct sched *s, const char *id, uint64_t from, struct catcher *c, uint64_t now)
{
    char err[ERR_MSG_MAX];

    catcher_init(c);
    return sched_poll(s, 0, id, from, 0, now, &c->w, err);
}

static const int32_t prompt[] = {1, 15043, 3186};

static struct sched *
new_sched(int n_slots, uint32_t queue_max)
{
    struct sched_config cfg;

    sched_config_default(&cfg);
    cfg.n_slots = n_slots;
    cfg.queue_max = queue_max;
    n_sent = 0;
    fail_dispatch = 0;
    return sched_new(&cfg, &ops, 1000);
}

static void
make_ready(struct sched *s, int slot, uint32_t max_batch, uint64_t now)
{
    struct proto_ready rd = {7, 100 + slot, 512, 32000, max_batch};

    sched_worker_started(s, slot, 100 + slot, 0, now);
    sched_worker_ready(s, slot, &rd, now);
}

static int
submit(struct sched *s, enum proto_priority prio, const char *client_id, struct sched_admit *a,
       uint64_t now)
{
    struct sched_submit in = {0};
    char err[ERR_MSG_MAX];

    in.prompt_ids = prompt;
    in.n_prompt = 3;
    proto_sampling_default(&in.sampling);
    in.max_tokens = 8;
    in.priority = prio;
    in.client_id = client_id;
    return sched_submit(s, &in, now, a, err);
}

static void
tokens(struct sched *s, int slot, const char *id, uint32_t index, const int32_t *ids, uint32_t n,
       const char *text, uint64_t now)
{
    struct proto_wtokens t = {(char *)id, index, (int32_t *)ids, n, (char *)text, strlen(text)};

    sched_worker_tokens(s, slot, &t, now);
}

static void
done(struct sched *s, int slot, const char *id, enum proto_reason reason, uint64_t now)
{
    struct proto_wdone d = {(char *)id, reason, {3, 0, 0, 12.5, 40.0}};

    sched_worker_done(s, slot, &d, now);
}

static void
test_submit_dispatch_and_stream(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;
    static const int32_t ids[] = {450};

    CHECK(s != NULL);
    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1010) == ERR_OK);
    CHECK(a.position == 0);
    CHECK(n_sent == 1 && sent[0].kind == 'd' && sent[0].slot == 0 && strcmp(sent[0].id, a.id) == 0);
    CHECK(sent[0].n_prompt == 3 && sent[0].n_replay == 0);
    CHECKF(sent[0].seed != PROTO_SEED_RANDOM, "the seed is resolved before dispatch");
    CHECK(poll_now(s, a.id, 0, &c, 1020) == ERR_OK);
    CHECK(c.wakes == 1 && c.n == 2);
    CHECK(c.f[0].seq == 0 && c.f[0].kind == PROTO_FRAME_QUEUED && c.f[0].position == 0);
    CHECK(c.f[1].seq == 1 && c.f[1].kind == PROTO_FRAME_STARTED);
    tokens(s, 0, a.id, 0, ids, 1, " Hi", 1030);
    done(s, 0, a.id, PROTO_REASON_EOS, 1040);
    CHECK(poll_now(s, a.id, 2, &c, 1050) == ERR_OK);
    CHECK(c.n == 2);
    CHECK(c.f[0].seq == 2 && c.f[0].kind == PROTO_FRAME_TOKENS && c.f[0].n_ids == 1);
    CHECK(c.f[0].ids[0] == 450 && strcmp(c.f[0].text, " Hi") == 0);
    CHECK(c.f[1].kind == PROTO_FRAME_DONE && c.f[1].reason == PROTO_REASON_EOS);
    CHECK(c.f[1].stats.prompt_tokens == 3 && c.f[1].stats.gen_tokens == 1);
    CHECK(c.f[1].stats.queue_ms == 0 && c.f[1].stats.prefill_ms == 12.5);
    /* the client asks past the end: the request is gone */
    CHECK(poll_now(s, a.id, 4, &c, 1060) == ERR_OK && c.n == 0);
    CHECK(poll_now(s, a.id, 4, &c, 1070) == ERR_NOT_FOUND && c.wakes == 0);
    sched_free(s);
}

static void
test_priorities_fifo(void)
{
    struct sched *s = new_sched(1, 8);
    struct sched_admit a, b, c, d;

    CHECK(submit(s, PROTO_PRIO_BATCH, NULL, &a, 1000) == ERR_OK && a.position == 1);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &b, 1001) == ERR_OK && b.position == 1);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &c, 1002) == ERR_OK && c.position == 2);
    CHECK(submit(s, PROTO_PRIO_BATCH, NULL, &d, 1003) == ERR_OK && d.position == 4);
    CHECK(n_sent == 0);
    make_ready(s, 0, 1, 1100);
    CHECK(n_sent == 1 && strcmp(sent[0].id, b.id) == 0);
    done(s, 0, b.id, PROTO_REASON_EOS, 1200);
    CHECK(n_sent == 2 && strcmp(sent[1].id, c.id) == 0);
    done(s, 0, c.id, PROTO_REASON_EOS, 1300);
    CHECK(n_sent == 3 && strcmp(sent[2].id, a.id) == 0);
    done(s, 0, a.id, PROTO_REASON_EOS, 1400);
    CHECK(n_sent == 4 && strcmp(sent[3].id, d.id) == 0);
    sched_free(s);
}

static void
test_dispatch_spreads_over_slots(void)
{
    struct sched *s = new_sched(2, 8);
    struct sched_admit a;

    make_ready(s, 0, 2, 1000);
    make_ready(s, 1, 2, 1000);
    for (int i = 0; i < 5; i++)
        CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000 + i) == ERR_OK);
    CHECK(n_sent == 4); /* two slots, two seats each; the fifth waits */
    CHECK(sent[0].slot == 0 && sent[1].slot == 1 && sent[2].slot == 0 && sent[3].slot == 1);
    CHECK(a.position == 1);
    done(s, 1, sent[1].id, PROTO_REASON_LENGTH, 1100);
    CHECK(n_sent == 5 && sent[4].slot == 1 && strcmp(sent[4].id, a.id) == 0);
    sched_free(s);
}

static void
test_queue_full_is_busy(void)
{
    struct sched *s = new_sched(1, 2);
    struct sched_admit a;
    struct catcher c;

    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    CHECK(submit(s, PROTO_PRIO_BATCH, NULL, &a, 1000) == ERR_OK);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_BUSY);
    CHECK(a.retry_after_ms == 1000 && a.id[0] == '\0');
    /* a resend of an admitted submit is not a new request, even with the queue full */
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, "client-1", &a, 1000) == ERR_BUSY);
    sched_free(s);

    s = new_sched(1, 2);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, "client-1", &a, 1000) == ERR_OK);
    {
        struct sched_admit again;

        CHECK(submit(s, PROTO_PRIO_INTERACTIVE, "client-1", &again, 1001) == ERR_OK);
        CHECK(strcmp(again.id, a.id) == 0 && again.position == 1);
    }
    CHECK(poll_now(s, a.id, 0, &c, 1002) == ERR_OK && c.n == 1); /* one queued frame only */
    sched_shutdown(s);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1003) == ERR_SHUTTING_DOWN);
    sched_free(s);
}

static void
test_coalescing_and_resume(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c, again;
    static const int32_t t1[] = {10}, t2[] = {11, 12}, t3[] = {13};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    tokens(s, 0, a.id, 0, t1, 1, "a", 1001);
    tokens(s, 0, a.id, 1, t2, 2, "bc", 1002);
    CHECK(poll_now(s, a.id, 2, &c, 1003) == ERR_OK);
    CHECK(c.n == 1 && c.f[0].seq == 2 && c.f[0].n_ids == 3 && strcmp(c.f[0].text, "abc") == 0);
    CHECK(c.f[0].ids[0] == 10 && c.f[0].ids[1] == 11 && c.f[0].ids[2] == 12);
    /* once delivered a frame never changes: new tokens start a new frame */
    tokens(s, 0, a.id, 3, t3, 1, "d", 1004);
    CHECK(poll_now(s, a.id, 2, &again, 1005) == ERR_OK); /* a resend of the same poll */
    CHECK(again.n == 2 && again.f[0].seq == 2 && again.f[0].n_ids == 3);
    CHECK(strcmp(again.f[0].text, "abc") == 0);
    CHECK(again.f[1].seq == 3 && again.f[1].n_ids == 1 && strcmp(again.f[1].text, "d") == 0);
    /* resuming from 3 drops frame 2 for good */
    CHECK(poll_now(s, a.id, 3, &c, 1006) == ERR_OK && c.n == 1 && c.f[0].seq == 3);
    CHECK(poll_now(s, a.id, 2, &c, 1007) == ERR_OK && c.n == 1 && c.f[0].seq == 3);
    sched_free(s);
}

static void
test_long_poll(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;
    char err[ERR_MSG_MAX];
    static const int32_t t1[] = {10};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    catcher_init(&c);
    CHECK(sched_poll(s, 0, a.id, 2, 500, 1001, &c.w, err) == ERR_OK);
    CHECK(c.wakes == 0); /* parked */
    tokens(s, 0, a.id, 0, t1, 1, "x", 1002);
    CHECK(c.wakes == 1 && c.n == 1 && c.f[0].seq == 2 && strcmp(c.f[0].text, "x") == 0);
    /* nothing arrives: woken empty when the bound passes, not before */
    catcher_init(&c);
    CHECK(sched_poll(s, 0, a.id, 3, 500, 1003, &c.w, err) == ERR_OK && c.wakes == 0);
    sched_tick(s, 1500);
    CHECK(c.wakes == 0);
    sched_tick(s, 1503);
    CHECK(c.wakes == 1 && c.n == 0);
    /* an abandoned waiter is never woken */
    catcher_init(&c);
    CHECK(sched_poll(s, 0, a.id, 3, 500, 1600, &c.w, err) == ERR_OK);
    sched_poll_abandon(s, &c.w);
    tokens(s, 0, a.id, 1, t1, 1, "y", 1601);
    sched_tick(s, 3000);
    CHECK(c.wakes == 0);
    /* a parked poll is answered by the done frame */
    catcher_init(&c);
    CHECK(sched_poll(s, 0, a.id, 4, 500, 3000, &c.w, err) == ERR_OK && c.wakes == 0);
    done(s, 0, a.id, PROTO_REASON_LENGTH, 3001);
    CHECK(c.wakes == 1 && c.n == 1 && c.f[0].kind == PROTO_FRAME_DONE);
    CHECK(sched_poll(s, 0, "r999", 0, 0, 3002, &c.w, err) == ERR_NOT_FOUND);
    CHECKF(strstr(err, "r999") != NULL, "%s", err);
    sched_free(s);
}

static void
test_crash_replay(void)
{
    struct sched *s = new_sched(2, 4);
    struct sched_admit a;
    struct catcher c;
    static const int32_t t1[] = {21, 22}, t2[] = {23}, t3[] = {24};
    uint64_t seed;

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    CHECK(n_sent == 1 && sent[0].slot == 0);
    seed = sent[0].seed;
    tokens(s, 0, a.id, 0, t1, 2, "ab", 1001);
    CHECK(poll_now(s, a.id, 0, &c, 1002) == ERR_OK && c.n == 3);
    sched_worker_exited(s, 0, "killed by signal 9", false, 1003);
    CHECK(n_sent == 1); /* no other worker ready yet */
    make_ready(s, 1, 1, 1004);
    CHECK(n_sent == 2 && sent[1].slot == 1 && strcmp(sent[1].id, a.id) == 0);
    CHECK(sent[1].seed == seed && sent[1].n_replay == 2);
    CHECK(sent[1].replay[0] == 21 && sent[1].replay[1] == 22);
    /* late tokens of the dead worker and a replayed overlap are ignored */
    tokens(s, 0, a.id, 2, t3, 1, "z", 1005);
    tokens(s, 1, a.id, 1, t1 + 1, 1, "b", 1006);
    tokens(s, 1, a.id, 2, t2, 1, "c", 1007);
    done(s, 1, a.id, PROTO_REASON_EOS, 1008);
    CHECK(poll_now(s, a.id, 3, &c, 1009) == ERR_OK);
    CHECK(c.n == 2 && c.f[0].n_ids == 1 && c.f[0].ids[0] == 23 && strcmp(c.f[0].text, "c") == 0);
    CHECK(c.f[1].kind == PROTO_FRAME_DONE && c.f[1].stats.gen_tokens == 3);
    /* only one started frame: the client saw one unbroken stream */
    sched_free(s);
}

static void
test_replays_exhausted(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;

    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    for (int i = 0; i < 4; i++) {
        make_ready(s, 0, 1, 1001 + i);
        CHECK(n_sent == i + 1 && strcmp(sent[i].id, a.id) == 0);
        sched_worker_exited(s, 0, "killed by signal 9", false, 1001 + i);
    }
    CHECK(poll_now(s, a.id, 0, &c, 1010) == ERR_OK);
    CHECK(c.n == 3 && c.f[2].kind == PROTO_FRAME_ERROR && c.f[2].code == ERR_WORKER_CRASHED);
    make_ready(s, 0, 1, 1011);
    CHECK(n_sent == 4); /* not dispatched again */
    sched_free(s);
}

static void
test_crash_after_last_token_ends_with_length(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;
    static const int32_t t[] = {1, 2, 3, 4, 5, 6, 7, 8};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    tokens(s, 0, a.id, 0, t, 8, "abcdefgh", 1001); /* max_tokens is 8 */
    sched_worker_exited(s, 0, "killed by signal 9", false, 1002);
    CHECK(poll_now(s, a.id, 2, &c, 1003) == ERR_OK);
    CHECK(c.n == 2 && c.f[0].n_ids == 8 && c.f[1].kind == PROTO_FRAME_DONE);
    CHECK(c.f[1].reason == PROTO_REASON_LENGTH);
    sched_free(s);
}

static void
test_cancel(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a, b;
    struct catcher c;
    char err[ERR_MSG_MAX];
    static const int32_t t1[] = {31}, t2[] = {32};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &b, 1000) == ERR_OK && b.position == 1);
    tokens(s, 0, a.id, 0, t1, 1, "p", 1001);
    CHECK(sched_cancel(s, 0, a.id, 1002, err) == ERR_OK);
    CHECK(n_sent == 2 && sent[1].kind == 'c' && sent[1].slot == 0 && strcmp(sent[1].id, a.id) == 0);
    /* tokens after the cancel give no frame, only another cancel */
    tokens(s, 0, a.id, 1, t2, 1, "q", 1003);
    CHECK(n_sent == 3 && sent[2].kind == 'c');
    CHECK(poll_now(s, a.id, 0, &c, 1004) == ERR_OK);
    CHECK(c.n == 4 && c.f[2].kind == PROTO_FRAME_TOKENS && c.f[2].n_ids == 1);
    CHECK(c.f[3].kind == PROTO_FRAME_DONE && c.f[3].reason == PROTO_REASON_CANCELLED);
    /* the seat frees when the worker lets go, not before */
    CHECK(n_sent == 3);
    done(s, 0, a.id, PROTO_REASON_CANCELLED, 1005);
    CHECK(n_sent == 4 && sent[3].kind == 'd' && strcmp(sent[3].id, b.id) == 0);
    /* a queued request cancels without a worker */
    CHECK(submit(s, PROTO_PRIO_BATCH, NULL, &a, 1006) == ERR_OK && a.position == 1);
    CHECK(sched_cancel(s, 0, a.id, 1007, err) == ERR_OK && n_sent == 4);
    CHECK(poll_now(s, a.id, 0, &c, 1008) == ERR_OK);
    CHECK(c.n == 2 && c.f[1].reason == PROTO_REASON_CANCELLED);
    CHECK(sched_cancel(s, 0, a.id, 1009, err) == ERR_OK); /* again: harmless */
    CHECK(sched_cancel(s, 0, "nope", 1009, err) == ERR_NOT_FOUND);
    sched_free(s);
}

static void
test_stop_string_holdback(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct sched_submit in = {0};
    struct catcher c;
    char err[ERR_MSG_MAX];
    char *stop[] = {"END"};
    static const int32_t t[] = {1, 2, 3, 4, 5};

    make_ready(s, 0, 1, 1000);
    in.prompt_ids = prompt;
    in.n_prompt = 3;
    proto_sampling_default(&in.sampling);
    in.max_tokens = 16;
    in.stop = stop;
    in.n_stop = 1;
    CHECK(sched_submit(s, &in, 1000, &a, err) == ERR_OK);
    tokens(s, 0, a.id, 0, t, 1, "so E", 1001); /* "E" may start "END": the token waits */
    CHECK(poll_now(s, a.id, 2, &c, 1002) == ERR_OK && c.n == 0);
    tokens(s, 0, a.id, 1, t + 1, 1, "X", 1003); /* "EX" is not "END": both go out */
    CHECK(poll_now(s, a.id, 2, &c, 1004) == ERR_OK && c.n == 1);
    CHECK(c.f[0].n_ids == 2 && strcmp(c.f[0].text, "so EX") == 0);
    tokens(s, 0, a.id, 2, t + 2, 1, " EN", 1005);
    tokens(s, 0, a.id, 3, t + 3, 1, "D and", 1006);
    CHECK(n_sent == 2 && sent[1].kind == 'c'); /* orchd stops the worker */
    CHECK(poll_now(s, a.id, 3, &c, 1007) == ERR_OK && c.n == 2);
    CHECK(c.f[0].n_ids == 2 && strcmp(c.f[0].text, " ") == 0);
    CHECK(c.f[1].kind == PROTO_FRAME_DONE && c.f[1].reason == PROTO_REASON_STOP);
    CHECK(c.f[1].stats.gen_tokens == 4);
    /* the worker's own done(stop) changes nothing */
    done(s, 0, a.id, PROTO_REASON_STOP, 1008);
    CHECK(poll_now(s, a.id, 5, &c, 1009) == ERR_OK && c.n == 0);
    sched_free(s);
}

static void
test_utf8_holdback_and_flush(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;
    static const int32_t t[] = {200, 201, 202};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    tokens(s, 0, a.id, 0, t, 1, "\xc3", 1001); /* first byte of U+00E9 */
    CHECK(poll_now(s, a.id, 2, &c, 1002) == ERR_OK && c.n == 0);
    tokens(s, 0, a.id, 1, t + 1, 1, "\xa9", 1003);
    CHECK(poll_now(s, a.id, 2, &c, 1004) == ERR_OK && c.n == 1);
    CHECK(c.f[0].n_ids == 2 && strcmp(c.f[0].text, "\xc3\xa9") == 0);
    /* an incomplete character at the end goes out with the done frame */
    tokens(s, 0, a.id, 2, t + 2, 1, "\xe2\x82", 1005);
    done(s, 0, a.id, PROTO_REASON_LENGTH, 1006);
    CHECK(poll_now(s, a.id, 3, &c, 1007) == ERR_OK && c.n == 2);
    CHECK(c.f[0].n_ids == 1 && c.f[0].ids[0] == 202 && strcmp(c.f[0].text, "\xe2\x82") == 0);
    CHECK(c.f[1].kind == PROTO_FRAME_DONE);
    sched_free(s);
}

static void
test_client_timeout_and_linger(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;
    char err[ERR_MSG_MAX];

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    tokens(s, 0, a.id, 0, prompt, 1, "t", 20000); /* the worker makes progress */
    sched_tick(s, 1000 + 29999);
    CHECK(n_sent == 1);
    sched_tick(s, 1000 + 30000);
    CHECK(n_sent == 2 && sent[1].kind == 'c' && strcmp(sent[1].id, a.id) == 0);
    CHECK(sched_active(s) == 0);
    done(s, 0, a.id, PROTO_REASON_CANCELLED, 31001);
    /* it lingers for a late poll, then goes */
    sched_tick(s, 31000 + 59999);
    CHECK(poll_now(s, a.id, 0, &c, 31000 + 59999) == ERR_OK && c.n == 4);
    sched_tick(s, 31001 + 60000);
    CHECK(sched_poll(s, 0, a.id, 0, 0, 31001 + 60000, &c.w, err) == ERR_NOT_FOUND);
    CHECKF(strstr(err, "expired: a finished request is kept 60 s (5 s once its end was read)"),
           "%s", err);
    CHECK(sched_cancel(s, 0, a.id, 31001 + 60000, err) == ERR_NOT_FOUND && strstr(err, "expired"));
    CHECK(sched_poll(s, 0, "r99", 0, 0, 31001 + 60000, &c.w, err) == ERR_NOT_FOUND);
    CHECKF(strcmp(err, "no request r99") == 0, "%s", err); /* never was */
    /* once its last frame was delivered a request goes after 5 s */
    make_ready(s, 0, 1, 100000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 100000) == ERR_OK);
    done(s, 0, a.id, PROTO_REASON_EOS, 100001);
    CHECK(poll_now(s, a.id, 0, &c, 100002) == ERR_OK && c.n == 3);
    sched_tick(s, 105001);
    CHECK(poll_now(s, a.id, 0, &c, 105001) == ERR_OK && c.n == 3); /* a resend still gets it */
    sched_tick(s, 105002);
    CHECK(poll_now(s, a.id, 0, &c, 105002) == ERR_NOT_FOUND);
    sched_free(s);
}

static void
test_watchdog(void)
{
    struct sched *s = new_sched(2, 4);
    struct sched_admit a;
    struct catcher c;
    struct proto_heartbeat hb = {1, 5};
    static const int32_t t1[] = {41};

    make_ready(s, 0, 1, 1000);
    sched_worker_started(s, 1, 201, 0, 1000);
    /* a clock reading taken just before the start (another thread's) is no timeout */
    sched_tick(s, 999);
    CHECK(n_sent == 0);
    /* an idle worker is never stalled */
    sched_tick(s, 1000 + 40000);
    CHECK(n_sent == 0);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 41000) == ERR_OK && n_sent == 1);
    sched_worker_heartbeat(s, 0, &hb, 60000); /* progress */
    CHECK(poll_now(s, a.id, 0, &c, 60000) == ERR_OK);
    tokens(s, 0, a.id, 0, t1, 1, "w", 70000);
    CHECK(poll_now(s, a.id, 0, &c, 90000) == ERR_OK);
    sched_worker_heartbeat(s, 0, &hb, 95000); /* same counter: no progress */
    sched_tick(s, 99999);
    CHECK(n_sent == 1);
    sched_tick(s, 100000);
    CHECK(n_sent == 2 && sent[1].kind == 'k' && sent[1].slot == 0);
    sched_tick(s, 100010);
    CHECK(n_sent == 2); /* once */
    /* slot 1 never became ready */
    CHECK(poll_now(s, a.id, 0, &c, 120000) == ERR_OK);
    sched_tick(s, 121000);
    CHECK(n_sent == 3 && sent[2].kind == 'k' && sent[2].slot == 1);
    sched_free(s);
}

static void
test_watchdog_allows_a_long_prefill(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    static const int32_t t1[] = {41};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK && n_sent == 1);
    /* no token yet: the prefill bound (600 s) applies, not the progress bound (30 s) */
    for (uint64_t t = 10000; t < 600000; t += 10000) {
        CHECK(poll_now(s, a.id, 0, &(struct catcher){0}, t) == ERR_OK);
        sched_tick(s, t);
    }
    CHECK(n_sent == 1);
    /* once tokens flow the progress bound is back */
    tokens(s, 0, a.id, 0, t1, 1, "a", 600000);
    CHECK(poll_now(s, a.id, 0, &(struct catcher){0}, 629999) == ERR_OK);
    sched_tick(s, 629999);
    CHECK(n_sent == 1);
    sched_tick(s, 630000);
    CHECK(n_sent == 2 && sent[1].kind == 'k');
    /* a prefill that never ends is killed at the prefill bound */
    sched_worker_exited(s, 0, "killed by signal 9", false, 630001);
    make_ready(s, 0, 1, 630002);
    CHECK(n_sent == 3 && sent[2].kind == 'd' && sent[2].n_replay == 1);
    for (uint64_t t = 640000; t <= 1230002; t += 10000) {
        CHECK(poll_now(s, a.id, 0, &(struct catcher){0}, t) == ERR_OK);
        sched_tick(s, t);
    }
    sched_tick(s, 1230002);
    CHECK(n_sent == 4 && sent[3].kind == 'k');
    sched_free(s);
}

static void
test_dispatch_failure_keeps_request(void)
{
    struct sched *s = new_sched(2, 4);
    struct sched_admit a;

    fail_dispatch = 1; /* slot 0's link is down */
    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK && a.position == 1);
    CHECK(n_sent == 1); /* tried, failed: it stays first in the queue */
    make_ready(s, 1, 1, 1001);
    CHECK(n_sent == 2 && sent[1].slot == 1 && strcmp(sent[1].id, a.id) == 0);
    /* slot 0 is tried again after a short pause */
    fail_dispatch = 0;
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1001) == ERR_OK && a.position == 1);
    CHECK(n_sent == 2);
    sched_tick(s, 1002);
    CHECK(n_sent == 3 && sent[2].slot == 0 && strcmp(sent[2].id, a.id) == 0);
    sched_free(s);
}

static void
test_ready_before_its_start_is_reported(void)
{
    struct sched *s = new_sched(1, 4);
    struct proto_ready rd = {7, 4321, 512, 32000, 1};
    struct proto_health_info h;

    /* the worker answered its probe before the main thread reported its start */
    sched_worker_ready(s, 0, &rd, 1000);
    sched_health(s, &h);
    CHECK(!h.ready);
    sched_worker_started(s, 0, 4321, 0, 1001);
    sched_health(s, &h);
    CHECK(h.ready);
    /* a ready from another process (an earlier one's, late) does not make a slot ready */
    sched_worker_exited(s, 0, "killed by signal 9", false, 1002);
    sched_worker_ready(s, 0, &rd, 1003);
    sched_worker_started(s, 0, 4400, 1, 1004);
    sched_health(s, &h);
    CHECK(!h.ready);
    sched_worker_ready(s, 0, &rd, 1005);
    sched_health(s, &h);
    CHECK(!h.ready);
    rd.pid = 4400;
    sched_worker_ready(s, 0, &rd, 1006);
    sched_health(s, &h);
    CHECK(h.ready);
    sched_free(s);
}

static void
test_worker_refusing_as_busy(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct catcher c;
    struct proto_error busy = {ERR_BUSY, "worker is already running a request", NULL};

    make_ready(s, 0, 1, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK && n_sent == 1);
    busy.id = a.id;
    sched_worker_error(s, 0, &busy, 1001);
    CHECK(n_sent == 1); /* paused: not at once */
    sched_tick(s, 1002);
    CHECKF(n_sent == 1, "%d", n_sent);
    sched_tick(s, 1003);
    CHECK(n_sent == 2 && sent[1].kind == 'd' && strcmp(sent[1].id, a.id) == 0);
    /* the stream shows one start, and the request goes on */
    done(s, 0, a.id, PROTO_REASON_EOS, 1004);
    CHECK(poll_now(s, a.id, 0, &c, 1005) == ERR_OK && c.n == 3);
    CHECK(c.f[1].kind == PROTO_FRAME_STARTED && c.f[2].kind == PROTO_FRAME_DONE);
    sched_free(s);
}

struct report {
    struct proto_status_info st;
    struct proto_tenant_info tenant;
    uint32_t n_workers;
    enum proto_worker_state state[4];
    uint32_t n_requests[4];
    uint32_t in_flight[4], slots[4];
    char detail[4][64];
};

static void
take_status(void *ud, const struct proto_status_info *st)
{
    struct report *r = ud;

    r->st = *st;
    r->tenant = st->tenants[0];
}

static void
take_workers(void *ud, const struct proto_workers_info *w)
{
    struct report *r = ud;

    r->n_workers = w->n_workers;
    for (uint32_t i = 0; i < w->n_workers && i < 4; i++) {
        r->state[i] = w->workers[i].state;
        r->n_requests[i] = w->workers[i].n_requests;
        r->in_flight[i] = w->workers[i].in_flight;
        r->slots[i] = w->workers[i].slots;
        snprintf(r->detail[i], sizeof(r->detail[i]), "%s", w->workers[i].detail);
    }
}

static void
test_reports(void)
{
    struct sched *s = new_sched(3, 4);
    struct sched_admit a;
    struct report rep;
    struct proto_health_info h;
    char err[ERR_MSG_MAX];

    sched_health(s, &h);
    CHECK(!h.ready && h.workers_ready == 0);
    make_ready(s, 0, 1, 1000);
    sched_worker_started(s, 1, 300, 2, 1000);
    sched_worker_exited(s, 2, "exited with status 2", true, 1000);
    CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
    CHECK(submit(s, PROTO_PRIO_BATCH, NULL, &a, 1000) == ERR_OK);
    CHECK(sched_cancel(s, 0, a.id, 1001, err) == ERR_OK);
    CHECK(submit(s, PROTO_PRIO_BATCH, NULL, &a, 1000) == ERR_OK);
    sched_status(s, 1500, take_status, &rep);
    CHECK(rep.st.queued_interactive == 0 && rep.st.queued_batch == 1 && rep.st.running == 1);
    CHECK(rep.st.workers == 3 && rep.st.workers_ready == 1 && rep.st.queue_max == 4);
    CHECK(rep.st.completed == 1 && rep.st.uptime_ms == 500);
    CHECK(rep.tenant.queued == 1 && rep.tenant.running == 1);
    sched_workers(s, -1, take_workers, &rep);
    CHECK(rep.n_workers == 3);
    CHECK(rep.state[0] == PROTO_WSTATE_BUSY && rep.n_requests[0] == 1);
    CHECK(rep.state[1] == PROTO_WSTATE_STARTING && rep.n_requests[1] == 0);
    CHECK(rep.state[2] == PROTO_WSTATE_FATAL && strstr(rep.detail[2], "status 2") != NULL);
    sched_health(s, &h);
    CHECK(h.ready && h.workers_ready == 1);
    /* a restarted worker keeps how its predecessor ended in its detail */
    sched_worker_exited(s, 1, "killed by signal 9 (Killed)", false, 1500);
    sched_worker_started(s, 1, 301, 3, 1501);
    sched_worker_ready(s, 1, &(struct proto_ready){1, 301, 512, 32000, 1}, 1502);
    sched_workers(s, -1, take_workers, &rep);
    CHECK(rep.state[1] == PROTO_WSTATE_BUSY); /* it took the queued request */
    CHECKF(strcmp(rep.detail[1], "last: killed by signal 9 (Killed)") == 0, "%s", rep.detail[1]);
    /* shutdown: not ready, and the rest ends with an error frame */
    sched_shutdown(s);
    sched_health(s, &h);
    CHECK(!h.ready);
    CHECK(sched_active(s) == 2);
    sched_end_all(s, ERR_SHUTTING_DOWN, "orchd is shutting down", 1600);
    CHECK(sched_active(s) == 0);
    sched_status(s, 1600, take_status, &rep);
    CHECK(rep.st.failed == 2 && rep.st.queued_batch == 0);
    sched_free(s);
}

/* ---- workers of several slots ---- */

/* A worker takes requests up to its slot count; dispatch prefers the worker with the fewest. */
static void
test_worker_fills_its_slots(void)
{
    struct sched *s = new_sched(2, 8);
    struct sched_admit a;
    struct report rep;

    make_ready(s, 0, 4, 1000);
    for (int i = 0; i < 5; i++)
        CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000 + i) == ERR_OK);
    CHECK(n_sent == 4 && a.position == 1);
    for (int i = 0; i < 4; i++)
        CHECK(sent[i].kind == 'd' && sent[i].slot == 0);
    sched_workers(s, -1, take_workers, &rep);
    CHECK(rep.state[0] == PROTO_WSTATE_BUSY && rep.in_flight[0] == 4 && rep.slots[0] == 4);
    CHECK(rep.n_requests[0] == 4);
    CHECK(rep.state[1] == PROTO_WSTATE_BACKOFF && rep.in_flight[1] == 0 && rep.slots[1] == 0);
    /* a second worker takes the waiting request; the next ones go to the worker with fewer */
    make_ready(s, 1, 4, 1010);
    CHECK(n_sent == 5 && sent[4].slot == 1 && strcmp(sent[4].id, a.id) == 0);
    done(s, 0, sent[0].id, PROTO_REASON_EOS, 1015);
    done(s, 0, sent[1].id, PROTO_REASON_EOS, 1015); /* now 2 on worker 0, 1 on worker 1 */
    for (int i = 0; i < 4; i++)
        CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1020 + i) == ERR_OK);
    CHECK(n_sent == 9 && sent[5].slot == 1 && sent[6].slot == 0 && sent[7].slot == 1);
    CHECK(sent[8].slot == 0);
    sched_workers(s, -1, take_workers, &rep);
    CHECK(rep.in_flight[0] == 4 && rep.in_flight[1] == 3 && rep.slots[1] == 4);
    sched_free(s);
}

/* A crash sends every request of the worker back, each with its own replay ids and seed. */
static void
test_crash_replays_every_request(void)
{
    struct sched *s = new_sched(2, 8);
    struct sched_admit a;
    struct catcher c;
    char ids[3][PROTO_MAX_ID_BYTES + 1];
    uint64_t seeds[3];
    static const int32_t t[] = {61, 62, 63};
    static const uint32_t had[] = {3, 1, 0};

    make_ready(s, 0, 4, 1000);
    for (int i = 0; i < 3; i++) {
        CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
        snprintf(ids[i], sizeof(ids[i]), "%s", a.id);
        seeds[i] = sent[i].seed;
    }
    CHECK(n_sent == 3);
    tokens(s, 0, ids[0], 0, t, 3, "abc", 1001);
    tokens(s, 0, ids[1], 0, t, 1, "a", 1001); /* ids[2] is still in its prefill */
    sched_worker_exited(s, 0, "killed by signal 9", false, 1002);
    make_ready(s, 1, 4, 1003);
    CHECK(n_sent == 6);
    for (int i = 0; i < 3; i++) {
        const struct sent *e = &sent[3 + i];

        CHECK(e->kind == 'd' && e->slot == 1 && strcmp(e->id, ids[i]) == 0);
        CHECK(e->seed == seeds[i] && e->n_replay == had[i]);
        for (uint32_t k = 0; k < e->n_replay; k++)
            CHECK(e->replay[k] == t[k]);
    }
    /* each stream goes on where it stopped */
    tokens(s, 1, ids[1], 1, t + 1, 1, "b", 1004);
    done(s, 1, ids[1], PROTO_REASON_EOS, 1005);
    CHECK(poll_now(s, ids[1], 0, &c, 1006) == ERR_OK && c.n == 4);
    CHECK(c.f[2].kind == PROTO_FRAME_TOKENS && c.f[2].n_ids == 2 && strcmp(c.f[2].text, "ab") == 0);
    CHECK(c.f[3].kind == PROTO_FRAME_DONE && c.f[3].stats.gen_tokens == 2);
    sched_free(s);
}

/* The watchdog is per worker: tokens of any of its requests are progress. */
static void
test_watchdog_per_worker(void)
{
    struct sched *s = new_sched(2, 8);
    struct sched_admit a;
    char ids[3][PROTO_MAX_ID_BYTES + 1];
    int32_t t[1] = {70};
    int kills = 0;

    make_ready(s, 0, 4, 1000);
    make_ready(s, 1, 4, 1000);
    for (int i = 0; i < 3; i++) {
        CHECK(submit(s, PROTO_PRIO_INTERACTIVE, NULL, &a, 1000) == ERR_OK);
        snprintf(ids[i], sizeof(ids[i]), "%s", a.id);
    }
    CHECK(n_sent == 3 && sent[0].slot == 0 && sent[1].slot == 1 && sent[2].slot == 0);
    for (uint32_t k = 0; k < 3; k++)
        tokens(s, sent[k].slot, ids[k], 0, t, 1, "x", 2000);
    /* only ids[2] (worker 0) goes on; worker 1 stalls from 2000 on */
    for (uint64_t now = 3000; now <= 40000; now += 1000) {
        tokens(s, 0, ids[2], (uint32_t)(now / 1000 - 2), t, 1, "x", now);
        for (int i = 0; i < 3; i++)
            CHECK(poll_now(s, ids[i], 0, &(struct catcher){0}, now) == ERR_OK);
        sched_tick(s, now);
    }
    for (int i = 0; i < n_sent; i++)
        if (sent[i].kind == 'k') {
            kills++;
            CHECK(sent[i].slot == 1);
        }
    CHECK(kills == 1);
    sched_free(s);
}

/* ---- tenants ---- */

static struct sched *
new_sched_tenants(int n_slots, uint32_t queue_max, const struct sched_tenant *t, int n)
{
    struct sched_config cfg;

    sched_config_default(&cfg);
    cfg.n_slots = n_slots;
    cfg.queue_max = queue_max;
    cfg.tenants = t;
    cfg.n_tenants = n;
    n_sent = 0;
    fail_dispatch = 0;
    return sched_new(&cfg, &ops, 1000);
}

static int
submit_as(struct sched *s, int tenant, const char *client_id, struct sched_admit *a, uint64_t now,
          char *err)
{
    struct sched_submit in = {0};

    in.prompt_ids = prompt;
    in.n_prompt = 3;
    proto_sampling_default(&in.sampling);
    in.max_tokens = 8;
    in.client_id = client_id;
    in.tenant = tenant;
    return sched_submit(s, &in, now, a, err);
}

/* The worker in slot 0 finishes the request it was last sent: 8 tokens, then done. */
static const char *
finish_last(struct sched *s, uint64_t now)
{
    static char id[PROTO_MAX_ID_BYTES + 1];
    static const int32_t ids[8] = {450, 451, 452, 453, 454, 455, 456, 457};

    for (int i = n_sent - 1; i >= 0; i--)
        if (sent[i % MAX_EVENTS].kind == 'd') {
            snprintf(id, sizeof(id), "%s", sent[i % MAX_EVENTS].id);
            tokens(s, 0, id, 0, ids, 8, "abcdefgh", now);
            done(s, 0, id, PROTO_REASON_LENGTH, now);
            return id;
        }
    return NULL;
}

/*
 * Serves n_a requests of tenant 0 and n_b of tenant 1, all queued before the one worker (batch
 * 1) is ready, and writes the tenant of each dispatch in order into order[].
 */
static void
serve_two(const struct sched_tenant *t, int n_a, int n_b, int *order, int n_order)
{
    struct sched *s = new_sched_tenants(1, 64, t, 2);
    char ids[2][32][PROTO_MAX_ID_BYTES + 1], err[ERR_MSG_MAX];
    struct sched_admit a;

    for (int i = 0; i < n_a; i++) {
        CHECK(submit_as(s, 0, NULL, &a, 1000, err) == ERR_OK);
        snprintf(ids[0][i], sizeof(ids[0][i]), "%s", a.id);
    }
    for (int i = 0; i < n_b; i++) {
        CHECK(submit_as(s, 1, NULL, &a, 1000, err) == ERR_OK);
        snprintf(ids[1][i], sizeof(ids[1][i]), "%s", a.id);
    }
    make_ready(s, 0, 1, 1000);
    for (int k = 0; k < n_order; k++) {
        const char *id = finish_last(s, 1001 + k);

        order[k] = -1;
        for (int i = 0; id != NULL && i < 32; i++)
            for (int j = 0; j < 2; j++)
                if (i < (j == 0 ? n_a : n_b) && strcmp(ids[j][i], id) == 0)
                    order[k] = j;
    }
    sched_free(s);
}

static void
test_fair_share_equal_weights(void)
{
    static const struct sched_tenant t[2] = {{.name = "a", .weight = 1},
                                             {.name = "b", .weight = 1}};
    int order[22], n_b = 0;

    /* a queues 20 requests, b 2: b is not stuck behind a's 20; each gets half the tokens */
    serve_two(t, 20, 2, order, 22);
    for (int k = 0; k < 4; k++)
        n_b += order[k] == 1;
    CHECKF(n_b == 2, "b got %d of the first 4 dispatches (%d %d %d %d)", n_b, order[0], order[1],
           order[2], order[3]);
    for (int k = 4; k < 22; k++)
        CHECKF(order[k] == 0, "dispatch %d went to %d", k, order[k]);
}

static void
test_fair_share_weights_two_to_one(void)
{
    static const struct sched_tenant t[2] = {{.name = "a", .weight = 2},
                                             {.name = "b", .weight = 1}};
    int order[30], n_a = 0;

    serve_two(t, 20, 20, order, 30);
    /* over every window of 6 dispatches from the start: 4 to a, 2 to b */
    for (int k = 0; k < 30; k++) {
        n_a += order[k] == 0;
        if ((k + 1) % 6 == 0)
            CHECKF(n_a == (k + 1) * 2 / 3, "after %d dispatches a had %d", k + 1, n_a);
    }
}

/* A tenant that was idle gets no credit for its idle time: it shares from when it comes back. */
static void
test_idle_tenant_gets_no_credit(void)
{
    static const struct sched_tenant t[2] = {{.name = "a", .weight = 1},
                                             {.name = "b", .weight = 1}};
    struct sched *s = new_sched_tenants(1, 64, t, 2);
    struct sched_admit a, b[4];
    char err[ERR_MSG_MAX];
    int n_b = 0;

    make_ready(s, 0, 1, 1000);
    for (int i = 0; i < 10; i++) { /* a alone for 10 requests */
        CHECK(submit_as(s, 0, NULL, &a, 1000 + i, err) == ERR_OK);
        finish_last(s, 1000 + i);
    }
    for (int i = 0; i < 6; i++)
        CHECK(submit_as(s, 0, NULL, &a, 2000, err) == ERR_OK);
    for (int i = 0; i < 4; i++)
        CHECK(submit_as(s, 1, NULL, &b[i], 2000, err) == ERR_OK);
    /* of the next 6 dispatches b gets 3, not all 4 in a row */
    for (int k = 0; k < 6; k++) {
        const char *id = finish_last(s, 2001 + k);

        for (int i = 0; i < 4; i++)
            n_b += k > 0 && strcmp(id, b[i].id) == 0;
    }
    CHECKF(n_b == 3, "b got %d of 5", n_b);
    sched_free(s);
}

static void
test_tenant_isolation(void)
{
    static const struct sched_tenant t[2] = {{.name = "a", .weight = 1},
                                             {.name = "b", .weight = 1}};
    struct sched *s = new_sched_tenants(1, 64, t, 2);
    struct sched_admit a, b;
    struct catcher c;
    struct report rep;
    char err[ERR_MSG_MAX];

    make_ready(s, 0, 4, 1000);
    CHECK(submit_as(s, 0, "same-client-id", &a, 1000, err) == ERR_OK);
    CHECK(submit_as(s, 1, "same-client-id", &b, 1000, err) == ERR_OK);
    CHECK(strcmp(a.id, b.id) != 0); /* a client id is per tenant */
    CHECK(poll_now(s, a.id, 0, &c, 1001) == ERR_OK && c.wakes == 1);
    CHECK(poll_now(s, a.id, 0, &c, 1001) == ERR_OK);
    CHECK(sched_poll(s, 1, a.id, 0, 0, 1001, &c.w, err) == ERR_NOT_FOUND);
    CHECKF(strcmp(err, "no request r1") == 0, "%s", err); /* as for an id that never was */
    CHECK(sched_cancel(s, 1, a.id, 1001, err) == ERR_NOT_FOUND);
    CHECK(poll_now(s, a.id, 0, &c, 1002) == ERR_OK && c.f[c.n - 1].kind == PROTO_FRAME_STARTED);
    sched_workers(s, 1, take_workers, &rep); /* b sees only its own request on the worker */
    CHECK(rep.n_requests[0] == 1);
    sched_workers(s, -1, take_workers, &rep);
    CHECK(rep.n_requests[0] == 2);
    sched_free(s);
}

static void
test_tenant_limits(void)
{
    static const struct sched_tenant t[3] = {
        {.name = "rate", .weight = 1, .rate_per_min = 2},
        {.name = "budget", .weight = 1, .token_budget = 10, .budget_period_ms = 60000},
        {.name = "small", .weight = 1, .max_queued = 2, .max_running = 1},
    };
    struct sched *s = new_sched_tenants(2, 64, t, 3);
    struct sched_admit a;
    char err[ERR_MSG_MAX];

    /* rate: 2 per minute, a bucket of 2 */
    CHECK(submit_as(s, 0, NULL, &a, 1000, err) == ERR_OK);
    CHECK(submit_as(s, 0, NULL, &a, 1000, err) == ERR_OK);
    CHECKF(submit_as(s, 0, NULL, &a, 1000, err) == ERR_BUSY && strstr(err, "rate limit"), "%s",
           err);
    CHECKF(a.retry_after_ms >= 29000 && a.retry_after_ms <= 30001, "%u", a.retry_after_ms);
    CHECK(submit_as(s, 0, NULL, &a, 31000, err) == ERR_OK);
    /* budget: 3 prompt tokens each; the fourth submit finds 9 + 3 >= 10 used */
    for (int i = 0; i < 3; i++)
        CHECK(submit_as(s, 1, NULL, &a, 31000, err) == ERR_OK);
    CHECK(submit_as(s, 1, NULL, &a, 31000, err) == ERR_OK); /* 9 used < 10 */
    CHECKF(submit_as(s, 1, NULL, &a, 32000, err) == ERR_BUSY && strstr(err, "budget"), "%s", err);
    CHECKF(a.retry_after_ms == 60000 - 31000, "%u", a.retry_after_ms);
    CHECK(submit_as(s, 2, NULL, &a, 32000, err) == ERR_OK); /* others are not affected */
    CHECK(submit_as(s, 1, NULL, &a, 61000, err) == ERR_OK); /* a new period */
    /* max_queued 2 (nothing runs: no worker ready) */
    CHECK(submit_as(s, 2, NULL, &a, 61000, err) == ERR_OK);
    CHECKF(submit_as(s, 2, NULL, &a, 61000, err) == ERR_BUSY && strstr(err, "small"), "%s", err);
    CHECK(a.retry_after_ms == 1000);
    /* max_running 1: with two workers free, "small" still runs one at a time */
    n_sent = 0;
    make_ready(s, 0, 8, 62000);
    make_ready(s, 1, 8, 62000);
    {
        struct report rep;

        sched_status(s, 62000, take_status, &rep);
        CHECK(rep.st.n_tenants == 3 && rep.st.running == 9 && rep.st.queued_interactive == 1);
    }
    sched_free(s);
}

static void
test_prompt_longer_than_context(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_admit a;
    struct sched_submit in = {0};
    char err[ERR_MSG_MAX];
    int32_t *ids = calloc(600, sizeof(*ids));

    CHECK(ids != NULL);
    make_ready(s, 0, 1, 1000); /* context 512 */
    in.prompt_ids = ids;
    in.n_prompt = 600;
    proto_sampling_default(&in.sampling);
    in.max_tokens = 4;
    CHECKF(sched_submit(s, &in, 1000, &a, err) == ERR_CONTEXT_FULL, "%s", err);
    CHECKF(strstr(err, "600") != NULL, "%s", err);
    in.n_prompt = 508; /* 508 + 4 fits exactly */
    CHECKF(sched_submit(s, &in, 1000, &a, err) == ERR_OK, "%s", err);
    in.n_prompt = 509;
    CHECK(sched_submit(s, &in, 1000, &a, err) == ERR_CONTEXT_FULL);
    free(ids);
    sched_free(s);
}

/*
 * Finished requests kept for late polls: at most max_finished per tenant, those whose end was
 * read dropped first, then the oldest finished, and a poll of a dropped one says it expired; one
 * tenant finishing many requests does not drop another's.
 */
static void
test_finished_kept_per_tenant(void)
{
    static const struct sched_tenant t[2] = {{.name = "a", .weight = 1, .max_finished = 3},
                                             {.name = "b", .weight = 1}};
    struct sched *s = new_sched_tenants(1, 64, t, 2);
    struct sched_admit a[6], b[2];
    struct catcher c;
    char err[ERR_MSG_MAX];
    static const int32_t ids[8] = {450, 451, 452, 453, 454, 455, 456, 457};

    make_ready(s, 0, 8, 1000);
    for (int i = 0; i < 2; i++) {
        CHECK(submit_as(s, 1, NULL, &b[i], 1000, err) == ERR_OK);
        done(s, 0, b[i].id, PROTO_REASON_EOS, 1001);
    }
    for (int i = 0; i < 6; i++)
        CHECK(submit_as(s, 0, NULL, &a[i], 1002, err) == ERR_OK);
    /* a's six finish in reverse order of their submits: a[5] first, a[0] last */
    for (int i = 5; i >= 0; i--) {
        tokens(s, 0, a[i].id, 0, ids, 8, "abcdefgh", 1010 + (5 - i));
        done(s, 0, a[i].id, PROTO_REASON_LENGTH, 1010 + (5 - i));
    }
    /* the three that finished last are kept, with their whole streams */
    for (int i = 0; i < 3; i++) {
        CHECKF(poll_now(s, a[i].id, 0, &c, 1020) == ERR_OK, "a[%d]", i);
        CHECK(c.n == 4 && c.f[2].n_ids == 8 && c.f[3].kind == PROTO_FRAME_DONE);
    }
    for (int i = 3; i < 6; i++) {
        CHECKF(sched_poll(s, 0, a[i].id, 0, 0, 1020, &c.w, err) == ERR_NOT_FOUND, "a[%d]", i);
        CHECKF(strstr(err, "expired: tenant a keeps its last 3 finished requests"), "%s", err);
    }
    CHECK(sched_poll(s, 0, "r08", 0, 0, 1020, &c.w, err) == ERR_NOT_FOUND); /* not r8 */
    CHECKF(strcmp(err, "no request r08") == 0, "%s", err);
    /* b's are untouched by a's (b keeps the default 256) */
    for (int i = 0; i < 2; i++)
        CHECK(sched_poll(s, 1, b[i].id, 0, 0, 1020, &c.w, err) == ERR_OK);
    /* another tenant asking for a's dropped id learns nothing: as for an id that never was */
    CHECK(sched_poll(s, 1, a[5].id, 0, 0, 1020, &c.w, err) == ERR_NOT_FOUND);
    CHECKF(strcmp(err, "no request r8") == 0 && strcmp(a[5].id, "r8") == 0, "%s", err);
    /* a cancelled request counts once its worker has let go of it */
    CHECK(submit_as(s, 0, NULL, &a[3], 1030, err) == ERR_OK);
    CHECK(sched_cancel(s, 0, a[3].id, 1031, err) == ERR_OK);
    CHECK(poll_now(s, a[2].id, 0, &c, 1032) == ERR_OK); /* still running: nothing dropped */
    done(s, 0, a[3].id, PROTO_REASON_CANCELLED, 1033);
    CHECK(poll_now(s, a[2].id, 0, &c, 1034) == ERR_NOT_FOUND); /* the oldest of a's went */
    CHECK(poll_now(s, a[3].id, 0, &c, 1034) == ERR_OK);
    /* thousands: a keeps 3, b keeps its 2 */
    for (int i = 0; i < 3000; i++) {
        CHECK(submit_as(s, 0, NULL, &a[4], 2000 + i, err) == ERR_OK);
        done(s, 0, a[4].id, PROTO_REASON_EOS, 2000 + i);
    }
    CHECK(poll_now(s, a[4].id, 0, &c, 6000) == ERR_OK);
    for (int i = 0; i < 2; i++)
        CHECK(sched_poll(s, 1, b[i].id, 0, 0, 6000, &c.w, err) == ERR_OK);
    /* requests whose end was read go before unread ones, even older unread ones */
    for (int i = 0; i < 3; i++) {
        CHECK(submit_as(s, 0, NULL, &a[i], 7000 + i, err) == ERR_OK);
        done(s, 0, a[i].id, PROTO_REASON_EOS, 7000 + i);
    }
    CHECK(poll_now(s, a[2].id, 0, &c, 7010) == ERR_OK && c.f[c.n - 1].kind == PROTO_FRAME_DONE);
    CHECK(submit_as(s, 0, NULL, &a[3], 7011, err) == ERR_OK);
    done(s, 0, a[3].id, PROTO_REASON_EOS, 7011);
    CHECK(poll_now(s, a[2].id, 0, &c, 7012) == ERR_NOT_FOUND);
    for (int i = 0; i < 4; i++)
        CHECKF(i == 2 || poll_now(s, a[i].id, 0, &c, 7012) == ERR_OK, "a[%d]", i);
    sched_free(s);
}

/* Before any worker has reported its context length, the configured one bounds a submit. */
static void
test_context_before_any_worker(void)
{
    struct sched_config cfg;
    struct sched_submit in = {0};
    struct sched_admit a;
    char err[ERR_MSG_MAX];
    struct sched *s;
    int32_t ids[200] = {0};

    sched_config_default(&cfg);
    cfg.n_ctx = 64;
    s = sched_new(&cfg, &ops, 1000);
    in.prompt_ids = ids;
    in.n_prompt = 10;
    proto_sampling_default(&in.sampling);
    in.max_tokens = 55;
    CHECKF(sched_submit(s, &in, 1000, &a, err) == ERR_CONTEXT_FULL, "%s", err);
    CHECKF(strcmp(err, "prompt (10 tokens) plus max_tokens (55) exceed the context length (64)") ==
               0,
           "%s", err);
    in.max_tokens = 54;
    CHECKF(sched_submit(s, &in, 1000, &a, err) == ERR_OK && a.position == 1, "%s", err);
    /* once a worker reports, its context length counts (here 512) */
    make_ready(s, 0, 1, 1001);
    in.n_prompt = 200;
    in.max_tokens = 300;
    CHECKF(sched_submit(s, &in, 1002, &a, err) == ERR_OK, "%s", err);
    in.max_tokens = 313;
    CHECK(sched_submit(s, &in, 1002, &a, err) == ERR_CONTEXT_FULL && strstr(err, "(512)"));
    sched_free(s);
}

/*
 * What a request holds for a client that reads slowly: tokens that come while nobody polls go
 * into one frame; a client that polls without ever moving `from` on gets at most
 * PROTO_MAX_FRAMES frames per poll and the request holds at most one more; a worker sending past
 * max_tokens ends the request.
 */
static void
test_frames_held_for_a_slow_client(void)
{
    struct sched *s = new_sched(1, 4);
    struct sched_submit in = {0};
    struct sched_admit a;
    struct catcher c;
    char err[ERR_MSG_MAX];
    static const int32_t one[1] = {300};

    sched_worker_started(s, 0, 100, 0, 1000);
    sched_worker_ready(s, 0, &(struct proto_ready){7, 100, 16384, 32000, 1}, 1000);
    in.prompt_ids = prompt;
    in.n_prompt = 3;
    proto_sampling_default(&in.sampling);
    in.max_tokens = 8192;
    CHECK(sched_submit(s, &in, 1000, &a, err) == ERR_OK);
    for (uint32_t i = 0; i < 1000; i++)
        tokens(s, 0, a.id, i, one, 1, "x", 1001);
    CHECK(poll_now(s, a.id, 0, &c, 1002) == ERR_OK);
    CHECK(c.n == 3 && c.f[2].kind == PROTO_FRAME_TOKENS && c.f[2].n_ids == 1000);
    /* polled after every token and never acknowledged: a frame per token, 4096 per reply, and
       the tokens past what a reply can carry go into one more frame */
    for (uint32_t i = 1000; i < 6000; i++) {
        tokens(s, 0, a.id, i, one, 1, "x", 1003);
        CHECK(poll_now(s, a.id, 0, &c, 1003) == ERR_OK);
    }
    CHECKF(c.n == PROTO_MAX_FRAMES, "%u frames", c.n);
    CHECK(poll_now(s, a.id, PROTO_MAX_FRAMES, &c, 1004) == ERR_OK);
    CHECKF(c.n == 1 && c.f[0].seq == PROTO_MAX_FRAMES, "%u frames", c.n);
    CHECKF(c.f[0].n_ids == 6000 - 1000 - (PROTO_MAX_FRAMES - 3), "%u ids", c.f[0].n_ids);
    /* past max_tokens: the request ends with an error and the worker is told to stop */
    CHECK(sched_cancel(s, 0, a.id, 1005, err) == ERR_OK);
    done(s, 0, a.id, PROTO_REASON_CANCELLED, 1005);
    in.max_tokens = 4;
    CHECK(sched_submit(s, &in, 1006, &a, err) == ERR_OK && a.position == 0);
    n_sent = 0;
    tokens(s, 0, a.id, 0, prompt, 3, "abc", 1007);
    tokens(s, 0, a.id, 3, prompt, 2, "ab", 1008); /* 5 > 4 */
    CHECK(poll_now(s, a.id, 0, &c, 1009) == ERR_OK);
    CHECKF(c.n == 4 && c.f[3].kind == PROTO_FRAME_ERROR && c.f[3].code == ERR_INTERNAL, "%u", c.n);
    CHECK(c.f[2].n_ids == 3); /* what came within max_tokens went out */
    CHECK(n_sent == 1 && sent[0].kind == 'c' && strcmp(sent[0].id, a.id) == 0);
    sched_free(s);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_submit_dispatch_and_stream),
        TEST(test_priorities_fifo),
        TEST(test_dispatch_spreads_over_slots),
        TEST(test_queue_full_is_busy),
        TEST(test_coalescing_and_resume),
        TEST(test_long_poll),
        TEST(test_crash_replay),
        TEST(test_replays_exhausted),
        TEST(test_crash_after_last_token_ends_with_length),
        TEST(test_cancel),
        TEST(test_stop_string_holdback),
        TEST(test_utf8_holdback_and_flush),
        TEST(test_client_timeout_and_linger),
        TEST(test_watchdog),
        TEST(test_watchdog_allows_a_long_prefill),
        TEST(test_dispatch_failure_keeps_request),
        TEST(test_worker_refusing_as_busy),
        TEST(test_ready_before_its_start_is_reported),
        TEST(test_reports),
        TEST(test_worker_fills_its_slots),
        TEST(test_crash_replays_every_request),
        TEST(test_watchdog_per_worker),
        TEST(test_prompt_longer_than_context),
        TEST(test_fair_share_equal_weights),
        TEST(test_fair_share_weights_two_to_one),
        TEST(test_idle_tenant_gets_no_credit),
        TEST(test_tenant_isolation),
        TEST(test_tenant_limits),
        TEST(test_finished_kept_per_tenant),
        TEST(test_context_before_any_worker),
        TEST(test_frames_held_for_a_slow_client),
        {0},
    };

    log_init("test_sched", LOG_ERROR);
    return harness_run(tests, argc, argv);
}
