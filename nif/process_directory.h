// The filter's view of this node's processes and atoms (filter::Directory)
// answered from the VM: registered names through enif_whereis_pid, atoms
// through the atom table, and the roles of processes from a node-wide cache
// that the input processes fill (ktls_filter_roles looks a process up when
// the filter asks, see filter::Action::Resolve).
#pragma once

#include <erl_nif.h>

#include "nif/filter/policy.h"

namespace ktls::nif {

class ProcessDirectory final : public filter::Directory {
 public:
  // `env` makes the atoms of whereis() lookups; the owner clears it. Any
  // thread (a process-independent environment).
  explicit ProcessDirectory(ErlNifEnv* env) : env_(env) {}

  filter::Role role_of(const filter::PidId& pid) const override;
  std::optional<filter::PidId> whereis(std::string_view name) const override;
  bool atom_exists(std::string_view text, bool latin1) const override;
  uint64_t generation() const override;

  // Records a looked-up role (Gone and Unknown are not kept: a pid that had
  // no process may still get one). Any thread.
  static void learn(const filter::PidId& pid, filter::Role role);
  // Forgets every role (the configuration of system applications changed)
  // and starts a new generation().
  static void forget_all();

 private:
  ErlNifEnv* env_;
  // The last process whereis() found and its identity: a connection
  // usually names the same few processes, and the identity of a pid costs
  // an encoding (enif_term_to_binary) that the NIF API has no shortcut for.
  mutable ErlNifPid last_pid_{};
  mutable filter::PidId last_id_{};
  mutable bool has_last_ = false;
};

// The identity of a local pid term; false for anything else.
bool local_pid_id(ErlNifEnv* env, ERL_NIF_TERM pid, filter::PidId* out);
// The pid term of a local pid identity of this node (`node` its name).
ERL_NIF_TERM make_local_pid(ErlNifEnv* env, std::string_view node, const filter::PidId& pid);

// learn_role(Pid, Role): see ProcessDirectory::learn.
ERL_NIF_TERM nif_learn_role(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);
// forget_roles(): see ProcessDirectory::forget_all.
ERL_NIF_TERM nif_forget_roles(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]);

}  // namespace ktls::nif
