#include "tools/loadgen/handshaker.h"

#include <ei.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "tools/loadgen/dist_codec.h"
#include "tools/loadgen/ei_transport.h"

namespace ktls::loadgen {

Handshaker::Handshaker(Config config) : config_(std::move(config)) {
  event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  for (uint32_t i = 0; i < config_.threads; ++i) workers_.emplace_back([this] { work(); });
}

Handshaker::~Handshaker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    jobs_.clear();
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
  for (HandshakeResult& r : results_) {
    if (r.fd >= 0) ei_close_connection(r.fd);
  }
  if (event_fd_ >= 0) close(event_fd_);
}

void Handshaker::submit(HandshakeJob job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    jobs_.push_back(std::move(job));
  }
  cv_.notify_one();
}

std::vector<HandshakeResult> Handshaker::take_results() {
  uint64_t drained;
  [[maybe_unused]] ssize_t n = read(event_fd_, &drained, sizeof drained);
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<HandshakeResult> out;
  out.swap(results_);
  return out;
}

size_t Handshaker::pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return jobs_.size() + running_;
}

void Handshaker::work() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !jobs_.empty(); });
    if (stopping_) return;
    HandshakeJob job = std::move(jobs_.front());
    jobs_.pop_front();
    ++running_;
    lock.unlock();
    HandshakeResult r = connect_one(job);
    lock.lock();
    --running_;
    if (stopping_) {
      if (r.fd >= 0) ei_close_connection(r.fd);
      return;
    }
    results_.push_back(std::move(r));
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(event_fd_, &one, sizeof one);
  }
}

HandshakeResult Handshaker::connect_one(const HandshakeJob& job) {
  HandshakeResult r;
  r.slot = job.slot;
  r.generation = job.generation;
  auto t0 = std::chrono::steady_clock::now();
  std::string node = job.alive + "@" + config_.node_host;
  // ei_cnode is large (node names, cookie); one per handshake on this stack.
  ei_cnode ec;
  if (ei_connect_xinit_ussi(&ec, config_.node_host.c_str(), job.alive.c_str(), node.c_str(),
                            nullptr, config_.cookie.c_str(), job.creation,
                            config_.tls != nullptr ? tls_callbacks() : plain_tcp_callbacks(),
                            sizeof(ei_socket_callbacks), config_.tls) < 0) {
    r.error_kind = "ei_init";
    r.error_text = "ei_connect_xinit_ussi failed for " + node;
    return r;
  }
  in_addr addr = config_.target;
  int fd = ei_xconnect_host_port_tmo(&ec, &addr, config_.port, config_.timeout_ms);
  r.ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
          .count());
  if (fd < 0) {
    int err = erl_errno;
    r.error_kind = handshake_error_kind(err);
    r.error_text = node + ": " + std::strerror(err);
    if (config_.tls != nullptr && err == EPROTO) r.error_text = node + ": " + last_tls_error();
    return r;
  }
  if (config_.tls != nullptr) r.ssl = tls_session_of(fd);
  auto pid = encode_pid(*ei_self(&ec));
  if (!pid) {
    ei_close_connection(fd);
    r.error_kind = "ei_encode";
    r.error_text = pid.error().what;
    return r;
  }
  r.fd = fd;
  r.pid_ext = pid.take();
  return r;
}

std::string handshake_error_kind(int err) {
  switch (err) {
    case ECONNREFUSED:
      return "connect_refused";
    case ETIMEDOUT:
      return "handshake_timeout";
    case ECONNRESET:
    case EPIPE:
      return "handshake_reset";
    case EIO:
      return "handshake_failed";  // refused by the target (cookie, name, status)
    case EPROTO:
      return "tls_handshake_failed";  // certificate, version, ... (error_text says which)
    case EMFILE:
    case ENFILE:
      return "out_of_descriptors";
    case EADDRNOTAVAIL:
      return "out_of_ports";
    default:
      return std::string("handshake_errno_") + std::to_string(err);
  }
}

}  // namespace ktls::loadgen
