/*
 * test_client.c: tests of the client library (proto/client.h) against a small real server run in
 * a thread of this test: an NNG rep socket that answers with proto's encoder and keeps requests
 * with numbered frames the test releases at will. Covers submit, the frame stream with long poll,
 * resume after the server restarts and in a new stream, timeouts with no server, busy and error
 * replies, cancel, status/workers/health, client_id de-duplication, keys, bad replies, tcp://.
 */
#include "common/clock.h"
#include "common/err.h"
#include "proto/client.h"
#include "proto/proto.h"
#include "tests/harness.h"
#include "tests/proto_peer.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PEER_FRAMES 8 /* of the requests submitted here: queued, started, 5 tokens, done */

static void
ipc_url(char *buf, size_t size, const char *name)
{
    snprintf(buf, size, "ipc://%s/%s.sock", harness_tmpdir(), name);
}

/* Reads frames of s until the stream ends; seqs[] gets their sequence numbers. */
static int
drain(struct client_stream *s, uint64_t *seqs, int max, char *err)
{
    int n = 0;

    while (!client_stream_ended(s) && n < max) {
        const struct proto_frame *f;
        int rc = client_stream_next(s, 1000, &f, err);

        if (rc != ERR_OK)
            return -rc;
        if (f != NULL)
            seqs[n++] = f->seq;
    }
    return n;
}

/* A peer with `released` frames per request on ipc://TMP/name.sock (or on name when it is a
 * URL), and a client connected to it with options o (may be NULL). */
struct fix {
    struct peer p;
    struct client *c;
};

static bool
fix_start(struct fix *x, const char *name, uint32_t released, const struct client_opts *o)
{
    char url[300], err[ERR_MSG_MAX];

    if (strstr(name, "://") != NULL)
        snprintf(url, sizeof(url), "%s", name);
    else
        ipc_url(url, sizeof(url), name);
    peer_init(&x->p, url);
    x->p.released = released;
    if (!peer_start(&x->p))
        return false;
    if (client_open(&x->c, x->p.url, o, err) != ERR_OK) {
        fprintf(stderr, "client_open %s: %s\n", x->p.url, err);
        return false;
    }
    return true;
}

static void
fix_stop(struct fix *x)
{
    client_close(x->c);
    peer_stop(&x->p);
    peer_destroy(&x->p);
}

/* Submits prompt with the defaults (and client_id, when not NULL) on client c. */
static int
submit(struct client *c, const char *prompt, const char *client_id, struct client_submitted *sub,
       char *err)
{
    struct proto_msg m;

    proto_submit_init(&m);
    m.u.submit.prompt = (char *)prompt;
    m.u.submit.client_id = (char *)client_id;
    m.u.submit.max_tokens = PEER_FRAMES - 3;
    return client_submit(c, &m.u.submit, sub, err);
}

/* ---- tests ---- */

static void
test_submit_and_stream(void)
{
    struct fix x;
    struct client_stream *s;
    struct client_submitted sub;
    const struct proto_frame *f;
    char err[ERR_MSG_MAX], text[256] = "";
    int kinds[PEER_FRAMES], n = 0, polls;

    CHECK(fix_start(&x, "basic", PEER_FRAMES, NULL));
    CHECKF(submit(x.c, "Once upon a time", NULL, &sub, err) == ERR_OK, "%s", err);
    CHECK(strcmp(sub.id, "r-1") == 0 && sub.position == 1);
    CHECK(strncmp(x.p.reqs[0].client_id, "c-", 2) == 0 && strlen(x.p.reqs[0].client_id) == 18);
    CHECK(client_stream_open(x.c, sub.id, 0, &s, err) == ERR_OK);
    while (!client_stream_ended(s)) {
        CHECKF(client_stream_next(s, 1000, &f, err) == ERR_OK, "%s", err);
        CHECK(f != NULL && f->seq == (uint64_t)n && n < PEER_FRAMES);
        kinds[n++] = f->kind;
        if (f->kind == PROTO_FRAME_TOKENS)
            strncat(text, f->text, f->text_len);
    }
    CHECK(n == PEER_FRAMES && client_stream_seq(s) == PEER_FRAMES);
    CHECK(kinds[0] == PROTO_FRAME_QUEUED && kinds[1] == PROTO_FRAME_STARTED);
    CHECK(kinds[2] == PROTO_FRAME_TOKENS && kinds[PEER_FRAMES - 1] == PROTO_FRAME_DONE);
    CHECKF(strcmp(text, "t2 t3 t4 t5 t6 ") == 0, "%s", text);
    CHECKF(x.p.polls == 1, "all frames came in one poll, got %d polls", x.p.polls);
    /* after the end, next returns nothing at once without asking the server */
    polls = x.p.polls;
    CHECK(client_stream_next(s, 1000, &f, err) == ERR_OK && f == NULL);
    CHECK(x.p.polls == polls);
    client_stream_close(s);
    fix_stop(&x);
}

static void *
release_later(void *arg)
{
    struct peer *p = arg;
    struct timespec ts = {0, 150 * 1000000};

    nanosleep(&ts, NULL);
    peer_release(p, 3);
    return NULL;
}

static void
test_long_poll_waits_then_wakes(void)
{
    struct fix x;
    struct client_stream *s;
    struct client_submitted sub;
    const struct proto_frame *f;
    char err[ERR_MSG_MAX];
    pthread_t t;
    uint64_t t0;
    double ms;

    CHECK(fix_start(&x, "longpoll", 2, NULL));
    CHECK(submit(x.c, "x", NULL, &sub, err) == ERR_OK);
    CHECK(client_stream_open(x.c, sub.id, 0, &s, err) == ERR_OK);
    CHECK(client_stream_next(s, 0, &f, err) == ERR_OK && f != NULL && f->seq == 0);
    CHECK(client_stream_next(s, 0, &f, err) == ERR_OK && f != NULL && f->seq == 1);
    /* nothing new: the poll waits its bound and returns no frame */
    t0 = clock_now_ns();
    CHECKF(client_stream_next(s, 200, &f, err) == ERR_OK, "%s", err);
    ms = clock_ms_between(t0, clock_now_ns());
    CHECK(f == NULL && client_stream_seq(s) == 2);
    CHECKF(ms >= 190 && ms < 1000, "an empty long poll of 200 ms took %.0f ms", ms);
    /* a frame that appears during a long poll is returned at once */
    pthread_create(&t, NULL, release_later, &x.p);
    t0 = clock_now_ns();
    CHECKF(client_stream_next(s, 5000, &f, err) == ERR_OK, "%s", err);
    ms = clock_ms_between(t0, clock_now_ns());
    pthread_join(t, NULL);
    CHECK(f != NULL && f->seq == 2 && f->kind == PROTO_FRAME_TOKENS);
    CHECKF(ms >= 100 && ms < 1500, "the poll returned after %.0f ms", ms);
    client_stream_close(s);
    fix_stop(&x);
}

static void
test_resume_after_server_restart(void)
{
    struct fix x;
    struct client_stream *s;
    struct client_submitted sub;
    const struct proto_frame *f;
    struct client_opts o = {.timeout_ms = 300};
    char err[ERR_MSG_MAX];
    uint64_t seqs[PEER_FRAMES * 2], t0;
    double ms;
    int n = 0, rc;

    CHECK(fix_start(&x, "restart", 4, &o));
    CHECK(submit(x.c, "x", NULL, &sub, err) == ERR_OK);
    CHECK(client_stream_open(x.c, sub.id, 0, &s, err) == ERR_OK);
    for (int i = 0; i < 3; i++) {
        CHECK(client_stream_next(s, 100, &f, err) == ERR_OK && f != NULL);
        seqs[n++] = f->seq;
    }
    /* the server goes away with frame 3 still buffered in the client: it is returned */
    peer_stop(&x.p);
    CHECK(client_stream_next(s, 100, &f, err) == ERR_OK && f != NULL && f->seq == 3);
    seqs[n++] = f->seq;
    /* then polls fail with a timeout, and the position stays */
    t0 = clock_now_ns();
    rc = client_stream_next(s, 100, &f, err);
    ms = clock_ms_between(t0, clock_now_ns());
    CHECKF(rc == ERR_TIMEOUT, "rc %d: %s", rc, err);
    CHECKF(ms < 2000, "a call bounded by 100 + 300 ms took %.0f ms", ms);
    CHECK(client_stream_seq(s) == 4 && !client_stream_ended(s));
    /* the server comes back (same state, more frames): the stream resumes where it was */
    x.p.released = PEER_FRAMES;
    CHECK(peer_start(&x.p));
    for (int tries = 0; !client_stream_ended(s) && tries < 50; tries++) {
        rc = client_stream_next(s, 200, &f, err);
        if (rc == ERR_OK && f != NULL)
            seqs[n++] = f->seq;
        else
            CHECKF(rc == ERR_OK || rc == ERR_TIMEOUT, "rc %d: %s", rc, err);
    }
    CHECK(client_stream_ended(s));
    CHECKF(n == PEER_FRAMES, "%d frames", n);
    for (int i = 0; i < n; i++)
        CHECKF(seqs[i] == (uint64_t)i, "frame %d has seq %llu", i, (unsigned long long)seqs[i]);
    client_stream_close(s);

    /* another stream (another process, say) resumes the same request from 5 */
    CHECK(client_stream_open(x.c, sub.id, 5, &s, err) == ERR_OK);
    n = drain(s, seqs, PEER_FRAMES, err);
    CHECKF(n == 3 && seqs[0] == 5 && seqs[2] == 7, "n %d: %s", n, err);
    client_stream_close(s);
    fix_stop(&x);
}

static void
test_no_server(void)
{
    struct client *c;
    struct proto_msg r;
    struct client_opts lazy = {.timeout_ms = 200, .lazy = true};
    char url[300], err[ERR_MSG_MAX];
    uint64_t t0;
    double ms;
    int rc;

    ipc_url(url, sizeof(url), "nobody");
    rc = client_open(&c, url, NULL, err);
    CHECKF(rc == ERR_IO && strstr(err, "cannot connect to ipc://") != NULL, "rc %d: %s", rc, err);
    CHECK(c == NULL);
    CHECK(client_open(&c, "bogus://x", NULL, err) == ERR_BAD_REQUEST);
    CHECKF(client_open(&c, "tls+tcp://127.0.0.1:1", NULL, err) == ERR_BAD_REQUEST, "%s", err);
    CHECK(strstr(err, "CA file") != NULL);
    CHECK(client_open(&c, url, &lazy, err) == ERR_OK);
    t0 = clock_now_ns();
    rc = client_health(c, &r, err);
    ms = clock_ms_between(t0, clock_now_ns());
    CHECKF(rc == ERR_TIMEOUT && strstr(err, "no connection within 200 ms") != NULL, "rc %d: %s", rc,
           err);
    CHECKF(ms >= 190 && ms < 1500, "%.0f ms", ms);
    client_close(c);
}

static void
test_refusals(void)
{
    struct fix x;
    struct client_stream *s;
    struct proto_msg m;
    struct client_submitted sub;
    const struct proto_frame *f;
    char err[ERR_MSG_MAX];
    int rc;

    CHECK(fix_start(&x, "refusals", PEER_FRAMES, NULL));
    rc = submit(x.c, "busy", NULL, &sub, err);
    CHECKF(rc == ERR_BUSY && sub.retry_after_ms == 123, "rc %d: %s", rc, err);
    CHECKF(strcmp(err, "queue full (1 queued) (retry after 123 ms)") == 0, "%s", err);
    /* refused locally, before sending */
    proto_submit_init(&m);
    m.u.submit.prompt = "fine";
    m.u.submit.max_tokens = 0;
    rc = client_submit(x.c, &m.u.submit, &sub, err);
    CHECKF(rc == ERR_BAD_REQUEST && strcmp(err, "max_tokens must be in [1, 8192], got 0") == 0,
           "rc %d: %s", rc, err);
    CHECK(x.p.submits == 0);
    rc = client_cancel(x.c, "r-99", err);
    CHECKF(rc == ERR_NOT_FOUND && strcmp(err, "no request with this id") == 0, "%d %s", rc, err);
    CHECK(client_stream_open(x.c, "r-99", 0, &s, err) == ERR_OK);
    CHECK(client_stream_next(s, 0, &f, err) == ERR_NOT_FOUND);
    client_stream_close(s);
    CHECK(client_stream_open(x.c, "", 0, &s, err) == ERR_BAD_REQUEST);
    /* a reply that is not a message, and a reply of the wrong type */
    rc = submit(x.c, "garbage", NULL, &sub, err);
    CHECKF(rc == ERR_PROTOCOL && strstr(err, "bad reply from ipc://") != NULL, "%d %s", rc, err);
    rc = submit(x.c, "wrongtype", NULL, &sub, err);
    CHECKF(rc == ERR_PROTOCOL && strstr(err, "answered a submit with a health_info") != NULL,
           "%d %s", rc, err);
    fix_stop(&x);
}

static void
test_cancel_ends_stream(void)
{
    struct fix x;
    struct client_stream *s;
    struct client_submitted sub;
    const struct proto_frame *f = NULL;
    char err[ERR_MSG_MAX];

    CHECK(fix_start(&x, "cancel", 3, NULL));
    CHECK(submit(x.c, "x", NULL, &sub, err) == ERR_OK);
    CHECKF(client_cancel(x.c, sub.id, err) == ERR_OK, "%s", err);
    CHECK(client_stream_open(x.c, sub.id, 0, &s, err) == ERR_OK);
    while (!client_stream_ended(s))
        CHECKF(client_stream_next(s, 1000, &f, err) == ERR_OK && f != NULL, "%s", err);
    CHECK(f->seq == 3 && f->kind == PROTO_FRAME_DONE && f->reason == PROTO_REASON_CANCELLED);
    client_stream_close(s);
    fix_stop(&x);
}

static void
test_status_workers_health(void)
{
    struct fix x;
    struct proto_msg r;
    char err[ERR_MSG_MAX];

    CHECK(fix_start(&x, "info", PEER_FRAMES, NULL));
    CHECKF(client_status(x.c, &r, err) == ERR_OK, "%s", err);
    CHECK(r.type == PROTO_STATUS_INFO && r.u.status.queued_interactive == 3);
    CHECK(r.u.status.n_tenants == 1 && strcmp(r.u.status.tenants[0].name, "alice") == 0);
    CHECK(r.u.status.tenants[0].gen_tokens == 300 && r.u.status.uptime_ms == 5000);
    proto_msg_free(&r);
    CHECKF(client_workers(x.c, &r, err) == ERR_OK, "%s", err);
    CHECK(r.type == PROTO_WORKERS_INFO && r.u.workers.n_workers == 2);
    CHECK(r.u.workers.workers[0].pid == 4242 && r.u.workers.workers[0].n_requests == 1);
    CHECK(r.u.workers.workers[1].state == PROTO_WSTATE_FATAL);
    CHECK(strcmp(r.u.workers.workers[1].detail, "exit 2: bad model") == 0);
    proto_msg_free(&r);
    CHECKF(client_health(x.c, &r, err) == ERR_OK, "%s", err);
    CHECK(r.type == PROTO_HEALTH_INFO && r.u.health.ready && r.u.health.workers_ready == 1);
    proto_msg_free(&r);
    fix_stop(&x);
}

static void
test_client_id_and_key(void)
{
    struct fix x;
    struct client *k;
    struct proto_msg r;
    struct client_submitted a, b;
    struct client_opts with_key = {.key = "tk_secret"};
    char err[ERR_MSG_MAX];
    int rc;

    CHECK(fix_start(&x, "keys", PEER_FRAMES, NULL));
    x.p.key = "tk_secret";
    CHECK(client_open(&k, x.p.url, &with_key, err) == ERR_OK);
    rc = client_health(x.c, &r, err);
    CHECKF(rc == ERR_UNAUTHORIZED && strcmp(err, "wrong or missing key") == 0, "%d %s", rc, err);
    CHECKF(client_health(k, &r, err) == ERR_OK, "%s", err);
    proto_msg_free(&r);
    /* the same client_id twice is the same request; without one, two requests */
    CHECK(submit(k, "x", "job-17", &a, err) == ERR_OK);
    CHECK(submit(k, "x", "job-17", &b, err) == ERR_OK);
    CHECK(strcmp(a.id, b.id) == 0);
    CHECK(submit(k, "x", NULL, &a, err) == ERR_OK);
    CHECK(submit(k, "x", NULL, &b, err) == ERR_OK);
    CHECK(strcmp(a.id, b.id) != 0);
    client_close(k);
    fix_stop(&x);
}

struct worker_arg {
    struct client *c;
    int frames;
    int rc;
};

static void *
submit_and_drain(void *arg)
{
    struct worker_arg *w = arg;
    struct client_submitted sub;
    struct client_stream *s;
    uint64_t seqs[PEER_FRAMES];
    char err[ERR_MSG_MAX];

    w->rc = submit(w->c, "concurrent", NULL, &sub, err);
    if (w->rc != ERR_OK)
        return NULL;
    w->rc = client_stream_open(w->c, sub.id, 0, &s, err);
    if (w->rc != ERR_OK)
        return NULL;
    w->frames = drain(s, seqs, PEER_FRAMES, err);
    client_stream_close(s);
    return NULL;
}

static void
test_tcp_and_threads(void)
{
    struct fix x;
    struct worker_arg args[4];
    pthread_t t[4];

    CHECK(fix_start(&x, "tcp://127.0.0.1:0", PEER_FRAMES, NULL));
    for (int i = 0; i < 4; i++) {
        args[i] = (struct worker_arg){x.c, 0, -1};
        pthread_create(&t[i], NULL, submit_and_drain, &args[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECKF(args[i].rc == ERR_OK && args[i].frames == PEER_FRAMES, "thread %d: rc %d, %d", i,
               args[i].rc, args[i].frames);
    }
    CHECK(x.p.n_reqs == 4);
    fix_stop(&x);
}

static void
test_tls_loopback(void)
{
    struct peer p;
    struct client *c;
    struct client_stream *s;
    struct client_submitted sub;
    struct client_opts good = {.ca_file = "tests/tls/ca.pem", .timeout_ms = 2000};
    struct client_opts other = {.ca_file = "tests/tls/other-ca.pem", .timeout_ms = 2000};
    struct client_opts missing = {.ca_file = "tests/tls/none.pem"};
    struct proto_msg r;
    uint64_t seqs[PEER_FRAMES];
    char err[ERR_MSG_MAX];
    int rc, n;

    peer_init(&p, "tls+tcp://127.0.0.1:0");
    p.cert_file = "tests/tls/server.pem";
    CHECK(peer_start(&p));
    CHECKF(client_open(&c, p.url, &good, err) == ERR_OK, "%s: %s", p.url, err);
    CHECKF(client_health(c, &r, err) == ERR_OK, "%s", err);
    proto_msg_free(&r);
    CHECK(submit(c, "over tls", NULL, &sub, err) == ERR_OK);
    CHECK(client_stream_open(c, sub.id, 0, &s, err) == ERR_OK);
    n = drain(s, seqs, PEER_FRAMES, err);
    CHECKF(n == PEER_FRAMES, "%d frames: %s", n, err);
    client_stream_close(s);
    client_close(c);
    /* a server certificate that the given CA did not sign is refused */
    rc = client_open(&c, p.url, &other, err);
    CHECKF(rc == ERR_IO && c == NULL, "rc %d: %s", rc, err);
    rc = client_open(&c, p.url, &missing, err);
    CHECKF(rc == ERR_BAD_REQUEST && strstr(err, "CA file tests/tls/none.pem") != NULL, "rc %d: %s",
           rc, err);
    peer_stop(&p);
    peer_destroy(&p);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_submit_and_stream),
        TEST(test_long_poll_waits_then_wakes),
        TEST(test_resume_after_server_restart),
        TEST(test_no_server),
        TEST(test_refusals),
        TEST(test_cancel_ends_stream),
        TEST(test_status_workers_health),
        TEST(test_client_id_and_key),
        TEST(test_tcp_and_threads),
        TEST(test_tls_loopback),
        {0},
    };
    return harness_run(tests, argc, argv);
}
