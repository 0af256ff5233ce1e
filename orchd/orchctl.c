/*
 * orchctl.c: the command-line client of orchd (../shared/docs/contract.md): submit a prompt and
 * stream the text (or one JSON line per frame), attach to a running request, cancel one, and show
 * status, workers and health. Everything goes through proto/client.h; this file parses options,
 * prints, and maps errors to the exit codes listed in --help. Not a daemon, keeps no state.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/opt.h"
#include "common/utf8.h"
#include "orchd/config.h"
#include "proto/client.h"
#include "proto/proto.h"
#include "proto/sock.h"

#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum {
    EXIT_OK_ = 0,          /* done: the stream completed (eos, length, stop), or the query worked */
    EXIT_ERROR_ = 1,       /* any other failure */
    EXIT_USAGE = 2,        /* bad command line */
    EXIT_UNREACHABLE = 3,  /* orchd cannot be reached, stopped answering, or is shutting down */
    EXIT_BUSY = 4,         /* queue full or quota exhausted: retry later */
    EXIT_REFUSED = 5,      /* the request is invalid (bad_request, context_full, protocol_error) */
    EXIT_NOT_FOUND = 6,    /* no such request */
    EXIT_UNAUTHORIZED = 7, /* missing or wrong key */
    EXIT_FAILED = 8,       /* the request ended without completing: cancelled or an error frame */
    EXIT_NOT_READY = 9     /* health: orchd is up but not ready to serve */
};

static const char usage_text[] =
    "usage: orchctl [-u URL] [-k KEY] [--ca FILE] [-t MS] COMMAND [OPTIONS] [ARGS]\n"
    "\n"
    "commands:\n"
    "  submit [-n N] [--temp T] [--seed S] [--top-k K] [--top-p P] [--min-p P]\n"
    "         [--repeat-penalty R] [--repeat-last-n N] [--stop TEXT]... [--batch]\n"
    "         [--id CLIENT_ID] [--json] PROMPT\n"
    "                       submit PROMPT and stream the generated text to stdout (with --json:\n"
    "                       one JSON line per frame, the last one {\"done\":true,...}); Ctrl-C\n"
    "                       cancels the request\n"
    "  attach [--from SEQ] [--json] ID\n"
    "                       stream request ID from frame SEQ on (resume another client's stream)\n"
    "  cancel ID            cancel request ID\n"
    "  status [--json]      queue depth, running requests, per-tenant counts\n"
    "  workers [--json]     one line per worker slot: slot, pid, state, restarts, requests\n"
    "  health [--json]      exit 0 when orchd is ready to serve\n"
    "  hash-key [KEY]       print the hash of KEY (default: -k / $LLORCH_KEY) for a tenant's\n"
    "                       `key =` in orchd's configuration; does not contact orchd\n"
    "\n"
    "options:\n"
    "  -u, --url URL        orchd's address (ipc://, tcp://, tls+tcp://); default $LLORCH_URL,\n"
    "                       else " CLIENT_DEFAULT_URL "\n"
    "  -k, --key KEY        tenant key (default $LLORCH_KEY)\n"
    "      --ca FILE        CA certificate for tls+tcp:// (default $LLORCH_CA)\n"
    "  -t, --timeout MS     give up when orchd does not answer for MS ms (default 10000)\n"
    "  -- ends the options, so a PROMPT may start with '-'\n"
    "\n"
    "exit status:\n"
    "  0  done: the stream completed (eos, length or stop), or the command worked\n"
    "  1  another error\n"
    "  2  bad usage\n"
    "  3  orchd cannot be reached, stopped answering, or is shutting down\n"
    "  4  busy: queue full or quota exhausted, retry later\n"
    "  5  request refused as invalid (bad_request, context_full, protocol_error)\n"
    "  6  no such request\n"
    "  7  unauthorized: missing or wrong key\n"
    "  8  the request ended without completing (cancelled, or an error such as worker_crashed)\n"
    "  9  health: orchd is up but not ready\n";

static volatile sig_atomic_t interrupted;

static void
on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* The exit status for an error code (see the table in usage_text). */
static int
exit_for(int code)
{
    switch (code) {
    case ERR_OK:
        return EXIT_OK_;
    case ERR_IO:
    case ERR_TIMEOUT:
    case ERR_SHUTTING_DOWN:
        return EXIT_UNREACHABLE;
    case ERR_BUSY:
        return EXIT_BUSY;
    case ERR_BAD_REQUEST:
    case ERR_CONTEXT_FULL:
    case ERR_PROTOCOL:
    case ERR_UNSUPPORTED:
        return EXIT_REFUSED;
    case ERR_NOT_FOUND:
        return EXIT_NOT_FOUND;
    case ERR_UNAUTHORIZED:
        return EXIT_UNAUTHORIZED;
    case ERR_CANCELLED:
    case ERR_WORKER_CRASHED:
        return EXIT_FAILED;
    default:
        return EXIT_ERROR_;
    }
}

/* Prints "orchctl: NAME: detail" and returns the exit status for code. */
static int
fail(int code, const char *detail)
{
    fprintf(stderr, "orchctl: %s: %s\n", err_str(code), detail);
    return exit_for(code);
}

static int
usage_error(const char *fmt, const char *arg)
{
    fprintf(stderr, "orchctl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see orchctl --help)\n");
    return EXIT_USAGE;
}

/* An integer option value in [lo, hi] (common/opt.h); false after a message if it is not one. */
static bool
parse_int(const char *opt, const char *s, long long lo, long long hi, long long *out)
{
    char err[ERR_MSG_MAX];

    if (opt_int(opt, s, lo, hi, out, err) == ERR_OK)
        return true;
    fprintf(stderr, "orchctl: %s\n", err);
    return false;
}

/* A finite number option value; false after a message if it is not one. */
static bool
parse_float(const char *opt, const char *s, float *out)
{
    char err[ERR_MSG_MAX];

    if (opt_float(opt, s, -HUGE_VAL, HUGE_VAL, out, err) == ERR_OK)
        return true;
    fprintf(stderr, "orchctl: %s\n", err);
    return false;
}

/* ---- JSON output ---- */

/* A JSON string of bytes s[0..n), invalid UTF-8 replaced by U+FFFD. */
static json_t *
json_text(const char *s, size_t n)
{
    size_t need = utf8_sanitize(s, n, NULL, 0);
    char *buf = malloc(need + 1);
    json_t *j;

    if (buf == NULL)
        return NULL;
    utf8_sanitize(s, n, buf, need + 1);
    j = json_stringn(buf, need);
    free(buf);
    return j;
}

static json_t *
json_ids(const int32_t *ids, size_t n)
{
    json_t *a = json_array();

    for (size_t i = 0; i < n && a != NULL; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

/* Prints j on one line and frees it. */
static void
print_json(json_t *j)
{
    if (j == NULL) {
        fprintf(stderr, "orchctl: out of memory printing JSON\n");
        return;
    }
    json_dumpf(j, stdout, JSON_COMPACT);
    fputc('\n', stdout);
    fflush(stdout);
    json_decref(j);
}

/* ---- streaming ---- */

/* What a stream has produced so far (for the final JSON line). */
struct gen {
    int32_t *ids;
    size_t n_ids;
    size_t cap_ids;
    char *text;
    size_t text_len;
    size_t cap_text;
};

static bool
gen_append(struct gen *g, const struct proto_frame *f)
{
    if (g->n_ids + f->n_ids > g->cap_ids) {
        size_t cap = (g->n_ids + f->n_ids) * 2;
        int32_t *ids = realloc(g->ids, cap * sizeof(*ids));

        if (ids == NULL)
            return false;
        g->ids = ids;
        g->cap_ids = cap;
    }
    if (g->text_len + f->text_len + 1 > g->cap_text) {
        size_t cap = (g->text_len + f->text_len + 1) * 2;
        char *text = realloc(g->text, cap);

        if (text == NULL)
            return false;
        g->text = text;
        g->cap_text = cap;
    }
    memcpy(g->ids + g->n_ids, f->ids, f->n_ids * sizeof(*f->ids));
    g->n_ids += f->n_ids;
    memcpy(g->text + g->text_len, f->text, f->text_len);
    g->text_len += f->text_len;
    return true;
}

/* The JSON line of a frame; the final one carries the whole generation. */
static json_t *
frame_json(const char *id, const struct proto_frame *f, const struct gen *g)
{
    json_t *j = json_pack("{s:s, s:I, s:s}", "id", id, "seq", (json_int_t)f->seq, "frame",
                          proto_frame_kind_name(f->kind));

    if (j == NULL)
        return NULL;
    switch (f->kind) {
    case PROTO_FRAME_QUEUED:
        json_object_set_new(j, "position", json_integer(f->position));
        break;
    case PROTO_FRAME_STARTED:
        break;
    case PROTO_FRAME_TOKENS:
        json_object_set_new(j, "ids", json_ids(f->ids, f->n_ids));
        json_object_set_new(j, "text", json_text(f->text, f->text_len));
        break;
    case PROTO_FRAME_DONE:
    case PROTO_FRAME_ERROR:
        json_object_set_new(j, "done", json_true());
        json_object_set_new(j, "gen_ids", json_ids(g->ids, g->n_ids));
        json_object_set_new(j, "text", json_text(g->text, g->text_len));
        if (f->kind == PROTO_FRAME_ERROR) {
            json_object_set_new(j, "reason", json_string("error"));
            json_object_set_new(j, "code", json_integer(f->code));
            json_object_set_new(j, "error", json_string(err_str(f->code)));
            json_object_set_new(j, "message", json_text(f->msg, strlen(f->msg)));
            break;
        }
        json_object_set_new(j, "reason", json_string(proto_reason_name(f->reason)));
        json_object_set_new(j, "prompt_tokens", json_integer(f->stats.prompt_tokens));
        json_object_set_new(j, "gen_tokens", json_integer(f->stats.gen_tokens));
        json_object_set_new(j, "queue_ms", json_real(f->stats.queue_ms));
        json_object_set_new(j, "prefill_ms", json_real(f->stats.prefill_ms));
        json_object_set_new(j, "decode_ms", json_real(f->stats.decode_ms));
        break;
    }
    return j;
}

/* The exit status a final frame means, with a message on stderr when it is not a success. */
static int
final_status(const char *id, const struct proto_frame *f)
{
    char detail[ERR_MSG_MAX + 80];

    if (f->kind == PROTO_FRAME_ERROR) {
        snprintf(detail, sizeof(detail), "request %s: %s", id, f->msg);
        fail(f->code, detail);
        return EXIT_FAILED;
    }
    if (f->reason == PROTO_REASON_CANCELLED || f->reason == PROTO_REASON_ERROR) {
        snprintf(detail, sizeof(detail), "request %s ended: %s", id, proto_reason_name(f->reason));
        fail(f->reason == PROTO_REASON_CANCELLED ? ERR_CANCELLED : ERR_INTERNAL, detail);
        return EXIT_FAILED;
    }
    return EXIT_OK_;
}

/*
 * Streams request id from frame `from` until its final frame: text to stdout, or JSON lines.
 * Transport errors are retried (the stream resumes where it was) until orchd has not answered
 * for timeout_ms. Ctrl-C sends a cancel and goes on to the final (cancelled) frame.
 */
static int
stream(struct client *c, const char *id, uint64_t from, bool json, uint32_t timeout_ms)
{
    struct client_stream *s;
    struct gen g = {0};
    const struct proto_frame *f;
    char err[ERR_MSG_MAX];
    uint64_t last_ok = clock_now_ms();
    bool cancel_sent = false;
    int rc, status = EXIT_ERROR_;

    if ((rc = client_stream_open(c, id, from, &s, err)) != ERR_OK)
        return fail(rc, err);
    while (!client_stream_ended(s)) {
        if (interrupted && !cancel_sent) {
            cancel_sent = true;
            if ((rc = client_cancel(c, id, err)) != ERR_OK)
                fail(rc, err);
        }
        rc = client_stream_next(s, 1000, &f, err);
        if (rc == ERR_TIMEOUT || rc == ERR_IO) {
            if (clock_now_ms() - last_ok < timeout_ms)
                continue;
            status = fail(rc, err);
            goto done;
        }
        if (rc != ERR_OK) {
            status = fail(rc, err);
            goto done;
        }
        last_ok = clock_now_ms();
        if (f == NULL)
            continue;
        if (f->kind == PROTO_FRAME_TOKENS && !gen_append(&g, f)) {
            status = fail(ERR_NOMEM, "out of memory holding the generated text");
            goto done;
        }
        if (json)
            print_json(frame_json(id, f, &g));
        else if (f->kind == PROTO_FRAME_TOKENS) {
            fwrite(f->text, 1, f->text_len, stdout);
            fflush(stdout);
        }
        if (client_stream_ended(s)) {
            if (!json && isatty(STDOUT_FILENO))
                fputc('\n', stdout);
            status = final_status(id, f);
        }
    }
done:
    client_stream_close(s);
    free(g.ids);
    free(g.text);
    return status;
}

/* ---- commands ---- */

struct global {
    const char *url;
    struct client_opts co;
    struct client *c; /* NULL until connect_client() */
    uint32_t timeout_ms;
};

/* Connects to orchd once a command's arguments are known to be good; returns an exit status. */
static int
connect_client(struct global *g)
{
    char err[ERR_MSG_MAX];
    int rc;

    g->co.timeout_ms = g->timeout_ms;
    if ((rc = client_open(&g->c, g->url, &g->co, err)) != ERR_OK)
        return fail(rc, err);
    return EXIT_OK_;
}

/* Parses a command's options (the long ones; short ones listed in shorts); returns the index of
 * the first argument, or -1 after a usage message. handle() gets each option. */
typedef bool (*opt_fn)(int opt, const char *arg, void *ctx);

static int
parse_opts(int argc, char **argv, const char *shorts, const struct option *longs, opt_fn handle,
           void *ctx)
{
    int o;

    optind = 0; /* GNU getopt: start over on this argv */
    opterr = 0;
    while ((o = getopt_long(argc, argv, shorts, longs, NULL)) != -1) {
        if (o == '?' || o == ':')
            return usage_error("%s: unknown option or missing value", argv[optind - 1]), -1;
        if (!handle(o, optarg, ctx))
            return -1;
    }
    return optind;
}

enum {
    OPT_TEMP = 256,
    OPT_SEED,
    OPT_TOP_K,
    OPT_TOP_P,
    OPT_MIN_P,
    OPT_PENALTY,
    OPT_LAST_N,
    OPT_STOP,
    OPT_BATCH,
    OPT_ID,
    OPT_JSON,
    OPT_FROM,
    OPT_CA
};

struct submit_args {
    struct proto_submit s;
    char *stop[PROTO_MAX_STOP];
    bool json;
};

static bool
submit_opt(int opt, const char *arg, void *ctx)
{
    struct submit_args *a = ctx;
    struct proto_sampling *o = &a->s.sampling;
    long long v;

    switch (opt) {
    case 'n':
        if (!parse_int("-n", arg, 0, UINT32_MAX, &v))
            return false;
        a->s.max_tokens = (uint32_t)v;
        return true;
    case OPT_TEMP:
        return parse_float("--temp", arg, &o->temperature);
    case OPT_SEED:
        /* llama.cpp's -1 means a random seed */
        if (strcmp(arg, "-1") == 0) {
            o->seed = PROTO_SEED_RANDOM;
            return true;
        }
        if (!parse_int("--seed", arg, 0, INT64_MAX, &v))
            return false;
        o->seed = (uint64_t)v;
        return true;
    case OPT_TOP_K:
        if (!parse_int("--top-k", arg, INT32_MIN, INT32_MAX, &v))
            return false;
        o->top_k = (int32_t)v;
        return true;
    case OPT_TOP_P:
        return parse_float("--top-p", arg, &o->top_p);
    case OPT_MIN_P:
        return parse_float("--min-p", arg, &o->min_p);
    case OPT_PENALTY:
        return parse_float("--repeat-penalty", arg, &o->repeat_penalty);
    case OPT_LAST_N:
        if (!parse_int("--repeat-last-n", arg, INT32_MIN, INT32_MAX, &v))
            return false;
        o->repeat_last_n = (int32_t)v;
        return true;
    case OPT_STOP:
        if (a->s.n_stop == PROTO_MAX_STOP) {
            usage_error("--stop: at most %s stop strings", "16");
            return false;
        }
        a->stop[a->s.n_stop++] = (char *)arg;
        return true;
    case OPT_BATCH:
        a->s.priority = PROTO_PRIO_BATCH;
        return true;
    case OPT_ID:
        a->s.client_id = (char *)arg;
        return true;
    case OPT_JSON:
        a->json = true;
        return true;
    }
    return false;
}

static int
cmd_submit(struct global *g, int argc, char **argv)
{
    static const struct option longs[] = {
        {"max-tokens", required_argument, NULL, 'n'},
        {"temp", required_argument, NULL, OPT_TEMP},
        {"seed", required_argument, NULL, OPT_SEED},
        {"top-k", required_argument, NULL, OPT_TOP_K},
        {"top-p", required_argument, NULL, OPT_TOP_P},
        {"min-p", required_argument, NULL, OPT_MIN_P},
        {"repeat-penalty", required_argument, NULL, OPT_PENALTY},
        {"repeat-last-n", required_argument, NULL, OPT_LAST_N},
        {"stop", required_argument, NULL, OPT_STOP},
        {"batch", no_argument, NULL, OPT_BATCH},
        {"id", required_argument, NULL, OPT_ID},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    struct submit_args a = {0};
    struct proto_msg m;
    struct client_submitted sub;
    char err[ERR_MSG_MAX];
    int first, rc;

    proto_submit_init(&m);
    a.s = m.u.submit;
    a.s.stop = a.stop;
    if ((first = parse_opts(argc, argv, "+n:", longs, submit_opt, &a)) < 0)
        return EXIT_USAGE;
    if (argc - first != 1)
        return usage_error("submit takes one PROMPT (quote it), got %s",
                           argc - first ? "more" : "none");
    a.s.prompt = argv[first];
    if ((rc = connect_client(g)) != EXIT_OK_)
        return rc;
    if ((rc = client_submit(g->c, &a.s, &sub, err)) != ERR_OK)
        return fail(rc, err);
    return stream(g->c, sub.id, 0, a.json, g->timeout_ms);
}

struct attach_args {
    uint64_t from;
    bool json;
};

static bool
attach_opt(int opt, const char *arg, void *ctx)
{
    struct attach_args *a = ctx;
    long long v;

    if (opt == OPT_JSON) {
        a->json = true;
        return true;
    }
    if (!parse_int("--from", arg, 0, INT64_MAX, &v))
        return false;
    a->from = (uint64_t)v;
    return true;
}

static int
cmd_attach(struct global *g, int argc, char **argv)
{
    static const struct option longs[] = {
        {"from", required_argument, NULL, OPT_FROM},
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    struct attach_args a = {0};
    int first = parse_opts(argc, argv, "+", longs, attach_opt, &a), rc;

    if (first < 0)
        return EXIT_USAGE;
    if (argc - first != 1)
        return usage_error("%s takes one request ID", "attach");
    if ((rc = connect_client(g)) != EXIT_OK_)
        return rc;
    return stream(g->c, argv[first], a.from, a.json, g->timeout_ms);
}

static bool
json_opt(int opt, const char *arg, void *ctx)
{
    (void)opt;
    (void)arg;
    *(bool *)ctx = true;
    return true;
}

/* Parses the only option of status/workers/health (--json); no arguments. */
static int
parse_json_only(int argc, char **argv, bool *json)
{
    static const struct option longs[] = {
        {"json", no_argument, NULL, OPT_JSON},
        {NULL, 0, NULL, 0},
    };
    int first = parse_opts(argc, argv, "+", longs, json_opt, json);

    if (first < 0)
        return -1;
    if (first != argc) {
        usage_error("%s takes no arguments", argv[0]);
        return -1;
    }
    return 0;
}

static int
cmd_cancel(struct global *g, int argc, char **argv)
{
    char err[ERR_MSG_MAX];
    int rc;

    if (argc != 2)
        return usage_error("%s takes one request ID", "cancel");
    if ((rc = connect_client(g)) != EXIT_OK_)
        return rc;
    if ((rc = client_cancel(g->c, argv[1], err)) != ERR_OK)
        return fail(rc, err);
    return EXIT_OK_;
}

static int
cmd_status(struct global *g, int argc, char **argv)
{
    struct proto_msg r;
    struct proto_status_info *st;
    char err[ERR_MSG_MAX];
    bool json = false;
    int rc;

    if (parse_json_only(argc, argv, &json) < 0)
        return EXIT_USAGE;
    if ((rc = connect_client(g)) != EXIT_OK_)
        return rc;
    if ((rc = client_status(g->c, &r, err)) != ERR_OK)
        return fail(rc, err);
    st = &r.u.status;
    if (json) {
        json_t *tenants = json_array();

        for (uint32_t i = 0; i < st->n_tenants; i++)
            json_array_append_new(tenants,
                                  json_pack("{s:s, s:I, s:I, s:I}", "name", st->tenants[i].name,
                                            "queued", (json_int_t)st->tenants[i].queued, "running",
                                            (json_int_t)st->tenants[i].running, "gen_tokens",
                                            (json_int_t)st->tenants[i].gen_tokens));
        print_json(json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "queued",
            (json_int_t)st->queued_interactive + st->queued_batch, "queued_interactive",
            (json_int_t)st->queued_interactive, "queued_batch", (json_int_t)st->queued_batch,
            "queue_max", (json_int_t)st->queue_max, "running", (json_int_t)st->running, "workers",
            (json_int_t)st->workers, "workers_ready", (json_int_t)st->workers_ready, "completed",
            (json_int_t)st->completed, "failed", (json_int_t)st->failed, "uptime_ms",
            (json_int_t)st->uptime_ms, "tenants", tenants));
    } else {
        printf("queued %u (interactive %u, batch %u), limit %u\n",
               st->queued_interactive + st->queued_batch, st->queued_interactive, st->queued_batch,
               st->queue_max);
        printf("running %u\n", st->running);
        printf("workers %u of %u ready\n", st->workers_ready, st->workers);
        printf("completed %llu, failed %llu\n", (unsigned long long)st->completed,
               (unsigned long long)st->failed);
        printf("uptime %.1f s\n", (double)st->uptime_ms / 1000.0);
        for (uint32_t i = 0; i < st->n_tenants; i++)
            printf("tenant %s: queued %u, running %u, generated %llu tokens\n", st->tenants[i].name,
                   st->tenants[i].queued, st->tenants[i].running,
                   (unsigned long long)st->tenants[i].gen_tokens);
    }
    proto_msg_free(&r);
    return EXIT_OK_;
}

static int
cmd_workers(struct global *g, int argc, char **argv)
{
    struct proto_msg r;
    char err[ERR_MSG_MAX];
    bool json = false;
    json_t *all;
    int rc;

    if (parse_json_only(argc, argv, &json) < 0)
        return EXIT_USAGE;
    if ((rc = connect_client(g)) != EXIT_OK_)
        return rc;
    if ((rc = client_workers(g->c, &r, err)) != ERR_OK)
        return fail(rc, err);
    all = json_array();
    for (uint32_t i = 0; i < r.u.workers.n_workers; i++) {
        const struct proto_worker_info *w = &r.u.workers.workers[i];
        json_t *reqs = json_array();

        for (uint32_t k = 0; k < w->n_requests; k++)
            json_array_append_new(reqs, json_string(w->requests[k]));
        if (json) {
            json_array_append_new(
                all,
                json_pack("{s:I, s:I, s:s, s:I, s:o, s:o, s:o, s:I, s:I}", "slot",
                          (json_int_t)w->slot, "pid", (json_int_t)w->pid, "state",
                          proto_worker_state_name(w->state), "restarts", (json_int_t)w->restarts,
                          "request", w->n_requests > 0 ? json_string(w->requests[0]) : json_null(),
                          "requests", reqs, "detail", json_text(w->detail, strlen(w->detail)),
                          "in_flight", (json_int_t)w->in_flight, "slots", (json_int_t)w->slots));
            continue;
        }
        printf("slot=%u pid=%d state=%s restarts=%u in_flight=%u/%u request=", w->slot, w->pid,
               proto_worker_state_name(w->state), w->restarts, w->in_flight, w->slots);
        for (uint32_t k = 0; k < w->n_requests; k++)
            printf("%s%s", k > 0 ? "," : "", w->requests[k]);
        printf("%s", w->n_requests == 0 ? "-" : "");
        if (w->detail[0] != '\0')
            printf(" detail=\"%s\"", w->detail);
        printf("\n");
        json_decref(reqs);
    }
    if (json)
        print_json(all);
    else
        json_decref(all);
    proto_msg_free(&r);
    return EXIT_OK_;
}

static int
cmd_health(struct global *g, int argc, char **argv)
{
    struct proto_msg r;
    char err[ERR_MSG_MAX];
    bool json = false, ready;
    int rc;

    if (parse_json_only(argc, argv, &json) < 0)
        return EXIT_USAGE;
    if ((rc = connect_client(g)) != EXIT_OK_)
        return rc;
    if ((rc = client_health(g->c, &r, err)) != ERR_OK)
        return fail(rc, err);
    ready = r.u.health.ready;
    if (json)
        print_json(json_pack("{s:b, s:I, s:o}", "ready", ready, "workers_ready",
                             (json_int_t)r.u.health.workers_ready, "detail",
                             json_text(r.u.health.detail, strlen(r.u.health.detail))));
    else
        printf("%s: %u workers ready%s%s\n", ready ? "ready" : "not ready",
               r.u.health.workers_ready, r.u.health.detail[0] != '\0' ? "; " : "",
               r.u.health.detail);
    proto_msg_free(&r);
    return ready ? EXIT_OK_ : EXIT_NOT_READY;
}

static int
cmd_hash_key(struct global *g, int argc, char **argv)
{
    char out[CONFIG_HASH_TEXT], err[ERR_MSG_MAX];
    const char *key = argc == 2 ? argv[1] : g->co.key;
    int rc;

    if (argc > 2 || key == NULL)
        return usage_error("%s takes one KEY (or -k / $LLORCH_KEY)", argv[0]);
    if ((rc = config_hash_key(key, out, err)) != ERR_OK)
        return fail(rc, err);
    printf("%s\n", out);
    return EXIT_OK_;
}

static const struct {
    const char *name;
    int (*run)(struct global *g, int argc, char **argv);
} commands[] = {
    {"submit", cmd_submit},     {"attach", cmd_attach},   {"cancel", cmd_cancel},
    {"status", cmd_status},     {"workers", cmd_workers}, {"health", cmd_health},
    {"hash-key", cmd_hash_key},
};

int
main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"url", required_argument, NULL, 'u'},   {"key", required_argument, NULL, 'k'},
        {"ca", required_argument, NULL, OPT_CA}, {"timeout", required_argument, NULL, 't'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    struct global g = {.url = getenv("LLORCH_URL"), .timeout_ms = 10000};
    struct sigaction sa;
    long long v;
    int o, rc;

    g.co.key = getenv("LLORCH_KEY");
    g.co.ca_file = getenv("LLORCH_CA");
    opterr = 0;
    while ((o = getopt_long(argc, argv, "+u:k:t:h", longs, NULL)) != -1) {
        switch (o) {
        case 'u':
            g.url = optarg;
            break;
        case 'k':
            g.co.key = optarg;
            break;
        case OPT_CA:
            g.co.ca_file = optarg;
            break;
        case 't':
            if (!parse_int("--timeout", optarg, 1, 3600000, &v))
                return EXIT_USAGE;
            g.timeout_ms = (uint32_t)v;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return EXIT_OK_;
        default:
            return usage_error("%s: unknown option or missing value", argv[optind - 1]);
        }
    }
    if (optind >= argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    if (g.url == NULL || g.url[0] == '\0')
        g.url = CLIENT_DEFAULT_URL;
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(argv[optind], commands[i].name) != 0)
            continue;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_sigint;
        sigaction(SIGINT, &sa, NULL);
        rc = commands[i].run(&g, argc - optind, argv + optind);
        client_close(g.c);
        sock_exit(rc);
    }
    return usage_error("unknown command '%s'", argv[optind]);
}
