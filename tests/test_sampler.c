/*
 * test_sampler.c: tests of the sampler (greedy ties, each filter on hand-made logits, frequencies
 * of seeded draws, the counter-based determinism a crash replay relies on, the repeat penalty) and
 * of the stop-string and UTF-8 holdback helpers (stop.h).
 */
#include "common/err.h"
#include "tests/harness.h"
#include "workerd/engine/sampler.h"
#include "workerd/engine/stop.h"

#include <math.h>
#include <string.h>

#define N_DRAWS 20000

/* Options with every filter off, temperature 1 and a fixed seed: tests switch on what they test. */
static struct sampler_options
plain_options(void)
{
    struct sampler_options o;

    sampler_options_default(&o);
    o.temp = 1.0f;
    o.top_k = 0;
    o.top_p = 1.0f;
    o.min_p = 0.0f;
    o.seed = 1234;
    return o;
}

/* Counts the ids drawn over N_DRAWS steps k = 0, 1, ... with the same logits. */
static int
count_draws(const struct sampler_options *o, const float *logits, size_t n_vocab, int *counts)
{
    struct sampler *s;
    char err[ERR_MSG_MAX];

    if (sampler_new(&s, o, n_vocab, err) != ERR_OK)
        return -1;
    memset(counts, 0, n_vocab * sizeof(*counts));
    for (int i = 0; i < N_DRAWS; i++) {
        int32_t id = sampler_next(s, logits);

        if (id < 0 || (size_t)id >= n_vocab) {
            sampler_free(s);
            return -1;
        }
        counts[id]++;
    }
    sampler_free(s);
    return 0;
}

/* True when count/N_DRAWS is within 5 standard deviations of p (binomial). */
static bool
freq_near(int count, double p)
{
    double sd = sqrt(p * (1.0 - p) / N_DRAWS);

    return fabs((double)count / N_DRAWS - p) <= 5.0 * sd + 1e-9;
}

static void
test_defaults_are_llama_cpp(void)
{
    struct sampler_options o;

    sampler_options_default(&o);
    CHECK(o.temp == 0.8f && o.top_k == 40 && o.top_p == 0.95f && o.min_p == 0.05f);
    CHECK(o.repeat_penalty == 1.0f && o.repeat_last_n == 64 && o.seed == SAMPLER_SEED_RANDOM);
}

static void
test_random_seed_resolved_and_reported(void)
{
    struct sampler_options o;
    struct sampler *s;
    char err[ERR_MSG_MAX];

    sampler_options_default(&o);
    CHECK(sampler_new(&s, &o, 8, err) == ERR_OK);
    CHECK(sampler_get_options(s)->seed != SAMPLER_SEED_RANDOM);
    CHECK(sampler_get_options(s)->seed < (1ull << 32));
    sampler_free(s);
}

static void
test_options_checked(void)
{
    struct sampler_options o = plain_options();
    struct sampler *s = (struct sampler *)&o;
    char err[ERR_MSG_MAX];

    o.top_p = 1.5f;
    CHECK(sampler_options_check(&o, err) == ERR_BAD_REQUEST);
    CHECKF(strstr(err, "top_p") != NULL, "%s", err);
    o = plain_options();
    o.temp = -1.0f;
    CHECK(sampler_options_check(&o, err) == ERR_BAD_REQUEST && strstr(err, "temp") != NULL);
    o = plain_options();
    o.temp = NAN;
    CHECK(sampler_options_check(&o, err) == ERR_BAD_REQUEST);
    o = plain_options();
    o.min_p = -0.1f;
    CHECK(sampler_options_check(&o, err) == ERR_BAD_REQUEST && strstr(err, "min_p") != NULL);
    o = plain_options();
    o.top_k = -3;
    CHECK(sampler_options_check(&o, err) == ERR_BAD_REQUEST && strstr(err, "top_k") != NULL);
    o = plain_options();
    o.repeat_penalty = 0.0f;
    CHECK(sampler_options_check(&o, err) == ERR_BAD_REQUEST);
    o = plain_options();
    o.repeat_last_n = -1;
    CHECK(sampler_new(&s, &o, 8, err) == ERR_BAD_REQUEST && s == NULL);
    CHECK(strstr(err, "repeat_last_n") != NULL);
    o = plain_options();
    CHECK(sampler_new(&s, &o, 0, err) == ERR_BAD_REQUEST && s == NULL);
    CHECK(sampler_options_check(&o, err) == ERR_OK);
}

static void
test_greedy_argmax_lowest_id_on_ties(void)
{
    struct sampler_options o = plain_options();
    struct sampler *s;
    char err[ERR_MSG_MAX];
    float logits[8] = {0.5f, 2.0f, -1.0f, 3.0f, 1.0f, 3.0f, NAN, 3.0f};
    float all_inf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};

    o.temp = 0.0f;
    o.top_k = 1; /* filters do not matter to greedy */
    CHECK(sampler_new(&s, &o, 8, err) == ERR_OK);
    for (int i = 0; i < 5; i++)
        CHECK(sampler_next(s, logits) == 3);
    logits[3] = 2.5f;
    CHECK(sampler_next(s, logits) == 5);
    logits[6] = 100.0f;
    CHECK(sampler_next(s, logits) == 6);
    CHECK(sampler_count(s) == 7);
    sampler_free(s);
    CHECK(sampler_new(&s, &o, 4, err) == ERR_OK);
    CHECK(sampler_next(s, all_inf) == 0);
    sampler_free(s);
}

static void
test_uniform_draws_spread(void)
{
    int bins[10] = {0};
    int same = 0;

    for (uint64_t k = 0; k < 100000; k++) {
        double u = sampler_uniform(42, k);

        if (!(u >= 0.0 && u < 1.0))
            CHECKF(0, "u(42, %llu) = %g", (unsigned long long)k, u);
        bins[(int)(u * 10)]++;
        if (sampler_uniform(43, k) == u)
            same++;
    }
    /* 10000 expected per bin, sd ~95. */
    for (int b = 0; b < 10; b++)
        CHECKF(bins[b] > 9500 && bins[b] < 10500, "bin %d: %d", b, bins[b]);
    CHECKF(same < 5, "seeds 42 and 43 agree on %d draws", same);
    /* Lag-1 correlation of consecutive k stays near zero. */
    double sxy = 0, sx = 0;
    for (uint64_t k = 0; k < 100000; k++) {
        double a = sampler_uniform(7, k) - 0.5, b = sampler_uniform(7, k + 1) - 0.5;

        sxy += a * b;
        sx += a * a;
    }
    CHECKF(fabs(sxy / sx) < 0.02, "lag-1 correlation %g", sxy / sx);
}

static void
test_same_seed_and_k_same_draw(void)
{
    CHECK(sampler_uniform(1, 5) == sampler_uniform(1, 5));
    CHECK(sampler_uniform(1, 5) != sampler_uniform(1, 6));
    CHECK(sampler_uniform(1, 5) != sampler_uniform(2, 5));
    CHECK(sampler_uniform(0, 0) != sampler_uniform(0, 1));
}

static void
test_temperature_frequencies(void)
{
    struct sampler_options o = plain_options();
    float logits[2] = {0.0f, logf(3.0f)};
    int counts[2];

    CHECK(count_draws(&o, logits, 2, counts) == 0);
    CHECKF(freq_near(counts[1], 0.75), "T=1: %d of %d", counts[1], N_DRAWS);
    o.temp = 2.0f; /* p1 = sqrt(3) / (1 + sqrt(3)) */
    CHECK(count_draws(&o, logits, 2, counts) == 0);
    CHECKF(freq_near(counts[1], sqrt(3.0) / (1.0 + sqrt(3.0))), "T=2: %d", counts[1]);
    o.temp = 0.25f; /* p1 = 81 / 82 */
    CHECK(count_draws(&o, logits, 2, counts) == 0);
    CHECKF(freq_near(counts[1], 81.0 / 82.0), "T=0.25: %d", counts[1]);
    /* Far apart logits, the highest not first: no overflow, the top one always wins. */
    float far[3] = {-800.0f, 0.0f, -900.0f};
    int counts3[3];
    o.temp = 1.0f;
    CHECK(count_draws(&o, far, 3, counts3) == 0);
    CHECK(counts3[1] == N_DRAWS);
}

static void
test_top_k(void)
{
    struct sampler_options o = plain_options();
    float logits[10];
    int counts[10];
    double z;

    for (int i = 0; i < 10; i++)
        logits[i] = (float)(i % 5);
    /* ids 4 and 9 share the top logit 4, 3 and 8 the next: top-3 keeps 4, 9 and 3 (lower id). */
    o.top_k = 3;
    CHECK(count_draws(&o, logits, 10, counts) == 0);
    CHECKF(counts[0] + counts[1] + counts[2] + counts[5] + counts[6] + counts[7] + counts[8] == 0,
           "outside the top 3: %d %d", counts[8], counts[2]);
    z = 2 * exp(4.0) + exp(3.0);
    CHECKF(freq_near(counts[4], exp(4.0) / z), "id 4: %d", counts[4]);
    CHECKF(freq_near(counts[9], exp(4.0) / z), "id 9: %d", counts[9]);
    CHECKF(freq_near(counts[3], exp(3.0) / z), "id 3: %d", counts[3]);
    o.top_k = 1;
    CHECK(count_draws(&o, logits, 10, counts) == 0);
    CHECK(counts[4] == N_DRAWS);
    o.top_k = 100; /* more than the vocabulary: off */
    CHECK(count_draws(&o, logits, 10, counts) == 0);
    CHECK(counts[0] > 0 && counts[5] > 0);
}

static void
test_top_p(void)
{
    struct sampler_options o = plain_options();
    float logits[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    int counts[4];

    o.top_p = 0.75f; /* 0.5 < 0.75 <= 0.8: ids 1 and 3 */
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[0] == 0 && counts[2] == 0);
    CHECKF(freq_near(counts[1], 0.5 / 0.8), "id 1: %d", counts[1]);
    o.top_p = 0.9f; /* 0.8 < 0.9 <= 0.95: ids 1, 3, 0 */
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[2] == 0 && counts[0] > 0);
    CHECKF(freq_near(counts[0], 0.15 / 0.95), "id 0: %d", counts[0]);
    /* Top-p normalizes over what top-k left: 0.8 of 0.95 is 0.842, enough for 0.83 with top-k 3,
     * while over the whole vocabulary 0.8 is not. */
    o.top_p = 0.83f;
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[0] > 0 && counts[2] == 0);
    o.top_k = 3;
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[0] == 0 && counts[2] == 0);
    CHECKF(freq_near(counts[3], 0.3 / 0.8), "id 3: %d", counts[3]);
    o.top_k = 0;
    o.top_p = 0.0f; /* keeps the most likely */
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[1] == N_DRAWS);
    o.top_p = 1.0f;
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECKF(freq_near(counts[2], 0.05), "id 2: %d", counts[2]);
}

static void
test_min_p(void)
{
    struct sampler_options o = plain_options();
    float logits[4] = {logf(0.15f), logf(0.5f), logf(0.05f), logf(0.3f)};
    int counts[4];

    o.min_p = 0.2f; /* p >= 0.1 stays: ids 1, 3, 0 */
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[2] == 0);
    CHECKF(freq_near(counts[3], 0.3 / 0.95), "id 3: %d", counts[3]);
    o.min_p = 0.7f; /* p >= 0.35: id 1 only */
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[1] == N_DRAWS);
    /* min-p works on the untempered distribution: a high temperature does not widen it. */
    o.temp = 5.0f;
    CHECK(count_draws(&o, logits, 4, counts) == 0);
    CHECK(counts[1] == N_DRAWS);
}

static void
test_filters_chain_in_order(void)
{
    struct sampler_options o = plain_options();
    float logits[6] = {1.0f, 5.0f, 4.0f, 4.9f, 0.0f, 3.0f};
    int counts[6];

    /* top-k 4 keeps {1, 3, 2, 5}; min-p 0.3 then drops 5 (3 < 5 + ln 0.3 = 3.796). */
    o.top_k = 4;
    o.min_p = 0.3f;
    CHECK(count_draws(&o, logits, 6, counts) == 0);
    CHECK(counts[0] == 0 && counts[4] == 0 && counts[5] == 0);
    double z = exp(5.0) + exp(4.9) + exp(4.0);
    CHECKF(freq_near(counts[2], exp(4.0) / z), "id 2: %d", counts[2]);
}

static void
test_repeat_penalty_arithmetic(void)
{
    struct sampler_options o = plain_options();
    struct sampler *s;
    char err[ERR_MSG_MAX];
    int32_t prompt[3] = {1, 1, 2};

    o.temp = 0.0f;
    o.repeat_penalty = 2.0f;
    o.repeat_last_n = 3;
    CHECK(sampler_new(&s, &o, 4, err) == ERR_OK);
    sampler_restore(s, prompt, 3, NULL, 0);
    /* id 1: 2.0 / 2 = 1.0 (once, though twice in the window) beats id 0's 0.6. */
    CHECK(sampler_next(s, (float[]){0.6f, 2.0f, -9.0f, -9.0f}) == 1);
    /* window now 1, 2, 1: id 1: 1.8 / 2 = 0.9 loses to id 0's 0.95. */
    CHECK(sampler_next(s, (float[]){0.95f, 1.8f, -9.0f, -9.0f}) == 0);
    /* window 2, 1, 0: id 2: -1.0 * 2 = -2.0 loses to id 3's -1.5; id 0 and 1 penalized too. */
    CHECK(sampler_next(s, (float[]){-3.0f, -3.0f, -1.0f, -1.5f}) == 3);
    /* window 1, 0, 3: id 2 left it: -1.0 stays and wins over id 3's -1.5 * 2. */
    CHECK(sampler_next(s, (float[]){-3.0f, -3.0f, -1.0f, -1.5f}) == 2);
    sampler_free(s);

    /* With a penalty of 1 (off) nothing changes. */
    o.repeat_penalty = 1.0f;
    CHECK(sampler_new(&s, &o, 4, err) == ERR_OK);
    sampler_restore(s, prompt, 3, NULL, 0);
    CHECK(sampler_next(s, (float[]){0.95f, 1.8f, -9.0f, -9.0f}) == 1);
    sampler_free(s);
}

/* Logits for a toy "model": a function of the previous token, so the run feeds back on itself. */
static void
toy_logits(int32_t prev, float *logits, size_t n)
{
    for (size_t i = 0; i < n; i++)
        logits[i] = (float)(((i * 7 + (size_t)prev * 13) % 17)) * 0.35f - 2.0f;
}

#define TOY_VOCAB 50
#define TOY_STEPS 300

static int
toy_run(const struct sampler_options *o, const int32_t *prompt, size_t n_prompt, int32_t *gen,
        size_t n_gen, size_t from)
{
    struct sampler *s;
    char err[ERR_MSG_MAX];
    float logits[TOY_VOCAB];

    if (sampler_new(&s, o, TOY_VOCAB, err) != ERR_OK)
        return -1;
    sampler_restore(s, prompt, n_prompt, gen, from);
    for (size_t k = from; k < n_gen; k++) {
        toy_logits(k == 0 ? prompt[n_prompt - 1] : gen[k - 1], logits, TOY_VOCAB);
        gen[k] = sampler_next(s, logits);
    }
    sampler_free(s);
    return 0;
}

static void
test_replay_from_rebuilt_state(void)
{
    struct sampler_options o = plain_options();
    int32_t prompt[5] = {1, 7, 9, 7, 30};
    int32_t ref[TOY_STEPS], again[TOY_STEPS], replay[TOY_STEPS], other[TOY_STEPS];
    size_t cuts[] = {0, 1, 2, 63, 64, 65, 150, TOY_STEPS - 1};

    o.top_k = 20;
    o.temp = 1.3f;
    o.repeat_penalty = 1.3f;
    o.seed = 987654321;
    CHECK(toy_run(&o, prompt, 5, ref, TOY_STEPS, 0) == 0);
    CHECK(toy_run(&o, prompt, 5, again, TOY_STEPS, 0) == 0);
    CHECK(memcmp(ref, again, sizeof(ref)) == 0);
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        memcpy(replay, ref, cuts[c] * sizeof(int32_t));
        memset(replay + cuts[c], 0xff, (TOY_STEPS - cuts[c]) * sizeof(int32_t));
        CHECK(toy_run(&o, prompt, 5, replay, TOY_STEPS, cuts[c]) == 0);
        CHECKF(memcmp(ref, replay, sizeof(ref)) == 0, "replay from token %zu differs", cuts[c]);
    }
    /* The run really is random: another seed goes elsewhere, and several ids occur. */
    o.seed = 987654322;
    CHECK(toy_run(&o, prompt, 5, other, TOY_STEPS, 0) == 0);
    CHECK(memcmp(ref, other, sizeof(ref)) != 0);
    int distinct = 0;
    for (int id = 0; id < TOY_VOCAB; id++)
        for (int k = 0; k < TOY_STEPS; k++)
            if (ref[k] == id) {
                distinct++;
                break;
            }
    CHECKF(distinct >= 5, "only %d distinct ids", distinct);
}

static void
test_stop_string_split_across_tokens(void)
{
    const char *stops[] = {"</end>", "STOP"};
    bool hit;
    const char *t;

    /* Token by token: "Hi <", "/e", "nd> more". */
    t = "Hi <";
    CHECK(stop_scan(stops, 2, t, strlen(t), 0, &hit) == 3 && !hit);
    t = "Hi </e";
    CHECK(stop_scan(stops, 2, t, strlen(t), 3, &hit) == 3 && !hit);
    t = "Hi </end> more";
    CHECK(stop_scan(stops, 2, t, strlen(t), 3, &hit) == 3 && hit);
    /* A held-back start that turns out not to be a stop string is released. */
    t = "Hi </b";
    CHECK(stop_scan(stops, 2, t, strlen(t), 3, &hit) == 6 && !hit);
    /* The earliest of several stop strings wins. */
    t = "xx STOP yy </end>";
    CHECK(stop_scan(stops, 2, t, strlen(t), 0, &hit) == 3 && hit);
    /* The longest possible start is held: "ST" and also a stop string ending a longer text. */
    t = "fast ST";
    CHECK(stop_scan(stops, 2, t, strlen(t), 0, &hit) == 5 && !hit);
    /* Released text is not scanned again. */
    t = "STOP now";
    CHECK(stop_scan(stops, 2, t, strlen(t), 4, &hit) == 8 && !hit);
    /* A stop string may end exactly at the end, or be the whole text. */
    t = "STOP";
    CHECK(stop_scan(stops, 2, t, 4, 0, &hit) == 0 && hit);
    /* Nothing to hold with no stop strings or an empty one. */
    const char *empty[] = {""};
    CHECK(stop_scan(empty, 1, "abc", 3, 0, &hit) == 3 && !hit);
    CHECK(stop_scan(NULL, 0, "abc", 3, 1, &hit) == 3 && !hit);
}

static void
test_stop_overlapping_prefix(void)
{
    const char *stops[] = {"aab"};
    bool hit;

    CHECK(stop_scan(stops, 1, "xaa", 3, 0, &hit) == 1 && !hit);
    CHECK(stop_scan(stops, 1, "xaaa", 4, 0, &hit) == 2 && !hit);
    CHECK(stop_scan(stops, 1, "xaaab", 5, 1, &hit) == 2 && hit);
    /* The tail is only searched after `from`. */
    CHECK(stop_scan(stops, 1, "xaa", 3, 3, &hit) == 3 && !hit);
}

static void
test_utf8_pending(void)
{
    CHECK(stop_utf8_pending("abc", 3) == 0);
    CHECK(stop_utf8_pending("", 0) == 0);
    CHECK(stop_utf8_pending("ab\xC3", 3) == 1);
    CHECK(stop_utf8_pending("ab\xC3\xA9", 4) == 0);
    CHECK(stop_utf8_pending("\xE6\x97", 2) == 2);
    CHECK(stop_utf8_pending("\xE6\x97\xA5", 3) == 0);
    CHECK(stop_utf8_pending("x\xF0\x9F\x98", 4) == 3);
    CHECK(stop_utf8_pending("x\xF0\x9F\x98\x80", 5) == 0);
    CHECK(stop_utf8_pending("\x80", 1) == 0);
    CHECK(stop_utf8_pending("\xFF", 1) == 0);
    CHECK(stop_utf8_pending("\xC0", 1) == 0);
    CHECK(stop_utf8_pending("\xC3\xA9\x80", 3) == 0);
}

int
main(int argc, char **argv)
{
    static const struct test tests[] = {
        TEST(test_defaults_are_llama_cpp),
        TEST(test_random_seed_resolved_and_reported),
        TEST(test_options_checked),
        TEST(test_greedy_argmax_lowest_id_on_ties),
        TEST(test_uniform_draws_spread),
        TEST(test_same_seed_and_k_same_draw),
        TEST(test_temperature_frequencies),
        TEST(test_top_k),
        TEST(test_top_p),
        TEST(test_min_p),
        TEST(test_filters_chain_in_order),
        TEST(test_repeat_penalty_arithmetic),
        TEST(test_replay_from_rebuilt_state),
        TEST(test_stop_string_split_across_tokens),
        TEST(test_stop_overlapping_prefix),
        TEST(test_utf8_pending),
        {0},
    };
    return harness_run(tests, argc, argv);
}
