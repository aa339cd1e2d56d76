// The observers of carrier connections and listeners: they run on the
// carrier's ring thread (or a receive port's scheduler) and turn carrier
// events into messages to Erlang processes (see ktls_filter_nif.erl for the
// message formats).
#pragma once

#include <erl_nif.h>

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "carrier/carrier.h"
#include "nif/filter/channel.h"
#include "nif/process_directory.h"

namespace ktls::nif {

struct ConnRes;
struct ListenRes;

class ConnObserver final : public carrier::ConnectionObserver {
 public:
  explicit ConnObserver(ConnRes* res);
  ~ConnObserver() override;

  void on_connected(carrier::Connection& c, const carrier::Error* error) override;
  void on_packets(carrier::Connection& c, std::span<const carrier::Packet> packets) override;
  void on_writable(carrier::Connection& c) override;
  void on_closed(carrier::Connection& c, const carrier::Error& reason) override;
  // ktls_closed to the owner and the input process from the receive port's
  // scheduler (rx_env_), ahead of on_closed, which then skips them.
  void on_input_ended(carrier::Connection& c, const carrier::Error& reason) override;

  // Called from scheduler threads.
  void set_owner(const ErlNifPid& pid);
  void set_connect_waiter(const ErlNifPid& pid);
  // False when the connection is already closed.
  bool set_recv_waiter(const ErlNifPid& pid);
  // From now on received packets go through `channel` (the connection's
  // ConnRes::channel, which lives as long as the resource) to `pid`.
  bool set_input(const ErlNifPid& pid, filter::Channel& channel);
  bool closed();
  // Where the connection's channel looks up receivers (on_packets only).
  const filter::Directory& directory() const { return dir_; }

 private:
  void send_to(const ErlNifPid& pid, ERL_NIF_TERM msg);  // from env_
  // {ktls_closed, Conn, Why} from `env` to each process of `to` once.
  void send_closed(ErlNifEnv* env, std::initializer_list<std::optional<ErlNifPid>> to,
                   const carrier::Error& reason);
  static void send_from(ErlNifEnv* env, const ErlNifPid& pid, ERL_NIF_TERM msg);
  // Runs the filter (`ch`, the connection's channel) over a batch
  // (filter_batch.cc); returns the list for the input process and sets
  // `close_reason` when a packet was malformed.
  ERL_NIF_TERM filter_batch(filter::Channel& ch, std::span<const carrier::Packet> packets,
                            std::string* close_reason);

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
    ERL_NIF_TERM term = 0;     // made whole: a refusal to log ({ktls_refused, ...}),
                               // the loggers' messages ({ktls_log, ...}); no piece
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
  std::optional<ErlNifPid> owner_, recv_waiter_, connect_waiter_;
  // The input process and the channel its packets go through, set together
  // by set_input: there is no input process without a channel.
  struct Input {
    ErlNifPid pid;
    filter::Channel* channel;
  };
  std::optional<Input> input_;
  bool closed_ = false;
  bool input_end_sent_ = false;  // on_input_ended told the owner and input
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

}  // namespace ktls::nif
