// kTLS on a kernel that has it: after the handshake the carrier hands both
// directions of every TLS connection to the kernel (TCP_ULP "tls", TLS_TX,
// TLS_RX), dist packets then pass through the kernel's record layer byte
// for byte on both receive paths, a user-space OpenSSL peer reads what the
// kernel sealed and the kernel opens what OpenSSL sealed, and records that
// are not data (alerts, NewSessionTicket, KeyUpdate) take the paths
// DESIGN.md describes (ConnectionImpl::kernel_control_record).
//
// The development kernel has no CONFIG_TLS: there every test skips and
// says why. `./ktls test` runs this binary in a QEMU guest booting Debian's
// 6.1 kernel (stage vm, tests/vm/) with KTLS_REQUIRE_KERNEL_TLS=1, which
// turns a kernel without kTLS into a failure.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/tcp.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "carrier/carrier.h"
#include "carrier/test_pki.h"
#include "carrier/test_support.h"

namespace ktls::carrier {
namespace {

using namespace std::chrono_literals;

// -- the kernel --------------------------------------------------------------

// Empty when this kernel takes TCP_ULP "tls" on a connected TCP socket,
// else why not (the carrier's own probe; this test also wants the module's
// statistics, which it reads).
std::string probe_kernel_tls() {
  if (::access("/proc/net/tls_stat", R_OK) != 0) {
    return "no /proc/net/tls_stat (the tls module is not loaded, or no CONFIG_TLS)";
  }
  return kernel_tls_unavailable();
}

const std::string& kernel_tls_missing() {
  static const std::string why = probe_kernel_tls();
  return why;
}

// The counters of /proc/net/tls_stat ("TlsTxSw" -> 12).
std::map<std::string, uint64_t> tls_stat() {
  std::map<std::string, uint64_t> m;
  std::ifstream f("/proc/net/tls_stat");
  std::string name;
  uint64_t value;
  while (f >> name >> value) m[name] = value;
  return m;
}

// The TCP upper-layer protocol of a connection's socket ("tls"), read
// through the descriptor the carrier lends to a poller.
std::string ulp_of(Connection& c) {
  auto fd = c.lend_poll_fd();
  if (!fd.ok()) return "error: " + fd.error().what;
  char ulp[32] = {};
  socklen_t len = sizeof ulp - 1;
  std::string r = ::getsockopt(fd.value(), SOL_TCP, TCP_ULP, ulp, &len) == 0
                      ? std::string(ulp)
                      : std::string("error: ") + std::strerror(errno);
  c.return_poll_fd();
  return r;
}

// -- payloads ----------------------------------------------------------------

// `n` bytes that depend on their position and `seed`, so a lost, repeated
// or reordered record shows.
std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; i++) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

// Dist packets of every size class: many small ones (they share records),
// sizes around one record's plaintext (16 KiB), and one of `big` bytes
// (hundreds of records).
std::vector<std::string> packets(size_t big, uint32_t seed) {
  std::vector<std::string> v;
  for (uint32_t i = 0; i < 400; i++) v.push_back(pattern((i * 37) % 3000 + 1, seed + i));
  for (uint32_t i = 0; i < 8; i++) v.push_back(pattern(16384 - 8 + 2 * i, seed + 1000 + i));
  v.push_back(pattern(big, seed + 2000));
  v.push_back("last");
  return v;
}

// Byte-exact, without printing megabytes when it is not.
::testing::AssertionResult same_packets(const std::vector<std::string>& got,
                                        const std::vector<std::string>& want) {
  if (got.size() != want.size()) {
    return ::testing::AssertionFailure()
           << got.size() << " packets arrived, " << want.size() << " were sent";
  }
  for (size_t i = 0; i < got.size(); i++) {
    if (got[i] == want[i]) continue;
    size_t at = 0;
    while (at < got[i].size() && at < want[i].size() && got[i][at] == want[i][at]) at++;
    return ::testing::AssertionFailure()
           << "packet " << i << " differs: " << got[i].size() << " bytes arrived, "
           << want[i].size() << " were sent, first difference at byte " << at;
  }
  return ::testing::AssertionSuccess();
}

// The wire form of dist packets: each with its 4-byte length.
std::string framed(const std::vector<std::string>& ps) {
  std::string out;
  for (const auto& p : ps) {
    for (int i = 0; i < 4; i++) out.push_back(static_cast<char>(p.size() >> (8 * (3 - i))));
    out += p;
  }
  return out;
}

// -- fixture -----------------------------------------------------------------

struct Suite {
  int version;       // TLS1_3_VERSION | TLS1_2_VERSION
  std::string name;  // OpenSSL's name of the suite
};

std::string version_name(int v) { return v == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2"; }

void PrintTo(const Suite& s, std::ostream* os) { *os << version_name(s.version) << " " << s.name; }

// Two carrier connections to each other, streaming dist packets.
struct Pair {
  std::shared_ptr<Connection> client, server;
  std::shared_ptr<Recorder> crec = std::make_shared<Recorder>();
  std::shared_ptr<Events> srec;
  std::unique_ptr<CallerPoller> cpoll, spoll;  // RxMode::kCaller; destroyed first
  ~Pair() {
    cpoll.reset();
    spoll.reset();
  }
};

// One carrier with a TLS listener and a TLS connector, both allowing only
// the suite under test.
class KernelTls : public ::testing::TestWithParam<Suite>, public ListeningCarrier {
 protected:
  void SetUp() override {
    const std::string& why = kernel_tls_missing();
    if (!why.empty()) {
      if (std::getenv("KTLS_REQUIRE_KERNEL_TLS")) {
        FAIL() << "this kernel has no kTLS, but KTLS_REQUIRE_KERNEL_TLS is set: " << why;
      }
      static bool said = false;  // once per run, loud; each test then says why briefly
      if (!said) {
        said = true;
        std::fprintf(stderr,
                     "\n*****************************************************************\n"
                     "*** SKIPPED: ktls_kernel_test needs a kernel with kTLS: %s.\n"
                     "*** It runs in the QEMU guest: KTLS_TEST_STAGES=vm ./ktls test\n"
                     "*** (tests/vm/README.md).\n"
                     "*****************************************************************\n\n",
                     why.c_str());
      }
      GTEST_SKIP() << "no kernel TLS here: " << why;
    }
    stat_before = tls_stat();
    const Suite& s = GetParam();
    CarrierOptions o;
    auto server = TlsContext::create(options("server", s.version, s.name), true);
    auto client = TlsContext::create(options("client", s.version, s.name), false);
    ASSERT_TRUE(server.ok()) << server.error().what;
    ASSERT_TRUE(client.ok()) << client.error().what;
    o.tls.server = server.take();
    o.tls.client = client.take();
    start_listening(o);
  }

  // Two connections of this carrier, TLS done, both reading in `mode`.
  std::unique_ptr<Pair> connect_pair(RxMode mode) {
    auto p = std::make_unique<Pair>();
    p->srec = events;
    listener->accept();
    p->client = carrier->connect(listener->local(), 10s, p->crec);
    EXPECT_TRUE(p->crec->wait([&] { return p->crec->connected; }, 30s));
    EXPECT_EQ(p->crec->connect_error, "");
    p->server = next_server(mode);
    if (!p->server) return p;
    p->client->set_framing(Framing::kDist);
    p->client->start_streaming(mode);
    // The server's side of the handshake may end a moment after the client's,
    // and a resumed client's receiving direction after its on_connected.
    EXPECT_TRUE(eventually([&] { return !p->server->tls_info().version.empty(); }, 30s));
    EXPECT_TRUE(eventually(
        [&] {
          TlsInfo i = p->client->tls_info();
          return i.kernel_rx || !i.kernel_fallback.empty();
        },
        30s));
    if (mode == RxMode::kCaller) {
      p->cpoll = std::make_unique<CallerPoller>(p->client);
      p->spoll = std::make_unique<CallerPoller>(p->server);
    }
    return p;
  }

  // An OpenSSL client (user space) with its TLS handshake done against the
  // listener; `server` is its connection here, reading in `mode`.
  std::unique_ptr<OpenSslPeer> openssl_peer(RxMode mode) {
    const Suite& s = GetParam();
    auto peer = std::make_unique<OpenSslPeer>(raw_connect(), options("client", s.version, s.name));
    server = next_server(mode);
    if (!server) return peer;
    EXPECT_EQ(peer->handshake(), "");
    EXPECT_TRUE(eventually([&] { return !server->tls_info().version.empty(); }, 30s));
    if (mode == RxMode::kCaller) poller = std::make_unique<CallerPoller>(server);
    return peer;
  }

  // The kernel has both directions of `c`, with the suite under test.
  void expect_kernel(Connection& c) {
    const Suite& s = GetParam();
    TlsInfo i = c.tls_info();
    EXPECT_EQ(i.version, version_name(s.version));
    EXPECT_EQ(i.cipher, s.name);
    EXPECT_TRUE(i.kernel_tx) << i.kernel_fallback;
    EXPECT_TRUE(i.kernel_rx) << i.kernel_fallback;
    EXPECT_EQ(i.kernel_fallback, "");
    EXPECT_EQ(ulp_of(c), "tls");
  }

  // No record went through the user-space record layer of `c`.
  static void expect_no_user_records(Connection& c) {
    TlsInfo i = c.tls_info();
    EXPECT_EQ(i.records_out, 0u);
    EXPECT_EQ(i.records_in, 0u);
  }

  // /proc/net/tls_stat since SetUp: `sockets` more kTLS sockets each way in
  // software (no offload device in a guest), none failing to decrypt.
  void expect_tls_stat_moved(uint64_t sockets) {
    auto now = tls_stat();
    for (const char* k : {"TlsTxSw", "TlsRxSw"}) {
      EXPECT_GE(now[k], stat_before[k] + sockets) << k;
    }
    for (const char* k : {"TlsCurrTxSw", "TlsCurrRxSw"}) EXPECT_GE(now[k], sockets) << k;
    EXPECT_EQ(now["TlsDecryptError"], stat_before["TlsDecryptError"]);
  }

  // Packets both ways at once, compared byte for byte.
  void round_trip(Pair& p, size_t big) {
    const auto up = packets(big, 1), down = packets(big + 12345, 7);
    send_strings(*p.client, up);
    send_strings(*p.server, down);
    // 120 s for a TCG guest; a close ends the wait at once.
    EXPECT_TRUE(
        p.srec->wait([&] { return p.srec->packets.size() >= up.size() || p.srec->closed; }, 120s))
        << p.srec->packets.size() << " of " << up.size() << "; " << p.srec->close_reason;
    EXPECT_TRUE(
        p.crec->wait([&] { return p.crec->packets.size() >= down.size() || p.crec->closed; }, 120s))
        << p.crec->packets.size() << " of " << down.size() << "; " << p.crec->close_reason;
    std::lock_guard ls(p.srec->mu);
    std::lock_guard lc(p.crec->mu);
    EXPECT_TRUE(same_packets(p.srec->packets, up)) << "client to server";
    EXPECT_TRUE(same_packets(p.crec->packets, down)) << "server to client";
    EXPECT_EQ(p.srec->closed, 0) << p.srec->close_reason;
    EXPECT_EQ(p.crec->closed, 0) << p.crec->close_reason;
  }

  // On each receive path in turn: an OpenSSL peer sends the packet
  // "before" to a connection whose record layer is in the kernel, then
  // `then` makes it misbehave; "before" is delivered and the connection
  // closes with a reason that contains `reason` and names the peer.
  template <class Then>
  void closes_after(Then then, const std::string& reason) {
    for (RxMode mode : {RxMode::kRing, RxMode::kCaller}) {
      SCOPED_TRACE(mode == RxMode::kRing ? "ring reader" : "receive port");
      reset_events();
      auto peer = openssl_peer(mode);
      ASSERT_TRUE(server);
      expect_kernel(*server);
      peer->send_packet("before");
      then(*peer);
      const std::string why = server_close_reason();
      EXPECT_NE(why.find(reason), std::string::npos) << why;
      EXPECT_NE(why.find("127.0.0.1:"), std::string::npos) << why;
      std::lock_guard l(events->mu);
      EXPECT_EQ(events->packets, std::vector<std::string>{"before"});
    }
  }

  // Forgets what `events` recorded (a test with several peers in turn).
  void reset_events() {
    poller.reset();
    server.reset();
    std::lock_guard l(events->mu);
    events->packets.clear();
    events->closed = 0;
    events->close_reason.clear();
  }

  void TearDown() override {
    poller.reset();
    server.reset();
  }

  std::map<std::string, uint64_t> stat_before;
  std::shared_ptr<Connection> server;
  std::unique_ptr<CallerPoller> poller;
};

constexpr size_t kBig = 3 * 1024 * 1024 + 4321;  // several MiB in the TCG guest is slow enough

TEST_P(KernelTls, RingReaderRoundTripsInTheKernel) {
  auto p = connect_pair(RxMode::kRing);
  ASSERT_TRUE(p->server);
  expect_kernel(*p->client);
  expect_kernel(*p->server);
  expect_tls_stat_moved(2);
  CarrierStats st = carrier->stats();
  EXPECT_EQ(st.ktls_installs, 2u);
  EXPECT_EQ(st.ktls_fallbacks, 0u) << st.ktls_fallback_reason;
  round_trip(*p, kBig);
  expect_no_user_records(*p->client);
  expect_no_user_records(*p->server);
  expect_tls_stat_moved(2);
}

TEST_P(KernelTls, ReceivePortRoundTripsInTheKernel) {
  auto p = connect_pair(RxMode::kCaller);
  ASSERT_TRUE(p->server);
  expect_kernel(*p->client);
  expect_kernel(*p->server);
  expect_tls_stat_moved(2);
  round_trip(*p, kBig);
  expect_no_user_records(*p->client);
  expect_no_user_records(*p->server);
  expect_tls_stat_moved(2);
}

// The kernel's records are TLS as OpenSSL writes and reads it: what the
// kernel seals an OpenSSL peer opens, and the other way.
TEST_P(KernelTls, OpenSslPeerOpensTheKernelsRecordsAndTheOtherWay) {
  auto peer = openssl_peer(RxMode::kRing);
  ASSERT_TRUE(server);
  expect_kernel(*server);
  const auto up = packets(1024 * 1024, 3), down = packets(1024 * 1024 + 99, 5);
  for (const auto& p : up) peer->send_packet(p);
  ASSERT_TRUE(
      events->wait([&] { return events->packets.size() >= up.size() || events->closed; }, 120s))
      << events->packets.size() << " of " << up.size() << "; " << events->close_reason;
  {
    std::lock_guard l(events->mu);
    EXPECT_TRUE(same_packets(events->packets, up));
  }
  send_strings(*server, down);
  const std::string want = framed(down);
  const std::string got = peer->read_plain(want.size());
  EXPECT_EQ(got.size(), want.size()) << got.substr(0, 200);
  EXPECT_TRUE(got == want) << "the OpenSSL peer read other bytes than the carrier sent";
  expect_no_user_records(*server);
  EXPECT_EQ(events->closed, 0) << events->close_reason;
}

// A fatal alert from OpenSSL (a record it could not open: bad_record_mac)
// after data: the data is delivered, then the connection closes naming the
// alert.
TEST_P(KernelTls, AlertMidStreamClosesNamingIt) {
  closes_after(
      [](OpenSslPeer& peer) {
        const uint8_t bogus[] = {23, 3,  3,  0,  32, 1,  2,  3,  4,  5,  6,  7,  8,
                                 9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
                                 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
        peer.session_().put_ciphertext(bogus);
        std::vector<uint8_t> plain;
        EXPECT_FALSE(peer.session_().decrypt(plain).ok());
        std::vector<uint8_t> alert;
        peer.session_().take_ciphertext(alert);
        ASSERT_FALSE(alert.empty()) << "OpenSSL wrote no alert";
        ASSERT_EQ(::write(peer.fd(), alert.data(), alert.size()), ssize_t(alert.size()));
      },
      "sent TLS alert bad_record_mac");
}

TEST_P(KernelTls, CloseNotifyMidStreamClosesNamingIt) {
  closes_after(
      [](OpenSslPeer& peer) {
        peer.session_().close_notify();
        peer.flush();
      },
      "closed the TLS session (close_notify)");
}

// A record that fails authentication (one bit flipped on the wire): the
// kernel refuses it (EBADMSG) and the close names bad_record_mac, as the
// user-space record layer does.
TEST_P(KernelTls, TamperedRecordClosesNamingBadRecordMac) {
  const uint64_t refused = tls_stat()["TlsDecryptError"];
  closes_after(
      [](OpenSslPeer& peer) {
        const std::string body = std::string("\0\0\0\7", 4) + "payload";
        ASSERT_TRUE(peer.session_()
                        .encrypt({reinterpret_cast<const uint8_t*>(body.data()), body.size()})
                        .ok());
        std::vector<uint8_t> rec;
        peer.session_().take_ciphertext(rec);
        rec[rec.size() - 2] ^= 0x40;
        ASSERT_EQ(::write(peer.fd(), rec.data(), rec.size()), ssize_t(rec.size()));
      },
      "bad_record_mac");
  EXPECT_GE(tls_stat()["TlsDecryptError"], refused + 2);  // the kernel refused both
}

// TLS 1.3 only: KeyUpdate and NewSessionTicket.
class KernelTls13 : public KernelTls {};

// Linux before 6.14 cannot give a kTLS socket new receive keys: the
// carrier closes, saying so, after the data before the KeyUpdate.
TEST_P(KernelTls13, KeyUpdateFromThePeerClosesWithTheDocumentedReason) {
  closes_after(
      [](OpenSslPeer& peer) {
        ASSERT_TRUE(peer.session_().key_update(false).ok());
        peer.send_packet("after");  // under the new keys
      },
      "sent a TLS KeyUpdate, and this kernel cannot change kTLS receive keys "
      "(Linux before 6.14)");
  EXPECT_EQ(server->tls_info().key_updates_in, 1u);  // the receive port's connection
}

std::atomic<int> tickets_made{0};
int count_ticket(SSL*, void*) {
  tickets_made++;
  return 1;
}

// A server that sends more NewSessionTicket messages than the one its ALPN
// answer promises (as a stock server may send tickets unasked): the
// carrier's client reads the first before the hand-over, the kernel's
// receive path skips the other, and the connection stays up.
TEST_P(KernelTls13, NewSessionTicketsAreSkipped) {
  const Suite& s = GetParam();
  int l = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(l, 1), 0);
  ASSERT_EQ(::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len), 0);
  auto ctx = TlsContext::create(options("server", s.version, s.name), true);
  ASSERT_TRUE(ctx.ok()) << ctx.error().what;
  SSL_CTX* raw = ctx.value()->get();
  SSL_CTX_clear_options(raw, SSL_OP_NO_TICKET);
  SSL_CTX_set_num_tickets(raw, 2);
  SSL_CTX_set_session_ticket_cb(raw, count_ticket, nullptr, nullptr);
  auto session = TlsSession::create(ctx.take());
  ASSERT_TRUE(session.ok()) << session.error().what;
  tickets_made = 0;

  auto rec = std::make_shared<Recorder>();
  auto client = carrier->connect(SockAddr::parse("127.0.0.1", ntohs(a.sin_port)).value(), 10s, rec);
  pollfd pf{l, POLLIN, 0};
  ASSERT_EQ(::poll(&pf, 1, 10000), 1);
  OpenSslPeer peer(::accept(l, nullptr, nullptr), session.take());
  ::close(l);
  ASSERT_EQ(peer.handshake(), "");
  ASSERT_TRUE(rec->wait([&] { return rec->connected; }, 30s));
  ASSERT_EQ(rec->connect_error, "");
  EXPECT_EQ(tickets_made, 2);
  client->set_framing(Framing::kDist);
  client->start_streaming(RxMode::kRing);
  expect_kernel(*client);
  peer.send_packet("after the tickets");
  ASSERT_TRUE(rec->wait([&] { return !rec->packets.empty() || rec->closed; }, 30s));
  EXPECT_EQ(rec->packets, std::vector<std::string>{"after the tickets"}) << rec->close_reason;
  send_strings(*client, {"reply"});
  EXPECT_EQ(peer.read_plain(9), std::string("\0\0\0\5reply", 9));
  EXPECT_EQ(rec->closed, 0) << rec->close_reason;
  expect_no_user_records(*client);
}

// TLS 1.3 resumption: the second connection resumes with the ticket the
// server sent after the first handshake (read before the hand-over, so it
// counts in the receive sequence number the kernel continues from), and
// both directions of both connections run in the kernel.
TEST_P(KernelTls13, ResumedSessionRunsInTheKernel) {
  for (int i = 0; i < 2; i++) {
    SCOPED_TRACE(i == 0 ? "full handshake" : "resumed");
    auto p = connect_pair(RxMode::kRing);
    ASSERT_TRUE(p->server);
    EXPECT_EQ(p->client->tls_info().resumed, i == 1);
    EXPECT_EQ(p->server->tls_info().resumed, i == 1);
    expect_kernel(*p->client);
    expect_kernel(*p->server);
    round_trip(*p, 100 * 1024);
    expect_no_user_records(*p->client);
    expect_no_user_records(*p->server);
    p->client->close("done");
    p->server->close("done");
    EXPECT_TRUE(events->wait([&] { return events->closed > 0; }, 30s));
    std::lock_guard l(events->mu);  // the next pair's server reports here
    events->packets.clear();
    events->closed = 0;
    events->close_reason.clear();
  }
  EXPECT_EQ(carrier->stats().tls_resumptions, 2u);
  EXPECT_EQ(tls_stat()["TlsDecryptError"], stat_before["TlsDecryptError"]);
}

const Suite kTls13[] = {
    {TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256"},
    {TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384"},
    {TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256"},
};
const Suite kTls12[] = {
    {TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305"},
};

std::string suite_name(const ::testing::TestParamInfo<Suite>& i) {
  return suite_test_name(i.param.name);
}

INSTANTIATE_TEST_SUITE_P(Tls13, KernelTls, ::testing::ValuesIn(kTls13), suite_name);
INSTANTIATE_TEST_SUITE_P(Tls12, KernelTls, ::testing::ValuesIn(kTls12), suite_name);
INSTANTIATE_TEST_SUITE_P(Tls13, KernelTls13, ::testing::ValuesIn(kTls13), suite_name);

}  // namespace
}  // namespace ktls::carrier
