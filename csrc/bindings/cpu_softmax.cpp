// Bindings of the softmax kernels: _C.softmax_rows, _C.log_softmax_rows, _C.softmax_xent_forward,
// _C.softmax_xent_backward. Every array is float32 (labels int64), C-contiguous, checked here too.
#include "bindings.h"
#include "cpu/softmax.h"

namespace pn {

namespace {

std::string shape_str(const py::array& a) { return py::str(a.attr("shape")); }

void require_2d_same(const char* fn, const py::array& x, const char* xname, const py::array& y, const char* yname) {
  PN_CHECK(x.ndim() == 2, fn, ": ", xname, " must be 2-D, got shape ", shape_str(x));
  PN_CHECK(x.size() > 0, fn, ": ", xname, " has a zero-size dimension, shape ", shape_str(x));
  PN_CHECK(shape_of(x) == shape_of(y), fn, ": ", yname, " must have shape ", shape_str(x), ", got ", shape_str(y));
}

void require_vector(const char* fn, const py::array& v, const char* name, int64_t n) {
  PN_CHECK(v.ndim() == 1 && v.shape(0) == n, fn, ": ", name, " must have shape (", n, ",), got ", shape_str(v));
}

// out may be the input itself, never a partial overlap of it.
void require_identical_or_disjoint(const char* fn, const py::array& in, const py::array& out) {
  const char* ib = static_cast<const char*>(in.data());
  const char* ob = static_cast<const char*>(out.data());
  PN_CHECK(ib == ob || ib + in.nbytes() <= ob || ob + out.nbytes() <= ib, fn, ": output partially overlaps an input");
}

void require_disjoint(const char* fn, const py::array& in, const py::array& out) {
  const char* ib = static_cast<const char*>(in.data());
  const char* ob = static_cast<const char*>(out.data());
  PN_CHECK(ib + in.nbytes() <= ob || ob + out.nbytes() <= ib, fn, ": output overlaps an input");
}

using RowsKernel = void (*)(const float*, float*, int64_t, int64_t);

void rows_binding(const char* fn, RowsKernel kernel, const py::array& x, py::array y) {
  const float* px = data_ptr<float>(x, (std::string(fn) + ": x").c_str());
  float* py_ = mutable_data_ptr<float>(y, (std::string(fn) + ": y").c_str());
  require_2d_same(fn, x, "x", y, "y");
  require_identical_or_disjoint(fn, x, y);
  py::gil_scoped_release release;
  kernel(px, py_, x.shape(0), x.shape(1));
}

void xent_forward_binding(const py::array& logits, const py::array& labels, py::array losses, py::array probs,
                          float label_smoothing) {
  const char* fn = "softmax_xent_forward";
  const float* pl = data_ptr<float>(logits, "softmax_xent_forward: logits");
  const int64_t* py_ = data_ptr<int64_t>(labels, "softmax_xent_forward: labels");
  float* ploss = mutable_data_ptr<float>(losses, "softmax_xent_forward: losses");
  float* pp = mutable_data_ptr<float>(probs, "softmax_xent_forward: probs");
  require_2d_same(fn, logits, "logits", probs, "probs");
  const int64_t n = logits.shape(0), c = logits.shape(1);
  require_vector(fn, labels, "labels", n);
  require_vector(fn, losses, "losses", n);
  require_identical_or_disjoint(fn, logits, probs);
  require_disjoint(fn, logits, losses);
  require_disjoint(fn, labels, losses);
  require_disjoint(fn, probs, losses);
  require_disjoint(fn, labels, probs);
  py::gil_scoped_release release;
  softmax_xent_forward(pl, py_, ploss, pp, n, c, label_smoothing);
}

void xent_backward_binding(const py::array& probs, const py::array& labels, const py::array& dlosses,
                           py::array dlogits, float label_smoothing) {
  const char* fn = "softmax_xent_backward";
  const float* pp = data_ptr<float>(probs, "softmax_xent_backward: probs");
  const int64_t* py_ = data_ptr<int64_t>(labels, "softmax_xent_backward: labels");
  const float* pd = data_ptr<float>(dlosses, "softmax_xent_backward: dlosses");
  float* pg = mutable_data_ptr<float>(dlogits, "softmax_xent_backward: dlogits");
  require_2d_same(fn, probs, "probs", dlogits, "dlogits");
  const int64_t n = probs.shape(0), c = probs.shape(1);
  require_vector(fn, labels, "labels", n);
  require_vector(fn, dlosses, "dlosses", n);
  require_identical_or_disjoint(fn, probs, dlogits);
  require_disjoint(fn, labels, dlogits);
  require_disjoint(fn, dlosses, dlogits);
  py::gil_scoped_release release;
  softmax_xent_backward(pp, py_, pd, pg, n, c, label_smoothing);
}

}  // namespace

void bind_softmax(py::module_& m) {
  m.def(
      "softmax_rows", [](const py::array& x, py::array y) { rows_binding("softmax_rows", softmax_rows, x, y); },
      py::arg("x"), py::arg("y"), "y = softmax of each row of the 2-D float32 array x (y may be x).");
  m.def(
      "log_softmax_rows",
      [](const py::array& x, py::array y) { rows_binding("log_softmax_rows", log_softmax_rows, x, y); },
      py::arg("x"), py::arg("y"), "y = log_softmax of each row of the 2-D float32 array x (y may be x).");
  m.def("softmax_xent_forward", &xent_forward_binding, py::arg("logits"), py::arg("labels"), py::arg("losses"),
        py::arg("probs"), py::arg("label_smoothing") = 0.f,
        "Per-sample softmax cross-entropy into losses (n,), softmax into probs (n, c); labels int64, checked.");
  m.def("softmax_xent_backward", &xent_backward_binding, py::arg("probs"), py::arg("labels"), py::arg("dlosses"),
        py::arg("dlogits"), py::arg("label_smoothing") = 0.f,
        "dlogits = dlosses[:, None] * (probs - ((1 - e) onehot(labels) + e / c)); dlogits may be probs.");
}

}  // namespace pn
