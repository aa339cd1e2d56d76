// ktls_filter_nif: the NIF entry points (see erlang/src/ktls_filter_nif.erl).
// One carrier per loaded NIF library, started by start/1.
#include <dlfcn.h>
#include <erl_nif.h>

#include <chrono>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "carrier/carrier.h"
#include "nif/filter/channel.h"
#include "nif/filter_nifs.h"
#include "nif/loggers.h"
#include "nif/message_storage.h"
#include "nif/nif_terms.h"
#include "nif/observers.h"
#include "nif/options.h"
#include "nif/policy_config.h"
#include "nif/process_directory.h"
#include "nif/resources.h"

namespace ktls::nif {
namespace {

struct Global {
  std::mutex mu;
  std::unique_ptr<carrier::Carrier> carrier;
};
Global* global = nullptr;

carrier::Carrier* the_carrier() {
  std::lock_guard lock(global->mu);
  return global->carrier.get();
}

bool get_listener(ErlNifEnv* env, ERL_NIF_TERM t, ListenRes** out) {
  void* p;
  if (!enif_get_resource(env, t, ListenRes::type, &p)) return false;
  *out = static_cast<ListenRes*>(p);
  return (*out)->listener != nullptr;
}

// Monitors `pid` as the owner (replacing an earlier owner's monitor).
void monitor_owner(ErlNifEnv* env, ConnRes* res, const ErlNifPid& pid) {
  std::lock_guard lock(res->mu);
  if (res->monitoring) enif_demonitor_process(env, res, &res->owner_mon);
  ErlNifPid p = pid;
  res->monitoring = enif_monitor_process(env, res, &p, &res->owner_mon) == 0;
  res->obs->set_owner(pid);
  if (!res->monitoring) res->conn->close("owner process is not alive");
}

// ------------------------------------------------------------------
// Carrier
// ------------------------------------------------------------------

ERL_NIF_TERM nif_start(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  carrier::CarrierOptions carrier_options;
  bool copy_rx = true;
  options::Targets targets{.carrier = &carrier_options, .zero_copy_rx = &copy_rx};
  std::string key, bad;
  if (!options::read(env, argv[0], options::Group::Carrier, targets, &key, &bad)) {
    return make_error(
        env, enif_make_tuple3(env, make_atom(env, "bad_option"), make_atom(env, key.c_str()),
                              make_string_binary(env, bad)));
  }
  std::lock_guard lock(global->mu);
  if (global->carrier) return atoms.ok;
  // After the check above: certificate files are read once per carrier.
  // `tls' is not an option of the table but what ktls_filter_tls made of the
  // options file.
  if (!get_tls_options(env, argv[0], &carrier_options.tls, &bad)) {
    return make_error(env,
                      enif_make_tuple2(env, make_atom(env, "tls"), make_string_binary(env, bad)));
  }
  // false: copy even where the runtime could take buffers.
  if (!copy_rx) zero_copy_rx = false;
  auto started = carrier::Carrier::start(carrier_options);
  if (!started) return make_error(env, make_string_binary(env, started.error().what));
  global->carrier = started.take();
  return atoms.ok;
}

ERL_NIF_TERM nif_option_table(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  return options::table(env);
}

ERL_NIF_TERM nif_carrier_stats(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  carrier::Carrier* c = the_carrier();
  if (!c) return enif_make_new_map(env);
  carrier::CarrierStats s = c->stats();
  MapBuilder m(env);
  m.count("connections_open", s.connections_open)
      .count("connections_total", s.connections_total)
      .count("listeners_open", s.listeners_open)
      .count("ring_submits", s.ring_submits)
      .count("wakeups", s.wakeups)
      .put("pool", make_pool_stats(env, s.pool))
      .put("zero_copy_rx", zero_copy_rx ? atoms.true_ : atoms.false_);
  put_tls_stats(env, s, m);
  return m.term();
}

// ------------------------------------------------------------------
// Listeners
// ------------------------------------------------------------------

ERL_NIF_TERM nif_listen(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  carrier::Carrier* c = the_carrier();
  if (!c) return make_error(env, "not_started");
  carrier::SockAddr addr;
  int backlog;
  if (!get_sockaddr(env, argv[0], argv[1], &addr) || !enif_get_int(env, argv[2], &backlog)) {
    return enif_make_badarg(env);
  }
  void* mem = enif_alloc_resource(ListenRes::type, sizeof(ListenRes));
  auto* res = new (mem) ListenRes();  // destroyed by listen_dtor
  res->obs = std::make_shared<ListenObserver>(res);
  auto l = c->listen(addr, backlog, res->obs);
  if (!l) {
    res->obs->release();
    enif_release_resource(res);
    return make_error(env, error_reason(env, l.error()));
  }
  res->listener = l.take();
  ERL_NIF_TERM t = enif_make_resource(env, res);
  enif_release_resource(res);
  return enif_make_tuple2(env, atoms.ok, t);
}

ERL_NIF_TERM nif_accept(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ListenRes* res;
  if (!get_listener(env, argv[0], &res)) return enif_make_badarg(env);
  ErlNifPid self;
  enif_self(env, &self);
  res->obs->add_acceptor(self);
  res->listener->accept();
  return atoms.ok;
}

ERL_NIF_TERM nif_listener_address(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ListenRes* res;
  if (!get_listener(env, argv[0], &res)) return enif_make_badarg(env);
  return enif_make_tuple2(env, atoms.ok, make_ip_port(env, res->listener->local()));
}

ERL_NIF_TERM nif_close_listener(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ListenRes* res;
  if (!get_listener(env, argv[0], &res)) return enif_make_badarg(env);
  res->listener->close();
  res->obs->release();
  return atoms.ok;
}

// ------------------------------------------------------------------
// Connections
// ------------------------------------------------------------------

// How a NIF gets its ClientHello for the session key in argv[0].
enum class HelloSource {
  kMake,          // the prepared one, else made now (tls_hello/1, dirty CPU)
  kPrepared,      // the prepared one, without waiting (normal scheduler)
  kWaitPrepared,  // the prepared one, waiting while it is made (dirty I/O)
};

ERL_NIF_TERM nif_tls_prepared_hello_wait(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);

// {ok, Hello} | none (a resource for connect/5) | {error, not_started}.
ERL_NIF_TERM hello_term(ErlNifEnv* env, HelloSource source, const ERL_NIF_TERM argv[]) {
  carrier::Carrier* c = the_carrier();
  ErlNifBinary key;
  if (!enif_inspect_binary(env, argv[0], &key)) return enif_make_badarg(env);
  if (!c) return make_error(env, "not_started");
  const std::string k(reinterpret_cast<const char*>(key.data), key.size);
  std::unique_ptr<carrier::TlsHello> hello;
  switch (source) {
    case HelloSource::kMake:
      hello = c->hello(k);
      break;
    case HelloSource::kWaitPrepared:
      hello = c->prepared_hello(k);
      break;
    case HelloSource::kPrepared: {
      bool in_the_making = false;
      hello = c->try_prepared_hello(k, in_the_making);
      // The ring thread is making it (about 0.15 ms) and it holds the
      // peer's only ticket: worth the wait, but not on this scheduler.
      if (in_the_making) {
        return enif_schedule_nif(env, "tls_prepared_hello", ERL_NIF_DIRTY_JOB_IO_BOUND,
                                 nif_tls_prepared_hello_wait, 1, argv);
      }
      break;
    }
  }
  if (!hello) return atoms.none;
  auto* res = static_cast<HelloRes*>(enif_alloc_resource(HelloRes::type, sizeof(HelloRes)));
  new (res) HelloRes();
  res->hello = std::move(hello);
  ERL_NIF_TERM t = enif_make_resource(env, res);
  enif_release_resource(res);
  return enif_make_tuple2(env, atoms.ok, t);
}

// tls_hello(SessionKey) -> {ok, Hello} | none: a TLS client's ClientHello
// for a later connect/5 with the same key, made now (dirty CPU: a key
// share), so that it is made while the caller looks the address up.
// none without TLS (or when OpenSSL fails: connect makes its own).
ERL_NIF_TERM nif_tls_hello(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  return hello_term(env, HelloSource::kMake, argv);
}

// tls_prepared_hello(SessionKey) -> {ok, Hello} | none: the ClientHello
// made ahead for that peer (Carrier::prepared_hello), on a normal
// scheduler: it makes nothing and never waits there. While the carrier
// thread is making that hello it goes on on a dirty I/O scheduler, which
// waits for it.
ERL_NIF_TERM nif_tls_prepared_hello(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  return hello_term(env, HelloSource::kPrepared, argv);
}

ERL_NIF_TERM nif_tls_prepared_hello_wait(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  return hello_term(env, HelloSource::kWaitPrepared, argv);
}

// connect(Ip, Port, TimeoutMs[, SessionKey, Hello | none]): TLS session
// tickets kept under SessionKey (the peer's node name), Hello from
// tls_hello/1 with the same key (taken: a Hello starts one connection).
ERL_NIF_TERM nif_connect(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  carrier::Carrier* c = the_carrier();
  if (!c) return make_error(env, "not_started");
  carrier::SockAddr addr;
  unsigned timeout_ms;
  if (!get_sockaddr(env, argv[0], argv[1], &addr) || !enif_get_uint(env, argv[2], &timeout_ms)) {
    return enif_make_badarg(env);
  }
  std::string key;
  std::unique_ptr<carrier::TlsHello> hello;
  if (argc == 5) {
    ErlNifBinary k;
    HelloRes* h = nullptr;
    if (!enif_inspect_binary(env, argv[3], &k) ||
        (!enif_is_identical(argv[4], atoms.none) &&
         !enif_get_resource(env, argv[4], HelloRes::type, reinterpret_cast<void**>(&h)))) {
      return enif_make_badarg(env);
    }
    key.assign(reinterpret_cast<const char*>(k.data), k.size);
    if (h) {
      std::lock_guard lock(h->mu);
      hello = std::move(h->hello);
    }
  }
  ErlNifPid self;
  enif_self(env, &self);
  ConnRes* res = ConnRes::create();
  res->obs->set_connect_waiter(self);
  res->conn = c->connect(addr, std::chrono::milliseconds(timeout_ms), res->obs, std::move(key),
                         std::move(hello));
  monitor_owner(env, res, self);
  ERL_NIF_TERM t = enif_make_resource(env, res);
  enif_release_resource(res);
  return enif_make_tuple2(env, atoms.ok, t);
}

ERL_NIF_TERM nif_controlling_process(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  ErlNifPid pid;
  if (!get_conn(env, argv[0], &res) || !enif_get_local_pid(env, argv[1], &pid)) {
    return enif_make_badarg(env);
  }
  if (res->obs->closed()) return make_error(env, atoms.closed);
  monitor_owner(env, res, pid);
  return atoms.ok;
}

// The connection closes when `pid` (dist_util's connection supervisor)
// exits: net_kernel:disconnect/1 returns once it has, and the peer should
// see the close as soon as with inet_tcp, whose port is linked to it.
ERL_NIF_TERM nif_watch_supervisor(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  ErlNifPid pid;
  if (!get_conn(env, argv[0], &res) || !enif_get_local_pid(env, argv[1], &pid)) {
    return enif_make_badarg(env);
  }
  std::lock_guard lock(res->mu);
  if (res->watching_supervisor) enif_demonitor_process(env, res, &res->supervisor_mon);
  res->watching_supervisor = enif_monitor_process(env, res, &pid, &res->supervisor_mon) == 0;
  if (!res->watching_supervisor) res->conn->close("connection supervisor is not alive");
  return atoms.ok;
}

ERL_NIF_TERM nif_recv_packet(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  ErlNifPid self;
  enif_self(env, &self);
  if (!res->obs->set_recv_waiter(self)) return make_error(env, atoms.closed);
  res->conn->request_packet();
  return atoms.ok;
}

// Keeps the Erlang binaries of an outbound batch alive (their bytes are the
// iovecs) until the carrier has written them.
class EnvKeepalive final : public carrier::Keepalive {
 public:
  EnvKeepalive() : env_(enif_alloc_env()) {}
  ~EnvKeepalive() override { enif_free_env(env_); }
  ErlNifEnv* env() { return env_; }

 private:
  ErlNifEnv* env_;
};

// Appends the binaries of iodata `t` (in `env`) to `iov`. Integers and odd
// shapes are flattened into a new binary (a deliberate copy; the VM's dist
// output is a list of binaries, so this is rare).
bool add_iodata(ErlNifEnv* env, ERL_NIF_TERM t, std::vector<iovec>* iov, int depth = 0) {
  ErlNifBinary bin;
  if (enif_inspect_binary(env, t, &bin)) {
    if (bin.size) iov->push_back({bin.data, bin.size});
    return true;
  }
  if (depth < 8 && enif_is_list(env, t)) {
    ERL_NIF_TERM head, tail = t;
    bool all_binaries = true;
    size_t mark = iov->size();
    while (enif_get_list_cell(env, tail, &head, &tail)) {
      if (!enif_inspect_binary(env, head, &bin) && !enif_is_list(env, head)) {
        all_binaries = false;
        break;
      }
      if (!add_iodata(env, head, iov, depth + 1)) return false;
    }
    if (all_binaries && enif_is_empty_list(env, tail)) return true;
    iov->resize(mark);
  }
  if (!enif_inspect_iolist_as_binary(env, t, &bin)) return false;
  if (bin.size) iov->push_back({bin.data, bin.size});
  return true;
}

ERL_NIF_TERM send_packets(ErlNifEnv* env, ConnRes* res, ERL_NIF_TERM packets, bool single) {
  auto keep = std::make_unique<EnvKeepalive>();
  ERL_NIF_TERM copy = enif_make_copy(keep->env(), packets);  // refc binaries: no byte copy
  carrier::OutboundBatch batch;
  std::vector<iovec> iov;
  if (single) {
    if (!add_iodata(keep->env(), copy, &iov)) return enif_make_badarg(env);
    batch.add_packet(iov);
  } else {
    ERL_NIF_TERM head, tail = copy;
    while (enif_get_list_cell(keep->env(), tail, &head, &tail)) {
      iov.clear();
      if (!add_iodata(keep->env(), head, &iov)) return enif_make_badarg(env);
      batch.add_packet(iov);
    }
  }
  batch.set_keepalive(std::move(keep));
  if (batch.empty()) return atoms.ok;
  auto status = res->conn->send(std::move(batch));
  if (!status) return make_error(env, atoms.closed);
  return status.value().busy ? atoms.busy : atoms.ok;
}

ERL_NIF_TERM nif_send_packet(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  ERL_NIF_TERM r = send_packets(env, res, argv[1], true);
  return enif_is_identical(r, atoms.busy) ? atoms.ok : r;
}

ERL_NIF_TERM nif_send_dist(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res) || !enif_is_list(env, argv[1])) return enif_make_badarg(env);
  return send_packets(env, res, argv[1], false);
}

ERL_NIF_TERM nif_set_dist_framing(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  if (res->obs->closed()) return make_error(env, atoms.closed);
  res->conn->set_framing(carrier::Framing::kDist);
  return atoms.ok;
}

// start_input(Conn, InputPid, #{node, local_node, creation, rx}): from now
// on received packets go through the filter to InputPid. rx => ring: the
// ring thread reads; returns ok. rx => port: a receive port reads (see
// rx_port.h); returns {port, Token} for the port's attach command.
ERL_NIF_TERM nif_start_input(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  ErlNifPid pid;
  ERL_NIF_TERM node, local, creation;
  char name[1024], local_name[1024];
  ErlNifUInt64 cr;
  if (!get_conn(env, argv[0], &res) || !enif_get_local_pid(env, argv[1], &pid) ||
      !enif_get_map_value(env, argv[2], make_atom(env, "node"), &node) ||
      !enif_get_map_value(env, argv[2], make_atom(env, "local_node"), &local) ||
      !enif_get_map_value(env, argv[2], make_atom(env, "creation"), &creation) ||
      !enif_get_atom(env, node, name, sizeof name, ERL_NIF_LATIN1) ||
      !enif_get_atom(env, local, local_name, sizeof local_name, ERL_NIF_LATIN1) ||
      !enif_get_uint64(env, creation, &cr)) {
    return enif_make_badarg(env);
  }
  // trusted => Rule (a binary: the trusted_peers rule that trusts the peer)
  // or false.
  ERL_NIF_TERM trusted;
  ErlNifBinary rule{};
  if (enif_get_map_value(env, argv[2], make_atom(env, "trusted"), &trusted) &&
      !enif_is_identical(trusted, atoms.false_) && !enif_inspect_binary(env, trusted, &rule)) {
    return enif_make_badarg(env);
  }
  filter::Channel* channel;  // set once, lives as long as the resource
  {
    std::lock_guard lock(res->mu);
    if (!res->channel) {
      if (rule.size > 0)
        res->trusted_by.assign(reinterpret_cast<const char*>(rule.data), rule.size);
      res->channel = std::make_unique<filter::Channel>(
          policy_for(!res->trusted_by.empty()),
          filter::LocalNode{local_name, static_cast<uint32_t>(cr)});
      res->channel->set_peer(name);
      res->channel->set_directory(&res->obs->directory());
      res->local_node = local_name;
      res->policy_gen = policy_generation();
      res->peer_node = name;
    }
    channel = res->channel.get();
  }
  ERL_NIF_TERM rx;
  const bool port = enif_get_map_value(env, argv[2], make_atom(env, "rx"), &rx) &&
                    enif_is_identical(rx, make_atom(env, "port"));
  if (!res->obs->set_input(pid, *channel)) return make_error(env, atoms.closed);
  if (!port) {
    res->conn->start_streaming(carrier::RxMode::kRing);
    return atoms.ok;
  }
  res->conn->start_streaming(carrier::RxMode::kCaller);
  return enif_make_tuple2(env, make_atom(env, "port"), enif_make_uint64(env, rx_port_token(res)));
}

ERL_NIF_TERM nif_unconsumed(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  return enif_make_uint64(env, res->conn->unconsumed());
}

ERL_NIF_TERM nif_consumed(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  ErlNifUInt64 bytes;
  if (!get_conn(env, argv[0], &res) || !enif_get_uint64(env, argv[1], &bytes)) {
    return enif_make_badarg(env);
  }
  // True only for a receive port's connection that was paused at rx_window.
  return res->conn->consumed(bytes) ? make_atom(env, "resume") : atoms.ok;
}

ERL_NIF_TERM nif_send_tick(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  res->conn->send_tick();
  return atoms.ok;
}

ERL_NIF_TERM nif_stats(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  if (res->obs->closed()) return make_error(env, atoms.closed);
  carrier::ConnectionStats s = res->conn->stats();
  return enif_make_tuple4(env, atoms.ok, enif_make_uint64(env, s.packets_in + s.ticks_in),
                          enif_make_uint64(env, s.packets_out + s.ticks_out),
                          enif_make_uint64(env, s.queued_bytes));
}

ERL_NIF_TERM nif_info(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  return MapBuilder(env)
      .count("id", res->conn->id())
      .put("peer", make_ip_port(env, res->conn->peer()))
      .put("local", make_ip_port(env, res->conn->local()))
      .put("open", res->obs->closed() ? atoms.false_ : atoms.true_)
      .put("stats", make_connection_stats(env, res->conn->stats()))
      .put("tls", make_tls_info(env, res->conn->tls_info()))
      .term();
}

ERL_NIF_TERM nif_peername(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  return enif_make_tuple2(env, atoms.ok, make_ip_port(env, res->conn->peer()));
}

ERL_NIF_TERM nif_sockname(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  return enif_make_tuple2(env, atoms.ok, make_ip_port(env, res->conn->local()));
}

// setsockopt(Conn, Level, Name, Value) -> ok | {error, Reason}
ERL_NIF_TERM nif_setsockopt(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  int level, name, value;
  if (!get_conn(env, argv[0], &res) || !enif_get_int(env, argv[1], &level) ||
      !enif_get_int(env, argv[2], &name) || !enif_get_int(env, argv[3], &value)) {
    return enif_make_badarg(env);
  }
  auto r = res->conn->set_socket_option(level, name, value);
  return r ? atoms.ok : make_error(env, error_reason(env, r.error()));
}

// getsockopt(Conn, Level, Name) -> {ok, Value} | {error, Reason}
ERL_NIF_TERM nif_getsockopt(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  int level, name;
  if (!get_conn(env, argv[0], &res) || !enif_get_int(env, argv[1], &level) ||
      !enif_get_int(env, argv[2], &name)) {
    return enif_make_badarg(env);
  }
  auto r = res->conn->socket_option(level, name);
  if (!r) return make_error(env, error_reason(env, r.error()));
  return enif_make_tuple2(env, atoms.ok, enif_make_int(env, r.value()));
}

ERL_NIF_TERM nif_close(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ConnRes* res;
  if (!get_conn(env, argv[0], &res)) return enif_make_badarg(env);
  ErlNifBinary text;
  std::string reason = "closed by ktls_filter_nif:close/2";
  if (enif_inspect_iolist_as_binary(env, argv[1], &text)) {
    reason.assign(reinterpret_cast<const char*>(text.data), text.size);
  }
  res->conn->close(reason);
  return atoms.ok;
}

// ------------------------------------------------------------------
// Loading
// ------------------------------------------------------------------

int load(ErlNifEnv* env, void**, ERL_NIF_TERM) {
  atoms.init(env);
  if (!resources_load(env)) return 1;
  if (!loggers_load(env)) return 1;
  use_erts_message_storage();
  // patches/0002 exports this from the runtime.
  const auto* patched =
      static_cast<const int*>(dlsym(RTLD_DEFAULT, "erts_dist_input_resource_binaries"));
  zero_copy_rx = patched && *patched;
  global = new (std::nothrow) Global();  // lives as long as the library
  return global ? 0 : 1;
}

// The carrier thread must not outlive the code it runs; upgrades are refused.
int upgrade(ErlNifEnv*, void**, void**, ERL_NIF_TERM) { return 1; }

ErlNifFunc funcs[] = {
    {"start", 1, nif_start, 0},
    {"carrier_stats", 0, nif_carrier_stats, 0},
    {"listen", 3, nif_listen, 0},
    {"accept", 1, nif_accept, 0},
    {"listener_address", 1, nif_listener_address, 0},
    {"close_listener", 1, nif_close_listener, 0},
    {"connect", 3, nif_connect, 0},
    {"connect", 5, nif_connect, 0},
    {"tls_hello", 1, nif_tls_hello, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"tls_prepared_hello", 1, nif_tls_prepared_hello, 0},
    {"controlling_process", 2, nif_controlling_process, 0},
    {"watch_supervisor", 2, nif_watch_supervisor, 0},
    {"recv_packet", 1, nif_recv_packet, 0},
    {"send_packet", 2, nif_send_packet, 0},
    {"set_dist_framing", 1, nif_set_dist_framing, 0},
    {"start_input", 3, nif_start_input, 0},
    {"consumed", 2, nif_consumed, 0},
    {"unconsumed", 1, nif_unconsumed, 0},
    {"send_dist", 2, nif_send_dist, 0},
    {"send_tick", 1, nif_send_tick, 0},
    {"stats", 1, nif_stats, 0},
    {"info", 1, nif_info, 0},
    {"peername", 1, nif_peername, 0},
    {"sockname", 1, nif_sockname, 0},
    {"setsockopt", 4, nif_setsockopt, 0},
    {"getsockopt", 3, nif_getsockopt, 0},
    {"close", 2, nif_close, 0},
    {"filter_configure", 1, nif_filter_configure, 0},
    {"option_table", 0, nif_option_table, 0},
    {"world_stats", 0, nif_world_stats, 0},
    {"channel_list", 0, nif_channel_list, 0},
    {"channel_inspect", 1, nif_channel_inspect, 0},
    {"channel_node", 1, nif_channel_node, 0},
    {"filter_answer", 4, nif_filter_answer, 0},
    {"refusal_log_slot", 1, nif_refusal_log_slot, 0},
    {"learn_role", 2, nif_learn_role, 0},
    {"forget_roles", 0, nif_forget_roles, 0},
    {"filter_decode", 1, nif_filter_decode, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"logger_open", 1, nif_logger_open, 0},
    {"logger_ack", 2, nif_logger_ack, 0},
    {"logger_set_capacity", 1, nif_logger_set_capacity, 0},
    {"logger_list", 0, nif_logger_list, 0},
    {"logger_inspect", 1, nif_logger_inspect, 0},
};

}  // namespace
}  // namespace ktls::nif

ERL_NIF_INIT(ktls_filter_nif, ktls::nif::funcs, ktls::nif::load, nullptr, ktls::nif::upgrade,
             nullptr)
