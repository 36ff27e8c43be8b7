// Embedding lookup (gather) and its gradient (scatter-add), fp32 rows, int64 indices.
//
// Strategy: one thread per output element, flattened as (position, column) with the column
// fastest, so a warp reads and writes contiguous pieces of rows (coalesced for any D). The
// gradient has two variants:
//  * atomic: each element atomicAdds into dweight (zeroed by the launcher); fastest, but the
//    summation order of repeated indices varies from run to run.
//  * sorted-segment (deterministic): the launcher stable-sorts the indices (cupy.argsort), then the
//    thread at the first position of each run of equal indices sums that run's rows in sorted
//    order and writes the row once. Same bits every run; a very frequent index serialises its
//    run in one thread per column.
// Indices outside [0, V) are never dereferenced: gather writes NaN for such rows, the gradients
// skip them (the Python wrapper checks indices unless told not to).
//
// Launch (pyneural/cuda/embedding.py): block 256, grid min(ceil(B * D / 256), 32 * SMs).
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
