// Connection and listener resources of the NIF: the Erlang side of carrier
// connections. Observers run on the carrier's ring thread and turn carrier
// events into messages to Erlang processes (see ktls_filter_nif.erl for the
// message formats).
#pragma once

#include <erl_nif.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "carrier/carrier.h"
#include "nif/filter/channel.h"
#include "nif/process_directory.h"

namespace ktls::nif {

class ConnObserver;
class ListenObserver;

// True when the runtime takes resource binaries as dist input (see
// patches/0002); received packets then reach the VM without a copy.
extern bool zero_copy_rx;

// Makes the filter keep reassembled messages in ERTS binaries (call once, at
// load, before any channel exists).
void use_erts_message_storage();
// A reassembled message as an Erlang binary, without a copy (the storage
// becomes the binary's); `m` is left empty. Needs use_erts_message_storage().
ERL_NIF_TERM take_message_binary(ErlNifEnv* env, filter::MessageBuffer&& m);

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

// Whether a refusal on `res` may be logged now (true: `held` gets the count
// of refusals not logged since the last one); false counts it as held.
bool refusal_log_slot(ConnRes* res, uint64_t* held);

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
  // Where the connection's channel looks up receivers (on_packets only).
  const filter::Directory& directory() const { return dir_; }

 private:
  void send_to(const ErlNifPid& pid, ERL_NIF_TERM msg);  // from env_
  static void send_from(ErlNifEnv* env, const ErlNifPid& pid, ERL_NIF_TERM msg);
  ERL_NIF_TERM make_binaries(std::span<const carrier::Packet> packets, uint64_t* bytes);
  // Runs the filter over a batch; returns the list for the input process
  // and sets `close_reason` when a packet was malformed.
  ERL_NIF_TERM filter_batch(std::span<const carrier::Packet> packets, std::string* close_reason);

  // What filter_batch delivers, in order: a received packet, bytes the
  // filter wrote (in scratch_), or a question for the handler.
  struct Piece {
    const carrier::Packet* packet;  // nullptr: scratch_[off, off + size)
    size_t off, size;
    ERL_NIF_TERM bin = 0;  // already a binary (large rewritten messages)
  };
  struct Item {
    int keep = -1, drop = -1;  // piece indexes; drop -1 = nothing
    ERL_NIF_TERM ask = 0;      // 0: plain piece `keep`
    ERL_NIF_TERM resolve = 0;  // with ask: a Resolve, {Pid, Op, Safe, Drop, Memo}
    ERL_NIF_TERM refused = 0;  // a refusal to log ({ktls_refused, ...}); no piece
  };
  std::vector<Piece> pieces_;
  std::vector<Item> items_;
  std::vector<uint8_t> scratch_;
  std::vector<ERL_NIF_TERM> log_events_;  // of log_env_, this batch
  filter::Verdict verdict_;

  ConnRes* res_;    // kept (enif_keep_resource) until on_closed
  ErlNifEnv* env_;  // ring thread only
  // on_packets only (the ring thread, or a receive port's scheduler: never
  // both at once), as are pieces_, items_, scratch_, verdict_.
  ErlNifEnv* rx_env_;
  ErlNifEnv* log_env_;    // on_packets only: logger events of one batch
  ProcessDirectory dir_;  // over rx_env_
  std::mutex mu_;         // guards the fields below
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
