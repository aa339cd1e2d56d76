// Reader of the captured dist streams in this directory (format in
// README.md: <<Len:32/big, Packet/binary>>...), for tests, the benchmark
// and the fuzz target's corpus tools. Test-only code.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace ktls::filter::testdata {

using Packet = std::vector<uint8_t>;

// The directory of the captured files: $KTLS_FILTER_TESTDATA, else the
// Bazel runfiles of this workspace, else the source tree path relative to
// the working directory.
inline std::string dir() {
  if (const char* d = std::getenv("KTLS_FILTER_TESTDATA")) return d;
  for (const char* var : {"TEST_SRCDIR", "RUNFILES_DIR"}) {
    if (const char* r = std::getenv(var)) {
      std::string p = std::string(r) + "/ktls_filter/nif/filter/testdata";
      if (std::ifstream(p + "/README.md")) return p;
    }
  }
  return "nif/filter/testdata";
}

// Splits a stream in the capture format; false when it is cut short.
inline bool split(const std::vector<uint8_t>& bytes, std::vector<Packet>& out) {
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (bytes.size() - pos < 4) return false;
    const size_t len = (size_t{bytes[pos]} << 24) | (size_t{bytes[pos + 1]} << 16) |
                       (size_t{bytes[pos + 2]} << 8) | bytes[pos + 3];
    pos += 4;
    if (bytes.size() - pos < len) return false;
    out.emplace_back(bytes.begin() + pos, bytes.begin() + pos + len);
    pos += len;
  }
  return true;
}

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

// The packets of capture `name` (e.g. "erpc.a2b"); empty when missing or
// malformed.
inline std::vector<Packet> load(const std::string& name) {
  std::vector<Packet> out;
  if (!split(read_file(dir() + "/" + name + ".dist"), out)) out.clear();
  return out;
}

// Every capture, by name without ".dist".
inline std::vector<std::string> names() {
  std::vector<std::string> out;
  for (const char* scenario :
       {"ping", "gen_server", "erpc", "signals", "terms", "atom_cache", "fragments", "seq_trace",
        "attack_erpc_halt", "attack_rex_cast", "attack_kernel_sup", "attack_io_request"}) {
    out.push_back(std::string(scenario) + ".a2b");
    out.push_back(std::string(scenario) + ".b2a");
  }
  return out;
}

}  // namespace ktls::filter::testdata
