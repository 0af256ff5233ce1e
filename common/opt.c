/*
 * opt.c: opt.h's parsers of numeric option values (strtoll / strtod, the whole string, a range).
 */
#include "common/opt.h"

#include "common/err.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

int
opt_int(const char *name, const char *s, long long lo, long long hi, long long *out, char *err)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
        return err_set(err, ERR_BAD_REQUEST, "%s: not an integer in [%lld, %lld]: '%.40s'", name,
                       lo, hi, s);
    *out = v;
    return ERR_OK;
}

int
opt_float(const char *name, const char *s, double lo, double hi, float *out, char *err)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !isfinite(v) || v < lo || v > hi) {
        if (lo == -HUGE_VAL && hi == HUGE_VAL)
            return err_set(err, ERR_BAD_REQUEST, "%s: not a number: '%.40s'", name, s);
        return err_set(err, ERR_BAD_REQUEST, "%s: not a number in [%g, %g]: '%.40s'", name, lo, hi,
                       s);
    }
    *out = (float)v;
    return ERR_OK;
}
