// Carrier's value types: socket addresses and outbound batches. The ring
// thread lives in ring.cc, connections in connection.cc, listeners in
// listener.cc.
#include "carrier/carrier.h"

#include <arpa/inet.h>

#include <string>

namespace ktls::carrier {

Result<SockAddr> SockAddr::parse(const std::string& ip, uint16_t port) {
  SockAddr a;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&a.storage);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
  if (inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    a.len = sizeof(sockaddr_in);
    return a;
  }
  if (inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    a.len = sizeof(sockaddr_in6);
    return a;
  }
  return Error::message("not an IP address: '" + ip + "'");
}

uint16_t SockAddr::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
  }
  return 0;
}

std::string SockAddr::ip() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, buf, sizeof buf);
  } else if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, buf,
              sizeof buf);
  }
  return buf;
}

std::string SockAddr::to_string() const {
  if (family() == AF_INET6) return "[" + ip() + "]:" + std::to_string(port());
  return ip() + ":" + std::to_string(port());
}

void OutboundBatch::add_packet(std::span<const iovec> parts) {
  uint64_t size = 0;
  for (const iovec& v : parts) {
    iov_.push_back(v);
    size += v.iov_len;
  }
  parts_.push_back(static_cast<uint32_t>(parts.size()));
  sizes_.push_back(size);
  bytes_ += size;
}

}  // namespace ktls::carrier
