/*
 * test_wlink.c: orchd's worker links over real AF_UNIX socketpairs. The test holds the worker's
 * end and speaks the worker side of the protocol by hand: the probe arrives on attach, a ready
 * with the wrong nonce is ignored and the right one makes the slot ready, a dispatch comes out,
 * tokens and done go into the scheduler's stream, a cancel comes out; a detached worker's later
 * messages reach nobody and the next worker gets its own probe; a worker that dies in the middle
 * of a message (what wedged NNG's reaper when the links were NNG sockets) or sends a broken frame
 * costs its link only; dispatches queue while the worker does not read, up to a bound, and then
 * all arrive whole.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "orchd/wlink.h"
#include "tests/harness.h"
#include "tests/wire.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static struct wlink *the_link;

static int
op_dispatch(void *ud, int slot, const struct proto_dispatch *d, char *err)
{
    (void)ud;
    return wlink_dispatch(the_link, slot, d, err);
}

static void
op_cancel(void *ud, int slot, const char *id)
{
    (void)ud;
    wlink_cancel(the_link, slot, id);
}

static void
op_kill(void *ud, int slot, const char *why)
{
    (void)ud, (void)slot, (void)why;
}

static const struct sched_ops ops = {NULL, op_dispatch, op_cancel, op_kill};

/* The worker's side of one link. */
struct peer {
    int fd;
    struct link_buf in, out;
};

/* Attaches a new socketpair to slot; the test keeps the worker's end in p. */
static bool
peer_attach(struct peer *p, int slot)
{
    char err[ERR_MSG_MAX];
    int sv[2];

    memset(p, 0, sizeof(*p));
    p->fd = -1;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
        return false;
    p->fd = sv[1];
    if (wlink_attach(the_link, slot, sv[0], err) != ERR_OK) {
        printf("  attach: %s\n", err);
        return false;
    }
    return true;
}

static void
peer_close(struct peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    link_buf_free(&p->in);
    link_buf_free(&p->out);
    p->fd = -1;
}

/* Receives one orchd -> worker message (2 s bound). */
static int
recv_cmd(struct peer *p, struct proto_msg *m)
{
    return wire_recv(&p->in, p->fd, PROTO_LINK_WORKER_CMD, 2000, m);
}

static bool
send_evt(struct peer *p, const struct proto_msg *m)
{
    return wire_send(&p->out, p->fd, m);
}

/* Answers the probe on p with a ready of pid. */
static bool
peer_ready(struct peer *p, int pid)
{
    struct proto_msg m, ev = {.type = PROTO_READY};

    if (recv_cmd(p, &m) != ERR_OK || m.type != PROTO_PROBE)
        return false;
    ev.u.ready = (struct proto_ready){m.u.probe.nonce, pid, 256, 512, 1};
    proto_msg_free(&m);
    return send_evt(p, &ev);
}

/* True when orchd closed or shut down its end of p's link within 2 s. */
static bool
peer_sees_end(struct peer *p)
{
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    char c;

    return poll(&pfd, 1, 2000) == 1 && recv(p->fd, &c, 1, MSG_DONTWAIT) == 0;
}

/* Polls the scheduler until fn says yes or 2 s pass. */
static bool
wait_for(bool (*fn)(struct sched *), struct sched *s)
{
    for (int i = 0; i < 200; i++) {
        if (fn(s))
            return true;
        sleep_ms(10);
    }
    return false;
}

static bool
is_ready(struct sched *s)
{
    struct proto_health_info h;

    sched_health(s, &h);
    return h.ready;
}

static bool
is_idle(struct sched *s)
{
    return sched_active(s) == 0;
}

struct catcher {
    struct sched_waiter w;
    uint32_t n;
    enum proto_frame_kind last;
    char text[64];
};

static void
catch_wake(struct sched_waiter *w, const struct proto_frames *f)
{
    struct catcher *c = (struct catcher *)w;

    c->n = f->n_frames;
    c->text[0] = '\0';
    for (uint32_t i = 0; i < f->n_frames; i++) {
        if (f->frames[i].kind == PROTO_FRAME_TOKENS)
            snprintf(c->text, sizeof(c->text), "%s", f->frames[i].text);
        c->last = f->frames[i].kind;
    }
}

static void
test_probe_ready_dispatch_stream(void)
{
    struct sched_config cfg;
    struct sched *s;
    struct sched_submit in = {0};
    struct sched_admit a;
    struct proto_msg m, ev;
    struct catcher c = {.w.wake = catch_wake};
    char err[ERR_MSG_MAX];
    static const int32_t prompt[] = {1, 2, 3};
    struct peer w;
    uint64_t nonce;

    sched_config_default(&cfg);
    cfg.n_slots = 2;
    s = sched_new(&cfg, &ops, clock_now_ms());
    CHECKF(wlink_open(&the_link, 2, s, err) == ERR_OK, "%s", err);
    sched_worker_started(s, 1, 999, 0, clock_now_ms());
    CHECK(peer_attach(&w, 1));
    CHECK(recv_cmd(&w, &m) == ERR_OK && m.type == PROTO_PROBE);
    nonce = m.u.probe.nonce;
    proto_msg_free(&m);
    /* a ready that does not answer this probe is ignored */
    ev = (struct proto_msg){.type = PROTO_READY};
    ev.u.ready = (struct proto_ready){nonce + 1, 999, 256, 512, 2};
    CHECK(send_evt(&w, &ev));
    sleep_ms(100);
    CHECK(!is_ready(s));
    ev.u.ready.nonce = nonce;
    CHECK(send_evt(&w, &ev));
    CHECK(wait_for(is_ready, s));
    /* a request goes out on this slot's link */
    in.prompt_ids = prompt;
    in.n_prompt = 3;
    proto_sampling_default(&in.sampling);
    in.sampling.seed = 42;
    in.max_tokens = 4;
    CHECK(sched_submit(s, &in, clock_now_ms(), &a, err) == ERR_OK && a.position == 0);
    CHECK(recv_cmd(&w, &m) == ERR_OK && m.type == PROTO_DISPATCH);
    CHECK(strcmp(m.u.dispatch.id, a.id) == 0 && m.u.dispatch.n_prompt == 3);
    CHECK(m.u.dispatch.sampling.seed == 42 && m.u.dispatch.n_replay == 0);
    proto_msg_free(&m);
    ev = (struct proto_msg){.type = PROTO_TOKENS};
    ev.u.tokens = (struct proto_wtokens){a.id, 0, (int32_t[]){7, 8}, 2, " hi", 3};
    CHECK(send_evt(&w, &ev));
    ev = (struct proto_msg){.type = PROTO_DONE};
    ev.u.done = (struct proto_wdone){a.id, PROTO_REASON_LENGTH, {3, 2, 0, 1.5, 2.5}};
    CHECK(send_evt(&w, &ev));
    CHECK(wait_for(is_idle, s));
    CHECK(sched_poll(s, 0, a.id, 2, 0, clock_now_ms(), &c.w, err) == ERR_OK);
    CHECK(c.n == 2 && strcmp(c.text, " hi") == 0 && c.last == PROTO_FRAME_DONE);
    /* a cancel goes out too */
    CHECK(sched_submit(s, &in, clock_now_ms(), &a, err) == ERR_OK);
    CHECK(recv_cmd(&w, &m) == ERR_OK && m.type == PROTO_DISPATCH);
    proto_msg_free(&m);
    CHECK(sched_cancel(s, 0, a.id, clock_now_ms(), err) == ERR_OK);
    CHECK(recv_cmd(&w, &m) == ERR_OK && m.type == PROTO_CANCEL && strcmp(m.u.ref.id, a.id) == 0);
    proto_msg_free(&m);
    peer_close(&w);
    wlink_close(the_link);
    sched_free(s);
}

/*
 * A worker ends (it is detached) while its end of the link is still open: what it sends after
 * reaches nobody, and the next worker's link gets its own probe; a ready carrying the old probe's
 * nonce is ignored there.
 */
static void
test_detach_then_next_worker(void)
{
    struct sched_config cfg;
    struct sched *s;
    struct proto_msg m, ev = {.type = PROTO_READY};
    char err[ERR_MSG_MAX];
    struct peer old, next;
    uint64_t old_nonce;

    sched_config_default(&cfg);
    s = sched_new(&cfg, &ops, clock_now_ms());
    CHECKF(wlink_open(&the_link, 1, s, err) == ERR_OK, "%s", err);
    sched_worker_started(s, 0, 501, 0, clock_now_ms());
    CHECK(peer_attach(&old, 0));
    CHECK(recv_cmd(&old, &m) == ERR_OK && m.type == PROTO_PROBE);
    old_nonce = m.u.probe.nonce;
    proto_msg_free(&m);
    ev.u.ready = (struct proto_ready){old_nonce, 501, 256, 512, 1};
    CHECK(send_evt(&old, &ev));
    CHECK(wait_for(is_ready, s));
    wlink_detach(the_link, 0);
    sched_worker_exited(s, 0, "killed by signal 9", false, clock_now_ms());
    CHECK(peer_sees_end(&old));
    sched_worker_started(s, 0, 502, 1, clock_now_ms());
    CHECK(peer_attach(&next, 0));
    CHECK(recv_cmd(&next, &m) == ERR_OK && m.type == PROTO_PROBE);
    CHECK(m.u.probe.nonce != old_nonce);
    ev.u.ready = (struct proto_ready){old_nonce, 502, 256, 512, 1};
    CHECK(send_evt(&next, &ev));
    sleep_ms(100);
    CHECK(!is_ready(s));
    ev.u.ready.nonce = m.u.probe.nonce;
    proto_msg_free(&m);
    CHECK(send_evt(&next, &ev));
    CHECK(wait_for(is_ready, s));
    peer_close(&old);
    peer_close(&next);
    wlink_close(the_link);
    sched_free(s);
}

/* Sends the first `part` bytes of a frame of m; the rest never comes. */
static bool
send_part(struct peer *p, const struct proto_msg *m, size_t part)
{
    struct link_buf b = {0};
    char err[ERR_MSG_MAX];
    void *buf;
    size_t len;
    bool ok;

    if (!wire_encode(m, &buf, &len))
        return false;
    ok = link_queue(&b, buf, len, SIZE_MAX, err) == ERR_OK && part <= b.len &&
         send(p->fd, b.data, part, MSG_NOSIGNAL) == (ssize_t)part;
    free(buf);
    link_buf_free(&b);
    return ok;
}

/*
 * A worker killed in the middle of a message: its link goes down, nothing waits on the half
 * message, and the slot takes its next worker at once. A worker sending a frame longer than any
 * message: its link is shut down (it sees orchd gone); the other slot is not disturbed.
 */
static void
test_dead_or_broken_worker_costs_its_link(void)
{
    struct sched_config cfg;
    struct sched *s;
    struct proto_msg hb = {.type = PROTO_HEARTBEAT};
    struct proto_dispatch d = {0};
    struct peer w, next, other;
    char err[ERR_MSG_MAX];
    uint64_t t0;
    static const uint8_t huge[4] = {0x7f, 0xff, 0xff, 0xff};
    static int32_t prompt[] = {1, 2, 3};

    sched_config_default(&cfg);
    cfg.n_slots = 2;
    s = sched_new(&cfg, &ops, clock_now_ms());
    CHECKF(wlink_open(&the_link, 2, s, err) == ERR_OK, "%s", err);
    sched_worker_started(s, 0, 601, 0, clock_now_ms());
    sched_worker_started(s, 1, 602, 0, clock_now_ms());
    CHECK(peer_attach(&w, 0) && peer_ready(&w, 601));
    CHECK(peer_attach(&other, 1) && peer_ready(&other, 602));
    hb.u.heartbeat = (struct proto_heartbeat){1, 12345};
    CHECK(send_part(&w, &hb, 6)); /* the header and two bytes of the body */
    sleep_ms(50);
    peer_close(&w);
    d.id = "r1";
    d.prompt_ids = prompt;
    d.n_prompt = 3;
    proto_sampling_default(&d.sampling);
    d.sampling.seed = 7;
    d.max_tokens = 1;
    for (t0 = clock_now_ms(); clock_now_ms() - t0 < 2000; sleep_ms(10))
        if (wlink_dispatch(the_link, 0, &d, err) == ERR_IO && strstr(err, "not connected") != NULL)
            break;
    CHECKF(strstr(err, "not connected") != NULL, "dispatch to the dead worker: %s", err);
    t0 = clock_now_ms();
    wlink_detach(the_link, 0);
    CHECKF(clock_now_ms() - t0 < 500, "detach took %llu ms",
           (unsigned long long)(clock_now_ms() - t0));
    sched_worker_exited(s, 0, "killed by signal 9", false, clock_now_ms());
    sched_worker_started(s, 0, 603, 1, clock_now_ms());
    CHECK(peer_attach(&next, 0) && peer_ready(&next, 603));
    /* a frame announcing 2 GiB: that worker's link is shut down */
    CHECK(send(next.fd, huge, sizeof(huge), MSG_NOSIGNAL) == (ssize_t)sizeof(huge));
    CHECK(peer_sees_end(&next));
    /* the other worker's link works on */
    hb.u.heartbeat = (struct proto_heartbeat){0, 1};
    CHECK(send_evt(&other, &hb));
    CHECKF(wlink_dispatch(the_link, 1, &d, err) == ERR_OK, "%s", err);
    {
        struct proto_msg m;

        CHECK(recv_cmd(&other, &m) == ERR_OK && m.type == PROTO_DISPATCH);
        proto_msg_free(&m);
    }
    peer_close(&next);
    peer_close(&other);
    wlink_close(the_link);
    sched_free(s);
}

/*
 * Dispatches of about 220 kB each while the worker reads nothing: they queue in orchd (the socket
 * takes a few hundred kB) until WLINK_OUT_MAX, then a dispatch fails at once instead of blocking;
 * when the worker reads, every queued one arrives whole and in order.
 */
static void
test_backpressure_is_bounded(void)
{
    struct sched_config cfg;
    struct sched *s;
    struct proto_dispatch d = {0};
    struct peer w;
    char err[ERR_MSG_MAX], id[16];
    uint32_t n_ids = PROTO_MAX_IDS, queued = 0, got = 0;
    int32_t *ids = calloc(n_ids, sizeof(*ids));
    int rc = ERR_OK;

    CHECK(ids != NULL);
    for (uint32_t i = 0; i < n_ids; i++)
        ids[i] = (int32_t)(i * 7919u % 32000u);
    sched_config_default(&cfg);
    s = sched_new(&cfg, &ops, clock_now_ms());
    CHECKF(wlink_open(&the_link, 1, s, err) == ERR_OK, "%s", err);
    CHECK(peer_attach(&w, 0));
    d.id = id;
    d.prompt_ids = ids;
    d.n_prompt = n_ids;
    d.replay_ids = ids;
    d.n_replay = 8000;
    proto_sampling_default(&d.sampling);
    d.sampling.seed = 7;
    d.max_tokens = 8192;
    while (queued < 200) {
        snprintf(id, sizeof(id), "r%u", queued);
        if ((rc = wlink_dispatch(the_link, 0, &d, err)) != ERR_OK)
            break;
        queued++;
    }
    CHECKF(rc == ERR_IO && strstr(err, "queued") != NULL, "dispatch %u: %s", queued, err);
    CHECKF(queued >= 20 && queued < 200, "%u dispatches queued", queued);
    {
        struct proto_msg m;

        CHECK(recv_cmd(&w, &m) == ERR_OK && m.type == PROTO_PROBE);
        proto_msg_free(&m);
        while (got < queued && recv_cmd(&w, &m) == ERR_OK) {
            snprintf(id, sizeof(id), "r%u", got);
            if (m.type != PROTO_DISPATCH || strcmp(m.u.dispatch.id, id) != 0 ||
                m.u.dispatch.n_prompt != n_ids || m.u.dispatch.n_replay != 8000 ||
                memcmp(m.u.dispatch.prompt_ids, ids, n_ids * sizeof(*ids)) != 0 ||
                memcmp(m.u.dispatch.replay_ids, ids, 8000 * sizeof(*ids)) != 0) {
                proto_msg_free(&m);
                break;
            }
            proto_msg_free(&m);
            got++;
        }
    }
    CHECKF(got == queued, "%u of %u dispatches arrived whole", got, queued);
    peer_close(&w);
    wlink_close(the_link);
    sched_free(s);
    free(ids);
}

static void
test_dispatch_without_worker_fails(void)
{
    struct sched_config cfg;
    struct sched *s;
    struct proto_dispatch d = {0};
    char err[ERR_MSG_MAX];

    sched_config_default(&cfg);
    s = sched_new(&cfg, &ops, clock_now_ms());
    CHECKF(wlink_open(&the_link, 1, s, err) == ERR_OK, "%s", err);
    d.id = "r1";
    CHECK(wlink_dispatch(the_link, 0, &d, err) == ERR_IO);
    CHECKF(strstr(err, "not connected") != NULL, "%s", err);
    CHECK(wlink_dispatch(the_link, 5, &d, err) == ERR_BAD_REQUEST);
    CHECK(wlink_attach(the_link, 5, -1, err) == ERR_BAD_REQUEST);
    wlink_detach(the_link, 0); /* none attached: nothing happens */
    wlink_close(the_link);
    CHECK(wlink_open(&the_link, 0, s, err) == ERR_BAD_REQUEST);
    sched_free(s);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_probe_ready_dispatch_stream), TEST(test_dispatch_without_worker_fails),
        TEST(test_detach_then_next_worker),     TEST(test_dead_or_broken_worker_costs_its_link),
        TEST(test_backpressure_is_bounded),     {0},
    };

    log_init("test_wlink", LOG_ERROR);
    return harness_run(tests, argc, argv);
}
