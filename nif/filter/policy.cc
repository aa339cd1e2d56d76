#include "nif/filter/policy.h"

#include <array>
#include <string>
#include <utility>
#include <vector>

namespace ktls::filter {
namespace {

// What ordinary OTP traffic between nodes spawns or casts on a peer.
// (net_adm:ping/1 is not here: run for a peer it makes this node spawn and
// connect wherever the peer says, without limit.)
const std::array<Mfa, 1> kBuiltinMfa = {{
    {"erlang", "node", 0},
}};

// Modules whose functions an io server may run for a remote io_request:
// io:format/3 to a remote group leader sends {put_chars, Enc, io_lib,
// format, Args}, io:read/fread send {get_until, ..., erl_scan | io_lib, ...}.
bool io_module_allowed(std::string_view m) { return m == "io_lib" || m == "erl_scan"; }

// OTP's registered processes and their roles, for StaticDirectory.
struct KnownName {
  std::string_view name;
  Role role;
};
constexpr std::array<KnownName, 28> kKnownNames = {{
    {"init", Role::System},
    {"erl_prim_loader", Role::System},
    {"code_server", Role::System},
    {"kernel_sup", Role::System},
    {"net_sup", Role::System},
    {"kernel_safe_sup", Role::System},
    {"application_controller", Role::System},
    {"erts_code_purger", Role::System},
    {"logger", Role::System},
    {"logger_sup", Role::System},
    {"file_server_2", Role::System},
    {"erl_signal_server", Role::System},
    {"inet_db", Role::System},
    {"kernel_refc", Role::System},
    {"standard_error_sup", Role::System},
    {"user_drv", Role::System},
    {"erl_epmd", Role::System},
    {"auth", Role::System},
    {"timer_server", Role::System},
    {"socket_registry", Role::System},
    {"rex_sup", Role::System},
    {"user", Role::Io},
    {"standard_error", Role::Io},
    {"net_kernel", Role::NetKernel},
    {"global_name_server", Role::Global},
    {"global_group", Role::Global},
    {"rex", Role::Rex},
    {"logger_proxy", Role::LoggerProxy},
}};
// pg's default scope is an OTP process too, but its name is also the
// module's: left to the real directory.

// Arity of an argument list term, -1 when it is not a proper list.
int64_t args_arity(const Term& args) {
  if (args.tag() == tag::kNil) return 0;
  if (args.tag() == tag::kString) return args.list_length();
  if (args.tag() != tag::kList || args.list_length() == 0) return -1;
  // A proper list ends with NIL after its last element.
  if (args.list_element(args.list_length() - 1).next().tag() != tag::kNil) return -1;
  return args.list_length();
}

Classification check_mfa(const Policy& p, Term m, Term f, int64_t arity) {
  auto ma = m.atom();
  auto fa = f.atom();
  if (!ma || !fa || arity < 0) return {Hint::Unsafe, "spawn of something that is not M:F/A"};
  if (p.mfa_allowed(*ma, *fa, arity)) return {Hint::Safe, "allowed mfa"};
  return {Hint::Unsafe, "mfa not allowed"};
}

// A fun as code to run: export funs are M:F/A; other funs run code of
// their module, allowed only when the whole module is.
Classification check_fun(const Policy& p, const Term& fun, int64_t arity) {
  auto mod = fun.fun_module();
  if (!mod) return {Hint::Drop, "bad fun"};
  if (fun.tag() == tag::kExport) {
    // EXPORT_EXT: module, function and arity terms in a row.
    Term f = fun.export_function();
    auto fa = f.atom();
    if (fa && p.mfa_allowed(*mod, *fa, arity)) return {Hint::Safe, "allowed mfa"};
    return {Hint::Unsafe, "mfa not allowed"};
  }
  for (const Mfa& a : p.allow_mfa) {
    if (a.module == *mod && a.function.empty() && a.arity < 0)
      return {Hint::Safe, "allowed module"};
  }
  return {Hint::Unsafe, "spawn of a fun"};
}

// spawn_request {29, ReqId, From, GL, {M, F, A}, Opts[, Token]} with Args as
// payload; erpc and erlang:apply wrap the real target in their arguments.
Classification spawn_request(const Policy& p, const Message& msg) {
  Term mfa = msg.control.element(4);
  if (!mfa.is_tuple() || mfa.arity() != 3) return {Hint::Drop, "spawn_request without {M, F, A}"};
  Term m = mfa.element(0), f = mfa.element(1);
  auto ma = m.atom();
  auto fa = f.atom();
  const Term& args = msg.payload;
  int64_t n = args_arity(args);
  if (!ma || !fa || n < 0) return {Hint::Drop, "spawn_request with a bad M:F/A"};
  if (*ma == "erpc" && *fa == "execute_call" && n == 4) {
    Term a = args.list_element(3);
    return check_mfa(p, args.list_element(1), args.list_element(2), args_arity(a));
  }
  if (*ma == "erpc" && *fa == "execute_cast" && n == 3) {
    Term a = args.list_element(2);
    return check_mfa(p, args.list_element(0), args.list_element(1), args_arity(a));
  }
  if (*ma == "erlang" && *fa == "apply" && n == 3) {
    Term a = args.list_element(2);
    return check_mfa(p, args.list_element(0), args.list_element(1), args_arity(a));
  }
  if (*ma == "erlang" && *fa == "apply" && n == 2) {
    Term fun = args.list_element(0);
    if (fun.is_fun()) return check_fun(p, fun, args_arity(args.list_element(1)));
    return {Hint::Unsafe, "erlang:apply of something that is not a fun"};
  }
  return check_mfa(p, m, f, n);
}

bool is_ref(const Term& t) {
  return t.tag() == tag::kNewerReference || t.tag() == tag::kNewReference;
}

// Export funs that do not count where a fun check applies: those of the
// modules the receiving server is built to call.
enum class Exempt : uint8_t {
  None,
  Io,      // io_lib, erl_scan (the shell passes {reserved_word_fun, fun
           // erl_scan:reserved_word/1} to erl_scan)
  Global,  // global's name clash resolvers (its own funs, local or export)
  Logger,  // report formatters of OTP's reports (fun proc_lib:report_cb/2,
           // fun supervisor:format_log/2, fun logger:format_otp_report/1...,
           // error_logger's own funs)
};

// A map's first key as a view into `copy`, a standalone copy of the map
// (Term has no map navigation), and its number of key/value pairs; an
// invalid view when `t` is not a map.
Term map_first_key(const Term& t, std::vector<uint8_t>& copy, uint32_t& pairs) {
  copy.clear();
  pairs = 0;
  if (t.tag() != tag::kMap || !t.append_to(copy) || copy.size() < 5) return {};
  pairs =
      (uint32_t{copy[1]} << 24) | (uint32_t{copy[2]} << 16) | (uint32_t{copy[3]} << 8) | copy[4];
  return Term(Bytes(copy.data(), copy.size()), 5, AtomRefs{});
}

// Whether a term may hold a fun that runs code of the sender's choosing:
// any fun but the export funs `ex` exempts and those of allowed MFAs.
// Walks at most `budget` terms, 16 deep; past that the answer is yes.
bool may_hold_fun(const Policy& p, const Term& t, int depth, Exempt ex, int64_t& budget) {
  if (depth > 16 || --budget < 0) return true;
  if (t.tag() == tag::kExport) {
    auto m = t.fun_module();
    auto f = t.export_function().atom();
    auto a = t.export_function().next().integer();
    if (!m || !f || !a) return true;
    if (ex == Exempt::Io && io_module_allowed(*m)) return false;
    if (ex == Exempt::Global && *m == "global") return false;
    if (ex == Exempt::Logger && (*f == "format_log" || *f == "report_cb" ||
                                 *f == "format_otp_report" || *f == "format_report")) {
      return false;
    }
    return !p.mfa_allowed(*m, *f, *a);
  }
  // global:register_name/2 sends its default resolver as the local fun
  // `fun random_exit_name/3` of module global: it runs global's own code.
  // error_logger's reports carry its local fun report_to_format/1.
  if (t.is_fun()) {
    return !((ex == Exempt::Global && t.fun_module() == "global") ||
             (ex == Exempt::Logger && t.fun_module() == "error_logger"));
  }
  uint32_t n = 0;
  Term e;
  std::vector<uint8_t> map;  // see map_first_key
  if (t.is_tuple()) {
    n = t.arity();
    e = t.element(0);
  } else if (t.tag() == tag::kList) {
    n = t.list_length() + 1;  // and the tail
    e = t.list_element(0);
  } else if (t.tag() == tag::kMap) {
    uint32_t pairs = 0;
    e = map_first_key(t, map, pairs);
    if (map.empty()) return true;  // not copied: cannot look inside
    n = 2 * pairs;
  }
  for (uint32_t i = 0; i < n; i++, e = e.next()) {
    if (may_hold_fun(p, e, depth + 1, ex, budget)) return true;
  }
  return false;
}

bool may_hold_fun(const Policy& p, const Term& t, Exempt ex = Exempt::None) {
  int64_t budget = int64_t{1} << 20;
  return may_hold_fun(p, t, 0, ex, budget);
}

// The answer for a gen call (or sys system message) whose From = {Pid, Tag}
// with Tag = Ref | [alias | Ref] | [[alias | Ref] | _] (gen.erl). None when
// From has another shape or Pid and Ref are of different nodes: then there
// is no caller the answer could reach without the VM refusing it.
Refusal call_refusal(const Term& from, Answer answer) {
  if (!from.is_tuple() || from.arity() != 2) return {};
  Term pid = from.element(0);
  Term tag = from.element(1);
  if (!pid.is_pid()) return {};
  Term ref;
  Term dest = pid;
  if (is_ref(tag)) {
    ref = tag;
  } else if (tag.is_tuple() && tag.arity() == 2 && is_ref(tag.element(0)) &&
             tag.element(1).atom()) {
    // gen_server:multi_call's {Ref, Node}: the reply is {{Ref, Node}, Reply}.
    ref = tag.element(0);
  } else if (tag.tag() == tag::kList && tag.list_length() == 1) {
    Term head = tag.list_element(0);
    if (head.tag() == tag::kList && head.list_length() == 1) head = head.list_element(0);
    Term alias = head.next();
    if (head.is_atom("alias") && is_ref(alias)) ref = dest = alias;
  } else if (tag.tag() == tag::kList && tag.list_length() > 1) {
    // [[alias | Ref] | Rest] as a list of more elements: the first is the alias.
    Term head = tag.list_element(0);
    if (head.tag() == tag::kList && head.list_length() == 1) {
      Term a = head.list_element(0);
      if (a.is_atom("alias") && is_ref(a.next())) ref = dest = a.next();
    }
  }
  if (!ref.valid()) return {};
  std::string node = term_node(pid);
  if (node.empty() || node != term_node(ref)) return {};
  return {answer, pid, dest, tag, ref};
}

// {io_request, From, ReplyAs, Request}: the io reply goes to From when
// ReplyAs is a reference of From's node (io.erl makes it with make_ref()).
Refusal io_refusal(const Term& msg) {
  Term from = msg.element(1);
  Term reply_as = msg.element(2);
  if (!from.is_pid() || !is_ref(reply_as)) return {};
  std::string node = term_node(from);
  if (node.empty() || node != term_node(reply_as)) return {};
  return {Answer::IoError, from, from, reply_as, reply_as};
}

// Requests that name a function for the io server to call are code
// execution unless the module is io_lib or erl_scan (or allowed), and even
// then their arguments must not carry funs (erl_scan's reserved_word_fun
// option runs a fun; io_lib:format/fwrite print funs, never call them).
// Also looks into {requests, [...]}.
Classification io_request(const Policy& p, const Term& req, int depth) {
  if (depth > 4) return {Hint::Drop, "io_request nested too deep"};
  if (req.is_tuple()) {
    Term first = req.element(0);
    uint32_t n = req.arity();
    if (first.is_atom("requests") && n == 2) {
      // Walked element by element (next()): list_element(i) walks from the
      // head each time, quadratic in the list a peer chooses.
      Term list = req.element(1);
      const uint32_t len = list.list_length();
      Term e = list.list_element(0);
      for (uint32_t i = 0; i < len; i++, e = e.next()) {
        Classification c = io_request(p, e, depth + 1);
        if (c.hint != Hint::Safe) return c;
      }
      return {};
    }
    // {put_chars, M, F, A} | {put_chars, Enc, M, F, A} |
    // {get_until, Prompt, M, F, A} | {get_until, Enc, Prompt, M, F, A}
    bool put = first.is_atom("put_chars");
    bool get = first.is_atom("get_until");
    if ((put && (n == 4 || n == 5)) || (get && (n == 5 || n == 6))) {
      Term m = req.element(n - 3), f = req.element(n - 2), a = req.element(n - 1);
      auto ma = m.atom();
      auto fa = f.atom();
      if (!ma || !fa) return {Hint::Drop, "io_request with a bad M:F/A"};
      if (p.mfa_allowed(*ma, *fa, args_arity(a))) return {};
      if (!io_module_allowed(*ma)) return {Hint::Drop, "io_request that calls a function"};
      if (*ma == "io_lib" && (*fa == "format" || *fa == "fwrite")) return {};
      if (may_hold_fun(p, a, Exempt::Io)) {
        return {Hint::Drop, "io_request with a fun in its arguments"};
      }
    }
  }
  // Any other request that carries a fun: {setopts, [{expand_fun, F}]}
  // makes the group leader run F at the next TAB on that terminal.
  if (may_hold_fun(p, req, Exempt::Io)) return {Hint::Drop, "io_request with a fun"};
  return {};
}

// rex (the rpc server) runs {call | block_call | cast, M, F, A, GL} for
// old-style rpc. Checked whatever the destination: a remote node can name
// rex by its pid as well.
Classification rex_request(const Policy& p, const Term& req) {
  if (!req.is_tuple() || req.arity() < 4) return {};
  Term kind = req.element(0);
  if (kind.is_atom("call") || kind.is_atom("block_call") || kind.is_atom("cast")) {
    Classification c = check_mfa(p, req.element(1), req.element(2), args_arity(req.element(3)));
    if (c.hint == Hint::Unsafe) c.reason = "rpc request of an mfa not allowed";
    return c;
  }
  return {};
}

// The value under atom key `key` of a map term, as a view into `copy`
// (see map_first_key); invalid when the key is not there.
Term map_get(const Term& map, std::string_view key, std::vector<uint8_t>& copy) {
  uint32_t pairs = 0;
  Term k = map_first_key(map, copy, pairs);
  for (uint32_t i = 0; i < pairs && k.valid(); i++) {
    Term v = k.next();
    if (k.is_atom(key)) return v;
    k = v.next();
  }
  return {};
}

// supervisor:start_child/2 with a child spec runs the spec's start MFA;
// every supervisor (kernel_sup and any application's, named or by pid) takes
// it. A list (simple_one_for_one's extra arguments) runs the supervisor's
// own MFA and passes; so does a map without a start key (no supervisor
// starts it).
Classification supervisor_request(const Policy& p, const Term& req) {
  if (!req.is_tuple() || req.arity() != 2 || !req.element(0).is_atom("start_child")) return {};
  Term spec = req.element(1);
  Term mfa;
  std::vector<uint8_t> copy;
  if (spec.tag() == tag::kMap) {
    mfa = map_get(spec, "start", copy);
    if (!mfa.valid()) return {};
  } else if (spec.is_tuple() && spec.arity() == 6) {
    mfa = spec.element(1);
  } else {
    return {};
  }
  if (!mfa.is_tuple() || mfa.arity() != 3) return {Hint::Unsafe, "supervisor child spec"};
  Classification c = check_mfa(p, mfa.element(0), mfa.element(1), args_arity(mfa.element(2)));
  if (c.hint == Hint::Unsafe) c.reason = "supervisor child spec from a remote node";
  return c;
}

Classification payload_checks(const Policy& p, const Directory& d, const Term& payload, int depth);

// What system_checks answers for a message that no rule of the receiver's
// role decided: the same for every system role, so a message judged for
// every role (a receiver not looked up yet) computes it once.
class SystemFallback {
 public:
  SystemFallback(const Policy& p, const Directory& d, const Term& m, int depth)
      : p_(p), d_(d), m_(m), depth_(depth) {}
  const Classification& get() {
    if (!done_) {
      // The more telling reason when the payload would be refused anywhere.
      c_ = payload_checks(p_, d_, m_, depth_);
      if (c_.hint == Hint::Safe) {
        c_ = {Hint::Unsafe, "message to a system process"};
        c_.refusal = sender_refusal(m_);
      }
      done_ = true;
    }
    return c_;
  }

 private:
  const Policy& p_;
  const Directory& d_;
  const Term& m_;
  int depth_;
  bool done_ = false;
  Classification c_;
};

// `shared`, when given, is the SystemFallback of this payload and depth.
Classification receiver_checks(const Policy& p, const Directory& d, Role to, const Term& payload,
                               int depth, SystemFallback* shared = nullptr);

// A message a server passes on to a registered name of its node; `name`
// is an atom, a pid or {Name, Node} (then the other node decides). The
// receiver is looked up as for a message sent there; one not looked up yet
// counts as a system process.
Classification relayed(const Policy& p, const Directory& d, const Term& name, const Term& msg,
                       int depth) {
  if (depth > 4) return {Hint::Drop, "relayed message nested too deep"};
  if (auto n = name.atom()) {
    if (p.name_allowed(*n)) return {Hint::Safe, "allowed name"};
    std::optional<PidId> pid;
    Role r = d.role_of_name(*n, pid);
    if (r == Role::Unknown) r = Role::System;
    return receiver_checks(p, d, r, msg, depth + 1);
  }
  return payload_checks(p, d, msg, depth + 1);
}

// {X, Second} messages: rex runs {X, {call, M, F, A, GL}} (the form for
// hidden C nodes) and relays {From, {sbcast, Name, Msg}} (Name ! Msg) and
// {From, {send, Name, Msg}} (Name ! {From, Msg}).
Classification pair_checks(const Policy& p, const Directory& d, const Term& second, int depth) {
  if (!second.is_tuple()) return {};
  Term kind = second.element(0);
  if (second.arity() == 5 && kind.is_atom("call")) return rex_request(p, second);
  if (second.arity() == 3 && (kind.is_atom("sbcast") || kind.is_atom("send"))) {
    Classification c = relayed(p, d, second.element(1), second.element(2), depth);
    if (c.hint == Hint::Safe && kind.is_atom("send")) {
      c = pair_checks(p, d, second.element(2), depth + 1);
    }
    return c;
  }
  return {};
}

// Requests to gen servers that run code or spawn, whoever the receiver is.
Classification call_request(const Policy& p, const Term& req) {
  Classification c = supervisor_request(p, req);
  if (c.hint != Hint::Safe || !req.is_tuple()) return c;
  Term kind = req.element(0);
  const uint32_t n = req.arity();
  // net_kernel runs {spawn | spawn_link, M, F, A, GL} and
  // {spawn_opt, M, F, A, Opts, Link, GL} for any caller (the spawn/4 of old
  // nodes).
  if ((n == 5 && (kind.is_atom("spawn") || kind.is_atom("spawn_link"))) ||
      (n == 7 && kind.is_atom("spawn_opt"))) {
    c = check_mfa(p, req.element(1), req.element(2), args_arity(req.element(3)));
    if (c.hint == Hint::Unsafe) c.reason = "net_kernel spawn of an mfa not allowed";
    return c;
  }
  // global_name_server's registrar runs the fun of {registrar, Fun}.
  if (n == 2 && kind.is_atom("registrar")) return {Hint::Unsafe, "global registrar request"};
  return {};
}

// Payload shapes that make the receiving process run code, whoever the
// receiver is: io requests with M:F/A, rpc requests, supervisor child
// specs, sys messages carrying funs (sys:replace_state/2, sys:install/2),
// net_kernel's and rex's relays and spawns.
Classification payload_checks(const Policy& p, const Directory& d, const Term& payload, int depth) {
  if (!payload.is_tuple()) return {};
  const uint32_t n = payload.arity();
  Term label = payload.element(0);
  if (n == 4 && label.is_atom("io_request")) {
    Classification c = io_request(p, payload.element(3), 0);
    if (c.hint != Hint::Safe) c.refusal = io_refusal(payload);
    return c;
  }
  if (n == 2 && label.is_atom("$gen_cast")) return rex_request(p, payload.element(1));
  if (n == 3 && label.is_atom("$gen_call")) {
    Term req = payload.element(2);
    Classification c = rex_request(p, req);
    if (c.hint != Hint::Safe) {
      c.refusal = call_refusal(payload.element(1), Answer::RpcBadRpc);
      return c;
    }
    c = call_request(p, req);
    if (c.hint != Hint::Safe) c.refusal = call_refusal(payload.element(1), Answer::CallError);
    return c;
  }
  // sys: remote nodes may read (get_state, get_status); suspend,
  // terminate, replace_state (a fun), install (a fun), change_code... are
  // local business.
  if (n == 3 && label.is_atom("system") && !payload.element(2).is_atom("get_state") &&
      !payload.element(2).is_atom("get_status")) {
    Classification c{Hint::Unsafe, "sys request from a remote node"};
    c.refusal = call_refusal(payload.element(1), Answer::CallError);
    return c;
  }
  // gen_event managers run Handler:init(Args) for {Label, From,
  // {add_handler, Handler, Args}} (and the swaps): any module's init/1.
  if (n == 3 && payload.element(0).is_pid() && payload.element(2).is_tuple()) {
    Term cmd = payload.element(2).element(0);
    if (cmd.is_atom("add_handler") || cmd.is_atom("add_sup_handler") ||
        cmd.is_atom("swap_handler") || cmd.is_atom("swap_sup_handler")) {
      Classification c{Hint::Unsafe, "gen_event handler change from a remote node"};
      c.refusal = call_refusal(payload.element(1), Answer::CallError);
      return c;
    }
  }
  if (n == 2) return pair_checks(p, d, payload.element(1), depth);
  // net_kernel: {From, registered_send, To, Msg} is To ! Msg there;
  // {From, badcookie, To, Msg} disconnects From's node.
  if (n == 4 && payload.element(1).is_atom("registered_send")) {
    return relayed(p, d, payload.element(2), payload.element(3), depth);
  }
  if (n == 4 && payload.element(1).is_atom("badcookie")) {
    return {Hint::Unsafe, "net_kernel badcookie message"};
  }
  return {};
}

// Calls net_kernel answers for remote nodes; everything else it takes
// (connect, disconnect, allow, ticktime and option changes, spawns, relays)
// is local business.
bool net_kernel_call_allowed(const Term& req) {
  for (std::string_view a : {"longnames", "nodename", "ticktime", "allowed", "get_state"}) {
    if (req.is_atom(a)) return true;
  }
  return req.is_tuple() && req.arity() == 2 && req.element(0).is_atom("is_auth");
}

// A call to a protected process gets an error answer; other messages to
// them are just dropped.
Refusal protected_refusal(const Term& payload) {
  // gen_server calls and sys messages {Label, From, Request}, and gen_event
  // calls, whose label is the caller's pid.
  if (payload.is_tuple() && payload.arity() == 3 &&
      (payload.element(0).is_atom("$gen_call") || payload.element(0).is_atom("system") ||
       payload.element(0).is_pid())) {
    return call_refusal(payload.element(1), Answer::CallError);
  }
  return {};
}

// {Tag, Reply} with Tag a reference, [alias | Ref] (gen:reply) or
// {Ref, Node} (gen_server:multi_call), or {io_reply, ReplyAs, Reply}:
// answers to requests that a process of this node made. The VM's alias check and the caller's
// selective receive decide where they go; nothing runs code because of them.
bool is_reply(const Term& m) {
  if (!m.is_tuple()) return false;
  if (m.arity() == 3) return m.element(0).is_atom("io_reply");
  if (m.arity() != 2) return false;
  Term tag = m.element(0);
  if (is_ref(tag)) return true;
  if (tag.is_tuple() && tag.arity() == 2) return is_ref(tag.element(0)) && tag.element(1).atom();
  if (tag.tag() != tag::kList || tag.list_length() < 1) return false;
  Term head = tag.list_element(0);
  if (head.tag() == tag::kList && head.list_length() == 1) head = head.list_element(0);
  return head.is_atom("alias") && is_ref(head.next());
}

bool is_atom_in(const Term& t, std::initializer_list<std::string_view> names) {
  for (std::string_view n : names) {
    if (t.is_atom(n)) return true;
  }
  return false;
}

// Shapes of OTP's process protocols (behaviour requests, sys messages, the
// signals' message forms, io and code server requests): what a system
// process acts on.
bool is_otp_request(const Term& m) {
  if (!m.is_tuple() || m.arity() == 0) return false;
  for (std::string_view a : {"$gen_call", "$gen_cast", "system", "EXIT", "DOWN", "io_request",
                             "code_call", "nodeup", "nodedown", "stop"}) {
    if (m.element(0).is_atom(a)) return true;
  }
  // net_kernel's and auth's {From, registered_send | badcookie, To, Msg}
  if (m.arity() == 4 && is_atom_in(m.element(1), {"registered_send", "badcookie"})) return true;
  // gen_event's calls {Pid, {Pid, Tag}, Request}
  if (m.arity() != 3 || !m.element(0).is_pid()) return false;
  Term from = m.element(1);
  return from.is_tuple() && from.arity() == 2 && from.element(0).is_pid();
}

// global's protocol between nodes (global.erl, global_group.erl of OTP 25):
// the casts and infos of the name server, the locker's messages, the calls
// a remote global_name_server makes (registration and locks) and
// global_group's lookups.
bool global_protocol(const Term& m) {
  if (!m.is_tuple() || m.arity() == 0) return false;
  Term first = m.element(0);
  if (first.is_atom("$gen_cast") && m.arity() == 2) {
    Term req = m.element(1);
    Term tag = req.is_tuple() ? req.element(0) : req;
    return is_atom_in(
        tag, {"init_connect", "lock_is_set", "exchange", "exchange_ops", "resolved", "new_nodes",
              "in_sync", "async_del_name", "async_del_lock", "lock_set", "registered_names",
              "registered_names_res", "find_name", "find_name_res", "conf_check"});
  }
  if (first.is_atom("$gen_call") && m.arity() == 3) {
    Term req = m.element(2);
    Term tag = req.is_tuple() ? req.element(0) : req;
    return is_atom_in(tag, {"register", "register_ext", "unregister", "set_lock", "del_lock",
                            "get_known", "get_synced", "get_protocol_version", "get_names_ext",
                            "whereis_name", "registered_names", "ng_add_check"});
  }
  // remove_connection: global's prevention of overlapping partitions asks
  // the other side of a lost connection to disconnect too.
  return is_atom_in(first, {"lost_connection", "remove_connection", "whereis", "init_connect_ack",
                            "cancel_connect", "his_the_locker", "cancel", "lock_set"});
}

// pg's protocol between scopes (pg.erl of OTP 25).
bool pg_protocol(const Term& m) {
  if (!m.is_tuple() || m.arity() == 0) return false;
  Term first = m.element(0);
  if (m.arity() == 4 && (first.is_atom("join") || first.is_atom("leave"))) return true;
  if ((m.arity() == 2 || m.arity() == 3) && first.is_atom("discover")) return true;
  if (m.arity() == 2 && first.is_atom("$gen_cast")) {
    Term req = m.element(1);
    return req.is_tuple() && req.arity() == 3 && req.element(0).is_atom("sync");
  }
  return false;
}

// rex's protocol (rpc.erl of OTP 25): calls and casts of M:F/A, relays, the
// form for hidden C nodes, and feature requests and their replies (to rex's
// nodes observer). The requests themselves are judged by payload_checks.
bool rex_protocol(const Term& m) {
  if (!m.is_tuple()) return false;
  Term first = m.element(0);
  if (m.arity() == 3 && first.is_atom("features_reply")) return true;
  if (m.arity() == 3 && first.is_atom("$gen_call")) {
    Term req = m.element(2);
    return req.is_tuple() &&
           (req.element(0).is_atom("call") || req.element(0).is_atom("block_call"));
  }
  if (m.arity() == 2 && first.is_atom("$gen_cast")) {
    Term req = m.element(1);
    return req.is_tuple() && req.element(0).is_atom("cast");
  }
  if (m.arity() == 2) {
    Term second = m.element(1);
    if (second.is_atom("features_request")) return true;
    return second.is_tuple() && is_atom_in(second.element(0), {"call", "sbcast", "send"});
  }
  return false;
}

// A message to an OTP system process of role `to`: only OTP's own protocol
// between nodes for that process, and replies. Everything else (calls and
// casts of any shape, sys requests, reads included, supervisor requests,
// fake EXIT/DOWN messages) is refused; a waiting caller is answered.
Classification system_checks(const Policy& p, const Directory& d, Role to, const Term& m, int depth,
                             SystemFallback& fallback) {
  if (is_reply(m)) return {Hint::Safe, "reply"};
  const bool call = m.is_tuple() && m.arity() == 3 && m.element(0).is_atom("$gen_call");
  switch (to) {
    case Role::Io:
      if (m.is_tuple() && m.arity() == 4 && m.element(0).is_atom("io_request")) {
        Classification c = payload_checks(p, d, m, depth);
        return c.hint == Hint::Safe ? Classification{Hint::Safe, "io request"} : c;
      }
      break;
    case Role::NetKernel:
      if (call && net_kernel_call_allowed(m.element(2))) return {Hint::Safe, "net_kernel request"};
      break;
    case Role::Global: {
      const uint64_t size = m.end() - m.offset();
      if (size > p.max_global_message_size) {
        Classification c{Hint::Drop, "message to global larger than max_global_message_size"};
        c.refusal = sender_refusal(m);
        return c;
      }
      if (!global_protocol(m) || (call && is_atom_in(m.element(2), {"disconnect", "stop"}))) break;
      // Name clash resolvers that are not global's own are code to run.
      if (may_hold_fun(p, m, Exempt::Global)) {
        Classification c{Hint::Unsafe, "global request with a fun"};
        c.refusal = sender_refusal(m);
        return c;
      }
      return {Hint::Safe, "global protocol"};
    }
    case Role::Pg:
      if (pg_protocol(m)) return {Hint::Safe, "pg protocol"};
      break;
    case Role::Rex:
      if (rex_protocol(m)) {
        Classification c = payload_checks(p, d, m, depth);
        return c.hint == Hint::Safe ? Classification{Hint::Safe, "rpc request"} : c;
      }
      break;
    case Role::LoggerProxy:
      // Log events of remote processes whose group leader is here; a
      // report_cb fun in their metadata runs when the event is formatted.
      if (m.is_tuple() && m.arity() >= 4 && m.element(0).is_atom("log")) {
        if (may_hold_fun(p, m, Exempt::Logger)) return {Hint::Unsafe, "log event with a fun"};
        return {Hint::Safe, "log event"};
      }
      break;
    default:
      break;
  }
  return fallback.get();
}

// A message (not a signal) to a receiver of role `to`.
Classification receiver_checks(const Policy& p, const Directory& d, Role to, const Term& payload,
                               int depth, SystemFallback* shared) {
  switch (to) {
    case Role::Gone:
      return {Hint::Drop, "no such process"};
    case Role::User:
    case Role::Unknown:
      return payload_checks(p, d, payload, depth);
    case Role::Alias: {
      // The owner of an alias is not known (the wire carries no pid):
      // replies pass, OTP's requests do not (a system process waiting for
      // a reply would act on them later), anything else is checked as for
      // an application process.
      if (is_reply(payload)) return {Hint::Safe, "reply"};
      if (is_otp_request(payload)) {
        Classification c{Hint::Unsafe, "OTP request to an alias"};
        c.refusal = sender_refusal(payload);
        return c;
      }
      return payload_checks(p, d, payload, depth);
    }
    default: {
      if (shared) return system_checks(p, d, to, payload, depth, *shared);
      SystemFallback fallback(p, d, payload, depth);
      return system_checks(p, d, to, payload, depth, fallback);
    }
  }
}

}  // namespace

Refusal sender_refusal(const Term& payload) {
  if (payload.is_tuple() && payload.arity() == 4 && payload.element(0).is_atom("io_request")) {
    return io_refusal(payload);
  }
  return protected_refusal(payload);
}

const char* hint_name(Hint h) {
  switch (h) {
    case Hint::Safe:
      return "safe";
    case Hint::Unsafe:
      return "unsafe";
    case Hint::Drop:
      return "drop";
  }
  return "?";
}

const char* mode_name(Mode m) {
  switch (m) {
    case Mode::Enforce:
      return "enforce";
    case Mode::Monitor:
      return "monitor";
    case Mode::Off:
      return "off";
  }
  return "?";
}

bool Policy::mfa_allowed(std::string_view m, std::string_view f, int64_t arity) const {
  auto match = [&](const Mfa& a) {
    return a.module == m && (a.function.empty() || (!f.empty() && a.function == f)) &&
           (a.arity < 0 || (arity >= 0 && a.arity == arity));
  };
  for (const Mfa& a : kBuiltinMfa) {
    if (match(a)) return true;
  }
  for (const Mfa& a : allow_mfa) {
    if (match(a)) return true;
  }
  return false;
}

bool Policy::name_allowed(std::string_view name) const {
  for (const std::string& n : allow_reg_names) {
    if (n == name) return true;
  }
  return false;
}

std::string term_node(const Term& t) {
  const uint8_t tg = t.tag();
  const bool ref = tg == tag::kNewerReference || tg == tag::kNewReference;
  if (!ref && tg != tag::kNewPid && tg != tag::kPid) return {};
  // The standalone form has the node as a plain atom (no cache reference).
  std::vector<uint8_t> b;
  if (!t.append_to(b)) return {};
  auto node = Term(Bytes(b.data(), b.size()), ref ? 3 : 1, AtomRefs{}).atom();
  return node ? std::string(*node) : std::string();
}

namespace {
// Role names, in the order of enum Role (the NIF's and Erlang's spelling).
constexpr std::array<const char*, kRoleCount> kRoleNames = {
    "unknown", "gone", "user", "system",       "io",   "net_kernel",
    "global",  "pg",   "rex",  "logger_proxy", "alias"};
}  // namespace

const char* role_name(Role r) { return kRoleNames[static_cast<size_t>(r)]; }

std::optional<Role> role_from_name(std::string_view name) {
  for (size_t i = 0; i < kRoleNames.size(); i++) {
    if (name == kRoleNames[i]) return static_cast<Role>(i);
  }
  return std::nullopt;
}

bool is_system(Role r) {
  return r != Role::Unknown && r != Role::Gone && r != Role::User && r != Role::Alias;
}

Role StaticDirectory::role_of(const PidId& pid) const {
  if (pid.serial == 0 && pid.id >= 1 && pid.id <= kKnownNames.size()) {
    return kKnownNames[pid.id - 1].role;
  }
  return Role::User;
}

std::optional<PidId> StaticDirectory::pid_of(std::string_view name) {
  for (size_t i = 0; i < kKnownNames.size(); i++) {
    if (kKnownNames[i].name == name) return PidId{static_cast<uint32_t>(i + 1), 0, 0};
  }
  return std::nullopt;
}

std::optional<PidId> StaticDirectory::whereis(std::string_view name) const {
  if (auto pid = pid_of(name)) return pid;
  return PidId{0, 1, 0};  // an application process
}

Role Directory::role_of_name(std::string_view name, std::optional<PidId>& pid) const {
  pid = whereis(name);
  return pid ? role_of(*pid) : Role::Gone;
}

const Directory& static_directory() {
  static const StaticDirectory d;
  return d;
}

Destination destination(const Message& msg) {
  const Term to = msg.info->to ? msg.control.element(msg.info->to) : Term();
  switch (msg.info->kind) {
    case Kind::Send:
      if (msg.info->op == Op::ALIAS_SEND || msg.info->op == Op::ALIAS_SEND_TT) {
        return {Destination::Kind::Alias, to};
      }
      return to.is_pid() ? Destination{Destination::Kind::Pid, to} : Destination{};
    case Kind::RegSend:
      return {Destination::Kind::Name, to};
    case Kind::Signal:
      // The signals that harm a system process: exits (exit/2 and broken
      // links) kill it, a link ties it to a remote process's exit, a group
      // leader redirects its io.
      switch (msg.info->op) {
        case Op::LINK:
        case Op::EXIT:
        case Op::EXIT2:
        case Op::EXIT_TT:
        case Op::EXIT2_TT:
        case Op::PAYLOAD_EXIT:
        case Op::PAYLOAD_EXIT_TT:
        case Op::PAYLOAD_EXIT2:
        case Op::PAYLOAD_EXIT2_TT:
        case Op::GROUP_LEADER:
          return to.is_pid() ? Destination{Destination::Kind::Pid, to} : Destination{};
        default:
          return {};
      }
    case Kind::SpawnRequest:
      return {};
  }
  return {};
}

namespace {

// classify(), with the SystemFallback of the message's payload when one is
// shared between roles.
Classification classify(const Policy& p, const Message& msg, Role to, const Directory& d,
                        SystemFallback* shared) {
  switch (msg.info->kind) {
    case Kind::Signal:
      // A dead receiver is the VM's business (a link to it gets noproc).
      if (is_system(to)) {
        return {Hint::Drop, "exit, link or group leader signal to a system process"};
      }
      return {Hint::Safe, "signal"};
    case Kind::Send:
      return receiver_checks(p, d, to, msg.payload, 0, shared);
    case Kind::RegSend: {
      auto name = msg.control.element(msg.info->to).atom();
      if (!name) return {Hint::Drop, "reg_send to something that is not an atom"};
      if (p.name_allowed(*name)) return {Hint::Safe, "allowed name"};
      return receiver_checks(p, d, to, msg.payload, 0, shared);
    }
    case Kind::SpawnRequest:
      return spawn_request(p, msg);
  }
  return {Hint::Drop, "unknown kind"};
}

}  // namespace

Classification classify(const Policy& p, const Message& msg, Role to, const Directory& d) {
  return classify(p, msg, to, d, nullptr);
}

RoleClassifications classify_unresolved(const Policy& p, const Message& msg, const Directory& d) {
  RoleClassifications out;
  SystemFallback shared(p, d, msg.payload, 0);
  for (Role r : kConcreteRoles) {
    // A message to a dead process is lost in the VM anyway.
    if (r == Role::Gone) continue;
    Classification x = classify(p, msg, r, d, &shared);
    out.all |= role_bit(r);
    if (x.hint == Hint::Safe) out.safe |= role_bit(r);
    if (x.hint == Hint::Drop) out.drop |= role_bit(r);
    if (r == Role::System) out.system = std::move(x);
  }
  return out;
}

}  // namespace ktls::filter
