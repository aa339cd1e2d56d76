// The TLS record layer of one connection in user space (OpenSSL over
// memory BIOs: the carrier owns the socket and its buffers, OpenSSL never
// touches a descriptor), and the traffic keys a kernel needs to take the
// record layer over (kTLS).
//
// After the handshake the session hands its traffic keys to the kernel
// (kTLS) or to RecordCipher (record_layer.h); OpenSSL's own record layer
// carries only the handshake.
//
// A TlsSession is used by one thread at a time. A TlsContext is immutable
// after create() and shared by every session of a listener or connector.
#pragma once

#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "carrier/result.h"

namespace ktls::carrier {

// What inet_tls_dist's -ssl_dist_optfile says for one side, in OpenSSL terms.
struct TlsOptions {
  std::string certfile, keyfile, cacertfile;
  // Verify the peer's certificate against cacertfile (ssl's verify_peer);
  // on a server, also require one (fail_if_no_peer_cert): mutual TLS.
  bool verify_peer = true;
  bool fail_if_no_peer_cert = true;
  int depth = 10;
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  std::string ciphers;       // TLS 1.2 cipher list; empty: kDefaultTls12Ciphers
  std::string ciphersuites;  // TLS 1.3 suites; empty: OpenSSL's default
  // TLS 1.3 session resumption between ktls_filter nodes (ssl's
  // session_tickets): a server sends one ticket after each handshake, a
  // client keeps the last ticket per peer address and offers it on its next
  // connection there (no certificate exchange, signature or chain check).
  bool session_tickets = true;
};

// The TLS 1.2 suites offered and accepted without a `ciphers` option:
// ECDHE/DHE with AES-GCM or ChaCha20-Poly1305 (AEAD only; TLS 1.3's
// default suites are all AEAD).
inline constexpr const char* kDefaultTls12Ciphers =
    "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!DSS:!aNULL";

// The ALPN protocol a ktls_filter client offers and a ktls_filter server
// with session tickets selects: it tells the client that exactly one
// ticket follows the handshake (a stock peer selects none, and the client
// does not wait for a ticket).
inline constexpr std::string_view kTicketAlpn = "ktls-dist/1";

// An SSL_CTX for one side. With session tickets (TLS 1.3 only), a server
// sends one ticket after the handshake, before any application data, and a
// client reads it through OpenSSL before the record layer leaves OpenSSL
// (so the sequence numbers at hand-over count it); the client keeps one
// ticket per peer address (single use: the resumed handshake brings the
// next one). The tickets are stateful: the server keeps the session under
// the ticket's id (single use too), so resuming decodes nothing.
class TlsContext {
 public:
  static Result<std::shared_ptr<TlsContext>> create(const TlsOptions& options, bool server);
  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  SSL_CTX* get() const { return ctx_; }
  bool server() const { return server_; }
  bool session_tickets() const { return tickets_; }

  // The session kept under `key` (taken out: single use), or null; the
  // caller frees it. Stores a new one (the context owns it after). A
  // client's key is the peer address, a server's the session id.
  SSL_SESSION* take_session(const std::string& key);
  void keep_session(const std::string& key, SSL_SESSION* session);
  bool has_session(const std::string& key);

 private:
  TlsContext(SSL_CTX* ctx, bool server) : ctx_(ctx), server_(server) {}
  SSL_CTX* ctx_;
  bool server_;
  bool tickets_ = false;
  // Sessions kept: a client's peers with a ticket, a server's tickets out.
  static constexpr size_t kMaxSessions = 4096;
  std::mutex mu_;
  std::unordered_map<std::string, SSL_SESSION*> sessions_;
};

// One direction's keys as a kernel takes them (struct tls12_crypto_info_*):
// for AES-GCM `salt` is the implicit nonce (4 bytes) and `iv` the rest
// (8 bytes); for ChaCha20-Poly1305 `iv` is the whole 12-byte nonce.
// `seq` is the sequence number of the next record under these keys.
struct TrafficKeys {
  int version = 0;     // TLS1_2_VERSION | TLS1_3_VERSION
  std::string cipher;  // "AES-128-GCM" | "AES-256-GCM" | "CHACHA20-POLY1305"
  std::vector<uint8_t> key, iv, salt;
  uint64_t seq = 0;
  // TLS 1.3: the traffic secret these keys come from and its hash, for
  // KeyUpdate (next_traffic_keys).
  std::vector<uint8_t> secret;
  std::string digest;
};

// TLS 1.3 KeyUpdate: the keys of the next generation (RFC 8446 7.2), with
// sequence number 0.
Result<TrafficKeys> next_traffic_keys(const TrafficKeys& keys);

class TlsSession {
 public:
  // `peer` (a client's peer address) keys the ticket cache; empty: none.
  static Result<std::unique_ptr<TlsSession>> create(std::shared_ptr<TlsContext> context,
                                                    std::string peer = {});
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Bytes received from the peer (records, possibly cut anywhere).
  void put_ciphertext(std::span<const uint8_t> bytes);
  // Bytes to send to the peer (handshake records, encrypted data, alerts),
  // appended to `out`; returns how many.
  size_t take_ciphertext(std::vector<uint8_t>& out);

  // Drives the handshake with what was put; true once it is complete. An
  // error names what failed (certificate, protocol version, alert...).
  Result<bool> handshake();
  bool handshake_done() const { return done_; }
  // A client whose handshake is done but whose server (a ktls_filter node,
  // by ALPN) still owes the session ticket: put() the next record, then
  // read_ticket().
  bool awaiting_ticket() const;
  // Processes what was put: true once the ticket arrived; an error when
  // the server sent application data or anything else instead.
  Result<bool> read_ticket();
  // Whether this handshake resumed an earlier session (no certificates
  // were exchanged: the peer's certificate is the one of that session).
  bool resumed() const;
  // A client that offers a ticket kept under its key (it may resume).
  bool offers_ticket() const { return offers_ticket_; }

  // Encrypts `plain` into records (take_ciphertext() has them).
  Result<void> encrypt(std::span<const uint8_t> plain);
  // Decrypts every whole record put so far, appending the plaintext to
  // `out`; returns how many bytes. A closed session (close_notify or an
  // alert from the peer) is an error that says so.
  Result<size_t> decrypt(std::vector<uint8_t>& out);

  // TLS 1.3: sends a KeyUpdate with the next encrypt() (asking the peer
  // for one in return when `request`).
  Result<void> key_update(bool request);
  // Queues a close_notify alert (take_ciphertext() has it).
  void close_notify();

  // After the handshake: the keys of this side's sending (`tx`) or
  // receiving direction, with the sequence number of the next record.
  Result<TrafficKeys> traffic_keys(bool tx) const;

  std::string version() const;           // "TLSv1.3"
  std::string cipher() const;            // OpenSSL's name of the negotiated suite
  std::string peer_subject() const;      // one line; empty without a certificate
  std::string peer_certificate() const;  // DER; empty without a certificate

  // OpenSSL callbacks (TlsContext installs them): traffic secrets from the
  // key log; record headers, to count records after the handshake.
  static void keylog(const SSL* ssl, const char* line);
  static void on_record(int write_p, int version, int content_type, const void* buf, size_t len,
                        SSL* ssl, void* arg);
  static int on_new_session(SSL* ssl, SSL_SESSION* session);
  // Server: the session behind each ticket sent, and its look-up when a
  // client offers the ticket.
  static int on_server_new_session(SSL* ssl, SSL_SESSION* session);
  static SSL_SESSION* on_server_get_session(SSL* ssl, const unsigned char* id, int len, int* copy);

 private:
  explicit TlsSession(std::shared_ptr<TlsContext> context);
  Error ssl_error(const char* op, int ret) const;

  std::shared_ptr<TlsContext> context_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // network -> OpenSSL (owned by ssl_)
  BIO* out_ = nullptr;  // OpenSSL -> network (owned by ssl_)
  bool done_ = false;
  // From the keylog callback: TLS 1.3 application traffic secrets, TLS 1.2
  // master secret.
  std::vector<uint8_t> client_secret_, server_secret_, master_secret_;
  // Records sent and received after this side's / the peer's Finished
  // message (under the application keys: the sequence numbers a kernel
  // would continue with; TLS 1.2 adds the Finished record itself).
  uint64_t tx_records_ = 0, rx_records_ = 0;
  bool tx_finished_ = false, rx_finished_ = false;
  std::string peer_;            // client: the ticket cache's key
  bool got_ticket_ = false;     // client: the server's ticket arrived
  bool offers_ticket_ = false;  // client: a kept ticket is offered
};

// The kernel's crypto_info for setsockopt(SOL_TLS, TLS_TX | TLS_RX) from
// `keys`; an error for a cipher the kernel interface has no layout for.
Result<std::vector<uint8_t>> ktls_crypto_info(const TrafficKeys& keys);

// Why this kernel cannot take TLS on a TCP socket (TCP_ULP "tls" on a
// connected loopback socket; the kernel loads tls.ko on demand where it
// has it), or empty when it can, or when the probe itself could not run
// (no loopback): then each connection finds out.
std::string kernel_tls_unavailable();

}  // namespace ktls::carrier
