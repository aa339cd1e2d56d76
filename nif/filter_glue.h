// The NIF side of the filter engine (nif/filter): the policy in force, built
// from the Erlang configuration map; filter statistics as Erlang maps; and
// the logger registry (processes that receive batches of decoded messages).
#pragma once

#include <erl_nif.h>

#include <atomic>
#include <memory>
#include <string>

#include "nif/filter/channel.h"
#include "nif/filter/policy.h"

namespace ktls::nif {

// The policy in force and its generation (bumped on every change), so a
// channel refreshes its copy with one atomic load per batch.
std::shared_ptr<const filter::Policy> current_policy();
uint64_t policy_generation();
// The policy of a connection: the one in force, or for a trusted peer
// (trusted_peers) the same with enforce turned into monitor (nothing is
// dropped; what would have been is counted as would_drop) and no handler.
std::shared_ptr<const filter::Policy> policy_for(bool trusted);

// Applies the filter keys of a configuration map. False with `bad` naming
// the first ill-typed key.
bool configure_policy(ErlNifEnv* env, ERL_NIF_TERM map, std::string* bad);

ERL_NIF_TERM make_filter_stats(ErlNifEnv* env, const filter::Stats& s);
// Node-wide: world counters plus policy switches.
ERL_NIF_TERM make_world_stats(ErlNifEnv* env);

// A decoded message as an Erlang term (binary_to_term of its standalone
// form); `none` when the view is empty. May create atoms, as the VM would.
ERL_NIF_TERM make_message_term(ErlNifEnv* env, const filter::Term& t);

// Loggers -----------------------------------------------------------------

struct LoggerRes {
  ErlNifPid pid;
  ErlNifMonitor mon;
  std::atomic<uint64_t> pending{0}, dropped{0}, dropped_total{0}, events{0}, batches{0};
  std::atomic<bool> open{true};
  static ErlNifResourceType* type;
};

// True when at least one logger is open (one atomic load).
bool loggers_active();
// Sends `events` (a list, copied into each message) to every open logger
// with room for `n` more events; counts the rest as dropped.
void loggers_dispatch(ERL_NIF_TERM events, uint64_t n);

// Opens the logger resource type; false on failure.
bool filter_glue_load(ErlNifEnv* env);

// NIF functions (see erlang/src/ktls_filter_nif.erl).
ERL_NIF_TERM nif_filter_configure(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_world_stats(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_channel_inspect(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_filter_decode(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_filter_answer(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_refusal_log_slot(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_open(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_ack(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_set_capacity(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_list(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_inspect(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);

}  // namespace ktls::nif
