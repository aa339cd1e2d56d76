// Carrier tests on real loopback sockets.
#include "carrier/carrier.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "carrier/test_pki.h"
#include "carrier/test_support.h"

namespace ktls::carrier {
namespace {

using namespace std::chrono_literals;

class Acceptor : public ListenerObserver {
 public:
  void on_accept(Listener&, std::shared_ptr<Connection> c, const Error* e) override {
    std::lock_guard l(mu);
    if (c) conns.push_back(c);
    if (e) errors.push_back(e->what);
    cv.notify_all();
  }
  std::shared_ptr<Connection> next(std::chrono::milliseconds t = 10s) {
    std::unique_lock l(mu);
    if (!cv.wait_for(l, t, [&] { return !conns.empty(); })) return nullptr;
    auto c = conns.front();
    conns.erase(conns.begin());
    return c;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::shared_ptr<Connection>> conns;
  std::vector<std::string> errors;
};

struct Pair {
  std::shared_ptr<Connection> client, server;
  std::shared_ptr<Recorder> crec = std::make_shared<Recorder>(),
                            srec = std::make_shared<Recorder>();
};

// Every test runs on plain TCP and with TLS (the user-space record layer
// where the kernel has no kTLS, else kTLS).
class CarrierTest : public ::testing::TestWithParam<bool> {
 protected:
  bool tls() const { return GetParam(); }
  void SetUp() override {
    if (tls()) {
      auto server = TlsContext::create(carrier::options("server"), true);
      auto client = TlsContext::create(carrier::options("client"), false);
      ASSERT_TRUE(server.ok() && client.ok());
      options.tls.server = server.take();
      options.tls.client = client.take();
    }
    auto c = Carrier::start(options);
    ASSERT_TRUE(c.ok()) << c.error().what;
    carrier = c.take();
    auto addr = SockAddr::parse("127.0.0.1", 0);
    ASSERT_TRUE(addr.ok());
    auto l = carrier->listen(addr.value(), 128, acceptor);
    ASSERT_TRUE(l.ok()) << l.error().what;
    listener = l.take();
  }
  // A connected pair, both in dist framing and streaming.
  Pair connect_pair(bool dist = true) {
    Pair p;
    listener->accept();
    p.client = carrier->connect(listener->local(), 5000ms, p.crec);
    EXPECT_TRUE(p.crec->wait([&] { return p.crec->connected; }));
    EXPECT_EQ(p.crec->connect_error, "");
    p.server = acceptor->next();
    EXPECT_TRUE(p.server);
    p.server->set_observer(p.srec);
    if (dist) {
      for (auto& c : {p.client, p.server}) {
        c->set_framing(Framing::kDist);
        c->start_streaming(RxMode::kRing);
      }
    }
    return p;
  }
  CarrierOptions options;
  std::unique_ptr<Carrier> carrier;
  std::shared_ptr<Acceptor> acceptor = std::make_shared<Acceptor>();
  std::shared_ptr<Listener> listener;
};

// Sends one packet; true if the connection took it.
bool send_strings_raw(Connection& c, std::string m) {
  OutboundBatch b;
  iovec v{m.data(), m.size()};
  b.add_packet({&v, 1});
  return c.send(std::move(b)).ok();
}

TEST_P(CarrierTest, PacketsArriveInOrderBothWays) {
  Pair p = connect_pair();
  std::vector<std::string> msgs;
  for (int i = 0; i < 2000; i++) msgs.push_back("message " + std::to_string(i));
  send_strings(*p.client, msgs);
  send_strings(*p.server, msgs);
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == msgs.size(); }));
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->packets.size() == msgs.size(); }));
  EXPECT_EQ(p.srec->packets, msgs);
  EXPECT_EQ(p.crec->packets, msgs);
  EXPECT_LT(p.srec->batches, 2000);  // many packets per delivery
  EXPECT_EQ(p.client->stats().packets_out, 2000u);
}

TEST_P(CarrierTest, HundredThousandSmallPacketsInOrder) {
  Pair p = connect_pair();
  std::vector<std::string> msgs;
  for (int i = 0; i < 100000; i++) msgs.push_back(std::to_string(i));
  for (size_t i = 0; i < msgs.size(); i += 1000) {
    send_strings(*p.client, std::vector<std::string>(msgs.begin() + i, msgs.begin() + i + 1000));
  }
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == msgs.size(); }, 30s));
  EXPECT_EQ(p.srec->packets, msgs);
}

TEST_P(CarrierTest, SixtyFourMiBPacket) {
  Pair p = connect_pair();
  std::string big(64 * 1024 * 1024, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>(i / 4096);
  send_strings(*p.client, {"before", big, "after"});
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == 3; }, 30s));
  EXPECT_EQ(p.srec->packets[0], "before");
  EXPECT_TRUE(p.srec->packets[1] == big);
  EXPECT_EQ(p.srec->packets[2], "after");
}

TEST_P(CarrierTest, HandshakeOnePacketPerRequestThenDist) {
  Pair p = connect_pair(false);
  // Server: two handshake packets, then dist packets, all in one write.
  send_strings(*p.server, {"first", "second"});
  p.server->set_framing(Framing::kDist);
  send_strings(*p.server, {"dist1", "dist2"});
  p.client->request_packet();
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->packets.size() == 1; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(p.crec->packets.size(), 1u);  // nothing more without a request
  p.client->request_packet();
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->packets.size() == 2; }));
  p.client->set_framing(Framing::kDist);
  p.client->start_streaming(RxMode::kRing);
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->packets.size() == 4; }));
  EXPECT_EQ(p.crec->packets, (std::vector<std::string>{"first", "second", "dist1", "dist2"}));
}

TEST_P(CarrierTest, BusyThenWritableWhenPeerReadsAgain) {
  Pair p = connect_pair();
  {
    std::lock_guard l(p.srec->mu);
    p.srec->auto_consume = false;  // server stops consuming: it stops reading at rx_window
  }
  // 64 MiB: more than rx_window plus both sockets' buffers.
  bool busy = false;
  for (int i = 0; i < 256; i++) {
    busy = send_strings(*p.client, {std::string(256 * 1024, 'b')}).busy || busy;
  }
  ASSERT_TRUE(busy);
  std::this_thread::sleep_for(300ms);
  // Neither side spins while blocked: a send waits for POLLOUT in the kernel
  // and a paused reader issues no recv.
  uint64_t sends = p.client->stats().send_calls, recvs = p.server->stats().recv_calls;
  std::this_thread::sleep_for(200ms);
  EXPECT_LE(p.client->stats().send_calls, sends + 1);
  EXPECT_EQ(p.server->stats().recv_calls, recvs);
  // on_writable may have fired while the server was still filling its
  // window; now the queue is stuck above the high watermark, so a later
  // send was busy again and exactly one more on_writable is due.
  int writable_before;
  {
    std::lock_guard l(p.crec->mu);
    writable_before = p.crec->writable;
  }
  EXPECT_GT(p.client->stats().queued_bytes, options.connection.send_high_watermark);
  // The server consumes what it got, and from now on everything.
  uint64_t got = 0;
  {
    std::lock_guard l(p.srec->mu);
    p.srec->auto_consume = true;
    for (auto& s : p.srec->packets) got += s.size();
  }
  p.server->consumed(got);
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->writable == writable_before + 1; }, 30s));
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == 256; }, 30s));
}

TEST_P(CarrierTest, OversizedFrameClosesWithReasonNamingPeer) {
  if (tls()) GTEST_SKIP() << "handshake packets have 4-byte lengths inside TLS (tls_carrier_test)";
  Pair p = connect_pair();
  // The client writes a 2-byte-framed packet of 1024 bytes starting ff ff:
  // the server reads the 4-byte length 0x0400ffff, over the 64 MiB limit.
  p.client->set_framing(Framing::kHandshake);
  send_strings(*p.client, {std::string(1024, '\xff')});
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->closed == 1; }));
  EXPECT_NE(p.srec->close_reason.find("oversized dist packet"), std::string::npos)
      << p.srec->close_reason;
  EXPECT_NE(p.srec->close_reason.find("127.0.0.1:"), std::string::npos);
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->closed == 1; }));
}

// Bytes written by a plain socket: a good packet, then a 4 GiB length.
TEST_P(CarrierTest, OversizedAfterAGoodPacketDeliversItThenCloses) {
  if (tls()) GTEST_SKIP() << "a raw plaintext peer (TLS bad input: tls_carrier_test)";
  listener->accept();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const auto& l = listener->local();
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&l.storage), l.len), 0);
  sockaddr_in me{};
  socklen_t len = sizeof me;
  getsockname(fd, reinterpret_cast<sockaddr*>(&me), &len);
  auto server = acceptor->next();
  ASSERT_TRUE(server);
  auto rec = std::make_shared<Recorder>();
  server->set_observer(rec);
  server->set_framing(Framing::kDist);
  server->start_streaming(RxMode::kRing);
  const uint8_t bytes[] = {0, 0, 0, 4, 'g', 'o', 'o', 'd', 0xff, 0xff, 0xff, 0xff};
  ASSERT_EQ(::write(fd, bytes, sizeof bytes), static_cast<ssize_t>(sizeof bytes));
  ASSERT_TRUE(rec->wait([&] { return rec->closed == 1; }));
  EXPECT_EQ(rec->packets, std::vector<std::string>{"good"});
  EXPECT_EQ(rec->close_reason,
            "oversized dist packet from 127.0.0.1:" + std::to_string(ntohs(me.sin_port)) +
                ": 4294967295 bytes (max 67108864)");
  ::close(fd);
}

TEST_P(CarrierTest, PeerCloseReportsOnceAndSendFails) {
  Pair p = connect_pair();
  p.client->close("test");
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->closed == 1; }));
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->closed == 1; }));
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(p.srec->closed, 1);
  EXPECT_EQ(p.crec->closed, 1);
  OutboundBatch b;
  std::string m = "late";
  iovec v{m.data(), m.size()};
  b.add_packet({&v, 1});
  EXPECT_FALSE(p.client->send(std::move(b)).ok());
}

TEST_P(CarrierTest, ConnectRefused) {
  auto addr = SockAddr::parse("127.0.0.1", 1);  // nothing listens on port 1
  auto rec = std::make_shared<Recorder>();
  carrier->connect(addr.value(), 2000ms, rec);
  ASSERT_TRUE(rec->wait([&] { return rec->closed == 1; }));
  EXPECT_NE(rec->connect_error.find("refused"), std::string::npos) << rec->connect_error;
}

// The carrier thread has its own name (top -H, /proc/PID/task/TID/comm),
// and exactly one thread of this process has it while the carrier runs.
TEST_P(CarrierTest, CarrierThreadIsNamedKtlsRing) {
  auto named = [] {
    int n = 0;
    DIR* d = opendir("/proc/self/task");
    if (!d) return -1;
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      FILE* f = std::fopen(("/proc/self/task/" + std::string(e->d_name) + "/comm").c_str(), "r");
      if (!f) continue;
      char comm[32] = {};
      if (std::fgets(comm, sizeof comm, f) && std::string(comm) == "ktls_ring\n") n++;
      std::fclose(f);
    }
    closedir(d);
    return n;
  };
  ASSERT_TRUE(eventually([&] { return named() == 1; })) << named();
  carrier.reset();
  EXPECT_EQ(named(), 0);
}

TEST_P(CarrierTest, ThousandConnectionsLeaveNoFds) {
  {
    Pair warm = connect_pair();
    warm.client->close("warm");
    warm.srec->wait([&] { return warm.srec->closed == 1; });
  }
  size_t before = open_fds();
  for (int i = 0; i < 1000; i++) {
    Pair p = connect_pair();
    p.client->close("done");
    ASSERT_TRUE(p.srec->wait([&] { return p.srec->closed == 1; }));
    ASSERT_TRUE(p.crec->wait([&] { return p.crec->closed == 1; }));
  }
  EXPECT_LE(open_fds(), before + 2);
  EXPECT_EQ(carrier->stats().connections_open, 0u);
}

// Handshake packets queued before the connection is up go out with 2-byte
// headers; the queue accounting must come back to exactly zero.
TEST_P(CarrierTest, QueuedBytesReturnToZeroAfterHandshakeSends) {
  listener->accept();
  auto crec = std::make_shared<Recorder>();
  auto client = carrier->connect(listener->local(), 5000ms, crec);
  send_strings(*client, {"one", "two", "three"});  // before on_connected: queued
  auto server = acceptor->next();
  ASSERT_TRUE(server);
  auto srec = std::make_shared<Recorder>();
  server->set_observer(srec);
  for (int i = 0; i < 3; i++) server->request_packet();
  ASSERT_TRUE(srec->wait([&] { return srec->packets.size() == 3; }));
  EXPECT_EQ(srec->packets, (std::vector<std::string>{"one", "two", "three"}));
  ASSERT_TRUE(eventually([&] { return client->stats().queued_bytes == 0; }))
      << client->stats().queued_bytes;
  client->set_framing(Framing::kDist);
  EXPECT_FALSE(send_strings(*client, {"four"}).busy);
}

TEST_P(CarrierTest, RxWindowPausesReadingUntilConsumed) {
  Pair p = connect_pair();
  {
    std::lock_guard l(p.srec->mu);
    p.srec->auto_consume = false;
  }
  const uint64_t window = options.connection.rx_window;
  for (int i = 0; i < 64; i++) send_strings(*p.client, {std::string(512 * 1024, 'w')});  // 32 MiB
  std::this_thread::sleep_for(300ms);
  uint64_t got = 0;
  size_t n = 0;
  {
    std::lock_guard l(p.srec->mu);
    n = p.srec->packets.size();
    for (auto& s : p.srec->packets) got += s.size();
  }
  EXPECT_GE(got, window);
  EXPECT_LT(got, window + 2 * 1024 * 1024) << "read far past rx_window";
  EXPECT_LT(n, 64u);
  {
    std::lock_guard l(p.srec->mu);
    p.srec->auto_consume = true;
  }
  p.server->consumed(got);
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == 64; }, 30s));
}

// Keeps every delivered packet's buffer, like the NIF does with resource
// binaries, until told to let go.
class Holder : public Recorder {
 public:
  void on_packets(Connection& c, std::span<const Packet> ps) override {
    {
      std::lock_guard l(mu);
      for (const auto& p : ps) {
        held.emplace_back(p.buffer);
        data.push_back(p.data);
      }
    }
    Recorder::on_packets(c, ps);
  }
  std::vector<BufferRef> held;
  std::vector<const uint8_t*> data;
};

TEST_P(CarrierTest, PoolExhaustionPausesReadingAndResumes) {
  options.pool.max_bytes = 2 * 1024 * 1024;  // one arena: 8 buffers of 256 KiB
  carrier.reset();
  SetUp();
  Pair p = connect_pair();
  auto holder = std::make_shared<Holder>();
  p.server->set_observer(holder);
  std::vector<std::string> msgs;
  for (int i = 0; i < 64; i++)
    msgs.push_back(std::string(64 * 1024, static_cast<char>('a' + i % 26)));
  send_strings(*p.client, msgs);  // 4 MiB: twice the pool
  std::this_thread::sleep_for(300ms);
  size_t n;
  {
    std::lock_guard l(holder->mu);
    n = holder->packets.size();
  }
  EXPECT_LT(n, msgs.size());
  EXPECT_GT(carrier->stats().pool.exhausted, 0u);
  {
    std::lock_guard l(holder->mu);
    holder->held.clear();  // the "VM" lets go of the binaries
  }
  ASSERT_TRUE(holder->wait(
      [&] {
        holder->held.clear();
        return holder->packets.size() == msgs.size();
      },
      10s))
      << holder->packets.size();
  EXPECT_EQ(holder->packets, msgs);
  EXPECT_EQ(holder->closed, 0);
}

// A listener whose accept queue is full drops SYNs, so connect() can only
// end by its timeout.
// A plain listener whose accept queue is full: it drops SYNs, so a connect
// to it can only end by its timeout or by close().
class SynDropper {
 public:
  SynDropper() {
    lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = ::bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 && ::listen(lfd_, 0) == 0;
    socklen_t len = sizeof a;
    getsockname(lfd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    for (int i = 0; i < 4; i++) {  // fill the accept queue (backlog 0 holds one)
      int f = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      ::connect(f, reinterpret_cast<sockaddr*>(&a), sizeof a);
      fillers_.push_back(f);
    }
    std::this_thread::sleep_for(100ms);
  }
  ~SynDropper() {
    for (int f : fillers_) ::close(f);
    ::close(lfd_);
  }
  bool ok() const { return ok_; }
  SockAddr addr() const { return SockAddr::parse("127.0.0.1", port_).value(); }

 private:
  int lfd_;
  bool ok_;
  uint16_t port_;
  std::vector<int> fillers_;
};

TEST_P(CarrierTest, ConnectTimesOutWhenTheListenerDropsSyns) {
  SynDropper dropper;
  ASSERT_TRUE(dropper.ok());
  auto rec = std::make_shared<Recorder>();
  auto t0 = std::chrono::steady_clock::now();
  carrier->connect(dropper.addr(), 300ms, rec);
  ASSERT_TRUE(rec->wait([&] { return rec->closed == 1; }, 5s));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_NE(rec->connect_error.find("timed out"), std::string::npos) << rec->connect_error;
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 2s);
}

TEST_P(CarrierTest, CloseWhileConnectingReportsTheCloseNotATimeout) {
  SynDropper dropper;
  ASSERT_TRUE(dropper.ok());
  auto rec = std::make_shared<Recorder>();
  auto c = carrier->connect(dropper.addr(), 10000ms, rec);
  std::this_thread::sleep_for(50ms);
  c->close("shutting down");
  ASSERT_TRUE(rec->wait([&] { return rec->closed == 1; }, 5s));
  EXPECT_TRUE(rec->connected);  // on_connected came, with an error
  EXPECT_NE(rec->connect_error.find("shutting down"), std::string::npos) << rec->connect_error;
  EXPECT_NE(rec->close_reason.find("shutting down"), std::string::npos) << rec->close_reason;
  EXPECT_NE(rec->close_reason.find("127.0.0.1:"), std::string::npos) << rec->close_reason;
}

TEST_P(CarrierTest, ListenerCloseFailsPendingAccepts) {
  listener->accept();
  listener->accept();
  listener->close();
  std::unique_lock l(acceptor->mu);
  ASSERT_TRUE(acceptor->cv.wait_for(l, 5s, [&] { return acceptor->errors.size() == 2; }));
  EXPECT_NE(acceptor->errors[0].find("closed"), std::string::npos) << acceptor->errors[0];
  EXPECT_EQ(carrier->stats().listeners_open, 0u);
}

// Buffers handed to the user stay valid after the carrier is gone.
TEST_P(CarrierTest, BuffersOutliveTheCarrier) {
  Pair p = connect_pair();
  auto holder = std::make_shared<Holder>();
  p.server->set_observer(holder);
  send_strings(*p.client, {"kept"});
  ASSERT_TRUE(holder->wait([&] { return holder->packets.size() == 1; }));
  BufferRef ref;
  const uint8_t* bytes;
  {
    std::lock_guard l(holder->mu);
    ref = holder->held.front();
    bytes = holder->data.front();
    holder->held.clear();
  }
  p = Pair();
  holder.reset();
  listener.reset();
  carrier.reset();
  // The bytes are still readable; dropping the last reference frees them.
  EXPECT_EQ(std::memcmp(bytes, "kept", 4), 0);
  ref = BufferRef();
}

TEST_P(CarrierTest, CarrierDestructionClosesEachConnectionOnce) {
  Pair p = connect_pair();
  carrier.reset();
  EXPECT_EQ(p.crec->closed, 1);
  EXPECT_EQ(p.srec->closed, 1);
  EXPECT_NE(p.crec->close_reason.find("127.0.0.1:"), std::string::npos) << p.crec->close_reason;
  // Calls after the carrier is gone are harmless no-ops or errors.
  p.client->close("again");
  p.server->consumed(100);
  p.server->send_tick();
  EXPECT_FALSE(send_strings_raw(*p.client, "late"));
  listener->accept();
  listener->close();
}

TEST_P(CarrierTest, TicksAreCountedNotDelivered) {
  Pair p = connect_pair();
  p.client->send_tick();
  ASSERT_TRUE(eventually([&] { return p.server->stats().ticks_in == 1; }));
  send_strings(*p.client, {"data"});
  p.client->send_tick();
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == 1; }));
  EXPECT_EQ(p.srec->packets[0], "data");
  EXPECT_TRUE(eventually([&] { return p.client->stats().queued_bytes == 0; }));
  EXPECT_TRUE(
      eventually([&] { return p.client->stats().ticks_out == p.server->stats().ticks_in; }));
  EXPECT_EQ(p.server->stats().packets_in, 1u);
  EXPECT_EQ(p.client->stats().ticks_out, p.server->stats().ticks_in);
}

// A reader that releases every packet during on_packets (as the NIF does by
// copying) keeps receiving into the same pool buffer.
class BufferCounter : public Recorder {
 public:
  void on_packets(Connection& c, std::span<const Packet> ps) override {
    {
      std::lock_guard l(mu);
      for (const auto& p : ps) buffers.insert(p.buffer);
    }
    Recorder::on_packets(c, ps);
  }
  std::set<const Buffer*> buffers;
};

TEST_P(CarrierTest, ReceiveBufferIsReusedWhenPacketsAreReleased) {
  Pair p = connect_pair();
  auto counter = std::make_shared<BufferCounter>();
  p.server->set_observer(counter);
  std::vector<std::string> msgs;
  for (int i = 0; i < 5000; i++) msgs.push_back(std::string(1000 + i % 777, static_cast<char>(i)));
  for (size_t i = 0; i < msgs.size(); i += 100) {  // ~7 MiB in batches of 100
    send_strings(*p.client, std::vector<std::string>(msgs.begin() + i, msgs.begin() + i + 100));
  }
  ASSERT_TRUE(counter->wait([&] { return counter->packets.size() == msgs.size(); }));
  EXPECT_EQ(counter->packets, msgs);
  std::lock_guard l(counter->mu);
  EXPECT_EQ(counter->buffers.size(), 1u);  // without reuse: two, alternating
}

// Records the threads on_packets ran on.
class ThreadRecorder : public Recorder {
 public:
  void on_packets(Connection& c, std::span<const Packet> ps) override {
    {
      std::lock_guard l(mu);
      threads.insert(std::this_thread::get_id());
    }
    Recorder::on_packets(c, ps);
  }
  std::set<std::thread::id> threads;
};

TEST_P(CarrierTest, CallerModeDeliversOnTheCallersThreadInOrder) {
  Pair p = connect_pair(false);
  auto rec = std::make_shared<ThreadRecorder>();
  p.server->set_observer(rec);
  // A handshake packet, then dist packets in the same write: the dist ones
  // stay buffered until the caller takes over.
  send_strings(*p.client, {"hello"});
  p.client->set_framing(Framing::kDist);
  std::vector<std::string> msgs;
  for (int i = 0; i < 100000; i++) msgs.push_back(std::to_string(i));
  send_strings(*p.client, std::vector<std::string>(msgs.begin(), msgs.begin() + 10));
  p.server->request_packet();
  ASSERT_TRUE(rec->wait([&] { return rec->packets.size() == 1; }));
  std::this_thread::sleep_for(50ms);
  p.server->set_framing(Framing::kDist);
  p.server->start_streaming(RxMode::kCaller);
  CallerPoller poller(p.server);
  ASSERT_TRUE(rec->wait([&] { return rec->packets.size() == 11; }));
  for (size_t i = 10; i < msgs.size(); i += 1000) {
    send_strings(*p.client, std::vector<std::string>(
                                msgs.begin() + i, msgs.begin() + std::min(i + 1000, msgs.size())));
  }
  ASSERT_TRUE(rec->wait([&] { return rec->packets.size() == msgs.size() + 1; }, 30s));
  std::vector<std::string> want{"hello"};
  want.insert(want.end(), msgs.begin(), msgs.end());
  EXPECT_EQ(rec->packets, want);
  {
    std::lock_guard l(rec->mu);
    EXPECT_EQ(rec->threads.size(), 2u);  // the handshake packet on the ring thread
    EXPECT_EQ(rec->threads.count(poller.id()), 1u);
  }
  // The peer closes: the poller sees it, on_closed follows every packet;
  // the poller's thread heard of the end first (on_input_ended), with the
  // same reason.
  p.client->close("test done");
  ASSERT_TRUE(rec->wait([&] { return rec->closed == 1; }));
  EXPECT_NE(rec->close_reason.find("closed the connection"), std::string::npos)
      << rec->close_reason;
  EXPECT_TRUE(eventually([&] { return poller.closed == 1; }));
  std::lock_guard l(rec->mu);
  EXPECT_EQ(rec->input_ended, 1);
  EXPECT_TRUE(rec->input_end_before_close);
  EXPECT_EQ(rec->input_end_thread, poller.id());
  EXPECT_EQ(rec->input_end_reason, rec->close_reason);
}

TEST_P(CarrierTest, CallerModePausesAtRxWindowAndResumes) {
  Pair p = connect_pair(false);
  auto rec = std::make_shared<Recorder>();
  rec->auto_consume = false;
  p.server->set_observer(rec);
  p.client->set_framing(Framing::kDist);
  p.server->set_framing(Framing::kDist);
  p.client->start_streaming(RxMode::kRing);
  p.server->start_streaming(RxMode::kCaller);
  CallerPoller poller(p.server);
  // 32 MiB against an 8 MiB window.
  for (int i = 0; i < 128; i++) send_strings(*p.client, {std::string(256 * 1024, 'w')});
  ASSERT_TRUE(eventually([&] { return poller.paused >= 1; }));
  std::this_thread::sleep_for(100ms);
  uint64_t got = 0;
  {
    std::lock_guard l(rec->mu);
    EXPECT_LT(rec->packets.size(), 128u);
    for (auto& s : rec->packets) got += s.size();
  }
  EXPECT_GE(got, options.connection.rx_window);
  const int calls = poller.calls;
  std::this_thread::sleep_for(100ms);
  EXPECT_EQ(poller.calls, calls);  // a paused caller does not poll
  // Consuming reopens the window: consumed() says so, once.
  {
    std::lock_guard l(rec->mu);
    rec->auto_consume = true;
  }
  EXPECT_TRUE(p.server->consumed(got));
  EXPECT_FALSE(p.server->consumed(0));
  poller.resume();
  // auto_consume from here on: consumed() inside on_packets may reopen the
  // window again, so keep resuming until everything is there.
  ASSERT_TRUE(eventually(
      [&] {
        poller.resume();
        std::lock_guard l(rec->mu);
        return rec->packets.size() == 128;
      },
      30s));
}

TEST_P(CarrierTest, CallerModeLocalCloseWakesThePoller) {
  Pair p = connect_pair(false);
  p.client->set_framing(Framing::kDist);
  p.server->set_framing(Framing::kDist);
  p.client->start_streaming(RxMode::kRing);
  p.server->start_streaming(RxMode::kCaller);
  const size_t fds = open_fds();
  {
    CallerPoller poller(p.server);
    EXPECT_EQ(open_fds(), fds);  // the socket itself is polled: no duplicate
    struct stat lent {};
    ASSERT_EQ(::fstat(poller.fd(), &lent), 0);
    send_strings(*p.client, {"one"});
    ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == 1; }));
    p.server->close("local close");
    ASSERT_TRUE(p.srec->wait([&] { return p.srec->closed == 1; }));
    EXPECT_NE(p.srec->close_reason.find("local close"), std::string::npos);
    // The shutdown reaches the poller: it stops by itself, and the peer
    // sees the close although the lent descriptor is still open.
    EXPECT_TRUE(eventually([&] { return poller.closed == 1; }));
    ASSERT_TRUE(p.crec->wait([&] { return p.crec->closed == 1; }));
    EXPECT_FALSE(p.server->lend_poll_fd().ok());
    // Closed, but not under the poller: the descriptor it polls is still
    // the connection's socket, so its number cannot be reused yet.
    struct stat now {};
    ASSERT_EQ(::fstat(poller.fd(), &now), 0);
    EXPECT_EQ(now.st_ino, lent.st_ino);
  }
  EXPECT_EQ(p.server->receive_now(), RxStep::kClosed);
  {
    // A local close is not an end of input found by a caller.
    std::lock_guard l(p.srec->mu);
    EXPECT_EQ(p.srec->input_ended, 0);
  }
  // Returned by the poller: now the socket is closed.
  EXPECT_TRUE(eventually([&] { return open_fds() < fds; }));
}

TEST_P(CarrierTest, CallerModeOversizedFrameDeliversThenCloses) {
  if (tls()) GTEST_SKIP() << "a raw plaintext peer (TLS bad input: tls_carrier_test)";
  listener->accept();
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const auto& l = listener->local();
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&l.storage), l.len), 0);
  auto server = acceptor->next();
  ASSERT_TRUE(server);
  auto rec = std::make_shared<Recorder>();
  server->set_observer(rec);
  server->set_framing(Framing::kDist);
  server->start_streaming(RxMode::kCaller);
  CallerPoller poller(server);
  const uint8_t bytes[] = {0, 0, 0, 4, 'g', 'o', 'o', 'd', 0xff, 0xff, 0xff, 0xff};
  ASSERT_EQ(::write(fd, bytes, sizeof bytes), static_cast<ssize_t>(sizeof bytes));
  ASSERT_TRUE(rec->wait([&] { return rec->closed == 1; }));
  EXPECT_EQ(rec->packets, std::vector<std::string>{"good"});
  EXPECT_NE(rec->close_reason.find("oversized dist packet"), std::string::npos)
      << rec->close_reason;
  EXPECT_TRUE(eventually([&] { return poller.closed == 1; }));
  {
    std::lock_guard l(rec->mu);
    EXPECT_EQ(rec->input_ended, 1);
    EXPECT_EQ(rec->input_end_reason, rec->close_reason);
  }
  char c;
  EXPECT_EQ(::read(fd, &c, 1), 0);  // the peer sees the close
  ::close(fd);
}

TEST_P(CarrierTest, CallerModePoolExhaustionRetriesAndResumes) {
  options.pool.max_bytes = 2 * 1024 * 1024;  // one arena: 8 buffers of 256 KiB
  carrier.reset();
  SetUp();
  Pair p = connect_pair(false);
  auto holder = std::make_shared<Holder>();
  p.server->set_observer(holder);
  p.client->set_framing(Framing::kDist);
  p.server->set_framing(Framing::kDist);
  p.client->start_streaming(RxMode::kRing);
  p.server->start_streaming(RxMode::kCaller);
  CallerPoller poller(p.server);
  std::vector<std::string> msgs;
  for (int i = 0; i < 64; i++)
    msgs.push_back(std::string(64 * 1024, static_cast<char>('a' + i % 26)));
  send_strings(*p.client, msgs);  // 4 MiB: twice the pool
  ASSERT_TRUE(eventually([&] { return poller.retries > 0; }));
  {
    std::lock_guard l(holder->mu);
    EXPECT_LT(holder->packets.size(), msgs.size());
  }
  ASSERT_TRUE(holder->wait(
      [&] {
        holder->held.clear();  // the "VM" lets go of the binaries
        return holder->packets.size() == msgs.size();
      },
      10s))
      << holder->packets.size();
  EXPECT_EQ(holder->packets, msgs);
  EXPECT_EQ(holder->closed, 0);
}

TEST_P(CarrierTest, CallerModeIdleConnectionHoldsNoReceiveBuffer) {
  Pair p = connect_pair(false);
  for (auto& c : {p.client, p.server}) {
    c->set_framing(Framing::kDist);
    c->start_streaming(RxMode::kCaller);
  }
  CallerPoller client_poller(p.client), server_poller(p.server);
  std::vector<std::string> msgs;
  for (int i = 0; i < 1000; i++) msgs.push_back(std::string(100 + i, 'i'));
  send_strings(*p.client, msgs);
  send_strings(*p.server, msgs);
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == msgs.size(); }));
  ASSERT_TRUE(p.crec->wait([&] { return p.crec->packets.size() == msgs.size(); }));
  // Drained: both buffers are back in the pool (in ring mode each
  // connection keeps one for its next recv).
  EXPECT_TRUE(eventually([&] { return carrier->stats().pool.buffers_in_use == 0; }))
      << carrier->stats().pool.buffers_in_use;
  send_strings(*p.client, {"again"});
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == msgs.size() + 1; }));
  EXPECT_EQ(p.srec->packets.back(), "again");
}

// receive_now() makes a bounded number of recv calls; the bytes of the last
// one are delivered before it returns, even when the socket then has nothing
// more (nothing would call it again). Four full 4 KiB buffers of 1 KiB
// packets, all in the socket before the first call.
TEST_P(CarrierTest, CallerModeDeliversTheLastRecvOfACall) {
  options.pool.buffer_size = 4096;
  carrier.reset();
  SetUp();
  Pair p = connect_pair(false);
  p.client->set_framing(Framing::kDist);
  p.server->set_framing(Framing::kDist);
  p.client->start_streaming(RxMode::kRing);
  p.server->start_streaming(RxMode::kCaller);
  std::vector<std::string> msgs;
  for (int i = 0; i < 16; i++) msgs.push_back(std::string(1020, static_cast<char>('a' + i)));
  send_strings(*p.client, msgs);
  std::this_thread::sleep_for(100ms);  // all 16 KiB in the server's socket
  CallerPoller poller(p.server);
  ASSERT_TRUE(p.srec->wait([&] { return p.srec->packets.size() == msgs.size(); }, 2s))
      << p.srec->packets.size();
  EXPECT_EQ(p.srec->packets, msgs);
}

INSTANTIATE_TEST_SUITE_P(Transport, CarrierTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("Tls") : std::string("Plain");
                         });

}  // namespace
}  // namespace ktls::carrier
