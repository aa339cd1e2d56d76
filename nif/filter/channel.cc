#include "nif/filter/channel.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <new>
#include <set>

namespace ktls::filter {
namespace {

constexpr uint8_t kPassThrough = 'p';
constexpr uint8_t kDistHeader = 'D';
constexpr uint8_t kFragHeader = 'E';
constexpr uint8_t kFragCont = 'F';
constexpr size_t kFragPrefix = 1 + 1 + 8 + 8;  // magic, type, seq id, frag id
// The reasons of the two size limits (max_message_size,
// max_reassembly_bytes), as drops and logs name them.
constexpr const char* kTooLarge = "message larger than max_message_size";
constexpr const char* kReassemblyLimit = "fragment reassembly memory limit";

uint64_t be64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

// Registered name no process has: where carriers of atom-cache updates go.
constexpr std::string_view kVoidName = "ktls_filter_dropped";

// What an atom over the budget becomes in a header's cache write, for the
// filter's view and the VM's alike, so later references to the slot still
// resolve the same on both sides (the message that wrote it is dropped).
constexpr std::string_view kRefusedAtom = "ktls_filter_refused_atom";

// Atoms brought by dist on this node, over every channel (see admit_atom).
std::atomic<uint64_t> node_new_atoms{0};

}  // namespace

namespace {

void* malloc_storage(size_t bytes) {
  void* p = std::malloc(bytes ? bytes : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
void free_storage(void* p, size_t) { std::free(p); }
MessageStorage storage{malloc_storage, free_storage};

}  // namespace

void set_message_storage(MessageStorage s) { storage = s; }
const MessageStorage& message_storage() { return storage; }

namespace {
// Node-wide counters are summed when read, not kept: one more atomic add
// per counter per message on a line every scheduler writes cost more than
// decoding a small message. Live channels are summed with what closed ones
// left behind (`retired`).
struct World {
  std::mutex mu;
  std::set<const Channel*> live;
  Stats retired;
};
World& world() {
  static World w;
  return w;
}

void add_stats(Stats& into, const Stats& from) {
  auto add = [](std::atomic<uint64_t>& a, const std::atomic<uint64_t>& b) {
    a.fetch_add(b.load(std::memory_order_relaxed), std::memory_order_relaxed);
  };
  for (auto field : Stats::kCounters) {
    add(into.*field, from.*field);
  }
  for (size_t i = 0; i < from.control.size(); i++) {
    add(into.control[i].seen, from.control[i].seen);
    add(into.control[i].kept, from.control[i].kept);
    add(into.control[i].dropped, from.control[i].dropped);
  }
}
}  // namespace

void world_stats(Stats& out) {
  World& w = world();
  std::lock_guard lock(w.mu);
  add_stats(out, w.retired);
  for (const Channel* c : w.live) add_stats(out, c->stats());
}

namespace {
// Node-wide count of channel errors by reason. Reasons are the decoder's
// static texts, so the map stays small; errors are rare, so one mutex.
struct ErrorReasons {
  std::mutex mu;
  std::map<std::string, uint64_t, std::less<>> counts;
};
ErrorReasons& error_reasons_state() {
  static ErrorReasons r;
  return r;
}
void count_error_reason(std::string_view what) {
  ErrorReasons& r = error_reasons_state();
  std::lock_guard lock(r.mu);
  auto it = r.counts.find(what);
  if (it == r.counts.end()) it = r.counts.emplace(std::string(what), 0).first;
  it->second++;
}
}  // namespace

std::vector<std::pair<std::string, uint64_t>> error_reasons() {
  ErrorReasons& r = error_reasons_state();
  std::lock_guard lock(r.mu);
  return {r.counts.begin(), r.counts.end()};
}

struct Channel::Sequence {
  uint64_t id = 0;
  uint64_t next = 0;     // fragment id expected next
  bool pass = false;     // started while inspection was off: passes through
  bool discard = false;  // over a limit: swallowed, then counted as dropped
  const char* discard_reason = "";
  // Monitor mode, over a limit: kept uninspected and counted as would_drop
  // (with `pass` when the first fragment was over it, else still buffered).
  const char* would_drop_reason = nullptr;
  std::vector<uint8_t> answer;  // for the sender of a discarded message
  bool answer_spawn = false;    // `answer` refuses a spawn request
  uint64_t serial = 0;          // cache write counter after its header
  std::vector<uint16_t> slots;
  std::vector<std::string> texts;
  std::vector<std::string_view> refs;
  MessageBuffer buf;  // 131 'D' + the header's refs, then the body
  size_t header_len = 0;
  uint64_t overhead = 0;       // header and ref texts, charged to held_bytes_
  uint64_t reserved = 0;       // charged to reserved_bytes_
  bool atoms_refused = false;  // its header brought atoms over the budget
};

Channel::Channel(std::shared_ptr<const Policy> policy, LocalNode local)
    : policy_(std::move(policy)), dir_(&static_directory()), local_(std::move(local)) {
  refs_.reserve(255);
  ref_slots_.reserve(255);
  World& w = world();
  std::lock_guard lock(w.mu);
  w.live.insert(this);
}

Channel::~Channel() {
  World& w = world();
  std::lock_guard lock(w.mu);
  add_stats(w.retired, stats_);
  w.live.erase(this);
}

// The channel's counters are written by the thread that runs inspect()
// (one at a time), so most of them are bumped without a locked add. The
// input process writes kept, dropped and would_drop too, and the kept and
// dropped of the control counters (record_answer, for the handler's
// answers): those are added atomically.
void Channel::count(std::atomic<uint64_t> Stats::*field, uint64_t n) {
  if (field == &Stats::kept || field == &Stats::dropped || field == &Stats::would_drop) {
    Stats::add(stats_.*field, n);
  } else {
    Stats::bump(stats_.*field, n);
  }
}

void Channel::count_control(const ControlInfo* c, bool kept) {
  count(kept ? &Stats::kept : &Stats::dropped);
  if (!c) return;
  ControlCounters& cc = stats_.control[c->index];
  Stats::bump(cc.seen);
  Stats::add(kept ? cc.kept : cc.dropped);
}

const char* Channel::framing() const {
  switch (framing_) {
    case Framing::Header:
      return "header";
    case Framing::PassThrough:
      return "pass_through";
    case Framing::Unknown:
      break;
  }
  return "unknown";
}

std::vector<std::pair<uint16_t, std::string>> Channel::atom_cache() const {
  std::lock_guard lock(cache_mu_);
  std::vector<std::pair<uint16_t, std::string>> out;
  if (!cache_) return out;
  for (size_t i = 0; i < kAtomCacheSize; i++) {
    if (cache_->set[i]) out.emplace_back(static_cast<uint16_t>(i), cache_->text[i]);
  }
  return out;
}

bool Channel::fail(Verdict& v, const char* what, size_t offset, const ControlInfo* c) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s%s%s at byte %zu", c ? c->name : "", c ? ": " : "", what,
                offset);
  v.action = Action::Close;
  v.error = buf;
  count(&Stats::errors);
  count_error_reason(what);
  return false;
}

// Normal header after magic and type: NumberOfAtomCacheRefs, Flags (a
// nibble per reference plus one with the long-atoms bit), references.
// Cache writes apply now, in arrival order, exactly as the VM applies them.
bool Channel::parse_header(Bytes p, size_t& pos, Verdict& v) {
  refs_.clear();
  ref_slots_.clear();
  ref_written_.clear();
  ref_new_ = false;
  header_rewritten_ = false;
  if (p.size() - pos < 1) return fail(v, "truncated dist header", pos);
  const size_t n = p[pos++];
  if (n == 0) return true;
  const size_t flag_bytes = n / 2 + 1;
  if (p.size() - pos < flag_bytes) return fail(v, "truncated atom cache flags", pos);
  const uint8_t* flags = &p[pos];
  pos += flag_bytes;
  const bool long_atoms = (flags[n / 2] >> ((n % 2) * 4)) & 1;
  ref_texts_.resize(n);
  for (size_t i = 0; i < n; i++) {
    const uint8_t nib = (flags[i / 2] >> ((i % 2) * 4)) & 0xF;
    if (p.size() - pos < 1) return fail(v, "truncated atom cache reference", pos);
    const size_t slot = size_t{nib & 7u} * 256 + p[pos++];
    if (slot >= kAtomCacheSize) return fail(v, "atom cache index out of range", pos - 1);
    if (nib & 8) {
      size_t len_bytes = long_atoms ? 2 : 1;
      if (p.size() - pos < len_bytes) return fail(v, "truncated atom cache entry", pos);
      size_t len = long_atoms ? (size_t{p[pos]} << 8 | p[pos + 1]) : p[pos];
      pos += len_bytes;
      if (len > 255 * 4) return fail(v, "atom cache entry too long", pos - len_bytes);
      if (p.size() - pos < len) return fail(v, "truncated atom cache entry", pos);
      std::string_view text(reinterpret_cast<const char*>(&p[pos]), len);
      pos += len;
      if (!admit_atom(text, false)) {
        atoms_refused_ = true;
        // Only an enforcing filter changes what the VM gets; monitor mode
        // counts the message as would_drop, break glass passes it.
        const Policy& pol = *policy_;
        if (pol.inspect && pol.mode == Mode::Enforce) {
          text = kRefusedAtom;
          header_rewritten_ = true;
        }
      }
      {
        std::lock_guard lock(cache_mu_);
        if (!cache_) cache_ = std::make_unique<AtomCache>();
        cache_->text[slot].assign(text);
        cache_->set[slot] = true;
      }
      cache_->serial[slot] = ++serial_;
      ref_new_ = true;
      count(&Stats::atom_cache_writes);
    } else if (!cache_ || !cache_->set[slot]) {
      return fail(v, "reference to an empty atom cache slot", pos - 1);
    }
    // Copied: a later reference of the same header may overwrite the slot.
    ref_texts_[i].assign(cache_->text[slot]);
    ref_slots_.push_back(static_cast<uint16_t>(slot));
    ref_written_.push_back((nib & 8) != 0);
  }
  for (const std::string& t : ref_texts_) refs_.emplace_back(t);
  if (header_rewritten_) encode_header(header_copy_);
  return true;
}

void Channel::encode_header(std::vector<uint8_t>& out) const {
  const size_t n = ref_slots_.size();
  out.assign({tag::kVersion, kDistHeader, static_cast<uint8_t>(n)});
  if (n == 0) return;
  bool long_atoms = false;
  for (size_t i = 0; i < n; i++)
    long_atoms = long_atoms || (ref_written_[i] && refs_[i].size() > 255);
  const size_t flags_at = out.size();
  out.resize(out.size() + n / 2 + 1, 0);
  auto nibble = [&](size_t i, uint8_t v) { out[flags_at + i / 2] |= uint8_t(v << ((i % 2) * 4)); };
  for (size_t i = 0; i < n; i++) {
    nibble(i, uint8_t((ref_written_[i] ? 8 : 0) | (ref_slots_[i] >> 8)));
    out.push_back(static_cast<uint8_t>(ref_slots_[i] & 0xFF));
    if (!ref_written_[i]) continue;
    const std::string_view t = refs_[i];
    if (long_atoms) out.push_back(static_cast<uint8_t>(t.size() >> 8));
    out.push_back(static_cast<uint8_t>(t.size()));
    out.insert(out.end(), t.begin(), t.end());
  }
  nibble(n, long_atoms ? 1 : 0);
}

// Atoms are never collected and a full atom table aborts the VM: each
// connection and the node as a whole may bring only so many atoms the
// node does not have (an atom counts when first seen, so one sent twice
// before the VM made it counts twice).
bool Channel::admit_atom(std::string_view text, bool latin1) {
  const Policy& p = *policy_;
  if (!p.inspect || p.mode == Mode::Off) return true;
  if (dir_->atom_exists(text, latin1)) return true;
  if (new_atoms_ >= p.max_new_atoms_per_connection ||
      node_new_atoms.load(std::memory_order_relaxed) >= p.max_new_atoms) {
    return false;
  }
  new_atoms_++;
  node_new_atoms.fetch_add(1, std::memory_order_relaxed);
  count(&Stats::new_atoms);
  return true;
}

void Channel::inline_atom(std::string_view text, bool latin1) {
  if (!admit_atom(text, latin1)) atoms_refused_ = true;
}

// Control tuple and payload at body[pos..]; pass-through terms carry their
// own version byte.
bool Channel::decode(Bytes body, size_t pos, AtomRefs refs, bool versioned, Message& m,
                     Verdict& v) {
  TermError err;
  payload_error_ = TermError{};
  if (versioned) {
    if (pos >= body.size() || body[pos] != tag::kVersion) {
      return fail(v, "control message without version byte", pos);
    }
    pos++;
  }
  const size_t ctrl_pos = pos;
  if (!walk_term(body, pos, refs, nullptr, err, this)) return fail(v, err.what, err.offset);
  Term ctrl(body, ctrl_pos, refs);
  if (!ctrl.is_tuple() || ctrl.arity() == 0) {
    return fail(v, "control message is not a tuple", ctrl_pos);
  }
  auto op = ctrl.element(0).integer();
  const ControlInfo* info = op ? control_info(*op) : nullptr;
  if (!info) return fail(v, "unknown control message", ctrl_pos);
  if (ctrl.arity() != info->arity) return fail(v, "wrong control tuple arity", ctrl_pos, info);
  m.info = info;
  m.control = ctrl;
  m.payload = Term();
  if (info->payload) {
    if (versioned) {
      if (pos >= body.size() || body[pos] != tag::kVersion) {
        return fail(v, "payload without version byte", pos, info);
      }
      pos++;
    }
    const size_t payload_pos = pos;
    if (pos >= body.size()) return fail(v, "missing payload", pos, info);
    if (!walk_term(body, pos, refs, nullptr, err, this)) {
      // Monitor mode: the VM is to see what it would see without the
      // filter (see keep_undecodable); the header and the control message
      // were read, so the channel's state is whole.
      if (policy_->mode != Mode::Monitor) return fail(v, err.what, err.offset, info);
      payload_error_ = err;
      return true;
    }
    m.payload = Term(body, payload_pos, refs);
  }
  if (pos != body.size()) return fail(v, "trailing bytes after the message", pos, info);
  return true;
}

// Monitor mode, a message whose payload does not decode: kept as it came,
// counted as would_drop. OTP decodes the payload of a message only when its
// receiver reads it (or a process_info reads the queue) and then takes the
// connection down; until then the connection and later messages go on
// (distribution_SUITE:bad_dist_ext_*). Enforce mode closes at once.
void Channel::keep_undecodable(const Message& m, Verdict& v) {
  count(&Stats::would_drop);
  count_control(m.info, true);
  v.hint = Hint::Drop;
  v.reason = payload_error_.what;
  v.action = Action::Keep;
}

MessageBuffer Channel::take_buffer() {
  if (spare_.empty()) return {};
  MessageBuffer b = std::move(spare_.back());
  spare_.pop_back();
  b.clear();
  return b;
}

void Channel::recycle(MessageBuffer&& b) {
  constexpr size_t kSpares = 4;
  constexpr size_t kMaxSpare = 16u << 20;
  if (b.capacity() >= (64u << 10) && b.capacity() <= kMaxSpare && spare_.size() < kSpares) {
    spare_.push_back(std::move(b));
  }
  b = MessageBuffer();
}

// Memory for a message is bounded by the limits, but the machine may still
// run out (many connections reassembling at once): that closes this
// connection, never the node. The channel is unusable afterwards.
void Channel::inspect(Bytes p, Verdict& v) {
  if (broken_) {
    fail(v, "channel closed after running out of memory", 0);
    return;
  }
  try {
    inspect_packet(p, v);
  } catch (const std::bad_alloc&) {
    broken_ = true;
    v.whole = MessageBuffer();
    v.bytes.clear();
    v.drop_bytes.clear();
    v.prefix.clear();
    v.decoded = false;
    fail(v, "out of memory", 0);
  }
}

void Channel::inspect_packet(Bytes p, Verdict& v) {
  v.action = Action::Keep;
  v.replaced = false;
  v.prefix.clear();
  // A reassembled message handed out last time (and not taken) goes back
  // to the spares.
  if (v.whole.capacity() > 0) recycle(std::move(v.whole));
  v.whole.clear();
  v.bytes.clear();
  v.drop_bytes.clear();
  v.hint = Hint::Safe;
  v.reason = "";
  v.message = Message{};
  v.decoded = false;
  v.error.clear();
  v.safe_roles = v.drop_roles = 0;
  v.resolve_slot = 0;
  v.resolve_reuse = false;
  atoms_refused_ = false;
  if (last_done_) {
    recycle(std::move(last_done_->buf));
    last_done_.reset();
  }
  if (p.empty()) return;  // tick
  count(&Stats::packets);
  count(&Stats::bytes, p.size());

  if (p[0] == kPassThrough) {
    if (framing_ == Framing::Header) {
      fail(v, "pass-through packet on a channel with dist headers", 0);
      return;
    }
    framing_ = Framing::PassThrough;
    refs_.clear();
    ref_new_ = false;
    header_rewritten_ = false;
    // The 'p' is the header: messages the filter writes instead need it.
    decide(p, 1, 1, true, v);
    return;
  }
  if (p.size() < 2 || p[0] != tag::kVersion) {
    fail(v, "bad dist header magic", 0);
    return;
  }
  if (framing_ == Framing::PassThrough) {
    fail(v, "dist header on a pass-through channel", 0);
    return;
  }
  framing_ = Framing::Header;
  switch (p[1]) {
    case kDistHeader: {
      size_t pos = 2;
      if (!parse_header(p, pos, v)) return;
      decide(p, pos, pos, false, v);
      return;
    }
    case kFragHeader:
      first_fragment(p, v);
      return;
    case kFragCont:
      continuation(p, v);
      return;
    default:
      fail(v, "unknown dist header type", 1);
  }
}

// A whole (unfragmented) message: p[0..header_end) is its header.
void Channel::decide(Bytes p, size_t header_end, size_t body_pos, bool versioned, Verdict& v) {
  count(&Stats::messages);
  const Policy& pol = *policy_;
  if (!pol.inspect || pol.mode == Mode::Off) {
    count(&Stats::uninspected);
    count(&Stats::kept);
    return;
  }
  // The same limit as for reassembled messages: a peer that does not
  // fragment gets nothing larger in either.
  const Bytes header =
      header_rewritten_ ? Bytes(header_copy_.data(), header_copy_.size()) : p.first(header_end);
  if (p.size() - body_pos > pol.max_message_size) {
    v.reason = kTooLarge;
    v.hint = Hint::Drop;
    if (pol.limits_counted_only()) {
      // Monitor mode enforces no limit: kept as it came, counted.
      count(&Stats::would_drop);
      count_control(nullptr, true);
      return;
    }
    count(&Stats::too_large);
    count_control(nullptr, false);
    v.action = Action::Drop;
    if (ref_new_) carrier_for(header, v.bytes);
    return;
  }
  Message m;
  if (!decode(p, body_pos, refs_, versioned, m, v)) return;
  if (payload_error_.what) {
    keep_undecodable(m, v);
    return;
  }
  judge(m, header, ref_new_, v);
}

uint8_t Channel::lookup_slot(const PidId& pid, bool& reuse) {
  const uint64_t gen = dir_->generation();
  for (size_t i = 0; i < lookups_.size(); i++) {
    const Lookup& l = lookups_[i];
    if (l.used && l.pid == pid && l.generation == gen) {
      reuse = true;
      return static_cast<uint8_t>(i);
    }
  }
  reuse = false;
  const uint8_t slot = next_lookup_;
  next_lookup_ = static_cast<uint8_t>((next_lookup_ + 1) % lookups_.size());
  lookups_[slot] = Lookup{pid, gen, true};
  return slot;
}

Role Channel::role_for(const Destination& d, std::optional<PidId>& pid) const {
  switch (d.kind) {
    case Destination::Kind::None:
      return Role::User;
    case Destination::Kind::Alias:
      return Role::Alias;
    case Destination::Kind::Pid: {
      auto parts = d.to.pid_parts();
      // A pid of another node, or of an old incarnation of this one (the
      // VM discards messages to those), is no process of this node.
      if (!parts || parts->node != local_.name || parts->creation != local_.creation) {
        return Role::User;
      }
      pid = PidId{parts->id, parts->serial, parts->creation};
      return dir_->role_of(*pid);
    }
    case Destination::Kind::Name: {
      auto name = d.to.atom();
      if (!name) return Role::User;  // classify() refuses it
      return dir_->role_of_name(*name, pid);
    }
  }
  return Role::User;
}

void Channel::judge(const Message& m, Bytes header, bool header_writes, Verdict& v) {
  const Policy& pol = *policy_;
  std::optional<PidId> pid;
  const Role role = role_for(destination(m), pid);
  Classification c;
  bool resolve = false;
  if (atoms_refused_) {
    c = {Hint::Drop, "more new atoms than the atom budget allows"};
    count(&Stats::atoms_refused);
  } else if (role == Role::Unknown) {
    // A process of this node not looked up yet: judged for every role it
    // can have; when that decides nothing, the input process looks it up.
    RoleClassifications rc = classify_unresolved(pol, m, *dir_);
    const uint16_t safe = rc.safe, drop = rc.drop, all = rc.all;
    // The strictest reading answers a refused caller.
    c = std::move(rc.system);
    if (safe == all) {
      c = {Hint::Safe, "allowed for any receiver"};
    } else if (pid && (safe != 0 || (pol.handler && (drop | safe) != all))) {
      resolve = true;
      v.resolve = *pid;
      v.safe_roles = safe;
      v.drop_roles = drop;
    }
  } else {
    c = classify(pol, m, role, *dir_);
  }
  v.hint = c.hint;
  v.reason = c.reason;
  v.message = m;
  v.decoded = true;
  if (resolve) {
    v.reason = "receiver looked up";
    if (!answer_refusal(header, c.refusal, v.drop_bytes) && header_writes) {
      carrier_for(header, v.drop_bytes);
    }
    v.resolve_slot = lookup_slot(v.resolve, v.resolve_reuse);
    if (!v.resolve_reuse) count(&Stats::resolved);
    Stats::bump(stats_.control[m.info->index].seen);
    v.action = Action::Resolve;
    return;
  }
  bool keep = c.hint == Hint::Safe;
  if (!keep && pol.mode == Mode::Monitor) {
    count(&Stats::would_drop);
    keep = true;
  }
  if (keep) {
    count_control(m.info, true);
    v.action = Action::Keep;
    return;
  }
  // A handler with spawn_request_init/4 decides unsafe spawn requests in
  // the spawned process itself: the request is redirected, not dropped.
  if (c.hint == Hint::Unsafe && pol.handler && pol.handler_spawn_init &&
      m.info->kind == Kind::SpawnRequest) {
    rewrite_spawn_request(header, m, true, v.bytes);
    count(&Stats::redirected);
    count_control(m.info, true);
    v.action = Action::Drop;  // delivers `bytes`, the redirected request
    return;
  }
  // The drop alternative: a refused spawn request still gets an answer; a
  // header that wrote the atom cache still reaches the VM.
  std::vector<uint8_t>& alt = (c.hint == Hint::Unsafe && pol.handler) ? v.drop_bytes : v.bytes;
  if (m.info->kind == Kind::SpawnRequest) {
    rewrite_spawn_request(header, m, false, alt);
  } else if (!answer_refusal(header, c.refusal, alt) && header_writes) {
    carrier_for(header, alt);
  }
  if (c.hint == Hint::Unsafe && pol.handler) {
    count(&Stats::asked);
    Stats::bump(stats_.control[m.info->index].seen);
    v.action = Action::Ask;
    return;
  }
  if (m.info->kind == Kind::SpawnRequest) count(&Stats::rewritten);
  count_control(m.info, false);
  v.action = Action::Drop;
}

void Channel::end_batch() {
  if (!last_done_) return;
  recycle(std::move(last_done_->buf));
  last_done_.reset();
}

void Channel::record_answer(const ControlInfo* c, bool kept, bool would_drop) {
  if (would_drop) count(&Stats::would_drop);
  count(kept ? &Stats::kept : &Stats::dropped);
  if (!c) return;
  Stats::add(kept ? stats_.control[c->index].kept : stats_.control[c->index].dropped);
}

// Header + {REG_SEND, Pid, '', ktls_filter_dropped} + []: the VM applies the
// header's cache writes and discards the message (nobody has that name).
void Channel::carrier_for(Bytes header, std::vector<uint8_t>& out) {
  out.assign(header.begin(), header.end());
  if (header.size() >= 1 && header[0] == kPassThrough) out.push_back(tag::kVersion);
  enc::small_tuple(out, 4);
  enc::integer(out, static_cast<int64_t>(Op::REG_SEND));
  enc::pid(out, local_.name, 0, 0, local_.creation);
  enc::atom(out, "");
  enc::atom(out, kVoidName);
  if (header.size() >= 1 && header[0] == kPassThrough) out.push_back(tag::kVersion);
  enc::nil(out);
}

// The spawn request, now of ktls_filter_handler:spawn_request_denied/1: the
// process exits at once (with {Ref, exit, unauthorized} for erpc calls, so
// the caller's erpc raises {exception, unauthorized}) and the caller's
// monitor or link reports it. Redirected, it spawns
// ktls_filter_handler:spawn_request_init(From, M, F, Args) instead, and the
// configured handler's spawn_request_init/4 runs in the new process.
void Channel::rewrite_spawn_request(Bytes header, const Message& m, bool redirect,
                                    std::vector<uint8_t>& out) {
  const bool versioned = header.size() >= 1 && header[0] == kPassThrough;
  out.assign(header.begin(), header.end());
  if (versioned) out.push_back(tag::kVersion);
  const Term& c = m.control;
  enc::small_tuple(out, static_cast<uint8_t>(c.arity()));
  enc::integer(out, static_cast<int64_t>(m.info->op));
  for (uint32_t i = 1; i < c.arity(); i++) {
    if (i == 4) {
      enc::small_tuple(out, 3);
      enc::atom(out, "ktls_filter_handler");
      enc::atom(out, redirect ? "spawn_request_init" : "spawn_request_denied");
      enc::integer(out, redirect ? 4 : 1);
    } else {
      c.element(i).append_to(out);
    }
  }
  if (versioned) out.push_back(tag::kVersion);
  Term mfa = c.element(4);
  if (redirect) {
    // [From, M, F, Args]: policy already checked that M and F are atoms and
    // Args a proper list.
    enc::list_header(out, 4);
    c.element(2).append_to(out);
    mfa.element(0).append_to(out);
    mfa.element(1).append_to(out);
    m.payload.append_to(out);
    enc::nil(out);
    return;
  }
  enc::list_header(out, 1);
  Term first = m.payload.list_element(0);
  if (mfa.element(0).is_atom("erpc") && mfa.element(1).is_atom("execute_call") &&
      first.tag() == tag::kNewerReference) {
    first.append_to(out);
  } else {
    enc::atom(out, "undefined");
  }
  enc::nil(out);
}

// Header + {SPAWN_REQUEST, Ref, Caller, Caller, {erlang, send, 2}, []} +
// [Dest, Answer]: the VM runs erlang:send(Dest, Answer) for the caller of a
// refused call (see Refusal in policy.h). Its spawn reply reaches the
// caller's node as a stale reply (Ref names no pending spawn there), which
// the VM discards; it goes over this channel, so only a caller on the peer
// is answered (set_peer).
bool Channel::answer_refusal(Bytes header, const Refusal& r, std::vector<uint8_t>& out) {
  if (r.answer == Answer::None) return false;
  const std::string caller = term_node(r.caller);
  if (caller == local_.name || (!peer_.empty() && caller != peer_)) return false;
  const bool versioned = header.size() >= 1 && header[0] == kPassThrough;
  out.assign(header.begin(), header.end());
  if (versioned) out.push_back(tag::kVersion);
  enc::small_tuple(out, 6);
  enc::integer(out, static_cast<int64_t>(Op::SPAWN_REQUEST));
  // The caller is also the new process's group leader.
  bool ok = r.ref.append_to(out) && r.caller.append_to(out) && r.caller.append_to(out);
  enc::small_tuple(out, 3);
  enc::atom(out, "erlang");
  enc::atom(out, "send");
  enc::integer(out, 2);
  enc::nil(out);
  if (versioned) out.push_back(tag::kVersion);
  enc::list_header(out, 2);
  ok = ok && r.dest.append_to(out) && r.tag.valid();
  auto error_unauthorized = [&out] {
    enc::small_tuple(out, 2);
    enc::atom(out, "error");
    enc::atom(out, "unauthorized");
  };
  switch (r.answer) {
    case Answer::IoError:
      enc::small_tuple(out, 3);
      enc::atom(out, "io_reply");
      r.tag.append_to(out);
      error_unauthorized();
      break;
    case Answer::RpcBadRpc:
      enc::small_tuple(out, 2);
      r.tag.append_to(out);
      enc::small_tuple(out, 2);
      enc::atom(out, "badrpc");
      enc::small_tuple(out, 2);
      enc::atom(out, "EXIT");
      enc::atom(out, "unauthorized");
      break;
    case Answer::CallError:
    case Answer::None:
      enc::small_tuple(out, 2);
      r.tag.append_to(out);
      error_unauthorized();
      break;
  }
  enc::nil(out);
  if (!ok) out.clear();
  return ok;
}

// A message given up for its size still answers its sender when its start
// (held so far) says who waits: a spawn request gets the refusal every
// refused spawn request gets, a call or an io request its error answer.
void Channel::answer_discarded(Sequence& s) {
  const Bytes buf(s.buf.data(), s.buf.size());
  std::vector<std::string_view> texts(s.texts.begin(), s.texts.end());
  const AtomRefs refs(texts.data(), texts.size());
  size_t pos = s.header_len;
  TermError err;
  if (!walk_term(buf, pos, refs, nullptr, err)) return;
  Message m;
  m.control = Term(buf, s.header_len, refs);
  auto op = m.control.is_tuple() ? m.control.element(0).integer() : std::nullopt;
  m.info = op ? control_info(*op) : nullptr;
  if (!m.info || !m.info->payload || m.control.arity() != m.info->arity) return;
  m.payload = Term(buf, pos, refs);  // cut short: only its start is read
  static const uint8_t kNoRefs[] = {tag::kVersion, kDistHeader, 0};
  const Bytes header(kNoRefs, sizeof kNoRefs);
  if (m.info->kind == Kind::SpawnRequest) {
    // The rewrite copies the control and reads the first argument only.
    Term first = m.payload.list_element(0);
    size_t end = first.offset();
    if (!first.valid() || !walk_term(buf, end, refs, nullptr, err)) return;
    rewrite_spawn_request(header, m, false, s.answer);
    s.answer_spawn = true;
    return;
  }
  answer_refusal(header, sender_refusal(m.payload), s.answer);
}

void Channel::first_fragment(Bytes p, Verdict& v) {
  if (p.size() < kFragPrefix + 1) {
    fail(v, "truncated fragment header", 0);
    return;
  }
  const uint64_t seq = be64(&p[2]);
  const uint64_t frag = be64(&p[10]);
  count(&Stats::fragments);
  if (frag == 0) {
    fail(v, "fragment id 0", 10);
    return;
  }
  if (seqs_.count(seq) != 0) {
    fail(v, "fragment sequence already open", 2);
    return;
  }
  if (seqs_.size() >= policy_->max_open_fragments) {
    fail(v, "too many open fragment sequences", 2);
    return;
  }
  size_t pos = kFragPrefix;
  if (!parse_header(p, pos, v)) return;
  auto s = std::make_unique<Sequence>();
  s->id = seq;
  s->next = frag - 1;
  const Policy& pol = *policy_;
  s->pass = !pol.inspect || pol.mode == Mode::Off;
  const size_t body = p.size() - pos;
  // OTP cuts a message into fragments of one size (the last may be
  // shorter), so a sequence that claims more fragments of this size than
  // max_message_size holds is given up at once instead of being buffered
  // up to the limit first (a 512 MiB flood then costs no memory). The
  // first fragment is still read, to answer a waiting caller.
  const bool claims_too_much = body > 0 && frag - 1 >= pol.max_message_size / body + 1;
  const uint64_t header = pos - kFragPrefix + 2;
  // An open sequence keeps its header and the texts of its references
  // (up to 255 atoms of 1020 bytes) with its body, and they are charged
  // with it: many sequences cannot hold more than the limit in headers.
  // A discarded sequence keeps neither (release()).
  uint64_t overhead = header;
  for (const std::string& t : ref_texts_) overhead += t.size();
  const char* over = claims_too_much ? kTooLarge : limit_broken(body, overhead + body);
  if (!s->pass && over && pol.limits_counted_only()) {
    // Monitor mode enforces no limit: the sequence goes to the VM as it
    // comes, which reassembles it (the memory is then the VM's, as
    // without the filter), and is counted as would_drop when it ends.
    s->pass = true;
    s->would_drop_reason = over;
  }
  if (s->pass) {
    v.action = Action::Keep;
  } else {
    s->serial = serial_;
    s->slots = ref_slots_;
    s->texts = ref_texts_;
    s->buf = take_buffer();
    // Unless over a limit, the claim (which then cannot overflow) is reserved up to
    // 8 MiB and what the reassembly limit still allows after what is held
    // and what the other open sequences reserved; a larger message grows
    // with what really arrives (which the limits count). Reserving the
    // whole claim let 64 sequences reserve 128 MiB each (std::bad_alloc
    // under an address-space limit); reserving too little makes every
    // message of a few MiB grow and copy (a 17-fragment 1 MiB message cost
    // 5x its throughput that way).
    constexpr uint64_t kMaxReserve = 8u << 20;
    const uint64_t used = held_bytes_ + reserved_bytes_;
    const uint64_t room = pol.max_reassembly_bytes > used ? pol.max_reassembly_bytes - used : 0;
    // A fragment over the limit is not kept; one that claims too much is
    // kept alone.
    const uint64_t reserve = body > pol.max_message_size ? header
                             : claims_too_much
                                 ? header + body
                                 : std::min<uint64_t>({frag * body + header, kMaxReserve,
                                                       room + 4096, pol.max_message_size + 4096});
    s->buf.reserve(reserve);
    s->reserved = reserve;
    reserved_bytes_ += reserve;
    s->atoms_refused = atoms_refused_;
    if (header_rewritten_) {
      append(s->buf, Bytes(header_copy_.data(), header_copy_.size()));
    } else {
      const uint8_t magic[] = {tag::kVersion, kDistHeader};
      append(s->buf, Bytes(magic, sizeof magic));
      append(s->buf, p.subspan(kFragPrefix, pos - kFragPrefix));
    }
    s->header_len = s->buf.size();
    if (body > pol.max_message_size || (over && !claims_too_much)) {
      s->discard = true;
      s->discard_reason = over;
    } else {
      append(s->buf, p.subspan(pos));
      s->overhead = overhead;
      held_bytes_ += overhead + body;
      if (claims_too_much) {
        s->discard = true;
        s->discard_reason = kTooLarge;
      }
    }
    v.action = Action::Hold;
    // The VM must see this header's cache writes now, before any later
    // message that uses them.
    if (ref_new_) carrier_for(Bytes(s->buf.data(), s->header_len), v.prefix);
    if (s->discard) {
      answer_discarded(*s);
      release(*s);
    }
  }
  Sequence& ref = *s;
  seqs_.emplace(seq, std::move(s));
  if (frag == 1) finish(ref, v);
}

// The limit a sequence breaks when its message has `message` bytes so far
// and `more` bytes are held on top of what all sequences hold now: its
// reason, or null.
const char* Channel::limit_broken(uint64_t message, uint64_t more) const {
  const Policy& pol = *policy_;
  if (message > pol.max_message_size) return kTooLarge;
  if (held_bytes_ + more > pol.max_reassembly_bytes) return kReassemblyLimit;
  return nullptr;
}

// A discarded sequence keeps nothing but its id and what answers its
// sender: its fragments are only counted until the last.
void Channel::release(Sequence& s) {
  const size_t body = s.buf.size() > s.header_len ? s.buf.size() - s.header_len : 0;
  held_bytes_ -= body + s.overhead;
  reserved_bytes_ -= s.reserved;
  s.overhead = s.reserved = 0;
  s.buf.clear();
  s.buf.shrink_to_fit();
  s.header_len = 0;
  s.slots = {};
  s.texts = {};
}

void Channel::continuation(Bytes p, Verdict& v) {
  if (p.size() < kFragPrefix) {
    fail(v, "truncated fragment header", 0);
    return;
  }
  const uint64_t seq = be64(&p[2]);
  const uint64_t frag = be64(&p[10]);
  count(&Stats::fragments);
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) {
    fail(v, "fragment for an unknown sequence", 2);
    return;
  }
  Sequence& s = *it->second;
  if (frag != s.next || frag == 0) {
    fail(v, "fragment out of order", 10);
    return;
  }
  s.next--;
  const size_t body = p.size() - kFragPrefix;
  if (s.pass) {
    v.action = Action::Keep;
  } else {
    v.action = Action::Hold;
    if (!s.discard) {
      const Policy& pol = *policy_;
      const char* over = limit_broken(s.buf.size() - s.header_len + body, body);
      if (over && pol.limits_counted_only()) {
        // Monitor mode enforces no limit: the open sequence is still
        // reassembled (the VM has not seen its first fragment), then kept.
        if (!s.would_drop_reason) s.would_drop_reason = over;
      } else if (over) {
        s.discard = true;
        s.discard_reason = over;
      }
      if (s.discard) {
        answer_discarded(s);
        release(s);
      } else {
        // Grown here, not by the vector's doubling, which would reach twice
        // max_message_size for a message just under it.
        const size_t need = s.buf.size() + body;
        if (need > s.buf.capacity()) {
          s.buf.reserve(std::min<uint64_t>(std::max<uint64_t>(2 * s.buf.capacity(), need),
                                           pol.max_message_size + s.header_len));
        }
        append(s.buf, p.subspan(kFragPrefix));
        held_bytes_ += body;
      }
    }
  }
  if (frag == 1) finish(s, v);
}

// The last fragment arrived: decide about the whole message.
void Channel::finish(Sequence& s, Verdict& v) {
  auto it = seqs_.find(s.id);
  last_done_ = std::move(it->second);
  seqs_.erase(it);
  held_bytes_ -= s.overhead;
  reserved_bytes_ -= s.reserved;
  s.overhead = s.reserved = 0;
  count(&Stats::messages);
  count(&Stats::fragmented);
  if (s.pass) {
    count(&Stats::uninspected);
    count(&Stats::kept);
    if (s.would_drop_reason) {
      count(&Stats::would_drop);
      v.hint = Hint::Drop;
      v.reason = s.would_drop_reason;
    }
    v.action = Action::Keep;
    return;
  }
  if (s.discard) {
    count(&Stats::too_large);
    count_control(nullptr, false);
    v.reason = s.discard_reason;
    v.hint = Hint::Drop;
    v.action = Action::Drop;
    if (!s.answer.empty()) {
      v.bytes = std::move(s.answer);
      if (s.answer_spawn) count(&Stats::rewritten);
    }
    return;
  }
  held_bytes_ -= s.buf.size() - s.header_len;
  for (const std::string& t : s.texts) s.refs.emplace_back(t);
  atoms_refused_ = s.atoms_refused;
  Message m;
  if (!decode(s.buf, s.header_len, s.refs, false, m, v)) return;
  // The whole message goes on as one packet. Its header can be reused when
  // no slot it references was written since; otherwise the terms are
  // written out with plain atoms under a header without references.
  bool unchanged = true;
  for (uint16_t slot : s.slots) {
    unchanged = unchanged && (!cache_ || cache_->serial[slot] <= s.serial);
  }
  if (payload_error_.what) {
    // A payload that does not decode cannot be written out again.
    if (!unchanged) {
      fail(v, payload_error_.what, payload_error_.offset, m.info);
      return;
    }
    keep_undecodable(m, v);
    v.whole = std::move(s.buf);
    v.replaced = true;
    return;
  }
  static const uint8_t kNoRefs[] = {tag::kVersion, kDistHeader, 0};
  if (s.would_drop_reason) {
    count(&Stats::would_drop);
    count_control(m.info, true);
    v.hint = Hint::Drop;
    v.reason = s.would_drop_reason;
    v.action = Action::Keep;
  } else {
    judge(m, Bytes(kNoRefs, sizeof kNoRefs), false, v);
  }
  if (v.action == Action::Keep || v.action == Action::Ask || v.action == Action::Resolve) {
    std::vector<uint8_t>& out = v.bytes;
    if (unchanged) {
      v.whole = std::move(s.buf);  // the message views stay valid: same storage
    } else {
      out.assign(kNoRefs, kNoRefs + sizeof kNoRefs);
      m.control.append_to(out);
      if (m.payload.valid()) m.payload.append_to(out);
    }
    v.replaced = true;
  }
}

}  // namespace ktls::filter
