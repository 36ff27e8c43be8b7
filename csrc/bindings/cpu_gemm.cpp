// Bindings of the gemm kernels: _C.sgemm(a, b, out, trans_a, trans_b, alpha, beta).
#include <utility>

#include "bindings.h"
#include "cpu/gemm.h"

namespace pn {

namespace {

// out = alpha * op(a) @ op(b) + beta * out on float32, C-contiguous 2-D arrays (checked here too:
// the Python wrapper is not the only possible caller).
void sgemm_binding(const py::array& a, const py::array& b, py::array out, bool trans_a, bool trans_b, float alpha,
                   float beta) {
  const float* pa = data_ptr<float>(a, "sgemm: a");
  const float* pb = data_ptr<float>(b, "sgemm: b");
  float* pc = mutable_data_ptr<float>(out, "sgemm: out");
  PN_CHECK(a.ndim() == 2 && b.ndim() == 2 && out.ndim() == 2, "sgemm: a, b and out must be 2-D, got ", a.ndim(),
           "-D, ", b.ndim(), "-D and ", out.ndim(), "-D");
  const int64_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const int64_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  PN_CHECK(K == Kb, "sgemm: op(a) is ", M, "x", K, " but op(b) is ", Kb, "x", N, " (a ", a.shape(0), "x", a.shape(1),
           " trans_a=", trans_a, ", b ", b.shape(0), "x", b.shape(1), " trans_b=", trans_b, ")");
  PN_CHECK(out.shape(0) == M && out.shape(1) == N, "sgemm: out must be ", M, "x", N, ", got ", out.shape(0), "x",
           out.shape(1));
  PN_CHECK(M > 0 && N > 0 && K > 0, "sgemm: zero-size dimension (M=", M, ", N=", N, ", K=", K, ")");
  const char* out_begin = static_cast<const char*>(out.data());
  const char* out_end = out_begin + out.nbytes();
  // The kernel reads A and B while it writes C: an overlap would silently corrupt the result.
  for (const auto& [in, name] : {std::pair<const py::array*, const char*>{&a, "a"}, {&b, "b"}}) {
    const char* begin = static_cast<const char*>(in->data());
    PN_CHECK(begin + in->nbytes() <= out_begin || out_end <= begin, "sgemm: out (", M, "x", N,
             ") overlaps input ", name, " (", in->shape(0), "x", in->shape(1), "); pass a separate array");
  }
  py::gil_scoped_release release;
  sgemm(trans_a, trans_b, M, N, K, alpha, pa, a.shape(1), pb, b.shape(1), beta, pc, N);
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("sgemm", &sgemm_binding, py::arg("a"), py::arg("b"), py::arg("out"), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("alpha") = 1.f, py::arg("beta") = 0.f,
        "out = alpha * op(a) @ op(b) + beta * out (float32, C-contiguous; beta == 0 never reads out).");
}

}  // namespace pn
