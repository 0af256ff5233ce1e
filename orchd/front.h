/*
 * front.h: orchd's client side. One NNG rep socket per listen URL (ipc://, tcp://,
 * tls+tcp://), each with a
 * pool of contexts driven by their aio callbacks (NNG's demo/async pattern): a context receives a
 * request, decodes it strictly (proto_decode, client links only), answers submit / poll / cancel /
 * status / workers / health through the scheduler, and receives again. With tenants configured,
 * every message must carry a known key (else an unauthorized error reply) and acts for its tenant.
 * A long poll parks its context on the request (sched_waiter) without holding a thread. Malformed
 * messages get an error reply naming the field, and the front carries on. Not here: scheduling
 * decisions (sched.h), worker links (wlink.h).
 */
#ifndef LLORCH_ORCHD_FRONT_H
#define LLORCH_ORCHD_FRONT_H

#include "orchd/sched.h"

struct chat_format;
struct config;
struct tokenizer;

#define FRONT_MAX_URLS 16

struct front_config {
    const char *const *urls; /* n_urls listen URLs */
    int n_urls;
    int contexts;                   /* per socket: requests in flight (parked polls included) */
    struct sched *sched;            /* not owned */
    const struct tokenizer *tok;    /* prompt -> ids; not owned */
    const struct chat_format *chat; /* chat messages -> prompt text (the model's template) */
    const struct config *conf;      /* tenants whose keys are required; NULL: tenant 0 for all */
    const char *tls_cert_key_file;  /* PEM certificate then key, for tls+tcp:// URLs; or NULL */
};

struct front;

/*
 * Opens a rep socket per URL (NNG_OPT_RECVMAXSZ = PROTO_MAX_MSG_BYTES), listens (tls+tcp:// with
 * tls_cert_key_file), and starts every context receiving. Returns ERR_OK, ERR_IO naming the URL
 * ("listen on ipc:///x: ..."), ERR_BAD_REQUEST for a bad configuration (a tls+tcp:// URL without
 * a certificate, or one NNG cannot read), or ERR_NOMEM; nothing is left open on failure.
 * Called from the main thread; the contexts then run on NNG's threads.
 */
int front_open(struct front **out, const struct front_config *cfg, char *err);

/* Stops every context (waits for running callbacks), withdraws parked polls from the scheduler,
 * closes the sockets and frees the front. NULL is fine. Blocks briefly. */
void front_close(struct front *f);

#endif
