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

void require_disjoint(const char* fn, const py::array& a, const py::array& b) {
  const char* ab = static_cast<const char*>(a.data());
  const char* bb = static_cast<const char*>(b.data());
  PN_CHECK(ab + a.nbytes() <= bb || bb + b.nbytes() <= ab, fn, ": output overlaps an input");
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
           "grads[u] = sum of dout[i] over the positions i of row u (float32 dout (n, D), grads (U, D)).");
}

}  // namespace pn
