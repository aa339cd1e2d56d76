// The final report of a run: JSON (for tests and scripts), markdown (for
// people), and tab-separated timelines that tools/loadgen/plot.gp draws.
#pragma once

#include <string>

#include "carrier/result.h"
#include "tools/loadgen/swarm.h"

namespace ktls::loadgen {

std::string report_json(const RunResult& r);
std::string report_markdown(const RunResult& r);
// t up handshakes sent echoed errors (cumulative) sent_per_s echoed_per_s
// p50_us p99_us (of that second's echoes), one line per second.
std::string timeline_tsv(const RunResult& r);
// The target as the stats helper saw it: t mem_total_mib processes ports cpu_pct.
std::string target_vm_tsv(const RunResult& r);
// The target as /proc saw it: t rss_mib cpu_pct.
std::string target_proc_tsv(const RunResult& r);

// Writes report.json, report.md, timeline.tsv, target_vm.tsv and
// target_proc.tsv into dir (created if missing).
carrier::Result<void> write_report(const RunResult& r, const std::string& dir);

}  // namespace ktls::loadgen
