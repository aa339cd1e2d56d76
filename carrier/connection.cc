// Connection: receive path, send path and close (see connection.h).
#include "carrier/connection.h"

#include <fcntl.h>
#include <liburing.h>
#include <linux/tls.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstring>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif

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
// then sends the rest and sees the error itself). With the user-space TLS
// record layer the batch is sealed into fast_sealed_ first and the count is
// of its bytes; `sealed` says whether that happened. Caller holds mu_.
size_t ConnectionImpl::write_now(const OutboundBatch& batch, uint8_t h, bool* sealed) {
  constexpr size_t kMaxPackets = 256;
  *sealed = false;
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
  if (tx_layer_ == Layer::kUser) {
    fast_sealed_.clear();
    seal_into(std::span<const iovec>(iov, n), fast_sealed_);
    *sealed = true;
    iov[0] = {fast_sealed_.data(), fast_sealed_.size()};
    n = 1;
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
    bool sealed = false;
    if (!tx_busy_ && tx_ready_ && in_batches_.empty() && !in_key_update_) {
      written = write_now(batch, h, &sealed);
      if (written == (sealed ? fast_sealed_.size() : wire)) {
        packets_out_.fetch_add(batch.packets(), std::memory_order_relaxed);
        return SendStatus{queued_.load(std::memory_order_acquire), false};
      }
    }
    tx_busy_ = true;
    uint64_t left = wire - written;
    if (sealed) {
      // Sealed but not all written: the rest of the records goes out as it
      // is (the buffer moves to the queue; the written head is skipped).
      left = fast_sealed_.size() - written;
      in_batches_.push_back(
          InBatch{OutboundBatch(), h, written, std::move(fast_sealed_), batch.packets()});
      fast_sealed_ = SealedBytes();
    } else {
      in_batches_.push_back(InBatch{std::move(batch), h, written, {}, 0});
    }
    q = queued_.fetch_add(left, std::memory_order_acq_rel) + left;
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
    if (in_key_update_) {
      // The peer asked for our KeyUpdate: it goes before any later data
      // (RFC 8446 4.6.3), so the fast path waits for it too.
      in_key_update_ = false;
      TxBatch t;
      t.key_update = true;
      tx_.push_back(std::move(t));
      tx_busy_ = true;
    }
    while (!in_batches_.empty()) {
      TxBatch t;
      InBatch& in = in_batches_.front();
      if (!in.rest.empty()) {
        t.set_raw(std::move(in.rest));
        t.raw_packets = in.packets;
        t.prewritten = in.written;
        if (t.prewritten && tx_.empty()) tx_offset_ = t.prewritten;
        in_batches_.pop_front();
        tx_.push_back(std::move(t));
        continue;
      }
      t.batch = std::move(in.batch);
      t.header_size = in.header_size;
      t.prewritten = in.written;
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
  if (rx_layer_ == Layer::kHandshake) {
    if (!session_) start_tls();  // an accepted connection's first service
    arm_handshake_recv();        // what is in the socket may finish it
    if (closing_) {
      finish_close();
      return;
    }
    if (rx_layer_ == Layer::kHandshake) {
      // Received application data waits for the end of the handshake; a
      // resumed client already sends (take_over(true) in handshake_step).
      arm_send();
      check_writable();
      return;
    }
  }
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

Result<int> ConnectionImpl::lend_poll_fd() {
  std::lock_guard rx(rx_mu_);
  if (rx_closed_ || !fd_) return Error::message("connection closed");
  fd_lent_++;
  return fd_.get();
}

void ConnectionImpl::return_poll_fd() {
  std::lock_guard rx(rx_mu_);
  if (fd_lent_ > 0 && --fd_lent_ == 0) lent_fd_.reset();
}

// Under rx_mu_: finish_close() marks rx_closed_ under it before the socket
// goes, so the descriptor is this connection's while the lock is held.
Result<void> ConnectionImpl::set_socket_option(int level, int name, int value) {
  std::lock_guard rx(rx_mu_);
  if (rx_closed_ || !fd_) return Error::message("connection closed");
  if (::setsockopt(fd_.get(), level, name, &value, sizeof value) != 0) {
    return Error::from_errno(errno, "setsockopt");
  }
  return {};
}

Result<int> ConnectionImpl::socket_option(int level, int name) {
  std::lock_guard rx(rx_mu_);
  if (rx_closed_ || !fd_) return Error::message("connection closed");
  int value = 0;
  socklen_t len = sizeof value;
  if (::getsockopt(fd_.get(), level, name, &value, &len) != 0) {
    return Error::from_errno(errno, "getsockopt");
  }
  return value;
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
  if (rx_layer_ == Layer::kKernel) {
    std::string why = kernel_record_failure(err);
    if (!why.empty()) return why;
  }
  return "recv from " + peer_.to_string() + ": " + std::strerror(err);
}

// How many recv calls one receive_now() makes at most: enough to drain a
// burst, few enough that one connection cannot hold a scheduler for long.
constexpr int kCallerRecvRounds = 4;

RxStep ConnectionImpl::receive_now() {
  std::lock_guard rx(rx_mu_);
  if (rx_closed_ || !caller_rx_.load(std::memory_order_acquire)) return RxStep::kClosed;
  // The ring thread still runs the TLS handshake: nothing to read here yet.
  if (rx_layer_ == Layer::kHandshake) return RxStep::kAgain;
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
    std::span<uint8_t> space = make_room() ? recv_space() : std::span<uint8_t>();
    if (space.empty()) {
      step = RxStep::kRetry;
      break;
    }
    ssize_t n = ::recv(fd_.get(), space.data(), space.size(), MSG_DONTWAIT);
    recv_calls_.fetch_add(1, std::memory_order_relaxed);
    if (n > 0) {
      received(static_cast<size_t>(n));
      bytes_in_.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
      drained = static_cast<size_t>(n) < space.size();  // a full buffer: maybe more
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;  // parsed already
    if (n < 0 && errno == EIO && rx_layer_ == Layer::kKernel) {
      why = kernel_control_record();  // a record that is not data
      if (why.empty()) continue;
      break;
    }
    code = n == 0 ? 0 : errno;
    why = recv_failure(code);
    break;
  }
  if (!why.empty()) {
    rx_closed_ = true;  // nothing more is read or delivered; the ring closes
    fail_from_caller(why, code);
    // Every packet before the end is delivered (this thread, just now):
    // the user hears of the end without waiting for the ring thread.
    if (auto obs = observer()) obs->on_input_ended(*this, Error{code, why});
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
  if (step == RxStep::kAgain && cin_ && cin_start_ == cin_end_) {
    cin_ = BufferRef();
    cin_start_ = cin_end_ = 0;
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

// Opens what the user-space record layer holds and cuts packets, until
// neither makes progress; a bad record closes after the packets before it.
std::string ConnectionImpl::parse() {
  std::string bad = cut();
  while (bad.empty() && rx_user() && !rx_closed_) {
    std::string why;
    if (!open_pending(&why) && why.empty()) break;
    bad = cut();
    if (bad.empty()) bad = why;
  }
  return bad;
}

// Cuts complete packets out of [rx_start_, rx_end_) and delivers them.
std::string ConnectionImpl::cut() {
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
    if (parser_.framing() == Framing::kHandshake && !tls() &&
        packets_in_.load(std::memory_order_relaxed) == 0 && rx_end_ - rx_start_ >= 3 &&
        base[0] == 0x16 && base[1] == 0x03 && base[2] <= 4) {
      // A TLS ClientHello (16 03 0x) where the first 2-byte handshake
      // length should be: it would wait for 5,6xx bytes that never come.
      return "the peer " + peer_.to_string() +
             " speaks TLS (16 03), this node does not: is it a node with TLS options "
             "(-ktls_filter_optfile / -ssl_dist_optfile)?";
    }
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
  // The user-space record layer needs room for a whole record's plaintext
  // at the end (a record may hold the end of one packet and the start of
  // the next); plain bytes need room for the packet, or a sixteenth of a
  // buffer when its size is not known yet.
  constexpr size_t kRecordRoom = kMaxRecordPlain + kMaxRecordOverhead;
  const bool records = rx_user();
  const size_t want = (need > partial ? need : partial) + (records ? kRecordRoom : 0);
  if (rx_) {
    const size_t room = rx_->capacity() - rx_end_;
    if (records && room >= kRecordRoom) return true;
    if (!records && need > 0 && rx_->capacity() - rx_start_ >= need) return true;
    if (!records && need == 0 && room >= buffer_size / 16) return true;
    if (reusable && want <= rx_->capacity()) {
      // Deliberate copy of less than one packet (its received prefix) to
      // the front, as below, but without taking another buffer.
      std::memmove(rx_->data(), rx_->data() + rx_start_, partial);
      rx_start_ = 0;
      rx_end_ = partial;
      return true;
    }
  }
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
  std::span<uint8_t> space = make_room() ? recv_space() : std::span<uint8_t>();
  if (space.empty()) {
    carrier_->retry_later(this);  // pool exhausted: not an error, try again soon
    return;
  }
  io_uring_sqe* s = carrier_->sqe();
  if (!s) {
    carrier_->retry_later(this);
    return;
  }
  io_uring_prep_recv(s, fd_.get(), space.data(), space.size(), 0);
  CarrierImpl::track(s, &recv_op, ops);
  recv_inflight_ = true;
}

void ConnectionImpl::on_recv(int res) {
  if (rx_layer_ == Layer::kHandshake) {
    recv_inflight_ = false;
    recv_calls_.fetch_add(1, std::memory_order_relaxed);
    if (res > 0) {
      bytes_in_.fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
      on_handshake_bytes(static_cast<size_t>(res));
    } else if (res == 0) {
      handshake_failed(hs_seen_ ? "the peer closed the connection"
                                : "the peer closed the connection before any TLS record (is it a "
                                  "node without TLS, or one that refused us?)");
    } else if (res != -EINTR && res != -EAGAIN) {
      handshake_failed(std::string("recv: ") + std::strerror(-res));
    }
    service();
    return;
  }
  if (res == -EIO && rx_layer_ == Layer::kKernel) {
    {
      std::lock_guard rx(rx_mu_);
      recv_inflight_ = false;
    }
    recv_calls_.fetch_add(1, std::memory_order_relaxed);
    const std::string why = kernel_control_record();
    if (!why.empty()) fail(why);
    service();
    return;
  }
  {
    std::lock_guard rx(rx_mu_);
    recv_inflight_ = false;
    if (res > 0) {
      received(static_cast<size_t>(res));
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
  if (send_inflight_ || closing_ || tx_layer_ == Layer::kHandshake) return;
  if (tx_layer_ == Layer::kUser) seal_pending();
  iov_.clear();
  size_t skip = tx_offset_;
  for (TxBatch& t : tx_) {
    // TLS in user space: only records go out (the rest is sealed next time).
    if (tx_layer_ == Layer::kUser && !t.is_raw) break;
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
  if (!s) {
    carrier_->retry_later(this);
    return;
  }
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
    if (t.is_raw) {
      ticks_out_.fetch_add(t.raw_ticks, std::memory_order_relaxed);
      packets_out_.fetch_add(t.raw_packets, std::memory_order_relaxed);
    } else if (t.tick) {
      ticks_out_.fetch_add(1, std::memory_order_relaxed);
    } else {
      packets_out_.fetch_add(t.batch.packets(), std::memory_order_relaxed);
    }
    queued_.fetch_sub(t.wire_bytes - t.prewritten, std::memory_order_acq_rel);
    if (t.is_raw && spare_records_.size() < 2) {
      t.raw.clear();
      spare_records_.push_back(std::move(t.raw));
    }
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
  // The ClientHello is made while the TCP handshake runs (OpenSSL's first
  // step, a key share, took about as long on loopback); start_tls() sends
  // it once connected.
  if (tls()) prepare_tls();
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
  if (options_.nodelay) {
    int one = 1;
    setsockopt(fd_.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (tls()) {
    // Connected once the TLS handshake is done (or failed): on_connected
    // then, from finish_handshake() or handshake_failed().
    report_connect_ = true;
    start_tls();
    service();
    return;
  }
  mark_ready();
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

void ConnectionImpl::close_now(const std::string& reason) {
  close(reason);
  if (tls()) return;
  // rx_closed_ is set under rx_mu_ before the socket is closed, so fd_ is
  // still this connection's socket here.
  std::lock_guard rx(rx_mu_);
  if (!rx_closed_ && fd_) ::shutdown(fd_.get(), SHUT_RDWR);
}

// Waits for in-flight operations (cancelling them), then closes the socket
// and reports on_closed once.
void ConnectionImpl::finish_close() {
  if (finished_) return;
  disarm_handshake_timer();
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
    // A poller that holds the socket (lend_poll_fd) keeps it open: shut it
    // down so the peer sees the close and the poller sees end of stream;
    // the descriptor is closed when the last poller returns it, never while
    // it may still be in a pollset (its number could be reused meanwhile).
    if (caller_rx_.load(std::memory_order_acquire)) ::shutdown(fd_.get(), SHUT_RDWR);
    if (fd_lent_ > 0) lent_fd_ = std::move(fd_);
  }
  finished_ = true;
  // A client that had connected (its ticket for the next connection came
  // with this one): the next ClientHello to this peer is made ahead.
  if (tls() && !tls_ctx_->server() && tx_layer_ != Layer::kHandshake) {
    carrier_->prepare_hello(session_key_);
  }
  fd_.reset();
  tx_.clear();
  {
    std::lock_guard lock(mu_);
    in_batches_.clear();
  }
  queued_.store(0, std::memory_order_relaxed);
  // Counted as gone before on_closed, so stats read after it are exact.
  carrier_->open_.fetch_sub(1, std::memory_order_relaxed);
  std::shared_ptr<ConnectionObserver> obs;
  {
    std::lock_guard lock(mu_);
    obs = observer_;
    if (!obs) closed_unreported_ = true;  // set_observer() reports it
  }
  if (obs) obs->on_closed(*this, close_reason_);
  {
    std::lock_guard lock(mu_);
    observer_.reset();
  }
  carrier_->connection_finished(this);
}
// -- TLS ----------------------------------------------------------------------

namespace {
// Largest handshake record body read (RFC 5246: 2^14 + 2048).
constexpr size_t kMaxHandshakeRecord = kMaxRecordPlain + 2048;
// Plaintext sealed per arm_send at most (bounds the records buffer).
constexpr size_t kSealChunk = 512 * 1024;

// What the first bytes of a peer that does not speak TLS look like.
std::string not_tls(const uint8_t* b) {
  char hex[16];
  std::snprintf(hex, sizeof hex, "%02x %02x %02x", b[0], b[1], b[2]);
  if (b[0] == 0 && (b[2] == 'N' || b[2] == 'n')) {
    return std::string("the peer sent a plain distribution handshake (") + hex +
           "), not TLS: is it a node without TLS?";
  }
  return std::string("the peer sent bytes that are not a TLS record (") + hex + ")";
}
}  // namespace

TlsInfo ConnectionImpl::tls_info() const {
  TlsInfo info;
  {
    std::lock_guard lock(mu_);
    info = tls_info_;
  }
  info.records_in = records_in_.load(std::memory_order_relaxed);
  info.records_out = records_out_.load(std::memory_order_relaxed);
  info.key_updates_in = key_updates_in_.load(std::memory_order_relaxed);
  info.key_updates_out = key_updates_out_.load(std::memory_order_relaxed);
  return info;
}

std::unique_ptr<TlsSession> TlsHelloImpl::make(std::shared_ptr<TlsContext> ctx,
                                               const std::string& key) {
  auto s = TlsSession::create(std::move(ctx), key);
  if (!s || !s.value()->handshake()) return nullptr;
  return s.take();
}

void ConnectionImpl::set_client_session(std::string key, std::unique_ptr<TlsHello> hello) {
  // A client keeps session tickets under its key, else per peer address.
  session_key_ = key.empty() ? peer_.to_string() : std::move(key);
  if (auto* h = dynamic_cast<TlsHelloImpl*>(hello.get()); h && tls_ctx_) {
    session_ = std::move(h->session);
  }
}

void ConnectionImpl::prepare_tls() {
  if (session_) return;  // made ahead by the caller
  // Without one of its own: the hello the ring thread made ahead for this
  // peer (it holds the peer's ticket; this runs on the ring thread, the
  // only one that makes them, so none can be in the making now), else one
  // made now.
  auto h = carrier_->prepared_hello(session_key_);
  if (auto* p = dynamic_cast<TlsHelloImpl*>(h.get())) session_ = std::move(p->session);
  if (!session_) session_ = TlsHelloImpl::make(tls_ctx_, session_key_);
}

void ConnectionImpl::start_tls() {
  if (!session_) {
    auto s = TlsSession::create(tls_ctx_, tls_ctx_->server() ? std::string() : session_key_);
    if (!s) {
      handshake_failed(s.error().what);
      return;
    }
    session_ = s.take();
  }
  hs_in_.resize(kRecordHeader + kMaxHandshakeRecord);
  hs_got_ = 0;
  arm_handshake_timer();
  handshake_step();  // a client's ClientHello; nothing yet on a server
}

void ConnectionImpl::arm_handshake_timer() {
  const auto ms = carrier_->tls_options().handshake_timeout.count();
  if (ms <= 0) return;
  io_uring_sqe* s = carrier_->sqe();
  if (!s) return;
  hs_timeout_.tv_sec = ms / 1000;
  hs_timeout_.tv_nsec = (ms % 1000) * 1000000;
  io_uring_prep_timeout(s, &hs_timeout_, 0, 0);
  CarrierImpl::track(s, &hs_timer_op, ops);
  hs_timer_armed_ = true;
}

void ConnectionImpl::disarm_handshake_timer() {
  if (!hs_timer_armed_) return;
  io_uring_sqe* s = carrier_->sqe();
  if (!s) return;  // it fires later and finds the handshake over
  hs_timer_armed_ = false;
  io_uring_prep_timeout_remove(s, reinterpret_cast<uintptr_t>(&hs_timer_op), 0);
  CarrierImpl::track(s, &hs_timer_remove_op, ops);
}

void ConnectionImpl::on_handshake_timer(int res) {
  if (res != -ETIME) return;  // removed: the handshake ended first
  hs_timer_armed_ = false;
  if (closing_ || !session_) return;
  handshake_failed("no handshake within " +
                   std::to_string(carrier_->tls_options().handshake_timeout.count()) +
                   " ms (the peer stalled)");
  service();
}

size_t ConnectionImpl::handshake_want() const {
  if (hs_got_ < kRecordHeader) return kRecordHeader - hs_got_;
  return RecordCipher::next_record_size(hs_in_.data(), hs_got_) - hs_got_;
}

void ConnectionImpl::arm_handshake_recv() {
  // What is already in the socket (the rest of a flight, a record's body
  // after its header) is read here: a trip through the ring per header
  // and per body cost a loop of the ring thread each, a dozen per
  // handshake. Only an empty socket waits in the ring.
  while (!recv_inflight_ && !closing_ && session_) {
    const ssize_t r =
        ::recv(fd_.get(), hs_in_.data() + hs_got_, handshake_want(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;  // nothing yet; an end or an error: the ring's recv reports it
    recv_calls_.fetch_add(1, std::memory_order_relaxed);
    bytes_in_.fetch_add(static_cast<uint64_t>(r), std::memory_order_relaxed);
    on_handshake_bytes(static_cast<size_t>(r));
  }
  if (recv_inflight_ || closing_ || !session_) return;
  const size_t want = handshake_want();
  io_uring_sqe* s = carrier_->sqe();
  if (!s) {
    carrier_->retry_later(this);
    return;
  }
  // Exactly one record at a time: nothing after the last handshake record
  // is read here, so a kernel can take over at a record boundary.
  io_uring_prep_recv(s, fd_.get(), hs_in_.data() + hs_got_, want, 0);
  CarrierImpl::track(s, &recv_op, ops);
  recv_inflight_ = true;
}

void ConnectionImpl::on_handshake_bytes(size_t n) {
  if (!session_ || closing_) return;
  hs_seen_ = true;
  hs_got_ += n;
  if (hs_got_ < kRecordHeader) return;
  const uint8_t* h = hs_in_.data();
  const size_t body = size_t{h[3]} << 8 | h[4];
  if (h[0] < 20 || h[0] > 23 || h[1] != 3) {
    handshake_failed(not_tls(h));
    return;
  }
  if (body > kMaxHandshakeRecord) {
    handshake_failed("oversized TLS record (" + std::to_string(body) + " bytes)");
    return;
  }
  if (hs_got_ < kRecordHeader + body) return;
  session_->put_ciphertext(std::span<const uint8_t>(h, hs_got_));
  hs_got_ = 0;
  handshake_step();
}

void ConnectionImpl::handshake_step() {
  auto done = session_->handshake();
  std::vector<uint8_t> out;
  session_->take_ciphertext(out);
  if (!done) {
    handshake_failed(done.error().what, std::move(out));
    return;
  }
  if (!out.empty()) {
    // A handshake flight is a few KiB and the socket's send buffer is empty
    // during the handshake: it is written here, whole, before a kernel may
    // take the record layer over.
    size_t at = 0;
    while (at < out.size()) {
      ssize_t w = ::send(fd_.get(), out.data() + at, out.size() - at, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        handshake_failed(w < 0 ? Error::from_errno(errno, "send").what : "send: nothing written");
        return;
      }
      at += static_cast<size_t>(w);
    }
    send_calls_.fetch_add(1, std::memory_order_relaxed);
    bytes_out_.fetch_add(out.size(), std::memory_order_relaxed);
  }
  if (!done.value()) return;
  if (session_->awaiting_ticket()) {
    // The server's session ticket is the next record (read one at a time,
    // as the handshake's): OpenSSL takes it before the receiving direction
    // leaves. A resumed client does not wait for it to send: its sending
    // direction is done with OpenSSL (the ticket is the server's last
    // handshake record, and a resumed server has no certificate of ours
    // left to refuse), so the dist handshake starts a network round trip
    // and a server's turn earlier. A full handshake still waits: the
    // server checks our certificate after our Finished, and its refusal
    // comes where the ticket would, which connect() then reports.
    if (tx_layer_ == Layer::kHandshake && session_->resumed()) {
      TlsInfo info;
      if (!take_over(true, info)) return;
      publish(info);  // peer certificate for verify_node_name; kernel_rx follows
      mark_ready();
      report_connected();
    }
    auto ticket = session_->read_ticket();
    if (!ticket) {
      handshake_failed(ticket.error().what);
      return;
    }
    if (!ticket.value()) return;  // service() reads the next record
  }
  finish_handshake();
}

void ConnectionImpl::handshake_failed(const std::string& why, std::vector<uint8_t> alert) {
  if (closing_) return;
  // The alert OpenSSL wrote, if any, so the peer learns why (best effort).
  if (!alert.empty())
    (void)!::send(fd_.get(), alert.data(), alert.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  carrier_->count_tls_failure(why);
  Error e{0, "TLS handshake with " + peer_.to_string() + " failed: " + why};
  fail(e.what);
  if (report_connect_) {
    report_connect_ = false;
    if (auto obs = observer()) obs->on_connected(*this, &e);
  }
}

void ConnectionImpl::report_connected() {
  if (!report_connect_) return;
  report_connect_ = false;
  if (auto obs = observer()) obs->on_connected(*this, nullptr);
}

bool ConnectionImpl::take_over(bool tx, TlsInfo& info) {
  auto keys = session_->traffic_keys(tx);
  if (!keys) {
    handshake_failed(keys.error().what);
    return false;
  }
  if (tx) {
    info.version = session_->version();
    info.cipher = session_->cipher();
    info.peer_subject = session_->peer_subject();
    info.peer_certificate = session_->peer_certificate();
    info.resumed = session_->resumed();
    if (!carrier_->tls_options().kernel) {
      info.kernel_fallback = "kernel TLS is switched off (CarrierTlsOptions::kernel)";
    } else if (::setsockopt(fd_.get(), SOL_TCP, TCP_ULP, "tls", sizeof "tls") != 0) {
      info.kernel_fallback = errno == ENOENT
                                 ? "the kernel has no TLS module (CONFIG_TLS; modprobe tls)"
                                 : Error::from_errno(errno, "TCP_ULP tls").what;
    }
  }
  // Receiving goes to the kernel only where sending went (kernel_fallback
  // says why not).
  bool& kernel = tx ? info.kernel_tx : info.kernel_rx;
  if (info.kernel_fallback.empty()) {
    auto bytes = ktls_crypto_info(keys.value());
    if (!bytes) {
      info.kernel_fallback = bytes.error().what;
    } else if (::setsockopt(fd_.get(), SOL_TLS, tx ? TLS_TX : TLS_RX, bytes.value().data(),
                            static_cast<socklen_t>(bytes.value().size())) != 0) {
      info.kernel_fallback = Error::from_errno(errno, std::string(tx ? "TLS_TX" : "TLS_RX") + " " +
                                                          info.version + " " + keys.value().cipher)
                                 .what;
    } else {
      kernel = true;
    }
  }
  if (!kernel) {
    if (carrier_->tls_options().kernel_required) {
      handshake_failed("kernel TLS is required (ktls required), but " + info.kernel_fallback);
      return false;
    }
    auto c = RecordCipher::create(keys.value(), tx);
    if (!c) {
      handshake_failed(c.error().what);
      return false;
    }
    (tx ? sealer_ : opener_) = c.take();
  }
  const Layer layer = kernel ? Layer::kKernel : Layer::kUser;
  if (tx) {
    std::lock_guard lock(mu_);
    tx_layer_ = layer;
  } else {
    std::lock_guard rx_lock(rx_mu_);
    rx_layer_ = layer;
  }
  return true;
}

void ConnectionImpl::publish(const TlsInfo& info) {
  std::lock_guard lock(mu_);
  tls_info_ = info;
}

void ConnectionImpl::finish_handshake() {
  TlsInfo info;
  if (tx_layer_ == Layer::kHandshake) {
    if (!take_over(true, info)) return;
  } else {
    std::lock_guard lock(mu_);
    info = tls_info_;  // a resumed client's sending direction, published
  }
  if (!take_over(false, info)) return;
  publish(info);
  disarm_handshake_timer();
  session_.reset();  // OpenSSL's part is done: its memory goes now
  hs_in_ = std::vector<uint8_t>();
  carrier_->count_tls_established(info.kernel_tx && info.kernel_rx, info.kernel_fallback,
                                  info.resumed);
  mark_ready();
  report_connected();
}

std::span<uint8_t> ConnectionImpl::recv_space() {
  if (!rx_user()) return {rx_->data() + rx_end_, rx_->capacity() - rx_end_};
  constexpr size_t kWhole = kRecordHeader + kMaxRecordPlain + kMaxRecordOverhead;
  if (!cin_) {
    const size_t size = carrier_->pool().buffer_size();
    cin_ = size >= 2 * kWhole ? carrier_->pool().acquire()
                              : carrier_->pool().acquire_large(2 * kWhole);
    if (!cin_) return {};
    cin_start_ = cin_end_ = 0;
  }
  if (cin_start_ == cin_end_) cin_start_ = cin_end_ = 0;
  if (cin_->capacity() - cin_end_ < kWhole && cin_start_ > 0) {
    // Less than one record of room: the partial record moves to the front.
    std::memmove(cin_->data(), cin_->data() + cin_start_, cin_end_ - cin_start_);
    cin_end_ -= cin_start_;
    cin_start_ = 0;
  }
  return {cin_->data() + cin_end_, cin_->capacity() - cin_end_};
}

void ConnectionImpl::received(size_t n) {
  if (rx_user()) {
    cin_end_ += n;
  } else {
    rx_end_ += n;
  }
}

std::string ConnectionImpl::ending(const RecordCipher::Opened& o) const {
  using Event = RecordCipher::Event;
  if (o.event == Event::kCloseNotify) {
    return "peer " + peer_.to_string() + " closed the TLS session (close_notify)";
  }
  if (o.event == Event::kAlert) {
    return "peer " + peer_.to_string() + " sent TLS alert " + alert_name(o.alert);
  }
  return "TLS from " + peer_.to_string() + ": " + o.error;
}

bool ConnectionImpl::open_pending(std::string* why) {
  if (!cin_ || cin_end_ - cin_start_ < kRecordHeader) return false;
  if (!make_room()) return false;  // pool exhausted: later
  auto o = opener_->open(cin_->data() + cin_start_, cin_end_ - cin_start_, rx_->data() + rx_end_,
                         rx_->capacity() - rx_end_);
  cin_start_ += o.consumed;
  rx_end_ += o.produced;
  using Event = RecordCipher::Event;
  switch (o.event) {
    case Event::kNone:
      break;
    case Event::kCloseNotify:
    case Event::kAlert:
    case Event::kError:
      *why = ending(o);
      break;
    case Event::kKeyUpdate:
    case Event::kKeyUpdateWanted: {
      auto ok = opener_->rekey();
      if (!ok) {
        *why = "TLS from " + peer_.to_string() + ": " + ok.error().what;
        break;
      }
      key_updates_in_.fetch_add(1, std::memory_order_relaxed);
      if (o.event == Event::kKeyUpdateWanted) {
        {
          std::lock_guard lock(mu_);
          in_key_update_ = true;
        }
        poke();
      }
      break;
    }
  }
  if (o.consumed) records_in_.store(opener_->records(), std::memory_order_relaxed);
  return o.consumed > 0;
}

void ConnectionImpl::seal_key_update(bool requested, SealedBytes& out) {
  const uint8_t msg[5] = {24, 0, 0, 1, static_cast<uint8_t>(requested ? 1 : 0)};
  sealer_->seal_record(22, msg, out);
  auto ok = sealer_->rekey();
  if (!ok) {
    // Cannot happen with keys that sealed a moment ago; if it does, nothing
    // more may be sent with the old keys.
    fail("TLS KeyUpdate: " + ok.error().what);
    return;
  }
  key_updates_out_.fetch_add(1, std::memory_order_relaxed);
}

void ConnectionImpl::seal_into(std::span<const iovec> parts, SealedBytes& out) {
  sealer_->seal(parts, out);
  if (sealer_->key_update_due()) seal_key_update(false, out);
  records_out_.store(sealer_->records(), std::memory_order_relaxed);
}

void ConnectionImpl::seal_pending() {
  size_t first = 0;
  while (first < tx_.size() && tx_[first].is_raw) first++;
  if (first == tx_.size()) return;
  TxBatch out;
  SealedBytes records;
  if (!spare_records_.empty()) {
    records = std::move(spare_records_.back());
    spare_records_.pop_back();
  }
  std::vector<iovec> parts;
  uint64_t plain = 0;
  size_t end = first;
  for (; end < tx_.size() && plain < kSealChunk; end++) {
    TxBatch& t = tx_[end];
    if (t.key_update) {
      seal_into(parts, records);
      parts.clear();
      seal_key_update(false, records);
      continue;
    }
    parts.insert(parts.end(), t.wire.begin(), t.wire.end());
    plain += t.wire_bytes;
    if (t.tick) {
      out.raw_ticks++;
    } else {
      out.raw_packets += t.batch.packets();
    }
  }
  if (!parts.empty()) seal_into(parts, records);
  out.set_raw(std::move(records));
  // The queue now holds the records instead of the plaintext.
  queued_.fetch_add(out.wire_bytes, std::memory_order_acq_rel);
  queued_.fetch_sub(plain, std::memory_order_acq_rel);
  tx_.erase(tx_.begin() + static_cast<ptrdiff_t>(first), tx_.begin() + static_cast<ptrdiff_t>(end));
  tx_.insert(tx_.begin() + static_cast<ptrdiff_t>(first), std::move(out));
}

std::string ConnectionImpl::kernel_control_record() {
  uint8_t buf[kMaxRecordPlain + kMaxRecordOverhead];
  char control[CMSG_SPACE(sizeof(uint8_t))];
  iovec iov{buf, sizeof buf};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  const ssize_t n = ::recvmsg(fd_.get(), &msg, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return {};
  if (n < 0) return Error::from_errno(errno, "kTLS recvmsg from " + peer_.to_string()).what;
  if (n == 0) return recv_failure(0);
  uint8_t type = 23;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) type = *CMSG_DATA(c);
  }
  bool tls13;
  {
    std::lock_guard lock(mu_);
    tls13 = tls_info_.version == "TLSv1.3";
  }
  const auto o = RecordCipher::control(type, buf, static_cast<size_t>(n), tls13);
  using Event = RecordCipher::Event;
  if (o.event == Event::kNone) return {};  // NewSessionTicket: no resumption here
  if (o.event == Event::kKeyUpdate || o.event == Event::kKeyUpdateWanted) {
    key_updates_in_.fetch_add(1, std::memory_order_relaxed);
    return "peer " + peer_.to_string() +
           " sent a TLS KeyUpdate, and this kernel cannot change kTLS receive keys "
           "(Linux before 6.14): closing (see README, \"Kernel TLS\")";
  }
  return ending(o);
}

std::string ConnectionImpl::kernel_record_failure(int err) const {
  // Linux's tls_sw: EBADMSG when a record fails authentication (or is too
  // short or has no content type), EMSGSIZE when it is oversized.
  if (err == EBADMSG) {
    return "TLS from " + peer_.to_string() +
           ": the kernel could not open a record (bad_record_mac: tampered or malformed)";
  }
  if (err == EMSGSIZE) {
    return "TLS from " + peer_.to_string() + ": oversized TLS record (record_overflow)";
  }
  return {};
}
}  // namespace ktls::carrier::internal
