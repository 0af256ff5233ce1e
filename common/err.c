/*
 * err.c: names of the project-wide error codes and the helper that formats a detail message.
 */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>

static const char *const err_names[ERR__COUNT] = {
    [ERR_OK] = "ok",
    [ERR_NOMEM] = "out_of_memory",
    [ERR_IO] = "io_error",
    [ERR_FORMAT] = "bad_format",
    [ERR_UNSUPPORTED] = "unsupported",
    [ERR_BAD_REQUEST] = "bad_request",
    [ERR_NOT_FOUND] = "not_found",
    [ERR_BUSY] = "busy",
    [ERR_CANCELLED] = "cancelled",
    [ERR_TIMEOUT] = "timeout",
    [ERR_CONTEXT_FULL] = "context_full",
    [ERR_WORKER_CRASHED] = "worker_crashed",
    [ERR_UNAUTHORIZED] = "unauthorized",
    [ERR_SHUTTING_DOWN] = "shutting_down",
    [ERR_PROTOCOL] = "protocol_error",
    [ERR_INTERNAL] = "internal_error",
};

const char *
err_str(int code)
{
    if (code < 0 || code >= ERR__COUNT || err_names[code] == NULL)
        return "unknown_error";
    return err_names[code];
}

int
err_set(char *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return code;
    va_start(ap, fmt);
    vsnprintf(err, ERR_MSG_MAX, fmt, ap);
    va_end(ap);
    return code;
}
