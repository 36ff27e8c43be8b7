// The AMX path (gemm_bf16_amx.inl: packers, block loop, epilogue) on a software model of the tile
// registers, so that code is tested on CPUs without AMX (the machines this repository is developed
// on have none). Only the four tile operations are modelled, after Intel's pseudocode:
//   tile config   palette 1; rows <= 16 and colsb <= 64 per tile; loads/stores move rows x colsb
//   _tile_loadd   rows x colsb bytes from base + r * stride (the rest of the register zeroed)
//   _tile_dpbf16ps  C[m][n] += A.bf16[m][2k] * B.bf16[k][2n] + A.bf16[m][2k+1] * B.bf16[k][2n+1]
//                 in float32, k < A.colsb / 4, with bf16 subnormal inputs read as zero (DAZ)
// and each checks what the hardware would fault on or silently mix up (an unconfigured tile, shapes
// that do not chain: C.rows == A.rows, C.colsb == B.colsb, A.colsb / 4 == B.rows), throwing
// std::logic_error. Slow (scalar), for tests only: never chosen unless asked for by name.
#include <cstring>
#include <stdexcept>

#include "cpu/bf16.h"
#include "cpu/gemm_bf16_epilogue.h"
#include "cpu/gemm_bf16_kernel.h"
#include "cpu/gemm_bf16_layout.h"
#include "cpu/gemm_bf16_pack_avx512.h"

namespace pn {
namespace {

#include "cpu/gemm_bf16_amx.inl"

struct TileRegisters {
  bool configured = false;
  int rows[8] = {};
  int colsb[8] = {};
  alignas(64) uint8_t data[8][16][64] = {};
};

thread_local TileRegisters tl_tiles;

void require(bool ok, const char* what) {
  if (!ok) throw std::logic_error(std::string("AMX emulation: ") + what);
}

void emu_loadconfig(const TileConfig& config) {
  require(config.palette == 1, "palette must be 1");
  for (int t = 0; t < 8; ++t) {
    require(config.rows[t] <= 16 && config.colsb[t] <= 64, "tile shape over 16 rows x 64 bytes");
    tl_tiles.rows[t] = config.rows[t];
    tl_tiles.colsb[t] = config.colsb[t];
  }
  tl_tiles.configured = true;
  std::memset(tl_tiles.data, 0, sizeof tl_tiles.data);
}

void emu_load(int t, const void* base, int64_t stride) {
  require(tl_tiles.configured, "tile load before _tile_loadconfig");
  std::memset(tl_tiles.data[t], 0, sizeof tl_tiles.data[t]);
  for (int r = 0; r < tl_tiles.rows[t]; ++r)
    std::memcpy(tl_tiles.data[t][r], static_cast<const uint8_t*>(base) + r * stride, tl_tiles.colsb[t]);
}

void emu_store(int t, void* base, int64_t stride) {
  require(tl_tiles.configured, "tile store before _tile_loadconfig");
  for (int r = 0; r < tl_tiles.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, tl_tiles.data[t][r], tl_tiles.colsb[t]);
}

void emu_zero(int t) {
  require(tl_tiles.configured, "tile zero before _tile_loadconfig");
  std::memset(tl_tiles.data[t], 0, sizeof tl_tiles.data[t]);
}

float daz(uint16_t h) { return (h & 0x7F80u) == 0 ? 0.f : bf16_to_float(h); }

void emu_dpbf16ps(int c, int a, int b) {
  const TileRegisters& s = tl_tiles;
  require(s.configured, "tile product before _tile_loadconfig");
  require(s.rows[c] == s.rows[a] && s.colsb[c] == s.colsb[b] && s.colsb[a] / 4 == s.rows[b],
          "_tile_dpbf16ps shapes do not chain");
  for (int m = 0; m < s.rows[c]; ++m)
    for (int n = 0; n < s.colsb[c] / 4; ++n) {
      float acc;
      std::memcpy(&acc, &s.data[c][m][4 * n], 4);
      for (int k = 0; k < s.colsb[a] / 4; ++k) {
        uint16_t a_pair[2], b_pair[2];
        std::memcpy(a_pair, &s.data[a][m][4 * k], 4);
        std::memcpy(b_pair, &s.data[b][k][4 * n], 4);
        acc += daz(a_pair[0]) * daz(b_pair[0]);
        acc += daz(a_pair[1]) * daz(b_pair[1]);
      }
      std::memcpy(&tl_tiles.data[c][m][4 * n], &acc, 4);
    }
}

// The hardware policy's twin (gemm_bf16_amx.cpp), operation for operation.
struct EmulatedTiles {
  static void configure() { emu_loadconfig(TileConfig{}); }
  static void release() { tl_tiles.configured = false; }
  static void zero_c() {
    for (int t = 0; t < 4; ++t) emu_zero(t);
  }
  static void load_c(const float* p, int64_t stride) {
    emu_load(0, p, stride);
    emu_load(1, p + 16, stride);
    emu_load(2, p + 16 * (stride / 4), stride);
    emu_load(3, p + 16 * (stride / 4) + 16, stride);
  }
  static void store_c(float* p, int64_t stride) {
    emu_store(0, p, stride);
    emu_store(1, p + 16, stride);
    emu_store(2, p + 16 * (stride / 4), stride);
    emu_store(3, p + 16 * (stride / 4) + 16, stride);
  }
  static void step(const uint16_t* a, const uint16_t* b) {
    emu_load(4, a, 64);
    emu_load(5, a + 512, 64);
    emu_load(6, b, 64);
    emu_load(7, b + 512, 64);
    emu_dpbf16ps(0, 4, 6);
    emu_dpbf16ps(1, 4, 7);
    emu_dpbf16ps(2, 5, 6);
    emu_dpbf16ps(3, 5, 7);
  }
};

void block(int64_t kc_padded, const uint16_t* a, int64_t mc, const uint16_t* b, int64_t nc, const Bf16Epilogue& ep) {
  amx_block<EmulatedTiles>(kc_padded, a, mc, b, nc, ep);
}

}  // namespace

// The hardware path's tile shapes and packers; smaller cache blocks, so that the tests' sizes cross
// K, M and N blocks (and with them every epilogue stage) at a fraction of the emulation's cost.
const Bf16GemmKernel& bf16_kernel_amx_emulated() {
  static const Bf16GemmKernel kernel{"amx_emulated", kAmxMR, kAmxNR, kAmxKStep, 128, 64, 96, &amx_pack_a,
                                     &amx_pack_b, &block};
  return kernel;
}

}  // namespace pn
