/*
 * proto_samples.h: one representative, valid message of every proto type, for the protocol tests
 * (round trips, truncation, field mutations) and the fuzz seed writer (build/proto-seeds). The
 * messages point into static storage: do not free them.
 */
#ifndef LLORCH_TESTS_PROTO_SAMPLES_H
#define LLORCH_TESTS_PROTO_SAMPLES_H

#include "proto/proto.h"

/* Fills m with the sample of type t (1 <= t < PROTO__TYPE_COUNT). */
void proto_sample(enum proto_type t, struct proto_msg *m);

/* The submit sample with chat messages instead of a prompt. */
void proto_sample_chat(struct proto_msg *m);

#endif
