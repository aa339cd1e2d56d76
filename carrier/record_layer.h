// The TLS record layer in user space, after the handshake: one direction's
// AEAD with the traffic keys TlsSession derived (the same keys a kernel
// takes for kTLS). Used when the kernel has no kTLS. Each direction has its
// own object, so sending and receiving never share state or a lock (an
// OpenSSL SSL object could not be used from two threads at once).
//
// TLS 1.3 (RFC 8446 5.2) and TLS 1.2 AEAD records (RFC 5288, RFC 7905);
// ciphers AES-128-GCM, AES-256-GCM and CHACHA20-POLY1305.
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "carrier/result.h"
#include "carrier/tls_session.h"

typedef struct evp_cipher_ctx_st EVP_CIPHER_CTX;

namespace ktls::carrier {

// Largest plaintext of one record, and the most one record adds to it.
inline constexpr size_t kMaxRecordPlain = 16384;
inline constexpr size_t kRecordHeader = 5;
inline constexpr size_t kMaxRecordOverhead = 256;  // header, nonce, type, tag (with room)

// An allocator whose resize() leaves new bytes uninitialised: sealing
// writes every byte it grows by, so zero-filling them first (std::vector's
// value-initialisation) would only cost a pass over the memory.
template <class T>
struct UninitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = UninitAllocator<U>;
  };
  UninitAllocator() = default;
  template <class U>
  UninitAllocator(const UninitAllocator<U>&) noexcept {}
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
};
// Sealed TLS records on their way to the socket.
using SealedBytes = std::vector<uint8_t, UninitAllocator<uint8_t>>;

// One direction's record protection.
class RecordCipher {
 public:
  // `seal`: this side sends with `keys` (else it opens the peer's records).
  static Result<std::unique_ptr<RecordCipher>> create(const TrafficKeys& keys, bool seal);
  ~RecordCipher();
  RecordCipher(const RecordCipher&) = delete;
  RecordCipher& operator=(const RecordCipher&) = delete;

  // -- sending --
  // Seals `bytes` bytes gathered from `parts` as application data records
  // of up to kMaxRecordPlain each, appended to `out`. Small packets given
  // together share records.
  void seal(std::span<const iovec> parts, SealedBytes& out);
  // One record of content `type` (alert 21, handshake 22) appended to `out`.
  void seal_record(uint8_t type, std::span<const uint8_t> plain, SealedBytes& out);
  // Upper bound of the bytes seal() appends for `plain` bytes.
  static size_t sealed_size(size_t plain);

  // -- receiving --
  // What one open() call found after the data it decrypted.
  enum class Event : uint8_t {
    kNone,             // only data (or nothing: need more bytes or more room)
    kCloseNotify,      // the peer ended the session cleanly
    kAlert,            // the peer sent a fatal alert: `alert` has its number
    kKeyUpdate,        // TLS 1.3 KeyUpdate: call rekey() before opening more
    kKeyUpdateWanted,  // the same, and the peer wants ours in return
    kError,            // bad record: `error` says what
  };
  struct Opened {
    size_t consumed = 0;  // ciphertext bytes used (whole records)
    size_t produced = 0;  // plaintext bytes written to `out`
    Event event = Event::kNone;
    uint8_t alert = 0;
    std::string error;
  };
  // Opens the whole records at the front of `in` into `out` (capacity
  // `room`), stopping before a record whose plaintext might not fit, after
  // a non-data record (its event), or at the first incomplete record.
  Opened open(const uint8_t* in, size_t len, uint8_t* out, size_t room);
  // What a decrypted non-data record says: `type` (alert 21, handshake 22)
  // and its plaintext. NewSessionTicket is kNone; handshake messages are
  // allowed only in TLS 1.3 (`tls13`). The kernel's records go through
  // this too (kTLS hands them over with recvmsg).
  static Opened control(uint8_t type, const uint8_t* plain, size_t len, bool tls13);
  // Bytes of the next record in `in` if its header is complete, else 0.
  static size_t next_record_size(const uint8_t* in, size_t len);

  // Moves to the next TLS 1.3 traffic keys (KeyUpdate).
  Result<void> rekey();
  // TLS 1.3 AES-GCM keys that have sealed as many bytes as OTP's ssl lets
  // them (key_update_at): the sender must change them now.
  bool key_update_due() const;

  const TrafficKeys& keys() const { return keys_; }
  uint64_t records() const { return records_; }  // records sealed or opened
  uint64_t seq() const { return keys_.seq; }

 private:
  RecordCipher(const TrafficKeys& keys, bool seal) : keys_(keys), seal_(seal) {}
  Result<void> init();
  void nonce(uint8_t out[12], uint64_t seq) const;
  void add_aad(const uint8_t* rec, uint8_t type, size_t plain);
  // Seals one record from the gathered parts starting at (*part, *off).
  void seal_one(uint8_t type, std::span<const iovec> parts, size_t* part, size_t* off, size_t n,
                SealedBytes& out);
  static Opened fail(Opened o, std::string why);

  TrafficKeys keys_;
  bool seal_;
  bool tls13_ = false, gcm_ = false;
  EVP_CIPHER_CTX* ctx_ = nullptr;
  uint64_t records_ = 0;
  uint64_t sealed_bytes_ = 0;  // plaintext under the current keys
};

// Names of TLS alert numbers ("bad_certificate"), for close reasons.
std::string alert_name(uint8_t alert);

}  // namespace ktls::carrier
