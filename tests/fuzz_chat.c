/*
 * fuzz_chat.c: libFuzzer target for chat_format_detect and chat_render. The first input byte
 * gives the number of messages (low 3 bits, up to 7) and add_generation_prompt (bit 3); the rest
 * is split at NUL bytes into the template, then role and content of each message (missing parts
 * are empty strings). Traps when: rendering fails for a family that takes the roles given (any
 * role in ChatML; system, user, assistant elsewhere), succeeds for one that does not, the length
 * is not the string's, or a user message's content (without its surrounding whitespace) is not
 * in the text. Seeds: tests/fuzz-seeds/fuzz_chat/.
 */
#include "common/err.h"
#include "workerd/engine/chat.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(bool ok)
{
    if (!ok)
        __builtin_trap();
}

/* The next NUL-terminated part of buf[*at..n) (buf has a NUL at n), or "" past the end. */
static const char *
next_part(char *buf, size_t n, size_t *at)
{
    if (*at > n)
        return "";
    const char *p = buf + *at;
    *at += strlen(p) + 1;
    return p;
}

static bool
known_role(const char *r)
{
    return strcmp(r, "system") == 0 || strcmp(r, "user") == 0 || strcmp(r, "assistant") == 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t n_msgs = data[0] & 7, n = size - 1, at = 0;
    bool gen = data[0] & 8;
    char *buf = malloc(n + 1), *out = NULL, err[ERR_MSG_MAX];
    struct chat_msg msgs[7];
    struct chat_format f;
    bool roles_ok = true;
    size_t len = 0;

    check(buf != NULL);
    memcpy(buf, data + 1, n);
    buf[n] = '\0';
    const char *tmpl = next_part(buf, n, &at);
    chat_format_detect(&f, tmpl, strlen(tmpl), "<s>", "</s>");
    for (size_t i = 0; i < n_msgs; i++) {
        msgs[i].role = next_part(buf, n, &at);
        msgs[i].content = next_part(buf, n, &at);
        roles_ok = roles_ok && (f.family == CHAT_FAMILY_CHATML || known_role(msgs[i].role));
    }
    int rc = chat_render(&f, msgs, n_msgs, gen, &out, &len, err);
    check(rc == (roles_ok ? ERR_OK : ERR_BAD_REQUEST));
    if (rc == ERR_OK) {
        check(out != NULL && strlen(out) == len);
        for (size_t i = 0; i < n_msgs; i++) {
            if (strcmp(msgs[i].role, "user") != 0)
                continue;
            const char *c = msgs[i].content;
            size_t cl = strlen(c);
            while (cl > 0 && (c[0] == ' ' || (c[0] >= '\t' && c[0] <= '\r'))) {
                c++;
                cl--;
            }
            while (cl > 0 && (c[cl - 1] == ' ' || (c[cl - 1] >= '\t' && c[cl - 1] <= '\r')))
                cl--;
            check(cl == 0 || memmem(out, len, c, cl) != NULL);
        }
    }
    free(out);
    free(buf);
    return 0;
}
