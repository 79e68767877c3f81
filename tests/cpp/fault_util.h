// Helpers of the tests that run the core on a FaultDisk.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine.h"
#include "fs.h"

namespace pctest {

constexpr uint64_t kFaultSlot = 32 * 1024;  // slot size of a new file in these tests
constexpr uint64_t kFaultChunk = 8 * 1024;

// Payload of a step: mostly within kFaultSlot, one in five larger (the file
// grows), some tiny. Bytes and length depend on (step, salt) only.
std::vector<uint8_t> step_payload(uint64_t step, uint64_t salt = 0);

// Saves steps *next_step, *next_step + 1, ... with up to max_async in
// flight until n are saved or a call throws CoreError, whose text it
// returns ("" when all went through). Every step the store reports
// committed raises *reported. after_submit(i) runs once the i-th payload is
// handed over (a test kills the process there, with writes in flight).
std::string save_steps(pccheck::Store& s, uint64_t n, uint64_t salt, uint64_t* next_step, uint64_t* reported,
                       const std::function<void(uint64_t)>& after_submit = {});

struct Recovered {
  uint64_t seq, step;
  std::vector<uint8_t> data;
};

// The newest checkpoint in path that reads back (verified), falling back as
// a load does; nullopt when there is none or no file.
std::optional<Recovered> load_newest(pccheck::FileSystem& fs, const std::string& path);
std::vector<uint8_t> read_seq(pccheck::FileSystem& fs, const std::string& path, uint64_t seq);

}  // namespace pctest
