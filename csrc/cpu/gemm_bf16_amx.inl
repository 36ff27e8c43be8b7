// The AMX path's packers and block loop, written once over a `Tiles` policy that provides the tile
// operations: gemm_bf16_amx.cpp instantiates it with the hardware's (_tile_loadd, _tile_dpbf16ps,
// ...), gemm_bf16_amx_emulated_avx512.cpp with a software model of the tile registers, so everything here
// but the instructions themselves is tested on CPUs without AMX. See gemm_bf16_amx.cpp for the tile
// shapes, the blocking and the napkin math. Include inside namespace pn's anonymous namespace;
// needs AVX-512 F/BW/DQ/VL.
//
// Tiles names the tile registers' roles: tmm0..3 hold the 32 x 32 float32 C tile as 2 x 2 tiles of
// 16 x 16 (tmm0 top-left, tmm1 top-right, tmm2 bottom-left, tmm3 bottom-right), tmm4/5 the top and
// bottom 16 rows of A (16 rows x 32 k), tmm6/7 the left and right 16 columns of B (16 k-pairs x
// 16 columns x 2). It provides (strides in bytes):
//   configure()             palette 1, every tile 16 rows x 64 bytes; release() when done
//   zero_c()                tmm0..3 = 0
//   load_c(p, stride)       tmm0..3 = the 32 x 32 floats at p; store_c(p, stride) the reverse
//   step(a, b)              tmm4..7 = one 32-deep block of an A and a B sliver (1 KiB each, stride
//                           64), then tmm0..3 += the four products (_tile_dpbf16ps)
// (GCC's tile intrinsics take the register number as a literal, so the roles are fixed here rather
// than template arguments.)

constexpr int kAmxMR = 32;     // C tile: 2 x 2 tile registers of 16 x 16 floats
constexpr int kAmxNR = 32;
constexpr int kAmxKStep = 32;  // one A tile row: 32 bf16 = 64 bytes

// The 64-byte tile configuration that _tile_loadconfig reads.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};  // bytes per row, tiles 0..7
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

// One 32 x 32 tile of C over kc_padded (a multiple of 32) from an A and a B sliver (AMX layout,
// gemm_bf16_layout.h): each 32-deep step is 4 tile loads (4 KiB) and 4 tile products. The sums
// start from zero or from `init` and go to `out` (row strides in floats).
template <class Tiles>
void amx_tile(int64_t kc_padded, const uint16_t* a, const uint16_t* b, const float* init, int64_t ld_init, float* out,
              int64_t ld_out) {
  if (init)
    Tiles::load_c(init, ld_init * 4);
  else
    Tiles::zero_c();
  for (int64_t k = 0; k < kc_padded; k += kAmxKStep, a += 1024, b += 1024) Tiles::step(a, b);
  Tiles::store_c(out, ld_out * 4);
}

// Whether a full tile's epilogue is a plain copy, so the tiles can start from and go straight to
// the float32 accumulator or C (alpha 1; no beta, bias, ReLU or rounding in this stage).
inline bool direct_epilogue(const Bf16Epilogue& ep) {
  return ep.alpha == 1.f && (!ep.first || ep.beta == 0.f) && (!ep.last || (!ep.c_bf16 && !ep.bias && !ep.row_bias && !ep.relu));
}

// jr outer, ir inner, as in the other paths: the B sliver stays in L1 while A slivers stream past.
// Full tiles with a plain epilogue go straight between the tiles and C; the others through `sums`
// and the vector epilogue. Tiles are configured once per block (tile state is per thread).
template <class Tiles>
void amx_block(int64_t kc_padded, const uint16_t* a, int64_t mc, const uint16_t* b, int64_t nc,
               const Bf16Epilogue& ep) {
  alignas(64) float sums[kAmxMR * kAmxNR];
  const bool direct = direct_epilogue(ep);
  float* const target = ep.last ? static_cast<float*>(ep.c) : ep.acc;
  const int64_t ld_target = ep.last ? ep.ldc : ep.ldacc;
  Tiles::configure();
  for (int64_t j = 0; j < nc; j += kAmxNR) {
    const int n = static_cast<int>(nc - j < kAmxNR ? nc - j : kAmxNR);
    for (int64_t i = 0; i < mc; i += kAmxMR) {
      const int m = static_cast<int>(mc - i < kAmxMR ? mc - i : kAmxMR);
      const uint16_t* a_sliver = a + i * kc_padded;
      const uint16_t* b_sliver = b + j * kc_padded;
      if (direct && m == kAmxMR && n == kAmxNR) {
        const float* init = ep.first ? nullptr : ep.acc + i * ep.ldacc + j;
        amx_tile<Tiles>(kc_padded, a_sliver, b_sliver, init, ep.ldacc, target + i * ld_target + j, ld_target);
      } else {
        amx_tile<Tiles>(kc_padded, a_sliver, b_sliver, nullptr, 0, sums, kAmxNR);
        epilogue_tile_avx512(ep, i, j, sums, kAmxNR, m, n);
      }
    }
  }
  Tiles::release();
}

// A row-major (k contiguous): each tile row is 32 consecutive k of one row, one masked 64-byte copy.
// Other strides take the portable packer.
void amx_pack_a(const Bf16Operand& a, int64_t i0, int64_t mc, int64_t k0, int64_t kc, uint16_t* dst) {
  if (a.y_stride != 1) return pack_a_amx_scalar(a, i0, mc, k0, kc, dst);
  const int64_t kc_pad = round_up_to(kc, kAmxKStep);
  for (int64_t s = 0; s * kAmxMR < mc; ++s) {
    const int rows = static_cast<int>(mc - s * kAmxMR < kAmxMR ? mc - s * kAmxMR : kAmxMR);
    const uint16_t* src = a.data + (i0 + s * kAmxMR) * a.x_stride + k0;
    uint16_t* sliver = dst + s * kAmxMR * kc_pad;
    for (int64_t k = 0; k < kc_pad; k += kAmxKStep) {
      const __mmask32 live = bf16_lanes_mask(kc - k);  // kc - k >= 1: k < kc_pad
      for (int r = 0; r < kAmxMR; ++r) {
        const __m512i v = r < rows ? _mm512_maskz_loadu_epi16(live, src + r * a.x_stride + k) : _mm512_setzero_si512();
        _mm512_store_si512(sliver + amx_a_index(r, k), v);
      }
    }
  }
}

// B half-sliver (16 columns) of each 32-deep block = the pair layout 16 wide: the same two moves as
// the AVX512-BF16 packers, the block's 16 pairs written contiguously.
void amx_pack_b(const Bf16Operand& b, int64_t k0, int64_t kc, int64_t j0, int64_t nc, uint16_t* dst) {
  if (b.x_stride != 1 && b.y_stride != 1) return pack_b_amx_scalar(b, k0, kc, j0, nc, dst);
  const int64_t kc_pad = round_up_to(kc, kAmxKStep);
  for (int64_t s = 0; s * kAmxNR < nc; ++s) {
    uint16_t* sliver = dst + s * kAmxNR * kc_pad;
    for (int h = 0; h < 2; ++h) {
      const int64_t left = nc - s * kAmxNR - 16 * h;  // live columns from this half on
      const int live = left <= 0 ? 0 : (left < 16 ? static_cast<int>(left) : 16);
      const int64_t col = j0 + s * kAmxNR + 16 * h;
      for (int64_t k = 0; k < kc_pad; k += kAmxKStep) {
        uint16_t* half = sliver + amx_b_index(k, 16 * h);
        const int64_t klive = kc - k < kAmxKStep ? kc - k : kAmxKStep;  // >= 1: k < kc_pad
        if (klive < kAmxKStep || live == 0)  // the moves below write only the live pairs
          for (int q = 0; q < 16; ++q) _mm512_store_si512(half + 32 * q, _mm512_setzero_si512());
        if (live == 0) continue;
        const uint16_t* src = b.data + (k0 + k) * b.x_stride + col * b.y_stride;
        if (b.y_stride == 1)
          pack_pairs_interleaved(src, b.x_stride, live, klive, half, 32, 16);
        else
          pack_pairs_transposed(src, b.y_stride, live, klive, reinterpret_cast<uint32_t*>(half), 16, 16);
      }
    }
  }
}
