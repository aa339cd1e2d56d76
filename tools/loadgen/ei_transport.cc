#include "tools/loadgen/ei_transport.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace ktls::loadgen {

namespace {

// The context is fd + 1, so that descriptor 0 is not a null pointer.
int fd_of(void* ctx) { return static_cast<int>(reinterpret_cast<intptr_t>(ctx)) - 1; }
void* ctx_of(int fd) { return reinterpret_cast<void*>(static_cast<intptr_t>(fd) + 1); }

// Waits for `events` on fd. 0 when ready, ETIMEDOUT, or an errno.
int wait_for(int fd, short events, unsigned tmo) {
  pollfd p{fd, events, 0};
  int ms = tmo == EI_SCLBK_INF_TMO ? -1 : static_cast<int>(tmo);
  for (;;) {
    int r = poll(&p, 1, ms);
    if (r > 0) return 0;  // errors and hang-ups are left to the call that follows
    if (r == 0) return ETIMEDOUT;
    if (errno != EINTR) return errno;
  }
}

// Waits, then runs `io` (a non-blocking call); again while it says EAGAIN.
template <class Io>
int retry(int fd, short events, unsigned tmo, ssize_t* len, Io io) {
  for (;;) {
    if (int err = wait_for(fd, events, tmo)) return err;
    ssize_t n = io();
    if (n >= 0) {
      *len = n;
      return 0;
    }
    if (errno != EAGAIN && errno != EINTR) return errno;
  }
}

int cb_socket(void** ctx, void* /*setup_ctx*/) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  *ctx = ctx_of(fd);
  return 0;
}

int cb_close(void* ctx) { return close(fd_of(ctx)) == 0 ? 0 : errno; }

int cb_listen(void* /*ctx*/, void* /*addr*/, int* /*len*/, int /*backlog*/) { return EOPNOTSUPP; }

int cb_accept(void** /*ctx*/, void* /*addr*/, int* /*len*/, unsigned /*tmo*/) { return EOPNOTSUPP; }

int cb_connect(void* ctx, void* addr, int len, unsigned tmo) {
  int fd = fd_of(ctx);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  int err = 0;
  if (connect(fd, static_cast<sockaddr*>(addr), static_cast<socklen_t>(len)) < 0) {
    err = errno;
    if (err == EINPROGRESS) {
      err = wait_for(fd, POLLOUT, tmo);
      if (err == 0) {
        socklen_t sl = sizeof err;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) err = errno;
      }
    }
  }
  if (fcntl(fd, F_SETFL, flags) < 0 && err == 0) err = errno;
  return err;
}

int cb_writev(void* ctx, const void* iov, int iovcnt, ssize_t* len, unsigned tmo) {
  int fd = fd_of(ctx);
  msghdr m{};
  m.msg_iov = static_cast<iovec*>(const_cast<void*>(iov));
  m.msg_iovlen = static_cast<size_t>(iovcnt);
  return retry(fd, POLLOUT, tmo, len, [&] { return sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT); });
}

int cb_write(void* ctx, const char* buf, ssize_t* len, unsigned tmo) {
  int fd = fd_of(ctx);
  size_t want = static_cast<size_t>(*len);
  return retry(fd, POLLOUT, tmo, len,
               [&] { return send(fd, buf, want, MSG_NOSIGNAL | MSG_DONTWAIT); });
}

int cb_read(void* ctx, char* buf, ssize_t* len, unsigned tmo) {
  int fd = fd_of(ctx);
  size_t want = static_cast<size_t>(*len);
  return retry(fd, POLLIN, tmo, len, [&] { return recv(fd, buf, want, MSG_DONTWAIT); });
}

int cb_header_size(void* /*ctx*/, int* sz) {
  *sz = 2;  // plain TCP distribution
  return 0;
}

int cb_get_fd(void* ctx, int* fd) {
  *fd = fd_of(ctx);
  return 0;
}

ei_socket_callbacks plain_tcp = {
    EI_SCLBK_FLG_FULL_IMPL,
    cb_socket,
    cb_close,
    cb_listen,
    cb_accept,
    cb_connect,
    cb_writev,
    cb_write,
    cb_read,
    cb_header_size,
    nullptr,
    nullptr,
    cb_get_fd,
};

}  // namespace

ei_socket_callbacks* plain_tcp_callbacks() { return &plain_tcp; }

}  // namespace ktls::loadgen
