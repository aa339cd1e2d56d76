// One TCP connection on the ring thread: receive path (framing, zero-copy
// delivery, rx_window; or receive_now() on the user's thread), send path
// (batched sendmsg, watermarks) and close.
// Internal to the carrier library.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "carrier/carrier.h"
#include "carrier/fd.h"
#include "carrier/framing.h"
#include "carrier/ring.h"

namespace ktls::carrier::internal {

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

class ConnectionImpl final : public Connection {
 public:
  ConnectionImpl(CarrierImpl* carrier, uint64_t id, Fd fd, const ConnectionOptions& options)
      : carrier_(carrier), id_(id), fd_(std::move(fd)), options_(options) {
    parser_.set_limits(options.max_handshake_packet, options.max_dist_packet);
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
  void start_streaming(RxMode mode) override;
  RxStep receive_now() override;
  Result<int> dup_poll_fd() override;
  bool consumed(uint64_t bytes) override {
    // Saturating: consuming more than was delivered in streaming mode (e.g.
    // handshake packets) must not wrap the counter.
    uint64_t before = unconsumed_.load(std::memory_order_acquire), after;
    do {
      after = before > bytes ? before - bytes : 0;
    } while (!unconsumed_.compare_exchange_weak(before, after, std::memory_order_acq_rel));
    if (before < options_.rx_window || after >= options_.rx_window) return false;
    if (caller_rx_.load(std::memory_order_acquire)) return true;
    poke();
    return false;
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
  void start_connect(std::chrono::milliseconds timeout);  // to peer()
  void on_connect(int res);
  void on_recv(int res);
  void on_send(int res);
  void on_cancel() {
    cancel_inflight_ = false;
    service();
  }
  // Before the connection is shared (peer() is read without a lock).
  void set_peer(const SockAddr& peer) { peer_ = peer; }
  void set_addresses(const SockAddr& peer) {
    peer_ = peer;
    local_.len = sizeof(local_.storage);
    getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&local_.storage), &local_.len);
  }
  void fail(const std::string& why, int code = 0);
  void mark_ready() {
    std::lock_guard lock(mu_);
    if (!closed_for_send_) tx_ready_ = true;
  }
  bool finished() const { return finished_.load(std::memory_order_acquire); }

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
  // Cuts and delivers packets; returns the error that must close the
  // connection (oversized packet), empty if none. Caller holds rx_mu_.
  std::string parse();
  // Why reading ended: errno `err`, or 0 for end of stream (names the peer).
  std::string recv_failure(int err) const;
  // Closes from a receive_now() caller's thread: the ring thread applies it.
  void fail_from_caller(const std::string& why, int code);
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
  Fd fd_;
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
  bool in_fail_ = false;  // receive_now() hit an error: fail() with in_fail_reason_
  Error in_fail_reason_;
  bool closed_for_send_ = false;

  // Receive state: the ring thread's, except in RxMode::kCaller, where the
  // thread in receive_now() uses it too. rx_mu_ is held whenever it is used
  // (recursive: parse() may apply requests). Lock order: rx_mu_, then mu_.
  std::recursive_mutex rx_mu_;
  std::atomic<bool> caller_rx_{false};  // RxMode::kCaller streaming
  bool rx_closed_ = false;              // no more reading or delivering
  FrameParser parser_;
  BufferRef rx_;
  size_t rx_start_ = 0, rx_end_ = 0;  // unparsed bytes [start, end) of rx_
  uint32_t requests_ = 0;
  bool streaming_ = false;
  // Ring-thread state.
  bool recv_inflight_ = false, send_inflight_ = false, connect_inflight_ = false;
  bool cancel_inflight_ = false;
  bool closing_ = false;
  bool ring_rx_pending_ = false;  // kCaller, but the ring's last recv brought bytes
  // Set once on_closed was reported; read by other threads so that calls on
  // a finished connection never reach the ring (which may be gone).
  std::atomic<bool> finished_{false};
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
}  // namespace ktls::carrier::internal
