// Fixed budget of kBlock-aligned staging buffers, one chunk each, carved from
// a single mapping (so a GPU path can pin it with one registration) and
// pre-faulted at creation so the first snapshot pays no page faults.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <vector>

namespace pccheck {

class BufferPool {
 public:
  // count buffers of buffer_size bytes (a multiple of kBlock).
  BufferPool(uint64_t count, uint64_t buffer_size);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Blocks until a buffer is free; throws CoreError once shut down.
  uint64_t acquire();
  // Throws std::invalid_argument for an index that is not acquired.
  void release(uint64_t index);
  // Wakes blocked acquire() calls, which then throw.
  void shutdown();

  uint8_t* data(uint64_t index) const { return base_ + index * buffer_size_; }
  uint64_t count() const { return count_; }
  uint64_t buffer_size() const { return buffer_size_; }
  uint64_t free_count() const;
  bool in_use(uint64_t index) const;

 private:
  uint64_t count_;
  uint64_t buffer_size_;
  uint8_t* base_ = nullptr;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<uint64_t> free_;
  std::vector<uint8_t> in_use_;
  bool shutdown_ = false;
};

}  // namespace pccheck
