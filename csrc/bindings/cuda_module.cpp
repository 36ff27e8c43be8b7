// pyneural._cuda: the CUDA kernels of csrc/cuda, compiled ahead of time (see csrc/cuda/CMakeLists.txt).
// Python code never calls it directly: pyneural/cuda/_backend.py picks it or cupy.RawModule.
#include <pybind11/pybind11.h>

namespace py = pybind11;

namespace pn {
void bind_cuda_launch(py::module_& m);
}

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pyneural CUDA kernels (csrc/cuda/*.cu as embedded fatbins), launched by name on CuPy streams";
  pn::bind_cuda_launch(m);
}
