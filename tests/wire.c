/*
 * wire.c: see wire.h.
 */
#include "tests/wire.h"

#include "common/err.h"

#include <stdio.h>

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
