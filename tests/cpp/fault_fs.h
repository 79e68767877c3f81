// A disk in memory that forgets what was never synced, in the manner of
// RocksDB's FaultInjectionTestFS and LevelDB's fault-injection test.
//
// Every write stays volatile until an fdatasync/fsync of its file, every
// create, rename and unlink until an fsync of its directory. A power loss
// keeps the durable state and either none of the volatile state or a random
// part of it: each volatile write dropped, kept, or torn at 512-byte or
// 4 KiB granularity, in any order, and a random prefix of the directory
// operations (journals keep their order). A failed sync behaves like Linux:
// the file's unsynced writes may reach the disk or be lost for good, though
// reads still return them.
//
// Processes are views (FaultFs) of one FaultDisk: a killed view fails every
// call with EIO while the disk (the page cache) stays; a power loss fails
// every view's calls and yields a new disk with what survived.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fs.h"

namespace pctest {

enum class Loss { kDropAll, kRandomPart };

enum class OpKind : uint32_t {
  kOpen = 1u << 0,
  kRead = 1u << 1,
  kWrite = 1u << 2,
  kDatasync = 1u << 3,  // fdatasync and fsync
  kAllocate = 1u << 4,  // fallocate and ftruncate
  kStat = 1u << 5,
  kRename = 1u << 6,
  kUnlink = 1u << 7,
  kSyncDir = 1u << 8,
  kLock = 1u << 9,
};
constexpr uint32_t kAllOps = ~0u;
constexpr uint32_t kMutatingOps = static_cast<uint32_t>(OpKind::kOpen) | static_cast<uint32_t>(OpKind::kWrite) |
                                  static_cast<uint32_t>(OpKind::kDatasync) | static_cast<uint32_t>(OpKind::kAllocate) |
                                  static_cast<uint32_t>(OpKind::kRename) | static_cast<uint32_t>(OpKind::kUnlink) |
                                  static_cast<uint32_t>(OpKind::kSyncDir);
const char* op_name(OpKind k);

struct FaultEvent {
  OpKind kind;
  int view;
  std::string path;  // the name a descriptor was opened with, for calls on descriptors
  uint64_t off = 0, len = 0;
  bool creates = false;  // an open that may create
};

class FaultDisk : public std::enable_shared_from_this<FaultDisk> {
 public:
  FaultDisk() = default;
  FaultDisk(const FaultDisk&) = delete;
  FaultDisk& operator=(const FaultDisk&) = delete;

  // Power loss now: this disk fails every later call with EIO; returns the
  // disk as it comes back.
  std::shared_ptr<FaultDisk> power_loss(Loss mode, uint64_t seed);
  // The same inside the call that comes after `ops` more calls (that call
  // fails); after_power_loss() then returns the surviving disk.
  void arm_power_loss(uint64_t ops, Loss mode, uint64_t seed);
  std::shared_ptr<FaultDisk> after_power_loss() const;
  // The call `after` calls from now, among the kinds in `kinds`, fails with
  // err; sticky: every later one of those kinds too.
  void inject(uint64_t after, int err, uint32_t kinds, bool sticky, uint64_t seed = 1);
  // Sees every call before it runs; returning true kills the calling view
  // (that call fails with EIO). Runs under the disk's lock: no calls back.
  void set_hook(std::function<bool(const FaultEvent&)> hook);
  void set_capacity(uint64_t bytes);
  void set_flock_errno(int err);   // e.g. ENOSYS: no flock on this file system
  void set_direct_supported(bool yes);

  uint64_t ops() const;
  bool dead() const;
  FaultEvent cut_event() const;  // the call the armed power loss happened in
  std::vector<std::string> names_at_cut() const;
  bool exists(const std::string& path) const;
  std::vector<std::string> names() const;

 private:
  friend class FaultFs;
  struct Change {  // a volatile write or size change
    enum Kind { kWrite, kGrow, kSetSize } kind;
    uint64_t off;  // kGrow, kSetSize: the size
    std::vector<uint8_t> data;
  };
  struct Inode {
    std::vector<uint8_t> live, durable;  // what reads see / what a power loss keeps at least
    std::vector<Change> pending;
    int flock_fd = -1;
  };
  struct NameOp {  // a volatile directory operation
    std::string dir, path, to;  // rename: path -> to; link: path; unlink: path
    enum { kLink, kRename, kUnlink } kind;
    uint64_t ino;
  };
  struct OpenFile {
    uint64_t ino;
    int view;
    std::string path;
    bool direct, writable;
  };

  // Counts the call and decides whether it fails: 0 or the errno;
  // *injected tells an injected error from a dead disk or view.
  int enter_locked(const FaultEvent& e, bool* injected = nullptr);
  void kill_view_locked(int view) { dead_views_.insert(view); }
  std::shared_ptr<FaultDisk> image_locked(Loss mode, uint64_t seed);
  void sync_locked(Inode& ino);
  void failed_sync_locked(Inode& ino);
  void apply_change(std::vector<uint8_t>& data, const Change& c, std::mt19937_64* torn);
  uint64_t used_locked() const;

  mutable std::mutex mu_;
  std::map<std::string, uint64_t> live_names_, durable_names_;
  std::vector<NameOp> pending_names_;
  std::map<uint64_t, Inode> inodes_;
  std::map<int, OpenFile> files_;
  std::set<int> dead_views_;
  uint64_t next_ino_ = 1;
  int next_fd_ = 3;
  int next_view_ = 1;
  uint64_t ops_ = 0;
  bool dead_ = false;
  uint64_t capacity_ = 1ull << 40;
  int flock_errno_ = 0;
  bool direct_ok_ = true;
  std::function<bool(const FaultEvent&)> hook_;
  // Armed power loss.
  bool cut_armed_ = false;
  uint64_t cut_at_ = 0;
  Loss cut_mode_ = Loss::kDropAll;
  uint64_t cut_seed_ = 0;
  std::shared_ptr<FaultDisk> after_;
  FaultEvent cut_event_{};
  std::vector<std::string> cut_names_;
  // Armed error.
  bool err_armed_ = false;
  uint64_t err_countdown_ = 0;
  int err_ = 0;
  uint32_t err_kinds_ = 0;
  bool err_sticky_ = false;
  std::mt19937_64 rng_{1};  // fates of the writes a failed sync leaves behind
};

// One process's view of a FaultDisk.
class FaultFs final : public pccheck::FileSystem {
 public:
  explicit FaultFs(std::shared_ptr<FaultDisk> disk);
  ~FaultFs() override;
  // The process dies: every later call fails with EIO; the disk keeps its
  // volatile state, as a page cache does.
  void kill();
  int id() const { return view_; }
  const std::shared_ptr<FaultDisk>& disk() const { return disk_; }

  int open(const std::string& path, int flags, mode_t mode, int* fd) override;
  void close(int fd) override;
  int pread(int fd, void* buf, uint64_t n, uint64_t off, uint64_t* done) override;
  int pwrite(int fd, const void* buf, uint64_t n, uint64_t off, uint64_t* done) override;
  int fdatasync(int fd) override;
  int fsync(int fd) override;
  int fallocate(int fd, uint64_t size) override;
  int ftruncate(int fd, uint64_t size) override;
  int fstat(int fd, pccheck::FileInfo* out) override;
  int stat(const std::string& path, pccheck::FileInfo* out) override;
  int rename(const std::string& from, const std::string& to) override;
  int unlink(const std::string& path) override;
  int fsync_dir(const std::string& dir) override;
  int flock_exclusive(int fd) override;
  int free_bytes(int fd, uint64_t* out) override;

 private:
  int sync(int fd, OpKind kind);
  int resize(int fd, uint64_t size, bool only_grow);
  std::shared_ptr<FaultDisk> disk_;
  int view_;
};

}  // namespace pctest
