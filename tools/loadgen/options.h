// Command line of ktls_loadgen: which scenario, against which target, for how
// long and how hard.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "carrier/result.h"
#include "tools/loadgen/dist_codec.h"

namespace ktls::loadgen {

enum class Scenario : uint8_t {
  kIdle,   // N connections that only answer ticks
  kStorm,  // N connections; messages at a rate to a registered name, echoed back
  kChurn,  // N connections; some are closed and replaced at a rate
};

const char* scenario_name(Scenario s);

struct Options {
  Scenario scenario = Scenario::kIdle;
  std::string host = "127.0.0.1";  // target's dist address (IPv4)
  uint16_t port = 0;               // target's dist port (no epmd is asked)
  std::string cookie;
  uint32_t conns = 100;            // simulated nodes kept connected
  double duration_s = 10;          // the run stops by itself after this
  double ramp_rate = 0;            // new handshakes per second at most; 0 = no limit
  uint32_t handshake_threads = 8;  // blocking ei handshakes in parallel
  uint32_t connect_timeout_ms = 5000;
  std::string name_prefix;  // simulated nodes are PREFIX<i>@node_host
  std::string node_host = "127.0.0.1";
  std::string tls_optfile;  // TLS to the target with the client options of this file; "" = plain
  // storm
  double rate = 1000;  // messages per second over all senders
  uint32_t size = 64;  // payload bytes per message
  std::string to = "ktls_loadgen_echo";
  uint32_t senders = 0;                  // connections that send; 0 = all
  std::string attacks = "spawn,rex";     // attack mix: kinds (dist_codec.h: attack_name)
  std::vector<AttackKind> attack_kinds;  // the same, parsed
  double attack_rate = 0;                // attacks per second among the storm; 0 = none
  std::string attack_cmd = "true";       // the command the attacks ask os:cmd/1 to run
  // churn
  double churn_rate = 10;  // connections closed and replaced per second
  // reporting
  std::string out_dir;                            // report.json, report.md, timeline.tsv
  int target_pid = 0;                             // sample /proc/PID when the target is local
  std::string stats_name = "ktls_loadgen_stats";  // helper on the target; "" = none
  uint32_t drain_ms = 2000;  // after the duration, wait this long for echoes in flight
  bool progress = true;
};

// Whether the attack mix may go to a target not known to refuse it (a stock
// node runs what it is sent): only os:cmd("true") by spawn request and rex,
// never init_stop or another command.
bool attacks_harmless(const Options& o);

// Parses argv (argv[0] is the program). Error text names the bad argument.
carrier::Result<Options> parse_options(int argc, char** argv);

// The usage text.
std::string usage();

}  // namespace ktls::loadgen
