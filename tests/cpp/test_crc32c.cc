// CRC32C: known vectors, and every implementation agrees with the others.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "crc32c.h"

using namespace pccheck;

TEST(crc32c_known_vectors) {
  const char* s = "123456789";
  CHECK_EQ(crc32c_portable(s, 9), 0xE3069283u);
  CHECK_EQ(crc32c(s, 9), 0xE3069283u);
  if (Crc32cFn hw = crc32c_hardware()) CHECK_EQ(hw(s, 9, 0), 0xE3069283u);
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xFF);
  CHECK_EQ(crc32c_portable(zeros.data(), 32), 0x8A9136AAu);  // RFC 3720 B.4
  CHECK_EQ(crc32c_portable(ones.data(), 32), 0x62A8AB43u);
  CHECK_EQ(crc32c_portable(nullptr, 0), 0u);
}

TEST(crc32c_paths_agree_and_chain) {
  std::mt19937_64 rng(1);
  std::vector<uint8_t> buf(70001);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  Crc32cFn hw = crc32c_hardware();
  for (size_t len : {0, 1, 7, 8, 9, 63, 64, 65, 4096, 70001}) {
    for (size_t off : {0, 1, 3}) {
      if (off + len > buf.size()) continue;
      uint32_t p = crc32c_portable(buf.data() + off, len);
      CHECK_EQ(crc32c(buf.data() + off, len), p);
      if (hw) CHECK_EQ(hw(buf.data() + off, len, 0), p);
    }
  }
  uint32_t whole = crc32c(buf.data(), buf.size());
  uint32_t split = crc32c(buf.data() + 1000, buf.size() - 1000, crc32c_portable(buf.data(), 1000));
  CHECK_EQ(whole, split);
  CHECK(std::strlen(crc32c_impl()) > 0);
}

// Names the path crc32c() uses and checks both paths on a buffer. CI pins the
// expected path with PCCHECK_EXPECT_CRC32C (e.g. "armv8-crc" under qemu), so a
// run that silently fell back to the table code fails instead of passing.
TEST(crc32c_dispatch_and_both_paths) {
  const char* impl = crc32c_impl();
  Crc32cFn hw = crc32c_hardware();
  CHECK_EQ(hw != nullptr, std::strcmp(impl, "portable") != 0);
  // Lengths around the hardware paths' internal block sizes (8-byte words, multi-stream
  // stripes of up to 3 x 4 KiB), odd offsets, and a running CRC carried in.
  std::vector<uint8_t> buf(4 * 3 * 4096 + 64);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<uint8_t>(i * 131u + (i >> 9) + 7u);
  for (size_t len : {size_t{4099}, size_t{12287}, size_t{12288}, size_t{12289}, size_t{24576 + 17},
                     size_t{3 * 12288 + 5}, buf.size() - 3}) {
    for (size_t off : {0, 3}) {
      for (uint32_t init : {0u, 0xDEADBEEFu}) {
        uint32_t portable = crc32c_portable(buf.data() + off, len, init);
        CHECK_EQ(crc32c(buf.data() + off, len, init), portable);
        if (hw) CHECK_EQ(hw(buf.data() + off, len, init), portable);
      }
    }
  }
  std::printf("  crc32c_impl=%s hardware_path=%s portable_path=tested\n", impl, hw ? "tested" : "absent");
  if (const char* want = std::getenv("PCCHECK_EXPECT_CRC32C"); want && *want) {
    CHECK_EQ(std::string(impl), std::string(want));
    CHECK(std::strcmp(want, "portable") == 0 || hw != nullptr);
  }
}
