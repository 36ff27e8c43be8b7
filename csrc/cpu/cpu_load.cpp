// How many threads are runnable on this machine right now (parallel_team.h's load rule): the
// numerator of the fourth field of /proc/loadavg ("1.02 0.87 0.70 3/214 5123": 3 runnable),
// which counts every process's running and ready-to-run threads, the reader included. Read with
// plain open/read (no stdio buffer or lock): ~5 us, done at most every 5 ms.
#include "cpu/parallel_team.h"

#if defined(__linux__)
#include <fcntl.h>
#include <unistd.h>
#endif

namespace pn {
namespace team_detail {

int read_runnable_threads() {
#if defined(__linux__)
  const int fd = ::open("/proc/loadavg", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  char text[128];
  const ssize_t got = ::read(fd, text, sizeof(text) - 1);
  ::close(fd);
  if (got <= 0) return -1;
  text[got] = '\0';
  // Skip three fields, then parse the number before the '/'.
  const char* p = text;
  for (int field = 0; field < 3; ++field) {
    while (*p && *p != ' ') ++p;
    while (*p == ' ') ++p;
  }
  int running = 0;
  bool digits = false;
  for (; *p >= '0' && *p <= '9'; ++p, digits = true) running = running * 10 + (*p - '0');
  return digits && *p == '/' ? running : -1;
#else
  return -1;
#endif
}

}  // namespace team_detail
}  // namespace pn
