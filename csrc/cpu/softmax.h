// Row softmax, log-softmax and fused softmax cross-entropy (float32). See softmax.cpp.
#pragma once
#include <cstdint>

namespace pn {

// y = softmax(x) (or log_softmax) of each row of a (rows, cols) row-major array; y may be x.
void softmax_rows(const float* x, float* y, int64_t rows, int64_t cols);
void log_softmax_rows(const float* x, float* y, int64_t rows, int64_t cols);

// For logits (n, c) and labels in [0, c) (checked: std::invalid_argument otherwise, before any write):
// probs = softmax(logits), losses[i] = -(1-e) log p[i, y_i] - (e/c) sum_j log p[i, j].
// probs may be logits (in place).
void softmax_xent_forward(const float* logits, const int64_t* labels, float* losses, float* probs, int64_t n,
                          int64_t c, float label_smoothing);

// dlogits[i] = dlosses[i] * (probs[i] - ((1-e) onehot(y_i) + e/c)); dlogits may be probs.
void softmax_xent_backward(const float* probs, const int64_t* labels, const float* dlosses, float* dlogits,
                           int64_t n, int64_t c, float label_smoothing);

}  // namespace pn
