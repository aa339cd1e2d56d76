// libFuzzer target: a byte stream in the capture format of testdata/
// (<<Len:32, Packet/binary>>..., a short last length taking what is left)
// is fed packet by packet into a Channel, as the carrier feeds one
// connection. Built and run by tests/fuzz/run.sh.
//
// Besides ASan/UBSan's checks (no crash, leak or out-of-bounds read) it
// checks one property: what the filter delivers to the VM (kept packets,
// carriers of atom-cache writes, rewritten spawn requests, reassembled
// messages) must itself decode, in a second channel fed only that stream.
// A filter that keeps what the VM cannot decode breaks the connection.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <vector>

#include "nif/filter/channel.h"

namespace {

using ktls::filter::Action;
using ktls::filter::Bytes;
using ktls::filter::Channel;
using ktls::filter::LocalNode;
using ktls::filter::Mode;
using ktls::filter::Policy;
using ktls::filter::Verdict;

std::shared_ptr<const Policy> make_policy(bool small_limits) {
  auto p = std::make_shared<Policy>();
  if (small_limits) {
    // Limits that the fuzzer's inputs can reach; unsafe messages go to a
    // handler (Ask), so drop_bytes are built too.
    p->max_message_size = 4096;
    p->max_reassembly_bytes = 8192;
    p->max_open_fragments = 4;
    p->handler = true;
  }
  return p;
}

const LocalNode kLocal{"ktls_filter_fuzz@127.0.0.1", 5};

[[noreturn]] void violated(const char* what, const Verdict& v) {
  std::fprintf(stderr, "channel_fuzz: %s: %s\n", what, v.error.c_str());
  std::abort();
}

void deliver(Channel& vm, const std::vector<uint8_t>& bytes) {
  Verdict v;
  vm.inspect(Bytes(bytes.data(), bytes.size()), v);
  if (v.action == Action::Close) violated("the filter delivered what does not decode", v);
}

void run(const uint8_t* data, size_t size, bool small_limits) {
  Channel ch(make_policy(small_limits), kLocal);
  auto vm_policy = std::make_shared<Policy>();
  vm_policy->mode = Mode::Monitor;
  Channel vm(vm_policy, kLocal);
  Verdict v;
  std::vector<uint8_t> packet;
  size_t pos = 0;
  while (pos < size) {
    size_t len = SIZE_MAX;
    if (size - pos >= 4) {
      len = (size_t{data[pos]} << 24) | (size_t{data[pos + 1]} << 16) |
            (size_t{data[pos + 2]} << 8) | data[pos + 3];
      pos += 4;
    }
    len = std::min(len, size - pos);
    // A copy of exactly the packet, so ASan sees any read past its end.
    packet.assign(data + pos, data + pos + len);
    pos += len;
    ch.inspect(Bytes(packet.data(), packet.size()), v);
    if (v.action == Action::Close) {
      if (v.error.find(" at byte ") == std::string::npos) violated("error without offset", v);
      return;  // the connection closes
    }
    if (v.decoded) {
      // Navigation and transcoding of what the policy saw.
      if (v.message.control.standalone().empty()) violated("control does not transcode", v);
      if (v.message.payload.valid() && v.message.payload.standalone().empty()) {
        violated("payload does not transcode", v);
      }
    }
    if (!v.prefix.empty()) deliver(vm, v.prefix);
    switch (v.action) {
      case Action::Keep:
        deliver(vm, v.replaced ? v.bytes : packet);
        break;
      case Action::Drop:
        if (!v.bytes.empty()) deliver(vm, v.bytes);
        break;
      case Action::Ask:
        // The handler refuses: what a refusal delivers.
        ch.record_answer(v.message.info, false);
        if (!v.drop_bytes.empty()) deliver(vm, v.drop_bytes);
        break;
      case Action::Hold:
      case Action::Close:
        break;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  run(data, size, false);
  run(data, size, true);
  return 0;
}
