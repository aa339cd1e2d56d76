// The filter policy in force (nif/filter/policy.h): built from the filter
// keys of the Erlang configuration map, with the counts of mode switches.
#pragma once

#include <erl_nif.h>

#include <cstdint>
#include <memory>
#include <string>

#include "nif/filter/policy.h"

namespace ktls::nif {

// The policy in force and its generation (bumped on every change), so a
// channel refreshes its copy with one atomic load per batch.
std::shared_ptr<const filter::Policy> current_policy();
uint64_t policy_generation();
// The policy of a connection: the one in force, or for a trusted peer
// (trusted_peers) the same with enforce turned into monitor (nothing is
// dropped; what would have been is counted as would_drop) and no handler.
std::shared_ptr<const filter::Policy> policy_for(bool trusted);

// Applies the filter options of a configuration map (nif/options.h). False
// with `key` naming the first missing or ill-typed one and `why`.
bool configure_policy(ErlNifEnv* env, ERL_NIF_TERM map, std::string* key, std::string* why);

// How many configuration changes switched deep_packet_inspection and
// filter_mode (world stats).
uint64_t policy_inspect_switches();
uint64_t policy_mode_switches();

}  // namespace ktls::nif
