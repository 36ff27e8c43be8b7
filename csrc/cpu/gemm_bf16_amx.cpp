// AMX bf16 GEMM path: Intel's tile unit (Sapphire Rapids and later), C tiles of 32 x 32 floats
// accumulated in tile registers by _tile_dpbf16ps.
//
// Tile shapes (palette 1, every tile register 16 rows x 64 bytes):
//   tmm0..3  C, 2 x 2 tiles of 16 x 16 float32: one 32 x 32 tile of C
//   tmm4, 5  A, the top and bottom 16 rows x 32 bf16 of k
//   tmm6, 7  B, the left and right 16 columns, VNNI form: 16 rows of k-pairs x 16 columns x 2 bf16
// A 32-deep step loads 4 tiles (4 KiB, each one contiguous KiB of a packed sliver) and issues 4
// _tile_dpbf16ps, each 16 x 16 x 32 multiply-adds; A and B tiles are reused twice each.
// Operand layouts (gemm_bf16_layout.h): A slivers of 32 rows, B slivers of 32 columns, K padded
// with zeros to a multiple of 32, rows and columns to 32, so every tile is full and tails cost only
// FLOPs; the epilogue writes just the live part of C. Full tiles whose epilogue is a plain copy
// (alpha 1, float32 C, no bias/ReLU) load and store C straight from the tiles.
//
// Cache blocks: kc = 512 (a 32 KiB B sliver pair stays in the 48 KiB L1 while A slivers stream
// through), mc = 256 (the A block, 256 KiB, in L2), nc = 2048 (the B panel, 2 MiB, in L2/L3).
//
// Napkin math against the AMX peak (1024 bf16 FLOP per cycle per core: one 16 x 16 x 32
// _tile_dpbf16ps, 16 Ki flops, every 16 cycles):
//   - one step: 4 x 16 = 64 cycles of tile products against 4 KiB of tile loads = 64 B/cycle,
//     2 KiB of it (A) from L2 (32 B/cycle, within an L2's ~48-64) and 2 KiB (B) from L1;
//   - epilogue: through memory (tile store + 64 vector ops, ~150 cycles per 32 x 32 tile) once per
//     K block of 512, i.e. against 16 steps = 1024 cycles: ~13% where it is not a plain copy, ~0%
//     where tiles go straight to C;
//   - packing: an A element is packed once per B panel and then feeds 2 x nc = 4096 flops (4 cycles
//     of peak); a B element once per thread's share of M rows. At ~0.25-0.5 cycle per packed element
//     that is ~10% at 1024-4096, the largest loss: direct tile loads of a row-major A (oneDNN's
//     way, with tile rows cut short at a K tail) would remove A's share.
//   So ~70-80% of the tile peak is the ceiling of this design at large sizes; torch (oneDNN) is
//   reported at ~30% of the measured peak on 2 cores (issue 16), the goal is >= 50%.
//
// Never run on real AMX hardware in this repository's development (the machines at hand lack it);
// the same packers, block loop and epilogue run under gemm_bf16_amx_emulated_avx512.cpp in the
// tests. The tile permission (Linux arch_prctl) is requested by cpu_has_amx_bf16() before this path
// can be chosen.
#include <immintrin.h>

#include <algorithm>
#include <chrono>

#include "cpu/gemm_bf16_epilogue.h"
#include "cpu/gemm_bf16_kernel.h"
#include "cpu/gemm_bf16_layout.h"
#include "cpu/gemm_bf16_pack_avx512.h"

namespace pn {
namespace {

#include "cpu/gemm_bf16_amx.inl"

struct HardwareTiles {
  static void configure() {
    static const TileConfig config;
    _tile_loadconfig(&config);
  }
  static void release() { _tile_release(); }
  static void zero_c() {
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
  }
  static void load_c(const float* p, int64_t stride) {
    _tile_loadd(0, p, stride);
    _tile_loadd(1, p + 16, stride);
    _tile_loadd(2, p + 16 * (stride / 4), stride);
    _tile_loadd(3, p + 16 * (stride / 4) + 16, stride);
  }
  static void store_c(float* p, int64_t stride) {
    _tile_stored(0, p, stride);
    _tile_stored(1, p + 16, stride);
    _tile_stored(2, p + 16 * (stride / 4), stride);
    _tile_stored(3, p + 16 * (stride / 4) + 16, stride);
  }
  static void step(const uint16_t* a, const uint16_t* b) {
    _tile_loadd(4, a, 64);
    _tile_loadd(5, a + 512, 64);
    _tile_loadd(6, b, 64);
    _tile_loadd(7, b + 512, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    _tile_dpbf16ps(2, 5, 6);
    _tile_dpbf16ps(3, 5, 7);
  }
};

void block(int64_t kc_padded, const uint16_t* a, int64_t mc, const uint16_t* b, int64_t nc, const Bf16Epilogue& ep) {
  amx_block<HardwareTiles>(kc_padded, a, mc, b, nc, ep);
}

}  // namespace

const Bf16GemmKernel& bf16_kernel_amx() {
  static const Bf16GemmKernel kernel{"amx", kAmxMR, kAmxNR, kAmxKStep, 512, 256, 2048, &amx_pack_a, &amx_pack_b,
                                     &block};
  return kernel;
}

// Four independent accumulator tiles on resident A/B tiles: tile products back to back, nothing
// loaded in the loop (the measured ceiling behind the napkin math above). Returns the best rate of
// short windows, as the AVX512-BF16 loop does.
double bf16_dot_peak_loop_amx(double seconds) {
  constexpr int kInner = 256;
  alignas(64) static const uint16_t operand[512] = {};  // zeros: the tile unit's speed does not depend on values
  alignas(64) float sink[256];
  HardwareTiles::configure();
  HardwareTiles::zero_c();
  _tile_loadd(4, operand, 64);
  _tile_loadd(5, operand, 64);
  _tile_loadd(6, operand, 64);
  _tile_loadd(7, operand, 64);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  double best = 0;
  while (std::chrono::duration<double>(Clock::now() - start).count() < seconds) {
    const auto window = Clock::now();
    for (int it = 0; it < kInner; ++it) {
      _tile_dpbf16ps(0, 4, 6);
      _tile_dpbf16ps(1, 4, 7);
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    const double elapsed = std::chrono::duration<double>(Clock::now() - window).count();
    best = std::max(best, double(kInner) * 4 * 16 * 16 * 32 * 2 / elapsed);
  }
  _tile_stored(0, sink, 64);
  HardwareTiles::release();
  return best;
}

}  // namespace pn
