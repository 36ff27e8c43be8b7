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

}  // namespace pn
