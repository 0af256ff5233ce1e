/*
 * stop.c: stop-string scanning and UTF-8 holdback (stop.h). Stop strings are few and short, so a
 * memmem per stop string over the unreleased text is all it takes.
 */
#include "workerd/engine/stop.h"

#include <string.h>

size_t
stop_scan(const char *const *stops, size_t n_stops, const char *text, size_t len, size_t from,
          bool *hit)
{
    size_t first = len, hold = 0;

    *hit = false;
    if (from > len)
        from = len;
    for (size_t i = 0; i < n_stops; i++) {
        size_t slen = strlen(stops[i]);
        const char *p;

        if (slen == 0)
            continue;
        p = memmem(text + from, len - from, stops[i], slen);
        if (p != NULL && (size_t)(p - text) < first) {
            first = (size_t)(p - text);
            *hit = true;
        }
        /* The longest tail of the unreleased text that stops[i] starts with. */
        for (size_t l = slen - 1 < len - from ? slen - 1 : len - from; l > hold; l--) {
            if (memcmp(text + len - l, stops[i], l) == 0) {
                hold = l;
                break;
            }
        }
    }
    return *hit ? first : len - hold;
}

size_t
stop_utf8_pending(const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;

    /* Walk back over at most 3 continuation bytes to the lead byte of the last sequence. */
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char b = s[len - back];
        size_t need;

        if ((b & 0xC0) == 0x80)
            continue; /* continuation byte */
        if (b < 0x80)
            return 0;
        else if ((b & 0xE0) == 0xC0 && b >= 0xC2)
            need = 2;
        else if ((b & 0xF0) == 0xE0)
            need = 3;
        else if (b >= 0xF0 && b <= 0xF4)
            need = 4;
        else
            return 0; /* not a lead byte: never completes */
        return back < need ? back : 0;
    }
    return 0;
}
