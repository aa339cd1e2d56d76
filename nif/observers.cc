#include "nif/observers.h"

#include <cerrno>
#include <cstring>
#include <iterator>
#include <new>
#include <optional>
#include <string>

#include "nif/nif_terms.h"
#include "nif/resources.h"

namespace ktls::nif {

ConnObserver::ConnObserver(ConnRes* res)
    : res_(res),
      env_(enif_alloc_env()),
      rx_env_(enif_alloc_env()),
      log_env_(enif_alloc_env()),
      dir_(rx_env_) {
  enif_keep_resource(res_);
}

ConnObserver::~ConnObserver() {
  enif_free_env(env_);
  enif_free_env(rx_env_);
  enif_free_env(log_env_);
}

void ConnObserver::send_to(const ErlNifPid& pid, ERL_NIF_TERM msg) { send_from(env_, pid, msg); }

void ConnObserver::send_from(ErlNifEnv* env, const ErlNifPid& pid, ERL_NIF_TERM msg) {
  ErlNifPid to = pid;
  // A dead receiver is not an error: the owner monitor closes the connection.
  // Success or not, the environment must be cleared before it is reused.
  enif_send(nullptr, &to, env, msg);
  enif_clear_env(env);
}

void ConnObserver::set_owner(const ErlNifPid& pid) {
  std::lock_guard lock(mu_);
  owner_ = pid;
}

void ConnObserver::set_connect_waiter(const ErlNifPid& pid) {
  std::lock_guard lock(mu_);
  connect_waiter_ = pid;
}

bool ConnObserver::set_recv_waiter(const ErlNifPid& pid) {
  std::lock_guard lock(mu_);
  if (closed_) return false;
  recv_waiter_ = pid;
  return true;
}

bool ConnObserver::set_input(const ErlNifPid& pid, filter::Channel& channel) {
  std::lock_guard lock(mu_);
  if (closed_) return false;
  input_ = Input{pid, &channel};
  return true;
}

bool ConnObserver::closed() {
  std::lock_guard lock(mu_);
  return closed_;
}

void ConnObserver::on_connected(carrier::Connection&, const carrier::Error* error) {
  std::optional<ErlNifPid> to;
  {
    std::lock_guard lock(mu_);
    to = connect_waiter_;
    connect_waiter_.reset();
  }
  if (!to) return;
  ERL_NIF_TERM result = error ? make_error(env_, error_reason(env_, *error)) : atoms.ok;
  send_to(*to,
          enif_make_tuple3(env_, atoms.ktls_connected, enif_make_resource(env_, res_), result));
}

void ConnObserver::on_packets(carrier::Connection& c, std::span<const carrier::Packet> packets) {
  std::optional<Input> input;
  std::optional<ErlNifPid> waiter;
  {
    std::lock_guard lock(mu_);
    input = input_;
    if (!input) {
      waiter = recv_waiter_;
      recv_waiter_.reset();
    }
  }
  ERL_NIF_TERM conn = enif_make_resource(rx_env_, res_);
  if (input) {
    // Dist phase: every packet of this completion in one message.
    uint64_t bytes = 0;
    for (const auto& p : packets) bytes += p.size;
    std::string close_reason;
    ERL_NIF_TERM list;
    try {
      list = filter_batch(*input->channel, packets, &close_reason);
    } catch (const std::bad_alloc&) {
      // This runs on the ring thread or in a port callback: an exception
      // must not leave it (the VM would abort). This connection goes.
      enif_clear_env(rx_env_);
      enif_clear_env(log_env_);
      c.close("out of memory while receiving");
      return;
    }
    send_from(
        rx_env_, input->pid,
        enif_make_tuple4(rx_env_, atoms.ktls_data, conn, list, enif_make_uint64(rx_env_, bytes)));
    if (!close_reason.empty()) c.close("dist filter: " + close_reason);
    return;
  }
  // Handshake phase: one packet per request.
  if (waiter && !packets.empty()) {
    ERL_NIF_TERM bin;
    unsigned char* dst = enif_make_new_binary(rx_env_, packets[0].size, &bin);
    std::memcpy(dst, packets[0].data, packets[0].size);
    send_from(rx_env_, *waiter, enif_make_tuple3(rx_env_, atoms.ktls_packet, conn, bin));
    return;
  }
  enif_clear_env(rx_env_);
}

void ConnObserver::on_writable(carrier::Connection&) {
  std::optional<ErlNifPid> owner;
  {
    std::lock_guard lock(mu_);
    owner = owner_;
  }
  if (owner) {
    send_to(*owner, enif_make_tuple2(env_, atoms.ktls_writable, enif_make_resource(env_, res_)));
  }
}

void ConnObserver::on_input_ended(carrier::Connection&, const carrier::Error& reason) {
  std::optional<ErlNifPid> owner, input;
  {
    std::lock_guard lock(mu_);
    if (closed_ || input_end_sent_) return;
    input_end_sent_ = true;
    owner = owner_;
    if (input_) input = input_->pid;
  }
  send_closed(rx_env_, {owner, input}, reason);
}

void ConnObserver::send_closed(ErlNifEnv* env, std::initializer_list<std::optional<ErlNifPid>> to,
                               const carrier::Error& reason) {
  // Each receiver once, even when one process has several roles.
  std::optional<ErlNifPid> sent[3];
  size_t n = 0;
  for (const auto& pid : to) {
    if (!pid || n == std::size(sent)) continue;
    bool dup = false;
    for (size_t i = 0; i < n; i++) dup = dup || enif_compare_pids(&*sent[i], &*pid) == 0;
    if (dup) continue;
    sent[n++] = pid;
    send_from(env, *pid,
              enif_make_tuple3(env, atoms.ktls_closed, enif_make_resource(env, res_),
                               make_string_binary(env, reason.what)));
  }
}

void ConnObserver::on_closed(carrier::Connection&, const carrier::Error& reason) {
  std::optional<ErlNifPid> owner, input, waiter, connector;
  {
    std::lock_guard lock(mu_);
    closed_ = true;
    // Told already, from the receive port (on_input_ended).
    if (!input_end_sent_) {
      owner = owner_;
      if (input_) input = input_->pid;
    }
    waiter = recv_waiter_;
    connector = connect_waiter_;
    recv_waiter_.reset();
    connect_waiter_.reset();
  }
  if (connector) {
    ERL_NIF_TERM err = make_error(env_, error_reason(env_, reason));
    send_to(*connector,
            enif_make_tuple3(env_, atoms.ktls_connected, enif_make_resource(env_, res_), err));
  }
  send_closed(env_, {owner, input, waiter}, reason);
  enif_clear_env(env_);
  registry.remove(res_);
  rx_port_forget(res_);
  enif_release_resource(res_);  // the observer's reference
}

ListenObserver::ListenObserver(ListenRes* res) : res_(res), env_(enif_alloc_env()) {
  enif_keep_resource(res_);
}

ListenObserver::~ListenObserver() { enif_free_env(env_); }

void ListenObserver::add_acceptor(const ErlNifPid& pid) {
  std::lock_guard lock(mu_);
  acceptors_.push_back(pid);
}

void ListenObserver::release() {
  std::lock_guard lock(mu_);
  if (released_) return;
  released_ = true;
  enif_release_resource(res_);
}

void ListenObserver::on_accept(carrier::Listener&, std::shared_ptr<carrier::Connection> conn,
                               const carrier::Error* error) {
  ErlNifPid to;
  {
    std::lock_guard lock(mu_);
    if (acceptors_.empty() || released_) {
      if (conn) conn->close("accepted with nobody waiting");
      return;
    }
    to = acceptors_.front();
    acceptors_.erase(acceptors_.begin());
  }
  ERL_NIF_TERM lterm = enif_make_resource(env_, res_);
  ERL_NIF_TERM result;
  if (!conn || error) {
    // A closed listener fails its pending accepts; Erlang sees {error, closed}.
    bool closed = !error || error->code == 0 || error->code == ECANCELED || error->code == EBADF;
    result = closed ? make_error(env_, atoms.closed) : make_error(env_, error_reason(env_, *error));
  } else {
    ConnRes* cres = ConnRes::create();
    cres->conn = conn;
    cres->obs->set_owner(to);
    conn->set_observer(cres->obs);
    result = enif_make_tuple2(env_, atoms.ok, enif_make_resource(env_, cres));
    enif_release_resource(cres);  // the observer keeps it
  }
  enif_send(nullptr, &to, env_, enif_make_tuple3(env_, atoms.ktls_accept, lterm, result));
  enif_clear_env(env_);
}

}  // namespace ktls::nif
