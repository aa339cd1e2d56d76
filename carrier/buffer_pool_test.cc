#include "carrier/buffer_pool.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ktls::carrier {
namespace {

// The VmFlags line of the smaps entry containing `addr`.
std::string vm_flags(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  auto a = reinterpret_cast<uintptr_t>(addr);
  bool in = false;
  while (std::getline(smaps, line)) {
    unsigned long lo, hi;
    if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(' ') < 40 &&
        line.find("VmFlags") == std::string::npos && line.find(':') > line.find(' ')) {
      in = a >= lo && a < hi;
      continue;
    }
    if (in && line.rfind("VmFlags:", 0) == 0) return line;
  }
  return "";
}

bool thp_never() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string s;
  std::getline(f, s);
  return s.find("[never]") != std::string::npos;
}

TEST(BufferPool, ArenasAre2MiBAlignedAndReused) {
  auto pool = BufferPool::create({});
  ASSERT_TRUE(pool.ok());
  auto& p = *pool.value();
  Buffer* first;
  {
    // The lowest buffer of the first arena starts at a 2 MiB boundary.
    std::vector<BufferRef> all;
    uintptr_t lowest = UINTPTR_MAX;
    for (size_t i = 0; i < 8; i++) {
      all.push_back(p.acquire());
      lowest = std::min(lowest, reinterpret_cast<uintptr_t>(all.back()->data()));
    }
    EXPECT_EQ(lowest % (2 * 1024 * 1024), 0u);
    EXPECT_EQ(p.stats().buffers_in_use, 8u);
    all.resize(1);
    first = all[0].get();
  }
  EXPECT_EQ(p.stats().buffers_in_use, 0u);
  BufferRef again = p.acquire();
  EXPECT_EQ(again.get(), first);  // LIFO free list
  EXPECT_EQ(p.stats().arenas, 1u);
}

TEST(BufferPool, MaxBytesIsAHardLimit) {
  BufferPoolOptions o;
  o.max_bytes = 2 * 1024 * 1024;  // one arena
  auto pool = BufferPool::create(o);
  ASSERT_TRUE(pool.ok());
  std::vector<BufferRef> held;
  for (size_t i = 0; i < o.arena_size / o.buffer_size; i++) held.push_back(pool.value()->acquire());
  for (auto& b : held) ASSERT_TRUE(b);
  EXPECT_FALSE(pool.value()->acquire());
  EXPECT_FALSE(pool.value()->acquire_large(4096));
  EXPECT_GE(pool.value()->stats().exhausted, 2u);
  held.pop_back();
  EXPECT_TRUE(pool.value()->acquire());
}

TEST(BufferPool, LargeRegionsComeAndGo) {
  auto pool = BufferPool::create({});
  ASSERT_TRUE(pool.ok());
  {
    BufferRef big = pool.value()->acquire_large(5 * 1024 * 1024);
    ASSERT_TRUE(big);
    EXPECT_GE(big->capacity(), 5u * 1024 * 1024);
    std::memset(big->data(), 1, big->capacity());
    EXPECT_EQ(pool.value()->stats().large_in_use, 1u);
  }
  EXPECT_EQ(pool.value()->stats().large_in_use, 0u);
  EXPECT_EQ(pool.value()->stats().large_bytes, 0u);
}

TEST(BufferPool, ReleaseFromOtherThreads) {
  auto pool = BufferPool::create({});
  ASSERT_TRUE(pool.ok());
  std::vector<BufferRef> bufs;
  for (int i = 0; i < 64; i++) bufs.push_back(pool.value()->acquire());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; t++) {
    threads.emplace_back([&bufs, t] {
      for (int i = t; i < 64; i += 4) bufs[i] = BufferRef();
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(pool.value()->stats().buffers_in_use, 0u);
}

// Acquire on one thread while four others release: a buffer is never handed
// out twice, and the counts come back to zero.
TEST(BufferPool, ConcurrentReleaseWhileAcquiring) {
  BufferPoolOptions o;
  o.buffer_size = 64 * 1024;
  o.max_bytes = 2 * 1024 * 1024;  // 32 buffers: they must be recycled
  auto pool = BufferPool::create(o);
  ASSERT_TRUE(pool.ok());
  std::mutex mu;
  std::vector<BufferRef> handed;
  std::atomic<bool> done{false};
  std::set<Buffer*> live;  // owned by the acquiring thread
  std::vector<std::thread> releasers;
  std::atomic<uint64_t> released{0};
  for (int t = 0; t < 4; t++) {
    releasers.emplace_back([&] {
      while (!done.load() || [&] {
        std::lock_guard l(mu);
        return !handed.empty();
      }()) {
        BufferRef r;
        {
          std::lock_guard l(mu);
          if (!handed.empty()) {
            r = std::move(handed.back());
            handed.pop_back();
          }
        }
        if (r) {
          r->data()[0] = 1;  // the bytes are ours until the release
          r = BufferRef();
          released++;
        }
      }
    });
  }
  uint64_t acquired = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (acquired < 5000 && std::chrono::steady_clock::now() < deadline) {
    BufferRef b = pool.value()->acquire();
    if (!b) {  // all 32 out: the releasers catch up
      std::this_thread::yield();
      continue;
    }
    acquired++;
    std::lock_guard l(mu);
    handed.push_back(std::move(b));
  }
  done = true;
  for (auto& t : releasers) t.join();
  EXPECT_EQ(released.load(), acquired);
  EXPECT_EQ(acquired, 5000u);
  EXPECT_EQ(pool.value()->stats().buffers_in_use, 0u);
  EXPECT_EQ(pool.value()->stats().arenas, 1u);
  // Every buffer is back exactly once: 32 distinct acquires succeed, the 33rd fails.
  std::vector<BufferRef> all;
  for (int i = 0; i < 32; i++) {
    all.push_back(pool.value()->acquire());
    ASSERT_TRUE(all.back());
    EXPECT_TRUE(live.insert(all.back().get()).second);
  }
  EXPECT_FALSE(pool.value()->acquire());
}

TEST(BufferPool, ArenasAreAdvisedForHugePages) {
  if (thp_never()) GTEST_SKIP() << "THP is off on this machine";
  auto pool = BufferPool::create({});
  ASSERT_TRUE(pool.ok());
  // Touch a whole arena (all its buffers): a 2 MiB-aligned, advised, fully
  // written region is backed by a huge page at fault time.
  std::vector<BufferRef> arena;
  for (size_t i = 0; i < BufferPoolOptions{}.arena_size / BufferPoolOptions{}.buffer_size; i++) {
    arena.push_back(pool.value()->acquire());
    std::memset(arena.back()->data(), 1, arena.back()->capacity());
  }
  EXPECT_NE(vm_flags(arena[0]->data()).find(" hg"), std::string::npos)
      << vm_flags(arena[0]->data());
  auto stats = pool.value()->stats();
  EXPECT_TRUE(stats.thp_enabled);
  EXPECT_GT(stats.huge_page_bytes, 0u) << "no AnonHugePages in the pool's arenas";
}

TEST(BufferPool, NoHugePageAdviceWhenThpIsOff) {
  BufferPoolOptions o;
  o.thp = false;
  auto pool = BufferPool::create(o);
  ASSERT_TRUE(pool.ok());
  BufferRef b = pool.value()->acquire();
  std::memset(b->data(), 1, b->capacity());
  EXPECT_EQ(vm_flags(b->data()).find(" hg"), std::string::npos) << vm_flags(b->data());
  EXPECT_FALSE(pool.value()->stats().thp_enabled);
  EXPECT_EQ(pool.value()->stats().huge_page_bytes, 0u);
}

}  // namespace
}  // namespace ktls::carrier
