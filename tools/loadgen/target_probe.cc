#include "tools/loadgen/target_probe.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

namespace ktls::loadgen {

std::optional<ProcSample> read_proc(int pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/";
  ProcSample s;
  {
    std::ifstream statm(dir + "statm");
    uint64_t size = 0, resident = 0;
    if (!(statm >> size >> resident)) return std::nullopt;
    s.rss_bytes = resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  }
  std::ifstream stat_file(dir + "stat");
  std::string line;
  if (!std::getline(stat_file, line)) return std::nullopt;
  // The command name may hold spaces and parentheses: fields start after the last ')'.
  auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(line.substr(close + 2));
  // Fields 3.. of proc(5): state ppid pgrp session tty_nr tpgid flags minflt
  // cminflt majflt cmajflt utime stime cutime cstime priority nice num_threads
  std::string field;
  uint64_t utime = 0, stime = 0, threads = 0;
  for (int i = 3; i <= 20 && rest >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
    if (i == 20) threads = std::stoull(field);
  }
  auto tick_ns = static_cast<uint64_t>(1'000'000'000 / sysconf(_SC_CLK_TCK));
  s.cpu_ns = (utime + stime) * tick_ns;
  s.threads = static_cast<uint32_t>(threads);
  return s;
}

}  // namespace ktls::loadgen
