#include "util.h"

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include "check.h"
#include "file_io.h"
#include "recovery.h"

namespace pctest {

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/pccheck-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw Failure("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t payload_size(uint64_t step, uint64_t max_size) { return 1 + mix64(step) % max_size; }

std::vector<uint8_t> payload_for(uint64_t step, uint64_t size) {
  std::vector<uint8_t> v(size);
  uint64_t state = mix64(step ^ 0xABCDEF);
  for (uint64_t i = 0; i < size; i += 8) {
    state = mix64(state);
    for (uint64_t k = 0; k < 8 && i + k < size; ++k) v[i + k] = static_cast<uint8_t>(state >> (8 * k));
  }
  return v;
}

pccheck::StoreOptions small_options(const std::string& path) {
  pccheck::StoreOptions o;
  o.path = path;
  o.slot_size = 256 * 1024;
  o.max_async = 2;
  o.keep = 2;
  o.chunk_size = 16 * 1024;
  o.threads = 2;
  o.memory_budget = 128 * 1024;
  o.durability = pccheck::Durability::kFdatasync;
  return o;
}

std::pair<uint64_t, pccheck::Outcome> save(pccheck::Store& s, uint64_t step, const std::vector<uint8_t>& data) {
  uint64_t seq = *s.begin(step, data.size(), true);
  s.write_host(seq, {{data.data(), data.size()}});
  return {seq, s.wait(seq, std::nullopt)};
}

std::vector<uint8_t> read_back(const std::string& path, uint64_t seq) {
  std::vector<uint8_t> out(pccheck::payload_length(path, seq));
  pccheck::read_payload(path, seq, out.data(), out.size());
  return out;
}

void flip_byte(const std::string& path, uint64_t offset) {
  pccheck::Fd fd = pccheck::open_file(pccheck::posix_fs(), path, O_RDWR);
  uint8_t b = 0;
  pccheck::pread_all(fd, &b, 1, offset, path);
  b ^= 0x5A;
  CHECK(pccheck::pwrite_all(fd, &b, 1, offset) == 0);
}

}  // namespace pctest
