// Length-prefixed packet framing of the distribution protocol: 2-byte
// lengths during the handshake, 4-byte lengths after it, zero-length dist
// packets as ticks. An explicit state machine (kHeader / kBody) over a byte
// range that always starts at a packet boundary; it never copies.
#pragma once

#include <cstddef>
#include <cstdint>

#include "carrier/carrier.h"

namespace ktls::carrier {

// Cuts packets out of the unparsed bytes of a connection. The caller keeps
// the bytes of the packet in progress contiguous and passes them again, from
// the same packet boundary, each time more have arrived; the parser remembers
// how far it got (a header already decoded is not decoded again).
class FrameParser {
 public:
  enum class State : uint8_t {
    kHeader,  // waiting for the length header of the next packet
    kBody,    // header decoded: waiting for body_size() bytes after it
  };
  enum class Step : uint8_t {
    kNeedMore,   // not enough bytes for the next header or body
    kPacket,     // a packet: offset/size of its body
    kTick,       // a zero-length dist packet (consumed)
    kOversized,  // length over the limit: close the connection
  };
  struct Result {
    Step step;
    size_t body_offset = 0;  // relative to the start of the input
    uint64_t size = 0;       // body size (kPacket) or announced size (kOversized, kNeedMore)
    size_t consumed = 0;     // bytes of input used (header + body)
  };

  // Looks at bytes [data, data+len) starting at the current packet boundary.
  // kPacket and kTick move the boundary by `consumed` bytes (the caller
  // advances its input); kNeedMore and kOversized do not.
  Result next(const uint8_t* data, size_t len);
  // Header bytes of the current framing.
  size_t header_size() const { return framing_ == Framing::kHandshake ? handshake_header_ : 4; }
  // Length header of handshake packets: 2 (inet_tcp_dist) or 4 (TLS, as
  // inet_tls_dist).
  void set_handshake_header(uint8_t bytes) { handshake_header_ = bytes; }
  // Applies from the current packet boundary on: a header decoded with the
  // old framing is forgotten (the handshake changes framing between packets).
  void set_framing(Framing f) {
    framing_ = f;
    state_ = State::kHeader;
  }
  Framing framing() const { return framing_; }
  State state() const { return state_; }
  // Body size of the packet in progress (state kBody).
  uint64_t body_size() const { return body_size_; }
  void set_limits(uint64_t max_handshake, uint64_t max_dist) {
    max_handshake_ = max_handshake;
    max_dist_ = max_dist;
  }
  // The length limit of the current framing.
  uint64_t max_size() const { return framing_ == Framing::kHandshake ? max_handshake_ : max_dist_; }

 private:
  Framing framing_ = Framing::kHandshake;
  State state_ = State::kHeader;
  uint64_t body_size_ = 0;
  uint8_t handshake_header_ = 2;
  uint64_t max_handshake_ = 8192;
  uint64_t max_dist_ = 64ull << 20;
};

}  // namespace ktls::carrier
