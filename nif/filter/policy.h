// The filter policy: how a decoded dist message is classified (drop | safe
// | unsafe) and what the mode makes of that. Pure functions over an
// immutable Policy; the NIF swaps in a new Policy when the configuration
// changes.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
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

// A pid of this node by identity: its number, serial and creation.
struct PidId {
  uint32_t id = 0, serial = 0, creation = 0;
  bool operator==(const PidId&) const = default;
};

// What the receiver of a message is, as far as the policy cares (see
// DESIGN.md, "System processes"). Protection follows the process: a system
// process gets the same rules whether it is named, addressed by pid or
// reached through an alias.
enum class Role : uint8_t {
  Unknown,      // a process of this node not looked up yet
  Gone,         // no such process (dead pid, unregistered name)
  User,         // an application process
  System,       // an OTP system process that takes nothing from other nodes
  Io,           // OTP's io servers (user, standard_error, group): io requests
  NetKernel,    // net_kernel
  Global,       // global_name_server, global's locker, global_group
  Pg,           // a pg scope
  Rex,          // rex, the rpc server
  LoggerProxy,  // logger_proxy: log events of remote processes
  Alias,        // reached through an alias: the owner is not known
};
inline constexpr int kRoleCount = 11;
const char* role_name(Role r);
std::optional<Role> role_from_name(std::string_view name);
// Every role but Unknown and Alias: what a looked-up process can be.
inline constexpr std::array<Role, 9> kConcreteRoles = {
    Role::Gone,   Role::User, Role::System, Role::Io,         Role::NetKernel,
    Role::Global, Role::Pg,   Role::Rex,    Role::LoggerProxy};
inline constexpr uint16_t role_bit(Role r) { return uint16_t(1u << static_cast<unsigned>(r)); }
// OTP system processes (every role but Unknown, Gone, User and Alias).
bool is_system(Role r);

// The node's processes and atoms as the filter sees them. The NIF answers
// from the VM (and a cache of looked-up pids); tests answer from a table.
// Called on the thread that runs the channel.
class Directory {
 public:
  virtual ~Directory() = default;
  // Role of a process of this node; Unknown when it has not been looked up.
  virtual Role role_of(const PidId& pid) const = 0;
  // The process registered as `name` now; nullopt when none is.
  virtual std::optional<PidId> whereis(std::string_view name) const = 0;
  // Whether the node's atom table has `text` (Latin-1 or UTF-8) already.
  virtual bool atom_exists(std::string_view text, bool latin1) const = 0;
  // Role of the process registered as `name` now (`pid` set to it); Gone
  // when none is.
  Role role_of_name(std::string_view name, std::optional<PidId>& pid) const;
  // Changes whenever the roles looked up so far are forgotten (the set of
  // system applications changed): an answer given before must not serve a
  // message judged after. Any thread.
  virtual uint64_t generation() const { return 0; }
};

// A directory without a VM: registered names of OTP's own processes map to
// their roles (pids stand for themselves: id = position in the table, serial
// 0), every other name and pid is an application process, and every atom
// exists. For tests, the fuzz target and filter_decode.
class StaticDirectory : public Directory {
 public:
  Role role_of(const PidId& pid) const override;
  std::optional<PidId> whereis(std::string_view name) const override;
  bool atom_exists(std::string_view, bool) const override { return true; }
  // The pid whereis() gives for a well-known name (tests).
  static std::optional<PidId> pid_of(std::string_view name);
};
const Directory& static_directory();

struct Policy {
  Mode mode = Mode::Enforce;
  // Break glass: false passes every message without decoding it (the atom
  // cache and fragment bookkeeping still run, so switching back is safe).
  bool inspect = true;
  uint64_t max_message_size = 128ull << 20;
  uint64_t max_reassembly_bytes = 256ull << 20;
  uint32_t max_open_fragments = 65536;
  // Monitor mode counts what max_message_size and max_reassembly_bytes
  // would drop and delivers it; true drops it in monitor mode too (a
  // trusted peer of an enforcing node: policy_for(true)).
  bool limits_in_monitor = false;
  bool limits_counted_only() const { return mode == Mode::Monitor && !limits_in_monitor; }
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
  // Messages to global's processes larger than this are dropped: global
  // stores what its protocol carries (names), on every node.
  uint64_t max_global_message_size = 1ull << 20;
  // Atoms a message may create on this node (the atom table is never
  // collected and a full one aborts the VM): per connection and node-wide.
  uint64_t max_new_atoms_per_connection = 100000;
  uint64_t max_new_atoms = 500000;

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

// Where a message goes, for looking up its receiver: a pid, a registered
// name or an alias (`to` is the element of the control message).
struct Destination {
  enum class Kind : uint8_t { None, Pid, Name, Alias } kind = Kind::None;
  Term to;
};
// The destination whose role the policy needs; None when no rule depends on
// it (spawn requests, monitors, replies).
Destination destination(const Message& msg);

// Classifies a message to a receiver of role `to` (User for messages whose
// destination() is None).
Classification classify(const Policy& policy, const Message& msg, Role to,
                        const Directory& directory = static_directory());

// classify() for a receiver of this node not looked up yet: for every
// role it can have (kConcreteRoles but Gone, to which a message is lost
// anyway). `safe` and `drop` are the bits (role_bit) of the roles for
// which the message is Safe or Drop, `all` those of every role judged;
// `system` is the classification for Role::System, the strictest reading
// (it answers a refused caller). The same as calling classify() per role;
// what does not depend on the role is computed once.
struct RoleClassifications {
  uint16_t safe = 0, drop = 0, all = 0;
  Classification system;
};
RoleClassifications classify_unresolved(const Policy& policy, const Message& msg,
                                        const Directory& directory = static_directory());

// The answer the sender of a message (its payload) waits for, if it is a
// call, a sys system message or an io request; for messages refused for
// their size rather than their content.
Refusal sender_refusal(const Term& payload);

// Node name of a pid or reference term; empty for anything else.
std::string term_node(const Term& t);

}  // namespace ktls::filter
