// The filter's numbers and messages as Erlang terms: filter statistics (of a
// channel or the whole node) and decoded messages.
#pragma once

#include <erl_nif.h>

#include "nif/filter/channel.h"

namespace ktls::nif {

ERL_NIF_TERM make_filter_stats(ErlNifEnv* env, const filter::Stats& s);
// Node-wide: world counters plus policy switches.
ERL_NIF_TERM make_world_stats(ErlNifEnv* env);

// A decoded message as an Erlang term (binary_to_term of its standalone
// form); `none` when the view is empty. May create atoms, as the VM would.
ERL_NIF_TERM make_message_term(ErlNifEnv* env, const filter::Term& t);

}  // namespace ktls::nif
