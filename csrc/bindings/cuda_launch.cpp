// pyneural._cuda.launch: run one kernel of the embedded images on a CuPy stream.
//
// Bindings only bind: which kernel, with which grid / block / shared memory and which arguments is
// decided in pyneural/cuda/*.py (the same code drives cupy.RawModule when this module is absent).
// Here we (1) load an image once per process (cudaLibraryLoadData) and find the kernel by its
// extern "C" name, (2) turn each argument into the bytes the kernel expects: a CuPy array (any
// object with __cuda_array_interface__) becomes its device pointer after checks -- C-contiguous,
// a dtype the kernels use, memory on the launching device -- None becomes a null pointer and a
// numpy scalar contributes its own bytes (np.int32 -> int, np.float32 -> float, ...), and (3)
// launch with cudaLaunchKernel on the given stream. Every failure is a Python exception naming
// the kernel and the argument; CUDA errors come back as RuntimeError with the CUDA message.
// Before any other CUDA call, launch checks once per process that there is a driver and a device
// (cudaGetDeviceCount): on a machine without either -- CI, a laptop -- the module still imports,
// `images()` and `device_count()` work, and `launch` raises RuntimeError "no CUDA device / driver"
// with the CUDA error and the driver / runtime versions (tests/test_cuda_native_build.py).
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "bindings/cuda_images.h"

namespace py = pybind11;

namespace pn {
namespace {

void check_cuda(cudaError_t err, const std::string& what) {
  if (err != cudaSuccess) throw std::runtime_error(what + ": " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

// What cudaGetDeviceCount said, asked once per process (the set of devices a process sees is fixed
// at CUDA's initialisation).
struct DeviceProbe {
  int count;
  cudaError_t error;
};

const DeviceProbe& device_probe() {
  static const DeviceProbe probe = [] {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();
      count = 0;
    }
    return DeviceProbe{count, err};
  }();
  return probe;
}

std::string cuda_version_text(int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); }

// RuntimeError unless `device` is a usable CUDA device, saying why not.
void require_device(int device) {
  const DeviceProbe& probe = device_probe();
  if (probe.error != cudaSuccess || probe.count == 0) {
    int driver = 0;
    if (cudaDriverGetVersion(&driver) != cudaSuccess) {
      cudaGetLastError();
      driver = 0;
    }
    const std::string why = probe.error != cudaSuccess
        ? "failed: " + std::string(cudaGetErrorName(probe.error)) + " (" + cudaGetErrorString(probe.error) + ")"
        : std::string("found no device");
    throw std::runtime_error(
        "pyneural._cuda: no CUDA device / driver: cudaGetDeviceCount " + why + "; " +
        (driver == 0 ? std::string("no NVIDIA driver was found")
                     : "the NVIDIA driver supports CUDA " + cuda_version_text(driver)) +
        ", this module was built with the CUDA " + cuda_version_text(CUDART_VERSION) + " runtime");
  }
  if (device < 0 || device >= probe.count)
    throw py::value_error("pyneural._cuda: device " + std::to_string(device) + " does not exist: this process sees " +
                          std::to_string(probe.count) + " CUDA device(s)");
}

std::mutex registry_mutex;
std::map<std::string, cudaLibrary_t> libraries;           // by file stem
std::map<std::string, cudaKernel_t> kernels;              // by "file/name"

cudaKernel_t find_kernel(const std::string& file, const std::string& name) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  const std::string key = file + "/" + name;
  auto k = kernels.find(key);
  if (k != kernels.end()) return k->second;
  auto lib = libraries.find(file);
  if (lib == libraries.end()) {
    const CudaImage* img = cuda_images;
    while (img->file != nullptr && file != img->file) ++img;
    if (img->file == nullptr) throw py::value_error("pyneural._cuda: no kernel image '" + file + "' was built in");
    cudaLibrary_t handle;
    check_cuda(cudaLibraryLoadData(&handle, img->begin, nullptr, nullptr, 0, nullptr, nullptr, 0),
               "pyneural._cuda: loading kernel image " + file);
    lib = libraries.emplace(file, handle).first;
  }
  cudaKernel_t kernel;
  if (cudaLibraryGetKernel(&kernel, lib->second, name.c_str()) != cudaSuccess) {
    cudaGetLastError();
    throw py::value_error("pyneural._cuda: image '" + file + "' has no kernel named '" + name + "'");
  }
  kernels.emplace(key, kernel);
  return kernel;
}

std::string describe(const std::string& kernel, size_t i) {
  return "pyneural._cuda: " + kernel + " argument " + std::to_string(i);
}

// Device pointer of a CUDA array after the checks that do not need the kernel's signature.
void* array_pointer(const py::object& a, const std::string& where, int device) {
  py::dict iface = a.attr("__cuda_array_interface__");
  py::tuple data = iface["data"];
  const auto ptr = data[0].cast<unsigned long long>();
  const std::string typestr = iface["typestr"].cast<std::string>();
  const py::tuple shape = iface["shape"];
  std::vector<long long> dims;
  long long count = 1;
  for (auto d : shape) {
    dims.push_back(d.cast<long long>());
    count *= dims.back();
  }
  std::string shape_text = "(";
  for (size_t i = 0; i < dims.size(); ++i) shape_text += (i ? ", " : "") + std::to_string(dims[i]);
  shape_text += dims.size() == 1 ? ",)" : ")";
  if (typestr != "<f4" && typestr != "<i4" && typestr != "<i8")
    throw py::type_error(where + ": dtype " + typestr + " (shape " + shape_text +
                         ") is not one the kernels take (float32, int32, int64)");
  const long long itemsize = typestr[2] - '0';
  if (iface.contains("strides") && !iface["strides"].is_none()) {
    const py::tuple strides = iface["strides"];
    long long expect = itemsize;
    for (size_t i = dims.size(); i-- > 0;) {
      if (dims[i] != 1 && strides[i].cast<long long>() != expect)
        throw py::value_error(where + ": array of shape " + shape_text + " is not C-contiguous");
      expect *= dims[i];
    }
  }
  if (count == 0) return reinterpret_cast<void*>(ptr);
  cudaPointerAttributes attr;
  if (cudaPointerGetAttributes(&attr, reinterpret_cast<void*>(ptr)) != cudaSuccess) {
    cudaGetLastError();
    throw py::value_error(where + ": data pointer of the array (shape " + shape_text + ") is not CUDA memory");
  }
  if (attr.type != cudaMemoryTypeDevice && attr.type != cudaMemoryTypeManaged)
    throw py::value_error(where + ": array (shape " + shape_text + ") is not in device memory");
  if (attr.type == cudaMemoryTypeDevice && attr.device != device)
    throw py::value_error(where + ": array (shape " + shape_text + ") lives on device " + std::to_string(attr.device) +
                          " but the kernel launches on device " + std::to_string(device));
  return reinterpret_cast<void*>(ptr);
}

dim3 to_dim3(const py::tuple& t, const char* what) {
  if (t.size() < 1 || t.size() > 3) throw py::value_error(std::string("pyneural._cuda.launch: ") + what + " must have 1 to 3 entries");
  unsigned v[3] = {1, 1, 1};
  for (size_t i = 0; i < t.size(); ++i) {
    const long long x = t[i].cast<long long>();
    if (x < 1 || x > 0x7fffffffLL)
      throw py::value_error(std::string("pyneural._cuda.launch: ") + what + " entries must be in [1, 2^31), got " + std::to_string(x));
    v[i] = static_cast<unsigned>(x);
  }
  return dim3(v[0], v[1], v[2]);
}

void launch(const std::string& file, const std::string& name, const py::tuple& grid, const py::tuple& block,
            size_t shared_mem, unsigned long long stream, int device, const py::sequence& args) {
  const dim3 g = to_dim3(grid, "grid"), b = to_dim3(block, "block");
  require_device(device);
  check_cuda(cudaSetDevice(device), "pyneural._cuda: selecting device " + std::to_string(device));
  const cudaKernel_t kernel = find_kernel(file, name);
  // Every argument gets its own 8-byte-aligned slot; kernel parameters are at most 8 bytes here.
  std::vector<unsigned long long> storage(args.size());
  std::vector<void*> pointers(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    py::object a = args[i];
    const std::string where = describe(name, i);
    if (a.is_none()) {
      storage[i] = 0;
    } else if (py::hasattr(a, "__cuda_array_interface__")) {
      storage[i] = reinterpret_cast<unsigned long long>(array_pointer(a, where, device));
    } else if (py::isinstance<py::buffer>(a) && !py::isinstance<py::bytes>(a)) {
      const py::buffer_info info = py::buffer(a).request();
      if (info.ndim != 0 || info.itemsize > 8 || info.itemsize < 1)
        throw py::type_error(where + ": scalars must be numpy scalars of at most 8 bytes (np.int32, np.float32, ...)");
      std::memcpy(&storage[i], info.ptr, static_cast<size_t>(info.itemsize));
    } else {
      throw py::type_error(where + ": expected a CuPy array, None or a numpy scalar, got " +
                           std::string(py::str(py::type::of(a).attr("__name__"))));
    }
    pointers[i] = &storage[i];
  }
  cudaError_t err;
  {
    py::gil_scoped_release release;
    err = cudaLaunchKernel(reinterpret_cast<const void*>(kernel), g, b, pointers.data(), shared_mem,
                           reinterpret_cast<cudaStream_t>(stream));
  }
  check_cuda(err, "pyneural._cuda: launching " + name);
}

}  // namespace

void bind_cuda_launch(py::module_& m) {
  m.def("launch", &launch, py::arg("file"), py::arg("name"), py::arg("grid"), py::arg("block"),
        py::arg("shared_mem"), py::arg("stream"), py::arg("device"), py::arg("args"),
        "Launch kernel `name` of csrc/cuda/<file>.cu on `stream` (a cudaStream_t as int, e.g.\n"
        "cupy.cuda.get_current_stream().ptr) of `device`. args: CuPy arrays (checked: C-contiguous,\n"
        "float32/int32/int64, on `device`), None (null pointer) or numpy scalars (passed by value).");
  m.def("device_count", [] { return device_probe().count; },
        "CUDA devices this process sees; 0 where there is no usable driver or device (never raises).");
  m.def("images", [] {
    py::list names;
    for (const CudaImage* img = cuda_images; img->file != nullptr; ++img) names.append(img->file);
    return names;
  }, "Stems of the .cu files compiled into this module.");
}

}  // namespace pn
