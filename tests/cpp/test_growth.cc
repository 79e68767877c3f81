// A state that grows or shrinks is saved: the file is re-laid out with
// larger slots when a payload does not fit, the keep newest checkpoints
// come along, and a disk too small for that is one clear error.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "check.h"
#include "errors.h"
#include "fault_fs.h"
#include "fault_util.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;
using pctest::TempDir;

namespace {

constexpr uint64_t kMiB = 1 << 20;

StoreOptions growth_options(const std::string& path) {
  StoreOptions o = pctest::small_options(path);
  o.chunk_size = 64 * 1024;
  o.memory_budget = 4 * o.chunk_size;
  return o;
}

std::vector<uint64_t> valid_steps(const std::string& path) {
  std::vector<uint64_t> steps;
  for (const auto& e : scan_file(path, true).entries)
    if (e.valid) steps.push_back(e.rec.step);
  std::sort(steps.begin(), steps.end());
  return steps;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

}  // namespace

TEST(growth_twice_then_shrink_and_grow_after_reopening) {
  for (Durability mode : {Durability::kFdatasync, Durability::kAuto}) {  // auto: O_DIRECT where it works
    TempDir d;
    auto opt = growth_options(d.file("ck"));
    opt.durability = mode;
    const uint64_t base = 100000;
    std::map<uint64_t, std::vector<uint8_t>> saved;  // step -> payload
    std::map<uint64_t, uint64_t> seq_of;
    auto save = [&](Store& s, uint64_t step, uint64_t size) {
      saved[step] = pctest::payload_for(step, size);
      auto r = pctest::save(s, step, saved[step]);
      CHECK(r.second == Outcome::kCommitted);
      seq_of[step] = r.first;
    };
    auto check_steps = [&](std::vector<uint64_t> want) {  // the keep newest, in order
      auto steps = valid_steps(opt.path);  // freed slots keep their checkpoints until reused
      CHECK(steps.size() >= want.size());
      CHECK(std::vector<uint64_t>(steps.end() - static_cast<std::ptrdiff_t>(want.size()), steps.end()) == want);
      for (uint64_t step : want) CHECK(pctest::read_back(opt.path, seq_of[step]) == saved[step]);
      CHECK(!exists(opt.path + ".tmp"));  // one file, under its name
    };
    {
      Store s(opt);
      save(s, 1, base);
      save(s, 2, base + 4 * kMiB);  // grows
      CHECK_EQ(s.stats().grown, 1u);
      CHECK(s.geometry().slot_size >= base + 4 * kMiB);
      check_steps({1, 2});  // keep = 2: the old checkpoint came along
      save(s, 3, base + 12 * kMiB);  // grows again
      CHECK_EQ(s.stats().grown, 2u);
      check_steps({2, 3});
      uint64_t slots = s.geometry().slot_size;
      save(s, 4, 1000);  // shrinks: just fits
      CHECK_EQ(s.stats().grown, 2u);
      CHECK_EQ(s.geometry().slot_size, slots);
      check_steps({3, 4});
    }
    {
      Store s(opt);  // asks for small slots: adopts the large ones
      CHECK(s.geometry().slot_size >= base + 12 * kMiB);
      CHECK_EQ(s.latest()->second, 4u);
      save(s, 5, 5000);
      save(s, 6, base + 20 * kMiB);  // grows again, past the adopted size
      CHECK_EQ(s.stats().grown, 1u);
      check_steps({5, 6});
    }
  }
}

TEST(growth_waits_for_checkpoints_in_flight) {
  TempDir d;
  auto opt = growth_options(d.file("ck"));
  Store s(opt);
  uint64_t small = *s.begin(1, 1000, true);
  CHECK(!s.begin(2, 2 * opt.slot_size, false).has_value());  // a growth needs nothing in flight
  s.abort(small, "test");
  CHECK(s.wait(small, std::nullopt) == Outcome::kAborted);
  uint64_t big = *s.begin(2, 2 * opt.slot_size, false);
  CHECK(exists(opt.path + ".tmp"));                   // the grown file, filled under its temporary name
  CHECK(!s.begin(3, 1000, false).has_value());        // nothing else while it is in flight
  s.abort(big, "test");
  CHECK(s.wait(big, std::nullopt) == Outcome::kAborted);
  CHECK(!exists(opt.path + ".tmp"));  // an abandoned growth leaves nothing behind
  auto p = pctest::payload_for(4, 3000);
  CHECK(pctest::save(s, 4, p).second == Outcome::kCommitted);
  CHECK_EQ(s.geometry().slot_size, opt.slot_size);
  CHECK(pctest::read_back(opt.path, s.latest()->first) == p);
}

TEST(growth_without_space_is_one_clear_error_and_the_store_goes_on) {
  auto disk = std::make_shared<pctest::FaultDisk>();
  pctest::FaultFs fs(disk);
  auto opt = growth_options("/d/ck");
  opt.fs = &fs;
  Store s(opt);
  auto a = pctest::payload_for(1, 50000);
  CHECK(pctest::save(s, 1, a).second == Outcome::kCommitted);
  const uint64_t file = s.geometry().file_size;
  disk->set_capacity(file + file / 2);  // the old file fits, a grown one beside it does not
  auto big = pctest::payload_for(2, 3 * opt.slot_size);
  std::string msg;
  try {
    s.begin(2, big.size(), true);
  } catch (const NoSpaceError& e) {
    msg = e.what();
  }
  CHECK(msg.find("cannot grow /d/ck") != std::string::npos);
  CHECK(msg.find(" bytes free") != std::string::npos && msg.find("needs ") != std::string::npos);
  CHECK(msg.find("No space left on device") != std::string::npos);
  CHECK(!disk->exists("/d/ck.tmp"));
  CHECK_EQ(s.stats().grown, 0u);
  auto b = pctest::payload_for(3, 20000);  // still usable at the old size
  auto r = pctest::save(s, 3, b);
  CHECK(r.second == Outcome::kCommitted);
  CHECK(pctest::read_seq(fs, "/d/ck", r.first) == b);
  CHECK(pctest::load_newest(fs, "/d/ck")->step == 3u);
  // Room for the smallest grown layout only (not for 1.5 times the slots): that one is taken.
  Superblock smallest = grown_geometry(scan_file("/d/ck", false, false, fs).sb, round_up(big.size(), kBlock),
                                       opt.chunk_size, 0);
  disk->set_capacity(file + smallest.file_size + kBlock);
  r = pctest::save(s, 4, big);
  CHECK(r.second == Outcome::kCommitted && s.stats().grown == 1u);
  CHECK_EQ(s.geometry().slot_size, round_up(big.size(), kBlock));
  CHECK(pctest::read_seq(fs, "/d/ck", r.first) == big);
}

TEST(growth_failing_at_the_rename_leaves_the_old_file) {
  auto disk = std::make_shared<pctest::FaultDisk>();
  pctest::FaultFs fs(disk);
  auto opt = growth_options("/d/ck");
  opt.fs = &fs;
  Store s(opt);
  auto a = pctest::payload_for(1, 50000);
  CHECK(pctest::save(s, 1, a).second == Outcome::kCommitted);
  disk->inject(0, EROFS, static_cast<uint32_t>(pctest::OpKind::kRename), false);
  auto big = pctest::payload_for(2, 3 * opt.slot_size);
  uint64_t seq = *s.begin(2, big.size(), true);
  s.write_host(seq, {{big.data(), big.size()}});
  std::string msg;
  try {
    s.wait(seq, std::nullopt);
  } catch (const WriteError& e) {
    msg = e.what();
  }
  CHECK(msg.find("rename /d/ck.tmp to /d/ck: Read-only file system") != std::string::npos);
  CHECK(!disk->exists("/d/ck.tmp"));
  CHECK_EQ(s.geometry().slot_size, opt.slot_size);
  auto got = pctest::load_newest(fs, "/d/ck");
  CHECK(got && got->step == 1u && got->data == a);
  auto r = pctest::save(s, 3, big);  // the next attempt grows
  CHECK(r.second == Outcome::kCommitted && s.stats().grown == 1u);
  CHECK(pctest::read_seq(fs, "/d/ck", r.first) == big);
}

TEST(leftover_temp_file_is_ignored_by_readers_and_removed_on_open) {
  TempDir d;
  auto opt = growth_options(d.file("ck"));
  auto a = pctest::payload_for(1, 7000);
  uint64_t seq;
  {
    Store s(opt);
    seq = pctest::save(s, 1, a).first;
  }
  {
    Fd junk = open_file(posix_fs(), opt.path + ".tmp", O_RDWR | O_CREAT);  // as a crash mid-growth leaves it
    std::vector<uint8_t> bytes(100000, 0xAB);
    CHECK(pwrite_all(junk, bytes.data(), bytes.size(), 0) == 0);
  }
  CHECK_EQ(*scan_file(opt.path, true).latest, seq);
  CHECK(pctest::read_back(opt.path, seq) == a);
  Store s(opt);
  CHECK(!exists(opt.path + ".tmp"));
  CHECK_EQ(s.latest()->first, seq);
}
