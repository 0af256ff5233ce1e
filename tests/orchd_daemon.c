/*
 * orchd_daemon.c: see orchd_daemon.h.
 */
#include "tests/orchd_daemon.h"

#include "common/err.h"
#include "tests/harness.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pid_t running; /* the daemon of the current test: killed if the test fails early */

/* At the start of each daemon and at exit: no orchd outlives the test that started it. */
static void
kill_leftover(void)
{
    if (running > 0) {
        kill(running, SIGKILL);
        waitpid(running, NULL, 0);
        running = 0;
    }
}

bool
daemon_start(struct daemon *d, const char *workerd, const char *const *extra)
{
    const char *build = getenv("BUILD");
    char orchd[512], model[512], err[ERR_MSG_MAX];
    const char *argv[32];
    static int serial;
    int n = 0, rc;

    if (serial == 0)
        atexit(kill_leftover);
    kill_leftover();
    memset(d, 0, sizeof(*d));
    if (!harness_shared(model, sizeof(model), "models/stories260K.gguf"))
        return false;
    snprintf(orchd, sizeof(orchd), "%s/orchd", build != NULL ? build : "build");
    serial++;
    snprintf(d->url, sizeof(d->url), "ipc://%s/orchd-%d.sock", harness_tmpdir(), serial);
    snprintf(d->log, sizeof(d->log), "%s/orchd-%d.log", harness_tmpdir(), serial);
    argv[n++] = orchd;
    argv[n++] = "-m";
    argv[n++] = model;
    argv[n++] = "-l";
    argv[n++] = d->url;
    if (workerd != NULL) {
        argv[n++] = "--workerd";
        argv[n++] = workerd;
    }
    argv[n++] = "--log-level";
    argv[n++] = getenv("ORCHD_LOG_LEVEL") != NULL ? getenv("ORCHD_LOG_LEVEL") : "error";
    for (; extra != NULL && *extra != NULL; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    d->pid = fork();
    if (d->pid == 0) {
        /* its run directory in ours, so that a kill -9 leaves nothing behind */
        if (freopen(d->log, "w", stderr) == NULL || setenv("TMPDIR", harness_tmpdir(), 1) != 0)
            _exit(126);
        execv(orchd, (char **)argv);
        _exit(127);
    }
    running = d->pid;
    for (int i = 0; i < 500; i++) {
        struct proto_msg rep;

        if (d->c == NULL && client_open(&d->c, d->url, NULL, err) != ERR_OK) {
            sleep_ms(10);
            continue;
        }
        if ((rc = client_health(d->c, &rep, err)) == ERR_OK) {
            proto_msg_free(&rep);
            return true;
        }
        if (rc == ERR_UNAUTHORIZED) /* tenants configured: it answers */
            return true;
        sleep_ms(10);
    }
    printf("  orchd did not answer: %s\n", err);
    return false;
}

int
daemon_wait(struct daemon *d)
{
    int status;

    for (int i = 0; i < 500; i++) {
        if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
            d->pid = 0;
            running = 0;
            return status;
        }
        sleep_ms(10);
    }
    return -1;
}

void
daemon_print_log(const struct daemon *d)
{
    char lines[40][512];
    int n = 0;
    FILE *f = fopen(d->log, "r");

    if (f == NULL)
        return;
    while (fgets(lines[n % 40], sizeof(lines[0]), f) != NULL)
        n++;
    fclose(f);
    printf("  --- the end of %s\n", d->log);
    for (int i = n > 40 ? n - 40 : 0; i < n; i++)
        printf("  %s", lines[i % 40]);
}

void
daemon_stop(struct daemon *d)
{
    client_close(d->c);
    d->c = NULL;
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        daemon_wait(d);
    }
}

pid_t
daemon_worker_pid(struct daemon *d, uint32_t slot)
{
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    pid_t pid = 0;

    for (int i = 0; i < 200 && pid == 0; i++) {
        if (client_workers(d->c, &rep, err) == ERR_OK && slot < rep.u.workers.n_workers)
            pid = rep.u.workers.workers[slot].pid;
        proto_msg_free(&rep);
        if (pid == 0)
            sleep_ms(10);
    }
    return pid;
}

bool
process_gone(pid_t pid)
{
    char path[64], state = '?';
    FILE *f;

    if (kill(pid, 0) != 0 && errno == ESRCH)
        return true;
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return true;
    if (fscanf(f, "%*d %*s %c", &state) != 1)
        state = '?';
    fclose(f);
    return state == 'Z';
}
