#include "tools/loadgen/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace ktls::loadgen {

// Values below 2^kSubBits have a bucket each; above, bucket (e, m) holds the
// values whose top bit is e and whose next kSubBits bits are m.
int Histogram::index_of(uint64_t v) {
  if (v < (uint64_t{1} << kSubBits)) return static_cast<int>(v);
  int e = 63 - std::countl_zero(v);  // >= kSubBits
  int shift = e - kSubBits;
  auto m = static_cast<int>((v >> shift) & ((1 << kSubBits) - 1));
  return ((shift + 1) << kSubBits) + m;
}

uint64_t Histogram::upper_edge(int index) {
  if (index < (1 << kSubBits)) return static_cast<uint64_t>(index);
  int shift = (index >> kSubBits) - 1;
  uint64_t m = static_cast<uint64_t>(index & ((1 << kSubBits) - 1)) | (uint64_t{1} << kSubBits);
  return ((m + 1) << shift) - 1;
}

void Histogram::record(uint64_t v) {
  v = std::min(v, max_value());
  ++counts_[index_of(v)];
  ++count_;
  sum_ += v;
  min_ = std::min(min_, v);
  max_ = std::max(max_, v);
}

uint64_t Histogram::quantile(double q) const {
  if (count_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(count_)));
  rank = std::max<uint64_t>(rank, 1);
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::min(upper_edge(i), max_);
  }
  return max_;
}

}  // namespace ktls::loadgen
