#include "nif/loggers.h"

#include <mutex>
#include <new>
#include <vector>

#include "nif/nif_terms.h"

namespace ktls::nif {
namespace {

struct LoggerRegistry {
  std::mutex mu;
  std::vector<LoggerRes*> open;  // each holds a resource reference
  std::atomic<size_t> count{0};
  std::atomic<uint64_t> capacity{kDefaultLoggerCapacity};
};
LoggerRegistry& loggers() {
  static LoggerRegistry r;
  return r;
}

void logger_remove(LoggerRes* l) {
  LoggerRegistry& r = loggers();
  std::lock_guard lock(r.mu);
  if (!l->open.exchange(false)) return;
  for (size_t i = 0; i < r.open.size(); i++) {
    if (r.open[i] == l) {
      r.open.erase(r.open.begin() + static_cast<long>(i));
      r.count.store(r.open.size());
      enif_release_resource(l);
      return;
    }
  }
}

void logger_dtor(ErlNifEnv*, void* obj) { static_cast<LoggerRes*>(obj)->~LoggerRes(); }
void logger_down(ErlNifEnv*, void* obj, ErlNifPid*, ErlNifMonitor*) {
  logger_remove(static_cast<LoggerRes*>(obj));
}

ERL_NIF_TERM logger_info(ErlNifEnv* env, LoggerRes* l) {
  return MapBuilder(env)
      .put("pid", enif_make_pid(env, &l->pid))
      .put("open", l->open ? atoms.true_ : atoms.false_)
      .count("pending", l->pending)
      .count("dropped", l->dropped_total)
      .count("events", l->events)
      .count("batches", l->batches)
      .count("capacity", loggers().capacity)
      .term();
}

}  // namespace

ErlNifResourceType* LoggerRes::type = nullptr;

bool loggers_active() { return loggers().count.load(std::memory_order_relaxed) > 0; }

ERL_NIF_TERM loggers_messages(ErlNifEnv* env, ERL_NIF_TERM events, uint64_t n) {
  LoggerRegistry& r = loggers();
  std::vector<LoggerRes*> targets;
  {
    std::lock_guard lock(r.mu);
    for (LoggerRes* l : r.open) {
      enif_keep_resource(l);
      targets.push_back(l);
    }
  }
  const uint64_t cap = r.capacity;
  ERL_NIF_TERM batch = make_atom(env, "ktls_logger_batch");
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (LoggerRes* l : targets) {
    if (cap != 0 && l->pending + n > cap) {
      l->dropped += n;
      l->dropped_total += n;
    } else {
      l->pending += n;
      l->events += n;
      l->batches++;
      uint64_t dropped = l->dropped.exchange(0);
      ERL_NIF_TERM msg = enif_make_tuple4(env, batch, enif_make_resource(env, l),
                                          enif_make_uint64(env, dropped), events);
      list =
          enif_make_list_cell(env, enif_make_tuple2(env, enif_make_pid(env, &l->pid), msg), list);
    }
    enif_release_resource(l);
  }
  return list;
}

bool loggers_load(ErlNifEnv* env) {
  ErlNifResourceTypeInit init{};
  init.dtor = logger_dtor;
  init.down = logger_down;
  init.members = 3;
  LoggerRes::type = enif_open_resource_type_x(
      env, "ktls_logger", &init, static_cast<ErlNifResourceFlags>(ERL_NIF_RT_CREATE), nullptr);
  return LoggerRes::type != nullptr;
}

void set_logger_capacity(uint64_t capacity) { loggers().capacity = capacity; }

// NIF functions -------------------------------------------------------------

ERL_NIF_TERM nif_logger_open(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifPid pid;
  if (!enif_get_local_pid(env, argv[0], &pid)) return enif_make_badarg(env);
  void* mem = enif_alloc_resource(LoggerRes::type, sizeof(LoggerRes));
  auto* l = new (mem) LoggerRes();
  l->pid = pid;
  ERL_NIF_TERM term = enif_make_resource(env, l);
  if (enif_monitor_process(env, l, &pid, &l->mon) != 0) {
    l->open = false;
    enif_release_resource(l);
    return make_error(env, "noproc");
  }
  LoggerRegistry& r = loggers();
  {
    std::lock_guard lock(r.mu);
    r.open.push_back(l);  // the registry keeps the creation reference
    r.count.store(r.open.size());
  }
  return enif_make_tuple2(env, atoms.ok, term);
}

ERL_NIF_TERM nif_logger_ack(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  void* p;
  ErlNifUInt64 n;
  if (!enif_get_resource(env, argv[0], LoggerRes::type, &p) || !enif_get_uint64(env, argv[1], &n)) {
    return enif_make_badarg(env);
  }
  auto* l = static_cast<LoggerRes*>(p);
  uint64_t cur = l->pending;
  while (!l->pending.compare_exchange_weak(cur, cur > n ? cur - n : 0)) {
  }
  return atoms.ok;
}

ERL_NIF_TERM nif_logger_set_capacity(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifUInt64 cap;
  if (!enif_get_uint64(env, argv[0], &cap)) return enif_make_badarg(env);
  loggers().capacity = cap;
  return atoms.ok;
}

ERL_NIF_TERM nif_logger_list(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  LoggerRegistry& r = loggers();
  std::lock_guard lock(r.mu);
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (LoggerRes* l : r.open) list = enif_make_list_cell(env, enif_make_resource(env, l), list);
  return list;
}

ERL_NIF_TERM nif_logger_inspect(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  void* p;
  if (!enif_get_resource(env, argv[0], LoggerRes::type, &p)) return enif_make_badarg(env);
  return logger_info(env, static_cast<LoggerRes*>(p));
}

}  // namespace ktls::nif
