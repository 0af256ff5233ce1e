/*
 * client.h: the blocking client library of orchd's protocol over an NNG req socket: connect to a
 * URL (ipc://, tcp://, tls+tcp://), submit a request, iterate its frames by long poll, cancel, and
 * ask for status, workers and health. A stream remembers the next sequence number it wants, so
 * after a lost connection (the socket redials by itself) or in another process the same request
 * resumes with no frame lost or repeated. Every call is bounded by a timeout. A client may be used
 * by several threads at once (each call runs on its own NNG context); a stream by one at a time.
 * Not here: the wire format itself (proto.h), printing (orchctl).
 */
#ifndef LLORCH_CLIENT_H
#define LLORCH_CLIENT_H

#include "proto/proto.h"

#include <stdbool.h>
#include <stdint.h>

/* Where orchd listens unless told otherwise, and where orchctl looks (unless $LLORCH_URL or -u). */
#define CLIENT_DEFAULT_URL "ipc:///tmp/llorch.sock"

struct client_opts {
    const char *key;     /* tenant key sent with every request, or NULL (copied) */
    uint32_t timeout_ms; /* bound on each call beyond its long-poll wait; 0 = 10000 */
    bool lazy;           /* connect in the background: client_open succeeds with orchd down */
    const char *ca_file; /* PEM CA chain that must sign the server's certificate (tls+tcp://) */
};

struct client;
struct client_stream;

/*
 * Opens a req socket to url (NNG_OPT_RECVMAXSZ = PROTO_MAX_MSG_BYTES, reconnect 100 ms..2 s) and
 * dials it: at once, so that a missing server is reported here (ERR_IO "cannot connect to URL:
 * Connection refused"), or in the background with opts->lazy. opts may be NULL. On success *out
 * owns the socket; close it with client_close(). ERR_BAD_REQUEST for a bad URL or options.
 */
int client_open(struct client **out, const char *url, const struct client_opts *opts, char *err);

/* Closes the socket (pending calls in other threads fail with ERR_IO) and frees c; NULL is fine. */
void client_close(struct client *c);

/* What a submit got: the request id, and the queue position or the busy hint. */
struct client_submitted {
    char id[PROTO_MAX_ID_BYTES + 1];
    uint32_t position;       /* on ERR_OK */
    uint32_t retry_after_ms; /* on ERR_BUSY */
};

/*
 * Submits s (build it with proto_submit_init(), then fill u.submit; s's strings stay the caller's).
 * Without s->client_id the library picks a random one, so that a re-sent submit is not run
 * twice. Blocks up to the timeout. Returns ERR_OK with out->id, or the server's refusal with its
 * message in err: ERR_BUSY (out->retry_after_ms), ERR_BAD_REQUEST, ERR_UNAUTHORIZED,
 * ERR_SHUTTING_DOWN...; a request that does not encode is refused before sending
 * (ERR_BAD_REQUEST naming the field); ERR_TIMEOUT when no reply came; ERR_IO, ERR_PROTOCOL.
 */
int client_submit(struct client *c, const struct proto_submit *s, struct client_submitted *out,
                  char *err);

/*
 * A stream over the frames of request id, from sequence number `from` on (0 for a new request; the
 * next one wanted when resuming). Does not block or talk to the server. *out is closed with
 * client_stream_close(); it must not outlive c.
 */
int client_stream_open(struct client *c, const char *id, uint64_t from, struct client_stream **out,
                       char *err);

/*
 * The next frame: from what the last poll returned, else by a poll that waits up to wait_ms
 * (<= PROTO_MAX_WAIT_MS) on the server. ERR_OK with *frame set (valid until the next call or the
 * close), or ERR_OK with *frame NULL when wait_ms passed with no new frame, or when the stream has
 * ended (client_stream_ended). Errors leave the stream's position unchanged, so calling again
 * resumes: ERR_TIMEOUT (no reply within wait_ms + the timeout: server gone or slow), ERR_IO,
 * ERR_PROTOCOL (a bad reply, or frames not starting at the sequence asked for), or the server's
 * refusal (ERR_NOT_FOUND for an unknown or expired id, ERR_UNAUTHORIZED).
 */
int client_stream_next(struct client_stream *s, uint32_t wait_ms, const struct proto_frame **frame,
                       char *err);

/* The sequence number of the next frame the stream will return (where to resume). */
uint64_t client_stream_seq(const struct client_stream *s);

/* True once a done or error frame has been returned: the stream has nothing more. */
bool client_stream_ended(const struct client_stream *s);

void client_stream_close(struct client_stream *s);

/* Asks orchd to cancel request id. ERR_OK when it took the cancel; ERR_NOT_FOUND; errors as above.
 */
int client_cancel(struct client *c, const char *id, char *err);

/*
 * status, workers and health: on ERR_OK *reply holds the decoded status_info, workers_info or
 * health_info message (reply->u.status, .workers, .health); free it with proto_msg_free().
 */
int client_status(struct client *c, struct proto_msg *reply, char *err);
int client_workers(struct client *c, struct proto_msg *reply, char *err);
int client_health(struct client *c, struct proto_msg *reply, char *err);

#endif
