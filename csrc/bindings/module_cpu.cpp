// pyneural._C: the CPU kernels. Each family binds itself in csrc/bindings/cpu_<family>.cpp.
#include "bindings.h"
#include "common/cpu_features.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyneural CPU kernels (float32, NCHW, OpenMP + run-time SIMD dispatch)";
  m.def("detected_isa", [] { return pn::isa_name(pn::detected_isa()); },
        "Best SIMD path this CPU supports: 'avx512', 'avx2' or 'generic'.");
  m.def("active_isa", [] { return pn::isa_name(pn::active_isa()); }, "SIMD path the kernels take now.");
  m.def("set_isa", [](const std::string& name) { pn::set_isa(pn::isa_from_name(name)); }, py::arg("name"),
        "Narrow the SIMD path (for tests and benchmarks); raises ValueError if the CPU lacks it.");
  pn::bind_gemm(m);
  pn::bind_conv(m);
  pn::bind_pool(m);
  pn::bind_activation(m);
  pn::bind_softmax(m);
  pn::bind_embedding(m);
  pn::bind_batchnorm(m);
  pn::bind_layernorm(m);
  pn::bind_bf16(m);
  pn::bind_optim(m);
  pn::bind_conv_bf16(m);
  pn::bind_parallel(m);
}
