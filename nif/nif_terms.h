// Conversions between Erlang terms and carrier types (addresses, options,
// errors, counters). Used only by the NIF.
#pragma once

#include <erl_nif.h>

#include <cstdint>
#include <string>

#include "carrier/carrier.h"

namespace ktls::nif {

// Atoms made once at load time.
struct Atoms {
  ERL_NIF_TERM ok, error, closed, busy, true_, false_, undefined, none;
  ERL_NIF_TERM ktls_accept, ktls_connected, ktls_packet, ktls_data, ktls_writable, ktls_closed;
  void init(ErlNifEnv* env);
};
extern Atoms atoms;

ERL_NIF_TERM make_atom(ErlNifEnv* env, const char* name);
ERL_NIF_TERM make_error(ErlNifEnv* env, ERL_NIF_TERM reason);
ERL_NIF_TERM make_error(ErlNifEnv* env, const char* reason);
ERL_NIF_TERM make_string_binary(ErlNifEnv* env, const std::string& s);
// {error, Reason}: Reason is the errno atom (econnrefused...) when the error
// has a code, else the error text as a binary.
ERL_NIF_TERM error_reason(ErlNifEnv* env, const carrier::Error& e);

// {A,B,C,D} or {A,...,H} plus port -> SockAddr.
bool get_sockaddr(ErlNifEnv* env, ERL_NIF_TERM ip, ERL_NIF_TERM port, carrier::SockAddr* out);
// SockAddr -> {IpTuple, Port}.
ERL_NIF_TERM make_ip_port(ErlNifEnv* env, const carrier::SockAddr& a);

// Reads `tls' from the start options (made by ktls_filter_tls:carrier_tls/2):
//   #{server => Side, client => Side, ktls => auto | required | off,
//     handshake_timeout => Ms}
//   Side = #{certfile | keyfile | cacertfile | ciphers | ciphersuites =>
//            binary, verify | fail_if_no_peer_cert => boolean,
//            depth => integer, min_version | max_version => 'tlsv1.2' | 'tlsv1.3'}
// and makes the OpenSSL contexts. No `tls' key (or undefined): plain TCP. False with
// `error' saying what is wrong (a side, a file, a key).
bool get_tls_options(ErlNifEnv* env, ERL_NIF_TERM map, carrier::CarrierTlsOptions* out,
                     std::string* error);

// Small builder for maps of counters.
class MapBuilder {
 public:
  explicit MapBuilder(ErlNifEnv* env) : env_(env), map_(enif_make_new_map(env)) {}
  MapBuilder& count(const char* key, uint64_t value) {
    return put(key, enif_make_uint64(env_, value));
  }
  MapBuilder& put(const char* key, ERL_NIF_TERM value) {
    enif_make_map_put(env_, map_, make_atom(env_, key), value, &map_);
    return *this;
  }
  ERL_NIF_TERM term() const { return map_; }

 private:
  ErlNifEnv* env_;
  ERL_NIF_TERM map_;
};

ERL_NIF_TERM make_connection_stats(ErlNifEnv* env, const carrier::ConnectionStats& s);
ERL_NIF_TERM make_pool_stats(ErlNifEnv* env, const carrier::BufferPoolStats& s);
// A connection's TLS as a map; `undefined' for plain TCP or while the
// handshake runs.
ERL_NIF_TERM make_tls_info(ErlNifEnv* env, const carrier::TlsInfo& t);
// Node-wide TLS counters, put into a carrier_stats map.
void put_tls_stats(ErlNifEnv* env, const carrier::CarrierStats& s, MapBuilder& m);

}  // namespace ktls::nif
