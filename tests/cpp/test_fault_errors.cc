// Errors, not damage: a full, read-only or failing file system at any call
// (create, preallocate, write, sync, rename, ...) gives a clear error, the
// last commit stays loadable (also after a power loss), and after a passing
// error the store saves again.
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>

#include "check.h"
#include "errors.h"
#include "fault_fs.h"
#include "fault_util.h"
#include "file_io.h"
#include "util.h"

using namespace pccheck;
using pctest::FaultDisk;
using pctest::FaultFs;
using pctest::OpKind;

namespace {

const std::string kPath = "/e/ck";

struct Fault {
  int err;
  uint32_t kinds;
  bool sticky;
};

Fault draw_fault(std::mt19937_64& rng) {
  const uint32_t space = static_cast<uint32_t>(OpKind::kOpen) | static_cast<uint32_t>(OpKind::kWrite) |
                         static_cast<uint32_t>(OpKind::kAllocate) | static_cast<uint32_t>(OpKind::kDatasync) |
                         static_cast<uint32_t>(OpKind::kRename);
  switch (rng() % 4) {
    case 0: return {ENOSPC, space, rng() % 2 == 0};           // a full disk
    case 1: return {EROFS, pctest::kMutatingOps, true};       // remounted read-only
    case 2: return {EIO, pctest::kAllOps, false};             // one failing call
    default: return {EIO, pctest::kMutatingOps, true};        // a dying disk
  }
}

StoreOptions options(FileSystem& fs, std::mt19937_64& rng) {
  StoreOptions o;
  o.path = kPath;
  o.slot_size = pctest::kFaultSlot;
  o.max_async = 1 + rng() % 2;
  o.keep = 1 + rng() % 2;
  o.chunk_size = pctest::kFaultChunk;
  o.threads = 2;
  o.memory_budget = 4 * pctest::kFaultChunk;
  o.durability = rng() % 2 ? Durability::kDirect : Durability::kFdatasync;
  o.fs = &fs;
  return o;
}

void check_newest(FileSystem& fs, uint64_t reported, uint64_t next_step, const std::string& when) {
  auto got = pctest::load_newest(fs, kPath);
  if (reported == 0 && !got) return;
  if (!got || got->step < reported || got->step >= next_step || got->data != pctest::step_payload(got->step))
    throw pctest::Failure(when + ": step " + std::to_string(got ? got->step : 0) + " recovered, step " +
                          std::to_string(reported) + " reported committed");
}

}  // namespace

TEST(errors_are_clear_and_keep_the_last_commit) {
  const uint64_t n = std::max<uint64_t>(1, pctest::powerloss_iterations() / 10);
  std::mt19937_64 rng(std::random_device{}());
  uint64_t errors = 0, recovered_saves = 0;
  for (uint64_t iter = 0; iter < n; ++iter) {
    auto disk = std::make_shared<FaultDisk>();
    FaultFs fs(disk);
    StoreOptions opt = options(fs, rng);
    Fault f = draw_fault(rng);
    uint64_t next_step = 1, reported = 0;
    std::vector<std::string> messages;
    {
      std::unique_ptr<Store> s;
      auto attempt = [&](uint64_t saves) {  // a save, reopening the store first if it is gone
        try {
          if (!s) s = std::make_unique<Store>(opt);
        } catch (const CoreError& e) {
          messages.push_back(e.what());
          return false;
        }
        std::string msg = pctest::save_steps(*s, saves, 0, &next_step, &reported);
        if (!msg.empty()) messages.push_back(msg);
        return msg.empty();
      };
      if (rng() % 4) CHECK(attempt(1 + rng() % 3));  // most rounds have a commit before the fault
      disk->inject(rng() % 60, f.err, f.kinds, f.sticky, rng());
      for (int i = 0; i < 3; ++i) attempt(1 + rng() % 2);
      if (!f.sticky) {  // a passing error: the store saves again (reopened if it broke while opening)
        bool ok = false;
        for (int i = 0; i < 3 && !ok; ++i) ok = attempt(1);
        CHECK(ok);
        recovered_saves++;
      }
    }
    for (const std::string& m : messages) {  // clear: the cause and the file
      if (m.find(errno_text(f.err)) == std::string::npos || m.find("/e/ck") == std::string::npos)
        throw pctest::Failure("unclear error for " + errno_text(f.err) + ": " + m);
      errors++;
    }
    disk->inject(0, 0, 0, false);  // the disk heals; the last commit must be there
    {
      FaultFs reader(disk);
      check_newest(reader, reported, next_step, "after " + errno_text(f.err));
    }
    FaultFs after(disk->power_loss(rng() % 2 ? pctest::Loss::kDropAll : pctest::Loss::kRandomPart, rng()));
    check_newest(after, reported, next_step, "after " + errno_text(f.err) + " and a power loss");
  }
  std::printf("  %llu rounds with an injected error, then a power loss: %llu errors reported, all clear; %llu "
              "stores saved again after a passing error\n",
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(errors),
              static_cast<unsigned long long>(recovered_saves));
}

// A failed fdatasync may have dropped every unsynced write of the file
// (Linux marks the pages clean and reports the error once): a checkpoint
// whose chunks were written before it must not commit on a later sync.
TEST(failed_fdatasync_fails_every_checkpoint_with_writes_before_it) {
  for (uint64_t seed = 1; seed <= 8; ++seed) {
    auto disk = std::make_shared<FaultDisk>();
    FaultFs fs(disk);
    StoreOptions o = pctest::small_options(kPath);
    o.fs = &fs;
    Store s(o);
    auto first = pctest::payload_for(1, 30000);
    CHECK(pctest::save(s, 1, first).second == Outcome::kCommitted);
    const uint64_t cs = o.chunk_size;
    auto a = pctest::payload_for(2, cs), b = pctest::payload_for(3, 3 * cs);
    uint64_t sa = *s.begin(2, a.size(), true), sb = *s.begin(3, b.size(), true);
    auto put = [&](uint64_t seq, const std::vector<uint8_t>& p, uint64_t chunk) {
      uint64_t buf = s.acquire();
      std::memcpy(s.pool()->data(buf), p.data() + chunk * cs, cs);
      return s.submit(seq, buf, chunk, cs);
    };
    const uint64_t before = s.stats().bytes_written;
    CHECK(put(sb, b, 0) && put(sb, b, 1));
    while (s.stats().bytes_written < before + 2 * cs) std::this_thread::yield();  // b's chunks are written
    disk->inject(0, EIO, static_cast<uint32_t>(OpKind::kDatasync), false, seed);
    CHECK(put(sa, a, 0));  // a's commit meets the failing fdatasync
    CHECK_THROWS(WriteError, s.wait(sa, std::nullopt));
    put(sb, b, 2);  // false: b failed already
    std::string msg;
    try {
      s.wait(sb, std::nullopt);
    } catch (const WriteError& e) {
      msg = e.what();
    }
    CHECK(msg.find("fdatasync") != std::string::npos && msg.find("may be lost") != std::string::npos);
    auto r = pctest::save(s, 4, a);  // later checkpoints commit again
    CHECK(r.second == Outcome::kCommitted);
    FaultFs after(disk->power_loss(pctest::Loss::kDropAll, seed));
    auto got = pctest::load_newest(after, kPath);
    CHECK(got && got->step == 4u && got->data == a);
  }
}
