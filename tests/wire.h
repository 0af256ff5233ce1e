/*
 * wire.h: proto messages in tests that play a peer over a real socket (a worker, orchd, a client):
 * one call instead of encode, check and print in each test; and on a worker link
 * (proto/link.h), sending and receiving whole messages with a bound.
 */
#ifndef LLORCH_TESTS_WIRE_H
#define LLORCH_TESTS_WIRE_H

#include "proto/link.h"
#include "proto/proto.h"

#include <stdbool.h>
#include <stddef.h>

/* Encodes m into a malloc'ed *buf of *len bytes (the caller frees it); on failure prints
 * "  encode <type>: <why>" on stdout and returns false. */
bool wire_encode(const struct proto_msg *m, void **buf, size_t *len);

/* Sends m on the link fd (out: the sender's buffer), waiting up to 5 s; prints why not. */
bool wire_send(struct link_buf *out, int fd, const struct proto_msg *m);

/* Receives one message of the kinds in `links` (PROTO_LINK_*) from the link fd into *m (the caller
 * frees it with proto_msg_free), waiting up to timeout_ms. Returns ERR_OK, ERR_TIMEOUT, ERR_IO at
 * the end of file, or the decoder's error (printed). */
int wire_recv(struct link_buf *in, int fd, unsigned links, int timeout_ms, struct proto_msg *m);

#endif
