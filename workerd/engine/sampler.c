/*
 * sampler.c: the sampler (sampler.h). One step: copy the logits into id-indexed candidates, apply
 * the repeat penalty, then either take the argmax (greedy) or order the candidates (a heap keeps
 * the top k; with top-k off only the ids min-p keeps are sorted, and none when nothing is left to
 * cut), cut them with top-p and min-p, and draw from the tempered softmax with the counter-based
 * uniform of (seed, k). The candidate order is total (logit, then id), so the outcome never
 * depends on the sort algorithm.
 */
#include "workerd/engine/sampler.h"

#include "common/clock.h"
#include "common/err.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

struct cand {
    float logit;
    int32_t id;
};

struct sampler {
    struct sampler_options opt;
    size_t n_vocab;
    struct cand *cand; /* n_vocab: scratch for one step */
    uint32_t *mark;    /* n_vocab: stamp of the step that last penalized an id */
    uint32_t stamp;
    int32_t *window; /* ring of opt.repeat_last_n recent ids */
    size_t n_window; /* ids in the ring (<= repeat_last_n) */
    size_t head;     /* next slot to write */
    uint64_t k;      /* index of the next generated token */
};

void
sampler_options_default(struct sampler_options *o)
{
    o->temp = 0.8f;
    o->top_k = 40;
    o->top_p = 0.95f;
    o->min_p = 0.05f;
    o->repeat_penalty = 1.0f;
    o->repeat_last_n = 64;
    o->seed = SAMPLER_SEED_RANDOM;
}

int
sampler_options_check(const struct sampler_options *o, char *err)
{
    if (!isfinite(o->temp) || o->temp < 0.0f)
        return err_set(err, ERR_BAD_REQUEST, "temp must be a finite number >= 0, got %g",
                       (double)o->temp);
    if (o->top_k < 0)
        return err_set(err, ERR_BAD_REQUEST, "top_k must be >= 0 (0 = off), got %d", o->top_k);
    if (!(o->top_p >= 0.0f && o->top_p <= 1.0f))
        return err_set(err, ERR_BAD_REQUEST, "top_p must be in [0, 1], got %g", (double)o->top_p);
    if (!(o->min_p >= 0.0f && o->min_p <= 1.0f))
        return err_set(err, ERR_BAD_REQUEST, "min_p must be in [0, 1], got %g", (double)o->min_p);
    if (!isfinite(o->repeat_penalty) || o->repeat_penalty <= 0.0f)
        return err_set(err, ERR_BAD_REQUEST, "repeat_penalty must be a finite number > 0, got %g",
                       (double)o->repeat_penalty);
    if (o->repeat_last_n < 0 || o->repeat_last_n > SAMPLER_MAX_LAST_N)
        return err_set(err, ERR_BAD_REQUEST, "repeat_last_n must be in [0, %d], got %d",
                       SAMPLER_MAX_LAST_N, o->repeat_last_n);
    return ERR_OK;
}

uint64_t
sampler_seed_random(void)
{
    uint32_t v;

    if (getrandom(&v, sizeof(v), GRND_NONBLOCK) != (ssize_t)sizeof(v))
        v = (uint32_t)(clock_now_ns() ^ (clock_now_ns() >> 32));
    return v;
}

int
sampler_new(struct sampler **out, const struct sampler_options *o, size_t n_vocab, char *err)
{
    struct sampler *s;
    int rc;

    *out = NULL;
    if ((rc = sampler_options_check(o, err)) != ERR_OK)
        return rc;
    if (n_vocab == 0 || n_vocab > INT32_MAX)
        return err_set(err, ERR_BAD_REQUEST, "sampler: vocabulary size %zu out of range", n_vocab);
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto nomem;
    s->opt = *o;
    if (s->opt.seed == SAMPLER_SEED_RANDOM)
        s->opt.seed = sampler_seed_random();
    s->n_vocab = n_vocab;
    s->cand = malloc(n_vocab * sizeof(*s->cand));
    s->mark = calloc(n_vocab, sizeof(*s->mark));
    s->window = malloc((size_t)(o->repeat_last_n > 0 ? o->repeat_last_n : 1) * sizeof(int32_t));
    if (s->cand == NULL || s->mark == NULL || s->window == NULL)
        goto nomem;
    *out = s;
    return ERR_OK;

nomem:
    sampler_free(s);
    return err_set(err, ERR_NOMEM, "sampler: out of memory for a vocabulary of %zu", n_vocab);
}

void
sampler_free(struct sampler *s)
{
    if (s == NULL)
        return;
    free(s->cand);
    free(s->mark);
    free(s->window);
    free(s);
}

const struct sampler_options *
sampler_get_options(const struct sampler *s)
{
    return &s->opt;
}

uint64_t
sampler_count(const struct sampler *s)
{
    return s->k;
}

static void
window_push(struct sampler *s, int32_t id)
{
    size_t cap = (size_t)s->opt.repeat_last_n;

    if (cap == 0)
        return;
    s->window[s->head] = id;
    s->head = (s->head + 1) % cap;
    if (s->n_window < cap)
        s->n_window++;
}

void
sampler_restore(struct sampler *s, const int32_t *prompt, size_t n_prompt, const int32_t *gen,
                size_t n_gen)
{
    size_t cap = (size_t)s->opt.repeat_last_n;
    size_t skip;

    s->n_window = 0;
    s->head = 0;
    /* Only the last cap ids matter; pushing them in order leaves the ring as a full run would. */
    skip = n_prompt + n_gen > cap ? n_prompt + n_gen - cap : 0;
    for (size_t i = skip; i < n_prompt + n_gen; i++)
        window_push(s, i < n_prompt ? prompt[i] : gen[i - n_prompt]);
    s->k = n_gen;
}

/*
 * SplitMix64's output function (Steele, Lea, Flood 2014): a bijection of 64-bit words whose
 * output bits each depend on all input bits.
 */
static uint64_t
mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double
sampler_uniform(uint64_t seed, uint64_t k)
{
    /* Key the stream by the mixed seed, then mix in the counter: a keyed hash of (seed, k). */
    uint64_t h = mix64(mix64(seed ^ 0x6a09e667f3bcc909ull) + (k + 1) * 0x9e3779b97f4a7c15ull);

    return (double)(h >> 11) * 0x1.0p-53;
}

/* The total order of candidates: higher logit first, then lower id. */
static bool
cand_before(const struct cand *a, const struct cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int
cand_cmp(const void *pa, const void *pb)
{
    const struct cand *a = pa, *b = pb;

    if (a->logit != b->logit)
        return a->logit > b->logit ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Restores the heap property below i in a heap whose root is the candidate that sorts last. */
static void
heap_sift_down(struct cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, worst = i;

        if (l < n && cand_before(&h[worst], &h[l]))
            worst = l;
        if (r < n && cand_before(&h[worst], &h[r]))
            worst = r;
        if (worst == i)
            return;
        struct cand t = h[i];
        h[i] = h[worst];
        h[worst] = t;
        i = worst;
    }
}

/* Moves the k best of c[0..n) to c[0..k), in order. */
static void
select_top_k(struct cand *c, size_t n, size_t k)
{
    for (size_t i = k / 2; i-- > 0;)
        heap_sift_down(c, k, i);
    for (size_t i = k; i < n; i++) {
        if (cand_before(&c[i], &c[0])) {
            c[0] = c[i];
            heap_sift_down(c, k, 0);
        }
    }
    qsort(c, k, sizeof(*c), cand_cmp);
}

/* Divides positive logits of ids in the window by the penalty and multiplies the others, once
 * per distinct id. c is indexed by id. */
static void
apply_repeat_penalty(struct sampler *s, struct cand *c)
{
    float pen = s->opt.repeat_penalty;

    if (pen == 1.0f || s->n_window == 0)
        return;
    if (++s->stamp == 0) { /* the stamp wrapped: forget every old mark */
        memset(s->mark, 0, s->n_vocab * sizeof(*s->mark));
        s->stamp = 1;
    }
    for (size_t i = 0; i < s->n_window; i++) {
        int32_t id = s->window[i];

        if (id < 0 || (size_t)id >= s->n_vocab || s->mark[id] == s->stamp)
            continue;
        s->mark[id] = s->stamp;
        c[id].logit = c[id].logit > 0.0f ? c[id].logit / pen : c[id].logit * pen;
    }
}

/* Draws from the tempered softmax of the candidates c[0..n), whose highest logit is top, with
 * uniform u, walking them in their order. */
static int32_t
draw(const struct cand *c, size_t n, float top, float temp, double u)
{
    double sum = 0.0, target, acc = 0.0;

    if (isinf(top))
        return c[0].id; /* every logit is -inf: nothing to weigh */
    for (size_t i = 0; i < n; i++)
        sum += exp(((double)c[i].logit - top) / temp);
    target = u * sum;
    for (size_t i = 0; i < n; i++) {
        acc += exp(((double)c[i].logit - top) / temp);
        if (target < acc)
            return c[i].id;
    }
    return c[n - 1].id; /* rounding left target at the very end */
}

/* The softmax mass of c[0..n) relative to logit top: the sum of exp(logit - top), in order. */
static double
softmax_mass(const struct cand *c, size_t n, double top)
{
    double sum = 0.0;

    for (size_t i = 0; i < n; i++)
        sum += exp((double)c[i].logit - top);
    return sum;
}

/*
 * Keeps the smallest prefix of the sorted c[0..n) whose softmax mass reaches p of total (the mass
 * of every candidate top-p looks at, relative to c[0]'s logit); returns its size.
 */
static size_t
cut_top_p(const struct cand *c, size_t n, float p, double total)
{
    double acc = 0.0, top = c[0].logit;

    if (p >= 1.0f || isinf(top))
        return n;
    for (size_t i = 0; i < n; i++) {
        acc += exp((double)c[i].logit - top);
        if (acc >= (double)p * total)
            return i + 1;
    }
    return n;
}

/* Keeps the candidates with p >= min_p * p_max, i.e. logit >= top + log(min_p); at least one. */
static size_t
cut_min_p(const struct cand *c, size_t n, float min_p)
{
    float floor_logit;
    size_t m = 1;

    if (min_p <= 0.0f)
        return n;
    floor_logit = c[0].logit + logf(min_p);
    while (m < n && c[m].logit >= floor_logit)
        m++;
    return m;
}

/*
 * Moves the candidates min-p keeps (logit >= top + ln(min_p), top the highest logit) to the front
 * of c[0..n), in any order, and returns how many there are (all of them when min-p is off).
 */
static size_t
keep_min_p(struct cand *c, size_t n, float top, float min_p)
{
    float floor_logit = top + logf(min_p);
    size_t m = 0;

    if (min_p <= 0.0f || isinf(top))
        return n;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit >= floor_logit)
            c[m++] = c[i];
    return m;
}

/* The argmax of c[0..n), the lowest id on exact ties (c is indexed by id). */
static int32_t
argmax(const struct cand *c, size_t n)
{
    size_t best = 0;

    for (size_t i = 1; i < n; i++)
        if (c[i].logit > c[best].logit)
            best = i;
    return c[best].id;
}

/* Top-k, top-p, min-p, then the draw k of the tempered softmax; c is indexed by id on entry. */
static int32_t
sample_filtered(const struct sampler *s, struct cand *c, size_t n)
{
    const struct sampler_options *o = &s->opt;
    double u = sampler_uniform(o->seed, s->k), total = 0.0;
    size_t k = o->top_k > 0 && (size_t)o->top_k < n ? (size_t)o->top_k : n;

    if (k < n) {
        select_top_k(c, n, k);
        if (o->top_p < 1.0f)
            total = softmax_mass(c, k, c[0].logit);
    } else {
        /* Top-p and min-p each keep a prefix of the sorted candidates, so only the ids min-p
         * keeps need sorting; top-p still normalizes by the whole vocabulary's mass. */
        float top = c[0].logit;

        for (size_t i = 1; i < n; i++)
            top = c[i].logit > top ? c[i].logit : top;
        if (o->top_p < 1.0f)
            total = softmax_mass(c, n, top);
        k = keep_min_p(c, n, top, o->min_p);
        if (k == n && o->top_p >= 1.0f)
            return draw(c, n, top, o->temp, u); /* nothing to cut: no order needed */
        qsort(c, k, sizeof(*c), cand_cmp);
    }
    k = cut_top_p(c, k, o->top_p, total);
    k = cut_min_p(c, k, o->min_p);
    return draw(c, k, c[0].logit, o->temp, u);
}

int32_t
sampler_next(struct sampler *s, const float *logits)
{
    struct cand *c = s->cand;
    int32_t id;

    for (size_t i = 0; i < s->n_vocab; i++) {
        c[i].logit = isnan(logits[i]) ? -INFINITY : logits[i];
        c[i].id = (int32_t)i;
    }
    apply_repeat_penalty(s, c);
    id = s->opt.temp <= 0.0f ? argmax(c, s->n_vocab) : sample_filtered(s, c, s->n_vocab);
    window_push(s, id);
    s->k++;
    return id;
}
