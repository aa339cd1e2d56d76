#include "nif/filter/etf.h"

#include <cstring>

namespace ktls::filter {
namespace {

uint16_t be16(const uint8_t* p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
uint32_t be32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}
void put16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}
void put32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(static_cast<uint8_t>(v >> 24));
  out.push_back(static_cast<uint8_t>(v >> 16));
  out.push_back(static_cast<uint8_t>(v >> 8));
  out.push_back(static_cast<uint8_t>(v));
}

// Longest atom text the VM accepts: 255 characters of up to 4 bytes.
constexpr size_t kMaxAtomBytes = 255 * 4;

// Pending counts at which a list's tail is the next term, innermost list
// last: inline for the nesting depths messages have, no allocation then.
class TailStack {
 public:
  bool empty() const { return n_ == 0; }
  uint64_t back() const { return n_ <= kInline ? inline_[n_ - 1] : more_.back(); }
  void push(uint64_t at) {
    if (n_ < kInline) {
      inline_[n_] = at;
    } else {
      more_.push_back(at);
    }
    n_++;
  }
  void pop() {
    n_--;
    if (n_ >= kInline) more_.pop_back();
  }

 private:
  static constexpr size_t kInline = 16;
  uint64_t inline_[kInline];
  std::vector<uint64_t> more_;
  size_t n_ = 0;
};

// The walker: one pending-term counter instead of recursion, so nesting
// depth costs nothing; funs keep a frame because their size field covers
// their sub-terms and must be checked (and rewritten when transcoding);
// lists keep the pending count at which their tail comes (see run).
class Walker {
 public:
  Walker(Bytes data, AtomRefs refs, std::vector<uint8_t>* out, TermError& err, AtomSink* sink)
      : d_(data), refs_(refs), out_(out), err_(err), sink_(sink) {}

  bool run(size_t& pos) {
    pos_ = pos;
    uint64_t pending = 1;
    while (pending > 0 || !funs_.empty()) {
      while (!funs_.empty() && funs_.back().done_at == pending) {
        if (!close_fun()) return false;
      }
      if (pending == 0) break;
      if (!tails_.empty() && tails_.back() == pending) {
        tails_.pop();
        // The VM takes a list tail that is a list as more elements of one
        // list; OTP always sends one LIST_EXT per list (or a STRING_EXT).
        // Such a split list would show the policy fewer elements than the
        // VM decodes (and make byte-order iteration lie), so it is refused.
        if (pos_ < d_.size() && (d_[pos_] == tag::kList || d_[pos_] == tag::kString)) {
          return fail("list tail is a list");
        }
      }
      pending--;
      pending_after_ = pending;
      uint64_t children = 0;
      if (!one(children)) return false;
      // Every term takes at least one byte: more pending terms than bytes
      // left is an impossible length.
      pending += children;
      if (pending > d_.size() - pos_) return fail("term count exceeds remaining bytes");
    }
    pos = pos_;
    return true;
  }

 private:
  struct FunFrame {
    uint64_t done_at;  // pending count when the fun's sub-terms are done
    size_t in_size_pos;
    size_t out_size_pos;
  };

  bool fail(const char* what) {
    err_.what = what;
    err_.offset = pos_;
    return false;
  }
  bool need(size_t n) { return d_.size() - pos_ >= n ? true : fail("truncated term"); }
  void copy(size_t n) {
    if (out_) out_->insert(out_->end(), d_.begin() + pos_, d_.begin() + pos_ + n);
    pos_ += n;
  }

  bool atom_text(size_t len) {
    if (len > kMaxAtomBytes) return fail("atom too long");
    return need(len);
  }

  // An atom (the node of a pid, port or ref, a fun's module, ...).
  bool atom() {
    if (!need(1)) return false;
    uint8_t t = d_[pos_];
    switch (t) {
      case tag::kAtom:
      case tag::kAtomUtf8: {
        if (!need(3)) return false;
        size_t len = be16(&d_[pos_ + 1]);
        pos_ += 3;
        if (!atom_text(len)) return false;
        pos_ -= 3;
        inline_atom(t == tag::kAtom, pos_ + 3, len);
        copy(3 + len);
        return true;
      }
      case tag::kSmallAtom:
      case tag::kSmallAtomUtf8: {
        if (!need(2)) return false;
        size_t len = d_[pos_ + 1];
        if (!need(2 + len)) return false;
        inline_atom(t == tag::kSmallAtom, pos_ + 2, len);
        copy(2 + len);
        return true;
      }
      case tag::kAtomCacheRef: {
        if (!need(2)) return false;
        size_t ix = d_[pos_ + 1];
        if (ix >= refs_.size()) return fail("atom cache reference out of range");
        if (out_) enc::atom(*out_, refs_[ix]);
        pos_ += 2;
        return true;
      }
      default:
        return fail("atom expected");
    }
  }

  void inline_atom(bool latin1, size_t at, size_t len) {
    if (sink_) {
      sink_->inline_atom(std::string_view(reinterpret_cast<const char*>(&d_[at]), len), latin1);
    }
  }

  bool fixed(size_t n) {
    if (!need(n)) return false;
    copy(n);
    return true;
  }

  bool one(uint64_t& children) {
    if (!need(1)) return false;
    const uint8_t t = d_[pos_];
    switch (t) {
      case tag::kSmallInteger:
        return fixed(2);
      case tag::kInteger:
        return fixed(5);
      case tag::kNewFloat:
        return fixed(9);
      case tag::kFloat:
        return fixed(32);
      case tag::kAtom:
      case tag::kAtomUtf8:
      case tag::kSmallAtom:
      case tag::kSmallAtomUtf8:
      case tag::kAtomCacheRef:
        return atom();
      case tag::kNil:
        return fixed(1);
      case tag::kSmallTuple:
        if (!need(2)) return false;
        children = d_[pos_ + 1];
        copy(2);
        return true;
      case tag::kLargeTuple:
        if (!need(5)) return false;
        children = be32(&d_[pos_ + 1]);
        copy(5);
        return true;
      case tag::kMap:
        if (!need(5)) return false;
        children = uint64_t{be32(&d_[pos_ + 1])} * 2;
        copy(5);
        return true;
      case tag::kList:
        if (!need(5)) return false;
        // The VM decodes a LIST_EXT without elements as its tail, so it
        // could stand for any term; OTP sends [] as NIL_EXT.
        if (be32(&d_[pos_ + 1]) == 0) return fail("LIST_EXT without elements");
        children = uint64_t{be32(&d_[pos_ + 1])} + 1;  // elements and tail
        tails_.push(pending_after_ + 1);
        copy(5);
        return true;
      case tag::kString: {
        if (!need(3)) return false;
        return fixed(3 + be16(&d_[pos_ + 1]));
      }
      case tag::kBinary: {
        if (!need(5)) return false;
        uint64_t len = be32(&d_[pos_ + 1]);
        if (d_.size() - pos_ - 5 < len) return fail("binary length exceeds remaining bytes");
        copy(5 + len);
        return true;
      }
      case tag::kBitBinary: {
        if (!need(6)) return false;
        uint64_t len = be32(&d_[pos_ + 1]);
        uint8_t bits = d_[pos_ + 5];
        // As the VM checks it: no bits exactly when there are no bytes.
        if ((bits == 0) != (len == 0) || bits > 8) return fail("bad bit count");
        if (d_.size() - pos_ - 6 < len) return fail("binary length exceeds remaining bytes");
        copy(6 + len);
        return true;
      }
      case tag::kSmallBig: {
        if (!need(3)) return false;
        if (d_[pos_ + 2] > 1) return fail("bad big integer sign");
        return fixed(3 + d_[pos_ + 1]);
      }
      case tag::kLargeBig: {
        if (!need(6)) return false;
        uint64_t n = be32(&d_[pos_ + 1]);
        if (d_[pos_ + 5] > 1) return fail("bad big integer sign");
        if (d_.size() - pos_ - 6 < n) return fail("big integer length exceeds remaining bytes");
        copy(6 + n);
        return true;
      }
      case tag::kNewPid:
        copy(1);
        return atom() && fixed(12);
      case tag::kPid:
        copy(1);
        return atom() && fixed(9);
      case tag::kNewPort:
        copy(1);
        return atom() && fixed(8);
      case tag::kV4Port:
        copy(1);
        return atom() && fixed(12);
      case tag::kPort:
        copy(1);
        return atom() && fixed(5);
      case tag::kReference:
        copy(1);
        return atom() && fixed(5);
      case tag::kNewReference:
      case tag::kNewerReference: {
        if (!need(3)) return false;
        size_t words = be16(&d_[pos_ + 1]);
        if (words > 5) return fail("reference too long");
        // The VM's decoder reads one id word even when the count is 0, so
        // it would leave this term 4 bytes later than the count says: the
        // terms after it would not be the terms we judge.
        if (words == 0) return fail("reference without id words");
        copy(3);
        return atom() && fixed((t == tag::kNewReference ? 1 : 4) + 4 * words);
      }
      case tag::kExport:
        copy(1);
        children = 3;  // module, function, arity
        return true;
      case tag::kNewFun: {
        // 112, Size:32, Arity:8, Uniq:16/binary, Index:32, NumFree:32, then
        // Module, OldIndex, OldUniq, Pid and NumFree free variables; Size
        // counts from the Size field to the end of the fun.
        if (!need(1 + 4 + 1 + 16 + 4 + 4)) return false;
        uint64_t num_free = be32(&d_[pos_ + 1 + 4 + 1 + 16 + 4]);
        size_t in_size_pos = pos_ + 1;
        size_t out_size_pos = out_ ? out_->size() + 1 : 0;
        copy(1 + 4 + 1 + 16 + 4 + 4);
        funs_.push_back(FunFrame{pending_after_, in_size_pos, out_size_pos});
        children = 4 + num_free;
        return true;
      }
      case tag::kFun: {
        // Old funs: NumFree:32, Pid, Module, Index, Uniq, free variables.
        if (!need(5)) return false;
        children = 4 + uint64_t{be32(&d_[pos_ + 1])};
        copy(5);
        return true;
      }
      case tag::kCompressed:
        return fail("compressed term in a dist message");
      default:
        return fail("unknown term tag");
    }
  }

  bool close_fun() {
    FunFrame f = funs_.back();
    funs_.pop_back();
    uint64_t size = be32(&d_[f.in_size_pos]);
    if (size != pos_ - f.in_size_pos) {
      err_.what = "fun size does not match its contents";
      err_.offset = f.in_size_pos - 1;
      return false;
    }
    if (out_) {
      uint32_t out_size = static_cast<uint32_t>(out_->size() - f.out_size_pos);
      uint8_t* p = out_->data() + f.out_size_pos;
      p[0] = static_cast<uint8_t>(out_size >> 24);
      p[1] = static_cast<uint8_t>(out_size >> 16);
      p[2] = static_cast<uint8_t>(out_size >> 8);
      p[3] = static_cast<uint8_t>(out_size);
    }
    return true;
  }

 public:
  // Pending count after the current term was taken (set by run before one()).
  uint64_t pending_after_ = 0;

 private:
  Bytes d_;
  AtomRefs refs_;
  std::vector<uint8_t>* out_;
  TermError& err_;
  AtomSink* sink_;
  size_t pos_ = 0;
  std::vector<FunFrame> funs_;
  TailStack tails_;
};

}  // namespace

namespace {

// The bytes of the atom at `p` (`left` bytes there), as the walker accepts
// it; 0 if it would refuse it.
size_t atom_bytes(const uint8_t* p, size_t left, AtomRefs refs) {
  if (left < 2) return 0;
  size_t n = 0;
  switch (p[0]) {
    case tag::kAtomCacheRef:
      return p[1] < refs.size() ? 2 : 0;
    case tag::kSmallAtom:
    case tag::kSmallAtomUtf8:
      n = 2 + size_t{p[1]};
      break;
    case tag::kAtom:
    case tag::kAtomUtf8:
      if (left < 3 || be16(p + 1) > kMaxAtomBytes) return 0;
      n = 3 + size_t{be16(p + 1)};
      break;
    default:
      return 0;
  }
  return n <= left ? n : 0;
}

// Skips a term without sub-terms that the walker would accept, without
// starting one: the integers, atoms, pids and binaries that policy checks
// step over when they look at one element of a tuple (Term::element) are
// most of what they walk. False, pos unchanged, for anything else; the
// walker then decides (with its error, if the term is bad).
bool skip_leaf(Bytes d, size_t& pos, AtomRefs refs) {
  const size_t left = d.size() - pos;
  if (left == 0) return false;
  const uint8_t* p = d.data() + pos;
  uint64_t n = 0;
  switch (p[0]) {
    case tag::kSmallInteger:
      n = 2;
      break;
    case tag::kInteger:
      n = 5;
      break;
    case tag::kNewFloat:
      n = 9;
      break;
    case tag::kNil:
      n = 1;
      break;
    case tag::kAtomCacheRef:
    case tag::kSmallAtom:
    case tag::kSmallAtomUtf8:
    case tag::kAtom:
    case tag::kAtomUtf8:
      n = atom_bytes(p, left, refs);
      break;
    case tag::kBinary:
      if (left < 5) return false;
      n = 5 + uint64_t{be32(p + 1)};
      break;
    case tag::kNewPid: {
      const size_t a = atom_bytes(p + 1, left - 1, refs);
      if (a == 0) return false;
      n = 1 + a + 12;
      break;
    }
    default:
      return false;
  }
  if (n == 0 || n > left) return false;
  pos += n;
  return true;
}

}  // namespace

bool walk_term(Bytes data, size_t& pos, AtomRefs refs, std::vector<uint8_t>* out, TermError& err,
               AtomSink* atoms) {
  if (pos > data.size()) {
    err.what = "offset beyond the message";
    err.offset = pos;
    return false;
  }
  if (!out && !atoms && skip_leaf(data, pos, refs)) return true;
  Walker w(data, refs, out, err, atoms);
  return w.run(pos);
}

// Term navigation --------------------------------------------------------

std::optional<PidParts> Term::pid_parts() const {
  if (!is_pid()) return std::nullopt;
  Term node(data_, pos_ + 1, refs_);
  auto name = node.atom();
  const size_t at = node.end();
  const size_t tail = tag() == tag::kNewPid ? 12 : 9;
  if (!name || at > data_.size() || data_.size() - at < tail) return std::nullopt;
  const uint8_t* p = &data_[at];
  return PidParts{*name, be32(p), be32(p + 4), tag() == tag::kNewPid ? be32(p + 8) : p[8]};
}

size_t Term::end() const {
  size_t p = pos_;
  TermError err;
  if (!valid() || !walk_term(data_, p, refs_, nullptr, err)) return data_.size();
  return p;
}

std::optional<std::string_view> Term::atom() const {
  if (!valid()) return std::nullopt;
  const uint8_t* p = data_.data() + pos_;
  size_t left = data_.size() - pos_;
  switch (p[0]) {
    case tag::kAtom:
    case tag::kAtomUtf8:
      if (left < 3 || left - 3 < be16(p + 1)) return std::nullopt;
      return std::string_view(reinterpret_cast<const char*>(p + 3), be16(p + 1));
    case tag::kSmallAtom:
    case tag::kSmallAtomUtf8:
      if (left < 2 || left - 2 < p[1]) return std::nullopt;
      return std::string_view(reinterpret_cast<const char*>(p + 2), p[1]);
    case tag::kAtomCacheRef:
      if (left < 2 || p[1] >= refs_.size()) return std::nullopt;
      return refs_[p[1]];
    default:
      return std::nullopt;
  }
}

bool Term::is_atom(std::string_view text) const {
  auto a = atom();
  return a && *a == text;
}

uint32_t Term::arity() const {
  if (tag() == tag::kSmallTuple && data_.size() - pos_ >= 2) return data_[pos_ + 1];
  if (tag() == tag::kLargeTuple && data_.size() - pos_ >= 5) return be32(&data_[pos_ + 1]);
  return 0;
}

Term Term::element(uint32_t i) const {
  if (!is_tuple() || i >= arity()) return {};
  size_t p = pos_ + (tag() == tag::kSmallTuple ? 2 : 5);
  for (uint32_t k = 0; k < i; k++) {
    TermError err;
    if (!walk_term(data_, p, refs_, nullptr, err)) return {};
  }
  return Term(data_, p, refs_);
}

uint32_t Term::list_length() const {
  if (tag() == tag::kList && data_.size() - pos_ >= 5) return be32(&data_[pos_ + 1]);
  if (tag() == tag::kString && data_.size() - pos_ >= 3) return be16(&data_[pos_ + 1]);
  return 0;
}

Term Term::list_element(uint32_t i) const {
  if (tag() != tag::kList || i >= list_length()) return {};
  size_t p = pos_ + 5;
  for (uint32_t k = 0; k < i; k++) {
    TermError err;
    if (!walk_term(data_, p, refs_, nullptr, err)) return {};
  }
  return Term(data_, p, refs_);
}

std::optional<int64_t> Term::integer() const {
  if (tag() == tag::kSmallInteger && data_.size() - pos_ >= 2) return data_[pos_ + 1];
  if (tag() == tag::kInteger && data_.size() - pos_ >= 5) {
    return static_cast<int32_t>(be32(&data_[pos_ + 1]));
  }
  return std::nullopt;
}

std::optional<std::string_view> Term::fun_module() const {
  if (tag() == tag::kExport) return Term(data_, pos_ + 1, refs_).atom();
  if (tag() == tag::kNewFun) return Term(data_, pos_ + 1 + 4 + 1 + 16 + 4 + 4, refs_).atom();
  if (tag() == tag::kFun) {
    Term pid(data_, pos_ + 5, refs_);
    return Term(data_, pid.end(), refs_).atom();
  }
  return std::nullopt;
}

bool Term::append_to(std::vector<uint8_t>& out) const {
  size_t p = pos_;
  TermError err;
  return valid() && walk_term(data_, p, refs_, &out, err);
}

std::vector<uint8_t> Term::standalone() const {
  std::vector<uint8_t> out{tag::kVersion};
  size_t p = pos_;
  TermError err;
  if (!valid() || !walk_term(data_, p, refs_, &out, err)) return {};
  return out;
}

// Encoders ----------------------------------------------------------------

namespace enc {
void small_tuple(std::vector<uint8_t>& out, uint8_t arity) {
  out.push_back(tag::kSmallTuple);
  out.push_back(arity);
}
void atom(std::vector<uint8_t>& out, std::string_view text) {
  if (text.size() <= 255) {
    out.push_back(tag::kSmallAtomUtf8);
    out.push_back(static_cast<uint8_t>(text.size()));
  } else {
    out.push_back(tag::kAtomUtf8);
    put16(out, static_cast<uint16_t>(text.size()));
  }
  out.insert(out.end(), text.begin(), text.end());
}
void integer(std::vector<uint8_t>& out, int64_t v) {
  if (v >= 0 && v <= 255) {
    out.push_back(tag::kSmallInteger);
    out.push_back(static_cast<uint8_t>(v));
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    out.push_back(tag::kInteger);
    put32(out, static_cast<uint32_t>(static_cast<int32_t>(v)));
  } else {
    uint64_t mag = v < 0 ? 0 - static_cast<uint64_t>(v) : static_cast<uint64_t>(v);
    out.push_back(tag::kSmallBig);
    size_t n_pos = out.size();
    out.push_back(0);
    out.push_back(v < 0 ? 1 : 0);
    uint8_t n = 0;
    while (mag) {
      out.push_back(static_cast<uint8_t>(mag));
      mag >>= 8;
      n++;
    }
    out[n_pos] = n;
  }
}
void nil(std::vector<uint8_t>& out) { out.push_back(tag::kNil); }
void list_header(std::vector<uint8_t>& out, uint32_t length) {
  out.push_back(tag::kList);
  put32(out, length);
}
void pid(std::vector<uint8_t>& out, std::string_view node, uint32_t id, uint32_t serial,
         uint32_t creation) {
  out.push_back(tag::kNewPid);
  atom(out, node);
  put32(out, id);
  put32(out, serial);
  put32(out, creation);
}
}  // namespace enc

}  // namespace ktls::filter
