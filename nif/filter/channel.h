// One inbound dist channel as the filter sees it: the receiving side of the
// atom cache, open fragment sequences, statistics, and the decision for each
// dist packet (the bytes of one 4-byte-framed packet, without the length).
//
// A Channel is used by one thread at a time (the carrier thread that
// receives for the connection); its counters may be read from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "nif/filter/control.h"
#include "nif/filter/etf.h"
#include "nif/filter/policy.h"

namespace ktls::filter {

inline constexpr size_t kAtomCacheSize = 2048;  // ERTS_ATOM_CACHE_SIZE in OTP 25
// Processes per channel whose look-up an answer can serve (Verdict::resolve_slot).
inline constexpr size_t kResolveSlots = 16;

struct ControlCounters {
  std::atomic<uint64_t> seen{0}, kept{0}, dropped{0};
};

// Counters of one channel, and (summed) of the whole node.
struct Stats {
  std::atomic<uint64_t> packets{0};   // dist packets in (ticks excluded)
  std::atomic<uint64_t> bytes{0};     // their bytes
  std::atomic<uint64_t> messages{0};  // whole messages (after reassembly)
  std::atomic<uint64_t> kept{0};
  std::atomic<uint64_t> dropped{0};
  std::atomic<uint64_t> rewritten{0};      // refused spawn requests answered
  std::atomic<uint64_t> redirected{0};     // spawn requests sent to the handler's init
  std::atomic<uint64_t> asked{0};          // unsafe messages handed to the handler
  std::atomic<uint64_t> resolved{0};       // look-ups of receivers by the input process
  std::atomic<uint64_t> new_atoms{0};      // atoms the node did not have yet
  std::atomic<uint64_t> atoms_refused{0};  // messages dropped for the atom budget
  std::atomic<uint64_t> would_drop{0};     // monitor mode: kept, policy said drop
  std::atomic<uint64_t> uninspected{0};    // passed while inspection was off
  std::atomic<uint64_t> fragments{0};      // fragment packets
  std::atomic<uint64_t> fragmented{0};     // messages that came in fragments
  std::atomic<uint64_t> too_large{0};      // dropped by the size limits
  std::atomic<uint64_t> atom_cache_writes{0};
  std::atomic<uint64_t> errors{0};  // malformed input: channel closed
  std::array<ControlCounters, kControlCount> control;
  // Every counter above but `control`, for code that walks them all.
  static constexpr std::array kCounters = {
      &Stats::packets,           &Stats::bytes,     &Stats::messages,      &Stats::kept,
      &Stats::dropped,           &Stats::rewritten, &Stats::redirected,    &Stats::asked,
      &Stats::resolved,          &Stats::new_atoms, &Stats::atoms_refused, &Stats::would_drop,
      &Stats::uninspected,       &Stats::fragments, &Stats::fragmented,    &Stats::too_large,
      &Stats::atom_cache_writes, &Stats::errors};

  // Adds n to a counter (relaxed: counters are read, never synchronized on).
  static void add(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.fetch_add(n, std::memory_order_relaxed);
  }
  // Adds n to a counter that only one thread writes: a load and a store,
  // no locked read-modify-write (readers on other threads still see whole
  // values). The filter counts several of these per message.
  static void bump(std::atomic<uint64_t>& c, uint64_t n = 1) {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
};
// A counter added to Stats but not to kCounters would be missing from the
// node-wide sums.
static_assert(sizeof(Stats) == Stats::kCounters.size() * sizeof(std::atomic<uint64_t>) +
                                   sizeof(std::array<ControlCounters, kControlCount>));

// Where reassembled messages live. By default malloc; the NIF points this at
// ERTS binaries (before the first Channel exists) so that a reassembled
// message becomes an Erlang binary without a copy. `release` receives what
// `allocate` returned; allocate throws std::bad_alloc when it fails.
struct MessageStorage {
  void* (*allocate)(size_t bytes);
  void (*release)(void* p, size_t bytes);
};
void set_message_storage(MessageStorage storage);
const MessageStorage& message_storage();

template <class T>
struct MessageAllocator {
  using value_type = T;
  MessageAllocator() = default;
  template <class U>
  MessageAllocator(const MessageAllocator<U>&) {}  // NOLINT: rebinding
  T* allocate(size_t n) { return static_cast<T*>(message_storage().allocate(n * sizeof(T))); }
  // resize() leaves new bytes uninitialized (they are overwritten at once).
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... A>
  void construct(U* p, A&&... a) {
    ::new (static_cast<void*>(p)) U(std::forward<A>(a)...);
  }
  void deallocate(T* p, size_t n) { message_storage().release(p, n * sizeof(T)); }
  friend bool operator==(const MessageAllocator&, const MessageAllocator&) { return true; }
};
// The bytes of a reassembled message.
// Append with append() (one memcpy): with a custom allocator the standard
// library copies element by element.
using MessageBuffer = std::vector<uint8_t, MessageAllocator<uint8_t>>;
inline void append(MessageBuffer& b, Bytes bytes) {
  const size_t at = b.size();
  b.resize(at + bytes.size());
  if (!bytes.empty()) std::memcpy(b.data() + at, bytes.data(), bytes.size());
}

// Node-wide counters: adds the sum over every channel that ever existed
// (live ones and closed ones) to `out`. Any thread.
void world_stats(Stats& out);
// Node-wide count of channel errors (connections closed for malformed
// input) by reason, e.g. {"truncated term", 2}.
std::vector<std::pair<std::string, uint64_t>> error_reasons();

// What the caller does with one packet.
// In every case but Close, `prefix` (when not empty) is delivered first: it
// carries atom-cache writes of a held or dropped message to the VM.
enum class Action : uint8_t {
  Keep,  // deliver the packet (or `bytes` when `replaced`)
  Drop,  // deliver `bytes` when not empty (a rewritten message), else nothing
  Hold,  // fragment held until its sequence is complete
  Ask,   // the handler decides: Keep as above, or Drop with `drop_bytes`
  // The receiver (`resolve`, a process of this node) must be looked up: its
  // role decides, as Ask does between keep and `drop_bytes` (`safe_roles`:
  // kept; `drop_roles`: dropped; other roles: unsafe, the handler's say).
  // `resolve_slot` says where the caller keeps the answer (see Verdict).
  Resolve,
  Close,  // malformed: close the connection, `error` says why and where
};

struct Verdict {
  Action action = Action::Keep;
  bool replaced = false;
  std::vector<uint8_t> prefix;
  std::vector<uint8_t> bytes;
  // A reassembled message kept as it arrived: when not empty it is the
  // replacement (instead of `bytes`), in message storage. The caller may
  // take it (std::move); otherwise it is reused.
  MessageBuffer whole;
  std::vector<uint8_t> drop_bytes;
  PidId resolve;
  uint16_t safe_roles = 0, drop_roles = 0;
  // With Resolve: the caller keeps the answer for `resolve` in slot
  // `resolve_slot` (< kResolveSlots). `resolve_reuse`: an earlier Resolve of
  // this channel asked about the same process in that slot, and its answer
  // (unless the process was gone) decides this message too, without a
  // look-up of its own. Answers are applied in the channel's order, so the
  // earlier one is known by then.
  uint8_t resolve_slot = 0;
  bool resolve_reuse = false;
  Hint hint = Hint::Safe;
  const char* reason = "";
  // The message (views valid until the next inspect), for handler and loggers.
  Message message;
  bool decoded = false;
  std::string error;

  // What Keep / Ask with `replaced` deliver.
  Bytes replacement() const {
    return whole.empty() ? Bytes(bytes.data(), bytes.size()) : Bytes(whole.data(), whole.size());
  }
};

// This node, for the messages the filter writes itself.
struct LocalNode {
  std::string name;
  uint32_t creation = 0;
};

class Channel final : private AtomSink {
 public:
  Channel(std::shared_ptr<const Policy> policy, LocalNode local);
  ~Channel();

  // The node at the other end. The VM sends the spawn reply of an answer
  // the filter writes for a refused call (see Refusal) over this channel to
  // the caller, and the peer's VM takes a reply to a pid that is not its own
  // for an invalid message and drops the connection: so with a peer set,
  // only callers on the peer are answered. Empty: any caller not local.
  void set_peer(std::string node) { peer_ = std::move(node); }

  // Where the channel looks up receivers and atoms (not owned; it must
  // outlive the channel). StaticDirectory when not set.
  void set_directory(const Directory* d) { dir_ = d; }

  // Replaces the policy (next packet on).
  void set_policy(std::shared_ptr<const Policy> policy) { policy_ = std::move(policy); }
  const Policy& policy() const { return *policy_; }

  // Decides about one dist packet. `v` is reused between calls. Running out
  // of memory is a Close verdict ("out of memory"), never an exception.
  void inspect(Bytes packet, Verdict& v);

  // After a batch of inspect() calls whose verdicts were used: gives back
  // the storage of the last reassembled message (a large refused message
  // is not held until the connection's next packet). The last verdict's
  // message views are invalid afterwards.
  void end_batch();

  // Counts the handler's answer for a message inspect() returned as Ask,
  // or the outcome of a Resolve (`would_drop`: kept in monitor mode only).
  // Any thread.
  void record_answer(const ControlInfo* c, bool kept, bool would_drop = false);

  const Stats& stats() const { return stats_; }
  // The receiving atom cache: slots in use and their texts.
  std::vector<std::pair<uint16_t, std::string>> atom_cache() const;
  size_t open_sequences() const { return seqs_.size(); }
  uint64_t reassembly_bytes() const { return held_bytes_; }
  uint64_t reserved_bytes() const { return reserved_bytes_; }
  // "header" (atom cache / fragments negotiated), "pass_through" or
  // "unknown" until the first message.
  const char* framing() const;

 private:
  struct Header;
  struct Sequence;

  void count(std::atomic<uint64_t> Stats::*field, uint64_t n = 1);
  void count_control(const ControlInfo* c, bool kept);
  bool parse_header(Bytes p, size_t& pos, Verdict& v);
  bool decode(Bytes body, size_t pos, AtomRefs refs, bool versioned, Message& m, Verdict& v);
  void decide(Bytes p, size_t header_end, size_t body_pos, bool versioned, Verdict& v);
  void judge(const Message& m, Bytes header, bool header_writes, Verdict& v);
  // The receiver's role; `pid` is set to the process looked up.
  Role role_for(const Destination& d, std::optional<PidId>& pid) const;
  // Whether `text` is an atom the node does not have; counts it against
  // the budgets, and false when they are spent (`refused` then).
  bool admit_atom(std::string_view text, bool latin1);
  void inline_atom(std::string_view text, bool latin1) override;
  // The current packet's header as the VM must see it: 131 'D' and the
  // references, refused atoms replaced (see parse_header).
  void encode_header(std::vector<uint8_t>& out) const;
  void first_fragment(Bytes p, Verdict& v);
  void continuation(Bytes p, Verdict& v);
  // The size limit a fragmented message breaks (see channel.cc), or null.
  const char* limit_broken(uint64_t message, uint64_t more) const;
  void finish(Sequence& s, Verdict& v);
  void release(Sequence& s);
  void carrier_for(Bytes header, std::vector<uint8_t>& out);
  // Rewrites a spawn request to spawn ktls_filter_handler:spawn_request_denied/1
  // (refused) or, with `redirect`, ktls_filter_handler:spawn_request_init/4.
  void rewrite_spawn_request(Bytes header, const Message& m, bool redirect,
                             std::vector<uint8_t>& out);
  // False (and `out` untouched or cleared) when there is no answer to write.
  bool answer_refusal(Bytes header, const Refusal& r, std::vector<uint8_t>& out);
  void answer_discarded(Sequence& s);
  bool fail(Verdict& v, const char* what, size_t offset, const ControlInfo* c = nullptr);

  void inspect_packet(Bytes packet, Verdict& v);

  std::shared_ptr<const Policy> policy_;
  const Directory* dir_;
  LocalNode local_;
  uint64_t new_atoms_ = 0;
  bool atoms_refused_ = false;  // the current message brought atoms over budget
  bool broken_ = false;         // an allocation failed: every packet closes
  std::string peer_;
  enum class Framing : uint8_t { Unknown, Header, PassThrough } framing_ = Framing::Unknown;

  // The peer's atom cache, made at its first write: peers that never use
  // one (erl_interface nodes, many idle connections) do not pay its ~80 KiB.
  struct AtomCache {
    std::array<std::string, kAtomCacheSize> text;
    std::array<bool, kAtomCacheSize> set{};
    std::array<uint64_t, kAtomCacheSize> serial{};  // write counter at last write
  };
  mutable std::mutex cache_mu_;  // cache_ (pointer and contents) against atom_cache()
  std::unique_ptr<AtomCache> cache_;
  uint64_t serial_ = 0;
  // The current packet's references: texts and cache slots.
  std::vector<std::string> ref_texts_;
  std::vector<std::string_view> refs_;
  std::vector<uint16_t> ref_slots_;
  bool ref_new_ = false;              // the current header wrote to the cache
  std::vector<bool> ref_written_;     // which of its references wrote
  bool header_rewritten_ = false;     // a refused atom was replaced in the header
  std::vector<uint8_t> header_copy_;  // encode_header() of such a header

  std::unordered_map<uint64_t, std::unique_ptr<Sequence>> seqs_;  // by sequence id
  // Set by decode(): in monitor mode, why the payload did not decode.
  TermError payload_error_;
  void keep_undecodable(const Message& m, Verdict& v);
  std::unique_ptr<Sequence> last_done_;  // keeps Verdict::message valid
  // Reassembly buffers kept for reuse: a fresh large allocation per
  // fragmented message costs page faults (glibc maps and unmaps them).
  std::vector<MessageBuffer> spare_;
  MessageBuffer take_buffer();
  void recycle(MessageBuffer&& b);
  // Reassembly memory: bodies received and the headers of open sequences
  // (held), and what their buffers reserved up front (reserved); both are
  // bounded by max_reassembly_bytes, whatever the number of sequences.
  uint64_t held_bytes_ = 0;
  uint64_t reserved_bytes_ = 0;
  // Processes this channel asked to look up, by answer slot: a burst to a
  // process spawned a moment ago reuses the first answer (Verdict). Replaced
  // round robin; `generation` is the directory's when asked.
  struct Lookup {
    PidId pid;
    uint64_t generation = 0;
    bool used = false;
  };
  std::array<Lookup, kResolveSlots> lookups_{};
  uint8_t next_lookup_ = 0;
  // The answer slot for a look-up of `pid`: an earlier one (`reuse`) or a new one.
  uint8_t lookup_slot(const PidId& pid, bool& reuse);
  Stats stats_;
};

}  // namespace ktls::filter
