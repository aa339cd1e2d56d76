#include "carrier/record_layer.h"

#include <openssl/evp.h>

#include <cstring>

namespace ktls::carrier {
namespace {

constexpr uint8_t kAlert = 21, kHandshake = 22, kAppData = 23;
constexpr size_t kTag = 16;
constexpr size_t kExplicitNonce = 8;  // TLS 1.2 AES-GCM
// Largest record body accepted (RFC 8446 5.2: 2^14 + 256; RFC 5246 6.2.3:
// 2^14 + 2048).
constexpr size_t kMaxBody13 = kMaxRecordPlain + 256;
constexpr size_t kMaxBody12 = kMaxRecordPlain + 2048;
// A stock OTP peer changes AES-GCM keys after this many plaintext bytes
// (ssl's key_update_at); our sender does the same.
constexpr uint64_t kKeyUpdateAt = 388736063997ULL;

void put_u16(uint8_t* p, size_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}

void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = static_cast<uint8_t>(v >> (8 * (7 - i)));
}

}  // namespace

std::string alert_name(uint8_t a) {
  switch (a) {
    case 0:
      return "close_notify";
    case 10:
      return "unexpected_message";
    case 20:
      return "bad_record_mac";
    case 22:
      return "record_overflow";
    case 40:
      return "handshake_failure";
    case 42:
      return "bad_certificate";
    case 43:
      return "unsupported_certificate";
    case 44:
      return "certificate_revoked";
    case 45:
      return "certificate_expired";
    case 46:
      return "certificate_unknown";
    case 47:
      return "illegal_parameter";
    case 48:
      return "unknown_ca";
    case 49:
      return "access_denied";
    case 50:
      return "decode_error";
    case 51:
      return "decrypt_error";
    case 70:
      return "protocol_version";
    case 71:
      return "insufficient_security";
    case 80:
      return "internal_error";
    case 86:
      return "inappropriate_fallback";
    case 90:
      return "user_canceled";
    case 109:
      return "missing_extension";
    case 110:
      return "unsupported_extension";
    case 112:
      return "unrecognized_name";
    case 116:
      return "certificate_required";
    case 120:
      return "no_application_protocol";
    default:
      return "alert " + std::to_string(a);
  }
}

Result<std::unique_ptr<RecordCipher>> RecordCipher::create(const TrafficKeys& keys, bool seal) {
  std::unique_ptr<RecordCipher> c(new RecordCipher(keys, seal));
  auto ok = c->init();
  if (!ok) return ok.error();
  return c;
}

RecordCipher::~RecordCipher() { EVP_CIPHER_CTX_free(ctx_); }

Result<void> RecordCipher::init() {
  tls13_ = keys_.version == TLS1_3_VERSION;
  if (!tls13_ && keys_.version != TLS1_2_VERSION) {
    return Error::message("TLS record layer: not TLS 1.2 or 1.3");
  }
  const EVP_CIPHER* cipher = nullptr;
  if (keys_.cipher == "AES-128-GCM" && keys_.key.size() == 16) cipher = EVP_aes_128_gcm();
  if (keys_.cipher == "AES-256-GCM" && keys_.key.size() == 32) cipher = EVP_aes_256_gcm();
  if (keys_.cipher == "CHACHA20-POLY1305" && keys_.key.size() == 32) {
    cipher = EVP_chacha20_poly1305();
  }
  if (!cipher) return Error::message("TLS record layer: no cipher " + keys_.cipher);
  gcm_ = keys_.cipher != "CHACHA20-POLY1305";
  if (gcm_ ? keys_.salt.size() != 4 || keys_.iv.size() != 8 : keys_.iv.size() != 12) {
    return Error::message("TLS record layer: bad IV for " + keys_.cipher);
  }
  if (!ctx_) ctx_ = EVP_CIPHER_CTX_new();
  if (!ctx_ || EVP_CipherInit_ex(ctx_, cipher, nullptr, keys_.key.data(), nullptr, seal_) != 1) {
    return Error::message("TLS record layer: cipher initialisation failed");
  }
  return {};
}

// The per-record nonce: TLS 1.3 and ChaCha20 XOR the sequence number into
// the static IV; TLS 1.2 AES-GCM puts it after the 4-byte salt (and sends
// that part in the record).
void RecordCipher::nonce(uint8_t out[12], uint64_t seq) const {
  uint8_t s[8];
  put_u64(s, seq);
  if (gcm_ && !tls13_) {
    std::memcpy(out, keys_.salt.data(), 4);
    std::memcpy(out + 4, s, 8);
    return;
  }
  if (gcm_) {
    std::memcpy(out, keys_.salt.data(), 4);
    std::memcpy(out + 4, keys_.iv.data(), 8);
  } else {
    std::memcpy(out, keys_.iv.data(), 12);
  }
  for (int i = 0; i < 8; i++) out[4 + i] ^= s[i];
}

// The additional data of the record with header `rec`: TLS 1.3 the header,
// TLS 1.2 sequence number, type, version and plaintext length.
void RecordCipher::add_aad(const uint8_t* rec, uint8_t type, size_t plain) {
  int len = 0;
  if (tls13_) {
    EVP_CipherUpdate(ctx_, nullptr, &len, rec, kRecordHeader);
    return;
  }
  uint8_t aad[13];
  put_u64(aad, keys_.seq);
  aad[8] = type;
  aad[9] = 3;
  aad[10] = 3;
  put_u16(aad + 11, plain);
  EVP_CipherUpdate(ctx_, nullptr, &len, aad, sizeof aad);
}

size_t RecordCipher::sealed_size(size_t plain) {
  const size_t records = plain / kMaxRecordPlain + 1;
  return plain + records * (kRecordHeader + kExplicitNonce + 1 + kTag);
}

void RecordCipher::seal_one(uint8_t type, std::span<const iovec> parts, size_t* part, size_t* off,
                            size_t n, SealedBytes& out) {
  const size_t body = tls13_ ? n + 1 + kTag : n + kTag + (gcm_ ? kExplicitNonce : 0);
  const size_t at = out.size();
  out.resize(at + kRecordHeader + body);
  uint8_t* rec = out.data() + at;
  rec[0] = tls13_ ? kAppData : type;
  rec[1] = 3;
  rec[2] = 3;
  put_u16(rec + 3, body);
  uint8_t* p = rec + kRecordHeader;
  uint8_t iv[12];
  nonce(iv, keys_.seq);
  int len = 0;
  EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv, 1);
  add_aad(rec, type, n);
  if (!tls13_ && gcm_) {
    std::memcpy(p, iv + 4, kExplicitNonce);
    p += kExplicitNonce;
  }
  size_t left = n;
  while (left > 0) {
    const iovec& v = parts[*part];
    const size_t take = std::min(left, v.iov_len - *off);
    EVP_CipherUpdate(ctx_, p, &len, static_cast<const uint8_t*>(v.iov_base) + *off,
                     static_cast<int>(take));
    p += len;
    left -= take;
    *off += take;
    if (*off == v.iov_len) {
      (*part)++;
      *off = 0;
    }
  }
  if (tls13_) {
    EVP_CipherUpdate(ctx_, p, &len, &type, 1);
    p += len;
  }
  EVP_CipherFinal_ex(ctx_, p, &len);
  p += len;
  EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_GET_TAG, kTag, p);
  keys_.seq++;
  records_++;
}

void RecordCipher::seal(std::span<const iovec> parts, SealedBytes& out) {
  size_t total = 0;
  for (const iovec& v : parts) total += v.iov_len;
  sealed_bytes_ += total;
  out.reserve(out.size() + sealed_size(total));
  size_t part = 0, off = 0;
  // Skip empty leading parts so that seal_one always makes progress.
  while (total > 0) {
    while (part < parts.size() && parts[part].iov_len == off) {
      part++;
      off = 0;
    }
    const size_t n = std::min(total, kMaxRecordPlain);
    seal_one(kAppData, parts, &part, &off, n, out);
    total -= n;
  }
}

void RecordCipher::seal_record(uint8_t type, std::span<const uint8_t> plain, SealedBytes& out) {
  iovec v{const_cast<uint8_t*>(plain.data()), plain.size()};
  size_t part = 0, off = 0;
  seal_one(type, std::span<const iovec>(&v, 1), &part, &off, plain.size(), out);
}

size_t RecordCipher::next_record_size(const uint8_t* in, size_t len) {
  if (len < kRecordHeader) return 0;
  return kRecordHeader + (size_t{in[3]} << 8 | in[4]);
}

RecordCipher::Opened RecordCipher::fail(Opened o, std::string why) {
  o.event = Event::kError;
  o.error = std::move(why);
  return o;
}

RecordCipher::Opened RecordCipher::open(const uint8_t* in, size_t len, uint8_t* out, size_t room) {
  Opened o;
  const size_t overhead = tls13_ ? kTag : kTag + (gcm_ ? kExplicitNonce : 0);
  while (len - o.consumed >= kRecordHeader) {
    const uint8_t* rec = in + o.consumed;
    const uint8_t type = rec[0];
    const size_t body = size_t{rec[3]} << 8 | rec[4];
    if (rec[1] != 3 || rec[2] != 3) {
      return fail(o, "not a TLS record (version bytes " + std::to_string(rec[1]) + "." +
                         std::to_string(rec[2]) + ")");
    }
    if (body > (tls13_ ? kMaxBody13 : kMaxBody12)) {
      return fail(o, "oversized TLS record (" + std::to_string(body) + " bytes)");
    }
    if (tls13_ ? type != kAppData : type != kAppData && type != kAlert && type != kHandshake) {
      return fail(o, "unexpected TLS record type " + std::to_string(type));
    }
    if (body < overhead + (tls13_ ? 1 : 0)) return fail(o, "truncated TLS record");
    if (len - o.consumed < kRecordHeader + body) break;  // incomplete
    const size_t ct = body - overhead;                   // bytes written to out
    if (ct > room - o.produced) break;                   // no room: later
    uint8_t* dst = out + o.produced;
    const uint8_t* src = rec + kRecordHeader;
    uint8_t iv[12];
    if (gcm_ && !tls13_) {
      std::memcpy(iv, keys_.salt.data(), 4);
      std::memcpy(iv + 4, src, kExplicitNonce);
      src += kExplicitNonce;
    } else {
      nonce(iv, keys_.seq);
    }
    EVP_CipherInit_ex(ctx_, nullptr, nullptr, nullptr, iv, 0);
    add_aad(rec, type, ct);
    int got = 0, fin = 0;
    const bool ok = EVP_CipherUpdate(ctx_, dst, &got, src, static_cast<int>(ct)) == 1 &&
                    EVP_CIPHER_CTX_ctrl(ctx_, EVP_CTRL_AEAD_SET_TAG, kTag,
                                        const_cast<uint8_t*>(src + ct)) == 1 &&
                    EVP_CipherFinal_ex(ctx_, dst + got, &fin) == 1;
    if (!ok) {
      return fail(
          o, "TLS record " + std::to_string(keys_.seq) + " failed authentication (bad_record_mac)");
    }
    keys_.seq++;
    records_++;
    o.consumed += kRecordHeader + body;
    size_t plain = ct;
    uint8_t inner = type;
    if (tls13_) {
      while (plain > 0 && dst[plain - 1] == 0) plain--;  // padding
      if (plain == 0) return fail(o, "TLS record without a content type");
      inner = dst[--plain];
    }
    if (plain > kMaxRecordPlain) {  // RFC 8446 5.1 / 5246 6.2.1: at most 2^14 bytes
      return fail(
          o, "TLS record with " + std::to_string(plain) + " bytes of plaintext (record_overflow)");
    }
    if (inner == kAppData) {
      o.produced += plain;
      continue;
    }
    Opened c = control(inner, dst, plain, tls13_);
    if (c.event == Event::kNone) continue;  // NewSessionTicket
    c.consumed = o.consumed;
    c.produced = o.produced;
    return c;
  }
  return o;
}

RecordCipher::Opened RecordCipher::control(uint8_t type, const uint8_t* plain, size_t len,
                                           bool tls13) {
  Opened o;
  if (type == kAlert) {
    if (len != 2) return fail(o, "malformed TLS alert");
    o.alert = plain[1];
    o.event = plain[1] == 0 ? Event::kCloseNotify : Event::kAlert;
    return o;
  }
  if (type != kHandshake) return fail(o, "unexpected TLS content type " + std::to_string(type));
  if (!tls13) return fail(o, "TLS 1.2 renegotiation is not supported");
  // Post-handshake messages: NewSessionTicket (ignored), KeyUpdate.
  size_t at = 0;
  while (at < len) {
    if (len - at < 4) return fail(o, "truncated TLS handshake message");
    const uint8_t msg = plain[at];
    const size_t mlen = size_t{plain[at + 1]} << 16 | size_t{plain[at + 2]} << 8 | plain[at + 3];
    if (len - at - 4 < mlen) return fail(o, "TLS handshake message split across records");
    if (msg == 24) {  // KeyUpdate
      if (mlen != 1 || plain[at + 4] > 1 || at + 4 + mlen != len) {
        return fail(o, "malformed TLS KeyUpdate");
      }
      o.event = plain[at + 4] == 1 ? Event::kKeyUpdateWanted : Event::kKeyUpdate;
      return o;
    }
    if (msg != 4) {  // NewSessionTicket
      return fail(
          o, "unexpected TLS handshake message " + std::to_string(msg) + " after the handshake");
    }
    at += 4 + mlen;
  }
  return o;
}

bool RecordCipher::key_update_due() const {
  return tls13_ && gcm_ && sealed_bytes_ >= kKeyUpdateAt;
}

Result<void> RecordCipher::rekey() {
  auto next = next_traffic_keys(keys_);
  if (!next) return next.error();
  keys_ = next.take();
  sealed_bytes_ = 0;
  return init();
}

}  // namespace ktls::carrier
