// Reassembled messages kept in ERTS binaries (filter::MessageStorage), so
// that a message the filter reassembled reaches the VM without a copy.
#pragma once

#include <erl_nif.h>

#include "nif/filter/channel.h"

namespace ktls::nif {

// Makes the filter keep reassembled messages in ERTS binaries (call once, at
// load, before any channel exists).
void use_erts_message_storage();
// A reassembled message as an Erlang binary, without a copy (the storage
// becomes the binary's); `m` is left empty. Needs use_erts_message_storage().
ERL_NIF_TERM take_message_binary(ErlNifEnv* env, filter::MessageBuffer&& m);

}  // namespace ktls::nif
