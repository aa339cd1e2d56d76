// One TCP connection on the ring thread: receive path (framing, zero-copy
// delivery, rx_window; or receive_now() on the user's thread), send path
// (batched sendmsg, watermarks), the TLS record layer (DESIGN.md, "TLS")
// and close.
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
#include "carrier/record_layer.h"
#include "carrier/ring.h"
#include "carrier/tls_session.h"

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
  // Bytes ready for the socket as they are (TLS records, handshake bytes):
  // `wire` points into them. `packets` and `ticks` they carry, for stats.
  SealedBytes raw;
  bool is_raw = false;
  bool key_update = false;  // seal a KeyUpdate here, then change keys
  uint64_t raw_packets = 0, raw_ticks = 0;
  void set_raw(SealedBytes bytes) {
    is_raw = true;
    raw = std::move(bytes);
    wire.assign(1, iovec{raw.data(), raw.size()});
    wire_bytes = raw.size();
  }
};

// Who protects the bytes of one direction on the socket.
enum class Layer : uint8_t {
  kPlain,      // none: plain TCP
  kHandshake,  // TLS handshake in progress: no application data yet
  kUser,       // TLS records sealed/opened here (RecordCipher)
  kKernel,     // TLS records sealed/opened by the kernel (kTLS)
};

// Carrier::hello's result: a client session whose ClientHello is made.
struct TlsHelloImpl final : TlsHello {
  explicit TlsHelloImpl(std::unique_ptr<TlsSession> s) : session(std::move(s)) {}
  // A client session offering the ticket kept under `key`, its ClientHello
  // made; null when OpenSSL fails (start_tls() then tries and reports).
  static std::unique_ptr<TlsSession> make(std::shared_ptr<TlsContext> ctx, const std::string& key);
  std::unique_ptr<TlsSession> session;
};

class ConnectionImpl final : public Connection {
 public:
  // With `tls`, the connection runs a TLS handshake once connected and
  // carries no application data before it is done.
  ConnectionImpl(CarrierImpl* carrier, uint64_t id, Fd fd, const ConnectionOptions& options,
                 std::shared_ptr<TlsContext> tls = nullptr)
      : carrier_(carrier),
        id_(id),
        fd_(std::move(fd)),
        options_(options),
        tls_ctx_(std::move(tls)) {
    parser_.set_limits(options.max_handshake_packet, options.max_dist_packet);
    if (tls_ctx_) {
      tx_layer_ = rx_layer_ = Layer::kHandshake;
      // Inside TLS the dist handshake has 4-byte lengths (inet_tls_dist).
      hs_header_ = tx_header_ = 4;
      parser_.set_handshake_header(4);
    }
  }

  // -- public API (any thread) --
  // On a connection that closed before it had an observer (a TLS
  // handshake that failed right after accept), on_closed is reported from
  // here, on the calling thread.
  void set_observer(std::shared_ptr<ConnectionObserver> observer) override {
    {
      std::lock_guard lock(mu_);
      if (!closed_unreported_) {
        observer_ = std::move(observer);
        return;
      }
      closed_unreported_ = false;
    }
    observer->on_closed(*this, close_reason_);
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
      tx_header_ = framing == Framing::kHandshake ? hs_header_ : 4;
    }
    poke();
  }
  void start_streaming(RxMode mode) override;
  RxStep receive_now() override;
  Result<int> lend_poll_fd() override;
  void return_poll_fd() override;
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
  uint64_t unconsumed() const override { return unconsumed_.load(std::memory_order_acquire); }
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
  void close_now(const std::string& reason) override;
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
  TlsInfo tls_info() const override;
  Result<void> set_socket_option(int level, int name, int value) override;
  Result<int> socket_option(int level, int name) override;
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
  void on_handshake_timer(int res);
  // Before the connection is shared (peer() is read without a lock).
  void set_peer(const SockAddr& peer) { peer_ = peer; }
  // Client session key (tickets; empty: the peer's address, so after
  // set_peer) and a ClientHello made ahead (from Carrier::hello), set before
  // the connection is shared.
  void set_client_session(std::string key, std::unique_ptr<TlsHello> hello);
  void set_addresses(const SockAddr& peer) {
    peer_ = peer;
    local_.len = sizeof(local_.storage);
    getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&local_.storage), &local_.len);
  }
  void fail(const std::string& why, int code = 0);
  void mark_ready() {
    std::lock_guard lock(mu_);
    if (!closed_for_send_ && tx_layer_ != Layer::kHandshake) tx_ready_ = true;
  }
  bool tls() const { return tls_ctx_ != nullptr; }
  bool finished() const { return finished_.load(std::memory_order_acquire); }

  Op recv_op{OpKind::kRecv, this};
  Op send_op{OpKind::kSend, this};
  Op connect_op{OpKind::kConnect, this};
  Op timeout_op{OpKind::kTimeout, this};
  Op cancel_op{OpKind::kConnCancel, this};
  Op hs_timer_op{OpKind::kHandshakeTimer, this};
  Op hs_timer_remove_op{OpKind::kTimeout, this};
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
  size_t write_now(const OutboundBatch& batch, uint8_t header_size, bool* sealed);
  // Seals `parts` as application data with sealer_ (and a KeyUpdate when
  // the keys have protected enough bytes).
  void seal_into(std::span<const iovec> parts, SealedBytes& out);
  void seal_key_update(bool requested, SealedBytes& out);
  void check_writable();
  bool make_room();
  void deliver(std::span<const Packet> packets);
  void finish_close();
  // Cuts packets out of the plaintext in rx_ (parse() without opening).
  std::string cut();
  // -- TLS (connection.cc, "TLS") --
  bool rx_user() const { return rx_layer_ == Layer::kUser; }
  // Where the next recv writes: the plaintext buffer, or the ciphertext
  // buffer of the user-space record layer. Empty when the pool is empty.
  std::span<uint8_t> recv_space();
  void received(size_t n);
  // Opens buffered ciphertext into rx_ as far as there is room; true if it
  // used any. `why` gets the reason to close (alert, bad record).
  bool open_pending(std::string* why);
  // Why the connection ends after an alert, close_notify or a bad record.
  std::string ending(const RecordCipher::Opened& o) const;
  // Seals the plaintext batches at the back of tx_ into TLS records.
  void seal_pending();
  void prepare_tls();  // a client's session and ClientHello, before connected
  void start_tls();
  size_t handshake_want() const;  // bytes to read of the record being read
  void arm_handshake_recv();
  void on_handshake_bytes(size_t n);
  void handshake_step();
  // The record layer of one direction leaves OpenSSL, to the kernel (kTLS)
  // or to a RecordCipher, noted in `info` (sending fills the session's
  // fields too); false (the handshake failed) if it cannot.
  bool take_over(bool tx, TlsInfo& info);
  void publish(const TlsInfo& info);  // what tls_info() answers
  void finish_handshake();
  void report_connected();  // a connect()'s on_connected, once
  void arm_handshake_timer();
  void disarm_handshake_timer();
  void handshake_failed(const std::string& why, std::vector<uint8_t> alert = {});
  // A non-data record on a kTLS socket (recv said EIO): read and handle it;
  // empty if reading may go on, else why the connection closes.
  std::string kernel_control_record();
  // A record the kernel refused on a kTLS socket (recv's errno), named as
  // the user-space record layer names it; empty for other errors.
  std::string kernel_record_failure(int err) const;
  std::shared_ptr<ConnectionObserver> observer();

  CarrierImpl* carrier_;
  uint64_t id_;
  Fd fd_;
  ConnectionOptions options_;
  SockAddr peer_, local_;

  // Requests from other threads.
  mutable std::mutex mu_;
  std::shared_ptr<ConnectionObserver> observer_;
  struct InBatch {
    OutboundBatch batch;
    uint8_t header_size;
    size_t written;  // bytes already written by the fast path
    // TLS: the records the fast path sealed but could not write all of
    // (then `batch` is empty and `written` counts bytes of `rest`).
    SealedBytes rest;
    uint64_t packets = 0;
  };
  std::deque<InBatch> in_batches_;
  // TLS: the peer wants a KeyUpdate from us (set by the receive side).
  bool in_key_update_ = false;
  uint8_t tx_header_ = 2;
  uint8_t hs_header_ = 2;  // header of handshake packets (4 with TLS)
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
  bool closed_unreported_ = false;  // finished without an observer

  // Receive state: the ring thread's, except in RxMode::kCaller, where the
  // thread in receive_now() uses it too. rx_mu_ is held whenever it is used
  // (recursive: parse() may apply requests). Lock order: rx_mu_, then mu_.
  std::recursive_mutex rx_mu_;
  std::atomic<bool> caller_rx_{false};  // RxMode::kCaller streaming
  bool rx_closed_ = false;              // no more reading or delivering
  int fd_lent_ = 0;                     // lend_poll_fd() not yet returned
  Fd lent_fd_;  // the socket of a closed connection, closed at the last return
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

  // TLS. The layers change on the ring thread, in take_over(), while no
  // recv is in flight and before tx_ready_ lets a sender write (a resumed
  // client's sending direction changes first, while its receiving one
  // still reads the server's ticket through OpenSSL); the
  // sealer belongs to whoever may send (the fast path under mu_ while the
  // ring thread has nothing queued, the ring thread while tx_busy_), the
  // opener to the holder of rx_mu_.
  std::shared_ptr<TlsContext> tls_ctx_;
  Layer tx_layer_ = Layer::kPlain, rx_layer_ = Layer::kPlain;
  std::unique_ptr<TlsSession> session_;  // the handshake; freed after it
  std::string session_key_;              // client tickets: the peer's node, else address
  std::vector<uint8_t> hs_in_;           // the handshake record being read
  size_t hs_got_ = 0;
  bool report_connect_ = false;     // connect() is reported after the handshake
  bool hs_timer_armed_ = false;     // handshake_timeout is running
  bool hs_seen_ = false;            // the peer sent handshake bytes
  __kernel_timespec hs_timeout_{};  // read by the kernel at submit
  std::unique_ptr<RecordCipher> sealer_, opener_;
  SealedBytes fast_sealed_;  // the fast path's records (under mu_)
  // Record buffers whose bytes the kernel has taken, kept for the next
  // seal_pending() (ring thread): a fresh ~512 KiB buffer per round would
  // be mapped and faulted in every time.
  std::vector<SealedBytes> spare_records_;
  BufferRef cin_;  // received ciphertext not yet opened
  size_t cin_start_ = 0, cin_end_ = 0;
  TlsInfo tls_info_;  // under mu_
  std::atomic<uint64_t> key_updates_in_{0}, key_updates_out_{0};
  std::atomic<uint64_t> records_in_{0}, records_out_{0};

  std::atomic<uint64_t> unconsumed_{0};
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> packets_in_{0}, packets_out_{0}, ticks_in_{0}, ticks_out_{0};
  std::atomic<uint64_t> bytes_in_{0}, bytes_out_{0}, recv_calls_{0}, send_calls_{0};
};
}  // namespace ktls::carrier::internal
