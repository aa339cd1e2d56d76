// The control-message table (control.def) as C++: op codes, names, arities
// and the fields the policy looks at.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ktls::filter {

// What a control message does, for the policy.
enum class Kind : uint8_t {
  Signal,        // link, exit, monitor, group leader, spawn reply...: no code runs
  Send,          // a message to a pid or an alias
  RegSend,       // a message to a registered name
  SpawnRequest,  // spawn M:F(Args) on this node
};

enum class Op : uint8_t {
#define X(E, CODE, NAME, ARITY, PAYLOAD, KIND, FROM, TO) E = CODE,
#include "nif/filter/control.def"
#undef X
};

struct ControlInfo {
  Op op;
  const char* name;  // statistics name, e.g. "reg_send"
  uint8_t arity;     // of the control tuple
  bool payload;      // a message term follows the control tuple
  Kind kind;
  uint8_t from;   // tuple element of the sender, 0 = none
  uint8_t to;     // tuple element of the destination, 0 = none
  uint8_t index;  // position in controls()
};

// Every control message, in table order.
std::span<const ControlInfo> controls();
inline constexpr size_t kControlCount = 0
#define X(E, CODE, NAME, ARITY, PAYLOAD, KIND, FROM, TO) +1
#include "nif/filter/control.def"
#undef X
    ;

// The entry for an op code, nullptr when OTP 25 has no such control message.
const ControlInfo* control_info(int64_t op);

}  // namespace ktls::filter
