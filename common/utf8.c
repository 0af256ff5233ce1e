/*
 * utf8.c: see utf8.h. One scanner classifies the sequence at a position as a whole character or
 * a maximal invalid subpart (a valid prefix cut short by a bad byte or by the end of the buffer),
 * following the table of well-formed byte sequences in the Unicode standard (3.9, table 3-7).
 */
#include "common/utf8.h"

#include <stdbool.h>
#include <string.h>

/* True when a whole character starts at p (left > 0 bytes); *n gets the bytes covered. */
static bool
utf8_scan(const unsigned char *p, size_t left, size_t *n)
{
    unsigned char b = p[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */

    if (b < 0x80) {
        *n = 1;
        return true;
    }
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0)
            lo = 0xA0;
        else if (b == 0xED)
            hi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0)
            lo = 0x90;
        else if (b == 0xF4)
            hi = 0x8F;
    } else {
        *n = 1;
        return false;
    }
    for (size_t i = 1; i < need; i++) {
        if (i == left) {
            *n = i;
            return false;
        }
        unsigned char c = p[i];
        bool ok = i == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) {
            *n = i;
            return false;
        }
    }
    *n = need;
    return true;
}

size_t
utf8_sanitize(const char *s, size_t len, char *out, size_t size)
{
    static const char replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD};
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0, o = 0, n;

    while (i < len) {
        const char *src = s + i;
        size_t m;

        if (utf8_scan(p + i, len - i, &n)) {
            m = n;
        } else {
            src = replacement;
            m = sizeof(replacement);
        }
        if (o < size)
            memcpy(out + o, src, m <= size - o ? m : size - o);
        o += m;
        i += n;
    }
    return o;
}
