/*
 * tokenizer_spm.c: SentencePiece as llama.cpp applies it to a GGUF vocabulary, on one run of
 * plain text (tokenizer.c has already split out special tokens and decides the space prefix).
 *
 * The text (with a leading space when asked) has its spaces replaced by U+2581 and is cut into
 * UTF-8 characters (length from the first byte only, so invalid input still splits). Then,
 * repeatedly, the adjacent pair of symbols whose concatenation is a vocabulary token with the
 * highest score is merged (leftmost on equal scores), using a max-heap of candidate pairs and a
 * doubly linked list of symbols; heap entries made stale by an earlier merge are recognised by
 * their recorded length and skipped. Each final symbol that is not a token becomes byte tokens.
 * Scratch is sized by the text: the escaped text, and 64 bytes per character (symbols and heap).
 */
#include "workerd/engine/tokenizer_impl.h"

#include "common/err.h"

#include <stdlib.h>
#include <string.h>

struct spm_sym {
    int32_t prev, next; /* neighbours in the list, -1 at the ends */
    uint32_t off, n;    /* bytes of the escaped text this symbol covers; n = 0 once merged away */
};

struct spm_pair {
    int32_t left, right;
    float score;
    uint32_t size; /* left.n + right.n when the pair was found */
};

struct spm_heap {
    struct spm_pair *a;
    size_t n;
};

/* True when a is merged before b: higher score first, then the leftmost. */
static bool
spm_pair_before(const struct spm_pair *a, const struct spm_pair *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void
spm_heap_push(struct spm_heap *h, struct spm_pair p)
{
    size_t i = h->n++;

    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!spm_pair_before(&p, &h->a[up]))
            break;
        h->a[i] = h->a[up];
        i = up;
    }
    h->a[i] = p;
}

static struct spm_pair
spm_heap_pop(struct spm_heap *h)
{
    struct spm_pair top = h->a[0];
    struct spm_pair last = h->a[--h->n];
    size_t i = 0;

    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && spm_pair_before(&h->a[c + 1], &h->a[c]))
            c++;
        if (!spm_pair_before(&h->a[c], &last))
            break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0)
        h->a[i] = last;
    return top;
}

/* Queues the pair (left, right) when their concatenation is a vocabulary token. */
static void
spm_try_pair(const struct tokenizer *t, const char *text, const struct spm_sym *syms,
             struct spm_heap *h, int32_t left, int32_t right)
{
    if (left < 0 || right < 0)
        return;
    uint32_t size = syms[left].n + syms[right].n;
    if (size > t->max_token_len)
        return;
    int32_t id = tokenizer_lookup(t, text + syms[left].off, size);
    if (id < 0)
        return;
    spm_heap_push(h, (struct spm_pair){left, right, t->vocab[id].score, size});
}

/* Bytes of the UTF-8 character a first byte announces (1 for stray continuation bytes). */
static uint32_t
spm_char_len(unsigned char b)
{
    static const uint8_t len_by_high_nibble[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len_by_high_nibble[b >> 4];
}

int
tokenizer_spm_encode(const struct tokenizer *t, const char *text, size_t len, bool space_prefix,
                     struct tok_out *out, char *err)
{
    struct spm_sym *syms = NULL;
    struct spm_heap heap = {NULL, 0};
    char *esc;
    size_t n_esc = 0, n_syms = 0;
    int rc = ERR_OK;

    if (len == 0 && !space_prefix)
        return ERR_OK;
    esc = malloc(3 * (len + 1)); /* every byte a space, plus the prefix */
    if (esc == NULL)
        return err_set(err, ERR_NOMEM, "tokenize: no memory for %zu bytes of text", len);
    for (size_t i = 0; i < len + space_prefix; i++) {
        char c = space_prefix ? (i == 0 ? ' ' : text[i - 1]) : text[i];
        if (c == ' ') {
            memcpy(esc + n_esc, "\xe2\x96\x81", 3);
            n_esc += 3;
        } else {
            esc[n_esc++] = c;
        }
    }
    for (size_t off = 0; off < n_esc; n_syms++)
        off += spm_char_len((unsigned char)esc[off]);
    /* n symbols give at most n - 1 initial pairs and 2 more per merge (n - 1 merges) */
    syms = malloc(n_syms * (sizeof(*syms) + 3 * sizeof(*heap.a)));
    if (syms == NULL) {
        free(esc);
        return err_set(err, ERR_NOMEM, "tokenize: no memory for %zu characters", n_syms);
    }
    heap.a = (struct spm_pair *)(syms + n_syms);
    for (size_t i = 0, off = 0; i < n_syms; i++) {
        uint32_t n = spm_char_len((unsigned char)esc[off]);
        if (n > n_esc - off)
            n = (uint32_t)(n_esc - off);
        syms[i] = (struct spm_sym){(int32_t)i - 1, i + 1 < n_syms ? (int32_t)i + 1 : -1,
                                   (uint32_t)off, n};
        off += n;
    }

    for (size_t i = 1; i < n_syms; i++)
        spm_try_pair(t, esc, syms, &heap, (int32_t)i - 1, (int32_t)i);
    while (heap.n > 0) {
        struct spm_pair p = spm_heap_pop(&heap);
        struct spm_sym *l = &syms[p.left], *r = &syms[p.right];

        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue; /* one side was merged since this pair was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            syms[r->next].prev = p.left;
        spm_try_pair(t, esc, syms, &heap, l->prev, p.left);
        spm_try_pair(t, esc, syms, &heap, p.left, l->next);
    }

    for (int32_t i = n_syms > 0 ? 0 : -1; i >= 0; i = syms[i].next) {
        int32_t id = tokenizer_lookup(t, esc + syms[i].off, syms[i].n);
        if (id >= 0) {
            tok_out_push(out, id);
            continue;
        }
        for (uint32_t k = 0; k < syms[i].n; k++) {
            unsigned char b = (unsigned char)esc[syms[i].off + k];
            if (t->byte_token[b] < 0) {
                rc = err_set(err, ERR_UNSUPPORTED,
                             "tokenize: byte 0x%02X has no token and the vocabulary no unknown "
                             "token",
                             b);
                goto done;
            }
            tok_out_push(out, t->byte_token[b]);
        }
    }
done:
    free(syms);
    free(esc);
    return rc;
}
