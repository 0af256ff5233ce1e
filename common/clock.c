/*
 * clock.c: see clock.h.
 */
#include "common/clock.h"

#include <time.h>

uint64_t
clock_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t
clock_now_ms(void)
{
    return clock_now_ns() / 1000000u;
}

double
clock_ms_between(uint64_t start_ns, uint64_t end_ns)
{
    return (double)(end_ns - start_ns) / 1e6;
}
