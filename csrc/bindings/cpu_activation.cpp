// Bindings of the activation kernels: _C.bias_relu(x, bias, out, relu), _C.relu_backward(dy, y, dx).
#include "bindings.h"
#include "cpu/activation.h"

namespace pn {

namespace {

void require_same_shape(const py::array& a, const py::array& b, const char* what) {
  PN_CHECK(shape_of(a) == shape_of(b), what, ": shapes differ (", std::string(py::str(a.attr("shape"))), " vs ",
           std::string(py::str(b.attr("shape"))), ")");
}

// Inputs and outputs may be the same array (in place) but must not partially overlap.
void require_identical_or_disjoint(const py::array& in, const py::array& out, const char* what) {
  const char* ib = static_cast<const char*>(in.data());
  const char* ob = static_cast<const char*>(out.data());
  PN_CHECK(ib == ob || ib + in.nbytes() <= ob || ob + out.nbytes() <= ib, what,
           ": out partially overlaps an input (it may be the input itself, or separate)");
}

void bias_relu_binding(const py::array& x, const py::object& bias, py::array out, bool relu) {
  const float* px = data_ptr<float>(x, "bias_relu: x");
  float* py_ = mutable_data_ptr<float>(out, "bias_relu: out");
  PN_CHECK(x.ndim() >= 2, "bias_relu: x must have at least 2 dimensions, got ", x.ndim());
  require_same_shape(x, out, "bias_relu: x and out");
  require_identical_or_disjoint(x, out, "bias_relu");
  const int64_t outer = x.shape(0), channels = x.shape(1);
  PN_CHECK(x.size() > 0, "bias_relu: x has a zero-size dimension");
  const int64_t inner = x.size() / (outer * channels);
  const float* pb = nullptr;
  if (!bias.is_none()) {
    PN_CHECK(py::isinstance<py::array>(bias), "bias_relu: bias must be a numpy array or None");
    py::array b = bias.cast<py::array>();
    pb = data_ptr<float>(b, "bias_relu: bias");
    PN_CHECK(b.ndim() == 1 && b.shape(0) == channels, "bias_relu: bias must have shape (", channels, ",), got ",
             std::string(py::str(b.attr("shape"))));
    require_identical_or_disjoint(b, out, "bias_relu");
  }
  py::gil_scoped_release release;
  bias_relu(px, pb, py_, outer, channels, inner, relu);
}

void relu_backward_binding(const py::array& dy, const py::array& y, py::array dx) {
  const float* pdy = data_ptr<float>(dy, "relu_backward: dy");
  const float* py_ = data_ptr<float>(y, "relu_backward: y");
  float* pdx = mutable_data_ptr<float>(dx, "relu_backward: dx");
  require_same_shape(dy, y, "relu_backward: dy and y");
  require_same_shape(dy, dx, "relu_backward: dy and dx");
  require_identical_or_disjoint(dy, dx, "relu_backward");
  require_identical_or_disjoint(y, dx, "relu_backward");
  py::gil_scoped_release release;
  relu_backward(pdy, py_, pdx, static_cast<int64_t>(dy.size()));
}

}  // namespace

void bind_activation(py::module_& m) {
  m.def("bias_relu", &bias_relu_binding, py::arg("x"), py::arg("bias"), py::arg("out"), py::arg("relu") = true,
        "out = max(x + bias along axis 1, 0) (float32; bias may be None; out may be x).");
  m.def("relu_backward", &relu_backward_binding, py::arg("dy"), py::arg("y"), py::arg("dx"),
        "dx = dy where y > 0 else 0 (float32; dx may be dy).");
}

}  // namespace pn
