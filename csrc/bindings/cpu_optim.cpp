// Bindings of the dense optimizer steps: _C.sgd_update and _C.adam_update, in place on float32
// arrays of one size (any shapes: the caller passes flat views in the parameter's memory order).
#include "bindings.h"
#include "cpu/optim_step.h"

namespace pn {

namespace {

void check_state(const char* fn, const py::array& param, const py::array& state, const char* name) {
  PN_CHECK(state.size() == param.size(), fn, ": ", name, " has ", state.size(), " elements, the parameter ",
           param.size());
  require_disjoint(fn, param, state);
}

void sgd_binding(py::array param, const py::array& grad, const py::object& buf, double lr, double momentum,
                 double dampening, double weight_decay, bool nesterov, bool first_step) {
  const char* fn = "sgd_update";
  float* pp = mutable_data_ptr<float>(param, "sgd_update: param");
  const float* pg = data_ptr<float>(grad, "sgd_update: grad");
  check_state(fn, param, grad, "grad");
  float* pb = nullptr;
  if (!buf.is_none()) {
    py::array b = buf.cast<py::array>();
    pb = mutable_data_ptr<float>(b, "sgd_update: buf");
    check_state(fn, param, b, "buf");
    require_disjoint(fn, grad, b);
  }
  PN_CHECK((pb != nullptr) == (momentum != 0.0), fn, ": buf must be given exactly when momentum != 0");
  py::gil_scoped_release release;
  sgd_update(pp, pg, pb, param.size(), SgdStep(lr, weight_decay, momentum, dampening, nesterov), first_step);
}

void adam_binding(py::array param, const py::array& grad, py::array exp_avg, py::array exp_avg_sq, double lr,
                  double beta1, double beta2, double eps, double weight_decay, bool decoupled, double bc1, double bc2) {
  const char* fn = "adam_update";
  float* pp = mutable_data_ptr<float>(param, "adam_update: param");
  const float* pg = data_ptr<float>(grad, "adam_update: grad");
  float* pm = mutable_data_ptr<float>(exp_avg, "adam_update: exp_avg");
  float* pv = mutable_data_ptr<float>(exp_avg_sq, "adam_update: exp_avg_sq");
  check_state(fn, param, grad, "grad");
  check_state(fn, param, exp_avg, "exp_avg");
  check_state(fn, param, exp_avg_sq, "exp_avg_sq");
  require_disjoint(fn, exp_avg, exp_avg_sq);
  require_disjoint(fn, grad, exp_avg);
  require_disjoint(fn, grad, exp_avg_sq);
  PN_CHECK(bc1 > 0 && bc2 > 0, fn, ": bias corrections must be > 0, got ", bc1, " and ", bc2);
  py::gil_scoped_release release;
  adam_update(pp, pg, pm, pv, param.size(), AdamStep(lr, beta1, beta2, eps, weight_decay, decoupled, bc1, bc2));
}

}  // namespace

void bind_optim(py::module_& m) {
  m.def("sgd_update", &sgd_binding, py::arg("param"), py::arg("grad"), py::arg("buf"), py::arg("lr"),
        py::arg("momentum"), py::arg("dampening"), py::arg("weight_decay"), py::arg("nesterov"),
        py::arg("first_step"),
        "One torch.optim.SGD step in place on param (and the momentum buffer buf, None without momentum); "
        "first_step starts the buffer at the gradient.");
  m.def("adam_update", &adam_binding, py::arg("param"), py::arg("grad"), py::arg("exp_avg"), py::arg("exp_avg_sq"),
        py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("weight_decay"),
        py::arg("decoupled"), py::arg("bc1"), py::arg("bc2"),
        "One Adam (decoupled: AdamW) step in place; bc1 = 1 - beta1^t and bc2 = 1 - beta2^t at step t.");
}

}  // namespace pn
