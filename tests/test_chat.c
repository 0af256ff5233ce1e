/*
 * test_chat.c: chat formats against the templates of real models: the ones inside the Llama-3,
 * Qwen2.5 and Phi-3 vocab files in ../shared, and the published templates of Llama-2-chat,
 * Mistral-7B-Instruct v0.2, Gemma-it and Zephyr as strings. Each is recognised as its family and
 * renders a conversation into what the Jinja template gives (without the leading BOS, which the
 * tokenizer adds); the Llama-3 and Qwen2 results tokenize into their special tokens.
 */
#include "common/err.h"
#include "tests/harness.h"
#include "workerd/engine/chat.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* meta-llama/Llama-2-7b-chat-hf */
static const char llama2_tmpl[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] "
    "== 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != "
    "false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% "
    "endfor %}";

/* mistralai/Mistral-7B-Instruct-v0.2 */
static const char mistral_tmpl[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 "
    "% 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] "
    "' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";

/* google/gemma-2b-it */
static const char gemma_tmpl[] =
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not "
    "supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != "
    "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% "
    "set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ "
    "'<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor "
    "%}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

/* HuggingFaceH4/zephyr-7b-beta */
static const char zephyr_tmpl[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\\n' + "
    "message['content'] + eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\\n' "
    "+ message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ "
    "'<|assistant|>\\n'  + message['content'] + eos_token }}\n{% endif %}\n{% if loop.last and "
    "add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

static const struct chat_msg conv[] = {
    {"system", "You are terse."},
    {"user", "Hi there "},
    {"assistant", "Hello."},
    {"user", "Bye"},
};

/* Renders msgs with f and compares with want; prints both on a difference. */
static bool
renders(const struct chat_format *f, const struct chat_msg *msgs, size_t n, bool gen,
        const char *want)
{
    char *got = NULL, err[ERR_MSG_MAX];
    size_t len;
    int rc = chat_render(f, msgs, n, gen, &got, &len, err);
    bool ok = rc == ERR_OK && len == strlen(want) && strcmp(got, want) == 0;

    if (!ok)
        printf("  %s: got '%s' (%s), want '%s'\n", chat_family_name(f->family),
               rc == ERR_OK ? got : "", rc == ERR_OK ? "" : err, want);
    free(got);
    return ok;
}

static void
test_published_templates(void)
{
    struct chat_format f;

    chat_format_detect(&f, llama2_tmpl, strlen(llama2_tmpl), "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_LLAMA2 && !f.fallback);
    CHECK(renders(&f, conv, 4, true,
                  "[INST] <<SYS>>\nYou are terse.\n<</SYS>>\n\nHi there [/INST] Hello. </s>"
                  "<s>[INST] Bye [/INST]"));

    chat_format_detect(&f, mistral_tmpl, strlen(mistral_tmpl), "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_LLAMA2 && f.flags == 0);
    CHECK(renders(&f, conv + 1, 3, true, "[INST] Hi there  [/INST]Hello.</s>[INST] Bye [/INST]"));
    /* no system role in this template: the system text goes in front of the user's */
    CHECK(renders(&f, conv, 2, true, "[INST] You are terse.\n\nHi there  [/INST]"));

    chat_format_detect(&f, gemma_tmpl, strlen(gemma_tmpl), "<bos>", "<eos>");
    CHECK(f.family == CHAT_FAMILY_GEMMA);
    CHECK(renders(&f, conv + 1, 3, true,
                  "<start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello."
                  "<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"));
    CHECK(renders(&f, conv, 2, false,
                  "<start_of_turn>user\nYou are terse.\n\nHi there<end_of_turn>\n"));

    chat_format_detect(&f, zephyr_tmpl, strlen(zephyr_tmpl), "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_ZEPHYR);
    CHECK(renders(&f, conv, 2, true,
                  "<|system|>\nYou are terse.</s>\n<|user|>\nHi there </s>\n<|assistant|>\n"));
}

/* Mistral's newer formats, recognised by the markers of their templates (excerpts). */
static void
test_mistral_variants(void)
{
    static const char v3[] = "{%- if tools is not none %}{{- \"[AVAILABLE_TOOLS] [\" }}{%- endif "
                             "%}{{- \"[INST] \" + message[\"content\"] + \"[/INST]\" }}";
    static const char tekken[] = "{{- \"[AVAILABLE_TOOLS] [\" }}{{- \"[INST]\" }}";
    static const char v7[] = "{{- '[SYSTEM_PROMPT] ' + system_message + '[/SYSTEM_PROMPT]' }}"
                             "{{- '[INST] ' + message['content'] + '[/INST]' }}";
    struct chat_format f;

    chat_format_detect(&f, v3, strlen(v3), "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_MISTRAL_V3);
    /* v3 puts the system message in front of the last user message */
    CHECK(renders(&f, conv, 4, true,
                  "[INST] Hi there [/INST] Hello.</s>[INST] You are terse.\n\nBye[/INST]"));
    chat_format_detect(&f, tekken, strlen(tekken), "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_MISTRAL_V3_TEKKEN);
    CHECK(renders(&f, conv + 1, 3, true, "[INST]Hi there [/INST]Hello.</s>[INST]Bye[/INST]"));
    chat_format_detect(&f, v7, strlen(v7), "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_MISTRAL_V7);
    CHECK(renders(&f, conv, 3, true,
                  "[SYSTEM_PROMPT] You are terse.[/SYSTEM_PROMPT][INST] Hi there [/INST] "
                  "Hello.</s>"));
}

/* The templates inside the vocab files, and the prompt's tokens. */
static void
test_model_templates(void)
{
    static const char *const files[3] = {
        "models/vocab/ggml-vocab-llama-bpe.gguf",
        "models/vocab/ggml-vocab-qwen2.gguf",
        "models/vocab/ggml-vocab-phi-3.gguf",
    };
    static const char *const want[3] = {
        "<|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there <|im_end|>\n"
        "<|im_start|>assistant\n",
        "<|user|>\nYou are terse.\n\nHi there <|end|>\n<|assistant|>\n",
    };
    static const enum chat_family family[3] = {CHAT_FAMILY_LLAMA3, CHAT_FAMILY_CHATML,
                                               CHAT_FAMILY_PHI3};
    /* the first two ids: <|begin_of_text|> <|start_header_id|>; <|im_start|> "system"; <s> <|user|>
     */
    static const int32_t first[3][2] = {{128000, 128006}, {151644, 8948}, {1, 32010}};
    char path[512], err[ERR_MSG_MAX];

    for (int k = 0; k < 3; k++) {
        struct gguf *g;
        struct tokenizer *t;
        struct chat_format f;
        char *text = NULL;
        size_t len, n = 0;
        int32_t ids[64];

        if (!harness_shared(path, sizeof(path), files[k]))
            return;
        CHECK(gguf_open(&g, path, err) == ERR_OK);
        CHECK(tokenizer_load(&t, g, err) == ERR_OK);
        int rc = chat_format_from_model(&f, g, t, err);
        bool ok = rc == ERR_OK && f.family == family[k] && !f.fallback &&
                  renders(&f, conv, 2, true, want[k]) &&
                  chat_render(&f, conv, 2, true, &text, &len, err) == ERR_OK &&
                  tokenizer_encode(t, text, len, tokenizer_add_bos(t), true, ids, 64, &n, err) ==
                      ERR_OK &&
                  n >= 2;
        bool ids_ok = ok && ids[0] == first[k][0] && ids[1] == first[k][1];
        if (k == 0)
            ids_ok = ids_ok && ids[n - 5] == 128009 && ids[n - 4] == 128006; /* <|eot_id|>... */
        if (k == 1) {
            /* Qwen2.5's template adds its own system message when there is none */
            ids_ok = ids_ok &&
                     renders(&f, conv + 1, 1, true,
                             "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are "
                             "a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there "
                             "<|im_end|>\n<|im_start|>assistant\n");
        }
        free(text);
        tokenizer_free(t);
        gguf_close(g);
        CHECKF(ok, "%s: family %s", files[k], chat_family_name(f.family));
        CHECKF(ids_ok, "%s: ids %d %d", files[k], n > 0 ? ids[0] : -1, n > 1 ? ids[1] : -1);
    }
}

static void
test_fallback_and_errors(void)
{
    static const struct chat_msg tool[] = {{"user", "x"}, {"tool", "42"}};
    static const struct chat_msg bad[] = {{"user", NULL}};
    struct chat_format f;
    char *text = NULL, err[ERR_MSG_MAX];
    size_t len;

    chat_format_detect(&f, NULL, 0, NULL, NULL);
    CHECK(f.family == CHAT_FAMILY_CHATML && f.fallback);
    chat_format_detect(&f, "{{ messages }}", 14, "<s>", "</s>");
    CHECK(f.family == CHAT_FAMILY_CHATML && f.fallback && f.default_system[0] == '\0');
    CHECK(renders(&f, tool, 2, false,
                  "<|im_start|>user\nx<|im_end|>\n<|im_start|>tool\n42"
                  "<|im_end|>\n"));
    CHECK(renders(&f, NULL, 0, true, "<|im_start|>assistant\n"));
    CHECK(renders(&f, NULL, 0, false, ""));
    chat_format_detect(&f, llama2_tmpl, strlen(llama2_tmpl), "<s>", "</s>");
    CHECK(chat_render(&f, tool, 2, true, &text, &len, err) == ERR_BAD_REQUEST &&
          strstr(err, "message 2") != NULL && strstr(err, "'tool'") != NULL && text == NULL);
    CHECK(chat_render(&f, bad, 1, true, &text, &len, err) == ERR_BAD_REQUEST &&
          strstr(err, "message 1") != NULL);
    CHECK(strcmp(chat_family_name(CHAT_FAMILY_MISTRAL_V7), "mistral-v7") == 0);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_published_templates),
        TEST(test_mistral_variants),
        TEST(test_model_templates),
        TEST(test_fallback_and_errors),
        {0},
    };
    return harness_run(tests, argc, argv);
}
