// The io_uring carrier: one ring thread owns every socket (see carrier.h).
#include "carrier/carrier.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "carrier/framing.h"

namespace ktls::carrier {

// ------------------------------------------------------------------
// SockAddr, OutboundBatch
// ------------------------------------------------------------------

Result<SockAddr> SockAddr::parse(const std::string& ip, uint16_t port) {
  SockAddr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len = sizeof(sockaddr_in);
    return a;
  }
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len = sizeof(sockaddr_in6);
    return a;
  }
  return Error::message("not an IP address: '" + ip + "'");
}

uint16_t SockAddr::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

std::string SockAddr::ip() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, buf, sizeof buf);
  } else if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, buf,
              sizeof buf);
  }
  return buf;
}

std::string SockAddr::to_string() const {
  if (family() == AF_INET6) return "[" + ip() + "]:" + std::to_string(port());
  return ip() + ":" + std::to_string(port());
}

void OutboundBatch::add_packet(std::span<const iovec> parts) {
  uint64_t size = 0;
  for (const iovec& v : parts) {
    iov_.push_back(v);
    size += v.iov_len;
  }
  parts_.push_back(static_cast<uint32_t>(parts.size()));
  sizes_.push_back(size);
  bytes_ += size;
}

namespace {

constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux
// How often a connection that found the buffer pool empty tries again.
constexpr std::chrono::milliseconds kRetryDelay{5};

enum class OpKind : uint8_t {
  kWake,
  kRecv,
  kSend,
  kConnect,
  kTimeout,
  kConnCancel,
  kAccept,
  kListenCancel,
};

// user_data of every SQE: an Op embedded in its owner (stable address).
struct Op {
  OpKind kind;
  void* owner;
};

class CarrierImpl;

// A batch on the ring thread: the user's batch plus its length headers.
struct TxBatch {
  OutboundBatch batch;
  std::vector<uint8_t> headers;  // header bytes of every packet, in order
  std::vector<iovec> wire;       // header + parts of every packet, in order
  uint64_t wire_bytes = 0;
  uint64_t prewritten = 0;  // written by the fast path before it was queued
  uint8_t header_size = 4;
  bool tick = false;  // a zero-length packet from send_tick()
};

// ------------------------------------------------------------------
// Connection
// ------------------------------------------------------------------

class ConnectionImpl final : public Connection {
 public:
  ConnectionImpl(CarrierImpl* carrier, uint64_t id, int fd, const ConnectionOptions& options)
      : carrier_(carrier), id_(id), fd_(fd), options_(options) {
    parser_.set_limits(options.max_handshake_packet, options.max_dist_packet);
  }
  ~ConnectionImpl() override {
    if (fd_ >= 0) ::close(fd_);
  }

  // -- public API (any thread) --
  void set_observer(std::shared_ptr<ConnectionObserver> observer) override {
    std::lock_guard lock(mu_);
    observer_ = std::move(observer);
  }
  void request_packet() override {
    {
      std::lock_guard lock(mu_);
      in_requests_++;
    }
    poke();
  }
  void set_framing(Framing framing) override {
    {
      std::lock_guard lock(mu_);
      in_framing_ = framing;
      in_framing_set_ = true;
      // Packets queued from now on get this framing's header; earlier ones
      // keep the header of the framing they were sent in.
      tx_header_ = framing == Framing::kHandshake ? 2 : 4;
    }
    poke();
  }
  void start_streaming() override {
    {
      std::lock_guard lock(mu_);
      in_streaming_ = true;
    }
    poke();
  }
  void consumed(uint64_t bytes) override {
    // Saturating: consuming more than was delivered in streaming mode (e.g.
    // handshake packets) must not wrap the counter.
    uint64_t before = unconsumed_.load(std::memory_order_acquire), after;
    do {
      after = before > bytes ? before - bytes : 0;
    } while (!unconsumed_.compare_exchange_weak(before, after, std::memory_order_acq_rel));
    if (before >= options_.rx_window && after < options_.rx_window) poke();
  }
  Result<SendStatus> send(OutboundBatch&& batch) override;
  void send_tick() override {
    {
      std::lock_guard lock(mu_);
      in_tick_ = true;
    }
    poke();
  }
  void close(const std::string& reason) override {
    {
      std::lock_guard lock(mu_);
      if (!in_close_) {
        in_close_ = true;
        in_close_reason_ = reason;
      }
    }
    poke();
  }
  ConnectionStats stats() const override {
    ConnectionStats s;
    s.packets_in = packets_in_.load(std::memory_order_relaxed);
    s.packets_out = packets_out_.load(std::memory_order_relaxed);
    s.ticks_in = ticks_in_.load(std::memory_order_relaxed);
    s.ticks_out = ticks_out_.load(std::memory_order_relaxed);
    s.bytes_in = bytes_in_.load(std::memory_order_relaxed);
    s.bytes_out = bytes_out_.load(std::memory_order_relaxed);
    s.queued_bytes = queued_.load(std::memory_order_relaxed);
    s.recv_calls = recv_calls_.load(std::memory_order_relaxed);
    s.send_calls = send_calls_.load(std::memory_order_relaxed);
    return s;
  }
  const SockAddr& peer() const override { return peer_; }
  const SockAddr& local() const override { return local_; }
  uint64_t id() const override { return id_; }

  // -- ring thread --
  void poke();
  void service();  // apply requests, parse, (re)arm recv/send, finish close
  void start_connect(const SockAddr& addr, std::chrono::milliseconds timeout);
  void on_connect(int res);
  void on_recv(int res);
  void on_send(int res);
  void on_cancel() {
    cancel_inflight_ = false;
    service();
  }
  void set_addresses(const SockAddr& peer) {
    peer_ = peer;
    local_.len = sizeof(local_.storage);
    getsockname(fd_, reinterpret_cast<sockaddr*>(&local_.storage), &local_.len);
  }
  void fail(const std::string& why, int code = 0);
  void mark_ready() {
    std::lock_guard lock(mu_);
    if (!closed_for_send_) tx_ready_ = true;
  }
  bool finished() const { return finished_; }

  Op recv_op{OpKind::kRecv, this};
  Op send_op{OpKind::kSend, this};
  Op connect_op{OpKind::kConnect, this};
  Op timeout_op{OpKind::kTimeout, this};
  Op cancel_op{OpKind::kConnCancel, this};
  std::atomic<bool> poked{false};
  bool connected = true;
  bool starved = false;  // in CarrierImpl::starved_
  int ops = 0;           // SQEs in flight that name this connection; it lives until 0

 private:
  void take_requests();
  void parse();
  void arm_recv();
  void arm_send();
  size_t write_now(const OutboundBatch& batch, uint8_t header_size);
  void check_writable();
  bool make_room();
  void deliver(std::span<const Packet> packets);
  void finish_close();
  std::shared_ptr<ConnectionObserver> observer();

  CarrierImpl* carrier_;
  uint64_t id_;
  int fd_;
  ConnectionOptions options_;
  SockAddr peer_, local_;

  // Requests from other threads.
  std::mutex mu_;
  std::shared_ptr<ConnectionObserver> observer_;
  struct InBatch {
    OutboundBatch batch;
    uint8_t header_size;
    size_t written;  // bytes already written by the fast path
  };
  std::deque<InBatch> in_batches_;
  uint8_t tx_header_ = 2;
  bool tx_busy_ = false;   // the ring thread has tx work queued or in flight
  bool tx_ready_ = false;  // connected and not closing: the fast path may write
  uint32_t in_requests_ = 0;
  bool in_framing_set_ = false;
  Framing in_framing_ = Framing::kHandshake;
  bool in_streaming_ = false;
  bool in_tick_ = false;
  bool in_close_ = false;
  std::string in_close_reason_;
  bool closed_for_send_ = false;

  // Ring-thread state.
  FrameParser parser_;
  BufferRef rx_;
  size_t rx_start_ = 0, rx_end_ = 0;  // unparsed bytes [start, end) of rx_
  uint32_t requests_ = 0;
  bool streaming_ = false;
  bool recv_inflight_ = false, send_inflight_ = false, connect_inflight_ = false;
  bool cancel_inflight_ = false;
  bool closing_ = false, finished_ = false;
  Error close_reason_;
  std::deque<TxBatch> tx_;
  size_t tx_offset_ = 0;  // bytes of tx_.front() already written
  msghdr msg_{};
  std::vector<iovec> iov_;
  std::atomic<bool> want_writable_{false};
  std::vector<Packet> batch_;  // reused per recv completion
  static constexpr uint8_t kTick[4] = {0, 0, 0, 0};

  std::atomic<uint64_t> unconsumed_{0};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> packets_in_{0}, packets_out_{0}, ticks_in_{0}, ticks_out_{0};
  std::atomic<uint64_t> bytes_in_{0}, bytes_out_{0}, recv_calls_{0}, send_calls_{0};
};

// ------------------------------------------------------------------
// Listener
// ------------------------------------------------------------------

class ListenerImpl final : public Listener, public std::enable_shared_from_this<ListenerImpl> {
 public:
  ListenerImpl(CarrierImpl* carrier, int fd, const SockAddr& local,
               std::shared_ptr<ListenerObserver> observer)
      : carrier_(carrier), fd_(fd), local_(local), observer_(std::move(observer)) {}
  ~ListenerImpl() override {
    if (fd_ >= 0) ::close(fd_);
  }
  void accept() override {
    {
      std::lock_guard lock(mu_);
      in_accepts_++;
    }
    poke();
  }
  void close() override {
    {
      std::lock_guard lock(mu_);
      in_close_ = true;
    }
    poke();
  }
  const SockAddr& local() const override { return local_; }

  void poke();
  void service();
  void on_accept(int res);
  void on_cancel() {
    cancel_inflight_ = false;
    service();
  }
  bool finished() const { return finished_; }

  Op accept_op{OpKind::kAccept, this};
  Op cancel_op{OpKind::kListenCancel, this};
  std::atomic<bool> poked{false};
  int ops = 0;  // SQEs in flight that name this listener

 private:
  CarrierImpl* carrier_;
  int fd_;
  SockAddr local_;
  std::shared_ptr<ListenerObserver> observer_;
  std::mutex mu_;
  uint32_t in_accepts_ = 0;
  bool in_close_ = false;
  uint32_t accepts_ = 0;
  bool inflight_ = false, cancel_inflight_ = false, closing_ = false, finished_ = false;
  sockaddr_storage peer_{};
  socklen_t peer_len_ = 0;
};

// ------------------------------------------------------------------
// Carrier
// ------------------------------------------------------------------

class CarrierImpl final : public Carrier {
 public:
  explicit CarrierImpl(const CarrierOptions& options) : options_(options) {}
  ~CarrierImpl() override;
  Result<void> init();

  Result<std::shared_ptr<Listener>> listen(const SockAddr& addr, int backlog,
                                           std::shared_ptr<ListenerObserver> observer) override;
  std::shared_ptr<Connection> connect(const SockAddr& addr, std::chrono::milliseconds timeout,
                                      std::shared_ptr<ConnectionObserver> observer) override;
  CarrierStats stats() const override {
    CarrierStats s;
    s.connections_open = open_.load(std::memory_order_relaxed);
    s.connections_total = total_.load(std::memory_order_relaxed);
    s.listeners_open = listeners_open_.load(std::memory_order_relaxed);
    s.ring_submits = submits_.load(std::memory_order_relaxed);
    s.wakeups = wakeups_.load(std::memory_order_relaxed);
    s.pool = pool_->stats();
    return s;
  }
  BufferPool& pool() override { return *pool_; }

  // Ring thread helpers.
  io_uring_sqe* sqe();
  void poke(std::shared_ptr<ConnectionImpl> c);
  void poke(std::shared_ptr<ListenerImpl> l);
  std::shared_ptr<ConnectionImpl> adopt(int fd, const SockAddr& peer);  // accepted socket
  const ConnectionOptions& conn_options() const { return options_.connection; }
  void connection_finished(ConnectionImpl* c);
  // The pool had no buffer for `c`: service it again after kRetryDelay.
  void retry_later(ConnectionImpl* c);
  void listener_finished(ListenerImpl* l);
  void dispatch(Op* op, int res);

 private:
  void run();
  void wake();
  void arm_wake();
  void drain_pokes();
  void retry_starved();
  void stop_all();

  CarrierOptions options_;
  std::shared_ptr<BufferPool> pool_;
  io_uring ring_{};
  bool ring_ok_ = false;
  int event_fd_ = -1;
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

  // Connections waiting for a buffer (ring thread only); retried on a timer.
  std::vector<ConnectionImpl*> starved_;
  std::chrono::steady_clock::time_point last_retry_{};
  std::vector<std::pair<Op*, int>> done_;  // completions of one wait, reused
  std::atomic<uint64_t> next_id_{1};
  std::atomic<uint64_t> open_{0}, total_{0}, listeners_open_{0}, submits_{0}, wakeups_{0};
  friend class ConnectionImpl;
  friend class ListenerImpl;
};

// ---- Connection ----

std::shared_ptr<ConnectionObserver> ConnectionImpl::observer() {
  std::lock_guard lock(mu_);
  return observer_;
}

void ConnectionImpl::poke() {
  carrier_->poke(std::static_pointer_cast<ConnectionImpl>(shared_from_this()));
}

// Writes a whole batch with one non-blocking sendmsg on the calling thread;
// returns the bytes the kernel took (0 on EAGAIN or error: the ring thread
// then sends the rest and sees the error itself). Caller holds mu_.
size_t ConnectionImpl::write_now(const OutboundBatch& batch, uint8_t h) {
  constexpr size_t kMaxPackets = 256;
  if (batch.packets() > kMaxPackets || batch.iov().size() + batch.packets() > kMaxIov) return 0;
  uint8_t headers[kMaxPackets * 4];
  iovec iov[kMaxIov];
  size_t n = 0, part = 0;
  for (size_t p = 0; p < batch.packets(); p++) {
    uint64_t size = batch.packet_sizes()[p];
    uint8_t* hdr = &headers[p * 4];
    for (size_t i = 0; i < h; i++) hdr[i] = static_cast<uint8_t>(size >> (8 * (h - 1 - i)));
    iov[n++] = {hdr, h};
    for (uint32_t k = 0; k < batch.packet_parts()[p]; k++) iov[n++] = batch.iov()[part++];
  }
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = n;
  ssize_t w = ::sendmsg(fd_, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  send_calls_.fetch_add(1, std::memory_order_relaxed);
  if (w <= 0) return 0;
  bytes_out_.fetch_add(static_cast<uint64_t>(w), std::memory_order_relaxed);
  return static_cast<size_t>(w);
}

Result<SendStatus> ConnectionImpl::send(OutboundBatch&& batch) {
  uint64_t q;
  {
    std::lock_guard lock(mu_);
    if (closed_for_send_ || in_close_) return Error::message("connection closed");
    const uint8_t h = tx_header_;
    const uint64_t wire = batch.bytes() + batch.packets() * h;
    // Fast path: nothing queued or in flight, so the calling thread may write
    // directly (saves waking the ring thread: matters for latency).
    size_t written = 0;
    if (!tx_busy_ && tx_ready_ && in_batches_.empty()) {
      written = write_now(batch, h);
      if (written == wire) {
        packets_out_.fetch_add(batch.packets(), std::memory_order_relaxed);
        return SendStatus{queued_.load(std::memory_order_acquire), false};
      }
    }
    tx_busy_ = true;
    in_batches_.push_back(InBatch{std::move(batch), h, written});
    q = queued_.fetch_add(wire - written, std::memory_order_acq_rel) + wire - written;
    // The caller waits for on_writable; the ring thread sends it once the
    // queue is below the low watermark (checked after every send and poke).
    if (q > options_.send_high_watermark) want_writable_.store(true, std::memory_order_release);
  }
  poke();
  return SendStatus{q, q > options_.send_high_watermark};
}

void ConnectionImpl::take_requests() {
  {
    std::lock_guard lock(mu_);
    requests_ += in_requests_;
    in_requests_ = 0;
    if (in_framing_set_) {
      parser_.set_framing(in_framing_);
      in_framing_set_ = false;
    }
    if (in_streaming_) streaming_ = true;
    while (!in_batches_.empty()) {
      TxBatch t;
      t.batch = std::move(in_batches_.front().batch);
      t.header_size = in_batches_.front().header_size;
      t.prewritten = in_batches_.front().written;
      // Only the first batch after an idle period can have a head start.
      if (t.prewritten && tx_.empty()) tx_offset_ = t.prewritten;
      in_batches_.pop_front();
      tx_.push_back(std::move(t));
    }
    // Nothing queued or in flight: the tick goes out like any packet, so a
    // partial write of it is handled like any other.
    if (in_tick_ && tx_.empty()) {
      TxBatch t;
      t.tick = true;
      t.header_size = tx_header_;
      t.wire.push_back({const_cast<uint8_t*>(kTick), tx_header_});
      t.wire_bytes = tx_header_;
      queued_.fetch_add(tx_header_, std::memory_order_acq_rel);
      tx_.push_back(std::move(t));
      tx_busy_ = true;
    }
    in_tick_ = false;
    if (in_close_ && !closing_) {
      closing_ = true;
      close_reason_ =
          Error::message("closed: " + in_close_reason_ + " (peer " + peer_.to_string() + ")");
      closed_for_send_ = true;
      tx_ready_ = false;
    }
  }
  // Headers of new batches, in the framing of the moment send() was called.
  for (TxBatch& t : tx_) {
    if (!t.wire.empty() || t.batch.empty()) continue;
    const size_t h = t.header_size;
    t.headers.resize(t.batch.packets() * h);
    size_t part = 0;
    for (size_t p = 0; p < t.batch.packets(); p++) {
      uint64_t size = t.batch.packet_sizes()[p];
      uint8_t* hdr = &t.headers[p * h];
      for (size_t i = 0; i < h; i++) hdr[i] = static_cast<uint8_t>(size >> (8 * (h - 1 - i)));
      t.wire.push_back({hdr, h});
      for (uint32_t k = 0; k < t.batch.packet_parts()[p]; k++)
        t.wire.push_back(t.batch.iov()[part++]);
      t.wire_bytes += h + size;
    }
  }
}

void ConnectionImpl::service() {
  if (finished_) return;
  take_requests();
  if (closing_) {
    finish_close();
    return;
  }
  if (!connected) return;
  parse();
  if (closing_) {
    finish_close();
    return;
  }
  arm_recv();
  arm_send();
  check_writable();
}

void ConnectionImpl::check_writable() {
  if (!want_writable_.load(std::memory_order_acquire)) return;
  if (queued_.load(std::memory_order_acquire) >= options_.send_low_watermark) return;
  if (!want_writable_.exchange(false, std::memory_order_acq_rel)) return;
  if (auto obs = observer()) obs->on_writable(*this);
}

void ConnectionImpl::deliver(std::span<const Packet> packets) {
  auto obs = observer();
  if (obs) obs->on_packets(*this, packets);
}

// Cuts complete packets out of [rx_start_, rx_end_) and delivers them.
void ConnectionImpl::parse() {
  if (!rx_) return;
  batch_.clear();
  uint64_t bytes = 0;
  while (!closing_) {
    if (!streaming_ && requests_ == 0) break;
    if (streaming_ && unconsumed_.load(std::memory_order_acquire) + bytes >= options_.rx_window &&
        !batch_.empty()) {
      break;
    }
    const uint8_t* base = rx_->data() + rx_start_;
    auto r = parser_.next(base, rx_end_ - rx_start_);
    if (r.step == FrameParser::Step::kNeedMore) break;
    if (r.step == FrameParser::Step::kOversized) {
      fail("oversized " + std::string(parser_.framing() == Framing::kDist ? "dist" : "handshake") +
           " packet from " + peer_.to_string() + ": " + std::to_string(r.size) + " bytes (max " +
           std::to_string(parser_.framing() == Framing::kDist ? options_.max_dist_packet
                                                              : options_.max_handshake_packet) +
           ")");
      return;
    }
    rx_start_ += r.consumed;
    if (r.step == FrameParser::Step::kTick) {
      ticks_in_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    batch_.push_back(Packet{base + r.body_offset, static_cast<uint32_t>(r.size), rx_.get()});
    bytes += r.size;
    packets_in_.fetch_add(1, std::memory_order_relaxed);
    if (!streaming_) {
      requests_--;
      break;  // the framing may change after a handshake packet
    }
  }
  if (!batch_.empty()) {
    unconsumed_.fetch_add(streaming_ ? bytes : 0, std::memory_order_acq_rel);
    deliver(batch_);
    batch_.clear();
    // A handshake request may have arrived during the callback.
    if (!streaming_ && !closing_) {
      take_requests();
      if (requests_ > 0 || streaming_) parse();
    }
  }
}

// Makes sure the receive buffer has room for the rest of the packet being
// received, moving its partial bytes to a new buffer when it cannot fit (a
// deliberate copy of less than one packet).
bool ConnectionImpl::make_room() {
  const size_t buffer_size = carrier_->pool().buffer_size();
  size_t partial = rx_ ? rx_end_ - rx_start_ : 0;
  size_t need = 0;  // total size of the packet in progress, when its header is in
  if (rx_ && partial) {
    auto r = parser_.next(rx_->data() + rx_start_, partial);
    if (r.step == FrameParser::Step::kNeedMore && r.size > 0) need = r.body_offset + r.size;
  }
  if (rx_) {
    if (need > 0 && rx_->capacity() - rx_start_ >= need) return true;
    if (need == 0 && rx_->capacity() - rx_end_ >= buffer_size / 16) return true;
  }
  size_t want = need > partial ? need : partial;
  BufferRef next =
      want > buffer_size ? carrier_->pool().acquire_large(want) : carrier_->pool().acquire();
  if (!next) return false;  // pool exhausted: reading pauses until the next poke
  if (partial) std::memcpy(next->data(), rx_->data() + rx_start_, partial);
  rx_ = std::move(next);
  rx_start_ = 0;
  rx_end_ = partial;
  return true;
}

void ConnectionImpl::arm_recv() {
  if (recv_inflight_ || closing_) return;
  if (streaming_) {
    if (unconsumed_.load(std::memory_order_acquire) >= options_.rx_window) return;
  } else if (requests_ == 0) {
    return;
  }
  if (!make_room()) {
    carrier_->retry_later(this);  // pool exhausted: not an error, try again soon
    return;
  }
  io_uring_sqe* s = carrier_->sqe();
  if (!s) return;
  io_uring_prep_recv(s, fd_, rx_->data() + rx_end_, rx_->capacity() - rx_end_, 0);
  io_uring_sqe_set_data(s, &recv_op);
  ops++;
  recv_inflight_ = true;
}

void ConnectionImpl::on_recv(int res) {
  recv_inflight_ = false;
  recv_calls_.fetch_add(1, std::memory_order_relaxed);
  if (res == 0) {
    fail("peer " + peer_.to_string() + " closed the connection");
  } else if (res < 0) {
    if (res == -EINTR || res == -EAGAIN) {
      service();
      return;
    }
    fail("recv from " + peer_.to_string() + ": " + std::strerror(-res), -res);
  } else {
    rx_end_ += static_cast<size_t>(res);
    bytes_in_.fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
  }
  service();
}

void ConnectionImpl::arm_send() {
  if (send_inflight_ || closing_) return;
  iov_.clear();
  size_t skip = tx_offset_;
  for (TxBatch& t : tx_) {
    for (const iovec& v : t.wire) {
      if (iov_.size() == kMaxIov) break;
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      iov_.push_back({static_cast<uint8_t*>(v.iov_base) + skip, v.iov_len - skip});
      skip = 0;
    }
    if (iov_.size() == kMaxIov) break;
  }
  if (iov_.empty()) {
    std::lock_guard lock(mu_);
    if (in_batches_.empty() && tx_.empty()) tx_busy_ = false;
    return;
  }
  io_uring_sqe* s = carrier_->sqe();
  if (!s) return;
  msg_ = msghdr{};
  msg_.msg_iov = iov_.data();
  msg_.msg_iovlen = iov_.size();
  io_uring_prep_sendmsg(s, fd_, &msg_, MSG_NOSIGNAL);
  io_uring_sqe_set_data(s, &send_op);
  ops++;
  send_inflight_ = true;
}

void ConnectionImpl::on_send(int res) {
  send_inflight_ = false;
  send_calls_.fetch_add(1, std::memory_order_relaxed);
  if (res < 0) {
    if (res == -EINTR || res == -EAGAIN) {
      service();
      return;
    }
    fail("send to " + peer_.to_string() + ": " + std::strerror(-res), -res);
    service();
    return;
  }
  bytes_out_.fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
  size_t n = static_cast<size_t>(res);
  while (n > 0 && !tx_.empty()) {
    TxBatch& t = tx_.front();
    size_t left = t.wire_bytes - tx_offset_;
    if (n < left) {
      tx_offset_ += n;
      n = 0;
      break;
    }
    n -= left;
    tx_offset_ = 0;
    if (t.tick) {
      ticks_out_.fetch_add(1, std::memory_order_relaxed);
    } else {
      packets_out_.fetch_add(t.batch.packets(), std::memory_order_relaxed);
    }
    queued_.fetch_sub(t.wire_bytes - t.prewritten, std::memory_order_acq_rel);
    tx_.pop_front();  // frees the keepalive: the kernel has the bytes
  }
  service();
}

void ConnectionImpl::start_connect(const SockAddr& addr, std::chrono::milliseconds timeout) {
  peer_ = addr;
  connected = false;
  io_uring_sqe* s = carrier_->sqe();
  io_uring_prep_connect(s, fd_, reinterpret_cast<const sockaddr*>(&peer_.storage), peer_.len);
  io_uring_sqe_set_data(s, &connect_op);
  ops++;
  s->flags |= IOSQE_IO_LINK;
  static thread_local __kernel_timespec ts;  // copied by the kernel at submit
  ts.tv_sec = timeout.count() / 1000;
  ts.tv_nsec = (timeout.count() % 1000) * 1000000;
  io_uring_sqe* t = carrier_->sqe();
  io_uring_prep_link_timeout(t, &ts, 0);
  io_uring_sqe_set_data(t, &timeout_op);
  ops++;
  connect_inflight_ = true;
  io_uring_submit(&carrier_->ring_);  // ts must be consumed before it changes
}

void ConnectionImpl::on_connect(int res) {
  connect_inflight_ = false;
  if (res < 0) {
    int err = res == -ECANCELED ? ETIMEDOUT : -res;
    Error e = Error::from_errno(err, "connect " + peer_.to_string());
    if (auto obs = observer()) obs->on_connected(*this, &e);
    fail(e.what, err);
    service();
    return;
  }
  connected = true;
  set_addresses(peer_);
  mark_ready();
  if (options_.nodelay) {
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (auto obs = observer()) obs->on_connected(*this, nullptr);
  service();
}

void ConnectionImpl::fail(const std::string& why, int code) {
  if (closing_) return;
  closing_ = true;
  close_reason_ = Error{code, why};
  std::lock_guard lock(mu_);
  closed_for_send_ = true;
  tx_ready_ = false;
}

// Waits for in-flight operations (cancelling them), then closes the socket
// and reports on_closed once.
void ConnectionImpl::finish_close() {
  if (finished_) return;
  if (recv_inflight_ || send_inflight_ || connect_inflight_) {
    if (!cancel_inflight_) {
      ::shutdown(fd_, SHUT_RDWR);
      io_uring_sqe* s = carrier_->sqe();
      if (s) {
        io_uring_prep_cancel(s,
                             connect_inflight_ ? &connect_op
                             : recv_inflight_  ? &recv_op
                                               : &send_op,
                             0);
        io_uring_sqe_set_data(s, &cancel_op);
        ops++;
        cancel_inflight_ = true;
      }
    }
    return;
  }
  if (cancel_inflight_) return;
  finished_ = true;
  ::close(fd_);
  fd_ = -1;
  tx_.clear();
  {
    std::lock_guard lock(mu_);
    in_batches_.clear();
  }
  queued_.store(0, std::memory_order_relaxed);
  rx_ = BufferRef();
  // Counted as gone before on_closed, so stats read after it are exact.
  carrier_->open_.fetch_sub(1, std::memory_order_relaxed);
  auto obs = observer();
  if (obs) obs->on_closed(*this, close_reason_);
  {
    std::lock_guard lock(mu_);
    observer_.reset();
  }
  carrier_->connection_finished(this);
}

// ---- Listener ----

void ListenerImpl::poke() { carrier_->poke(shared_from_this()); }

void ListenerImpl::service() {
  if (finished_) return;
  {
    std::lock_guard lock(mu_);
    accepts_ += in_accepts_;
    in_accepts_ = 0;
    if (in_close_) closing_ = true;
  }
  if (closing_) {
    if (inflight_) {
      if (!cancel_inflight_) {
        io_uring_sqe* s = carrier_->sqe();
        if (s) {
          io_uring_prep_cancel(s, &accept_op, 0);
          io_uring_sqe_set_data(s, &cancel_op);
          ops++;
          cancel_inflight_ = true;
        }
      }
      return;
    }
    if (cancel_inflight_) return;
    finished_ = true;
    ::close(fd_);
    fd_ = -1;
    Error e = Error::message("listener " + local_.to_string() + " closed");
    for (; accepts_ > 0; accepts_--) observer_->on_accept(*this, nullptr, &e);
    carrier_->listener_finished(this);
    return;
  }
  if (inflight_ || accepts_ == 0) return;
  io_uring_sqe* s = carrier_->sqe();
  if (!s) return;
  peer_len_ = sizeof peer_;
  io_uring_prep_accept(s, fd_, reinterpret_cast<sockaddr*>(&peer_), &peer_len_,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
  io_uring_sqe_set_data(s, &accept_op);
  ops++;
  inflight_ = true;
}

void ListenerImpl::on_accept(int res) {
  inflight_ = false;
  if (res < 0) {
    if (closing_ || res == -ECANCELED) {
      service();
      return;
    }
    if (res == -EINTR || res == -EAGAIN || res == -ECONNABORTED) {
      service();
      return;
    }
    accepts_--;
    Error e = Error::from_errno(-res, "accept on " + local_.to_string());
    observer_->on_accept(*this, nullptr, &e);
    service();
    return;
  }
  accepts_--;
  SockAddr peer;
  std::memcpy(&peer.storage, &peer_, sizeof peer_);
  peer.len = peer_len_;
  auto conn = carrier_->adopt(res, peer);
  observer_->on_accept(*this, conn, nullptr);
  service();
}

// ---- Carrier ----

Result<void> CarrierImpl::init() {
  auto pool = BufferPool::create(options_.pool);
  if (!pool) return pool.error();
  pool_ = pool.take();
  int r = io_uring_queue_init(options_.ring_entries, &ring_, 0);
  if (r < 0) return Error::from_errno(-r, "io_uring_queue_init");
  ring_ok_ = true;
  event_fd_ = eventfd(0, EFD_CLOEXEC);
  if (event_fd_ < 0) return Error::from_errno(errno, "eventfd");
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
  if (event_fd_ >= 0) ::close(event_fd_);
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

void CarrierImpl::arm_wake() {
  io_uring_sqe* s = sqe();
  io_uring_prep_read(s, event_fd_, &event_buf_, sizeof event_buf_, 0);
  io_uring_sqe_set_data(s, &wake_op_);
}

void CarrierImpl::wake() {
  uint64_t one = 1;
  wakeups_.fetch_add(1, std::memory_order_relaxed);
  [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
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
  auto c = std::make_shared<ConnectionImpl>(this, next_id_.fetch_add(1), fd, options_.connection);
  c->set_addresses(peer);
  c->mark_ready();
  if (options_.connection.nodelay) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  conns_.emplace(c.get(), c);
  open_.fetch_add(1, std::memory_order_relaxed);
  total_.fetch_add(1, std::memory_order_relaxed);
  return c;
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
  listeners_open_.fetch_sub(1, std::memory_order_relaxed);
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
    case OpKind::kConnCancel: {
      auto* c = static_cast<ConnectionImpl*>(op->owner);
      auto ref = conns_.at(c);  // keeps it alive through the handler
      c->ops--;
      if (!c->finished()) {
        if (op->kind == OpKind::kRecv) c->on_recv(res);
        if (op->kind == OpKind::kSend) c->on_send(res);
        if (op->kind == OpKind::kConnect) c->on_connect(res);
        if (op->kind == OpKind::kConnCancel) c->on_cancel();
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
  int fd = ::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return Error::from_errno(errno, "socket");
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) < 0) {
    int e = errno;
    ::close(fd);
    return Error::from_errno(e, "bind " + addr.to_string());
  }
  if (::listen(fd, backlog) < 0) {
    int e = errno;
    ::close(fd);
    return Error::from_errno(e, "listen " + addr.to_string());
  }
  SockAddr local;
  local.len = sizeof local.storage;
  getsockname(fd, reinterpret_cast<sockaddr*>(&local.storage), &local.len);
  auto l = std::make_shared<ListenerImpl>(this, fd, local, std::move(observer));
  {
    std::lock_guard lock(new_mu_);
    new_listeners_.push_back(l);
  }
  listeners_open_.fetch_add(1, std::memory_order_relaxed);
  wake();
  return std::shared_ptr<Listener>(l);
}

std::shared_ptr<Connection> CarrierImpl::connect(const SockAddr& addr,
                                                 std::chrono::milliseconds timeout,
                                                 std::shared_ptr<ConnectionObserver> observer) {
  int fd = ::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  auto c = std::make_shared<ConnectionImpl>(this, next_id_.fetch_add(1), fd, options_.connection);
  c->set_observer(std::move(observer));
  total_.fetch_add(1, std::memory_order_relaxed);
  open_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lock(new_mu_);
    connects_.push_back({c, {addr, fd < 0 ? -int64_t{errno} : timeout.count()}});
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
    c->start_connect(what.first, std::chrono::milliseconds(what.second));
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
  std::vector<std::shared_ptr<ConnectionImpl>> keep;  // alive during a callback
  while (!stop_.load(std::memory_order_acquire)) {
    drain_pokes();
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
    if (starved_.empty()) {
      io_uring_submit_and_wait(&ring_, 1);
    } else {
      __kernel_timespec ts{0, kRetryDelay.count() * 1000 * 1000};
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

}  // namespace

Result<std::unique_ptr<Carrier>> Carrier::start(const CarrierOptions& options) {
  auto c = std::make_unique<CarrierImpl>(options);
  auto r = c->init();
  if (!r) return r.error();
  return std::unique_ptr<Carrier>(std::move(c));
}

}  // namespace ktls::carrier
