#include "carrier/framing.h"

namespace ktls::carrier {

FrameParser::Result FrameParser::next(const uint8_t* data, size_t len) const {
  const size_t h = header_size();
  if (len < h) return {Step::kNeedMore, 0, 0, 0};
  uint64_t size = 0;
  for (size_t i = 0; i < h; i++) size = (size << 8) | data[i];
  if (size == 0 && framing_ == Framing::kDist) return {Step::kTick, h, 0, h};
  uint64_t max = framing_ == Framing::kHandshake ? max_handshake_ : max_dist_;
  if (size > max) return {Step::kOversized, 0, size, 0};
  if (len - h < size) return {Step::kNeedMore, h, size, 0};
  return {Step::kPacket, h, size, h + size};
}

}  // namespace ktls::carrier
