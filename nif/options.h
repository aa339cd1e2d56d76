// The one reader of the options the NIF gets. ktls_filter_config builds the
// map from its table (ktls_filter_config:options/0), the only source of
// defaults: every key of a group must be in the map, and a missing or
// ill-typed key is an error that names it. The C++ structures' own
// defaults serve the C++ tests; the option_table NIF shows them, and a test
// (ktls_filter_SUITE:nif_option_table) checks they match the Erlang table.
#pragma once

#include <erl_nif.h>

#include <cstdint>
#include <string>

#include "carrier/carrier.h"
#include "nif/filter/policy.h"

namespace ktls::nif::options {

enum class Group : uint8_t {
  Carrier,  // ktls_filter_nif:start/1, once per node
  Filter,   // ktls_filter_nif:filter_configure/1, at start and on config_set/2
};

// Where the values go; a group's reader needs that group's targets only.
struct Targets {
  carrier::CarrierOptions* carrier = nullptr;
  bool* zero_copy_rx = nullptr;
  filter::Policy* policy = nullptr;
  uint64_t* logger_capacity = nullptr;
};

// Reads every option of `group` from `map` into `t`. False with `key` set
// to the option and `why` to what is wrong with it.
bool read(ErlNifEnv* env, ERL_NIF_TERM map, Group group, Targets& t, std::string* key,
          std::string* why);

// [{Key, carrier | filter, CxxDefault | derived}] for every option the
// reader reads: CxxDefault is the default of the C++ structure (`derived`
// for keys that ktls_filter_config computes rather than takes from its
// table, and for list-valued options).
ERL_NIF_TERM table(ErlNifEnv* env);

}  // namespace ktls::nif::options
