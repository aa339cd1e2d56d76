#include "nif/filter/policy.h"

#include <array>
#include <string>
#include <vector>

namespace ktls::filter {
namespace {

// What ordinary OTP traffic between nodes spawns or casts on a peer.
const std::array<Mfa, 2> kBuiltinMfa = {{
    {"erlang", "node", 0},
    {"net_adm", "ping", 1},
}};

// Modules whose functions an io server may run for a remote io_request:
// io:format/3 to a remote group leader sends {put_chars, Enc, io_lib,
// format, Args}, io:read/fread send {get_until, ..., erl_scan | io_lib, ...}.
bool io_module_allowed(std::string_view m) { return m == "io_lib" || m == "erl_scan"; }

constexpr std::array<std::string_view, 22> kProtected = {
    "init",
    "erl_prim_loader",
    "code_server",
    "kernel_sup",
    "net_sup",
    "kernel_safe_sup",
    "application_controller",
    "erts_code_purger",
    "logger",
    "logger_sup",
    "file_server_2",
    "erl_signal_server",
    "inet_db",
    "kernel_refc",
    "standard_error_sup",
    "user_drv",
    "erl_epmd",
    "auth",
    "timer_server",
    "global_group_check",
    "socket_registry",
    "rex_sup",
};

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

Classification named_checks(const Policy& p, std::string_view name, const Term& payload, int depth);
Classification payload_checks(const Policy& p, const Term& payload, int depth);

// A message a server passes on to a registered name of its node; `name`
// is an atom, a pid or {Name, Node} (then the other node decides).
Classification relayed(const Policy& p, const Term& name, const Term& msg, int depth) {
  if (depth > 4) return {Hint::Drop, "relayed message nested too deep"};
  if (auto n = name.atom()) return named_checks(p, *n, msg, depth + 1);
  return payload_checks(p, msg, depth + 1);
}

// {X, Second} messages: rex runs {X, {call, M, F, A, GL}} (the form for
// hidden C nodes) and relays {From, {sbcast, Name, Msg}} (Name ! Msg) and
// {From, {send, Name, Msg}} (Name ! {From, Msg}).
Classification pair_checks(const Policy& p, const Term& second, int depth) {
  if (!second.is_tuple()) return {};
  Term kind = second.element(0);
  if (second.arity() == 5 && kind.is_atom("call")) return rex_request(p, second);
  if (second.arity() == 3 && (kind.is_atom("sbcast") || kind.is_atom("send"))) {
    Classification c = relayed(p, second.element(1), second.element(2), depth);
    if (c.hint == Hint::Safe && kind.is_atom("send")) {
      c = pair_checks(p, second.element(2), depth + 1);
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
Classification payload_checks(const Policy& p, const Term& payload, int depth) {
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
  if (n == 2) return pair_checks(p, payload.element(1), depth);
  // net_kernel: {From, registered_send, To, Msg} is To ! Msg there;
  // {From, badcookie, To, Msg} disconnects From's node.
  if (n == 4 && payload.element(1).is_atom("registered_send")) {
    return relayed(p, payload.element(2), payload.element(3), depth);
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
  if (payload.is_tuple() && payload.arity() == 3 &&
      (payload.element(0).is_atom("$gen_call") || payload.element(0).is_atom("system"))) {
    return call_refusal(payload.element(1), Answer::CallError);
  }
  return {};
}

// A message to the registered name `name`.
Classification named_checks(const Policy& p, std::string_view name, const Term& payload,
                            int depth) {
  if (p.name_allowed(name)) return {Hint::Safe, "allowed name"};
  Classification c = payload_checks(p, payload, depth);
  if (c.hint != Hint::Safe) return c;
  if (protected_name(name)) {
    c = {Hint::Unsafe, "message to a protected process"};
    c.refusal = protected_refusal(payload);
    return c;
  }
  const bool call =
      payload.is_tuple() && payload.arity() == 3 && payload.element(0).is_atom("$gen_call");
  if (name == "net_kernel") {
    if (call && net_kernel_call_allowed(payload.element(2))) return {Hint::Safe, "reg_send"};
    c = {Hint::Unsafe, "net_kernel request from a remote node"};
    c.refusal = protected_refusal(payload);
    return c;
  }
  if (name == "logger_proxy" && may_hold_fun(p, payload, Exempt::Logger)) {
    // Log events of remote processes whose group leader is here; a
    // report_cb fun in their metadata runs when the event is formatted.
    return {Hint::Unsafe, "log event with a fun"};
  }
  if (name == "global_name_server") {
    // Local requests: disconnect from every node, stop; and name clash
    // resolvers that are not global's own are code to run.
    Term req = call ? payload.element(2) : Term();
    if (req.is_atom("disconnect") || req.is_atom("stop") ||
        may_hold_fun(p, payload, Exempt::Global)) {
      c = {Hint::Unsafe, "global request from a remote node"};
      c.refusal = protected_refusal(payload);
      return c;
    }
  }
  return {Hint::Safe, "reg_send"};
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

std::span<const std::string_view> protected_names() { return kProtected; }

std::optional<PidId> pid_id(const Term& t) {
  if (t.tag() != tag::kNewPid && t.tag() != tag::kPid) return std::nullopt;
  // The standalone form: tag, node as a plain atom, ID, Serial, Creation.
  std::vector<uint8_t> b;
  if (!t.append_to(b)) return std::nullopt;
  Term node(Bytes(b.data(), b.size()), 1, AtomRefs{});
  auto name = node.atom();
  const size_t at = node.end();
  if (!name || at > b.size() || b.size() - at < 8) return std::nullopt;
  auto be32 = [&](size_t i) {
    return uint32_t{b[i]} << 24 | uint32_t{b[i + 1]} << 16 | uint32_t{b[i + 2]} << 8 | b[i + 3];
  };
  return PidId{std::string(*name), be32(at), be32(at + 4)};
}

bool protected_name(std::string_view name) {
  for (std::string_view n : kProtected) {
    if (n == name) return true;
  }
  return false;
}

namespace {
// Exit and group-leader signals to protected processes: exit(Pid, kill) to
// kernel_sup's pid takes the node down, a group leader redirects its io.
Classification signal(const Policy& p, const Message& msg) {
  switch (msg.info->op) {
    case Op::EXIT:
    case Op::EXIT2:
    case Op::EXIT_TT:
    case Op::EXIT2_TT:
    case Op::PAYLOAD_EXIT:
    case Op::PAYLOAD_EXIT_TT:
    case Op::PAYLOAD_EXIT2:
    case Op::PAYLOAD_EXIT2_TT:
    case Op::GROUP_LEADER:
      break;
    default:
      return {Hint::Safe, "signal"};
  }
  if (p.protected_pids.empty()) return {Hint::Safe, "signal"};
  auto to = pid_id(msg.control.element(msg.info->to));
  if (!to) return {Hint::Safe, "signal"};
  for (const PidId& q : p.protected_pids) {
    if (q == *to) return {Hint::Drop, "exit or group leader signal to a protected process"};
  }
  return {Hint::Safe, "signal"};
}
}  // namespace

Classification classify(const Policy& p, const Message& msg) {
  switch (msg.info->kind) {
    case Kind::Signal:
      return signal(p, msg);
    case Kind::Send:
      return payload_checks(p, msg.payload, 0);
    case Kind::RegSend: {
      auto name = msg.control.element(msg.info->to).atom();
      if (!name) return {Hint::Drop, "reg_send to something that is not an atom"};
      return named_checks(p, *name, msg.payload, 0);
    }
    case Kind::SpawnRequest:
      return spawn_request(p, msg);
  }
  return {Hint::Drop, "unknown kind"};
}

}  // namespace ktls::filter
