/*
 * sock.h: closing NNG sockets with a bound. NNG 1.5.2 (Debian 12's libnng) can wait forever in
 * nng_close() when a pipe is closed while its transport is between two reads of one message: the
 * partial read is resubmitted on an aio that is already closed, never completes, and NNG's single
 * reaper thread then waits on it (reproduced with a rep socket, a peer sending a multi-megabyte
 * message, and a close; about one close in a hundred). Every llorch process closes its sockets
 * through sock_close() and ends through sock_exit(), so a wedged close costs two seconds, not the
 * process. Not a socket abstraction: callers use NNG directly for everything else.
 */
#ifndef LLORCH_SOCK_H
#define LLORCH_SOCK_H

#include <nng/nng.h>

#include <stdbool.h>

/* How long sock_close() waits for nng_close(); after one close was abandoned (NNG's reaper is
 * then stuck, and every later close waits on it) only SOCK_CLOSE_AFTER_MS. */
#define SOCK_CLOSE_MS       2000
#define SOCK_CLOSE_AFTER_MS 100

/*
 * Closes s (nng_close(), which also closes its dialers, listeners, contexts and pipes) on a
 * helper thread and waits up to SOCK_CLOSE_MS (or SOCK_CLOSE_AFTER_MS) for it. Returns true when
 * the close finished; false when it did not (logged as a warning): the helper thread stays blocked,
 * the socket's memory is not freed, and the process must end through sock_exit(). Thread-safe;
 * blocks.
 */
bool sock_close(nng_socket s);

/*
 * Ends the process with status: exit(status) normally; when a sock_close() was abandoned, stdio
 * is flushed and _exit(status) skips the atexit handlers (NNG registers nng_fini(), which would
 * wait for the wedged close forever). For main() only.
 */
_Noreturn void sock_exit(int status);

#endif
