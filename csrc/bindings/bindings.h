// Shared by the pybind11 binding files: one bind_<family>() per kernel family, and the checked
// way to take a raw pointer out of a numpy array. Bindings only bind: no kernel logic here.
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "common/check.h"

namespace py = pybind11;

namespace pn {

// Pointer to the data of a C-contiguous float32 array `a`; `name` goes into the error message.
// Arrays are taken as py::array (never converted), so an output can never be a silent copy.
template <typename T>
const T* data_ptr(const py::array& a, const char* name) {
  PN_CHECK(py::dtype::of<T>().is(a.dtype()), name, ": expected dtype ", std::string(py::str(py::dtype::of<T>())),
           ", got ", std::string(py::str(a.dtype())));
  PN_CHECK(a.flags() & py::array::c_style, name, ": array must be C-contiguous");
  return static_cast<const T*>(a.data());
}

template <typename T>
T* mutable_data_ptr(py::array& a, const char* name) {
  data_ptr<T>(a, name);
  PN_CHECK(a.writeable(), name, ": output array is read-only");
  return static_cast<T*>(a.mutable_data());
}

// Two arrays one kernel writes and reads must not share memory (a step would read what it wrote).
inline void require_disjoint(const char* fn, const py::array& a, const py::array& b) {
  const char* ab = static_cast<const char*>(a.data());
  const char* bb = static_cast<const char*>(b.data());
  PN_CHECK(ab + a.nbytes() <= bb || bb + b.nbytes() <= ab, fn, ": output overlaps an input");
}

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

void bind_gemm(py::module_& m);
void bind_conv(py::module_& m);
void bind_pool(py::module_& m);
void bind_activation(py::module_& m);
void bind_softmax(py::module_& m);
void bind_embedding(py::module_& m);
void bind_batchnorm(py::module_& m);
void bind_layernorm(py::module_& m);
void bind_bf16(py::module_& m);
void bind_optim(py::module_& m);
void bind_conv_bf16(py::module_& m);
void bind_parallel(py::module_& m);

}  // namespace pn
