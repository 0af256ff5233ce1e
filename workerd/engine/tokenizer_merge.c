/*
 * tokenizer_merge.c: the pair-merging loop SentencePiece and BPE share (tokenizer_impl.h). The
 * text is cut into UTF-8 characters by their first byte; every adjacent pair the caller scores is
 * queued in a max-heap (higher score first, then the leftmost); the best pair merges, its new
 * neighbours are queued, and heap entries made stale by an earlier merge are recognised by their
 * recorded length and skipped (a symbol only grows by taking its right neighbour, so equal lengths
 * mean the same bytes). Not here: what a score is (token scores, merge ranks) or what the final
 * symbols become.
 */
#include "workerd/engine/tokenizer_impl.h"

#include "common/err.h"

#include <stdlib.h>

/* True when a is merged before b: higher score first, then the leftmost. */
static bool
pair_before(const struct tok_pair *a, const struct tok_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void
heap_push(struct tok_merge *m, struct tok_pair p)
{
    size_t i = m->n_heap++;

    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_before(&p, &m->heap[up]))
            break;
        m->heap[i] = m->heap[up];
        i = up;
    }
    m->heap[i] = p;
}

static struct tok_pair
heap_pop(struct tok_merge *m)
{
    struct tok_pair top = m->heap[0];
    struct tok_pair last = m->heap[--m->n_heap];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m->n_heap)
            break;
        if (c + 1 < m->n_heap && pair_before(&m->heap[c + 1], &m->heap[c]))
            c++;
        if (!pair_before(&m->heap[c], &last))
            break;
        m->heap[i] = m->heap[c];
        i = c;
    }
    if (m->n_heap > 0)
        m->heap[i] = last;
    return top;
}

/* Queues the pair (left, right) when the caller scores it. */
static void
try_pair(struct tok_merge *m, const struct tokenizer *t, const char *text, tok_score_fn score,
         int32_t left, int32_t right)
{
    float s;

    if (left < 0 || right < 0)
        return;
    const struct tok_sym *l = &m->syms[left], *r = &m->syms[right];
    if (score(t, text, l->off, l->n, r->n, &s))
        heap_push(m, (struct tok_pair){left, right, s, l->n + r->n});
}

/* Bytes of the UTF-8 character a first byte announces (1 for stray continuation bytes). */
static uint32_t
char_len(unsigned char b)
{
    static const uint8_t len_by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len_by_high_nibble[b >> 4];
}

int
tok_merge_run(struct tok_merge *m, const struct tokenizer *t, const char *text, size_t len,
              tok_score_fn score, char *err)
{
    size_t n = 0;

    for (size_t off = 0; off < len; n++)
        off += char_len((unsigned char)text[off]);
    /* n symbols give at most n - 1 initial pairs and 2 more per merge (n - 1 merges) */
    if (n > m->cap) {
        void *p = realloc(m->syms, n * (sizeof(*m->syms) + 3 * sizeof(*m->heap)));
        if (p == NULL)
            return err_set(err, ERR_NOMEM, "tokenize: no memory for %zu characters", n);
        m->syms = p;
        m->cap = n;
    }
    m->heap = (struct tok_pair *)(m->syms + m->cap);
    m->n_syms = n;
    m->n_heap = 0;
    for (size_t i = 0, off = 0; i < n; i++) {
        uint32_t c = char_len((unsigned char)text[off]);
        if (c > len - off)
            c = (uint32_t)(len - off);
        m->syms[i] =
            (struct tok_sym){(int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, (uint32_t)off, c};
        off += c;
    }

    for (size_t i = 1; i < n; i++)
        try_pair(m, t, text, score, (int32_t)i - 1, (int32_t)i);
    while (m->n_heap > 0) {
        struct tok_pair p = heap_pop(m);
        struct tok_sym *l = &m->syms[p.left], *r = &m->syms[p.right];

        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue; /* one side was merged since this pair was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            m->syms[r->next].prev = p.left;
        try_pair(m, t, text, score, l->prev, p.left);
        try_pair(m, t, text, score, p.left, l->next);
    }
    return ERR_OK;
}

void
tok_merge_free(struct tok_merge *m)
{
    free(m->syms);
    m->syms = NULL;
    m->heap = NULL;
    m->cap = 0;
}
