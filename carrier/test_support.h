// Helpers shared by the carrier's socket tests (tests only).
#pragma once

#include <dirent.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include "carrier/carrier.h"

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
};

// Descriptors this process has open now.
inline size_t open_fds() {
  size_t n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

}  // namespace ktls::carrier
