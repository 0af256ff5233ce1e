/*
 * sched.c: see sched.h. A request lives on one list of all requests and, while it waits or runs,
 * on a queue (two FIFO lists, one per priority) or on its worker slot's list. Its stream is an
 * array of frames, frames[0] having sequence number base_seq; a poll from k drops the frames
 * before k. The last frame, when it is a tokens frame no poll has delivered yet, absorbs new
 * tokens; a delivered frame never changes, so a resend or a resume from k gets the same bytes.
 * Ids and text are released in whole tokens: a token's id goes out with its text, held back while
 * the text may be the start of a stop string or ends inside a UTF-8 character.
 * Tenants: each has its two queues; dispatch takes the head of the backlogged tenant (with room
 * under its max_running) whose virtual time is least: start-time fair queueing over tokens. A
 * dispatch charges prompt + max_tokens / weight, corrected to the tokens really generated when the
 * request ends; a tenant that becomes backlogged starts at the virtual clock (no credit for idle
 * time).
 */
#include "orchd/sched.h"

#include "common/err.h"
#include "common/log.h"
#include "workerd/engine/sampler.h"
#include "workerd/engine/stop.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum req_state {
    REQ_QUEUED,  /* on a queue */
    REQ_RUNNING, /* on a slot's list (maybe already ended: waiting for the worker to let go) */
    REQ_IDLE     /* on neither; once ended, on its tenant's list of finished requests */
};

struct sched_req {
    struct sched_req *all_prev, *all_next; /* every request */
    struct sched_req *prev, *next;         /* its queue or its slot's list */
    char id[PROTO_MAX_ID_BYTES + 1];
    uint64_t num; /* the number in id ("r<num>") */
    char *client_id;
    int tenant;
    enum req_state state;
    bool ended; /* the final frame (done or error) is in the stream */
    enum proto_priority prio;
    int slot; /* while RUNNING */
    uint32_t crashes;
    bool charged;    /* its first dispatch charged its tenant's virtual time */
    bool prefilling; /* dispatched, and no token from this dispatch yet */

    int32_t *prompt;
    uint32_t n_prompt;
    struct proto_sampling sampling;
    uint32_t max_tokens;
    char **stop;
    uint32_t n_stop;

    int32_t *gen;    /* ids generated so far (what a replay re-feeds) */
    size_t *gen_end; /* text offset after each id's piece */
    uint32_t n_gen, cap_gen;
    uint32_t n_sent; /* ids released into frames */
    char *text;      /* the pieces' bytes */
    size_t text_len, text_cap;
    size_t text_sent; /* bytes released into frames */

    struct proto_frame *frames;
    uint32_t n_frames, cap_frames;
    uint64_t base_seq;      /* sequence number of frames[0] */
    uint64_t delivered_end; /* frames below this sequence number were delivered */
    struct sched_waiter *waiters;

    uint64_t submit_ms, dispatch_ms, first_token_ms, last_poll_ms, end_ms;
    uint64_t final_delivered_ms; /* when a poll took the done or error frame; 0 before */
};

#define SCHED_BUSY_PAUSE_MS 2 /* after a worker refused a dispatch, or it could not be sent */

enum wslot_state { WSLOT_DOWN, WSLOT_STARTING, WSLOT_READY, WSLOT_FATAL };

struct wslot {
    enum wslot_state state;
    int pid;
    uint32_t restarts;
    uint32_t max_batch;
    struct sched_req *head, *tail; /* running requests */
    uint32_t n_running;
    uint64_t started_ms, progress_ms, progress_tokens;
    bool kill_sent;
    uint64_t pause_until_ms;  /* it refused a dispatch or could not be sent one: none before */
    struct proto_ready early; /* a ready that came before the start was reported (pid != 0) */
    char detail[128];
};

struct queue {
    struct sched_req *head, *tail;
    uint32_t n;
};

/* A tenant's queues, share and quota state. */
struct tstate {
    struct sched_tenant t;
    struct queue q[2];  /* indexed by enum proto_priority */
    uint32_t n_running; /* requests on a worker's list */
    double vtime;       /* tokens charged / weight */
    uint64_t used;      /* tokens in the current budget period */
    uint64_t period_start_ms;
    double bucket;                         /* submits the rate limit allows now */
    uint64_t bucket_ms;                    /* when bucket was last refilled */
    uint64_t gen_tokens;                   /* generated tokens served */
    struct sched_req *fin_head, *fin_tail; /* finished requests (ended, idle), oldest first */
    uint32_t n_fin;
    uint64_t *gone; /* ring of the numbers of dropped finished requests (max_finished of them),
                       GONE_EVICTED set when the cap dropped it, for the not_found message */
    uint32_t n_gone, gone_next;
};

#define GONE_EVICTED (1ull << 63)

struct sched {
    pthread_mutex_t mu;
    struct sched_config cfg;
    struct sched_ops ops;
    struct wslot slots[SCHED_MAX_SLOTS];
    struct tstate *ten; /* n_ten tenants */
    int n_ten;
    uint32_t n_queued; /* over every tenant's queues */
    double vclock;     /* virtual time of the last dispatch */
    struct sched_req *all;
    uint64_t next_id, start_ms;
    uint32_t n_ctx; /* as the workers report it; 0 until one is ready */
    bool shutting_down;
    bool trim_due; /* a tenant holds more finished requests than its max_finished */
    uint64_t completed, failed, gen_tokens;
};

void
sched_config_default(struct sched_config *c)
{
    c->tenants = NULL;
    c->n_tenants = 0;
    c->n_slots = 1;
    c->n_ctx = 0;
    c->queue_max = 64;
    c->max_replays = 3;
    c->retry_after_ms = 1000;
    c->client_timeout_ms = 30000;
    c->linger_ms = 60000;
    c->linger_polled_ms = 5000;
    c->progress_timeout_ms = 30000;
    c->prefill_timeout_ms = 600000;
    c->start_timeout_ms = 120000;
}

struct sched *
sched_new(const struct sched_config *cfg, const struct sched_ops *ops, uint64_t now_ms)
{
    struct sched *s;

    if (cfg->n_slots < 1 || cfg->n_slots > SCHED_MAX_SLOTS)
        return NULL;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s);
        return NULL;
    }
    s->cfg = *cfg;
    s->ops = *ops;
    s->start_ms = now_ms;
    s->n_ten = cfg->n_tenants > 0 ? cfg->n_tenants : 1;
    s->ten = calloc((size_t)s->n_ten, sizeof(*s->ten));
    if (s->ten == NULL) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return NULL;
    }
    for (int i = 0; i < s->n_ten; i++) {
        struct tstate *t = &s->ten[i];

        if (cfg->n_tenants > 0)
            t->t = cfg->tenants[i];
        else
            t->t = (struct sched_tenant){.name = "default", .weight = 1};
        if (t->t.weight == 0)
            t->t.weight = 1;
        if (t->t.max_finished == 0)
            t->t.max_finished = SCHED_DEFAULT_FINISHED;
        t->period_start_ms = t->bucket_ms = now_ms;
        t->bucket = t->t.rate_per_min;
    }
    s->cfg.tenants = NULL; /* copied */
    return s;
}

/* Milliseconds from since to now; 0 when since is later (stamped by another thread meanwhile). */
static uint64_t
elapsed(uint64_t now_ms, uint64_t since_ms)
{
    return now_ms > since_ms ? now_ms - since_ms : 0;
}

/* ---- lists ---- */

static void
list_push(struct sched_req **head, struct sched_req **tail, struct sched_req *r, bool front)
{
    r->prev = front ? NULL : *tail;
    r->next = front ? *head : NULL;
    if (r->prev != NULL)
        r->prev->next = r;
    else
        *head = r;
    if (r->next != NULL)
        r->next->prev = r;
    else
        *tail = r;
}

static void
list_remove(struct sched_req **head, struct sched_req **tail, struct sched_req *r)
{
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        *head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        *tail = r->prev;
    r->prev = r->next = NULL;
}

static void
queue_push(struct sched *s, struct sched_req *r, bool front)
{
    struct queue *q = &s->ten[r->tenant].q[r->prio];

    list_push(&q->head, &q->tail, r, front);
    q->n++;
    s->n_queued++;
    r->state = REQ_QUEUED;
}

static void
queue_remove(struct sched *s, struct sched_req *r)
{
    struct queue *q = &s->ten[r->tenant].q[r->prio];

    list_remove(&q->head, &q->tail, r);
    q->n--;
    s->n_queued--;
    r->state = REQ_IDLE;
}

/* r has ended and is on no queue nor worker: it joins its tenant's finished requests, which
 * finished_trim() brings back to max_finished. */
static void
finished_push(struct sched *s, struct sched_req *r)
{
    struct tstate *t = &s->ten[r->tenant];

    list_push(&t->fin_head, &t->fin_tail, r, false);
    if (++t->n_fin > t->t.max_finished)
        s->trim_due = true;
}

static void
slot_remove(struct sched *s, struct sched_req *r)
{
    struct wslot *w = &s->slots[r->slot];

    list_remove(&w->head, &w->tail, r);
    w->n_running--;
    s->ten[r->tenant].n_running--;
    r->state = REQ_IDLE;
    r->slot = -1;
    if (r->ended)
        finished_push(s, r);
}

/* 1-based place of a queued request among its tenant's: the interactive queue goes first. */
static uint32_t
queue_position(const struct sched *s, const struct sched_req *r)
{
    const struct queue *q = s->ten[r->tenant].q;
    uint32_t pos = 1;

    if (r->prio == PROTO_PRIO_BATCH)
        pos += q[PROTO_PRIO_INTERACTIVE].n;
    for (const struct sched_req *p = q[r->prio].head; p != NULL && p != r; p = p->next)
        pos++;
    return pos;
}

/* Request id of tenant; another tenant's id is not found either (nothing leaks). */
static struct sched_req *
find_req(const struct sched *s, int tenant, const char *id)
{
    for (struct sched_req *r = s->all; r != NULL; r = r->all_next)
        if (strcmp(r->id, id) == 0)
            return r->tenant == tenant ? r : NULL;
    return NULL;
}

/* ---- frames ---- */

static void
frame_clear(struct proto_frame *f)
{
    free(f->ids);
    free(f->text);
    free(f->msg);
}

/* Appends a zeroed frame of kind with the next sequence number; NULL when memory runs out. */
static struct proto_frame *
frame_push(struct sched_req *r, enum proto_frame_kind kind)
{
    struct proto_frame *f;

    if (r->n_frames == r->cap_frames) {
        uint32_t cap = r->cap_frames ? 2 * r->cap_frames : 4;
        struct proto_frame *nf = realloc(r->frames, cap * sizeof(*nf));

        if (nf == NULL)
            return NULL;
        r->frames = nf;
        r->cap_frames = cap;
    }
    f = &r->frames[r->n_frames];
    memset(f, 0, sizeof(*f));
    f->seq = r->base_seq + r->n_frames;
    f->kind = kind;
    r->n_frames++;
    return f;
}

/* Drops the frames before sequence number k (the client has them). */
static void
frames_drop_before(struct sched_req *r, uint64_t k)
{
    uint32_t n = 0;

    while (n < r->n_frames && r->frames[n].seq < k)
        frame_clear(&r->frames[n++]);
    if (n == 0)
        return;
    memmove(r->frames, r->frames + n, (r->n_frames - n) * sizeof(*r->frames));
    r->n_frames -= n;
    r->base_seq += n;
}

static uint64_t
next_seq(const struct sched_req *r)
{
    return r->base_seq + r->n_frames;
}

/* Hands w the frames from `from` on (at most PROTO_MAX_FRAMES), marking them delivered. */
static void
deliver(struct sched_req *r, struct sched_waiter *w, uint64_t from, uint64_t now_ms)
{
    struct proto_frames f = {r->id, NULL, 0};

    if (from < r->base_seq)
        from = r->base_seq;
    if (from < next_seq(r)) {
        f.frames = &r->frames[from - r->base_seq];
        f.n_frames = (uint32_t)(next_seq(r) - from);
        if (f.n_frames > PROTO_MAX_FRAMES)
            f.n_frames = PROTO_MAX_FRAMES;
        if (from + f.n_frames > r->delivered_end)
            r->delivered_end = from + f.n_frames;
        if (r->ended && r->delivered_end == next_seq(r) && r->final_delivered_ms == 0)
            r->final_delivered_ms = now_ms;
    }
    w->wake(w, &f);
}

/* Wakes every parked waiter of r that has frames to take now. */
static void
wake_waiters(struct sched_req *r, uint64_t now_ms)
{
    struct sched_waiter **pp = &r->waiters;

    while (*pp != NULL) {
        struct sched_waiter *w = *pp;

        if (w->from < next_seq(r) || r->ended) {
            *pp = w->next;
            w->req = NULL;
            deliver(r, w, w->from, now_ms);
        } else {
            pp = &w->next;
        }
    }
}

/* ---- text and ids ---- */

/* Makes room for need ids (and their text offsets) in r. */
static int
gen_reserve(struct sched_req *r, uint32_t need)
{
    uint32_t cap = r->cap_gen ? r->cap_gen : 64;
    int32_t *gen;
    size_t *ends;

    if (need <= r->cap_gen)
        return ERR_OK;
    while (cap < need)
        cap *= 2;
    if ((gen = realloc(r->gen, cap * sizeof(*gen))) == NULL)
        return ERR_NOMEM;
    r->gen = gen;
    if ((ends = realloc(r->gen_end, cap * sizeof(*ends))) == NULL)
        return ERR_NOMEM;
    r->gen_end = ends;
    r->cap_gen = cap;
    return ERR_OK;
}

/* Makes room for need bytes of text in r. */
static int
text_reserve(struct sched_req *r, size_t need)
{
    size_t cap = r->text_cap ? r->text_cap : 256;
    char *text;

    if (need <= r->text_cap)
        return ERR_OK;
    while (cap < need)
        cap *= 2;
    if ((text = realloc(r->text, cap)) == NULL)
        return ERR_NOMEM;
    r->text = text;
    r->text_cap = cap;
    return ERR_OK;
}

/*
 * Moves the ids [n_sent, n_ids) and the text [text_sent, text_end) into the stream: into the last
 * frame when it is an undelivered tokens frame, else into a new one.
 */
static int
stream_tokens(struct sched_req *r, uint32_t n_ids, size_t text_end)
{
    uint32_t add = n_ids - r->n_sent;
    size_t tlen = text_end - r->text_sent;
    struct proto_frame *f = NULL;
    int32_t *ids;
    char *text;

    if (add == 0)
        return ERR_OK;
    if (r->n_frames > 0) {
        f = &r->frames[r->n_frames - 1];
        if (f->kind != PROTO_FRAME_TOKENS || f->seq < r->delivered_end)
            f = NULL;
    }
    if (f == NULL && (f = frame_push(r, PROTO_FRAME_TOKENS)) == NULL)
        return ERR_NOMEM;
    ids = realloc(f->ids, (f->n_ids + add) * sizeof(*ids));
    if (ids == NULL)
        return ERR_NOMEM;
    f->ids = ids;
    text = realloc(f->text, f->text_len + tlen + 1);
    if (text == NULL)
        return ERR_NOMEM;
    f->text = text;
    memcpy(f->ids + f->n_ids, r->gen + r->n_sent, add * sizeof(*ids));
    f->n_ids += add;
    memcpy(f->text + f->text_len, r->text + r->text_sent, tlen);
    f->text_len += tlen;
    f->text[f->text_len] = '\0';
    r->n_sent = n_ids;
    r->text_sent = text_end;
    return ERR_OK;
}

/*
 * Releases what may go out now: whole tokens whose text can no longer be the start of a stop
 * string nor ends inside a UTF-8 character. Returns true when a stop string was hit: the text is
 * then cut where it starts and every id goes out.
 */
static bool
release_tokens(struct sched_req *r)
{
    bool hit = false;
    size_t end = stop_scan((const char *const *)r->stop, r->n_stop, r->text, r->text_len,
                           r->text_sent, &hit);
    uint32_t n = r->n_sent;

    if (hit) {
        r->text_len = end;
        stream_tokens(r, r->n_gen, end);
        return true;
    }
    if (end > r->text_len - stop_utf8_pending(r->text, r->text_len))
        end = r->text_len - stop_utf8_pending(r->text, r->text_len);
    while (n < r->n_gen && r->gen_end[n] <= end)
        n++;
    stream_tokens(r, n, n > 0 ? r->gen_end[n - 1] : 0);
    return false;
}

/* ---- ending a request ---- */

static void
fill_stats(const struct sched_req *r, struct proto_stats *st, const struct proto_stats *worker,
           uint64_t now_ms)
{
    memset(st, 0, sizeof(*st));
    st->prompt_tokens = r->n_prompt;
    st->gen_tokens = r->n_gen;
    if (r->dispatch_ms != 0)
        st->queue_ms = (double)elapsed(r->dispatch_ms, r->submit_ms);
    if (worker != NULL) {
        st->prefill_ms = worker->prefill_ms;
        st->decode_ms = worker->decode_ms;
    } else if (r->first_token_ms != 0) {
        st->prefill_ms = (double)elapsed(r->first_token_ms, r->dispatch_ms);
        st->decode_ms = (double)elapsed(now_ms, r->first_token_ms);
    }
}

/* Frees what only a running request needs (prompt, ids, text); the counts stay for statistics. */
static void
req_shrink(struct sched_req *r)
{
    free(r->prompt);
    free(r->gen);
    free(r->gen_end);
    free(r->text);
    r->prompt = r->gen = NULL;
    r->gen_end = NULL;
    r->text = NULL;
    r->cap_gen = 0;
    r->text_cap = r->text_len = r->text_sent = 0;
}

/* A request ends: its tenant's virtual time keeps only the tokens it really generated. */
static void
charge_settle(struct sched *s, struct sched_req *r)
{
    struct tstate *t = &s->ten[r->tenant];

    if (r->charged && r->n_gen < r->max_tokens)
        t->vtime -= (double)(r->max_tokens - r->n_gen) / t->t.weight;
    r->charged = false;
}

/* Ends r with a done frame: the held-back text goes out first, except after a cancel. */
static void
end_done(struct sched *s, struct sched_req *r, enum proto_reason reason,
         const struct proto_stats *worker, uint64_t now_ms)
{
    struct proto_frame *f;

    if (r->ended)
        return;
    if (reason != PROTO_REASON_CANCELLED)
        stream_tokens(r, r->n_gen, r->text_len);
    f = frame_push(r, PROTO_FRAME_DONE);
    if (f != NULL) {
        f->reason = reason;
        fill_stats(r, &f->stats, worker, now_ms);
    }
    r->ended = true;
    r->end_ms = now_ms;
    charge_settle(s, r);
    req_shrink(r);
    s->completed++;
    if (r->state == REQ_QUEUED)
        queue_remove(s, r);
    if (r->state == REQ_IDLE)
        finished_push(s, r);
    log_info("request %s done: %s, %u prompt + %u generated tokens", r->id,
             proto_reason_name(reason), r->n_prompt, r->n_gen);
    wake_waiters(r, now_ms);
}

static void
end_error(struct sched *s, struct sched_req *r, int code, const char *msg, uint64_t now_ms)
{
    struct proto_frame *f;

    if (r->ended)
        return;
    f = frame_push(r, PROTO_FRAME_ERROR);
    if (f != NULL) {
        f->code = code;
        f->msg = strdup(msg != NULL ? msg : "");
    }
    r->ended = true;
    r->end_ms = now_ms;
    charge_settle(s, r);
    req_shrink(r);
    s->failed++;
    if (r->state == REQ_QUEUED)
        queue_remove(s, r);
    if (r->state == REQ_IDLE)
        finished_push(s, r);
    log_warn("request %s failed: %s: %s", r->id, err_str(code), msg);
    wake_waiters(r, now_ms);
}

/* Cancels r: a done(cancelled) frame, and its worker told to stop; it stays on the worker's list
 * until the worker lets go of it. */
static void
cancel_req(struct sched *s, struct sched_req *r, uint64_t now_ms)
{
    end_done(s, r, PROTO_REASON_CANCELLED, NULL, now_ms);
    if (r->state == REQ_RUNNING)
        s->ops.cancel(s->ops.ud, r->slot, r->id);
}

static void
req_free(struct sched_req *r)
{
    for (uint32_t i = 0; i < r->n_frames; i++)
        frame_clear(&r->frames[i]);
    for (uint32_t i = 0; i < r->n_stop; i++)
        free(r->stop[i]);
    free(r->stop);
    free(r->frames);
    free(r->prompt);
    free(r->gen);
    free(r->gen_end);
    free(r->text);
    free(r->client_id);
    free(r);
}

/* Takes r off the list of all requests (and of finished ones) and frees it; its waiters get an
 * empty answer. */
static void
req_drop(struct sched *s, struct sched_req *r)
{
    if (r->ended && r->state == REQ_IDLE) {
        struct tstate *t = &s->ten[r->tenant];

        list_remove(&t->fin_head, &t->fin_tail, r);
        t->n_fin--;
    }
    while (r->waiters != NULL) {
        struct sched_waiter *w = r->waiters;

        r->waiters = w->next;
        w->req = NULL;
        deliver(r, w, next_seq(r), 0); /* nothing more will come */
    }
    if (r->all_prev != NULL)
        r->all_prev->all_next = r->all_next;
    else
        s->all = r->all_next;
    if (r->all_next != NULL)
        r->all_next->all_prev = r->all_prev;
    req_free(r);
}

/* Drops the finished request r, remembering its number for the not_found message of a late
 * poll (evicted: to keep its tenant's max_finished, else its linger time passed). */
static void
req_forget(struct sched *s, struct sched_req *r, bool evicted)
{
    struct tstate *t = &s->ten[r->tenant];

    if (t->gone == NULL)
        t->gone = malloc(t->t.max_finished * sizeof(*t->gone)); /* without it: "no request" */
    if (t->gone != NULL) {
        t->gone[t->gone_next] = r->num | (evicted ? GONE_EVICTED : 0);
        t->gone_next = (t->gone_next + 1) % t->t.max_finished;
        if (t->n_gone < t->t.max_finished)
            t->n_gone++;
    }
    req_drop(s, r);
}

/*
 * Brings every tenant back to its max_finished finished requests: first those whose client has
 * read the end (oldest first), then the oldest finished. Runs before the lock is let go, never
 * inside a walk of the lists (it frees requests).
 */
static void
finished_trim(struct sched *s)
{
    if (!s->trim_due)
        return;
    s->trim_due = false;
    for (int i = 0; i < s->n_ten; i++) {
        struct tstate *t = &s->ten[i];
        struct sched_req *r, *next;

        for (r = t->fin_head; r != NULL && t->n_fin > t->t.max_finished; r = next) {
            next = r->next;
            if (r->final_delivered_ms != 0)
                req_forget(s, r, true);
        }
        while (t->n_fin > t->t.max_finished) {
            log_debug("request %s dropped unread: tenant %s keeps %u finished requests",
                      t->fin_head->id, t->t.name, t->t.max_finished);
            req_forget(s, t->fin_head, true);
        }
    }
}

/* The not_found answer for tenant's id: "expired" when it was one of its dropped requests. */
static int
not_found(const struct sched *s, int tenant, const char *id, char *err)
{
    const struct tstate *t = &s->ten[tenant];
    char *end;
    uint64_t num;

    if (id[0] != 'r' || id[1] < '1' || id[1] > '9') /* as sched makes them: no leading 0 */
        return err_set(err, ERR_NOT_FOUND, "no request %s", id);
    num = strtoull(id + 1, &end, 10);
    for (uint32_t i = 0; *end == '\0' && i < t->n_gone; i++) {
        if ((t->gone[i] & ~GONE_EVICTED) != num)
            continue;
        if (t->gone[i] & GONE_EVICTED)
            return err_set(err, ERR_NOT_FOUND,
                           "request %s expired: tenant %s keeps its last %u finished requests", id,
                           t->t.name, t->t.max_finished);
        return err_set(err, ERR_NOT_FOUND,
                       "request %s expired: a finished request is kept %g s (%g s once its end "
                       "was read)",
                       id, s->cfg.linger_ms / 1000.0, s->cfg.linger_polled_ms / 1000.0);
    }
    return err_set(err, ERR_NOT_FOUND, "no request %s", id);
}

void
sched_free(struct sched *s)
{
    if (s == NULL)
        return;
    while (s->all != NULL) {
        s->all->waiters = NULL; /* not woken: the caller has abandoned them */
        req_drop(s, s->all);
    }
    pthread_mutex_destroy(&s->mu);
    for (int i = 0; i < s->n_ten; i++)
        free(s->ten[i].gone);
    free(s->ten);
    free(s);
}

/* ---- dispatch ---- */

/* The ready slot with room and the fewest running requests; -1 if none. */
static int
pick_slot(const struct sched *s, uint64_t now_ms)
{
    int best = -1;

    for (int i = 0; i < s->cfg.n_slots; i++) {
        const struct wslot *w = &s->slots[i];

        if (w->state != WSLOT_READY || w->kill_sent || w->n_running >= w->max_batch ||
            now_ms < w->pause_until_ms)
            continue;
        if (best < 0 || w->n_running < s->slots[best].n_running)
            best = i;
    }
    return best;
}

/*
 * The next request to dispatch: the first of the backlogged tenant with room under its
 * max_running whose virtual time is least (the lowest index on a tie), interactive before batch.
 */
static struct sched_req *
pick_req(const struct sched *s)
{
    const struct tstate *best = NULL;

    for (int i = 0; i < s->n_ten; i++) {
        const struct tstate *t = &s->ten[i];

        if (t->q[0].n + t->q[1].n == 0 ||
            (t->t.max_running != 0 && t->n_running >= t->t.max_running))
            continue;
        if (best == NULL || t->vtime < best->vtime)
            best = t;
    }
    if (best == NULL)
        return NULL;
    return best->q[PROTO_PRIO_INTERACTIVE].head != NULL ? best->q[PROTO_PRIO_INTERACTIVE].head
                                                        : best->q[PROTO_PRIO_BATCH].head;
}

static void
dispatch_locked(struct sched *s, uint64_t now_ms)
{
    char err[ERR_MSG_MAX];

    for (;;) {
        struct sched_req *r;
        struct proto_dispatch d;
        struct tstate *t;
        struct wslot *w;
        int slot;

        if (s->n_queued == 0 || (slot = pick_slot(s, now_ms)) < 0 || (r = pick_req(s)) == NULL)
            return;
        d = (struct proto_dispatch){r->id,       r->prompt,     r->n_prompt, r->gen,   r->n_gen,
                                    r->sampling, r->max_tokens, r->stop,     r->n_stop};
        if (s->ops.dispatch(s->ops.ud, slot, &d, err) != 0) {
            /* it stays first in its queue; this worker gets nothing for a moment */
            log_warn("dispatch of %s to worker %d failed (it stays queued): %s", r->id, slot, err);
            s->slots[slot].pause_until_ms = now_ms + SCHED_BUSY_PAUSE_MS;
            continue;
        }
        queue_remove(s, r);
        w = &s->slots[slot];
        if (w->n_running == 0)
            w->progress_ms = now_ms; /* the watchdog counts from here */
        list_push(&w->head, &w->tail, r, false);
        w->n_running++;
        t = &s->ten[r->tenant];
        t->n_running++;
        if (t->vtime > s->vclock)
            s->vclock = t->vtime;
        if (!r->charged) {
            t->vtime += (double)(r->n_prompt + r->max_tokens) / t->t.weight;
            r->charged = true;
        }
        r->state = REQ_RUNNING;
        r->slot = slot;
        r->prefilling = true;
        if (r->dispatch_ms == 0) {
            r->dispatch_ms = now_ms;
            frame_push(r, PROTO_FRAME_STARTED);
            wake_waiters(r, now_ms);
        }
        log_debug("request %s -> worker %d (%u replay ids)", r->id, slot, r->n_gen);
    }
}

/* ---- admission ---- */

static int
req_copy_in(struct sched_req *r, const struct sched_submit *in)
{
    r->prompt = malloc(in->n_prompt * sizeof(*r->prompt));
    if (r->prompt == NULL)
        return ERR_NOMEM;
    memcpy(r->prompt, in->prompt_ids, in->n_prompt * sizeof(*r->prompt));
    r->n_prompt = in->n_prompt;
    if (in->n_stop > 0) {
        r->stop = calloc(in->n_stop, sizeof(*r->stop));
        if (r->stop == NULL)
            return ERR_NOMEM;
        for (; r->n_stop < in->n_stop; r->n_stop++)
            if ((r->stop[r->n_stop] = strdup(in->stop[r->n_stop])) == NULL)
                return ERR_NOMEM;
    }
    if (in->client_id != NULL && (r->client_id = strdup(in->client_id)) == NULL)
        return ERR_NOMEM;
    return ERR_OK;
}

static struct sched_req *
find_client_id(const struct sched *s, const char *client_id, int tenant)
{
    for (struct sched_req *r = s->all; r != NULL; r = r->all_next)
        if (r->client_id != NULL && r->tenant == tenant && strcmp(r->client_id, client_id) == 0)
            return r;
    return NULL;
}

static uint32_t
retry_ms(uint64_t ms)
{
    return ms < 1 ? 1 : ms > PROTO_MAX_RETRY_MS ? PROTO_MAX_RETRY_MS : (uint32_t)ms;
}

/*
 * The tenant's own limits, in order: rate (submits per minute), token budget, queued requests.
 * A refusal is ERR_BUSY with the time after which a retry can succeed. Takes one submit from the
 * rate bucket on success. Lock held.
 */
static int
tenant_admit(struct sched *s, struct tstate *t, uint64_t now_ms, struct sched_admit *a, char *err)
{
    const struct sched_tenant *c = &t->t;
    uint32_t queued = t->q[0].n + t->q[1].n;

    if (c->rate_per_min > 0) {
        double per_ms = c->rate_per_min / 60000.0;

        t->bucket += elapsed(now_ms, t->bucket_ms) * per_ms;
        if (t->bucket > c->rate_per_min)
            t->bucket = c->rate_per_min;
        t->bucket_ms = now_ms;
        if (t->bucket < 1) {
            a->retry_after_ms = retry_ms((uint64_t)((1 - t->bucket) / per_ms) + 1);
            return err_set(err, ERR_BUSY, "tenant %s: rate limit of %u requests per minute",
                           c->name, c->rate_per_min);
        }
    }
    if (c->token_budget > 0) {
        uint64_t period = c->budget_period_ms;

        if (elapsed(now_ms, t->period_start_ms) >= period) {
            t->period_start_ms += elapsed(now_ms, t->period_start_ms) / period * period;
            t->used = 0;
        }
        if (t->used >= c->token_budget) {
            a->retry_after_ms = retry_ms(t->period_start_ms + period - now_ms);
            return err_set(err, ERR_BUSY, "tenant %s: token budget of %llu used up", c->name,
                           (unsigned long long)c->token_budget);
        }
    }
    if (c->max_queued > 0 && queued >= c->max_queued) {
        a->retry_after_ms = s->cfg.retry_after_ms;
        return err_set(err, ERR_BUSY, "tenant %s: %u requests queued (its limit)", c->name, queued);
    }
    if (c->rate_per_min > 0)
        t->bucket -= 1;
    return ERR_OK;
}

int
sched_submit(struct sched *s, const struct sched_submit *in, uint64_t now_ms, struct sched_admit *a,
             char *err)
{
    struct sched_req *r;
    struct proto_frame *f;
    struct tstate *t;
    uint32_t n_ctx;
    int rc = ERR_OK;

    memset(a, 0, sizeof(*a));
    if (in->tenant < 0 || in->tenant >= s->n_ten)
        return err_set(err, ERR_INTERNAL, "no tenant %d", in->tenant);
    t = &s->ten[in->tenant];
    pthread_mutex_lock(&s->mu);
    if (in->client_id != NULL && (r = find_client_id(s, in->client_id, in->tenant)) != NULL) {
        snprintf(a->id, sizeof(a->id), "%s", r->id);
        a->position = r->state == REQ_QUEUED ? queue_position(s, r) : 0;
        goto out;
    }
    if (s->shutting_down) {
        rc = err_set(err, ERR_SHUTTING_DOWN, "orchd is shutting down");
        goto out;
    }
    n_ctx = s->n_ctx != 0 ? s->n_ctx : s->cfg.n_ctx; /* before any worker reported: configured */
    if (n_ctx != 0 && (uint64_t)in->n_prompt + in->max_tokens > n_ctx) {
        rc = err_set(err, ERR_CONTEXT_FULL,
                     "prompt (%u tokens) plus max_tokens (%u) exceed the context length (%u)",
                     in->n_prompt, in->max_tokens, n_ctx);
        goto out;
    }
    if (s->n_queued >= s->cfg.queue_max) {
        a->retry_after_ms = s->cfg.retry_after_ms;
        rc = err_set(err, ERR_BUSY, "queue full (%u requests waiting)", s->cfg.queue_max);
        goto out;
    }
    if ((rc = tenant_admit(s, t, now_ms, a, err)) != ERR_OK)
        goto out;
    r = calloc(1, sizeof(*r));
    if (r == NULL || req_copy_in(r, in) != ERR_OK) {
        if (r != NULL)
            req_free(r);
        rc = err_set(err, ERR_NOMEM, "out of memory admitting a request");
        goto out;
    }
    r->num = ++s->next_id;
    snprintf(r->id, sizeof(r->id), "r%llu", (unsigned long long)r->num);
    r->tenant = in->tenant;
    r->prio = in->priority == PROTO_PRIO_BATCH ? PROTO_PRIO_BATCH : PROTO_PRIO_INTERACTIVE;
    r->slot = -1;
    r->sampling = in->sampling;
    if (r->sampling.seed == PROTO_SEED_RANDOM)
        r->sampling.seed = sampler_seed_random();
    r->max_tokens = in->max_tokens;
    r->submit_ms = r->last_poll_ms = now_ms;
    r->all_next = s->all;
    if (s->all != NULL)
        s->all->all_prev = r;
    s->all = r;
    if (t->q[0].n + t->q[1].n == 0 && t->n_running == 0 && t->vtime < s->vclock)
        t->vtime = s->vclock; /* backlogged again: no credit for the idle time */
    t->used += r->n_prompt;
    queue_push(s, r, false);
    a->position = queue_position(s, r);
    f = frame_push(r, PROTO_FRAME_QUEUED);
    dispatch_locked(s, now_ms);
    if (r->state != REQ_QUEUED)
        a->position = 0;
    if (f != NULL)
        r->frames[0].position = a->position;
    snprintf(a->id, sizeof(a->id), "%s", r->id);
    log_debug("request %s admitted: %u prompt tokens, position %u", r->id, r->n_prompt,
              a->position);
out:
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- polls and cancels ---- */

int
sched_poll(struct sched *s, int tenant, const char *id, uint64_t from, uint32_t wait_ms,
           uint64_t now_ms, struct sched_waiter *w, char *err)
{
    struct sched_req *r;

    pthread_mutex_lock(&s->mu);
    r = find_req(s, tenant, id);
    if (r == NULL) {
        int rc = not_found(s, tenant, id, err);

        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    r->last_poll_ms = now_ms;
    frames_drop_before(r, from < next_seq(r) ? from : next_seq(r));
    if (from < next_seq(r) || wait_ms == 0 || r->ended) {
        w->req = NULL;
        deliver(r, w, from, now_ms);
        /* the client has the final frame and asks past it: nothing is left to keep */
        if (r->ended && from >= next_seq(r) && r->state == REQ_IDLE && r->waiters == NULL)
            req_forget(s, r, false);
    } else {
        w->req = r;
        w->from = from;
        w->deadline_ms = now_ms + wait_ms;
        w->next = r->waiters;
        r->waiters = w;
    }
    pthread_mutex_unlock(&s->mu);
    return ERR_OK;
}

void
sched_poll_abandon(struct sched *s, struct sched_waiter *w)
{
    pthread_mutex_lock(&s->mu);
    if (w->req != NULL) {
        for (struct sched_waiter **pp = &w->req->waiters; *pp != NULL; pp = &(*pp)->next)
            if (*pp == w) {
                *pp = w->next;
                break;
            }
        w->req = NULL;
    }
    pthread_mutex_unlock(&s->mu);
}

int
sched_cancel(struct sched *s, int tenant, const char *id, uint64_t now_ms, char *err)
{
    struct sched_req *r;
    int rc = ERR_OK;

    pthread_mutex_lock(&s->mu);
    r = find_req(s, tenant, id);
    if (r != NULL)
        cancel_req(s, r, now_ms);
    else
        rc = not_found(s, tenant, id, err);
    finished_trim(s);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* ---- worker events ---- */

static struct wslot *
slot_of(struct sched *s, int slot)
{
    return slot >= 0 && slot < s->cfg.n_slots ? &s->slots[slot] : NULL;
}

/* The request id running on slot, or NULL. */
static struct sched_req *
running_on(struct sched *s, int slot, const char *id)
{
    for (struct sched_req *r = s->slots[slot].head; r != NULL; r = r->next)
        if (strcmp(r->id, id) == 0)
            return r;
    return NULL;
}

/* The worker in w answered its probe: it takes work from now on. Lock held. */
static void
slot_ready(struct sched *s, int slot, const struct proto_ready *rd, uint64_t now_ms)
{
    struct wslot *w = &s->slots[slot];

    w->state = WSLOT_READY;
    w->max_batch = rd->max_batch;
    w->progress_ms = now_ms;
    w->progress_tokens = 0;
    w->pause_until_ms = 0;
    s->n_ctx = rd->n_ctx;
    log_info("worker %d ready (pid %d, context %u, batch %u) after %llu ms", slot, rd->pid,
             rd->n_ctx, rd->max_batch, (unsigned long long)elapsed(now_ms, w->started_ms));
    dispatch_locked(s, now_ms);
}

void
sched_worker_started(struct sched *s, int slot, int pid, uint32_t restarts, uint64_t now_ms)
{
    struct wslot *w;

    pthread_mutex_lock(&s->mu);
    if ((w = slot_of(s, slot)) != NULL) {
        w->state = WSLOT_STARTING;
        w->pid = pid;
        w->restarts = restarts;
        w->started_ms = now_ms;
        w->kill_sent = false;
        if (w->early.pid == pid) /* it was quicker than the news of its start */
            slot_ready(s, slot, &w->early, now_ms);
        w->early.pid = 0;
    }
    pthread_mutex_unlock(&s->mu);
}

void
sched_worker_ready(struct sched *s, int slot, const struct proto_ready *rd, uint64_t now_ms)
{
    struct wslot *w;

    pthread_mutex_lock(&s->mu);
    if ((w = slot_of(s, slot)) != NULL) {
        if (w->state == WSLOT_STARTING && w->pid == rd->pid)
            slot_ready(s, slot, rd, now_ms);
        else if (w->state == WSLOT_DOWN)
            w->early = *rd; /* sched_worker_started() for this pid comes next */
    }
    pthread_mutex_unlock(&s->mu);
}

void
sched_worker_heartbeat(struct sched *s, int slot, const struct proto_heartbeat *h, uint64_t now_ms)
{
    struct wslot *w;

    pthread_mutex_lock(&s->mu);
    if ((w = slot_of(s, slot)) != NULL && h->tokens != w->progress_tokens) {
        w->progress_tokens = h->tokens;
        w->progress_ms = now_ms;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Appends a worker's tokens to r; returns true when a stop string ended the request. */
static bool
append_tokens(struct sched *s, struct sched_req *r, const struct proto_wtokens *t, uint64_t now_ms)
{
    if (gen_reserve(r, r->n_gen + t->n_ids) != ERR_OK ||
        text_reserve(r, r->text_len + t->text_len + 1) != ERR_OK) {
        end_error(s, r, ERR_NOMEM, "out of memory storing tokens", now_ms);
        return false;
    }
    memcpy(r->text + r->text_len, t->text, t->text_len);
    r->text_len += t->text_len;
    for (uint32_t i = 0; i < t->n_ids; i++) {
        r->gen[r->n_gen] = t->ids[i];
        r->gen_end[r->n_gen++] = r->text_len; /* per message: pieces come joined */
    }
    s->gen_tokens += t->n_ids;
    s->ten[r->tenant].gen_tokens += t->n_ids;
    s->ten[r->tenant].used += t->n_ids;
    if (r->first_token_ms == 0)
        r->first_token_ms = now_ms;
    return release_tokens(r);
}

void
sched_worker_tokens(struct sched *s, int slot, const struct proto_wtokens *t, uint64_t now_ms)
{
    struct sched_req *r;

    pthread_mutex_lock(&s->mu);
    if (slot_of(s, slot) == NULL)
        goto out;
    s->slots[slot].progress_ms = now_ms;
    r = running_on(s, slot, t->id);
    if (r != NULL)
        r->prefilling = false;
    if (r == NULL || r->ended) {
        s->ops.cancel(s->ops.ud, slot, t->id); /* work nobody waits for */
        goto out;
    }
    if (t->index + t->n_ids <= r->n_gen)
        goto out; /* already have them (a replay's overlap) */
    if (t->index != r->n_gen) {
        log_warn("worker %d sent tokens %u.. of %s, expected %u: ignored", slot, t->index, r->id,
                 r->n_gen);
        goto out;
    }
    if ((uint64_t)t->index + t->n_ids > r->max_tokens) {
        /* a broken worker: what a request holds stays bounded by its max_tokens */
        end_error(s, r, ERR_INTERNAL, "the worker sent more tokens than max_tokens", now_ms);
        s->ops.cancel(s->ops.ud, slot, r->id);
        goto out;
    }
    if (append_tokens(s, r, t, now_ms)) {
        end_done(s, r, PROTO_REASON_STOP, NULL, now_ms);
        s->ops.cancel(s->ops.ud, slot, r->id);
    } else {
        wake_waiters(r, now_ms);
    }
out:
    pthread_mutex_unlock(&s->mu);
}

void
sched_worker_done(struct sched *s, int slot, const struct proto_wdone *d, uint64_t now_ms)
{
    struct sched_req *r;

    pthread_mutex_lock(&s->mu);
    if (slot_of(s, slot) != NULL && (r = running_on(s, slot, d->id)) != NULL) {
        slot_remove(s, r);
        end_done(s, r, d->reason, &d->stats, now_ms);
        dispatch_locked(s, now_ms);
    }
    finished_trim(s);
    pthread_mutex_unlock(&s->mu);
}

void
sched_worker_error(struct sched *s, int slot, const struct proto_error *e, uint64_t now_ms)
{
    struct sched_req *r;

    pthread_mutex_lock(&s->mu);
    if (slot_of(s, slot) == NULL)
        goto out;
    if (e->id == NULL) {
        log_warn("worker %d: %s: %s", slot, err_str(e->code), e->msg);
        goto out;
    }
    if ((r = running_on(s, slot, e->id)) == NULL)
        goto out;
    slot_remove(s, r);
    if (e->code == ERR_BUSY && !r->ended) {
        /* not now (it has not let go of its last request yet): again shortly */
        log_debug("worker %d refused %s as busy; retrying", slot, r->id);
        s->slots[slot].pause_until_ms = now_ms + SCHED_BUSY_PAUSE_MS;
        queue_push(s, r, true);
    } else {
        end_error(s, r, e->code, e->msg, now_ms);
    }
    dispatch_locked(s, now_ms);
out:
    finished_trim(s);
    pthread_mutex_unlock(&s->mu);
}

void
sched_worker_exited(struct sched *s, int slot, const char *detail, bool fatal, uint64_t now_ms)
{
    struct wslot *w;
    struct sched_req *r;

    pthread_mutex_lock(&s->mu);
    if ((w = slot_of(s, slot)) == NULL)
        goto out;
    w->state = fatal ? WSLOT_FATAL : WSLOT_DOWN;
    w->pid = 0;
    snprintf(w->detail, sizeof(w->detail), "%s%s", fatal ? "fatal: " : "last: ", detail);
    /* replay in the order they were dispatched: push each to the front, last first */
    while ((r = w->tail) != NULL) {
        slot_remove(s, r);
        if (r->ended)
            continue;
        r->crashes++;
        if (r->crashes > s->cfg.max_replays) {
            end_error(s, r, ERR_WORKER_CRASHED, "worker crashed; replays exhausted", now_ms);
        } else if (r->n_gen >= r->max_tokens) {
            end_done(s, r, PROTO_REASON_LENGTH, NULL, now_ms);
        } else {
            log_info("request %s: worker %d %s; replaying %u tokens elsewhere", r->id, slot, detail,
                     r->n_gen);
            queue_push(s, r, true);
        }
    }
    dispatch_locked(s, now_ms);
out:
    finished_trim(s);
    pthread_mutex_unlock(&s->mu);
}

/* ---- timers ---- */

/* How long w may go without token progress: longer while a request of it is still in prefill. */
static uint64_t
progress_bound(const struct sched *s, const struct wslot *w)
{
    for (const struct sched_req *r = w->head; r != NULL; r = r->next)
        if (r->prefilling && !r->ended && s->cfg.prefill_timeout_ms > s->cfg.progress_timeout_ms)
            return s->cfg.prefill_timeout_ms;
    return s->cfg.progress_timeout_ms;
}

void
sched_tick(struct sched *s, uint64_t now_ms)
{
    struct sched_req *r, *next;

    pthread_mutex_lock(&s->mu);
    for (r = s->all; r != NULL; r = next) {
        struct sched_waiter **pp = &r->waiters;

        next = r->all_next;
        while (*pp != NULL) {
            struct sched_waiter *w = *pp;

            if (now_ms >= w->deadline_ms) {
                *pp = w->next;
                w->req = NULL;
                deliver(r, w, w->from, now_ms);
            } else {
                pp = &w->next;
            }
        }
        if (!r->ended && r->waiters == NULL &&
            elapsed(now_ms, r->last_poll_ms) >= s->cfg.client_timeout_ms) {
            log_info("request %s: no poll for %llu ms; cancelling", r->id,
                     (unsigned long long)elapsed(now_ms, r->last_poll_ms));
            cancel_req(s, r, now_ms);
        }
        if (r->ended && r->state == REQ_IDLE && r->waiters == NULL &&
            (elapsed(now_ms, r->end_ms) >= s->cfg.linger_ms ||
             (r->final_delivered_ms != 0 &&
              elapsed(now_ms, r->final_delivered_ms) >= s->cfg.linger_polled_ms)))
            req_forget(s, r, false);
    }
    for (int i = 0; i < s->cfg.n_slots; i++) {
        struct wslot *w = &s->slots[i];

        if (w->kill_sent)
            continue;
        if (w->state == WSLOT_STARTING &&
            elapsed(now_ms, w->started_ms) >= s->cfg.start_timeout_ms) {
            w->kill_sent = true;
            s->ops.kill(s->ops.ud, i, "not ready in time");
        } else if (w->state == WSLOT_READY && w->n_running > 0 &&
                   elapsed(now_ms, w->progress_ms) >= progress_bound(s, w)) {
            w->kill_sent = true;
            s->ops.kill(s->ops.ud, i, "no token progress");
        }
    }
    dispatch_locked(s, now_ms); /* to workers whose pause has passed */
    finished_trim(s);
    pthread_mutex_unlock(&s->mu);
}

/* ---- shutdown ---- */

void
sched_shutdown(struct sched *s)
{
    pthread_mutex_lock(&s->mu);
    s->shutting_down = true;
    pthread_mutex_unlock(&s->mu);
}

uint32_t
sched_active(struct sched *s)
{
    uint32_t n = 0;

    pthread_mutex_lock(&s->mu);
    for (struct sched_req *r = s->all; r != NULL; r = r->all_next)
        n += !r->ended;
    pthread_mutex_unlock(&s->mu);
    return n;
}

void
sched_end_all(struct sched *s, int code, const char *msg, uint64_t now_ms)
{
    pthread_mutex_lock(&s->mu);
    for (struct sched_req *r = s->all; r != NULL; r = r->all_next) {
        if (r->ended)
            continue;
        end_error(s, r, code, msg, now_ms);
        if (r->state == REQ_RUNNING)
            s->ops.cancel(s->ops.ud, r->slot, r->id);
    }
    finished_trim(s);
    pthread_mutex_unlock(&s->mu);
}

/* ---- reports ---- */

static uint32_t
workers_ready(const struct sched *s)
{
    uint32_t n = 0;

    for (int i = 0; i < s->cfg.n_slots; i++)
        n += s->slots[i].state == WSLOT_READY;
    return n;
}

void
sched_status(struct sched *s, uint64_t now_ms,
             void (*fn)(void *ud, const struct proto_status_info *st), void *ud)
{
    struct proto_status_info st = {0};
    struct proto_tenant_info *tenants;

    pthread_mutex_lock(&s->mu);
    tenants = calloc((size_t)s->n_ten, sizeof(*tenants));
    for (int i = 0; i < s->n_ten; i++) {
        const struct tstate *t = &s->ten[i];

        st.queued_interactive += t->q[PROTO_PRIO_INTERACTIVE].n;
        st.queued_batch += t->q[PROTO_PRIO_BATCH].n;
        if (tenants != NULL)
            tenants[i] = (struct proto_tenant_info){(char *)t->t.name, t->q[0].n + t->q[1].n, 0,
                                                    t->gen_tokens};
    }
    st.queue_max = s->cfg.queue_max;
    for (int i = 0; i < s->cfg.n_slots; i++)
        for (const struct sched_req *r = s->slots[i].head; r != NULL; r = r->next) {
            st.running += !r->ended;
            if (tenants != NULL)
                tenants[r->tenant].running += !r->ended;
        }
    st.workers = (uint32_t)s->cfg.n_slots;
    st.workers_ready = workers_ready(s);
    st.completed = s->completed;
    st.failed = s->failed;
    st.uptime_ms = elapsed(now_ms, s->start_ms);
    st.tenants = tenants;
    st.n_tenants = tenants != NULL ? (uint32_t)s->n_ten : 0;
    fn(ud, &st);
    pthread_mutex_unlock(&s->mu);
    free(tenants);
}

static enum proto_worker_state
wire_state(const struct sched *s, const struct wslot *w)
{
    switch (w->state) {
    case WSLOT_STARTING:
        return s->shutting_down ? PROTO_WSTATE_STOPPING : PROTO_WSTATE_STARTING;
    case WSLOT_READY:
        if (s->shutting_down)
            return PROTO_WSTATE_STOPPING;
        return w->n_running > 0 ? PROTO_WSTATE_BUSY : PROTO_WSTATE_READY;
    case WSLOT_FATAL:
        return PROTO_WSTATE_FATAL;
    case WSLOT_DOWN:
        break;
    }
    return s->shutting_down ? PROTO_WSTATE_STOPPED : PROTO_WSTATE_BACKOFF;
}

void
sched_workers(struct sched *s, int tenant, void (*fn)(void *ud, const struct proto_workers_info *w),
              void *ud)
{
    struct proto_worker_info info[SCHED_MAX_SLOTS];
    struct proto_workers_info wi = {info, 0};
    char **ids;
    uint32_t total = 0, k = 0;

    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->cfg.n_slots; i++)
        total += s->slots[i].n_running;
    ids = malloc((total + 1) * sizeof(*ids));
    for (int i = 0; i < s->cfg.n_slots && ids != NULL; i++) {
        const struct wslot *w = &s->slots[i];

        info[i] = (struct proto_worker_info){
            .slot = (uint32_t)i,
            .pid = w->pid,
            .state = wire_state(s, w),
            .restarts = w->restarts,
            .requests = ids + k,
            .detail = (char *)w->detail,
            .in_flight = w->n_running,
            .slots = w->state == WSLOT_READY ? w->max_batch : 0,
        };
        for (struct sched_req *r = w->head; r != NULL; r = r->next)
            if (tenant < 0 || r->tenant == tenant)
                ids[k++] = r->id;
        info[i].n_requests = (uint32_t)(ids + k - info[i].requests);
        wi.n_workers++;
    }
    fn(ud, &wi);
    pthread_mutex_unlock(&s->mu);
    free(ids);
}

void
sched_health(struct sched *s, struct proto_health_info *h)
{
    pthread_mutex_lock(&s->mu);
    h->workers_ready = workers_ready(s);
    h->ready = !s->shutting_down && h->workers_ready > 0;
    if (s->shutting_down)
        h->detail = "shutting down";
    else if (h->workers_ready == 0)
        h->detail = "no worker ready";
    else
        h->detail = "";
    pthread_mutex_unlock(&s->mu);
}
