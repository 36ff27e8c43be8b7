// Bindings of the bf16 convolution (csrc/cpu/conv_bf16.h). bf16 arrays arrive as uint16 arrays of
// their bit patterns; activations as C-contiguous (N, C, H, W) or, with channels_last, (N, H, W, C)
// arrays; the weight as (Co, C/groups, kh, kw). Every array is checked here against the shape the
// others imply, so no combination of arguments reads or writes out of bounds; outputs are allocated
// by the caller (pyneural/kernels/conv_bf16.py) and written in place.
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "bindings.h"
#include "cpu/conv_bf16.h"

namespace pn {

namespace {

using Pair = std::pair<int64_t, int64_t>;

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

// The logical (N, C, H, W) of a 4-D activation array in the given layout.
std::vector<int64_t> logical(const py::array& a, const char* name, ConvLayout layout) {
  const std::vector<int64_t> s = shape_of(a);
  PN_CHECK(s.size() == 4, name, ": expected 4 dimensions, got shape ", shape_str(s));
  return layout == ConvLayout::nchw ? s : std::vector<int64_t>{s[0], s[3], s[1], s[2]};
}

void check_logical(const py::array& a, const char* name, ConvLayout layout, const std::vector<int64_t>& nchw) {
  const std::vector<int64_t> want =
      layout == ConvLayout::nchw ? nchw : std::vector<int64_t>{nchw[0], nchw[2], nchw[3], nchw[1]};
  PN_CHECK(shape_of(a) == want, name, ": expected shape ", shape_str(want),
           layout == ConvLayout::nhwc ? " (N, H, W, C)" : " (N, C, H, W)", ", got ", shape_str(shape_of(a)));
}

void check_disjoint(const py::array& out, const char* out_name, const py::array& in, const char* in_name) {
  const char* o = static_cast<const char*>(out.data());
  const char* i = static_cast<const char*>(in.data());
  PN_CHECK(o + out.nbytes() <= i || i + in.nbytes() <= o, out_name, " must not overlap ", in_name);
}

// An output of float32 or bf16 bits (uint16): its pointer and whether it is bf16.
std::pair<void*, bool> output(py::array& a, const char* name) {
  if (py::dtype::of<uint16_t>().is(a.dtype())) return {mutable_data_ptr<uint16_t>(a, name), true};
  return {mutable_data_ptr<float>(a, name), false};
}

Conv2dShape shape_from(const std::vector<int64_t>& x, const py::array& w, Pair stride, Pair padding, Pair dilation,
                       int64_t groups) {
  const std::vector<int64_t> ws = shape_of(w);
  PN_CHECK(ws.size() == 4, "conv2d_bf16: w: expected 4 dimensions, got shape ", shape_str(ws));
  return make_conv2d_shape(x[0], x[1], x[2], x[3], ws[0], ws[1], ws[2], ws[3], stride.first, stride.second,
                           padding.first, padding.second, dilation.first, dilation.second, groups);
}

ConvLayout layout_of(bool channels_last) { return channels_last ? ConvLayout::nhwc : ConvLayout::nchw; }

Bf16GemmIsa isa_of(const std::string& isa) {
  return isa.empty() ? bf16_gemm_active_isa() : bf16_gemm_isa_from_name(isa);
}

void forward(const py::array& x, const py::array& w, const std::optional<py::array>& bias, py::array& y, Pair stride,
             Pair padding, Pair dilation, int64_t groups, bool relu, bool channels_last, const std::string& isa) {
  const ConvLayout layout = layout_of(channels_last);
  const uint16_t* xp = data_ptr<uint16_t>(x, "conv2d_bf16_forward: x (bf16 bits)");
  const uint16_t* wp = data_ptr<uint16_t>(w, "conv2d_bf16_forward: w (bf16 bits)");
  const auto [yp, y_bf16] = output(y, "conv2d_bf16_forward: y");
  const Conv2dShape s =
      shape_from(logical(x, "conv2d_bf16_forward: x", layout), w, stride, padding, dilation, groups);
  check_logical(y, "conv2d_bf16_forward: y", layout, {s.N, s.Co, s.Ho, s.Wo});
  check_disjoint(y, "conv2d_bf16_forward: y", x, "x");
  check_disjoint(y, "conv2d_bf16_forward: y", w, "w");
  const float* bp = nullptr;
  if (bias) {
    bp = data_ptr<float>(*bias, "conv2d_bf16_forward: bias");
    PN_CHECK(shape_of(*bias) == std::vector<int64_t>{s.Co}, "conv2d_bf16_forward: bias: expected shape (", s.Co,
             ",), got ", shape_str(shape_of(*bias)));
    check_disjoint(y, "conv2d_bf16_forward: y", *bias, "bias");
  }
  const Bf16GemmIsa path = isa_of(isa);
  py::gil_scoped_release release;
  conv2d_bf16_forward(s, layout, xp, wp, bp, relu, yp, y_bf16, path);
}

void backward_data(const py::array& dy, const py::array& w, py::array& dx, Pair stride, Pair padding, Pair dilation,
                   int64_t groups, bool channels_last, const std::string& isa) {
  const ConvLayout layout = layout_of(channels_last);
  const uint16_t* dyp = data_ptr<uint16_t>(dy, "conv2d_bf16_backward_data: dy (bf16 bits)");
  const uint16_t* wp = data_ptr<uint16_t>(w, "conv2d_bf16_backward_data: w (bf16 bits)");
  const auto [dxp, dx_bf16] = output(dx, "conv2d_bf16_backward_data: dx");
  const Conv2dShape s =
      shape_from(logical(dx, "conv2d_bf16_backward_data: dx", layout), w, stride, padding, dilation, groups);
  check_logical(dy, "conv2d_bf16_backward_data: dy", layout, {s.N, s.Co, s.Ho, s.Wo});
  check_disjoint(dx, "conv2d_bf16_backward_data: dx", dy, "dy");
  check_disjoint(dx, "conv2d_bf16_backward_data: dx", w, "w");
  const Bf16GemmIsa path = isa_of(isa);
  py::gil_scoped_release release;
  conv2d_bf16_backward_data(s, layout, dyp, wp, dxp, dx_bf16, path);
}

void backward_weight(const py::array& dy, const py::array& x, py::array& dw, Pair stride, Pair padding,
                     Pair dilation, int64_t groups, bool channels_last, const std::string& isa) {
  const ConvLayout layout = layout_of(channels_last);
  const uint16_t* dyp = data_ptr<uint16_t>(dy, "conv2d_bf16_backward_weight: dy (bf16 bits)");
  const uint16_t* xp = data_ptr<uint16_t>(x, "conv2d_bf16_backward_weight: x (bf16 bits)");
  float* dwp = mutable_data_ptr<float>(dw, "conv2d_bf16_backward_weight: dw");
  const Conv2dShape s =
      shape_from(logical(x, "conv2d_bf16_backward_weight: x", layout), dw, stride, padding, dilation, groups);
  check_logical(dy, "conv2d_bf16_backward_weight: dy", layout, {s.N, s.Co, s.Ho, s.Wo});
  check_disjoint(dw, "conv2d_bf16_backward_weight: dw", dy, "dy");
  check_disjoint(dw, "conv2d_bf16_backward_weight: dw", x, "x");
  const Bf16GemmIsa path = isa_of(isa);
  py::gil_scoped_release release;
  conv2d_bf16_backward_weight(s, layout, dyp, xp, dwp, path);
}

}  // namespace

void bind_conv_bf16(py::module_& m) {
  m.def("conv2d_bf16_forward", &forward, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("y"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("relu") = false,
        py::arg("channels_last") = false, py::arg("isa") = "",
        "y (float32 or bf16 bits) = relu?(conv2d(x, w) + bias), bf16 x/w as uint16; isa '' = the active path.");
  m.def("conv2d_bf16_backward_data", &backward_data, py::arg("dy"), py::arg("w"), py::arg("dx"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"), py::arg("channels_last") = false,
        py::arg("isa") = "", "dx (float32 or bf16 bits) = gradient of conv2d with respect to its input.");
  m.def("conv2d_bf16_backward_weight", &backward_weight, py::arg("dy"), py::arg("x"), py::arg("dw"),
        py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        py::arg("channels_last") = false, py::arg("isa") = "",
        "dw (float32, (Co, C/groups, kh, kw)) = gradient of conv2d with respect to its weight.");
}

}  // namespace pn
