// One source for the softmax row kernels, #included inside an anonymous namespace by each ISA's
// translation unit (softmax.cpp, softmax_avx2.cpp, softmax_avx512.cpp), so every path gets its own
// internal copy and no inline function compiled with AVX-512 flags can leak into another path.
// Needs <cmath>, <cstdint>, <cstring> (softmax_isa.h includes them).
//
// Rows are independent: OpenMP hands each thread a contiguous block of rows. Within a row every
// pass is a branch-free `omp simd` loop (max, exp-and-sum, scale), so the vector width is whatever
// the translation unit's flags allow. The exp is our own (below): libm's expf would stop the
// vectoriser, and after subtracting the row max every argument is <= 0, which keeps it simple.

// GCC may not if-convert (so not vectorise) a select whose arms hold floating-point operations
// that could raise an FP exception, and it splits the exp below into such arms when it sees the
// clamped argument is a constant. Nothing here reads the FP exception flags, so say so.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")

// Below this many elements one thread finishes before a team would have started.
constexpr int64_t kParallelMin = 1 << 14;

constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;              // 355/512: n * kLn2Hi is exact for |n| < 2^15
constexpr float kLn2Lo = -2.12194440054690583e-4f;  // ln 2 - kLn2Hi
constexpr float kRoundMagic = 12582912.f;           // 1.5 * 2^23: adding it rounds to an integer n
constexpr uint32_t kRoundMagicBits = 0x4B400000u;   // ... and leaves n in the low bits of the sum
constexpr float kExpUnderflow = -87.f;              // exp(-87) = 1.6e-38, the smallest result kept normal

// exp(x) for x <= 0, to about 1 ulp (max relative error 1e-7 measured on [-87, 0]).
// x = n ln2 + r with |r| <= ln2/2 (Cody-Waite: ln2 in two parts so n ln2 is exact); exp(r) is its
// Taylor series to r^7 (truncation below 2e-9 relative); 2^n is built directly as the float
// exponent bits, taking n from the bits of the rounding sum, so no float-to-int conversion.
// Results below exp(-87) flush to 0 (also -inf); NaN stays NaN, since it passes the clamp and the
// polynomial carries it.
inline float exp_nonpositive(float x) {
  const float t = x < kExpUnderflow ? kExpUnderflow : x;
  const float rounded = t * kLog2e + kRoundMagic;
  const float n = rounded - kRoundMagic;
  const float r = (t - n * kLn2Hi) - n * kLn2Lo;
  float p = 1.f / 5040.f;
  p = p * r + 1.f / 720.f;
  p = p * r + 1.f / 120.f;
  p = p * r + 1.f / 24.f;
  p = p * r + 1.f / 6.f;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  uint32_t bits;
  std::memcpy(&bits, &rounded, sizeof bits);
  bits = (bits - kRoundMagicBits + 127u) << 23;  // 2^n for n in [-126, 0]
  bits = x < kExpUnderflow ? 0u : bits;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float row_max(const float* x, int64_t cols) {
  float m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < cols; ++j) m = x[j] > m ? x[j] : m;
  return m;
}

// y = exp(x - m); returns the sum of y.
inline float exp_shifted(const float* x, float m, float* y, int64_t cols) {
  float s = 0.f;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < cols; ++j) {
    const float e = exp_nonpositive(x[j] - m);
    y[j] = e;
    s += e;
  }
  return s;
}

inline void scale_row(float* y, float a, int64_t cols) {
#pragma omp simd
  for (int64_t j = 0; j < cols; ++j) y[j] *= a;
}

void softmax(const float* x, float* y, int64_t rows, int64_t cols) {
#pragma omp parallel for num_threads(elements_team(rows * cols, kParallelMin)) schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const float* xi = x + i * cols;
    float* yi = y + i * cols;
    const float s = exp_shifted(xi, row_max(xi, cols), yi, cols);
    scale_row(yi, 1.f / s, cols);
  }
}

// log p = (x - m) - log(sum exp(x - m)): the exps are summed but never stored.
void log_softmax(const float* x, float* y, int64_t rows, int64_t cols) {
#pragma omp parallel for num_threads(elements_team(rows * cols, kParallelMin)) schedule(static)
  for (int64_t i = 0; i < rows; ++i) {
    const float* xi = x + i * cols;
    float* yi = y + i * cols;
    const float m = row_max(xi, cols);
    float s = 0.f;
#pragma omp simd reduction(+ : s)
    for (int64_t j = 0; j < cols; ++j) s += exp_nonpositive(xi[j] - m);
    const float shift = m + std::log(s);
#pragma omp simd
    for (int64_t j = 0; j < cols; ++j) yi[j] = xi[j] - shift;
  }
}

// With d = x - m and s = sum exp(d): -log p[y] = log s - d[y] and -mean_j log p[j] = log s - mean(d).
// Both stay differences of O(1) numbers, so logits of +-1e4 lose nothing to cancellation.
void xent_forward(const float* logits, const int64_t* labels, float* losses, float* probs, int64_t n, int64_t c,
                  float label_smoothing) {
  const float e = label_smoothing;
#pragma omp parallel for num_threads(elements_team(n * c, kParallelMin)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = logits + i * c;
    float* pi = probs + i * c;
    const float m = row_max(xi, c);
    const float target_d = xi[labels[i]] - m;  // read before probs (possibly the same row) is written
    float s = 0.f, sum_d = 0.f;
#pragma omp simd reduction(+ : s, sum_d)
    for (int64_t j = 0; j < c; ++j) {
      const float d = xi[j] - m;
      const float ed = exp_nonpositive(d);
      pi[j] = ed;
      s += ed;
      sum_d += d;
    }
    scale_row(pi, 1.f / s, c);
    const float log_s = std::log(s);
    const float nll = log_s - target_d;
    losses[i] = e == 0.f ? nll : (1.f - e) * nll + e * (log_s - sum_d / static_cast<float>(c));
  }
}

void xent_backward(const float* probs, const int64_t* labels, const float* dlosses, float* dlogits, int64_t n,
                   int64_t c, float label_smoothing) {
  const float e = label_smoothing;
  const float uniform = e / static_cast<float>(c);
#pragma omp parallel for num_threads(elements_team(n * c, kParallelMin)) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float* pi = probs + i * c;
    float* gi = dlogits + i * c;
    const float g = dlosses[i];
    const float offset = g * uniform;
#pragma omp simd
    for (int64_t j = 0; j < c; ++j) gi[j] = g * pi[j] - offset;
    gi[labels[i]] -= g * (1.f - e);
  }
}

#pragma GCC pop_options
