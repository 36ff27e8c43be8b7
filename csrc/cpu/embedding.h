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

 private:
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

}  // namespace pn
