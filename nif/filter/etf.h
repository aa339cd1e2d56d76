// External term format (ETF) as it appears inside OTP 25 dist messages:
// validation without building terms, navigation for the policy, and
// transcoding into standalone binary_to_term input.
//
// Terms in a dist message may refer to the message's atom cache references
// (ATOM_CACHE_REF); callers pass the texts of those references as AtomRefs.
// Binary contents are never copied while validating or navigating.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ktls::filter {

using Bytes = std::span<const uint8_t>;
// Texts of a message's atom cache references, in header order.
using AtomRefs = std::span<const std::string_view>;

namespace tag {
inline constexpr uint8_t kVersion = 131;
inline constexpr uint8_t kNewFloat = 70;
inline constexpr uint8_t kBitBinary = 77;
inline constexpr uint8_t kCompressed = 80;
inline constexpr uint8_t kAtomCacheRef = 82;
inline constexpr uint8_t kNewPid = 88;
inline constexpr uint8_t kNewPort = 89;
inline constexpr uint8_t kNewerReference = 90;
inline constexpr uint8_t kSmallInteger = 97;
inline constexpr uint8_t kInteger = 98;
inline constexpr uint8_t kFloat = 99;
inline constexpr uint8_t kAtom = 100;
inline constexpr uint8_t kReference = 101;
inline constexpr uint8_t kPort = 102;
inline constexpr uint8_t kPid = 103;
inline constexpr uint8_t kSmallTuple = 104;
inline constexpr uint8_t kLargeTuple = 105;
inline constexpr uint8_t kNil = 106;
inline constexpr uint8_t kString = 107;
inline constexpr uint8_t kList = 108;
inline constexpr uint8_t kBinary = 109;
inline constexpr uint8_t kSmallBig = 110;
inline constexpr uint8_t kLargeBig = 111;
inline constexpr uint8_t kNewFun = 112;
inline constexpr uint8_t kExport = 113;
inline constexpr uint8_t kNewReference = 114;
inline constexpr uint8_t kSmallAtom = 115;
inline constexpr uint8_t kMap = 116;
inline constexpr uint8_t kFun = 117;
inline constexpr uint8_t kAtomUtf8 = 118;
inline constexpr uint8_t kSmallAtomUtf8 = 119;
inline constexpr uint8_t kV4Port = 120;
}  // namespace tag

// Why a term is malformed and at which byte offset of the buffer walked.
struct TermError {
  const char* what = nullptr;
  size_t offset = 0;
};

// Walks one term starting at data[pos]. On success pos is the first byte
// after it. With `out`, the term is also appended to it in standalone form
// (atom cache references replaced by UTF-8 atoms, fun sizes fixed up).
// Every length is checked against the bytes that are left, so a hostile
// length fails fast instead of allocating.
// Told about every atom written out in a term (not the atom cache
// references, whose texts the dist header carried); `latin1` for
// ATOM_EXT/SMALL_ATOM_EXT, UTF-8 otherwise.
class AtomSink {
 public:
  virtual void inline_atom(std::string_view text, bool latin1) = 0;

 protected:
  ~AtomSink() = default;
};

// The parts of a pid term: node (a view), ID, Serial, Creation.
struct PidParts {
  std::string_view node;
  uint32_t id = 0, serial = 0, creation = 0;
};

bool walk_term(Bytes data, size_t& pos, AtomRefs refs, std::vector<uint8_t>* out, TermError& err,
               AtomSink* atoms = nullptr);

// Read-only view of a term that walk_term already validated; navigation
// never reads outside the buffer (a bad view answers "not a ...").
class Term {
 public:
  Term() = default;
  Term(Bytes data, size_t pos, AtomRefs refs) : data_(data), pos_(pos), refs_(refs) {}

  bool valid() const { return pos_ < data_.size(); }
  uint8_t tag() const { return valid() ? data_[pos_] : 0; }
  size_t offset() const { return pos_; }
  AtomRefs refs() const { return refs_; }
  // Offset just after this term (walks it).
  size_t end() const;

  std::optional<std::string_view> atom() const;
  bool is_atom(std::string_view text) const;
  bool is_tuple() const { return tag() == tag::kSmallTuple || tag() == tag::kLargeTuple; }
  uint32_t arity() const;
  // Element i (0-based) of a tuple; an invalid view when out of range.
  Term element(uint32_t i) const;
  // Lists: proper list elements (STRING_EXT counts as a list of small ints).
  bool is_list() const {
    return tag() == tag::kNil || tag() == tag::kList || tag() == tag::kString;
  }
  uint32_t list_length() const;
  Term list_element(uint32_t i) const;
  std::optional<int64_t> integer() const;
  bool is_pid() const { return tag() == tag::kNewPid || tag() == tag::kPid; }
  // Node and numbers of a pid; nullopt for anything else.
  std::optional<PidParts> pid_parts() const;
  bool is_fun() const {
    return tag() == tag::kNewFun || tag() == tag::kFun || tag() == tag::kExport;
  }
  // The term right after this one in the buffer (next tuple element, list tail...).
  Term next() const { return Term(data_, end(), refs_); }
  // Function of an export fun (fun M:F/A).
  Term export_function() const {
    return tag() == tag::kExport ? Term(data_, pos_ + 1, refs_).next() : Term{};
  }
  // Appends this term in standalone form without the version byte.
  bool append_to(std::vector<uint8_t>& out) const;
  // Module of a fun or export (fun M:F/A).
  std::optional<std::string_view> fun_module() const;
  // This term in standalone form, with the 131 version byte.
  std::vector<uint8_t> standalone() const;

 private:
  Bytes data_;
  size_t pos_ = SIZE_MAX;
  AtomRefs refs_;
};

// Encoders for the terms the filter writes itself (rewritten messages).
namespace enc {
void small_tuple(std::vector<uint8_t>& out, uint8_t arity);
void atom(std::vector<uint8_t>& out, std::string_view text);
void integer(std::vector<uint8_t>& out, int64_t v);
void nil(std::vector<uint8_t>& out);
void list_header(std::vector<uint8_t>& out, uint32_t length);
void pid(std::vector<uint8_t>& out, std::string_view node, uint32_t id, uint32_t serial,
         uint32_t creation);
}  // namespace enc

}  // namespace ktls::filter
