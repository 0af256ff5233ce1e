/*
 * proto.h: the llorch wire format. Every NNG message is one msgpack map {"v": 1, "t": TYPE, ...}
 * carrying one message of one of two links: client <-> orchd (submit, poll for frames, cancel,
 * status, workers, health, and their replies) and orchd <-> workerd (probe, dispatch, cancel;
 * ready, heartbeat, tokens, done, error). docs/protocol.md describes every field and range. The
 * rest of the project sees only the plain C structs below and proto_encode()/proto_decode(): proto/
 * is the only code that includes msgpack.h. Decoding is strict (version, type, required fields,
 * types, ranges, lengths; unknown extra fields are ignored) and never trusts a length. Not here:
 * sockets (proto/client.h, orchd), scheduling, tokenizing.
 */
#ifndef LLORCH_PROTO_H
#define LLORCH_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROTO_VERSION 1

/* Limits, checked by the decoder (and so by the encoder, which decodes what it wrote). */
#define PROTO_MAX_MSG_BYTES    (4u << 20) /* whole message; NNG_OPT_RECVMAXSZ on every socket */
#define PROTO_MAX_PROMPT_BYTES (1u << 20) /* prompt, or each chat message's content */
#define PROTO_MAX_MESSAGES     256        /* chat messages in a submit */
#define PROTO_MAX_ROLE_BYTES   32
#define PROTO_MAX_TOKENS       8192  /* max_tokens range is [1, PROTO_MAX_TOKENS] */
#define PROTO_MAX_IDS          65536 /* token ids in one array (prompt, replay, a frame) */
#define PROTO_MAX_TOKEN_ID     0x7fffffff
#define PROTO_MAX_STOP         16  /* stop strings per request */
#define PROTO_MAX_STOP_BYTES   256 /* each stop string: 1..this many bytes */
#define PROTO_MAX_ID_BYTES     64  /* request ids and client request ids: 1..this many bytes */
#define PROTO_MAX_KEY_BYTES    256 /* tenant key */
#define PROTO_MAX_NAME_BYTES   64  /* tenant names */
#define PROTO_MAX_TEXT_BYTES   (1u << 20) /* text of a tokens frame */
#define PROTO_MAX_MSG_TEXT     1024       /* error and detail messages */
#define PROTO_MAX_FRAMES       4096       /* frames in one poll reply */
#define PROTO_MAX_WAIT_MS      60000      /* long-poll wait bound */
#define PROTO_MAX_RETRY_MS     3600000    /* busy retry-after */
#define PROTO_MAX_SLOTS        1024       /* worker slots in a workers reply */
#define PROTO_MAX_TENANTS      1024       /* tenants in a status reply */
#define PROTO_MAX_BATCH        256        /* requests listed per worker */
#define PROTO_MAX_CTX          (1u << 20) /* context length a worker may report */
#define PROTO_MAX_MS           1e9        /* any duration field, in milliseconds */

/* The seed value that means "pick one" (absent on the wire); orchd resolves it before dispatch. */
#define PROTO_SEED_RANDOM UINT64_MAX

enum proto_type {
    /* client -> orchd */
    PROTO_SUBMIT = 1,
    PROTO_POLL,
    PROTO_CANCEL, /* also orchd -> workerd */
    PROTO_STATUS,
    PROTO_WORKERS,
    PROTO_HEALTH,
    /* orchd -> client */
    PROTO_SUBMITTED,
    PROTO_FRAMES,
    PROTO_CANCEL_OK,
    PROTO_STATUS_INFO,
    PROTO_WORKERS_INFO,
    PROTO_HEALTH_INFO,
    PROTO_BUSY,
    PROTO_ERROR, /* also workerd -> orchd */
    /* orchd -> workerd */
    PROTO_PROBE,
    PROTO_DISPATCH,
    /* workerd -> orchd */
    PROTO_READY,
    PROTO_HEARTBEAT,
    PROTO_TOKENS,
    PROTO_DONE,
    PROTO__TYPE_COUNT
};

/* The links a decoder accepts messages of (a bit mask): a type sent on the wrong link is refused.
 */
enum proto_link {
    PROTO_LINK_CLIENT_REQ = 1, /* client -> orchd */
    PROTO_LINK_CLIENT_REP = 2, /* orchd -> client */
    PROTO_LINK_WORKER_CMD = 4, /* orchd -> workerd */
    PROTO_LINK_WORKER_EVT = 8, /* workerd -> orchd */
    PROTO_LINK_ANY = 15
};

enum proto_priority { PROTO_PRIO_INTERACTIVE = 0, PROTO_PRIO_BATCH = 1 };

enum proto_reason {
    PROTO_REASON_EOS = 0,
    PROTO_REASON_LENGTH,
    PROTO_REASON_STOP,
    PROTO_REASON_CANCELLED,
    PROTO_REASON_ERROR
};

enum proto_frame_kind {
    PROTO_FRAME_QUEUED = 0,
    PROTO_FRAME_STARTED,
    PROTO_FRAME_TOKENS,
    PROTO_FRAME_DONE,
    PROTO_FRAME_ERROR
};

enum proto_worker_state {
    PROTO_WSTATE_STARTING = 0, /* forked, not yet answered the probe */
    PROTO_WSTATE_READY,        /* idle, can take work */
    PROTO_WSTATE_BUSY,         /* running requests (maybe with room for more) */
    PROTO_WSTATE_BACKOFF,      /* dead, waiting to be restarted */
    PROTO_WSTATE_FATAL,        /* exited with the fatal code: not restarted (see detail) */
    PROTO_WSTATE_STOPPING,
    PROTO_WSTATE_STOPPED
};

/* Sampling options, the same fields and types as the engine's sampler_options. */
struct proto_sampling {
    float temperature;     /* [0, 100]; 0 = greedy; default 0.8 */
    int32_t top_k;         /* [0, 1048576]; 0 = off; default 40 */
    float top_p;           /* [0, 1]; default 0.95 */
    float min_p;           /* [0, 1]; default 0.05 */
    float repeat_penalty;  /* [0.01, 100]; 1 = off (default) */
    int32_t repeat_last_n; /* [0, 65536]; default 64 */
    uint64_t seed;         /* PROTO_SEED_RANDOM = absent (submit only; dispatch needs a seed) */
};

struct proto_chat_msg {
    char *role;    /* 1..PROTO_MAX_ROLE_BYTES, e.g. "system", "user", "assistant" */
    char *content; /* 0..PROTO_MAX_PROMPT_BYTES */
};

/* submit: exactly one of prompt and messages. Optional fields have the defaults noted. */
struct proto_submit {
    char *prompt;                    /* NULL when messages are given */
    struct proto_chat_msg *messages; /* n_messages in [1, PROTO_MAX_MESSAGES] when given */
    uint32_t n_messages;
    struct proto_sampling sampling; /* "opts" on the wire; each field optional */
    uint32_t max_tokens;            /* [1, PROTO_MAX_TOKENS], default 128 */
    char **stop;                    /* n_stop strings, each 1..PROTO_MAX_STOP_BYTES */
    uint32_t n_stop;
    enum proto_priority priority; /* default interactive */
    char *client_id;              /* optional (NULL); same client_id = same request (resend) */
};

/* poll: the frames of request id from sequence number `from` on, waiting up to wait_ms for one. */
struct proto_poll {
    char *id;
    uint64_t from;
    uint32_t wait_ms; /* [0, PROTO_MAX_WAIT_MS] */
};

/* cancel (both links) and cancel_ok: one request id. */
struct proto_ref {
    char *id;
};

struct proto_submitted {
    char *id;          /* the request id orchd assigned */
    uint32_t position; /* queue position at admission (0 = dispatched at once) */
};

struct proto_stats {
    uint32_t prompt_tokens;
    uint32_t gen_tokens;
    double queue_ms; /* each in [0, PROTO_MAX_MS]; workers send queue_ms 0 */
    double prefill_ms;
    double decode_ms;
};

/* One frame of a request's stream. Only the fields of its kind are meaningful. */
struct proto_frame {
    uint64_t seq;
    enum proto_frame_kind kind;
    uint32_t position; /* queued */
    int32_t *ids;      /* tokens: n_ids in [1, PROTO_MAX_IDS] */
    uint32_t n_ids;
    char *text; /* tokens: text_len bytes (may contain any byte), NUL-terminated */
    size_t text_len;
    enum proto_reason reason; /* done */
    struct proto_stats stats; /* done */
    int32_t code;             /* error: an enum err number */
    char *msg;                /* error */
};

struct proto_frames {
    char *id;
    struct proto_frame *frames; /* 0..PROTO_MAX_FRAMES, consecutive sequence numbers */
    uint32_t n_frames;
};

struct proto_tenant_info {
    char *name;
    uint32_t queued;
    uint32_t running;
    uint64_t gen_tokens; /* generated tokens served so far */
};

struct proto_status_info {
    uint32_t queued_interactive;
    uint32_t queued_batch;
    uint32_t queue_max;
    uint32_t running;
    uint32_t workers;
    uint32_t workers_ready;
    uint64_t completed;
    uint64_t failed;
    uint64_t uptime_ms;
    struct proto_tenant_info *tenants;
    uint32_t n_tenants;
};

struct proto_worker_info {
    uint32_t slot;
    int32_t pid; /* 0 when no process */
    enum proto_worker_state state;
    uint32_t restarts;
    char **requests; /* ids running on it */
    uint32_t n_requests;
    char *detail;       /* "" or why (fatal reason, last exit) */
    uint32_t in_flight; /* requests on it (every tenant's), [0, PROTO_MAX_BATCH] */
    uint32_t slots;     /* requests it takes at once (its ready's max_batch); 0 when not ready */
};

struct proto_workers_info {
    struct proto_worker_info *workers;
    uint32_t n_workers;
};

struct proto_health_info {
    bool ready; /* at least one worker ready and admitting */
    uint32_t workers_ready;
    char *detail;
};

struct proto_busy {
    uint32_t retry_after_ms; /* [0, PROTO_MAX_RETRY_MS] */
    char *msg;
};

struct proto_error {
    int32_t code; /* an enum err number, [1, 999] */
    char *msg;
    char *id; /* the request concerned, or NULL */
};

struct proto_probe {
    uint64_t nonce;
};

/* dispatch: run (or, after a crash, replay and continue) one request on a worker. */
struct proto_dispatch {
    char *id;
    int32_t *prompt_ids; /* [1, PROTO_MAX_IDS] */
    uint32_t n_prompt;
    int32_t *replay_ids; /* the ids already generated and streamed; [0, PROTO_MAX_IDS] */
    uint32_t n_replay;
    struct proto_sampling sampling; /* every field required, seed resolved */
    uint32_t max_tokens;
    char **stop;
    uint32_t n_stop;
};

struct proto_ready {
    uint64_t nonce; /* the probe's */
    int32_t pid;
    uint32_t n_ctx;
    uint32_t n_vocab;
    uint32_t max_batch; /* sequences it decodes at once, [1, PROTO_MAX_BATCH] */
};

struct proto_heartbeat {
    uint32_t active; /* sequences in progress */
    uint64_t tokens; /* tokens generated since start: the progress counter */
};

/* tokens from a worker: ids[0..n) are generated tokens index, index+1, ... of request id. */
struct proto_wtokens {
    char *id;
    uint32_t index;
    int32_t *ids;
    uint32_t n_ids;
    char *text;
    size_t text_len;
};

struct proto_wdone {
    char *id;
    enum proto_reason reason;
    struct proto_stats stats;
};

struct proto_arena;

/*
 * One message. To send, fill type and the member of u it names (pointers stay the caller's) and
 * call proto_encode(). proto_decode() fills one whose strings and arrays live in an arena it owns:
 * release it with proto_msg_free().
 */
struct proto_msg {
    enum proto_type type;
    char *key; /* tenant key on client requests; NULL when absent */
    union {
        struct proto_submit submit;
        struct proto_poll poll;
        struct proto_ref ref; /* cancel, cancel_ok */
        struct proto_submitted submitted;
        struct proto_frames frames;
        struct proto_status_info status;
        struct proto_workers_info workers;
        struct proto_health_info health;
        struct proto_busy busy;
        struct proto_error error;
        struct proto_probe probe;
        struct proto_dispatch dispatch;
        struct proto_ready ready;
        struct proto_heartbeat heartbeat;
        struct proto_wtokens tokens;
        struct proto_wdone done;
    } u;
    struct proto_arena *arena; /* set by proto_decode; NULL for caller-built messages */
};

/* Fills s with llama.cpp's defaults (temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, penalty
 * 1.0 over 64 tokens, seed PROTO_SEED_RANDOM). */
void proto_sampling_default(struct proto_sampling *s);

/* Zeroes m and sets a submit's defaults (sampling, max_tokens 128, interactive). */
void proto_submit_init(struct proto_msg *m);

/*
 * Encodes m into a malloc'ed buffer *out of *len bytes (the caller frees it with free()).
 * The result is checked by decoding it, so a message the decoder would refuse is refused here,
 * with the same error (ERR_BAD_REQUEST naming the field, ERR_PROTOCOL for a bad type) and
 * *out = NULL. ERR_NOMEM when memory runs out. Does not block.
 */
int proto_encode(const struct proto_msg *m, void **out, size_t *len, char *err);

/*
 * Decodes one message of buf[0..len) whose type is allowed on one of the links in `links`
 * (enum proto_link bits). On success *m owns copies of every string and array (free with
 * proto_msg_free). On failure *m is zeroed and nothing is held; returns ERR_PROTOCOL (not msgpack,
 * trailing bytes, not a map, unknown version, unknown type or a type of another link) or
 * ERR_BAD_REQUEST (a missing field, a wrong type, a value or length out of range: the message
 * names the field, "max_tokens must be in [1, 8192], got 0"), or ERR_NOMEM. Never reads past len.
 */
int proto_decode(const void *buf, size_t len, unsigned links, struct proto_msg *m, char *err);

/* Frees what proto_decode() allocated and zeroes m; a zeroed or caller-built m is left alone. */
void proto_msg_free(struct proto_msg *m);

/* Names on the wire ("submit", "interactive", "eos", "tokens", "ready"...); "?" if out of range. */
const char *proto_type_name(enum proto_type t);
const char *proto_priority_name(enum proto_priority p);
const char *proto_reason_name(enum proto_reason r);
const char *proto_frame_kind_name(enum proto_frame_kind k);
const char *proto_worker_state_name(enum proto_worker_state s);

#endif
