// The swarm: every simulated node's connection after its handshake, driven
// by one epoll loop on the calling thread (reads, tick answers, sends with a
// queue per connection), the scenario's pacing (ramp, message rate, churn),
// sampling of the target, and the live progress line.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "carrier/result.h"
#include "tools/loadgen/dist_codec.h"
#include "tools/loadgen/histogram.h"
#include "tools/loadgen/options.h"
#include "tools/loadgen/target_probe.h"

namespace ktls::loadgen {

// One second of the run.
struct TimelinePoint {
  double t = 0;  // seconds since start
  uint32_t up = 0;
  uint64_t handshakes = 0, sent = 0, echoed = 0, errors = 0;  // cumulative
  uint64_t p50_ns = 0, p99_ns = 0;  // latency of the echoes of this second
};

// The target as sampled during the run: by the stats helper over one of our
// connections, and/or from /proc when its pid was given.
struct TargetSample {
  double t = 0;
  std::optional<TargetStats> helper;
  std::optional<ProcSample> proc;
};

// The attack mix (--attack-rate): what was sent, what came back, and the
// legitimate traffic's latency before and while it ran. The target's own
// refusal counters are in the stats helper's samples (RunResult::target).
struct AttackResult {
  double start_s = -1;                   // when attacks started (-1: never)
  std::map<std::string, uint64_t> sent;  // by kind
  uint64_t sent_total = 0;
  uint64_t answered_refused = 0;  // answers saying unauthorized (spawn monitor, rex reply)
  uint64_t answered_ran = 0;      // answers saying the attack ran (normal exit, rex reply)
  std::string blocked;            // why attacks were not (or no longer) sent; "" if they were
  Histogram latency_before_ns;    // echoes of messages sent before start_s
  Histogram latency_during_ns;    // ... sent from start_s on
};

// Everything the report needs.
struct RunResult {
  Options options;
  double elapsed_s = 0;       // start to the end of the duration
  double all_up_s = -1;       // when all conns were first up (-1: never)
  double storm_start_s = -1;  // storm: sending starts once all are up (or at half time)
  uint32_t peak_up = 0;
  uint32_t up_at_end = 0;
  std::string tls;  // with --tls: version and cipher of the first session, e.g. "TLSv1.3 ..."
  uint64_t handshakes_ok = 0, handshakes_failed = 0;
  uint64_t planned_disconnects = 0;  // churn
  Histogram handshake_ns;
  uint64_t sent = 0, echoed = 0, bytes_sent = 0, bytes_received = 0;
  uint64_t ticks_received = 0;
  Histogram latency_ns;
  uint64_t stats_requests = 0, stats_replies = 0;
  std::map<std::string, uint64_t> errors;  // unexpected, by kind
  std::map<std::string, uint64_t> notes;   // counted, not errors (other control messages...)
  std::vector<TimelinePoint> timeline;
  std::vector<TargetSample> target;
  AttackResult attacks;
  uint64_t error_total() const;
};

// Runs the scenario of `options` to its end. ei_init() must have run.
carrier::Result<RunResult> run_swarm(const Options& options);

// Ends a run early, as if its duration were over (echoes in flight are still
// waited for, the report is written). Async-signal-safe: main() calls it from
// its SIGINT/SIGTERM handler.
void stop_swarm_early();

}  // namespace ktls::loadgen
