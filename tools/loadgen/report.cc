#include "tools/loadgen/report.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

namespace ktls::loadgen {

using carrier::Error;
using carrier::Result;

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// A range of samples of one quantity: first, last, max, and the rate of a
// counter between the first and last sample.
struct Series {
  bool any = false;
  double first = 0, last = 0, max = 0;
  void add(double v) {
    if (!any) first = max = v;
    any = true;
    last = v;
    max = std::max(max, v);
  }
};

// What the report says about the target, from either source.
struct TargetSummary {
  Series vm_mem_total, vm_processes, vm_ports, vm_rss;
  double vm_cpu_pct = -1;  // helper: CPU of all VM threads, % of one core
  Series proc_rss;
  double proc_cpu_pct = -1;
  size_t vm_samples = 0, proc_samples = 0;
  // The carrier and filter counters (first and last sample that has them).
  const TargetStats* filter_first = nullptr;
  const TargetStats* filter_last = nullptr;
};

// The target's CPU time as each source counts it, in seconds.
bool has_vm(const TargetSample& s) { return s.helper.has_value(); }
bool has_proc(const TargetSample& s) { return s.proc.has_value(); }
double vm_cpu_s(const TargetSample& s) { return static_cast<double>(s.helper->cpu_ms) / 1e3; }
double proc_cpu_s(const TargetSample& s) { return static_cast<double>(s.proc->cpu_ns) / 1e9; }

// CPU between two samples of one source, in % of one core (-1: no interval).
double cpu_pct(const TargetSample* a, const TargetSample* b, double (*cpu_s)(const TargetSample&)) {
  if (a == nullptr || b == nullptr || b->t <= a->t) return -1;
  return (cpu_s(*b) - cpu_s(*a)) / (b->t - a->t) * 100;
}

TargetSummary summarize(const RunResult& r) {
  TargetSummary s;
  const TargetSample *vm0 = nullptr, *vm1 = nullptr, *p0 = nullptr, *p1 = nullptr;
  for (const TargetSample& t : r.target) {
    if (t.helper) {
      s.vm_mem_total.add(static_cast<double>(t.helper->mem_total));
      s.vm_processes.add(static_cast<double>(t.helper->process_count));
      s.vm_ports.add(static_cast<double>(t.helper->port_count));
      if (t.helper->rss_bytes) s.vm_rss.add(static_cast<double>(t.helper->rss_bytes));
      if (!vm0) vm0 = &t;
      vm1 = &t;
      ++s.vm_samples;
      if (t.helper->has_filter_fields) {
        if (!s.filter_first) s.filter_first = &*t.helper;
        s.filter_last = &*t.helper;
      }
    }
    if (t.proc) {
      s.proc_rss.add(static_cast<double>(t.proc->rss_bytes));
      if (!p0) p0 = &t;
      p1 = &t;
      ++s.proc_samples;
    }
  }
  s.vm_cpu_pct = cpu_pct(vm0, vm1, vm_cpu_s);
  s.proc_cpu_pct = cpu_pct(p0, p1, proc_cpu_s);
  return s;
}

double per_s(uint64_t n, double s) { return s > 0 ? static_cast<double>(n) / s : 0; }
// How long a storm sent: from when every connection was up to the end.
double sending_s(const RunResult& r) { return r.elapsed_s - std::max(r.storm_start_s, 0.0); }
double us(uint64_t ns) { return static_cast<double>(ns) / 1e3; }

std::string json_string(const std::string& v) {
  std::string out = "\"";
  for (char ch : v) {
    auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += ch;
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// A small JSON writer: objects and arrays with commas placed for us.
class Json {
 public:
  Json& open(const char* key, char bracket) {
    sep(key);
    s_ += bracket;
    first_.push_back(true);
    return *this;
  }
  Json& close(char bracket) {
    s_ += bracket;
    first_.pop_back();
    return *this;
  }
  Json& num(const char* key, double v) {
    sep(key);
    char buf[64];
    // Whole numbers (bytes, counts) in full; others with enough digits.
    if (v == static_cast<double>(static_cast<int64_t>(v)) && v < 9e15 && v > -9e15) {
      std::snprintf(buf, sizeof buf, "%" PRId64, static_cast<int64_t>(v));
    } else {
      std::snprintf(buf, sizeof buf, "%.4f", v);
    }
    s_ += buf;
    return *this;
  }
  Json& num(const char* key, uint64_t v) {
    sep(key);
    s_ += std::to_string(v);
    return *this;
  }
  Json& str(const char* key, const std::string& v) {
    sep(key);
    s_ += json_string(v);
    return *this;
  }
  Json& null(const char* key) {
    sep(key);
    s_ += "null";
    return *this;
  }
  Json& boolean(const char* key, bool v) {
    sep(key);
    s_ += v ? "true" : "false";
    return *this;
  }
  Json& series(const char* key, const Series& v) {
    if (!v.any) return null(key);
    return open(key, '{').num("first", v.first).num("last", v.last).num("max", v.max).close('}');
  }
  std::string take() { return std::move(s_) + "\n"; }

 private:
  void sep(const char* key) {
    if (!first_.empty()) {
      if (!first_.back()) s_ += ',';
      first_.back() = false;
    }
    if (key != nullptr) s_ += json_string(key) + ':';
  }
  std::string s_;
  std::vector<bool> first_;
};

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// One line per sample of one source: t, its columns, CPU % since the
// previous sample of that source.
template <class Columns>
std::string samples_tsv(const RunResult& r, const char* header, bool (*has)(const TargetSample&),
                        double (*cpu_s)(const TargetSample&), Columns columns) {
  std::ostringstream s;
  s << "# t\t" << header << "\tcpu_pct\n";
  const TargetSample* prev = nullptr;
  for (const TargetSample& t : r.target) {
    if (!has(t)) continue;
    s << fmt("%.3f", t.t) << '\t' << columns(t) << '\t'
      << fmt("%.1f", std::max(cpu_pct(prev, &t, cpu_s), 0.0)) << '\n';
    prev = &t;
  }
  return s.str();
}

// Growth of a filter counter from the first to the last sample.
uint64_t filter_delta(const TargetSummary& t, uint64_t TargetStats::*field) {
  if (!t.filter_first) return 0;
  uint64_t a = t.filter_first->*field, b = t.filter_last->*field;
  return b > a ? b - a : 0;
}

}  // namespace

std::string report_json(const RunResult& r) {
  const Options& o = r.options;
  TargetSummary t = summarize(r);
  Json j;
  j.open(nullptr, '{');
  j.str("scenario", scenario_name(o.scenario));
  j.open("config", '{')
      .str("host", o.host)
      .num("port", uint64_t{o.port})
      .num("conns", uint64_t{o.conns})
      .num("duration_s", o.duration_s)
      .num("ramp_rate", o.ramp_rate)
      .num("handshake_threads", uint64_t{o.handshake_threads})
      .num("rate", o.rate)
      .num("size", uint64_t{o.size})
      .str("to", o.to)
      .num("senders", uint64_t{o.senders})
      .num("churn_rate", o.churn_rate)
      .str("name_prefix", o.name_prefix)
      .str("tls_optfile", o.tls_optfile)
      .close('}');
  j.str("transport", r.tls.empty() ? std::string("tcp") : r.tls);
  j.num("elapsed_s", r.elapsed_s);
  j.open("connections", '{')
      .num("target", uint64_t{o.conns})
      .num("peak_up", uint64_t{r.peak_up})
      .num("up_at_end", uint64_t{r.up_at_end})
      .num("all_up_s", r.all_up_s)
      .num("handshakes_ok", r.handshakes_ok)
      .num("handshakes_failed", r.handshakes_failed)
      .num("handshakes_per_s", per_s(r.handshakes_ok, r.elapsed_s))
      .num("ramp_handshakes_per_s", r.all_up_s > 0 ? o.conns / r.all_up_s : 0.0)
      .num("planned_disconnects", r.planned_disconnects)
      .open("handshake_us", '{')
      .num("p50", us(r.handshake_ns.quantile(0.5)))
      .num("p99", us(r.handshake_ns.quantile(0.99)))
      .num("max", us(r.handshake_ns.max()))
      .close('}')
      .close('}');
  j.open("messages", '{')
      .num("sent", r.sent)
      .num("echoed", r.echoed)
      .num("sent_per_s", per_s(r.sent, sending_s(r)))
      .num("echoed_per_s", per_s(r.echoed, sending_s(r)))
      .num("bytes_sent", r.bytes_sent)
      .num("bytes_received", r.bytes_received)
      .num("ticks_received", r.ticks_received)
      .num("storm_start_s", r.storm_start_s)
      .open("latency_us", '{')
      .num("count", r.latency_ns.count())
      .num("p50", us(r.latency_ns.quantile(0.5)))
      .num("p99", us(r.latency_ns.quantile(0.99)))
      .num("p999", us(r.latency_ns.quantile(0.999)))
      .num("max", us(r.latency_ns.max()))
      .num("mean", r.latency_ns.mean() / 1e3)
      .close('}')
      .close('}');
  j.num("error_total", r.error_total());
  j.open("errors", '{');
  for (const auto& [kind, n] : r.errors) j.num(kind.c_str(), n);
  j.close('}');
  j.open("notes", '{');
  for (const auto& [kind, n] : r.notes) j.num(kind.c_str(), n);
  j.close('}');
  j.open("target", '{')
      .num("stats_requests", r.stats_requests)
      .num("stats_replies", r.stats_replies)
      .num("vm_samples", uint64_t{t.vm_samples})
      .series("vm_memory_total", t.vm_mem_total)
      .series("vm_process_count", t.vm_processes)
      .series("vm_port_count", t.vm_ports)
      .series("vm_rss", t.vm_rss);
  if (t.vm_cpu_pct >= 0) {
    j.num("vm_cpu_pct", t.vm_cpu_pct);
  } else {
    j.null("vm_cpu_pct");
  }
  j.num("proc_samples", uint64_t{t.proc_samples}).series("proc_rss", t.proc_rss);
  if (t.proc_cpu_pct >= 0) {
    j.num("proc_cpu_pct", t.proc_cpu_pct);
  } else {
    j.null("proc_cpu_pct");
  }
  if (t.filter_first) {
    j.str("carrier", t.filter_last->carrier)
        .boolean("filtering", t.filter_last->filtering)
        .num("filter_messages_dropped", filter_delta(t, &TargetStats::messages_dropped))
        .num("filter_spawn_requests_refused", filter_delta(t, &TargetStats::spawn_refused));
  }
  j.close('}');
  if (o.attack_rate > 0) {
    const AttackResult& a = r.attacks;
    j.open("attacks", '{')
        .num("rate", o.attack_rate)
        .str("kinds", o.attacks)
        .str("cmd", o.attack_cmd)
        .num("start_s", a.start_s)
        .num("sent_total", a.sent_total);
    j.open("sent", '{');
    for (const auto& [kind, n] : a.sent) j.num(kind.c_str(), n);
    j.close('}')
        .num("answered_refused", a.answered_refused)
        .num("answered_ran", a.answered_ran)
        .str("blocked", a.blocked);
    for (auto [name, h] : {std::pair{"latency_before_us", &a.latency_before_ns},
                           std::pair{"latency_during_us", &a.latency_during_ns}}) {
      j.open(name, '{')
          .num("count", h->count())
          .num("p50", us(h->quantile(0.5)))
          .num("p99", us(h->quantile(0.99)))
          .close('}');
    }
    j.close('}');
  }
  j.open("timeline", '[');
  for (const TimelinePoint& p : r.timeline) {
    j.open(nullptr, '{')
        .num("t", p.t)
        .num("up", uint64_t{p.up})
        .num("handshakes", p.handshakes)
        .num("sent", p.sent)
        .num("echoed", p.echoed)
        .num("errors", p.errors)
        .num("p50_us", us(p.p50_ns))
        .num("p99_us", us(p.p99_ns))
        .close('}');
  }
  j.close(']');
  j.close('}');
  return j.take();
}

std::string report_markdown(const RunResult& r) {
  const Options& o = r.options;
  TargetSummary t = summarize(r);
  std::ostringstream m;
  m << "# ktls_loadgen: " << scenario_name(o.scenario) << " against " << o.host << ":" << o.port
    << "\n\n";
  m << "| | |\n|---|---|\n";
  m << "| duration | " << fmt("%.1f s", r.elapsed_s) << " |\n";
  m << "| transport | " << (r.tls.empty() ? std::string("TCP") : r.tls) << " |\n";
  m << "| connections (target / peak / at end) | " << o.conns << " / " << r.peak_up << " / "
    << r.up_at_end << " |\n";
  m << "| all up after | " << (r.all_up_s >= 0 ? fmt("%.2f s", r.all_up_s) : std::string("never"))
    << " |\n";
  m << "| handshakes ok / failed | " << r.handshakes_ok << " / " << r.handshakes_failed << " |\n";
  m << "| handshakes/s (whole run / until all up) | "
    << fmt("%.0f", per_s(r.handshakes_ok, r.elapsed_s)) << " / "
    << (r.all_up_s > 0 ? fmt("%.0f", o.conns / r.all_up_s) : std::string("-")) << " |\n";
  m << "| handshake p50 / p99 | " << fmt("%.0f µs", us(r.handshake_ns.quantile(0.5))) << " / "
    << fmt("%.0f µs", us(r.handshake_ns.quantile(0.99))) << " |\n";
  if (o.scenario == Scenario::kChurn) {
    m << "| planned disconnects | " << r.planned_disconnects << " |\n";
  }
  if (o.scenario == Scenario::kStorm) {
    m << "| messages sent / echoed | " << r.sent << " / " << r.echoed << " |\n";
    m << "| msgs/s sent / echoed (asked) | " << fmt("%.0f", per_s(r.sent, sending_s(r))) << " / "
      << fmt("%.0f", per_s(r.echoed, sending_s(r))) << " (" << fmt("%.0f", o.rate) << ") |\n";
    m << "| payload | " << o.size << " bytes to `" << o.to << "` |\n";
    m << "| sending from | "
      << (r.storm_start_s >= 0 ? fmt("%.2f s", r.storm_start_s) : std::string("never")) << " |\n";
    m << "| latency p50 / p99 / p999 / max | " << fmt("%.0f", us(r.latency_ns.quantile(0.5)))
      << " / " << fmt("%.0f", us(r.latency_ns.quantile(0.99))) << " / "
      << fmt("%.0f", us(r.latency_ns.quantile(0.999))) << " / "
      << fmt("%.0f µs", us(r.latency_ns.max())) << " |\n";
  }
  m << "| ticks answered | " << r.ticks_received << " |\n";
  m << "| errors | " << r.error_total() << " |\n";
  if (t.vm_samples > 0) {
    m << "| target memory (erlang:memory total, first / max) | "
      << fmt("%.1f", t.vm_mem_total.first / kMiB) << " / "
      << fmt("%.1f MiB", t.vm_mem_total.max / kMiB) << " |\n";
    m << "| target processes (first / max / last) | " << fmt("%.0f", t.vm_processes.first) << " / "
      << fmt("%.0f", t.vm_processes.max) << " / " << fmt("%.0f", t.vm_processes.last) << " |\n";
    if (t.vm_cpu_pct >= 0)
      m << "| target CPU (VM threads) | " << fmt("%.1f %%", t.vm_cpu_pct) << " |\n";
  }
  if (t.proc_samples > 0) {
    m << "| target RSS (first / max) | " << fmt("%.1f", t.proc_rss.first / kMiB) << " / "
      << fmt("%.1f MiB", t.proc_rss.max / kMiB) << " |\n";
    if (t.proc_cpu_pct >= 0)
      m << "| target CPU (/proc) | " << fmt("%.1f %%", t.proc_cpu_pct) << " |\n";
  }
  if (t.filter_first) {
    m << "| target carrier | " << t.filter_last->carrier
      << (t.filter_last->filtering ? " (filter enforcing)" : "") << " |\n";
    m << "| target filter: messages dropped / spawn requests refused (this run) | "
      << filter_delta(t, &TargetStats::messages_dropped) << " / "
      << filter_delta(t, &TargetStats::spawn_refused) << " |\n";
  }
  if (o.attack_rate > 0) {
    const AttackResult& a = r.attacks;
    m << "\n## Attack mix\n\n| | |\n|---|---|\n";
    m << "| asked | " << fmt("%.1f/s", o.attack_rate) << " of " << o.attacks << ", os:cmd(\""
      << o.attack_cmd << "\") |\n";
    m << "| started at | " << (a.start_s >= 0 ? fmt("%.2f s", a.start_s) : std::string("never"))
      << " |\n";
    m << "| sent |";
    for (const auto& [kind, n] : a.sent) m << " " << kind << " " << n << ";";
    m << " total " << a.sent_total << " |\n";
    m << "| answers: refused / ran | " << a.answered_refused << " / " << a.answered_ran << " |\n";
    if (!a.blocked.empty()) m << "| blocked | " << a.blocked << " |\n";
    auto lat = [](const Histogram& h) {
      return fmt("%.0f", us(h.quantile(0.5))) + " / " + fmt("%.0f µs", us(h.quantile(0.99))) +
             " (" + std::to_string(h.count()) + " echoes)";
    };
    m << "| legitimate latency p50 / p99 before attacks | " << lat(a.latency_before_ns) << " |\n";
    m << "| legitimate latency p50 / p99 during attacks | " << lat(a.latency_during_ns) << " |\n";
  }
  if (!r.errors.empty()) {
    m << "\n## Errors by kind\n\n| kind | count |\n|---|---|\n";
    for (const auto& [kind, n] : r.errors) m << "| " << kind << " | " << n << " |\n";
  }
  if (!r.notes.empty()) {
    m << "\n## Other traffic (not errors)\n\n| kind | count |\n|---|---|\n";
    for (const auto& [kind, n] : r.notes) m << "| " << kind << " | " << n << " |\n";
  }
  return m.str();
}

std::string timeline_tsv(const RunResult& r) {
  std::ostringstream s;
  s << "# t\tup\thandshakes\tsent\techoed\terrors\tsent_per_s\techoed_per_s\tp50_us\tp99_us\n";
  const TimelinePoint* prev = nullptr;
  for (const TimelinePoint& p : r.timeline) {
    // The last point comes right after the drain: a rate over a sliver of
    // a second would be noise, so it has none ("-").
    double dt = prev ? p.t - prev->t : 0;
    std::string sent_rate = "-", echo_rate = "-", p50 = "-", p99 = "-";
    if (dt >= 0.5) {
      sent_rate = fmt("%.0f", static_cast<double>(p.sent - prev->sent) / dt);
      echo_rate = fmt("%.0f", static_cast<double>(p.echoed - prev->echoed) / dt);
    }
    if (p.p50_ns > 0) {
      p50 = fmt("%.1f", us(p.p50_ns));
      p99 = fmt("%.1f", us(p.p99_ns));
    }
    s << fmt("%.3f", p.t) << '\t' << p.up << '\t' << p.handshakes << '\t' << p.sent << '\t'
      << p.echoed << '\t' << p.errors << '\t' << sent_rate << '\t' << echo_rate << '\t' << p50
      << '\t' << p99 << '\n';
    prev = &p;
  }
  return s.str();
}

std::string target_vm_tsv(const RunResult& r) {
  return samples_tsv(r, "mem_total_mib\tprocesses\tports", has_vm, vm_cpu_s,
                     [](const TargetSample& t) {
                       return fmt("%.2f", static_cast<double>(t.helper->mem_total) / kMiB) + '\t' +
                              std::to_string(t.helper->process_count) + '\t' +
                              std::to_string(t.helper->port_count);
                     });
}

std::string target_proc_tsv(const RunResult& r) {
  return samples_tsv(r, "rss_mib", has_proc, proc_cpu_s, [](const TargetSample& t) {
    return fmt("%.2f", static_cast<double>(t.proc->rss_bytes) / kMiB);
  });
}

Result<void> write_report(const RunResult& r, const std::string& dir) {
  if (mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST)
    return Error::from_errno(errno, "mkdir " + dir);
  struct File {
    const char* name;
    std::string text;
  };
  File files[] = {{"report.json", report_json(r)},
                  {"report.md", report_markdown(r)},
                  {"timeline.tsv", timeline_tsv(r)},
                  {"target_vm.tsv", target_vm_tsv(r)},
                  {"target_proc.tsv", target_proc_tsv(r)}};
  for (const File& f : files) {
    std::string path = dir + "/" + f.name;
    std::ofstream out(path, std::ios::trunc);
    out << f.text;
    if (!out.flush()) return Error::message("cannot write " + path);
  }
  return {};
}

}  // namespace ktls::loadgen
