// The ring thread: event loop, command queue, registration of owners,
// shutdown (see ring.h).
#include "carrier/ring.h"

#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

#include "carrier/connection.h"
#include "carrier/listener.h"

namespace ktls::carrier::internal {

Result<void> CarrierImpl::init() {
  // ktls required on a kernel that cannot take TLS at all: every connection
  // would be refused, so the carrier does not start (the reason says why).
  const CarrierTlsOptions& tls = options_.tls;
  if ((tls.server || tls.client) && tls.kernel && tls.kernel_required) {
    std::string why = kernel_tls_unavailable();
    if (!why.empty()) return Error::message("kernel TLS is required (ktls required), but " + why);
  }
  auto pool = BufferPool::create(options_.pool);
  if (!pool) return pool.error();
  pool_ = pool.take();
  int r = io_uring_queue_init(options_.ring_entries, &ring_, 0);
  if (r < 0) return Error::from_errno(-r, "io_uring_queue_init");
  ring_ok_ = true;
  event_fd_.reset(eventfd(0, EFD_CLOEXEC));
  if (!event_fd_) return Error::from_errno(errno, "eventfd");
  arm_wake();
  io_uring_submit(&ring_);
  thread_ = std::thread([this] { run(); });
  return {};
}

CarrierImpl::~CarrierImpl() {
  if (thread_.joinable()) {
    stop_.store(true);
    wake();
    thread_.join();
  }
  conns_.clear();
  listeners_.clear();
  if (ring_ok_) io_uring_queue_exit(&ring_);
}

io_uring_sqe* CarrierImpl::sqe() {
  io_uring_sqe* s = io_uring_get_sqe(&ring_);
  if (!s) {
    io_uring_submit(&ring_);
    submits_.fetch_add(1, std::memory_order_relaxed);
    s = io_uring_get_sqe(&ring_);
  }
  return s;
}

void CarrierImpl::reserve(unsigned n) {
  if (io_uring_sq_space_left(&ring_) < n) {
    io_uring_submit(&ring_);
    submits_.fetch_add(1, std::memory_order_relaxed);
  }
}

bool CarrierImpl::cancel(Op* target, Op* done, int& ops) {
  io_uring_sqe* s = sqe();
  if (!s) return false;
  io_uring_prep_cancel(s, target, 0);
  track(s, done, ops);
  return true;
}

void CarrierImpl::arm_wake() {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, event_fd_.get(), &event_buf_, sizeof event_buf_, 0);
  io_uring_sqe_set_data(s, &wake_op_);
}

void CarrierImpl::wake() {
  uint64_t one = 1;
  wakeups_.fetch_add(1, std::memory_order_relaxed);
  [[maybe_unused]] ssize_t n = ::write(event_fd_.get(), &one, sizeof one);
}

void CarrierImpl::poke(std::shared_ptr<ConnectionImpl> c) {
  if (c->poked.exchange(true, std::memory_order_acq_rel)) return;  // already queued
  {
    std::lock_guard lock(poke_mu_);
    poked_conns_.push_back(std::move(c));
  }
  if (sleeping_.load(std::memory_order_seq_cst)) wake();
}

void CarrierImpl::poke(std::shared_ptr<ListenerImpl> l) {
  if (l->poked.exchange(true, std::memory_order_acq_rel)) return;
  {
    std::lock_guard lock(poke_mu_);
    poked_listeners_.push_back(std::move(l));
  }
  if (sleeping_.load(std::memory_order_seq_cst)) wake();
}

std::shared_ptr<ConnectionImpl> CarrierImpl::adopt(int fd, const SockAddr& peer) {
  Fd owned(fd);
  const int raw = owned.get();
  auto c = std::make_shared<ConnectionImpl>(this, next_id_.fetch_add(1), std::move(owned),
                                            options_.connection, options_.tls.server);
  c->set_addresses(peer);
  c->mark_ready();
  if (options_.connection.nodelay) {
    int one = 1;
    setsockopt(raw, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  conns_.emplace(c.get(), c);
  open_.fetch_add(1, std::memory_order_relaxed);
  total_.fetch_add(1, std::memory_order_relaxed);
  return c;
}

void CarrierImpl::count_tls_failure(const std::string& why) {
  // OpenSSL's reason ("...:SSL routines::certificate verify failed") or
  // the first words of ours: a small set of keys, whatever the peer sends.
  std::string key = why;
  const size_t colons = key.find("::");
  if (colons != std::string::npos) key = key.substr(colons + 2);
  for (const char* stop : {";", " (", ":"}) {
    const size_t at = key.find(stop);
    if (at != std::string::npos && at > 0) key.resize(at);
  }
  if (key.size() > 60) key.resize(60);
  std::lock_guard lock(tls_mu_);
  tls_failures_++;
  if (tls_failure_reasons_.size() < 64 || tls_failure_reasons_.count(key)) {
    tls_failure_reasons_[key]++;
  } else {
    tls_failure_reasons_["other"]++;
  }
}

void CarrierImpl::count_tls_established(bool kernel, const std::string& fallback, bool resumed) {
  std::lock_guard lock(tls_mu_);
  tls_handshakes_++;
  if (resumed) tls_resumptions_++;
  if (kernel) {
    ktls_installs_++;
  } else {
    ktls_fallbacks_++;
    ktls_fallback_reason_ = fallback;
  }
}

void CarrierImpl::connection_finished(ConnectionImpl* c) {
  if (c->starved) {
    std::erase(starved_, c);
    c->starved = false;
  }
  if (c->ops == 0) conns_.erase(c);  // else when its last completion arrives
}

void CarrierImpl::retry_later(ConnectionImpl* c) {
  if (c->starved) return;
  c->starved = true;
  starved_.push_back(c);
}

void CarrierImpl::listener_finished(ListenerImpl* l) {
  if (l->ops == 0) listeners_.erase(l);
}

// One completion. Its owner is alive: owners stay registered while they have
// operations in flight.
void CarrierImpl::dispatch(Op* op, int res) {
  // liburing's own timeout SQE when the kernel lacks IORING_FEAT_EXT_ARG.
  if (!op || reinterpret_cast<uintptr_t>(op) == LIBURING_UDATA_TIMEOUT) return;
  switch (op->kind) {
    case OpKind::kWake:
      arm_wake();
      return;
    case OpKind::kRecv:
    case OpKind::kSend:
    case OpKind::kConnect:
    case OpKind::kTimeout:
    case OpKind::kHandshakeTimer:
    case OpKind::kConnCancel: {
      auto* c = static_cast<ConnectionImpl*>(op->owner);
      auto ref = conns_.at(c);  // keeps it alive through the handler
      c->ops--;
      if (!c->finished()) {
        if (op->kind == OpKind::kRecv) c->on_recv(res);
        if (op->kind == OpKind::kSend) c->on_send(res);
        if (op->kind == OpKind::kConnect) c->on_connect(res);
        if (op->kind == OpKind::kConnCancel) c->on_cancel();
        if (op->kind == OpKind::kHandshakeTimer) c->on_handshake_timer(res);
      }
      if (c->finished() && c->ops == 0) conns_.erase(c);
      return;
    }
    case OpKind::kAccept:
    case OpKind::kListenCancel: {
      auto* l = static_cast<ListenerImpl*>(op->owner);
      auto ref = listeners_.at(l);
      l->ops--;
      if (!l->finished()) {
        if (op->kind == OpKind::kAccept) l->on_accept(res);
        if (op->kind == OpKind::kListenCancel) l->on_cancel();
      }
      if (l->finished() && l->ops == 0) listeners_.erase(l);
      return;
    }
  }
}

Result<std::shared_ptr<Listener>> CarrierImpl::listen(const SockAddr& addr, int backlog,
                                                      std::shared_ptr<ListenerObserver> observer) {
  Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) return Error::from_errno(errno, "socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) < 0) {
    return Error::from_errno(errno, "bind " + addr.to_string());
  }
  if (::listen(fd.get(), backlog) < 0) {
    return Error::from_errno(errno, "listen " + addr.to_string());
  }
  SockAddr local;
  local.len = sizeof local.storage;
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&local.storage), &local.len);
  auto l = std::make_shared<ListenerImpl>(this, std::move(fd), local, std::move(observer));
  {
    std::lock_guard lock(new_mu_);
    new_listeners_.push_back(l);
  }
  listeners_open_.fetch_add(1, std::memory_order_relaxed);
  wake();
  return std::shared_ptr<Listener>(l);
}

std::unique_ptr<TlsHello> CarrierImpl::prepared_hello(const std::string& session_key) {
  std::unique_lock lock(hello_mu_);
  // Being made (on the ring thread, which never waits here): it holds the
  // peer's ticket, so it is worth the wait (about 0.15 ms).
  hello_cv_.wait_for(lock, std::chrono::milliseconds(100),
                     [&] { return !making_hello(session_key); });
  return take_prepared_hello(session_key);
}

std::unique_ptr<TlsHello> CarrierImpl::try_prepared_hello(const std::string& session_key,
                                                          bool& in_the_making) {
  std::lock_guard lock(hello_mu_);
  in_the_making = making_hello(session_key);
  if (in_the_making) return nullptr;
  return take_prepared_hello(session_key);
}

bool CarrierImpl::making_hello(const std::string& session_key) const {
  return !session_key.empty() && making_hello_ == session_key;
}

std::unique_ptr<TlsHello> CarrierImpl::take_prepared_hello(const std::string& session_key) {
  auto it = prepared_hellos_.find(session_key);
  if (it == prepared_hellos_.end()) return nullptr;
  auto h = std::move(it->second);
  prepared_hellos_.erase(it);
  if (std::chrono::steady_clock::now() - h.made >= kPreparedHelloLife) return nullptr;
  return std::move(h.hello);
}

std::unique_ptr<TlsHello> CarrierImpl::hello(const std::string& session_key) {
  if (!options_.tls.client) return nullptr;
  if (auto h = prepared_hello(session_key)) return h;
  auto s = TlsHelloImpl::make(options_.tls.client, session_key);
  if (!s) return nullptr;
  return std::make_unique<TlsHelloImpl>(std::move(s));
}

std::shared_ptr<Connection> CarrierImpl::connect(const SockAddr& addr,
                                                 std::chrono::milliseconds timeout,
                                                 std::shared_ptr<ConnectionObserver> observer,
                                                 std::string session_key,
                                                 std::unique_ptr<TlsHello> hello) {
  Fd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  const int socket_errno = fd ? 0 : errno;  // before anything else can change errno
  auto c = std::make_shared<ConnectionImpl>(this, next_id_.fetch_add(1), std::move(fd),
                                            options_.connection, options_.tls.client);
  c->set_peer(addr);
  c->set_client_session(std::move(session_key), std::move(hello));
  c->set_observer(std::move(observer));
  total_.fetch_add(1, std::memory_order_relaxed);
  open_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(new_mu_);
    connects_.push_back({c, {addr, socket_errno ? -int64_t{socket_errno} : timeout.count()}});
  }
  wake();
  return c;
}

void CarrierImpl::drain_pokes() {
  std::vector<std::shared_ptr<ConnectionImpl>> conns;
  std::vector<std::shared_ptr<ListenerImpl>> listeners;
  std::vector<std::pair<std::shared_ptr<ConnectionImpl>, std::pair<SockAddr, int64_t>>> connects;
  {
    std::lock_guard lock(new_mu_);
    for (auto& l : new_listeners_) listeners_.emplace(l.get(), l);
    new_listeners_.clear();
    connects.swap(connects_);
  }
  for (auto& [c, what] : connects) {
    conns_.emplace(c.get(), c);
    if (what.second < 0) {
      c->connected = false;
      Error e = Error::from_errno(static_cast<int>(-what.second), "socket");
      c->fail(e.what, e.code);
      c->service();
      continue;
    }
    c->start_connect(std::chrono::milliseconds(what.second));
  }
  {
    std::lock_guard lock(poke_mu_);
    conns.swap(poked_conns_);
    listeners.swap(poked_listeners_);
  }
  for (auto& c : conns) {
    c->poked.store(false, std::memory_order_release);
    if (conns_.count(c.get())) c->service();
  }
  for (auto& l : listeners) {
    l->poked.store(false, std::memory_order_release);
    if (listeners_.count(l.get())) l->service();
  }
}

void CarrierImpl::run() {
  // Its own name in top -H and /proc/PID/task (it would inherit the name of
  // the scheduler thread that started it, e.g. "1_scheduler").
  pthread_setname_np(pthread_self(), "ktls_ring");
  std::vector<std::shared_ptr<ConnectionImpl>> keep;  // alive during a callback
  while (!stop_.load(std::memory_order_acquire)) {
    drain_pokes();
    make_prepared_hello();  // one per turn, between the turns' I/O
    sleeping_.store(true, std::memory_order_seq_cst);
    bool pending;
    {
      std::lock_guard lock(poke_mu_);
      std::lock_guard lock2(new_mu_);
      pending = !poked_conns_.empty() || !poked_listeners_.empty() || !connects_.empty() ||
                !new_listeners_.empty();
    }
    if (pending) {
      sleeping_.store(false, std::memory_order_seq_cst);
      continue;
    }
    io_uring_cqe* cqe = nullptr;
    // sleeping_ is already set, so pokes arrive as eventfd completions.
    bool ready = spin_for_completion();
    if (ready) {
      io_uring_submit(&ring_);
    } else if (starved_.empty() && hellos_to_make_.empty()) {
      io_uring_submit_and_wait(&ring_, 1);
    } else {
      // Starved connections retry after kRetryDelay; queued hellos are
      // made once what completed is handled.
      __kernel_timespec ts{0, hellos_to_make_.empty() ? kRetryDelay.count() * 1000 * 1000 : 0};
      io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    }
    submits_.fetch_add(1, std::memory_order_relaxed);
    sleeping_.store(false, std::memory_order_seq_cst);
    unsigned head, seen = 0;
    // Completions are handled one by one: handlers may submit new SQEs.
    done_.clear();
    io_uring_for_each_cqe(&ring_, head, cqe) {
      done_.emplace_back(static_cast<Op*>(io_uring_cqe_get_data(cqe)), cqe->res);
      seen++;
    }
    io_uring_cq_advance(&ring_, seen);
    for (auto [op, res] : done_) dispatch(op, res);
    retry_starved();
  }
  stop_all();
}

void CarrierImpl::prepare_hello(const std::string& session_key) {
  if (!options_.tls.client || !options_.tls.client->session_tickets() || session_key.empty()) {
    return;
  }
  if (hellos_to_make_.size() >= kMaxPreparedHellos) return;
  for (auto& k : hellos_to_make_) {
    if (k == session_key) return;
  }
  hellos_to_make_.push_back(session_key);
}

// One queued ClientHello (the ring thread has nothing else to do): only
// for a peer whose ticket is still here (not already taken by a connect),
// and while there is room.
void CarrierImpl::make_prepared_hello() {
  if (hellos_to_make_.empty()) return;
  const std::string key = std::move(hellos_to_make_.back());
  hellos_to_make_.pop_back();
  const auto now = std::chrono::steady_clock::now();
  {
    std::lock_guard lock(hello_mu_);
    if (prepared_hellos_.count(key)) return;
    for (auto it = prepared_hellos_.begin(); it != prepared_hellos_.end();) {
      it = now - it->second.made >= kPreparedHelloLife ? prepared_hellos_.erase(it) : std::next(it);
    }
    if (prepared_hellos_.size() >= kMaxPreparedHellos) return;
    making_hello_ = key;
  }
  std::unique_ptr<TlsSession> s;
  if (options_.tls.client->has_session(key)) s = TlsHelloImpl::make(options_.tls.client, key);
  {
    std::lock_guard lock(hello_mu_);
    // A connect to the peer may have taken the ticket meanwhile: a hello
    // without it is not kept (the next connect would take it rather than
    // make one with the ticket that this connect brings).
    if (s && s->offers_ticket()) {
      prepared_hellos_.try_emplace(
          key, PreparedHello{std::make_unique<TlsHelloImpl>(std::move(s)), now});
    }
    making_hello_.clear();
  }
  hello_cv_.notify_all();
}

// Submits what is queued, then polls the completion queue for up to
// options_.spin; true when a completion is there.
bool CarrierImpl::spin_for_completion() {
  if (options_.spin.count() <= 0) return false;
  io_uring_submit(&ring_);
  submits_.fetch_add(1, std::memory_order_relaxed);
  const auto until = std::chrono::steady_clock::now() + options_.spin;
  io_uring_cqe* cqe = nullptr;
  do {
    for (int i = 0; i < 64; i++) {
      if (io_uring_peek_cqe(&ring_, &cqe) == 0) return true;
      __builtin_ia32_pause();
    }
  } while (std::chrono::steady_clock::now() < until);
  return false;
}

void CarrierImpl::retry_starved() {
  if (starved_.empty()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_retry_ < kRetryDelay) return;
  last_retry_ = now;
  std::vector<ConnectionImpl*> again;
  again.swap(starved_);  // service() may put them back
  for (ConnectionImpl* c : again) {
    c->starved = false;
    auto it = conns_.find(c);
    if (it == conns_.end()) continue;
    auto keep = it->second;
    keep->service();
  }
}

// Carrier shutdown: every connection and listener is closed and reported.
void CarrierImpl::stop_all() {
  std::vector<std::shared_ptr<ConnectionImpl>> conns;
  for (auto& [p, c] : conns_) conns.push_back(c);
  for (auto& c : conns) c->close("carrier stopped");
  std::vector<std::shared_ptr<ListenerImpl>> ls;
  for (auto& [p, l] : listeners_) ls.push_back(l);
  for (auto& l : ls) l->close();
  // Bounded: give in-flight operations a moment to finish.
  for (int round = 0; round < 100 && (!conns_.empty() || !listeners_.empty()); round++) {
    drain_pokes();
    io_uring_submit(&ring_);
    __kernel_timespec ts{0, 10 * 1000 * 1000};
    io_uring_cqe* cqe = nullptr;
    if (io_uring_wait_cqe_timeout(&ring_, &cqe, &ts) == 0 && cqe) {
      Op* op = static_cast<Op*>(io_uring_cqe_get_data(cqe));
      int res = cqe->res;
      io_uring_cqe_seen(&ring_, cqe);
      dispatch(op, res);
    }
  }
}

}  // namespace ktls::carrier::internal

namespace ktls::carrier {

Result<std::unique_ptr<Carrier>> Carrier::start(const CarrierOptions& options) {
  auto c = std::make_unique<internal::CarrierImpl>(options);
  auto r = c->init();
  if (!r) return r.error();
  return std::unique_ptr<Carrier>(std::move(c));
}

}  // namespace ktls::carrier
