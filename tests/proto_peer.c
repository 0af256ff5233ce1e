/*
 * proto_peer.c: the test server of proto_peer.h: one thread, one rep socket, a mutex-guarded
 * table of requests whose frames are computed from their sequence numbers.
 */
#include "tests/proto_peer.h"

#include "common/clock.h"
#include "common/err.h"
#include "proto/sock.h"

#include <arpa/inet.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void
peer_init(struct peer *p, const char *url)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->url, sizeof(p->url), "%s", url);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->released = UINT32_MAX;
}

void
peer_destroy(struct peer *p)
{
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}

/* Makes n frames of every request exist, waking long polls. */
void
peer_release(struct peer *p, uint32_t n)
{
    pthread_mutex_lock(&p->mu);
    p->released = n;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

static void
peer_send(struct peer *p, const struct proto_msg *m)
{
    void *buf;
    size_t len;
    char err[ERR_MSG_MAX];

    if (proto_encode(m, &buf, &len, err) != ERR_OK) {
        fprintf(stderr, "peer: cannot encode a %s: %s\n", proto_type_name(m->type), err);
        abort();
    }
    nng_send(p->sock, buf, len, 0);
    free(buf);
}

static void
peer_error(struct peer *p, int code, const char *msg)
{
    struct proto_msg r = {.type = PROTO_ERROR};

    r.u.error = (struct proto_error){code, (char *)msg, NULL};
    peer_send(p, &r);
}

static struct peer_req *
peer_find(struct peer *p, const char *id)
{
    for (int i = 0; i < p->n_reqs; i++)
        if (strcmp(p->reqs[i].id, id) == 0)
            return &p->reqs[i];
    return NULL;
}

/* Frame seq of request r: queued, started, tokens (id 100 + seq, text "t<seq> "), done. */
static void
peer_frame(const struct peer_req *r, uint64_t seq, struct proto_frame *f, int32_t *id, char *text)
{
    memset(f, 0, sizeof(*f));
    f->seq = seq;
    if (seq == r->total - 1 && r->crash && !r->cancelled) {
        f->kind = PROTO_FRAME_ERROR;
        f->code = ERR_WORKER_CRASHED;
        f->msg = (char *)"worker 1 crashed 3 times";
    } else if (seq == r->total - 1) {
        f->kind = PROTO_FRAME_DONE;
        f->reason = r->cancelled ? PROTO_REASON_CANCELLED : PROTO_REASON_LENGTH;
        f->stats = (struct proto_stats){4, (uint32_t)(r->total > 3 ? r->total - 3 : 0), 1, 2, 3};
    } else if (seq == 0) {
        f->kind = PROTO_FRAME_QUEUED;
        f->position = 1;
    } else if (seq == 1) {
        f->kind = PROTO_FRAME_STARTED;
    } else {
        f->kind = PROTO_FRAME_TOKENS;
        *id = 100 + (int32_t)seq;
        f->ids = id;
        f->n_ids = 1;
        snprintf(text, 16, "t%d ", (int)seq);
        f->text = text;
        f->text_len = strlen(text);
    }
}

static void
peer_poll(struct peer *p, const struct proto_poll *q)
{
    struct proto_frame frames[PEER_MAX_FRAMES];
    int32_t ids[PEER_MAX_FRAMES];
    char texts[PEER_MAX_FRAMES][16];
    struct proto_msg r = {.type = PROTO_FRAMES};
    uint64_t deadline = clock_now_ms() + q->wait_ms;
    struct peer_req *req;
    uint32_t n = 0, avail;

    pthread_mutex_lock(&p->mu);
    p->polls++;
    req = peer_find(p, q->id);
    if (req == NULL) {
        pthread_mutex_unlock(&p->mu);
        peer_error(p, ERR_NOT_FOUND, "no request with this id");
        return;
    }
    for (;;) {
        avail = req->cancelled || p->released > req->total ? req->total : p->released;
        if (avail > q->from || clock_now_ms() >= deadline || atomic_load(&p->stop))
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&p->cv, &p->mu, &ts);
    }
    for (uint64_t s = q->from; s < avail; s++, n++)
        peer_frame(req, s, &frames[n], &ids[n], texts[n]);
    r.u.frames = (struct proto_frames){req->id, frames, n};
    pthread_mutex_unlock(&p->mu);
    peer_send(p, &r);
}

static void
peer_submit(struct peer *p, const struct proto_submit *s)
{
    struct proto_msg r = {.type = PROTO_SUBMITTED};
    struct peer_req *req = NULL;

    if (strcmp(s->prompt != NULL ? s->prompt : "", "busy") == 0) {
        r.type = PROTO_BUSY;
        r.u.busy = (struct proto_busy){123, "queue full (1 queued)"};
        peer_send(p, &r);
        return;
    }
    if (strcmp(s->prompt != NULL ? s->prompt : "", "garbage") == 0) {
        nng_send(p->sock, "\x81\xa1v", 3, 0);
        return;
    }
    if (strcmp(s->prompt != NULL ? s->prompt : "", "wrongtype") == 0) {
        r.type = PROTO_HEALTH_INFO;
        r.u.health = (struct proto_health_info){true, 1, ""};
        peer_send(p, &r);
        return;
    }
    pthread_mutex_lock(&p->mu);
    p->submits++;
    for (int i = 0; i < p->n_reqs && s->client_id != NULL; i++)
        if (strcmp(p->reqs[i].client_id, s->client_id) == 0)
            req = &p->reqs[i];
    if (req == NULL && p->n_reqs < PEER_MAX_REQS) {
        req = &p->reqs[p->n_reqs];
        snprintf(req->id, sizeof(req->id), "r-%d", ++p->n_reqs);
        snprintf(req->client_id, sizeof(req->client_id), "%s",
                 s->client_id != NULL ? s->client_id : "");
        req->total = s->max_tokens + 3 < PEER_MAX_FRAMES ? s->max_tokens + 3 : PEER_MAX_FRAMES;
        req->crash = s->prompt != NULL && strcmp(s->prompt, "crash") == 0;
    }
    p->last_sampling = s->sampling;
    p->last_max_tokens = s->max_tokens;
    p->last_n_stop = s->n_stop;
    p->last_priority = s->priority;
    snprintf(p->last_prompt, sizeof(p->last_prompt), "%s",
             s->prompt != NULL ? s->prompt : "(messages)");
    pthread_mutex_unlock(&p->mu);
    if (req == NULL) {
        peer_error(p, ERR_BUSY, "peer full");
        return;
    }
    r.u.submitted = (struct proto_submitted){req->id, 1};
    peer_send(p, &r);
}

static void
peer_cancel(struct peer *p, const char *id)
{
    struct proto_msg r = {.type = PROTO_CANCEL_OK};
    struct peer_req *req;

    pthread_mutex_lock(&p->mu);
    req = peer_find(p, id);
    if (req != NULL && !req->cancelled) {
        /* the stream ends with a cancelled done frame after what exists */
        uint32_t avail = p->released < req->total ? p->released : req->total;
        req->cancelled = true;
        req->total = avail + 1;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    if (req == NULL) {
        peer_error(p, ERR_NOT_FOUND, "no request with this id");
        return;
    }
    r.u.ref.id = (char *)id;
    peer_send(p, &r);
}

static void
peer_info(struct peer *p, enum proto_type t)
{
    static char alice[] = "alice", r1[] = "r-1", none[] = "", fatal[] = "exit 2: bad model";
    static char *reqs[] = {r1};
    static struct proto_tenant_info tenants[] = {{alice, 1, 2, 300}};
    static struct proto_worker_info workers[] = {
        {0, 4242, PROTO_WSTATE_BUSY, 1, reqs, 1, none, 1, 4},
        {1, 0, PROTO_WSTATE_FATAL, 5, NULL, 0, fatal, 0, 0},
    };
    struct proto_msg r = {0};

    if (t == PROTO_STATUS) {
        r.type = PROTO_STATUS_INFO;
        r.u.status = (struct proto_status_info){3, 1, 64, 2, 2, 1, 10, 1, 5000, tenants, 1};
    } else if (t == PROTO_WORKERS) {
        r.type = PROTO_WORKERS_INFO;
        r.u.workers = (struct proto_workers_info){workers, 2};
    } else {
        r.type = PROTO_HEALTH_INFO;
        r.u.health = p->unready ? (struct proto_health_info){false, 0, "starting"}
                                : (struct proto_health_info){true, 1, "1 of 2 workers ready"};
    }
    peer_send(p, &r);
}

static void *
peer_main(void *arg)
{
    struct peer *p = arg;

    while (!atomic_load(&p->stop)) {
        struct proto_msg m;
        char err[ERR_MSG_MAX];
        void *buf;
        size_t len;
        int rc;

        if (nng_recv(p->sock, &buf, &len, NNG_FLAG_ALLOC) != 0)
            continue; /* the 50 ms receive timeout: check stop */
        rc = proto_decode(buf, len, PROTO_LINK_CLIENT_REQ, &m, err);
        nng_free(buf, len);
        if (rc != ERR_OK) {
            peer_error(p, rc, err);
            continue;
        }
        if (p->key != NULL && (m.key == NULL || strcmp(m.key, p->key) != 0))
            peer_error(p, ERR_UNAUTHORIZED, "wrong or missing key");
        else if (m.type == PROTO_SUBMIT)
            peer_submit(p, &m.u.submit);
        else if (m.type == PROTO_POLL)
            peer_poll(p, &m.u.poll);
        else if (m.type == PROTO_CANCEL)
            peer_cancel(p, m.u.ref.id);
        else
            peer_info(p, m.type);
        proto_msg_free(&m);
    }
    return NULL;
}

/* Listens on p->url (a tcp:// URL with port 0 is rewritten with the port given) and serves. */
/* Creates the listener of p->url, with the server certificate for tls+tcp://. */
static bool
peer_listen(struct peer *p, nng_listener *l)
{
    nng_tls_config *cfg;
    bool ok;

    if (nng_listener_create(l, p->sock, p->url) != 0)
        return false;
    if (strncmp(p->url, "tls+", 4) == 0) {
        if (nng_tls_config_alloc(&cfg, NNG_TLS_MODE_SERVER) != 0)
            return false;
        ok = nng_tls_config_cert_key_file(cfg, p->cert_file, NULL) == 0 &&
             nng_listener_set_ptr(*l, NNG_OPT_TLS_CONFIG, cfg) == 0;
        nng_tls_config_free(cfg); /* the listener holds its own reference */
        if (!ok)
            return false;
    }
    return nng_listener_start(*l, 0) == 0;
}

bool
peer_start(struct peer *p)
{
    nng_listener l;
    char *port;

    atomic_store(&p->stop, false);
    if (nng_rep0_open(&p->sock) != 0)
        return false;
    nng_socket_set_size(p->sock, NNG_OPT_RECVMAXSZ, PROTO_MAX_MSG_BYTES);
    nng_socket_set_ms(p->sock, NNG_OPT_RECVTIMEO, 50);
    if (!peer_listen(p, &l)) {
        sock_close(p->sock);
        return false;
    }
    port = strrchr(p->url, ':');
    if (port != NULL && strcmp(port, ":0") == 0) {
        nng_sockaddr sa;

        nng_listener_get_addr(l, NNG_OPT_LOCADDR, &sa);
        snprintf(port, sizeof(p->url) - (size_t)(port - p->url), ":%u", ntohs(sa.s_in.sa_port));
    }
    p->running = pthread_create(&p->thread, NULL, peer_main, p) == 0;
    return p->running;
}

void
peer_stop(struct peer *p)
{
    if (!p->running)
        return;
    atomic_store(&p->stop, true);
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->thread, NULL);
    sock_close(p->sock);
    p->running = false;
}
