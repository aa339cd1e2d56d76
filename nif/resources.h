// The NIF's resources: connections, listeners and carrier receive buffers
// (their types are opened at load), and the registry of open connections.
// The objects that turn carrier events into messages are in observers.h.
#pragma once

#include <erl_nif.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>

#include "carrier/carrier.h"
#include "nif/filter/channel.h"

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
  std::mutex mu;  // owner monitor; channel and peer_node against readers
  ErlNifMonitor owner_mon{};
  bool monitoring = false;
  // dist_util's connection supervisor: the connection ends with it, and the
  // socket closes as it exits, not once the owner has seen its exit.
  ErlNifMonitor supervisor_mon{};
  bool watching_supervisor = false;
  // The filter's view of the channel, set by start_input before the input
  // process is known to the observer; then used by the ring thread only
  // (stats and atom cache are safe to read from any thread).
  std::unique_ptr<filter::Channel> channel;
  std::string peer_node;
  std::string local_node;   // this node's name, for pids the NIF writes
  uint64_t policy_gen = 0;  // ring thread
  // Set by start_input when trusted_peers trusts the peer: the rule that
  // did (the channel then runs policy_for(true)). Not changed afterwards.
  std::string trusted_by;
  // Refusal warnings of this connection: at most one per second
  // (refusal_log_slot); the ones held back are counted into the next.
  std::atomic<int64_t> refusal_logged_ms{-1000000};
  std::atomic<uint64_t> refusals_held{0};

  static ErlNifResourceType* type;
  // A new resource with its observer; the caller holds one reference.
  static ConnRes* create();
};

// The connection resource `t` stands for, if it has a connection (false:
// not one, or not started).
bool get_conn(ErlNifEnv* env, ERL_NIF_TERM t, ConnRes** out);

// Whether a refusal on `res` may be logged now (true: `held` gets the count
// of refusals not logged since the last one); false counts it as held.
bool refusal_log_slot(ConnRes* res, uint64_t* held);

// A TLS client's ClientHello made ahead (tls_hello/1), until connect/5
// takes it.
struct HelloRes {
  std::mutex mu;
  std::unique_ptr<carrier::TlsHello> hello;
  static ErlNifResourceType* type;
};

struct ListenRes {
  std::shared_ptr<carrier::Listener> listener;
  std::shared_ptr<ListenObserver> obs;
  static ErlNifResourceType* type;
};

// Opens the resource types of connections, listeners and receive buffers;
// false on failure.
bool resources_load(ErlNifEnv* env);

// Tokens that hand a streaming connection to its receive port (see
// nif/rx_port.h): rx_port_token() registers the connection and keeps a
// reference until the port claims it or the connection closes.
uint64_t rx_port_token(ConnRes* res);
void rx_port_forget(ConnRes* res);  // on close: drops unclaimed tokens

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
