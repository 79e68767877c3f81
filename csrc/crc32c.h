// CRC32C (Castagnoli), the checksum of every record, table and chunk.
// crc32c(data, n, crc) continues a running checksum: crc32c(b, crc32c(a)) ==
// crc32c(a + b), and crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pccheck {

// Fastest implementation available on this CPU (chosen once, at run time).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);
// Slicing-by-8 table implementation; runs everywhere.
uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc = 0);
// Hardware implementation; nullptr when this CPU has none.
using Crc32cFn = uint32_t (*)(const void*, size_t, uint32_t);
Crc32cFn crc32c_hardware();
// "sse4.2", "armv8-crc" or "portable": what crc32c() uses.
const char* crc32c_impl();

}  // namespace pccheck
