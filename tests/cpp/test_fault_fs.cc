// The fault layer itself: what survives a power loss, and what does not.
#include <fcntl.h>

#include <cerrno>
#include <cstring>

#include "aligned_block.h"
#include "check.h"
#include "fault_fs.h"
#include "file_io.h"

using namespace pccheck;
using pctest::FaultDisk;
using pctest::FaultFs;
using pctest::Loss;

namespace {

std::vector<uint8_t> read_all(FileSystem& fs, const std::string& path) {
  Fd fd = open_file(fs, path, O_RDONLY);
  std::vector<uint8_t> out(file_size(fd, path));
  if (!out.empty()) pread_all(fd, out.data(), out.size(), 0, path);
  return out;
}

void write_at(const Fd& fd, uint64_t off, uint64_t n, uint8_t byte) {
  std::vector<uint8_t> data(n, byte);
  CHECK_EQ(pwrite_all(fd, data.data(), n, off), 0);
}

}  // namespace

TEST(fault_fs_keeps_only_what_was_synced) {
  auto disk = std::make_shared<FaultDisk>();
  FaultFs fs(disk);
  Fd a = open_file(fs, "/d/a", O_RDWR | O_CREAT);
  write_at(a, 0, 8192, 1);
  CHECK_EQ(fs.fdatasync(a.get()), 0);
  CHECK_EQ(fs.fsync_dir("/d"), 0);
  write_at(a, 0, 4096, 2);              // not synced
  Fd b = open_file(fs, "/d/b", O_RDWR | O_CREAT);  // name not synced
  write_at(b, 0, 100, 3);
  CHECK_EQ(fs.fdatasync(b.get()), 0);
  CHECK_EQ(fs.rename("/d/a", "/d/c"), 0);  // not synced
  CHECK(read_all(fs, "/d/c")[0] == 2);     // the page cache has it all

  auto after = disk->power_loss(Loss::kDropAll, 1);
  CHECK(disk->dead());
  CHECK_EQ(fs.fdatasync(a.get()), EIO);  // the old process's calls fail
  FaultFs r(after);
  CHECK(after->exists("/d/a") && !after->exists("/d/b") && !after->exists("/d/c"));
  CHECK(read_all(r, "/d/a") == std::vector<uint8_t>(8192, 1));
}

TEST(fault_fs_random_part_tears_and_reorders) {
  bool old_seen = false, new_seen = false, torn_seen = false, name_seen = false, name_lost = false;
  for (uint64_t seed = 1; seed <= 64; ++seed) {
    auto disk = std::make_shared<FaultDisk>();
    FaultFs fs(disk);
    Fd a = open_file(fs, "/d/a", O_RDWR | O_CREAT);
    write_at(a, 0, 16384, 1);
    CHECK_EQ(fs.fsync(a.get()), 0);
    CHECK_EQ(fs.fsync_dir("/d"), 0);
    write_at(a, 0, 16384, 2);
    CHECK_EQ(fs.rename("/d/a", "/d/b"), 0);
    auto after = disk->power_loss(Loss::kRandomPart, seed);
    FaultFs r(after);
    std::string name = after->exists("/d/b") ? "/d/b" : "/d/a";
    (name == "/d/b" ? name_seen : name_lost) = true;
    auto data = read_all(r, name);
    CHECK_EQ(data.size(), 16384u);
    bool ones = false, twos = false;
    for (uint64_t s = 0; s < data.size(); s += 512) {
      CHECK(data[s] == 1 || data[s] == 2);
      for (uint64_t k = s; k < s + 512; ++k) CHECK(data[k] == data[s]);  // never torn inside a sector
      (data[s] == 1 ? ones : twos) = true;
    }
    old_seen |= ones && !twos;
    new_seen |= twos && !ones;
    torn_seen |= ones && twos;
  }
  CHECK(old_seen && new_seen && torn_seen && name_seen && name_lost);
}

TEST(fault_fs_kill_keeps_the_page_cache) {
  auto disk = std::make_shared<FaultDisk>();
  FaultFs a(disk);
  Fd fd = open_file(a, "/d/x", O_RDWR | O_CREAT);
  write_at(fd, 0, 100, 7);
  a.kill();
  CHECK_EQ(a.fdatasync(fd.get()), EIO);
  FaultFs b(disk);
  CHECK(read_all(b, "/d/x") == std::vector<uint8_t>(100, 7));  // unsynced, yet visible to the next process
  auto after = disk->power_loss(Loss::kDropAll, 1);
  CHECK(!after->exists("/d/x"));
}

TEST(fault_fs_failed_sync_may_lose_writes_for_good) {
  bool lost = false, kept = false;
  for (uint64_t seed = 1; seed <= 32; ++seed) {
    auto disk = std::make_shared<FaultDisk>();
    FaultFs fs(disk);
    Fd fd = open_file(fs, "/d/x", O_RDWR | O_CREAT);
    write_at(fd, 0, 4096, 1);
    CHECK_EQ(fs.fsync(fd.get()), 0);
    CHECK_EQ(fs.fsync_dir("/d"), 0);
    write_at(fd, 0, 4096, 2);
    disk->inject(0, EIO, static_cast<uint32_t>(pctest::OpKind::kDatasync), false, seed);
    CHECK_EQ(fs.fdatasync(fd.get()), EIO);
    CHECK_EQ(fs.fdatasync(fd.get()), 0);  // reported once, as Linux does
    CHECK(read_all(fs, "/d/x")[0] == 2);
    FaultFs r(disk->power_loss(Loss::kDropAll, 1));
    (read_all(r, "/d/x")[0] == 1 ? lost : kept) = true;
  }
  CHECK(lost && kept);
}

TEST(fault_fs_direct_io_space_and_flock) {
  auto disk = std::make_shared<FaultDisk>();
  FaultFs fs(disk);
  Fd d = open_file(fs, "/d/x", O_RDWR | O_CREAT | O_DIRECT);
  AlignedBlock block(8192);
  std::memset(block.data, 5, block.size);
  uint64_t done = 0;
  CHECK_EQ(fs.pwrite(d.get(), block.data, 4096, 0, &done), 0);
  CHECK_EQ(fs.pwrite(d.get(), block.data, 100, 0, &done), EINVAL);  // O_DIRECT takes whole blocks
  CHECK_EQ(fs.pwrite(d.get(), block.data + 1, 4096, 0, &done), EINVAL);
  disk->set_capacity(10000);
  CHECK_EQ(fs.fallocate(d.get(), 8192), 0);
  CHECK_EQ(fs.fallocate(d.get(), 20000), ENOSPC);
  uint64_t free_bytes = 0;
  CHECK_EQ(fs.free_bytes(d.get(), &free_bytes), 0);
  CHECK_EQ(free_bytes, 10000u - 8192u);
  Fd l1 = open_file(fs, "/d/l", O_RDWR | O_CREAT), l2 = open_file(fs, "/d/l", O_RDWR);
  CHECK_EQ(fs.flock_exclusive(l1.get()), 0);
  CHECK_EQ(fs.flock_exclusive(l2.get()), EWOULDBLOCK);
  l1.reset();
  CHECK_EQ(fs.flock_exclusive(l2.get()), 0);
  disk->set_flock_errno(ENOSYS);
  CHECK_EQ(fs.flock_exclusive(l2.get()), ENOSYS);
}
