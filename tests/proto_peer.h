/*
 * proto_peer.h: a small orchd stand-in for the client tests: a thread serving a real NNG rep
 * socket with proto's encoder and decoder. Each submit becomes a request whose stream is
 * queued, started, one tokens frame per token (id 100 + seq, text "t<seq> ") up to max_tokens,
 * and done (reason length), of which the test releases as many frames as it likes. Some prompts
 * trigger replies: "busy" (busy, retry 123 ms), "garbage" (not msgpack), "wrongtype" (a
 * health_info), "crash" (the stream ends with a worker_crashed error frame). Not orchd: no
 * scheduling, no workers; it answers one request at a time.
 */
#ifndef LLORCH_TESTS_PROTO_PEER_H
#define LLORCH_TESTS_PROTO_PEER_H

#include "proto/proto.h"

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#define PEER_MAX_FRAMES 64
#define PEER_MAX_REQS   16

struct peer_req {
    char id[16];
    char client_id[PROTO_MAX_ID_BYTES + 1];
    uint32_t total; /* frames the stream will have */
    bool cancelled;
    bool crash; /* ends with an error frame */
};

struct peer {
    char url[320];
    const char *key;       /* required key, or NULL */
    bool unready;          /* health says not ready */
    const char *cert_file; /* tls+tcp://: PEM with the certificate and its key */
    pthread_t thread;
    atomic_bool stop;
    bool running;
    nng_socket sock;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct peer_req reqs[PEER_MAX_REQS];
    int n_reqs;
    uint32_t released; /* frames of each request that exist so far (default: all) */
    int polls;
    int submits;
    struct proto_sampling last_sampling; /* of the last submit */
    uint32_t last_max_tokens;
    uint32_t last_n_stop;
    enum proto_priority last_priority;
    char last_prompt[64];
};

/* Sets up p for url (not yet listening). */
void peer_init(struct peer *p, const char *url);

/* Listens on p->url (a port 0 is rewritten with the port given) and serves in a thread. */
bool peer_start(struct peer *p);

/* Stops serving and closes the socket; the requests stay, for a peer_start() again. */
void peer_stop(struct peer *p);

void peer_destroy(struct peer *p);

/* Makes n frames of every request exist, waking long polls. */
void peer_release(struct peer *p, uint32_t n);

#endif
