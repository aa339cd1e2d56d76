#include "carrier/tls_session.h"

#include <arpa/inet.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>
#include <sys/socket.h>

#include <cstring>

#include "carrier/fd.h"
#include "carrier/record_layer.h"

namespace ktls::carrier {
namespace {

// OpenSSL's error queue as text (and emptied), for an Error's `what`.
std::string openssl_errors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error" : out;
}

Error tls_error(const std::string& op) { return Error::message(op + ": " + openssl_errors()); }

std::vector<uint8_t> from_hex(std::string_view hex) {
  std::vector<uint8_t> out;
  auto nib = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    int hi = nib(hex[i]), lo = nib(hex[i + 1]);
    if (hi < 0 || lo < 0) return {};
    out.push_back(static_cast<uint8_t>(hi << 4 | lo));
  }
  return out;
}

// `length` bytes from OpenSSL's KDF `name` with `params`; `what` names it
// in an error.
Result<std::vector<uint8_t>> derive(const char* name, const OSSL_PARAM* params, size_t length,
                                    const std::string& what) {
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, name, nullptr);
  if (!kdf) return tls_error(std::string("EVP_KDF_fetch ") + name);
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (!ctx) return tls_error("EVP_KDF_CTX_new");
  std::vector<uint8_t> out(length);
  const int ok = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (ok <= 0) return tls_error(what);
  return out;
}

OSSL_PARAM digest_param(const EVP_MD* md) {
  return OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
                                          const_cast<char*>(EVP_MD_get0_name(md)), 0);
}

// HKDF-Expand-Label(secret, label, "", length) of TLS 1.3 (RFC 8446 7.1).
Result<std::vector<uint8_t>> expand_label(const EVP_MD* md, const std::vector<uint8_t>& secret,
                                          std::string_view label, size_t length) {
  std::vector<uint8_t> info = {static_cast<uint8_t>(length >> 8), static_cast<uint8_t>(length)};
  const std::string full = "tls13 " + std::string(label);
  info.push_back(static_cast<uint8_t>(full.size()));
  info.insert(info.end(), full.begin(), full.end());
  info.push_back(0);  // empty context
  int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode), digest_param(md),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()),
                                        secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info.data(), info.size()),
      OSSL_PARAM_construct_end()};
  return derive("HKDF", params, length, "HKDF-Expand-Label " + std::string(label));
}

// The TLS 1.2 key block (RFC 5246 6.3) of `length` bytes.
Result<std::vector<uint8_t>> key_block(const EVP_MD* md, const std::vector<uint8_t>& master,
                                       const uint8_t* server_random, const uint8_t* client_random,
                                       size_t length) {
  const std::string_view label = "key expansion";
  std::vector<uint8_t> seed(label.begin(), label.end());
  seed.insert(seed.end(), server_random, server_random + SSL3_RANDOM_SIZE);
  seed.insert(seed.end(), client_random, client_random + SSL3_RANDOM_SIZE);
  const OSSL_PARAM params[] = {
      digest_param(md),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, const_cast<uint8_t*>(master.data()),
                                        master.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed.data(), seed.size()),
      OSSL_PARAM_construct_end()};
  return derive("TLS1-PRF", params, length, "TLS 1.2 key block");
}

// TLS 1.3 key and IV of k.secret (RFC 8446 7.3), in the kernel's layout.
Result<void> tls13_keys(const EVP_MD* md, size_t key_len, TrafficKeys& k) {
  auto key = expand_label(md, k.secret, "key", key_len);
  if (!key) return key.error();
  auto iv = expand_label(md, k.secret, "iv", 12);
  if (!iv) return iv.error();
  k.key = key.take();
  const std::vector<uint8_t>& v = iv.value();
  if (k.cipher == "CHACHA20-POLY1305") {
    k.iv = v;
    k.salt.clear();
  } else {
    k.salt.assign(v.begin(), v.begin() + 4);
    k.iv.assign(v.begin() + 4, v.end());
  }
  return {};
}

}  // namespace

Result<TrafficKeys> next_traffic_keys(const TrafficKeys& keys) {
  if (keys.version != TLS1_3_VERSION || keys.secret.empty()) {
    return Error::message("KeyUpdate: only TLS 1.3 keys can be updated");
  }
  const EVP_MD* md = EVP_get_digestbyname(keys.digest.c_str());
  if (!md) return Error::message("KeyUpdate: unknown digest " + keys.digest);
  auto secret = expand_label(md, keys.secret, "traffic upd", keys.secret.size());
  if (!secret) return secret.error();
  TrafficKeys k;
  k.version = keys.version;
  k.cipher = keys.cipher;
  k.digest = keys.digest;
  k.secret = secret.take();
  k.seq = 0;
  auto ok = tls13_keys(md, keys.key.size(), k);
  if (!ok) return ok.error();
  return k;
}

// -- TlsContext ---------------------------------------------------------------

Result<std::shared_ptr<TlsContext>> TlsContext::create(const TlsOptions& o, bool server) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) return tls_error("SSL_CTX_new");
  std::shared_ptr<TlsContext> c(new TlsContext(ctx, server));
  if (!SSL_CTX_set_min_proto_version(ctx, o.min_version) ||
      !SSL_CTX_set_max_proto_version(ctx, o.max_version)) {
    return tls_error("TLS protocol versions");
  }
  if (!o.certfile.empty() && SSL_CTX_use_certificate_chain_file(ctx, o.certfile.c_str()) != 1) {
    return tls_error("certfile " + o.certfile);
  }
  const std::string& key = o.keyfile.empty() ? o.certfile : o.keyfile;
  if (!key.empty() && SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return tls_error("keyfile " + key);
  }
  if (!o.certfile.empty() && SSL_CTX_check_private_key(ctx) != 1) {
    return tls_error("certfile " + o.certfile + " and its key");
  }
  if (!o.cacertfile.empty() &&
      SSL_CTX_load_verify_locations(ctx, o.cacertfile.c_str(), nullptr) != 1) {
    return tls_error("cacertfile " + o.cacertfile);
  }
  // TLS 1.2: AEAD suites only by default, the ones the record layer (and
  // the kernel) can carry; OpenSSL's default list has CBC suites too, which
  // a peer could pick and the connection then could not use.
  const std::string& ciphers = o.ciphers.empty() ? std::string(kDefaultTls12Ciphers) : o.ciphers;
  if (SSL_CTX_set_cipher_list(ctx, ciphers.c_str()) != 1) {
    return tls_error("ciphers " + ciphers);
  }
  if (!o.ciphersuites.empty() && SSL_CTX_set_ciphersuites(ctx, o.ciphersuites.c_str()) != 1) {
    return tls_error("ciphersuites " + o.ciphersuites);
  }
  int mode = SSL_VERIFY_NONE;
  if (o.verify_peer) {
    mode = SSL_VERIFY_PEER;
    if (server && o.fail_if_no_peer_cert) mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  }
  SSL_CTX_set_verify(ctx, mode, nullptr);
  SSL_CTX_set_verify_depth(ctx, o.depth);
  // Tickets only where a session can resume: TLS 1.3 allowed.
  c->tickets_ = o.session_tickets && o.max_version >= TLS1_3_VERSION;
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  if (!c->tickets_) {
    SSL_CTX_set_num_tickets(ctx, 0);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  } else if (server) {
    // One ticket per handshake, so that the client knows how many to read.
    // Stateful (SSL_OP_NO_TICKET: the ticket is a session id, the session
    // stays here): a stateless ticket costs the server an encoded session
    // sealed on the way out and decoded twice (OpenSSL copies the session
    // through DER to make it, and decodes it again to resume), the peer's
    // certificate parsed each time; that was about half the server's CPU
    // of a resumed handshake. The sessions are kept in this context
    // (on_server_new_session), TLS 1.3 only, single use, bounded.
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, &TlsSession::on_server_new_session);
    SSL_CTX_sess_set_get_cb(ctx, &TlsSession::on_server_get_session);
    // A server that verifies its peers resumes only sessions of its own
    // context (OpenSSL refuses the ticket without a session id context).
    static constexpr unsigned char kSid[] = "ktls_filter";
    SSL_CTX_set_session_id_context(ctx, kSid, sizeof kSid - 1);
    SSL_CTX_set_alpn_select_cb(
        ctx,
        [](SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
           unsigned int inlen, void*) -> int {
          for (unsigned int i = 0; i < inlen; i += 1u + in[i]) {
            const std::string_view p(reinterpret_cast<const char*>(in + i + 1),
                                     i + 1u + in[i] <= inlen ? in[i] : 0);
            if (p == kTicketAlpn) {
              *out = in + i + 1;
              *outlen = in[i];
              return SSL_TLSEXT_ERR_OK;
            }
          }
          return SSL_TLSEXT_ERR_NOACK;  // a stock client: no ALPN, no change
        },
        nullptr);
  } else {
    // The new-session callback keeps the tickets (OpenSSL's own cache is
    // for servers).
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, &TlsSession::on_new_session);
  }
  SSL_CTX_set_keylog_callback(ctx, &TlsSession::keylog);
  return c;
}

TlsContext::~TlsContext() {
  for (auto& [peer, s] : sessions_) SSL_SESSION_free(s);
  SSL_CTX_free(ctx_);
}

SSL_SESSION* TlsContext::take_session(const std::string& key) {
  std::lock_guard lock(mu_);
  auto it = sessions_.find(key);
  if (it == sessions_.end()) return nullptr;
  SSL_SESSION* s = it->second;
  sessions_.erase(it);
  return s;
}

bool TlsContext::has_session(const std::string& key) {
  std::lock_guard lock(mu_);
  return sessions_.count(key) > 0;
}

void TlsContext::keep_session(const std::string& key, SSL_SESSION* session) {
  std::lock_guard lock(mu_);
  auto [it, fresh] = sessions_.try_emplace(key, session);
  if (!fresh) {
    SSL_SESSION_free(it->second);
    it->second = session;
  } else if (sessions_.size() > kMaxSessions) {
    // Bounded: one other session goes (it only costs its peer a full
    // handshake).
    auto victim = sessions_.begin() == it ? std::next(sessions_.begin()) : sessions_.begin();
    SSL_SESSION_free(victim->second);
    sessions_.erase(victim);
  }
}

// -- TlsSession ---------------------------------------------------------------

// Counts the records of each direction after that direction's Finished
// message (the 5-byte record headers OpenSSL reports to the message
// callback; a record's header is reported before the messages in it). A
// server's session ticket is written after its Finished and before its
// handshake call returns: it counts.
void TlsSession::on_record(int write_p, int, int content_type, const void* buf, size_t len, SSL*,
                           void* arg) {
  auto* s = static_cast<TlsSession*>(arg);
  bool& finished = write_p ? s->tx_finished_ : s->rx_finished_;
  if (content_type == SSL3_RT_HANDSHAKE && len > 0 &&
      static_cast<const uint8_t*>(buf)[0] == SSL3_MT_FINISHED) {
    finished = true;
  } else if (content_type == SSL3_RT_HEADER && finished) {
    (write_p ? s->tx_records_ : s->rx_records_) += 1;
  }
}

int TlsSession::on_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* s = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  if (!s || s->peer_.empty() || SSL_SESSION_get_protocol_version(session) != TLS1_3_VERSION) {
    if (s) s->got_ticket_ = true;
    return 0;  // not kept: OpenSSL frees it
  }
  s->got_ticket_ = true;
  s->context_->keep_session(s->peer_, session);
  return 1;  // the context owns it now
}

int TlsSession::on_server_new_session(SSL* ssl, SSL_SESSION* session) {
  auto* s = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  // TLS 1.2 sessions are not resumed (their ids find nothing here).
  if (!s || SSL_SESSION_get_protocol_version(session) != TLS1_3_VERSION) return 0;
  unsigned int len = 0;
  const unsigned char* id = SSL_SESSION_get_id(session, &len);
  if (len == 0) return 0;
  s->context_->keep_session(std::string(reinterpret_cast<const char*>(id), len), session);
  return 1;  // the context owns it now
}

SSL_SESSION* TlsSession::on_server_get_session(SSL* ssl, const unsigned char* id, int len,
                                               int* copy) {
  auto* s = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  *copy = 0;  // taken out (single use): OpenSSL gets the context's reference
  if (!s || len <= 0) return nullptr;
  return s->context_->take_session(
      std::string(reinterpret_cast<const char*>(id), static_cast<size_t>(len)));
}

TlsSession::TlsSession(std::shared_ptr<TlsContext> context) : context_(std::move(context)) {}

TlsSession::~TlsSession() {
  // After a finished handshake the record layer goes on without OpenSSL:
  // marked shut down, SSL_free leaves the session resumable (it marks the
  // session of a connection that ends without close_notify as bad, and a
  // client's kept ticket is that session).
  if (ssl_ && done_) SSL_set_shutdown(ssl_, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(ssl_);  // frees both BIOs
}

Result<std::unique_ptr<TlsSession>> TlsSession::create(std::shared_ptr<TlsContext> context,
                                                       std::string peer) {
  ERR_clear_error();
  std::unique_ptr<TlsSession> s(new TlsSession(std::move(context)));
  s->peer_ = std::move(peer);
  s->ssl_ = SSL_new(s->context_->get());
  if (!s->ssl_) return tls_error("SSL_new");
  s->in_ = BIO_new(BIO_s_mem());
  s->out_ = BIO_new(BIO_s_mem());
  if (!s->in_ || !s->out_) {
    BIO_free(s->in_);
    BIO_free(s->out_);
    return tls_error("BIO_new");
  }
  BIO_set_mem_eof_return(s->in_, -1);  // empty: "want read", not end of stream
  SSL_set_bio(s->ssl_, s->in_, s->out_);
  SSL_set_app_data(s->ssl_, s.get());
  SSL_set_msg_callback(s->ssl_, &TlsSession::on_record);
  SSL_set_msg_callback_arg(s->ssl_, s.get());
  if (s->context_->server()) {
    SSL_set_accept_state(s->ssl_);
  } else {
    SSL_set_connect_state(s->ssl_);
    if (s->context_->session_tickets()) {
      std::string alpn(1, static_cast<char>(kTicketAlpn.size()));
      alpn += kTicketAlpn;
      if (SSL_set_alpn_protos(s->ssl_, reinterpret_cast<const unsigned char*>(alpn.data()),
                              static_cast<unsigned>(alpn.size())) != 0) {
        return tls_error("SSL_set_alpn_protos");
      }
      if (!s->peer_.empty()) {
        if (SSL_SESSION* kept = s->context_->take_session(s->peer_)) {
          // An expired ticket is not offered (a full handshake follows).
          if (SSL_SESSION_is_resumable(kept)) {
            s->offers_ticket_ = SSL_set_session(s->ssl_, kept) == 1;
          }
          SSL_SESSION_free(kept);
        }
      }
    }
  }
  return s;
}

bool TlsSession::awaiting_ticket() const {
  if (!done_ || got_ticket_ || context_->server() || !context_->session_tickets() ||
      SSL_version(ssl_) != TLS1_3_VERSION) {
    return false;
  }
  const unsigned char* p = nullptr;
  unsigned int n = 0;
  SSL_get0_alpn_selected(ssl_, &p, &n);
  return std::string_view(reinterpret_cast<const char*>(p), p ? n : 0) == kTicketAlpn;
}

Result<bool> TlsSession::read_ticket() {
  ERR_clear_error();
  uint8_t byte;
  size_t got = 0;
  const int r = SSL_read_ex(ssl_, &byte, 1, &got);
  if (r == 1) {
    return Error::message(
        "TLS: the server (ktls_filter, by ALPN) sent application data before its session ticket");
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ) return got_ticket_;
  const unsigned long err = ERR_peek_last_error();
  const int reason = ERR_GET_REASON(err);
  if (e == SSL_ERROR_SSL && ERR_GET_LIB(err) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET &&
      reason < SSL_AD_REASON_OFFSET + 256) {
    // TLS 1.3: the server checks our certificate after our Finished, and
    // its refusal comes where the ticket would.
    return Error::message("the server sent TLS alert " +
                          alert_name(static_cast<uint8_t>(reason - SSL_AD_REASON_OFFSET)));
  }
  return ssl_error("TLS session ticket", r);
}

bool TlsSession::resumed() const { return SSL_session_reused(ssl_) == 1; }

void TlsSession::keylog(const SSL* ssl, const char* line) {
  auto* s = static_cast<TlsSession*>(SSL_get_app_data(ssl));
  if (!s) return;
  std::string_view l(line);
  const size_t a = l.find(' ');
  const size_t b = a == std::string_view::npos ? a : l.find(' ', a + 1);
  if (b == std::string_view::npos) return;
  const std::string_view label = l.substr(0, a);
  std::vector<uint8_t> secret = from_hex(l.substr(b + 1));
  if (label == "CLIENT_TRAFFIC_SECRET_0") s->client_secret_ = std::move(secret);
  if (label == "SERVER_TRAFFIC_SECRET_0") s->server_secret_ = std::move(secret);
}

Error TlsSession::ssl_error(const char* op, int ret) const {
  const int e = SSL_get_error(ssl_, ret);
  std::string what = std::string(op) + ": ";
  if (e == SSL_ERROR_SSL) {
    what += openssl_errors();
    const long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      what += std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")";
    }
  } else if (e == SSL_ERROR_ZERO_RETURN) {
    what += "the peer closed the TLS session";
  } else {
    what += "SSL error " + std::to_string(e);
  }
  return Error::message(what);
}

void TlsSession::put_ciphertext(std::span<const uint8_t> bytes) {
  if (!bytes.empty()) BIO_write(in_, bytes.data(), static_cast<int>(bytes.size()));
}

size_t TlsSession::take_ciphertext(std::vector<uint8_t>& out) {
  const size_t n = BIO_ctrl_pending(out_);
  if (n == 0) return 0;
  const size_t at = out.size();
  out.resize(at + n);
  const int got = BIO_read(out_, out.data() + at, static_cast<int>(n));
  out.resize(at + (got > 0 ? static_cast<size_t>(got) : 0));
  return got > 0 ? static_cast<size_t>(got) : 0;
}

Result<bool> TlsSession::handshake() {
  if (done_) return true;
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    done_ = true;
    return true;
  }
  const int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  return ssl_error("TLS handshake", r);
}

Result<void> TlsSession::encrypt(std::span<const uint8_t> plain) {
  ERR_clear_error();
  size_t at = 0;
  while (at < plain.size()) {
    size_t written = 0;
    const int r = SSL_write_ex(ssl_, plain.data() + at, plain.size() - at, &written);
    if (r != 1) return ssl_error("TLS write", r);
    at += written;
  }
  return {};
}

Result<size_t> TlsSession::decrypt(std::vector<uint8_t>& out) {
  ERR_clear_error();
  size_t total = 0;
  for (;;) {
    const size_t at = out.size();
    out.resize(at + 16384);
    size_t got = 0;
    const int r = SSL_read_ex(ssl_, out.data() + at, 16384, &got);
    out.resize(at + got);
    total += got;
    if (r == 1) continue;
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ) return total;
    return ssl_error("TLS read", r);
  }
}

Result<void> TlsSession::key_update(bool request) {
  ERR_clear_error();
  if (SSL_key_update(ssl_, request ? SSL_KEY_UPDATE_REQUESTED : SSL_KEY_UPDATE_NOT_REQUESTED) !=
      1) {
    return tls_error("SSL_key_update");
  }
  return {};
}

void TlsSession::close_notify() {
  ERR_clear_error();
  SSL_shutdown(ssl_);
}

Result<TrafficKeys> TlsSession::traffic_keys(bool tx) const {
  if (!done_) return Error::message("traffic keys: the handshake is not complete");
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  TrafficKeys k;
  k.version = SSL_version(ssl_);
  size_t key_len = 0;
  switch (SSL_CIPHER_get_cipher_nid(c)) {
    case NID_aes_128_gcm:
      k.cipher = "AES-128-GCM";
      key_len = 16;
      break;
    case NID_aes_256_gcm:
      k.cipher = "AES-256-GCM";
      key_len = 32;
      break;
    case NID_chacha20_poly1305:
      k.cipher = "CHACHA20-POLY1305";
      key_len = 32;
      break;
    default:
      return Error::message(std::string("traffic keys: no kernel layout for ") +
                            SSL_CIPHER_get_name(c));
  }
  const bool gcm = k.cipher != "CHACHA20-POLY1305";
  const EVP_MD* md = SSL_CIPHER_get_handshake_digest(c);
  // This side's direction: a server sends with the server's keys.
  const bool server_keys = tx == context_->server();
  std::vector<uint8_t> iv;
  if (k.version == TLS1_3_VERSION) {
    const std::vector<uint8_t>& secret = server_keys ? server_secret_ : client_secret_;
    if (secret.empty()) return Error::message("traffic keys: no TLS 1.3 traffic secret");
    k.secret = secret;
    k.digest = EVP_MD_get0_name(md);
    k.seq = tx ? tx_records_ : rx_records_;
    auto ok = tls13_keys(md, key_len, k);
    if (!ok) return ok.error();
    return k;
  }
  if (k.version == TLS1_2_VERSION) {
    SSL_SESSION* sess = SSL_get_session(ssl_);
    std::vector<uint8_t> master(SSL_MAX_MASTER_KEY_LENGTH);
    master.resize(SSL_SESSION_get_master_key(sess, master.data(), master.size()));
    uint8_t client_random[SSL3_RANDOM_SIZE], server_random[SSL3_RANDOM_SIZE];
    SSL_get_client_random(ssl_, client_random, sizeof client_random);
    SSL_get_server_random(ssl_, server_random, sizeof server_random);
    const size_t iv_len = gcm ? 4 : 12;  // AEAD: no MAC keys in the block
    auto block = key_block(md, master, server_random, client_random, 2 * key_len + 2 * iv_len);
    if (!block) return block.error();
    const std::vector<uint8_t>& b = block.value();
    const size_t key_at = server_keys ? key_len : 0;
    const size_t iv_at = 2 * key_len + (server_keys ? iv_len : 0);
    k.key.assign(b.begin() + key_at, b.begin() + key_at + key_len);
    iv.assign(b.begin() + iv_at, b.begin() + iv_at + iv_len);
    // The Finished message was the first record under these keys.
    k.seq = 1 + (tx ? tx_records_ : rx_records_);
  } else {
    return Error::message("traffic keys: not TLS 1.2 or 1.3");
  }
  if (gcm) {
    // TLS 1.2 GCM sends the rest of the nonce in each record; a kernel
    // counts it up from here.
    k.salt.assign(iv.begin(), iv.begin() + 4);
    for (int i = 7; i >= 0; i--) k.iv.push_back(static_cast<uint8_t>(k.seq >> (8 * i)));
  } else {
    k.iv = iv;
  }
  return k;
}

std::string TlsSession::version() const { return SSL_get_version(ssl_); }

std::string TlsSession::cipher() const {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  return c ? SSL_CIPHER_get_name(c) : "";
}

std::string TlsSession::peer_subject() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (!cert) return {};
  char buf[512];
  X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof buf);
  X509_free(cert);
  return buf;
}

std::string TlsSession::peer_certificate() const {
  X509* cert = SSL_get1_peer_certificate(ssl_);
  if (!cert) return {};
  unsigned char* der = nullptr;
  const int n = i2d_X509(cert, &der);
  X509_free(cert);
  if (n <= 0) return {};
  std::string out(reinterpret_cast<const char*>(der), static_cast<size_t>(n));
  OPENSSL_free(der);
  return out;
}

// -- kernel layout --------------------------------------------------------------

namespace {
template <class Info>
std::vector<uint8_t> fill(const TrafficKeys& k, uint16_t cipher_type) {
  Info info{};
  info.info.version = static_cast<uint16_t>(k.version);
  info.info.cipher_type = cipher_type;
  std::memcpy(info.key, k.key.data(), sizeof info.key);
  std::memcpy(info.iv, k.iv.data(), sizeof info.iv);
  if constexpr (sizeof(info.salt) > 0) std::memcpy(info.salt, k.salt.data(), sizeof info.salt);
  for (int i = 0; i < 8; i++) info.rec_seq[i] = static_cast<uint8_t>(k.seq >> (8 * (7 - i)));
  const auto* p = reinterpret_cast<const uint8_t*>(&info);
  return std::vector<uint8_t>(p, p + sizeof info);
}
}  // namespace

Result<std::vector<uint8_t>> ktls_crypto_info(const TrafficKeys& k) {
  if (k.cipher == "AES-128-GCM" && k.key.size() == 16 && k.iv.size() == 8 && k.salt.size() == 4) {
    return fill<tls12_crypto_info_aes_gcm_128>(k, TLS_CIPHER_AES_GCM_128);
  }
  if (k.cipher == "AES-256-GCM" && k.key.size() == 32 && k.iv.size() == 8 && k.salt.size() == 4) {
    return fill<tls12_crypto_info_aes_gcm_256>(k, TLS_CIPHER_AES_GCM_256);
  }
  if (k.cipher == "CHACHA20-POLY1305" && k.key.size() == 32 && k.iv.size() == 12) {
    return fill<tls12_crypto_info_chacha20_poly1305>(k, TLS_CIPHER_CHACHA20_POLY1305);
  }
  return Error::message("kTLS: no crypto_info layout for " + k.cipher);
}

std::string kernel_tls_unavailable() {
  internal::Fd listener(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  internal::Fd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener || !client) return {};
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (::bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listener.get(), 1) != 0 ||
      ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0 ||
      ::connect(client.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    return {};
  }
  internal::Fd accepted(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (::setsockopt(client.get(), SOL_TCP, TCP_ULP, "tls", sizeof "tls") == 0) return {};
  return errno == ENOENT ? "the kernel has no TLS module (CONFIG_TLS; modprobe tls)"
                         : Error::from_errno(errno, "TCP_ULP tls").what;
}

}  // namespace ktls::carrier
