#include "nif/options.h"

#include <chrono>
#include <limits>
#include <utility>
#include <vector>

#include "nif/loggers.h"
#include "nif/nif_terms.h"

namespace ktls::nif::options {

namespace {

enum class Kind : uint8_t { U64, Bool, Atom, Custom };

struct Entry {
  const char* key;
  Group group;
  Kind kind;
  // U64: accepted range.
  uint64_t min = 0;
  uint64_t max = std::numeric_limits<uint64_t>::max();
  // Atom: the accepted names; the value is the index of the one given.
  std::vector<const char*> names = {};
  // U64, Bool, Atom: stores and reads back the value.
  void (*set)(Targets&, uint64_t) = nullptr;
  uint64_t (*get)(const Targets&) = nullptr;
  // Custom: reads the term (false with `why`) / shows the C++ default.
  bool (*parse)(ErlNifEnv*, ERL_NIF_TERM, Targets&, std::string* why) = nullptr;
  ERL_NIF_TERM (*show)(ErlNifEnv*, const Targets&) = nullptr;
  // Computed by ktls_filter_config, not an entry of its table.
  bool derived = false;
};

bool get_atom_text(ErlNifEnv* env, ERL_NIF_TERM t, std::string* out) {
  unsigned len;
  if (!enif_get_atom_length(env, t, &len, ERL_NIF_LATIN1)) return false;
  out->resize(len + 1);
  if (!enif_get_atom(env, t, out->data(), len + 1, ERL_NIF_LATIN1)) return false;
  out->resize(len);
  return true;
}

bool parse_mfas(ErlNifEnv* env, ERL_NIF_TERM v, Targets& t, std::string* why) {
  std::vector<filter::Mfa> mfas;
  ERL_NIF_TERM head, tail = v;
  while (enif_get_list_cell(env, tail, &head, &tail)) {
    const ERL_NIF_TERM* e;
    int n;
    filter::Mfa mfa;
    std::string f, a;
    int arity;
    if (!enif_get_tuple(env, head, &n, &e) || n != 3 || !get_atom_text(env, e[0], &mfa.module) ||
        !get_atom_text(env, e[1], &f)) {
      return *why = "not a list of {Module, Function, Arity}", false;
    }
    mfa.function = f == "_" ? "" : f;
    if (enif_get_int(env, e[2], &arity) && arity >= 0 && arity <= 255) {
      mfa.arity = arity;
    } else if (get_atom_text(env, e[2], &a) && a == "_") {
      mfa.arity = -1;
    } else {
      return *why = "arity not 0..255 or '_'", false;
    }
    mfas.push_back(std::move(mfa));
  }
  if (!enif_is_empty_list(env, tail)) return *why = "not a proper list", false;
  t.policy->allow_mfa = std::move(mfas);
  return true;
}

bool parse_names(ErlNifEnv* env, ERL_NIF_TERM v, Targets& t, std::string* why) {
  std::vector<std::string> names;
  ERL_NIF_TERM head, tail = v;
  while (enif_get_list_cell(env, tail, &head, &tail)) {
    std::string n;
    if (!get_atom_text(env, head, &n)) return *why = "not a list of atoms", false;
    names.push_back(std::move(n));
  }
  if (!enif_is_empty_list(env, tail)) return *why = "not a proper list", false;
  t.policy->allow_reg_names = std::move(names);
  return true;
}

bool parse_handler(ErlNifEnv* env, ERL_NIF_TERM v, Targets& t, std::string* why) {
  if (!enif_is_atom(env, v)) return *why = "not a module name or undefined", false;
  t.policy->handler = !enif_is_identical(v, atoms.undefined);
  return true;
}

ERL_NIF_TERM show_list(ErlNifEnv* env, size_t n) {
  return n == 0 ? enif_make_list(env, 0) : make_atom(env, "derived");
}

constexpr uint64_t kU32 = std::numeric_limits<uint32_t>::max();

// Every option the NIF reads, in one place. Ranges are what the C++ side
// can hold; ktls_filter_config checks the types users see first.
const std::vector<Entry>& entries() {
  static const std::vector<Entry> table = {
      // Carrier (start only).
      {.key = "ring_entries",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .max = 32768,
       .set = [](Targets& t, uint64_t v) { t.carrier->ring_entries = static_cast<unsigned>(v); },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->ring_entries; }},
      {.key = "ring_spin_us",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .max = 1000000,
       .set = [](Targets& t, uint64_t v) { t.carrier->spin = std::chrono::microseconds(v); },
       .get = [](const Targets& t) -> uint64_t {
         return static_cast<uint64_t>(t.carrier->spin.count());
       }},
      {.key = "buffer_size",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .max = kU32,
       .set = [](Targets& t, uint64_t v) { t.carrier->pool.buffer_size = v; },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->pool.buffer_size; }},
      {.key = "pool_max_bytes",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.carrier->pool.max_bytes = v; },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->pool.max_bytes; }},
      {.key = "thp",
       .group = Group::Carrier,
       .kind = Kind::Bool,
       .set = [](Targets& t, uint64_t v) { t.carrier->pool.thp = v != 0; },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->pool.thp; }},
      {.key = "max_handshake_packet",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .max = kU32,
       .set =
           [](Targets& t, uint64_t v) {
             t.carrier->connection.max_handshake_packet = static_cast<uint32_t>(v);
           },
       .get = [](const Targets& t) -> uint64_t {
         return t.carrier->connection.max_handshake_packet;
       }},
      {.key = "max_dist_packet",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.carrier->connection.max_dist_packet = v; },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->connection.max_dist_packet; }},
      {.key = "send_high_watermark",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.carrier->connection.send_high_watermark = v; },
       .get = [](const Targets& t) -> uint64_t {
         return t.carrier->connection.send_high_watermark;
       }},
      {.key = "send_low_watermark",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.carrier->connection.send_low_watermark = v; },
       .get = [](const Targets& t) -> uint64_t {
         return t.carrier->connection.send_low_watermark;
       }},
      {.key = "rx_window",
       .group = Group::Carrier,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.carrier->connection.rx_window = v; },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->connection.rx_window; }},
      {.key = "nodelay",
       .group = Group::Carrier,
       .kind = Kind::Bool,
       .set = [](Targets& t, uint64_t v) { t.carrier->connection.nodelay = v != 0; },
       .get = [](const Targets& t) -> uint64_t { return t.carrier->connection.nodelay; }},
      {.key = "zero_copy_rx",
       .group = Group::Carrier,
       .kind = Kind::Bool,
       .set = [](Targets& t, uint64_t v) { *t.zero_copy_rx = v != 0; },
       .get = [](const Targets& t) -> uint64_t { return *t.zero_copy_rx; }},
      // Filter (start and config_set/2).
      {.key = "deep_packet_inspection",
       .group = Group::Filter,
       .kind = Kind::Bool,
       .set = [](Targets& t, uint64_t v) { t.policy->inspect = v != 0; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->inspect; }},
      {.key = "filter_mode",
       .group = Group::Filter,
       .kind = Kind::Atom,
       // In the order of filter::Mode.
       .names = {"enforce", "monitor", "off"},
       .set = [](Targets& t, uint64_t v) { t.policy->mode = static_cast<filter::Mode>(v); },
       .get = [](const Targets& t) -> uint64_t { return static_cast<uint64_t>(t.policy->mode); }},
      {.key = "max_message_size",
       .group = Group::Filter,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.policy->max_message_size = v; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->max_message_size; }},
      {.key = "max_reassembly_bytes",
       .group = Group::Filter,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.policy->max_reassembly_bytes = v; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->max_reassembly_bytes; }},
      {.key = "max_open_fragments",
       .group = Group::Filter,
       .kind = Kind::U64,
       .min = 1,
       .max = kU32,
       .set = [](Targets& t,
                 uint64_t v) { t.policy->max_open_fragments = static_cast<uint32_t>(v); },
       .get = [](const Targets& t) -> uint64_t { return t.policy->max_open_fragments; }},
      {.key = "max_global_message_size",
       .group = Group::Filter,
       .kind = Kind::U64,
       .min = 1,
       .set = [](Targets& t, uint64_t v) { t.policy->max_global_message_size = v; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->max_global_message_size; }},
      {.key = "max_new_atoms_per_connection",
       .group = Group::Filter,
       .kind = Kind::U64,
       .set = [](Targets& t, uint64_t v) { t.policy->max_new_atoms_per_connection = v; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->max_new_atoms_per_connection; }},
      {.key = "max_new_atoms",
       .group = Group::Filter,
       .kind = Kind::U64,
       .set = [](Targets& t, uint64_t v) { t.policy->max_new_atoms = v; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->max_new_atoms; }},
      {.key = "allow_mfa",
       .group = Group::Filter,
       .kind = Kind::Custom,
       .parse = parse_mfas,
       .show = [](ErlNifEnv* env,
                  const Targets& t) { return show_list(env, t.policy->allow_mfa.size()); }},
      {.key = "allow_reg_names",
       .group = Group::Filter,
       .kind = Kind::Custom,
       .parse = parse_names,
       .show = [](ErlNifEnv* env,
                  const Targets& t) { return show_list(env, t.policy->allow_reg_names.size()); }},
      {.key = "handler",
       .group = Group::Filter,
       .kind = Kind::Custom,
       .parse = parse_handler,
       .show =
           [](ErlNifEnv* env, const Targets& t) {
             return t.policy->handler ? make_atom(env, "derived") : atoms.undefined;
           }},
      {.key = "handler_spawn_init",
       .group = Group::Filter,
       .kind = Kind::Bool,
       .set = [](Targets& t, uint64_t v) { t.policy->handler_spawn_init = v != 0; },
       .get = [](const Targets& t) -> uint64_t { return t.policy->handler_spawn_init; },
       .derived = true},
      {.key = "logger_capacity",
       .group = Group::Filter,
       .kind = Kind::U64,
       .set = [](Targets& t, uint64_t v) { *t.logger_capacity = v; },
       .get = [](const Targets& t) -> uint64_t { return *t.logger_capacity; }},
  };
  return table;
}

bool read_one(ErlNifEnv* env, const Entry& e, ERL_NIF_TERM v, Targets& t, std::string* why) {
  switch (e.kind) {
    case Kind::U64: {
      ErlNifUInt64 u;
      if (!enif_get_uint64(env, v, &u) || u < e.min || u > e.max) {
        *why = "not an integer in " + std::to_string(e.min) + ".." + std::to_string(e.max);
        return false;
      }
      e.set(t, u);
      return true;
    }
    case Kind::Bool:
      if (!enif_is_identical(v, atoms.true_) && !enif_is_identical(v, atoms.false_)) {
        return *why = "not true or false", false;
      }
      e.set(t, enif_is_identical(v, atoms.true_) ? 1 : 0);
      return true;
    case Kind::Atom: {
      std::string name;
      if (get_atom_text(env, v, &name)) {
        for (size_t i = 0; i < e.names.size(); i++) {
          if (name == e.names[i]) {
            e.set(t, i);
            return true;
          }
        }
      }
      *why = "not one of";
      for (const char* n : e.names) *why += std::string(" ") + n;
      return false;
    }
    case Kind::Custom:
      return e.parse(env, v, t, why);
  }
  return false;
}

}  // namespace

bool read(ErlNifEnv* env, ERL_NIF_TERM map, Group group, Targets& t, std::string* key,
          std::string* why) {
  if (!enif_is_map(env, map)) {
    *key = "options";
    *why = "not a map";
    return false;
  }
  for (const Entry& e : entries()) {
    if (e.group != group) continue;
    ERL_NIF_TERM v;
    if (!enif_get_map_value(env, map, make_atom(env, e.key), &v)) {
      *key = e.key;
      *why = "missing (ktls_filter_config:options/0 gives every option)";
      return false;
    }
    if (!read_one(env, e, v, t, why)) {
      *key = e.key;
      return false;
    }
  }
  return true;
}

ERL_NIF_TERM table(ErlNifEnv* env) {
  carrier::CarrierOptions carrier;
  bool zero_copy_rx = true;
  filter::Policy policy;
  uint64_t logger_capacity = kDefaultLoggerCapacity;
  const Targets t{&carrier, &zero_copy_rx, &policy, &logger_capacity};
  ERL_NIF_TERM list = enif_make_list(env, 0);
  const std::vector<Entry>& es = entries();
  for (auto it = es.rbegin(); it != es.rend(); ++it) {
    const Entry& e = *it;
    ERL_NIF_TERM value;
    if (e.derived) {
      value = make_atom(env, "derived");
    } else if (e.kind == Kind::U64) {
      value = enif_make_uint64(env, e.get(t));
    } else if (e.kind == Kind::Bool) {
      value = e.get(t) ? atoms.true_ : atoms.false_;
    } else if (e.kind == Kind::Atom) {
      value = make_atom(env, e.names.at(e.get(t)));
    } else {
      value = e.show(env, t);
    }
    ERL_NIF_TERM group = make_atom(env, e.group == Group::Carrier ? "carrier" : "filter");
    list =
        enif_make_list_cell(env, enif_make_tuple3(env, make_atom(env, e.key), group, value), list);
  }
  return list;
}

}  // namespace ktls::nif::options
