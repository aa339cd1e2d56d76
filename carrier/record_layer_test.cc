// RecordCipher against OpenSSL's own record layer: records OpenSSL writes
// open here, records sealed here open in OpenSSL, for every suite; KeyUpdate
// both ways, alerts, tampering, oversized records and short room.
#include "carrier/record_layer.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>

#include <cstring>
#include <string>

#include "carrier/test_pki.h"

namespace ktls::carrier {
namespace {

struct Suite {
  int version;
  const char* name;
};

class RecordLayerTest : public ::testing::TestWithParam<Suite> {
 protected:
  void SetUp() override {
    const Suite& suite = GetParam();
    TlsOptions co = options("client", suite.version, suite.name);
    TlsOptions so = options("server", suite.version, suite.name);
    ossl = session(co, false);  // OpenSSL's record layer on this side
    ours = session(so, true);   // the handshake only; records by RecordCipher
    ASSERT_EQ(pump(*ossl, *ours), "");
    auto tx = ours->traffic_keys(true);
    auto rx = ours->traffic_keys(false);
    ASSERT_TRUE(tx.ok() && rx.ok());
    auto s = RecordCipher::create(tx.value(), true);
    auto o = RecordCipher::create(rx.value(), false);
    ASSERT_TRUE(s.ok() && o.ok());
    sealer = s.take();
    opener = o.take();
  }

  // OpenSSL seals `text`; our opener must give it back.
  std::string from_openssl(const std::string& text, RecordCipher::Event* event = nullptr) {
    EXPECT_TRUE(ossl->encrypt({reinterpret_cast<const uint8_t*>(text.data()), text.size()}).ok());
    std::vector<uint8_t> wire;
    ossl->take_ciphertext(wire);
    return open_all(wire, event);
  }
  std::string open_all(const std::vector<uint8_t>& wire, RecordCipher::Event* event = nullptr) {
    std::vector<uint8_t> out(wire.size() + kMaxRecordPlain);
    size_t at = 0, produced = 0;
    while (at < wire.size()) {
      auto o = opener->open(wire.data() + at, wire.size() - at, out.data() + produced,
                            out.size() - produced);
      EXPECT_NE(o.event, RecordCipher::Event::kError) << o.error;
      at += o.consumed;
      produced += o.produced;
      if (event) *event = o.event;
      if (o.event == RecordCipher::Event::kKeyUpdate ||
          o.event == RecordCipher::Event::kKeyUpdateWanted) {
        EXPECT_TRUE(opener->rekey().ok());
        continue;
      }
      if (o.event != RecordCipher::Event::kNone || o.consumed == 0) break;
    }
    EXPECT_EQ(at, wire.size());
    return std::string(out.begin(), out.begin() + static_cast<ptrdiff_t>(produced));
  }
  // Our sealer seals `parts`; OpenSSL must read them as one text.
  std::string to_openssl(const std::vector<std::string>& parts) {
    std::vector<iovec> iov;
    for (const std::string& p : parts) iov.push_back({const_cast<char*>(p.data()), p.size()});
    SealedBytes wire;
    sealer->seal(iov, wire);
    return openssl_reads(wire);
  }
  std::string openssl_reads(std::span<const uint8_t> wire) {
    ossl->put_ciphertext(wire);
    std::vector<uint8_t> plain;
    auto r = ossl->decrypt(plain);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().what);
    return std::string(plain.begin(), plain.end());
  }

  std::unique_ptr<TlsSession> ossl, ours;
  std::unique_ptr<RecordCipher> sealer, opener;
};

TEST_P(RecordLayerTest, OpensWhatOpenSslSeals) {
  EXPECT_EQ(from_openssl("hello"), "hello");
  const std::string big(100000, 'x');  // several records
  EXPECT_EQ(from_openssl(big), big);
  EXPECT_EQ(opener->records(), 1u + (big.size() + kMaxRecordPlain - 1) / kMaxRecordPlain);
}

TEST_P(RecordLayerTest, OpenSslOpensWhatWeSeal) {
  EXPECT_EQ(to_openssl({"a", "", "bc", "def"}), "abcdef");  // small parts share a record
  EXPECT_EQ(sealer->records(), 1u);
  std::string big(70000, 'y');
  big[12345] = 'z';
  EXPECT_EQ(to_openssl({"<", big, ">"}), "<" + big + ">");
  EXPECT_EQ(sealer->records(), 1u + (big.size() + 2 + kMaxRecordPlain - 1) / kMaxRecordPlain);
  SealedBytes wire;
  sealer->seal({}, wire);  // nothing: no record
  EXPECT_TRUE(wire.empty());
}

TEST_P(RecordLayerTest, StopsWhereThePlaintextWouldNotFit) {
  ASSERT_TRUE(ossl->encrypt({reinterpret_cast<const uint8_t*>("0123456789"), 10}).ok());
  std::vector<uint8_t> wire;
  ossl->take_ciphertext(wire);
  std::vector<uint8_t> out(64);
  auto o = opener->open(wire.data(), wire.size(), out.data(), 5);
  EXPECT_EQ(o.consumed, 0u);
  EXPECT_EQ(o.event, RecordCipher::Event::kNone);
  o = opener->open(wire.data(), wire.size() - 1, out.data(), out.size());  // incomplete
  EXPECT_EQ(o.consumed, 0u);
  o = opener->open(wire.data(), wire.size(), out.data(), out.size());
  EXPECT_EQ(o.consumed, wire.size());
  EXPECT_EQ(std::string(out.begin(), out.begin() + 10), "0123456789");
}

TEST_P(RecordLayerTest, TamperedRecordIsRefused) {
  ASSERT_TRUE(ossl->encrypt({reinterpret_cast<const uint8_t*>("secret"), 6}).ok());
  std::vector<uint8_t> wire;
  ossl->take_ciphertext(wire);
  wire[wire.size() - 3] ^= 1;
  std::vector<uint8_t> out(64);
  auto o = opener->open(wire.data(), wire.size(), out.data(), out.size());
  EXPECT_EQ(o.event, RecordCipher::Event::kError);
  EXPECT_NE(o.error.find("bad_record_mac"), std::string::npos) << o.error;
  EXPECT_EQ(o.produced, 0u);
}

TEST_P(RecordLayerTest, OversizedAndForeignRecordsAreRefused) {
  std::vector<uint8_t> out(64);
  const uint8_t big[] = {23, 3, 3, 0xff, 0xff};
  auto o = opener->open(big, sizeof big, out.data(), out.size());
  EXPECT_EQ(o.event, RecordCipher::Event::kError);
  EXPECT_NE(o.error.find("oversized TLS record"), std::string::npos) << o.error;
  const uint8_t plain_dist[] = {0, 21, 'N', 0, 0, 0};
  o = opener->open(plain_dist, sizeof plain_dist, out.data(), out.size());
  EXPECT_EQ(o.event, RecordCipher::Event::kError);
}

// A record that authenticates but holds more than 2^14 bytes of plaintext
// is record_overflow (RFC 8446 5.1), not data. Sealed here by hand with the
// opener's keys (TLS 1.3 AES-GCM), since no TLS stack writes one.
TEST_P(RecordLayerTest, OverlongPlaintextIsRecordOverflow) {
  const TrafficKeys& k = opener->keys();
  if (GetParam().version != TLS1_3_VERSION || k.cipher == "CHACHA20-POLY1305") {
    GTEST_SKIP() << "crafted for TLS 1.3 AES-GCM";
  }
  std::vector<uint8_t> inner(16384 + 1, 'x');
  inner.push_back(23);  // content type: application data
  const size_t body = inner.size() + 16;
  std::vector<uint8_t> rec = {23, 3, 3, static_cast<uint8_t>(body >> 8),
                              static_cast<uint8_t>(body & 0xff)};
  uint8_t iv[12];
  std::memcpy(iv, k.salt.data(), 4);
  std::memcpy(iv + 4, k.iv.data(), 8);
  for (int i = 0; i < 8; i++) iv[4 + i] ^= static_cast<uint8_t>(k.seq >> (8 * (7 - i)));
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  ASSERT_EQ(EVP_EncryptInit_ex(ctx, k.key.size() == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(),
                               nullptr, k.key.data(), iv),
            1);
  int n = 0;
  ASSERT_EQ(EVP_EncryptUpdate(ctx, nullptr, &n, rec.data(), 5), 1);  // AAD: the header
  rec.resize(5 + body);
  ASSERT_EQ(
      EVP_EncryptUpdate(ctx, rec.data() + 5, &n, inner.data(), static_cast<int>(inner.size())), 1);
  ASSERT_EQ(EVP_EncryptFinal_ex(ctx, rec.data() + 5 + n, &n), 1);
  ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, rec.data() + 5 + inner.size()), 1);
  EVP_CIPHER_CTX_free(ctx);
  std::vector<uint8_t> out(body);
  auto o = opener->open(rec.data(), rec.size(), out.data(), out.size());
  EXPECT_EQ(o.event, RecordCipher::Event::kError);
  EXPECT_NE(o.error.find("record_overflow"), std::string::npos) << o.error;
  EXPECT_EQ(o.produced, 0u);
}

TEST_P(RecordLayerTest, CloseNotifyIsReported) {
  ossl->close_notify();
  std::vector<uint8_t> wire;
  ossl->take_ciphertext(wire);
  RecordCipher::Event e{};
  open_all(wire, &e);
  EXPECT_EQ(e, RecordCipher::Event::kCloseNotify);
}

TEST_P(RecordLayerTest, KeyUpdateBothWays) {
  if (GetParam().version != TLS1_3_VERSION) GTEST_SKIP() << "KeyUpdate is TLS 1.3";
  // The peer updates its keys and asks for ours.
  ASSERT_TRUE(ossl->key_update(true).ok());
  RecordCipher::Event e{};
  EXPECT_EQ(from_openssl("after update", &e), "after update");
  EXPECT_EQ(opener->keys().seq, 1u);  // the new keys opened one record
  // Ours: a KeyUpdate record, then data under the next keys.
  SealedBytes wire;
  const uint8_t msg[5] = {24, 0, 0, 1, 0};
  sealer->seal_record(22, msg, wire);
  ASSERT_TRUE(sealer->rekey().ok());
  const std::string text = "sealed with new keys";
  iovec v{const_cast<char*>(text.data()), text.size()};
  sealer->seal({&v, 1}, wire);
  EXPECT_EQ(openssl_reads(wire), text);
  EXPECT_EQ(from_openssl("and again"), "and again");
}

INSTANTIATE_TEST_SUITE_P(Suites, RecordLayerTest,
                         ::testing::Values(Suite{TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256"},
                                           Suite{TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384"},
                                           Suite{TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256"},
                                           Suite{TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256"},
                                           Suite{TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384"},
                                           Suite{TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305"}),
                         [](const ::testing::TestParamInfo<Suite>& i) {
                           return suite_test_name(i.param.name);
                         });

}  // namespace
}  // namespace ktls::carrier
