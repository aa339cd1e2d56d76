#include "carrier/test_pki.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace ktls::carrier {
namespace {
EVP_PKEY* new_key() { return EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"); }

// A certificate for `cn` signed by (ca, ca_key), or self-signed CA when
// ca is null. Written as PEM with its key.
X509* make_cert(const std::string& cn, EVP_PKEY* key, X509* ca, EVP_PKEY* ca_key, bool is_ca,
                bool expired = false) {
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), std::rand());
  X509_gmtime_adj(X509_getm_notBefore(x), expired ? -7200 : -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), expired ? -3600 : 3600 * 24);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(x, ca ? X509_get_subject_name(ca) : name);
  X509_set_pubkey(x, key);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, ca ? ca : x, x, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, NID_basic_constraints,
                                            is_ca ? "critical,CA:TRUE" : "CA:FALSE");
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  X509_sign(x, ca ? ca_key : key, EVP_sha256());
  return x;
}

void write_pem(const std::string& file, X509* cert, EVP_PKEY* key) {
  FILE* f = std::fopen(file.c_str(), "w");
  PEM_write_X509(f, cert);
  if (key) PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
}

}  // namespace

const Pki& pki() {
  static Pki p = [] {
    const char* tmp = std::getenv("TEST_TMPDIR");
    Pki k{std::string(tmp ? tmp : "/tmp") + "/ktls_test_pki"};
    std::error_code ignored;  // an unusable directory fails at the first file
    std::filesystem::create_directories(k.dir, ignored);
    EVP_PKEY* ca_key = new_key();
    X509* ca = make_cert("ktls test CA", ca_key, nullptr, nullptr, true);
    write_pem(k.path("ca.pem"), ca, nullptr);
    for (const char* who : {"server", "client"}) {
      EVP_PKEY* key = new_key();
      X509* cert = make_cert(std::string(who) + "@127.0.0.1", key, ca, ca_key, false);
      write_pem(k.path(std::string(who) + ".pem"), cert, key);
      X509_free(cert);
      EVP_PKEY_free(key);
    }
    {
      EVP_PKEY* key = new_key();
      X509* cert = make_cert("expired@127.0.0.1", key, ca, ca_key, false, true);
      write_pem(k.path("expired.pem"), cert, key);
      X509_free(cert);
      EVP_PKEY_free(key);
    }
    EVP_PKEY* other_key = new_key();
    X509* other = make_cert("other CA", other_key, nullptr, nullptr, true);
    write_pem(k.path("other_ca.pem"), other, nullptr);
    EVP_PKEY* s_key = new_key();
    X509* stranger = make_cert("stranger@127.0.0.1", s_key, other, other_key, false);
    write_pem(k.path("stranger.pem"), stranger, s_key);
    for (X509* c : {ca, other, stranger}) X509_free(c);
    for (EVP_PKEY* c : {ca_key, other_key, s_key}) EVP_PKEY_free(c);
    return k;
  }();
  return p;
}

TlsOptions options(const std::string& who) {
  TlsOptions o;
  o.certfile = pki().path(who + ".pem");
  o.cacertfile = pki().path("ca.pem");
  return o;
}

TlsOptions options(const std::string& who, int version, const std::string& suite) {
  TlsOptions o = options(who);
  o.min_version = o.max_version = version;
  if (version == TLS1_3_VERSION) {
    o.ciphersuites = suite;
  } else {
    o.ciphers = suite;
  }
  return o;
}

std::unique_ptr<TlsSession> session(const TlsOptions& o, bool server) {
  auto ctx = TlsContext::create(o, server);
  EXPECT_TRUE(ctx.ok()) << (ctx.ok() ? "" : ctx.error().what);
  if (!ctx.ok()) return nullptr;
  auto s = TlsSession::create(ctx.take());
  EXPECT_TRUE(s.ok());
  return s.ok() ? s.take() : nullptr;
}

std::string pump(TlsSession& client, TlsSession& server) {
  for (int round = 0; round < 20; round++) {
    auto c = client.handshake();
    if (!c.ok()) return "client: " + c.error().what;
    std::vector<uint8_t> bytes;
    client.take_ciphertext(bytes);
    server.put_ciphertext(bytes);
    auto s = server.handshake();
    if (!s.ok()) return "server: " + s.error().what;
    bytes.clear();
    server.take_ciphertext(bytes);
    client.put_ciphertext(bytes);
    if (c.value() && s.value() && bytes.empty()) return {};
  }
  return "handshake did not finish";
}

std::string suite_test_name(const std::string& suite) {
  std::string n = suite;
  for (char& ch : n) {
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  }
  return n;
}

}  // namespace ktls::carrier
