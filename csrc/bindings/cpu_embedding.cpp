// Bindings of the embedding kernels: _C.embedding_forward, _C.embedding_backward_dense and the
// class _C.EmbeddingRowGroups (the plan of the sparse backward, whose size U is known only once
// built, so Python can allocate the (U,) rows and (U, D) grads before the sum fills them).
#include <algorithm>

#include "bindings.h"
#include "cpu/embedding.h"

namespace pn {

namespace {

std::string shape_str(const py::array& a) { return py::str(a.attr("shape")); }

// `rows` must be 2-D (n, D) for n indices, with D > 0.
int64_t checked_width(const char* fn, const py::array& rows, const char* name, int64_t n) {
  PN_CHECK(rows.ndim() == 2 && rows.shape(0) == n && rows.shape(1) > 0, fn, ": ", name, " must have shape (", n,
           ", D) with D > 0, got ", shape_str(rows));
  return rows.shape(1);
}

// out is the (n, D) flat view of the indices.shape + (D,) result.
void forward_binding(const py::array& weight, const py::array& indices, py::array out) {
  const char* fn = "embedding_forward";
  const float* pw = data_ptr<float>(weight, "embedding_forward: weight");
  const int64_t* pi = data_ptr<int64_t>(indices, "embedding_forward: indices");
  float* po = mutable_data_ptr<float>(out, "embedding_forward: out");
  PN_CHECK(weight.ndim() == 2 && weight.size() > 0, fn, ": weight must be 2-D (V, D), got ", shape_str(weight));
  PN_CHECK(indices.size() > 0, fn, ": indices is empty");
  const int64_t n = indices.size(), D = checked_width(fn, out, "out", n);
  PN_CHECK(D == weight.shape(1), fn, ": out rows have ", D, " values, weight rows ", weight.shape(1));
  require_disjoint(fn, weight, out);
  require_disjoint(fn, indices, out);
  py::gil_scoped_release release;
  embedding_forward(pw, weight.shape(0), D, pi, n, po);
}

void dense_binding(const py::array& dout, const py::array& indices, py::array dweight) {
  const char* fn = "embedding_backward_dense";
  const float* pd = data_ptr<float>(dout, "embedding_backward_dense: dout");
  const int64_t* pi = data_ptr<int64_t>(indices, "embedding_backward_dense: indices");
  float* pw = mutable_data_ptr<float>(dweight, "embedding_backward_dense: dweight");
  PN_CHECK(indices.size() > 0, fn, ": indices is empty");
  const int64_t n = indices.size(), D = checked_width(fn, dout, "dout", n);
  PN_CHECK(dweight.ndim() == 2 && dweight.shape(0) > 0 && dweight.shape(1) == D, fn, ": dweight must have shape (V, ",
           D, ") with V > 0, got ", shape_str(dweight));
  require_disjoint(fn, dout, dweight);
  require_disjoint(fn, indices, dweight);
  py::gil_scoped_release release;
  embedding_backward_dense(pd, pi, n, dweight.shape(0), D, pw);
}

RowGroups make_groups(const py::array& indices, int64_t num_embeddings) {
  const int64_t* pi = data_ptr<int64_t>(indices, "EmbeddingRowGroups: indices");
  PN_CHECK(indices.size() > 0, "EmbeddingRowGroups: indices is empty");
  PN_CHECK(num_embeddings > 0, "EmbeddingRowGroups: num_embeddings must be > 0, got ", num_embeddings);
  py::gil_scoped_release release;
  return RowGroups(pi, indices.size(), num_embeddings);
}

void rows_into(const RowGroups& g, py::array rows) {
  int64_t* pr = mutable_data_ptr<int64_t>(rows, "EmbeddingRowGroups.rows_into: rows");
  PN_CHECK(rows.ndim() == 1 && rows.shape(0) == g.num_groups(), "EmbeddingRowGroups.rows_into: rows must have shape (",
           g.num_groups(), ",), got ", shape_str(rows));
  std::copy(g.rows().begin(), g.rows().end(), pr);
}

void sum_into(const RowGroups& g, const py::array& dout, py::array grads) {
  const char* fn = "EmbeddingRowGroups.sum_into";
  const float* pd = data_ptr<float>(dout, "EmbeddingRowGroups.sum_into: dout");
  float* pg = mutable_data_ptr<float>(grads, "EmbeddingRowGroups.sum_into: grads");
  const int64_t D = checked_width(fn, dout, "dout", g.num_indices());
  PN_CHECK(checked_width(fn, grads, "grads", g.num_groups()) == D, fn, ": grads must have shape (", g.num_groups(),
           ", ", D, "), got ", shape_str(grads));
  require_disjoint(fn, dout, grads);
  py::gil_scoped_release release;
  g.sum(pd, D, pg, /*at_rows=*/false);
}

void check_rows_in(const char* fn, const int64_t* idx, int64_t n, int64_t V, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    PN_CHECK(idx[i] >= 0 && idx[i] < V, fn, ": ", name, "[", i, "] = ", idx[i], " is out of range for ", V,
             " rows (expected 0 <= index < ", V, ")");
}

// Optional float32 array argument: nullptr for None, else the checked pointer.
const float* optional_ptr(const py::object& a, const char* name) {
  return a.is_none() ? nullptr : data_ptr<float>(a.cast<py::array>(), name);
}

void dot_forward_binding(const py::array& a, const py::array& ia, const py::array& b, const py::array& ib,
                         const py::object& bias_a, const py::object& bias_b, double offset, py::array out) {
  const char* fn = "embedding_dot_forward";
  const float* pa = data_ptr<float>(a, "embedding_dot_forward: a");
  const float* pb = data_ptr<float>(b, "embedding_dot_forward: b");
  const int64_t* pia = data_ptr<int64_t>(ia, "embedding_dot_forward: ia");
  const int64_t* pib = data_ptr<int64_t>(ib, "embedding_dot_forward: ib");
  float* po = mutable_data_ptr<float>(out, "embedding_dot_forward: out");
  PN_CHECK(a.ndim() == 2 && b.ndim() == 2 && a.shape(1) == b.shape(1) && a.shape(0) > 0 && b.shape(0) > 0, fn,
           ": a and b must be 2-D tables (Va, D) and (Vb, D) with the same D, got ", shape_str(a), " and ",
           shape_str(b));
  const int64_t n = ia.size();
  PN_CHECK(ib.size() == n && out.size() == n, fn, ": ia, ib and out must have the same size, got ", n, ", ",
           ib.size(), " and ", out.size());
  const float* pba = optional_ptr(bias_a, "embedding_dot_forward: bias_a");
  const float* pbb = optional_ptr(bias_b, "embedding_dot_forward: bias_b");
  if (pba)
    PN_CHECK(bias_a.cast<py::array>().size() == a.shape(0), fn, ": bias_a must have ", a.shape(0), " values, got ",
             bias_a.cast<py::array>().size());
  if (pbb)
    PN_CHECK(bias_b.cast<py::array>().size() == b.shape(0), fn, ": bias_b must have ", b.shape(0), " values, got ",
             bias_b.cast<py::array>().size());
  require_disjoint(fn, a, out);
  require_disjoint(fn, b, out);
  py::gil_scoped_release release;
  embedding_dot_forward(pa, a.shape(0), pia, pb, b.shape(0), pib, n, a.shape(1), pba, pbb, static_cast<float>(offset),
                        po);
}

void weighted_sum_into(const RowGroups& g, const py::array& w, const py::object& table, const py::array& other,
                       const py::object& grads, const py::object& wsum, double decay, const py::object& self_table,
                       const py::object& self_bias) {
  const char* fn = "EmbeddingRowGroups.weighted_sum_into";
  const float* pw = data_ptr<float>(w, "EmbeddingRowGroups.weighted_sum_into: w");
  const int64_t n = g.num_indices(), U = g.num_groups();
  PN_CHECK(w.size() == n, fn, ": w must have ", n, " values (one per index), got ", w.size());
  const float* pt = nullptr;
  const int64_t* po = nullptr;
  float* pg = nullptr;
  int64_t D = 0;
  PN_CHECK(table.is_none() == grads.is_none(), fn, ": table and grads must both be given or both be None");
  if (!table.is_none()) {
    py::array t = table.cast<py::array>(), gr = grads.cast<py::array>();
    pt = data_ptr<float>(t, "EmbeddingRowGroups.weighted_sum_into: table");
    po = data_ptr<int64_t>(other, "EmbeddingRowGroups.weighted_sum_into: other");
    PN_CHECK(t.ndim() == 2 && t.shape(0) > 0 && t.shape(1) > 0, fn, ": table must be 2-D (V, D), got ", shape_str(t));
    PN_CHECK(other.size() == n, fn, ": other must have ", n, " indices, got ", other.size());
    D = t.shape(1);
    pg = mutable_data_ptr<float>(gr, "EmbeddingRowGroups.weighted_sum_into: grads");
    PN_CHECK(gr.ndim() == 2 && gr.shape(0) == U && gr.shape(1) == D, fn, ": grads must have shape (", U, ", ", D,
             "), got ", shape_str(gr));
    require_disjoint(fn, t, gr);
    require_disjoint(fn, w, gr);
    check_rows_in(fn, po, n, t.shape(0), "other");
  }
  float* ps = nullptr;
  if (!wsum.is_none()) {
    py::array ws = wsum.cast<py::array>();
    ps = mutable_data_ptr<float>(ws, "EmbeddingRowGroups.weighted_sum_into: wsum");
    PN_CHECK(ws.size() == U, fn, ": wsum must have ", U, " values, got ", ws.size());
  }
  const float* pst = nullptr;
  const float* psb = nullptr;
  if (decay != 0.0) {
    const int64_t last = U ? g.rows()[U - 1] : 0;  // rows ascend: the last is the largest
    if (pg) {
      PN_CHECK(!self_table.is_none(), fn, ": decay needs self_table");
      py::array st = self_table.cast<py::array>();
      pst = data_ptr<float>(st, "EmbeddingRowGroups.weighted_sum_into: self_table");
      PN_CHECK(st.ndim() == 2 && st.shape(1) == D && st.shape(0) > last, fn, ": self_table must be (V, ", D,
               ") with V > ", last, ", got ", shape_str(st));
    }
    if (ps) {
      PN_CHECK(!self_bias.is_none(), fn, ": decay needs self_bias");
      py::array sb = self_bias.cast<py::array>();
      psb = data_ptr<float>(sb, "EmbeddingRowGroups.weighted_sum_into: self_bias");
      PN_CHECK(sb.size() > last, fn, ": self_bias has ", sb.size(), " values, row ", last, " is used");
    }
  }
  py::gil_scoped_release release;
  g.weighted_sum(pw, pt, po, D, pg, ps, static_cast<float>(decay), pst, psb);
}

// (V, D) table and the (U,) distinct ascending rows / (U, D) values of a row-sparse gradient.
void check_sparse_step(const char* fn, const py::array& param, const py::array& rows, const py::array& grads,
                       const int64_t* pr) {
  PN_CHECK(param.ndim() == 2 && param.shape(1) > 0, fn, ": param must be 2-D (V, D), got ", shape_str(param));
  const int64_t U = rows.size(), V = param.shape(0);
  PN_CHECK(rows.ndim() == 1, fn, ": rows must be 1-D, got ", shape_str(rows));
  PN_CHECK(grads.ndim() == 2 && grads.shape(0) == U && grads.shape(1) == param.shape(1), fn,
           ": grads must have shape (", U, ", ", param.shape(1), "), got ", shape_str(grads));
  for (int64_t u = 0; u < U; ++u) {
    PN_CHECK(pr[u] >= 0 && pr[u] < V, fn, ": rows[", u, "] = ", pr[u], " is out of range for ", V, " rows");
    PN_CHECK(u == 0 || pr[u] > pr[u - 1], fn, ": rows must be strictly ascending (a coalesced gradient), rows[", u - 1,
             "] = ", pr[u - 1], ", rows[", u, "] = ", pr[u]);
  }
}

void check_state(const char* fn, const py::array& param, const py::array& state, const char* name) {
  PN_CHECK(state.ndim() == 2 && state.shape(0) == param.shape(0) && state.shape(1) == param.shape(1), fn, ": ", name,
           " must have the parameter's shape ", shape_str(param), ", got ", shape_str(state));
  require_disjoint(fn, param, state);
}

void sgd_binding(py::array param, const py::array& rows, const py::array& grads, double lr, double weight_decay,
                 double momentum, double dampening, bool nesterov, const py::object& buf) {
  const char* fn = "sparse_sgd_update";
  float* pp = mutable_data_ptr<float>(param, "sparse_sgd_update: param");
  const int64_t* pr = data_ptr<int64_t>(rows, "sparse_sgd_update: rows");
  const float* pg = data_ptr<float>(grads, "sparse_sgd_update: grads");
  check_sparse_step(fn, param, rows, grads, pr);
  float* pb = nullptr;
  if (!buf.is_none()) {
    py::array b = buf.cast<py::array>();
    pb = mutable_data_ptr<float>(b, "sparse_sgd_update: buf");
    check_state(fn, param, b, "buf");
  }
  PN_CHECK((pb != nullptr) == (momentum != 0.0), fn, ": buf must be given exactly when momentum != 0");
  py::gil_scoped_release release;
  sparse_sgd_update(pp, param.shape(1), pr, rows.size(), pg, lr, weight_decay, momentum, dampening, nesterov, pb);
}

void adam_binding(py::array param, const py::array& rows, const py::array& grads, py::array exp_avg,
                  py::array exp_avg_sq, double lr, double beta1, double beta2, double eps, double weight_decay,
                  bool decoupled, double bc1, double bc2) {
  const char* fn = "sparse_adam_update";
  float* pp = mutable_data_ptr<float>(param, "sparse_adam_update: param");
  const int64_t* pr = data_ptr<int64_t>(rows, "sparse_adam_update: rows");
  const float* pg = data_ptr<float>(grads, "sparse_adam_update: grads");
  float* pm = mutable_data_ptr<float>(exp_avg, "sparse_adam_update: exp_avg");
  float* pv = mutable_data_ptr<float>(exp_avg_sq, "sparse_adam_update: exp_avg_sq");
  check_sparse_step(fn, param, rows, grads, pr);
  check_state(fn, param, exp_avg, "exp_avg");
  check_state(fn, param, exp_avg_sq, "exp_avg_sq");
  require_disjoint(fn, exp_avg, exp_avg_sq);
  PN_CHECK(bc1 > 0 && bc2 > 0, fn, ": bias corrections must be > 0, got ", bc1, " and ", bc2);
  py::gil_scoped_release release;
  sparse_adam_update(pp, param.shape(1), pr, rows.size(), pg, pm, pv, lr, beta1, beta2, eps, weight_decay, decoupled,
                     bc1, bc2);
}

}  // namespace

void bind_embedding(py::module_& m) {
  m.def("embedding_forward", &forward_binding, py::arg("weight"), py::arg("indices"), py::arg("out"),
        "out[i] = weight[indices.flat[i]] for float32 weight (V, D), int64 indices and out (n, D); checked.");
  m.def("embedding_backward_dense", &dense_binding, py::arg("dout"), py::arg("indices"), py::arg("dweight"),
        "dweight (V, D) = 0, then dweight[indices.flat[i]] += dout[i], deterministic (float32).");
  py::class_<RowGroups>(m, "EmbeddingRowGroups",
                        "Positions of int64 indices grouped by row (rows ascending, positions in order).")
      .def(py::init(&make_groups), py::arg("indices"), py::arg("num_embeddings"))
      .def_property_readonly("num_indices", &RowGroups::num_indices)
      .def_property_readonly("num_rows", &RowGroups::num_groups, "U, the number of distinct rows.")
      .def("rows_into", &rows_into, py::arg("rows"), "Write the U distinct rows (ascending) into int64 rows (U,).")
      .def("sum_into", &sum_into, py::arg("dout"), py::arg("grads"),
           "grads[u] = sum of dout[i] over the positions i of row u (float32 dout (n, D), grads (U, D)).")
      .def("weighted_sum_into", &weighted_sum_into, py::arg("w"), py::arg("table"), py::arg("other"),
           py::arg("grads"), py::arg("wsum"), py::arg("decay") = 0.0, py::arg("self_table") = py::none(),
           py::arg("self_bias") = py::none(),
           "grads[u] = sum_i w[i] table[other[i]] and wsum[u] = sum_i w[i] over the positions i of row u "
           "(float32; table/grads or wsum may be None), plus decay * count_u * self_table[row u] (self_bias).");
  m.def("embedding_dot_forward", &dot_forward_binding, py::arg("a"), py::arg("ia"), py::arg("b"), py::arg("ib"),
        py::arg("bias_a"), py::arg("bias_b"), py::arg("offset"), py::arg("out"),
        "out[i] = offset + bias_a[ia[i]] + bias_b[ib[i]] + <a[ia[i]], b[ib[i]]> (float32; biases may be None).");
  m.def("sparse_sgd_update", &sgd_binding, py::arg("param"), py::arg("rows"), py::arg("grads"), py::arg("lr"),
        py::arg("weight_decay"), py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"), py::arg("buf"),
        "SGD step on the distinct ascending rows of a float32 (V, D) parameter.");
  m.def("sparse_adam_update", &adam_binding, py::arg("param"), py::arg("rows"), py::arg("grads"), py::arg("exp_avg"),
        py::arg("exp_avg_sq"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
        py::arg("weight_decay"), py::arg("decoupled"), py::arg("bc1"), py::arg("bc2"),
        "Lazy Adam step on the distinct ascending rows of a float32 (V, D) parameter.");
}

}  // namespace pn
