#include "tools/loadgen/options.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string_view>

namespace ktls::loadgen {

using carrier::Error;
using carrier::Result;

const char* scenario_name(Scenario s) {
  switch (s) {
    case Scenario::kIdle:
      return "idle";
    case Scenario::kStorm:
      return "storm";
    case Scenario::kChurn:
      return "churn";
  }
  return "?";
}

std::string usage() {
  return R"(usage: ktls_loadgen idle|storm|churn --port P --cookie C [options]

Simulates many Erlang nodes (erl_interface handshakes, no epmd) against one
target node and reports handshakes/s, messages/s, latency and errors.

  --host IP              target address (default 127.0.0.1)
  --port P               target's distribution port (required)
  --cookie C             distribution cookie (required)
  --conns N              simulated nodes kept connected (default 100)
  --duration S           seconds; the run stops by itself (default 10)
  --ramp-rate R          new handshakes per second at most (default: no limit)
  --handshake-threads K  handshakes in parallel (default 8)
  --connect-timeout MS   per handshake step (default 5000)
  --name-prefix P        simulated node names P<i>@HOST (default lg<pid>_)
  --node-host H          host part of simulated node names (default 127.0.0.1)
storm:
  --rate R               messages per second over all senders (default 1000)
  --size S               payload bytes per message (default 64)
  --to NAME              registered name on the target (default ktls_loadgen_echo)
  --senders K            connections that send (default all)
churn:
  --churn-rate C         connections closed and replaced per second (default 10)
report:
  --out DIR              report.json, report.md, timeline.tsv (default: no files)
  --target-pid PID       sample /proc/PID (memory, CPU) of a local target
  --stats-name NAME      stats helper registered on the target
                         (default ktls_loadgen_stats; "" for none)
  --drain-ms MS          wait for echoes in flight after the run (default 2000)
  --no-progress          no live progress line on stderr
)";
}

namespace {

Result<double> to_number(std::string_view flag, const char* text, double min, double max) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max) {
    return Error::message(std::string(flag) + ": '" + text + "' is not a number in [" +
                          std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return v;
}

}  // namespace

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  o.name_prefix = "lg" + std::to_string(getpid()) + "_";
  if (argc < 2) return Error::message("no scenario given");
  std::string_view sc = argv[1];
  if (sc == "idle") {
    o.scenario = Scenario::kIdle;
  } else if (sc == "storm") {
    o.scenario = Scenario::kStorm;
  } else if (sc == "churn") {
    o.scenario = Scenario::kChurn;
  } else {
    return Error::message("unknown scenario '" + std::string(sc) + "'");
  }
  for (int i = 2; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--no-progress") {
      o.progress = false;
      continue;
    }
    if (i + 1 >= argc) return Error::message(std::string(flag) + " needs a value");
    const char* val = argv[++i];
    auto num = [&](double min, double max) { return to_number(flag, val, min, max); };
    Result<double> n = 0.0;
    if (flag == "--host") {
      o.host = val;
    } else if (flag == "--port") {
      if (!(n = num(1, 65535))) return n.error();
      o.port = static_cast<uint16_t>(n.value());
    } else if (flag == "--cookie") {
      o.cookie = val;
    } else if (flag == "--conns") {
      if (!(n = num(0, 1000000))) return n.error();
      o.conns = static_cast<uint32_t>(n.value());
    } else if (flag == "--duration") {
      if (!(n = num(0.1, 86400))) return n.error();
      o.duration_s = n.value();
    } else if (flag == "--ramp-rate") {
      if (!(n = num(0, 1e7))) return n.error();
      o.ramp_rate = n.value();
    } else if (flag == "--handshake-threads") {
      if (!(n = num(1, 256))) return n.error();
      o.handshake_threads = static_cast<uint32_t>(n.value());
    } else if (flag == "--connect-timeout") {
      if (!(n = num(1, 600000))) return n.error();
      o.connect_timeout_ms = static_cast<uint32_t>(n.value());
    } else if (flag == "--name-prefix") {
      o.name_prefix = val;
    } else if (flag == "--node-host") {
      o.node_host = val;
    } else if (flag == "--rate") {
      if (!(n = num(0, 1e8))) return n.error();
      o.rate = n.value();
    } else if (flag == "--size") {
      if (!(n = num(0, 64 << 20))) return n.error();
      o.size = static_cast<uint32_t>(n.value());
    } else if (flag == "--to") {
      o.to = val;
    } else if (flag == "--senders") {
      if (!(n = num(0, 1000000))) return n.error();
      o.senders = static_cast<uint32_t>(n.value());
    } else if (flag == "--churn-rate") {
      if (!(n = num(0, 1e6))) return n.error();
      o.churn_rate = n.value();
    } else if (flag == "--out") {
      o.out_dir = val;
    } else if (flag == "--target-pid") {
      if (!(n = num(1, 1 << 30))) return n.error();
      o.target_pid = static_cast<int>(n.value());
    } else if (flag == "--stats-name") {
      o.stats_name = val;
    } else if (flag == "--drain-ms") {
      if (!(n = num(0, 600000))) return n.error();
      o.drain_ms = static_cast<uint32_t>(n.value());
    } else {
      return Error::message("unknown option '" + std::string(flag) + "'");
    }
  }
  if (o.port == 0) return Error::message("--port is required");
  if (o.cookie.empty()) return Error::message("--cookie is required");
  if (o.name_prefix.empty() || o.name_prefix.size() > 200) {
    return Error::message("--name-prefix must be 1..200 characters");
  }
  return o;
}

}  // namespace ktls::loadgen
