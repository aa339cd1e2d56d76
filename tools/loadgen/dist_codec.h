// What a simulated node puts on the wire after the handshake, and what it
// makes of what the target sends: 4-byte framed dist packets without a dist
// header (erl_interface does not offer DFLAG_DIST_HDR_ATOM_CACHE, so every
// packet is 'p' (pass-through), the control message, then the message).
//
// Messages (terms agreed with ktls_loadgen_target.erl):
//   to the echo process:  {lg, FromPid, Seq, SentNs, Payload}
//   echoed back:          {lg_echo, Seq, SentNs, Payload}
//   to the stats helper:  {lg_stats_req, FromPid, Seq}
//   its answer:           {lg_stats, Seq, MemTotal, MemProcesses, MemBinary,
//                          ProcessCount, PortCount, CpuMs, RssBytes,
//                          Carrier, Filtering, MessagesDropped, SpawnRequestsRefused}
//                         (an older helper stops after RssBytes)
//
// And the attacks of the attack mix (append_attack), requests that
// ktls_filter's default policy refuses.
#pragma once

#include <ei.h>

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "carrier/result.h"

namespace ktls::loadgen {

// The pid as the external term format writes it (no version byte), kept per
// connection so that sending never encodes it again.
carrier::Result<std::string> encode_pid(const erlang_pid& pid);

// Appends a tick (an empty 4-byte framed packet).
void append_tick(std::string& out);

// Appends a REG_SEND of {lg, From, Seq, SentNs, Payload} to registered name
// `to`. `to` must be at most 255 bytes.
void append_echo_request(std::string& out, std::string_view from_pid, std::string_view to,
                         uint64_t seq, uint64_t sent_ns, std::span<const char> payload);

// Appends a REG_SEND of {lg_stats_req, From, Seq} to registered name `to`.
void append_stats_request(std::string& out, std::string_view from_pid, std::string_view to,
                          uint64_t seq);

// The attacks of the attack mix. Each carries a command for os:cmd/1 (kept
// harmless unless the target is known to refuse them: swarm.cc).
enum class AttackKind : uint8_t {
  kSpawn,     // SPAWN_REQUEST (29) of {os, cmd, 1} with [Cmd], erpc-style, monitored
  kRex,       // REG_SEND to rex: {'$gen_call', {From, Ref}, {call, os, cmd, [Cmd], From}}
  kInitStop,  // REG_SEND to init: {stop, stop} (stops a node that does not refuse it)
};
inline constexpr AttackKind kAttackKinds[] = {AttackKind::kSpawn, AttackKind::kRex,
                                              AttackKind::kInitStop};
const char* attack_name(AttackKind kind);  // spawn, rex, init_stop

// Appends one attack from `from` (its pid; from_ext as encode_pid() wrote
// it) with `ref`, a reference of from's node new for this attack. `cmd` must
// be at most 1024 bytes.
void append_attack(std::string& out, AttackKind kind, const erlang_pid& from,
                   std::string_view from_ext, const erlang_ref& ref, std::string_view cmd);

// One sample of the stats helper.
struct TargetStats {
  uint64_t seq = 0;
  uint64_t mem_total = 0, mem_processes = 0, mem_binary = 0;
  uint64_t process_count = 0, port_count = 0;
  uint64_t cpu_ms = 0;             // erlang:statistics(runtime): CPU of all the VM's threads
  uint64_t rss_bytes = 0;          // from /proc/self/statm on the target (0 if unavailable)
  bool has_filter_fields = false;  // the helper sent the four below
  std::string carrier;             // -proto_dist: ktls_filter, inet_tcp, inet_tls, ...
  bool filtering = false;          // ktls_filter with deep packet inspection, enforcing
  uint64_t messages_dropped = 0;   // ktls_filter:world_stats_get(): messages_dropped
  uint64_t spawn_refused = 0;      // ... spawn_requests_refused
};

// What one inbound packet (framing removed, not a tick) was.
struct Inbound {
  enum class Kind : uint8_t {
    kEcho,           // an echoed message: seq, sent_ns
    kStats,          // a stats sample
    kOtherMessage,   // a message of another shape (counted, ignored)
    kOtherControl,   // a control message that is not a send (op set)
    kAttackRefused,  // the answer to an attack: refused (unauthorized)
    kAttackRan,      // the answer to an attack: it ran (a rex reply, a normal exit)
    kBad,            // not decodable (why set)
  };
  Kind kind = Kind::kBad;
  uint64_t seq = 0;
  uint64_t sent_ns = 0;
  long op = 0;
  TargetStats stats;
  const char* why = "";
};

// Decodes a packet. `pkt` must stay readable a few bytes past its end (the
// ei decoders check lengths only after reading; the caller's buffers have
// slack), and every decode is checked against pkt.size() afterwards.
Inbound decode_packet(std::string_view pkt);

}  // namespace ktls::loadgen
