// Record layer throughput (bytes/s of plaintext): RecordCipher sealing and
// opening 64 KiB against OpenSSL's bare AEAD on the same bytes, per cipher:
// bazel run -c opt //carrier:record_bench
#include <benchmark/benchmark.h>
#include <openssl/evp.h>
#include <openssl/tls1.h>

#include <cstring>
#include <vector>

#include "carrier/record_layer.h"

namespace ktls::carrier {
namespace {

TrafficKeys keys(const char* cipher) {
  TrafficKeys k;
  k.version = TLS1_3_VERSION;
  k.cipher = cipher;
  const bool gcm = k.cipher != "CHACHA20-POLY1305";
  k.key.assign(k.cipher == "AES-128-GCM" ? 16 : 32, 0x11);
  k.iv.assign(gcm ? 8 : 12, 0x22);
  if (gcm) k.salt.assign(4, 0x33);
  return k;
}

const char* const kCiphers[] = {"AES-128-GCM", "AES-256-GCM", "CHACHA20-POLY1305"};
constexpr size_t kPacket = 65536;
// A small dist packet (a ping-pong message): the per-record cost.
constexpr size_t kSmall = 78;

void Seal(benchmark::State& state) {
  const size_t packet = static_cast<size_t>(state.range(1));
  auto sealer = RecordCipher::create(keys(kCiphers[state.range(0)]), true).take();
  std::vector<uint8_t> plain(packet, 7);
  iovec v{plain.data(), plain.size()};
  SealedBytes out;
  for (auto _ : state) {
    out.clear();
    sealer->seal({&v, 1}, out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * packet));
  state.SetLabel(kCiphers[state.range(0)]);
}
BENCHMARK(Seal)->ArgsProduct({{0, 1, 2}, {kSmall, kPacket}});

// Sealing and opening each packet (the opener follows the sealer's
// sequence numbers): opening costs SealOpen minus Seal.
void SealOpen(benchmark::State& state) {
  const TrafficKeys k = keys(kCiphers[state.range(0)]);
  auto sealer = RecordCipher::create(k, true).take();
  auto opener = RecordCipher::create(k, false).take();
  const size_t packet = static_cast<size_t>(state.range(1));
  std::vector<uint8_t> plain(packet, 7);
  iovec v{plain.data(), plain.size()};
  SealedBytes wire;
  std::vector<uint8_t> out(packet + kMaxRecordPlain + kMaxRecordOverhead);
  for (auto _ : state) {
    wire.clear();
    sealer->seal({&v, 1}, wire);
    auto o = opener->open(wire.data(), wire.size(), out.data(), out.size());
    if (o.produced != packet) state.SkipWithError("open failed");
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * packet));
  state.SetLabel(kCiphers[state.range(0)]);
}
BENCHMARK(SealOpen)->ArgsProduct({{0, 1, 2}, {kSmall, kPacket}});

// The AEAD alone, 16 KiB at a time, one init per record: the floor.
void BareAead(benchmark::State& state) {
  const TrafficKeys k = keys(kCiphers[state.range(0)]);
  const EVP_CIPHER* c = state.range(0) == 0   ? EVP_aes_128_gcm()
                        : state.range(0) == 1 ? EVP_aes_256_gcm()
                                              : EVP_chacha20_poly1305();
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  EVP_CipherInit_ex(ctx, c, nullptr, k.key.data(), nullptr, 1);
  std::vector<uint8_t> plain(kPacket, 7), out(kPacket + 64);
  uint8_t iv[12] = {}, tag[16];
  for (auto _ : state) {
    for (size_t at = 0; at < kPacket; at += kMaxRecordPlain) {
      int len = 0;
      EVP_CipherInit_ex(ctx, nullptr, nullptr, nullptr, iv, 1);
      EVP_CipherUpdate(ctx, nullptr, &len, iv, 5);
      EVP_CipherUpdate(ctx, out.data() + at, &len, plain.data() + at, kMaxRecordPlain);
      EVP_CipherFinal_ex(ctx, out.data() + at + len, &len);
      EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, 16, tag);
      iv[11]++;
    }
  }
  EVP_CIPHER_CTX_free(ctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kPacket));
  state.SetLabel(kCiphers[state.range(0)]);
}
BENCHMARK(BareAead)->DenseRange(0, 2);

}  // namespace
}  // namespace ktls::carrier

BENCHMARK_MAIN();
