/*
 * wire.c: see wire.h.
 */
#include "tests/wire.h"

#include "common/err.h"

#include <stdio.h>
#include <stdlib.h>

bool
wire_encode(const struct proto_msg *m, void **buf, size_t *len)
{
    char err[ERR_MSG_MAX];

    if (proto_encode(m, buf, len, err) != ERR_OK) {
        printf("  encode %s: %s\n", proto_type_name(m->type), err);
        return false;
    }
    return true;
}

bool
wire_send(struct link_buf *out, int fd, const struct proto_msg *m)
{
    char err[ERR_MSG_MAX];
    void *buf;
    size_t len;
    int rc;

    if (!wire_encode(m, &buf, &len))
        return false;
    rc = link_send(out, fd, buf, len, 5000, err);
    free(buf);
    if (rc != ERR_OK)
        printf("  send %s: %s\n", proto_type_name(m->type), err);
    return rc == ERR_OK;
}

int
wire_recv(struct link_buf *in, int fd, unsigned links, int timeout_ms, struct proto_msg *m)
{
    char err[ERR_MSG_MAX];
    const uint8_t *msg;
    size_t len;
    int rc;

    if ((rc = link_recv(in, fd, PROTO_MAX_MSG_BYTES, timeout_ms, &msg, &len, err)) != ERR_OK)
        return rc;
    if ((rc = proto_decode(msg, len, links, m, err)) != ERR_OK)
        printf("  decode: %s: %s\n", err_str(rc), err);
    return rc;
}
