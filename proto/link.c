/*
 * link.c: see link.h. A buffer keeps its bytes in data[off, len): parsing and writing advance
 * off, appending advances len; the consumed head is dropped when it is all consumed or when room
 * is needed.
 */
#include "proto/link.h"

#include "common/clock.h"
#include "common/err.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LINK_READ_CHUNK (64u << 10)

void
link_buf_free(struct link_buf *b)
{
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void
link_buf_reset(struct link_buf *b)
{
    b->off = 0;
    b->len = 0;
}

size_t
link_buf_pending(const struct link_buf *b)
{
    return b->len - b->off;
}

/* Makes room for n more bytes after len. */
static int
reserve(struct link_buf *b, size_t n, char *err)
{
    size_t cap;
    uint8_t *data;

    if (b->off > 0 && (b->off == b->len || b->len + n > b->cap)) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->len + n <= b->cap)
        return ERR_OK;
    cap = b->cap > 0 ? b->cap : 4096;
    while (cap < b->len + n)
        cap *= 2;
    if ((data = realloc(b->data, cap)) == NULL)
        return err_set(err, ERR_NOMEM, "link buffer of %zu bytes: out of memory", cap);
    b->data = data;
    b->cap = cap;
    return ERR_OK;
}

int
link_queue(struct link_buf *b, const void *msg, size_t len, size_t max, char *err)
{
    int rc;

    if (link_buf_pending(b) + LINK_HDR_BYTES + len > max)
        return err_set(err, ERR_BUSY, "link: %zu bytes already queued, %zu more would pass %zu",
                       link_buf_pending(b), len + LINK_HDR_BYTES, max);
    if ((rc = reserve(b, LINK_HDR_BYTES + len, err)) != ERR_OK)
        return rc;
    b->data[b->len] = (uint8_t)(len >> 24);
    b->data[b->len + 1] = (uint8_t)(len >> 16);
    b->data[b->len + 2] = (uint8_t)(len >> 8);
    b->data[b->len + 3] = (uint8_t)len;
    memcpy(b->data + b->len + LINK_HDR_BYTES, msg, len);
    b->len += LINK_HDR_BYTES + len;
    return ERR_OK;
}

int
link_flush(struct link_buf *b, int fd, char *err)
{
    while (b->off < b->len) {
        ssize_t n = send(fd, b->data + b->off, b->len - b->off, MSG_DONTWAIT | MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        if (n < 0)
            return err_set(err, ERR_IO, "link: send: %s", strerror(errno));
        b->off += (size_t)n;
    }
    if (b->off == b->len)
        link_buf_reset(b);
    return ERR_OK;
}

int
link_read(struct link_buf *b, int fd, char *err)
{
    ssize_t n;
    int rc;

    if ((rc = reserve(b, LINK_READ_CHUNK, err)) != ERR_OK)
        return rc;
    do
        n = recv(fd, b->data + b->len, b->cap - b->len, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n == 0)
        return err_set(err, ERR_IO, "link: closed");
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return ERR_OK;
    if (n < 0)
        return err_set(err, ERR_IO, "link: recv: %s", strerror(errno));
    b->len += (size_t)n;
    return ERR_OK;
}

int
link_next(struct link_buf *b, size_t max, const uint8_t **msg, size_t *len, char *err)
{
    const uint8_t *h = b->data + b->off;
    size_t n;

    *msg = NULL;
    *len = 0;
    if (link_buf_pending(b) < LINK_HDR_BYTES)
        return ERR_OK;
    n = (size_t)h[0] << 24 | (size_t)h[1] << 16 | (size_t)h[2] << 8 | h[3];
    if (n > max)
        return err_set(err, ERR_PROTOCOL, "link: a frame of %zu bytes (at most %zu)", n, max);
    if (link_buf_pending(b) - LINK_HDR_BYTES < n)
        return ERR_OK;
    *msg = h + LINK_HDR_BYTES;
    *len = n;
    b->off += LINK_HDR_BYTES + n;
    return ERR_OK;
}

/* Waits up to the deadline for events on fd; ERR_TIMEOUT when it passes first. */
static int
wait_fd(int fd, short events, uint64_t deadline_ms, char *err)
{
    struct pollfd p = {.fd = fd, .events = events};
    uint64_t now;
    int n;

    for (;;) {
        now = clock_now_ms();
        if (now >= deadline_ms)
            return err_set(err, ERR_TIMEOUT, "link: no progress for the time allowed");
        n = poll(&p, 1, (int)(deadline_ms - now));
        if (n > 0)
            return ERR_OK;
        if (n < 0 && errno != EINTR)
            return err_set(err, ERR_IO, "link: poll: %s", strerror(errno));
    }
}

int
link_send(struct link_buf *out, int fd, const void *msg, size_t len, int timeout_ms, char *err)
{
    uint64_t deadline = clock_now_ms() + (uint64_t)timeout_ms;
    int rc;

    if ((rc = link_queue(out, msg, len, SIZE_MAX, err)) != ERR_OK)
        return rc;
    for (;;) {
        if ((rc = link_flush(out, fd, err)) != ERR_OK)
            return rc;
        if (link_buf_pending(out) == 0)
            return ERR_OK;
        if ((rc = wait_fd(fd, POLLOUT, deadline, err)) != ERR_OK)
            return rc;
    }
}

int
link_recv(struct link_buf *in, int fd, size_t max, int timeout_ms, const uint8_t **msg, size_t *len,
          char *err)
{
    uint64_t deadline = clock_now_ms() + (uint64_t)timeout_ms;
    int rc;

    for (;;) {
        if ((rc = link_next(in, max, msg, len, err)) != ERR_OK || *msg != NULL)
            return rc;
        if ((rc = wait_fd(fd, POLLIN, deadline, err)) != ERR_OK ||
            (rc = link_read(in, fd, err)) != ERR_OK)
            return rc;
    }
}
