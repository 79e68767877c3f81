#include "buffer_pool.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "errors.h"
#include "file_io.h"

namespace pccheck {

BufferPool::BufferPool(uint64_t count, uint64_t buffer_size) : count_(count), buffer_size_(buffer_size) {
  uint64_t bytes = count * buffer_size;
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    throw CoreError("cannot map " + std::to_string(bytes) + " bytes of staging buffers: " + errno_text(errno));
  base_ = static_cast<uint8_t*>(p);
  std::memset(base_, 0, bytes);  // touch every page now, not during the first snapshot
  free_.reserve(count);
  for (uint64_t i = count; i > 0; --i) free_.push_back(i - 1);
  in_use_.assign(count, 0);
}

BufferPool::~BufferPool() { ::munmap(base_, count_ * buffer_size_); }

uint64_t BufferPool::acquire() {
  std::unique_lock<std::mutex> lk(mu_);
  cv_.wait(lk, [&] { return shutdown_ || !free_.empty(); });
  if (shutdown_) throw CoreError("store is closed");
  uint64_t i = free_.back();
  free_.pop_back();
  in_use_[i] = 1;
  return i;
}

void BufferPool::release(uint64_t index) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (index >= count_ || !in_use_[index])
      throw std::invalid_argument("buffer " + std::to_string(index) + " is not acquired");
    in_use_[index] = 0;
    free_.push_back(index);
  }
  cv_.notify_one();
}

void BufferPool::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    shutdown_ = true;
  }
  cv_.notify_all();
}

uint64_t BufferPool::free_count() const {
  std::lock_guard<std::mutex> lk(mu_);
  return free_.size();
}

bool BufferPool::in_use(uint64_t index) const {
  std::lock_guard<std::mutex> lk(mu_);
  return index < count_ && in_use_[index];
}

}  // namespace pccheck
