/*
 * clock.h: the monotonic clock every timeout, backoff and statistic in llorch is measured on.
 * Never the wall clock: it jumps.
 */
#ifndef LLORCH_CLOCK_H
#define LLORCH_CLOCK_H

#include <stdint.h>

/* Nanoseconds since an arbitrary fixed point (CLOCK_MONOTONIC). */
uint64_t clock_now_ns(void);

/* Milliseconds on the same clock. */
uint64_t clock_now_ms(void);

/* Milliseconds, as a double, between two clock_now_ns() readings. */
double clock_ms_between(uint64_t start_ns, uint64_t end_ns);

#endif
