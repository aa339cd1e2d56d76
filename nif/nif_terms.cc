#include "nif/nif_terms.h"

#include <arpa/inet.h>

#include <cctype>
#include <cstring>

namespace ktls::nif {

Atoms atoms;

ERL_NIF_TERM make_atom(ErlNifEnv* env, const char* name) {
  ERL_NIF_TERM a;
  if (enif_make_existing_atom(env, name, &a, ERL_NIF_LATIN1)) return a;
  return enif_make_atom(env, name);
}

void Atoms::init(ErlNifEnv* env) {
  ok = make_atom(env, "ok");
  error = make_atom(env, "error");
  closed = make_atom(env, "closed");
  busy = make_atom(env, "busy");
  true_ = make_atom(env, "true");
  false_ = make_atom(env, "false");
  undefined = make_atom(env, "undefined");
  none = make_atom(env, "none");
  ktls_accept = make_atom(env, "ktls_accept");
  ktls_connected = make_atom(env, "ktls_connected");
  ktls_packet = make_atom(env, "ktls_packet");
  ktls_data = make_atom(env, "ktls_data");
  ktls_writable = make_atom(env, "ktls_writable");
  ktls_closed = make_atom(env, "ktls_closed");
}

ERL_NIF_TERM make_error(ErlNifEnv* env, ERL_NIF_TERM reason) {
  return enif_make_tuple2(env, atoms.error, reason);
}

ERL_NIF_TERM make_error(ErlNifEnv* env, const char* reason) {
  return make_error(env, make_atom(env, reason));
}

ERL_NIF_TERM make_string_binary(ErlNifEnv* env, const std::string& s) {
  ERL_NIF_TERM t;
  unsigned char* p = enif_make_new_binary(env, s.size(), &t);
  if (!s.empty()) std::memcpy(p, s.data(), s.size());
  return t;
}

ERL_NIF_TERM error_reason(ErlNifEnv* env, const carrier::Error& e) {
  if (e.code > 0) {
    if (const char* name = strerrorname_np(e.code)) {
      std::string lower(name);
      for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return make_atom(env, lower.c_str());
    }
  }
  return make_string_binary(env, e.what);
}

bool get_sockaddr(ErlNifEnv* env, ERL_NIF_TERM ip, ERL_NIF_TERM port, carrier::SockAddr* out) {
  unsigned p;
  if (!enif_get_uint(env, port, &p) || p > 65535) return false;
  int arity;
  const ERL_NIF_TERM* el;
  if (!enif_get_tuple(env, ip, &arity, &el)) return false;
  char text[INET6_ADDRSTRLEN];
  if (arity == 4) {
    unsigned b[4];
    for (int i = 0; i < 4; i++) {
      if (!enif_get_uint(env, el[i], &b[i]) || b[i] > 255) return false;
    }
    snprintf(text, sizeof text, "%u.%u.%u.%u", b[0], b[1], b[2], b[3]);
  } else if (arity == 8) {
    unsigned w[8];
    for (int i = 0; i < 8; i++) {
      if (!enif_get_uint(env, el[i], &w[i]) || w[i] > 65535) return false;
    }
    snprintf(text, sizeof text, "%x:%x:%x:%x:%x:%x:%x:%x", w[0], w[1], w[2], w[3], w[4], w[5], w[6],
             w[7]);
  } else {
    return false;
  }
  auto r = carrier::SockAddr::parse(text, static_cast<uint16_t>(p));
  if (!r) return false;
  *out = r.value();
  return true;
}

ERL_NIF_TERM make_ip_port(ErlNifEnv* env, const carrier::SockAddr& a) {
  ERL_NIF_TERM ip;
  if (a.family() == AF_INET) {
    const auto* s = reinterpret_cast<const sockaddr_in*>(&a.storage);
    const auto* b = reinterpret_cast<const uint8_t*>(&s->sin_addr);
    ip = enif_make_tuple4(env, enif_make_uint(env, b[0]), enif_make_uint(env, b[1]),
                          enif_make_uint(env, b[2]), enif_make_uint(env, b[3]));
  } else {
    const auto* s = reinterpret_cast<const sockaddr_in6*>(&a.storage);
    const auto* b = reinterpret_cast<const uint8_t*>(&s->sin6_addr);
    ERL_NIF_TERM w[8];
    for (int i = 0; i < 8; i++) w[i] = enif_make_uint(env, (b[2 * i] << 8) | b[2 * i + 1]);
    ip = enif_make_tuple_from_array(env, w, 8);
  }
  return enif_make_tuple2(env, ip, enif_make_uint(env, a.port()));
}

namespace {

bool get_u64(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, uint64_t* out, bool* bad) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, make_atom(env, key), &v)) return true;
  ErlNifUInt64 x;
  if (!enif_get_uint64(env, v, &x)) {
    *bad = true;
    return false;
  }
  *out = x;
  return true;
}

bool get_bool(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, bool* out, bool* bad) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, make_atom(env, key), &v)) return true;
  if (enif_is_identical(v, atoms.true_)) {
    *out = true;
  } else if (enif_is_identical(v, atoms.false_)) {
    *out = false;
  } else {
    *bad = true;
    return false;
  }
  return true;
}

}  // namespace

namespace {

bool get_text(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, std::string* out) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, make_atom(env, key), &v)) return true;
  ErlNifBinary b;
  if (!enif_inspect_iolist_as_binary(env, v, &b)) return false;
  out->assign(reinterpret_cast<const char*>(b.data), b.size);
  return true;
}

bool get_version(ErlNifEnv* env, ERL_NIF_TERM map, const char* key, int* out) {
  ERL_NIF_TERM v;
  if (!enif_get_map_value(env, map, make_atom(env, key), &v)) return true;
  char name[16];
  if (enif_get_atom(env, v, name, sizeof name, ERL_NIF_LATIN1) <= 0) return false;
  if (std::strcmp(name, "tlsv1.2") == 0) {
    *out = TLS1_2_VERSION;
  } else if (std::strcmp(name, "tlsv1.3") == 0) {
    *out = TLS1_3_VERSION;
  } else {
    return false;
  }
  return true;
}

bool get_side(ErlNifEnv* env, ERL_NIF_TERM tls, const char* side, bool server,
              std::shared_ptr<carrier::TlsContext>* out, std::string* error) {
  ERL_NIF_TERM m;
  if (!enif_get_map_value(env, tls, make_atom(env, side), &m) || !enif_is_map(env, m)) {
    *error = std::string(side) + ": missing";
    return false;
  }
  carrier::TlsOptions o;
  const char* bad = nullptr;
  uint64_t depth = static_cast<uint64_t>(o.depth);
  bool unused = false;
  if (!get_text(env, m, "certfile", &o.certfile)) bad = "certfile";
  if (!get_text(env, m, "keyfile", &o.keyfile)) bad = "keyfile";
  if (!get_text(env, m, "cacertfile", &o.cacertfile)) bad = "cacertfile";
  if (!get_text(env, m, "ciphers", &o.ciphers)) bad = "ciphers";
  if (!get_text(env, m, "ciphersuites", &o.ciphersuites)) bad = "ciphersuites";
  if (!get_bool(env, m, "verify", &o.verify_peer, &unused)) bad = "verify";
  if (!get_bool(env, m, "fail_if_no_peer_cert", &o.fail_if_no_peer_cert, &unused)) {
    bad = "fail_if_no_peer_cert";
  }
  if (!get_u64(env, m, "depth", &depth, &unused) || depth > 100) bad = "depth";
  if (!get_bool(env, m, "session_tickets", &o.session_tickets, &unused)) bad = "session_tickets";
  if (!get_version(env, m, "min_version", &o.min_version)) bad = "min_version";
  if (!get_version(env, m, "max_version", &o.max_version)) bad = "max_version";
  if (bad) {
    *error = std::string(side) + ": bad " + bad;
    return false;
  }
  o.depth = static_cast<int>(depth);
  auto ctx = carrier::TlsContext::create(o, server);
  if (!ctx) {
    *error = std::string(side) + ": " + ctx.error().what;
    return false;
  }
  *out = ctx.take();
  return true;
}

}  // namespace

bool get_tls_options(ErlNifEnv* env, ERL_NIF_TERM map, carrier::CarrierTlsOptions* o,
                     std::string* error) {
  ERL_NIF_TERM tls;
  if (!enif_get_map_value(env, map, make_atom(env, "tls"), &tls) ||
      enif_is_identical(tls, atoms.undefined)) {
    return true;  // plain TCP
  }
  if (!enif_is_map(env, tls)) {
    *error = "not a map";
    return false;
  }
  ERL_NIF_TERM mode;
  if (enif_get_map_value(env, tls, make_atom(env, "ktls"), &mode)) {
    char name[16];
    if (enif_get_atom(env, mode, name, sizeof name, ERL_NIF_LATIN1) <= 0) name[0] = 0;
    if (std::strcmp(name, "off") == 0) {
      o->kernel = false;
    } else if (std::strcmp(name, "required") == 0) {
      o->kernel_required = true;
    } else if (std::strcmp(name, "auto") != 0) {
      *error = "ktls: not auto, required or off";
      return false;
    }
  }
  uint64_t ms = static_cast<uint64_t>(o->handshake_timeout.count());
  bool unused = false;
  if (!get_u64(env, tls, "handshake_timeout", &ms, &unused)) {
    *error = "handshake_timeout: not a non-negative integer";
    return false;
  }
  o->handshake_timeout = std::chrono::milliseconds(ms);
  return get_side(env, tls, "server", true, &o->server, error) &&
         get_side(env, tls, "client", false, &o->client, error);
}

ERL_NIF_TERM make_tls_info(ErlNifEnv* env, const carrier::TlsInfo& t) {
  if (t.version.empty()) return atoms.undefined;
  std::string protocol = t.version;  // "TLSv1.3" -> 'tlsv1.3', as ssl names it
  for (char& c : protocol) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return MapBuilder(env)
      .put("protocol", make_atom(env, protocol.c_str()))
      .put("cipher", make_string_binary(env, t.cipher))
      .put("peer_subject", make_string_binary(env, t.peer_subject))
      .put("peer_certificate", t.peer_certificate.empty()
                                   ? atoms.undefined
                                   : make_string_binary(env, t.peer_certificate))
      .put("resumed", t.resumed ? atoms.true_ : atoms.false_)
      .put("kernel_tx", t.kernel_tx ? atoms.true_ : atoms.false_)
      .put("kernel_rx", t.kernel_rx ? atoms.true_ : atoms.false_)
      .put("kernel_fallback",
           t.kernel_fallback.empty() ? atoms.undefined : make_string_binary(env, t.kernel_fallback))
      .count("records_in", t.records_in)
      .count("records_out", t.records_out)
      .count("key_updates_in", t.key_updates_in)
      .count("key_updates_out", t.key_updates_out)
      .term();
}

void put_tls_stats(ErlNifEnv* env, const carrier::CarrierStats& s, MapBuilder& m) {
  ERL_NIF_TERM reasons = enif_make_new_map(env);
  for (const auto& [why, n] : s.tls_failure_reasons) {
    enif_make_map_put(env, reasons, make_string_binary(env, why), enif_make_uint64(env, n),
                      &reasons);
  }
  m.count("tls_handshakes", s.tls_handshakes)
      .count("tls_resumptions", s.tls_resumptions)
      .count("tls_handshake_failures", s.tls_handshake_failures)
      .put("tls_failure_reasons", reasons)
      .count("ktls_installs", s.ktls_installs)
      .count("ktls_fallbacks", s.ktls_fallbacks)
      .put("ktls_fallback_reason", s.ktls_fallback_reason.empty()
                                       ? atoms.undefined
                                       : make_string_binary(env, s.ktls_fallback_reason));
}

ERL_NIF_TERM make_connection_stats(ErlNifEnv* env, const carrier::ConnectionStats& s) {
  return MapBuilder(env)
      .count("packets_in", s.packets_in)
      .count("packets_out", s.packets_out)
      .count("ticks_in", s.ticks_in)
      .count("ticks_out", s.ticks_out)
      .count("bytes_in", s.bytes_in)
      .count("bytes_out", s.bytes_out)
      .count("queued_bytes", s.queued_bytes)
      .count("recv_calls", s.recv_calls)
      .count("send_calls", s.send_calls)
      .term();
}

ERL_NIF_TERM make_pool_stats(ErlNifEnv* env, const carrier::BufferPoolStats& s) {
  return MapBuilder(env)
      .count("arenas", s.arenas)
      .count("arena_bytes", s.arena_bytes)
      .count("buffers_in_use", s.buffers_in_use)
      .count("large_in_use", s.large_in_use)
      .count("large_bytes", s.large_bytes)
      .count("misses", s.misses)
      .count("exhausted", s.exhausted)
      .count("huge_page_bytes", s.huge_page_bytes)
      .put("thp_enabled", s.thp_enabled ? atoms.true_ : atoms.false_)
      .term();
}

}  // namespace ktls::nif
