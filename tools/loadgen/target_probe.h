// Memory and CPU of a target node on this machine, read from /proc/PID.
#pragma once

#include <cstdint>
#include <optional>

namespace ktls::loadgen {

struct ProcSample {
  uint64_t rss_bytes = 0;
  uint64_t cpu_ns = 0;  // user + system time of all its threads
  uint32_t threads = 0;
};

// Reads /proc/PID/statm and /proc/PID/stat; nothing when the process is gone.
std::optional<ProcSample> read_proc(int pid);

}  // namespace ktls::loadgen
