// Embedding lookup (row gather) and its backward, dense and row-sparse.
//
// Forward: each OpenMP thread copies a contiguous block of the n requested rows.
//
// Backward: the gradient of row r is the sum of dout[i] over the positions i with indices[i] == r.
// Scattering with atomics, or with per-thread copies of dweight, would make the bits depend on the
// thread count (float addition is not associative) and np.add.at is unbuffered and slow, so the
// backward first builds a plan (RowGroups) and then sums whole rows:
//   1. Group positions by row with a counting sort: histogram of the indices, a prefix sum over
//      the V rows (which also lists the distinct rows, ascending), then one stable scatter of the
//      positions (int32). O(n + V) serial work on small integers: 0.5 ms for n = 10^5, V = 160k,
//      against 2 ms for step 2 on one thread. When V > 32 n a comparison sort of the positions
//      replaces it so the cost does not grow with V.
//   2. Sum each group into its output row, adding the dout rows in position order. The threads
//      split the n positions evenly and each takes the groups that start in its share, so every
//      row is summed by exactly one thread in one fixed order: the result is the same bits for any
//      thread count, and a heavy row does not leave one thread with all the work of a block.
//      The inner loop is a contiguous D-wide add (vectorised). Reading the dout rows in group order
//      is a gather of whole rows (>= 128 bytes for D >= 32), which runs near memory speed: software
//      prefetching of the next rows measured no faster.
// The sparse backward returns (rows, grads) for the U touched rows only; the dense one zeroes the
// untouched rows of dweight and sums the groups straight into their rows.
//
// Pairwise dot of gathered rows (the score of matrix factorisation, out[i] = <A[ia[i]], B[ib[i]]> plus
// optional per-row biases): forward is one parallel pass over the pairs reading two rows each, with
// nothing materialised. Its backward for table A is the same plan over ia with a weighted sum,
// gA[u] = sum_i gy[i] B[ib[i]] (RowGroups::weighted_sum), again one thread per row in position order.
// No run-time ISA dispatch: every step here moves memory; none is limited by arithmetic.
#include "cpu/embedding.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <numeric>

#include "common/check.h"
#include "cpu/parallel_team.h"

namespace pn {

namespace {

constexpr int64_t kParallelMin = 1 << 15;  // elements; below this one thread is quicker
// Rows are fetched from random places in tables far larger than L2, so every row read is a cache
// miss; asking for the rows this many steps ahead keeps several misses in flight at once.
constexpr int64_t kPrefetch = 8;

inline void prefetch_row(const float* row, int64_t D) {
  for (int64_t d = 0; d < D; d += 16) __builtin_prefetch(row + d);
}

void throw_bad_index(const char* fn, const int64_t* indices, int64_t n, int64_t V) {
  for (int64_t i = 0; i < n; ++i)
    PN_CHECK(indices[i] >= 0 && indices[i] < V, fn, ": indices[", i, "] (flat) = ", indices[i],
             " is out of range for ", V, " embeddings (expected 0 <= index < ", V, ")");
}

}  // namespace

void embedding_forward(const float* weight, int64_t V, int64_t D, const int64_t* indices, int64_t n, float* out) {
  int64_t bad = 0;  // an exception cannot leave the parallel region: count, then report
#pragma omp parallel for num_threads(elements_team(n * D, kParallelMin)) schedule(static) reduction(+ : bad)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = indices[i];
    if (r >= 0 && r < V)
      std::memcpy(out + i * D, weight + r * D, sizeof(float) * D);
    else
      ++bad;
  }
  if (bad) throw_bad_index("embedding_forward", indices, n, V);
}

RowGroups::RowGroups(const int64_t* indices, int64_t n, int64_t num_rows) {
  PN_CHECK(n <= INT32_MAX, "embedding_backward: ", n, " indices in one call; at most 2^31 - 1 are supported");
  order_.resize(n);
  // The counting sort touches all V counters; past this ratio sorting the n positions is cheaper.
  if (num_rows <= 32 * n)
    group_by_counting(indices, num_rows);
  else {
    throw_bad_index("embedding_backward", indices, n, num_rows);
    group_by_sorting(indices);
  }
}

void RowGroups::group_by_counting(const int64_t* indices, int64_t num_rows) {
  const int64_t n = num_indices();
  // Counts, then each row's next free slot in order_. V entries of scratch, kept per thread across
  // calls: allocating it afresh cost a quarter of the plan's time in page faults.
  static thread_local std::vector<Position> scratch;
  if (static_cast<int64_t>(scratch.size()) < num_rows) scratch.resize(num_rows);
  Position* next = scratch.data();
  std::fill(next, next + num_rows, Position{0});
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = indices[i];
    if (r < 0 || r >= num_rows) throw_bad_index("embedding_backward", indices, n, num_rows);
    ++next[r];
  }
  // The prefix sum lists the touched rows as it goes. Branch-free (write, then advance only past a
  // touched row): whether a row is touched is a coin flip the predictor would miss half the time.
  const int64_t most = std::min(n, num_rows);
  rows_.resize(most + 1);
  offsets_.resize(most + 1);
  Position start = 0;
  int64_t u = 0;
  for (int64_t r = 0; r < num_rows; ++r) {
    const Position count = next[r];
    rows_[u] = r;
    offsets_[u] = start;
    next[r] = start;
    start += count;
    u += count != 0;
  }
  rows_.resize(u);
  offsets_.resize(u + 1);
  offsets_[u] = static_cast<Position>(n);
  for (int64_t i = 0; i < n; ++i) order_[next[indices[i]]++] = static_cast<Position>(i);
}

void RowGroups::group_by_sorting(const int64_t* indices) {
  const int64_t n = num_indices();
  std::iota(order_.begin(), order_.end(), Position{0});
  std::sort(order_.begin(), order_.end(), [indices](Position a, Position b) {
    return indices[a] < indices[b] || (indices[a] == indices[b] && a < b);
  });
  for (int64_t k = 0; k < n; ++k) {
    const int64_t r = indices[order_[k]];
    if (rows_.empty() || rows_.back() != r) {
      rows_.push_back(r);
      offsets_.push_back(static_cast<Position>(k));
    }
  }
  offsets_.push_back(static_cast<Position>(n));
}

void RowGroups::thread_groups(int64_t t, int64_t T, int64_t* u_begin, int64_t* u_end) const {
  const int64_t n = num_indices(), U = num_groups();
  auto first_group_from = [&](int64_t position) {
    return std::lower_bound(offsets_.begin(), offsets_.begin() + U, position) - offsets_.begin();
  };
  *u_begin = first_group_from(t * n / T);
  *u_end = first_group_from((t + 1) * n / T);
}

void RowGroups::sum(const float* dout, int64_t D, float* grads, bool at_rows) const {
  const int64_t n = num_indices();
  const Position* order = order_.data();
#pragma omp parallel num_threads(elements_team(n * D, kParallelMin))
  {
    int64_t u_begin, u_end;
    thread_groups(omp_get_thread_num(), omp_get_num_threads(), &u_begin, &u_end);
    for (int64_t u = u_begin; u < u_end; ++u) {
      float* g = grads + (at_rows ? rows_[u] : u) * D;
      const int64_t k0 = offsets_[u], k1 = offsets_[u + 1];
      std::memcpy(g, dout + order[k0] * D, sizeof(float) * D);
      for (int64_t k = k0 + 1; k < k1; ++k) {
        if (k + kPrefetch < n) prefetch_row(dout + order[k + kPrefetch] * D, D);
        const float* src = dout + order[k] * D;
#pragma omp simd
        for (int64_t d = 0; d < D; ++d) g[d] += src[d];
      }
    }
  }
}

void RowGroups::weighted_sum(const float* w, const float* table, const int64_t* other, int64_t D, float* grads,
                             float* wsum, float decay, const float* self_table, const float* self_bias) const {
  const int64_t n = num_indices();
  const Position* order = order_.data();
#pragma omp parallel num_threads(elements_team(n * (D + 1), kParallelMin))
  {
    int64_t u_begin, u_end;
    thread_groups(omp_get_thread_num(), omp_get_num_threads(), &u_begin, &u_end);
    for (int64_t u = u_begin; u < u_end; ++u) {
      const int64_t k0 = offsets_[u], k1 = offsets_[u + 1];
      if (table) {
        float* g = grads + u * D;
        std::fill(g, g + D, 0.0f);
        for (int64_t k = k0; k < k1; ++k) {
          if (k + kPrefetch < n) prefetch_row(table + other[order[k + kPrefetch]] * D, D);
          const int64_t i = order[k];
          const float wi = w[i];
          const float* src = table + other[i] * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) g[d] += wi * src[d];
        }
        if (decay != 0.0f && self_table) {
          const float c = decay * static_cast<float>(k1 - k0);
          const float* own = self_table + rows_[u] * D;
#pragma omp simd
          for (int64_t d = 0; d < D; ++d) g[d] += c * own[d];
        }
      }
      if (wsum) {
        float s = 0.0f;
        for (int64_t k = k0; k < k1; ++k) s += w[order[k]];
        if (decay != 0.0f && self_bias) s += decay * static_cast<float>(k1 - k0) * self_bias[rows_[u]];
        wsum[u] = s;
      }
    }
  }
}

void embedding_backward_dense(const float* dout, const int64_t* indices, int64_t n, int64_t V, int64_t D,
                              float* dweight) {
  const RowGroups groups(indices, n, V);
  const std::vector<int64_t>& rows = groups.rows();
  const int64_t U = groups.num_groups();
  // Zero the untouched rows: the gap before each touched row, and the tail after the last.
#pragma omp parallel for num_threads(elements_team(V * D, kParallelMin)) schedule(static)
  for (int64_t u = 0; u <= U; ++u) {
    const int64_t lo = u == 0 ? 0 : rows[u - 1] + 1, hi = u == U ? V : rows[u];
    if (hi > lo) std::memset(dweight + lo * D, 0, sizeof(float) * (hi - lo) * D);
  }
  groups.sum(dout, D, dweight, /*at_rows=*/true);
}

void embedding_dot_forward(const float* a, int64_t Va, const int64_t* ia, const float* b, int64_t Vb,
                           const int64_t* ib, int64_t n, int64_t D, const float* bias_a, const float* bias_b,
                           float offset, float* out) {
  int64_t bad = 0;
#pragma omp parallel for num_threads(elements_team(n * D, kParallelMin)) schedule(static) reduction(+ : bad)
  for (int64_t i = 0; i < n; ++i) {
    const int64_t ra = ia[i], rb = ib[i];
    if (ra < 0 || ra >= Va || rb < 0 || rb >= Vb) {
      ++bad;
      continue;
    }
    if (i + kPrefetch < n) {
      const int64_t na = ia[i + kPrefetch], nb = ib[i + kPrefetch];
      if (na >= 0 && na < Va && nb >= 0 && nb < Vb) {
        prefetch_row(a + na * D, D);
        prefetch_row(b + nb * D, D);
        if (bias_a) __builtin_prefetch(bias_a + na);
        if (bias_b) __builtin_prefetch(bias_b + nb);
      }
    }
    const float* pa = a + ra * D;
    const float* pb = b + rb * D;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int64_t d = 0; d < D; ++d) dot += pa[d] * pb[d];
    float s = offset;
    if (bias_a) s += bias_a[ra];
    if (bias_b) s += bias_b[rb];
    out[i] = s + dot;
  }
  if (bad) {
    throw_bad_index("embedding_dot_forward (first table)", ia, n, Va);
    throw_bad_index("embedding_dot_forward (second table)", ib, n, Vb);
  }
}

}  // namespace pn
