// Shared helpers: temporary directories, deterministic payloads, file edits.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine.h"

namespace pctest {

// A fresh directory under $TMPDIR (or /tmp), removed with its files.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

uint64_t mix64(uint64_t x);  // splitmix64: a deterministic hash
// Payload of a given step: its length and bytes depend on the step only.
uint64_t payload_size(uint64_t step, uint64_t max_size);
std::vector<uint8_t> payload_for(uint64_t step, uint64_t size);

pccheck::StoreOptions small_options(const std::string& path);
// Saves `data` as one checkpoint and waits for it; returns (seq, outcome).
std::pair<uint64_t, pccheck::Outcome> save(pccheck::Store& s, uint64_t step, const std::vector<uint8_t>& data);
std::vector<uint8_t> read_back(const std::string& path, uint64_t seq);

void flip_byte(const std::string& path, uint64_t offset);

}  // namespace pctest
