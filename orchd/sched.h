/*
 * sched.h: orchd's scheduler, the state behind every request and every worker slot: admission to
 * a bounded queue (two priorities, FIFO within each), dispatch to a ready worker with room, each
 * request's stream of frames (sequence numbers, coalesced tokens frames, long-poll waiters), the
 * text the client sees (UTF-8 and stop-string hold-back), crash re-dispatch with replay ids,
 * cancel, client and worker timeouts, finished requests kept for late polls (a while, and at most
 * max_finished per tenant), per-request statistics and the counters of `status`.
 *
 * Pure logic: no sockets, no processes. What it decides to send goes out through callbacks
 * (struct sched_ops, struct sched_waiter) that the front and the worker links provide.
 * Thread-safe: one mutex guards all state; every function takes it. The callbacks run WITH the
 * lock held, so they must not block nor call back into sched.
 * Tenants: each request belongs to one (an index into the configured tenants; 0, "default",
 * when none are configured). A tenant only sees, polls and cancels its own requests.
 */
#ifndef LLORCH_ORCHD_SCHED_H
#define LLORCH_ORCHD_SCHED_H

#include "proto/proto.h"

#include <stdbool.h>
#include <stdint.h>

#define SCHED_MAX_SLOTS 64

/* One tenant's share and limits; 0 in a limit means none. */
struct sched_tenant {
    char name[PROTO_MAX_NAME_BYTES + 1];
    uint32_t weight;           /* share of the tokens when tenants compete, [1, 1000] */
    uint32_t max_running;      /* requests running at once */
    uint32_t max_queued;       /* requests waiting at once (besides queue_max for all) */
    uint64_t token_budget;     /* prompt + generated tokens per budget period */
    uint64_t budget_period_ms; /* the budget refills at the end of each period */
    uint32_t rate_per_min;     /* submits per minute (a bucket of that many, refilled evenly) */
    uint32_t max_finished;     /* finished requests kept for late polls: past it, those whose
                                  end was read go first, then the oldest; 0:
                                  SCHED_DEFAULT_FINISHED (here 0 is not "no limit") */
};

#define SCHED_DEFAULT_FINISHED 256

struct sched_config {
    const struct sched_tenant *tenants; /* n_tenants (copied); 0: one "default", no limits */
    int n_tenants;
    int n_slots;                  /* worker slots, [1, SCHED_MAX_SLOTS] */
    uint32_t n_ctx;               /* the context length workers are started with: the limit of
                                     prompt + max_tokens until a worker reports its own; 0: none */
    uint32_t queue_max;           /* queued requests (both priorities) before BUSY */
    uint32_t max_replays;         /* re-dispatches after crashes before worker_crashed */
    uint32_t retry_after_ms;      /* the hint in a BUSY reply */
    uint64_t client_timeout_ms;   /* a request whose client has not polled this long is cancelled */
    uint64_t linger_ms;           /* a finished request is kept this long for late polls */
    uint64_t linger_polled_ms;    /* ... or this long once its last frame was delivered */
    uint64_t progress_timeout_ms; /* a busy worker with no token progress this long is killed */
    uint64_t prefill_timeout_ms;  /* ... this long while a request of it awaits its first token */
    uint64_t start_timeout_ms;    /* a worker not ready this long after its start is killed */
};

/* Fills c with the defaults: the default tenant only, 1 slot, no context length known, queue 64,
 * 3 replays, retry 1 s, client 30 s, linger 60 s (5 s once the last frame was delivered),
 * progress 30 s (600 s in prefill), start 120 s. */
void sched_config_default(struct sched_config *c);

/*
 * What the scheduler sends out. Each runs with the scheduler's lock held, on whichever thread
 * called into sched: it must not block and must not call sched functions. Pointers are valid
 * during the call only.
 */
struct sched_ops {
    void *ud;
    /* Sends a dispatch to the worker in slot; nonzero (with err) if it could not be sent: the
     * request then stays first in its queue and that slot gets no dispatch for a moment. */
    int (*dispatch)(void *ud, int slot, const struct proto_dispatch *d, char *err);
    /* Tells the worker in slot to stop request id (it may already have). */
    void (*cancel)(void *ud, int slot, const char *id);
    /* Kills the worker in slot (hung or never ready); only ever called from sched_tick(). */
    void (*kill)(void *ud, int slot, const char *why);
};

/*
 * A long-poll waiter, owned by the caller (a front context). sched_poll() either answers at once
 * or parks it on the request; either way `wake` is called exactly once (with the lock held) with
 * the frames (possibly none: the wait bound passed, or the request is gone), unless the waiter
 * is withdrawn first with sched_poll_abandon(). The frames are valid during the call only.
 */
struct sched_waiter {
    void (*wake)(struct sched_waiter *w, const struct proto_frames *f);
    void *ud;
    /* private to sched */
    struct sched_waiter *next;
    struct sched_req *req;
    uint64_t from;
    uint64_t deadline_ms;
};

/* One admission: the prompt already tokenized, options already range-checked by the decoder. */
struct sched_submit {
    const int32_t *prompt_ids;
    uint32_t n_prompt;
    struct proto_sampling sampling; /* seed PROTO_SEED_RANDOM: sched picks one */
    uint32_t max_tokens;
    char *const *stop;
    uint32_t n_stop;
    enum proto_priority priority;
    const char *client_id; /* NULL, or a resend of the same submit returns the same request */
    int tenant;            /* index into the configured tenants (0: the default one) */
};

struct sched_admit {
    char id[PROTO_MAX_ID_BYTES + 1];
    uint32_t position;       /* 1-based place in the queue; 0 when dispatched at once */
    uint32_t retry_after_ms; /* with ERR_BUSY */
};

struct sched;

/* Builds the scheduler (all slots down). Returns NULL on bad config or no memory. */
struct sched *sched_new(const struct sched_config *cfg, const struct sched_ops *ops,
                        uint64_t now_ms);

/* Frees every request. Parked waiters are dropped without a wake: abandon them first. */
void sched_free(struct sched *s);

/*
 * Admits a request: copies everything it needs, resolves a random seed, appends a queued frame
 * and tries to dispatch at once. Returns ERR_OK with a->id and a->position (among its tenant's
 * queued requests); at once ERR_SHUTTING_DOWN, ERR_CONTEXT_FULL when prompt plus max_tokens
 * exceed the context length (the workers' once one reported it, before that cfg->n_ctx), or
 * ERR_BUSY with a->retry_after_ms: the queue is full, or the tenant is over its rate limit, its
 * token budget or its max_queued; ERR_NOMEM. A client_id the same tenant used before returns that
 * request's id.
 */
int sched_submit(struct sched *s, const struct sched_submit *in, uint64_t now_ms,
                 struct sched_admit *a, char *err);

/*
 * The frames of tenant's request id from sequence number `from` on (frames before `from` are
 * dropped: the client has them). Calls w->wake at once when there are some, when wait_ms is 0 or
 * when the stream has ended; else parks w until a frame arrives or wait_ms passes (sched_tick).
 * Returns ERR_NOT_FOUND (no wake) for an unknown id, or an expired one (dropped after its
 * linger time or to keep its tenant's max_finished: the message says so), else ERR_OK.
 */
int sched_poll(struct sched *s, int tenant, const char *id, uint64_t from, uint32_t wait_ms,
               uint64_t now_ms, struct sched_waiter *w, char *err);

/* Withdraws a parked waiter; afterwards sched never touches it. Harmless if not parked. */
void sched_poll_abandon(struct sched *s, struct sched_waiter *w);

/*
 * Cancels tenant's request id: a done(cancelled) frame at once, the worker told to stop, and no
 * token frame after it. ERR_NOT_FOUND for an unknown id or another tenant's; a finished request
 * is left as it is (ERR_OK).
 */
int sched_cancel(struct sched *s, int tenant, const char *id, uint64_t now_ms, char *err);

/* Worker events, from the process table (main thread) and the worker links. */

/* A process was started in slot (pid, restarts so far): it is starting until it is ready. */
void sched_worker_started(struct sched *s, int slot, int pid, uint32_t restarts, uint64_t now_ms);
/* The worker answered the probe: it takes up to r->max_batch requests from now on. r->pid must be
 * the started process's; a ready that comes before sched_worker_started() reported its pid is
 * kept until then (the worker may be quicker than the main thread). */
void sched_worker_ready(struct sched *s, int slot, const struct proto_ready *r, uint64_t now_ms);
void sched_worker_heartbeat(struct sched *s, int slot, const struct proto_heartbeat *h,
                            uint64_t now_ms);
/* Generated tokens; those of a request not running on slot (or cancelled) get a cancel back. */
void sched_worker_tokens(struct sched *s, int slot, const struct proto_wtokens *t, uint64_t now_ms);
void sched_worker_done(struct sched *s, int slot, const struct proto_wdone *d, uint64_t now_ms);
/* An error from the worker: about request e->id (it ends with an error frame; ERR_BUSY, a
 * dispatch the worker cannot take yet, puts it back first in its queue and pauses the slot
 * briefly), or about the worker itself (logged). */
void sched_worker_error(struct sched *s, int slot, const struct proto_error *e, uint64_t now_ms);
/*
 * The process in slot ended (detail: how; fatal: it will not be restarted). Its requests go back
 * to the front of their queues to be replayed elsewhere, or end with worker_crashed when their
 * replays are used up.
 */
void sched_worker_exited(struct sched *s, int slot, const char *detail, bool fatal,
                         uint64_t now_ms);

/* Timers: expires waiters, cancels requests whose client vanished, frees lingering requests,
 * kills stalled or never-ready workers (ops->kill). Call every few tens of milliseconds. */
void sched_tick(struct sched *s, uint64_t now_ms);

/*
 * Shutdown: sched_shutdown() stops admission (ERR_SHUTTING_DOWN) and marks the slots stopping;
 * sched_active() counts the requests not yet finished; sched_end_all() ends each of them with an
 * error frame (code, msg) and tells the workers to stop them.
 */
void sched_shutdown(struct sched *s);
uint32_t sched_active(struct sched *s);
void sched_end_all(struct sched *s, int code, const char *msg, uint64_t now_ms);

/* Reports, for status / workers / health replies. The callbacks run with the lock held. Status
 * counts every tenant's requests (names and numbers only); workers lists only the ids of tenant's
 * requests (tenant -1: all). */
void sched_status(struct sched *s, uint64_t now_ms,
                  void (*fn)(void *ud, const struct proto_status_info *st), void *ud);
void sched_workers(struct sched *s, int tenant,
                   void (*fn)(void *ud, const struct proto_workers_info *w), void *ud);
void sched_health(struct sched *s, struct proto_health_info *h);

#endif
