#include "tools/loadgen/tls_optfile.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <fstream>
#include <sstream>

namespace ktls::loadgen {

using carrier::Error;
using carrier::Result;

namespace {

// The Erlang terms an options file holds: atoms, strings (also <<"...">>),
// integers, lists and tuples. Nothing else is needed for ssl options.
struct Term {
  enum class Kind : uint8_t { kAtom, kString, kInteger, kList, kTuple };
  Kind kind = Kind::kAtom;
  std::string text;  // atom name, string contents or integer digits
  std::vector<Term> items;
  bool is_atom(std::string_view name) const { return kind == Kind::kAtom && text == name; }
};

// A recursive-descent reader of one term followed by a full stop.
class TermReader {
 public:
  explicit TermReader(std::string_view text) : s_(text) {}

  Result<Term> read_form() {
    Term t;
    if (auto r = term(t, 0); !r) return r.error();
    skip_blank();
    if (!eat('.')) return fail("expected '.' after the term");
    return t;
  }

 private:
  Error fail(const std::string& what) const {
    return Error::message(what + " at line " + std::to_string(line()));
  }
  int line() const {
    int n = 1;
    for (size_t i = 0; i < pos_ && i < s_.size(); ++i) n += s_[i] == '\n';
    return n;
  }
  void skip_blank() {
    while (pos_ < s_.size()) {
      if (s_[pos_] == '%') {
        while (pos_ < s_.size() && s_[pos_] != '\n') ++pos_;
      } else if (std::isspace(static_cast<unsigned char>(s_[pos_]))) {
        ++pos_;
      } else {
        return;
      }
    }
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  // Characters up to the closing `quote`, with \\ and \<quote> escapes.
  Result<void> quoted(char quote, std::string& out) {
    while (pos_ < s_.size() && s_[pos_] != quote) {
      if (s_[pos_] == '\\' && pos_ + 1 < s_.size()) ++pos_;
      out += s_[pos_++];
    }
    if (!eat(quote)) return fail(std::string("unterminated ") + quote);
    return {};
  }

  // Elements up to `close`, separated by commas.
  Result<void> sequence(char close, Term& t, int depth) {
    skip_blank();
    if (eat(close)) return {};
    for (;;) {
      t.items.emplace_back();
      if (auto r = term(t.items.back(), depth + 1); !r) return r;
      skip_blank();
      if (eat(close)) return {};
      if (!eat(',')) return fail(std::string("expected ',' or '") + close + "'");
    }
  }

  Result<void> term(Term& t, int depth) {
    if (depth > 32) return fail("terms nested too deep");
    skip_blank();
    if (pos_ >= s_.size()) return fail("unexpected end of file");
    char c = s_[pos_];
    if (c == '[') {
      ++pos_;
      t.kind = Term::Kind::kList;
      return sequence(']', t, depth);
    }
    if (c == '{') {
      ++pos_;
      t.kind = Term::Kind::kTuple;
      return sequence('}', t, depth);
    }
    if (c == '"') {
      ++pos_;
      t.kind = Term::Kind::kString;
      return quoted('"', t.text);
    }
    if (c == '\'') {
      ++pos_;
      t.kind = Term::Kind::kAtom;
      return quoted('\'', t.text);
    }
    if (s_.substr(pos_, 2) == "<<") {  // <<"text">>
      pos_ += 2;
      skip_blank();
      t.kind = Term::Kind::kString;
      if (!eat('"')) return fail("only <<\"text\">> binaries are understood");
      if (auto r = quoted('"', t.text); !r) return r;
      skip_blank();
      if (s_.substr(pos_, 2) != ">>") return fail("expected '>>'");
      pos_ += 2;
      return {};
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || c == '-') {
      t.kind = Term::Kind::kInteger;
      t.text += s_[pos_++];
      while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) {
        t.text += s_[pos_++];
      }
      return {};
    }
    if (std::islower(static_cast<unsigned char>(c))) {
      t.kind = Term::Kind::kAtom;
      while (pos_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[pos_])) ||
                                  s_[pos_] == '_' || s_[pos_] == '@')) {
        t.text += s_[pos_++];
      }
      return {};
    }
    return fail(std::string("unexpected '") + c + "'");
  }

  std::string_view s_;
  size_t pos_ = 0;
};

int version_of(std::string_view name) {
  if (name == "tlsv1.2") return TLS1_2_VERSION;
  if (name == "tlsv1.3") return TLS1_3_VERSION;
  return 0;
}

Result<void> apply(const Term& key, const Term& value, ClientTlsOptions& out) {
  const std::string& k = key.text;
  auto string_value = [&](std::string& field) -> Result<void> {
    if (value.kind != Term::Kind::kString) return Error::message(k + " must be a string");
    field = value.text;
    return {};
  };
  if (k == "certfile") return string_value(out.tls.certfile);
  if (k == "keyfile") return string_value(out.tls.keyfile);
  if (k == "cacertfile") return string_value(out.tls.cacertfile);
  if (k == "verify") {
    if (value.is_atom("verify_peer")) {
      out.tls.verify_peer = true;
    } else if (value.is_atom("verify_none")) {
      out.tls.verify_peer = false;
    } else {
      return Error::message("verify must be verify_peer or verify_none");
    }
    return {};
  }
  if (k == "versions") {
    if (value.kind != Term::Kind::kList || value.items.empty()) {
      return Error::message("versions must be a non-empty list");
    }
    int lo = 0, hi = 0;
    for (const Term& v : value.items) {
      int ver = version_of(v.text);
      if (v.kind != Term::Kind::kAtom || ver == 0) {
        return Error::message("versions: '" + v.text + "' is not 'tlsv1.2' or 'tlsv1.3'");
      }
      lo = lo == 0 ? ver : std::min(lo, ver);
      hi = std::max(hi, ver);
    }
    out.tls.min_version = lo;
    out.tls.max_version = hi;
    return {};
  }
  out.ignored.push_back(k);
  return {};
}

}  // namespace

Result<ClientTlsOptions> parse_client_tls_options(std::string_view text, const std::string& path) {
  auto form = TermReader(text).read_form();
  if (!form) return Error::message(path + ": " + form.error().what);
  const Term& top = form.value();
  if (top.kind != Term::Kind::kList) {
    return Error::message(path + ": not a list [{server, Opts}, {client, Opts}]");
  }
  const Term* client = nullptr;
  for (const Term& side : top.items) {
    if (side.kind == Term::Kind::kTuple && side.items.size() == 2 &&
        side.items[0].is_atom("client")) {
      client = &side.items[1];
    }
  }
  if (client == nullptr || client->kind != Term::Kind::kList) {
    return Error::message(path + ": no {client, Opts} with a list of options");
  }
  ClientTlsOptions out;
  out.tls.verify_peer = false;  // ssl's default for a client in OTP 25
  out.tls.fail_if_no_peer_cert = false;
  for (const Term& opt : client->items) {
    if (opt.kind != Term::Kind::kTuple || opt.items.size() != 2 ||
        opt.items[0].kind != Term::Kind::kAtom) {
      return Error::message(path + ": client options must be {Key, Value} tuples");
    }
    if (auto r = apply(opt.items[0], opt.items[1], out); !r) {
      return Error::message(path + ": client " + r.error().what);
    }
  }
  if (out.tls.certfile.empty()) return Error::message(path + ": client has no certfile");
  return out;
}

Result<ClientTlsOptions> read_client_tls_optfile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error::from_errno(errno, "open " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_client_tls_options(text.str(), path);
}

}  // namespace ktls::loadgen
