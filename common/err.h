/*
 * err.h: the one error enum of llorch, explicitly numbered because the numbers travel on the wire
 * (proto/) and appear in exit statuses and logs. Every fallible function returns one of these
 * (ERR_OK is 0) and, where the caller passes a buffer, writes a one-line detail into it.
 * Numbers are stable: add new codes at the end, never renumber.
 */
#ifndef LLORCH_ERR_H
#define LLORCH_ERR_H

#include <stddef.h>

enum err {
    ERR_OK = 0,
    ERR_NOMEM = 1,           /* allocation failed */
    ERR_IO = 2,              /* a system call on a file or socket failed */
    ERR_FORMAT = 3,          /* malformed input file or data (GGUF, vocab...) */
    ERR_UNSUPPORTED = 4,     /* well-formed but not something llorch can run */
    ERR_BAD_REQUEST = 5,     /* invalid argument, option or message field */
    ERR_NOT_FOUND = 6,       /* no such key, tensor, request... */
    ERR_BUSY = 7,            /* queue full or quota exhausted: retry later */
    ERR_CANCELLED = 8,       /* the request was cancelled */
    ERR_TIMEOUT = 9,         /* a bound on waiting passed */
    ERR_CONTEXT_FULL = 10,   /* position past the context length */
    ERR_WORKER_CRASHED = 11, /* a worker died and replays were exhausted */
    ERR_UNAUTHORIZED = 12,   /* missing or wrong key */
    ERR_SHUTTING_DOWN = 13,  /* the daemon is stopping and admits nothing */
    ERR_PROTOCOL = 14,       /* unknown version or message type on the wire */
    ERR_INTERNAL = 15,       /* a bug: an invariant did not hold */
    ERR__COUNT
};

/* Size of the detail buffers that functions taking `char *err` write into. */
#define ERR_MSG_MAX 256

/* The stable snake_case name of a code ("bad_request"); "unknown_error" for numbers not in the
 * enum. */
const char *err_str(int code);

/*
 * Formats a detail message into err (ERR_MSG_MAX bytes, may be NULL) and returns code, so that
 * `return err_set(err, ERR_FORMAT, "tensor %s: ...", name);` reports and returns in one line.
 */
int err_set(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
