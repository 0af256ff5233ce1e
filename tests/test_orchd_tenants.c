/*
 * test_orchd_tenants.c: orchd with a tenants configuration (-c), real workerd processes on
 * stories260K, driven through the client library with each tenant's key: a missing or wrong key
 * is refused (unauthorized) for every message type, a tenant streams its own request to the end
 * while another tenant can neither poll nor cancel it (not_found, as for an unknown id) nor see its
 * id in `workers`, and `status` gives per-tenant counts; orchd listens on tls+tcp:// on loopback
 * with the certificate of its configuration (tests/tls/, see make-certs.sh) and a client with the
 * right CA streams through it, one with another CA is refused. Scheduling is in test_sched.c.
 */
#include "common/err.h"
#include "orchd/config.h"
#include "orchd/front.h"
#include "proto/client.h"
#include "tests/harness.h"
#include "tests/orchd_daemon.h"

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Writes a configuration with tenants "alpha" (key ka-...) and "beta" (kb-...) after head (a
 * [tls] section, or ""); returns its path. */
static const char *
write_tenants(const char *head)
{
    static char path[512];
    char ha[CONFIG_HASH_TEXT], hb[CONFIG_HASH_TEXT], err[ERR_MSG_MAX];
    FILE *f;

    if (config_hash_key("ka-0123456789", ha, err) != ERR_OK ||
        config_hash_key("kb-0123456789", hb, err) != ERR_OK)
        return NULL;
    snprintf(path, sizeof(path), "%s/tenants.conf", harness_tmpdir());
    if ((f = fopen(path, "w")) == NULL)
        return NULL;
    fprintf(f,
            "%s[tenant alpha]\nkey = %s\nweight = 2\n\n[tenant beta]\nkey = %s\nmax_queued = 4\n",
            head, ha, hb);
    fclose(f);
    return path;
}

static struct client *
open_with_key(const struct daemon *d, const char *key)
{
    struct client_opts o = {.key = key, .timeout_ms = 5000};
    struct client *c = NULL;
    char err[ERR_MSG_MAX];

    if (client_open(&c, d->url, &o, err) != ERR_OK)
        printf("  client_open: %s\n", err);
    return c;
}

static int
submit(struct client *c, uint32_t n, struct client_submitted *out, char *err)
{
    struct proto_msg m;

    proto_submit_init(&m);
    m.u.submit.prompt = "Once upon a time";
    m.u.submit.max_tokens = n;
    m.u.submit.sampling.temperature = 0;
    return client_submit(c, &m.u.submit, out, err);
}

/* Reads id's stream on c to its end; returns the last frame's kind, or -1. */
static int
stream_to_end(struct client *c, const char *id, uint32_t *n_ids)
{
    struct client_stream *s;
    const struct proto_frame *f;
    char err[ERR_MSG_MAX];
    int kind = -1;

    *n_ids = 0;
    if (client_stream_open(c, id, 0, &s, err) != ERR_OK)
        return -1;
    for (int i = 0; i < 200 && !client_stream_ended(s); i++) {
        if (client_stream_next(s, 1000, &f, err) != ERR_OK)
            break;
        if (f != NULL && f->kind == PROTO_FRAME_TOKENS)
            *n_ids += f->n_ids;
        if (f != NULL)
            kind = (int)f->kind;
    }
    client_stream_close(s);
    return kind;
}

static void
test_keys_and_isolation(void)
{
    const char *conf = write_tenants("");
    const char *extra[] = {"-w", "1", "-c", conf, NULL};
    struct client *ca = NULL, *cb = NULL, *cw = NULL;
    struct daemon d;
    struct client_submitted sa, sb;
    struct client_stream *st;
    const struct proto_frame *f;
    struct proto_msg rep;
    char err[ERR_MSG_MAX];
    uint32_t n_ids;

    CHECK(conf != NULL);
    if (!daemon_start(&d, NULL, extra)) {
        daemon_print_log(&d);
        CHECK(!"orchd started with tenants");
    }
    ca = open_with_key(&d, "ka-0123456789");
    cb = open_with_key(&d, "kb-0123456789");
    cw = open_with_key(&d, "kb-0123456788");
    CHECK(ca != NULL && cb != NULL && cw != NULL);
    /* no key (the daemon's own client) and a wrong key: unauthorized, whatever the message */
    CHECK(submit(d.c, 4, &sa, err) == ERR_UNAUTHORIZED);
    CHECKF(submit(cw, 4, &sa, err) == ERR_UNAUTHORIZED, "%s", err);
    CHECK(client_health(cw, &rep, err) == ERR_UNAUTHORIZED);
    CHECK(client_status(cw, &rep, err) == ERR_UNAUTHORIZED);
    CHECK(client_workers(cw, &rep, err) == ERR_UNAUTHORIZED);
    CHECK(client_cancel(cw, "r1", err) == ERR_UNAUTHORIZED);
    /* alpha's request: beta can neither read it nor cancel it */
    CHECKF(submit(ca, 24, &sa, err) == ERR_OK, "%s", err);
    CHECK(client_stream_open(cb, sa.id, 0, &st, err) == ERR_OK);
    CHECKF(client_stream_next(st, 0, &f, err) == ERR_NOT_FOUND, "%s", err);
    client_stream_close(st);
    CHECK(client_cancel(cb, sa.id, err) == ERR_NOT_FOUND);
    CHECKF(submit(cb, 4, &sb, err) == ERR_OK, "%s", err);
    if (client_workers(cb, &rep, err) == ERR_OK) {
        for (uint32_t i = 0; i < rep.u.workers.n_workers; i++)
            for (uint32_t j = 0; j < rep.u.workers.workers[i].n_requests; j++)
                CHECKF(strcmp(rep.u.workers.workers[i].requests[j], sa.id) != 0,
                       "beta sees %s on worker %u", sa.id, i);
        proto_msg_free(&rep);
    }
    CHECK(client_status(cb, &rep, err) == ERR_OK);
    CHECK(rep.u.status.n_tenants == 2);
    if (rep.u.status.n_tenants == 2) {
        CHECK(strcmp(rep.u.status.tenants[0].name, "alpha") == 0);
        CHECK(strcmp(rep.u.status.tenants[1].name, "beta") == 0);
        CHECK(rep.u.status.tenants[0].queued + rep.u.status.tenants[0].running <= 1);
    }
    proto_msg_free(&rep);
    CHECK(stream_to_end(ca, sa.id, &n_ids) == PROTO_FRAME_DONE && n_ids == 24);
    CHECK(stream_to_end(cb, sb.id, &n_ids) == PROTO_FRAME_DONE && n_ids == 4);
    CHECK(client_status(ca, &rep, err) == ERR_OK && rep.u.status.n_tenants == 2);
    if (rep.u.status.n_tenants == 2)
        CHECKF(rep.u.status.tenants[0].gen_tokens == 24 && rep.u.status.tenants[1].gen_tokens == 4,
               "%llu %llu", (unsigned long long)rep.u.status.tenants[0].gen_tokens,
               (unsigned long long)rep.u.status.tenants[1].gen_tokens);
    proto_msg_free(&rep);
    client_close(ca);
    client_close(cb);
    client_close(cw);
    daemon_stop(&d);
}

/* A TCP port on 127.0.0.1 free a moment ago, or 0. */
static int
free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = 0;

    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static void
test_tls_loopback(void)
{
    char pem[PATH_MAX], head[PATH_MAX + 64], url[64], err[ERR_MSG_MAX];
    const char *conf;
    const char *extra[] = {"-w", "1", "-c", NULL, "-l", url, NULL};
    struct client_opts good = {
        .key = "kb-0123456789", .ca_file = "tests/tls/ca.pem", .timeout_ms = 5000};
    struct client_opts other = {
        .key = "kb-0123456789", .ca_file = "tests/tls/other-ca.pem", .timeout_ms = 2000};
    struct client *c = NULL;
    struct client_submitted sub;
    const char *urls[] = {"tls+tcp://127.0.0.1:0"};
    struct front_config fc = {0};
    struct front *f;
    struct daemon d;
    uint32_t n_ids;
    int rc;

    CHECK(realpath("tests/tls/server.pem", pem) != NULL);
    snprintf(head, sizeof(head), "[tls]\ncert_key_file = %s\n\n", pem);
    CHECK((conf = write_tenants(head)) != NULL);
    extra[3] = conf;
    snprintf(url, sizeof(url), "tls+tcp://127.0.0.1:%d", free_port());
    if (!daemon_start(&d, NULL, extra)) {
        daemon_print_log(&d);
        CHECK(!"orchd started on tls+tcp://");
    }
    CHECKF(client_open(&c, url, &good, err) == ERR_OK, "%s: %s", url, err);
    CHECKF(submit(c, 8, &sub, err) == ERR_OK, "%s", err);
    CHECK(stream_to_end(c, sub.id, &n_ids) == PROTO_FRAME_DONE && n_ids == 8);
    client_close(c);
    c = NULL;
    rc = client_open(&c, url, &other, err);
    CHECKF(rc == ERR_IO && c == NULL, "rc %d: %s", rc, err);
    daemon_stop(&d);
    /* a tls+tcp:// listener without a certificate, or with one that cannot be read */
    fc.urls = urls;
    fc.n_urls = 1;
    fc.contexts = 1;
    CHECKF(front_open(&f, &fc, err) == ERR_BAD_REQUEST && strstr(err, "cert_key_file"), "%s", err);
    fc.tls_cert_key_file = "tests/tls/none.pem";
    CHECKF(front_open(&f, &fc, err) == ERR_BAD_REQUEST && strstr(err, "none.pem"), "%s", err);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_keys_and_isolation),
        TEST(test_tls_loopback),
        {0},
    };

    return harness_run(tests, argc, argv);
}
