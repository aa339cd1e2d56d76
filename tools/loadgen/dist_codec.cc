#include "tools/loadgen/dist_codec.h"

#include <ei.h>

#include <algorithm>
#include <array>
#include <cstring>

namespace ktls::loadgen {

using carrier::Error;
using carrier::Result;

namespace {

constexpr char kPassThrough = 'p';
constexpr long kRegSend = 6;
constexpr long kMonitorPExit = 21, kPayloadMonitorPExit = 28, kSpawnRequest = 29;
// Control messages that carry a message after them (OTP 25 dist protocol).
constexpr long kSend = 2, kSendTT = 12, kRegSendTT = 16, kSendSender = 22, kSendSenderTT = 23,
               kAliasSend = 33, kAliasSendTT = 34;

bool carries_message(long op) {
  switch (op) {
    case kSend:
    case kSendTT:
    case kRegSend:
    case kRegSendTT:
    case kSendSender:
    case kSendSenderTT:
    case kAliasSend:
    case kAliasSendTT:
      return true;
    default:
      return false;
  }
}

void put_u32(char* p, uint32_t v) {
  p[0] = static_cast<char>(v >> 24);
  p[1] = static_cast<char>(v >> 16);
  p[2] = static_cast<char>(v >> 8);
  p[3] = static_cast<char>(v);
}

// Header of a REG_SEND packet up to the message's tuple header and first
// atom: length placeholder, 'p', control {6, From, '', To}, version byte,
// {Tag, From, ...} opened with `arity` elements.
// A stack buffer: the atom names are short and the pid is pre-encoded.
struct PacketHead {
  std::array<char, 2048> buf;
  int idx = 4;  // after the length placeholder
};

void put_bytes(PacketHead& h, std::string_view bytes) {
  std::memcpy(h.buf.data() + h.idx, bytes.data(), bytes.size());
  h.idx += static_cast<int>(bytes.size());
}

// 'p', control {6, From, '', To}, the message's version byte.
void open_reg_send_to(PacketHead& h, std::string_view from_pid, std::string_view to) {
  char* b = h.buf.data();
  b[h.idx++] = kPassThrough;
  ei_encode_version(b, &h.idx);
  ei_encode_tuple_header(b, &h.idx, 4);
  ei_encode_long(b, &h.idx, kRegSend);
  put_bytes(h, from_pid);
  ei_encode_atom_len(b, &h.idx, "", 0);
  ei_encode_atom_len(b, &h.idx, to.data(), static_cast<int>(to.size()));
  ei_encode_version(b, &h.idx);
}

void open_reg_send(PacketHead& h, std::string_view from_pid, std::string_view to, int arity,
                   const char* tag) {
  char* b = h.buf.data();
  open_reg_send_to(h, from_pid, to);
  ei_encode_tuple_header(b, &h.idx, arity);
  ei_encode_atom(b, &h.idx, tag);
  std::memcpy(b + h.idx, from_pid.data(), from_pid.size());
  h.idx += static_cast<int>(from_pid.size());
}

// Appends the head and `tail` bytes, with the length of both in front.
void finish(std::string& out, PacketHead& h, std::span<const char> tail) {
  auto body = static_cast<uint32_t>(h.idx - 4 + tail.size());
  put_u32(h.buf.data(), body);
  out.append(h.buf.data(), static_cast<size_t>(h.idx));
  out.append(tail.data(), tail.size());  // deliberate copy: the send queue owns its bytes
}

bool decode_u64(const char* b, int* idx, uint64_t* v) {
  unsigned long long x = 0;
  if (ei_decode_ulonglong(b, idx, &x) != 0) return false;
  *v = x;
  return true;
}

Inbound bad(const char* why) {
  Inbound in;
  in.kind = Inbound::Kind::kBad;
  in.why = why;
  return in;
}

}  // namespace

Result<std::string> encode_pid(const erlang_pid& pid) {
  int len = 0;
  if (ei_encode_pid(nullptr, &len, &pid) != 0) return Error::message("ei_encode_pid failed");
  std::string out(static_cast<size_t>(len), '\0');
  int idx = 0;
  ei_encode_pid(out.data(), &idx, &pid);
  return out;
}

void append_tick(std::string& out) { out.append(4, '\0'); }

void append_echo_request(std::string& out, std::string_view from_pid, std::string_view to,
                         uint64_t seq, uint64_t sent_ns, std::span<const char> payload) {
  PacketHead h;
  open_reg_send(h, from_pid, to, 5, "lg");
  char* b = h.buf.data();
  ei_encode_ulonglong(b, &h.idx, seq);
  ei_encode_ulonglong(b, &h.idx, sent_ns);
  // Binary header only: the payload follows as the tail.
  b[h.idx++] = ERL_BINARY_EXT;
  put_u32(b + h.idx, static_cast<uint32_t>(payload.size()));
  h.idx += 4;
  finish(out, h, payload);
}

void append_stats_request(std::string& out, std::string_view from_pid, std::string_view to,
                          uint64_t seq) {
  PacketHead h;
  open_reg_send(h, from_pid, to, 3, "lg_stats_req");
  ei_encode_ulonglong(h.buf.data(), &h.idx, seq);
  finish(out, h, {});
}

const char* attack_name(AttackKind kind) {
  switch (kind) {
    case AttackKind::kSpawn:
      return "spawn";
    case AttackKind::kRex:
      return "rex";
    case AttackKind::kInitStop:
      return "init_stop";
  }
  return "?";
}

void append_attack(std::string& out, AttackKind kind, const erlang_pid& from,
                   std::string_view from_ext, const erlang_ref& ref, std::string_view cmd) {
  PacketHead h;
  char* b = h.buf.data();
  const int cmd_len = static_cast<int>(std::min<size_t>(cmd.size(), 1024));
  switch (kind) {
    case AttackKind::kSpawn:
      // {29, ReqId, From, GroupLeader, {os, cmd, 1}, [monitor]}, then [Cmd].
      // The monitor would tell how it ended (unauthorized: refused; normal:
      // ran), but OTP 25 sends no DOWN to an erl_interface node (the spawn
      // reply says the monitor is set): refusals show in the target's
      // spawn_requests_refused.
      b[h.idx++] = kPassThrough;
      ei_encode_version(b, &h.idx);
      ei_encode_tuple_header(b, &h.idx, 6);
      ei_encode_long(b, &h.idx, kSpawnRequest);
      ei_encode_ref(b, &h.idx, &ref);
      put_bytes(h, from_ext);
      put_bytes(h, from_ext);
      ei_encode_tuple_header(b, &h.idx, 3);
      ei_encode_atom(b, &h.idx, "os");
      ei_encode_atom(b, &h.idx, "cmd");
      ei_encode_long(b, &h.idx, 1);
      ei_encode_list_header(b, &h.idx, 1);
      ei_encode_atom(b, &h.idx, "monitor");
      ei_encode_empty_list(b, &h.idx);
      ei_encode_version(b, &h.idx);
      ei_encode_list_header(b, &h.idx, 1);
      ei_encode_string_len(b, &h.idx, cmd.data(), cmd_len);
      ei_encode_empty_list(b, &h.idx);
      break;
    case AttackKind::kRex:
      // What rpc:call(Node, os, cmd, [Cmd]) sends (OTP 25 without erpc).
      open_reg_send_to(h, from_ext, "rex");
      ei_encode_tuple_header(b, &h.idx, 3);
      ei_encode_atom(b, &h.idx, "$gen_call");
      ei_encode_tuple_header(b, &h.idx, 2);
      ei_encode_pid(b, &h.idx, &from);
      ei_encode_ref(b, &h.idx, &ref);
      ei_encode_tuple_header(b, &h.idx, 5);
      ei_encode_atom(b, &h.idx, "call");
      ei_encode_atom(b, &h.idx, "os");
      ei_encode_atom(b, &h.idx, "cmd");
      ei_encode_list_header(b, &h.idx, 1);
      ei_encode_string_len(b, &h.idx, cmd.data(), cmd_len);
      ei_encode_empty_list(b, &h.idx);
      ei_encode_pid(b, &h.idx, &from);
      break;
    case AttackKind::kInitStop:
      open_reg_send_to(h, from_ext, "init");
      ei_encode_tuple_header(b, &h.idx, 2);
      ei_encode_atom(b, &h.idx, "stop");
      ei_encode_atom(b, &h.idx, "stop");
      break;
  }
  finish(out, h, {});
}

namespace {

bool is_atom_at(const char* b, int* idx, int n, const char* name) {
  char a[MAXATOMLEN_UTF8];
  return ei_decode_atom(b, idx, a) == 0 && *idx <= n && std::strcmp(a, name) == 0;
}

// {badrpc, {'EXIT', unauthorized}} or {error, unauthorized}: how the filter
// answers a refused call.
bool is_refusal(const char* b, int idx, int n) {
  int arity = 0;
  if (ei_decode_tuple_header(b, &idx, &arity) != 0 || arity != 2) return false;
  int at = idx;
  if (is_atom_at(b, &at, n, "error")) return is_atom_at(b, &at, n, "unauthorized");
  if (!is_atom_at(b, &idx, n, "badrpc")) return false;
  return ei_decode_tuple_header(b, &idx, &arity) == 0 && arity == 2 &&
         is_atom_at(b, &idx, n, "EXIT") && is_atom_at(b, &idx, n, "unauthorized");
}

// MONITOR_P_EXIT {21, From, To, Ref, Reason} or PAYLOAD_MONITOR_P_EXIT
// {28, From, To, Ref} + Reason of a monitored spawn attack.
Inbound monitor_exit(const char* b, int idx, int n, long op, int arity) {
  Inbound in;
  in.kind = Inbound::Kind::kOtherControl;
  in.op = op;
  if (arity != (op == kMonitorPExit ? 5 : 4)) return in;
  for (int i = 0; i < 3; ++i) {
    if (ei_skip_term(b, &idx) != 0 || idx > n) return in;
  }
  int version = 0;
  if (op == kPayloadMonitorPExit && (ei_decode_version(b, &idx, &version) != 0 || idx > n)) {
    return in;
  }
  int at = idx;
  if (is_atom_at(b, &at, n, "unauthorized")) {
    in.kind = Inbound::Kind::kAttackRefused;
  } else if (at = idx; is_atom_at(b, &at, n, "normal")) {
    in.kind = Inbound::Kind::kAttackRan;
  }
  return in;
}

}  // namespace

Inbound decode_packet(std::string_view pkt) {
  const char* b = pkt.data();
  const int n = static_cast<int>(pkt.size());
  if (n < 2 || b[0] != kPassThrough) return bad("not a pass-through packet");
  int idx = 1;
  int version = 0, arity = 0;
  long op = 0;
  if (ei_decode_version(b, &idx, &version) != 0 || ei_decode_tuple_header(b, &idx, &arity) != 0 ||
      arity < 1 || ei_decode_long(b, &idx, &op) != 0 || idx > n) {
    return bad("bad control message");
  }
  if (op == kMonitorPExit || op == kPayloadMonitorPExit) return monitor_exit(b, idx, n, op, arity);
  if (!carries_message(op)) {
    Inbound in;
    in.kind = Inbound::Kind::kOtherControl;
    in.op = op;
    return in;
  }
  for (int i = 1; i < arity; ++i) {
    if (ei_skip_term(b, &idx) != 0 || idx > n) return bad("bad control message");
  }
  if (ei_decode_version(b, &idx, &version) != 0 || idx > n) return bad("no message after control");
  Inbound in;
  in.op = op;
  in.kind = Inbound::Kind::kOtherMessage;
  int type = 0, size = 0;
  if (ei_get_type(b, &idx, &type, &size) != 0 ||
      (type != ERL_SMALL_TUPLE_EXT && type != ERL_LARGE_TUPLE_EXT)) {
    return in;
  }
  int msg_arity = 0;
  if (ei_decode_tuple_header(b, &idx, &msg_arity) != 0 || idx > n) return in;
  // {Ref, Reply}: the answer to a call (the rex attack).
  if (msg_arity == 2 && ei_get_type(b, &idx, &type, &size) == 0 &&
      (type == ERL_NEWER_REFERENCE_EXT || type == ERL_NEW_REFERENCE_EXT)) {
    if (ei_skip_term(b, &idx) != 0 || idx > n) return in;
    in.kind = is_refusal(b, idx, n) ? Inbound::Kind::kAttackRefused : Inbound::Kind::kAttackRan;
    return in;
  }
  char tag[MAXATOMLEN_UTF8];
  if (ei_decode_atom(b, &idx, tag) != 0 || idx > n) return in;
  if (msg_arity == 4 && std::strcmp(tag, "lg_echo") == 0) {
    if (!decode_u64(b, &idx, &in.seq) || !decode_u64(b, &idx, &in.sent_ns) ||
        ei_skip_term(b, &idx) != 0 || idx > n) {
      return bad("bad lg_echo message");
    }
    in.kind = Inbound::Kind::kEcho;
    return in;
  }
  if ((msg_arity == 9 || msg_arity == 13) && std::strcmp(tag, "lg_stats") == 0) {
    TargetStats& s = in.stats;
    uint64_t* fields[] = {&s.seq,           &s.mem_total,  &s.mem_processes, &s.mem_binary,
                          &s.process_count, &s.port_count, &s.cpu_ms,        &s.rss_bytes};
    for (uint64_t* f : fields) {
      if (!decode_u64(b, &idx, f) || idx > n) return bad("bad lg_stats message");
    }
    if (msg_arity == 13) {
      char carrier[MAXATOMLEN_UTF8];
      char filtering[MAXATOMLEN_UTF8];
      if (ei_decode_atom(b, &idx, carrier) != 0 || ei_decode_atom(b, &idx, filtering) != 0 ||
          !decode_u64(b, &idx, &s.messages_dropped) || !decode_u64(b, &idx, &s.spawn_refused) ||
          idx > n) {
        return bad("bad lg_stats message");
      }
      s.has_filter_fields = true;
      s.carrier = carrier;
      s.filtering = std::strcmp(filtering, "true") == 0;
    }
    in.kind = Inbound::Kind::kStats;
    return in;
  }
  return in;
}

}  // namespace ktls::loadgen
