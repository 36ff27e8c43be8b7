// The kernel images (fatbins of csrc/cuda/*.cu) embedded in pyneural._cuda; the table is generated
// by csrc/cuda/CMakeLists.txt and ends with a {nullptr, nullptr, nullptr} entry.
#pragma once

namespace pn {
struct CudaImage {
  const char* file;  // stem of the .cu file: "sgemm", "conv", ...
  const unsigned char* begin;
  const unsigned char* end;
};
extern const CudaImage cuda_images[];
}  // namespace pn
