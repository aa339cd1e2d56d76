#include "nif/filter_glue.h"

#include <cstring>
#include <mutex>
#include <vector>

#include "nif/connection.h"
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

struct LoggerRegistry {
  std::mutex mu;
  std::vector<LoggerRes*> open;  // each holds a resource reference
  std::atomic<size_t> count{0};
  std::atomic<uint64_t> capacity{1000};
};
LoggerRegistry& loggers() {
  static LoggerRegistry r;
  return r;
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
    if (p->mode == filter::Mode::Enforce) p->mode = filter::Mode::Monitor;
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
    loggers().capacity = cap;
  }
  std::lock_guard lock(s.mu);
  if (p->inspect != s.policy->inspect) s.inspect_switches++;
  if (p->mode != s.policy->mode) s.mode_switches++;
  s.policy = std::move(p);
  s.trusted.reset();
  s.generation.fetch_add(1, std::memory_order_acq_rel);
  return true;
}

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
  PolicyState& ps = policy_state();
  auto p = current_policy();
  filter::Stats world;
  filter::world_stats(world);
  ERL_NIF_TERM m = make_filter_stats(env, world);
  enif_make_map_put(env, m, make_atom(env, "deep_packet_inspection_switches"),
                    enif_make_uint64(env, ps.inspect_switches), &m);
  enif_make_map_put(env, m, make_atom(env, "filter_mode_switches"),
                    enif_make_uint64(env, ps.mode_switches), &m);
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

bool loggers_active() { return loggers().count.load(std::memory_order_relaxed) > 0; }

void loggers_dispatch(ERL_NIF_TERM events, uint64_t n) {
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
  ErlNifEnv* msg_env = enif_alloc_env();
  for (LoggerRes* l : targets) {
    if (cap != 0 && l->pending + n > cap) {
      l->dropped += n;
      l->dropped_total += n;
    } else {
      l->pending += n;
      l->events += n;
      l->batches++;
      uint64_t dropped = l->dropped.exchange(0);
      ERL_NIF_TERM msg = enif_make_tuple4(
          msg_env, make_atom(msg_env, "ktls_logger_batch"), enif_make_resource(msg_env, l),
          enif_make_uint64(msg_env, dropped), enif_make_copy(msg_env, events));
      enif_send(nullptr, &l->pid, msg_env, msg);
      enif_clear_env(msg_env);
    }
    enif_release_resource(l);
  }
  enif_free_env(msg_env);
}

bool filter_glue_load(ErlNifEnv* env) {
  ErlNifResourceTypeInit init{};
  init.dtor = logger_dtor;
  init.down = logger_down;
  init.members = 3;
  LoggerRes::type = enif_open_resource_type_x(
      env, "ktls_logger", &init, static_cast<ErlNifResourceFlags>(ERL_NIF_RT_CREATE), nullptr);
  return LoggerRes::type != nullptr;
}

// NIF functions -------------------------------------------------------------

ERL_NIF_TERM nif_filter_configure(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  if (!enif_is_map(env, argv[0])) return enif_make_badarg(env);
  std::string bad;
  if (!configure_policy(env, argv[0], &bad)) {
    return make_error(
        env, enif_make_tuple2(env, make_atom(env, "bad_option"), make_atom(env, bad.c_str())));
  }
  return atoms.ok;
}

ERL_NIF_TERM nif_world_stats(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  return make_world_stats(env);
}

ERL_NIF_TERM nif_channel_inspect(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  void* p;
  if (!enif_get_resource(env, argv[0], ConnRes::type, &p)) return enif_make_badarg(env);
  auto* res = static_cast<ConnRes*>(p);
  if (!res->conn) return enif_make_badarg(env);
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
