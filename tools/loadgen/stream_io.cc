#include "tools/loadgen/stream_io.h"

#include <openssl/err.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace ktls::loadgen {

namespace {

IoStatus done(size_t n) {
  IoStatus s;
  s.n = n;
  return s;
}

IoStatus status(IoStatus::Kind kind) {
  IoStatus s;
  s.kind = kind;
  return s;
}

IoStatus failed(int err, std::string what) {
  IoStatus s;
  s.kind = IoStatus::Kind::kError;
  s.err = err;
  s.what = std::move(what);
  return s;
}

// A plain socket call's result (n bytes or -1 with errno).
IoStatus from_socket(ssize_t n, const char* op, IoStatus::Kind again) {
  if (n > 0) return done(static_cast<size_t>(n));
  if (n == 0) return status(IoStatus::Kind::kClosed);
  if (errno == EAGAIN || errno == EINTR) return status(again);
  return failed(errno, std::string(op) + ": " + std::strerror(errno));
}

// An SSL_read/SSL_write result. After a fatal error the session must not
// send close_notify: quiet shutdown makes the later SSL_shutdown a no-op.
IoStatus from_tls(SSL* ssl, int r, const char* op) {
  if (r > 0) return done(static_cast<size_t>(r));
  int saved_errno = errno;
  switch (SSL_get_error(ssl, r)) {
    case SSL_ERROR_WANT_READ:
      return status(IoStatus::Kind::kWantRead);
    case SSL_ERROR_WANT_WRITE:
      return status(IoStatus::Kind::kWantWrite);
    case SSL_ERROR_ZERO_RETURN:
      return status(IoStatus::Kind::kClosed);
    case SSL_ERROR_SYSCALL:
      SSL_set_quiet_shutdown(ssl, 1);
      ERR_clear_error();
      // EOF without close_notify: how OTP's ssl and the carrier close.
      if (saved_errno == 0) return status(IoStatus::Kind::kClosed);
      return failed(saved_errno, std::string(op) + ": " + std::strerror(saved_errno));
    default:
      SSL_set_quiet_shutdown(ssl, 1);
      return failed(0, std::string(op) + ": " + openssl_error_text());
  }
}

}  // namespace

IoStatus stream_read(int fd, SSL* ssl, char* buf, size_t len) {
  if (ssl == nullptr) {
    return from_socket(recv(fd, buf, len, MSG_DONTWAIT), "recv", IoStatus::Kind::kWantRead);
  }
  ERR_clear_error();
  errno = 0;
  int want = len > 1u << 30 ? 1 << 30 : static_cast<int>(len);
  return from_tls(ssl, SSL_read(ssl, buf, want), "SSL_read");
}

IoStatus stream_write(int fd, SSL* ssl, const char* buf, size_t len) {
  if (ssl == nullptr) {
    return from_socket(send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT), "send",
                       IoStatus::Kind::kWantWrite);
  }
  ERR_clear_error();
  errno = 0;
  int want = len > 1u << 30 ? 1 << 30 : static_cast<int>(len);
  return from_tls(ssl, SSL_write(ssl, buf, want), "SSL_write");
}

std::string openssl_error_text() {
  std::string out;
  char buf[256];
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error" : out;
}

}  // namespace ktls::loadgen
