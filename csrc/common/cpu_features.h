// Which SIMD path the CPU kernels take. Chosen once at run time from the CPU's features, so one
// build runs on any x86-64; set_isa() narrows it (tests use that to run every path this CPU has).
#pragma once
#include <string>

namespace pn {

enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

Isa detected_isa();         // the best path this CPU supports
Isa active_isa();           // the path kernels take now (detected unless narrowed)
void set_isa(Isa isa);      // throws std::invalid_argument if the CPU lacks it
const char* isa_name(Isa isa);
Isa isa_from_name(const std::string& name);

// Reduced-precision features, asked for by the bf16 kernels (gemm_bf16.cpp, bf16_convert.cpp),
// which pick their own path from these; none of them changes active_isa(). Each is checked once.
bool cpu_has_avx512bf16();  // AVX-512 F/BW/DQ/VL + AVX512-BF16, and the OS saves the zmm state
// AMX-TILE + AMX-BF16 (+ AVX512-BF16) in CPUID, tile state enabled in XCR0, and (Linux) this
// process granted tile data by arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA). The request
// is made once, on the first call, from whichever thread gets there first (a function-local static:
// thread-safe); the permission then holds for every thread of the process.
bool cpu_has_amx_bf16();
// Why cpu_has_amx_bf16() is false ("" when it is true), for error messages.
const char* amx_unavailable_reason();

}  // namespace pn
