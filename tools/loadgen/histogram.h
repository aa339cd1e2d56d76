// Latency histogram: log-linear buckets (64 per power of two, so a quantile
// is within 1.6% of the value recorded), fixed size, no allocation when
// recording. Not thread-safe: one owner records.
#pragma once

#include <array>
#include <cstdint>

namespace ktls::loadgen {

class Histogram {
 public:
  // Records one value (e.g. nanoseconds). Values above max_value() are
  // recorded as max_value().
  void record(uint64_t v);
  uint64_t count() const { return count_; }
  uint64_t max() const { return max_; }
  uint64_t min() const { return count_ ? min_ : 0; }
  double mean() const { return count_ ? static_cast<double>(sum_) / count_ : 0; }
  // The value below which fraction q (0..1) of the recorded values lie: the
  // upper edge of the bucket that holds it, capped at max(). 0 when empty.
  uint64_t quantile(double q) const;
  static constexpr uint64_t max_value() { return (uint64_t{1} << kTopBit) - 1; }

 private:
  static constexpr int kSubBits = 6;  // 64 buckets per power of two
  static constexpr int kTopBit = 44;  // about 4.9 hours in ns
  static constexpr int kBuckets = (kTopBit - kSubBits + 1) << kSubBits;
  static int index_of(uint64_t v);
  static uint64_t upper_edge(int index);

  std::array<uint64_t, kBuckets> counts_{};
  uint64_t count_ = 0;
  uint64_t sum_ = 0;
  uint64_t min_ = ~uint64_t{0};
  uint64_t max_ = 0;
};

}  // namespace ktls::loadgen
