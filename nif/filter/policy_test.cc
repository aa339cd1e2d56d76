// The policy follows the process (Directory roles): messages and signals to
// OTP's system processes by pid, name or alias, receivers looked up by the
// input process (Action::Resolve), and the atom budget.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "nif/filter/channel.h"

namespace ktls::filter {
namespace {

using Packet = std::vector<uint8_t>;
using Build = std::function<void(Packet&)>;

const LocalNode kLocal{"ktls_filter_test@127.0.0.1", 7};
const std::string kPeer = "peer@127.0.0.1";

// Pids of this node by role; 60 and up are not known to the directory.
constexpr uint32_t kSystemPid = 50, kUserPid = 51, kIoPid = 52, kPgPid = 53, kNetKernelPid = 54,
                   kGlobalPid = 55, kRexPid = 56, kUnknownPid = 60;

class TestDirectory : public Directory {
 public:
  TestDirectory() {
    roles = {
        {kSystemPid, Role::System}, {kUserPid, Role::User},           {kIoPid, Role::Io},
        {kPgPid, Role::Pg},         {kNetKernelPid, Role::NetKernel}, {kGlobalPid, Role::Global},
        {kRexPid, Role::Rex}};
    names = {{"file_server_2", kSystemPid}, {"my_server", kUserPid}, {"unseen", kUnknownPid}};
  }
  Role role_of(const PidId& p) const override {
    auto it = roles.find(p.id);
    return it == roles.end() ? Role::Unknown : it->second;
  }
  std::optional<PidId> whereis(std::string_view name) const override {
    auto it = names.find(std::string(name));
    if (it == names.end()) return std::nullopt;
    return PidId{it->second, 0, kLocal.creation};
  }
  // Atoms named new_* are new to the node.
  bool atom_exists(std::string_view text, bool) const override {
    return text.substr(0, 4) != "new_";
  }
  uint64_t generation() const override { return gen; }
  std::map<uint32_t, Role> roles;
  std::map<std::string, uint32_t> names;
  uint64_t gen = 0;
};

void local_pid(Packet& p, uint32_t id, uint32_t creation = kLocal.creation) {
  enc::pid(p, kLocal.name, id, 0, creation);
}
void peer_pid(Packet& p) { enc::pid(p, kPeer, 77, 0, 3); }
void peer_ref(Packet& p) {
  p.push_back(tag::kNewerReference);
  p.insert(p.end(), {0, 3});
  enc::atom(p, kPeer);
  p.insert(p.end(), {0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3});
}

// An io request as a group leader gets it from a remote shell.
void io_request(Packet& p) {
  enc::small_tuple(p, 4);
  enc::atom(p, "io_request");
  peer_pid(p);
  peer_ref(p);
  enc::small_tuple(p, 3);
  enc::atom(p, "put_chars");
  enc::atom(p, "unicode");
  enc::atom(p, "hello");
}
// global's exchange between nodes: {'$gen_cast', {in_sync, Node}}.
void global_in_sync(Packet& p) {
  enc::small_tuple(p, 2);
  enc::atom(p, "$gen_cast");
  enc::small_tuple(p, 2);
  enc::atom(p, "in_sync");
  enc::atom(p, "peer@127.0.0.1");
}

// A message without atom cache references: control tuple, then payload.
Packet message(const Build& control, const Build& payload = nullptr) {
  Packet p = {tag::kVersion, 'D', 0};
  control(p);
  if (payload) payload(p);
  return p;
}

Build send_to(uint32_t id, uint32_t creation = kLocal.creation) {
  return [=](Packet& p) {
    enc::small_tuple(p, 3);
    enc::integer(p, 2);  // SEND
    enc::atom(p, "");
    local_pid(p, id, creation);
  };
}

Build reg_send_to(const std::string& name) {
  return [=](Packet& p) {
    enc::small_tuple(p, 4);
    enc::integer(p, 6);  // REG_SEND
    peer_pid(p);
    enc::atom(p, "");
    enc::atom(p, name);
  };
}

// {'$gen_call', {PeerPid, PeerRef}, Request}
Build gen_call(const Build& request) {
  return [=](Packet& p) {
    enc::small_tuple(p, 3);
    enc::atom(p, "$gen_call");
    enc::small_tuple(p, 2);
    peer_pid(p);
    peer_ref(p);
    request(p);
  };
}

Build atom_term(const std::string& a) {
  return [=](Packet& p) { enc::atom(p, a); };
}

Build tuple_of(const std::vector<Build>& elements) {
  return [=](Packet& p) {
    enc::small_tuple(p, static_cast<uint8_t>(elements.size()));
    for (const Build& e : elements) e(p);
  };
}

struct Fixture {
  explicit Fixture(std::shared_ptr<const Policy> policy = std::make_shared<Policy>())
      : ch(std::move(policy), kLocal) {
    ch.set_peer(kPeer);
    ch.set_directory(&dir);
  }
  Verdict& inspect(const Packet& p) {
    ch.inspect(Bytes(p.data(), p.size()), v);
    return v;
  }
  TestDirectory dir;
  Channel ch;
  Verdict v;
};

TEST(Receivers, CallToASystemProcessByPidIsRefusedAndAnswered) {
  Fixture f;
  const Build write_file =
      tuple_of({atom_term("write_file"), atom_term("path"), atom_term("data")});
  Verdict& v = f.inspect(message(send_to(kSystemPid), gen_call(write_file)));
  EXPECT_EQ(v.action, Action::Drop);
  EXPECT_STREQ(v.reason, "message to a system process");
  EXPECT_FALSE(v.bytes.empty());  // the caller's {error, unauthorized}
  // The same call to an application process is its own business.
  EXPECT_EQ(f.inspect(message(send_to(kUserPid), gen_call(write_file))).action, Action::Keep);
}

// Every shape of call a refusal must answer, or its caller waits forever
// (global's multi_call holds global's lock meanwhile).
TEST(Receivers, RefusedCallsOfEveryShapeAreAnswered) {
  Fixture f;
  // gen_server:multi_call: From = {Pid, {Ref, Node}}
  const Build multi_call = [](Packet& p) {
    enc::small_tuple(p, 3);
    enc::atom(p, "$gen_call");
    enc::small_tuple(p, 2);
    peer_pid(p);
    enc::small_tuple(p, 2);
    peer_ref(p);
    enc::atom(p, kPeer);
    enc::atom(p, "which_children");
  };
  // gen_event:call: {Pid, {Pid, Ref}, Request}
  const Build event_call = [](Packet& p) {
    enc::small_tuple(p, 3);
    peer_pid(p);
    enc::small_tuple(p, 2);
    peer_pid(p);
    peer_ref(p);
    enc::atom(p, "which_handlers");
  };
  for (const Build& b : {multi_call, event_call}) {
    Verdict& v = f.inspect(message(send_to(kSystemPid), b));
    EXPECT_EQ(v.action, Action::Drop);
    EXPECT_FALSE(v.bytes.empty());
  }
}

TEST(Receivers, RegisteredNamesGetTheRulesOfTheirProcess) {
  Fixture f;
  const Build req = tuple_of({atom_term("get_cwd")});
  EXPECT_EQ(f.inspect(message(reg_send_to("file_server_2"), gen_call(req))).action, Action::Drop);
  EXPECT_EQ(f.inspect(message(reg_send_to("my_server"), gen_call(req))).action, Action::Keep);
  Verdict& v = f.inspect(message(reg_send_to("nobody_has_it"), gen_call(req)));
  EXPECT_EQ(v.action, Action::Drop);
  EXPECT_STREQ(v.reason, "no such process");
  // A name whose process was not looked up yet: the input process asks.
  EXPECT_EQ(f.inspect(message(reg_send_to("unseen"), gen_call(req))).action, Action::Resolve);
}

TEST(Receivers, AnUnknownProcessIsLookedUp) {
  Fixture f;
  Verdict& v = f.inspect(message(send_to(kUnknownPid), gen_call(atom_term("state"))));
  ASSERT_EQ(v.action, Action::Resolve);
  EXPECT_EQ(v.resolve, (PidId{kUnknownPid, 0, kLocal.creation}));
  EXPECT_TRUE(v.safe_roles & role_bit(Role::User));
  EXPECT_FALSE(v.safe_roles & role_bit(Role::System));
  EXPECT_FALSE(v.drop_bytes.empty());  // the refusal's answer to the caller
  EXPECT_EQ(f.ch.stats().resolved.load(), 1u);
  // A reply is safe for every receiver: nothing to look up.
  const Build reply = tuple_of({peer_ref, atom_term("ok")});
  EXPECT_EQ(f.inspect(message(send_to(kUnknownPid), reply)).action, Action::Keep);
  EXPECT_STREQ(f.v.reason, "allowed for any receiver");
}

TEST(Receivers, PidOfAnOldIncarnationIsNotAProcessOfThisNode) {
  Fixture f;
  // The VM discards messages to it; only the checks for any receiver apply.
  const Build req = tuple_of({atom_term("write_file"), atom_term("p"), atom_term("d")});
  EXPECT_EQ(f.inspect(message(send_to(kSystemPid, kLocal.creation + 1), gen_call(req))).action,
            Action::Keep);
}

Build signal(int op, uint32_t to, const Build& extra = nullptr) {
  return [=](Packet& p) {
    enc::small_tuple(p, extra ? 4 : 3);
    enc::integer(p, op);
    peer_pid(p);
    local_pid(p, to);
    if (extra) extra(p);
  };
}

// A process that gets a burst right after it was spawned: every message
// in flight before the first answer reaches the cache is a Resolve, but
// only the first asks for a look-up; the rest reuse its answer (its slot),
// each still judged for every role on its own.
TEST(Receivers, ABurstToAnUnseenProcessIsLookedUpOnce) {
  Fixture f;
  const Build state = gen_call(atom_term("state"));
  ASSERT_EQ(f.inspect(message(send_to(kUnknownPid), state)).action, Action::Resolve);
  EXPECT_FALSE(f.v.resolve_reuse);
  const uint8_t slot = f.v.resolve_slot;
  for (int i = 0; i < 100; i++) {
    ASSERT_EQ(f.inspect(message(send_to(kUnknownPid), state)).action, Action::Resolve);
    EXPECT_TRUE(f.v.resolve_reuse);
    EXPECT_EQ(f.v.resolve_slot, slot);
    EXPECT_FALSE(f.v.drop_bytes.empty());  // a refusal is still answered
  }
  // Another message to the same process: its own outcomes, the same answer.
  ASSERT_EQ(f.inspect(message(signal(8, kUnknownPid, atom_term("kill")))).action, Action::Resolve);
  EXPECT_TRUE(f.v.resolve_reuse);
  EXPECT_EQ(f.v.resolve_slot, slot);
  EXPECT_TRUE(f.v.drop_roles & role_bit(Role::System));
  // Another unseen process, and the name of one: looked up on its own.
  ASSERT_EQ(f.inspect(message(send_to(kUnknownPid + 1), state)).action, Action::Resolve);
  EXPECT_FALSE(f.v.resolve_reuse);
  EXPECT_NE(f.v.resolve_slot, slot);
  ASSERT_EQ(f.inspect(message(reg_send_to("unseen"), state)).action, Action::Resolve);
  EXPECT_TRUE(f.v.resolve_reuse);  // "unseen" is kUnknownPid
  EXPECT_EQ(f.v.resolve_slot, slot);
  EXPECT_EQ(f.ch.stats().resolved.load(), 2u);
  EXPECT_EQ(f.ch.stats().control[control_info(static_cast<int>(Op::SEND))->index].seen.load(),
            102u);
}

// Roles forgotten (system applications changed): an answer from before
// serves no message judged after.
TEST(Receivers, ForgottenRolesAreLookedUpAgain) {
  Fixture f;
  const Build state = gen_call(atom_term("state"));
  f.inspect(message(send_to(kUnknownPid), state));
  f.inspect(message(send_to(kUnknownPid), state));
  ASSERT_TRUE(f.v.resolve_reuse);
  f.dir.gen++;
  ASSERT_EQ(f.inspect(message(send_to(kUnknownPid), state)).action, Action::Resolve);
  EXPECT_FALSE(f.v.resolve_reuse);
  f.inspect(message(send_to(kUnknownPid), state));
  EXPECT_TRUE(f.v.resolve_reuse);
  EXPECT_EQ(f.ch.stats().resolved.load(), 2u);
}

// kResolveSlots processes at a time; the oldest is replaced and is then
// looked up again.
TEST(Receivers, LookUpSlotsAreReplacedInTurn) {
  Fixture f;
  const Build state = gen_call(atom_term("state"));
  std::set<uint8_t> slots;
  for (uint32_t i = 0; i < kResolveSlots; i++) {
    f.inspect(message(send_to(100 + i), state));
    EXPECT_FALSE(f.v.resolve_reuse);
    slots.insert(f.v.resolve_slot);
  }
  EXPECT_EQ(slots.size(), kResolveSlots);
  f.inspect(message(send_to(100 + kResolveSlots), state));  // replaces 100
  EXPECT_FALSE(f.v.resolve_reuse);
  f.inspect(message(send_to(101), state));
  EXPECT_TRUE(f.v.resolve_reuse);
  f.inspect(message(send_to(100), state));
  EXPECT_FALSE(f.v.resolve_reuse);
  EXPECT_LT(f.v.resolve_slot, kResolveSlots);
}

TEST(Receivers, ExitLinkAndGroupLeaderSignalsToSystemProcessesAreDropped) {
  Fixture f;
  const Build kill = atom_term("kill");
  EXPECT_EQ(f.inspect(message(signal(8, kSystemPid, kill))).action, Action::Drop);  // EXIT2
  EXPECT_STREQ(f.v.reason, "exit, link or group leader signal to a system process");
  EXPECT_EQ(f.inspect(message(signal(3, kGlobalPid, kill))).action, Action::Drop);  // EXIT
  EXPECT_EQ(f.inspect(message(signal(1, kPgPid))).action, Action::Drop);            // LINK
  EXPECT_EQ(f.inspect(message(signal(7, kIoPid))).action, Action::Drop);            // GROUP_LEADER
  EXPECT_EQ(f.inspect(message(signal(8, kUserPid, kill))).action, Action::Keep);
  EXPECT_EQ(f.inspect(message(signal(1, kUserPid))).action, Action::Keep);
  // A monitor is harmless (its DOWN comes back); an unseen pid is looked up.
  EXPECT_EQ(f.inspect(message(signal(19, kSystemPid, peer_ref))).action, Action::Keep);
  EXPECT_EQ(f.inspect(message(signal(8, kUnknownPid, kill))).action, Action::Resolve);
}

TEST(Receivers, AliasesTakeRepliesButNoRequests) {
  Fixture f;
  auto alias_send = [](Packet& p) {
    enc::small_tuple(p, 3);
    enc::integer(p, 33);  // ALIAS_SEND
    peer_pid(p);
    p.push_back(tag::kNewerReference);  // an alias of this node
    p.insert(p.end(), {0, 3});
    enc::atom(p, kLocal.name);
    p.insert(p.end(), {0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 8, 0, 0, 0, 7});
  };
  // gen:reply's {[alias | Ref], Reply}
  auto alias_tag = [](Packet& p) {
    p.push_back(tag::kList);
    p.insert(p.end(), {0, 0, 0, 1});
    enc::atom(p, "alias");
    peer_ref(p);
  };
  EXPECT_EQ(f.inspect(message(alias_send, tuple_of({alias_tag, atom_term("ok")}))).action,
            Action::Keep);
  EXPECT_EQ(f.inspect(message(alias_send, atom_term("anything"))).action, Action::Keep);
  EXPECT_EQ(f.inspect(message(alias_send, gen_call(atom_term("stop")))).action, Action::Drop);
  EXPECT_STREQ(f.v.reason, "OTP request to an alias");
  const Build fake_exit = tuple_of({atom_term("EXIT"), peer_pid, atom_term("kill")});
  EXPECT_EQ(f.inspect(message(alias_send, fake_exit)).action, Action::Drop);
}

TEST(Receivers, SystemProcessesTakeTheirOwnProtocolOnly) {
  Fixture f;
  auto to = [&](uint32_t id, const Build& payload) {
    return f.inspect(message(send_to(id), payload)).action;
  };
  // pg
  const Build join = tuple_of({atom_term("join"), peer_pid, atom_term("group"), peer_pid});
  EXPECT_EQ(to(kPgPid, join), Action::Keep);
  EXPECT_EQ(to(kPgPid, gen_call(atom_term("which_groups"))), Action::Drop);
  // net_kernel
  const Build is_auth = tuple_of({atom_term("is_auth"), atom_term("peer@127.0.0.1")});
  EXPECT_EQ(to(kNetKernelPid, gen_call(is_auth)), Action::Keep);
  const Build disconnect = tuple_of({atom_term("disconnect"), atom_term("x@y")});
  EXPECT_EQ(to(kNetKernelPid, gen_call(disconnect)), Action::Drop);
  // rex: rpc of an allowed MFA only
  auto rex_call = [](const std::string& m, const std::string& fn) {
    return gen_call([=](Packet& p) {
      enc::small_tuple(p, 5);
      enc::atom(p, "call");
      enc::atom(p, m);
      enc::atom(p, fn);
      enc::nil(p);
      peer_pid(p);
    });
  };
  EXPECT_EQ(to(kRexPid, rex_call("erlang", "node")), Action::Keep);
  EXPECT_EQ(to(kRexPid, rex_call("os", "cmd")), Action::Drop);
  EXPECT_EQ(to(kRexPid, gen_call(atom_term("stop"))), Action::Drop);
  // global
  EXPECT_EQ(to(kGlobalPid, global_in_sync), Action::Keep);
  // prevent_overlapping_partitions (OTP 25's default): {remove_connection, Node}
  const Build remove_connection =
      tuple_of({atom_term("remove_connection"), atom_term("peer@127.0.0.1")});
  EXPECT_EQ(to(kGlobalPid, remove_connection), Action::Keep);
  EXPECT_EQ(to(kGlobalPid, gen_call(atom_term("disconnect"))), Action::Drop);
  // io servers: io requests (checked), nothing else
  EXPECT_EQ(to(kIoPid, io_request), Action::Keep);
  EXPECT_EQ(to(kSystemPid, io_request), Action::Drop);
  // messages shaped like signals, and replies
  EXPECT_EQ(to(kSystemPid, tuple_of({atom_term("EXIT"), peer_pid, atom_term("kill")})),
            Action::Drop);
  EXPECT_EQ(to(kSystemPid, tuple_of({peer_ref, atom_term("ok")})), Action::Keep);
  const Build sys_read =
      tuple_of({atom_term("system"), tuple_of({peer_pid, peer_ref}), atom_term("get_status")});
  EXPECT_EQ(to(kSystemPid, sys_read), Action::Drop);
  EXPECT_EQ(to(kUserPid, sys_read), Action::Keep);
}

// classify_unresolved shares the role-independent work between roles; it
// must answer exactly what classify() answers role by role.
TEST(Receivers, JudgingForEveryRoleAtOnceMatchesEachRole) {
  Fixture f;
  const Build rpc = gen_call([](Packet& p) {
    enc::small_tuple(p, 5);
    enc::atom(p, "call");
    enc::atom(p, "os");
    enc::atom(p, "cmd");
    enc::nil(p);
    peer_pid(p);
  });
  const std::vector<Build> payloads = {
      tuple_of({peer_pid, atom_term("true"), atom_term("small")}),
      tuple_of({atom_term("join"), peer_pid, atom_term("group"), peer_pid}),
      gen_call(atom_term("which_groups")),
      gen_call(tuple_of({atom_term("is_auth"), atom_term("peer@127.0.0.1")})),
      gen_call(atom_term("disconnect")),
      rpc,
      global_in_sync,
      io_request,
      tuple_of({atom_term("EXIT"), peer_pid, atom_term("kill")}),
      tuple_of({peer_ref, atom_term("ok")}),
      tuple_of({atom_term("system"), tuple_of({peer_pid, peer_ref}), atom_term("get_status")}),
      tuple_of({atom_term("log"), atom_term("info"), atom_term("x"), atom_term("y")}),
  };
  const Policy& pol = f.ch.policy();
  for (size_t i = 0; i < payloads.size(); i++) {
    for (const Build& to : {send_to(kUnknownPid), reg_send_to("unseen")}) {
      const Packet p = message(to, payloads[i]);
      ASSERT_TRUE(f.inspect(p).decoded) << i;
      const Message& m = f.v.message;
      RoleClassifications all = classify_unresolved(pol, m, f.dir);
      uint16_t safe = 0, drop = 0, judged = 0;
      for (Role r : kConcreteRoles) {
        if (r == Role::Gone) continue;
        Classification c = classify(pol, m, r, f.dir);
        judged |= role_bit(r);
        if (c.hint == Hint::Safe) safe |= role_bit(r);
        if (c.hint == Hint::Drop) drop |= role_bit(r);
        if (r != Role::System) continue;
        EXPECT_EQ(all.system.hint, c.hint) << i;
        EXPECT_STREQ(all.system.reason, c.reason) << i;
        EXPECT_EQ(all.system.refusal.answer, c.refusal.answer) << i;
        EXPECT_EQ(all.system.refusal.caller.offset(), c.refusal.caller.offset()) << i;
      }
      EXPECT_EQ(all.safe, safe) << i;
      EXPECT_EQ(all.drop, drop) << i;
      EXPECT_EQ(all.all, judged) << i;
    }
  }
}

TEST(Receivers, GlobalMessagesAreBounded) {
  Fixture f(std::make_shared<Policy>([] {
    Policy p;
    p.max_global_message_size = 1000;
    return p;
  }()));
  auto cast_of = [](size_t bytes) {
    return [=](Packet& p) {
      enc::small_tuple(p, 2);
      enc::atom(p, "$gen_cast");
      enc::small_tuple(p, 2);
      enc::atom(p, "async_del_name");
      p.push_back(tag::kBinary);
      p.insert(p.end(),
               {uint8_t(bytes >> 24), uint8_t(bytes >> 16), uint8_t(bytes >> 8), uint8_t(bytes)});
      p.insert(p.end(), bytes, 'n');
    };
  };
  EXPECT_EQ(f.inspect(message(send_to(kGlobalPid), cast_of(100))).action, Action::Keep);
  EXPECT_EQ(f.inspect(message(send_to(kGlobalPid), cast_of(2000))).action, Action::Drop);
  EXPECT_STREQ(f.v.reason, "message to global larger than max_global_message_size");
}

// Header writing `text` into cache slot `slot`, then REG_SEND to my_server
// with that atom (reference 0) as the payload.
Packet cached_atom_message(uint16_t slot, const std::string& text, bool write) {
  Packet p = {tag::kVersion, 'D', 1};
  p.push_back(static_cast<uint8_t>((write ? 8 : 0) | (slot >> 8)));  // flags; short atoms
  p.push_back(static_cast<uint8_t>(slot & 0xFF));
  if (write) {
    p.push_back(static_cast<uint8_t>(text.size()));
    p.insert(p.end(), text.begin(), text.end());
  }
  reg_send_to("my_server")(p);
  p.insert(p.end(), {tag::kAtomCacheRef, 0});
  return p;
}

TEST(AtomBudget, NewAtomsOverTheBudgetAreDroppedAndTheCacheStaysInStep) {
  Fixture f(std::make_shared<Policy>([] {
    Policy p;
    p.max_new_atoms_per_connection = 2;
    return p;
  }()));
  EXPECT_EQ(f.inspect(cached_atom_message(5, "new_1", true)).action, Action::Keep);
  EXPECT_EQ(f.inspect(cached_atom_message(6, "old_atom", true)).action, Action::Keep);
  EXPECT_EQ(f.inspect(cached_atom_message(6, "new_2", true)).action, Action::Keep);
  Verdict& v = f.inspect(cached_atom_message(7, "new_3", true));
  EXPECT_EQ(v.action, Action::Drop);
  EXPECT_STREQ(v.reason, "more new atoms than the atom budget allows");
  // The VM gets the slot write with the placeholder, as the filter keeps it.
  const std::string carrier(v.bytes.begin(), v.bytes.end());
  EXPECT_NE(carrier.find("ktls_filter_refused_atom"), std::string::npos);
  EXPECT_EQ(carrier.find("new_3"), std::string::npos);
  // A later reference to the slot reads the placeholder on both sides.
  const Packet reference = cached_atom_message(7, "", false);  // the views point into it
  Verdict& later = f.inspect(reference);
  EXPECT_EQ(later.action, Action::Keep);
  EXPECT_EQ(later.message.payload.atom(), "ktls_filter_refused_atom");
  // Inline atoms count too.
  Verdict& inl = f.inspect(message(reg_send_to("my_server"), atom_term("new_4")));
  EXPECT_EQ(inl.action, Action::Drop);
  EXPECT_EQ(f.ch.stats().new_atoms.load(), 2u);
  EXPECT_EQ(f.ch.stats().atoms_refused.load(), 2u);
}

TEST(AtomBudget, MonitorModeCountsButChangesNothing) {
  Fixture f(std::make_shared<Policy>([] {
    Policy p;
    p.max_new_atoms_per_connection = 0;
    p.mode = Mode::Monitor;
    return p;
  }()));
  const Packet p = cached_atom_message(5, "new_1", true);
  Verdict& v = f.inspect(p);
  EXPECT_EQ(v.action, Action::Keep);
  EXPECT_FALSE(v.replaced);
  EXPECT_EQ(f.ch.stats().would_drop.load(), 1u);
  EXPECT_EQ(f.ch.atom_cache()[0].second, "new_1");
}

TEST(BuiltinAllowList, NetAdmPingIsNotAllowed) {
  Policy p;
  EXPECT_TRUE(p.mfa_allowed("erlang", "node", 0));
  EXPECT_FALSE(p.mfa_allowed("net_adm", "ping", 1));
}

}  // namespace
}  // namespace ktls::filter
