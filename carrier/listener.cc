// Listener: accepts (see listener.h).
#include "carrier/listener.h"

#include <liburing.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cstring>

#include "carrier/connection.h"

namespace ktls::carrier::internal {

void ListenerImpl::poke() {
  if (finished()) return;  // nothing left to do, and the carrier may be gone
  carrier_->poke(shared_from_this());
}

void ListenerImpl::service() {
  if (finished_) return;
  {
    std::lock_guard lock(mu_);
    accepts_ += in_accepts_;
    in_accepts_ = 0;
    if (in_close_) closing_ = true;
  }
  if (closing_) {
    if (inflight_) {
      if (!cancel_inflight_) {
        cancel_inflight_ = carrier_->cancel(&accept_op, &cancel_op, ops);
      }
      return;
    }
    if (cancel_inflight_) return;
    finished_ = true;
    fd_.reset();
    // Counted as gone before the observer hears of it (stats are exact then).
    carrier_->listeners_open_.fetch_sub(1, std::memory_order_relaxed);
    Error e = Error::message("listener " + local_.to_string() + " closed");
    for (; accepts_ > 0; accepts_--) observer_->on_accept(*this, nullptr, &e);
    carrier_->listener_finished(this);
    return;
  }
  if (inflight_ || accepts_ == 0) return;
  io_uring_sqe* s = carrier_->sqe();
  if (!s) return;
  peer_len_ = sizeof peer_;
  io_uring_prep_accept(s, fd_.get(), reinterpret_cast<sockaddr*>(&peer_), &peer_len_,
                       SOCK_NONBLOCK | SOCK_CLOEXEC);
  CarrierImpl::track(s, &accept_op, ops);
  inflight_ = true;
}

void ListenerImpl::on_accept(int res) {
  inflight_ = false;
  if (res < 0) {
    if (closing_ || res == -ECANCELED) {
      service();
      return;
    }
    if (res == -EINTR || res == -EAGAIN || res == -ECONNABORTED) {
      service();
      return;
    }
    accepts_--;
    Error e = Error::from_errno(-res, "accept on " + local_.to_string());
    observer_->on_accept(*this, nullptr, &e);
    service();
    return;
  }
  accepts_--;
  SockAddr peer;
  std::memcpy(&peer.storage, &peer_, sizeof peer_);
  peer.len = peer_len_;
  auto conn = carrier_->adopt(res, peer);
  observer_->on_accept(*this, conn, nullptr);
  // A TLS server answers the ClientHello without waiting for its user.
  if (conn->tls()) conn->service();
  service();
}
}  // namespace ktls::carrier::internal
