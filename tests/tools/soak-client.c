/*
 * soak-client.c: the load side of scripts/soak. Connects C clients (threads) to orchd at URL, the
 * i-th with the i-th key of --keys (round robin; tenants), and for --seconds submits requests from
 * a fixed set of specs (prompt, seed, temperature, max_tokens), streams each to its end (resuming
 * after timeouts), and compares the ids with the reference: the same spec run through orchd once
 * before the load starts (undisturbed; "reference done" is printed, and --ready FILE created,
 * when that is over). Busy replies are retried after their hint; a worker_crashed or
 * shutting_down error frame is a stable retryable error. Prints as its last line
 * `soak-client: R requests, T tokens, L lost, D differing, E retryable, B busy`; exit 0 when L
 * and D are 0. Not a test by itself: the script kills workers meanwhile.
 */
#include "common/clock.h"
#include "common/err.h"
#include "proto/client.h"

#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define N_SPECS  12
#define MAX_GEN  64
#define MAX_KEYS 8

struct spec {
    const char *prompt;
    uint64_t seed;
    float temp;
    uint32_t n;
    int32_t ref[MAX_GEN];
    uint32_t n_ref;
};

static const char *const prompts[] = {
    "Once upon a time", "The little dog",      "Lily and Tom went to the park",
    "One day, a bird",  "The sun was hot and", "Mom said",
};

static struct spec specs[N_SPECS];
static const char *url;
static char *keys[MAX_KEYS];
static int n_keys;
static uint64_t end_ms;
static atomic_ullong n_req, n_tok, n_lost, n_diff, n_retry, n_busy;

/* One request of spec k on c to its end: 0 done (ids in got), 1 retryable error, -1 lost. */
static int
run_one(struct client *c, const struct spec *sp, int32_t *got, uint32_t *n_got, char *err)
{
    struct proto_msg m;
    struct client_submitted sub;
    struct client_stream *s;
    const struct proto_frame *f;
    uint64_t give_up;
    int rc, out = -1;

    proto_submit_init(&m);
    m.u.submit.prompt = (char *)sp->prompt;
    m.u.submit.max_tokens = sp->n;
    m.u.submit.sampling.temperature = sp->temp;
    m.u.submit.sampling.seed = sp->seed;
    for (;;) {
        rc = client_submit(c, &m.u.submit, &sub, err);
        if (rc != ERR_BUSY && rc != ERR_TIMEOUT && rc != ERR_IO)
            break;
        atomic_fetch_add(&n_busy, rc == ERR_BUSY);
        struct timespec ts = {
            0, (long)(rc == ERR_BUSY && sub.retry_after_ms < 200 ? sub.retry_after_ms : 200) *
                   1000000L};
        nanosleep(&ts, NULL);
    }
    if (rc != ERR_OK)
        return -1;
    *n_got = 0;
    if (client_stream_open(c, sub.id, 0, &s, err) != ERR_OK)
        return -1;
    give_up = clock_now_ms() + 60000;
    while (!client_stream_ended(s) && clock_now_ms() < give_up) {
        rc = client_stream_next(s, 2000, &f, err);
        if (rc == ERR_TIMEOUT || rc == ERR_IO)
            continue; /* the position is kept: resume */
        if (rc != ERR_OK)
            break;
        if (f == NULL)
            continue;
        if (f->kind == PROTO_FRAME_TOKENS) {
            for (uint32_t i = 0; i < f->n_ids && *n_got < MAX_GEN; i++)
                got[(*n_got)++] = f->ids[i];
            atomic_fetch_add(&n_tok, f->n_ids);
        } else if (f->kind == PROTO_FRAME_DONE) {
            out = f->reason == PROTO_REASON_EOS || f->reason == PROTO_REASON_LENGTH ? 0 : -1;
            if (out < 0)
                snprintf(err, ERR_MSG_MAX, "done: %s", proto_reason_name(f->reason));
        } else if (f->kind == PROTO_FRAME_ERROR) {
            out = f->code == ERR_WORKER_CRASHED || f->code == ERR_SHUTTING_DOWN ? 1 : -1;
            snprintf(err, ERR_MSG_MAX, "error frame: %s: %s", err_str(f->code), f->msg);
        }
    }
    if (!client_stream_ended(s) && out < 0)
        snprintf(err + strlen(err), ERR_MSG_MAX - strlen(err), " (stream of %s not ended)", sub.id);
    client_stream_close(s);
    return out;
}

static void *
client_main(void *arg)
{
    int i = (int)(intptr_t)arg;
    struct client_opts o = {.key = n_keys > 0 ? keys[i % n_keys] : NULL, .timeout_ms = 5000};
    struct client *c;
    char err[ERR_MSG_MAX];
    unsigned seed = (unsigned)i * 7919u + 1;
    int32_t got[MAX_GEN];
    uint32_t n_got;

    if (client_open(&c, url, &o, err) != ERR_OK) {
        fprintf(stderr, "soak-client %d: %s\n", i, err);
        atomic_fetch_add(&n_lost, 1);
        return NULL;
    }
    while (clock_now_ms() < end_ms) {
        const struct spec *sp = &specs[rand_r(&seed) % N_SPECS];
        int rc = run_one(c, sp, got, &n_got, err);

        atomic_fetch_add(&n_req, 1);
        if (rc < 0) {
            fprintf(stderr, "soak-client %d: lost: %s\n", i, err);
            atomic_fetch_add(&n_lost, 1);
        } else if (rc > 0) {
            atomic_fetch_add(&n_retry, 1);
        } else if (n_got != sp->n_ref || memcmp(got, sp->ref, n_got * sizeof(*got)) != 0) {
            fprintf(stderr, "soak-client %d: '%s' seed %llu: %u ids differ from the reference\n", i,
                    sp->prompt, (unsigned long long)sp->seed, n_got);
            atomic_fetch_add(&n_diff, 1);
        }
    }
    client_close(c);
    return NULL;
}

int
main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"url", required_argument, NULL, 'u'},     {"seconds", required_argument, NULL, 's'},
        {"clients", required_argument, NULL, 'c'}, {"keys", required_argument, NULL, 'k'},
        {"ready", required_argument, NULL, 'r'},   {NULL, 0, NULL, 0},
    };
    const char *ready = NULL;
    struct client *c;
    struct client_opts o = {.timeout_ms = 5000};
    pthread_t th[256];
    char err[ERR_MSG_MAX], *save = NULL;
    long seconds = 20, clients = 16;
    int opt;

    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        if (opt == 'u')
            url = optarg;
        else if (opt == 's')
            seconds = strtol(optarg, NULL, 10);
        else if (opt == 'c')
            clients = strtol(optarg, NULL, 10);
        else if (opt == 'r')
            ready = optarg;
        else if (opt == 'k')
            for (char *k = strtok_r(optarg, ",", &save); k != NULL && n_keys < MAX_KEYS;
                 k = strtok_r(NULL, ",", &save))
                keys[n_keys++] = k;
        else
            return 2;
    }
    if (url == NULL || seconds < 1 || clients < 1 || clients > 256) {
        fprintf(stderr, "usage: soak-client --url URL [--seconds N] [--clients C (1..256)] "
                        "[--keys K1,K2,...] [--ready FILE]\n");
        return 2;
    }
    /* the reference: each spec once, undisturbed */
    o.key = n_keys > 0 ? keys[0] : NULL;
    if (client_open(&c, url, &o, err) != ERR_OK) {
        fprintf(stderr, "soak-client: %s\n", err);
        return 1;
    }
    for (int k = 0; k < N_SPECS; k++) {
        struct spec *sp = &specs[k];

        sp->prompt = prompts[k % (sizeof(prompts) / sizeof(prompts[0]))];
        sp->seed = 1000 + (uint64_t)k;
        sp->temp = k % 3 == 0 ? 0.0f : 0.8f;
        sp->n = 16 + (uint32_t)(k * 4);
        if (run_one(c, sp, sp->ref, &sp->n_ref, err) != 0) {
            fprintf(stderr, "soak-client: reference %d: %s\n", k, err);
            client_close(c);
            return 1;
        }
    }
    client_close(c);
    printf("reference done\n");
    fflush(stdout);
    if (ready != NULL) {
        FILE *f = fopen(ready, "w");

        if (f != NULL)
            fclose(f);
    }
    end_ms = clock_now_ms() + (uint64_t)seconds * 1000;
    for (long i = 0; i < clients; i++)
        pthread_create(&th[i], NULL, client_main, (void *)(intptr_t)i);
    for (long i = 0; i < clients; i++)
        pthread_join(th[i], NULL);
    printf("soak-client: %llu requests, %llu tokens, %llu lost, %llu differing, %llu retryable, "
           "%llu busy\n",
           (unsigned long long)n_req, (unsigned long long)n_tok, (unsigned long long)n_lost,
           (unsigned long long)n_diff, (unsigned long long)n_retry, (unsigned long long)n_busy);
    return n_lost == 0 && n_diff == 0 ? 0 : 1;
}
