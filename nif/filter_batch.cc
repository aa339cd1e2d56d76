// ConnObserver::filter_batch: the filter over one batch of received packets,
// and the list of binaries, questions and refusals it makes for the input
// process.
#include <array>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "nif/filter_terms.h"
#include "nif/loggers.h"
#include "nif/message_storage.h"
#include "nif/nif_terms.h"
#include "nif/observers.h"
#include "nif/policy_config.h"
#include "nif/process_directory.h"
#include "nif/resources.h"

namespace ktls::nif {

namespace {

// Wall-clock microseconds, as erlang:system_time(microsecond). Not
// enif_monotonic_time: on the carrier thread (not an ERTS thread) it returns
// ERL_NIF_MIN_TIME, which stamped every logger event of a ring-read
// connection with a time before 1970.
uint64_t now_us() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

// A logger event: {control, Time, Node, Control, Verdict} or {payload,
// Time, Node, Control, Payload, Verdict} (see ktls_filter_logger).
ERL_NIF_TERM log_event(ErlNifEnv* env, ERL_NIF_TERM node, const filter::Message& m,
                       ERL_NIF_TERM verdict) {
  ERL_NIF_TERM time = enif_make_uint64(env, now_us());
  ERL_NIF_TERM control = make_message_term(env, m.control);
  if (!m.payload.valid()) {
    ERL_NIF_TERM e[] = {make_atom(env, "control"), time, node, control, verdict};
    return enif_make_tuple_from_array(env, e, 5);
  }
  ERL_NIF_TERM e[] = {make_atom(env, "payload"),         time,   node, control,
                      make_message_term(env, m.payload), verdict};
  return enif_make_tuple_from_array(env, e, 6);
}

// What a logger event says was done with the message.
ERL_NIF_TERM verdict_atom(ErlNifEnv* env, const filter::Verdict& v, filter::Mode mode) {
  switch (v.action) {
    case filter::Action::Keep:
      return make_atom(env, v.hint != filter::Hint::Safe && mode == filter::Mode::Monitor
                                ? "would_drop"
                                : "keep");
    case filter::Action::Drop:
      return make_atom(env, "drop");
    case filter::Action::Ask:
      return make_atom(env, "ask");  // the handler decides
    case filter::Action::Resolve:
      return make_atom(env, "resolve");  // decided by the receiver's role
    default:
      return make_atom(env, "none");
  }
}

// Payloads larger than this are logged as {size, Bytes} in refusal warnings.
constexpr size_t kRefusalPayloadMax = 64 << 10;

// {ktls_refused, Reason, Op, Control, Payload, Held}: a refusal for the
// input process to log (ktls_filter_refusal).
ERL_NIF_TERM refusal_term(ErlNifEnv* env, const filter::Verdict& v, uint64_t held) {
  const filter::Message& m = v.message;
  const bool decoded = v.decoded && m.info;
  ERL_NIF_TERM payload = atoms.undefined;
  if (decoded && m.payload.valid()) {
    const size_t size = m.payload.end() - m.payload.offset();
    payload = size > kRefusalPayloadMax
                  ? enif_make_tuple2(env, make_atom(env, "size"), enif_make_uint64(env, size))
                  : make_message_term(env, m.payload);
  }
  ERL_NIF_TERM e[] = {make_atom(env, "ktls_refused"),
                      make_string_binary(env, v.reason ? v.reason : ""),
                      decoded ? enif_make_int(env, static_cast<int>(m.info->op)) : atoms.undefined,
                      decoded ? make_message_term(env, m.control) : atoms.undefined,
                      payload,
                      enif_make_uint64(env, held)};
  return enif_make_tuple_from_array(env, e, 6);
}

// Atoms of the items filter_batch() writes, made once (an atom is the same
// term in every environment).
struct ItemAtoms {
  ERL_NIF_TERM ktls_resolve, ktls_ask, none, learn, reuse;
  std::array<ERL_NIF_TERM, filter::kConcreteRoles.size()> roles;
};

const ItemAtoms& item_atoms() {
  static const ItemAtoms a = [] {
    ErlNifEnv* env = enif_alloc_env();
    ItemAtoms r{make_atom(env, "ktls_resolve"), make_atom(env, "ktls_ask"), make_atom(env, "none"),
                make_atom(env, "learn"),        make_atom(env, "reuse"),    {}};
    for (size_t i = 0; i < r.roles.size(); i++) {
      r.roles[i] = make_atom(env, filter::role_name(filter::kConcreteRoles[i]));
    }
    enif_free_env(env);
    return r;
  }();
  return a;
}

}  // namespace

// The filter decides about every packet of the batch (see nif/filter); what
// it keeps or writes goes to the input process as binaries, in order, with
// the handler's questions between them.
ERL_NIF_TERM ConnObserver::filter_batch(filter::Channel& ch,
                                        std::span<const carrier::Packet> packets,
                                        std::string* close_reason) {
  const uint64_t gen = policy_generation();
  if (gen != res_->policy_gen) {
    ch.set_policy(policy_for(!res_->trusted_by.empty()));
    res_->policy_gen = gen;
  }
  const bool log = loggers_active();
  ERL_NIF_TERM log_node = log ? make_atom(log_env_, res_->peer_node.c_str()) : 0;
  log_events_.clear();
  pieces_.clear();
  items_.clear();
  scratch_.clear();
  auto whole_piece = [&](filter::MessageBuffer&& m) {
    // A reassembled message: its storage becomes its binary.
    pieces_.push_back(Piece{nullptr, 0, 0, take_message_binary(rx_env_, std::move(m))});
    return static_cast<int>(pieces_.size() - 1);
  };
  auto scratch_piece = [&](const std::vector<uint8_t>& b) {
    if (b.size() >= (16u << 10)) {
      // A large rewritten message: one copy straight into its own binary.
      ERL_NIF_TERM t;
      std::memcpy(enif_make_new_binary(rx_env_, b.size(), &t), b.data(), b.size());
      pieces_.push_back(Piece{nullptr, 0, 0, t});
      return static_cast<int>(pieces_.size() - 1);
    }
    pieces_.push_back(Piece{nullptr, scratch_.size(), b.size()});
    scratch_.insert(scratch_.end(), b.begin(), b.end());
    return static_cast<int>(pieces_.size() - 1);
  };
  auto packet_piece = [&](const carrier::Packet& p) {
    pieces_.push_back(Piece{&p, 0, p.size});
    return static_cast<int>(pieces_.size() - 1);
  };
  // The receiver of the last Resolve as a term of rx_env_ (this batch).
  std::optional<std::pair<filter::PidId, ERL_NIF_TERM>> last_pid;
  const ItemAtoms& a = item_atoms();
  for (const carrier::Packet& p : packets) {
    filter::Verdict& v = verdict_;
    ch.inspect(filter::Bytes(p.data, p.size), v);
    if (v.action == filter::Action::Close) {
      *close_reason = v.error;
      break;
    }
    if (!v.prefix.empty()) items_.push_back(Item{scratch_piece(v.prefix)});
    if (log && v.decoded) {
      log_events_.push_back(
          log_event(log_env_, log_node, v.message, verdict_atom(log_env_, v, ch.policy().mode)));
    }
    switch (v.action) {
      case filter::Action::Keep:
        items_.push_back(Item{!v.replaced       ? packet_piece(p)
                              : v.whole.empty() ? scratch_piece(v.bytes)
                                                : whole_piece(std::move(v.whole))});
        break;
      case filter::Action::Drop: {
        if (!v.bytes.empty()) items_.push_back(Item{scratch_piece(v.bytes)});
        uint64_t held = 0;
        if (refusal_log_slot(res_, &held)) {
          Item it;
          it.term = refusal_term(rx_env_, v, held);
          items_.push_back(it);
        }
        break;
      }
      case filter::Action::Hold:
      case filter::Action::Close:
        break;
      case filter::Action::Resolve:
      case filter::Action::Ask: {
        Item it;
        if (v.action == filter::Action::Resolve) {
          auto roles = [&](uint16_t mask) {
            ERL_NIF_TERM l = enif_make_list(rx_env_, 0);
            for (size_t i = 0; i < filter::kConcreteRoles.size(); i++) {
              if (mask & filter::role_bit(filter::kConcreteRoles[i])) {
                l = enif_make_list_cell(rx_env_, a.roles[i], l);
              }
            }
            return l;
          };
          // A burst to one process asks about the same pid again and again.
          if (!last_pid || !(last_pid->first == v.resolve)) {
            last_pid.emplace(v.resolve, make_local_pid(rx_env_, res_->local_node, v.resolve));
          }
          ERL_NIF_TERM memo = enif_make_tuple2(rx_env_, v.resolve_reuse ? a.reuse : a.learn,
                                               enif_make_uint(rx_env_, v.resolve_slot));
          it.resolve =
              enif_make_tuple5(rx_env_, last_pid->second,
                               enif_make_int(rx_env_, static_cast<int>(v.message.info->op)),
                               roles(v.safe_roles), roles(v.drop_roles), memo);
        }
        // The question first: the message views point into v.whole, which
        // whole_piece() may shrink. A Resolve needs it only for a handler.
        it.ask =
            it.resolve && !ch.policy().handler
                ? a.none
                : enif_make_tuple4(rx_env_, make_atom(rx_env_, filter::hint_name(v.hint)),
                                   enif_make_int(rx_env_, static_cast<int>(v.message.info->op)),
                                   make_message_term(rx_env_, v.message.control),
                                   make_message_term(rx_env_, v.message.payload));
        it.drop = v.drop_bytes.empty() ? -1 : scratch_piece(v.drop_bytes);
        it.keep = !v.replaced       ? packet_piece(p)
                  : v.whole.empty() ? scratch_piece(v.bytes)
                                    : whole_piece(std::move(v.whole));
        items_.push_back(it);
        break;
      }
    }
  }
  if (log && !log_events_.empty()) {
    // In arrival order; the input process sends them after the batch.
    ERL_NIF_TERM events = enif_make_copy(
        rx_env_, enif_make_list_from_array(log_env_, log_events_.data(),
                                           static_cast<unsigned>(log_events_.size())));
    Item it;
    it.term = enif_make_tuple2(rx_env_, make_atom(rx_env_, "ktls_log"),
                               loggers_messages(rx_env_, events, log_events_.size()));
    items_.push_back(it);
  }
  enif_clear_env(log_env_);
  ch.end_batch();

  // Binaries: one copy per batch (stock runtime), or resource binaries over
  // the receive buffers plus one binary for what the filter wrote.
  //
  // Zero-copy (a runtime with patches/0002): one resource binary per packet
  // over the carrier's receive buffer; the buffer returns to the pool when the
  // VM has released every binary made over it.
  //
  // Otherwise one allocation and one copy per batch, each kept piece a
  // sub-binary of the new binary. The copy is deliberate: a stock OTP 25 dist
  // decoder makes sub-binaries of its input and asserts that the input is an
  // ordinary refc binary, so resource binaries abort the VM there.
  std::vector<ERL_NIF_TERM> bins(pieces_.size());
  if (zero_copy_rx) {
    ERL_NIF_TERM written = 0;
    if (!scratch_.empty()) {
      unsigned char* d = enif_make_new_binary(rx_env_, scratch_.size(), &written);
      std::memcpy(d, scratch_.data(), scratch_.size());
    }
    BufferRes* res = nullptr;
    for (size_t i = 0; i < pieces_.size(); i++) {
      const Piece& pc = pieces_[i];
      if (pc.bin) {
        bins[i] = pc.bin;
        continue;
      }
      if (!pc.packet) {
        bins[i] = enif_make_sub_binary(rx_env_, written, pc.off, pc.size);
        continue;
      }
      if (!res || res->buffer != pc.packet->buffer) {
        if (res) enif_release_resource(res);  // the binaries made keep it
        res = static_cast<BufferRes*>(enif_alloc_resource(BufferRes::type, sizeof(BufferRes)));
        pc.packet->buffer->ref();
        res->buffer = pc.packet->buffer;
      }
      bins[i] = enif_make_resource_binary(rx_env_, res, pc.packet->data, pc.size);
    }
    if (res) enif_release_resource(res);
  } else {
    size_t total = 0;
    for (const Piece& pc : pieces_) total += pc.size;
    ERL_NIF_TERM whole;
    unsigned char* d = enif_make_new_binary(rx_env_, total, &whole);
    size_t off = 0;
    for (size_t i = 0; i < pieces_.size(); i++) {
      const Piece& pc = pieces_[i];
      if (pc.bin) {
        bins[i] = pc.bin;
        continue;
      }
      std::memcpy(d + off, pc.packet ? pc.packet->data : scratch_.data() + pc.off, pc.size);
      bins[i] = enif_make_sub_binary(rx_env_, whole, off, pc.size);
      off += pc.size;
    }
  }
  ERL_NIF_TERM list = enif_make_list(rx_env_, 0);
  for (size_t i = items_.size(); i-- > 0;) {
    const Item& it = items_[i];
    if (it.term) {
      list = enif_make_list_cell(rx_env_, it.term, list);
      continue;
    }
    ERL_NIF_TERM t = bins[it.keep];
    if (it.ask) {
      ERL_NIF_TERM drop = it.drop < 0 ? a.none : bins[it.drop];
      t = it.resolve ? enif_make_tuple5(rx_env_, a.ktls_resolve, it.resolve, it.ask, t, drop)
                     : enif_make_tuple4(rx_env_, a.ktls_ask, it.ask, t, drop);
    }
    list = enif_make_list_cell(rx_env_, t, list);
  }
  return list;
}

}  // namespace ktls::nif
