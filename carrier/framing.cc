// The framing state machine (see framing.h).
#include "carrier/framing.h"

namespace ktls::carrier {

FrameParser::Result FrameParser::next(const uint8_t* data, size_t len) {
  const size_t h = header_size();
  switch (state_) {
    case State::kHeader: {
      if (len < h) return {Step::kNeedMore, 0, 0, 0};
      uint64_t size = 0;
      for (size_t i = 0; i < h; i++) size = (size << 8) | data[i];
      if (size == 0 && framing_ == Framing::kDist) return {Step::kTick, h, 0, h};
      if (size > max_size()) return {Step::kOversized, 0, size, 0};
      body_size_ = size;
      state_ = State::kBody;
      [[fallthrough]];
    }
    case State::kBody:
      if (len - h < body_size_) return {Step::kNeedMore, h, body_size_, 0};
      state_ = State::kHeader;
      return {Step::kPacket, h, body_size_, h + body_size_};
  }
  return {Step::kNeedMore, 0, 0, 0};  // not reached: every state returns above
}

}  // namespace ktls::carrier
