/*
 * gguf-synth: writes a synthetic Llama-family GGUF model of any shape with deterministic
 * pseudo-random weights (tests/synth.h does the work; this is its command line). For tests and
 * benchmarks: the weights are noise, so is the text. Its files are never committed.
 */
#include "common/err.h"
#include "tests/synth.h"
#include "workerd/engine/types.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "usage: gguf-synth [options] -o OUT.gguf\n"
    "Writes a Llama-family GGUF with deterministic pseudo-random weights (noise, scaled so a\n"
    "forward pass stays in range). Tensors stream to disk: a 7B shape needs a few MB of memory.\n"
    "\n"
    "  --arch llama|qwen2   architecture (default llama; qwen2 adds Q/K/V biases and is tied)\n"
    "  --n-embd N           embedding size (default 256)\n"
    "  --n-layer N          blocks (default 2)\n"
    "  --n-head N           attention heads (default 8; n-embd / n-head must be even)\n"
    "  --n-head-kv N        KV heads, dividing n-head (default n-head; 1 = MQA)\n"
    "  --n-ff N             feed-forward size (default 768)\n"
    "  --vocab N            vocabulary size (default 512, or that of --vocab-from)\n"
    "  --ctx N              context length (default 2048)\n"
    "  --rope-base F        RoPE frequency base (default 10000; qwen2 1000000)\n"
    "  --rope-freqs         Llama-3.1's rope scaling: a rope_freqs.weight tensor of frequency\n"
    "                       divisors (factor 8, low/high frequency factors 1 and 4, original\n"
    "                       context 8192)\n"
    "  --rope-scale-linear F  rope.scaling.type linear with rope.scaling.factor F\n"
    "  --rms-eps F          RMSNorm epsilon (default 1e-5; qwen2 1e-6)\n"
    "  --tied-output        no output.weight: logits use token_embd.weight (qwen2's default)\n"
    "  --untied-output      write output.weight (llama's default)\n"
    "  --type T             matrices' type: f32, f16 (default), bf16, q8_0, q4_0, q4_1, q5_0,\n"
    "                       q5_1, q2_k, q3_k, q4_k, q5_k, q6_k, or the llama-quantize mixes\n"
    "                       q4_k_m, q5_k_m\n"
    "                       (q6_k for the output and for attn_v and ffn_down of about half the\n"
    "                       layers); norms and biases are always f32; the 32-element types need\n"
    "                       n-embd and n-ff multiples of 32, q2_k and q3_k of 256; other K-type\n"
    "                       rows not a multiple of 256 fall back to q5_0 (q4_k), q5_1 (q5_k),\n"
    "                       q8_0 (q6_k), or f16\n"
    "  --seed S             weights seed (default 1): same options and seed, same bytes\n"
    "  --vocab-from FILE    copy every tokenizer.* key from this GGUF; without it, a built-in\n"
    "                       SentencePiece vocabulary (<unk> <s> </s>, <0x00>..<0xFF>, letter "
    "pieces)\n"
    "  -o, --output OUT     the file to write (replaced; removed again on failure)\n"
    "  -h, --help           this text\n"
    "\n"
    "Exit status 0 on success; 1 with a one-line message on stderr otherwise.\n"
    "Example (the 1.1B benchmark shape):\n"
    "  gguf-synth --n-embd 2048 --n-layer 22 --n-head 32 --n-head-kv 4 --n-ff 5632 \\\n"
    "      --vocab 32000 --type q8_0 -o /tmp/synth-1b-q8_0.gguf\n";

enum opt {
    OPT_N_EMBD = 256,
    OPT_N_LAYER,
    OPT_N_HEAD,
    OPT_N_HEAD_KV,
    OPT_N_FF,
    OPT_VOCAB,
    OPT_CTX,
    OPT_ROPE_BASE,
    OPT_RMS_EPS,
    OPT_ROPE_FREQS,
    OPT_ROPE_SCALE_LINEAR,
    OPT_TIED,
    OPT_UNTIED,
    OPT_ARCH,
    OPT_TYPE,
    OPT_SEED,
    OPT_VOCAB_FROM,
};

static const struct option options[] = {
    {"n-embd", required_argument, NULL, OPT_N_EMBD},
    {"n-layer", required_argument, NULL, OPT_N_LAYER},
    {"n-head", required_argument, NULL, OPT_N_HEAD},
    {"n-head-kv", required_argument, NULL, OPT_N_HEAD_KV},
    {"n-ff", required_argument, NULL, OPT_N_FF},
    {"vocab", required_argument, NULL, OPT_VOCAB},
    {"ctx", required_argument, NULL, OPT_CTX},
    {"rope-base", required_argument, NULL, OPT_ROPE_BASE},
    {"rope-freqs", no_argument, NULL, OPT_ROPE_FREQS},
    {"rope-scale-linear", required_argument, NULL, OPT_ROPE_SCALE_LINEAR},
    {"rms-eps", required_argument, NULL, OPT_RMS_EPS},
    {"tied-output", no_argument, NULL, OPT_TIED},
    {"untied-output", no_argument, NULL, OPT_UNTIED},
    {"arch", required_argument, NULL, OPT_ARCH},
    {"type", required_argument, NULL, OPT_TYPE},
    {"seed", required_argument, NULL, OPT_SEED},
    {"vocab-from", required_argument, NULL, OPT_VOCAB_FROM},
    {"output", required_argument, NULL, 'o'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
};

/* Parses a whole decimal integer; false when s is not one or is out of range. */
static bool
parse_int(const char *s, int64_t *out)
{
    char *end;
    long long v;

    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0')
        return false;
    *out = v;
    return true;
}

static bool
parse_u64(const char *s, uint64_t *out)
{
    char *end;
    unsigned long long v;

    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || s[0] == '-')
        return false;
    *out = v;
    return true;
}

static bool
parse_float(const char *s, float *out)
{
    char *end;

    errno = 0;
    *out = strtof(s, &end);
    return errno == 0 && end != s && *end == '\0';
}

/*
 * A type by its lower-case name ("q8_0"), or a mix ("q4_k_m": the type and *mix_m); false for
 * names not in the type table.
 */
static bool
parse_type(const char *s, uint32_t *out, bool *mix_m)
{
    size_t len = strlen(s);

    *mix_m = len > 2 && strcmp(s + len - 2, "_m") == 0;
    if (*mix_m)
        len -= 2;
    for (uint32_t t = 0; t < TYPE__COUNT; t++) {
        const struct type_traits *tt = type_traits(t);

        if (tt != NULL && strlen(tt->name) == len && strncmp(tt->name, s, len) == 0) {
            *out = t;
            return true;
        }
    }
    return false;
}

/* The long name of an option by its value, for messages. */
static const char *
opt_name(int opt)
{
    for (const struct option *o = options; o->name != NULL; o++)
        if (o->val == opt)
            return o->name;
    return "?";
}

static int
fail(const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "gguf-synth: ");
    fprintf(stderr, fmt, a, b);
    fputc('\n', stderr);
    return 1;
}

int
main(int argc, char **argv)
{
    struct synth_config c, arch_defaults;
    enum synth_arch arch = SYNTH_ARCH_LLAMA;
    const char *out = NULL;
    char err[ERR_MSG_MAX];
    bool rope_set = false, eps_set = false, vocab_set = false, head_kv_set = false;
    int opt, tied = -1;

    synth_config_default(&c, arch);
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":o:h", options, NULL)) != -1) {
        int64_t *dim = NULL;
        bool ok = true;

        switch (opt) {
        case OPT_N_EMBD:
            dim = &c.n_embd;
            break;
        case OPT_N_LAYER:
            dim = &c.n_layer;
            break;
        case OPT_N_HEAD:
            dim = &c.n_head;
            break;
        case OPT_N_HEAD_KV:
            dim = &c.n_head_kv;
            head_kv_set = true;
            break;
        case OPT_N_FF:
            dim = &c.n_ff;
            break;
        case OPT_VOCAB:
            dim = &c.n_vocab;
            vocab_set = true;
            break;
        case OPT_CTX:
            dim = &c.n_ctx;
            break;
        case OPT_ROPE_BASE:
            ok = rope_set = parse_float(optarg, &c.rope_base);
            break;
        case OPT_ROPE_FREQS:
            c.rope_freqs = true;
            break;
        case OPT_ROPE_SCALE_LINEAR:
            ok = parse_float(optarg, &c.rope_scale_linear);
            break;
        case OPT_RMS_EPS:
            ok = eps_set = parse_float(optarg, &c.rms_eps);
            break;
        case OPT_TIED:
            tied = 1;
            break;
        case OPT_UNTIED:
            tied = 0;
            break;
        case OPT_ARCH:
            ok = synth_arch_parse(optarg, &arch);
            break;
        case OPT_TYPE:
            ok = parse_type(optarg, &c.type, &c.mix_m);
            break;
        case OPT_SEED:
            ok = parse_u64(optarg, &c.seed);
            break;
        case OPT_VOCAB_FROM:
            c.vocab_from = optarg;
            break;
        case 'o':
            out = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case ':':
            return fail("option %s needs a value (see --help)%s", argv[optind - 1], "");
        default:
            return fail("unknown option '%s' (see --help)%s", argv[optind - 1], "");
        }
        if (dim != NULL)
            ok = parse_int(optarg, dim);
        if (!ok)
            return fail("--%s: bad value '%s' (see --help)", opt_name(opt), optarg);
    }
    if (optind < argc)
        return fail("unexpected argument '%s' (see --help)%s", argv[optind], "");
    if (out == NULL)
        return fail("no output file: give -o OUT (see --help)%s%s", "", "");
    /* what the options left unsaid comes from the architecture's defaults */
    synth_config_default(&arch_defaults, arch);
    c.arch = arch;
    if (!rope_set)
        c.rope_base = arch_defaults.rope_base;
    if (!eps_set)
        c.rms_eps = arch_defaults.rms_eps;
    c.tied = tied >= 0 ? tied : arch_defaults.tied;
    if (!head_kv_set)
        c.n_head_kv = c.n_head;
    if (c.vocab_from != NULL && !vocab_set)
        c.n_vocab = 0; /* that of the file */
    if (synth_write_file(&c, out, err) != ERR_OK)
        return fail("%s: %s", out, err);
    return 0;
}
