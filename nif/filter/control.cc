#include "nif/filter/control.h"

#include <array>

namespace ktls::filter {
namespace {

constexpr std::array<ControlInfo, kControlCount> make_table() {
  std::array<ControlInfo, kControlCount> t{};
  uint8_t i = 0;
#define X(E, CODE, NAME, ARITY, PAYLOAD, KIND, FROM, TO)                    \
  t[i] = ControlInfo{Op::E, NAME, ARITY, PAYLOAD, Kind::KIND, FROM, TO, i}; \
  i++;
#include "nif/filter/control.def"
#undef X
  return t;
}

constexpr std::array<ControlInfo, kControlCount> kTable = make_table();

// Op code -> table index + 1 (0 = unknown).
constexpr std::array<uint8_t, 64> make_index() {
  std::array<uint8_t, 64> ix{};
  for (const ControlInfo& c : kTable)
    ix[static_cast<uint8_t>(c.op)] = static_cast<uint8_t>(c.index + 1);
  return ix;
}
constexpr std::array<uint8_t, 64> kIndex = make_index();

}  // namespace

std::span<const ControlInfo> controls() { return kTable; }

const ControlInfo* control_info(int64_t op) {
  if (op < 0 || op >= static_cast<int64_t>(kIndex.size()) || kIndex[op] == 0) return nullptr;
  return &kTable[kIndex[op] - 1];
}

}  // namespace ktls::filter
