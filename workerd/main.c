/*
 * main.c: the workerd binary: dispatches to its subcommands (local modes such as inspect, tokenize,
 * generate and logits, and `serve`, the worker loop orchd runs). Each subcommand lives in its own
 * workerd/cmd_*.c file and is registered in the table below.
 */
#include "common/log.h"
#include "workerd/cmd.h"

#include <stdio.h>
#include <string.h>

static const struct cmd commands[] = {
    {"inspect", cmd_inspect, "-m MODEL [--json]"},
    {"tokenize", cmd_tokenize, "-m MODEL [--no-bos] [--] TEXT"},
    {"detokenize", cmd_detokenize, "-m MODEL --ids ID,ID,..."},
    {"logits", cmd_logits, "-m MODEL --ids 1,403,407 [--top K] [-t THREADS]"},
    {"generate", cmd_generate,
     "-m MODEL [-n N] [--temp T] [--seed S] [--top-k K] [--top-p P] [--min-p P] "
     "[--repeat-penalty R] [--repeat-last-n N] [-t THREADS] [--ctx N] [--ignore-eos] "
     "[--stop STR]... [--json] [--] PROMPT"},
    {"serve", cmd_serve,
     "-m MODEL --link-fd FD [--slot N] [--slots N] [-t THREADS] [--ctx N]  (run by orchd; "
     "--slots: requests at once, default 4)"},
    {NULL, NULL, NULL},
};

static void
usage(FILE *f)
{
    fprintf(f, "usage: workerd COMMAND [OPTIONS] [ARGS]\n\ncommands:\n");
    for (const struct cmd *c = commands; c->name != NULL; c++)
        fprintf(f, "  workerd %s %s\n", c->name, c->usage);
}

int
main(int argc, char **argv)
{
    log_init("workerd", LOG_INFO);
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CMD_EXIT_FATAL : CMD_EXIT_OK;
    }
    for (const struct cmd *c = commands; c->name != NULL; c++)
        if (strcmp(argv[1], c->name) == 0)
            return c->run(argc - 1, argv + 1);
    fprintf(stderr, "workerd: unknown command '%s' (see workerd --help)\n", argv[1]);
    return CMD_EXIT_FATAL;
}
