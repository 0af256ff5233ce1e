/*
 * fuzz_model.c: libFuzzer target for the model loader and the forward pass. Each input is parsed
 * with gguf_open_buffer(); when it opens, model_load() checks its hyperparameters and tensors, and
 * when that succeeds a context of two 4-position sequences evaluates two tokens (first and last id
 * of the vocabulary) with every logit in sequence 0 and one in sequence 1, then one decode step
 * of both (at positions 2 and 1). Any read outside the input or the buffers
 * shows under ASan; errors are fine. Seeds: tests/fuzz-seeds/fuzz_model/ (tiny gguf-synth models).
 */
#include "common/err.h"
#include "workerd/engine/gguf.h"
#include "workerd/engine/model.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[ERR_MSG_MAX];
    struct gguf *g;
    struct model *m;
    struct context *c;

    if (gguf_open_buffer(&g, data, size, err) != ERR_OK)
        return 0;
    if (model_load(&m, g, err) == ERR_OK) {
        uint32_t n_vocab = model_config(m)->n_vocab;
        int32_t ids[3] = {0, (int32_t)n_vocab - 1, (int32_t)(n_vocab / 2)};
        struct context_row rows[3] = {{1, ids[1], false}, {0, ids[2], true}, {1, ids[0], true}};
        float *logits = malloc(2 * (size_t)n_vocab * sizeof(float));

        if (logits != NULL && context_new(&c, m, 2, 4, 1, err) == ERR_OK) {
            if (context_eval(c, 0, ids, 2, true, logits, err) == ERR_OK &&
                context_eval(c, 1, ids + 2, 1, false, logits, err) == ERR_OK)
                context_batch(c, rows, 3, logits, err);
            context_free(c);
        }
        free(logits);
        model_free(m);
    }
    gguf_close(g);
    return 0;
}
