// Bindings of the pooling kernels: _C.max_pool2d_forward / _backward, _C.avg_pool2d_forward /
// _backward. Arrays are float32 (argmax int32), C-contiguous NCHW, or NHWC with nhwc=True (shapes
// (N, H, W, C)); geometry is checked here too.
#include "bindings.h"
#include "cpu/pool.h"

namespace pn {

namespace {

using Pair = std::pair<int64_t, int64_t>;

std::string shape_str(const py::array& a) { return py::str(a.attr("shape")); }

// (N, C, H, W) of an array in the layout.
std::vector<int64_t> logical(const py::array& a, bool nhwc) {
  std::vector<int64_t> d = shape_of(a);
  if (nhwc && d.size() == 4) d = {d[0], d[3], d[1], d[2]};
  return d;
}

// The geometry of an input of logical shape `in`, checked against an output array of shape
// (N, C, OH, OW), or (N, OH, OW, C) in NHWC.
Pool2dShape checked_shape(const char* fn, const std::vector<int64_t>& in, const py::array& out, const char* out_name,
                          Pair k, Pair stride, Pair pad, bool nhwc) {
  PN_CHECK(in.size() == 4, fn, ": input must be 4-D ", nhwc ? "NHWC" : "NCHW", ", got ", in.size(), " dimensions");
  const Pool2dShape s = pool2d_shape(fn, in[0], in[1], in[2], in[3], k.first, k.second, stride.first, stride.second,
                                     pad.first, pad.second);
  const std::vector<int64_t> want = nhwc ? std::vector<int64_t>{in[0], s.OH, s.OW, in[1]}
                                         : std::vector<int64_t>{in[0], in[1], s.OH, s.OW};
  PN_CHECK(shape_of(out) == want, fn, ": ", out_name, " must have shape (", want[0], ", ", want[1], ", ", want[2], ", ",
           want[3], "), got ", shape_str(out));
  return s;
}

void require_disjoint(const char* fn, const py::array& a, const py::array& b) {
  const char* ab = static_cast<const char*>(a.data());
  const char* bb = static_cast<const char*>(b.data());
  PN_CHECK(ab + a.nbytes() <= bb || bb + b.nbytes() <= ab, fn, ": output overlaps another array");
}

void max_forward_binding(const py::array& x, py::array y, py::array argmax, Pair k, Pair stride, Pair pad,
                         bool nhwc) {
  const char* fn = "max_pool2d_forward";
  const float* px = data_ptr<float>(x, "max_pool2d_forward: x");
  float* py_ = mutable_data_ptr<float>(y, "max_pool2d_forward: y");
  int32_t* pa = mutable_data_ptr<int32_t>(argmax, "max_pool2d_forward: argmax");
  const Pool2dShape s = checked_shape(fn, logical(x, nhwc), y, "y", k, stride, pad, nhwc);
  PN_CHECK(shape_of(argmax) == shape_of(y), fn, ": argmax must have the shape of y ", shape_str(y), ", got ",
           shape_str(argmax));
  require_disjoint(fn, x, y);
  require_disjoint(fn, x, argmax);
  require_disjoint(fn, y, argmax);
  py::gil_scoped_release release;
  if (nhwc)
    max_pool2d_forward_nhwc(px, py_, pa, s, x.shape(3));
  else
    max_pool2d_forward(px, py_, pa, s);
}

// The backward needs only the planes' size and the output count, but checking the whole geometry
// catches a dy/argmax pair from a different pooling.
void max_backward_binding(const py::array& dy, const py::array& argmax, py::array dx, bool nhwc) {
  const char* fn = "max_pool2d_backward";
  const float* pdy = data_ptr<float>(dy, "max_pool2d_backward: dy");
  const int32_t* pa = data_ptr<int32_t>(argmax, "max_pool2d_backward: argmax");
  float* pdx = mutable_data_ptr<float>(dx, "max_pool2d_backward: dx");
  PN_CHECK(dy.ndim() == 4 && dx.ndim() == 4, fn, ": dy and dx must be 4-D ", nhwc ? "NHWC" : "NCHW",
           ", got shapes ", shape_str(dy), " and ", shape_str(dx));
  const std::vector<int64_t> g = logical(dy, nhwc), d = logical(dx, nhwc);
  PN_CHECK(shape_of(argmax) == shape_of(dy), fn, ": argmax ", shape_str(argmax), " must have the shape of dy ",
           shape_str(dy));
  PN_CHECK(g[0] == d[0] && g[1] == d[1], fn, ": dy ", shape_str(dy), " and dx ", shape_str(dx), " differ in N or C");
  PN_CHECK(dx.size() > 0 && dy.size() > 0, fn, ": zero-size dimension in dy ", shape_str(dy), " or dx ",
           shape_str(dx));
  PN_CHECK(d[2] * d[3] <= INT32_MAX, fn, ": planes too large for int32 argmax");
  require_disjoint(fn, dy, dx);
  require_disjoint(fn, argmax, dx);
  Pool2dShape s{d[0] * d[1], d[2], d[3], g[2], g[3], 1, 1, 1, 1, 0, 0};
  py::gil_scoped_release release;
  if (nhwc)
    max_pool2d_backward_nhwc(pdy, pa, pdx, s, d[1]);
  else
    max_pool2d_backward(pdy, pa, pdx, s);
}

void avg_forward_binding(const py::array& x, py::array y, Pair k, Pair stride, Pair pad, bool count_include_pad,
                         bool nhwc) {
  const char* fn = "avg_pool2d_forward";
  const float* px = data_ptr<float>(x, "avg_pool2d_forward: x");
  float* py_ = mutable_data_ptr<float>(y, "avg_pool2d_forward: y");
  const Pool2dShape s = checked_shape(fn, logical(x, nhwc), y, "y", k, stride, pad, nhwc);
  require_disjoint(fn, x, y);
  py::gil_scoped_release release;
  if (nhwc)
    avg_pool2d_forward_nhwc(px, py_, s, count_include_pad, x.shape(3));
  else
    avg_pool2d_forward(px, py_, s, count_include_pad);
}

void avg_backward_binding(const py::array& dy, py::array dx, Pair k, Pair stride, Pair pad, bool count_include_pad,
                          bool nhwc) {
  const char* fn = "avg_pool2d_backward";
  const float* pdy = data_ptr<float>(dy, "avg_pool2d_backward: dy");
  float* pdx = mutable_data_ptr<float>(dx, "avg_pool2d_backward: dx");
  const Pool2dShape s = checked_shape(fn, logical(dx, nhwc), dy, "dy", k, stride, pad, nhwc);
  require_disjoint(fn, dy, dx);
  py::gil_scoped_release release;
  if (nhwc)
    avg_pool2d_backward_nhwc(pdy, pdx, s, count_include_pad, dx.shape(3));
  else
    avg_pool2d_backward(pdy, pdx, s, count_include_pad);
}

}  // namespace

void bind_pool(py::module_& m) {
  m.def("max_pool2d_forward", &max_forward_binding, py::arg("x"), py::arg("y"), py::arg("argmax"),
        py::arg("kernel_size"), py::arg("stride"), py::arg("padding"), py::arg("nhwc") = false,
        "Max pooling of NCHW (nhwc: NHWC) float32 x into y, with each max's in-plane index h*W+w into "
        "argmax (int32).");
  m.def("max_pool2d_backward", &max_backward_binding, py::arg("dy"), py::arg("argmax"), py::arg("dx"),
        py::arg("nhwc") = false,
        "dx = 0, then dx[n, c].flat[argmax] += dy (float32; argmax entries are range-checked).");
  m.def("avg_pool2d_forward", &avg_forward_binding, py::arg("x"), py::arg("y"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("padding"), py::arg("count_include_pad") = true,
        py::arg("nhwc") = false, "Average pooling of NCHW float32 x into y.");
  m.def("avg_pool2d_backward", &avg_backward_binding, py::arg("dy"), py::arg("dx"), py::arg("kernel_size"),
        py::arg("stride"), py::arg("padding"), py::arg("count_include_pad") = true,
        py::arg("nhwc") = false, "Gradient of average pooling: dy spread evenly over each window into dx (float32).");
}

}  // namespace pn
