// Bindings of the 2-D convolution kernels (csrc/cpu/conv.h). Every array is checked here against the
// shape the others imply, so no combination of arguments can make a kernel read or write out of
// bounds; the outputs are allocated by the caller (pyneural/kernels/conv.py) and written in place.
// nhwc=True takes channels_last memory: NHWC tensors and OHWI weights.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>

#include "bindings.h"
#include "cpu/conv.h"

namespace pn {

namespace {

using Pair = std::pair<int64_t, int64_t>;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

void check_ndim(const py::array& a, const char* name, int ndim) {
  PN_CHECK(a.ndim() == ndim, name, ": expected ", ndim, " dimensions, got shape ", shape_str(shape_of(a)));
}

void check_shape(const py::array& a, const char* name, const std::vector<int64_t>& want) {
  PN_CHECK(shape_of(a) == want, name, ": expected shape ", shape_str(want), ", got ", shape_str(shape_of(a)));
}

// The kernels write the output while reading the inputs: they must not share memory.
void check_disjoint(const py::array& out, const char* out_name, const py::array& in, const char* in_name) {
  const char* o = static_cast<const char*>(out.data());
  const char* i = static_cast<const char*>(in.data());
  PN_CHECK(o + out.nbytes() <= i || i + in.nbytes() <= o, out_name, " must not overlap ", in_name);
}

// NCHW / OIHW shapes as they are, NHWC / OHWI ones permuted to the logical order.
std::vector<int64_t> logical(std::vector<int64_t> shape, bool nhwc) {
  return nhwc ? std::vector<int64_t>{shape[0], shape[3], shape[1], shape[2]} : shape;
}

// The array shape of logical (N, C, H, W) in the layout.
std::vector<int64_t> in_layout(int64_t n, int64_t c, int64_t h, int64_t w, bool nhwc) {
  return nhwc ? std::vector<int64_t>{n, h, w, c} : std::vector<int64_t>{n, c, h, w};
}

Conv2dShape shape_from(const std::vector<int64_t>& xa, const std::vector<int64_t>& wa, Pair stride, Pair padding,
                       Pair dilation, int64_t groups, bool nhwc) {
  const std::vector<int64_t> x = logical(xa, nhwc), w = logical(wa, nhwc);
  return make_conv2d_shape(x[0], x[1], x[2], x[3], w[0], w[1], w[2], w[3], stride.first, stride.second,
                           padding.first, padding.second, dilation.first, dilation.second, groups);
}

// The arrays of one pass: two inputs and the output it writes in place. Construction makes the
// checks that need no shape (float32, four dimensions, inputs first); `check_grid` the ones that do:
// the array on the output grid (y, or dy) against the shape the others imply, and the output
// sharing no memory with either input. Messages name each array as "fn: name".
class PassArrays {
 public:
  PassArrays(const char* fn, const py::array& a, const char* a_name, const py::array& b, const char* b_name,
             py::array& out, const char* out_name)
      : a_(a), b_(b), out_(out), a_name_(a_name), b_name_(b_name),
        a_label_(label(fn, a_name)), b_label_(label(fn, b_name)), out_label_(label(fn, out_name)) {
    a_ptr = data_ptr<float>(a, a_label_.c_str());
    b_ptr = data_ptr<float>(b, b_label_.c_str());
    out_ptr = mutable_data_ptr<float>(out, out_label_.c_str());
    check_ndim(a, a_label_.c_str(), 4);
    check_ndim(b, b_label_.c_str(), 4);
    check_ndim(out, out_label_.c_str(), 4);
  }

  // `grid` is the first input (backward passes: dy) or the output (forward: y).
  void check_grid(const py::array& grid, const Conv2dShape& s, bool nhwc) const {
    const std::string& grid_label = &grid == &a_ ? a_label_ : out_label_;
    check_shape(grid, grid_label.c_str(), in_layout(s.N, s.Co, s.Ho, s.Wo, nhwc));
    check_disjoint(out_, out_label_.c_str(), a_, a_name_);
    check_disjoint(out_, out_label_.c_str(), b_, b_name_);
  }

  const float* a_ptr;
  const float* b_ptr;
  float* out_ptr;

 private:
  static std::string label(const char* fn, const char* name) { return std::string(fn) + ": " + name; }

  const py::array& a_;
  const py::array& b_;
  py::array& out_;
  const char *a_name_, *b_name_;
  std::string a_label_, b_label_, out_label_;
};

void forward(const py::array& x, const py::array& w, const std::optional<py::array>& bias, py::array& y, Pair stride,
             Pair padding, Pair dilation, int64_t groups, bool relu, const std::string& parallel, bool nhwc) {
  const PassArrays pass("conv2d_forward", x, "x", w, "w", y, "y");
  const Conv2dShape s = shape_from(shape_of(x), shape_of(w), stride, padding, dilation, groups, nhwc);
  pass.check_grid(y, s, nhwc);
  const float* bp = nullptr;
  if (bias) {
    bp = data_ptr<float>(*bias, "conv2d_forward: bias");
    check_shape(*bias, "conv2d_forward: bias", {s.Co});
    check_disjoint(y, "conv2d_forward: y", *bias, "bias");
  }
  const ConvParallel par = conv_parallel_from_name(parallel.c_str());
  py::gil_scoped_release release;
  (nhwc ? conv2d_forward_nhwc : conv2d_forward)(s, pass.a_ptr, pass.b_ptr, bp, relu, pass.out_ptr, par);
}

void backward_data(const py::array& dy, const py::array& w, py::array& dx, Pair stride, Pair padding, Pair dilation,
                   int64_t groups, const std::string& parallel, bool nhwc) {
  const PassArrays pass("conv2d_backward_data", dy, "dy", w, "w", dx, "dx");
  const Conv2dShape s = shape_from(shape_of(dx), shape_of(w), stride, padding, dilation, groups, nhwc);
  pass.check_grid(dy, s, nhwc);
  const ConvParallel par = conv_parallel_from_name(parallel.c_str());
  py::gil_scoped_release release;
  (nhwc ? conv2d_backward_data_nhwc : conv2d_backward_data)(s, pass.a_ptr, pass.b_ptr, pass.out_ptr, par);
}

void backward_weight(const py::array& dy, const py::array& x, py::array& dw, Pair stride, Pair padding,
                     Pair dilation, int64_t groups, const std::string& parallel, bool nhwc) {
  const PassArrays pass("conv2d_backward_weight", dy, "dy", x, "x", dw, "dw");
  const Conv2dShape s = shape_from(shape_of(x), shape_of(dw), stride, padding, dilation, groups, nhwc);
  pass.check_grid(dy, s, nhwc);
  const ConvParallel par = conv_parallel_from_name(parallel.c_str());
  py::gil_scoped_release release;
  (nhwc ? conv2d_backward_weight_nhwc : conv2d_backward_weight)(s, pass.a_ptr, pass.b_ptr, pass.out_ptr, par);
}

}  // namespace

void bind_conv(py::module_& m) {
  m.def("conv2d_forward", &forward, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("relu") = false,
        py::arg("parallel") = "auto", py::arg("nhwc") = false,
        "y = conv2d(x, w) (+ bias, then ReLU if relu), written into y (N, Co, Ho, Wo). float32, NCHW; "
        "nhwc=True: x (N, H, W, C), w (Co, kh, kw, C/groups), y (N, Ho, Wo, Co).");
  m.def("conv2d_backward_data", &backward_data, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("parallel") = "auto",
        py::arg("nhwc") = false,
        "dx = gradient of conv2d with respect to its input, written into dx (N, C, H, W; nhwc: N, H, W, C).");
  m.def("conv2d_backward_weight", &backward_weight, py::arg("dy"), py::arg("x"), py::arg("dw"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("parallel") = "auto",
        py::arg("nhwc") = false,
        "dw = gradient of conv2d with respect to its weight, written into dw (Co, C/groups, kh, kw; nhwc: "
        "Co, kh, kw, C/groups).");
}

}  // namespace pn
