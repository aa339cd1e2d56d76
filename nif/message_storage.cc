#include "nif/message_storage.h"

#include <cstddef>
#include <cstdint>
#include <new>

namespace ktls::nif {
namespace {

// filter::MessageStorage over ERTS binaries: each block is one binary whose
// first kStorageHeader bytes hold its ErlNifBinary, so that the block can be
// handed to the VM as a sub-binary (the stock dist decoder accepts it, unlike
// a resource binary, and shares large binaries in it instead of copying).
struct StorageHeader {
  ErlNifBinary bin;
  bool given;  // the VM owns the binary now: release is a no-op
};
constexpr size_t kStorageHeader = 64;
static_assert(sizeof(StorageHeader) <= kStorageHeader);

StorageHeader* storage_header(void* p) {
  return reinterpret_cast<StorageHeader*>(static_cast<uint8_t*>(p) - kStorageHeader);
}

void* erts_storage_allocate(size_t bytes) {
  ErlNifBinary b;
  if (!enif_alloc_binary(kStorageHeader + bytes, &b)) throw std::bad_alloc();
  new (b.data) StorageHeader{b, false};
  return b.data + kStorageHeader;
}

void erts_storage_release(void* p, size_t) {
  StorageHeader* h = storage_header(p);
  if (h->given) return;
  ErlNifBinary b = h->bin;
  enif_release_binary(&b);
}

}  // namespace

void use_erts_message_storage() {
  filter::set_message_storage(filter::MessageStorage{erts_storage_allocate, erts_storage_release});
}

ERL_NIF_TERM take_message_binary(ErlNifEnv* env, filter::MessageBuffer&& m) {
  StorageHeader* h = storage_header(m.data());
  ErlNifBinary b = h->bin;
  const size_t size = m.size();
  h->given = true;
  m = filter::MessageBuffer();  // forgets the storage: its release sees `given`
  // Reserved for more fragments than came: give the rest back, so the VM
  // (which keeps large binaries as references into this one) holds no more
  // than the message. Shrinking happens in place in ERTS' allocators; if it
  // fails the binary stays as it is.
  if (b.size - kStorageHeader - size > 4096) enif_realloc_binary(&b, kStorageHeader + size);
  ERL_NIF_TERM whole = enif_make_binary(env, &b);
  return enif_make_sub_binary(env, whole, kStorageHeader, size);
}

}  // namespace ktls::nif
