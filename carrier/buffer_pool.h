// Buffer pool: fixed-size receive/send buffers carved from 2 MiB-aligned
// arenas advised for transparent huge pages, plus dedicated regions for
// packets larger than one buffer.
//
// Ownership: a Buffer is reference counted (BufferRef). The carrier thread
// acquires buffers; any thread may drop the last reference (the VM drops it
// when it garbage-collects the resource binary), which returns the buffer to
// its pool. The pool outlives every buffer it handed out (the Carrier keeps it
// alive until the last reference is gone).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>

#include "carrier/result.h"

namespace ktls::carrier {

class BufferPool;

// One contiguous byte region. `data()` is writable by whoever holds the only
// reference (the carrier thread while receiving into it); once bytes were
// handed out they are read-only.
class Buffer {
 public:
  uint8_t* data() { return data_; }
  const uint8_t* data() const { return data_; }
  size_t capacity() const { return capacity_; }

  // Reference counting; `unref()` of the last reference returns the buffer to
  // its pool (or unmaps a dedicated large region). Thread-safe.
  void ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void unref();
  // True when the caller holds the only reference: nobody else reads the
  // bytes any more, so the holder may overwrite them (the carrier reuses its
  // receive buffer from the start once every delivered packet was released).
  bool unique() const { return refs_.load(std::memory_order_acquire) == 1; }

 private:
  friend class BufferPool;
  Buffer(BufferPool* pool, uint8_t* data, size_t capacity, bool large)
      : pool_(pool), data_(data), capacity_(capacity), large_(large) {}
  BufferPool* pool_;
  uint8_t* data_;
  size_t capacity_;
  bool large_;
  std::atomic<uint32_t> refs_{0};
  Buffer* next_free_ = nullptr;  // free list link, owned by the pool
};

// Smart handle holding one reference.
class BufferRef {
 public:
  BufferRef() = default;
  explicit BufferRef(Buffer* b) : b_(b) {
    if (b_) b_->ref();
  }
  BufferRef(const BufferRef& o) : BufferRef(o.b_) {}
  BufferRef(BufferRef&& o) noexcept : b_(o.b_) { o.b_ = nullptr; }
  BufferRef& operator=(BufferRef o) noexcept {
    std::swap(b_, o.b_);
    return *this;
  }
  ~BufferRef() {
    if (b_) b_->unref();
  }
  Buffer* get() const { return b_; }
  Buffer* operator->() const { return b_; }
  explicit operator bool() const { return b_ != nullptr; }
  // Gives up the reference without dropping it (for handing to C code that
  // calls Buffer::unref() later).
  Buffer* release() {
    Buffer* b = b_;
    b_ = nullptr;
    return b;
  }

 private:
  Buffer* b_ = nullptr;
};

struct BufferPoolOptions {
  size_t buffer_size = 256 * 1024;           // bytes per pooled buffer
  size_t arena_size = 2 * 1024 * 1024;       // 2 MiB: one huge page
  size_t max_bytes = 4096ull * 1024 * 1024;  // pooled + large, hard limit
  bool thp = true;                           // madvise(MADV_HUGEPAGE) arenas
};

struct BufferPoolStats {
  uint64_t arenas = 0;           // arenas mapped
  uint64_t arena_bytes = 0;      // bytes in arenas
  uint64_t buffers_in_use = 0;   // pooled buffers handed out
  uint64_t large_in_use = 0;     // dedicated large regions alive
  uint64_t large_bytes = 0;      // bytes in those
  uint64_t misses = 0;           // acquire() that found the free list empty
  uint64_t exhausted = 0;        // acquire() refused by max_bytes
  uint64_t huge_page_bytes = 0;  // AnonHugePages of our arenas (smaps), 0 if unknown
  bool thp_enabled = false;      // arenas advised for huge pages
};

class BufferPool {
 public:
  static Result<std::shared_ptr<BufferPool>> create(const BufferPoolOptions& options);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // A pooled buffer of options.buffer_size bytes, or an empty ref when the
  // pool is at max_bytes (caller applies backpressure and retries later).
  BufferRef acquire();
  // A dedicated region of at least `size` bytes (for one packet larger than a
  // pooled buffer); empty ref when over max_bytes.
  BufferRef acquire_large(size_t size);

  size_t buffer_size() const { return options_.buffer_size; }
  // Counters; huge_page_bytes reads /proc/self/smaps (slow: not for hot paths).
  BufferPoolStats stats() const;

 private:
  friend class Buffer;
  explicit BufferPool(const BufferPoolOptions& options);
  void give_back(Buffer* b);
  BufferPoolOptions options_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ktls::carrier
