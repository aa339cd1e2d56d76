// TLS options of the simulated nodes from an options file in OTP's
// -ssl_dist_optfile format ([{server, Opts}, {client, Opts}], Erlang terms),
// the same file `./ktls remsh --tls` and the target node read. The swarm is a
// client: only {client, Opts} is used.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "carrier/result.h"
#include "carrier/tls_session.h"

namespace ktls::loadgen {

struct ClientTlsOptions {
  carrier::TlsOptions tls;           // certfile, keyfile, cacertfile, verify, versions
  std::vector<std::string> ignored;  // client options the swarm does not apply
};

// Reads the client side of an options file. Understood: certfile, keyfile,
// cacertfile (strings), verify (verify_peer | verify_none; without it
// verify_none, as OTP 25's ssl client) and versions (['tlsv1.2', 'tlsv1.3']).
carrier::Result<ClientTlsOptions> read_client_tls_optfile(const std::string& path);

// The same from the file's text (path only names it in errors).
carrier::Result<ClientTlsOptions> parse_client_tls_options(std::string_view text,
                                                           const std::string& path);

}  // namespace ktls::loadgen
