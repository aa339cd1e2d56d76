// Length-prefixed packet framing of the distribution protocol: 2-byte
// lengths during the handshake, 4-byte lengths after it, zero-length dist
// packets as ticks. A small state machine over a byte range; it never copies.
#pragma once

#include <cstddef>
#include <cstdint>

#include "carrier/carrier.h"

namespace ktls::carrier {

class FrameParser {
 public:
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

  // Looks at bytes [data, data+len) starting at a packet boundary.
  Result next(const uint8_t* data, size_t len) const;
  // Header bytes of the current framing.
  size_t header_size() const { return framing_ == Framing::kHandshake ? 2 : 4; }
  void set_framing(Framing f) { framing_ = f; }
  Framing framing() const { return framing_; }
  void set_limits(uint64_t max_handshake, uint64_t max_dist) {
    max_handshake_ = max_handshake;
    max_dist_ = max_dist;
  }

 private:
  Framing framing_ = Framing::kHandshake;
  uint64_t max_handshake_ = 8192;
  uint64_t max_dist_ = 64ull << 20;
};

}  // namespace ktls::carrier
