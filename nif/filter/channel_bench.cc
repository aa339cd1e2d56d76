// Decoder throughput of Channel::inspect with the default policy (filter
// on, enforce): small control messages from the captured traffic, and
// 64 KiB binary payloads, whole and in OTP's fragments.
//   bazel run //nif/filter:channel_bench   (.bazelrc builds with -O2)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "nif/filter/channel.h"
#include "nif/filter/testdata/capture_file.h"

namespace ktls::filter {
namespace {

using testdata::Packet;

const LocalNode kLocal{"ktls_filter_bench@127.0.0.1", 1};

std::vector<Packet> load(const std::string& name) {
  std::vector<Packet> ps = testdata::load(name);
  if (ps.empty()) {
    std::fprintf(stderr, "no capture %s in %s\n", name.c_str(), testdata::dir().c_str());
    std::exit(1);
  }
  return ps;
}

// A channel that has seen `ps` up to `upto` (so the atom cache holds what
// the packet at `upto` refers to).
std::unique_ptr<Channel> primed(const std::vector<Packet>& ps, size_t upto) {
  auto ch = std::make_unique<Channel>(std::make_shared<Policy>(), kLocal);
  Verdict v;
  for (size_t i = 0; i < upto; i++) ch->inspect(Bytes(ps[i].data(), ps[i].size()), v);
  return ch;
}

void inspect_loop(benchmark::State& state, Channel& ch, const std::vector<Packet>& ps,
                  Action want) {
  Verdict v;
  size_t bytes = 0;
  for (const Packet& p : ps) bytes += p.size();
  for (auto _ : state) {
    for (const Packet& p : ps) {
      ch.inspect(Bytes(p.data(), p.size()), v);
      benchmark::DoNotOptimize(v.action);
    }
    if (v.action != want) {
      state.SkipWithError(v.error.empty() ? "unexpected verdict" : v.error.c_str());
      break;
    }
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

// Index of the first packet of `ps` whose bytes contain `text`.
size_t find(const std::vector<Packet>& ps, const std::string& text) {
  for (size_t i = 0; i < ps.size(); i++) {
    auto at = std::search(ps[i].begin(), ps[i].end(), text.begin(), text.end());
    if (at != ps[i].end()) return i;
  }
  std::fprintf(stderr, "no packet with %s\n", text.c_str());
  std::exit(1);
}

// gen_server:call({ktls_capture_echo, B}, {echo, hello}) as captured:
// REG_SEND + {'$gen_call', {Pid, [alias | Ref]}, {echo, hello}}.
void BM_GenCall(benchmark::State& state) {
  std::vector<Packet> ps = load("gen_server.a2b");
  size_t i = find(ps, "hello");
  auto ch = primed(ps, i);
  inspect_loop(state, *ch, {ps[i]}, Action::Keep);
}
BENCHMARK(BM_GenCall);

// A refused erpc:call(B, erlang, halt, []): decode, classify, rewrite.
void BM_ErpcHaltRefused(benchmark::State& state) {
  std::vector<Packet> ps = load("attack_erpc_halt.a2b");
  auto ch = primed(ps, ps.size() - 1);
  inspect_loop(state, *ch, {ps.back()}, Action::Drop);
}
BENCHMARK(BM_ErpcHaltRefused);

// The whole signals capture after its connection setup: a mix of monitor,
// link, exit, spawn_request and send packets.
void BM_SignalsMix(benchmark::State& state) {
  std::vector<Packet> ps = load("signals.a2b");
  auto ch = primed(ps, ps.size());
  std::vector<Packet> mix(ps.begin() + 3, ps.end());
  // The last packet is a refused spawn_request.
  inspect_loop(state, *ch, mix, Action::Drop);
}
BENCHMARK(BM_SignalsMix);

// REG_SEND to a name with a binary of `state.range(0)` bytes, in one
// packet (what a peer that does not fragment sends).
void BM_WholeBinary(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  Packet p = {131, 'D', 0};
  enc::small_tuple(p, 4);
  enc::integer(p, 6);
  enc::pid(p, "peer@127.0.0.1", 88, 0, 7);
  enc::atom(p, "");
  enc::atom(p, "ktls_bench_sink");
  enc::small_tuple(p, 2);
  enc::atom(p, "data");
  p.insert(p.end(), {tag::kBinary, static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                     static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)});
  p.resize(p.size() + n, 0x5A);
  Channel ch(std::make_shared<Policy>(), kLocal);
  inspect_loop(state, ch, {p}, Action::Keep);
}
BENCHMARK(BM_WholeBinary)->Arg(64 << 10)->Arg(1 << 20);

// {io_request, From, Ref, {requests, [R1, ..., Rn]}} to a pid, each Ri a
// harmless {put_chars, unicode, <<"x">>}: the policy looks at every
// request. Time per message against n shows how the policy's list
// navigation scales.
void BM_IoRequests(benchmark::State& state) {
  const uint32_t n = static_cast<uint32_t>(state.range(0));
  Packet p = {131, 'D', 0};
  enc::small_tuple(p, 3);
  enc::integer(p, 22);  // SEND_SENDER
  enc::pid(p, "peer@127.0.0.1", 88, 0, 7);
  enc::pid(p, "ktls_filter_bench@127.0.0.1", 99, 0, 1);
  enc::small_tuple(p, 4);
  enc::atom(p, "io_request");
  enc::pid(p, "peer@127.0.0.1", 88, 0, 7);
  enc::integer(p, 1);
  enc::small_tuple(p, 2);
  enc::atom(p, "requests");
  enc::list_header(p, n);
  for (uint32_t i = 0; i < n; i++) {
    enc::small_tuple(p, 3);
    enc::atom(p, "put_chars");
    enc::atom(p, "unicode");
    p.insert(p.end(), {tag::kBinary, 0, 0, 0, 1, 'x'});
  }
  enc::nil(p);
  Channel ch(std::make_shared<Policy>(), kLocal);
  inspect_loop(state, ch, {p}, Action::Keep);
}
BENCHMARK(BM_IoRequests)->Arg(100)->Arg(1000)->Arg(10000);

// ktls_bench:small/3's message as OTP 25 sends it over a connection whose
// atom cache is warm: SEND_SENDER {22, From, To} with {From, true, Seq,
// small} as payload, every atom an atom cache reference (the header writes
// nothing). The receiver is an application process (a pid the directory
// knows), so the message is judged once, for that role.
// A directory that has looked up no process yet (every pid Unknown).
class UnresolvedDirectory final : public StaticDirectory {
 public:
  Role role_of(const PidId&) const override { return Role::Unknown; }
};

// state.range(0) = 1: the receiver has not been looked up yet (a process
// that has just been spawned), so the message is judged for every role and
// handed out as Resolve.
void BM_SmallSend(benchmark::State& state) {
  const bool unresolved = state.range(0) == 1;
  const std::string peer = "ktls_bench_a@127.0.0.1";
  const std::vector<std::string> atoms = {peer, kLocal.name, "true", "small"};
  // Header of n references at slots 1..n; `write` makes them cache writes.
  auto header = [&](Packet& p, bool write) {
    p = {131, 'D', static_cast<uint8_t>(atoms.size())};
    std::vector<uint8_t> flags(atoms.size() / 2 + 1, 0);
    for (size_t i = 0; i < atoms.size(); i++) {
      flags[i / 2] |= uint8_t((write ? 8 : 0) << ((i % 2) * 4));
    }
    p.insert(p.end(), flags.begin(), flags.end());
    for (size_t i = 0; i < atoms.size(); i++) {
      p.push_back(static_cast<uint8_t>(i + 1));
      if (!write) continue;
      p.push_back(static_cast<uint8_t>(atoms[i].size()));
      p.insert(p.end(), atoms[i].begin(), atoms[i].end());
    }
  };
  auto pid = [](Packet& p, uint8_t node_ref, uint32_t id) {
    p.insert(p.end(), {tag::kNewPid, tag::kAtomCacheRef, node_ref});
    for (uint32_t w : {id, 0u, 1u}) {
      p.insert(p.end(), {static_cast<uint8_t>(w >> 24), static_cast<uint8_t>(w >> 16),
                         static_cast<uint8_t>(w >> 8), static_cast<uint8_t>(w)});
    }
  };
  auto body = [&](Packet& p) {
    enc::small_tuple(p, 3);
    enc::integer(p, 22);  // SEND_SENDER
    pid(p, 0, 4711);
    pid(p, 1, 815);
    enc::small_tuple(p, 4);
    pid(p, 0, 4711);
    p.insert(p.end(), {tag::kAtomCacheRef, 2});
    enc::integer(p, 12345);
    p.insert(p.end(), {tag::kAtomCacheRef, 3});
  };
  Packet first, p;
  header(first, true);
  body(first);
  header(p, false);
  body(p);
  const Action want = unresolved ? Action::Resolve : Action::Keep;
  static const UnresolvedDirectory dir;
  Channel ch(std::make_shared<Policy>(), kLocal);
  if (unresolved) ch.set_directory(&dir);
  Verdict v;
  ch.inspect(Bytes(first.data(), first.size()), v);
  if (v.action != want) {
    state.SkipWithError(v.error.empty() ? "unexpected verdict" : v.error.c_str());
    return;
  }
  inspect_loop(state, ch, {p}, want);
}
BENCHMARK(BM_SmallSend)->Arg(0)->Arg(1);

// One of the captured 150 000-byte binaries in its three fragments (64 KiB,
// 64 KiB, rest): reassembly, decode, the whole message handed out.
void BM_FragmentedBinary(benchmark::State& state) {
  std::vector<Packet> ps = load("fragments.a2b");
  // The last sequence of the capture: its first fragment and the two
  // continuations with the same sequence id.
  size_t last = ps.size() - 1;
  std::vector<Packet> seq;
  for (const Packet& p : ps) {
    if ((p[1] == 'E' || p[1] == 'F') &&
        std::equal(p.begin() + 2, p.begin() + 10, ps[last].begin() + 2)) {
      seq.push_back(p);
    }
  }
  size_t first = 0;
  while (!(ps[first][1] == 'E' &&
           std::equal(ps[first].begin() + 2, ps[first].begin() + 10, ps[last].begin() + 2))) {
    first++;
  }
  auto ch = primed(ps, first);
  inspect_loop(state, *ch, seq, Action::Keep);
}
BENCHMARK(BM_FragmentedBinary);

}  // namespace
}  // namespace ktls::filter

BENCHMARK_MAIN();
