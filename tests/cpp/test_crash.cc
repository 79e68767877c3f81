// kill -9 at random instants: the recovered checkpoint is bit-exact and no
// older than the newest one the writer saw committed.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <random>
#include <thread>

#include "check.h"
#include "errors.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;

namespace {

constexpr uint64_t kMaxPayload = 200000;

// Child: saves steps first_step, first_step+1, ... with two in flight and
// reports each committed step on the pipe. Never returns.
[[noreturn]] void writer_child(const std::string& path, uint64_t first_step, int fd) {
  try {
    Store s(pctest::small_options(path));
    std::optional<std::pair<uint64_t, uint64_t>> prev;  // (seq, step)
    for (uint64_t step = first_step;; ++step) {
      auto data = pctest::payload_for(step, pctest::payload_size(step, kMaxPayload));
      uint64_t seq = *s.begin(step, data.size(), true);
      s.write_host(seq, {{data.data(), data.size()}});
      if (prev && s.wait(prev->first, std::nullopt) == Outcome::kCommitted)
        if (write(fd, &prev->second, 8) != 8) _exit(3);
      prev = std::make_pair(seq, step);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "crash writer: %s\n", e.what());
    _exit(2);
  }
}

// Newest checkpoint that reads back, falling back like a load does.
// No file: the writer was killed before its first commit could exist (the file
// appears atomically, by rename, once its superblock is durable).
std::optional<std::pair<uint64_t, std::vector<uint8_t>>> load_newest(const std::string& path) {
  if (access(path.c_str(), F_OK) != 0) return std::nullopt;
  ScanResult r = scan_file(path, false);
  std::vector<std::pair<uint64_t, uint64_t>> valid;  // (seq, step)
  for (const auto& e : r.entries)
    if (e.valid) valid.emplace_back(e.rec.seq, e.rec.step);
  std::sort(valid.rbegin(), valid.rend());
  for (const auto& v : valid) {
    try {
      return std::make_pair(v.second, pctest::read_back(path, v.first));
    } catch (const CorruptError&) {
    }
  }
  return std::nullopt;
}

}  // namespace

TEST(crash_kill9_recovers_bit_exact) {
  pctest::TempDir d;
  std::string path = d.file("ck");
  std::mt19937_64 rng(std::random_device{}());
  uint64_t next_step = 1, recovered_total = 0;
  for (uint64_t iter = 0; iter < pctest::crash_iterations(); ++iter) {
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
      close(p[0]);
      writer_child(path, next_step, p[1]);
    }
    close(p[1]);
    // The first kill lands at once (usually before the file exists), the rest at random instants.
    std::this_thread::sleep_for(std::chrono::microseconds(iter == 0 ? 0 : rng() % 150000));
    kill(pid, SIGKILL);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status));  // the child must not have died on its own
    uint64_t step = 0, newest_reported = 0;
    while (read(p[0], &step, 8) == 8) newest_reported = std::max(newest_reported, step);
    close(p[0]);

    auto got = load_newest(path);
    if (newest_reported > 0) CHECK(got.has_value());
    if (got) {
      uint64_t s = got->first;
      CHECK(s >= newest_reported);
      CHECK(got->second == pctest::payload_for(s, pctest::payload_size(s, kMaxPayload)));
      next_step = s + 1;
      recovered_total++;
    }
  }
  std::printf("  %llu kills, %llu recoveries, last step %llu\n",
              static_cast<unsigned long long>(pctest::crash_iterations()),
              static_cast<unsigned long long>(recovered_total), static_cast<unsigned long long>(next_step - 1));
}
