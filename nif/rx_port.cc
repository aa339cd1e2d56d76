// The NIF side of receive ports (see rx_port.h): tokens and claims.
#include "nif/rx_port.h"

#include <erl_nif.h>

#include <atomic>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "nif/resources.h"

namespace ktls::nif {
namespace {

// Tokens not yet claimed; each entry holds a reference to its resource.
struct Tokens {
  std::mutex mu;
  std::unordered_map<uint64_t, ConnRes*> open;
  // Unique while the library is loaded (a token is not a secret: any local
  // process may open ports anyway).
  std::atomic<uint64_t> next{0x6b746c73'00000001ull};
};
Tokens& tokens() {
  static Tokens t;
  return t;
}

}  // namespace

uint64_t rx_port_token(ConnRes* res) {
  Tokens& t = tokens();
  const uint64_t token = t.next.fetch_add(0x9e3779b1ull, std::memory_order_relaxed);
  enif_keep_resource(res);
  std::lock_guard lock(t.mu);
  t.open.emplace(token, res);
  return token;
}

void rx_port_forget(ConnRes* res) {
  Tokens& t = tokens();
  std::vector<ConnRes*> drop;
  {
    std::lock_guard lock(t.mu);
    for (auto it = t.open.begin(); it != t.open.end();) {
      if (it->second == res) {
        drop.push_back(it->second);
        it = t.open.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (ConnRes* r : drop) enif_release_resource(r);
}

namespace rx_port {

struct Claim {
  ConnRes* res;  // one reference, released by release()
};

namespace {
// Descriptors in the VM's pollset, by number, with the claim that lent each.
// A number is unique here: the socket stays open until it is returned.
struct Lent {
  std::mutex mu;
  std::unordered_map<int, Claim*> by_fd;
};
Lent& lent() {
  static Lent l;
  return l;
}
}  // namespace

Claim* claim(uint64_t token) {
  Tokens& t = tokens();
  ConnRes* res = nullptr;
  {
    std::lock_guard lock(t.mu);
    auto it = t.open.find(token);
    if (it == t.open.end()) return nullptr;
    res = it->second;  // the token's reference becomes the claim's
    t.open.erase(it);
  }
  auto c = std::make_unique<Claim>(Claim{res});
  return c.release();  // owned by the port until release()
}

int lend_fd(Claim* c) {
  auto fd = c->res->conn->lend_poll_fd();
  if (!fd.ok()) return -1;
  Lent& l = lent();
  std::lock_guard lock(l.mu);
  l.by_fd[fd.value()] = c;
  return fd.value();
}

bool fd_out_of_pollset(int fd) {
  Claim* c = nullptr;
  {
    Lent& l = lent();
    std::lock_guard lock(l.mu);
    auto it = l.by_fd.find(fd);
    if (it == l.by_fd.end()) return false;
    c = it->second;
    l.by_fd.erase(it);
  }
  c->res->conn->return_poll_fd();
  release(c);
  return true;
}

carrier::RxStep receive(Claim* c) { return c->res->conn->receive_now(); }

void release(Claim* c) {
  std::unique_ptr<Claim> owned(c);
  enif_release_resource(owned->res);
}

}  // namespace rx_port
}  // namespace ktls::nif
