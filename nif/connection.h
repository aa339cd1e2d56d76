// Connection and listener resources of the NIF: the Erlang side of carrier
// connections. Observers run on the carrier's ring thread and turn carrier
// events into messages to Erlang processes (see ktls_filter_nif.erl for the
// message formats).
#pragma once

#include <erl_nif.h>

#include <memory>
#include <mutex>
#include <optional>
#include <set>

#include "carrier/carrier.h"

namespace ktls::nif {

class ConnObserver;
class ListenObserver;

// True when the runtime takes resource binaries as dist input (see
// patches/0002); received packets then reach the VM without a copy.
extern bool zero_copy_rx;

// Keeps a carrier receive buffer alive for the resource binaries made over it.
struct BufferRes {
  carrier::Buffer* buffer;
  static ErlNifResourceType* type;
};

// Resource of one connection. Kept alive by its observer until on_closed, so
// every message the carrier sends can name it.
struct ConnRes {
  std::shared_ptr<carrier::Connection> conn;
  std::shared_ptr<ConnObserver> obs;
  std::mutex mu;  // owner monitor
  ErlNifMonitor owner_mon{};
  bool monitoring = false;

  static ErlNifResourceType* type;
  // A new resource with its observer; the caller holds one reference.
  static ConnRes* create();
};

struct ListenRes {
  std::shared_ptr<carrier::Listener> listener;
  std::shared_ptr<ListenObserver> obs;
  static ErlNifResourceType* type;
};

class ConnObserver final : public carrier::ConnectionObserver {
 public:
  explicit ConnObserver(ConnRes* res);
  ~ConnObserver() override;

  void on_connected(carrier::Connection& c, const carrier::Error* error) override;
  void on_packets(carrier::Connection& c, std::span<const carrier::Packet> packets) override;
  void on_writable(carrier::Connection& c) override;
  void on_closed(carrier::Connection& c, const carrier::Error& reason) override;

  // Called from scheduler threads.
  void set_owner(const ErlNifPid& pid);
  void set_connect_waiter(const ErlNifPid& pid);
  // False when the connection is already closed.
  bool set_recv_waiter(const ErlNifPid& pid);
  bool set_input(const ErlNifPid& pid);
  bool closed();

 private:
  void send_to(const ErlNifPid& pid, ERL_NIF_TERM msg);
  ERL_NIF_TERM make_binaries(std::span<const carrier::Packet> packets, uint64_t* bytes);

  ConnRes* res_;    // kept (enif_keep_resource) until on_closed
  ErlNifEnv* env_;  // ring thread only
  std::mutex mu_;   // guards the fields below
  std::optional<ErlNifPid> owner_, input_, recv_waiter_, connect_waiter_;
  bool closed_ = false;
};

class ListenObserver final : public carrier::ListenerObserver {
 public:
  explicit ListenObserver(ListenRes* res);
  ~ListenObserver() override;
  void on_accept(carrier::Listener& l, std::shared_ptr<carrier::Connection> conn,
                 const carrier::Error* error) override;
  // Queues an accept whose result goes to pid.
  void add_acceptor(const ErlNifPid& pid);
  // Drops the observer's reference to the listener resource (after close).
  void release();

 private:
  ListenRes* res_;
  ErlNifEnv* env_;
  std::mutex mu_;
  std::vector<ErlNifPid> acceptors_;
  bool released_ = false;
};

// Registry of open connections for channel_list/0.
class Registry {
 public:
  void add(ConnRes* r);
  void remove(ConnRes* r);
  ERL_NIF_TERM list(ErlNifEnv* env);

 private:
  std::mutex mu_;
  std::set<ConnRes*> open_;
};
extern Registry registry;

}  // namespace ktls::nif
