// Test certificates made on the fly: one CA with a server and a client
// certificate, and a second CA with a "stranger" (tests only).
#pragma once

#include <memory>
#include <string>

#include "carrier/tls_session.h"

namespace ktls::carrier {

// ca.pem, server.pem, client.pem (certificate + key) of one CA; other_ca.pem
// and stranger.pem of another; expired.pem (the first CA, expired). Made
// once per process under $TEST_TMPDIR.
struct Pki {
  std::string dir;
  std::string path(const std::string& f) const { return dir + "/" + f; }
};
const Pki& pki();

// TLS options with `who`.pem and the first CA.
TlsOptions options(const std::string& who);
// The same, allowing only `version` and the one cipher `suite` of it.
TlsOptions options(const std::string& who, int version, const std::string& suite);
// A session of a new context (a test failure if either cannot be made).
std::unique_ptr<TlsSession> session(const TlsOptions& o, bool server);
// Moves bytes both ways until both handshakes are done or one fails;
// returns the first error, empty on success.
std::string pump(TlsSession& client, TlsSession& server);
// A gtest name for a suite such as "TLS_AES_128_GCM_SHA256".
std::string suite_test_name(const std::string& suite);

}  // namespace ktls::carrier
