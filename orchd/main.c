/*
 * main.c: the orchd daemon. Parses the command line, loads the model's tokenizer, blocks its
 * signals before any NNG thread exists, opens the worker links and the front, and runs the master
 * loop nginx style: each turn (sigtimedwait, 10 ms) reaps workers, starts due slots, and runs the
 * scheduler's timers; requests and worker events are handled on NNG's threads. SIGTERM/SIGINT:
 * stop admitting, let running requests finish within the grace period, end the rest, stop the
 * workers, exit 0. Exit status 2 for bad usage or a bad model, 1 for a runtime failure.
 */
#include "common/clock.h"
#include "common/err.h"
#include "common/log.h"
#include "common/opt.h"
#include "orchd/config.h"
#include "orchd/front.h"
#include "orchd/master.h"
#include "orchd/sched.h"
#include "orchd/wlink.h"
#include "proto/client.h"
#include "proto/sock.h"
#include "workerd/engine/chat.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/tokenizer.h"

#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EXIT_USAGE  2
#define TICK_MS     10
#define DEFAULT_CTX 2048

struct options {
    const char *model;
    int workers;
    const char *urls[FRONT_MAX_URLS];
    int n_urls;
    int threads;
    int ctx;   /* --ctx: what the workers are started with */
    int slots; /* --slots: requests each worker runs at once */
    const char *workerd;
    const char *config; /* -c FILE, or NULL */
    struct sched_config sc;
    uint64_t grace_ms;
};

struct orchd {
    struct sched *sched;
    struct wlink *wlink;
    struct master *master;
    pid_t known[MASTER_MAX_SLOTS]; /* the pid the scheduler was told of, per slot */
};

static void
usage(FILE *f)
{
    fprintf(f,
            "usage: orchd -m MODEL [-w WORKERS] [-l URL]... [-c CONFIG] [-t THREADS_PER_WORKER]\n"
            "             [--ctx N] [--slots N] [--queue-max N] [--workerd PATH] [--log-level L]\n"
            "             [--grace-ms MS]\n"
            "             [--client-timeout-ms MS] [--progress-timeout-ms MS]\n"
            "             [--prefill-timeout-ms MS] [--start-timeout-ms MS]\n"
            "  -m MODEL      GGUF model the workers serve (required)\n"
            "  -w WORKERS    worker processes (default 2)\n"
            "  -l URL        listen URL, ipc://, tcp:// or tls+tcp:// (certificate from -c),\n"
            "                repeatable\n"
            "                (default $LLORCH_URL, else " CLIENT_DEFAULT_URL ")\n"
            "  -c CONFIG     tenants (keys, weights, limits) and TLS; docs/operations.md\n"
            "                (default: one local tenant, no key)\n"
            "  -t THREADS    threads per worker (default 1)\n"
            "  --ctx N       context length of each worker, at most the model's (default 2048);\n"
            "                prompt + max_tokens beyond it is refused (context_full)\n"
            "  --slots N     requests each worker decodes at once, in one batch (default 4);\n"
            "                each has its own KV cache of the context length\n"
            "  --queue-max N queued requests before busy replies (default 64)\n"
            "  --workerd PATH  worker binary (default: workerd beside orchd)\n"
            "  --log-level L error, warn, info (default) or debug\n"
            "  --grace-ms MS   on SIGTERM, time running requests get to finish (default 10000)\n"
            "  --client-timeout-ms MS    cancel a request not polled this long (default 30000)\n"
            "  --progress-timeout-ms MS  kill a busy worker without progress (default 30000)\n"
            "  --prefill-timeout-ms MS   ... while a request awaits its first token (600000)\n"
            "  --start-timeout-ms MS     kill a worker not ready this long (default 120000)\n"
            "exit status: 0 after a clean stop, 1 on a runtime failure, 2 on bad usage or model\n");
}

/* Parses argv into o; returns 0, or EXIT_USAGE after a one-line message. */
static int
parse_args(int argc, char **argv, struct options *o)
{
    enum {
        OPT_QUEUE = 256,
        OPT_CTX,
        OPT_SLOTS,
        OPT_WORKERD,
        OPT_LOG,
        OPT_GRACE,
        OPT_CLIENT,
        OPT_PROGRESS,
        OPT_PREFILL,
        OPT_START
    };
    static const struct option longs[] = {
        {"queue-max", required_argument, NULL, OPT_QUEUE},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"slots", required_argument, NULL, OPT_SLOTS},
        {"workerd", required_argument, NULL, OPT_WORKERD},
        {"log-level", required_argument, NULL, OPT_LOG},
        {"grace-ms", required_argument, NULL, OPT_GRACE},
        {"client-timeout-ms", required_argument, NULL, OPT_CLIENT},
        {"progress-timeout-ms", required_argument, NULL, OPT_PROGRESS},
        {"prefill-timeout-ms", required_argument, NULL, OPT_PREFILL},
        {"start-timeout-ms", required_argument, NULL, OPT_START},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char oerr[ERR_MSG_MAX];
    long long v;
    int c, level;

    memset(o, 0, sizeof(*o));
    o->workers = 2;
    o->threads = 1;
    o->ctx = DEFAULT_CTX;
    o->slots = 4;
    o->grace_ms = 10000;
    sched_config_default(&o->sc);
    while ((c = getopt_long(argc, argv, "m:w:l:t:c:h", longs, NULL)) != -1) {
        const char *what = NULL;

        switch (c) {
        case 'm':
            o->model = optarg;
            break;
        case 'w':
            if (opt_int("-w", optarg, 1, MASTER_MAX_SLOTS, &v, oerr) != ERR_OK)
                what = "-w must be in [1, 64]";
            o->workers = (int)v;
            break;
        case 'l':
            if (o->n_urls == FRONT_MAX_URLS)
                what = "-l: at most 16 listen URLs";
            else
                o->urls[o->n_urls++] = optarg;
            break;
        case 't':
            if (opt_int("-t", optarg, 1, 1024, &v, oerr) != ERR_OK)
                what = "-t must be in [1, 1024]";
            o->threads = (int)v;
            break;
        case 'c':
            o->config = optarg;
            break;
        case OPT_QUEUE:
            if (opt_int("--queue-max", optarg, 1, 1000000, &v, oerr) != ERR_OK)
                what = "--queue-max must be in [1, 1000000]";
            o->sc.queue_max = (uint32_t)v;
            break;
        case OPT_CTX:
            if (opt_int("--ctx", optarg, 16, 1 << 20, &v, oerr) != ERR_OK)
                what = "--ctx must be in [16, 1048576]";
            o->ctx = (int)v;
            break;
        case OPT_SLOTS:
            if (opt_int("--slots", optarg, 1, PROTO_MAX_BATCH, &v, oerr) != ERR_OK)
                what = "--slots must be in [1, 256]";
            o->slots = (int)v;
            break;
        case OPT_WORKERD:
            o->workerd = optarg;
            break;
        case OPT_LOG:
            if ((level = log_level_parse(optarg)) < 0)
                what = "--log-level must be error, warn, info or debug";
            else
                log_init("orchd", (enum log_level)level);
            break;
        case OPT_GRACE:
        case OPT_CLIENT:
        case OPT_PROGRESS:
        case OPT_PREFILL:
        case OPT_START:
            if (opt_int("timeout", optarg, 1, 86400000, &v, oerr) != ERR_OK) {
                what = "timeouts must be in [1, 86400000] ms";
                break;
            }
            if (c == OPT_GRACE)
                o->grace_ms = v;
            else if (c == OPT_CLIENT)
                o->sc.client_timeout_ms = v;
            else if (c == OPT_PROGRESS)
                o->sc.progress_timeout_ms = v;
            else if (c == OPT_PREFILL)
                o->sc.prefill_timeout_ms = v;
            else
                o->sc.start_timeout_ms = v;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            what = "unknown option (see orchd --help)";
            break;
        }
        if (what != NULL) {
            fprintf(stderr, "orchd: %s\n", what);
            return EXIT_USAGE;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "orchd: unexpected argument '%s' (see orchd --help)\n", argv[optind]);
        return EXIT_USAGE;
    }
    if (o->model == NULL) {
        fprintf(stderr, "orchd: -m MODEL is required (see orchd --help)\n");
        return EXIT_USAGE;
    }
    o->sc.n_slots = o->workers;
    return 0;
}

/*
 * The context length the workers will have: want, or the model's `<arch>.context_length` when
 * that is less (workerd serve takes the smaller of --ctx and the model's). The scheduler holds
 * submits to it before any worker has reported its own.
 */
static uint32_t
worker_ctx(const struct gguf *g, int want)
{
    struct gguf_str arch;
    char key[96], err[ERR_MSG_MAX];
    int64_t train;

    if (gguf_get_str(g, "general.architecture", &arch, err) != ERR_OK || arch.len > 64)
        return (uint32_t)want;
    snprintf(key, sizeof(key), "%.*s.context_length", (int)arch.len, arch.data);
    if (gguf_get_int(g, key, &train, err) != ERR_OK || train <= 0 || train >= want)
        return (uint32_t)want;
    return (uint32_t)train;
}

/* The default listen URL: $LLORCH_URL, else where orchctl looks by default (CLIENT_DEFAULT_URL). */
static int
default_url(char *buf, size_t size)
{
    const char *env = getenv("LLORCH_URL");

    snprintf(buf, size, "%s", env != NULL && env[0] != '\0' ? env : CLIENT_DEFAULT_URL);
    return 0;
}

/* The workerd beside orchd's own binary. */
static int
default_workerd(char *buf, size_t size)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

    if (n < 0) {
        fprintf(stderr, "orchd: readlink /proc/self/exe: %s\n", strerror(errno));
        return -1;
    }
    self[n] = '\0';
    snprintf(buf, size, "%s/workerd", dirname(self));
    return 0;
}

static int
op_dispatch(void *ud, int slot, const struct proto_dispatch *d, char *err)
{
    struct orchd *o = ud;

    return wlink_dispatch(o->wlink, slot, d, err);
}

static void
op_cancel(void *ud, int slot, const char *id)
{
    struct orchd *o = ud;

    wlink_cancel(o->wlink, slot, id);
}

static void
op_kill(void *ud, int slot, const char *why)
{
    struct orchd *o = ud;

    master_kill(o->master, slot, why);
}

static void
on_worker_exit(void *ud, struct slot *s)
{
    struct orchd *o = ud;

    o->known[s->id] = 0;
    wlink_detach(o->wlink, s->id); /* no event of the dead process after this */
    sched_worker_exited(o->sched, s->id, s->last_exit, s->state == SLOT_FATAL, clock_now_ms());
}

/* Gives the links of the processes master_spawn_due started to the link thread and tells the
 * scheduler of them. */
static void
note_started(struct orchd *o)
{
    char err[ERR_MSG_MAX];

    for (int i = 0; i < master_n_slots(o->master); i++) {
        struct slot *s = master_slot(o->master, i);

        if (s->state == SLOT_RUNNING && s->pid != o->known[i]) {
            o->known[i] = s->pid;
            if (wlink_attach(o->wlink, i, master_take_link(o->master, i), err) != ERR_OK)
                log_error("worker %d: %s", i, err); /* its start timeout ends it */
            sched_worker_started(o->sched, i, (int)s->pid, s->restarts, clock_now_ms());
        }
    }
}

/* Waits up to TICK_MS for a signal; returns it, or 0. */
static int
wait_signal(const sigset_t *set)
{
    struct timespec ts = {0, TICK_MS * 1000000L};
    int sig = sigtimedwait(set, NULL, &ts);

    return sig > 0 ? sig : 0;
}

/* The master loop; returns when shutdown is complete. */
static void
run(struct orchd *o, const sigset_t *set, uint64_t grace_ms)
{
    enum { RUNNING, DRAINING, ENDING, STOPPING } phase = RUNNING;
    uint64_t deadline = 0;

    for (int sig = 0;; sig = wait_signal(set)) {
        uint64_t now = clock_now_ms();

        if ((sig == SIGTERM || sig == SIGINT) && phase == RUNNING) {
            log_info("%s: stopping admission; running requests get %llu ms", strsignal(sig),
                     (unsigned long long)grace_ms);
            sched_shutdown(o->sched);
            phase = DRAINING;
            deadline = now + grace_ms;
        } else if ((sig == SIGTERM || sig == SIGINT) && phase == DRAINING) {
            deadline = now; /* a second signal: no more grace */
        } else if (sig == SIGHUP) {
            log_info("SIGHUP: nothing to reload (the configuration is read at start)");
        }
        if (phase == STOPPING) {
            if (master_stop_tick(o->master, now))
                return;
            continue;
        }
        master_reap(o->master, now, on_worker_exit, o);
        if (master_spawn_due(o->master, now) > 0)
            note_started(o);
        sched_tick(o->sched, now);
        if (phase == DRAINING && (sched_active(o->sched) == 0 || now >= deadline)) {
            sched_end_all(o->sched, ERR_SHUTTING_DOWN, "orchd is shutting down", now);
            phase = ENDING;
            deadline = now + 200; /* clients fetch their last frames */
        } else if (phase == ENDING && now >= deadline) {
            log_info("stopping the workers");
            master_stop_all(o->master, now, 3000);
            phase = STOPPING;
        }
    }
}

int
main(int argc, char **argv)
{
    struct options opt;
    struct orchd o = {0};
    struct sched_ops ops = {&o, op_dispatch, op_cancel, op_kill};
    struct master_config mc = {0};
    struct front_config fc = {0};
    struct front *front = NULL;
    struct gguf *g = NULL;
    struct tokenizer *tok = NULL;
    struct config *conf = NULL;
    struct chat_format chat;
    char err[ERR_MSG_MAX], url[PATH_MAX + 32], workerd[PATH_MAX], link[16];
    char threads[16], ctx[16], slots[16];
    const char *wargv[15];
    sigset_t set;
    int rc, status = 1;

    log_init("orchd", LOG_INFO);
    if ((rc = parse_args(argc, argv, &opt)) != 0)
        return rc;
    if (opt.config != NULL) {
        if (config_load(&conf, opt.config, err) != ERR_OK) {
            fprintf(stderr, "orchd: %s\n", err);
            return EXIT_USAGE;
        }
        opt.sc.tenants = conf->tenants;
        opt.sc.n_tenants = conf->n_tenants;
    }
    /* before any NNG thread exists, so that they inherit the mask */
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGPIPE);
    if ((errno = pthread_sigmask(SIG_BLOCK, &set, NULL)) != 0) {
        fprintf(stderr, "orchd: pthread_sigmask: %s\n", strerror(errno));
        config_free(conf);
        return 1;
    }
    if ((rc = gguf_open(&g, opt.model, err)) != ERR_OK ||
        (rc = tokenizer_load(&tok, g, err)) != ERR_OK ||
        (rc = chat_format_from_model(&chat, g, tok, err)) != ERR_OK) {
        fprintf(stderr, "orchd: %s: %s\n", opt.model, err);
        gguf_close(g);
        config_free(conf);
        return EXIT_USAGE;
    }
    if (opt.n_urls == 0) {
        if (default_url(url, sizeof(url)) != 0)
            goto out;
        opt.urls[opt.n_urls++] = url;
    }
    if (opt.workerd == NULL) {
        if (default_workerd(workerd, sizeof(workerd)) != 0)
            goto out;
        opt.workerd = workerd;
    }
    if (access(opt.workerd, X_OK) != 0) {
        fprintf(stderr, "orchd: worker binary %s: %s\n", opt.workerd, strerror(errno));
        status = EXIT_USAGE;
        goto out;
    }
    opt.sc.n_ctx = worker_ctx(g, opt.ctx);
    o.sched = sched_new(&opt.sc, &ops, clock_now_ms());
    if (o.sched == NULL) {
        fprintf(stderr, "orchd: out of memory\n");
        goto out;
    }
    if (wlink_open(&o.wlink, opt.workers, o.sched, err) != ERR_OK) {
        fprintf(stderr, "orchd: %s\n", err);
        goto out;
    }
    fc.urls = opt.urls;
    fc.n_urls = opt.n_urls;
    fc.contexts = 64;
    fc.sched = o.sched;
    fc.tok = tok;
    fc.chat = &chat;
    fc.conf = conf;
    fc.tls_cert_key_file = conf != NULL ? conf->tls_cert_key_file : NULL;
    if (front_open(&front, &fc, err) != ERR_OK) {
        fprintf(stderr, "orchd: %s\n", err);
        goto out;
    }
    snprintf(link, sizeof(link), "%d", MASTER_LINK_FD);
    snprintf(threads, sizeof(threads), "%d", opt.threads);
    snprintf(ctx, sizeof(ctx), "%d", opt.ctx);
    snprintf(slots, sizeof(slots), "%d", opt.slots);
    wargv[0] = opt.workerd;
    wargv[1] = "serve";
    wargv[2] = "-m";
    wargv[3] = opt.model;
    wargv[4] = "--link-fd";
    wargv[5] = link;
    wargv[6] = "--slot";
    wargv[7] = "%d";
    wargv[8] = "-t";
    wargv[9] = threads;
    wargv[10] = "--ctx";
    wargv[11] = ctx;
    wargv[12] = "--slots";
    wargv[13] = slots;
    wargv[14] = NULL;
    mc.argv = wargv;
    mc.n_slots = opt.workers;
    mc.backoff_min_ms = 100;
    mc.backoff_max_ms = 10000;
    mc.stable_ms = 5000;
    mc.link = true;
    o.master = master_new(&mc);
    if (o.master == NULL) {
        fprintf(stderr, "orchd: out of memory\n");
        goto out;
    }
    log_info("serving %s with %d workers x %d threads x %d request slots (context %u, queue %u, "
             "%d tenants%s)",
             opt.model, opt.workers, opt.threads, opt.slots, opt.sc.n_ctx, opt.sc.queue_max,
             conf != NULL ? conf->n_tenants : 1, conf != NULL ? "" : ": the local default, no key");
    run(&o, &set, opt.grace_ms);
    log_info("stopped");
    status = 0;
out:
    front_close(front);
    wlink_close(o.wlink);
    master_free(o.master);
    sched_free(o.sched);
    tokenizer_free(tok);
    gguf_close(g);
    config_free(conf);
    sock_exit(status);
}
