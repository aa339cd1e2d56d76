#include "tools/loadgen/swarm.h"

#include <arpa/inet.h>
#include <ei.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>

#include "carrier/tls_session.h"
#include "tools/loadgen/handshaker.h"
#include "tools/loadgen/stream_io.h"
#include "tools/loadgen/tls_optfile.h"

namespace ktls::loadgen {

using carrier::Error;
using carrier::Result;

uint64_t RunResult::error_total() const {
  uint64_t n = 0;
  for (const auto& [kind, count] : errors) n += count;
  return n;
}

namespace {

using Clock = std::chrono::steady_clock;

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
          .count());
}

constexpr uint64_t kEventFdTag = ~uint64_t{0};
std::atomic<bool> stop_early{false};
constexpr size_t kReadChunk = 256 * 1024;
constexpr size_t kDecodeSlack = 64;              // see decode_packet()
constexpr size_t kMaxQueued = 4 * 1024 * 1024;   // per connection, then messages are dropped
constexpr uint64_t kRetryDelayNs = 500'000'000;  // after a failed handshake
constexpr uint64_t kSecond = 1'000'000'000;

// One simulated node. Its connection exists while state is kUp.
struct Conn {
  enum class State : uint8_t { kDown, kConnecting, kUp };
  State state = State::kDown;
  uint32_t generation = 0;  // bumped at every new incarnation (new name, new creation)
  int fd = -1;
  SSL* ssl = nullptr;             // with TLS (owned by ei's socket context, freed at close)
  bool want_out = false;          // EPOLLOUT registered
  bool write_wants_read = false;  // a TLS write waits for the socket to be readable
  std::string pid_ext;
  std::string rx;  // bytes of a packet not complete yet (empty when idle)
  std::string tx;  // bytes the socket did not take yet, from tx_off
  size_t tx_off = 0;
};

class Swarm {
 public:
  explicit Swarm(const Options& o) : o_(o), rng_(std::random_device{}()) {
    r_.options = o;
    conns_.resize(o.conns);
    payload_.resize(o.size);
    for (size_t i = 0; i < payload_.size(); ++i) payload_[i] = static_cast<char>('a' + i % 26);
    scratch_.resize(kReadChunk + kDecodeSlack);
  }
  ~Swarm() {
    if (epoll_ >= 0) close(epoll_);
  }

  Result<RunResult> run();

 private:
  bool storm() const { return o_.scenario == Scenario::kStorm; }
  uint64_t since_start(uint64_t t) const { return t - start_ns_; }
  uint64_t tag(uint32_t slot) const { return (uint64_t{conns_[slot].generation} << 32) | slot; }
  void error(const std::string& kind) { ++r_.errors[kind]; }

  void dispatch_handshakes(uint64_t now);
  void on_handshakes(uint64_t now);
  void on_event(const epoll_event& ev, uint64_t now);
  void on_readable(uint32_t slot, uint64_t now);
  void on_packet(uint32_t slot, std::string_view pkt, uint64_t now);
  void queue(uint32_t slot);  // writes c.tx now unless the socket is known full
  void flush(uint32_t slot);
  void set_out(uint32_t slot, bool on);
  void close_conn(uint32_t slot, const char* why_error);
  void send_messages(uint64_t now, double dt);
  void send_attacks(uint64_t now, double dt);
  bool target_refuses_attacks(std::string* why) const;
  void block_attacks(const std::string& why);
  void churn(double dt);
  void sample(uint64_t now);
  uint64_t request_stats();  // over the first connection up; its seq, 0 if none is up
  void progress(uint64_t now, bool last);
  uint32_t up() const { return up_; }

  const Options& o_;
  RunResult r_;
  std::mt19937_64 rng_;
  std::vector<Conn> conns_;
  std::string payload_;
  std::string scratch_;
  std::string decode_buf_;
  Histogram second_latency_;                  // echoes since the last timeline point
  std::shared_ptr<carrier::TlsContext> tls_;  // outlives hs_ and every connection
  std::unique_ptr<Handshaker> hs_;
  int epoll_ = -1;
  uint64_t start_ns_ = 0;
  uint32_t up_ = 0;
  std::deque<uint32_t> ready_;                       // slots to connect now
  std::deque<std::pair<uint64_t, uint32_t>> retry_;  // (not before, slot), in time order
  double ramp_tokens_ = 0, send_tokens_ = 0, churn_tokens_ = 0;
  uint32_t next_sender_ = 0;
  uint64_t seq_ = 0;
  uint64_t stats_seq_ = 0;
  uint64_t last_stats_seq_ = 0;   // of the latest reply
  uint64_t final_stats_seq_ = 0;  // the request sent when the duration is over
  std::optional<TargetStats> last_stats_;
  uint64_t attack_start_ns_ = 0;  // 0: not started
  double attack_tokens_ = 0;
  uint32_t next_attacker_ = 0;
  uint64_t attack_seq_ = 0;
  bool sending_ = true;
  bool progress_tty_ = false;
  size_t progress_len_ = 0;
  std::string to_;
};

Result<RunResult> Swarm::run() {
  in_addr target{};
  if (inet_pton(AF_INET, o_.host.c_str(), &target) != 1) {
    return Error::message("--host '" + o_.host + "' is not an IPv4 address");
  }
  epoll_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_ < 0) return Error::from_errno(errno, "epoll_create1");
  Handshaker::Config hc;
  hc.target = target;
  hc.port = o_.port;
  hc.cookie = o_.cookie;
  hc.node_host = o_.node_host;
  hc.timeout_ms = o_.connect_timeout_ms;
  hc.threads = o_.handshake_threads;
  if (!o_.tls_optfile.empty()) {
    auto topts = read_client_tls_optfile(o_.tls_optfile);
    if (!topts) return topts.error();
    for (const std::string& k : topts.value().ignored) {
      std::fprintf(stderr, "loadgen: %s: client option %s not used by the swarm\n",
                   o_.tls_optfile.c_str(), k.c_str());
    }
    auto ctx = carrier::TlsContext::create(topts.value().tls, /*server=*/false);
    if (!ctx) return Error::message("--tls " + o_.tls_optfile + ": " + ctx.error().what);
    tls_ = ctx.take();
    hc.tls = tls_->get();
  }
  hs_ = std::make_unique<Handshaker>(hc);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = kEventFdTag;
  if (epoll_ctl(epoll_, EPOLL_CTL_ADD, hs_->event_fd(), &ev) < 0) {
    return Error::from_errno(errno, "epoll_ctl eventfd");
  }
  progress_tty_ = isatty(STDERR_FILENO) == 1;

  for (uint32_t i = 0; i < o_.conns; ++i) ready_.push_back(i);
  start_ns_ = now_ns();
  const uint64_t end_ns = start_ns_ + static_cast<uint64_t>(o_.duration_s * 1e9);
  uint64_t drain_end = 0;
  uint64_t last_ns = start_ns_;
  uint64_t next_second = start_ns_;
  std::vector<epoll_event> events(1024);
  for (;;) {
    uint64_t now = now_ns();
    if (now >= next_second) {
      sample(now);
      progress(now, false);
      next_second += kSecond;
    }
    if (sending_ && (now >= end_ns || stop_early.load(std::memory_order_relaxed))) {
      // The duration is over: no new traffic; wait for echoes in flight.
      sending_ = false;
      r_.elapsed_s = static_cast<double>(since_start(now)) / 1e9;
      drain_end = now + uint64_t{o_.drain_ms} * 1'000'000;
      // The attack mix: the target's counters once every attack arrived.
      if (r_.attacks.sent_total > 0) final_stats_seq_ = request_stats();
    }
    if (!sending_ &&
        (now >= drain_end || (r_.echoed >= r_.sent && last_stats_seq_ >= final_stats_seq_))) {
      break;
    }
    double dt = static_cast<double>(now - last_ns) / 1e9;
    last_ns = now;
    if (sending_) {
      dispatch_handshakes(now);
      ramp_tokens_ += dt * o_.ramp_rate;
      if (storm()) send_messages(now, dt);
      if (o_.attack_rate > 0) send_attacks(now, dt);
      if (o_.scenario == Scenario::kChurn) churn(dt);
    }
    // Pacing of messages and churn needs a fine tick; otherwise wake at least
    // every 100 ms for the clock.
    int timeout_ms = (storm() || o_.scenario == Scenario::kChurn || o_.ramp_rate > 0) ? 1 : 100;
    int n = epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), timeout_ms);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::from_errno(errno, "epoll_wait");
    }
    now = now_ns();
    for (int i = 0; i < n; ++i) on_event(events[i], now);
  }
  if (r_.elapsed_s == 0) r_.elapsed_s = static_cast<double>(since_start(now_ns())) / 1e9;
  uint64_t now = now_ns();
  sample(now);
  progress(now, true);
  r_.up_at_end = up_;
  if (storm() && r_.sent > r_.echoed) r_.errors["echo_lost"] += r_.sent - r_.echoed;
  for (uint32_t i = 0; i < conns_.size(); ++i) {
    if (conns_[i].state == Conn::State::kUp) close_conn(i, nullptr);
  }
  hs_.reset();  // joins the workers, closes handshakes finished too late
  return std::move(r_);
}

void Swarm::dispatch_handshakes(uint64_t now) {
  while (!retry_.empty() && retry_.front().first <= now) {
    ready_.push_back(retry_.front().second);
    retry_.pop_front();
  }
  // Enough queued to keep every worker busy, no more (so churn and ramp
  // stay responsive).
  size_t limit = 2 * size_t{o_.handshake_threads};
  while (!ready_.empty() && hs_->pending() < limit) {
    if (o_.ramp_rate > 0) {
      if (ramp_tokens_ < 1) break;
      ramp_tokens_ -= 1;
    }
    uint32_t slot = ready_.front();
    ready_.pop_front();
    Conn& c = conns_[slot];
    c.state = Conn::State::kConnecting;
    HandshakeJob job;
    job.slot = slot;
    job.generation = c.generation;
    job.alive = o_.name_prefix + std::to_string(slot);
    if (c.generation > 0) job.alive += "_" + std::to_string(c.generation);
    job.creation = static_cast<uint32_t>(rng_() % 0xfffffff0u) + 4;
    hs_->submit(std::move(job));
  }
  if (o_.ramp_rate > 0) ramp_tokens_ = std::min(ramp_tokens_, o_.ramp_rate);  // no bursts
}

void Swarm::on_handshakes(uint64_t now) {
  for (HandshakeResult& res : hs_->take_results()) {
    Conn& c = conns_[res.slot];
    if (c.generation != res.generation || c.state != Conn::State::kConnecting) {
      if (res.fd >= 0) ei_close_connection(res.fd);  // not expected any more
      continue;
    }
    if (res.fd < 0) {
      ++r_.handshakes_failed;
      error(res.error_kind);
      if (r_.handshakes_failed <= 5) std::fprintf(stderr, "loadgen: %s\n", res.error_text.c_str());
      c.state = Conn::State::kDown;
      ++c.generation;
      retry_.emplace_back(now + kRetryDelayNs, res.slot);
      continue;
    }
    ++r_.handshakes_ok;
    r_.handshake_ns.record(res.ns);
    int flags = fcntl(res.fd, F_GETFL);
    fcntl(res.fd, F_SETFL, flags | O_NONBLOCK);
    c.fd = res.fd;
    c.ssl = res.ssl;
    if (c.ssl != nullptr && r_.tls.empty()) {
      r_.tls = std::string(SSL_get_version(c.ssl)) + " " + SSL_get_cipher_name(c.ssl);
    }
    c.pid_ext = std::move(res.pid_ext);
    c.state = Conn::State::kUp;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.u64 = tag(res.slot);
    if (epoll_ctl(epoll_, EPOLL_CTL_ADD, c.fd, &ev) < 0) {
      error("epoll_add");
      ei_close_connection(c.fd);
      c.fd = -1;
      c.state = Conn::State::kDown;
      continue;
    }
    ++up_;
    r_.peak_up = std::max(r_.peak_up, up_);
    if (r_.all_up_s < 0 && up_ == o_.conns)
      r_.all_up_s = static_cast<double>(since_start(now)) / 1e9;
    // The handshake may have left records in the session that epoll will
    // not report.
    if (c.ssl != nullptr) on_readable(res.slot, now);
  }
}

void Swarm::on_event(const epoll_event& ev, uint64_t now) {
  if (ev.data.u64 == kEventFdTag) {
    on_handshakes(now);
    return;
  }
  auto slot = static_cast<uint32_t>(ev.data.u64);
  auto gen = static_cast<uint32_t>(ev.data.u64 >> 32);
  if (slot >= conns_.size() || conns_[slot].generation != gen ||
      conns_[slot].state != Conn::State::kUp) {
    return;  // closed earlier in this batch
  }
  if (ev.events & EPOLLOUT) flush(slot);
  if (conns_[slot].state == Conn::State::kUp &&
      (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))) {
    on_readable(slot, now);
  }
  // TLS: a write that waited for the peer's records may go on now.
  if (conns_[slot].state == Conn::State::kUp && conns_[slot].write_wants_read) flush(slot);
}

void Swarm::on_readable(uint32_t slot, uint64_t now) {
  // A few reads per wake-up, so that one busy connection does not starve the
  // rest (TLS: a read returns one record, so more of them).
  const int rounds = conns_[slot].ssl != nullptr ? 64 : 4;
  for (int round = 0; round < rounds; ++round) {
    Conn& c = conns_[slot];
    IoStatus st = stream_read(c.fd, c.ssl, scratch_.data(), kReadChunk);
    switch (st.kind) {
      case IoStatus::Kind::kDone:
        break;
      case IoStatus::Kind::kWantRead:
        return;
      case IoStatus::Kind::kWantWrite:  // TLS: a read that must write first
        set_out(slot, true);
        return;
      case IoStatus::Kind::kClosed:
        close_conn(slot, sending_ ? "closed_by_target" : nullptr);
        return;
      case IoStatus::Kind::kError:
        if (st.err == 0 && r_.errors["tls_error"] < 3) {
          std::fprintf(stderr, "loadgen: %s\n", st.what.c_str());
        }
        close_conn(slot, st.err == ECONNRESET ? "reset_by_target"
                         : st.err == 0        ? "tls_error"
                                              : "recv_error");
        return;
    }
    const size_t n = st.n;
    r_.bytes_received += n;
    std::string_view data(scratch_.data(), n);
    bool buffered = !c.rx.empty();
    if (buffered) {
      c.rx.append(data);  // deliberate copy: a packet split across reads
      data = c.rx;
    }
    const uint32_t gen = c.generation;
    size_t off = 0;
    while (data.size() - off >= 4) {
      auto len = (uint32_t{static_cast<uint8_t>(data[off])} << 24) |
                 (uint32_t{static_cast<uint8_t>(data[off + 1])} << 16) |
                 (uint32_t{static_cast<uint8_t>(data[off + 2])} << 8) |
                 uint32_t{static_cast<uint8_t>(data[off + 3])};
      if (data.size() - off - 4 < len) break;
      std::string_view pkt = data.substr(off + 4, len);
      off += 4 + len;
      if (buffered) {
        // The decoder wants slack after the packet (dist_codec.h).
        decode_buf_.assign(pkt);
        decode_buf_.append(kDecodeSlack, '\0');
        pkt = std::string_view(decode_buf_.data(), len);
      }
      on_packet(slot, pkt, now);
      if (c.state != Conn::State::kUp || c.generation != gen) return;  // closed meanwhile
    }
    if (buffered) {
      c.rx.erase(0, off);
      if (c.rx.empty()) std::string().swap(c.rx);  // an idle connection holds no buffer
    } else if (off < data.size()) {
      c.rx.assign(data.substr(off));
    }
    if (c.ssl == nullptr && n < kReadChunk) return;
  }
}

void Swarm::on_packet(uint32_t slot, std::string_view pkt, uint64_t now) {
  Conn& c = conns_[slot];
  if (pkt.empty()) {
    ++r_.ticks_received;
    append_tick(c.tx);
    queue(slot);
    return;
  }
  Inbound in = decode_packet(pkt);
  switch (in.kind) {
    case Inbound::Kind::kEcho: {
      ++r_.echoed;
      const uint64_t lat = now > in.sent_ns ? now - in.sent_ns : 0;
      r_.latency_ns.record(lat);
      second_latency_.record(lat);
      if (o_.attack_rate > 0) {
        bool during = attack_start_ns_ != 0 && in.sent_ns >= attack_start_ns_;
        (during ? r_.attacks.latency_during_ns : r_.attacks.latency_before_ns).record(lat);
      }
      break;
    }
    case Inbound::Kind::kAttackRefused:
      ++r_.attacks.answered_refused;
      break;
    case Inbound::Kind::kAttackRan:
      if (r_.attacks.answered_ran++ == 0) {
        std::fprintf(stderr, "loadgen: an attack ran on the target (it answered as if it had)\n");
      }
      break;
    case Inbound::Kind::kStats: {
      ++r_.stats_replies;
      last_stats_seq_ = std::max(last_stats_seq_, in.stats.seq);
      last_stats_ = in.stats;
      std::string why;
      if (attack_start_ns_ != 0 && !attacks_harmless(o_) && !target_refuses_attacks(&why)) {
        block_attacks(why);
      }
      TargetSample s;
      s.t = static_cast<double>(since_start(now)) / 1e9;
      s.helper = in.stats;
      r_.target.push_back(s);
      break;
    }
    case Inbound::Kind::kOtherMessage:
      ++r_.notes["other_message"];
      break;
    case Inbound::Kind::kOtherControl:
      ++r_.notes["control_op_" + std::to_string(in.op)];
      break;
    case Inbound::Kind::kBad:
      error("bad_packet");
      if (r_.errors["bad_packet"] <= 3) std::fprintf(stderr, "loadgen: bad packet: %s\n", in.why);
      break;
  }
}

// New bytes are in c.tx: write what the socket takes now.
void Swarm::queue(uint32_t slot) {
  Conn& c = conns_[slot];
  if (!c.want_out && !c.write_wants_read) flush(slot);
}

void Swarm::flush(uint32_t slot) {
  Conn& c = conns_[slot];
  c.write_wants_read = false;
  while (c.tx_off < c.tx.size()) {
    IoStatus st = stream_write(c.fd, c.ssl, c.tx.data() + c.tx_off, c.tx.size() - c.tx_off);
    if (st.kind == IoStatus::Kind::kWantWrite) {
      set_out(slot, true);
      return;
    }
    if (st.kind == IoStatus::Kind::kWantRead) {  // TLS: waits for the peer's records
      c.write_wants_read = true;
      set_out(slot, false);
      return;
    }
    if (st.kind != IoStatus::Kind::kDone) {
      close_conn(slot, st.err == EPIPE || st.err == ECONNRESET || st.kind == IoStatus::Kind::kClosed
                           ? "reset_by_target"
                       : st.err == 0 ? "tls_error"
                                     : "send_error");
      return;
    }
    r_.bytes_sent += st.n;
    c.tx_off += st.n;
  }
  c.tx.clear();
  c.tx_off = 0;
  if (c.tx.capacity() > 64 * 1024) std::string().swap(c.tx);
  set_out(slot, false);
}

void Swarm::set_out(uint32_t slot, bool on) {
  Conn& c = conns_[slot];
  if (c.want_out == on) return;
  c.want_out = on;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | (on ? EPOLLOUT : 0u);
  ev.data.u64 = tag(slot);
  epoll_ctl(epoll_, EPOLL_CTL_MOD, c.fd, &ev);
}

void Swarm::close_conn(uint32_t slot, const char* why_error) {
  Conn& c = conns_[slot];
  if (why_error != nullptr) error(why_error);
  epoll_ctl(epoll_, EPOLL_CTL_DEL, c.fd, nullptr);
  ei_close_connection(c.fd);
  c.fd = -1;
  c.ssl = nullptr;
  c.state = Conn::State::kDown;
  c.want_out = false;
  c.write_wants_read = false;
  std::string().swap(c.rx);
  std::string().swap(c.tx);
  c.tx_off = 0;
  ++c.generation;
  --up_;
  // A connection lost while the run goes on is replaced, as a real node
  // would reconnect (a new incarnation).
  if (sending_ && why_error != nullptr) retry_.emplace_back(now_ns() + kRetryDelayNs, slot);
}

void Swarm::send_messages(uint64_t now, double dt) {
  // Latency under a steady load, not under the ramp's handshakes: sending
  // starts once every connection is up, or at half time if they never are.
  if (r_.storm_start_s < 0) {
    double t = static_cast<double>(since_start(now)) / 1e9;
    if (r_.all_up_s < 0 && t < o_.duration_s / 2) return;
    r_.storm_start_s = t;
  }
  send_tokens_ += dt * o_.rate;
  // Do not save up more than 100 ms of messages while nothing is up.
  send_tokens_ = std::min(send_tokens_, std::max(1.0, o_.rate / 10));
  uint32_t senders = o_.senders == 0 ? o_.conns : std::min(o_.senders, o_.conns);
  if (senders == 0) return;
  while (send_tokens_ >= 1) {
    // Round robin over the sender slots that are up.
    uint32_t tried = 0;
    while (tried < senders && conns_[next_sender_ % senders].state != Conn::State::kUp) {
      ++next_sender_;
      ++tried;
    }
    if (tried == senders) return;  // none up yet: tokens wait (capped above)
    uint32_t slot = next_sender_ % senders;
    ++next_sender_;
    send_tokens_ -= 1;
    Conn& c = conns_[slot];
    if (c.tx.size() - c.tx_off > kMaxQueued) {
      error("send_queue_full");
      continue;
    }
    append_echo_request(c.tx, c.pid_ext, o_.to, ++seq_, now, payload_);
    ++r_.sent;
    queue(slot);
  }
}

void Swarm::churn(double dt) {
  churn_tokens_ += dt * o_.churn_rate;
  churn_tokens_ = std::min(churn_tokens_, std::max(1.0, o_.churn_rate));
  while (churn_tokens_ >= 1) {
    if (up_ == 0) return;
    // A random connection that is up (a few tries; churn waits if few are up).
    uint32_t slot = 0;
    bool found = false;
    for (int i = 0; i < 16 && !found; ++i) {
      slot = static_cast<uint32_t>(rng_() % conns_.size());
      found = conns_[slot].state == Conn::State::kUp;
    }
    if (!found) return;
    churn_tokens_ -= 1;
    close_conn(slot, nullptr);
    ++r_.planned_disconnects;
    ready_.push_back(slot);  // reconnects at once under a new name
  }
}

void Swarm::sample(uint64_t now) {
  double t = static_cast<double>(since_start(now)) / 1e9;
  TimelinePoint p;
  p.t = t;
  p.up = up_;
  p.handshakes = r_.handshakes_ok;
  p.sent = r_.sent;
  p.echoed = r_.echoed;
  p.errors = r_.error_total();
  p.p50_ns = second_latency_.quantile(0.5);
  p.p99_ns = second_latency_.quantile(0.99);
  second_latency_ = Histogram();
  r_.timeline.push_back(p);
  if (o_.target_pid > 0) {
    TargetSample s;
    s.t = t;
    s.proc = read_proc(o_.target_pid);
    if (s.proc) r_.target.push_back(s);
  }
  if (sending_) request_stats();
}

// The stats helper answers over the first connection that is up.
uint64_t Swarm::request_stats() {
  if (o_.stats_name.empty()) return 0;
  for (uint32_t i = 0; i < conns_.size(); ++i) {
    if (conns_[i].state != Conn::State::kUp) continue;
    append_stats_request(conns_[i].tx, conns_[i].pid_ext, o_.stats_name, ++stats_seq_);
    ++r_.stats_requests;
    queue(i);
    return stats_seq_;
  }
  return 0;
}

// Whether the latest stats sample says the target is ktls_filter enforcing
// its policy, i.e. will refuse every attack the mix sends.
bool Swarm::target_refuses_attacks(std::string* why) const {
  if (!last_stats_ || !last_stats_->has_filter_fields) {
    *why = "the target's stats helper has not said which carrier it runs";
    return false;
  }
  if (last_stats_->carrier != "ktls_filter" || !last_stats_->filtering) {
    *why = "the target runs " + last_stats_->carrier +
           (last_stats_->carrier == "ktls_filter" ? " without enforcing its filter" : "") +
           ": only harmless attacks (--attacks spawn,rex --attack-cmd true) go to it";
    return false;
  }
  return true;
}

void Swarm::block_attacks(const std::string& why) {
  if (!r_.attacks.blocked.empty()) return;
  r_.attacks.blocked = why;
  std::fprintf(stderr, "loadgen: attack mix stopped: %s\n", why.c_str());
  stop_early.store(true, std::memory_order_relaxed);
}

// The attack mix: from the second half of the storm on (the first is the
// baseline), at --attack-rate, round robin over connections and kinds.
void Swarm::send_attacks(uint64_t now, double dt) {
  if (!r_.attacks.blocked.empty() || r_.storm_start_s < 0) return;
  if (attack_start_ns_ == 0) {
    double t = static_cast<double>(since_start(now)) / 1e9;
    if (t < r_.storm_start_s + (o_.duration_s - r_.storm_start_s) / 2) return;
    std::string why;
    if (!attacks_harmless(o_) && !target_refuses_attacks(&why)) {
      // Not known yet: wait for a sample until the run is nearly over.
      if ((last_stats_ && last_stats_->has_filter_fields) || t > o_.duration_s - 1) {
        block_attacks(why);
      }
      return;
    }
    attack_start_ns_ = now;
    r_.attacks.start_s = t;
  }
  attack_tokens_ = std::min(attack_tokens_ + dt * o_.attack_rate, std::max(1.0, o_.attack_rate));
  while (attack_tokens_ >= 1) {
    uint32_t tried = 0;
    while (tried < o_.conns && conns_[next_attacker_ % o_.conns].state != Conn::State::kUp) {
      ++next_attacker_;
      ++tried;
    }
    if (tried == o_.conns) return;
    uint32_t slot = next_attacker_++ % o_.conns;
    attack_tokens_ -= 1;
    Conn& c = conns_[slot];
    erlang_pid from;
    int idx = 0;
    if (ei_decode_pid(c.pid_ext.data(), &idx, &from) != 0) {
      error("attack_encode");
      continue;
    }
    // A reference of the sender's node, new for this attack.
    erlang_ref ref{};
    std::snprintf(ref.node, sizeof ref.node, "%s", from.node);
    ref.len = 3;
    ++attack_seq_;
    ref.n[0] = static_cast<unsigned>(attack_seq_ & 0x3ffff);
    ref.n[1] = static_cast<unsigned>(attack_seq_ >> 18);
    ref.n[2] = static_cast<unsigned>(rng_());
    ref.creation = from.creation;
    AttackKind kind = o_.attack_kinds[attack_seq_ % o_.attack_kinds.size()];
    append_attack(c.tx, kind, from, c.pid_ext, ref, o_.attack_cmd);
    ++r_.attacks.sent[attack_name(kind)];
    ++r_.attacks.sent_total;
    queue(slot);
  }
}

void Swarm::progress(uint64_t now, bool last) {
  if (!o_.progress) return;
  double t = static_cast<double>(since_start(now)) / 1e9;
  size_t n = r_.timeline.size();
  double sent_rate = 0, echo_rate = 0;
  if (n >= 2) {
    const TimelinePoint& a = r_.timeline[n - 2];
    const TimelinePoint& b = r_.timeline[n - 1];
    double dt = std::max(b.t - a.t, 1e-3);
    sent_rate = static_cast<double>(b.sent - a.sent) / dt;
    echo_rate = static_cast<double>(b.echoed - a.echoed) / dt;
  }
  char line[256];
  int len =
      std::snprintf(line, sizeof line,
                    "[%6.1fs] %s up %u/%u  handshakes %" PRIu64 " (%" PRIu64
                    " failed)  sent %.0f/s  echoed %.0f/s  p99 %.2f ms  errors %" PRIu64,
                    t, scenario_name(o_.scenario), up_, o_.conns, r_.handshakes_ok,
                    r_.handshakes_failed, sent_rate, echo_rate,
                    static_cast<double>(r_.latency_ns.quantile(0.99)) / 1e6, r_.error_total());
  if (len < 0) return;
  if (progress_tty_) {
    // Overwrite the line in place; pad over a longer previous line.
    std::fprintf(stderr, "\r%s%*s", line,
                 static_cast<int>(progress_len_ > static_cast<size_t>(len)
                                      ? progress_len_ - static_cast<size_t>(len)
                                      : 0),
                 "");
    progress_len_ = static_cast<size_t>(len);
    if (last) std::fputc('\n', stderr);
  } else {
    std::fprintf(stderr, "%s\n", line);
  }
  std::fflush(stderr);
}

}  // namespace

void stop_swarm_early() { stop_early.store(true, std::memory_order_relaxed); }

Result<RunResult> run_swarm(const Options& options) {
  Swarm s(options);
  return s.run();
}

}  // namespace ktls::loadgen
