/*
 * test_orchctl.c: the orchctl binary ($BUILD/orchctl) run as a real process against the test
 * server of tests/proto_peer.h: streamed text and JSON lines, options reaching the wire, every
 * exit status of --help (busy, refused, failed, unreachable, not found, unauthorized, not
 * ready), status/workers/health output, attach from a sequence number, and Ctrl-C cancelling.
 */
#include "common/err.h"
#include "tests/harness.h"
#include "tests/proto_peer.h"

#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct run {
    char out[16384];
    char err[4096];
    int status; /* exit status, or 128 + signal */
};

static const char *
orchctl_path(void)
{
    static char path[512];
    const char *build = getenv("BUILD");

    snprintf(path, sizeof(path), "%s/orchctl", build != NULL ? build : "build");
    return path;
}

/* Reads fd to the end into buf (NUL-terminated, cut at size). */
static void
read_all(int fd, char *buf, size_t size)
{
    size_t n = 0;
    ssize_t r;
    char sink[512];

    while ((r = read(fd, n + 1 < size ? buf + n : sink,
                     n + 1 < size ? size - 1 - n : sizeof(sink))) > 0)
        if (n + 1 < size)
            n += (size_t)r;
    buf[n] = '\0';
}

/*
 * Starts orchctl with args (NULL-terminated) and env entries (NULL or "NAME=value"); stdout goes
 * to a pipe returned in *out_fd, stderr to a file of the temporary directory. Returns the pid.
 */
static pid_t
spawn(char *const *args, const char *env, int *out_fd, const char *err_path)
{
    char *argv[40];
    int pipefd[2], n = 0;
    pid_t pid;

    argv[n++] = (char *)orchctl_path();
    for (int i = 0; args[i] != NULL && n < 39; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    if (pipe(pipefd) != 0)
        return -1;
    pid = fork();
    if (pid == 0) {
        int e = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

        dup2(pipefd[1], STDOUT_FILENO);
        dup2(e, STDERR_FILENO);
        close(pipefd[0]);
        unsetenv("LLORCH_KEY");
        unsetenv("LLORCH_URL");
        unsetenv("LLORCH_CA");
        if (env != NULL)
            putenv((char *)env);
        execv(argv[0], argv);
        _exit(127);
    }
    close(pipefd[1]);
    *out_fd = pipefd[0];
    return pid;
}

static void
finish(pid_t pid, int out_fd, const char *err_path, struct run *r)
{
    int st = 0, fd;

    read_all(out_fd, r->out, sizeof(r->out));
    close(out_fd);
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    fd = open(err_path, O_RDONLY);
    r->err[0] = '\0';
    if (fd >= 0) {
        read_all(fd, r->err, sizeof(r->err));
        close(fd);
    }
}

/* Runs orchctl with env (or NULL) and the arguments after it, up to a NULL. */
static void
run(struct run *r, const char *env, ...)
{
    char *args[40], err_path[400];
    va_list ap;
    int n = 0, fd;
    pid_t pid;

    va_start(ap, env);
    while (n < 39 && (args[n] = va_arg(ap, char *)) != NULL)
        n++;
    va_end(ap);
    args[n] = NULL;
    snprintf(err_path, sizeof(err_path), "%s/orchctl.err", harness_tmpdir());
    pid = spawn(args, env, &fd, err_path);
    finish(pid, fd, err_path, r);
}

static bool
start_peer(struct peer *p, const char *name)
{
    char url[300];

    snprintf(url, sizeof(url), "ipc://%s/%s.sock", harness_tmpdir(), name);
    peer_init(p, url);
    return peer_start(p);
}

static void
stop_peer(struct peer *p)
{
    peer_stop(p);
    peer_destroy(p);
}

/* Splits r->out into JSON lines; returns how many parsed (each in lines[], to json_decref). */
static int
json_lines(struct run *r, json_t **lines, int max)
{
    int n = 0;

    for (char *save = NULL, *l = strtok_r(r->out, "\n", &save); l != NULL && n < max;
         l = strtok_r(NULL, "\n", &save)) {
        json_error_t e;

        lines[n] = json_loads(l, 0, &e);
        if (lines[n] == NULL)
            break;
        n++;
    }
    return n;
}

static void
free_lines(json_t **lines, int n)
{
    for (int i = 0; i < n; i++)
        json_decref(lines[i]);
}

static void
test_submit_streams_text(void)
{
    struct peer p;
    struct run r;

    CHECK(start_peer(&p, "text"));
    run(&r, NULL, "-u", p.url, "submit", "-n", "4", "Once upon a time", NULL);
    CHECKF(r.status == 0, "exit %d: %s", r.status, r.err);
    CHECKF(strcmp(r.out, "t2 t3 t4 t5 ") == 0, "stdout '%s'", r.out);
    CHECK(p.last_max_tokens == 4 && strcmp(p.last_prompt, "Once upon a time") == 0);
    /* a prompt that starts with '-' after -- */
    run(&r, NULL, "-u", p.url, "submit", "-n", "1", "--", "-dash", NULL);
    CHECKF(r.status == 0 && strcmp(p.last_prompt, "-dash") == 0, "exit %d: %s", r.status, r.err);
    stop_peer(&p);
}

static void
test_submit_json_lines(void)
{
    struct peer p;
    struct run r;
    json_t *lines[16], *last, *ids;
    int n;

    CHECK(start_peer(&p, "json"));
    run(&r, NULL, "-u", p.url, "submit", "--json", "-n", "4", "hi", NULL);
    CHECKF(r.status == 0, "exit %d: %s", r.status, r.err);
    n = json_lines(&r, lines, 16);
    CHECKF(n == 7, "%d JSON lines", n);
    CHECK(strcmp(json_string_value(json_object_get(lines[0], "frame")), "queued") == 0);
    CHECK(json_integer_value(json_object_get(lines[0], "position")) == 1);
    CHECK(strcmp(json_string_value(json_object_get(lines[2], "text")), "t2 ") == 0);
    last = lines[n - 1];
    CHECK(json_is_true(json_object_get(last, "done")));
    CHECK(strcmp(json_string_value(json_object_get(last, "id")), "r-1") == 0);
    CHECK(strcmp(json_string_value(json_object_get(last, "reason")), "length") == 0);
    CHECK(strcmp(json_string_value(json_object_get(last, "text")), "t2 t3 t4 t5 ") == 0);
    ids = json_object_get(last, "gen_ids");
    CHECK(json_array_size(ids) == 4 && json_integer_value(json_array_get(ids, 0)) == 102);
    CHECK(json_integer_value(json_array_get(ids, 3)) == 105);
    CHECK(json_integer_value(json_object_get(last, "gen_tokens")) == 4);
    CHECK(json_is_number(json_object_get(last, "decode_ms")));
    free_lines(lines, n);
    stop_peer(&p);
}

static void
test_submit_options_reach_the_wire(void)
{
    struct peer p;
    struct run r;

    CHECK(start_peer(&p, "opts"));
    run(&r, NULL, "-u", p.url, "submit", "-n", "2", "--temp", "0", "--seed", "42", "--top-k", "5",
        "--top-p", "0.5", "--min-p", "0.25", "--repeat-penalty", "1.5", "--repeat-last-n", "32",
        "--stop", "a", "--stop", "bb", "--batch", "x", NULL);
    CHECKF(r.status == 0, "exit %d: %s", r.status, r.err);
    CHECK(p.last_sampling.temperature == 0.0f && p.last_sampling.seed == 42);
    CHECK(p.last_sampling.top_k == 5 && p.last_sampling.top_p == 0.5f);
    CHECK(p.last_sampling.min_p == 0.25f && p.last_sampling.repeat_penalty == 1.5f);
    CHECK(p.last_sampling.repeat_last_n == 32 && p.last_n_stop == 2);
    CHECK(p.last_priority == PROTO_PRIO_BATCH);
    /* defaults: llama.cpp's, and a random seed (absent on the wire) */
    run(&r, NULL, "-u", p.url, "submit", "x", NULL);
    CHECK(r.status == 0 && p.last_max_tokens == 128 && p.last_sampling.seed == PROTO_SEED_RANDOM);
    CHECK(p.last_sampling.temperature == 0.8f && p.last_priority == PROTO_PRIO_INTERACTIVE);
    stop_peer(&p);
}

static void
test_exit_statuses(void)
{
    struct peer p;
    struct run r;
    char nobody[400];
    json_t *lines[16];
    int n;

    CHECK(start_peer(&p, "exits"));
    run(&r, NULL, "-u", p.url, "submit", "busy", NULL);
    CHECKF(r.status == 4 && strstr(r.err, "orchctl: busy: queue full") != NULL, "%d %s", r.status,
           r.err);
    run(&r, NULL, "-u", p.url, "submit", "-n", "0", "x", NULL);
    CHECKF(r.status == 5 &&
               strstr(r.err, "bad_request: max_tokens must be in [1, 8192], got 0") != NULL,
           "%d %s", r.status, r.err);
    run(&r, NULL, "-u", p.url, "submit", "--top-p", "2", "x", NULL);
    CHECKF(r.status == 5 && strstr(r.err, "opts.top_p must be in [0, 1], got 2") != NULL, "%d %s",
           r.status, r.err);
    run(&r, NULL, "-u", p.url, "submit", "--json", "-n", "3", "crash", NULL);
    CHECKF(r.status == 8 && strstr(r.err, "worker_crashed: request r-") != NULL, "%d %s", r.status,
           r.err);
    n = json_lines(&r, lines, 16);
    CHECK(n == 6);
    CHECK(strcmp(json_string_value(json_object_get(lines[n - 1], "reason")), "error") == 0);
    CHECK(json_integer_value(json_object_get(lines[n - 1], "code")) == ERR_WORKER_CRASHED);
    CHECK(json_array_size(json_object_get(lines[n - 1], "gen_ids")) == 3);
    free_lines(lines, n);
    run(&r, NULL, "-u", p.url, "cancel", "r-404", NULL);
    CHECKF(r.status == 6 && strstr(r.err, "not_found") != NULL, "%d %s", r.status, r.err);
    run(&r, NULL, "-u", p.url, "attach", "r-404", NULL);
    CHECK(r.status == 6);
    run(&r, NULL, "-u", p.url, "submit", NULL);
    CHECK(r.status == 2);
    run(&r, NULL, "-u", p.url, "submit", "--temp", "hot", "x", NULL);
    CHECKF(r.status == 2 && strstr(r.err, "--temp: not a number: 'hot'") != NULL, "%s", r.err);
    run(&r, NULL, "-u", p.url, "frobnicate", NULL);
    CHECK(r.status == 2);
    run(&r, NULL, "--help", NULL);
    CHECK(r.status == 0 && strstr(r.out, "exit status:") != NULL);
    p.key = "tk_1";
    run(&r, NULL, "-u", p.url, "health", NULL);
    CHECKF(r.status == 7 && strstr(r.err, "unauthorized") != NULL, "%d %s", r.status, r.err);
    run(&r, NULL, "-u", p.url, "-k", "tk_1", "health", NULL);
    CHECK(r.status == 0);
    run(&r, "LLORCH_KEY=tk_1", "-u", p.url, "health", NULL);
    CHECK(r.status == 0);
    p.key = NULL;
    p.unready = true;
    run(&r, NULL, "-u", p.url, "health", NULL);
    CHECKF(r.status == 9 && strncmp(r.out, "not ready", 9) == 0, "%d %s", r.status, r.out);
    stop_peer(&p);
    snprintf(nobody, sizeof(nobody), "ipc://%s/nobody.sock", harness_tmpdir());
    run(&r, NULL, "-u", nobody, "status", NULL);
    CHECKF(r.status == 3 && strstr(r.err, "cannot connect") != NULL, "%d %s", r.status, r.err);
    char env[450];
    snprintf(env, sizeof(env), "LLORCH_URL=%s", nobody);
    run(&r, env, "workers", NULL);
    CHECKF(r.status == 3 && strstr(r.err, nobody) != NULL, "%d %s", r.status, r.err);
}

static void
test_status_workers_health_output(void)
{
    struct peer p;
    struct run r;
    json_t *lines[4];
    int n;

    CHECK(start_peer(&p, "info"));
    run(&r, NULL, "-u", p.url, "workers", NULL);
    CHECKF(r.status == 0, "%d %s", r.status, r.err);
    CHECKF(strcmp(r.out, "slot=0 pid=4242 state=busy restarts=1 in_flight=1/4 request=r-1\n"
                         "slot=1 pid=0 state=fatal restarts=5 in_flight=0/0 request=- "
                         "detail=\"exit 2: bad "
                         "model\"\n") == 0,
           "%s", r.out);
    run(&r, NULL, "-u", p.url, "workers", "--json", NULL);
    n = json_lines(&r, lines, 4);
    CHECK(r.status == 0 && n == 1 && json_array_size(lines[0]) == 2);
    json_t *w1 = json_array_get(lines[0], 1);
    CHECK(strcmp(json_string_value(json_object_get(w1, "state")), "fatal") == 0);
    CHECK(json_integer_value(json_object_get(w1, "restarts")) == 5);
    CHECK(json_is_null(json_object_get(w1, "request")));
    CHECK(json_integer_value(json_object_get(json_array_get(lines[0], 0), "in_flight")) == 1);
    CHECK(json_integer_value(json_object_get(json_array_get(lines[0], 0), "slots")) == 4);
    CHECK(strcmp(json_string_value(json_object_get(json_array_get(lines[0], 0), "request")),
                 "r-1") == 0);
    free_lines(lines, n);
    run(&r, NULL, "-u", p.url, "status", NULL);
    CHECKF(r.status == 0 && strstr(r.out, "queued 4 (interactive 3, batch 1), limit 64\n") != NULL,
           "%s", r.out);
    CHECK(strstr(r.out, "tenant alice: queued 1, running 2, generated 300 tokens\n") != NULL);
    run(&r, NULL, "-u", p.url, "status", "--json", NULL);
    n = json_lines(&r, lines, 4);
    CHECK(r.status == 0 && n == 1);
    CHECK(json_integer_value(json_object_get(lines[0], "queued")) == 4);
    CHECK(json_integer_value(json_object_get(lines[0], "running")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(
                     json_array_get(json_object_get(lines[0], "tenants"), 0), "name")),
                 "alice") == 0);
    free_lines(lines, n);
    run(&r, NULL, "-u", p.url, "health", "--json", NULL);
    n = json_lines(&r, lines, 4);
    CHECK(r.status == 0 && n == 1 && json_is_true(json_object_get(lines[0], "ready")));
    free_lines(lines, n);
    stop_peer(&p);
}

static void
test_attach_resumes(void)
{
    struct peer p;
    struct run r;
    json_t *lines[16];
    int n;

    CHECK(start_peer(&p, "attach"));
    run(&r, NULL, "-u", p.url, "submit", "-n", "5", "--id", "job-1", "x", NULL);
    CHECK(r.status == 0);
    run(&r, NULL, "-u", p.url, "attach", "--from", "4", "--json", "r-1", NULL);
    CHECKF(r.status == 0, "%d %s", r.status, r.err);
    n = json_lines(&r, lines, 16);
    CHECKF(n == 4, "%d lines", n);
    CHECK(json_integer_value(json_object_get(lines[0], "seq")) == 4);
    CHECK(strcmp(json_string_value(json_object_get(lines[n - 1], "text")), "t4 t5 t6 ") == 0);
    free_lines(lines, n);
    stop_peer(&p);
}

static void
test_ctrl_c_cancels(void)
{
    struct peer p;
    struct run r;
    char err_path[400];
    char *args[] = {"-u", NULL, "submit", "-n", "20", "slow", NULL};
    struct timespec ts = {0, 300 * 1000000};
    int fd;
    pid_t pid;

    CHECK(start_peer(&p, "sigint"));
    peer_release(&p, 3);
    args[1] = p.url;
    snprintf(err_path, sizeof(err_path), "%s/sigint.err", harness_tmpdir());
    pid = spawn(args, NULL, &fd, err_path);
    CHECK(pid > 0);
    nanosleep(&ts, NULL);
    kill(pid, SIGINT);
    finish(pid, fd, err_path, &r);
    CHECKF(r.status == 8 && strstr(r.err, "cancelled") != NULL, "%d %s", r.status, r.err);
    CHECKF(strcmp(r.out, "t2 ") == 0, "%s", r.out);
    CHECK(p.reqs[0].cancelled);
    stop_peer(&p);
}

static void
test_tls_with_ca(void)
{
    struct peer p;
    struct run r;

    peer_init(&p, "tls+tcp://127.0.0.1:0");
    p.cert_file = "tests/tls/server.pem";
    CHECK(peer_start(&p));
    run(&r, NULL, "-u", p.url, "--ca", "tests/tls/ca.pem", "submit", "-n", "2", "x", NULL);
    CHECKF(r.status == 0 && strcmp(r.out, "t2 t3 ") == 0, "%d %s %s", r.status, r.out, r.err);
    run(&r, "LLORCH_CA=tests/tls/ca.pem", "-u", p.url, "health", NULL);
    CHECKF(r.status == 0, "%d %s", r.status, r.err);
    run(&r, NULL, "-u", p.url, "health", NULL);
    CHECKF(r.status == 5 && strstr(r.err, "needs a CA file") != NULL, "%d %s", r.status, r.err);
    run(&r, NULL, "-u", p.url, "--ca", "tests/tls/other-ca.pem", "health", NULL);
    CHECKF(r.status == 3, "%d %s", r.status, r.err);
    stop_peer(&p);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_submit_streams_text),
        TEST(test_submit_json_lines),
        TEST(test_submit_options_reach_the_wire),
        TEST(test_exit_statuses),
        TEST(test_status_workers_health_output),
        TEST(test_attach_resumes),
        TEST(test_ctrl_c_cancels),
        TEST(test_tls_with_ca),
        {0},
    };

    signal(SIGPIPE, SIG_IGN);
    return harness_run(tests, argc, argv);
}
