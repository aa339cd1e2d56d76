// walk_term and Term navigation on the terms a real OTP 25 node sends
// (testdata/terms.a2b: one {Name, Term} message per term kind), in their
// dist form (atom cache references) and standalone.
#include "nif/filter/etf.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "nif/filter/channel.h"
#include "nif/filter/testdata/capture_file.h"

namespace ktls::filter {
namespace {

using testdata::Packet;

// Calls check(name, term, packet) for every {Name, Term} sample, the term
// in its dist form: views into the packet and the channel's cache texts.
template <typename Check>
void visit(const Check& check) {
  std::vector<Packet> ps = testdata::load("terms.a2b");
  ASSERT_FALSE(ps.empty()) << "no terms.a2b in " << testdata::dir();
  Channel ch(std::make_shared<Policy>(), LocalNode{"ktls_filter_test@127.0.0.1", 1});
  for (const Packet& p : ps) {
    Verdict v;
    ch.inspect(Bytes(p.data(), p.size()), v);
    ASSERT_NE(v.action, Action::Close) << v.error;
    const Term& pl = v.message.payload;
    if (!v.decoded || v.message.info->op != Op::REG_SEND || pl.arity() != 2) continue;
    auto name = pl.element(0).atom();
    if (!name || *name == "$gen_call") continue;
    check(std::string(*name), pl.element(1), p);
  }
}

// Every sample in standalone form (with the version byte).
const std::map<std::string, std::vector<uint8_t>>& standalone() {
  static const std::map<std::string, std::vector<uint8_t>> samples = [] {
    std::map<std::string, std::vector<uint8_t>> m;
    visit([&](const std::string& name, const Term& t, const Packet&) { m[name] = t.standalone(); });
    return m;
  }();
  return samples;
}

Term sample(const std::string& name) {
  auto it = standalone().find(name);
  if (it == standalone().end()) {
    ADD_FAILURE() << "no sample " << name;
    return {};
  }
  return Term(Bytes(it->second), 1, {});
}

// What OTP 25 puts on the wire for each sample (every atom of a message
// goes through the atom cache).
const std::map<std::string, uint8_t> kDistTags = {
    {"small_integer", tag::kSmallInteger},
    {"integer", tag::kInteger},
    {"integer_max", tag::kInteger},
    {"small_big", tag::kSmallBig},
    {"small_big_negative", tag::kSmallBig},
    {"large_big", tag::kLargeBig},
    {"new_float", tag::kNewFloat},
    {"float_tiny", tag::kNewFloat},
    {"atom_utf8", tag::kAtomCacheRef},
    {"long_atom", tag::kAtomCacheRef},
    {"empty_atom", tag::kAtomCacheRef},
    {"nil", tag::kNil},
    {"string", tag::kString},
    {"list", tag::kList},
    {"improper_list", tag::kList},
    {"small_tuple", tag::kSmallTuple},
    {"large_tuple", tag::kLargeTuple},
    {"empty_tuple", tag::kSmallTuple},
    {"small_map", tag::kMap},
    {"large_map", tag::kMap},
    {"binary", tag::kBinary},
    {"empty_binary", tag::kBinary},
    {"bit_binary", tag::kBitBinary},
    {"sub_binary", tag::kBinary},
    {"local_pid", tag::kNewPid},
    {"remote_pid", tag::kNewPid},
    {"reference", tag::kNewerReference},
    {"port", tag::kNewPort},
    {"local_fun", tag::kNewFun},
    {"closure", tag::kNewFun},
    {"export_fun", tag::kExport},
    {"nested", tag::kList},
    {"atoms_beyond_cache", tag::kList},
};

// Standalone form: cache references become SMALL_ATOM_UTF8 / ATOM_UTF8.
uint8_t standalone_tag(const std::string& name) {
  if (name == "long_atom") return tag::kAtomUtf8;
  if (kDistTags.at(name) == tag::kAtomCacheRef) return tag::kSmallAtomUtf8;
  return kDistTags.at(name);
}

TEST(Captured, EverySampleHasTheTagOtpSends) {
  std::map<std::string, uint8_t> got;
  visit([&](const std::string& name, const Term& t, const Packet&) { got[name] = t.tag(); });
  EXPECT_EQ(got, kDistTags);
  for (const auto& [name, bytes] : standalone()) {
    ASSERT_GE(bytes.size(), 2u) << name;
    EXPECT_EQ(bytes[0], tag::kVersion);
    EXPECT_EQ(bytes[1], standalone_tag(name)) << name;
  }
}

// Each sample is the last term of its packet: walking it ends at the end.
TEST(Captured, WalkEndsWhereTheTermEnds) {
  visit([](const std::string& name, const Term& t, const Packet& p) {
    EXPECT_EQ(t.end(), p.size()) << name;
  });
  for (const auto& [name, bytes] : standalone()) {
    size_t pos = 1;
    TermError err;
    ASSERT_TRUE(walk_term(Bytes(bytes), pos, {}, nullptr, err)) << name << ": " << err.what;
    EXPECT_EQ(pos, bytes.size()) << name;
  }
}

// A plain walk (no output, no atom sink) skips a leaf term without the
// walker; it must end where the walker ends, and refuse what the walker
// refuses: in dist form (cache references), standalone, and for a cache
// reference out of range or an atom longer than the limit.
TEST(Captured, LeafSkipAgreesWithTheWalker) {
  auto both = [](Bytes b, size_t at, AtomRefs refs, const std::string& what) {
    size_t fast = at, slow = at;
    TermError e1, e2;
    std::vector<uint8_t> out;
    const bool ok_fast = walk_term(b, fast, refs, nullptr, e1);
    const bool ok_slow = walk_term(b, slow, refs, &out, e2);
    EXPECT_EQ(ok_fast, ok_slow) << what;
    if (ok_fast && ok_slow) {
      EXPECT_EQ(fast, slow) << what;
    }
  };
  visit([&](const std::string& name, const Term& t, const Packet& p) {
    both(Bytes(p.data(), p.size()), t.offset(), t.refs(), name);
    both(Bytes(p.data(), p.size()), t.offset(), {}, name + " without its cache");
  });
  for (const auto& [name, bytes] : standalone()) {
    for (size_t cut = 2; cut <= bytes.size(); cut++) {
      both(Bytes(bytes.data(), cut), 1, {}, name + " cut at " + std::to_string(cut));
    }
  }
  std::vector<uint8_t> long_atom = {tag::kAtomUtf8, 0x10, 0x00};  // 4096 bytes
  long_atom.resize(3 + 4096, 'x');
  both(Bytes(long_atom), 0, {}, "atom over the limit");
  size_t pos = 0;
  TermError err;
  EXPECT_FALSE(walk_term(Bytes(long_atom), pos, {}, nullptr, err));
}

// Transcoding a standalone term changes nothing; fun sizes were fixed up
// (walk_term checks them) where cache references became longer atoms.
TEST(Captured, StandaloneIsAFixedPoint) {
  for (const auto& [name, bytes] : standalone()) {
    EXPECT_EQ(sample(name).standalone(), bytes) << name;
  }
  std::map<std::string, size_t> dist_size;
  visit([&](const std::string& name, const Term& t, const Packet&) {
    dist_size[name] = t.end() - t.offset();
  });
  EXPECT_GT(standalone().at("local_fun").size() - 1, dist_size.at("local_fun"));
  EXPECT_GT(standalone().at("closure").size() - 1, dist_size.at("closure"));
}

// Any proper prefix of a term is refused, at an offset inside the prefix.
TEST(Captured, EveryCutIsRefused) {
  for (const auto& [name, bytes] : standalone()) {
    for (size_t cut = 1; cut < bytes.size(); cut++) {
      size_t pos = 1;
      TermError err;
      ASSERT_FALSE(walk_term(Bytes(bytes.data(), cut), pos, {}, nullptr, err))
          << name << " cut at " << cut;
      ASSERT_NE(err.what, nullptr);
      ASSERT_LE(err.offset, cut) << name << ": " << err.what;
    }
  }
}

TEST(Navigation, Integers) {
  EXPECT_EQ(sample("small_integer").integer(), 42);
  EXPECT_EQ(sample("integer").integer(), -123456);
  EXPECT_EQ(sample("integer_max").integer(), 1 << 30);
  EXPECT_FALSE(sample("small_big").integer());
  EXPECT_FALSE(sample("large_big").integer());
  EXPECT_FALSE(sample("new_float").integer());
  EXPECT_FALSE(sample("new_float").atom());
}

TEST(Navigation, Atoms) {
  visit([](const std::string& name, const Term& t, const Packet&) {
    if (name == "atom_utf8") {
      EXPECT_EQ(t.atom(), "Ωmega_ünïcode");
    }
    if (name == "empty_atom") {
      EXPECT_TRUE(t.is_atom(""));
    }
  });
  EXPECT_EQ(sample("atom_utf8").atom(), "Ωmega_ünïcode");
  EXPECT_TRUE(sample("empty_atom").is_atom(""));
  std::string omega;
  for (int i = 0; i < 255; i++) omega += "Ω";
  EXPECT_EQ(sample("long_atom").atom(), omega);
  EXPECT_FALSE(sample("long_atom").is_atom("Ω"));
  EXPECT_FALSE(sample("small_integer").atom());
}

// More than 255 atoms in one message: the first 255 distinct ones through
// the cache, the rest plain, the 510-byte one as ATOM_UTF8_EXT.
TEST(Navigation, AtomsBeyondTheCache) {
  std::string e_acute;
  for (int i = 0; i < 255; i++) e_acute += "é";
  visit([&](const std::string& name, const Term& t, const Packet&) {
    if (name != "atoms_beyond_cache") return;
    ASSERT_EQ(t.list_length(), 301u);
    std::map<uint8_t, int> tags;
    for (uint32_t i = 0; i < 301; i++) tags[t.list_element(i).tag()]++;
    EXPECT_GT(tags[tag::kAtomCacheRef], 0);
    EXPECT_LE(tags[tag::kAtomCacheRef], 255);
    EXPECT_GT(tags[tag::kSmallAtomUtf8], 0);
    EXPECT_EQ(t.list_element(0).atom(), "beyond_1");
    EXPECT_EQ(t.list_element(299).atom(), "beyond_300");
    EXPECT_EQ(t.list_element(300).atom(), e_acute);
    EXPECT_EQ(t.list_element(300).next().tag(), tag::kNil);
  });
  Term t = sample("atoms_beyond_cache");
  EXPECT_EQ(t.list_element(300).tag(), tag::kAtomUtf8);
  EXPECT_EQ(t.list_element(300).atom(), e_acute);
  EXPECT_EQ(t.list_element(7).tag(), tag::kSmallAtomUtf8);
}

TEST(Navigation, Lists) {
  Term nil = sample("nil");
  EXPECT_TRUE(nil.is_list());
  EXPECT_EQ(nil.list_length(), 0u);
  EXPECT_FALSE(nil.list_element(0).valid());

  Term str = sample("string");
  EXPECT_TRUE(str.is_list());
  EXPECT_EQ(str.list_length(), 8u);

  Term list = sample("list");  // [1, 2, 300, -1, atom]
  EXPECT_EQ(list.list_length(), 5u);
  EXPECT_EQ(list.list_element(0).integer(), 1);
  EXPECT_EQ(list.list_element(2).integer(), 300);
  EXPECT_EQ(list.list_element(3).integer(), -1);
  EXPECT_TRUE(list.list_element(4).is_atom("atom"));
  EXPECT_EQ(list.list_element(4).next().tag(), tag::kNil);
  EXPECT_FALSE(list.list_element(5).valid());

  Term improper = sample("improper_list");  // [a | b]
  EXPECT_EQ(improper.list_length(), 1u);
  EXPECT_TRUE(improper.list_element(0).is_atom("a"));
  EXPECT_TRUE(improper.list_element(0).next().is_atom("b"));

  Term nested = sample("nested");  // [[[[{[]}]]]]
  Term inner = nested.list_element(0).list_element(0).list_element(0).list_element(0);
  EXPECT_TRUE(inner.is_tuple());
  EXPECT_EQ(inner.element(0).tag(), tag::kNil);
}

TEST(Navigation, Tuples) {
  Term small = sample("small_tuple");  // {a, 1, "x"}
  EXPECT_TRUE(small.is_tuple());
  EXPECT_EQ(small.arity(), 3u);
  EXPECT_TRUE(small.element(0).is_atom("a"));
  EXPECT_EQ(small.element(1).integer(), 1);
  EXPECT_EQ(small.element(2).tag(), tag::kString);
  EXPECT_FALSE(small.element(3).valid());

  Term large = sample("large_tuple");  // {1, ..., 300}
  EXPECT_TRUE(large.is_tuple());
  EXPECT_EQ(large.arity(), 300u);
  EXPECT_EQ(large.element(0).integer(), 1);
  EXPECT_EQ(large.element(299).integer(), 300);
  EXPECT_FALSE(large.element(300).valid());

  Term empty = sample("empty_tuple");
  EXPECT_TRUE(empty.is_tuple());
  EXPECT_EQ(empty.arity(), 0u);
  EXPECT_FALSE(empty.element(0).valid());
}

TEST(Navigation, OtherKinds) {
  for (const char* m : {"small_map", "large_map"}) {
    EXPECT_FALSE(sample(m).is_tuple());
    EXPECT_FALSE(sample(m).is_list());
    EXPECT_EQ(sample(m).arity(), 0u);
  }
  EXPECT_TRUE(sample("local_pid").is_pid());
  EXPECT_TRUE(sample("remote_pid").is_pid());
  EXPECT_FALSE(sample("reference").is_pid());
  EXPECT_FALSE(sample("port").is_pid());
  EXPECT_FALSE(sample("binary").is_list());
}

TEST(Navigation, Funs) {
  for (const char* f : {"local_fun", "closure"}) {
    Term t = sample(f);
    EXPECT_TRUE(t.is_fun()) << f;
    EXPECT_EQ(t.fun_module(), "ktls_capture") << f;
    EXPECT_FALSE(t.export_function().valid());
  }
  Term e = sample("export_fun");  // fun lists:reverse/1
  EXPECT_TRUE(e.is_fun());
  EXPECT_EQ(e.fun_module(), "lists");
  EXPECT_TRUE(e.export_function().is_atom("reverse"));
  EXPECT_EQ(e.export_function().next().integer(), 1);
  visit([](const std::string& name, const Term& t, const Packet&) {
    if (name == "local_fun") {
      EXPECT_EQ(t.fun_module(), "ktls_capture");
    }
    if (name == "export_fun") {
      EXPECT_TRUE(t.export_function().is_atom("reverse"));
    }
  });
  EXPECT_FALSE(sample("local_pid").fun_module());
}

// --- navigation of bad views -----------------------------------------------------

TEST(Navigation, InvalidViewsAnswerNo) {
  Term none;
  EXPECT_FALSE(none.valid());
  EXPECT_EQ(none.tag(), 0);
  EXPECT_FALSE(none.atom());
  EXPECT_FALSE(none.integer());
  EXPECT_EQ(none.arity(), 0u);
  EXPECT_FALSE(none.element(0).valid());
  EXPECT_TRUE(none.standalone().empty());
  std::vector<uint8_t> out;
  EXPECT_FALSE(none.append_to(out));

  // Headers whose contents are not there.
  const uint8_t tuple[] = {104, 5, 97};
  Term t(Bytes(tuple), 0, {});
  EXPECT_EQ(t.arity(), 5u);
  EXPECT_EQ(t.element(0).integer(), std::nullopt);  // 97 without its byte
  EXPECT_FALSE(t.element(1).valid());
  EXPECT_EQ(t.end(), sizeof tuple);
  const uint8_t atom[] = {118, 0, 9, 'a'};
  EXPECT_FALSE(Term(Bytes(atom), 0, {}).atom());
  const uint8_t ref[] = {82, 0};
  EXPECT_FALSE(Term(Bytes(ref), 0, {}).atom());
  const uint8_t big_list[] = {108, 0xFF, 0xFF, 0xFF, 0xFF, 106};
  Term l(Bytes(big_list), 0, {});
  EXPECT_FALSE(l.list_element(1).valid());
  EXPECT_FALSE(Term(Bytes(big_list), 99, {}).valid());
}

TEST(Walk, OffsetBeyondTheData) {
  const uint8_t b[] = {106};
  size_t pos = 2;
  TermError err;
  EXPECT_FALSE(walk_term(Bytes(b), pos, {}, nullptr, err));
  EXPECT_STREQ(err.what, "offset beyond the message");
  EXPECT_EQ(err.offset, 2u);
}

// Nesting depth costs no stack: a million nested lists.
TEST(Walk, DeepNesting) {
  constexpr size_t kDepth = 1000000;
  std::vector<uint8_t> b;
  b.reserve(kDepth * 6 + 1);
  for (size_t i = 0; i < kDepth; i++) b.insert(b.end(), {108, 0, 0, 0, 1});
  b.push_back(106);
  b.insert(b.end(), kDepth, 106);
  size_t pos = 0;
  TermError err;
  ASSERT_TRUE(walk_term(Bytes(b), pos, {}, nullptr, err)) << err.what;
  EXPECT_EQ(pos, b.size());
}

// Tags OTP 25 no longer sends but still decodes.
TEST(Walk, LegacyTags) {
  struct Case {
    const char* name;
    std::vector<uint8_t> bytes;
  };
  std::vector<uint8_t> flt = {99};
  flt.resize(32, '0');
  const std::vector<Case> cases = {
      {"ATOM_EXT", {100, 0, 2, 'o', 'k'}},
      {"SMALL_ATOM_EXT", {115, 2, 'o', 'k'}},
      {"FLOAT_EXT", flt},
      {"PID_EXT", {103, 115, 1, 'n', 0, 0, 0, 1, 0, 0, 0, 0, 1}},
      {"PORT_EXT", {102, 115, 1, 'n', 0, 0, 0, 1, 1}},
      {"V4_PORT_EXT", {120, 115, 1, 'n', 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1}},
      {"REFERENCE_EXT", {101, 115, 1, 'n', 0, 0, 0, 1, 1}},
      {"NEW_REFERENCE_EXT", {114, 0, 1, 115, 1, 'n', 1, 0, 0, 0, 1}},
      {"FUN_EXT", {117, 0, 0, 0, 0, 88, 115, 1,   'n', 0,   0,  0, 1,  0,
                   0,   0, 0, 0, 0, 0,  1,   115, 1,   'm', 97, 0, 97, 0}},
  };
  for (const Case& c : cases) {
    size_t pos = 0;
    TermError err;
    ASSERT_TRUE(walk_term(Bytes(c.bytes), pos, {}, nullptr, err))
        << c.name << ": " << err.what << " at " << err.offset;
    EXPECT_EQ(pos, c.bytes.size()) << c.name;
    std::vector<uint8_t> out;
    pos = 0;
    ASSERT_TRUE(walk_term(Bytes(c.bytes), pos, {}, &out, err));
    EXPECT_EQ(out, c.bytes) << c.name;
  }
  const std::vector<uint8_t> atom = {100, 0, 2, 'o', 'k'};
  EXPECT_TRUE(Term(Bytes(atom), 0, {}).is_atom("ok"));
}

// BIT_BINARY_EXT as the VM's decoder takes it (external.c: a bit count of
// 0 exactly when there are no bytes, at most 8).
TEST(Walk, BitBinaryBitCountFollowsTheVm) {
  struct Case {
    std::vector<uint8_t> bytes;
    bool ok;
  };
  const std::vector<Case> cases = {
      {{77, 0, 0, 0, 0, 0}, true},     {{77, 0, 0, 0, 1, 3, 0xE0}, true},
      {{77, 0, 0, 0, 1, 8, 1}, true},  {{77, 0, 0, 0, 0, 8}, false},
      {{77, 0, 0, 0, 1, 0, 1}, false}, {{77, 0, 0, 0, 1, 9, 1}, false},
  };
  for (const Case& c : cases) {
    size_t pos = 0;
    TermError err;
    bool ok = walk_term(Bytes(c.bytes), pos, {}, nullptr, err);
    EXPECT_EQ(ok, c.ok) << "bits " << int{c.bytes[5]} << " of " << c.bytes.size() - 6 << " bytes";
    if (ok) {
      EXPECT_EQ(pos, c.bytes.size());
    } else {
      EXPECT_STREQ(err.what, "bad bit count");
      EXPECT_EQ(err.offset, 0u);
    }
  }
}

// A reference with no id words: the VM's decoder reads the first id word
// anyway (external.c dec_term takes r0 before looking at the count), so
// it ends 4 bytes later than the format says, and than any walker that
// follows the count. Checked on OTP 25.2.3: binary_to_term(<<131, 104, 2,
// 90, 0:16, 119, 1, $n, 1:32, 97, 7, 97, 8, 97, 9>>) is {Ref, 9}, where
// the format says {Ref, 7} and four bytes more. OTP never sends such a
// reference; the walker refuses it, so the policy never judges other
// terms than the VM decodes.
TEST(Walk, ReferenceWithoutIdWordsIsRefused) {
  const std::vector<uint8_t> newer = {104, 2, 90, 0,  0, 119, 1, 'n', 0,
                                      0,   0, 1,  97, 7, 97,  8, 97,  9};
  const std::vector<uint8_t> new_ref = {104, 2, 114, 0, 0, 119, 1, 'n', 1, 97, 7, 97, 8, 97, 9};
  for (const std::vector<uint8_t>& b : {newer, new_ref}) {
    size_t pos = 0;
    TermError err;
    EXPECT_FALSE(walk_term(Bytes(b), pos, {}, nullptr, err)) << "walked to " << pos;
    EXPECT_STREQ(err.what, "reference without id words");
    EXPECT_EQ(err.offset, 2u);
  }
}

// LIST_EXT with no elements is, for the VM, its tail: binary_to_term(<<131,
// 108, 0:32, 119, 3, "rex">>) is rex (OTP 25.2.3). Any term could hide in
// one from every is_atom / is_tuple the policy asks; OTP never sends it
// ([] is NIL_EXT), so the walker refuses it.
TEST(Walk, EmptyListExtIsRefused) {
  const std::vector<uint8_t> b = {104, 2, 108, 0, 0, 0, 0, 119, 3, 'r', 'e', 'x', 106};
  size_t pos = 0;
  TermError err;
  EXPECT_FALSE(walk_term(Bytes(b), pos, {}, nullptr, err));
  EXPECT_STREQ(err.what, "LIST_EXT without elements");
  EXPECT_EQ(err.offset, 2u);
}

// A list whose tail is a list is one list for the VM: [a | [b, c]] in two
// LIST_EXT decodes as [a, b, c], [1 | "ab"] as [1, 97, 98] (OTP 25.2.3).
// OTP's encoder never splits a list; the policy, which counts a list's
// elements from its LIST_EXT header, would miss the rest, so the walker
// refuses the split. An improper tail that is no list stays fine.
TEST(Walk, ListWhoseTailIsAListIsRefused) {
  struct Case {
    std::vector<uint8_t> bytes;
    size_t tail_at;
  };
  const std::vector<Case> cases = {
      {{108, 0, 0, 0, 1, 119, 1, 'a', 108, 0, 0, 0, 2, 119, 1, 'b', 119, 1, 'c', 106}, 8},
      {{108, 0, 0, 0, 1, 97, 1, 107, 0, 2, 'a', 'b'}, 7},
      // Nested: the inner list is fine, the outer one's tail is split.
      {{108, 0, 0, 0, 1, 108, 0, 0, 0, 1, 97, 1, 106, 108, 0, 0, 0, 1, 97, 2, 106}, 13},
  };
  for (const Case& c : cases) {
    size_t pos = 0;
    TermError err;
    EXPECT_FALSE(walk_term(Bytes(c.bytes), pos, {}, nullptr, err));
    EXPECT_STREQ(err.what, "list tail is a list");
    EXPECT_EQ(err.offset, c.tail_at);
  }
  const std::vector<uint8_t> improper = {108, 0, 0, 0, 1, 119, 1, 'a', 119, 1, 'b'};
  const std::vector<uint8_t> nested = {108, 0,  0, 0,   2,   108, 0, 0,   0,
                                       1,   97, 1, 106, 107, 0,   1, 'x', 106};  // [[1], "x"]
  for (const std::vector<uint8_t>& b : {improper, nested}) {
    size_t pos = 0;
    TermError err;
    EXPECT_TRUE(walk_term(Bytes(b), pos, {}, nullptr, err)) << err.what;
    EXPECT_EQ(pos, b.size());
  }
}

// Lists nested deeper than the walker keeps inline.
TEST(Walk, ListsNestedDeeply) {
  constexpr size_t kDepth = 100;
  std::vector<uint8_t> ok, split;
  for (size_t i = 0; i < kDepth; i++) ok.insert(ok.end(), {108, 0, 0, 0, 1});
  ok.push_back(106);
  split = ok;
  ok.insert(ok.end(), kDepth, 106);
  // The outermost list's tail a list: found after 99 inner tails.
  split.insert(split.end(), kDepth - 1, 106);
  split.insert(split.end(), {108, 0, 0, 0, 1, 106, 106});
  size_t pos = 0;
  TermError err;
  EXPECT_TRUE(walk_term(Bytes(ok), pos, {}, nullptr, err)) << err.what;
  EXPECT_EQ(pos, ok.size());
  pos = 0;
  EXPECT_FALSE(walk_term(Bytes(split), pos, {}, nullptr, err));
  EXPECT_STREQ(err.what, "list tail is a list");
  EXPECT_EQ(err.offset, kDepth * 5 + 1 + kDepth - 1);
}

TEST(Walk, CacheReferencesAreResolvedWhenTranscoding) {
  const std::string_view texts[] = {"hello", "world"};
  const uint8_t b[] = {104, 2, 82, 1, 82, 0};
  std::vector<uint8_t> out;
  size_t pos = 0;
  TermError err;
  ASSERT_TRUE(walk_term(Bytes(b), pos, AtomRefs(texts), &out, err));
  const std::vector<uint8_t> want = {104, 2,   119, 5,   'w', 'o', 'r', 'l',
                                     'd', 119, 5,   'h', 'e', 'l', 'l', 'o'};
  EXPECT_EQ(out, want);
  Term t(Bytes(b), 0, AtomRefs(texts));
  EXPECT_TRUE(t.element(0).is_atom("world"));
  EXPECT_TRUE(t.element(1).is_atom("hello"));
  pos = 0;
  EXPECT_FALSE(walk_term(Bytes(b), pos, AtomRefs(texts).first(1), nullptr, err));
  EXPECT_STREQ(err.what, "atom cache reference out of range");
  EXPECT_EQ(err.offset, 2u);
}

// --- encoders ---------------------------------------------------------------

TEST(Encode, IntegersRoundTrip) {
  for (int64_t v : {int64_t{0}, int64_t{255}, int64_t{256}, int64_t{-1}, int64_t{INT32_MIN},
                    int64_t{INT32_MAX}}) {
    std::vector<uint8_t> b;
    enc::integer(b, v);
    EXPECT_EQ(Term(Bytes(b), 0, {}).integer(), v);
    size_t pos = 0;
    TermError err;
    EXPECT_TRUE(walk_term(Bytes(b), pos, {}, nullptr, err));
    EXPECT_EQ(pos, b.size());
  }
  for (int64_t v : {int64_t{1} << 40, -(int64_t{1} << 40), INT64_MIN, INT64_MAX}) {
    std::vector<uint8_t> b;
    enc::integer(b, v);
    EXPECT_EQ(b[0], tag::kSmallBig);
    size_t pos = 0;
    TermError err;
    EXPECT_TRUE(walk_term(Bytes(b), pos, {}, nullptr, err));
    EXPECT_EQ(pos, b.size());
  }
}

TEST(Encode, Atoms) {
  std::vector<uint8_t> b;
  enc::atom(b, std::string(300, 'x'));
  EXPECT_EQ(b[0], tag::kAtomUtf8);
  EXPECT_EQ(Term(Bytes(b), 0, {}).atom(), std::string(300, 'x'));
  b.clear();
  enc::atom(b, "");
  EXPECT_EQ(b, (std::vector<uint8_t>{tag::kSmallAtomUtf8, 0}));
}

}  // namespace
}  // namespace ktls::filter
