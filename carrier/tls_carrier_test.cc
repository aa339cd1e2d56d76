// TLS on real loopback sockets, against peers that misbehave: a plain
// peer, certificates of another CA or expired, a user-space OpenSSL peer
// that sends KeyUpdate or close_notify mid-stream, tampered records, and
// a peer that stalls mid-handshake, and many failed handshakes (no
// descriptors or memory left behind).
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <malloc.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "carrier/carrier.h"
#include "carrier/test_pki.h"
#include "carrier/test_support.h"

namespace ktls::carrier {
namespace {

using namespace std::chrono_literals;

std::shared_ptr<TlsContext> context(const TlsOptions& o, bool server) {
  auto c = TlsContext::create(o, server);
  EXPECT_TRUE(c.ok()) << (c.ok() ? "" : c.error().what);
  return c.ok() ? c.take() : nullptr;
}

// A carrier whose listener is a TLS server; its accepted connections are
// given `events` and stream dist packets.
class TlsCarrierTest : public ::testing::Test, public ListeningCarrier {
 protected:
  void SetUp() override { start(options("client")); }
  void start(const TlsOptions& client, CarrierOptions o = {}) {
    o.tls.server = context(options("server"), true);
    o.tls.client = context(client, false);
    // The user-space record layer on any kernel (a kTLS socket cannot
    // follow a KeyUpdate: ktls_kernel_test covers the kernel's side).
    o.tls.kernel = false;
    start_listening(o);
  }
  // An OpenSSL client with the first CA's client certificate, its TLS
  // handshake done; `server` is its connection here.
  std::unique_ptr<OpenSslPeer> openssl_peer() {
    auto peer = std::make_unique<OpenSslPeer>(raw_connect(), options("client"));
    server = next_server();
    EXPECT_EQ(peer->handshake(), "");
    return peer;
  }
  // One packet each way between `client` (events in `ce`) and `server`:
  // the server's ticket, sent before its packet, is in at the client.
  void packets_both_ways(Connection& client, Events& ce) {
    client.set_framing(Framing::kDist);
    client.start_streaming(RxMode::kRing);
    const size_t before = events->packets.size();
    const size_t ce_before = ce.packets.size();
    send_strings(client, {"to server"});
    send_strings(*server, {"to client"});
    ASSERT_TRUE(events->wait([&] { return events->packets.size() == before + 1; }));
    ASSERT_TRUE(ce.wait([&] { return ce.packets.size() == ce_before + 1; }));
    EXPECT_EQ(ce.packets.back(), "to client");
  }

  std::shared_ptr<Connection> server;
};

TEST_F(TlsCarrierTest, TlsInfoAndKernelFallbackAreReported) {
  listener->accept();
  auto client_events = std::make_shared<Events>();
  auto client = carrier->connect(listener->local(), 5000ms, client_events);
  ASSERT_TRUE(client_events->wait([&] { return client_events->connected; }));
  EXPECT_EQ(client_events->connect_error, "");
  server = next_server();
  TlsInfo info = client->tls_info();
  EXPECT_EQ(info.version, "TLSv1.3");
  EXPECT_NE(info.peer_subject.find("server@127.0.0.1"), std::string::npos) << info.peer_subject;
  // Either the kernel took both directions or the reason why not is kept.
  EXPECT_EQ(info.kernel_tx && info.kernel_rx, info.kernel_fallback.empty()) << info.kernel_fallback;
  // The peer's certificate, DER (a SEQUENCE with a two-byte length).
  ASSERT_GT(info.peer_certificate.size(), 100u);
  EXPECT_EQ(uint8_t(info.peer_certificate[0]), 0x30);
  EXPECT_EQ(uint8_t(info.peer_certificate[1]), 0x82);
  CarrierStats s = carrier->stats();
  EXPECT_GE(s.tls_handshakes, 1u);
  EXPECT_EQ(s.ktls_installs + s.ktls_fallbacks, s.tls_handshakes);
}

// TLS 1.3 resumption: every connection after the first to the same
// address resumes with the ticket the server sent after the previous
// handshake, and dist packets cross both ways after it (the ticket, read
// by OpenSSL before the hand-over, counts in the sequence numbers).
TEST_F(TlsCarrierTest, LaterConnectionsResumeWithTheTicket) {
  for (int i = 0; i < 3; i++) {
    listener->accept();
    auto ce = std::make_shared<Events>();
    auto client = carrier->connect(listener->local(), 5000ms, ce);
    ASSERT_TRUE(ce->wait([&] { return ce->connected; }));
    ASSERT_EQ(ce->connect_error, "");
    server = next_server();
    const TlsInfo info = client->tls_info();
    EXPECT_EQ(info.resumed, i > 0) << "connection " << i;
    // A resumed session still knows the peer's certificate (trust rules
    // and verify_node_name read it).
    EXPECT_NE(info.peer_subject.find("server@127.0.0.1"), std::string::npos) << info.peer_subject;
    client->set_framing(Framing::kDist);
    client->start_streaming(RxMode::kRing);
    send_strings(*client, {"to server " + std::to_string(i)});
    send_strings(*server, {"to client " + std::to_string(i)});
    ASSERT_TRUE(events->wait([&] { return events->packets.size() == size_t(i) + 1; }));
    ASSERT_TRUE(ce->wait([&] { return ce->packets.size() == 1; }));
    EXPECT_EQ(events->packets.back(), "to server " + std::to_string(i));
    EXPECT_EQ(ce->packets.back(), "to client " + std::to_string(i));
    EXPECT_EQ(server->tls_info().resumed, i > 0);
    EXPECT_NE(server->tls_info().peer_subject.find("client@127.0.0.1"), std::string::npos);
    client->close("done");
    server->close("done");
  }
  // Both ends of the two resumed connections count.
  EXPECT_EQ(carrier->stats().tls_resumptions, 4u);
}

// A ClientHello made ahead (Carrier::hello, while the caller looks the
// peer's address up) starts the handshake; tickets are kept under the
// session key (the peer's node name), not the address: the same key
// resumes, another does not.
TEST_F(TlsCarrierTest, HelloMadeAheadAndTicketsKeptUnderTheSessionKey) {
  const struct {
    const char* key;
    bool ahead, resumed;
  } steps[] = {{"a@127.0.0.1", true, false},
               {"a@127.0.0.1", true, true},
               {"b@127.0.0.1", false, false},
               {"a@127.0.0.1", false, true}};
  for (const auto& st : steps) {
    SCOPED_TRACE(std::string(st.key) + (st.ahead ? " ahead" : ""));
    listener->accept();
    auto ce = std::make_shared<Events>();
    std::unique_ptr<TlsHello> hello;
    if (st.ahead) {
      hello = carrier->hello(st.key);
      ASSERT_TRUE(hello);
    }
    auto client = carrier->connect(listener->local(), 5000ms, ce, st.key, std::move(hello));
    ASSERT_TRUE(ce->wait([&] { return ce->connected; }));
    ASSERT_EQ(ce->connect_error, "");
    server = next_server();
    EXPECT_EQ(client->tls_info().resumed, st.resumed);
    packets_both_ways(*client, *ce);
    client->close("done");
    server->close("done");
  }
}

// A client connection that ends leaves the next ClientHello to its peer
// made (the ring thread makes it when idle, from the ticket it kept), and
// that hello resumes; without a ticket (a key never connected) nothing is
// made ahead.
TEST_F(TlsCarrierTest, NextHelloMadeAheadWhenAConnectionEnds) {
  const std::string key = "c@127.0.0.1";
  EXPECT_FALSE(carrier->prepared_hello(key));
  std::unique_ptr<TlsHello> hello;  // the first connection has none
  for (int i = 0; i < 3; i++) {
    SCOPED_TRACE(i);
    listener->accept();
    auto ce = std::make_shared<Events>();
    auto client = carrier->connect(listener->local(), 5000ms, ce, key, std::move(hello));
    ASSERT_TRUE(ce->wait([&] { return ce->connected; }));
    ASSERT_EQ(ce->connect_error, "");
    server = next_server();
    EXPECT_EQ(client->tls_info().resumed, i > 0);
    packets_both_ways(*client, *ce);
    client->close("done");
    server->close("done");
    ASSERT_TRUE(ce->wait([&] { return ce->closed > 0; }));
    // Made by the ring thread once it is idle. try_prepared_hello never
    // waits: while the hello is in the making it says so (the NIF then
    // waits on a dirty scheduler with prepared_hello, which returns it).
    ASSERT_TRUE(eventually(
        [&] {
          bool in_the_making = false;
          hello = carrier->try_prepared_hello(key, in_the_making);
          if (in_the_making) {
            EXPECT_FALSE(hello);
            hello = carrier->prepared_hello(key);
            EXPECT_TRUE(hello) << "the hello that was in the making";
          }
          return hello != nullptr;
        },
        2s))
        << "no ClientHello made ahead after the connection ended";
  }
  EXPECT_FALSE(carrier->prepared_hello("never@127.0.0.1"));
  bool in_the_making = true;
  EXPECT_FALSE(carrier->try_prepared_hello("never@127.0.0.1", in_the_making));
  EXPECT_FALSE(in_the_making);
  in_the_making = true;
  EXPECT_FALSE(carrier->try_prepared_hello("", in_the_making));
  EXPECT_FALSE(in_the_making);
}

// A resumed client is connected, and sends, before the server's ticket
// arrives (the server here holds it back); the ticket, read afterwards,
// still counts in the receiving direction's sequence numbers. A full
// handshake waits for it (the server may still refuse our certificate).
TEST_F(TlsCarrierTest, ResumedClientSendsBeforeTheTicket) {
  auto server_ctx = context(options("server"), true);
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  SockAddr addr = SockAddr::parse("127.0.0.1", 0).value();
  ASSERT_EQ(::bind(lfd, reinterpret_cast<const sockaddr*>(&addr.storage), addr.len), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  ASSERT_EQ(::getsockname(lfd, reinterpret_cast<sockaddr*>(&addr.storage), &addr.len), 0);
  for (int i = 0; i < 2; i++) {
    SCOPED_TRACE(i == 0 ? "full handshake" : "resumed");
    auto ce = std::make_shared<Events>();
    auto client = carrier->connect(addr, 5000ms, ce);
    auto s = TlsSession::create(server_ctx);
    ASSERT_TRUE(s.ok());
    OpenSslPeer peer(::accept(lfd, nullptr, nullptr), s.take());
    // The server's handshake, its last output (the ticket) not sent.
    for (int round = 0;; round++) {
      ASSERT_LT(round, 10);
      auto done = peer.session_().handshake();
      ASSERT_TRUE(done.ok()) << done.error().what;
      if (done.value()) break;
      peer.flush();
      ASSERT_TRUE(peer.read_some());
    }
    if (i == 0) {
      EXPECT_FALSE(ce->wait([&] { return ce->connected; }, 300ms));
      peer.flush();  // the ticket
    }
    ASSERT_TRUE(ce->wait([&] { return ce->connected; }));
    ASSERT_EQ(ce->connect_error, "");
    EXPECT_EQ(client->tls_info().resumed, i == 1);
    client->set_framing(Framing::kDist);
    client->start_streaming(RxMode::kRing);
    send_strings(*client, {"to server"});
    EXPECT_EQ(peer.read_plain(13), std::string("\0\0\0\x09to server", 13));
    if (i == 1) peer.flush();  // the ticket, after the client's first packet
    peer.send_packet("to client");
    ASSERT_TRUE(ce->wait([&] { return ce->packets.size() == 1; })) << ce->close_reason;
    EXPECT_EQ(ce->packets[0], "to client");
    client->close("done");
  }
  ::close(lfd);
}

// A client of a server without tickets (a stock peer: no ALPN answer) does
// not wait for one, and a client with session_tickets off offers none.
TEST_F(TlsCarrierTest, WithoutTicketsEveryHandshakeIsFull) {
  carrier.reset();
  TlsOptions client = options("client");
  client.session_tickets = false;
  start(client);
  for (int i = 0; i < 2; i++) {
    listener->accept();
    auto ce = std::make_shared<Events>();
    auto c = carrier->connect(listener->local(), 5000ms, ce);
    ASSERT_TRUE(ce->wait([&] { return ce->connected; }));
    ASSERT_EQ(ce->connect_error, "");
    server = next_server();
    EXPECT_FALSE(c->tls_info().resumed);
    c->close("done");
  }
  EXPECT_EQ(carrier->stats().tls_resumptions, 0u);
}

TEST_F(TlsCarrierTest, PlainPeerOnTheTlsPortIsNamed) {
  int fd = raw_connect();
  server = next_server();
  const uint8_t send_name[] = {0, 12, 'N', 0, 0, 0, 0, 0, 0, 0, 0, 'a', '@', 'h'};
  ASSERT_EQ(::write(fd, send_name, sizeof send_name), ssize_t(sizeof send_name));
  const std::string why = server_close_reason();
  EXPECT_NE(why.find("TLS handshake with 127.0.0.1:"), std::string::npos) << why;
  EXPECT_NE(why.find("plain distribution handshake"), std::string::npos) << why;
  ::close(fd);
}

TEST_F(TlsCarrierTest, TlsPeerOnAPlainPortIsNamed) {
  carrier.reset();
  start_listening(CarrierOptions{});  // no TLS
  OpenSslPeer peer(raw_connect(), options("client"));
  ASSERT_TRUE(events->wait([&] { return !events->accepted.empty(); }));
  server = events->accepted.front();
  server->set_observer(events);
  server->start_streaming(RxMode::kRing);  // a plain dist handshake is expected
  EXPECT_NE(peer.handshake(), "");         // its ClientHello gets no answer
  const std::string why = server_close_reason();
  EXPECT_NE(why.find("speaks TLS (16 03), this node does not"), std::string::npos) << why;
}

TEST_F(TlsCarrierTest, GarbageIsRefused) {
  int fd = raw_connect();
  server = next_server();
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  ASSERT_EQ(::write(fd, junk.data(), junk.size()), ssize_t(junk.size()));
  EXPECT_NE(server_close_reason().find("not a TLS record"), std::string::npos);
  ::close(fd);
}

TEST_F(TlsCarrierTest, CertificateOfAnotherCaIsRefusedBothSides) {
  carrier.reset();
  start(options("stranger"));  // a client certificate of another CA
  listener->accept();
  auto client_events = std::make_shared<Events>();
  auto client = carrier->connect(listener->local(), 5000ms, client_events);
  // TLS 1.3: the client is done before the server has checked its
  // certificate; the server's alert then closes it, named.
  ASSERT_TRUE(client_events->wait([&] { return client_events->connected; }));
  client->set_framing(Framing::kDist);
  client->start_streaming(RxMode::kRing);
  next_server();
  const std::string why = server_close_reason();
  EXPECT_NE(why.find("TLS handshake"), std::string::npos) << why;
  EXPECT_NE(why.find("certificate"), std::string::npos) << why;
  ASSERT_TRUE(client_events->wait([&] { return client_events->closed > 0; }));
  EXPECT_NE(client_events->close_reason.find("sent TLS alert unknown_ca"), std::string::npos)
      << client_events->close_reason;
  EXPECT_GE(carrier->stats().tls_handshake_failures, 1u);
}

TEST_F(TlsCarrierTest, ExpiredCertificateIsRefused) {
  TlsOptions o = options("expired");
  o.verify_peer = false;  // the client itself does not check: the server must
  OpenSslPeer peer(raw_connect(), o);
  server = next_server();
  peer.handshake();
  const std::string why = server_close_reason();
  EXPECT_NE(why.find("certificate has expired"), std::string::npos) << why;
}

// inet_tls_dist runs the dist handshake with {packet, 4} inside TLS (not
// the 2-byte lengths of inet_tcp_dist): so does a TLS connection here.
TEST_F(TlsCarrierTest, HandshakePacketsHaveFourByteLengthsInsideTls) {
  OpenSslPeer peer(raw_connect(), options("client"));
  ASSERT_TRUE(events->wait([&] { return !events->accepted.empty(); }));
  server = events->accepted.front();
  events->accepted.clear();
  server->set_observer(events);
  server->start_streaming(RxMode::kRing);  // framing stays Framing::kHandshake
  ASSERT_EQ(peer.handshake(), "");
  peer.send_packet("N-name");
  ASSERT_TRUE(events->wait([&] { return events->packets.size() == 1; }));
  EXPECT_EQ(events->packets[0], "N-name");
  OutboundBatch b;
  std::string reply = "sok";
  iovec v{reply.data(), reply.size()};
  b.add_packet({&v, 1});
  ASSERT_TRUE(server->send(std::move(b)).ok());
  EXPECT_EQ(peer.read_plain(7), std::string("\0\0\0\3sok", 7));
}

TEST_F(TlsCarrierTest, OversizedDistPacketInsideTlsClosesNamingIt) {
  auto peer = openssl_peer();
  peer->send_packet("fine");
  const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 'x'};
  ASSERT_TRUE(peer->session_().encrypt({huge, sizeof huge}).ok());
  peer->flush();
  const std::string why = server_close_reason();
  EXPECT_EQ(events->packets, std::vector<std::string>{"fine"});
  EXPECT_NE(why.find("oversized dist packet"), std::string::npos) << why;
}

TEST_F(TlsCarrierTest, KeyUpdateFromAnOpenSslPeerIsFollowedAndAnswered) {
  auto peer = openssl_peer();
  peer->send_packet("before");
  ASSERT_TRUE(peer->session_().key_update(true).ok());  // and asks for ours
  peer->send_packet("after");
  ASSERT_TRUE(events->wait([&] { return events->packets.size() == 2; }));
  EXPECT_EQ(events->packets, (std::vector<std::string>{"before", "after"}));
  // Our answer (a KeyUpdate of ours) precedes the reply: OpenSSL reads it.
  OutboundBatch b;
  std::string reply = "reply";
  iovec v{reply.data(), reply.size()};
  b.add_packet({&v, 1});
  ASSERT_TRUE(server->send(std::move(b)).ok());
  EXPECT_EQ(peer->read_plain(9), std::string("\0\0\0\5reply", 9));
  EXPECT_EQ(server->tls_info().key_updates_in, 1u);
  EXPECT_EQ(server->tls_info().key_updates_out, 1u);
}

TEST_F(TlsCarrierTest, CloseNotifyMidStreamClosesNamingIt) {
  auto peer = openssl_peer();
  peer->send_packet("last");
  peer->session_().close_notify();
  peer->flush();
  const std::string why = server_close_reason();
  EXPECT_EQ(events->packets, std::vector<std::string>{"last"});
  EXPECT_NE(why.find("close_notify"), std::string::npos) << why;
}

TEST_F(TlsCarrierTest, TamperedRecordClosesWithBadRecordMac) {
  auto peer = openssl_peer();
  const std::string body = "payload";
  std::string framed = std::string("\0\0\0\7", 4) + body;
  ASSERT_TRUE(peer->session_()
                  .encrypt({reinterpret_cast<const uint8_t*>(framed.data()), framed.size()})
                  .ok());
  std::vector<uint8_t> rec;
  peer->session_().take_ciphertext(rec);
  rec[rec.size() - 2] ^= 0x40;
  ASSERT_EQ(::write(peer->fd(), rec.data(), rec.size()), ssize_t(rec.size()));
  const std::string why = server_close_reason();
  EXPECT_NE(why.find("bad_record_mac"), std::string::npos) << why;
  EXPECT_TRUE(events->packets.empty());
}

TEST_F(TlsCarrierTest, StalledHandshakeTimesOut) {
  carrier.reset();
  CarrierOptions o;
  o.tls.handshake_timeout = 300ms;
  start(options("client"), o);
  const auto t0 = std::chrono::steady_clock::now();
  int fd = raw_connect();  // and then nothing
  server = next_server();
  const std::string why = server_close_reason();
  EXPECT_NE(why.find("no handshake within 300 ms (the peer stalled)"), std::string::npos) << why;
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 300ms);
  EXPECT_EQ(carrier->stats().tls_handshake_failures, 1u);
  ::close(fd);
}

TEST_F(TlsCarrierTest, FinishedHandshakeCancelsItsTimer) {
  carrier.reset();
  CarrierOptions o;
  o.tls.handshake_timeout = 200ms;
  start(options("client"), o);
  auto peer = openssl_peer();
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(events->closed, 0);
  EXPECT_EQ(carrier->stats().tls_handshake_failures, 0u);
}

TEST_F(TlsCarrierTest, KernelRequiredRefusesAUserSpaceRecordLayer) {
  carrier.reset();
  CarrierOptions o;  // the kernel if it can (unlike start())
  o.tls.server = context(options("server"), true);
  o.tls.client = context(options("client"), false);
  o.tls.kernel_required = true;
  const std::string why = kernel_tls_unavailable();
  if (!why.empty()) {
    // A kernel without kTLS (this development VM): the carrier does not
    // start at all, with the reason.
    auto refused = Carrier::start(o);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().what, "kernel TLS is required (ktls required), but " + why);
    return;
  }
  start_listening(o);
  listener->accept();
  auto client_events = std::make_shared<Events>();
  auto client = carrier->connect(listener->local(), 5000ms, client_events);
  ASSERT_TRUE(client_events->wait([&] { return client_events->connected; }));
  const TlsInfo info = client->tls_info();
  if (client_events->connect_error.empty()) {
    // A kernel with kTLS (the QEMU guest): both directions are in it.
    EXPECT_TRUE(info.kernel_tx && info.kernel_rx) << info.kernel_fallback;
  } else {
    EXPECT_NE(client_events->connect_error.find("kernel TLS is required (ktls required), but "),
              std::string::npos)
        << client_events->connect_error;
    EXPECT_GE(carrier->stats().tls_handshake_failures, 1u);
  }
}

// Bytes malloc has handed out and not got back, over all arenas (RSS is
// no measure here: glibc keeps freed memory of its per-thread arenas).
size_t heap_in_use() {
  const struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

TEST_F(TlsCarrierTest, FailedHandshakesLeaveNoDescriptorsNorMemory) {
  auto fail_rounds = [&](int rounds) {
    for (int i = 0; i < rounds; i++) {
      int fd = raw_connect();
      const uint8_t junk[] = {0, 5, 'n', 1, 2, 3, 4};
      ASSERT_EQ(::write(fd, junk, sizeof junk), ssize_t(sizeof junk));
      ::close(fd);
    }
    ASSERT_TRUE(events->wait([&] { return events->accepted.size() == size_t(rounds); }, 60s));
    for (auto& c : events->accepted) c->set_observer(events);  // closed: reported here
    ASSERT_TRUE(events->wait([&] { return events->closed == rounds; }, 60s)) << events->closed;
    std::lock_guard l(events->mu);
    events->accepted.clear();
    events->closed = 0;
  };
  // The first round grows the buffer pool's arenas to the peak of
  // connections open at once (kept for reuse, by design); the second must
  // not grow anything.
  constexpr int kRounds = 1000;
  fail_rounds(kRounds);
  const size_t before = open_fds();
  const size_t heap_before = heap_in_use();
  const uint64_t arena_before = carrier->stats().pool.arena_bytes;
  fail_rounds(kRounds);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (open_fds() > before && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_LE(open_fds(), before);
  // 1,000 sessions kept would be over 10 MiB; allow allocator noise.
  EXPECT_LT(heap_in_use(), heap_before + (1u << 20)) << "heap in use grew from " << heap_before;
  EXPECT_LE(carrier->stats().pool.arena_bytes, arena_before);
  EXPECT_EQ(carrier->stats().tls_handshake_failures, uint64_t{2 * kRounds});
  EXPECT_EQ(carrier->stats().connections_open, 0u);
}

}  // namespace
}  // namespace ktls::carrier
