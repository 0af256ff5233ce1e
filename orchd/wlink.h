/*
 * wlink.h: the links between orchd and its workers. Each worker process has one connected AF_UNIX
 * stream socket to orchd, one end of a socketpair the master makes when it forks the worker
 * (master.h); frames as in proto/link.h. A slot's link is attached when its worker starts and
 * detached when it ends, so no message of one process is ever taken for another's. orchd sends
 * probe{nonce} on attach; a ready{nonce} answer makes the slot ready in the scheduler. Heartbeats,
 * tokens, done and error events go to the scheduler from the link thread; dispatch and cancel go
 * out without blocking (called from the scheduler's ops with its lock held).
 * Not here: processes (master.h), decisions (sched.h).
 */
#ifndef LLORCH_ORCHD_WLINK_H
#define LLORCH_ORCHD_WLINK_H

#include "orchd/sched.h"

#include <stddef.h>

/* What may wait in orchd towards one worker (dispatches carry prompts of up to 4 MiB). */
#define WLINK_OUT_MAX (16u << 20)

struct wlink;

/* Starts the link thread for n_slots slots (none attached); events go to s (not owned).
 * ERR_NOMEM, ERR_IO (the thread or its wake-up eventfd). Main thread. */
int wlink_open(struct wlink **out, int n_slots, struct sched *s, char *err);

/*
 * Gives slot the link of its new worker: fd is orchd's end of the worker's socketpair (owned by
 * the link from now on, also on failure) and the probe goes out at once. A slot still holding a
 * link is detached first. ERR_BAD_REQUEST for a slot out of range, ERR_IO. Main thread.
 */
int wlink_attach(struct wlink *wl, int slot, int fd, char *err);

/* Closes slot's link (its worker ended). When it returns no event of that worker reaches the
 * scheduler any more (it waits for one being handled). No-op for a slot with none. Main thread. */
void wlink_detach(struct wlink *wl, int slot);

/* Stops the link thread and closes every link. NULL is fine. */
void wlink_close(struct wlink *wl);

/* Sends a dispatch / a cancel to slot's worker without blocking. wlink_dispatch returns ERR_IO
 * (with err) when it cannot be queued (no worker attached, its link closed or full). Any thread. */
int wlink_dispatch(struct wlink *wl, int slot, const struct proto_dispatch *d, char *err);
void wlink_cancel(struct wlink *wl, int slot, const char *id);

#endif
