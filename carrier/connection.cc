// Connection: receive path, send path and close (see connection.h).
#include "carrier/connection.h"

#include <fcntl.h>
#include <liburing.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstring>

namespace ktls::carrier::internal {

std::shared_ptr<ConnectionObserver> ConnectionImpl::observer() {
  std::lock_guard lock(mu_);
  return observer_;
}

void ConnectionImpl::poke() {
  if (finished()) return;  // nothing left to do, and the carrier may be gone
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
  ssize_t w = ::sendmsg(fd_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
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
  uint32_t requests = 0;
  bool framing_set = false, streaming = false;
  Framing framing = Framing::kHandshake;
  {
    std::lock_guard lock(mu_);
    requests = in_requests_;
    in_requests_ = 0;
    framing_set = in_framing_set_;
    framing = in_framing_;
    in_framing_set_ = false;
    streaming = in_streaming_;
    in_streaming_ = false;
    if (in_fail_ && !closing_) {
      // receive_now() found the connection broken (its reason, verbatim).
      closing_ = true;
      close_reason_ = in_fail_reason_;
      closed_for_send_ = true;
      tx_ready_ = false;
    }
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
  if (requests || framing_set || streaming) {
    std::lock_guard rx(rx_mu_);
    requests_ += requests;
    if (framing_set) parser_.set_framing(framing);
    if (streaming) streaming_ = true;
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
  // RxMode::kCaller: receive_now() reads and delivers, unless a recv of the
  // ring's was still in flight when the mode changed (ring_rx_pending_).
  if (!caller_rx_.load(std::memory_order_acquire) || ring_rx_pending_) {
    ring_rx_pending_ = false;
    std::string bad;
    {
      std::lock_guard rx(rx_mu_);
      bad = parse();
      if (bad.empty() && !closing_ && !caller_rx_.load(std::memory_order_acquire)) arm_recv();
    }
    if (!bad.empty()) fail(bad);
    if (closing_) {
      finish_close();
      return;
    }
  }
  arm_send();
  check_writable();
}

void ConnectionImpl::start_streaming(RxMode mode) {
  if (mode == RxMode::kCaller) {
    // Applied here, not by the ring thread: receive_now() may be called as
    // soon as this returns.
    std::lock_guard rx(rx_mu_);
    {
      // A framing change the ring thread has not applied yet applies first.
      std::lock_guard lock(mu_);
      if (in_framing_set_) parser_.set_framing(in_framing_);
      in_framing_set_ = false;
    }
    streaming_ = true;
    caller_rx_.store(true, std::memory_order_release);
    return;
  }
  {
    std::lock_guard lock(mu_);
    in_streaming_ = true;
  }
  poke();
}

Result<int> ConnectionImpl::dup_poll_fd() {
  std::lock_guard rx(rx_mu_);
  if (rx_closed_ || !fd_) return Error::message("connection closed");
  int d = ::fcntl(fd_.get(), F_DUPFD_CLOEXEC, 0);
  if (d < 0) return Error::from_errno(errno, "dup");
  return d;
}

void ConnectionImpl::fail_from_caller(const std::string& why, int code) {
  {
    std::lock_guard lock(mu_);
    if (!in_fail_) {
      in_fail_ = true;
      in_fail_reason_ = Error{code, why};
    }
  }
  poke();
}

std::string ConnectionImpl::recv_failure(int err) const {
  if (err == 0) return "peer " + peer_.to_string() + " closed the connection";
  return "recv from " + peer_.to_string() + ": " + std::strerror(err);
}

// How many recv calls one receive_now() makes at most: enough to drain a
// burst, few enough that one connection cannot hold a scheduler for long.
constexpr int kCallerRecvRounds = 4;

RxStep ConnectionImpl::receive_now() {
  std::lock_guard rx(rx_mu_);
  if (rx_closed_ || !caller_rx_.load(std::memory_order_acquire)) return RxStep::kClosed;
  // The ring's last recv is still in flight (mode just changed): it delivers.
  if (recv_inflight_) return RxStep::kAgain;
  std::string why;
  int code = 0;
  RxStep step = RxStep::kAgain;
  // Each round delivers what the previous recv brought, so the bytes of the
  // last recv are always parsed before returning.
  bool drained = false;
  for (int round = 0;; round++) {
    why = parse();
    if (!why.empty()) break;
    if (unconsumed_.load(std::memory_order_acquire) >= options_.rx_window) {
      step = RxStep::kPaused;
      break;
    }
    if (drained || round == kCallerRecvRounds) break;
    if (!make_room()) {
      step = RxStep::kRetry;
      break;
    }
    const size_t room = rx_->capacity() - rx_end_;
    ssize_t n = ::recv(fd_.get(), rx_->data() + rx_end_, room, MSG_DONTWAIT);
    recv_calls_.fetch_add(1, std::memory_order_relaxed);
    if (n > 0) {
      rx_end_ += static_cast<size_t>(n);
      bytes_in_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      drained = static_cast<size_t>(n) < room;  // a full buffer: maybe more
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // parsed already
    code = n == 0 ? 0 : errno;
    why = recv_failure(code);
    break;
  }
  if (!why.empty()) {
    rx_closed_ = true;  // nothing more is read or delivered; the ring closes
    fail_from_caller(why, code);
    return RxStep::kClosed;
  }
  // Drained, with no partial packet: the buffer goes back to the pool (or
  // stays with the binaries made over it) until the socket is readable
  // again. An idle connection then holds no receive buffer at all, which is
  // what lets a node keep thousands of mostly idle connections.
  if (step == RxStep::kAgain && rx_ && rx_start_ == rx_end_) {
    rx_ = BufferRef();
    rx_start_ = rx_end_ = 0;
  }
  return step;
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
std::string ConnectionImpl::parse() {
  if (!rx_ || rx_closed_) return {};
  // The ring thread's closing_ is not for the receive_now() caller's thread:
  // there rx_closed_ says the same.
  const bool ring = !caller_rx_.load(std::memory_order_acquire);
  batch_.clear();
  uint64_t bytes = 0, ticks = 0;
  bool oversized = false;
  FrameParser::Result bad{};
  while (!(ring && closing_)) {
    if (!streaming_ && requests_ == 0) break;
    if (streaming_ && unconsumed_.load(std::memory_order_acquire) + bytes >= options_.rx_window &&
        !batch_.empty()) {
      break;
    }
    const uint8_t* base = rx_->data() + rx_start_;
    auto r = parser_.next(base, rx_end_ - rx_start_);
    if (r.step == FrameParser::Step::kNeedMore) break;
    if (r.step == FrameParser::Step::kOversized) {
      oversized = true;  // the packets before it are still delivered
      bad = r;
      break;
    }
    rx_start_ += r.consumed;
    if (r.step == FrameParser::Step::kTick) {
      ticks++;
      continue;
    }
    batch_.push_back(Packet{base + r.body_offset, static_cast<uint32_t>(r.size), rx_.get()});
    bytes += r.size;
    if (!streaming_) {
      requests_--;
      break;  // the framing may change after a handshake packet
    }
  }
  // Counters once per completion, not per packet.
  if (ticks) ticks_in_.fetch_add(ticks, std::memory_order_relaxed);
  if (!batch_.empty()) {
    packets_in_.fetch_add(batch_.size(), std::memory_order_relaxed);
    unconsumed_.fetch_add(streaming_ ? bytes : 0, std::memory_order_acq_rel);
    deliver(batch_);
    batch_.clear();
    // A handshake request may have arrived during the callback.
    if (ring && !streaming_ && !closing_) {
      take_requests();
      if (!oversized && (requests_ > 0 || streaming_)) {
        std::string again = parse();
        if (!again.empty()) return again;
      }
    }
  }
  if (oversized) {
    return "oversized " + std::string(parser_.framing() == Framing::kDist ? "dist" : "handshake") +
           " packet from " + peer_.to_string() + ": " + std::to_string(bad.size) + " bytes (max " +
           std::to_string(parser_.max_size()) + ")";
  }
  return {};
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
  // Sole owner of a pooled buffer (every packet delivered from it was
  // released, e.g. copied by the NIF): reuse it from the start instead of
  // cycling through the pool. Large regions are not kept for reuse.
  const bool reusable = rx_ && rx_start_ > 0 && rx_->capacity() <= buffer_size && rx_->unique();
  if (reusable && partial == 0) rx_start_ = rx_end_ = 0;
  if (rx_) {
    if (need > 0 && rx_->capacity() - rx_start_ >= need) return true;
    if (need == 0 && rx_->capacity() - rx_end_ >= buffer_size / 16) return true;
    if (reusable && need <= rx_->capacity()) {
      // Deliberate copy of less than one packet (its received prefix) to
      // the front, as below, but without taking another buffer.
      std::memmove(rx_->data(), rx_->data() + rx_start_, partial);
      rx_start_ = 0;
      rx_end_ = partial;
      return true;
    }
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
  io_uring_prep_recv(s, fd_.get(), rx_->data() + rx_end_, rx_->capacity() - rx_end_, 0);
  CarrierImpl::track(s, &recv_op, ops);
  recv_inflight_ = true;
}

void ConnectionImpl::on_recv(int res) {
  {
    std::lock_guard rx(rx_mu_);
    recv_inflight_ = false;
    if (res > 0) {
      rx_end_ += static_cast<size_t>(res);
      // The mode changed to kCaller while this recv was in flight: its bytes
      // are still delivered by the ring thread, once.
      if (caller_rx_.load(std::memory_order_acquire)) ring_rx_pending_ = true;
    }
  }
  recv_calls_.fetch_add(1, std::memory_order_relaxed);
  if (res == 0) {
    fail(recv_failure(0));
  } else if (res < 0) {
    if (res == -EINTR || res == -EAGAIN) {
      service();
      return;
    }
    fail(recv_failure(-res), -res);
  } else {
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
  io_uring_prep_sendmsg(s, fd_.get(), &msg_, MSG_NOSIGNAL);
  CarrierImpl::track(s, &send_op, ops);
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

void ConnectionImpl::start_connect(std::chrono::milliseconds timeout) {
  connected = false;
  carrier_->reserve(2);  // connect and its timeout in one submission
  io_uring_sqe* s = carrier_->sqe();
  io_uring_prep_connect(s, fd_.get(), reinterpret_cast<const sockaddr*>(&peer_.storage), peer_.len);
  CarrierImpl::track(s, &connect_op, ops);
  s->flags |= IOSQE_IO_LINK;
  static thread_local __kernel_timespec ts;  // copied by the kernel at submit
  ts.tv_sec = timeout.count() / 1000;
  ts.tv_nsec = (timeout.count() % 1000) * 1000000;
  io_uring_sqe* t = carrier_->sqe();
  io_uring_prep_link_timeout(t, &ts, 0);
  CarrierImpl::track(t, &timeout_op, ops);
  connect_inflight_ = true;
  io_uring_submit(&carrier_->ring_);  // ts must be consumed before it changes
}

void ConnectionImpl::on_connect(int res) {
  connect_inflight_ = false;
  if (res < 0) {
    // While closing, the failure is close()'s doing (shutdown or cancel):
    // report its reason. Otherwise ECANCELED means the linked timeout fired.
    const bool closed = closing_;
    const int err = closed ? -res : res == -ECANCELED ? ETIMEDOUT : -res;
    Error e = closed ? close_reason_ : Error::from_errno(err, "connect " + peer_.to_string());
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
    setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
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
      ::shutdown(fd_.get(), SHUT_RDWR);
      Op* target = connect_inflight_ ? &connect_op : recv_inflight_ ? &recv_op : &send_op;
      cancel_inflight_ = carrier_->cancel(target, &cancel_op, ops);
    }
    return;
  }
  if (cancel_inflight_) return;
  {
    // After this no receive_now() touches the socket or the buffer, and
    // nothing more is delivered: on_closed below comes after every packet.
    std::lock_guard rx(rx_mu_);
    rx_closed_ = true;
    rx_ = BufferRef();
    // A poller's duplicate keeps the socket open: shut it down so the peer
    // sees the close and the poller sees end of stream.
    if (caller_rx_.load(std::memory_order_acquire)) ::shutdown(fd_.get(), SHUT_RDWR);
  }
  finished_ = true;
  fd_.reset();
  tx_.clear();
  {
    std::lock_guard lock(mu_);
    in_batches_.clear();
  }
  queued_.store(0, std::memory_order_relaxed);
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
}  // namespace ktls::carrier::internal
