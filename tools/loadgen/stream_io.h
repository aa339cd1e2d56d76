// The one seam between a simulated node and its socket: non-blocking reads
// and writes of a connection's byte stream, through OpenSSL when the
// connection has a TLS session, straight on the socket otherwise. The TLS
// handshake callbacks (ei_transport.cc) and the swarm's epoll loop both use
// it.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <string>

namespace ktls::loadgen {

struct IoStatus {
  enum class Kind : uint8_t {
    kDone,       // n bytes moved (n > 0)
    kWantRead,   // try again once the socket is readable
    kWantWrite,  // try again once the socket is writable
    kClosed,     // the peer closed the stream (EOF, or TLS close_notify)
    kError,      // err (an errno, 0 for a TLS protocol error) and what
  };
  Kind kind = Kind::kDone;
  size_t n = 0;
  int err = 0;
  std::string what;  // for kError: "recv: Connection reset by peer", OpenSSL's reason, ...
};

// Reads up to len bytes. `ssl` is the connection's TLS session or null;
// the socket must be non-blocking.
IoStatus stream_read(int fd, SSL* ssl, char* buf, size_t len);

// Writes up to len bytes (a TLS session must be in SSL_MODE_ENABLE_PARTIAL_WRITE
// and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER; a write retried after kWant* must
// offer at least the bytes offered before, starting at the same byte).
IoStatus stream_write(int fd, SSL* ssl, const char* buf, size_t len);

// OpenSSL's error queue of this thread as text, emptied.
std::string openssl_error_text();

}  // namespace ktls::loadgen
