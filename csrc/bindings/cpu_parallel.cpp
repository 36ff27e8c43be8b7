// Bindings of the kernels' team sizing (cpu/parallel_team.h): read and steer it from tests and
// benchmarks.
#include "bindings.h"
#include "cpu/parallel_team.h"

namespace pn {

void bind_parallel(py::module_& m) {
  m.def("team_threads", [](double work_ns) { return team_threads(work_ns); }, py::arg("work_ns") = 0.0,
        "Threads the next kernel's parallel region gets: at most the cores other runnable threads leave;\n"
        "1 while helper threads arrive late, unless the region would take work_ns >= 2 ms on one thread;\n"
        "1 for a region worth under 10 handoffs.");
  m.def("team_region_late", [](int64_t lost_ns, int64_t wall_ns) { return team_detail::region_late(lost_ns, wall_ns); },
        py::arg("lost_ns"), py::arg("wall_ns"),
        "Whether a region of wall_ns that lost lost_ns to a late helper counts as late.");
  m.def("team_record_region", [](bool late, double work_ns) { team_detail::record_region(late, work_ns); },
        py::arg("late"), py::arg("work_ns") = 0.0,
        "Book one full-team region into the late history, as a timed region does (tests).");
  m.def("team_adaptive", [] { return team_adaptive(); }, "Whether the team shrinks on a loaded machine.");
  m.def("set_team_adaptive", [](bool on) { set_team_adaptive(on); }, py::arg("on"),
        "Turn the shrinking on or off (off: every region gets omp_get_max_threads()).");
  m.def("team_late_history", [] { return team_late_history(); },
        "Bits of the last 16 timed regions, 1 where a helper thread arrived late (newest lowest).");
  m.def("set_team_late_history", [](uint32_t bits) { set_team_late_history(bits); }, py::arg("bits"),
        "Set the late-region history (tests).");
  m.def("team_handoff_ns", [] { return team_handoff_ns(); },
        "The estimated cost (ns) of a region's helper thread (twice its arrival delay), from the timed regions.");
  m.def("set_team_handoff_ns", [](int64_t ns) { set_team_handoff_ns(ns); }, py::arg("ns"),
        "Set the handoff estimate (tests).");
  m.def("team_load_sampling", [] { return team_load_sampling(); },
        "Whether regions are sized by the machine's runnable threads (/proc/loadavg, Linux).");
  m.def("set_team_load_sampling", [](bool on) { set_team_load_sampling(on); }, py::arg("on"),
        "Turn the load rule on or off; either way the load average starts again from 0 (tests).");
  m.def("team_busy_cores", [] { return team_busy_cores(); },
        "The average count of threads runnable elsewhere, from the samples so far.");
  m.def("team_record_load_sample",
        [](int runnable) {
          team_detail::record_load_sample(runnable);
          // The next real read waits a second, so a test's samples are what the rule sees.
          team_detail::next_load_sample_ns.store(team_detail::now_ns() + 1000000000, std::memory_order_relaxed);
        },
        py::arg("runnable"),
        "Fold one runnable-thread count (this thread included) into the average and hold off the real\n"
        "reads for a second (tests).");
  m.def("num_procs", [] { return omp_get_num_procs(); }, "Processors this process may run on (omp_get_num_procs).");
  m.def("team_runnable_threads", [] { return team_detail::read_runnable_threads(); },
        "Runnable threads on the machine now (/proc/loadavg; -1 where unknown).");
  m.def("team_record_handoff", [](int64_t handoff_ns) { team_detail::record_handoff(handoff_ns); },
        py::arg("handoff_ns"), "Fold one region's handoff into the estimate, as a timed region does (tests).");
}

}  // namespace pn
