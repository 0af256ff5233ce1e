/*
 * test_orchd_serve.c: orchd with real `workerd serve` processes on stories260K, driven through
 * the client library: concurrent streams give exactly `workerd generate`'s ids and text (also
 * with a stop string, and 8 streams on one worker of 4 slots, batched); a worker killed with
 * SIGKILL mid-stream, during prefill or with 3 requests in flight costs no token (the streams
 * complete with the undisturbed ids, the slot restarts); cancel frees the worker's seat within
 * 100 ms with no token frame after it, also for one of several requests in flight while the others
 * go on; a client that stops polling is cancelled; 4 workers
 * map the weights once; kill -9 of orchd leaves no workerd; workers that cannot load the model go
 * fatal, not into a fork loop. Prints the restart time after a kill -9, the first-token latency
 * through orchd next to `workerd generate`'s, and the workers' memory.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "proto/client.h"
#include "tests/harness.h"
#include "tests/orchd_daemon.h"

#include <jansson.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_GEN 1024
/* The bound on a cancel: 100 ms. The sanitizer build runs every step several times slower
 * (and CI runs it on two loaded cores), so there it gets 400 ms. */
#ifdef __SANITIZE_ADDRESS__
#define CANCEL_MS 400
#else
#define CANCEL_MS 100
#endif

/* What one generation gave: from `workerd generate --json`, or from an orchd stream. */
struct run {
    int32_t ids[MAX_GEN];
    uint32_t n;
    char text[8192];
    size_t text_len;
    enum proto_reason reason;
    double first_ms; /* submit to the first tokens frame (streams) or prefill_ms (generate) */
};

/* Runs workerd generate --json for the reference. */
static bool
reference(const char *prompt, uint32_t n, float temp, uint64_t seed, const char *stop,
          struct run *out)
{
    const char *build = getenv("BUILD");
    char model[512], cmd[16384], buf[65536];
    size_t len;
    json_t *root, *ids;
    json_error_t jerr;
    FILE *p;

    memset(out, 0, sizeof(*out));
    if (!harness_shared(model, sizeof(model), "models/stories260K.gguf"))
        return false;
    snprintf(cmd, sizeof(cmd),
             "%s/workerd generate -m %s -n %u --temp %g --seed %llu --json %s%s%s -- '%s' "
             "2>/dev/null",
             build != NULL ? build : "build", model, n, (double)temp, (unsigned long long)seed,
             stop != NULL ? "--stop '" : "", stop != NULL ? stop : "", stop != NULL ? "'" : "",
             prompt);
    p = popen(cmd, "r");
    if (p == NULL)
        return false;
    len = fread(buf, 1, sizeof(buf) - 1, p);
    pclose(p);
    buf[len] = '\0';
    root = json_loads(buf, 0, &jerr);
    if (root == NULL) {
        printf("  %s: not JSON: %s\n", cmd, jerr.text);
        return false;
    }
    ids = json_object_get(root, "gen_ids");
    for (size_t i = 0; i < json_array_size(ids) && i < MAX_GEN; i++)
        out->ids[out->n++] = (int32_t)json_integer_value(json_array_get(ids, i));
    snprintf(out->text, sizeof(out->text), "%s",
             json_string_value(json_object_get(root, "text"))
                 ? json_string_value(json_object_get(root, "text"))
                 : "");
    out->text_len = strlen(out->text);
    out->first_ms = json_real_value(json_object_get(root, "prefill_ms"));
    json_decref(root);
    return true;
}

static int
submit(struct client *c, const char *prompt, uint32_t n, float temp, uint64_t seed,
       const char *stop, struct client_submitted *out, char *err)
{
    struct proto_msg m;

    proto_submit_init(&m);
    if (stop != NULL) {
        m.u.submit.stop = (char **)&stop;
        m.u.submit.n_stop = 1;
    }
    m.u.submit.prompt = (char *)prompt;
    m.u.submit.max_tokens = n;
    m.u.submit.sampling.temperature = temp;
    m.u.submit.sampling.seed = seed;
    return client_submit(c, &m.u.submit, out, err);
}

/*
 * Reads request id's stream to its end into out; out->first_ms counts from t0_ns (taken before
 * the submit). on_tokens (may be NULL) is called once, at the first tokens frame. Returns ERR_OK,
 * or the error of the call that failed (err says).
 */
static int
stream(struct client *c, const char *id, uint64_t t0_ns, struct run *out, void (*on_tokens)(void *),
       void *ud, char *err)
{
    struct client_stream *s;
    const struct proto_frame *f;
    int rc;

    memset(out, 0, sizeof(*out));
    if ((rc = client_stream_open(c, id, 0, &s, err)) != ERR_OK)
        return rc;
    while (!client_stream_ended(s)) {
        if ((rc = client_stream_next(s, 5000, &f, err)) != ERR_OK)
            break;
        if (f == NULL)
            continue;
        if (f->kind == PROTO_FRAME_TOKENS) {
            if (out->n == 0) {
                out->first_ms = clock_ms_between(t0_ns, clock_now_ns());
                if (on_tokens != NULL)
                    on_tokens(ud);
            }
            for (uint32_t i = 0; i < f->n_ids && out->n < MAX_GEN; i++)
                out->ids[out->n++] = f->ids[i];
            if (out->text_len + f->text_len < sizeof(out->text)) {
                memcpy(out->text + out->text_len, f->text, f->text_len);
                out->text_len += f->text_len;
            }
        } else if (f->kind == PROTO_FRAME_DONE) {
            out->reason = f->reason;
        } else if (f->kind == PROTO_FRAME_ERROR) {
            rc = err_set(err, f->code, "error frame: %s", f->msg);
            break;
        }
    }
    client_stream_close(s);
    return rc;
}

static bool
same_run(const struct run *a, const struct run *b)
{
    if (a->n != b->n || memcmp(a->ids, b->ids, a->n * sizeof(a->ids[0])) != 0) {
        printf("  ids differ: %u vs %u ids\n", a->n, b->n);
        return false;
    }
    if (a->text_len != b->text_len || memcmp(a->text, b->text, a->text_len) != 0) {
        printf("  text differs:\n  [%.*s]\n  [%.*s]\n", (int)a->text_len, a->text, (int)b->text_len,
               b->text);
        return false;
    }
    return true;
}

/* Waits until health says ready with n workers (10 s bound). */
static bool
wait_ready(struct daemon *d, uint32_t n)
{
    struct proto_msg rep;
    char err[ERR_MSG_MAX];

    for (int i = 0; i < 1000; i++) {
        bool ok = client_health(d->c, &rep, err) == ERR_OK && rep.u.health.workers_ready >= n;

        proto_msg_free(&rep);
        if (ok)
            return true;
        sleep_ms(10);
    }
    return false;
}

static const char *const prompts[] = {
    "Once upon a time",    "The little dog",  "Tim and Sam went", "One day, a girl",
    "There was a big red", "The sun was hot", "Mom said",         "A bird sat on",
};

/* One client thread: prompt k, seed 100 + k, temperature 0.8, n tokens (0: 48). */
struct job {
    struct daemon *d;
    int k;
    uint32_t n;
    atomic_int *streaming; /* may be NULL: counts the jobs that have had tokens */
    atomic_int *finished;  /* may be NULL: counts the jobs whose stream ended */
    char id[PROTO_MAX_ID_BYTES + 1];
    struct run got;
    int rc;
    char err[ERR_MSG_MAX];
};

static uint32_t
job_n(const struct job *j)
{
    return j->n != 0 ? j->n : 48;
}

static void
count_streaming(void *ud)
{
    struct job *j = ud;

    if (j->streaming != NULL)
        atomic_fetch_add(j->streaming, 1);
}

static void *
run_job(void *arg)
{
    struct job *j = arg;
    struct client_submitted s;

    j->rc = submit(j->d->c, prompts[j->k], job_n(j), 0.8f, 100 + (uint64_t)j->k, NULL, &s, j->err);
    if (j->rc == ERR_OK) {
        snprintf(j->id, sizeof(j->id), "%s", s.id);
        j->rc = stream(j->d->c, s.id, 0, &j->got, count_streaming, j, j->err);
    }
    if (j->finished != NULL)
        atomic_fetch_add(j->finished, 1);
    return NULL;
}

/* Checks that job j's stream completed with the ids and text of `workerd generate`. */
static bool
job_matches(const struct job *j)
{
    struct run want;

    if (j->rc != ERR_OK) {
        printf("  request %d: %s\n", j->k, j->err);
        return false;
    }
    return reference(prompts[j->k], job_n(j), 0.8f, 100 + (uint64_t)j->k, NULL, &want) &&
           same_run(&j->got, &want);
}

/* Starts orchd with EXTRA and waits for n ready workers; on failure prints its log, stops it. */
static bool
start_ready(struct daemon *d, const char *const *extra, uint32_t n)
{
    if (daemon_start(d, NULL, extra) && wait_ready(d, n))
        return true;
    daemon_print_log(d);
    daemon_stop(d);
    return false;
}

/* Worker slot's pid, requests in flight and slot count, as the workers reply says. */
struct load {
    pid_t pid;
    uint32_t in_flight, slots;
    bool runs_id; /* one of its requests is the id asked for */
};

static bool
worker_load(struct daemon *d, uint32_t slot, const char *id, struct load *l)
{
    struct proto_msg rep;
    char err[ERR_MSG_MAX];

    memset(l, 0, sizeof(*l));
    if (client_workers(d->c, &rep, err) != ERR_OK)
        return false;
    if (slot < rep.u.workers.n_workers) {
        const struct proto_worker_info *w = &rep.u.workers.workers[slot];

        l->pid = w->pid;
        l->in_flight = w->in_flight;
        l->slots = w->slots;
        for (uint32_t i = 0; id != NULL && i < w->n_requests; i++)
            l->runs_id |= strcmp(w->requests[i], id) == 0;
    }
    proto_msg_free(&rep);
    return true;
}

static void
test_concurrent_streams_match_generate(void)
{
    static const char *const extra[] = {"-w", "2", NULL};
    struct daemon d;
    struct job jobs[8];
    pthread_t th[8];

    CHECK(start_ready(&d, extra, 2));
    for (int k = 0; k < 8; k++) {
        jobs[k] = (struct job){.d = &d, .k = k};
        CHECK(pthread_create(&th[k], NULL, run_job, &jobs[k]) == 0);
    }
    for (int k = 0; k < 8; k++)
        pthread_join(th[k], NULL);
    for (int k = 0; k < 8; k++)
        CHECKF(job_matches(&jobs[k]), "request %d", k);
    daemon_stop(&d);
}

/* orchd's options for the tests of one worker running several requests at once */
static const char *const one_worker_four_slots[] = {"-w", "1", "--slots", "4", NULL};

/*
 * One worker of 4 slots, 8 concurrent streams with different prompts and seeds: at most 4 run at
 * once, in one batch, and every stream is exactly `workerd generate`'s.
 */
static void
test_one_worker_batches_eight_streams(void)
{
    struct daemon d;
    struct job jobs[8];
    pthread_t th[8];
    atomic_int finished = 0;
    uint32_t most = 0;
    struct load l;
    bool listed = true;

    CHECK(start_ready(&d, one_worker_four_slots, 1));
    CHECK(worker_load(&d, 0, NULL, &l) && l.slots == 4 && l.in_flight == 0);
    for (int k = 0; k < 8; k++) {
        jobs[k] = (struct job){.d = &d, .k = k, .n = 300, .finished = &finished};
        if (pthread_create(&th[k], NULL, run_job, &jobs[k]) != 0)
            jobs[k].k = -1;
    }
    while (atomic_load(&finished) < 8) {
        listed &= worker_load(&d, 0, NULL, &l);
        if (l.in_flight > most)
            most = l.in_flight;
        sleep_ms(1);
    }
    for (int k = 0; k < 8; k++)
        if (jobs[k].k >= 0)
            pthread_join(th[k], NULL);
    printf("  8 streams on one worker of 4 slots: at most %u in flight at once\n", most);
    CHECK(listed);
    CHECKF(most >= 2 && most <= 4, "%u requests in flight at most", most);
    for (int k = 0; k < 8; k++)
        CHECKF(jobs[k].k >= 0 && job_matches(&jobs[k]), "request %d", k);
    daemon_stop(&d);
}

/* kill -9 of a worker with 3 requests in flight: all three complete with undisturbed ids. */
static void
test_kill_worker_with_three_in_flight(void)
{
    struct daemon d;
    struct job jobs[3];
    pthread_t th[3];
    atomic_int streaming = 0;
    struct load l = {0};
    int started = 0;

    CHECK(start_ready(&d, one_worker_four_slots, 1));
    for (int k = 0; k < 3; k++) {
        jobs[k] = (struct job){.d = &d, .k = k, .n = 1000, .streaming = &streaming};
        started += pthread_create(&th[k], NULL, run_job, &jobs[k]) == 0;
    }
    for (int i = 0; i < 5000 && atomic_load(&streaming) < started; i++)
        sleep_ms(1);
    if (started == 3 && atomic_load(&streaming) == 3 && worker_load(&d, 0, NULL, &l) && l.pid > 0)
        kill(l.pid, SIGKILL);
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    CHECK(started == 3);
    CHECKF(l.pid > 0 && l.in_flight == 3, "the worker had %u requests when killed", l.in_flight);
    for (int k = 0; k < 3; k++) {
        CHECKF(job_matches(&jobs[k]), "request %d after the kill", k);
        CHECKF(jobs[k].got.n == 1000, "request %d: %u ids", k, jobs[k].got.n);
    }
    CHECK(worker_load(&d, 0, NULL, &l) && l.pid > 0 && !process_gone(l.pid));
    daemon_stop(&d);
}

/* Cancel of one of several requests in flight: the worker lets go of it within 100 ms, and the
 * others go on to their undisturbed end. */
static void
test_cancel_one_of_several(void)
{
    struct daemon d;
    struct job jobs[2];
    pthread_t th[2];
    atomic_int streaming = 0;
    struct client_submitted s;
    struct client_stream *st = NULL;
    const struct proto_frame *f = NULL;
    struct load l = {0};
    char err[ERR_MSG_MAX];
    uint64_t t0 = 0;
    double gone_ms = -1;
    bool others_on = false;
    int started = 0, rc, tokens_after = 0;

    CHECK(start_ready(&d, one_worker_four_slots, 1));
    for (int k = 0; k < 2; k++) {
        jobs[k] = (struct job){.d = &d, .k = k, .n = 1000, .streaming = &streaming};
        started += pthread_create(&th[k], NULL, run_job, &jobs[k]) == 0;
    }
    rc = submit(d.c, prompts[5], 1000, 0.8f, 7, NULL, &s, err);
    if (rc == ERR_OK)
        rc = client_stream_open(d.c, s.id, 0, &st, err);
    while (rc == ERR_OK && (f == NULL || f->kind != PROTO_FRAME_TOKENS))
        rc = client_stream_next(st, 5000, &f, err);
    for (int i = 0; i < 5000 && atomic_load(&streaming) < started; i++)
        sleep_ms(1);
    if (rc == ERR_OK) {
        t0 = clock_now_ns();
        rc = client_cancel(d.c, s.id, err);
    }
    while (rc == ERR_OK && gone_ms < 0 && clock_ms_between(t0, clock_now_ns()) < 1000) {
        if (worker_load(&d, 0, s.id, &l) && !l.runs_id) {
            gone_ms = clock_ms_between(t0, clock_now_ns());
            others_on = l.in_flight == 2;
        }
    }
    while (rc == ERR_OK && !client_stream_ended(st)) {
        if ((rc = client_stream_next(st, 1000, &f, err)) == ERR_OK && f != NULL)
            tokens_after += f->kind == PROTO_FRAME_TOKENS;
    }
    if (st != NULL)
        client_stream_close(st);
    for (int k = 0; k < started; k++)
        pthread_join(th[k], NULL);
    printf("  cancel of one of 3 requests in flight: the worker let go of it after %.1f ms\n",
           gone_ms);
    CHECKF(rc == ERR_OK, "%s", err);
    CHECK(started == 2);
    CHECKF(gone_ms >= 0 && gone_ms < CANCEL_MS, "the worker let go after %.1f ms", gone_ms);
    CHECKF(others_on, "the two other requests were not both still running");
    CHECKF(tokens_after <= 1, "%d tokens frames after the cancel", tokens_after);
    for (int k = 0; k < 2; k++)
        CHECKF(job_matches(&jobs[k]), "request %d", k);
    daemon_stop(&d);
}

struct killer {
    struct daemon *d;
    const char *id;
    pid_t killed;
    uint64_t kill_ns;
};

/* Kills -9 the worker running k->id (as the workers reply lists it). */
static void
kill_its_worker(void *arg)
{
    struct killer *k = arg;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];

    if (client_workers(k->d->c, &rep, err) != ERR_OK)
        return;
    for (uint32_t i = 0; i < rep.u.workers.n_workers; i++)
        for (uint32_t j = 0; j < rep.u.workers.workers[i].n_requests; j++)
            if (strcmp(rep.u.workers.workers[i].requests[j], k->id) == 0 && k->killed == 0) {
                k->killed = rep.u.workers.workers[i].pid;
                k->kill_ns = clock_now_ns();
                kill(k->killed, SIGKILL);
            }
    proto_msg_free(&rep);
}

static void
test_kill_worker_mid_stream_and_in_prefill(void)
{
    static const char *const extra[] = {"-w", "2", NULL};
    struct daemon d;
    struct client_submitted s;
    struct killer k = {0};
    struct run got, want;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    uint32_t restarts = 0;
    double restart_ms = -1;
    static char long_prompt[8192];

    CHECK(start_ready(&d, extra, 2));
    /* an idle worker killed: its slot has a new, ready worker after the first backoff step
       (100 ms) and the worker's start */
    k.killed = daemon_worker_pid(&d, 0);
    k.kill_ns = clock_now_ns();
    kill(k.killed, SIGKILL);
    for (int i = 0; i < 500 && daemon_worker_pid(&d, 0) == k.killed; i++)
        sleep_ms(1);
    CHECK(wait_ready(&d, 2));
    restart_ms = clock_ms_between(k.kill_ns, clock_now_ns());
    printf("  restart after kill -9: the slot's new worker is ready %.1f ms after the kill\n",
           restart_ms);
    CHECKF(restart_ms < 3000, "%.1f ms", restart_ms);
    /* mid-stream: greedy, long; the worker dies at the first tokens frame */
    CHECK(reference(prompts[0], 120, 0.0f, 1, NULL, &want));
    CHECKF(submit(d.c, prompts[0], 120, 0.0f, 1, NULL, &s, err) == ERR_OK, "%s", err);
    k = (struct killer){&d, s.id, 0, 0};
    CHECKF(stream(d.c, s.id, 0, &got, kill_its_worker, &k, err) == ERR_OK, "%s", err);
    CHECK(k.killed > 0);
    CHECKF(same_run(&got, &want), "the stream after the kill");
    CHECK(wait_ready(&d, 2));
    /* during prefill: a long prompt, the worker killed as soon as it has the request */
    for (int i = 0; i < 12; i++)
        strcat(long_prompt, "Once upon a time there was a little girl who liked to play. ");
    CHECK(reference(long_prompt, 100, 0.8f, 5, NULL, &want));
    CHECKF(submit(d.c, long_prompt, 100, 0.8f, 5, NULL, &s, err) == ERR_OK, "%s", err);
    k = (struct killer){&d, s.id, 0, 0};
    for (int i = 0; i < 100 && k.killed == 0; i++)
        kill_its_worker(&k);
    CHECK(k.killed > 0);
    CHECKF(stream(d.c, s.id, 0, &got, NULL, NULL, err) == ERR_OK, "%s", err);
    CHECKF(same_run(&got, &want), "the stream after a kill in prefill");
    for (int i = 0; i < 200 && restarts != 3; i++) { /* the last restart may still be due */
        CHECK(client_workers(d.c, &rep, err) == ERR_OK);
        restarts = 0;
        for (uint32_t j = 0; j < rep.u.workers.n_workers; j++) {
            restarts += rep.u.workers.workers[j].restarts;
        }
        proto_msg_free(&rep);
        sleep_ms(10);
    }
    CHECKF(restarts == 3, "%u restarts", restarts);
    CHECK(wait_ready(&d, 2));
    daemon_stop(&d);
}

static void
test_cancel_and_vanished_client(void)
{
    static const char *const extra[] = {"-w", "1", "--client-timeout-ms", "300", NULL};
    struct daemon d;
    struct client_submitted s;
    struct client_stream *st;
    const struct proto_frame *f;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    uint64_t t0;
    bool free_again = false;
    int tokens_after = 0;

    CHECK(start_ready(&d, extra, 1));
    CHECKF(submit(d.c, prompts[2], 2000, 0.0f, 1, NULL, &s, err) == ERR_OK, "%s", err);
    CHECK(client_stream_open(d.c, s.id, 0, &st, err) == ERR_OK);
    do {
        CHECK(client_stream_next(st, 5000, &f, err) == ERR_OK && f != NULL);
    } while (f->kind != PROTO_FRAME_TOKENS);
    t0 = clock_now_ns();
    CHECK(client_cancel(d.c, s.id, err) == ERR_OK);
    /* the worker lets go of it within 100 ms (CANCEL_MS) */
    while (!free_again && clock_ms_between(t0, clock_now_ns()) < CANCEL_MS) {
        CHECK(client_workers(d.c, &rep, err) == ERR_OK);
        free_again = rep.u.workers.workers[0].n_requests == 0;
        proto_msg_free(&rep);
    }
    CHECKF(free_again, "the worker still runs the request %d ms after the cancel", CANCEL_MS);
    /* what follows in the stream: at most the frames delivered before the cancel, then done */
    while (!client_stream_ended(st)) {
        CHECK(client_stream_next(st, 1000, &f, err) == ERR_OK && f != NULL);
        tokens_after += f->kind == PROTO_FRAME_TOKENS;
        if (f->kind == PROTO_FRAME_DONE)
            CHECK(f->reason == PROTO_REASON_CANCELLED);
    }
    CHECKF(tokens_after <= 1, "%d tokens frames after the cancel", tokens_after);
    client_stream_close(st);
    /* a client that submits and never polls is cancelled after the client timeout */
    CHECKF(submit(d.c, prompts[3], 2000, 0.0f, 1, NULL, &s, err) == ERR_OK, "%s", err);
    sleep_ms(600);
    CHECK(client_status(d.c, &rep, err) == ERR_OK);
    CHECKF(rep.u.status.running == 0 && rep.u.status.completed == 2, "running %u, completed %llu",
           rep.u.status.running, (unsigned long long)rep.u.status.completed);
    proto_msg_free(&rep);
    daemon_stop(&d);
}

static void
test_stop_string_matches_generate(void)
{
    static const char *const extra[] = {"-w", "1", NULL};
    struct daemon d;
    struct client_submitted s;
    struct run got, want;
    char err[ERR_MSG_MAX];

    CHECK(start_ready(&d, extra, 1));
    CHECK(reference(prompts[0], 40, 0.0f, 1, "Lily", &want));
    CHECK(want.n > 0 && strstr(want.text, "Lily") == NULL);
    CHECKF(submit(d.c, prompts[0], 40, 0.0f, 1, "Lily", &s, err) == ERR_OK, "%s", err);
    CHECKF(stream(d.c, s.id, 0, &got, NULL, NULL, err) == ERR_OK, "%s", err);
    CHECK(got.reason == PROTO_REASON_STOP);
    CHECKF(same_run(&got, &want), "the stream with a stop string");
    daemon_stop(&d);
}

static void
test_first_token_latency(void)
{
    static const char *const extra[] = {"-w", "1", NULL};
    struct daemon d;
    struct client_submitted s;
    struct run got, want;
    char err[ERR_MSG_MAX];
    double best = 1e9;

    CHECK(start_ready(&d, extra, 1));
    CHECK(reference(prompts[4], 16, 0.0f, 1, NULL, &want));
    for (int i = 0; i < 5; i++) {
        uint64_t t0 = clock_now_ns();

        CHECKF(submit(d.c, prompts[4], 16, 0.0f, 1, NULL, &s, err) == ERR_OK, "%s", err);
        CHECKF(stream(d.c, s.id, t0, &got, NULL, NULL, err) == ERR_OK, "%s", err);
        CHECK(same_run(&got, &want));
        if (got.first_ms < best)
            best = got.first_ms;
    }
    printf("  first token: %.2f ms through orchd (best of 5, submit to the first tokens frame); "
           "workerd generate's prefill %.2f ms\n",
           best, want.first_ms);
    daemon_stop(&d);
}

static void
test_broken_model_goes_fatal(void)
{
    /* a vocabulary-only file: orchd loads its tokenizer, the workers find no tensors (exit 2) */
    char vocab[512], err[ERR_MSG_MAX];
    const char *extra[] = {"-w", "2", "-m", vocab, NULL};
    struct daemon d;
    struct proto_msg rep;
    bool fatal = false;

    if (!harness_shared(vocab, sizeof(vocab), "models/vocab/ggml-vocab-llama-spm.gguf"))
        return;
    if (!daemon_start(&d, NULL, extra)) {
        daemon_print_log(&d);
        daemon_stop(&d);
        CHECK(!"orchd started");
    }
    for (int i = 0; i < 300 && !fatal; i++) {
        CHECK(client_workers(d.c, &rep, err) == ERR_OK && rep.u.workers.n_workers == 2);
        fatal = rep.u.workers.workers[0].state == PROTO_WSTATE_FATAL &&
                rep.u.workers.workers[1].state == PROTO_WSTATE_FATAL;
        if (fatal)
            for (uint32_t j = 0; j < 2; j++) {
                CHECK(rep.u.workers.workers[j].restarts == 0);
                CHECKF(strstr(rep.u.workers.workers[j].detail, "status 2") != NULL, "%s",
                       rep.u.workers.workers[j].detail);
            }
        proto_msg_free(&rep);
        sleep_ms(10);
    }
    CHECK(fatal);
    CHECK(client_health(d.c, &rep, err) == ERR_OK && !rep.u.health.ready);
    proto_msg_free(&rep);
    kill(d.pid, SIGTERM);
    CHECK(daemon_wait(&d) == 0);
    daemon_stop(&d);
}

/* kB figures of one process: its whole (smaps_rollup) and its mappings of path (smaps). */
struct mem {
    long pss, private_kb;                              /* the whole process */
    long file_rss, file_pss, file_private, file_dirty; /* the model's mappings */
};

static long
field_kb(const char *line, const char *name)
{
    long v;

    if (strncmp(line, name, strlen(name)) != 0 || sscanf(line + strlen(name), "%ld", &v) != 1)
        return -1;
    return v;
}

static bool
read_mem(pid_t pid, const char *path, struct mem *m)
{
    char file[64], line[1024];
    bool in_model = false;
    long v;
    FILE *f;

    memset(m, 0, sizeof(*m));
    snprintf(file, sizeof(file), "/proc/%d/smaps_rollup", (int)pid);
    if ((f = fopen(file, "r")) == NULL)
        return false;
    while (fgets(line, sizeof(line), f) != NULL) {
        if ((v = field_kb(line, "Pss:")) >= 0)
            m->pss = v;
        if ((v = field_kb(line, "Private_Clean:")) >= 0 ||
            (v = field_kb(line, "Private_Dirty:")) >= 0)
            m->private_kb += v;
    }
    fclose(f);
    snprintf(file, sizeof(file), "/proc/%d/smaps", (int)pid);
    if ((f = fopen(file, "r")) == NULL)
        return false;
    while (fgets(line, sizeof(line), f) != NULL) {
        size_t len = strlen(line);

        if (strchr(line, '-') != NULL && strchr(line, ':') != NULL && line[0] != ' ' &&
            strstr(line, "kB") == NULL) {
            while (len > 0 && line[len - 1] == '\n')
                line[--len] = '\0';
            in_model = len >= strlen(path) && strcmp(line + len - strlen(path), path) == 0;
            continue;
        }
        if (!in_model)
            continue;
        if ((v = field_kb(line, "Rss:")) >= 0)
            m->file_rss += v;
        else if ((v = field_kb(line, "Pss:")) >= 0)
            m->file_pss += v;
        else if ((v = field_kb(line, "Private_Clean:")) >= 0)
            m->file_private += v;
        else if ((v = field_kb(line, "Private_Dirty:")) >= 0) {
            m->file_private += v;
            m->file_dirty += v;
        }
    }
    fclose(f);
    return true;
}

static void
test_four_workers_share_the_weights(void)
{
    static const char *const extra[] = {"-w", "4", NULL};
    struct daemon d;
    struct job jobs[4];
    pthread_t th[4];
    char model[512], real[4096];
    long sum_private = 0, sum_file_pss = 0, file_kb;
    pid_t pids[4];
    FILE *f;

    if (!harness_shared(model, sizeof(model), "models/stories260K.gguf"))
        return;
    CHECK(realpath(model, real) != NULL);
    f = fopen(real, "rb");
    CHECK(f != NULL && fseek(f, 0, SEEK_END) == 0);
    file_kb = (ftell(f) + 1023) / 1024;
    fclose(f);
    CHECK(start_ready(&d, extra, 4));
    /* one request each, so that every worker has read all the weights */
    for (int k = 0; k < 4; k++) {
        jobs[k] = (struct job){.d = &d, .k = k};
        CHECK(pthread_create(&th[k], NULL, run_job, &jobs[k]) == 0);
    }
    for (int k = 0; k < 4; k++)
        pthread_join(th[k], NULL);
    printf("  model %s: %ld kB\n", real, file_kb);
    for (uint32_t i = 0; i < 4; i++) {
        pid_t pid = daemon_worker_pid(&d, i);
        struct mem m;

        CHECK(pid > 0 && read_mem(pid, real, &m));
        printf("  worker %u (pid %d): Pss %ld kB, private %ld kB; model mapping: Rss %ld kB, "
               "Pss %ld kB, private %ld kB\n",
               i, (int)pid, m.pss, m.private_kb, m.file_rss, m.file_pss, m.file_private);
        CHECKF(m.file_dirty == 0, "worker %u wrote %ld kB of the model mapping", i, m.file_dirty);
        sum_private += m.private_kb;
        sum_file_pss += m.file_pss;
    }
    printf("  4 workers: private %ld kB in all; the model's pages %ld kB in all (Pss), one copy "
           "is %ld kB\n",
           sum_private, sum_file_pss, file_kb);
    CHECKF(sum_file_pss <= file_kb + 16, "the weights cost %ld kB over 4 workers, file %ld kB",
           sum_file_pss, file_kb);
    /* kill -9 of orchd: no workerd outlives it */
    for (uint32_t i = 0; i < 4; i++)
        pids[i] = daemon_worker_pid(&d, i);
    kill(d.pid, SIGKILL);
    CHECK(daemon_wait(&d) != -1);
    for (uint32_t i = 0; i < 4; i++) {
        for (int t = 0; t < 300 && !process_gone(pids[i]); t++)
            sleep_ms(10);
        CHECKF(process_gone(pids[i]), "workerd %d outlived orchd", (int)pids[i]);
    }
    daemon_stop(&d);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_concurrent_streams_match_generate),
        TEST(test_one_worker_batches_eight_streams),
        TEST(test_kill_worker_with_three_in_flight),
        TEST(test_cancel_one_of_several),
        TEST(test_kill_worker_mid_stream_and_in_prefill),
        TEST(test_cancel_and_vanished_client),
        TEST(test_stop_string_matches_generate),
        TEST(test_first_token_latency),
        TEST(test_four_workers_share_the_weights),
        TEST(test_broken_model_goes_fatal),
        {0},
    };

    log_init("test_orchd_serve", LOG_ERROR);
    return harness_run(tests, argc, argv);
}
