// The ring thread: one io_uring, an eventfd for wakeups, and the commands
// other threads queue for it. Internal to the carrier library.
//
// Completion handlers (ConnectionImpl::on_*, ListenerImpl::on_*) run on the
// ring thread only. They may queue SQEs (CarrierImpl::sqe()) and call
// observers; they must not block, and an owner must stay registered in
// CarrierImpl (conns_/listeners_) while any SQE naming it is in flight
// (`ops` counts them), because the SQE's user_data points into it.
#pragma once

#include <liburing.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "carrier/carrier.h"
#include "carrier/fd.h"

namespace ktls::carrier::internal {

constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux
// How often a connection that found the buffer pool empty tries again.
constexpr std::chrono::milliseconds kRetryDelay{5};

enum class OpKind : uint8_t {
  kWake,
  kRecv,
  kSend,
  kConnect,
  kTimeout,
  kHandshakeTimer,
  kConnCancel,
  kAccept,
  kListenCancel,
};

// user_data of every SQE: an Op embedded in its owner (stable address).
struct Op {
  OpKind kind;
  void* owner;
};

class ConnectionImpl;
class ListenerImpl;

class CarrierImpl final : public Carrier {
 public:
  explicit CarrierImpl(const CarrierOptions& options) : options_(options) {}
  ~CarrierImpl() override;
  Result<void> init();

  Result<std::shared_ptr<Listener>> listen(const SockAddr& addr, int backlog,
                                           std::shared_ptr<ListenerObserver> observer) override;
  using Carrier::connect;
  std::shared_ptr<Connection> connect(const SockAddr& addr, std::chrono::milliseconds timeout,
                                      std::shared_ptr<ConnectionObserver> observer,
                                      std::string session_key,
                                      std::unique_ptr<TlsHello> hello) override;
  std::unique_ptr<TlsHello> hello(const std::string& session_key) override;
  std::unique_ptr<TlsHello> prepared_hello(const std::string& session_key) override;
  std::unique_ptr<TlsHello> try_prepared_hello(const std::string& session_key,
                                               bool& in_the_making) override;
  CarrierStats stats() const override {
    CarrierStats s;
    s.connections_open = open_.load(std::memory_order_relaxed);
    s.connections_total = total_.load(std::memory_order_relaxed);
    s.listeners_open = listeners_open_.load(std::memory_order_relaxed);
    s.ring_submits = submits_.load(std::memory_order_relaxed);
    s.wakeups = wakeups_.load(std::memory_order_relaxed);
    {
      std::lock_guard lock(tls_mu_);
      s.tls_handshakes = tls_handshakes_;
      s.tls_resumptions = tls_resumptions_;
      s.tls_handshake_failures = tls_failures_;
      s.ktls_installs = ktls_installs_;
      s.ktls_fallbacks = ktls_fallbacks_;
      s.tls_failure_reasons.assign(tls_failure_reasons_.begin(), tls_failure_reasons_.end());
      s.ktls_fallback_reason = ktls_fallback_reason_;
    }
    s.pool = pool_->stats();
    return s;
  }
  const CarrierTlsOptions& tls_options() const { return options_.tls; }
  // A TLS handshake failed (counted by a short form of `why`), or finished
  // with the record layer in the kernel (`kernel`) or not (`fallback` says why).
  void count_tls_failure(const std::string& why);
  void count_tls_established(bool kernel, const std::string& fallback, bool resumed);
  BufferPool& pool() override { return *pool_; }

  // Ring thread helpers.
  io_uring_sqe* sqe();
  // After prep: completion of `s` goes to `op`, counted in its owner's `ops`
  // (the owner stays registered until that completion).
  static void track(io_uring_sqe* s, Op* op, int& ops) {
    io_uring_sqe_set_data(s, op);
    ops++;
  }
  // Makes room for `n` SQEs that must go in one submission (a link chain).
  void reserve(unsigned n);
  // Asks the kernel to cancel `target`; the cancel completes to `done`.
  // False if no SQE was available (the caller tries again later).
  bool cancel(Op* target, Op* done, int& ops);
  void poke(std::shared_ptr<ConnectionImpl> c);
  void poke(std::shared_ptr<ListenerImpl> l);
  std::shared_ptr<ConnectionImpl> adopt(int fd, const SockAddr& peer);  // accepted socket
  void connection_finished(ConnectionImpl* c);
  // The pool had no buffer for `c`: service it again after kRetryDelay.
  void retry_later(ConnectionImpl* c);
  void listener_finished(ListenerImpl* l);
  void dispatch(Op* op, int res);
  // A TLS client connection with `session_key` ended: the next ClientHello
  // to that peer is made ahead, when the ring thread is idle (ring thread).
  void prepare_hello(const std::string& session_key);

 private:
  void run();
  void wake();
  void arm_wake();
  void drain_pokes();
  void retry_starved();
  bool spin_for_completion();
  void stop_all();
  void make_prepared_hello();

  CarrierOptions options_;
  std::shared_ptr<BufferPool> pool_;
  io_uring ring_{};
  bool ring_ok_ = false;
  Fd event_fd_;
  uint64_t event_buf_ = 0;
  Op wake_op_{OpKind::kWake, nullptr};
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> sleeping_{false};

  std::mutex poke_mu_;
  std::vector<std::shared_ptr<ConnectionImpl>> poked_conns_;
  std::vector<std::shared_ptr<ListenerImpl>> poked_listeners_;

  // Ring thread only: everything alive, keyed by address.
  std::unordered_map<ConnectionImpl*, std::shared_ptr<ConnectionImpl>> conns_;
  std::unordered_map<ListenerImpl*, std::shared_ptr<ListenerImpl>> listeners_;
  std::mutex new_mu_;  // registration from other threads
  std::vector<std::shared_ptr<ConnectionImpl>> new_conns_;
  std::vector<std::pair<std::shared_ptr<ConnectionImpl>, std::pair<SockAddr, int64_t>>> connects_;
  std::vector<std::shared_ptr<ListenerImpl>> new_listeners_;

  mutable std::mutex tls_mu_;
  uint64_t tls_handshakes_ = 0, tls_resumptions_ = 0, tls_failures_ = 0, ktls_installs_ = 0,
           ktls_fallbacks_ = 0;
  std::map<std::string, uint64_t> tls_failure_reasons_;
  std::string ktls_fallback_reason_;

  // Connections waiting for a buffer (ring thread only); retried on a timer.
  std::vector<ConnectionImpl*> starved_;
  std::chrono::steady_clock::time_point last_retry_{};
  std::vector<std::pair<Op*, int>> done_;  // completions of one wait, reused
  // ClientHellos made ahead for peers whose connection ended while we held
  // a session ticket for them: the next connection to such a peer (the
  // usual reconnect) does not pay the key share and the ticket's binder
  // (about 0.15 ms of CPU with OpenSSL 3.0) during its setup, where it
  // competed with the epmd lookup for the cores. One per peer, at most
  // kMaxPreparedHellos, each for kPreparedHelloLife; hello() takes them.
  static constexpr size_t kMaxPreparedHellos = 64;
  static constexpr std::chrono::seconds kPreparedHelloLife{60};
  struct PreparedHello {
    std::unique_ptr<TlsHello> hello;
    std::chrono::steady_clock::time_point made;
  };
  std::mutex hello_mu_;
  std::condition_variable hello_cv_;
  std::string making_hello_;  // the key being made (its ticket is taken)
  std::unordered_map<std::string, PreparedHello> prepared_hellos_;
  // Whether the ring thread is making the hello for `session_key`, and
  // takes the prepared one (both with hello_mu_ held).
  bool making_hello(const std::string& session_key) const;
  std::unique_ptr<TlsHello> take_prepared_hello(const std::string& session_key);
  std::vector<std::string> hellos_to_make_;  // ring thread only
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> open_{0}, total_{0}, listeners_open_{0}, submits_{0}, wakeups_{0};
  friend class ConnectionImpl;
  friend class ListenerImpl;
};
}  // namespace ktls::carrier::internal
