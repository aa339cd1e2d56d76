// Distribution handshakes of simulated nodes, done by erl_interface
// (ei_xconnect_host_port_tmo: no epmd) on a few worker threads, since ei's
// handshake blocks. A finished connection is handed back as a descriptor,
// which the caller then drives without blocking (swarm.cc).
#pragma once

#include <netinet/in.h>
#include <openssl/ssl.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace ktls::loadgen {

struct HandshakeJob {
  uint32_t slot = 0;        // caller's connection index
  uint32_t generation = 0;  // caller's incarnation of the slot
  std::string alive;        // node name before '@'
  uint32_t creation = 0;    // this incarnation's creation (nonzero)
};

struct HandshakeResult {
  uint32_t slot = 0;
  uint32_t generation = 0;
  int fd = -1;             // >= 0: connected, registered with ei (close with ei_close_connection)
  SSL* ssl = nullptr;      // with TLS: the session, owned by ei's socket context (closed with fd)
  std::string pid_ext;     // our pid in the external term format (when connected)
  std::string error_kind;  // when not connected: connect_refused, handshake_timeout, ...
  std::string error_text;
  uint64_t ns = 0;  // how long the connect and handshake took
};

class Handshaker {
 public:
  struct Config {
    in_addr target{};
    uint16_t port = 0;
    std::string cookie;
    std::string node_host;  // host part of our node names
    uint32_t timeout_ms = 5000;
    uint32_t threads = 8;
    SSL_CTX* tls = nullptr;  // TLS client context (caller's, outlives us); null: plain TCP
  };

  // Starts the worker threads. ei_init() must have run.
  explicit Handshaker(Config config);
  // Stops and joins the workers; connections never taken are closed.
  ~Handshaker();
  Handshaker(const Handshaker&) = delete;
  Handshaker& operator=(const Handshaker&) = delete;

  // Queues a handshake (any thread).
  void submit(HandshakeJob job);
  // Results so far, without waiting (any thread).
  std::vector<HandshakeResult> take_results();
  // Readable (eventfd) while results are waiting: for the caller's epoll.
  int event_fd() const { return event_fd_; }
  // Jobs queued or running.
  size_t pending() const;

 private:
  void work();
  HandshakeResult connect_one(const HandshakeJob& job);

  Config config_;
  int event_fd_ = -1;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<HandshakeJob> jobs_;
  std::vector<HandshakeResult> results_;
  size_t running_ = 0;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

// Short name of an erl_errno / errno from a failed handshake, for the
// report's "errors by kind".
std::string handshake_error_kind(int err);

}  // namespace ktls::loadgen
