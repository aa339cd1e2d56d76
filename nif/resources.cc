#include "nif/resources.h"

#include <chrono>
#include <new>

#include "nif/observers.h"

namespace ktls::nif {

ErlNifResourceType* ConnRes::type = nullptr;
ErlNifResourceType* ListenRes::type = nullptr;
ErlNifResourceType* HelloRes::type = nullptr;
Registry registry;
ErlNifResourceType* BufferRes::type = nullptr;

ConnRes* ConnRes::create() {
  void* mem = enif_alloc_resource(type, sizeof(ConnRes));
  auto* res = new (mem) ConnRes();  // destroyed by the resource destructor
  res->obs = std::make_shared<ConnObserver>(res);
  registry.add(res);
  return res;
}

bool zero_copy_rx = false;

bool get_conn(ErlNifEnv* env, ERL_NIF_TERM t, ConnRes** out) {
  void* p;
  if (!enif_get_resource(env, t, ConnRes::type, &p)) return false;
  *out = static_cast<ConnRes*>(p);
  return (*out)->conn != nullptr;
}

bool refusal_log_slot(ConnRes* res, uint64_t* held) {
  const int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
  int64_t last = res->refusal_logged_ms.load(std::memory_order_relaxed);
  if (now - last >= 1000 &&
      res->refusal_logged_ms.compare_exchange_strong(last, now, std::memory_order_relaxed)) {
    *held = res->refusals_held.exchange(0, std::memory_order_relaxed);
    return true;
  }
  res->refusals_held.fetch_add(1, std::memory_order_relaxed);
  return false;
}

namespace {

void conn_dtor(ErlNifEnv*, void* obj) { static_cast<ConnRes*>(obj)->~ConnRes(); }

void conn_down(ErlNifEnv*, void* obj, ErlNifPid*, ErlNifMonitor* mon) {
  auto* res = static_cast<ConnRes*>(obj);
  const char* why = "owner process exited";
  {
    std::lock_guard lock(res->mu);
    if (res->watching_supervisor && enif_compare_monitors(mon, &res->supervisor_mon) == 0) {
      res->watching_supervisor = false;
      why = "connection supervisor exited";
    } else {
      res->monitoring = false;
    }
  }
  // At once: when net_kernel:disconnect/1 returns (it waits for the
  // connection supervisor's exit), the peer already sees the close.
  if (res->conn) res->conn->close_now(why);
}

void buffer_dtor(ErlNifEnv*, void* obj) {
  auto* res = static_cast<BufferRes*>(obj);
  if (res->buffer) res->buffer->unref();  // back to the pool with the last one
}

void hello_dtor(ErlNifEnv*, void* obj) { static_cast<HelloRes*>(obj)->~HelloRes(); }

void listen_dtor(ErlNifEnv*, void* obj) {
  auto* res = static_cast<ListenRes*>(obj);
  if (res->listener) res->listener->close();
  res->~ListenRes();
}

}  // namespace

bool resources_load(ErlNifEnv* env) {
  const auto flags = static_cast<ErlNifResourceFlags>(ERL_NIF_RT_CREATE);
  ErlNifResourceTypeInit conn_init{};
  conn_init.dtor = conn_dtor;
  conn_init.down = conn_down;
  conn_init.members = 3;
  ConnRes::type = enif_open_resource_type_x(env, "ktls_conn", &conn_init, flags, nullptr);
  ListenRes::type =
      enif_open_resource_type(env, nullptr, "ktls_listener", listen_dtor, flags, nullptr);
  BufferRes::type =
      enif_open_resource_type(env, nullptr, "ktls_buffer", buffer_dtor, flags, nullptr);
  HelloRes::type =
      enif_open_resource_type(env, nullptr, "ktls_tls_hello", hello_dtor, flags, nullptr);
  return ConnRes::type && ListenRes::type && BufferRes::type && HelloRes::type;
}

void Registry::add(ConnRes* r) {
  std::lock_guard lock(mu_);
  open_.insert(r);
}

void Registry::remove(ConnRes* r) {
  std::lock_guard lock(mu_);
  open_.erase(r);
}

ERL_NIF_TERM Registry::list(ErlNifEnv* env) {
  std::lock_guard lock(mu_);
  ERL_NIF_TERM l = enif_make_list(env, 0);
  for (ConnRes* r : open_) l = enif_make_list_cell(env, enif_make_resource(env, r), l);
  return l;
}

}  // namespace ktls::nif
