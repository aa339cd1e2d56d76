#include "tools/loadgen/options.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string_view>
#include <type_traits>
#include <variant>

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
  --tls FILE             TLS (inet_tls_dist's wire format) with the {client, Opts}
                         of FILE, an -ssl_dist_optfile file (./ktls certs makes one):
                         certfile, keyfile, cacertfile, verify, versions
storm:
  --rate R               messages per second over all senders (default 1000)
  --size S               payload bytes per message (default 64)
  --to NAME              registered name on the target (default ktls_loadgen_echo)
  --senders K            connections that send (default all)
  --attack-rate R        attack mix: R attacks per second among the storm, from its
                         second half on (the first half is the baseline); default 0
  --attacks K,...        kinds, in turn: spawn (spawn_request of os:cmd/1), rex
                         (rpc call of os:cmd/1), init_stop ({stop, stop} to init);
                         default spawn,rex
  --attack-cmd CMD       what the attacks ask os:cmd/1 to run (default true). Other
                         commands and init_stop are sent only to a target whose stats
                         helper says it is ktls_filter and enforcing its policy
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

// One table for every option that takes a value: the field it sets and,
// for numbers, the range.
struct Flag {
  const char* name;
  std::variant<std::string Options::*, double Options::*, uint32_t Options::*, uint16_t Options::*,
               int Options::*>
      field;
  double min = 0, max = 0;
};

const Flag kFlags[] = {
    {"--host", &Options::host},
    {"--port", &Options::port, 1, 65535},
    {"--cookie", &Options::cookie},
    {"--conns", &Options::conns, 0, 1000000},
    {"--duration", &Options::duration_s, 0.1, 86400},
    {"--ramp-rate", &Options::ramp_rate, 0, 1e7},
    {"--handshake-threads", &Options::handshake_threads, 1, 256},
    {"--connect-timeout", &Options::connect_timeout_ms, 1, 600000},
    {"--name-prefix", &Options::name_prefix},
    {"--node-host", &Options::node_host},
    {"--tls", &Options::tls_optfile},
    {"--rate", &Options::rate, 0, 1e8},
    {"--size", &Options::size, 0, 64 << 20},
    {"--to", &Options::to},
    {"--senders", &Options::senders, 0, 1000000},
    {"--attacks", &Options::attacks},
    {"--attack-rate", &Options::attack_rate, 0, 1e6},
    {"--attack-cmd", &Options::attack_cmd},
    {"--churn-rate", &Options::churn_rate, 0, 1e6},
    {"--out", &Options::out_dir},
    {"--target-pid", &Options::target_pid, 1, 1 << 30},
    {"--stats-name", &Options::stats_name},
    {"--drain-ms", &Options::drain_ms, 0, 600000},
};

Result<void> set_flag(Options& o, const Flag& f, const char* val) {
  return std::visit(
      [&](auto field) -> Result<void> {
        using T = std::remove_reference_t<decltype(o.*field)>;
        if constexpr (std::is_same_v<T, std::string>) {
          o.*field = val;
        } else {
          auto n = to_number(f.name, val, f.min, f.max);
          if (!n) return n.error();
          o.*field = static_cast<T>(n.value());
        }
        return {};
      },
      f.field);
}

Result<std::vector<AttackKind>> parse_attack_kinds(std::string_view list) {
  std::vector<AttackKind> kinds;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view name = list.substr(0, comma);
    bool known = false;
    for (AttackKind k : kAttackKinds) {
      if (name == attack_name(k)) {
        kinds.push_back(k);
        known = true;
      }
    }
    if (!known) {
      return Error::message("--attacks: unknown kind '" + std::string(name) +
                            "' (spawn, rex, init_stop)");
    }
    list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
  }
  if (kinds.empty()) return Error::message("--attacks: no kind given");
  return kinds;
}

}  // namespace

bool attacks_harmless(const Options& o) {
  for (AttackKind k : o.attack_kinds) {
    if (k == AttackKind::kInitStop) return false;
  }
  return o.attack_cmd == "true";
}

Result<Options> parse_options(int argc, char** argv) {
  Options o;
  o.name_prefix = "lg" + std::to_string(getpid()) + "_";
  if (argc < 2) return Error::message("no scenario given");
  std::string_view sc = argv[1];
  bool known = false;
  for (Scenario s : {Scenario::kIdle, Scenario::kStorm, Scenario::kChurn}) {
    if (sc == scenario_name(s)) {
      o.scenario = s;
      known = true;
    }
  }
  if (!known) return Error::message("unknown scenario '" + std::string(sc) + "'");
  for (int i = 2; i < argc; ++i) {
    std::string_view flag = argv[i];
    if (flag == "--no-progress") {
      o.progress = false;
      continue;
    }
    const Flag* f = nullptr;
    for (const Flag& candidate : kFlags) {
      if (flag == candidate.name) f = &candidate;
    }
    if (f == nullptr) return Error::message("unknown option '" + std::string(flag) + "'");
    if (i + 1 >= argc) return Error::message(std::string(flag) + " needs a value");
    if (auto r = set_flag(o, *f, argv[++i]); !r) return r.error();
  }
  if (o.port == 0) return Error::message("--port is required");
  if (o.cookie.empty()) return Error::message("--cookie is required");
  if (o.name_prefix.empty() || o.name_prefix.size() > 200) {
    return Error::message("--name-prefix must be 1..200 characters");
  }
  auto kinds = parse_attack_kinds(o.attacks);
  if (!kinds) return kinds.error();
  o.attack_kinds = kinds.take();
  if (o.attack_rate > 0) {
    if (o.scenario != Scenario::kStorm) return Error::message("--attack-rate is for storm runs");
    if (o.attack_cmd.empty() || o.attack_cmd.size() > 1024) {
      return Error::message("--attack-cmd must be 1..1024 bytes");
    }
    if (!attacks_harmless(o) && o.stats_name.empty()) {
      return Error::message(
          "--attacks with init_stop or an --attack-cmd other than true needs the stats "
          "helper (--stats-name) to confirm that the target refuses them");
    }
  }
  return o;
}

}  // namespace ktls::loadgen
