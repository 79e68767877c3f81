// A crashed writer leaves unsynced writes in the page cache, where the next
// process reads them. Whoever trusts and reports what it read there must
// make it durable first (store open; scan/read with durable).
#include "check.h"
#include "errors.h"
#include "fault_fs.h"
#include "fault_util.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;
using pctest::FaultDisk;
using pctest::FaultFs;
using pctest::OpKind;

namespace {

const std::string kPath = "/d/ck";

StoreOptions options(FileSystem& fs) {
  StoreOptions o = pctest::small_options(kPath);
  o.fs = &fs;
  return o;
}

// Writer A commits step 1, then writes the commit record of step 2 and is
// killed before that record's fdatasync. The disk (page cache) stays.
std::shared_ptr<FaultDisk> record_written_then_killed() {
  auto disk = std::make_shared<FaultDisk>();
  FaultFs a(disk);
  Store s(options(a));
  CHECK(pctest::save(s, 1, pctest::payload_for(1, 50000)).second == Outcome::kCommitted);
  Geometry g = s.geometry();
  const uint64_t ring_begin = kBlock, ring_end = kBlock + g.ring_entries * kBlock;
  bool record_written = false;
  disk->set_hook([&](const pctest::FaultEvent& e) {
    if (e.view != a.id()) return false;
    if (e.kind == OpKind::kWrite && e.off >= ring_begin && e.off < ring_end) record_written = true;
    return record_written && e.kind == OpKind::kDatasync;  // killed at the record's fdatasync
  });
  auto data = pctest::payload_for(2, 70000);
  uint64_t seq = *s.begin(2, data.size(), true);
  s.write_host(seq, {{data.data(), data.size()}});
  CHECK_THROWS(WriteError, s.wait(seq, std::nullopt));
  CHECK(record_written);
  disk->set_hook(nullptr);
  return disk;
}

}  // namespace

TEST(sync_on_open_makes_what_a_store_reports_durable) {
  auto disk = record_written_then_killed();
  FaultFs b(disk);
  Store s(options(b));
  CHECK_EQ(s.latest()->second, 2u);  // B sees the commit of step 2 and reports it
  auto after = disk->power_loss(pctest::Loss::kDropAll, 1);  // before B's first commit
  FaultFs r(after);
  auto got = pctest::load_newest(r, kPath);
  CHECK(got.has_value());
  CHECK_EQ(got->step, 2u);
  CHECK(got->data == pctest::payload_for(2, 70000));
}

TEST(durable_scan_makes_what_a_reader_reports_durable) {
  for (bool durable : {false, true}) {
    auto disk = record_written_then_killed();
    FaultFs reader(disk);
    ScanResult seen = scan_file(kPath, false, durable, reader);
    CHECK(seen.latest.has_value());
    uint64_t seq = *seen.latest;
    std::vector<uint8_t> out(70000);
    read_payload(kPath, seq, out.data(), out.size(), 1, durable, reader);
    CHECK(out == pctest::payload_for(2, 70000));
    auto after = disk->power_loss(pctest::Loss::kDropAll, 1);
    FaultFs r(after);
    auto got = pctest::load_newest(r, kPath);
    CHECK(got.has_value());
    CHECK_EQ(got->step, durable ? 2u : 1u);  // without durable the step a reader loaded is gone
  }
}

// Writer A grows the file and is killed at the directory fsync after
// renaming the grown file into place: B opens the grown file, reports its
// commit, and that must survive a power loss.
TEST(sync_on_open_makes_a_crashed_writers_rename_durable) {
  auto disk = std::make_shared<FaultDisk>();
  auto big = pctest::payload_for(2, 600000);  // larger than the slots: the file grows
  {
    FaultFs a(disk);
    Store s(options(a));
    CHECK(pctest::save(s, 1, pctest::payload_for(1, 50000)).second == Outcome::kCommitted);
    bool renamed = false;
    disk->set_hook([&](const pctest::FaultEvent& e) {
      if (e.kind == OpKind::kRename) renamed = true;
      return renamed && e.kind == OpKind::kSyncDir;
    });
    uint64_t seq = *s.begin(2, big.size(), true);
    s.write_host(seq, {{big.data(), big.size()}});
    CHECK_THROWS(WriteError, s.wait(seq, std::nullopt));
    CHECK(renamed);
    disk->set_hook(nullptr);
  }
  FaultFs b(disk);
  Store s(options(b));
  CHECK_EQ(s.latest()->second, 2u);
  CHECK(s.geometry().slot_size >= big.size());
  auto after = disk->power_loss(pctest::Loss::kDropAll, 1);
  FaultFs r(after);
  auto got = pctest::load_newest(r, kPath);
  CHECK(got.has_value());
  CHECK_EQ(got->step, 2u);
  CHECK(got->data == big);
}
