// TlsSession: mutual TLS 1.2 and 1.3 handshakes over memory, record round
// trips, refusals, and traffic keys checked by decrypting OpenSSL's own
// records with them (what a kernel given those keys would do).
#include "carrier/tls_session.h"

#include <gtest/gtest.h>
#include <linux/tls.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "carrier/test_pki.h"

namespace ktls::carrier {
namespace {

std::vector<uint8_t> send(TlsSession& from, TlsSession& to, const std::string& text) {
  EXPECT_TRUE(from.encrypt({reinterpret_cast<const uint8_t*>(text.data()), text.size()}).ok());
  std::vector<uint8_t> wire, plain;
  from.take_ciphertext(wire);
  to.put_ciphertext(wire);
  auto r = to.decrypt(plain);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().what);
  EXPECT_EQ(std::string(plain.begin(), plain.end()), text);
  return wire;
}

TEST(TlsSession, MutualTls13RoundTrips) {
  auto c = session(options("client"), false);
  auto s = session(options("server"), true);
  ASSERT_EQ(pump(*c, *s), "");
  EXPECT_EQ(c->version(), "TLSv1.3");
  EXPECT_NE(s->peer_subject().find("client@127.0.0.1"), std::string::npos);
  EXPECT_NE(c->peer_subject().find("server@127.0.0.1"), std::string::npos);
  send(*c, *s, "hello from the client");
  send(*s, *c, std::string(100000, 'x'));  // several records
}

TEST(TlsSession, ServerRequiresAClientCertificate) {
  TlsOptions anonymous = options("client");
  anonymous.certfile.clear();
  auto c = session(anonymous, false);
  auto s = session(options("server"), true);
  const std::string err = pump(*c, *s);
  EXPECT_NE(err.find("server: TLS handshake"), std::string::npos) << err;
  EXPECT_NE(err.find("certificate"), std::string::npos) << err;
}

TEST(TlsSession, CertificateOfAnotherCaIsRefused) {
  auto c = session(options("client"), false);
  TlsOptions stranger = options("stranger");
  auto s = session(stranger, true);
  const std::string err = pump(*c, *s);
  EXPECT_NE(err.find("certificate verify failed"), std::string::npos) << err;
}

TEST(TlsSession, NoCommonVersionIsRefused) {
  TlsOptions only12 = options("client");
  only12.max_version = TLS1_2_VERSION;
  TlsOptions only13 = options("server");
  only13.min_version = TLS1_3_VERSION;
  auto c = session(only12, false);
  auto s = session(only13, true);
  const std::string err = pump(*c, *s);
  EXPECT_NE(err.find("unsupported protocol"), std::string::npos) << err;
}

// TLS 1.2 without a ciphers option: AEAD suites only. A peer that offers
// CBC and GCM gets GCM; one that offers CBC only is refused in the
// handshake (before, the CBC suite was negotiated and the connection then
// failed for want of a record layer for it).
TEST(TlsSession, Tls12DefaultsToAeadSuites) {
  TlsOptions cbc_and_gcm = options("client");
  cbc_and_gcm.max_version = TLS1_2_VERSION;
  cbc_and_gcm.ciphers = "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256";
  auto c = session(cbc_and_gcm, false);
  auto s = session(options("server"), true);
  ASSERT_EQ(pump(*c, *s), "");
  EXPECT_EQ(s->cipher(), "ECDHE-ECDSA-AES128-GCM-SHA256");

  TlsOptions cbc_only = cbc_and_gcm;
  cbc_only.ciphers = "ECDHE-ECDSA-AES128-SHA";
  auto c2 = session(cbc_only, false);
  auto s2 = session(options("server"), true);
  const std::string err = pump(*c2, *s2);
  EXPECT_NE(err.find("no shared cipher"), std::string::npos) << err;
}

TEST(TlsSession, GarbageIsAHandshakeError) {
  auto s = session(options("server"), true);
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  s->put_ciphertext({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()});
  auto r = s->handshake();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().what.find("TLS handshake"), std::string::npos);
}

TEST(TlsSession, BadOptionsNameTheFile) {
  TlsOptions o = options("client");
  o.certfile = "/nonexistent/cert.pem";
  auto ctx = TlsContext::create(o, false);
  ASSERT_FALSE(ctx.ok());
  EXPECT_NE(ctx.error().what.find("certfile /nonexistent/cert.pem"), std::string::npos);
}

// One handshake of a client of `cc` (keeping tickets under "peer") with a
// server of `sc`, the ticket read; whether it resumed.
bool resumed_handshake(const std::shared_ptr<TlsContext>& cc,
                       const std::shared_ptr<TlsContext>& sc) {
  auto c = TlsSession::create(cc, "peer");
  auto s = TlsSession::create(sc);
  EXPECT_TRUE(c.ok() && s.ok());
  EXPECT_EQ(pump(*c.value(), *s.value()), "");
  EXPECT_TRUE(c.value()->awaiting_ticket());
  auto ticket = c.value()->read_ticket();
  EXPECT_TRUE(ticket.ok() && ticket.value());
  EXPECT_EQ(c.value()->resumed(), s.value()->resumed());
  return s.value()->resumed();
}

// The server keeps the session behind each ticket it sent (stateful
// tickets) for one resumption: the same ticket offered again (a replay)
// gets a full handshake.
TEST(TlsSession, ServerSessionsServeOneResumption) {
  auto cc = TlsContext::create(options("client"), false).take();
  auto sc = TlsContext::create(options("server"), true).take();
  EXPECT_FALSE(resumed_handshake(cc, sc));
  SSL_SESSION* ticket = cc->take_session("peer");
  ASSERT_NE(ticket, nullptr);
  SSL_SESSION_up_ref(ticket);
  cc->keep_session("peer", ticket);
  EXPECT_TRUE(resumed_handshake(cc, sc));
  cc->keep_session("peer", ticket);  // the first ticket again
  EXPECT_FALSE(resumed_handshake(cc, sc));
  EXPECT_TRUE(resumed_handshake(cc, sc));  // the replay's full handshake brought a ticket
}

// Decrypts one application-data record with `k` as a kernel would.
std::string open_record(const TrafficKeys& k, const std::vector<uint8_t>& rec) {
  const bool gcm = k.cipher != "CHACHA20-POLY1305";
  const EVP_CIPHER* cipher = k.cipher == "AES-128-GCM"   ? EVP_aes_128_gcm()
                             : k.cipher == "AES-256-GCM" ? EVP_aes_256_gcm()
                                                         : EVP_chacha20_poly1305();
  const bool tls13 = k.version == TLS1_3_VERSION;
  std::vector<uint8_t> nonce = gcm ? k.salt : std::vector<uint8_t>();
  size_t body = 5;
  if (gcm && !tls13) {
    nonce.insert(nonce.end(), rec.begin() + 5, rec.begin() + 13);  // explicit nonce
    body = 13;
  } else {
    nonce.insert(nonce.end(), k.iv.begin(), k.iv.end());
    for (int i = 0; i < 8; i++) nonce[4 + i] ^= static_cast<uint8_t>(k.seq >> (8 * (7 - i)));
  }
  const size_t ct_len = rec.size() - body - 16;
  std::vector<uint8_t> aad;
  if (tls13) {
    aad.assign(rec.begin(), rec.begin() + 5);
  } else {
    for (int i = 7; i >= 0; i--) aad.push_back(static_cast<uint8_t>(k.seq >> (8 * i)));
    aad.insert(aad.end(),
               {23, 3, 3, static_cast<uint8_t>(ct_len >> 8), static_cast<uint8_t>(ct_len)});
  }
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  std::vector<uint8_t> out(ct_len + 16);
  int len = 0, fin = 0;
  bool ok = EVP_DecryptInit_ex(ctx, cipher, nullptr, k.key.data(), nonce.data()) == 1 &&
            EVP_DecryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())) &&
            EVP_DecryptUpdate(ctx, out.data(), &len, rec.data() + body, static_cast<int>(ct_len)) &&
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, 16,
                                const_cast<uint8_t*>(rec.data() + body + ct_len)) &&
            EVP_DecryptFinal_ex(ctx, out.data() + len, &fin) == 1;
  EVP_CIPHER_CTX_free(ctx);
  if (!ok) return "<does not decrypt>";
  out.resize(static_cast<size_t>(len + fin));
  if (tls13) {
    if (out.empty() || out.back() != 23) return "<not application data>";
    out.pop_back();  // inner content type
  }
  return std::string(out.begin(), out.end());
}

struct Suite {
  int version;
  const char* name;
  const char* kernel_cipher;
  size_t info_size;
};

class TrafficKeysTest : public ::testing::TestWithParam<Suite> {};

TEST_P(TrafficKeysTest, KeysDecryptTheRecordsOpenSslWrites) {
  const Suite& suite = GetParam();
  TlsOptions co = options("client", suite.version, suite.name);
  TlsOptions so = options("server", suite.version, suite.name);
  auto c = session(co, false);
  auto s = session(so, true);
  ASSERT_EQ(pump(*c, *s), "");
  ASSERT_EQ(c->cipher(), suite.name);
  // Records already sent count: the keys continue after them.
  send(*c, *s, "first");
  send(*s, *c, "reply");
  auto ctx = c->traffic_keys(true);
  ASSERT_TRUE(ctx.ok()) << ctx.error().what;
  auto srx = s->traffic_keys(false);
  ASSERT_TRUE(srx.ok()) << srx.error().what;
  EXPECT_EQ(ctx.value().cipher, suite.kernel_cipher);
  EXPECT_EQ(ctx.value().key, srx.value().key);
  EXPECT_EQ(ctx.value().seq, srx.value().seq);
  EXPECT_EQ(ctx.value().seq, suite.version == TLS1_3_VERSION ? 1u : 2u);
  const std::vector<uint8_t> rec = send(*c, *s, "the kernel takes over here");
  EXPECT_EQ(open_record(ctx.value(), rec), "the kernel takes over here");
  auto info = ktls_crypto_info(ctx.value());
  ASSERT_TRUE(info.ok()) << info.error().what;
  EXPECT_EQ(info.value().size(), suite.info_size);
  // The server's sending keys are the client's receiving keys.
  auto stx = s->traffic_keys(true);
  auto crx = c->traffic_keys(false);
  ASSERT_TRUE(stx.ok() && crx.ok());
  EXPECT_EQ(stx.value().key, crx.value().key);
  EXPECT_NE(stx.value().key, ctx.value().key);
}

INSTANTIATE_TEST_SUITE_P(
    Suites, TrafficKeysTest,
    ::testing::Values(Suite{TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256", "AES-128-GCM",
                            sizeof(tls12_crypto_info_aes_gcm_128)},
                      Suite{TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384", "AES-256-GCM",
                            sizeof(tls12_crypto_info_aes_gcm_256)},
                      Suite{TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256", "CHACHA20-POLY1305",
                            sizeof(tls12_crypto_info_chacha20_poly1305)},
                      Suite{TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256", "AES-128-GCM",
                            sizeof(tls12_crypto_info_aes_gcm_128)},
                      Suite{TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384", "AES-256-GCM",
                            sizeof(tls12_crypto_info_aes_gcm_256)},
                      Suite{TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305", "CHACHA20-POLY1305",
                            sizeof(tls12_crypto_info_chacha20_poly1305)}),
    [](const ::testing::TestParamInfo<Suite>& i) { return suite_test_name(i.param.name); });

}  // namespace
}  // namespace ktls::carrier
