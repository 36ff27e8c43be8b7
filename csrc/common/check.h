// Argument checks for the C++ kernels. A failed check throws std::invalid_argument, which
// pybind11 turns into a Python ValueError carrying the message; kernels never abort the process.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace pn {

template <typename... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream out;
  (out << ... << parts);
  return out.str();
}

}  // namespace pn

// PN_CHECK(cond, "conv2d: input has ", c, " channels, weight expects ", cw)
#define PN_CHECK(cond, ...)                                      \
  do {                                                           \
    if (!(cond)) throw std::invalid_argument(::pn::concat(__VA_ARGS__)); \
  } while (0)
