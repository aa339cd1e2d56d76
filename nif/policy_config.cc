#include "nif/policy_config.h"

#include <atomic>
#include <mutex>
#include <utility>
#include <vector>

#include "nif/loggers.h"
#include "nif/nif_terms.h"

namespace ktls::nif {
namespace {

struct PolicyState {
  std::mutex mu;
  std::shared_ptr<const filter::Policy> policy = std::make_shared<filter::Policy>();
  std::shared_ptr<const filter::Policy> trusted;  // policy_for(true), made on demand
  std::atomic<uint64_t> generation{1};
  std::atomic<uint64_t> inspect_switches{0};
  std::atomic<uint64_t> mode_switches{0};
};
PolicyState& policy_state() {
  static PolicyState s;
  return s;
}

bool get_atom_text(ErlNifEnv* env, ERL_NIF_TERM t, std::string* out) {
  unsigned len;
  if (!enif_get_atom_length(env, t, &len, ERL_NIF_LATIN1)) return false;
  out->resize(len + 1);
  if (!enif_get_atom(env, t, out->data(), len + 1, ERL_NIF_LATIN1)) return false;
  out->resize(len);
  return true;
}

bool get_u64(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, uint64_t* out, bool* present) {
  ERL_NIF_TERM v;
  *present = enif_get_map_value(env, map, make_atom(env, key), &v);
  if (!*present) return true;
  ErlNifUInt64 u;
  if (!enif_get_uint64(env, v, &u)) return false;
  *out = u;
  return true;
}

}  // namespace

std::shared_ptr<const filter::Policy> current_policy() {
  PolicyState& s = policy_state();
  std::lock_guard lock(s.mu);
  return s.policy;
}

uint64_t policy_generation() { return policy_state().generation.load(std::memory_order_acquire); }

std::shared_ptr<const filter::Policy> policy_for(bool trusted) {
  if (!trusted) return current_policy();
  PolicyState& s = policy_state();
  std::lock_guard lock(s.mu);
  if (!s.trusted) {
    auto p = std::make_shared<filter::Policy>(*s.policy);
    if (p->mode == filter::Mode::Enforce) {
      // Nothing is dropped for what it asks, but memory stays bounded.
      p->mode = filter::Mode::Monitor;
      p->limits_in_monitor = true;
    }
    p->handler = false;
    p->handler_spawn_init = false;
    s.trusted = std::move(p);
  }
  return s.trusted;
}

bool configure_policy(ErlNifEnv* env, ERL_NIF_TERM map, std::string* bad) {
  PolicyState& s = policy_state();
  auto p = std::make_shared<filter::Policy>(*current_policy());
  ERL_NIF_TERM v;
  bool present;
  if (enif_get_map_value(env, map, make_atom(env, "deep_packet_inspection"), &v)) {
    if (enif_is_identical(v, atoms.true_)) {
      p->inspect = true;
    } else if (enif_is_identical(v, atoms.false_)) {
      p->inspect = false;
    } else {
      *bad = "deep_packet_inspection";
      return false;
    }
  }
  if (enif_get_map_value(env, map, make_atom(env, "filter_mode"), &v)) {
    std::string m;
    get_atom_text(env, v, &m);
    if (m == "enforce") {
      p->mode = filter::Mode::Enforce;
    } else if (m == "monitor") {
      p->mode = filter::Mode::Monitor;
    } else if (m == "off") {
      p->mode = filter::Mode::Off;
    } else {
      *bad = "filter_mode";
      return false;
    }
  }
  uint64_t u = 0;
  if (!get_u64(env, map, "max_message_size", &u, &present)) return *bad = "max_message_size", false;
  if (present) p->max_message_size = u;
  if (!get_u64(env, map, "max_reassembly_bytes", &u, &present)) {
    return *bad = "max_reassembly_bytes", false;
  }
  if (present) p->max_reassembly_bytes = u;
  if (!get_u64(env, map, "max_open_fragments", &u, &present)) {
    return *bad = "max_open_fragments", false;
  }
  if (present) p->max_open_fragments = static_cast<uint32_t>(u);
  for (auto [key, field] :
       {std::pair{"max_global_message_size", &filter::Policy::max_global_message_size},
        std::pair{"max_new_atoms_per_connection", &filter::Policy::max_new_atoms_per_connection},
        std::pair{"max_new_atoms", &filter::Policy::max_new_atoms}}) {
    if (!get_u64(env, map, key, &u, &present)) return *bad = key, false;
    if (present) (*p).*field = u;
  }
  if (enif_get_map_value(env, map, make_atom(env, "allow_mfa"), &v)) {
    std::vector<filter::Mfa> mfas;
    ERL_NIF_TERM head, tail = v;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
      const ERL_NIF_TERM* e;
      int n;
      filter::Mfa mfa;
      if (!enif_get_tuple(env, head, &n, &e) || n != 3 || !get_atom_text(env, e[0], &mfa.module)) {
        return *bad = "allow_mfa", false;
      }
      std::string f;
      if (!get_atom_text(env, e[1], &f)) return *bad = "allow_mfa", false;
      mfa.function = f == "_" ? "" : f;
      int arity;
      std::string a;
      if (enif_get_int(env, e[2], &arity)) {
        mfa.arity = arity;
      } else if (get_atom_text(env, e[2], &a) && a == "_") {
        mfa.arity = -1;
      } else {
        return *bad = "allow_mfa", false;
      }
      mfas.push_back(std::move(mfa));
    }
    p->allow_mfa = std::move(mfas);
  }
  if (enif_get_map_value(env, map, make_atom(env, "allow_reg_names"), &v)) {
    std::vector<std::string> names;
    ERL_NIF_TERM head, tail = v;
    while (enif_get_list_cell(env, tail, &head, &tail)) {
      std::string n;
      if (!get_atom_text(env, head, &n)) return *bad = "allow_reg_names", false;
      names.push_back(std::move(n));
    }
    p->allow_reg_names = std::move(names);
  }
  if (enif_get_map_value(env, map, make_atom(env, "handler"), &v)) {
    p->handler = !enif_is_identical(v, atoms.undefined) && enif_is_atom(env, v);
  }
  if (enif_get_map_value(env, map, make_atom(env, "handler_spawn_init"), &v)) {
    p->handler_spawn_init = enif_is_identical(v, atoms.true_);
  }
  if (enif_get_map_value(env, map, make_atom(env, "logger_capacity"), &v)) {
    ErlNifUInt64 cap;
    if (!enif_get_uint64(env, v, &cap)) return *bad = "logger_capacity", false;
    set_logger_capacity(cap);
  }
  std::lock_guard lock(s.mu);
  if (p->inspect != s.policy->inspect) s.inspect_switches++;
  if (p->mode != s.policy->mode) s.mode_switches++;
  s.policy = std::move(p);
  s.trusted.reset();
  s.generation.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

uint64_t policy_inspect_switches() { return policy_state().inspect_switches; }

uint64_t policy_mode_switches() { return policy_state().mode_switches; }

}  // namespace ktls::nif
