// erl_interface socket callbacks for the handshake: plain TCP whose timeouts
// use poll(), because ei's own callbacks wait with select(), which cannot
// watch a descriptor above FD_SETSIZE (1024); a swarm of 10,000 connections
// has descriptors far above that. With TLS (inet_tls_dist's wire format:
// TLS first, then the dist handshake inside it with 4-byte packet lengths)
// the connect callback also runs the TLS handshake.
#pragma once

#include <ei.h>
#include <openssl/ssl.h>

#include <string>

namespace ktls::loadgen {

// Callbacks for ei_connect_xinit_ussi(). The socket context is the
// descriptor itself (no allocation per socket); sockets are blocking, as
// EI_SCLBK_FLG_FULL_IMPL requires between calls, and TCP_NODELAY.
ei_socket_callbacks* plain_tcp_callbacks();

// Callbacks for TLS: the setup context given to ei_connect_xinit_ussi() is
// the SSL_CTX (client side; it must outlive every connection made with it).
// The socket context owns the descriptor and its SSL session, both freed
// by the close callback (ei_close_connection). Sockets are non-blocking.
// The target's certificate, when verified, must name the address
// connected to (an IP subjectAltName, as ./ktls certs makes).
ei_socket_callbacks* tls_callbacks();

// The TLS session of a connection ei made with tls_callbacks(), by its
// descriptor, or null. Any thread; valid until the connection is closed.
SSL* tls_session_of(int fd);

// Why the last TLS handshake of this thread failed (OpenSSL's reasons).
std::string last_tls_error();

}  // namespace ktls::loadgen
