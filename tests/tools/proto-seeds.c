/*
 * proto-seeds.c: writes the fuzz seed corpus of tests/fuzz_proto.c: one file per message type,
 * the encoded sample of tests/proto_samples.c. Usage: build/proto-seeds DIR (the committed corpus
 * is tests/fuzz-seeds/fuzz_proto/; rerun it after a change of the wire format).
 */
#include "common/err.h"
#include "proto/proto.h"
#include "tests/proto_samples.h"

#include <stdio.h>
#include <stdlib.h>

static int
write_seed(const char *dir, const char *name, const struct proto_msg *m)
{
    char err[ERR_MSG_MAX], path[4096];
    void *buf;
    size_t len;
    FILE *f;

    if (proto_encode(m, &buf, &len, err) != ERR_OK) {
        fprintf(stderr, "proto-seeds: %s: %s\n", name, err);
        return 1;
    }
    snprintf(path, sizeof(path), "%s/%s.msgpack", dir, name);
    f = fopen(path, "wb");
    if (f == NULL || fwrite(buf, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        free(buf);
        return 1;
    }
    free(buf);
    return 0;
}

int
main(int argc, char **argv)
{
    struct proto_msg m;

    if (argc != 2) {
        fprintf(stderr, "usage: proto-seeds DIR\n");
        return 2;
    }
    for (int t = 1; t < PROTO__TYPE_COUNT; t++) {
        proto_sample((enum proto_type)t, &m);
        if (write_seed(argv[1], proto_type_name(m.type), &m) != 0)
            return 1;
    }
    proto_sample_chat(&m);
    return write_seed(argv[1], "submit_chat", &m);
}
