// Unit tests of the loadgen's pieces that need no target: the histogram,
// the packets it sends and the decoding of what it gets back, options.
#include <ei.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "tools/loadgen/dist_codec.h"
#include "tools/loadgen/histogram.h"
#include "tools/loadgen/options.h"
#include "tools/loadgen/tls_optfile.h"

namespace ktls::loadgen {
namespace {

TEST(Histogram, QuantilesWithinBucketPrecision) {
  Histogram h;
  for (uint64_t v = 1; v <= 100000; ++v) h.record(v * 1000);  // 1 µs .. 100 ms
  EXPECT_EQ(h.count(), 100000u);
  auto near = [](uint64_t got, double want) {
    EXPECT_NEAR(static_cast<double>(got), want, want * 0.02) << got;
  };
  near(h.quantile(0.5), 50e6);
  near(h.quantile(0.99), 99e6);
  near(h.quantile(0.999), 99.9e6);
  EXPECT_EQ(h.quantile(1.0), h.max());
  EXPECT_EQ(h.max(), 100000u * 1000);
  EXPECT_EQ(h.min(), 1000u);
}

TEST(Histogram, SmallValuesAreExactAndEmptyIsZero) {
  Histogram h;
  EXPECT_EQ(h.quantile(0.5), 0u);
  for (uint64_t v : {3, 3, 3, 7}) h.record(v);
  EXPECT_EQ(h.quantile(0.5), 3u);
  EXPECT_EQ(h.quantile(1.0), 7u);
  h.record(~uint64_t{0});
  EXPECT_EQ(h.max(), Histogram::max_value());
}

erlang_pid test_pid() {
  erlang_pid p{};
  std::strcpy(p.node, "lg1_0@127.0.0.1");
  p.num = 5;
  p.serial = 0;
  p.creation = 1234;
  return p;
}

// A packet's body without the 4-byte length, checked against it.
std::string body_of(const std::string& framed) {
  EXPECT_GE(framed.size(), 4u);
  uint32_t len = (uint32_t{static_cast<uint8_t>(framed[0])} << 24) |
                 (uint32_t{static_cast<uint8_t>(framed[1])} << 16) |
                 (uint32_t{static_cast<uint8_t>(framed[2])} << 8) |
                 uint32_t{static_cast<uint8_t>(framed[3])};
  EXPECT_EQ(len + 4, framed.size());
  return framed.substr(4);
}

TEST(DistCodec, EchoRequestIsARegSendOfTheAgreedTuple) {
  auto pid = encode_pid(test_pid());
  ASSERT_TRUE(pid.ok());
  std::string out;
  std::string payload(100, 'x');
  append_echo_request(out, pid.value(), "ktls_loadgen_echo", 42, 123456789012345ull, payload);
  std::string b = body_of(out);
  b.append(64, '\0');
  const char* buf = b.data();
  ASSERT_EQ(buf[0], 'p');
  int idx = 1, version = 0, arity = 0;
  long op = 0;
  char atom[MAXATOMLEN_UTF8];
  erlang_pid from{};
  ASSERT_EQ(ei_decode_version(buf, &idx, &version), 0);
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 4);
  ASSERT_EQ(ei_decode_long(buf, &idx, &op), 0);
  EXPECT_EQ(op, 6);  // REG_SEND
  ASSERT_EQ(ei_decode_pid(buf, &idx, &from), 0);
  EXPECT_STREQ(from.node, "lg1_0@127.0.0.1");
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "");
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "ktls_loadgen_echo");
  ASSERT_EQ(ei_decode_version(buf, &idx, &version), 0);
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 5);
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "lg");
  ASSERT_EQ(ei_decode_pid(buf, &idx, &from), 0);
  EXPECT_EQ(from.num, 5u);
  unsigned long long seq = 0, sent = 0;
  ASSERT_EQ(ei_decode_ulonglong(buf, &idx, &seq), 0);
  ASSERT_EQ(ei_decode_ulonglong(buf, &idx, &sent), 0);
  EXPECT_EQ(seq, 42u);
  EXPECT_EQ(sent, 123456789012345ull);
  std::vector<char> bin(200);
  long binlen = 0;
  ASSERT_EQ(ei_decode_binary(buf, &idx, bin.data(), &binlen), 0);
  EXPECT_EQ(binlen, 100);
  EXPECT_EQ(static_cast<size_t>(idx), b.size() - 64);
}

// What the target sends back: SEND {2, '', ToPid} then the message.
std::string send_packet(const std::function<void(ei_x_buff*)>& message) {
  ei_x_buff x;
  ei_x_new(&x);
  char p = 'p';
  ei_x_append_buf(&x, &p, 1);
  ei_x_encode_version(&x);
  ei_x_encode_tuple_header(&x, 3);
  ei_x_encode_long(&x, 2);
  ei_x_encode_atom(&x, "");
  erlang_pid to = test_pid();
  ei_x_encode_pid(&x, &to);
  ei_x_encode_version(&x);
  message(&x);
  std::string out(x.buff, static_cast<size_t>(x.index));
  ei_x_free(&x);
  return out;
}

TEST(DistCodec, DecodesEchoesStatsAndOtherTraffic) {
  std::string echo = send_packet([](ei_x_buff* x) {
    ei_x_encode_tuple_header(x, 4);
    ei_x_encode_atom(x, "lg_echo");
    ei_x_encode_ulonglong(x, 7);
    ei_x_encode_ulonglong(x, 1ull << 40);
    ei_x_encode_binary(x, "abc", 3);
  });
  echo.append(64, '\0');
  Inbound in = decode_packet(std::string_view(echo.data(), echo.size() - 64));
  EXPECT_EQ(in.kind, Inbound::Kind::kEcho);
  EXPECT_EQ(in.seq, 7u);
  EXPECT_EQ(in.sent_ns, 1ull << 40);

  std::string stats = send_packet([](ei_x_buff* x) {
    ei_x_encode_tuple_header(x, 9);
    ei_x_encode_atom(x, "lg_stats");
    for (unsigned long long v : {1ull, 50000000ull, 2ull, 3ull, 4ull, 5ull, 6ull, 7ull}) {
      ei_x_encode_ulonglong(x, v);
    }
  });
  stats.append(64, '\0');
  in = decode_packet(std::string_view(stats.data(), stats.size() - 64));
  ASSERT_EQ(in.kind, Inbound::Kind::kStats);
  EXPECT_EQ(in.stats.mem_total, 50000000u);
  EXPECT_EQ(in.stats.rss_bytes, 7u);

  std::string other = send_packet([](ei_x_buff* x) { ei_x_encode_atom(x, "hello"); });
  other.append(64, '\0');
  EXPECT_EQ(decode_packet(std::string_view(other.data(), other.size() - 64)).kind,
            Inbound::Kind::kOtherMessage);

  std::string garbage = "xyz";
  garbage.append(64, '\0');
  EXPECT_EQ(decode_packet(std::string_view(garbage.data(), 3)).kind, Inbound::Kind::kBad);
}

erlang_ref test_ref() {
  erlang_ref r{};
  std::strcpy(r.node, "lg1_0@127.0.0.1");
  r.len = 3;
  r.n[0] = 1;
  r.n[1] = 2;
  r.n[2] = 3;
  r.creation = 1234;
  return r;
}

// The attacks decode as the dist protocol says: a SPAWN_REQUEST of
// {os, cmd, 1} with [Cmd], a REG_SEND of a '$gen_call' to rex, {stop, stop}
// to init.
TEST(DistCodec, AttacksAreWhatTheFilterMustRefuse) {
  auto pid = encode_pid(test_pid());
  ASSERT_TRUE(pid.ok());
  // The attack's packet without its length, with the decoders' slack.
  auto body = [&pid](AttackKind kind, const char* cmd) {
    std::string out;
    append_attack(out, kind, test_pid(), pid.value(), test_ref(), cmd);
    std::string b = body_of(out);
    b.append(64, '\0');
    return b;
  };
  char atom[MAXATOMLEN_UTF8];
  int idx = 1, version = 0, arity = 0;
  long op = 0;
  char text[64];
  erlang_ref ref{};
  erlang_pid from{};
  // Decodes 'p', the control tuple's header and its operation.
  auto control = [&](const char* buf) {
    idx = 1;
    EXPECT_EQ(ei_decode_version(buf, &idx, &version), 0);
    EXPECT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
    EXPECT_EQ(ei_decode_long(buf, &idx, &op), 0);
    return op;
  };
  // After a REG_SEND's operation: From, '', To, the message's version.
  auto reg_send_to = [&](const char* buf) {
    EXPECT_EQ(ei_skip_term(buf, &idx), 0);
    EXPECT_EQ(ei_skip_term(buf, &idx), 0);
    EXPECT_EQ(ei_decode_atom(buf, &idx, atom), 0);
    EXPECT_EQ(ei_decode_version(buf, &idx, &version), 0);
    return std::string(atom);
  };

  std::string b = body(AttackKind::kSpawn, "true");
  const char* buf = b.data();
  EXPECT_EQ(control(buf), 29);  // SPAWN_REQUEST
  EXPECT_EQ(arity, 6);
  ASSERT_EQ(ei_decode_ref(buf, &idx, &ref), 0);
  EXPECT_EQ(ref.n[2], 3u);
  ASSERT_EQ(ei_decode_pid(buf, &idx, &from), 0);
  ASSERT_EQ(ei_decode_pid(buf, &idx, &from), 0);  // group leader
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "os");
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "cmd");
  ASSERT_EQ(ei_decode_long(buf, &idx, &op), 0);
  EXPECT_EQ(op, 1);
  ASSERT_EQ(ei_skip_term(buf, &idx), 0);  // [monitor]
  ASSERT_EQ(ei_decode_version(buf, &idx, &version), 0);
  ASSERT_EQ(ei_decode_list_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 1);
  ASSERT_EQ(ei_decode_string(buf, &idx, text), 0);
  EXPECT_STREQ(text, "true");
  ASSERT_EQ(ei_decode_list_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 0);
  EXPECT_EQ(static_cast<size_t>(idx), b.size() - 64);

  b = body(AttackKind::kRex, "touch /x");
  buf = b.data();
  EXPECT_EQ(control(buf), 6);  // REG_SEND
  EXPECT_EQ(reg_send_to(buf), "rex");
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 3);
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "$gen_call");
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  ASSERT_EQ(ei_decode_pid(buf, &idx, &from), 0);
  ASSERT_EQ(ei_decode_ref(buf, &idx, &ref), 0);
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 5);
  for (const char* want : {"call", "os", "cmd"}) {
    ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
    EXPECT_STREQ(atom, want);
  }
  ASSERT_EQ(ei_decode_list_header(buf, &idx, &arity), 0);
  ASSERT_EQ(ei_decode_string(buf, &idx, text), 0);
  EXPECT_STREQ(text, "touch /x");

  b = body(AttackKind::kInitStop, "true");
  buf = b.data();
  EXPECT_EQ(control(buf), 6);
  EXPECT_EQ(reg_send_to(buf), "init");
  ASSERT_EQ(ei_decode_tuple_header(buf, &idx, &arity), 0);
  EXPECT_EQ(arity, 2);
  ASSERT_EQ(ei_decode_atom(buf, &idx, atom), 0);
  EXPECT_STREQ(atom, "stop");
}

// The answers to attacks, and the stats helper's carrier and filter fields.
TEST(DistCodec, DecodesAttackAnswersAndFilterCounters) {
  auto reply = [](bool refused) {
    std::string p = send_packet([refused](ei_x_buff* x) {
      ei_x_encode_tuple_header(x, 2);
      erlang_ref r = test_ref();
      ei_x_encode_ref(x, &r);
      if (refused) {
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "badrpc");
        ei_x_encode_tuple_header(x, 2);
        ei_x_encode_atom(x, "EXIT");
        ei_x_encode_atom(x, "unauthorized");
      } else {
        ei_x_encode_string(x, "");
      }
    });
    p.append(64, '\0');
    return decode_packet(std::string_view(p.data(), p.size() - 64)).kind;
  };
  EXPECT_EQ(reply(true), Inbound::Kind::kAttackRefused);
  EXPECT_EQ(reply(false), Inbound::Kind::kAttackRan);

  std::string stats = send_packet([](ei_x_buff* x) {
    ei_x_encode_tuple_header(x, 13);
    ei_x_encode_atom(x, "lg_stats");
    for (unsigned long long v : {1ull, 2ull, 3ull, 4ull, 5ull, 6ull, 7ull, 8ull}) {
      ei_x_encode_ulonglong(x, v);
    }
    ei_x_encode_atom(x, "ktls_filter");
    ei_x_encode_atom(x, "true");
    ei_x_encode_ulonglong(x, 79);
    ei_x_encode_ulonglong(x, 26);
  });
  stats.append(64, '\0');
  Inbound in = decode_packet(std::string_view(stats.data(), stats.size() - 64));
  ASSERT_EQ(in.kind, Inbound::Kind::kStats);
  EXPECT_TRUE(in.stats.has_filter_fields);
  EXPECT_EQ(in.stats.carrier, "ktls_filter");
  EXPECT_TRUE(in.stats.filtering);
  EXPECT_EQ(in.stats.messages_dropped, 79u);
  EXPECT_EQ(in.stats.spawn_refused, 26u);
}

TEST(Options, AttackMixIsHarmlessUnlessAskedOtherwise) {
  auto parse = [](std::vector<std::string> args) {
    args.insert(args.begin(), {"ktls_loadgen", "storm", "--port", "1", "--cookie", "c"});
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    return parse_options(static_cast<int>(argv.size()), argv.data());
  };
  auto o = parse({"--attack-rate", "5"});
  ASSERT_TRUE(o.ok()) << o.error().what;
  EXPECT_EQ(o.value().attack_kinds.size(), 2u);
  EXPECT_TRUE(attacks_harmless(o.value()));
  o = parse({"--attack-rate", "5", "--attacks", "rex,init_stop"});
  ASSERT_TRUE(o.ok()) << o.error().what;
  EXPECT_FALSE(attacks_harmless(o.value()));
  o = parse({"--attack-rate", "5", "--attack-cmd", "touch /tmp/x"});
  ASSERT_TRUE(o.ok()) << o.error().what;
  EXPECT_FALSE(attacks_harmless(o.value()));
  EXPECT_FALSE(parse({"--attacks", "spawn,halt"}).ok());
  // Harmful attacks need the stats helper to vouch for the target.
  EXPECT_FALSE(parse({"--attack-rate", "5", "--attacks", "init_stop", "--stats-name", ""}).ok());
}

TEST(Options, RequiresPortAndCookieAndNamesBadValues) {
  std::vector<std::string> args = {"ktls_loadgen", "storm", "--port", "4370", "--cookie", "c",
                                   "--rate",       "500",   "--size", "32"};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  auto o = parse_options(static_cast<int>(argv.size()), argv.data());
  ASSERT_TRUE(o.ok()) << o.error().what;
  EXPECT_EQ(o.value().scenario, Scenario::kStorm);
  EXPECT_EQ(o.value().port, 4370);
  EXPECT_EQ(o.value().rate, 500);
  EXPECT_EQ(o.value().size, 32u);

  std::vector<std::string> bad = {"ktls_loadgen", "idle", "--port", "70000", "--cookie", "c"};
  argv.clear();
  for (std::string& a : bad) argv.push_back(a.data());
  auto e = parse_options(static_cast<int>(argv.size()), argv.data());
  ASSERT_FALSE(e.ok());
  EXPECT_NE(e.error().what.find("--port"), std::string::npos);
}

TEST(TlsOptfile, ReadsTheClientSideOfAnSslDistOptfile) {
  // As ./ktls certs writes it, plus versions, a binary and an option the
  // swarm does not apply.
  const char* text = R"(%% comment
[{server, [{certfile, "/s.pem"}, {fail_if_no_peer_cert, true}]},
 {client, [{certfile, "/c.pem"}, {keyfile, <<"/c.key">>},
           {cacertfile, "/ca.pem"}, % trailing comment
           {verify, verify_peer}, {versions, ['tlsv1.3', 'tlsv1.2']},
           {depth, 3}]}].
)";
  auto o = parse_client_tls_options(text, "f.conf");
  ASSERT_TRUE(o.ok()) << o.error().what;
  const carrier::TlsOptions& t = o.value().tls;
  EXPECT_EQ(t.certfile, "/c.pem");
  EXPECT_EQ(t.keyfile, "/c.key");
  EXPECT_EQ(t.cacertfile, "/ca.pem");
  EXPECT_TRUE(t.verify_peer);
  EXPECT_EQ(t.min_version, TLS1_2_VERSION);
  EXPECT_EQ(t.max_version, TLS1_3_VERSION);
  EXPECT_EQ(o.value().ignored, std::vector<std::string>{"depth"});

  auto only13 = parse_client_tls_options(
      "[{client, [{certfile, \"/c.pem\"}, {versions, ['tlsv1.3']}]}].", "g.conf");
  ASSERT_TRUE(only13.ok()) << only13.error().what;
  EXPECT_EQ(only13.value().tls.min_version, TLS1_3_VERSION);
  EXPECT_FALSE(only13.value().tls.verify_peer);  // OTP 25's client default
}

TEST(TlsOptfile, NamesWhatIsWrong) {
  auto err = [](const char* text) {
    auto o = parse_client_tls_options(text, "f.conf");
    EXPECT_FALSE(o.ok()) << text;
    return o.ok() ? std::string() : o.error().what;
  };
  EXPECT_NE(err("[{server, []}].").find("no {client"), std::string::npos);
  EXPECT_NE(err("[{client, [{certfile, \"/c\"}]}]").find("expected '.'"), std::string::npos);
  EXPECT_NE(err("[{client, [{certfile, \"/c\"},\n {verify, maybe}]}].").find("verify"),
            std::string::npos);
  EXPECT_NE(err("[{client, [{certfile, \"/c\"}, {versions, ['tlsv1.1']}]}].").find("tlsv1.1"),
            std::string::npos);
  EXPECT_NE(err("[{client, [{keyfile, \"/k\"}]}].").find("no certfile"), std::string::npos);
  EXPECT_NE(err("[{client, [{certfile, \"/c\"}]}, {").find("line 1"), std::string::npos);
}

}  // namespace
}  // namespace ktls::loadgen
