// Depthwise convolution, one source for every SIMD path: conv_depthwise.cpp, _avx2.cpp and
// _avx512.cpp include it inside an anonymous namespace, and their compile flags decide kLanes (the
// width of the GCC vector type below: 4, 8 or 16 floats; the includer brings <immintrin.h> for the
// AVX paths' intrinsics).
//
// Planes. Output channel co reads input channel c = co / m (m = Co / C). Threads take whole H x W
// planes (schedule(dynamic): on a busy machine a descheduled thread does not hold up a static share
// of the work), so no two threads write the same element and nothing is reduced across threads.
//
// Every pass first copies its operand plane into a zero-padded "grid" in the thread's own buffer,
// laid out so that every tap (i, j) is ONE constant offset off[t] from the output position:
//   out[p] = sum_t w[t] * grid[p + off[t]]   for p = row * pitch + col, over the whole plane.
// The tap loop then runs over the plane as one flat array, 4 vectors of accumulators at a time, with
// no edge test and no per-row tail (the columns past the output width, pitch - width of them, are
// computed and dropped; the flat length is rounded up to a block, the buffers have the slack). For
// a stride s the grid is split into s_h * s_w phases (phase (r % s_h, c % s_w) holds the padded
// input's rows r / s_h, columns c / s_w), so that tap (i, j) reads phase ((i*dh) % sh, (j*dw) % sw) at
// row (i*dh) / sh, column (j*dw) / sw: again one offset, and no output is computed only to be dropped.
//
// forward          grid = x plane padded by (ph, pw), phase-split by the stride; out = bias + sum_t
//                  w[co,t] * grid[p + off[t]], then the valid columns (ReLU'd) are copied into y.
// backward-data    stride 1 or not, dx is a stride-1 correlation of the flipped kernel with dy
//                  spread out by the stride (dy[r, c] placed at (r*sh + (kh-1)*dh - ph,
//                  c*sw + (kw-1)*dw - pw), zeros between): the same tap loop, summed over the plane's
//                  m output channels. (The zeros cost sh*sw times the multiply-adds, but on planes
//                  this small the pass is bound by the copies, not the FMAs.)
// backward-weight  a thread owns dw[co] for a block of 8 channels (walked image by image, so the
//                  planes it reads are adjacent): dw[co, t] = sum over n and p of dyg[p] * grid[p + off[t]],
//                  dyg = dy plane at the grid's pitch with zeros in the dropped columns: one vector
//                  accumulator per tap (up to 9 taps per sweep), reduced across lanes once per channel;
//                  with a depth multiplier m the x plane is copied once for its m channels.
//
// Napkin math (the MobileNet-like 3x3, 64 channels, 28x28, batch 32 of bench/conv.py): 2*9*32*64*784
// = 29 MFLOP per pass against 6.4 MB of x and 6.4 MB of y, 2.3 FLOP per byte: memory (about 20 GB/s
// on two cores here: 0.65 ms) rules, not the FMAs (2 cores x 2 FMA x 8 lanes x 2 FLOP x ~3 GHz =
// 190 GFLOP/s: 0.15 ms). Per output vector a tap costs one load and one FMA; the accumulators stay in
// registers across all taps (the version before this one added each tap into the output row in
// memory: a load, an FMA and a store per tap and vector, plus a scalar tail on every row, and reached
// 0.5-0.7x torch; its backward-weight reduced across lanes for every row and tap: 0.2x).

#if defined(__AVX512F__)
constexpr int64_t kLanes = 16;
#elif defined(__AVX__)
constexpr int64_t kLanes = 8;
#else
constexpr int64_t kLanes = 4;
#endif
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
constexpr int64_t kBlock = 4 * kLanes;  // outputs per step of the tap loop: 4 vector accumulators
constexpr int kMaxSweep = 9;            // taps per backward-weight sweep (9 accumulators + 2 in registers)

inline Vec load(const float* p) {
  Vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store(float* p, Vec v) { std::memcpy(p, &v, sizeof v); }
inline Vec splat(float a) { return Vec{} + a; }
inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// dst[0, n) = src[0, n) for the short runs of these planes (a row of 7 to 56 floats), inline: up to
// four whole vectors, the last one overlapping the one before, instead of a call to memcpy for each
// row (written out, not as a loop, which GCC turns back into that call: a quarter of a stride-1
// forward pass went to memcpy's entry for 28-float rows).
inline void copy_run(float* __restrict dst, const float* __restrict src, int64_t n) {
  typedef float Vec4 __attribute__((vector_size(4 * sizeof(float))));
  if (n > 4 * kLanes) {
    std::memcpy(dst, src, sizeof(float) * n);
  } else if (n >= kLanes) {
    const int64_t last = n - kLanes;
    const Vec v0 = load(src), vl = load(src + last);
    if (last > kLanes) store(dst + kLanes, load(src + kLanes));
    if (last > 2 * kLanes) store(dst + 2 * kLanes, load(src + 2 * kLanes));
    store(dst, v0), store(dst + last, vl);
  } else if (n >= 4) {
    Vec4 v[4];
    const int64_t last = n - 4;
    std::memcpy(&v[0], src, sizeof(Vec4)), std::memcpy(&v[3], src + last, sizeof(Vec4));
    if (last > 4) std::memcpy(&v[1], src + 4, sizeof(Vec4)), std::memcpy(dst + 4, &v[1], sizeof(Vec4));
    if (last > 8) std::memcpy(&v[2], src + 8, sizeof(Vec4)), std::memcpy(dst + 8, &v[2], sizeof(Vec4));
    std::memcpy(dst, &v[0], sizeof(Vec4)), std::memcpy(dst + last, &v[3], sizeof(Vec4));
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

// Splits a row at stride 2: even[k] = src[2k], odd[k] = src[2k + 1] for the n source floats, and
// zeros in the 16 floats after each output's last (pad columns, the phase's next row, which is
// written after this one, or the phase's slack). Per 32 (AVX-512) or 16 (AVX2) source floats: two
// masked loads (no read past the row), two permutes and two whole-vector stores. The scalar
// strided loops this replaces (rows of 7 to 28 outputs, too short for the auto-vectoriser's full
// vectors) were half the time of a stride-2 forward pass.
inline void split2(float* __restrict even, float* __restrict odd, const float* __restrict src, int64_t n) {
#if defined(__AVX512F__)
  const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t i = 0; i < n; i += 32, src += 32, even += 16, odd += 16) {
    const int64_t left = n - i;
    const __mmask16 lo = static_cast<__mmask16>(left >= 16 ? 0xffff : (1u << left) - 1);
    const __mmask16 hi = static_cast<__mmask16>(left >= 32 ? 0xffff : left > 16 ? (1u << (left - 16)) - 1 : 0);
    const __m512 a = _mm512_maskz_loadu_ps(lo, src), b = _mm512_maskz_loadu_ps(hi, src + 16);
    _mm512_storeu_ps(even, _mm512_permutex2var_ps(a, evens, b));
    _mm512_storeu_ps(odd, _mm512_permutex2var_ps(a, odds, b));
  }
#elif defined(__AVX2__)
  const __m256i iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = 0; i < n; i += 16, src += 16, even += 8, odd += 8) {
    const int left = int(std::min<int64_t>(16, n - i));
    const __m256 a = _mm256_maskload_ps(src, _mm256_cmpgt_epi32(_mm256_set1_epi32(left), iota));
    const __m256 b = _mm256_maskload_ps(src + 8, _mm256_cmpgt_epi32(_mm256_set1_epi32(left - 8), iota));
    // shuffle_ps picks per 128-bit half; permute4x64 then puts the halves' pairs in order.
    const auto in_order = [](__m256 v) { return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xd8)); };
    _mm256_storeu_ps(even, in_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))));
    _mm256_storeu_ps(odd, in_order(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))));
  }
#else
  const int64_t ne = (n + 1) / 2, no = n / 2;
  for (int64_t k = 0; k < ne; ++k) even[k] = src[2 * k];
  for (int64_t k = 0; k < no; ++k) odd[k] = src[2 * k + 1];
  std::fill(even + ne, even + ne + 16, 0.f), std::fill(odd + no, odd + no + 16, 0.f);
#endif
}

// A zero-padded, phase-split copy of a plane: sr * sc phases of rows x pitch floats, `phase` floats
// apart (more than rows * pitch: the tap loop reads past a phase's end into slack).
struct Grid {
  int64_t rows, pitch, sr, sc, phase;
  int64_t floats() const { return sr * sc * phase; }
};

// A grid of rows x pitch per phase whose tap loop runs over `flat` outputs: the slack covers the
// last block's reads at the largest tap offset (under a row beyond the phase's last).
inline Grid make_grid(int64_t rows, int64_t pitch, int64_t sr, int64_t sc, int64_t flat) {
  return {rows, pitch, sr, sc, round_up(std::max(rows * pitch, round_up(flat, kBlock)) + pitch + kBlock, kLanes)};
}

// Copies a Hs x Ws source plane into a grid g: element (a, b) goes to the virtual position (R, C) =
// (a*ur + o_r, b*uc + o_c), which is phase (R % sr, C % sc), row R / sr, column C / sc; what falls
// outside the grid is dropped. Either uc or sc is 1 (spread by the stride, or split by it). Only the
// positions that some source element reaches are written, and they are the same for every plane, so
// the rest stays as zeroed once per call. Where each row and phase segment goes is worked out once
// per pass (the divisions cost more than the copies on a 14x14 plane); a split reads the source
// with stride sc straight into each phase row (for sc = 2 both phases from one pair of vector loads,
// split2(); staging the row through a buffer first cost twice as much, its loads waiting on the
// stores just made).
struct Scatter {
  struct Segment {
    // source column, destination offset from the row's first phase, length; for sc = 2 one segment
    // holds the whole row: count source floats, the 1st, 3rd, ... to dst, the 2nd, 4th, ... to dst2
    int64_t src, dst, count, dst2;
  };
  int64_t Ws, uc, sc;
  std::vector<int64_t> row_dst;  // per source row: offset of its destination row, or -1 (dropped)
  std::vector<Segment> segments;  // the row's columns: one run (sc = 1) or one per phase q

  Scatter(int64_t Hs, int64_t Ws_, int64_t ur, int64_t uc_, int64_t o_r, int64_t o_c, const Grid& g)
      : Ws(Ws_), uc(uc_), sc(g.sc), row_dst(Hs, -1) {
    for (int64_t a = 0; a < Hs; ++a) {
      const int64_t R = a * ur + o_r;
      if (R >= 0 && R / g.sr < g.rows) row_dst[a] = (R % g.sr) * g.sc * g.phase + (R / g.sr) * g.pitch;
    }
    const int64_t b_lo = o_c >= 0 ? 0 : (-o_c + uc - 1) / uc;                 // C >= 0
    const int64_t b_hi = std::min(Ws, (g.pitch * g.sc - o_c + uc - 1) / uc);  // C / sc < pitch
    if (b_lo >= b_hi) return;
    if (g.sc == 1) {
      segments.push_back({b_lo, b_lo * uc + o_c, b_hi - b_lo, 0});
      return;
    }
    if (g.sc == 2) {
      const int64_t C = b_lo + o_c;
      segments.push_back({b_lo, C % 2 * g.phase + C / 2, b_hi - b_lo, (C + 1) % 2 * g.phase + (C + 1) / 2});
      return;
    }
    for (int64_t q = 0; q < g.sc; ++q) {  // phase q: the columns k whose source b = k*sc + q - o_c is in range
      if (b_hi - 1 + o_c < q) continue;  // (the numerators below are >= 0, so / rounds down)
      const int64_t k_lo = (b_lo + o_c - q + g.sc - 1) / g.sc, k_hi = (b_hi - 1 + o_c - q) / g.sc + 1;
      if (k_hi > k_lo) segments.push_back({k_lo * g.sc + q - o_c, q * g.phase + k_lo, k_hi - k_lo, 0});
    }
  }

  void operator()(const float* src, float* dst) const {
    for (size_t a = 0; a < row_dst.size(); ++a) {
      if (row_dst[a] < 0) continue;
      const float* s = src + a * Ws;
      float* d = dst + row_dst[a];
      for (const Segment& seg : segments) {
        const float* __restrict sq = s + seg.src;
        float* __restrict dq = d + seg.dst;
        if (sc == 2) {
          split2(dq, d + seg.dst2, sq, seg.count);
        } else if (sc > 1) {
          for (int64_t k = 0; k < seg.count; ++k) dq[k] = sq[k * sc];
        } else if (uc == 1) {
          copy_run(dq, sq, seg.count);
        } else {
          for (int64_t k = 0; k < seg.count; ++k) dq[k * uc] = sq[k];
        }
      }
    }
  }
};

// out[p] = (accumulate ? out[p] : init) + sum_t w[t] * in[p + off[t]] for p < flat (a multiple of kBlock).
inline void correlate(const float* in, const int64_t* off, const float* w, int64_t taps, int64_t flat,
                      bool accumulate, float init, float* out) {
  for (int64_t p = 0; p < flat; p += kBlock) {
    Vec a0, a1, a2, a3;
    if (accumulate) {
      a0 = load(out + p), a1 = load(out + p + kLanes), a2 = load(out + p + 2 * kLanes), a3 = load(out + p + 3 * kLanes);
    } else {
      a0 = a1 = a2 = a3 = splat(init);
    }
    for (int64_t t = 0; t < taps; ++t) {
      const Vec wt = splat(w[t]);
      const float* s = in + off[t] + p;
      a0 += wt * load(s);
      a1 += wt * load(s + kLanes);
      a2 += wt * load(s + 2 * kLanes);
      a3 += wt * load(s + 3 * kLanes);
    }
    store(out + p, a0), store(out + p + kLanes, a1), store(out + p + 2 * kLanes, a2), store(out + p + 3 * kLanes, a3);
  }
}

// acc[t] += d[p] * in[p + off[t]] lane by lane for t < G, p < flat (a multiple of kLanes). The
// accumulators stay vectors across all the planes of a channel and are summed across lanes once, at
// the end (summing them per plane, 9 taps x 16 lanes of dependent adds, took a third of a stride-2
// backward-weight pass).
template <int G>
void dot_sweep(const float* d, const float* in, const int64_t* off, int64_t flat, Vec* acc_out) {
  Vec acc[G];
  for (int g = 0; g < G; ++g) acc[g] = acc_out[g];
  for (int64_t p = 0; p < flat; p += kLanes) {
    const Vec dv = load(d + p);
#pragma GCC unroll 9
    for (int g = 0; g < G; ++g) acc[g] += dv * load(in + off[g] + p);
  }
  for (int g = 0; g < G; ++g) acc_out[g] = acc[g];
}

inline void dot_taps(const float* d, const float* in, const int64_t* off, int64_t taps, int64_t flat, Vec* acc) {
  for (int64_t t = 0; t < taps; t += kMaxSweep) {
    switch (std::min<int64_t>(kMaxSweep, taps - t)) {
      case 1: dot_sweep<1>(d, in, off + t, flat, acc + t); break;
      case 2: dot_sweep<2>(d, in, off + t, flat, acc + t); break;
      case 3: dot_sweep<3>(d, in, off + t, flat, acc + t); break;
      case 4: dot_sweep<4>(d, in, off + t, flat, acc + t); break;
      case 5: dot_sweep<5>(d, in, off + t, flat, acc + t); break;
      case 6: dot_sweep<6>(d, in, off + t, flat, acc + t); break;
      case 7: dot_sweep<7>(d, in, off + t, flat, acc + t); break;
      case 8: dot_sweep<8>(d, in, off + t, flat, acc + t); break;
      default: dot_sweep<9>(d, in, off + t, flat, acc + t); break;
    }
  }
}

// Copies the rows x cols output at the top left of a pitch-wide flat buffer into a dense plane.
inline void gather(const float* out, int64_t pitch, int64_t rows, int64_t cols, bool relu, float* dst) {
  for (int64_t r = 0; r < rows; ++r, dst += cols, out += pitch) {
    if (relu) {
      for (int64_t k = 0; k < cols; ++k) dst[k] = std::max(out[k], 0.f);
    } else {
      copy_run(dst, out, cols);
    }
  }
}

// The input grid of forward and backward-weight: x padded by (ph, pw) and split by the stride, and
// each tap's offset into it for outputs at pitch g.pitch.
struct InputGrid {
  // A phase row holds an output row's columns and the kernel's reach past them.
  static int64_t pitch_of(const Conv2dShape& s) { return s.Wo + (s.kw - 1) * s.dw / s.sw; }

  Grid g;
  std::vector<int64_t> off;
  int64_t flat;  // outputs the tap loop computes: Ho rows at the grid's pitch
  Scatter fill;  // fill(x plane, buffer)
  explicit InputGrid(const Conv2dShape& s)
      : g(make_grid(s.Ho + (s.kh - 1) * s.dh / s.sh, pitch_of(s), s.sh, s.sw, s.Ho * pitch_of(s))),
        off(s.kh * s.kw),
        flat(s.Ho * g.pitch),
        fill(s.H, s.W, 1, 1, s.ph, s.pw, g) {
    for (int64_t i = 0; i < s.kh; ++i)
      for (int64_t j = 0; j < s.kw; ++j)
        off[i * s.kw + j] = ((i * s.dh) % s.sh * s.sw + (j * s.dw) % s.sw) * g.phase + (i * s.dh) / s.sh * g.pitch +
                            (j * s.dw) / s.sw;
  }
};

// The pass's expected single-thread time, for team_threads(): the larger of its multiply-adds and its
// traffic (it reads and writes every plane once).
inline double pass_ns(const Conv2dShape& s) {
  const double outputs = double(s.N) * double(s.Co) * double(s.Ho * s.Wo);
  return std::max(flops_ns(2.0 * outputs * double(s.kh * s.kw)), elements_ns(outputs + double(s.N * s.C * s.H * s.W)));
}

// Planes per dynamic chunk: about 16K multiply-adds each, so scheduling costs little.
inline int64_t plane_chunk(const Conv2dShape& s) {
  return std::max<int64_t>(1, 16384 / std::max<int64_t>(1, s.Ho * s.Wo * s.kh * s.kw));
}

void forward(const Conv2dShape& s, const float* x, const float* w, const float* bias, bool relu, float* y) {
  const double work_ns = pass_ns(s);
  const int64_t m = s.Co / s.C, HW = s.H * s.W, P = s.Ho * s.Wo, taps = s.kh * s.kw;
  const InputGrid in(s);
  const int64_t flat = round_up(in.flat, kBlock);
  const int64_t chunk = std::max<int64_t>(1, plane_chunk(s) / m);
#pragma omp parallel num_threads(team_threads(work_ns))
  {
    std::vector<float> grid(in.g.floats(), 0.f), out(flat);
#pragma omp for schedule(dynamic, chunk)
    for (int64_t p = 0; p < s.N * s.C; ++p) {
      in.fill(x + p * HW, grid.data());
      const int64_t n = p / s.C, c = p % s.C;
      for (int64_t co = c * m; co < (c + 1) * m; ++co) {
        correlate(grid.data(), in.off.data(), w + co * taps, taps, flat, false, bias ? bias[co] : 0.f, out.data());
        gather(out.data(), in.g.pitch, s.Ho, s.Wo, relu, y + (n * s.Co + co) * P);
      }
    }
  }
}

void backward_data(const Conv2dShape& s, const float* dy, const float* w, float* dx) {
  const double work_ns = pass_ns(s);
  const int64_t m = s.Co / s.C, HW = s.H * s.W, P = s.Ho * s.Wo, taps = s.kh * s.kw;
  const int64_t pitch = s.W + (s.kw - 1) * s.dw, flat = round_up(s.H * pitch, kBlock);
  const Grid g = make_grid(s.H + (s.kh - 1) * s.dh, pitch, 1, 1, flat);
  std::vector<int64_t> off(taps);
  std::vector<float> flipped(s.Co * taps);  // w[co, kh-1-i, kw-1-j]
  for (int64_t i = 0; i < s.kh; ++i)
    for (int64_t j = 0; j < s.kw; ++j) {
      off[i * s.kw + j] = i * s.dh * pitch + j * s.dw;
      for (int64_t co = 0; co < s.Co; ++co)
        flipped[co * taps + i * s.kw + j] = w[co * taps + (s.kh - 1 - i) * s.kw + (s.kw - 1 - j)];
    }
  const int64_t top = (s.kh - 1) * s.dh - s.ph, left = (s.kw - 1) * s.dw - s.pw;
  const Scatter spread(s.Ho, s.Wo, s.sh, s.sw, top, left, g);
  const int64_t chunk = std::max<int64_t>(1, plane_chunk(s) / m);
#pragma omp parallel num_threads(team_threads(work_ns))
  {
    std::vector<float> grid(g.floats(), 0.f), out(flat);
#pragma omp for schedule(dynamic, chunk)
    for (int64_t p = 0; p < s.N * s.C; ++p) {
      const int64_t n = p / s.C, c = p % s.C;
      for (int64_t co = c * m; co < (c + 1) * m; ++co) {
        spread(dy + (n * s.Co + co) * P, grid.data());
        correlate(grid.data(), off.data(), flipped.data() + co * taps, taps, flat, co > c * m, 0.f, out.data());
      }
      gather(out.data(), pitch, s.H, s.W, false, dx + p * HW);
    }
  }
}

void backward_weight(const Conv2dShape& s, const float* dy, const float* x, float* dw) {
  const double work_ns = pass_ns(s);
  const int64_t m = s.Co / s.C, HW = s.H * s.W, P = s.Ho * s.Wo, taps = s.kh * s.kw;
  const InputGrid in(s);
  const int64_t flat = round_up(in.flat, kLanes);
  const Grid dg = make_grid(s.Ho, in.g.pitch, 1, 1, flat);  // dy at the input grid's pitch
  const Scatter place_dy(s.Ho, s.Wo, 1, 1, 0, 0, dg);
  constexpr int64_t kChannels = 8;  // output channels per task: their planes of one image are adjacent
  const int64_t blocks = (s.Co + kChannels - 1) / kChannels;
#pragma omp parallel num_threads(team_threads(work_ns))
  {
    std::vector<float> grid(in.g.floats(), 0.f), dyg(dg.floats(), 0.f);
    std::vector<Vec> acc(kChannels * taps);
#pragma omp for schedule(dynamic, 1)
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t co0 = block * kChannels, co1 = std::min(s.Co, co0 + kChannels);
      std::fill(acc.begin(), acc.end(), Vec{});
      for (int64_t n = 0; n < s.N; ++n)
        for (int64_t co = co0; co < co1; ++co) {
          if (co == co0 || co % m == 0) in.fill(x + (n * s.C + co / m) * HW, grid.data());  // a new input channel
          place_dy(dy + (n * s.Co + co) * P, dyg.data());
          dot_taps(dyg.data(), grid.data(), in.off.data(), taps, flat, acc.data() + (co - co0) * taps);
        }
      for (int64_t co = co0; co < co1; ++co)
        for (int64_t t = 0; t < taps; ++t) {
          float sum = 0.f;
          for (int64_t l = 0; l < kLanes; ++l) sum += acc[(co - co0) * taps + t][l];
          dw[co * taps + t] = sum;
        }
    }
  }
}
