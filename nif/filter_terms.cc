#include "nif/filter_terms.h"

#include <cstdint>
#include <vector>

#include "nif/nif_terms.h"
#include "nif/policy_config.h"

namespace ktls::nif {

ERL_NIF_TERM make_filter_stats(ErlNifEnv* env, const filter::Stats& s) {
  ERL_NIF_TERM control = enif_make_new_map(env);
  for (const filter::ControlInfo& c : filter::controls()) {
    const filter::ControlCounters& cc = s.control[c.index];
    ERL_NIF_TERM m = MapBuilder(env)
                         .count("seen", cc.seen)
                         .count("kept", cc.kept)
                         .count("dropped", cc.dropped)
                         .term();
    enif_make_map_put(env, control, make_atom(env, c.name), m, &control);
  }
  return MapBuilder(env)
      .count("packets", s.packets)
      .count("bytes", s.bytes)
      .count("messages_seen", s.messages)
      .count("messages_kept", s.kept)
      .count("messages_dropped", s.dropped)
      .count("spawn_requests_refused", s.rewritten)
      .count("spawn_requests_redirected", s.redirected)
      .count("handler_asked", s.asked)
      .count("receivers_looked_up", s.resolved)
      .count("new_atoms", s.new_atoms)
      .count("atoms_refused", s.atoms_refused)
      .count("would_drop", s.would_drop)
      .count("uninspected", s.uninspected)
      .count("fragments", s.fragments)
      .count("fragmented_messages", s.fragmented)
      .count("too_large", s.too_large)
      .count("atom_cache_writes", s.atom_cache_writes)
      .count("errors", s.errors)
      .put("control", control)
      .term();
}

ERL_NIF_TERM make_world_stats(ErlNifEnv* env) {
  auto p = current_policy();
  filter::Stats world;
  filter::world_stats(world);
  ERL_NIF_TERM m = make_filter_stats(env, world);
  enif_make_map_put(env, m, make_atom(env, "deep_packet_inspection_switches"),
                    enif_make_uint64(env, policy_inspect_switches()), &m);
  enif_make_map_put(env, m, make_atom(env, "filter_mode_switches"),
                    enif_make_uint64(env, policy_mode_switches()), &m);
  enif_make_map_put(env, m, make_atom(env, "deep_packet_inspection"),
                    p->inspect ? atoms.true_ : atoms.false_, &m);
  enif_make_map_put(env, m, make_atom(env, "filter_mode"),
                    make_atom(env, filter::mode_name(p->mode)), &m);
  ERL_NIF_TERM reasons = enif_make_new_map(env);
  for (const auto& [what, n] : filter::error_reasons()) {
    enif_make_map_put(env, reasons, make_string_binary(env, what), enif_make_uint64(env, n),
                      &reasons);
  }
  enif_make_map_put(env, m, make_atom(env, "errors_by_reason"), reasons, &m);
  return m;
}

ERL_NIF_TERM make_message_term(ErlNifEnv* env, const filter::Term& t) {
  if (!t.valid()) return make_atom(env, "$none");
  std::vector<uint8_t> bytes = t.standalone();
  ERL_NIF_TERM out;
  if (bytes.empty() || enif_binary_to_term(env, bytes.data(), bytes.size(), &out, 0) == 0) {
    return make_atom(env, "undecodable");
  }
  return out;
}

}  // namespace ktls::nif
