// A kBlock-aligned heap buffer: O_DIRECT reads and writes need one.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <new>

#include "format.h"

namespace pccheck {

struct AlignedBlock {
  explicit AlignedBlock(uint64_t n) : size(n) {
    void* p = nullptr;
    if (::posix_memalign(&p, kBlock, n) != 0) throw std::bad_alloc();
    data = static_cast<uint8_t*>(p);
  }
  ~AlignedBlock() { std::free(data); }
  AlignedBlock(const AlignedBlock&) = delete;
  AlignedBlock& operator=(const AlignedBlock&) = delete;
  uint8_t* data;
  uint64_t size;
};

}  // namespace pccheck
