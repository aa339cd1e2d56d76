// Channel::inspect on real OTP 25 traffic (testdata/, captured from stock
// nodes) and on malformed input derived from it.
#include "nif/filter/channel.h"

#include <gtest/gtest.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "nif/filter/testdata/capture_file.h"

namespace ktls::filter {
namespace {

using testdata::Packet;

std::shared_ptr<const Policy> default_policy() { return std::make_shared<Policy>(); }

template <typename Edit>
std::shared_ptr<const Policy> policy_with(const Edit& edit) {
  auto p = std::make_shared<Policy>();
  edit(*p);
  return p;
}

const LocalNode kLocal{"ktls_filter_test@127.0.0.1", 7};

// One verdict, copied out (a Verdict's views die with the next inspect).
struct Seen {
  Action action = Action::Keep;
  Hint hint = Hint::Safe;
  std::string reason, op, error;
  bool decoded = false, replaced = false;
  std::vector<uint8_t> prefix, bytes, drop_bytes;
  std::vector<uint8_t> control, payload;  // standalone, with version byte
  size_t open_sequences = 0;
};

Seen inspect(Channel& ch, const Packet& p) {
  Verdict v;
  ch.inspect(Bytes(p.data(), p.size()), v);
  Seen s;
  s.action = v.action;
  s.hint = v.hint;
  s.reason = v.reason;
  s.error = v.error;
  s.decoded = v.decoded;
  s.replaced = v.replaced;
  s.prefix = v.prefix;
  // What Keep / Ask deliver when replaced (a reassembled message may be in
  // v.whole), else the rewritten bytes of a Drop.
  if (v.replaced) {
    Bytes r = v.replacement();
    s.bytes.assign(r.begin(), r.end());
  } else {
    s.bytes = v.bytes;
  }
  s.drop_bytes = v.drop_bytes;
  if (v.decoded) {
    s.op = v.message.info->name;
    s.control = v.message.control.standalone();
    if (v.message.payload.valid()) s.payload = v.message.payload.standalone();
  }
  s.open_sequences = ch.open_sequences();
  return s;
}

std::vector<Seen> run(Channel& ch, const std::vector<Packet>& ps) {
  std::vector<Seen> out;
  for (const Packet& p : ps) out.push_back(inspect(ch, p));
  return out;
}

std::vector<Seen> run(const std::vector<Packet>& ps,
                      std::shared_ptr<const Policy> policy = default_policy()) {
  Channel ch(std::move(policy), kLocal);
  return run(ch, ps);
}

// What the VM receives for a stream: carriers of atom cache writes, kept
// packets (reassembled messages whole), rewritten drops.
std::vector<Packet> delivered(const std::vector<Packet>& in, const std::vector<Seen>& seen) {
  std::vector<Packet> out;
  for (size_t i = 0; i < seen.size(); i++) {
    const Seen& s = seen[i];
    if (!s.prefix.empty()) out.push_back(s.prefix);
    switch (s.action) {
      case Action::Keep:
        out.push_back(s.replaced ? s.bytes : in[i]);
        break;
      case Action::Drop:
        if (!s.bytes.empty()) out.push_back(s.bytes);
        break;
      case Action::Ask:
      case Action::Resolve:
        if (!s.drop_bytes.empty()) out.push_back(s.drop_bytes);
        break;
      case Action::Hold:
      case Action::Close:
        break;
    }
  }
  return out;
}

// The offset an error names ("... at byte N"), or -1.
long error_offset(const std::string& error) {
  const std::string key = " at byte ";
  size_t at = error.rfind(key);
  if (at == std::string::npos) return -1;
  return std::strtol(error.c_str() + at + key.size(), nullptr, 10);
}

std::vector<Packet> load(const std::string& name) {
  std::vector<Packet> ps = testdata::load(name);
  EXPECT_FALSE(ps.empty()) << "no capture " << name << " in " << testdata::dir();
  return ps;
}

std::multiset<std::string> ops(const std::vector<Seen>& seen) {
  std::multiset<std::string> out;
  for (const Seen& s : seen) {
    if (s.decoded) out.insert(s.op);
  }
  return out;
}

// --- every capture -------------------------------------------------------

class CaptureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CaptureTest, DecodesWithoutClose) {
  std::vector<Packet> ps = load(GetParam());
  Channel ch(default_policy(), kLocal);
  std::vector<Seen> seen = run(ch, ps);
  size_t messages = 0;
  for (size_t i = 0; i < seen.size(); i++) {
    ASSERT_NE(seen[i].action, Action::Close) << "packet " << i << ": " << seen[i].error;
    if (seen[i].action != Action::Hold) {
      messages++;
      EXPECT_TRUE(seen[i].decoded) << "packet " << i;
    }
  }
  EXPECT_EQ(ch.stats().errors.load(), 0u);
  EXPECT_EQ(ch.stats().messages.load(), messages);
  EXPECT_EQ(ch.stats().packets.load(), ps.size());
  EXPECT_EQ(ch.open_sequences(), 0u);
  EXPECT_EQ(ch.reassembly_bytes(), 0u);
  EXPECT_STREQ(ch.framing(), "header");
}

// The VM must be able to decode what the filter hands it: replayed into a
// channel that keeps everything, the delivered stream never closes and the
// kept messages come out as they went in.
TEST_P(CaptureTest, DeliveredStreamDecodes) {
  std::vector<Packet> ps = load(GetParam());
  std::vector<Seen> seen = run(ps);
  std::vector<Packet> out = delivered(ps, seen);
  std::vector<Seen> vm = run(out, policy_with([](Policy& p) { p.mode = Mode::Monitor; }));
  std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>> kept_in, kept_out;
  for (const Seen& s : seen) {
    if (s.action == Action::Keep) kept_in.emplace_back(s.control, s.payload);
  }
  for (size_t i = 0; i < vm.size(); i++) {
    ASSERT_NE(vm[i].action, Action::Close) << "delivered packet " << i << ": " << vm[i].error;
    ASSERT_TRUE(vm[i].decoded);
    // Carriers of cache writes and rewritten requests are not in kept_in.
    bool ours = false;
    for (const Seen& s : seen) {
      ours = ours || (!s.prefix.empty() && s.prefix == out[i]) ||
             (s.action == Action::Drop && s.bytes == out[i]);
    }
    if (!ours) kept_out.emplace_back(vm[i].control, vm[i].payload);
  }
  EXPECT_EQ(kept_in, kept_out);
}

// Every proper prefix of a whole-message packet is malformed: the channel
// closes with an error naming a byte inside what it was given.
TEST_P(CaptureTest, EveryCutClosesWithAnOffset) {
  std::vector<Packet> ps = load(GetParam());
  Channel ch(default_policy(), kLocal);
  // A cut packet's partial header writes only what the whole packet writes,
  // so one channel can take every cut and then the packet itself.
  for (size_t i = 0; i < ps.size(); i++) {
    const Packet& p = ps[i];
    if (p.size() <= 8192 && p[1] == 'D') {
      for (size_t cut = 1; cut < p.size(); cut++) {
        Packet part(p.begin(), p.begin() + cut);
        Verdict v;
        ch.inspect(Bytes(part.data(), part.size()), v);
        ASSERT_EQ(v.action, Action::Close) << "packet " << i << " cut at " << cut;
        long at = error_offset(v.error);
        ASSERT_GE(at, 0) << v.error;
        ASSERT_LE(at, static_cast<long>(cut)) << v.error;
      }
    }
    Verdict v;
    ch.inspect(Bytes(p.data(), p.size()), v);
    ASSERT_NE(v.action, Action::Close) << v.error;
  }
}

INSTANTIATE_TEST_SUITE_P(Captured, CaptureTest, ::testing::ValuesIn(testdata::names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           std::replace(n.begin(), n.end(), '.', '_');
                           return n;
                         });

// --- what the captures contain ------------------------------------------------

TEST(Captured, ExpectedControlMessagesAppear) {
  const std::map<std::string, std::vector<std::string>> expected = {
      {"ping.a2b", {"monitor_p", "reg_send", "demonitor_p"}},
      {"ping.b2a", {"send_sender"}},
      {"gen_server.a2b", {"reg_send", "spawn_request", "alias_send"}},
      {"gen_server.b2a", {"alias_send", "spawn_reply", "payload_monitor_p_exit", "reg_send"}},
      {"erpc.a2b", {"spawn_request"}},
      {"erpc.b2a", {"spawn_reply", "payload_monitor_p_exit"}},
      {"signals.a2b",
       {"spawn_request", "monitor_p", "link", "unlink_id", "demonitor_p", "send_sender",
        "payload_exit2", "group_leader"}},
      {"signals.b2a", {"spawn_reply", "unlink_id_ack", "payload_exit", "payload_monitor_p_exit"}},
      {"seq_trace.a2b", {"reg_send_tt", "spawn_request_tt", "send_sender"}},
      {"seq_trace.b2a", {"spawn_reply_tt"}},
      {"fragments.a2b", {"reg_send"}},
  };
  for (const auto& [name, want] : expected) {
    std::multiset<std::string> got = ops(run(load(name)));
    for (const std::string& op : want) EXPECT_TRUE(got.count(op)) << name << " lacks " << op;
  }
}

// Ordinary traffic is kept as safe; the only drops outside the attack
// captures are spawn requests of functions the default policy does not
// allow (everything but erlang:node/0 and net_adm:ping/1).
TEST(Captured, OrdinaryTrafficIsKept) {
  for (const std::string& name : testdata::names()) {
    if (name.rfind("attack_", 0) == 0) continue;
    std::vector<Seen> seen = run(load(name));
    for (size_t i = 0; i < seen.size(); i++) {
      const Seen& s = seen[i];
      if (s.action == Action::Hold) continue;
      if (s.op == "spawn_request" || s.op == "spawn_request_tt") {
        if (s.action == Action::Keep) {
          EXPECT_EQ(s.reason, "allowed mfa");
        }
        continue;
      }
      EXPECT_EQ(s.action, Action::Keep) << name << " packet " << i << ": " << s.reason;
      EXPECT_EQ(s.hint, Hint::Safe) << name << " packet " << i;
    }
  }
  // erpc: erlang:node/0 passes three ways (call, send_request, multicall)
  // and as rpc:cast; lists:reverse, garbage_collect and system_time do not.
  std::vector<Seen> erpc = run(load("erpc.a2b"));
  int kept = 0, dropped = 0;
  for (const Seen& s : erpc) {
    if (s.op != "spawn_request") continue;
    (s.action == Action::Keep ? kept : dropped)++;
  }
  EXPECT_EQ(kept, 4);
  EXPECT_EQ(dropped, 3);
}

// The last message of each attack capture (before any harmless follow-up).
const Seen* find_op(const std::vector<Seen>& seen, const std::string& op, Action a) {
  for (const Seen& s : seen) {
    if (s.op == op && s.action == a) return &s;
  }
  return nullptr;
}

TEST(Attacks, ErpcOfHaltIsRefusedAndRewritten) {
  std::vector<Seen> seen = run(load("attack_erpc_halt.a2b"));
  const Seen* s = find_op(seen, "spawn_request", Action::Drop);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->hint, Hint::Unsafe);
  EXPECT_EQ(s->reason, "mfa not allowed");
  // The caller still gets an answer: the request, now of
  // ktls_filter_handler:spawn_request_denied/1, reaches the VM.
  ASSERT_FALSE(s->bytes.empty());
  // Its header refers to cache slots of earlier packets: replay them.
  std::vector<Packet> ps = load("attack_erpc_halt.a2b");
  Channel vm(policy_with([](Policy& p) { p.mode = Mode::Monitor; }), kLocal);
  Verdict v;
  for (size_t i = 0; i + 1 < ps.size(); i++) vm.inspect(Bytes(ps[i].data(), ps[i].size()), v);
  vm.inspect(Bytes(s->bytes.data(), s->bytes.size()), v);
  ASSERT_TRUE(v.decoded) << v.error;
  Term mfa = v.message.control.element(4);
  EXPECT_TRUE(mfa.element(0).is_atom("ktls_filter_handler"));
  EXPECT_TRUE(mfa.element(1).is_atom("spawn_request_denied"));
  EXPECT_EQ(v.message.payload.list_length(), 1u);
  EXPECT_EQ(v.message.payload.list_element(0).tag(), tag::kNewerReference);
  EXPECT_EQ(seen.size(), ops(seen).size());  // nothing after it: B halted
}

TEST(Attacks, RexCastIsDropped) {
  std::vector<Seen> seen = run(load("attack_rex_cast.a2b"));
  const Seen* s = find_op(seen, "reg_send", Action::Drop);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->hint, Hint::Unsafe);
  EXPECT_EQ(s->reason, "rpc request of an mfa not allowed");
}

TEST(Attacks, KernelSupStartChildIsDropped) {
  std::vector<Seen> seen = run(load("attack_kernel_sup.a2b"));
  const Seen* s = find_op(seen, "reg_send", Action::Drop);
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->hint, Hint::Unsafe);
  EXPECT_EQ(s->reason, "supervisor child spec from a remote node");
  // The monitor and demonitor of kernel_sup around the call are signals.
  EXPECT_EQ(std::count_if(seen.begin(), seen.end(),
                          [](const Seen& x) { return x.action == Action::Drop; }),
            1);
}

TEST(Attacks, IoRequestWithMfaIsDroppedAndIoLibKept) {
  std::vector<Seen> seen = run(load("attack_io_request.a2b"));
  ASSERT_GE(seen.size(), 2u);
  const Seen& attack = seen[seen.size() - 2];
  const Seen& harmless = seen.back();
  EXPECT_EQ(attack.action, Action::Drop);
  EXPECT_EQ(attack.hint, Hint::Drop);
  EXPECT_EQ(attack.reason, "io_request that calls a function");
  EXPECT_EQ(harmless.action, Action::Keep);
  EXPECT_EQ(harmless.hint, Hint::Safe);
}

// The spawn reply of an answer goes over this channel to the caller: a
// caller on a third node (a pid the peer passed on) must not be answered, or
// the peer's VM rejects the reply as an invalid message and drops the
// connection, and global then disconnects other nodes too (seen in the demo,
// whose io request carried the escript's pid).
TEST(Attacks, RefusalIsAnsweredOnlyToCallersOnThePeer) {
  const std::vector<Packet> ps = load("attack_io_request.a2b");
  ASSERT_GE(ps.size(), 2u);
  const size_t attack = ps.size() - 2;
  // The caller's node, read off the refused io request itself.
  std::string caller_node;
  {
    Channel ch(default_policy(), kLocal);
    Verdict v;
    for (size_t i = 0; i <= attack; i++) ch.inspect(Bytes(ps[i].data(), ps[i].size()), v);
    ASSERT_EQ(v.action, Action::Drop);
    caller_node = term_node(v.message.payload.element(1));
  }
  ASSERT_FALSE(caller_node.empty());
  // What the "VM" gets for the refused request, with the given peer.
  auto answer_op = [&](const std::string& peer) {
    Channel ch(default_policy(), kLocal);
    ch.set_peer(peer);
    std::vector<Seen> seen = run(ch, std::vector<Packet>(ps.begin(), ps.begin() + attack + 1));
    std::vector<Packet> in(ps.begin(), ps.begin() + attack + 1);
    std::vector<Packet> out = delivered(in, seen);
    Channel vm(policy_with([](Policy& p) { p.mode = Mode::Monitor; }), kLocal);
    std::string last;
    Verdict v;
    for (const Packet& p : out) {
      vm.inspect(Bytes(p.data(), p.size()), v);
      last = v.decoded ? v.message.info->name : "";
    }
    return seen.back().action == Action::Drop ? last : "kept";
  };
  EXPECT_EQ(answer_op(caller_node), "spawn_request");  // erlang:send(Caller, io_reply)
  EXPECT_NE(answer_op("someone_else@127.0.0.1"), "spawn_request");
  EXPECT_NE(answer_op("someone_else@127.0.0.1"), "kept");
}

// With a handler configured, unsafe messages are asked about instead; the
// drop alternative is ready in drop_bytes.
TEST(Attacks, HandlerIsAsked) {
  std::vector<Seen> seen =
      run(load("attack_erpc_halt.a2b"), policy_with([](Policy& p) { p.handler = true; }));
  const Seen* s = find_op(seen, "spawn_request", Action::Ask);
  ASSERT_NE(s, nullptr);
  EXPECT_FALSE(s->drop_bytes.empty());
  EXPECT_TRUE(s->bytes.empty());
}

TEST(Attacks, MonitorModeKeepsAndCounts) {
  std::vector<Packet> ps = load("attack_rex_cast.a2b");
  Channel ch(policy_with([](Policy& p) { p.mode = Mode::Monitor; }), kLocal);
  std::vector<Seen> seen = run(ch, ps);
  for (const Seen& s : seen) EXPECT_EQ(s.action, Action::Keep);
  EXPECT_EQ(ch.stats().would_drop.load(), 1u);
}

TEST(Attacks, BreakGlassPassesUndecoded) {
  std::vector<Packet> ps = load("attack_erpc_halt.a2b");
  Channel ch(policy_with([](Policy& p) { p.inspect = false; }), kLocal);
  for (const Seen& s : run(ch, ps)) {
    EXPECT_EQ(s.action, Action::Keep);
    EXPECT_FALSE(s.decoded);
  }
  EXPECT_EQ(ch.stats().uninspected.load(), ps.size());
}

// --- atom cache -------------------------------------------------------------

// The rex cast writes six cache entries and is dropped; the next message's
// header refers to them. The filter delivers a carrier for the writes, so
// the VM (and a channel fed what was delivered) can decode that message.
TEST(AtomCache, WritesOfADroppedMessageStillApply) {
  std::vector<Packet> ps = load("attack_rex_cast.a2b");
  std::vector<Seen> seen = run(ps);
  ASSERT_GE(seen.size(), 2u);
  const Seen& dropped = seen[seen.size() - 2];
  ASSERT_EQ(dropped.action, Action::Drop);
  ASSERT_FALSE(dropped.bytes.empty()) << "no carrier for the cache writes";
  EXPECT_EQ(seen.back().action, Action::Keep);

  // The carrier is a message to a name nobody has.
  Channel vm(policy_with([](Policy& p) { p.mode = Mode::Monitor; }), kLocal);
  for (const Packet& p : delivered(ps, seen)) {
    Verdict v;
    vm.inspect(Bytes(p.data(), p.size()), v);
    ASSERT_NE(v.action, Action::Close) << v.error;
  }

  // Without the dropped packet (or its carrier) the next one cannot be
  // decoded: the dependency is real.
  std::vector<Packet> without(ps.begin(), ps.end() - 2);
  without.push_back(ps.back());
  std::vector<Seen> broken = run(without);
  EXPECT_EQ(broken.back().action, Action::Close);
  EXPECT_NE(broken.back().error.find("reference to an empty atom cache slot"), std::string::npos)
      << broken.back().error;
}

TEST(AtomCache, SlotsAreWrittenAndOverwritten) {
  std::vector<Packet> ps = load("atom_cache.a2b");
  Channel ch(default_policy(), kLocal);
  for (const Seen& s : run(ch, ps)) ASSERT_EQ(s.action, Action::Keep) << s.error;
  auto cache = ch.atom_cache();
  EXPECT_GT(cache.size(), 1000u);
  EXPECT_LE(cache.size(), kAtomCacheSize);
  // 3000 atoms plus 600 again and the ping's: more writes than slots.
  EXPECT_GT(ch.stats().atom_cache_writes.load(), 3000u);
}

// --- fragments ----------------------------------------------------------------

void put64(Packet& out, uint64_t v) {
  for (int i = 7; i >= 0; i--) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

Packet frag_header(char type, uint64_t seq, uint64_t id) {
  Packet p = {131, static_cast<uint8_t>(type)};
  put64(p, seq);
  put64(p, id);
  return p;
}

// The fragments of a whole-message packet ('D'), the way OTP cuts them:
// the first carries the header, the others only sequence and fragment id.
std::vector<Packet> fragment(const Packet& d, size_t header_len, uint64_t seq, size_t pieces) {
  std::vector<Packet> out;
  const size_t body = d.size() - header_len;
  size_t pos = header_len;
  for (size_t k = 0; k < pieces; k++) {
    size_t len = k + 1 == pieces ? d.size() - pos : body / pieces;
    Packet f = {131, static_cast<uint8_t>(k == 0 ? 'E' : 'F')};
    put64(f, seq);
    put64(f, pieces - k);
    if (k == 0) f.insert(f.end(), d.begin() + 2, d.begin() + header_len);
    f.insert(f.end(), d.begin() + pos, d.begin() + pos + len);
    pos += len;
    out.push_back(std::move(f));
  }
  return out;
}

TEST(Fragments, OtpFragmentsAbove64KiB) {
  std::vector<Packet> ps = load("fragments.a2b");
  size_t whole_big = 0, first = 0;
  for (const Packet& p : ps) {
    EXPECT_LE(p.size(), (64u << 10) + 1024);
    if (p[1] == 'D' && p.size() > 50000) whole_big++;
    if (p[1] == 'E') first++;
  }
  EXPECT_EQ(whole_big, 1u);  // the 60 000-byte binary
  EXPECT_EQ(first, 6u);      // 100 000 bytes, the long list, 4 concurrent
}

TEST(Fragments, CapturedInterleavedSequencesReassemble) {
  std::vector<Packet> ps = load("fragments.a2b");
  std::vector<Seen> seen = run(ps);
  size_t most_open = 0, completed = 0;
  std::set<int> senders;
  for (size_t i = 0; i < seen.size(); i++) {
    most_open = std::max(most_open, seen[i].open_sequences);
    if (ps[i][1] == 'D' || seen[i].action == Action::Hold) continue;
    ASSERT_EQ(seen[i].action, Action::Keep) << seen[i].error;
    ASSERT_TRUE(seen[i].replaced);
    completed++;
    // {concurrent, N, <<N:8 x 150000>>}
    const std::vector<uint8_t>& pl = seen[i].payload;
    static const char kAtom[] = "concurrent";
    auto at = std::search(pl.begin(), pl.end(), kAtom, kAtom + sizeof kAtom - 1);
    if (at == pl.end()) continue;
    size_t n_pos = (at - pl.begin()) + sizeof kAtom - 1;
    ASSERT_EQ(pl[n_pos], tag::kSmallInteger);
    uint8_t n = pl[n_pos + 1];
    senders.insert(n);
    ASSERT_EQ(pl[n_pos + 2], tag::kBinary);
    ASSERT_EQ(pl.size(), n_pos + 7 + 150000);
    EXPECT_TRUE(std::all_of(pl.begin() + n_pos + 7, pl.end(), [n](uint8_t b) { return b == n; }));
  }
  EXPECT_GE(most_open, 2u) << "the capture has no interleaved sequences";
  EXPECT_EQ(completed, 6u);
  EXPECT_EQ(senders, (std::set<int>{1, 2, 3, 4}));
}

// The 60 000-byte message cut into fragments by the test, two sequences
// woven into each other and a small message between them.
TEST(Fragments, HandMadeInterleavingMatchesWholeMessage) {
  std::vector<Packet> ps = load("fragments.a2b");
  // Up to the big whole message; its header: magic, type, refs.
  size_t big = 0;
  while (big < ps.size() && !(ps[big][1] == 'D' && ps[big].size() > 50000)) big++;
  ASSERT_LT(big, ps.size());
  Channel probe(default_policy(), kLocal);
  std::vector<Seen> base = run(probe, std::vector<Packet>(ps.begin(), ps.begin() + big + 1));
  const Seen& whole = base.back();
  ASSERT_TRUE(whole.decoded);
  // Header length of the big packet: parse the flags and references.
  const Packet& d = ps[big];
  size_t n = d[2], pos = 3 + n / 2 + 1;
  bool long_atoms = (d[3 + n / 2] >> ((n % 2) * 4)) & 1;
  for (size_t i = 0; i < n; i++) {
    uint8_t nib = (d[3 + i / 2] >> ((i % 2) * 4)) & 0xF;
    pos++;
    if (nib & 8) pos += long_atoms ? (2 + ((d[pos] << 8) | d[pos + 1])) : (1 + d[pos]);
  }
  std::vector<Packet> a = fragment(d, pos, 11, 4);
  std::vector<Packet> b = fragment(d, pos, 12, 3);
  std::vector<Packet> stream(ps.begin(), ps.begin() + big);
  stream.insert(stream.end(), {a[0], b[0], a[1], ps[0], b[1], a[2], b[2], a[3]});
  std::vector<Seen> seen = run(stream);
  std::vector<const Seen*> done;
  for (size_t i = big; i < seen.size(); i++) {
    ASSERT_NE(seen[i].action, Action::Close) << seen[i].error;
    if (seen[i].action == Action::Keep && seen[i].replaced) done.push_back(&seen[i]);
  }
  ASSERT_EQ(done.size(), 2u);
  for (const Seen* s : done) {
    EXPECT_EQ(s->control, whole.control);
    EXPECT_EQ(s->payload, whole.payload);
  }
  EXPECT_EQ(seen[big + 1].open_sequences, 2u);
}

// A cache slot that a fragmented message's header refers to is written
// again before its last fragment arrives. The VM resolves the message's
// references when the first fragment comes (the text then), and later
// messages with the new text: what reaches the VM must say the same as
// what the policy judged, so the reassembled message cannot carry its
// header again.
struct Ref {
  uint16_t slot;
  bool is_new;
  std::string text;
};

Packet dist_header(char type, const std::vector<Ref>& refs) {
  // 'E': sequence 9, of two fragments.
  Packet p = type == 'E' ? frag_header('E', 9, 2) : Packet{131, static_cast<uint8_t>(type)};
  p.push_back(static_cast<uint8_t>(refs.size()));
  std::vector<uint8_t> nibbles;
  for (const Ref& r : refs) nibbles.push_back((r.is_new ? 8 : 0) | (r.slot >> 8));
  nibbles.push_back(0);  // no long atoms
  for (size_t i = 0; i < nibbles.size(); i += 2) {
    p.push_back(nibbles[i] | (i + 1 < nibbles.size() ? nibbles[i + 1] << 4 : 0));
  }
  for (const Ref& r : refs) {
    p.push_back(static_cast<uint8_t>(r.slot));
    if (r.is_new) {
      p.push_back(static_cast<uint8_t>(r.text.size()));
      p.insert(p.end(), r.text.begin(), r.text.end());
    }
  }
  return p;
}

// {REG_SEND, Pid, '', <cache reference 0>} + [].
Packet reg_send_to_ref0() {
  Packet b;
  enc::small_tuple(b, 4);
  enc::integer(b, 6);
  enc::pid(b, "a@127.0.0.1", 1, 0, 3);
  enc::atom(b, "");
  b.insert(b.end(), {tag::kAtomCacheRef, 0});
  enc::nil(b);
  return b;
}

Packet concat(Packet a, const Packet& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Registered names of the REG_SENDs the VM would decode from `stream`.
std::vector<std::string> names_the_vm_sees(const std::vector<Packet>& stream) {
  std::vector<Seen> seen = run(stream);
  std::vector<std::string> out;
  for (const Seen& s : seen) {
    EXPECT_EQ(s.action, Action::Keep) << s.error;
    if (!s.decoded) continue;
    Term c(Bytes(s.control), 1, {});
    auto name = c.element(3).atom();
    if (name && *name != "ktls_filter_dropped") out.emplace_back(*name);  // not carriers
  }
  return out;
}

std::vector<std::string> names_after_overwrite(bool first_fragment_writes) {
  Packet body = reg_send_to_ref0();
  Packet half1(body.begin(), body.begin() + 10), half2(body.begin() + 10, body.end());
  Packet cont = frag_header('F', 9, 1);
  std::vector<Packet> in = {
      concat(dist_header('D', {{5, true, "alpha"}}), body),
      concat(dist_header('E', {{5, first_fragment_writes, "gamma"}}), half1),
      concat(dist_header('D', {{5, true, "beta"}}), body),
      concat(cont, half2),
      concat(dist_header('D', {{5, false, ""}}), body),
  };
  std::vector<Seen> seen = run(in);
  for (const Seen& s : seen) EXPECT_NE(s.action, Action::Close) << s.error;
  return names_the_vm_sees(delivered(in, seen));
}

TEST(Fragments, SlotOverwrittenWhileASequenceIsOpen) {
  EXPECT_EQ(names_after_overwrite(false),
            (std::vector<std::string>{"alpha", "beta", "alpha", "beta"}));
  EXPECT_EQ(names_after_overwrite(true),
            (std::vector<std::string>{"alpha", "beta", "gamma", "beta"}));
}

// --- malformed input -----------------------------------------------------------

Packet header_only() { return {131, 'D', 0}; }

// {REG_SEND, Pid, '', Name} + Payload, no cache references.
Packet reg_send(std::string_view name, const std::vector<uint8_t>& payload_term) {
  Packet p = header_only();
  enc::small_tuple(p, 4);
  enc::integer(p, 6);
  enc::pid(p, "a@127.0.0.1", 1, 0, 3);
  enc::atom(p, "");
  enc::atom(p, name);
  p.insert(p.end(), payload_term.begin(), payload_term.end());
  return p;
}

void expect_close(const Packet& p, const std::string& what, long offset,
                  std::shared_ptr<const Policy> policy = default_policy()) {
  Channel ch(std::move(policy), kLocal);
  Verdict v;
  ch.inspect(Bytes(p.data(), p.size()), v);
  ASSERT_EQ(v.action, Action::Close) << what;
  EXPECT_NE(v.error.find(what), std::string::npos) << v.error;
  EXPECT_EQ(error_offset(v.error), offset) << v.error;
  EXPECT_EQ(ch.stats().errors.load(), 1u);
}

TEST(Malformed, DistHeader) {
  expect_close({1, 2, 3}, "bad dist header magic", 0);
  expect_close({131}, "bad dist header magic", 0);
  expect_close({131, 'X', 0}, "unknown dist header type", 1);
  expect_close({131, 'D'}, "truncated dist header", 2);
  expect_close({131, 'D', 3, 0x88}, "truncated atom cache flags", 3);
  // One new reference whose text is cut short.
  expect_close({131, 'D', 1, 0x08, 5, 10, 'a', 'b'}, "truncated atom cache entry", 6);
}

TEST(Malformed, BadAtomCacheIndex) {
  // A reference (not new) to slot 5, which nothing wrote.
  expect_close({131, 'D', 1, 0x00, 5}, "reference to an empty atom cache slot", 4);
  // ATOM_CACHE_REF 3 in the control tuple of a header with one reference.
  Packet p = {131, 'D', 1, 0x08, 5, 3, 'f', 'o', 'o', 104, 3, 97, 1, 82, 3};
  expect_close(p, "atom cache reference out of range", 13);
}

TEST(Malformed, TruncatedTerm) {
  Packet p = reg_send("x", {104, 2, 97, 1, 98, 0});
  expect_close(p, "truncated term", static_cast<long>(p.size() - 2));
  // Fewer bytes than the tuple has elements: refused before walking them.
  Packet short_tuple = reg_send("x", {104, 2, 97});
  expect_close(short_tuple, "term count exceeds remaining bytes",
               static_cast<long>(short_tuple.size() - 1));
  Packet q = reg_send("x", {});
  expect_close(q, "missing payload", static_cast<long>(q.size()));
}

TEST(Malformed, ImpossibleLengths) {
  Packet list = reg_send("x", {108, 0xFF, 0xFF, 0xFF, 0xFF, 106});
  expect_close(list, "term count exceeds remaining bytes", static_cast<long>(list.size() - 1));
  Packet tuple = reg_send("x", {105, 0x7F, 0xFF, 0xFF, 0xFF, 97, 1});
  expect_close(tuple, "term count exceeds remaining bytes", static_cast<long>(tuple.size() - 2));
  Packet map = reg_send("x", {116, 0x40, 0, 0, 0, 97, 1, 97, 2});
  expect_close(map, "term count exceeds remaining bytes", static_cast<long>(map.size() - 4));
  Packet bin = reg_send("x", {109, 0, 1, 0, 0, 1, 2, 3});
  expect_close(bin, "binary length exceeds remaining bytes", static_cast<long>(bin.size() - 8));
  Packet big = reg_send("x", {111, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1});
  expect_close(big, "big integer length exceeds remaining bytes",
               static_cast<long>(big.size() - 7));
  Packet atom = reg_send("x", {118, 0x07, 0xD0, 'a'});
  expect_close(atom, "atom too long", static_cast<long>(atom.size() - 1));
  Packet str = reg_send("x", {107, 0xFF, 0xFF, 'a'});
  expect_close(str, "truncated term", static_cast<long>(str.size() - 4));
}

TEST(Malformed, BadTerms) {
  Packet unknown = reg_send("x", {200});
  expect_close(unknown, "unknown term tag", static_cast<long>(unknown.size() - 1));
  Packet compressed = reg_send("x", {80, 0, 0, 0, 1, 0});
  expect_close(compressed, "compressed term", static_cast<long>(compressed.size() - 6));
  Packet bits = reg_send("x", {77, 0, 0, 0, 1, 9, 0});
  expect_close(bits, "bad bit count", static_cast<long>(bits.size() - 7));
  Packet sign = reg_send("x", {110, 1, 2, 0});
  expect_close(sign, "bad big integer sign", static_cast<long>(sign.size() - 4));
  Packet ref = reg_send("x", {90, 0, 9, 119, 1, 'a'});
  expect_close(ref, "reference too long", static_cast<long>(ref.size() - 6));
  Packet node = reg_send("x", {88, 97, 1});
  expect_close(node, "atom expected", static_cast<long>(node.size() - 2));
  // A fun whose size field does not cover its contents.
  Packet fun = reg_send("x", {});
  fun.insert(fun.end(), {112, 0, 0, 0, 99, 0});
  fun.insert(fun.end(), 16, 0xAB);
  fun.insert(fun.end(), {0, 0, 0, 1, 0, 0, 0, 0, 119, 1, 'm', 97, 0, 97, 0});
  enc::pid(fun, "a@127.0.0.1", 1, 0, 3);
  size_t fun_at = fun.size() - (1 + 4 + 1 + 16 + 4 + 4 + 3 + 2 + 2 + 1 + 13 + 12);
  expect_close(fun, "fun size does not match its contents", static_cast<long>(fun_at));
}

// The smuggling a zero-word reference allows (see etf_test): the filter
// would see a REG_SEND to a harmless-looking name and an empty payload;
// the VM, four bytes out of step, a $gen_cast to rex of os:cmd.
TEST(Malformed, ReferenceWithoutIdWordsCannotSmuggleAMessage) {
  // What the VM would decode after the reference: name and payload.
  std::vector<uint8_t> hidden;
  enc::atom(hidden, "rex");
  enc::small_tuple(hidden, 2);
  enc::atom(hidden, "$gen_cast");
  enc::small_tuple(hidden, 5);
  enc::atom(hidden, "cast");
  enc::atom(hidden, "os");
  enc::atom(hidden, "cmd");
  enc::list_header(hidden, 1);
  hidden.insert(hidden.end(), {tag::kString, 0, 2, 'i', 'd'});
  enc::nil(hidden);
  enc::pid(hidden, "a@127.0.0.1", 1, 0, 3);
  // The filter's view: cookie = reference with 0 words, name = an atom
  // whose first two text bytes end the VM's 4-byte id word, then the rest.
  Packet p = header_only();
  enc::small_tuple(p, 4);
  enc::integer(p, 6);
  enc::pid(p, "a@127.0.0.1", 1, 0, 3);
  const size_t ref_at = p.size();
  p.insert(p.end(), {tag::kNewerReference, 0, 0, 119, 1, 'n', 0, 0, 0, 1});
  p.insert(p.end(), {tag::kSmallAtomUtf8, static_cast<uint8_t>(2 + hidden.size()), 'x', 'x'});
  p.insert(p.end(), hidden.begin(), hidden.end());
  enc::nil(p);  // the payload the filter would judge
  expect_close(p, "reference without id words", static_cast<long>(ref_at));
}

// {io_request, From, Ref, {requests, [Harmless | [os:cmd]]}} to user: the
// requests list in two LIST_EXT. The VM (and the io server) would see both
// requests, the policy only the first: refused.
TEST(Malformed, SplitListCannotHideARequest) {
  auto put_chars = [](std::vector<uint8_t>& out, std::string_view m, std::string_view f) {
    enc::small_tuple(out, 5);
    enc::atom(out, "put_chars");
    enc::atom(out, "unicode");
    enc::atom(out, m);
    enc::atom(out, f);
    enc::list_header(out, 1);
    out.insert(out.end(), {tag::kString, 0, 2, 'i', 'd'});
    enc::nil(out);
  };
  std::vector<uint8_t> req;
  enc::small_tuple(req, 4);
  enc::atom(req, "io_request");
  enc::pid(req, "a@127.0.0.1", 1, 0, 3);
  enc::integer(req, 1);
  enc::small_tuple(req, 2);
  enc::atom(req, "requests");
  enc::list_header(req, 1);
  put_chars(req, "io_lib", "format");
  const size_t tail_at = req.size();
  enc::list_header(req, 1);  // the tail: a list of the second request
  put_chars(req, "os", "cmd");
  enc::nil(req);
  Packet p = reg_send("user", req);
  expect_close(p, "list tail is a list", static_cast<long>(p.size() - req.size() + tail_at));
}

// The same io_request with its tag atom wrapped in an empty LIST_EXT,
// which the VM decodes as the atom itself: refused.
TEST(Malformed, EmptyListExtCannotHideATerm) {
  std::vector<uint8_t> req;
  enc::small_tuple(req, 4);
  const size_t list_at = req.size();
  req.insert(req.end(), {tag::kList, 0, 0, 0, 0});
  enc::atom(req, "io_request");
  enc::pid(req, "a@127.0.0.1", 1, 0, 3);
  enc::integer(req, 1);
  enc::small_tuple(req, 5);
  enc::atom(req, "put_chars");
  enc::atom(req, "unicode");
  enc::atom(req, "os");
  enc::atom(req, "cmd");
  enc::nil(req);
  Packet p = reg_send("user", req);
  expect_close(p, "LIST_EXT without elements", static_cast<long>(p.size() - req.size() + list_at));
}

TEST(Malformed, ControlTuple) {
  expect_close({131, 'D', 0, 97, 1}, "control message is not a tuple", 3);
  expect_close({131, 'D', 0, 104, 1, 97, 99}, "unknown control message", 3);
  expect_close({131, 'D', 0, 104, 2, 97, 1, 106}, "wrong control tuple arity", 3);
  Packet trailing = reg_send("x", {106, 106});
  expect_close(trailing, "trailing bytes after the message",
               static_cast<long>(trailing.size() - 1));
}

TEST(Malformed, Fragments) {
  expect_close({131, 'E', 0, 0}, "truncated fragment header", 0);
  expect_close({131, 'F', 0, 0}, "truncated fragment header", 0);
  Packet unknown = frag_header('F', 42, 1);
  unknown.push_back(106);
  expect_close(unknown, "fragment for an unknown sequence", 2);
  Packet zero = frag_header('E', 42, 0);
  zero.push_back(0);
  expect_close(zero, "fragment id 0", 10);

  Channel ch(default_policy(), kLocal);
  Packet first = frag_header('E', 7, 3);
  first.insert(first.end(), {0, 104, 4});
  Verdict v;
  ch.inspect(Bytes(first.data(), first.size()), v);
  ASSERT_EQ(v.action, Action::Hold) << v.error;
  ch.inspect(Bytes(first.data(), first.size()), v);
  ASSERT_EQ(v.action, Action::Close);
  EXPECT_EQ(v.error, "fragment sequence already open at byte 2");

  Channel order(default_policy(), kLocal);
  order.inspect(Bytes(first.data(), first.size()), v);
  Packet skip = frag_header('F', 7, 1);
  order.inspect(Bytes(skip.data(), skip.size()), v);
  ASSERT_EQ(v.action, Action::Close);
  EXPECT_EQ(v.error, "fragment out of order at byte 10");
}

TEST(Malformed, TooManyOpenSequences) {
  auto policy = policy_with([](Policy& p) { p.max_open_fragments = 8; });
  Channel ch(policy, kLocal);
  Verdict v;
  for (uint64_t seq = 1; seq <= 8; seq++) {
    Packet p = frag_header('E', seq, 2);
    p.insert(p.end(), {0, 104});
    ch.inspect(Bytes(p.data(), p.size()), v);
    ASSERT_EQ(v.action, Action::Hold) << v.error;
  }
  Packet p = frag_header('E', 9, 2);
  p.insert(p.end(), {0, 104});
  ch.inspect(Bytes(p.data(), p.size()), v);
  ASSERT_EQ(v.action, Action::Close);
  EXPECT_EQ(v.error, "too many open fragment sequences at byte 2");
}

// A malformed reassembled message names the offset in the message (its
// header as the first fragment had it, then the body).
TEST(Malformed, ReassembledMessage) {
  Channel ch(default_policy(), kLocal);
  Packet first = frag_header('E', 5, 2);
  first.insert(first.end(), {0, 104, 2, 97, 6});
  Packet last = frag_header('F', 5, 1);
  last.push_back(200);
  Verdict v;
  ch.inspect(Bytes(first.data(), first.size()), v);
  ASSERT_EQ(v.action, Action::Hold);
  ch.inspect(Bytes(last.data(), last.size()), v);
  ASSERT_EQ(v.action, Action::Close);
  EXPECT_EQ(v.error, "unknown term tag at byte 7");
  EXPECT_EQ(ch.open_sequences(), 0u);
}

// --- size limits --------------------------------------------------------------

void expect_delivered_decodes(const std::vector<Packet>& in, const std::vector<Seen>& seen) {
  for (const Seen& s : run(delivered(in, seen))) EXPECT_NE(s.action, Action::Close) << s.error;
}

// The drops of a stream that must not close, each for `reason`.
size_t drops(const std::vector<Seen>& seen, const std::string& reason) {
  size_t n = 0;
  for (const Seen& s : seen) {
    EXPECT_NE(s.action, Action::Close) << s.error;
    if (s.action != Action::Drop) continue;
    EXPECT_EQ(s.reason, reason);
    EXPECT_EQ(s.hint, Hint::Drop);
    n++;
  }
  return n;
}

TEST(Limits, FragmentedMessageOverMaxMessageSizeIsDropped) {
  std::vector<Packet> ps = load("fragments.a2b");
  auto policy = policy_with([](Policy& p) { p.max_message_size = 120000; });
  Channel ch(policy, kLocal);
  std::vector<Seen> seen = run(ch, ps);
  // The concurrent 150 000-byte binaries.
  EXPECT_EQ(drops(seen, "message larger than max_message_size"), 4u);
  EXPECT_EQ(ch.stats().too_large.load(), 4u);
  EXPECT_EQ(ch.reassembly_bytes(), 0u);
  // The cache writes of the dropped messages' headers were delivered as
  // prefixes.
  expect_delivered_decodes(ps, seen);
}

TEST(Limits, ReassemblyMemoryLimit) {
  std::vector<Packet> ps = load("fragments.a2b");
  auto policy = policy_with([](Policy& p) { p.max_reassembly_bytes = 200000; });
  Channel ch(policy, kLocal);
  std::vector<Seen> seen = run(ch, ps);
  EXPECT_GE(drops(seen, "fragment reassembly memory limit"), 1u);
  EXPECT_EQ(ch.reassembly_bytes(), 0u);
  expect_delivered_decodes(ps, seen);
}

// Monitor mode enforces neither limit: what they would drop reaches the
// VM (a sequence over a limit at its first fragment as fragments the VM
// reassembles, one that goes over later reassembled here) and is counted
// as would_drop. distribution_SUITE:exit_dist_fragments has a hundred 1 MiB
// messages interleaved; the VM takes them, so a monitoring filter must.
TEST(Limits, MonitorModeCountsWhatTheLimitsWouldDrop) {
  std::vector<Packet> ps = load("fragments.a2b");
  const auto monitor = [](Policy& p) { p.mode = Mode::Monitor; };
  std::vector<Seen> whole = run(ps, policy_with(monitor));
  for (uint64_t limit : {120000u, 200000u}) {
    SCOPED_TRACE(limit);
    auto policy = policy_with([&](Policy& p) {
      p.mode = Mode::Monitor;
      p.max_message_size = limit;
      p.max_reassembly_bytes = limit;
    });
    Channel ch(policy, kLocal);
    std::vector<Seen> seen = run(ch, ps);
    size_t would_drop = 0;
    for (const Seen& s : seen) {
      ASSERT_NE(s.action, Action::Drop) << s.reason;
      ASSERT_NE(s.action, Action::Close) << s.error;
      if (s.action == Action::Keep && s.hint == Hint::Drop &&
          (s.reason == "message larger than max_message_size" ||
           s.reason == "fragment reassembly memory limit")) {
        would_drop++;
      }
    }
    EXPECT_GE(would_drop, 1u);
    EXPECT_GE(ch.stats().would_drop.load(), would_drop);
    EXPECT_EQ(ch.stats().too_large.load(), 0u);
    EXPECT_EQ(ch.reassembly_bytes(), 0u);
    EXPECT_EQ(ch.open_sequences(), 0u);
    // The VM decodes the same messages, in the same order, as from a
    // filter whose limits were not reached.
    // (Not the carriers of atom cache writes: they are the filter's own.)
    const std::vector<Packet> out = delivered(ps, seen);
    std::vector<Seen> vm = run(out, policy_with(monitor));
    std::vector<std::pair<std::vector<uint8_t>, std::vector<uint8_t>>> want, got;
    for (const Seen& s : whole) {
      if (s.decoded) want.emplace_back(s.control, s.payload);
    }
    for (size_t i = 0; i < vm.size(); i++) {
      ASSERT_NE(vm[i].action, Action::Close) << vm[i].error;
      bool carrier = false;
      for (const Seen& s : seen) carrier = carrier || s.prefix == out[i];
      if (vm[i].decoded && !carrier) got.emplace_back(vm[i].control, vm[i].payload);
    }
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); i++) {
      EXPECT_TRUE(got[i] == want[i]) << "message " << i << " of " << got.size();
    }
  }
}

// A trusted peer of an enforcing node gets monitor mode with the limits
// kept (policy_for(true)): nothing is dropped for what it asks, but its
// memory stays bounded.
TEST(Limits, TrustedMonitorKeepsTheLimits) {
  std::vector<Packet> ps = load("fragments.a2b");
  auto policy = policy_with([](Policy& p) {
    p.mode = Mode::Monitor;
    p.limits_in_monitor = true;
    p.max_message_size = 120000;
  });
  Channel ch(policy, kLocal);
  std::vector<Seen> seen = run(ch, ps);
  EXPECT_EQ(drops(seen, "message larger than max_message_size"), 4u);
  EXPECT_EQ(ch.stats().too_large.load(), 4u);
  expect_delivered_decodes(ps, seen);
}

#if defined(__SANITIZE_ADDRESS__)
#define KTLS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KTLS_ASAN 1
#endif
#endif

// The fragment count in a first fragment is the peer's word. Sixteen
// sequences that each claim 2^32 fragments of 64 KiB must not make the
// channel reserve 128 MiB apiece: under an address-space limit (strict
// overcommit, ulimit -v) that is std::bad_alloc, and the VM aborts.
TEST(Limits, ClaimedFragmentCountReservesLittle) {
#ifdef KTLS_ASAN
  GTEST_SKIP() << "ASan's shadow memory does not fit under an address-space limit";
#else
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto open_sequences = [] {
    std::ifstream statm("/proc/self/statm");
    uint64_t pages = 0;
    statm >> pages;
    rlimit lim{};
    lim.rlim_cur = lim.rlim_max = pages * 4096 + (768ull << 20);
    setrlimit(RLIMIT_AS, &lim);
    Channel ch(default_policy(), kLocal);
    Verdict v;
    for (uint64_t seq = 1; seq <= 16; seq++) {
      Packet p = frag_header('E', seq, uint64_t{1} << 32);
      p.push_back(0);
      p.resize(p.size() + (64u << 10), 106);
      ch.inspect(Bytes(p.data(), p.size()), v);
      if (v.action != Action::Hold) std::exit(2);
    }
    std::exit(0);
  };
  EXPECT_EXIT(open_sequences(), ::testing::ExitedWithCode(0), "");
#endif
}

// A SEND of an n-byte binary in one unfragmented dist packet.
Packet binary_send(size_t n) {
  Packet d = {131, 'D', 0};
  enc::small_tuple(d, 3);
  enc::integer(d, 2);  // SEND
  enc::atom(d, "");
  enc::pid(d, "ktls_filter_test@127.0.0.1", 5, 0, 1);
  d.insert(d.end(), {tag::kBinary, static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                     static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)});
  d.resize(d.size() + n, 7);
  return d;
}

Packet one_mib_send() { return binary_send(1u << 20); }

// OTP 25 has no limit on the fragmented messages in flight on a
// connection: every process of the peer that is sending one over 64 KiB
// has a sequence open (distribution_SUITE:exit_dist_fragments suspends a
// hundred senders in the middle). At the old limit of 64 the connection
// was closed.
TEST(Fragments, ThousandSequencesOpenAtOnce) {
  const Packet d = binary_send(100000);
  Channel ch(default_policy(), kLocal);
  Verdict v;
  std::vector<std::vector<Packet>> msgs;
  for (uint64_t seq = 1; seq <= 1000; seq++) msgs.push_back(fragment(d, 3, seq, 2));
  for (const auto& m : msgs) {
    ch.inspect(Bytes(m[0].data(), m[0].size()), v);
    ASSERT_EQ(v.action, Action::Hold) << v.error;
  }
  EXPECT_EQ(ch.open_sequences(), 1000u);
  for (const auto& m : msgs) {
    ch.inspect(Bytes(m[1].data(), m[1].size()), v);
    ASSERT_EQ(v.action, Action::Keep) << v.error;
    ASSERT_EQ(v.replacement().size(), d.size());
  }
  EXPECT_EQ(ch.open_sequences(), 0u);
  EXPECT_EQ(ch.reassembly_bytes(), 0u);
  EXPECT_EQ(ch.reserved_bytes(), 0u);
}

// What open sequences reserve up front comes out of the reassembly limit
// too: a hundred 1 MiB messages in flight under a 16 MiB limit reserved
// 100 MiB.
int64_t g_live_bytes = 0, g_peak_bytes = 0;
TEST(Limits, OpenSequencesReserveWithinTheReassemblyLimit) {
  const uint64_t limit = 16u << 20;
  auto policy = policy_with([&](Policy& p) { p.max_reassembly_bytes = limit; });
  const Packet d = one_mib_send();
  const MessageStorage saved = message_storage();
  set_message_storage({[](size_t b) {
                         g_live_bytes += static_cast<int64_t>(b);
                         g_peak_bytes = std::max(g_peak_bytes, g_live_bytes);
                         return std::malloc(b);
                       },
                       [](void* p, size_t b) {
                         g_live_bytes -= static_cast<int64_t>(b);
                         std::free(p);
                       }});
  g_live_bytes = g_peak_bytes = 0;
  {
    Channel ch(policy, kLocal);
    Verdict v;
    for (uint64_t seq = 1; seq <= 100; seq++) {
      std::vector<Packet> frags = fragment(d, 3, seq, 17);
      ch.inspect(Bytes(frags[0].data(), frags[0].size()), v);
      ASSERT_EQ(v.action, Action::Hold) << v.error;
    }
    EXPECT_LE(ch.reserved_bytes(), limit + 100 * 4096);
  }
  set_message_storage(saved);
  EXPECT_LT(g_peak_bytes, static_cast<int64_t>(3 * limit));
}

// The header of an open sequence (and the texts of its atom cache
// references) is held as long as the sequence is open, so it counts as
// reassembly memory: a peer cannot hold ~260 KiB of atom texts per
// sequence outside the limit. Over it, the message is given up (and its
// cache writes still reach the VM) like one whose body is over it.
TEST(Limits, FragmentHeadersCountTowardsTheReassemblyLimit) {
  auto policy = policy_with([](Policy& p) { p.max_reassembly_bytes = 4096; });
  Channel ch(policy, kLocal);
  std::vector<Ref> refs;
  for (uint16_t slot = 0; slot < 20; slot++) {
    refs.push_back({slot, true, std::string(250, static_cast<char>('a' + slot))});
  }
  Packet first = dist_header('E', refs);
  first.insert(first.end(), {104, 0});  // the start of a body
  Verdict v;
  ch.inspect(Bytes(first.data(), first.size()), v);
  ASSERT_EQ(v.action, Action::Hold) << v.error;
  EXPECT_FALSE(v.prefix.empty());
  EXPECT_EQ(ch.reassembly_bytes(), 0u);
  Packet last = frag_header('F', 9, 1);
  ch.inspect(Bytes(last.data(), last.size()), v);
  ASSERT_EQ(v.action, Action::Drop) << v.error;
  EXPECT_STREQ(v.reason, "fragment reassembly memory limit");
}

// A SEND whose payload is an atom cache reference the header does not
// have (distribution_SUITE's dmsg_bad_atom_cache_ref).
Packet send_with_bad_payload() {
  Packet d = {131, 'D', 0};
  enc::small_tuple(d, 3);
  enc::integer(d, 2);  // SEND
  enc::atom(d, "");
  enc::pid(d, "ktls_filter_test@127.0.0.1", 5, 0, 1);
  d.insert(d.end(), {tag::kAtomCacheRef, 137});
  return d;
}

// OTP decodes a message's payload when its receiver reads it, and only
// then takes the connection down: in monitor mode the VM gets such a
// message as it came (would_drop), and the channel goes on; enforce mode
// closes at once. Whole and fragmented.
TEST(Malformed, UndecodablePayloadIsKeptInMonitorMode) {
  const Packet bad = send_with_bad_payload();
  const Packet good = binary_send(10);
  auto monitor = policy_with([](Policy& p) { p.mode = Mode::Monitor; });
  {
    Channel ch(monitor, kLocal);
    std::vector<Seen> seen = run(ch, {bad, good, bad});
    for (const Seen& s : seen) ASSERT_EQ(s.action, Action::Keep) << s.error;
    EXPECT_FALSE(seen[0].replaced);  // the packet as it came
    EXPECT_EQ(seen[0].hint, Hint::Drop);
    EXPECT_EQ(ch.stats().would_drop.load(), 2u);
    EXPECT_EQ(ch.stats().errors.load(), 0u);
  }
  {
    Channel ch(monitor, kLocal);
    Packet big = send_with_bad_payload();
    big.resize(big.size() + 100, 0);  // trailing bytes: still undecodable
    std::vector<Packet> frags = fragment(big, 3, 12, 3);
    std::vector<Seen> seen = run(ch, frags);
    ASSERT_EQ(seen.back().action, Action::Keep) << seen.back().error;
    EXPECT_EQ(seen.back().bytes, big);
    EXPECT_EQ(ch.open_sequences(), 0u);
    EXPECT_EQ(run(ch, {good}).back().action, Action::Keep);
  }
  Channel ch(default_policy(), kLocal);
  std::vector<Seen> seen = run(ch, {bad});
  ASSERT_EQ(seen[0].action, Action::Close);
  EXPECT_NE(seen[0].error.find("send: "), std::string::npos) << seen[0].error;
}

// A message of a few MiB (OTP cuts a 1 MiB binary into 17 fragments) is
// reassembled in one allocation: growing the buffer as fragments arrive
// copied it again and cost bulk 1 MiB messages 5x their throughput.
size_t g_allocations = 0;
TEST(Fragments, OneMibMessageIsReassembledInOneAllocation) {
  const Packet d = one_mib_send();
  std::vector<Packet> frags = fragment(d, 3, 77, 17);
  const MessageStorage saved = message_storage();
  set_message_storage({[](size_t b) {
                         g_allocations++;
                         return std::malloc(b);
                       },
                       [](void* p, size_t) { std::free(p); }});
  g_allocations = 0;
  {
    Channel ch(default_policy(), kLocal);
    std::vector<Seen> seen = run(ch, frags);
    EXPECT_EQ(seen.back().action, Action::Keep);
    EXPECT_EQ(seen.back().bytes, d);
  }
  set_message_storage(saved);
  EXPECT_EQ(g_allocations, 1u);
}

// Out of memory while reassembling closes the connection (the carrier
// thread or a scheduler must not see an exception: that aborts the VM).
TEST(Limits, OutOfMemoryClosesTheChannel) {
  const Packet d = one_mib_send();
  std::vector<Packet> frags = fragment(d, 3, 77, 17);
  const MessageStorage saved = message_storage();
  set_message_storage(
      {[](size_t) -> void* { throw std::bad_alloc(); }, [](void* p, size_t) { std::free(p); }});
  {
    Channel ch(default_policy(), kLocal);
    Verdict v;
    ch.inspect(Bytes(frags[0].data(), frags[0].size()), v);
    EXPECT_EQ(v.action, Action::Close);
    EXPECT_NE(v.error.find("out of memory"), std::string::npos) << v.error;
    ch.inspect(Bytes(frags[1].data(), frags[1].size()), v);
    EXPECT_EQ(v.action, Action::Close);
    EXPECT_EQ(ch.stats().errors.load(), 2u);
  }
  set_message_storage(saved);
}

// A message that fills max_message_size must not make the buffer double
// past it: a 512 MiB flood against the 128 MiB default held a 256 MiB
// buffer that way.
size_t g_largest_allocation = 0;
TEST(Limits, ReassemblyBufferStaysWithinMaxMessageSize) {
  const uint64_t max = 32u << 20;
  auto policy = policy_with([&](Policy& p) { p.max_message_size = max; });
  const MessageStorage saved = message_storage();
  set_message_storage({[](size_t b) {
                         g_largest_allocation = std::max(g_largest_allocation, b);
                         return std::malloc(b);
                       },
                       [](void* p, size_t) { std::free(p); }});
  g_largest_allocation = 0;
  {
    Channel ch(policy, kLocal);
    Verdict v;
    const uint64_t frags = max / (64u << 10);  // exactly max_message_size
    Packet first = frag_header('E', 5, frags);
    first.push_back(0);  // no atom cache references
    first.resize(first.size() + (64u << 10), 106);
    ch.inspect(Bytes(first.data(), first.size()), v);
    ASSERT_EQ(v.action, Action::Hold);
    for (uint64_t id = frags - 1; id > 0; id--) {
      Packet f = frag_header('F', 5, id);
      f.resize(f.size() + (64u << 10), 106);
      ch.inspect(Bytes(f.data(), f.size()), v);
      if (id > 1) {
        ASSERT_EQ(v.action, Action::Hold) << v.error;
      }
    }
    // Not a well-formed term (the last packet closes), but it was held
    // to the end: the decision comes after reassembly.
    EXPECT_EQ(ch.reassembly_bytes(), 0u);
  }
  set_message_storage(saved);
  EXPECT_GT(g_largest_allocation, max / 2);
  EXPECT_LE(g_largest_allocation, max + 64);
}

// A first fragment whose count times its size is over max_message_size
// (the 512 MiB flood of the dist-filtering talk) is given up at once: no
// buffering up to the limit first.
TEST(Limits, SequenceClaimingTooMuchIsGivenUpAtOnce) {
  auto policy = policy_with([](Policy& p) { p.max_message_size = 1u << 20; });
  Channel ch(policy, kLocal);
  Verdict v;
  // 18 x 64 KiB: over 1 MiB whatever the size of the last
  Packet first = frag_header('E', 9, 18);
  first.push_back(0);
  first.resize(first.size() + (64u << 10), 106);
  ch.inspect(Bytes(first.data(), first.size()), v);
  EXPECT_EQ(v.action, Action::Hold);
  EXPECT_EQ(ch.reassembly_bytes(), 0u);
  for (uint64_t id = 17; id > 0; id--) {
    Packet f = frag_header('F', 9, id);
    f.resize(f.size() + (64u << 10), 106);
    ch.inspect(Bytes(f.data(), f.size()), v);
    EXPECT_EQ(ch.reassembly_bytes(), 0u);
  }
  EXPECT_EQ(v.action, Action::Drop);
  EXPECT_STREQ(v.reason, "message larger than max_message_size");
  EXPECT_EQ(ch.stats().too_large.load(), 1u);
}

// max_message_size is about messages, whether they came in fragments or
// not: a peer that does not fragment (or lies) gets no larger messages in.
TEST(Limits, WholeMessageOverMaxMessageSizeIsDropped) {
  std::vector<Packet> ps = load("fragments.a2b");
  auto policy = policy_with([](Policy& p) { p.max_message_size = 50000; });
  Channel ch(policy, kLocal);
  std::vector<Seen> seen = run(ch, ps);
  size_t big = 0;
  while (!(ps[big][1] == 'D' && ps[big].size() > 50000)) big++;
  EXPECT_EQ(seen[big].action, Action::Drop);
  EXPECT_EQ(seen[big].reason, "message larger than max_message_size");
  EXPECT_EQ(seen[big].hint, Hint::Drop);
  // Its header wrote the cache: the carrier takes the writes to the VM.
  EXPECT_FALSE(seen[big].bytes.empty());
  EXPECT_EQ(ch.stats().too_large.load(), 7u);  // and all six fragmented ones
  expect_delivered_decodes(ps, seen);
}

// --- pass-through framing --------------------------------------------------------

// A peer without the atom cache flag sends 'p' + versioned terms. Built here
// from a captured spawn request's terms.
TEST(PassThrough, DroppedSpawnRequestIsRewrittenInPassThroughForm) {
  std::vector<Seen> seen = run(load("attack_erpc_halt.a2b"));
  const Seen* s = find_op(seen, "spawn_request", Action::Drop);
  ASSERT_NE(s, nullptr);
  Packet p = {'p'};
  p.insert(p.end(), s->control.begin(), s->control.end());
  p.insert(p.end(), s->payload.begin(), s->payload.end());
  Channel ch(default_policy(), kLocal);
  Seen r = inspect(ch, p);
  ASSERT_EQ(r.action, Action::Drop) << r.error;
  EXPECT_STREQ(ch.framing(), "pass_through");
  ASSERT_FALSE(r.bytes.empty());
  // The rewritten request must be a pass-through packet as well.
  EXPECT_EQ(r.bytes[0], 'p');
  Channel vm(policy_with([](Policy& q) { q.mode = Mode::Monitor; }), kLocal);
  Seen back = inspect(vm, r.bytes);
  ASSERT_TRUE(back.decoded) << back.error;
  EXPECT_EQ(back.op, "spawn_request");
  static const char kDenied[] = "spawn_request_denied";
  EXPECT_NE(
      std::search(back.control.begin(), back.control.end(), kDenied, kDenied + sizeof kDenied - 1),
      back.control.end());
}

TEST(PassThrough, MixedFramingCloses) {
  std::vector<Packet> ps = load("ping.a2b");
  Channel ch(default_policy(), kLocal);
  Verdict v;
  ch.inspect(Bytes(ps[0].data(), ps[0].size()), v);
  ASSERT_EQ(v.action, Action::Keep);
  Packet p = {'p', 131, 104, 1, 97, 1};
  ch.inspect(Bytes(p.data(), p.size()), v);
  EXPECT_EQ(v.action, Action::Close);
  EXPECT_EQ(v.error, "pass-through packet on a channel with dist headers at byte 0");
}

// Node-wide counters are the sum over channels, live or closed (they are
// summed when read instead of being added to on every message).
TEST(Stats, WorldSumsLiveAndClosedChannels) {
  const std::vector<Packet> ps = load("gen_server.a2b");
  const ControlInfo* send = control_info(static_cast<int>(Op::SEND));
  ASSERT_NE(send, nullptr);
  Stats before;
  world_stats(before);
  uint64_t packets = 0, kept = 0, sends = 0;
  {
    Channel a(default_policy(), kLocal), b(default_policy(), kLocal);
    run(a, ps);
    run(b, ps);
    packets = a.stats().packets.load();
    kept = a.stats().kept.load();
    sends = a.stats().control[send->index].seen.load();
    ASSERT_GT(packets, 0u);
    Stats live;
    world_stats(live);
    EXPECT_EQ(live.packets.load() - before.packets.load(), 2 * packets);
    EXPECT_EQ(live.kept.load() - before.kept.load(), 2 * kept);
  }
  Stats after;
  world_stats(after);
  EXPECT_EQ(after.packets.load() - before.packets.load(), 2 * packets);
  EXPECT_EQ(after.kept.load() - before.kept.load(), 2 * kept);
  EXPECT_EQ(after.control[send->index].seen.load() - before.control[send->index].seen.load(),
            2 * sends);
}

TEST(Ticks, EmptyPacketIsATick) {
  Channel ch(default_policy(), kLocal);
  Verdict v;
  ch.inspect(Bytes(), v);
  EXPECT_EQ(v.action, Action::Keep);
  EXPECT_EQ(ch.stats().packets.load(), 0u);
}

}  // namespace
}  // namespace ktls::filter
