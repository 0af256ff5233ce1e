/*
 * wire.h: encoding a proto message in tests that play a peer (a worker, orchd, a client) over a
 * real socket: one call instead of encode, check and print in each test. Not a sender: the tests
 * send with NNG as they need (socket, context, blocking or not).
 */
#ifndef LLORCH_TESTS_WIRE_H
#define LLORCH_TESTS_WIRE_H

#include "proto/proto.h"

#include <stdbool.h>
#include <stddef.h>

/* Encodes m into a malloc'ed *buf of *len bytes (the caller frees it); on failure prints
 * "  encode <type>: <why>" on stdout and returns false. */
bool wire_encode(const struct proto_msg *m, void **buf, size_t *len);

#endif
