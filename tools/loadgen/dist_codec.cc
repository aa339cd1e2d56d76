#include "tools/loadgen/dist_codec.h"

#include <ei.h>

#include <array>
#include <cstring>

namespace ktls::loadgen {

using carrier::Error;
using carrier::Result;

namespace {

constexpr char kPassThrough = 'p';
constexpr long kRegSend = 6;
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

void open_reg_send(PacketHead& h, std::string_view from_pid, std::string_view to, int arity,
                   const char* tag) {
  char* b = h.buf.data();
  b[h.idx++] = kPassThrough;
  ei_encode_version(b, &h.idx);
  ei_encode_tuple_header(b, &h.idx, 4);
  ei_encode_long(b, &h.idx, kRegSend);
  std::memcpy(b + h.idx, from_pid.data(), from_pid.size());
  h.idx += static_cast<int>(from_pid.size());
  ei_encode_atom_len(b, &h.idx, "", 0);
  ei_encode_atom_len(b, &h.idx, to.data(), static_cast<int>(to.size()));
  ei_encode_version(b, &h.idx);
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
  char tag[MAXATOMLEN_UTF8];
  if (ei_decode_tuple_header(b, &idx, &msg_arity) != 0 || ei_decode_atom(b, &idx, tag) != 0 ||
      idx > n) {
    return in;
  }
  if (msg_arity == 4 && std::strcmp(tag, "lg_echo") == 0) {
    if (!decode_u64(b, &idx, &in.seq) || !decode_u64(b, &idx, &in.sent_ns) ||
        ei_skip_term(b, &idx) != 0 || idx > n) {
      return bad("bad lg_echo message");
    }
    in.kind = Inbound::Kind::kEcho;
    return in;
  }
  if (msg_arity == 9 && std::strcmp(tag, "lg_stats") == 0) {
    TargetStats& s = in.stats;
    uint64_t* fields[] = {&s.seq,           &s.mem_total,  &s.mem_processes, &s.mem_binary,
                          &s.process_count, &s.port_count, &s.cpu_ms,        &s.rss_bytes};
    for (uint64_t* f : fields) {
      if (!decode_u64(b, &idx, f) || idx > n) return bad("bad lg_stats message");
    }
    in.kind = Inbound::Kind::kStats;
    return in;
  }
  return in;
}

}  // namespace ktls::loadgen
