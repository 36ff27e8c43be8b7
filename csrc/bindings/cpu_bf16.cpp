// Bindings of the bf16 kernels: conversions (csrc/cpu/bf16_convert*.cpp), the bf16 GEMM and its
// path choice (csrc/cpu/gemm_bf16*.cpp). bf16 arrays arrive as uint16 arrays of their bit patterns
// (the Python wrappers view ml_dtypes.bfloat16 arrays so); everything is checked here too.
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "bindings.h"
#include "cpu/bf16.h"
#include "cpu/gemm_bf16.h"

namespace pn {

namespace {

Bf16ConvertPath convert_path(const std::string& name) {
  return name.empty() ? best_convert_path() : convert_path_from_name(name);
}

void check_same_size(const py::array& src, const py::array& dst, const char* fn) {
  PN_CHECK(src.size() == dst.size(), fn, ": src has ", src.size(), " elements but dst has ", dst.size());
}

void to_bf16_binding(const py::array& src, py::array dst, const std::string& path) {
  const float* s = data_ptr<float>(src, "to_bf16: src");
  uint16_t* d = mutable_data_ptr<uint16_t>(dst, "to_bf16: dst");
  check_same_size(src, dst, "to_bf16");
  const Bf16ConvertPath p = convert_path(path);
  py::gil_scoped_release release;
  float_to_bf16_array(s, d, src.size(), p);
}

void to_float32_binding(const py::array& src, py::array dst, const std::string& path) {
  const uint16_t* s = data_ptr<uint16_t>(src, "to_float32: src");
  float* d = mutable_data_ptr<float>(dst, "to_float32: dst");
  check_same_size(src, dst, "to_float32");
  const Bf16ConvertPath p = convert_path(path);
  py::gil_scoped_release release;
  bf16_to_float_array(s, d, src.size(), p);
}

// out = relu?(alpha * op(a) @ op(b) + beta * out + bias): a, b uint16 (bf16 bits), out float32 or
// uint16 (bf16 bits), all 2-D and C-contiguous; bias None or float32 of shape (N,).
void gemm_bf16_binding(const py::array& a, const py::array& b, py::array out, bool trans_a, bool trans_b, float alpha,
                       float beta, const std::optional<py::array>& bias, bool relu, const std::string& isa) {
  Bf16GemmArgs g;
  g.a = data_ptr<uint16_t>(a, "gemm_bf16: a (bf16 bits)");
  g.b = data_ptr<uint16_t>(b, "gemm_bf16: b (bf16 bits)");
  g.c_bf16 = py::dtype::of<uint16_t>().is(out.dtype());
  g.c = g.c_bf16 ? static_cast<void*>(mutable_data_ptr<uint16_t>(out, "gemm_bf16: out"))
                 : static_cast<void*>(mutable_data_ptr<float>(out, "gemm_bf16: out"));
  PN_CHECK(a.ndim() == 2 && b.ndim() == 2 && out.ndim() == 2, "gemm_bf16: a, b and out must be 2-D, got ", a.ndim(),
           "-D, ", b.ndim(), "-D and ", out.ndim(), "-D");
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.M = trans_a ? a.shape(1) : a.shape(0);
  g.K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0);
  g.N = trans_b ? b.shape(0) : b.shape(1);
  PN_CHECK(g.K == Kb, "gemm_bf16: op(a) is ", g.M, "x", g.K, " but op(b) is ", Kb, "x", g.N, " (a ", a.shape(0), "x",
           a.shape(1), " trans_a=", trans_a, ", b ", b.shape(0), "x", b.shape(1), " trans_b=", trans_b, ")");
  PN_CHECK(out.shape(0) == g.M && out.shape(1) == g.N, "gemm_bf16: out must be ", g.M, "x", g.N, ", got ",
           out.shape(0), "x", out.shape(1));
  PN_CHECK(g.M > 0 && g.N > 0 && g.K > 0, "gemm_bf16: zero-size dimension (M=", g.M, ", N=", g.N, ", K=", g.K, ")");
  if (bias) {
    g.bias = data_ptr<float>(*bias, "gemm_bf16: bias");
    PN_CHECK(bias->ndim() == 1 && bias->shape(0) == g.N, "gemm_bf16: bias must have shape (", g.N, ",), got ",
             bias->ndim(), "-D of ", bias->size(), " elements");
  }
  const char* out_begin = static_cast<const char*>(out.data());
  const char* out_end = out_begin + out.nbytes();
  for (const py::array* in : {&a, &b}) {
    const char* begin = static_cast<const char*>(in->data());
    PN_CHECK(begin + in->nbytes() <= out_begin || out_end <= begin, "gemm_bf16: out (", g.M, "x", g.N,
             ") overlaps input ", in == &a ? "a" : "b", "; pass a separate array");
  }
  g.lda = a.shape(1);
  g.ldb = b.shape(1);
  g.ldc = g.N;
  g.alpha = alpha;
  g.beta = beta;
  g.relu = relu;
  const Bf16GemmIsa path = isa.empty() ? bf16_gemm_active_isa() : bf16_gemm_isa_from_name(isa);
  py::gil_scoped_release release;
  gemm_bf16(g, path);
}

}  // namespace

void bind_bf16(py::module_& m) {
  m.def("to_bf16", &to_bf16_binding, py::arg("src"), py::arg("dst"), py::arg("path") = "",
        "dst (uint16 bf16 bits) = src (float32) rounded to nearest even; path '' = the fastest here.");
  m.def("to_float32", &to_float32_binding, py::arg("src"), py::arg("dst"), py::arg("path") = "",
        "dst (float32) = src (uint16 bf16 bits), exactly.");
  m.def("bf16_convert_best_path", [] { return convert_path_name(best_convert_path()); },
        "Fastest bf16 conversion path here: 'avx512bf16', 'avx512' or 'generic'.");
  m.def("gemm_bf16", &gemm_bf16_binding, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.f, py::arg("beta") = 0.f, py::arg("bias") = py::none(),
        py::arg("relu") = false, py::arg("isa") = "",
        "out = relu?(alpha * op(a) @ op(b) + beta * out + bias), bf16 a/b as uint16; isa '' = the active path.");
  m.def("bf16_gemm_detected_isa", [] { return bf16_gemm_isa_name(bf16_gemm_detected_isa()); },
        "Best bf16 GEMM path this CPU and OS allow: 'amx', 'avx512bf16' or 'generic'.");
  m.def("bf16_gemm_active_isa", [] { return bf16_gemm_isa_name(bf16_gemm_active_isa()); },
        "bf16 GEMM path calls take by default (PYNEURAL_BF16_ISA, else the detected one).");
  m.def("set_bf16_gemm_isa", [](const std::string& name) { set_bf16_gemm_isa(bf16_gemm_isa_from_name(name)); },
        py::arg("name"), "Change the default bf16 GEMM path; raises ValueError if it is not available.");
  m.def("bf16_gemm_isa_available",
        [](const std::string& name) {
          try {
            bf16_gemm_isa_from_name(name);
            return true;
          } catch (const std::invalid_argument&) {
            return false;
          }
        },
        py::arg("name"), "Whether a bf16 GEMM path can run here.");
  m.def("bf16_dot_peak_gflops",
        [](const std::string& isa, double seconds) {
          const Bf16GemmIsa path = bf16_gemm_isa_from_name(isa);
          py::gil_scoped_release release;
          return bf16_dot_peak_gflops(path, seconds);
        },
        py::arg("isa"), py::arg("seconds") = 0.2,
        "GFLOP/s of a loop of _tile_dpbf16ps ('amx') or vdpbf16ps ('avx512bf16') on resident operands, all threads.");
}

}  // namespace pn
