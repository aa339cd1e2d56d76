// A listening socket on the ring thread: one accept per Listener::accept().
// Internal to the carrier library.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <memory>
#include <mutex>

#include "carrier/carrier.h"
#include "carrier/fd.h"
#include "carrier/ring.h"

namespace ktls::carrier::internal {

class ListenerImpl final : public Listener, public std::enable_shared_from_this<ListenerImpl> {
 public:
  ListenerImpl(CarrierImpl* carrier, Fd fd, const SockAddr& local,
               std::shared_ptr<ListenerObserver> observer)
      : carrier_(carrier), fd_(std::move(fd)), local_(local), observer_(std::move(observer)) {}
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
  bool finished() const { return finished_.load(std::memory_order_acquire); }

  Op accept_op{OpKind::kAccept, this};
  Op cancel_op{OpKind::kListenCancel, this};
  std::atomic<bool> poked{false};
  int ops = 0;  // SQEs in flight that name this listener

 private:
  CarrierImpl* carrier_;
  Fd fd_;
  SockAddr local_;
  std::shared_ptr<ListenerObserver> observer_;
  std::mutex mu_;
  uint32_t in_accepts_ = 0;
  bool in_close_ = false;
  uint32_t accepts_ = 0;
  bool inflight_ = false, cancel_inflight_ = false, closing_ = false;
  std::atomic<bool> finished_{false};  // closed: calls no longer reach the ring
  sockaddr_storage peer_{};
  socklen_t peer_len_ = 0;
};
}  // namespace ktls::carrier::internal
