// Helpers shared by the carrier's socket tests (tests only).
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "carrier/carrier.h"
#include "carrier/test_pki.h"

namespace ktls::carrier {

// Records everything a connection reports; waits with a deadline.
class Recorder : public ConnectionObserver {
 public:
  void on_connected(Connection&, const Error* e) override {
    std::lock_guard l(mu);
    connected = true;
    connect_error = e ? e->what : "";
    cv.notify_all();
  }
  void on_packets(Connection& c, std::span<const Packet> ps) override {
    std::lock_guard l(mu);
    uint64_t bytes = 0;
    for (const auto& p : ps) {
      packets.emplace_back(reinterpret_cast<const char*>(p.data), p.size);
      bytes += p.size;
    }
    batches++;
    if (auto_consume) c.consumed(bytes);
    cv.notify_all();
  }
  void on_writable(Connection&) override {
    std::lock_guard l(mu);
    writable++;
    cv.notify_all();
  }
  void on_closed(Connection&, const Error& reason) override {
    std::lock_guard l(mu);
    closed++;
    close_reason = reason.what;
    cv.notify_all();
  }
  void on_input_ended(Connection&, const Error& reason) override {
    std::lock_guard l(mu);
    input_ended++;
    input_end_reason = reason.what;
    input_end_before_close = closed == 0;
    input_end_thread = std::this_thread::get_id();
    cv.notify_all();
  }
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds t = std::chrono::seconds(10)) {
    std::unique_lock l(mu);
    return cv.wait_for(l, t, [&] { return pred(); });
  }
  std::mutex mu;
  std::condition_variable cv;
  bool connected = false;
  std::string connect_error, close_reason;
  std::vector<std::string> packets;
  int batches = 0, writable = 0, closed = 0;
  bool auto_consume = true;
  int input_ended = 0;  // kCaller: on_input_ended
  std::string input_end_reason;
  bool input_end_before_close = false;
  std::thread::id input_end_thread;
};

// Owns the strings of a batch until the carrier has written them.
struct Strings : Keepalive {
  std::vector<std::string> s;
};

// Sends `msgs` as one batch of packets (a test failure if refused).
inline SendStatus send_strings(Connection& c, std::vector<std::string> msgs) {
  auto keep = std::make_unique<Strings>();
  keep->s = std::move(msgs);
  OutboundBatch b;
  for (auto& m : keep->s) {
    iovec v{m.data(), m.size()};
    b.add_packet({&v, 1});
  }
  b.set_keepalive(std::move(keep));
  auto st = c.send(std::move(b));
  EXPECT_TRUE(st.ok()) << st.error().what;
  return st.ok() ? st.value() : SendStatus{};
}

// A recorder that also takes a listener's connections.
struct Events : Recorder, ListenerObserver {
  void on_accept(Listener&, std::shared_ptr<Connection> c, const Error*) override {
    std::lock_guard l(mu);
    if (c) accepted.push_back(c);
    cv.notify_all();
  }
  std::vector<std::shared_ptr<Connection>> accepted;
};

// A carrier listening on 127.0.0.1 whose accepted connections `events`
// observes: the carrier's side of tests against a raw or OpenSSL peer.
struct ListeningCarrier {
  // Starts the carrier with `o` and listens (port 0).
  void start_listening(const CarrierOptions& o) {
    auto c = Carrier::start(o);
    ASSERT_TRUE(c.ok()) << c.error().what;
    carrier = c.take();
    auto l = carrier->listen(SockAddr::parse("127.0.0.1", 0).value(), 128, events);
    ASSERT_TRUE(l.ok()) << l.error().what;
    listener = l.take();
  }
  // The next accepted connection, observed by `events`, in dist framing,
  // reading in `mode` (in RxMode::kCaller the test polls it).
  std::shared_ptr<Connection> next_server(RxMode mode = RxMode::kRing) {
    EXPECT_TRUE(events->wait([&] { return !events->accepted.empty(); }));
    if (events->accepted.empty()) return nullptr;
    auto c = events->accepted.front();
    events->accepted.erase(events->accepted.begin());
    c->set_observer(events);
    c->set_framing(Framing::kDist);
    c->start_streaming(mode);
    return c;
  }
  // A plain socket connected to the listener (which accepts it).
  int raw_connect() {
    listener->accept();
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    const auto& l = listener->local();
    EXPECT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&l.storage), l.len), 0);
    return fd;
  }
  // Why the (first) accepted connection closed.
  std::string server_close_reason() {
    EXPECT_TRUE(events->wait([&] { return events->closed > 0; }, std::chrono::seconds(30)));
    std::lock_guard l(events->mu);
    return events->close_reason;
  }

  std::shared_ptr<Events> events = std::make_shared<Events>();
  std::unique_ptr<Carrier> carrier;
  std::shared_ptr<Listener> listener;
};

// Descriptors this process has open now.
inline size_t open_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

// For state that no callback announces (stats): polls until `pred` holds.
template <class Pred>
bool eventually(Pred pred, std::chrono::milliseconds t = std::chrono::seconds(5)) {
  auto end = std::chrono::steady_clock::now() + t;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// RxMode::kCaller: a poller thread of the test's plays the VM's pollset. It
// calls receive_now() when the lent descriptor is readable, stops at
// kPaused until resume(), and ends at kClosed; it returns the descriptor
// when it is destroyed.
class CallerPoller {
 public:
  explicit CallerPoller(std::shared_ptr<Connection> c) : conn_(std::move(c)) {
    auto fd = conn_->lend_poll_fd();
    EXPECT_TRUE(fd.ok());
    fd_ = fd.ok() ? fd.value() : -1;
    thread_ = std::thread([this] { run(); });
  }
  ~CallerPoller() {
    stop_ = true;
    thread_.join();
    if (fd_ >= 0) conn_->return_poll_fd();
  }
  void resume() { resume_ = true; }
  int fd() const { return fd_; }
  std::thread::id id() const { return thread_.get_id(); }
  std::atomic<int> paused{0}, closed{0}, calls{0}, retries{0};

 private:
  void run() {
    bool polling = true;
    step(&polling);  // bytes that came with the handshake
    while (!stop_ && closed == 0) {
      if (!polling) {
        if (!resume_.exchange(false)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
          continue;
        }
        polling = true;
        step(&polling);
        continue;
      }
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10) > 0) step(&polling);
    }
  }
  void step(bool* polling) {
    calls++;
    switch (conn_->receive_now()) {
      case RxStep::kAgain:
        break;
      case RxStep::kPaused:
        paused++;
        *polling = false;
        break;
      case RxStep::kRetry:
        retries++;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        break;
      case RxStep::kClosed:
        closed++;
        break;
    }
  }
  std::shared_ptr<Connection> conn_;
  int fd_ = -1;
  std::atomic<bool> stop_{false}, resume_{false};
  std::thread thread_;
};

// A peer that speaks TLS with OpenSSL on a plain socket (blocking, with
// timeouts): what a stock node's record layer does. Owns `fd`.
class OpenSslPeer {
 public:
  OpenSslPeer(int fd, std::unique_ptr<TlsSession> s) : fd_(fd), s_(std::move(s)) {}
  OpenSslPeer(int fd, const TlsOptions& o, bool server = false)
      : OpenSslPeer(fd, session(o, server)) {}
  ~OpenSslPeer() { ::close(fd_); }
  std::string handshake() {
    for (int i = 0; i < 50; i++) {
      auto r = s_->handshake();
      flush();
      if (!r.ok()) return r.error().what;
      if (r.value()) return {};
      if (!read_some()) return "no answer";
    }
    return "handshake did not finish";
  }
  void send_packet(const std::string& body) {
    std::string framed(4, '\0');
    for (int i = 0; i < 4; i++) framed[i] = static_cast<char>(body.size() >> (8 * (3 - i)));
    framed += body;
    ASSERT_TRUE(s_->encrypt({reinterpret_cast<const uint8_t*>(framed.data()), framed.size()}).ok());
    flush();
  }
  // Plaintext until `n` bytes came (or an error).
  std::string read_plain(size_t n) {
    std::vector<uint8_t> plain;
    while (plain.size() < n) {
      auto r = s_->decrypt(plain);
      if (!r.ok()) return "error: " + r.error().what;
      if (plain.size() >= n || !read_some()) break;
    }
    return std::string(plain.begin(), plain.end());
  }
  void flush() {
    std::vector<uint8_t> out;
    s_->take_ciphertext(out);
    size_t at = 0;
    while (at < out.size()) {  // a large flight may not fit the socket at once
      ssize_t w = ::write(fd_, out.data() + at, out.size() - at);
      ASSERT_GT(w, 0) << "write to the carrier: " << std::strerror(errno);
      at += static_cast<size_t>(w);
    }
  }
  bool read_some() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 5000) <= 0) return false;
    uint8_t buf[65536];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    s_->put_ciphertext({buf, static_cast<size_t>(n)});
    return true;
  }
  TlsSession& session_() { return *s_; }
  int fd() const { return fd_; }

 private:
  int fd_;
  std::unique_ptr<TlsSession> s_;
};

}  // namespace ktls::carrier
