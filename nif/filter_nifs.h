// The filter's NIF functions (see erlang/src/ktls_filter_nif.erl): the
// configuration, statistics and state of channels, and decoding for tests and
// tools.
#pragma once

#include <erl_nif.h>

namespace ktls::nif {

ERL_NIF_TERM nif_filter_configure(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_world_stats(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_channel_inspect(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_channel_node(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_filter_decode(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_filter_answer(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_refusal_log_slot(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_channel_list(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);

}  // namespace ktls::nif
