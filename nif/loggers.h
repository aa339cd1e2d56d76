// Loggers: processes that receive batches of decoded messages (see
// ktls_filter_logger), their registry and their NIF functions.
#pragma once

#include <erl_nif.h>

#include <atomic>
#include <cstdint>

namespace ktls::nif {

struct LoggerRes {
  ErlNifPid pid;
  ErlNifMonitor mon;
  std::atomic<uint64_t> pending{0}, dropped{0}, dropped_total{0}, events{0}, batches{0};
  std::atomic<bool> open{true};
  static ErlNifResourceType* type;
};

// True when at least one logger is open (one atomic load).
bool loggers_active();
// The messages for every open logger with room for `n` more events (the
// rest count them as dropped): a list of `{Pid, {ktls_logger_batch, ...}}`
// made in `env`, where `events` (a list) also lives. The connection's input
// process sends them, so a logger receives one connection's batches in the
// order they arrived (messages from one process keep their order; sends
// from the carrier's threads and port callbacks have no such guarantee).
ERL_NIF_TERM loggers_messages(ErlNifEnv* env, ERL_NIF_TERM events, uint64_t n);
// Events a logger may have unacknowledged before further ones are dropped
// (0: no limit).
void set_logger_capacity(uint64_t capacity);
// The capacity before any configuration (the C++ default; the NIF takes the
// configured one from ktls_filter_config at start).
constexpr uint64_t kDefaultLoggerCapacity = 1000;

// Opens the logger resource type; false on failure.
bool loggers_load(ErlNifEnv* env);

// NIF functions (see erlang/src/ktls_filter_nif.erl).
ERL_NIF_TERM nif_logger_open(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_ack(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_set_capacity(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_list(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
ERL_NIF_TERM nif_logger_inspect(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);

}  // namespace ktls::nif
