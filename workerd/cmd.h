/*
 * cmd.h: the subcommands of the workerd binary. Each takes main's argc/argv shifted so that argv[0]
 * is the subcommand's name, parses its own options (per ../shared/docs/contract.md), and returns
 * the process exit status: 0 on success, 1 on a runtime error, 2 on bad usage or a bad model file
 * (the same code orchd reads as "fatal, do not restart"). Errors are one line on stderr.
 */
#ifndef LLORCH_WORKERD_CMD_H
#define LLORCH_WORKERD_CMD_H

#include <stddef.h>
#include <stdint.h>

#define CMD_EXIT_OK    0
#define CMD_EXIT_ERROR 1
#define CMD_EXIT_FATAL 2

struct cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *usage; /* one line: options and arguments */
};

int cmd_tokenize(int argc, char **argv);   /* cmd_tokenize.c */
int cmd_detokenize(int argc, char **argv); /* cmd_tokenize.c */
/* "1,403,407" -> a malloc'ed array of n ids (caller frees); ERR_BAD_REQUEST naming the item. */
int cmd_parse_ids(const char *s, int32_t **ids, size_t *n, char *err);
int cmd_inspect(int argc, char **argv); /* cmd_inspect.c */
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv); /* cmd_generate.c */
int cmd_serve(int argc, char **argv);    /* cmd_serve.c: the worker orchd runs */

#endif
