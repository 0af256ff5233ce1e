/*
 * chat.c: chat templates by family (chat.h). Detection looks for the marker strings each family's
 * Jinja template writes; rendering writes that family's format directly, following the
 * published templates (Hugging Face tokenizer_config.json files) for what they produce on plain
 * system/user/assistant conversations. Not a Jinja interpreter: tool calls, images and
 * template-specific checks (alternating roles...) are not reproduced.
 */
#include "workerd/engine/chat.h"

#include "common/err.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <stdlib.h>
#include <string.h>

static const char *const family_names[CHAT_FAMILY__COUNT] = {
    [CHAT_FAMILY_CHATML] = "chatml",
    [CHAT_FAMILY_LLAMA2] = "llama2",
    [CHAT_FAMILY_MISTRAL_V1] = "mistral-v1",
    [CHAT_FAMILY_MISTRAL_V3] = "mistral-v3",
    [CHAT_FAMILY_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [CHAT_FAMILY_MISTRAL_V7] = "mistral-v7",
    [CHAT_FAMILY_LLAMA3] = "llama3",
    [CHAT_FAMILY_GEMMA] = "gemma",
    [CHAT_FAMILY_ZEPHYR] = "zephyr",
    [CHAT_FAMILY_PHI3] = "phi3",
};

const char *
chat_family_name(enum chat_family family)
{
    return (unsigned)family < CHAT_FAMILY__COUNT ? family_names[family] : "?";
}

static bool
has(const char *tmpl, size_t len, const char *s)
{
    return tmpl != NULL && memmem(tmpl, len, s, strlen(s)) != NULL;
}

/* Copies s (NULL: empty) into a fixed field, cut to fit. */
static void
copy_field(char *dst, size_t size, const char *s, size_t len)
{
    if (s == NULL)
        len = 0;
    if (len >= size)
        len = size - 1;
    memcpy(dst, s ? s : "", len);
    dst[len] = '\0';
}

/*
 * ChatML templates that add a system message when the conversation has none (Qwen2.5) write it
 * as one string literal '<|im_start|>system\n...<|im_end|>\n'. Finds that literal's text and
 * undoes the Jinja escapes (\n, \t, \', \", \\).
 */
static void
find_default_system(struct chat_format *f, const char *tmpl, size_t len)
{
    static const char open[] = "<|im_start|>system\\n";
    const char *end = tmpl + len;

    for (const char *p = tmpl; p < end;) {
        const char *m = memmem(p, (size_t)(end - p), open, sizeof(open) - 1);
        if (m == NULL)
            return;
        const char *s = m + sizeof(open) - 1, *q = s;
        while (q < end && *q != '\'' && *q != '"')
            q += *q == '\\' && q + 1 < end ? 2 : 1;
        const char *im_end = memmem(s, (size_t)(q - s), "<|im_end|>", 10);
        if (im_end != NULL && im_end > s) {
            size_t o = 0;
            for (const char *c = s; c < im_end && o + 1 < sizeof(f->default_system); c++) {
                char x = *c;
                if (x == '\\' && c + 1 < im_end) {
                    c++;
                    x = *c == 'n' ? '\n' : *c == 't' ? '\t' : *c;
                }
                f->default_system[o++] = x;
            }
            f->default_system[o] = '\0';
            return;
        }
        p = s;
    }
}

void
chat_format_detect(struct chat_format *f, const char *tmpl, size_t len, const char *bos,
                   const char *eos)
{
    memset(f, 0, sizeof(*f));
    copy_field(f->bos, sizeof(f->bos), bos, bos ? strlen(bos) : 0);
    copy_field(f->eos, sizeof(f->eos), eos, eos ? strlen(eos) : 0);
    if (has(tmpl, len, "<|im_start|>")) {
        f->family = CHAT_FAMILY_CHATML;
        find_default_system(f, tmpl, len);
    } else if (has(tmpl, len, "[INST]")) {
        if (has(tmpl, len, "[SYSTEM_PROMPT]")) {
            f->family = CHAT_FAMILY_MISTRAL_V7;
        } else if (has(tmpl, len, "[AVAILABLE_TOOLS]") ||
                   has(tmpl, len, "' [INST] ' + system_message")) {
            f->family = has(tmpl, len, " [INST]")      ? CHAT_FAMILY_MISTRAL_V1
                        : has(tmpl, len, "\"[INST]\"") ? CHAT_FAMILY_MISTRAL_V3_TEKKEN
                                                       : CHAT_FAMILY_MISTRAL_V3;
        } else {
            f->family = CHAT_FAMILY_LLAMA2;
            f->flags |= has(tmpl, len, "<<SYS>>") ? CHAT_FLAG_SYS_BLOCK : 0;
            f->flags |= has(tmpl, len, "bos_token + '[INST]") ? CHAT_FLAG_BOS_IN_HISTORY : 0;
            f->flags |= has(tmpl, len, "' ' + eos_token") ? CHAT_FLAG_SPACE_AROUND : 0;
            f->flags |= has(tmpl, len, "content.strip()") ? CHAT_FLAG_STRIP : 0;
        }
    } else if (has(tmpl, len, "<|start_header_id|>") && has(tmpl, len, "<|end_header_id|>")) {
        f->family = CHAT_FAMILY_LLAMA3;
    } else if (has(tmpl, len, "<start_of_turn>")) {
        f->family = CHAT_FAMILY_GEMMA;
    } else if (has(tmpl, len, "<|user|>") && has(tmpl, len, "<|end|>")) {
        f->family = CHAT_FAMILY_PHI3;
        f->flags |= has(tmpl, len, "<|system|>") ? CHAT_FLAG_SYSTEM_TURN : 0;
    } else if (has(tmpl, len, "<|user|>")) {
        f->family = CHAT_FAMILY_ZEPHYR;
    } else {
        f->family = CHAT_FAMILY_CHATML;
        f->fallback = true;
    }
}

int
chat_format_from_model(struct chat_format *f, const struct gguf *g, const struct tokenizer *t,
                       char *err)
{
    struct gguf_str tmpl = {0, NULL};
    char bos[64] = "", eos[64] = "";
    size_t n;
    const char *s;
    int rc = gguf_get_str(g, "tokenizer.chat_template", &tmpl, err);

    if (rc != ERR_OK && rc != ERR_NOT_FOUND)
        return rc;
    if ((s = tokenizer_token_text(t, tokenizer_bos(t), &n)) != NULL)
        copy_field(bos, sizeof(bos), s, n);
    if ((s = tokenizer_token_text(t, tokenizer_eos(t), &n)) != NULL)
        copy_field(eos, sizeof(eos), s, n);
    chat_format_detect(f, tmpl.data, (size_t)tmpl.len, bos, eos);
    return ERR_OK;
}

/* A growing string; fail is set (and nothing more written) once an allocation fails. */
struct sbuf {
    char *a;
    size_t n, cap;
    bool fail;
};

static void
sb_put(struct sbuf *b, const char *s, size_t len)
{
    if (b->fail)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1)
            cap *= 2;
        char *a = realloc(b->a, cap);
        if (a == NULL) {
            b->fail = true;
            return;
        }
        b->a = a;
        b->cap = cap;
    }
    memcpy(b->a + b->n, s, len);
    b->n += len;
    b->a[b->n] = '\0';
}

static void
sb_puts(struct sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

static bool
is_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Writes s without the whitespace around it (Jinja's trim, Python's strip on ASCII). */
static void
sb_put_trimmed(struct sbuf *b, const char *s, size_t len)
{
    while (len > 0 && is_space(s[0])) {
        s++;
        len--;
    }
    while (len > 0 && is_space(s[len - 1]))
        len--;
    sb_put(b, s, len);
}

static bool
role_is(const struct chat_msg *m, const char *role)
{
    return strcmp(m->role, role) == 0;
}

/* The system text waiting for the next user message ("" when none). */
struct pending {
    struct sbuf text;
};

static void
pending_add(struct pending *p, const char *content)
{
    if (p->text.n > 0)
        sb_puts(&p->text, "\n\n");
    sb_puts(&p->text, content);
}

/* Writes the pending system text (and sep) in front of a user message, then forgets it. */
static void
pending_flush(struct pending *p, struct sbuf *b, const char *sep)
{
    if (p->text.n == 0)
        return;
    sb_put(b, p->text.a, p->text.n);
    sb_puts(b, sep);
    p->text.n = 0;
}

static void
render_chatml(const struct chat_format *f, const struct chat_msg *msgs, size_t n, bool gen,
              struct sbuf *b)
{
    if (f->default_system[0] != '\0' && (n == 0 || !role_is(&msgs[0], "system"))) {
        sb_puts(b, "<|im_start|>system\n");
        sb_puts(b, f->default_system);
        sb_puts(b, "<|im_end|>\n");
    }
    for (size_t i = 0; i < n; i++) {
        sb_puts(b, "<|im_start|>");
        sb_puts(b, msgs[i].role);
        sb_puts(b, "\n");
        sb_puts(b, msgs[i].content);
        sb_puts(b, "<|im_end|>\n");
    }
    if (gen)
        sb_puts(b, "<|im_start|>assistant\n");
}

static void
render_llama3(const struct chat_msg *msgs, size_t n, bool gen, struct sbuf *b)
{
    for (size_t i = 0; i < n; i++) {
        sb_puts(b, "<|start_header_id|>");
        sb_puts(b, msgs[i].role);
        sb_puts(b, "<|end_header_id|>\n\n");
        sb_put_trimmed(b, msgs[i].content, strlen(msgs[i].content));
        sb_puts(b, "<|eot_id|>");
    }
    if (gen)
        sb_puts(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

/* Gemma, Zephyr and Phi-3: one turn per message, a header and a footer around the content. */
static void
render_turns(const struct chat_format *f, const struct chat_msg *msgs, size_t n, bool gen,
             struct sbuf *b, struct pending *sys)
{
    bool gemma = f->family == CHAT_FAMILY_GEMMA, phi3 = f->family == CHAT_FAMILY_PHI3;
    bool system_turn = f->family == CHAT_FAMILY_ZEPHYR || (f->flags & CHAT_FLAG_SYSTEM_TURN);
    const char *foot = gemma ? "<end_of_turn>\n" : phi3 ? "<|end|>\n" : NULL;

    for (size_t i = 0; i < n; i++) {
        const struct chat_msg *m = &msgs[i];
        if (role_is(m, "system") && !system_turn) {
            pending_add(sys, m->content);
            continue;
        }
        if (gemma) {
            sb_puts(b, "<start_of_turn>");
            sb_puts(b, role_is(m, "assistant") ? "model" : m->role);
            sb_puts(b, "\n");
        } else {
            sb_puts(b, "<|");
            sb_puts(b, m->role);
            sb_puts(b, "|>\n");
        }
        if (role_is(m, "user"))
            pending_flush(sys, b, "\n\n");
        if (gemma)
            sb_put_trimmed(b, m->content, strlen(m->content));
        else
            sb_puts(b, m->content);
        if (foot != NULL) {
            sb_puts(b, foot);
        } else {
            sb_puts(b, f->eos);
            sb_puts(b, "\n");
        }
    }
    if (gen)
        sb_puts(b, gemma ? "<start_of_turn>model\n" : "<|assistant|>\n");
}

/* Llama-2 and the Mistral formats: [INST] ... [/INST] answer EOS. */
static void
render_inst(const struct chat_format *f, const struct chat_msg *msgs, size_t n, struct sbuf *b,
            struct pending *sys)
{
    enum chat_family fam = f->family;
    bool v3 = fam == CHAT_FAMILY_MISTRAL_V3 || fam == CHAT_FAMILY_MISTRAL_V3_TEKKEN;
    const char *open = fam == CHAT_FAMILY_MISTRAL_V1          ? " [INST] "
                       : fam == CHAT_FAMILY_MISTRAL_V3_TEKKEN ? "[INST]"
                                                              : "[INST] ";
    const char *close =
        fam == CHAT_FAMILY_LLAMA2 || fam == CHAT_FAMILY_MISTRAL_V1 ? " [/INST]" : "[/INST]";
    const char *answer = fam == CHAT_FAMILY_MISTRAL_V3_TEKKEN ? "" : " ";
    size_t last_user = n;
    bool first = true;

    if (fam == CHAT_FAMILY_LLAMA2)
        answer = (f->flags & CHAT_FLAG_SPACE_AROUND) ? " " : "";
    for (size_t i = 0; i < n; i++)
        if (role_is(&msgs[i], "user"))
            last_user = i;
    if (v3) /* Mistral v3 puts the system message in front of the last user message only */
        for (size_t i = 0; i < n; i++)
            if (role_is(&msgs[i], "system"))
                pending_add(sys, msgs[i].content);
    for (size_t i = 0; i < n; i++) {
        const struct chat_msg *m = &msgs[i];
        if (role_is(m, "system")) {
            if (fam == CHAT_FAMILY_MISTRAL_V7) {
                sb_puts(b, "[SYSTEM_PROMPT] ");
                sb_puts(b, m->content);
                sb_puts(b, "[/SYSTEM_PROMPT]");
            } else if (!v3) {
                pending_add(sys, m->content);
            }
        } else if (role_is(m, "user")) {
            struct sbuf c = {NULL, 0, 0, false};
            if (!first && (f->flags & CHAT_FLAG_BOS_IN_HISTORY))
                sb_puts(b, f->bos);
            first = false;
            sb_puts(b, open);
            if (sys->text.n > 0 && (!v3 || i == last_user)) {
                if (f->flags & CHAT_FLAG_SYS_BLOCK) {
                    sb_puts(&c, "<<SYS>>\n");
                    pending_flush(sys, &c, "\n<</SYS>>\n\n");
                } else {
                    pending_flush(sys, &c, "\n\n");
                }
            }
            sb_puts(&c, m->content);
            if (c.fail)
                b->fail = true;
            else if (f->flags & CHAT_FLAG_STRIP)
                sb_put_trimmed(b, c.a, c.n);
            else
                sb_put(b, c.a, c.n);
            free(c.a);
            sb_puts(b, close);
        } else {
            sb_puts(b, answer);
            if (f->flags & CHAT_FLAG_STRIP)
                sb_put_trimmed(b, m->content, strlen(m->content));
            else
                sb_puts(b, m->content);
            if (fam == CHAT_FAMILY_LLAMA2)
                sb_puts(b, answer);
            sb_puts(b, f->eos);
        }
    }
}

int
chat_render(const struct chat_format *f, const struct chat_msg *msgs, size_t n,
            bool add_generation_prompt, char **out, size_t *len, char *err)
{
    struct sbuf b = {NULL, 0, 0, false};
    struct pending sys = {{NULL, 0, 0, false}};

    for (size_t i = 0; i < n; i++) {
        if (msgs[i].role == NULL || msgs[i].content == NULL)
            return err_set(err, ERR_BAD_REQUEST, "message %zu: role and content are required",
                           i + 1);
        if (f->family != CHAT_FAMILY_CHATML && !role_is(&msgs[i], "system") &&
            !role_is(&msgs[i], "user") && !role_is(&msgs[i], "assistant"))
            return err_set(err, ERR_BAD_REQUEST,
                           "message %zu: role '%.32s' is not system, user or assistant (the "
                           "%s chat format has no other)",
                           i + 1, msgs[i].role, chat_family_name(f->family));
    }
    sb_puts(&b, ""); /* an empty conversation is an empty string, not NULL */
    switch (f->family) {
    case CHAT_FAMILY_CHATML:
        render_chatml(f, msgs, n, add_generation_prompt, &b);
        break;
    case CHAT_FAMILY_LLAMA3:
        render_llama3(msgs, n, add_generation_prompt, &b);
        break;
    case CHAT_FAMILY_GEMMA:
    case CHAT_FAMILY_ZEPHYR:
    case CHAT_FAMILY_PHI3:
        render_turns(f, msgs, n, add_generation_prompt, &b, &sys);
        break;
    default:
        render_inst(f, msgs, n, &b, &sys);
        break;
    }
    bool fail = b.fail || sys.text.fail;
    free(sys.text.a);
    if (fail) {
        free(b.a);
        return err_set(err, ERR_NOMEM, "chat: no memory to render %zu messages", n);
    }
    *out = b.a;
    *len = b.n;
    return ERR_OK;
}
