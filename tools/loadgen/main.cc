// ktls_loadgen: many simulated Erlang nodes against one target node. See
// options.cc for the command line and README.md ("Load testing").
#include <ei.h>
#include <signal.h>
#include <sys/resource.h>

#include <cstdio>
#include <iostream>
#include <string_view>

#include "tools/loadgen/options.h"
#include "tools/loadgen/report.h"
#include "tools/loadgen/swarm.h"

namespace {

// Every connection is a descriptor: raise the soft limit (and the hard one
// where we may) before ei_init(), which sizes its table of connections by it.
bool raise_fd_limit(uint64_t want) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur >= want) return true;
  if (rl.rlim_max < want) {
    rlimit up{want, want};
    if (setrlimit(RLIMIT_NOFILE, &up) == 0) return true;
    rl.rlim_cur = rl.rlim_max;  // not allowed: as far as the hard limit goes
    setrlimit(RLIMIT_NOFILE, &rl);
    return false;
  }
  rl.rlim_cur = want;
  return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ktls::loadgen;
  if (argc >= 2 && (std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "help")) {
    std::cout << usage();
    return 0;
  }
  auto opts = parse_options(argc, argv);
  if (!opts) {
    std::fprintf(stderr, "ktls_loadgen: %s\n\n%s", opts.error().what.c_str(), usage().c_str());
    return 2;
  }
  const Options& o = opts.value();
  signal(SIGPIPE, SIG_IGN);
  // Ctrl-C or kill: end the run early but still report.
  signal(SIGINT, [](int) { stop_swarm_early(); });
  signal(SIGTERM, [](int) { stop_swarm_early(); });
  uint64_t want = uint64_t{o.conns} + o.handshake_threads * 2 + 256;
  if (!raise_fd_limit(want)) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    std::fprintf(stderr,
                 "ktls_loadgen: %u connections need about %llu descriptors, the limit is %llu\n",
                 o.conns, static_cast<unsigned long long>(want),
                 static_cast<unsigned long long>(rl.rlim_cur));
    return 1;
  }
  if (ei_init() != 0) {
    std::fprintf(stderr, "ktls_loadgen: ei_init failed\n");
    return 1;
  }
  auto result = run_swarm(o);
  if (!result) {
    std::fprintf(stderr, "ktls_loadgen: %s\n", result.error().what.c_str());
    return 1;
  }
  std::cout << report_markdown(result.value()) << std::flush;
  if (!o.out_dir.empty()) {
    auto w = write_report(result.value(), o.out_dir);
    if (!w) {
      std::fprintf(stderr, "ktls_loadgen: %s\n", w.error().what.c_str());
      return 1;
    }
    std::fprintf(stderr, "ktls_loadgen: report in %s/report.{json,md}\n", o.out_dir.c_str());
  }
  if (!result.value().attacks.blocked.empty()) {
    std::fprintf(stderr, "ktls_loadgen: attack mix refused: %s\n",
                 result.value().attacks.blocked.c_str());
    return 3;
  }
  return 0;
}
