// The filter policy: how a decoded dist message is classified (drop | safe
// | unsafe) and what the mode makes of that. Pure functions over an
// immutable Policy; the NIF swaps in a new Policy when the configuration
// changes.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "nif/filter/control.h"
#include "nif/filter/etf.h"

namespace ktls::filter {

enum class Hint : uint8_t { Safe, Unsafe, Drop };
enum class Mode : uint8_t { Enforce, Monitor, Off };

const char* hint_name(Hint h);
const char* mode_name(Mode m);

// {Module, Function, Arity}; an empty function or arity -1 matches any.
struct Mfa {
  std::string module;
  std::string function;
  int arity = -1;
};

// A local pid by identity (node, id, serial), without its creation.
struct PidId {
  std::string node;
  uint32_t id = 0, serial = 0;
  bool operator==(const PidId&) const = default;
};

struct Policy {
  Mode mode = Mode::Enforce;
  // Break glass: false passes every message without decoding it (the atom
  // cache and fragment bookkeeping still run, so switching back is safe).
  bool inspect = true;
  uint64_t max_message_size = 128ull << 20;
  uint64_t max_reassembly_bytes = 256ull << 20;
  uint32_t max_open_fragments = 64;
  // Extra MFAs allowed through spawn_request / erpc / rpc, on top of the
  // built-in list.
  std::vector<Mfa> allow_mfa;
  // Registered names that may receive anything (protected names included).
  std::vector<std::string> allow_reg_names;
  // A handler module decides unsafe messages (the NIF asks the connection's
  // input process) instead of the policy dropping them.
  bool handler = false;
  // The handler exports spawn_request_init/4: unsafe spawn requests are
  // redirected to it (the spawned process runs
  // ktls_filter_handler:spawn_request_init/4, which calls the handler)
  // instead of being asked about with classify/4.
  bool handler_spawn_init = false;
  // Pids of the protected processes of this node (protected_name()): exit
  // and group-leader signals from remote nodes to them are dropped. The
  // NIF fills it from the registered names.
  std::vector<PidId> protected_pids;

  bool mfa_allowed(std::string_view m, std::string_view f, int64_t arity) const;
  bool name_allowed(std::string_view name) const;
};

// A decoded control message and its payload (views into the packet).
struct Message {
  const ControlInfo* info = nullptr;
  Term control;
  Term payload;  // invalid when the message has none
};

// A refused request whose caller waits for an answer (gen_server and
// supervisor calls, sys system messages, old rpc via rex, io requests).
// In place of the message the filter hands the VM a spawn request of
// erlang:send(Dest, Answer) from the caller, so the caller gets an error at
// once instead of waiting forever (OTP's calls to remote processes default
// to timeout infinity).
enum class Answer : uint8_t {
  None,
  CallError,  // gen call: {Tag, {error, unauthorized}}
  RpcBadRpc,  // rex call: {Tag, {badrpc, {'EXIT', unauthorized}}}
  IoError,    // io request: {io_reply, ReplyAs, {error, unauthorized}}
};

struct Refusal {
  Answer answer = Answer::None;
  Term caller;  // pid that made the request (the spawn request's parent)
  Term dest;    // where the answer goes: the caller or its alias
  Term tag;     // gen call Tag or io ReplyAs, as it came
  Term ref;     // a reference of the caller's node: the spawn request id
};

struct Classification {
  Classification() = default;
  Classification(Hint h, const char* r) : hint(h), reason(r) {}

  Hint hint = Hint::Safe;
  const char* reason = "";  // static text for logs and counters
  Refusal refusal;          // when not Safe: how the caller learns it
};

Classification classify(const Policy& policy, const Message& msg);

// The answer the sender of a message (its payload) waits for, if it is a
// call, a sys system message or an io request; for messages refused for
// their size rather than their content.
Refusal sender_refusal(const Term& payload);

// Registered names of OTP's own processes that remote nodes have no
// business messaging directly (supervisors, code server, init...).
bool protected_name(std::string_view name);
// The protected names, for the NIF to resolve into protected_pids.
std::span<const std::string_view> protected_names();

// Identity of a pid term; nullopt for anything else.
std::optional<PidId> pid_id(const Term& t);

// Node name of a pid or reference term; empty for anything else.
std::string term_node(const Term& t);

}  // namespace ktls::filter
