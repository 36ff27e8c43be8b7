// Run-time choice of the SIMD path (see csrc/common/cpu_features.h).
#include "common/cpu_features.h"

#include <atomic>

#include "common/check.h"

namespace pn {

namespace {
Isa detect() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
#endif
  return Isa::generic;
}

std::atomic<int>& active() {
  static std::atomic<int> isa{static_cast<int>(detected_isa())};
  return isa;
}
}  // namespace

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa active_isa() { return static_cast<Isa>(active().load(std::memory_order_relaxed)); }

void set_isa(Isa isa) {
  PN_CHECK(static_cast<int>(isa) <= static_cast<int>(detected_isa()), "set_isa: this CPU supports at most '",
           isa_name(detected_isa()), "', not '", isa_name(isa), "'");
  active().store(static_cast<int>(isa), std::memory_order_relaxed);
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "generic";
  }
}

Isa isa_from_name(const std::string& name) {
  if (name == "avx512") return Isa::avx512;
  if (name == "avx2") return Isa::avx2;
  if (name == "generic") return Isa::generic;
  PN_CHECK(false, "unknown ISA '", name, "' (expected 'generic', 'avx2' or 'avx512')");
  return Isa::generic;
}

}  // namespace pn

// ---- bf16 features -----------------------------------------------------------------------------

#if defined(__x86_64__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace pn {

namespace {

#if defined(__x86_64__)
struct CpuidRegs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
  CpuidRegs r;
  if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) return CpuidRegs{};
  return r;
}

// XCR0: which register states the OS saves and restores (0 where XGETBV is not enabled).
unsigned long long xcr0() {
  if (!(cpuid(1, 0).ecx & (1u << 27))) return 0;  // OSXSAVE
  unsigned lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<unsigned long long>(hi) << 32) | lo;
}

constexpr unsigned long long kXcr0Avx512 = 0xE6;                // SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
constexpr unsigned long long kXcr0Tiles = (1ull << 17) | (1ull << 18);  // XTILECFG, XTILEDATA

bool detect_avx512bf16() {
  const CpuidRegs leaf7 = cpuid(7, 0), leaf7_1 = cpuid(7, 1);
  const bool avx512 = (leaf7.ebx & (1u << 16)) && (leaf7.ebx & (1u << 17)) &&  // F, DQ
                      (leaf7.ebx & (1u << 30)) && (leaf7.ebx & (1u << 31));     // BW, VL
  const bool bf16 = leaf7_1.eax & (1u << 5);
  return avx512 && bf16 && (xcr0() & kXcr0Avx512) == kXcr0Avx512;
}

// "" when AMX bf16 tiles may be used by this process, else the reason they may not.
const char* detect_amx() {
  const CpuidRegs leaf7 = cpuid(7, 0);
  if (!(leaf7.edx & (1u << 24)) || !(leaf7.edx & (1u << 22))) return "the CPU has no AMX-TILE/AMX-BF16";
  if (!detect_avx512bf16()) return "the CPU has AMX but no usable AVX512-BF16";
  if ((xcr0() & kXcr0Tiles) != kXcr0Tiles) return "the OS does not enable the AMX tile state (XCR0)";
#if defined(__linux__)
  // Since Linux 5.16 tile data (8 KiB of state per thread) is off until the process asks for it.
  constexpr long kArchGetXcompPerm = 0x1022, kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0)
    return "Linux refused arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)";
  unsigned long permitted = 0;
  if (syscall(SYS_arch_prctl, kArchGetXcompPerm, &permitted) != 0 || !(permitted & (1ul << kXfeatureXtiledata)))
    return "Linux did not grant AMX tile data after ARCH_REQ_XCOMP_PERM";
#endif
  return "";
}
#else
bool detect_avx512bf16() { return false; }
const char* detect_amx() { return "not an x86-64 CPU"; }
#endif

}  // namespace

bool cpu_has_avx512bf16() {
  static const bool has = detect_avx512bf16();
  return has;
}

const char* amx_unavailable_reason() {
  static const char* const reason = detect_amx();  // the one permission request, made once
  return reason;
}

bool cpu_has_amx_bf16() { return amx_unavailable_reason()[0] == '\0'; }

}  // namespace pn
