#include "nif/filter_nifs.h"

#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "nif/filter/channel.h"
#include "nif/filter_terms.h"
#include "nif/message_storage.h"
#include "nif/nif_terms.h"
#include "nif/observers.h"
#include "nif/policy_config.h"
#include "nif/resources.h"

namespace ktls::nif {

ERL_NIF_TERM nif_filter_configure(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  if (!enif_is_map(env, argv[0])) return enif_make_badarg(env);
  std::string key, why;
  if (!configure_policy(env, argv[0], &key, &why)) {
    return make_error(
        env, enif_make_tuple3(env, make_atom(env, "bad_option"), make_atom(env, key.c_str()),
                              make_string_binary(env, why)));
  }
  return atoms.ok;
}

ERL_NIF_TERM nif_world_stats(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  return make_world_stats(env);
}

ERL_NIF_TERM nif_channel_inspect(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  MapBuilder m(env);
  m.count("id", res->conn->id())
      .put("peer", make_ip_port(env, res->conn->peer()))
      .put("open", res->obs->closed() ? atoms.false_ : atoms.true_)
      .put("carrier", make_connection_stats(env, res->conn->stats()))
      .put("tls", make_tls_info(env, res->conn->tls_info()));
  std::lock_guard lock(res->mu);
  if (!res->channel) return m.put("node", atoms.undefined).term();
  const filter::Channel& ch = *res->channel;
  ERL_NIF_TERM cache = enif_make_list(env, 0);
  auto entries = ch.atom_cache();
  for (size_t i = entries.size(); i-- > 0;) {
    ERL_NIF_TERM text;
    unsigned char* d = enif_make_new_binary(env, entries[i].second.size(), &text);
    std::memcpy(d, entries[i].second.data(), entries[i].second.size());
    cache = enif_make_list_cell(
        env, enif_make_tuple2(env, enif_make_uint(env, entries[i].first), text), cache);
  }
  return m.put("node", make_atom(env, res->peer_node.c_str()))
      .put("trusted",
           res->trusted_by.empty() ? atoms.false_ : make_string_binary(env, res->trusted_by))
      .put("flags", MapBuilder(env)
                        .put("framing", make_atom(env, ch.framing()))
                        .count("open_fragment_sequences", ch.open_sequences())
                        .count("reassembly_bytes", ch.reassembly_bytes())
                        .term())
      .put("rx_atom_cache", cache)
      .put("filter", make_filter_stats(env, ch.stats()))
      .term();
}

// channel_node(Conn): the peer's node name as channel_inspect has it
// (undefined before the dist handshake), without the rest: the atom cache
// alone is up to 2,048 binaries per connection, and finding one node among
// thousands of connections inspected them all.
ERL_NIF_TERM nif_channel_node(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  std::lock_guard lock(res->mu);
  if (!res->channel) return atoms.undefined;
  return make_atom(env, res->peer_node.c_str());
}

// filter_decode(Packets): runs packets (one connection's stream, in order)
// through a fresh channel under the policy in force; for tests and tools.
ERL_NIF_TERM nif_filter_decode(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  filter::Channel ch(current_policy(), filter::LocalNode{"ktls_filter_decode@localhost", 1});
  filter::Verdict v;
  std::vector<ERL_NIF_TERM> out;
  ERL_NIF_TERM head, tail = argv[0];
  auto bin = [&](const std::vector<uint8_t>& b) {
    ERL_NIF_TERM t;
    unsigned char* d = enif_make_new_binary(env, b.size(), &t);
    if (!b.empty()) std::memcpy(d, b.data(), b.size());
    return t;
  };
  while (enif_get_list_cell(env, tail, &head, &tail)) {
    ErlNifBinary packet;
    if (!enif_inspect_binary(env, head, &packet)) return enif_make_badarg(env);
    ch.inspect(filter::Bytes(packet.data, packet.size), v);
    if (v.action == filter::Action::Close) {
      out.push_back(
          enif_make_tuple2(env, make_atom(env, "close"), make_string_binary(env, v.error)));
      break;
    }
    const char* action = "keep";
    switch (v.action) {
      case filter::Action::Keep:
        action = "keep";
        break;
      case filter::Action::Drop:
        action = "drop";
        break;
      case filter::Action::Hold:
        action = "hold";
        break;
      case filter::Action::Ask:
        action = "ask";
        break;
      case filter::Action::Resolve:
        action = "resolve";
        break;
      case filter::Action::Close:
        break;
    }
    ERL_NIF_TERM name = v.decoded ? make_atom(env, v.message.info->name) : atoms.undefined;
    ERL_NIF_TERM bytes = v.replaced || v.action == filter::Action::Drop ? bin(v.bytes) : head;
    if (v.action == filter::Action::Hold) bytes = make_atom(env, "none");
    ERL_NIF_TERM items[] = {make_atom(env, action),
                            make_atom(env, filter::hint_name(v.hint)),
                            make_string_binary(env, v.reason),
                            name,
                            make_message_term(env, v.message.control),
                            make_message_term(env, v.message.payload),
                            bin(v.prefix),
                            bytes};
    // Last: the message views point into v.whole, which this may shrink.
    if (v.replaced && !v.whole.empty()) items[7] = take_message_binary(env, std::move(v.whole));
    out.push_back(enif_make_tuple_from_array(env, items, 8));
  }
  return enif_make_list_from_array(env, out.data(), static_cast<unsigned>(out.size()));
}

ERL_NIF_TERM nif_filter_answer(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  void* p;
  int op;
  if (!enif_get_resource(env, argv[0], ConnRes::type, &p) || !enif_get_int(env, argv[1], &op)) {
    return enif_make_badarg(env);
  }
  auto* res = static_cast<ConnRes*>(p);
  std::lock_guard lock(res->mu);
  if (res->channel) {
    res->channel->record_answer(filter::control_info(op), enif_is_identical(argv[2], atoms.true_),
                                enif_is_identical(argv[3], atoms.true_));
  }
  return atoms.ok;
}

// refusal_log_slot(Conn) -> {ok, Held} | held: whether a refusal decided in
// Erlang may be logged now (one warning per connection and second).
ERL_NIF_TERM nif_refusal_log_slot(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  void* p;
  if (!enif_get_resource(env, argv[0], ConnRes::type, &p)) return enif_make_badarg(env);
  uint64_t held = 0;
  if (!refusal_log_slot(static_cast<ConnRes*>(p), &held)) return make_atom(env, "held");
  return enif_make_tuple2(env, atoms.ok, enif_make_uint64(env, held));
}

ERL_NIF_TERM nif_channel_list(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  return registry.list(env);
}

}  // namespace ktls::nif
