// Embedding lookup and its dense and row-sparse backward (float32 rows, int64 indices). See embedding.cpp.
#pragma once
#include <cstdint>
#include <vector>

namespace pn {

// out[i] = weight[indices[i]] for i < n, rows of D floats. Throws std::invalid_argument if an index
// is outside [0, V) (the rows of the bad indices are left unwritten).
void embedding_forward(const float* weight, int64_t V, int64_t D, const int64_t* indices, int64_t n, float* out);

// The deterministic plan of the embedding backward: the positions 0..n-1 of `indices` grouped by
// the row they name, rows ascending, positions ascending inside a group.
class RowGroups {
 public:
  // Throws std::invalid_argument naming the first index outside [0, num_rows), or if n >= 2^31.
  RowGroups(const int64_t* indices, int64_t n, int64_t num_rows);

  int64_t num_indices() const { return static_cast<int64_t>(order_.size()); }
  int64_t num_groups() const { return static_cast<int64_t>(rows_.size()); }
  const std::vector<int64_t>& rows() const { return rows_; }  // the distinct rows, ascending

  // grads[u] = sum over the positions i of group u of dout[i] (rows of D floats), added in
  // position order by one thread per group: the same bits for any thread count.
  // dout is (num_indices, D); grads is (num_groups, D), or with at_rows (num_rows, D) and group u
  // written to grads[rows()[u]] (other rows untouched).
  void sum(const float* dout, int64_t D, float* grads, bool at_rows) const;

  // The backward of a dot product of gathered rows, grouped by this side's rows: for group u,
  //   grads[u] = sum_i w[i] * table[other[i]]  (rows of D floats; skipped when table is null)
  //   wsum[u]  = sum_i w[i]                    (skipped when wsum is null)
  // over the positions i of group u, in position order by one thread per group (deterministic).
  // `other` must index rows of `table` (checked by the caller).
  // With decay != 0 each group also adds decay * count_u * self_table[row_u] to grads[u] and
  // decay * count_u * self_bias[row_u] to wsum[u] (count_u: the group's size): the gradient of an L2
  // penalty paid once per use of a row (self_table/self_bias may be null when unused).
  void weighted_sum(const float* w, const float* table, const int64_t* other, int64_t D, float* grads, float* wsum,
                    float decay = 0.0f, const float* self_table = nullptr, const float* self_bias = nullptr) const;

 private:
  // The groups [u_begin, u_end) that thread t of T sums: those starting in its even share of positions.
  void thread_groups(int64_t t, int64_t T, int64_t* u_begin, int64_t* u_end) const;
  void group_by_counting(const int64_t* indices, int64_t num_rows);
  void group_by_sorting(const int64_t* indices);

  // Positions are int32 (a batch is far below 2^31 indices; checked): half the memory to fill and
  // to stream through in the sum.
  using Position = int32_t;
  std::vector<Position> order_;    // positions, grouped by row
  std::vector<Position> offsets_;  // group u is order_[offsets_[u] : offsets_[u + 1]]
  std::vector<int64_t> rows_;     // row of group u
};

// dweight (V, D) = 0, then dweight[indices[i]] += dout[i], deterministically (through RowGroups).
void embedding_backward_dense(const float* dout, const int64_t* indices, int64_t n, int64_t V, int64_t D,
                              float* dweight);

// out[i] = offset + bias_a[ia[i]] + bias_b[ib[i]] + <a[ia[i]], b[ib[i]]> for i < n (rows of D floats;
// bias_a/bias_b may be null). The scores of a biased matrix factorisation in one pass, without
// materialising the gathered rows. Throws std::invalid_argument naming a bad index.
void embedding_dot_forward(const float* a, int64_t Va, const int64_t* ia, const float* b, int64_t Vb,
                           const int64_t* ib, int64_t n, int64_t D, const float* bias_a, const float* bias_b,
                           float offset, float* out);

// Row-sparse optimizer steps (embedding_update.cpp). `rows` are U distinct rows of the (V, D)
// parameter (checked by the caller) and grads (U, D) their gradients; only those rows change.
// SGD, as torch.optim.SGD on the touched rows: g = grad + wd p; buf = momentum buf + (1 - dampening) g
// (buf null when momentum == 0); g = nesterov ? g + momentum buf : buf; p -= lr g.
void sparse_sgd_update(float* param, int64_t D, const int64_t* rows, int64_t U, const float* grads, double lr,
                       double weight_decay, double momentum, double dampening, bool nesterov, float* buf);
// Lazy Adam on the touched rows with the parameter's global step t (bias corrections bc1 = 1 - b1^t,
// bc2 = 1 - b2^t): L2 (g += wd p) or decoupled (p *= 1 - lr wd) decay, then torch.optim.Adam's step.
void sparse_adam_update(float* param, int64_t D, const int64_t* rows, int64_t U, const float* grads, float* exp_avg,
                        float* exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
                        bool decoupled, double bc1, double bc2);

}  // namespace pn
