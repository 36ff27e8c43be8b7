// Embedding lookup (gather) and its gradient (scatter-add), fp32 rows, int64 indices; the row-sparse
// gradient (grouped rows), the pairwise dot of gathered rows and its grouped backward, and the
// row-sparse SGD / Adam steps. CPU twins: csrc/cpu/embedding.cpp and embedding_update.cpp.
//
// Strategy: one thread per output element, flattened as (position, column) with the column
// fastest, so a warp reads and writes contiguous pieces of rows (coalesced for any D). The
// dense gradient has two variants:
//  * atomic: each element atomicAdds into dweight (zeroed by the launcher); fastest, but the
//    summation order of repeated indices varies from run to run.
//  * sorted-segment (deterministic): the launcher stable-sorts the indices (cupy.argsort), then the
//    thread at the first position of each run of equal indices sums that run's rows in sorted
//    order and writes the row once. Same bits every run; a very frequent index serialises its
//    run in one thread per column.
// Row-sparse gradient (deterministic, the plan of the CPU's RowGroups built on the device): the
// launcher stable-sorts the indices, pn_embedding_run_heads marks where each run of equal indices
// starts, a prefix sum (cupy.cumsum) numbers the runs, and pn_embedding_run_bounds writes each run's
// row and first position (rows ascending, positions ascending inside a run). One thread per (run,
// column) then sums the run's dout rows in position order (pn_embedding_segment_rows; the pairwise
// dot's backward, pn_embedding_dot_backward_rows, sums gy-weighted rows of the other table). The
// order of every addition is fixed, so the result is the same bits on every run, and the same bits
// as the CPU kernels: both add in position order, first row first, with each operation rounded on
// its own (no FMA contraction: see add_rn / mul_rn below).
// Optimizer steps: one thread per (touched row, column) element, each a fused read-modify-write of
// the parameter and its state; the rows are distinct (a coalesced gradient), so no two threads
// write the same element. The arithmetic is that of csrc/cpu/embedding_update.cpp, operation for
// operation, rounded the same way: the device step gives the CPU step's bits.
// Indices outside [0, V) are never dereferenced: gather and dot write NaN for such rows, the
// gradients and steps skip them (the Python wrappers check indices unless told not to).
//
// Launch (pyneural/cuda/embedding.py): block 256, grid min(ceil(work / 256), 32 * SMs), with work the
// number of output elements (B * D, U * D, U * (D + 1), or n for the per-position kernels).
#include "common.cuh"

#define PN_FOR_EACH(i, n)                                                                      \
  for (long long i = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<long long>(gridDim.x) * blockDim.x)

extern "C" __global__ void pn_embedding_gather(const float* weight, const long long* idx, float* out, long long B,
                                               long long V, long long D) {
  PN_FOR_EACH(e, B * D) {
    const long long r = e / D, d = e - r * D, row = idx[r];
    out[e] = (row >= 0 && row < V) ? weight[row * D + d] : pn::nan();
  }
}

extern "C" __global__ void pn_embedding_scatter_add(const float* dout, const long long* idx, float* dweight,
                                                    long long B, long long V, long long D) {
  PN_FOR_EACH(e, B * D) {
    const long long r = e / D, d = e - r * D, row = idx[r];
    if (row >= 0 && row < V) atomicAdd(dweight + row * D + d, dout[e]);
  }
}

// sorted_idx = idx[order] with order a stable argsort of idx. Rows of dweight no index names are
// left as they are (the launcher zeroes dweight first).
extern "C" __global__ void pn_embedding_segment_sum(const float* dout, const long long* sorted_idx,
                                                    const long long* order, float* dweight, long long B, long long V,
                                                    long long D) {
  PN_FOR_EACH(e, B * D) {
    const long long s = e / D, d = e - s * D, row = sorted_idx[s];
    if (s > 0 && sorted_idx[s - 1] == row) continue;  // not the first of its run
    if (row < 0 || row >= V) continue;
    float sum = 0.f;
    for (long long t = s; t < B && sorted_idx[t] == row; ++t) sum += dout[order[t] * D + d];
    dweight[row * D + d] = sum;
  }
}

// ---- exactly rounded arithmetic -------------------------------------------------------------
// nvcc and NVRTC contract a * b + c into one FMA by default (one rounding instead of two), which
// would change the bits against the CPU kernels (x86-64 baseline: no FMA). The _rn intrinsics are
// never contracted. The emulator compiles this file for x86-64 without FMA, so plain operators
// round the same way there.
namespace pn {
#ifdef PN_CUDA_EMULATOR
__device__ __forceinline__ float add_rn(float a, float b) { return a + b; }
__device__ __forceinline__ float mul_rn(float a, float b) { return a * b; }
__device__ __forceinline__ float div_rn(float a, float b) { return a / b; }
__device__ __forceinline__ float sqrt_rn(float a) { return std::sqrt(a); }
#else
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float sqrt_rn(float a) { return __fsqrt_rn(a); }
#endif
}  // namespace pn

// ---- row-sparse gradient: group positions by row ----------------------------------------------

// head[s] = 1 where a run of equal values of sorted_idx starts, else 0.
extern "C" __global__ void pn_embedding_run_heads(const long long* sorted_idx, long long* head, long long n) {
  PN_FOR_EACH(s, n) head[s] = (s == 0 || sorted_idx[s - 1] != sorted_idx[s]) ? 1 : 0;
}

// runs = inclusive prefix sum of head (run u covers the positions whose runs[s] == u + 1). Writes
// rows[u] (the run's index value) and starts[u] (its first sorted position) for the U runs, and
// starts[U] = n; *skip_slot = u for the run whose value is skip_row (left as it is if none is).
extern "C" __global__ void pn_embedding_run_bounds(const long long* sorted_idx, const long long* runs,
                                                   long long* rows, long long* starts, long long* skip_slot,
                                                   long long n, long long skip_row) {
  PN_FOR_EACH(s, n) {
    const long long u = runs[s] - 1;
    if (s == 0 || sorted_idx[s - 1] != sorted_idx[s]) {
      rows[u] = sorted_idx[s];
      starts[u] = s;
      if (sorted_idx[s] == skip_row) *skip_slot = u;
    }
    if (s == n - 1) starts[u + 1] = n;
  }
}

// grads[u, d] = sum of dout[order[t], d] over the run's positions t in starts[u] .. starts[u+1] - 1,
// first position first (the CPU's RowGroups::sum, addition for addition).
extern "C" __global__ void pn_embedding_segment_rows(const float* dout, const long long* order,
                                                     const long long* starts, float* grads, long long U,
                                                     long long D) {
  PN_FOR_EACH(e, U * D) {
    const long long u = e / D, d = e - u * D, t1 = starts[u + 1];
    long long t = starts[u];
    float sum = dout[order[t] * D + d];
    for (++t; t < t1; ++t) sum = pn::add_rn(sum, dout[order[t] * D + d]);
    grads[e] = sum;
  }
}

// counts[r] += the number of positions i with idx[i] == r (counts zeroed by the launcher). Integer
// atomics (CUDA has them for unsigned long long only; counts stay far below 2^63): the result does
// not depend on their order. Indices outside [0, V) are not counted.
extern "C" __global__ void pn_embedding_count_rows(const long long* idx, long long* counts, long long n, long long V) {
  PN_FOR_EACH(i, n) {
    const long long row = idx[i];
    if (row >= 0 && row < V) atomicAdd(reinterpret_cast<unsigned long long*>(counts + row), 1ull);
  }
}

// ---- pairwise dot of gathered rows ------------------------------------------------------------

// out[i] = offset + bias_a[ia[i]] + bias_b[ib[i]] + <a[ia[i]], b[ib[i]]> (bias_a, bias_b, offset may
// be null; offset is a one-element device array, so the host never reads it). One thread per pair:
// the two rows are random gathers (a D-float row per thread, whole sectors), nothing to coalesce.
extern "C" __global__ void pn_embedding_dot_forward(const float* a, const long long* ia, const float* b,
                                                    const long long* ib, const float* bias_a, const float* bias_b,
                                                    const float* offset, float* out, long long n, long long Va,
                                                    long long Vb, long long D) {
  PN_FOR_EACH(i, n) {
    const long long ra = ia[i], rb = ib[i];
    if (ra < 0 || ra >= Va || rb < 0 || rb >= Vb) {
      out[i] = pn::nan();
      continue;
    }
    const float* pa = a + ra * D;
    const float* pb = b + rb * D;
    float dot = 0.f;
    for (long long d = 0; d < D; ++d) dot += pa[d] * pb[d];
    float s = offset != nullptr ? offset[0] : 0.f;
    if (bias_a != nullptr) s += bias_a[ra];
    if (bias_b != nullptr) s += bias_b[rb];
    out[i] = s + dot;
  }
}

// One side of the dot's backward over grouped rows (runs as above: order, starts, rows). With
// cols = (grads ? D : 0) + (bias_grads ? 1 : 0), thread (u, c) computes, in position order,
//   c < D:  grads[u, c] = sum_t gy[i_t] * other[other_idx[i_t], c]  (+ decay * count_u * self_table[rows[u], c])
//   else:   bias_grads[u] = sum_t gy[i_t]                            (+ decay * count_u * self_bias[rows[u]])
// with i_t = order[t], count_u the run's length: the CPU's RowGroups::weighted_sum, rounded the same
// way. An other_idx outside [0, Vo) contributes NaN (the wrapper has checked the indices).
extern "C" __global__ void pn_embedding_dot_backward_rows(const float* gy, const long long* order,
                                                          const long long* starts, const long long* rows,
                                                          const float* other, const long long* other_idx,
                                                          long long Vo, const float* self_table,
                                                          const float* self_bias, float* grads, float* bias_grads,
                                                          long long U, long long D, float decay) {
  const long long cols = (grads != nullptr ? D : 0) + (bias_grads != nullptr ? 1 : 0);
  PN_FOR_EACH(e, U * cols) {
    const long long u = e / cols, c = e - u * cols, t0 = starts[u], t1 = starts[u + 1];
    const float scale = pn::mul_rn(decay, static_cast<float>(t1 - t0));
    if (grads != nullptr && c < D) {
      float g = 0.f;
      for (long long t = t0; t < t1; ++t) {
        const long long i = order[t], r = other_idx[i];
        const float src = (r >= 0 && r < Vo) ? other[r * D + c] : pn::nan();
        g = pn::add_rn(g, pn::mul_rn(gy[i], src));
      }
      if (decay != 0.f && self_table != nullptr) g = pn::add_rn(g, pn::mul_rn(scale, self_table[rows[u] * D + c]));
      grads[u * D + c] = g;
    } else {
      float s = 0.f;
      for (long long t = t0; t < t1; ++t) s = pn::add_rn(s, gy[order[t]]);
      if (decay != 0.f && self_bias != nullptr) s = pn::add_rn(s, pn::mul_rn(scale, self_bias[rows[u]]));
      bias_grads[u] = s;
    }
  }
}

// ---- row-sparse optimizer steps ---------------------------------------------------------------

// SGD on the U distinct rows of param (V, D); buf (V, D) is the momentum table or null:
//   g = grad + wd p; buf = momentum buf + (dampened ? keep g : g); g = nesterov ? g + momentum buf : buf;
//   p += neg_lr g   -- csrc/cpu/embedding_update.cpp's sparse_sgd_update, rounded the same way.
extern "C" __global__ void pn_sparse_sgd_update(float* param, const long long* rows, const float* grads, float* buf,
                                                long long U, long long V, long long D, float neg_lr,
                                                float weight_decay, float momentum, float keep, int dampened,
                                                int nesterov) {
  PN_FOR_EACH(e, U * D) {
    const long long u = e / D, d = e - u * D, row = rows[u];
    if (row < 0 || row >= V) continue;
    const long long at = row * D + d;
    const float p = param[at];
    float g = grads[e];
    if (weight_decay != 0.f) g = pn::add_rn(pn::mul_rn(p, weight_decay), g);
    if (buf != nullptr) {
      const float b = pn::add_rn(pn::mul_rn(buf[at], momentum), dampened ? pn::mul_rn(g, keep) : g);
      buf[at] = b;
      g = nesterov ? pn::add_rn(pn::mul_rn(b, momentum), g) : b;
    }
    param[at] = pn::add_rn(p, pn::mul_rn(g, neg_lr));
  }
}

// Lazy Adam on the U distinct rows: shrink p (decoupled decay) or add l2 p to the gradient, then
//   m = beta1 m + one_b1 g; v = beta2 v + one_b2 g^2; p += -step_size m / (sqrt(v) / sqrt_bc2 + eps)
// with step_size = lr / (1 - beta1^t), sqrt_bc2 = sqrt(1 - beta2^t) from the host's step count --
// csrc/cpu/embedding_update.cpp's sparse_adam_update, rounded the same way.
extern "C" __global__ void pn_sparse_adam_update(float* param, const long long* rows, const float* grads, float* m,
                                                 float* v, long long U, long long V, long long D, float step_size,
                                                 float sqrt_bc2, float beta1, float beta2, float one_b1,
                                                 float one_b2, float eps, float l2, float shrink, int decoupled) {
  PN_FOR_EACH(e, U * D) {
    const long long u = e / D, d = e - u * D, row = rows[u];
    if (row < 0 || row >= V) continue;
    const long long at = row * D + d;
    float p = param[at];
    if (decoupled) p = pn::mul_rn(p, shrink);
    const float g = l2 != 0.f ? pn::add_rn(pn::mul_rn(p, l2), grads[e]) : grads[e];
    const float mi = pn::add_rn(pn::mul_rn(m[at], beta1), pn::mul_rn(g, one_b1));
    const float vi = pn::add_rn(pn::mul_rn(v[at], beta2), pn::mul_rn(pn::mul_rn(g, g), one_b2));
    m[at] = mi;
    v[at] = vi;
    const float step = pn::div_rn(mi, pn::add_rn(pn::div_rn(pn::sqrt_rn(vi), sqrt_bc2), eps));
    param[at] = pn::add_rn(p, pn::mul_rn(-step_size, step));
  }
}
