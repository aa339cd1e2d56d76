#include "carrier/framing.h"

#include <gtest/gtest.h>

#include <vector>

namespace ktls::carrier {
namespace {

TEST(FrameParser, HandshakePacketNeedsWholeBody) {
  FrameParser p;
  const uint8_t bytes[] = {0, 3, 'a', 'b', 'c', 0, 1};
  for (size_t n = 0; n < 5; n++) EXPECT_EQ(p.next(bytes, n).step, FrameParser::Step::kNeedMore);
  auto r = p.next(bytes, sizeof bytes);
  ASSERT_EQ(r.step, FrameParser::Step::kPacket);
  EXPECT_EQ(r.size, 3u);
  EXPECT_EQ(r.body_offset, 2u);
  EXPECT_EQ(r.consumed, 5u);
}

TEST(FrameParser, DistTicksAndPackets) {
  FrameParser p;
  p.set_framing(Framing::kDist);
  const uint8_t tick[] = {0, 0, 0, 0};
  auto r = p.next(tick, 4);
  EXPECT_EQ(r.step, FrameParser::Step::kTick);
  EXPECT_EQ(r.consumed, 4u);
  const uint8_t pkt[] = {0, 0, 0, 2, 'h', 'i'};
  r = p.next(pkt, 6);
  ASSERT_EQ(r.step, FrameParser::Step::kPacket);
  EXPECT_EQ(r.size, 2u);
  EXPECT_EQ(r.consumed, 6u);
}

TEST(FrameParser, SplitAtEveryByteBoundary) {
  // A stream of packets of sizes 0..40 (0 = tick) fed with every split point.
  std::vector<uint8_t> stream;
  for (uint32_t s = 0; s <= 40; s++) {
    stream.insert(stream.end(), {0, 0, 0, static_cast<uint8_t>(s)});
    for (uint32_t i = 0; i < s; i++) stream.push_back(static_cast<uint8_t>(s));
  }
  FrameParser p;
  p.set_framing(Framing::kDist);
  for (size_t split = 0; split <= stream.size(); split++) {
    size_t pos = 0, avail = split, ticks = 0, packets = 0;
    while (true) {
      auto r = p.next(stream.data() + pos, avail - pos);
      if (r.step == FrameParser::Step::kNeedMore) {
        if (avail == stream.size()) break;
        avail = stream.size();
        continue;
      }
      ASSERT_NE(r.step, FrameParser::Step::kOversized);
      if (r.step == FrameParser::Step::kTick) ticks++;
      if (r.step == FrameParser::Step::kPacket) {
        packets++;
        for (size_t i = 0; i < r.size; i++) {
          ASSERT_EQ(stream[pos + r.body_offset + i], r.size);
        }
      }
      pos += r.consumed;
    }
    EXPECT_EQ(ticks, 1u);
    EXPECT_EQ(packets, 40u);
    EXPECT_EQ(pos, stream.size());
  }
}

TEST(FrameParser, OversizedIsReportedBeforeTheBodyArrives) {
  FrameParser p;
  p.set_limits(8192, 1024);
  const uint8_t big_hs[] = {0xff, 0xff};
  EXPECT_EQ(p.next(big_hs, 2).step, FrameParser::Step::kOversized);
  p.set_framing(Framing::kDist);
  const uint8_t big[] = {0xff, 0xff, 0xff, 0xff};
  auto r = p.next(big, 4);
  EXPECT_EQ(r.step, FrameParser::Step::kOversized);
  EXPECT_EQ(r.size, 0xffffffffu);
}

TEST(FrameParser, FramingSwitchLeavesLaterBytesForTheNewFraming) {
  // Last handshake packet followed by a dist packet in the same read.
  const uint8_t bytes[] = {0, 1, 'a', 0, 0, 0, 1, 'b'};
  FrameParser p;
  auto r = p.next(bytes, sizeof bytes);
  ASSERT_EQ(r.step, FrameParser::Step::kPacket);
  p.set_framing(Framing::kDist);
  auto r2 = p.next(bytes + r.consumed, sizeof bytes - r.consumed);
  ASSERT_EQ(r2.step, FrameParser::Step::kPacket);
  EXPECT_EQ(bytes[r.consumed + r2.body_offset], 'b');
}

TEST(FrameParser, StatesFollowHeaderAndBody) {
  FrameParser p;
  p.set_framing(Framing::kDist);
  const uint8_t bytes[] = {0, 0, 1, 0, 'x'};  // 256-byte body, only 1 byte here
  EXPECT_EQ(p.next(bytes, 3).step, FrameParser::Step::kNeedMore);
  EXPECT_EQ(p.state(), FrameParser::State::kHeader);
  auto r = p.next(bytes, sizeof bytes);
  EXPECT_EQ(r.step, FrameParser::Step::kNeedMore);
  EXPECT_EQ(r.size, 256u);  // the caller sizes its buffer from this
  EXPECT_EQ(p.state(), FrameParser::State::kBody);
  EXPECT_EQ(p.body_size(), 256u);
  std::vector<uint8_t> whole(bytes, bytes + 4);
  whole.resize(4 + 256, 'x');
  r = p.next(whole.data(), whole.size());
  ASSERT_EQ(r.step, FrameParser::Step::kPacket);
  EXPECT_EQ(r.consumed, 260u);
  EXPECT_EQ(p.state(), FrameParser::State::kHeader);
}

TEST(FrameParser, FramingSwitchForgetsAHeaderDecodedWithTheOldFraming) {
  // A dist packet of 65538 bytes whose first two bytes (0, 1) were decoded as
  // a handshake length of 1 before the framing changed.
  std::vector<uint8_t> bytes = {0, 1, 0, 2};
  bytes.resize(4 + 65538, 'd');
  FrameParser p;
  EXPECT_EQ(p.next(bytes.data(), 2).step, FrameParser::Step::kNeedMore);
  EXPECT_EQ(p.state(), FrameParser::State::kBody);
  p.set_framing(Framing::kDist);
  EXPECT_EQ(p.state(), FrameParser::State::kHeader);
  auto r = p.next(bytes.data(), bytes.size());
  ASSERT_EQ(r.step, FrameParser::Step::kPacket);
  EXPECT_EQ(r.size, 65538u);
  EXPECT_EQ(r.consumed, bytes.size());
}

TEST(FrameParser, HandshakeZeroLengthIsAnEmptyPacketNotATick) {
  FrameParser p;
  const uint8_t bytes[] = {0, 0};
  auto r = p.next(bytes, 2);
  EXPECT_EQ(r.step, FrameParser::Step::kPacket);
  EXPECT_EQ(r.size, 0u);
}

}  // namespace
}  // namespace ktls::carrier
