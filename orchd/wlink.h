/*
 * wlink.h: the links between orchd and its workers. One NNG pair1 socket per slot, on which orchd
 * LISTENS at ipc://<rundir>/w<slot>.sock and the slot's workerd DIALS. When a worker connects,
 * orchd sends probe{nonce}; a ready{nonce} answer makes the slot ready in the scheduler.
 * Heartbeats, tokens, done and error events go to the scheduler; dispatch and cancel go out
 * (non-blocking sends, called from the scheduler's ops with its lock held).
 * Not here: processes (master.h), decisions (sched.h).
 */
#ifndef LLORCH_ORCHD_WLINK_H
#define LLORCH_ORCHD_WLINK_H

#include "orchd/sched.h"

#include <stddef.h>

struct wlink;

/* The URL of slot's link: "ipc://<rundir>/w<slot>.sock" with <slot> = the text slot (a number, or
 * "%d" for the process table's argv pattern). */
void wlink_url(char *buf, size_t size, const char *rundir, const char *slot);

/*
 * Listens on every slot's URL (NNG_OPT_RECVMAXSZ set, a send buffer for bursts) and starts
 * receiving; events go to s (not owned). Returns ERR_OK, ERR_IO naming the URL, or ERR_NOMEM;
 * nothing is left open on failure. Main thread.
 */
int wlink_open(struct wlink **out, const char *rundir, int n_slots, struct sched *s, char *err);

/*
 * After slot's worker ended: closes the slot's socket (sock_close: bounded, abandoned if NNG
 * cannot close it) and listens on the same URL with a new one, so that the next worker gets in
 * whatever became of the old pipe. Blocks (the close); the main thread, between the worker's exit
 * and the start of the next. ERR_IO naming the URL when the new socket cannot listen.
 */
int wlink_reset(struct wlink *wl, int slot, char *err);

/* Stops receiving (waits for running callbacks) and closes the sockets. NULL is fine. */
void wlink_close(struct wlink *wl);

/* Sends a dispatch / a cancel to slot's worker without blocking. wlink_dispatch returns ERR_IO
 * (with err) when it cannot be queued (no worker connected, buffer full). Any thread. */
int wlink_dispatch(struct wlink *wl, int slot, const struct proto_dispatch *d, char *err);
void wlink_cancel(struct wlink *wl, int slot, const char *id);

#endif
