#include "nif/process_directory.h"

#include <array>
#include <atomic>
#include <string>
#include <vector>

#include "nif/nif_terms.h"

namespace ktls::nif {
namespace {

// Roles of looked-up processes: a direct-mapped table of one word per slot
// (id, serial and role packed), read and written without locks. A pid is
// not reused while the node runs (ERTS numbers processes from a counter
// that would have to wrap 2^28 spawns first), so an entry never turns
// wrong; a collision only evicts, and the next message asks again.
constexpr size_t kSlots = 1u << 16;
std::array<std::atomic<uint64_t>, kSlots> role_cache{};
// Bumped by forget_all(): answers from before it serve no later message.
std::atomic<uint64_t> role_generation{0};

size_t slot_of(const filter::PidId& p) {
  uint64_t h = (uint64_t{p.id} << 24 | p.serial) * 0x9E3779B97F4A7C15ull;
  return static_cast<size_t>(h >> 48) & (kSlots - 1);
}

// 0 is an empty slot: roles start at 1 in the packed word.
uint64_t pack(const filter::PidId& p, filter::Role r) {
  return uint64_t{p.id} << 32 | uint64_t{p.serial & 0xFFFFFF} << 8 | static_cast<uint64_t>(r);
}

// UTF-8 text as Latin-1 (what enif_make_existing_atom_len takes in OTP 25);
// false when a character is beyond U+00FF or the text is not UTF-8.
bool utf8_to_latin1(std::string_view in, std::string* out) {
  out->clear();
  for (size_t i = 0; i < in.size(); i++) {
    const auto c = static_cast<uint8_t>(in[i]);
    if (c < 0x80) {
      out->push_back(static_cast<char>(c));
    } else if ((c == 0xC2 || c == 0xC3) && i + 1 < in.size() &&
               (static_cast<uint8_t>(in[i + 1]) & 0xC0) == 0x80) {
      out->push_back(
          static_cast<char>(((c & 0x03) << 6) | (static_cast<uint8_t>(in[i + 1]) & 0x3F)));
      i++;
    } else {
      return false;
    }
  }
  return true;
}

bool ascii(std::string_view t) {
  for (char c : t) {
    if (static_cast<uint8_t>(c) >= 0x80) return false;
  }
  return true;
}

}  // namespace

filter::Role ProcessDirectory::role_of(const filter::PidId& pid) const {
  if (pid.serial > 0xFFFFFF) return filter::Role::Unknown;
  const uint64_t w = role_cache[slot_of(pid)].load(std::memory_order_acquire);
  // An empty slot has role bits 0, which is Unknown.
  if ((w & ~uint64_t{0xFF}) != pack(pid, filter::Role::Unknown)) return filter::Role::Unknown;
  return static_cast<filter::Role>(w & 0xFF);
}

std::optional<filter::PidId> ProcessDirectory::whereis(std::string_view name) const {
  std::string latin1;
  std::string_view text = name;
  if (!ascii(name)) {
    if (!utf8_to_latin1(name, &latin1)) return std::nullopt;
    text = latin1;
  }
  ERL_NIF_TERM atom;
  if (!enif_make_existing_atom_len(env_, text.data(), text.size(), &atom, ERL_NIF_LATIN1)) {
    return std::nullopt;  // no such atom: nobody can be registered under it
  }
  ErlNifPid pid;
  if (!enif_whereis_pid(env_, atom, &pid)) return std::nullopt;
  if (has_last_ && enif_compare_pids(&pid, &last_pid_) == 0) return last_id_;
  filter::PidId id;
  if (!local_pid_id(env_, enif_make_pid(env_, &pid), &id)) return std::nullopt;
  last_pid_ = pid;
  last_id_ = id;
  has_last_ = true;
  return id;
}

bool ProcessDirectory::atom_exists(std::string_view text, bool latin1) const {
  std::string buf;
  if (!latin1 && !ascii(text)) {
    // An atom beyond Latin-1 cannot be looked up through the NIF API of
    // OTP 25: it counts as new (rare outside such names).
    if (!utf8_to_latin1(text, &buf)) return false;
    text = buf;
  }
  ERL_NIF_TERM atom;
  return enif_make_existing_atom_len(env_, text.data(), text.size(), &atom, ERL_NIF_LATIN1) != 0;
}

void ProcessDirectory::learn(const filter::PidId& pid, filter::Role role) {
  if (role == filter::Role::Unknown || role == filter::Role::Gone || pid.serial > 0xFFFFFF) return;
  role_cache[slot_of(pid)].store(pack(pid, role), std::memory_order_release);
}

void ProcessDirectory::forget_all() {
  role_generation.fetch_add(1, std::memory_order_acq_rel);
  for (auto& w : role_cache) w.store(0, std::memory_order_relaxed);
}

uint64_t ProcessDirectory::generation() const {
  return role_generation.load(std::memory_order_acquire);
}

bool local_pid_id(ErlNifEnv* env, ERL_NIF_TERM pid, filter::PidId* out) {
  ErlNifPid p;
  if (!enif_get_local_pid(env, pid, &p)) return false;
  ErlNifBinary bin;
  if (!enif_term_to_binary(env, pid, &bin)) return false;
  filter::Term t(filter::Bytes(bin.data, bin.size), 1, {});
  auto parts = t.pid_parts();
  if (parts) *out = filter::PidId{parts->id, parts->serial, parts->creation};
  enif_release_binary(&bin);
  return parts.has_value();
}

ERL_NIF_TERM make_local_pid(ErlNifEnv* env, std::string_view node, const filter::PidId& pid) {
  std::vector<uint8_t> b = {filter::tag::kVersion};
  filter::enc::pid(b, node, pid.id, pid.serial, pid.creation);
  ERL_NIF_TERM t;
  if (enif_binary_to_term(env, b.data(), b.size(), &t, 0) == 0) return atoms.undefined;
  return t;
}

ERL_NIF_TERM nif_learn_role(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  filter::PidId id;
  char name[32];
  if (!local_pid_id(env, argv[0], &id) ||
      enif_get_atom(env, argv[1], name, sizeof name, ERL_NIF_LATIN1) <= 0) {
    return enif_make_badarg(env);
  }
  auto role = filter::role_from_name(name);
  if (!role) return enif_make_badarg(env);
  ProcessDirectory::learn(id, *role);
  return atoms.ok;
}

ERL_NIF_TERM nif_forget_roles(ErlNifEnv*, int, const ERL_NIF_TERM[]) {
  ProcessDirectory::forget_all();
  return atoms.ok;
}

}  // namespace ktls::nif
