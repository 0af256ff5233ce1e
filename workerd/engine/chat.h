/*
 * chat.h: a conversation (a list of {role, content} messages) into the prompt text a chat model
 * expects, after the model's chat template (tokenizer.chat_template). The template is not run as
 * Jinja: its family is recognised by the marker strings it writes ([INST], <|start_header_id|>,
 * <|im_start|>, <start_of_turn>, <|user|>...), and the family's format is written here, with
 * the variants the template's text shows. A missing or unrecognised template falls back to
 * ChatML (as llama.cpp's server does). Not here: tokenization (the result is tokenized with
 * parse_special = true so the markers become their special tokens), tools, images.
 */
#ifndef LLORCH_CHAT_H
#define LLORCH_CHAT_H

#include <stdbool.h>
#include <stddef.h>

struct gguf;
struct tokenizer;

enum chat_family {
    CHAT_FAMILY_CHATML,     /* <|im_start|>role\n...<|im_end|>\n (Qwen, Yi, OpenHermes...) */
    CHAT_FAMILY_LLAMA2,     /* [INST] <<SYS>>...<</SYS>> ... [/INST] (Llama-2, Mistral v0.1/2) */
    CHAT_FAMILY_MISTRAL_V1, /* " [INST] ... [/INST]" official Mistral v1 */
    CHAT_FAMILY_MISTRAL_V3, /* "[INST] ...[/INST]" official Mistral v3 (v0.3, Mixtral) */
    CHAT_FAMILY_MISTRAL_V3_TEKKEN, /* "[INST]...[/INST]" Mistral Nemo */
    CHAT_FAMILY_MISTRAL_V7,        /* [SYSTEM_PROMPT]...[/SYSTEM_PROMPT][INST] ...[/INST] */
    CHAT_FAMILY_LLAMA3,            /* <|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|> */
    CHAT_FAMILY_GEMMA,  /* <start_of_turn>user\n...<end_of_turn>\n, "model" for assistant */
    CHAT_FAMILY_ZEPHYR, /* <|user|>\n...EOS\n */
    CHAT_FAMILY_PHI3,   /* <|user|>\n...<|end|>\n<|assistant|>\n */
    CHAT_FAMILY__COUNT
};

/* What rendering needs to know about a model's template. */
struct chat_format {
    enum chat_family family;
    bool fallback;            /* no template, or one not recognised: ChatML is used */
    unsigned flags;           /* CHAT_FLAG_* variants read from the template */
    char bos[64], eos[64];    /* the texts of BOS and EOS as the template writes them */
    char default_system[512]; /* ChatML: the system message the template adds when none is given */
};

#define CHAT_FLAG_SYS_BLOCK      1u  /* Llama-2: system in <<SYS>>...<</SYS>> */
#define CHAT_FLAG_BOS_IN_HISTORY 2u  /* Llama-2: every turn after the first starts with BOS */
#define CHAT_FLAG_SPACE_AROUND   4u  /* Llama-2: " answer " before EOS */
#define CHAT_FLAG_STRIP          8u  /* Llama-2: messages are stripped of surrounding space */
#define CHAT_FLAG_SYSTEM_TURN    16u /* Phi-3: the template has a <|system|> turn */

/*
 * Recognises the family of template tmpl (len bytes; NULL or empty: none) and fills *f; bos and
 * eos are the texts of the model's BOS/EOS tokens (NULL: none). Never fails: an unknown template
 * gives ChatML with f->fallback set.
 */
void chat_format_detect(struct chat_format *f, const char *tmpl, size_t len, const char *bos,
                        const char *eos);

/*
 * chat_format_detect on a model: its tokenizer.chat_template and the texts of t's BOS and EOS.
 * ERR_OK, or ERR_FORMAT when tokenizer.chat_template is there but not a string.
 */
int chat_format_from_model(struct chat_format *f, const struct gguf *g, const struct tokenizer *t,
                           char *err);

/* The family's name ("chatml", "llama2", "llama3", "mistral-v7", ...). */
const char *chat_family_name(enum chat_family family);

struct chat_msg {
    const char *role; /* "system", "user", "assistant" (ChatML takes any role) */
    const char *content;
};

/*
 * Renders n messages into the prompt text, ending with the opening of the assistant's turn when
 * add_generation_prompt. The text leaves out the BOS the template puts first (tokenizer_encode
 * adds it with add_bos), keeps every other marker as text (tokenize with parse_special = true).
 * A system message the family has no place for goes in front of the next (Mistral v3: the last)
 * user message. *out gets a NUL-terminated malloc'ed string (the caller frees it), *len its
 * length. ERR_OK, ERR_BAD_REQUEST naming a message with a role the family does not know
 * (anything but system/user/assistant outside ChatML) or a NULL role/content, ERR_NOMEM.
 */
int chat_render(const struct chat_format *f, const struct chat_msg *msgs, size_t n,
                bool add_generation_prompt, char **out, size_t *len, char *err);

#endif
