// Bindings of the batch-norm kernels: _C.channel_stats, _C.channel_affine, _C.batchnorm_backward_reduce,
// _C.batchnorm_backward_apply. x-shaped arrays are float32, C-contiguous, >= 2-D and viewed as
// (shape[0], shape[1], rest); per-channel arrays are float32 (C,). Every argument is checked here.
#include "bindings.h"
#include "cpu/batchnorm.h"

namespace pn {

namespace {

struct Dims {
  int64_t outer, channels, inner;
};

Dims dims_of(const char* fn, const py::array& x) {
  PN_CHECK(x.ndim() >= 2, fn, ": x must have at least 2 dimensions (N, C, ...), got ", x.ndim());
  PN_CHECK(x.size() > 0, fn, ": x has a zero-size dimension");
  const int64_t outer = x.shape(0), channels = x.shape(1);
  return {outer, channels, static_cast<int64_t>(x.size()) / (outer * channels)};
}

void require_like(const char* fn, const py::array& x, const py::array& a, const char* name) {
  PN_CHECK(shape_of(a) == shape_of(x), fn, ": ", name, " must have the shape of x, ",
           std::string(py::str(x.attr("shape"))), ", got ", std::string(py::str(a.attr("shape"))));
}

const float* channel_ptr(const char* fn, const py::array& a, const char* name, int64_t channels) {
  const float* p = data_ptr<float>(a, (std::string(fn) + ": " + name).c_str());
  PN_CHECK(a.ndim() == 1 && a.shape(0) == channels, fn, ": ", name, " must have shape (", channels, ",), got ",
           std::string(py::str(a.attr("shape"))));
  return p;
}

float* channel_out(const char* fn, py::array& a, const char* name, int64_t channels) {
  channel_ptr(fn, a, name, channels);
  return mutable_data_ptr<float>(a, (std::string(fn) + ": " + name).c_str());
}

// out may be an input itself, never a partial overlap of one.
void require_identical_or_disjoint(const char* fn, const py::array& in, const py::array& out) {
  const char* ib = static_cast<const char*>(in.data());
  const char* ob = static_cast<const char*>(out.data());
  PN_CHECK(ib == ob || ib + in.nbytes() <= ob || ob + out.nbytes() <= ib, fn,
           ": an output partially overlaps an input");
}

void stats_binding(const py::array& x, py::array mean, py::array var) {
  const char* fn = "channel_stats";
  const float* px = data_ptr<float>(x, "channel_stats: x");
  const Dims d = dims_of(fn, x);
  float* pm = channel_out(fn, mean, "mean", d.channels);
  float* pv = channel_out(fn, var, "var", d.channels);
  PN_CHECK(pm != pv, fn, ": mean and var must be separate arrays");
  py::gil_scoped_release release;
  channel_stats(px, pm, pv, d.outer, d.channels, d.inner);
}

void affine_binding(const py::array& x, const py::array& scale, const py::array& shift, py::array y, bool relu) {
  const char* fn = "channel_affine";
  const float* px = data_ptr<float>(x, "channel_affine: x");
  const Dims d = dims_of(fn, x);
  const float* ps = channel_ptr(fn, scale, "scale", d.channels);
  const float* pb = channel_ptr(fn, shift, "shift", d.channels);
  float* py_ = mutable_data_ptr<float>(y, "channel_affine: y");
  require_like(fn, x, y, "y");
  require_identical_or_disjoint(fn, x, y);
  require_identical_or_disjoint(fn, scale, y);
  require_identical_or_disjoint(fn, shift, y);
  py::gil_scoped_release release;
  channel_affine(px, ps, pb, py_, d.outer, d.channels, d.inner, relu);
}

// y (the fused ReLU's output) may be None.
const float* optional_like(const char* fn, const py::object& y, const py::array& x) {
  if (y.is_none()) return nullptr;
  PN_CHECK(py::isinstance<py::array>(y), fn, ": y must be a numpy array or None");
  py::array a = y.cast<py::array>();
  require_like(fn, x, a, "y");
  return data_ptr<float>(a, (std::string(fn) + ": y").c_str());
}

void reduce_binding(const py::array& dy, const py::object& y, const py::array& x, const py::array& mean,
                    const py::array& invstd, py::array sum_g, py::array sum_gx) {
  const char* fn = "batchnorm_backward_reduce";
  const float* pdy = data_ptr<float>(dy, "batchnorm_backward_reduce: dy");
  const float* px = data_ptr<float>(x, "batchnorm_backward_reduce: x");
  const Dims d = dims_of(fn, x);
  require_like(fn, x, dy, "dy");
  const float* py_ = optional_like(fn, y, x);
  const float* pm = channel_ptr(fn, mean, "mean", d.channels);
  const float* ps = channel_ptr(fn, invstd, "invstd", d.channels);
  float* pg = channel_out(fn, sum_g, "sum_g", d.channels);
  float* pgx = channel_out(fn, sum_gx, "sum_gx", d.channels);
  PN_CHECK(pg != pgx, fn, ": sum_g and sum_gx must be separate arrays");
  py::gil_scoped_release release;
  batchnorm_backward_reduce(pdy, py_, px, pm, ps, pg, pgx, d.outer, d.channels, d.inner);
}

void apply_binding(const py::array& dy, const py::object& y, const py::array& x, const py::array& mean,
                   const py::array& invstd, const py::array& scale, const py::array& mean_g,
                   const py::array& mean_gx, py::array dx) {
  const char* fn = "batchnorm_backward_apply";
  const float* pdy = data_ptr<float>(dy, "batchnorm_backward_apply: dy");
  const float* px = data_ptr<float>(x, "batchnorm_backward_apply: x");
  const Dims d = dims_of(fn, x);
  require_like(fn, x, dy, "dy");
  const float* py_ = optional_like(fn, y, x);
  const float* pm = channel_ptr(fn, mean, "mean", d.channels);
  const float* ps = channel_ptr(fn, invstd, "invstd", d.channels);
  const float* pa = channel_ptr(fn, scale, "scale", d.channels);
  const float* pmg = channel_ptr(fn, mean_g, "mean_g", d.channels);
  const float* pmgx = channel_ptr(fn, mean_gx, "mean_gx", d.channels);
  float* pdx = mutable_data_ptr<float>(dx, "batchnorm_backward_apply: dx");
  require_like(fn, x, dx, "dx");
  require_identical_or_disjoint(fn, dy, dx);
  require_identical_or_disjoint(fn, x, dx);
  if (!y.is_none()) require_identical_or_disjoint(fn, y.cast<py::array>(), dx);
  for (const py::array* a : {&mean, &invstd, &scale, &mean_g, &mean_gx}) require_identical_or_disjoint(fn, *a, dx);
  py::gil_scoped_release release;
  batchnorm_backward_apply(pdy, py_, px, pm, ps, pa, pmg, pmgx, pdx, d.outer, d.channels, d.inner);
}

}  // namespace

void bind_batchnorm(py::module_& m) {
  m.def("channel_stats", &stats_binding, py::arg("x"), py::arg("mean"), py::arg("var"),
        "mean and biased var of x[:, c, ...] for every channel c, into (C,) float32 arrays.");
  m.def("channel_affine", &affine_binding, py::arg("x"), py::arg("scale"), py::arg("shift"), py::arg("y"),
        py::arg("relu") = false, "y = x * scale[c] + shift[c] along axis 1, then max(., 0) if relu (y may be x).");
  m.def("batchnorm_backward_reduce", &reduce_binding, py::arg("dy"), py::arg("y"), py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("sum_g"), py::arg("sum_gx"),
        "Per-channel sum of g and of g * (x - mean) * invstd, g = dy masked by y > 0 when y is given.");
  m.def("batchnorm_backward_apply", &apply_binding, py::arg("dy"), py::arg("y"), py::arg("x"), py::arg("mean"),
        py::arg("invstd"), py::arg("scale"), py::arg("mean_g"), py::arg("mean_gx"), py::arg("dx"),
        "dx = scale[c] * (g - mean_g[c] - (x - mean[c]) * invstd[c] * mean_gx[c]) (dx may be dy).");
}

}  // namespace pn
