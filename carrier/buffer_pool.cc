#include "carrier/buffer_pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

namespace ktls::carrier {

namespace {

constexpr size_t kHugePage = 2 * 1024 * 1024;

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

bool thp_mode_never() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return s.find("[never]") != std::string::npos;
}

// An anonymous mapping of `size` bytes at a 2 MiB boundary (over-map, trim).
Result<uint8_t*> map_aligned(size_t size, bool thp) {
  size_t len = size + kHugePage;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return Error::from_errno(errno, "mmap " + std::to_string(len));
  auto base = reinterpret_cast<uintptr_t>(p);
  uintptr_t aligned = (base + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > base) munmap(p, aligned - base);
  uintptr_t end = base + len;
  if (end > aligned + size) munmap(reinterpret_cast<void*>(aligned + size), end - aligned - size);
  if (thp) madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
  return reinterpret_cast<uint8_t*>(aligned);
}

}  // namespace

// Arenas and large regions. Buffer descriptors of an arena live in one
// block allocated with the arena (no allocation per acquire).
struct BufferPool::Impl {
  struct Arena {
    uint8_t* base;
    size_t size;
    std::unique_ptr<std::byte[]> descriptors;  // Buffer objects, placement-new'd
    size_t count;
  };
  std::mutex mu;
  std::vector<Arena> arenas;
  Buffer* free_list = nullptr;
  std::unordered_map<Buffer*, std::unique_ptr<std::byte[]>> large;  // descriptor storage
  uint64_t total_bytes = 0;                                         // arenas + large regions
  BufferPoolStats stats;
  // The pool keeps itself alive while any buffer is out (header contract):
  // `pin` holds a reference from the first acquire to the last give_back.
  // `out` counts buffers handed out; it goes 0 -> 1 and 1 -> 0 only under
  // `mu` (that is where `pin` changes), other steps are lock-free.
  std::weak_ptr<BufferPool> self;
  std::shared_ptr<BufferPool> pin;
  std::atomic<uint64_t> out{0};
  // Pooled buffers released by any thread, pushed without a lock; acquire()
  // takes the whole stack at once (no pop of single entries, so no ABA).
  std::atomic<Buffer*> returned{nullptr};
  std::atomic<uint64_t> in_use{0};  // pooled buffers handed out (stats)
};

void Buffer::unref() {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) pool_->give_back(this);
}

BufferPool::BufferPool(const BufferPoolOptions& options)
    : options_(options), impl_(std::make_unique<Impl>()) {}

Result<std::shared_ptr<BufferPool>> BufferPool::create(const BufferPoolOptions& options) {
  if (options.buffer_size == 0 || options.buffer_size > options.arena_size ||
      options.arena_size % kHugePage != 0) {
    return Error::message(
        "buffer pool: buffer_size must be in 1..arena_size and arena_size a "
        "multiple of 2 MiB");
  }
  std::shared_ptr<BufferPool> pool(new BufferPool(options));  // private constructor
  pool->impl_->stats.thp_enabled = options.thp && !thp_mode_never();
  pool->impl_->self = pool;
  return pool;
}

BufferPool::~BufferPool() {
  for (auto& a : impl_->arenas) {
    auto* d = reinterpret_cast<Buffer*>(a.descriptors.get());
    for (size_t i = 0; i < a.count; i++) d[i].~Buffer();
    munmap(a.base, a.size);
  }
  for (auto& [b, storage] : impl_->large) {
    munmap(b->data(), round_up(b->capacity(), 4096));
    b->~Buffer();
  }
}

BufferRef BufferPool::acquire() {
  Buffer* b = nullptr;
  {
    std::lock_guard lock(impl_->mu);
    if (!impl_->free_list)
      impl_->free_list = impl_->returned.exchange(nullptr, std::memory_order_acquire);
    if (!impl_->free_list) {
      impl_->stats.misses++;
      if (impl_->total_bytes + options_.arena_size > options_.max_bytes) {
        impl_->stats.exhausted++;
        return BufferRef();
      }
      auto base = map_aligned(options_.arena_size, impl_->stats.thp_enabled);
      if (!base) {
        impl_->stats.exhausted++;
        return BufferRef();
      }
      size_t n = options_.arena_size / options_.buffer_size;
      Impl::Arena a{base.value(), options_.arena_size,
                    std::make_unique<std::byte[]>(n * sizeof(Buffer)), n};
      auto* d = reinterpret_cast<Buffer*>(a.descriptors.get());
      for (size_t i = 0; i < n; i++) {
        Buffer* nb = new (&d[i])
            Buffer(this, a.base + i * options_.buffer_size, options_.buffer_size, false);
        nb->next_free_ = impl_->free_list;
        impl_->free_list = nb;
      }
      impl_->arenas.push_back(std::move(a));
      impl_->total_bytes += options_.arena_size;
      impl_->stats.arenas++;
      impl_->stats.arena_bytes += options_.arena_size;
    }
    b = impl_->free_list;
    impl_->free_list = b->next_free_;
    b->next_free_ = nullptr;
    impl_->in_use.fetch_add(1, std::memory_order_relaxed);
    if (impl_->out.fetch_add(1, std::memory_order_acq_rel) == 0) impl_->pin = impl_->self.lock();
  }
  return BufferRef(b);
}

BufferRef BufferPool::acquire_large(size_t size) {
  size_t len = round_up(size, size >= kHugePage ? kHugePage : 4096);
  std::lock_guard lock(impl_->mu);
  if (impl_->total_bytes + len > options_.max_bytes) {
    impl_->stats.exhausted++;
    return BufferRef();
  }
  auto base =
      len >= kHugePage ? map_aligned(len, impl_->stats.thp_enabled) : [&]() -> Result<uint8_t*> {
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return Error::from_errno(errno, "mmap");
    return static_cast<uint8_t*>(p);
  }();
  if (!base) {
    impl_->stats.exhausted++;
    return BufferRef();
  }
  auto storage = std::make_unique<std::byte[]>(sizeof(Buffer));
  Buffer* b = new (storage.get()) Buffer(this, base.value(), len, true);
  impl_->large.emplace(b, std::move(storage));
  impl_->total_bytes += len;
  impl_->stats.large_in_use++;
  impl_->stats.large_bytes += len;
  if (impl_->out.fetch_add(1, std::memory_order_acq_rel) == 0) impl_->pin = impl_->self.lock();
  return BufferRef(b);
}

void BufferPool::give_back(Buffer* b) {
  if (!b->large_) {
    // Lock-free release of a pooled buffer (any thread, e.g. the VM's GC).
    Buffer* head = impl_->returned.load(std::memory_order_relaxed);
    do {
      b->next_free_ = head;
    } while (!impl_->returned.compare_exchange_weak(head, b, std::memory_order_release,
                                                    std::memory_order_relaxed));
    impl_->in_use.fetch_sub(1, std::memory_order_relaxed);
    // Not the last buffer out: done, and this thread touches the pool no more.
    uint64_t n = impl_->out.load(std::memory_order_relaxed);
    while (n > 1) {
      if (impl_->out.compare_exchange_weak(n, n - 1, std::memory_order_acq_rel)) return;
    }
  }
  // Declared before the lock: when this was the last buffer out and nobody
  // else holds the pool, the pool is destroyed here, after the unlock.
  std::shared_ptr<BufferPool> last;
  std::lock_guard lock(impl_->mu);
  if (b->large_) {
    auto it = impl_->large.find(b);
    size_t len = b->capacity();
    munmap(b->data(), len);
    impl_->total_bytes -= len;
    impl_->stats.large_in_use--;
    impl_->stats.large_bytes -= len;
    b->~Buffer();
    impl_->large.erase(it);
  }
  if (impl_->out.fetch_sub(1, std::memory_order_acq_rel) == 1) last = std::move(impl_->pin);
}

BufferPoolStats BufferPool::stats() const {
  BufferPoolStats s;
  std::vector<std::pair<uintptr_t, uintptr_t>> ranges;
  {
    std::lock_guard lock(impl_->mu);
    s = impl_->stats;
    s.buffers_in_use = impl_->in_use.load(std::memory_order_relaxed);
    for (const auto& a : impl_->arenas) {
      ranges.emplace_back(reinterpret_cast<uintptr_t>(a.base),
                          reinterpret_cast<uintptr_t>(a.base) + a.size);
    }
  }
  // AnonHugePages of the smaps entries that lie inside our arenas.
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool ours = false;
  while (std::getline(smaps, line)) {
    unsigned long lo, hi;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find('-')) {
      ours = false;
      for (auto& [a, b] : ranges) ours = ours || (lo >= a && hi <= b);
      continue;
    }
    unsigned long kb;
    if (ours && std::sscanf(line.c_str(), "AnonHugePages: %lu kB", &kb) == 1) {
      s.huge_page_bytes += kb * 1024;
    }
  }
  return s;
}

}  // namespace ktls::carrier
