// libFuzzer target: a byte stream in the capture format of testdata/
// (<<Len:32, Packet/binary>>..., a short last length taking what is left)
// is fed packet by packet into a Channel, as the carrier feeds one
// connection. Built and run by tests/fuzz/run.sh.
//
// Besides ASan/UBSan's checks (no crash, leak or out-of-bounds read) it
// checks what the filter delivers to the VM (kept packets, carriers of
// atom-cache writes, rewritten spawn requests, reassembled messages),
// replayed into a second channel that stands for the VM: it must decode
// (else the filter breaks the connection), and a kept message must be the
// very message the policy judged (else the policy can be bypassed). And
// the standalone form of every decoded message must walk again.
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

// The message in standalone form: control, then payload (if any).
std::vector<uint8_t> terms(const Verdict& v) {
  std::vector<uint8_t> out = v.message.control.standalone();
  if (v.message.payload.valid()) {
    std::vector<uint8_t> p = v.message.payload.standalone();
    out.insert(out.end(), p.begin(), p.end());
  }
  return out;
}

// Feeds one delivered packet to the VM's stand-in; with `judged`, the
// message the VM decodes must be the one the policy judged.
void deliver(Channel& vm, const std::vector<uint8_t>& bytes,
             const std::vector<uint8_t>* judged = nullptr) {
  Verdict v;
  vm.inspect(Bytes(bytes.data(), bytes.size()), v);
  if (v.action == Action::Close) violated("the filter delivered what does not decode", v);
  if (judged && (!v.decoded || terms(v) != *judged)) {
    violated("the VM would see another message than the policy judged", v);
  }
}

// Every term of a transcoded message walks again without cache references.
void check_transcoded(const std::vector<uint8_t>& t, const Verdict& v) {
  size_t pos = 0;
  for (int i = 0; i < 2 && pos < t.size(); i++) {
    ktls::filter::TermError err;
    if (t[pos] != ktls::filter::tag::kVersion) violated("transcoded term lacks version", v);
    pos++;
    if (!ktls::filter::walk_term(Bytes(t.data(), t.size()), pos, {}, nullptr, err)) {
      violated("transcoded term does not walk", v);
    }
  }
  if (pos != t.size()) violated("transcoded message has trailing bytes", v);
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
    std::vector<uint8_t> judged;
    if (v.decoded) {
      // Navigation and transcoding of what the policy saw.
      if (v.message.control.standalone().empty()) violated("control does not transcode", v);
      judged = terms(v);
      check_transcoded(judged, v);
    }
    if (!v.prefix.empty()) deliver(vm, v.prefix);
    switch (v.action) {
      case Action::Keep:
        if (v.replaced) {
          Bytes r = v.replacement();
          deliver(vm, std::vector<uint8_t>(r.begin(), r.end()), v.decoded ? &judged : nullptr);
        } else {
          deliver(vm, packet, v.decoded ? &judged : nullptr);
        }
        break;
      case Action::Drop:
        if (!v.bytes.empty()) deliver(vm, v.bytes);
        break;
      case Action::Ask:
      case Action::Resolve:
        // The handler refuses (the receiver is a system process): what a
        // refusal delivers.
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
