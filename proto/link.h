/*
 * link.h: the framing of the links between orchd and its workers. Each worker has one connected
 * AF_UNIX stream socket to orchd (one end of a socketpair orchd makes when it forks the worker);
 * every message on it is a 4-byte big-endian length, then that many bytes of one proto message.
 * A dead peer is an end of file on a socket we own, never a half-read message held inside a
 * library (NNG 1.5.2 can wedge its reaper thread on one: proto/sock.h).
 *
 * The primitives never block (MSG_DONTWAIT), so they serve orchd's poll loop; link_send and
 * link_recv wait with a bound, for the worker and for tests playing either side.
 * Not here: what the messages mean (proto.h), who polls (orchd/wlink.c, workerd/cmd_serve.c).
 */
#ifndef LLORCH_LINK_H
#define LLORCH_LINK_H

#include <stddef.h>
#include <stdint.h>

#define LINK_HDR_BYTES 4

/* Bytes on their way in or out: data[off, len) is what is left to parse or to write. */
struct link_buf {
    uint8_t *data;
    size_t off, len, cap;
};

void link_buf_free(struct link_buf *b);
/* Drops everything b holds (keeps its memory). */
void link_buf_reset(struct link_buf *b);
/* The bytes b holds that are not yet parsed or written. */
size_t link_buf_pending(const struct link_buf *b);

/* Appends one frame (header and msg) to b. ERR_BUSY when b would then hold more than max bytes,
 * ERR_NOMEM; b is unchanged on failure. */
int link_queue(struct link_buf *b, const void *msg, size_t len, size_t max, char *err);

/* Writes as much of b to fd as it takes now (never blocks). ERR_OK (link_buf_pending tells what
 * is left), ERR_IO naming the errno when the peer is gone or the write failed. */
int link_flush(struct link_buf *b, int fd, char *err);

/* Reads what fd has now (one recv, never blocks) and appends it to b. ERR_OK (perhaps nothing),
 * ERR_IO with "closed" at end of file or naming the errno on a failure. */
int link_read(struct link_buf *b, int fd, char *err);

/* The next whole frame in b: *msg and *len point into b, valid until b changes; *msg is NULL when
 * b holds no whole frame yet. ERR_PROTOCOL when a frame announces more than max bytes (the link
 * is then unusable: its framing is lost). */
int link_next(struct link_buf *b, size_t max, const uint8_t **msg, size_t *len, char *err);

/* Queues msg in out and writes it to fd, waiting up to timeout_ms for fd to take it all.
 * ERR_TIMEOUT (a partial frame may have gone: the link is then unusable), ERR_IO, ERR_BUSY. */
int link_send(struct link_buf *out, int fd, const void *msg, size_t len, int timeout_ms, char *err);

/* Waits up to timeout_ms for a whole frame from fd, read into in; as link_next otherwise.
 * ERR_TIMEOUT when none came, ERR_IO at end of file. */
int link_recv(struct link_buf *in, int fd, size_t max, int timeout_ms, const uint8_t **msg,
              size_t *len, char *err);

#endif
