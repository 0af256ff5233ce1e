/*
 * opt.h: the numeric values of command-line options, parsed whole and range-checked, with a
 * one-line error naming the option ("-t: not an integer in [1, 1024]: 'x'"). Shared by every
 * program's option parser (workerd's commands, orchctl, the test tools). Not an option parser
 * itself: each program walks its own argv.
 */
#ifndef LLORCH_OPT_H
#define LLORCH_OPT_H

/*
 * s as a decimal integer (an optional sign, digits, nothing after) in [lo, hi] into *out.
 * ERR_OK, or ERR_BAD_REQUEST with err = "NAME: not an integer in [LO, HI]: 'S'" (S cut to 40
 * bytes) and *out unchanged. Does not block; any thread.
 */
int opt_int(const char *name, const char *s, long long lo, long long hi, long long *out, char *err);

/*
 * s as a finite decimal number in [lo, hi] into *out (rounded to float). ERR_OK, or
 * ERR_BAD_REQUEST with err = "NAME: not a number: 'S'" when the bounds are -HUGE_VAL, HUGE_VAL,
 * else "NAME: not a number in [LO, HI]: 'S'"; *out unchanged.
 */
int opt_float(const char *name, const char *s, double lo, double hi, float *out, char *err);

#endif
