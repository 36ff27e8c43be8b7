// Bindings of the row-normalisation kernels (LayerNorm, GroupNorm): _C.norm_rows_forward and
// _C.norm_rows_backward. x-shaped arrays are float32, C-contiguous and 2-D (rows, D); per-row arrays
// are (rows,); parameters (groups * D / inner,) or None. Every argument is checked here.
#include "bindings.h"
#include "cpu/layernorm.h"

namespace pn {

namespace {

struct Layout {
  int64_t rows, D, groups, inner;
};

Layout layout_of(const char* fn, const py::array& x, int64_t groups, int64_t inner) {
  PN_CHECK(x.ndim() == 2, fn, ": x must be 2-D (rows, D), got ", x.ndim(), " dimensions");
  PN_CHECK(x.size() > 0, fn, ": x has a zero-size dimension");
  PN_CHECK(groups >= 1 && inner >= 1, fn, ": groups and inner must be >= 1, got ", groups, " and ", inner);
  PN_CHECK(x.shape(1) % inner == 0, fn, ": inner ", inner, " does not divide the row length ", x.shape(1));
  return {x.shape(0), x.shape(1), groups, inner};
}

std::string shape_str(const py::array& a) { return std::string(py::str(a.attr("shape"))); }

void require_shape(const char* fn, const py::array& a, const char* name, std::vector<int64_t> shape) {
  PN_CHECK(shape_of(a) == shape, fn, ": ", name, " has shape ", shape_str(a), ", expected ",
           shape.size() == 1 ? concat("(", shape[0], ",)") : concat("(", shape[0], ", ", shape[1], ")"));
}

bool overlap(const py::array& a, const py::array& b) {
  const char* pa = static_cast<const char*>(a.data());
  const char* pb = static_cast<const char*>(b.data());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

void require_disjoint(const char* fn, const std::vector<const py::array*>& inputs, const py::array& out,
                      const char* name) {
  for (const py::array* in : inputs) PN_CHECK(!overlap(*in, out), fn, ": ", name, " overlaps an input");
}

// A float32 (n,) array or None: its data, or null.
const float* optional_param(const char* fn, const py::object& a, const char* name, int64_t n,
                            std::vector<py::array>& keep) {
  if (a.is_none()) return nullptr;
  PN_CHECK(py::isinstance<py::array>(a), fn, ": ", name, " must be a numpy array or None");
  keep.push_back(a.cast<py::array>());
  require_shape(fn, keep.back(), name, {n});
  return data_ptr<float>(keep.back(), (std::string(fn) + ": " + name).c_str());
}

float* optional_out(const char* fn, const py::object& a, const char* name, std::vector<int64_t> shape,
                    std::vector<py::array>& keep, const std::vector<const py::array*>& inputs) {
  if (a.is_none()) return nullptr;
  PN_CHECK(py::isinstance<py::array>(a), fn, ": ", name, " must be a numpy array or None");
  keep.push_back(a.cast<py::array>());
  py::array& out = keep.back();
  require_shape(fn, out, name, shape);
  require_disjoint(fn, inputs, out, name);
  return mutable_data_ptr<float>(out, (std::string(fn) + ": " + name).c_str());
}

void forward_binding(const py::array& x, const py::object& weight, const py::object& bias, py::array y,
                     py::array mean, py::array rstd, int64_t groups, int64_t inner, float eps) {
  const char* fn = "norm_rows_forward";
  const float* px = data_ptr<float>(x, "norm_rows_forward: x");
  const Layout l = layout_of(fn, x, groups, inner);
  const int64_t params = l.groups * l.D / l.inner;
  std::vector<py::array> keep;
  keep.reserve(2);
  const float* pw = optional_param(fn, weight, "weight", params, keep);
  const float* pb = optional_param(fn, bias, "bias", params, keep);
  require_shape(fn, y, "y", {l.rows, l.D});
  require_shape(fn, mean, "mean", {l.rows});
  require_shape(fn, rstd, "rstd", {l.rows});
  std::vector<const py::array*> inputs{&x};
  for (const py::array& a : keep) inputs.push_back(&a);
  require_disjoint(fn, inputs, y, "y");
  require_disjoint(fn, inputs, mean, "mean");
  require_disjoint(fn, inputs, rstd, "rstd");
  PN_CHECK(!overlap(y, mean) && !overlap(y, rstd) && !overlap(mean, rstd), fn, ": y, mean and rstd must not overlap");
  float* py_ = mutable_data_ptr<float>(y, "norm_rows_forward: y");
  float* pm = mutable_data_ptr<float>(mean, "norm_rows_forward: mean");
  float* pr = mutable_data_ptr<float>(rstd, "norm_rows_forward: rstd");
  py::gil_scoped_release release;
  norm_rows_forward(px, pw, pb, py_, pm, pr, l.rows, l.D, l.groups, l.inner, eps);
}

void backward_binding(const py::array& dy, const py::array& x, const py::array& mean, const py::array& rstd,
                      const py::object& weight, const py::object& dx, const py::object& dweight,
                      const py::object& dbias, int64_t groups, int64_t inner) {
  const char* fn = "norm_rows_backward";
  const float* pdy = data_ptr<float>(dy, "norm_rows_backward: dy");
  const float* px = data_ptr<float>(x, "norm_rows_backward: x");
  const Layout l = layout_of(fn, x, groups, inner);
  const int64_t params = l.groups * l.D / l.inner;
  require_shape(fn, dy, "dy", {l.rows, l.D});
  require_shape(fn, mean, "mean", {l.rows});
  require_shape(fn, rstd, "rstd", {l.rows});
  const float* pm = data_ptr<float>(mean, "norm_rows_backward: mean");
  const float* pr = data_ptr<float>(rstd, "norm_rows_backward: rstd");
  std::vector<py::array> keep;
  keep.reserve(4);
  const float* pw = optional_param(fn, weight, "weight", params, keep);
  std::vector<const py::array*> inputs{&dy, &x, &mean, &rstd};
  if (pw != nullptr) inputs.push_back(&keep.back());
  float* pdx = optional_out(fn, dx, "dx", {l.rows, l.D}, keep, inputs);
  float* pdw = optional_out(fn, dweight, "dweight", {params}, keep, inputs);
  float* pdb = optional_out(fn, dbias, "dbias", {params}, keep, inputs);
  PN_CHECK(pdw == nullptr || pdb == nullptr || pdw != pdb, fn, ": dweight and dbias must be separate arrays");
  py::gil_scoped_release release;
  norm_rows_backward(pdy, px, pm, pr, pw, pdx, pdw, pdb, l.rows, l.D, l.groups, l.inner);
}

}  // namespace

void bind_layernorm(py::module_& m) {
  m.def("norm_rows_forward", &forward_binding, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("y"),
        py::arg("mean"), py::arg("rstd"), py::arg("groups") = 1, py::arg("inner") = 1, py::arg("eps") = 1e-5f,
        "y = (x - mean[r]) * rstd[r] * weight[p] + bias[p] per row r of x (rows, D), p = ((r % groups) * D + c) "
        "/ inner; writes mean and rstd (rows,). weight and bias may be None.");
  m.def("norm_rows_backward", &backward_binding, py::arg("dy"), py::arg("x"), py::arg("mean"), py::arg("rstd"),
        py::arg("weight"), py::arg("dx"), py::arg("dweight"), py::arg("dbias"), py::arg("groups") = 1,
        py::arg("inner") = 1,
        "Gradients of norm_rows_forward into dx (rows, D), dweight and dbias (params,); each may be None.");
}

}  // namespace pn
