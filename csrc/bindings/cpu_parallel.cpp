// Bindings of the kernels' team sizing (cpu/parallel_team.h): read and steer it from tests and
// benchmarks.
#include "bindings.h"
#include "cpu/parallel_team.h"

namespace pn {

void bind_parallel(py::module_& m) {
  m.def("team_threads", [] { return team_threads(); },
        "Threads the next kernel's parallel region gets (1 while helper threads arrive late).");
  m.def("team_adaptive", [] { return team_adaptive(); }, "Whether the team shrinks on a loaded machine.");
  m.def("set_team_adaptive", [](bool on) { set_team_adaptive(on); }, py::arg("on"),
        "Turn the shrinking on or off (off: every region gets omp_get_max_threads()).");
  m.def("team_late_history", [] { return team_late_history(); },
        "Bits of the last 16 timed regions, 1 where a helper thread arrived late (newest lowest).");
  m.def("set_team_late_history", [](uint32_t bits) { set_team_late_history(bits); }, py::arg("bits"),
        "Set the late-region history (tests).");
}

}  // namespace pn
