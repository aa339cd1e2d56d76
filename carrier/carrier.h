// The carrier: one io_uring event loop thread that owns every socket of the
// distribution, frames dist packets and hands them to observers.
//
// Threads: all public methods of Carrier, Listener and Connection are
// thread-safe and never block on a socket; they queue a command for the ring
// thread. Observer callbacks run on the ring thread only; a callback must not
// block, must not call back into the same object's destructor, and may call
// any public method (those only queue work).
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "carrier/buffer_pool.h"
#include "carrier/result.h"
#include "carrier/tls_session.h"

namespace ktls::carrier {

// An IPv4 or IPv6 socket address.
struct SockAddr {
  sockaddr_storage storage{};
  socklen_t len = 0;
  // "127.0.0.1", "::1" plus port; error names the bad text.
  static Result<SockAddr> parse(const std::string& ip, uint16_t port);
  int family() const { return storage.ss_family; }
  uint16_t port() const;
  std::string ip() const;         // numeric, without port
  std::string to_string() const;  // "127.0.0.1:4370", "[::1]:4370"
};

// How inbound bytes are cut into packets and outbound packets are prefixed.
enum class Framing : uint8_t {
  kHandshake,  // 2-byte big-endian length (distribution handshake); 4 bytes on a
               // TLS connection, as inet_tls_dist ({packet, 4} inside TLS)
  kDist,       // 4-byte big-endian length; zero length = tick (counted, not delivered)
};

// One received packet (framing removed). The bytes live in `buffer`; the
// observer takes a reference (BufferRef / Buffer::ref) to keep them.
struct Packet {
  const uint8_t* data;
  uint32_t size;
  Buffer* buffer;
};

// Keeps outbound bytes alive until the kernel has taken them. Destroyed on
// the ring thread once the batch is fully sent or the connection is closed,
// or inside send() on the calling thread when send() wrote the whole batch
// directly (nothing was queued).
class Keepalive {
 public:
  virtual ~Keepalive() = default;
};

// Packets to send, in order. Each packet is a span of iovecs; the carrier
// prepends the length header of the connection's current framing.
class OutboundBatch {
 public:
  void add_packet(std::span<const iovec> parts);
  void set_keepalive(std::unique_ptr<Keepalive> k) { keep_ = std::move(k); }
  size_t bytes() const { return bytes_; }  // payload bytes, without headers
  size_t packets() const { return sizes_.size(); }
  bool empty() const { return sizes_.empty(); }
  // For the carrier: all parts in order, parts per packet, size per packet.
  const std::vector<iovec>& iov() const { return iov_; }
  const std::vector<uint32_t>& packet_parts() const { return parts_; }
  const std::vector<uint64_t>& packet_sizes() const { return sizes_; }

 private:
  std::vector<iovec> iov_;       // parts of all packets, in order
  std::vector<uint32_t> parts_;  // number of iovecs per packet
  std::vector<uint64_t> sizes_;  // payload size per packet
  size_t bytes_ = 0;
  std::unique_ptr<Keepalive> keep_;
};

struct ConnectionStats {
  uint64_t packets_in = 0;   // delivered packets (ticks excluded)
  uint64_t packets_out = 0;  // packets handed to send
  uint64_t ticks_in = 0;
  uint64_t ticks_out = 0;
  uint64_t bytes_in = 0;      // wire bytes read
  uint64_t bytes_out = 0;     // wire bytes written
  uint64_t queued_bytes = 0;  // accepted by send() but not yet written
  uint64_t recv_calls = 0;    // completed recv operations
  uint64_t send_calls = 0;    // completed send operations
};

// TLS of one connection (empty version: plain TCP, or the handshake is not
// done yet). A resumed TLS 1.3 client is connected before its receiving
// direction leaves the handshake: its kernel_rx (or the receiving side's
// fallback) is set a moment after on_connected, once the server's ticket
// is in.
struct TlsInfo {
  std::string version;                       // "TLSv1.3"
  std::string cipher;                        // OpenSSL's name, "TLS_AES_256_GCM_SHA384"
  std::string peer_subject;                  // "/CN=a@127.0.0.1"
  std::string peer_certificate;              // DER (binding to a node name, trust)
  bool resumed = false;                      // TLS 1.3 resumption with a session ticket
  bool kernel_tx = false;                    // the kernel seals what we send (kTLS)
  bool kernel_rx = false;                    // the kernel opens what we receive (kTLS)
  std::string kernel_fallback;               // why the record layer is not (all) in the kernel
  uint64_t records_out = 0, records_in = 0;  // user-space record layer
  uint64_t key_updates_out = 0, key_updates_in = 0;  // TLS 1.3 KeyUpdate
};

// Who reads the socket of a streaming connection.
enum class RxMode : uint8_t {
  kRing,    // the ring thread, with io_uring recv
  kCaller,  // the user's thread, when the socket is readable: receive_now()
};

// What receive_now() did, and what the caller should do next.
enum class RxStep : uint8_t {
  kAgain,   // read what there was: call again when the socket is readable
  kPaused,  // rx_window is full: stop polling until consumed() returns true
  kRetry,   // the buffer pool is exhausted: call again after a short delay
  kClosed,  // the connection is closing or closed: stop polling
};

class Connection;

// Events of one connection. on_packets runs on the ring thread, or in
// RxMode::kCaller on the thread that called receive_now(); it is never run
// by two threads at once. The other callbacks run on the ring thread.
class ConnectionObserver {
 public:
  virtual ~ConnectionObserver() = default;
  // connect() finished: `error` is null on success. With TLS, after the
  // handshake; a resumed TLS 1.3 client as soon as it may send, while its
  // receiving direction still reads the server's ticket (see TlsInfo).
  virtual void on_connected(Connection& c, const Error* error) = 0;
  // Complete packets in arrival order. The span is valid only during the call.
  virtual void on_packets(Connection& c, std::span<const Packet> packets) = 0;
  // The send queue fell below the low watermark after send() reported busy.
  virtual void on_writable(Connection& c) = 0;
  // The connection is gone (peer closed, error, bad framing, close()). Last
  // callback; `reason` says why, naming the peer.
  virtual void on_closed(Connection& c, const Error& reason) = 0;
  // kCaller streaming only: receive_now() found the end of the input (end
  // of stream, a receive error, bad framing) after delivering every packet
  // before it. Called at once on the caller's thread, so that the user can
  // act on it before the ring thread gets to close the connection and call
  // on_closed with the same reason (which still follows). At most once.
  virtual void on_input_ended(Connection& /*c*/, const Error& /*reason*/) {}
};

struct SendStatus {
  uint64_t queued_bytes = 0;  // after this send
  bool busy = false;          // over the high watermark: wait for on_writable
};

struct ConnectionOptions {
  uint32_t max_handshake_packet = 8 * 1024;        // larger: close, "oversized handshake packet"
  uint64_t max_dist_packet = 64ull * 1024 * 1024;  // larger: close, "oversized dist packet"
  uint64_t send_high_watermark = 4 * 1024 * 1024;  // busy above this
  uint64_t send_low_watermark = 1024 * 1024;       // on_writable below this
  uint64_t rx_window = 8 * 1024 * 1024;            // delivered, not consumed: stop reading above
  bool nodelay = true;
};

// One TCP connection. Created by Carrier::connect or delivered by a Listener;
// shared between the ring thread and its user.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  virtual ~Connection() = default;

  // Must be called before the first read is requested. The observer is kept
  // alive until on_closed returned.
  virtual void set_observer(std::shared_ptr<ConnectionObserver> observer) = 0;
  // Handshake mode: deliver exactly one more packet, then stop parsing until
  // the next request_packet() or start_streaming(). Bytes that arrive after
  // that packet stay buffered unparsed (the framing may change).
  virtual void request_packet() = 0;
  // Switches framing (applies to buffered, unparsed bytes too).
  virtual void set_framing(Framing framing) = 0;
  // Deliver packets continuously as they arrive, batched, subject to rx_window.
  // kRing: the ring thread reads. kCaller: from now on the ring thread never
  // reads the socket; the caller calls receive_now() whenever the descriptor
  // of lend_poll_fd() is readable (and once right away: bytes that came with
  // the handshake may be buffered already).
  virtual void start_streaming(RxMode mode) = 0;
  // kCaller: reads what the socket has (a few recv calls at most), cuts
  // packets and delivers them to on_packets on the calling thread. Never
  // blocks. Errors and end of stream close the connection as in kRing
  // (on_closed follows on the ring thread, after every packet delivered).
  virtual RxStep receive_now() = 0;
  // kCaller: the socket's own descriptor, lent to a readiness poller (the
  // receive port puts it in the VM's pollset; no duplicate, so a connection
  // costs one descriptor). While it is lent the carrier never closes it:
  // when the connection closes the socket is shut down, the poller sees it
  // readable and receive_now() says kClosed, and the descriptor stays open
  // until the poller, once it has stopped polling it, calls return_poll_fd().
  // Each successful lend_poll_fd() takes one return_poll_fd(); the
  // connection object must outlive it.
  virtual Result<int> lend_poll_fd() = 0;
  virtual void return_poll_fd() = 0;
  // The user processed `bytes` of delivered packets (sum of Packet::size);
  // reading resumes when delivered-but-unconsumed bytes drop below rx_window.
  // True in kCaller mode when this call reopened the window: the caller
  // resumes polling and calls receive_now().
  virtual bool consumed(uint64_t bytes) = 0;
  // Bytes delivered in streaming mode and not consumed yet: the user still
  // has them to process (also after the connection closed).
  virtual uint64_t unconsumed() const = 0;
  // Queue packets. Never blocks; error once the connection is closed.
  virtual Result<SendStatus> send(OutboundBatch&& batch) = 0;
  // Queue a zero-length packet (dist tick) unless data is queued already.
  virtual void send_tick() = 0;
  // Close; on_closed follows with `reason`.
  virtual void close(const std::string& reason) = 0;
  // close(), and a plain connection's socket is shut down on the caller's
  // thread before this returns, so the peer sees the close as soon as it
  // would from a port-based carrier (net_kernel:disconnect/1 returns, then
  // a caller asks the peer). A TLS connection ends its session first, on
  // the carrier thread (close_notify), as close() does.
  virtual void close_now(const std::string& reason) = 0;

  // An integer socket option (setsockopt/getsockopt level, name): what
  // net_kernel:setopts/getopts and the inet_dist_*_options reach.
  virtual Result<void> set_socket_option(int level, int name, int value) = 0;
  virtual Result<int> socket_option(int level, int name) = 0;
  virtual ConnectionStats stats() const = 0;
  virtual TlsInfo tls_info() const = 0;
  virtual const SockAddr& peer() const = 0;
  virtual const SockAddr& local() const = 0;
  virtual uint64_t id() const = 0;  // unique per carrier, for logs
};

class Listener;

class ListenerObserver {
 public:
  virtual ~ListenerObserver() = default;
  // One accept() request finished: a new connection (no observer yet, not
  // reading) or an error.
  virtual void on_accept(Listener& l, std::shared_ptr<Connection> conn, const Error* error) = 0;
};

class Listener {
 public:
  virtual ~Listener() = default;
  // Accept one connection; the result goes to the observer.
  virtual void accept() = 0;
  // Stop listening; pending accept() requests fail with an error.
  virtual void close() = 0;
  virtual const SockAddr& local() const = 0;  // with the real port after port 0
};

// TLS for every connection of a carrier (DESIGN.md, "TLS"). Without
// contexts connections are plain TCP.
struct CarrierTlsOptions {
  std::shared_ptr<TlsContext> server;  // accepted connections
  std::shared_ptr<TlsContext> client;  // connect()
  bool kernel = true;                  // hand the record layer to the kernel (kTLS) where it can
  // Refuse a connection whose record layer the kernel does not take (both
  // directions): the handshake fails with the fallback's reason.
  bool kernel_required = false;
  // A handshake not finished by then fails ("stalled"), closing the socket.
  std::chrono::milliseconds handshake_timeout{7000};
};

struct CarrierOptions {
  unsigned ring_entries = 1024;
  // After handling completions the ring thread polls for more for this long
  // before it sleeps (like the VM's scheduler busy-wait): request/response
  // traffic then does not pay a thread wake-up per message, but the spin
  // takes CPU from the schedulers where cores are scarce. 0 = never spin.
  std::chrono::microseconds spin{0};
  BufferPoolOptions pool;
  ConnectionOptions connection;
  CarrierTlsOptions tls;
};

struct CarrierStats {
  uint64_t connections_open = 0;
  uint64_t connections_total = 0;
  uint64_t listeners_open = 0;
  uint64_t ring_submits = 0;            // io_uring_submit calls
  uint64_t wakeups = 0;                 // commands that woke the ring thread
  uint64_t tls_handshakes = 0;          // completed TLS handshakes
  uint64_t tls_resumptions = 0;         // of which resumed a session (ticket)
  uint64_t tls_handshake_failures = 0;  // by reason: tls_failure_reasons
  uint64_t ktls_installs = 0;           // connections with TX and RX in the kernel
  uint64_t ktls_fallbacks = 0;          // connections left (partly) in user space
  std::vector<std::pair<std::string, uint64_t>> tls_failure_reasons;
  std::string ktls_fallback_reason;  // the last one
  BufferPoolStats pool;
};

// A TLS client's first flight, made before connect() (Carrier::hello).
class TlsHello {
 public:
  virtual ~TlsHello() = default;
};

class Carrier {
 public:
  // Starts the ring thread.
  static Result<std::unique_ptr<Carrier>> start(const CarrierOptions& options);
  // Closes every socket and joins the ring thread.
  virtual ~Carrier() = default;

  // Bind and listen (SO_REUSEADDR); port 0 picks a free port.
  virtual Result<std::shared_ptr<Listener>> listen(const SockAddr& addr, int backlog,
                                                   std::shared_ptr<ListenerObserver> observer) = 0;
  // Connect with a timeout; result via observer->on_connected.
  std::shared_ptr<Connection> connect(const SockAddr& addr, std::chrono::milliseconds timeout,
                                      std::shared_ptr<ConnectionObserver> observer) {
    return connect(addr, timeout, std::move(observer), std::string(), nullptr);
  }
  // The same; with TLS, the session ticket offered and the one received
  // are kept under `session_key` (the peer's address when empty, e.g. the
  // peer's node name), and `hello` (from hello() with the same key), when
  // given, is the ClientHello sent.
  virtual std::shared_ptr<Connection> connect(const SockAddr& addr,
                                              std::chrono::milliseconds timeout,
                                              std::shared_ptr<ConnectionObserver> observer,
                                              std::string session_key,
                                              std::unique_ptr<TlsHello> hello) = 0;
  // TLS client: the ClientHello of a later connect(), made now on the
  // calling thread (its key share took about 0.3 ms with OpenSSL 3.0), so
  // that it can be made while the caller looks the peer's address up; the
  // ticket kept under `session_key` is offered. Any thread. Null without
  // TLS, or when OpenSSL fails (connect() then makes its own and reports).
  virtual std::unique_ptr<TlsHello> hello(const std::string& session_key) = 0;
  // The ClientHello made ahead for `session_key`, when a connection to
  // that peer ended while its ticket was here (the ring thread makes it
  // when idle; kept up to a minute), else null. Any thread. Cheap, except
  // while the ring thread is making that very hello (about 0.15 ms; it
  // holds the peer's only ticket): then it waits for it, at most 100 ms.
  // hello() returns it too.
  virtual std::unique_ptr<TlsHello> prepared_hello(const std::string& session_key) = 0;
  // The same without waiting: while the ring thread is making that hello,
  // null with `in_the_making` set, so that a caller that must not block (a
  // NIF on a normal scheduler) can wait elsewhere with prepared_hello().
  virtual std::unique_ptr<TlsHello> try_prepared_hello(const std::string& session_key,
                                                       bool& in_the_making) = 0;
  // Counters; includes BufferPool::stats(), which reads /proc/self/smaps
  // (slow: not for hot paths).
  virtual CarrierStats stats() const = 0;
  virtual BufferPool& pool() = 0;
};

}  // namespace ktls::carrier
