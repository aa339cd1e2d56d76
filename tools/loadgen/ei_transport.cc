#include "tools/loadgen/ei_transport.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "tools/loadgen/stream_io.h"

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

// Connects a non-blocking socket, waiting at most tmo. 0 or an errno.
int connect_nonblocking(int fd, void* addr, int len, unsigned tmo) {
  if (connect(fd, static_cast<sockaddr*>(addr), static_cast<socklen_t>(len)) == 0) return 0;
  int err = errno;
  if (err != EINPROGRESS) return err;
  err = wait_for(fd, POLLOUT, tmo);
  if (err == 0) {
    socklen_t sl = sizeof err;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0) err = errno;
  }
  return err;
}

int cb_connect(void* ctx, void* addr, int len, unsigned tmo) {
  int fd = fd_of(ctx);
  int flags = fcntl(fd, F_GETFL);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) return errno;
  int err = connect_nonblocking(fd, addr, len, tmo);
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

// -- TLS ----------------------------------------------------------------------

// The socket context of a TLS connection.
struct TlsSocket {
  int fd = -1;
  SSL* ssl = nullptr;
  ~TlsSocket() {
    if (ssl != nullptr) {
      SSL_shutdown(ssl);  // one close_notify if the session is healthy; never waits
      SSL_free(ssl);
      ERR_clear_error();
    }
    if (fd >= 0) close(fd);
  }
};

TlsSocket* tls_of(void* ctx) { return static_cast<TlsSocket*>(ctx); }

// Sessions by descriptor, for the swarm to find after ei's handshake.
std::mutex registry_mu;
std::unordered_map<int, SSL*> registry;
thread_local std::string tls_error_text;

// Runs `op` (a non-blocking stream or handshake step) until it is done,
// waiting for what it wants, at most tmo per wait. 0 or an errno (EPROTO
// for a TLS error, its text in tls_error_text).
template <class Op>
int tls_retry(int fd, unsigned tmo, Op op) {
  for (;;) {
    IoStatus st = op();
    switch (st.kind) {
      case IoStatus::Kind::kDone:
        return 0;
      case IoStatus::Kind::kWantRead:
      case IoStatus::Kind::kWantWrite: {
        short ev = st.kind == IoStatus::Kind::kWantRead ? POLLIN : POLLOUT;
        if (int err = wait_for(fd, ev, tmo)) return err;
        break;
      }
      case IoStatus::Kind::kClosed:
        return ECONNRESET;
      case IoStatus::Kind::kError:
        tls_error_text = st.what;
        return st.err != 0 ? st.err : EPROTO;
    }
  }
}

int tls_socket(void** ctx, void* setup_ctx) {
  auto sock = std::make_unique<TlsSocket>();
  sock->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock->fd < 0) return errno;
  int one = 1;
  setsockopt(sock->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  ERR_clear_error();
  sock->ssl = SSL_new(static_cast<SSL_CTX*>(setup_ctx));
  if (sock->ssl == nullptr || SSL_set_fd(sock->ssl, sock->fd) != 1) {
    tls_error_text = "SSL_new: " + openssl_error_text();
    return ENOMEM;
  }
  // Partial, moving writes: the swarm's send queue grows and moves while a
  // write waits. Idle sessions give their record buffers back.
  SSL_set_mode(sock->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
  *ctx = sock.release();  // owned by ei until tls_close
  return 0;
}

int tls_close(void* ctx) {
  std::unique_ptr<TlsSocket> sock(tls_of(ctx));
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry.find(sock->fd);
  if (it != registry.end() && it->second == sock->ssl) registry.erase(it);
  return 0;  // the descriptor closes with sock, after it left the registry
}

int tls_connect(void* ctx, void* addr, int len, unsigned tmo) {
  TlsSocket* sock = tls_of(ctx);
  if (int err = connect_nonblocking(sock->fd, addr, len, tmo)) return err;
  if (SSL_get_verify_mode(sock->ssl) & SSL_VERIFY_PEER) {
    char ip[INET_ADDRSTRLEN];
    const auto* sin = static_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof ip);
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(sock->ssl), ip);
  }
  int err = tls_retry(sock->fd, tmo, [&] {
    ERR_clear_error();
    int r = SSL_connect(sock->ssl);
    if (r == 1) return IoStatus{};
    IoStatus st;
    switch (SSL_get_error(sock->ssl, r)) {
      case SSL_ERROR_WANT_READ:
        st.kind = IoStatus::Kind::kWantRead;
        break;
      case SSL_ERROR_WANT_WRITE:
        st.kind = IoStatus::Kind::kWantWrite;
        break;
      default:
        SSL_set_quiet_shutdown(sock->ssl, 1);
        st.kind = IoStatus::Kind::kError;
        st.what = "TLS handshake: " + openssl_error_text();
        if (long v = SSL_get_verify_result(sock->ssl); v != X509_V_OK) {
          st.what += std::string(" (certificate: ") + X509_verify_cert_error_string(v) + ")";
        }
    }
    return st;
  });
  if (err != 0) return err;
  std::lock_guard<std::mutex> lock(registry_mu);
  registry[sock->fd] = sock->ssl;
  return 0;
}

int tls_writev(void* ctx, const void* iov, int iovcnt, ssize_t* len, unsigned tmo) {
  TlsSocket* sock = tls_of(ctx);
  // Deliberate copy: only ei's own sends come here (not the swarm's), rarely.
  std::string buf;
  const auto* v = static_cast<const iovec*>(iov);
  for (int i = 0; i < iovcnt; ++i)
    buf.append(static_cast<const char*>(v[i].iov_base), v[i].iov_len);
  size_t off = 0;
  while (off < buf.size()) {
    size_t n = 0;
    int err = tls_retry(sock->fd, tmo, [&] {
      IoStatus st = stream_write(sock->fd, sock->ssl, buf.data() + off, buf.size() - off);
      n = st.n;
      return st;
    });
    if (err != 0) return err;
    off += n;
  }
  *len = static_cast<ssize_t>(off);
  return 0;
}

int tls_write(void* ctx, const char* buf, ssize_t* len, unsigned tmo) {
  TlsSocket* sock = tls_of(ctx);
  size_t n = 0;
  int err = tls_retry(sock->fd, tmo, [&] {
    IoStatus st = stream_write(sock->fd, sock->ssl, buf, static_cast<size_t>(*len));
    n = st.n;
    return st;
  });
  if (err == 0) *len = static_cast<ssize_t>(n);
  return err;
}

int tls_read(void* ctx, char* buf, ssize_t* len, unsigned tmo) {
  TlsSocket* sock = tls_of(ctx);
  size_t n = 0;
  int err = tls_retry(sock->fd, tmo, [&] {
    IoStatus st = stream_read(sock->fd, sock->ssl, buf, static_cast<size_t>(*len));
    n = st.n;
    return st;
  });
  if (err == 0) *len = static_cast<ssize_t>(n);
  return err;
}

int tls_header_size(void* /*ctx*/, int* sz) {
  *sz = 4;  // inet_tls_dist: {packet, 4} during the dist handshake too
  return 0;
}

int tls_get_fd(void* ctx, int* fd) {
  *fd = tls_of(ctx)->fd;
  return 0;
}

ei_socket_callbacks tls = {
    EI_SCLBK_FLG_FULL_IMPL,
    tls_socket,
    tls_close,
    cb_listen,
    cb_accept,
    tls_connect,
    tls_writev,
    tls_write,
    tls_read,
    tls_header_size,
    nullptr,
    nullptr,
    tls_get_fd,
};

}  // namespace

ei_socket_callbacks* plain_tcp_callbacks() { return &plain_tcp; }

ei_socket_callbacks* tls_callbacks() { return &tls; }

SSL* tls_session_of(int fd) {
  std::lock_guard<std::mutex> lock(registry_mu);
  auto it = registry.find(fd);
  return it == registry.end() ? nullptr : it->second;
}

std::string last_tls_error() { return tls_error_text; }

}  // namespace ktls::loadgen
