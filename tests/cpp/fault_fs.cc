#include "fault_fs.h"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>

#include "file_io.h"
#include "format.h"

namespace pctest {
namespace {

bool direct_aligned(const void* buf, uint64_t n, uint64_t off) {
  const uint64_t b = pccheck::kBlock;  // stricter than Linux's 512: docs/format.md promises 4096
  return reinterpret_cast<uintptr_t>(buf) % b == 0 && n % b == 0 && off % b == 0;
}

}  // namespace

const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::kOpen: return "open";
    case OpKind::kRead: return "pread";
    case OpKind::kWrite: return "pwrite";
    case OpKind::kDatasync: return "fdatasync";
    case OpKind::kAllocate: return "fallocate";
    case OpKind::kStat: return "stat";
    case OpKind::kRename: return "rename";
    case OpKind::kUnlink: return "unlink";
    case OpKind::kSyncDir: return "fsync(dir)";
    case OpKind::kLock: return "flock";
  }
  return "?";
}

// ---- FaultDisk ----

std::shared_ptr<FaultDisk> FaultDisk::power_loss(Loss mode, uint64_t seed) {
  std::lock_guard<std::mutex> lk(mu_);
  auto img = image_locked(mode, seed);
  dead_ = true;
  return img;
}

void FaultDisk::arm_power_loss(uint64_t ops, Loss mode, uint64_t seed) {
  std::lock_guard<std::mutex> lk(mu_);
  cut_armed_ = true;
  cut_at_ = ops_ + ops;
  cut_mode_ = mode;
  cut_seed_ = seed;
}

std::shared_ptr<FaultDisk> FaultDisk::after_power_loss() const {
  std::lock_guard<std::mutex> lk(mu_);
  return after_;
}

void FaultDisk::inject(uint64_t after, int err, uint32_t kinds, bool sticky, uint64_t seed) {
  std::lock_guard<std::mutex> lk(mu_);
  err_armed_ = true;
  err_countdown_ = after;
  err_ = err;
  err_kinds_ = kinds;
  err_sticky_ = sticky;
  rng_.seed(seed);
}

void FaultDisk::set_hook(std::function<bool(const FaultEvent&)> hook) {
  std::lock_guard<std::mutex> lk(mu_);
  hook_ = std::move(hook);
}

void FaultDisk::set_capacity(uint64_t bytes) {
  std::lock_guard<std::mutex> lk(mu_);
  capacity_ = bytes;
}

void FaultDisk::set_flock_errno(int err) {
  std::lock_guard<std::mutex> lk(mu_);
  flock_errno_ = err;
}

void FaultDisk::set_direct_supported(bool yes) {
  std::lock_guard<std::mutex> lk(mu_);
  direct_ok_ = yes;
}

uint64_t FaultDisk::ops() const {
  std::lock_guard<std::mutex> lk(mu_);
  return ops_;
}

bool FaultDisk::dead() const {
  std::lock_guard<std::mutex> lk(mu_);
  return dead_;
}

FaultEvent FaultDisk::cut_event() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cut_event_;
}

std::vector<std::string> FaultDisk::names_at_cut() const {
  std::lock_guard<std::mutex> lk(mu_);
  return cut_names_;
}

bool FaultDisk::exists(const std::string& path) const {
  std::lock_guard<std::mutex> lk(mu_);
  return live_names_.count(path) != 0;
}

std::vector<std::string> FaultDisk::names() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::string> out;
  for (const auto& kv : live_names_) out.push_back(kv.first);
  return out;
}

int FaultDisk::enter_locked(const FaultEvent& e, bool* injected) {
  if (dead_ || dead_views_.count(e.view)) return EIO;
  ++ops_;
  if (cut_armed_ && ops_ >= cut_at_) {
    cut_armed_ = false;
    cut_event_ = e;
    cut_names_.clear();
    for (const auto& kv : live_names_) cut_names_.push_back(kv.first);
    after_ = image_locked(cut_mode_, cut_seed_);
    dead_ = true;
    return EIO;
  }
  if (hook_ && hook_(e)) {
    kill_view_locked(e.view);
    return EIO;
  }
  if (err_armed_ && (err_kinds_ & static_cast<uint32_t>(e.kind)) != 0) {
    if (err_countdown_ > 0) {
      --err_countdown_;
    } else {
      err_armed_ = err_sticky_;
      if (injected) *injected = true;
      return err_;
    }
  }
  return 0;
}

void FaultDisk::apply_change(std::vector<uint8_t>& data, const Change& c, std::mt19937_64* torn) {
  if (c.kind != Change::kWrite) {
    if (c.kind == Change::kSetSize || data.size() < c.off) data.resize(c.off, 0);
    return;
  }
  uint64_t end = c.off + c.data.size();
  uint64_t gran = torn && ((*torn)() & 1) ? 512 : pccheck::kBlock;
  for (uint64_t p = c.off; p < end;) {
    uint64_t next = torn ? std::min(end, (p / gran + 1) * gran) : end;
    if (!torn || ((*torn)() & 1)) {
      if (data.size() < next) data.resize(next, 0);
      std::memcpy(data.data() + p, c.data.data() + (p - c.off), next - p);
    }
    p = next;
  }
}

void FaultDisk::sync_locked(Inode& ino) {
  for (const Change& c : ino.pending) apply_change(ino.durable, c, nullptr);
  ino.pending.clear();
}

void FaultDisk::failed_sync_locked(Inode& ino) {
  for (const Change& c : ino.pending)
    if (rng_() & 1) apply_change(ino.durable, c, nullptr);  // else lost, though still in the page cache
  ino.pending.clear();
}

uint64_t FaultDisk::used_locked() const {
  std::set<uint64_t> held;
  for (const auto& kv : live_names_) held.insert(kv.second);
  for (const auto& kv : files_) held.insert(kv.second.ino);
  uint64_t used = 0;
  for (uint64_t ino : held) used += inodes_.at(ino).live.size();
  return used;
}

std::shared_ptr<FaultDisk> FaultDisk::image_locked(Loss mode, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const bool part = mode == Loss::kRandomPart;
  std::map<std::string, uint64_t> names = durable_names_;
  size_t ops = part ? rng() % (pending_names_.size() + 1) : 0;  // a prefix: journals keep the order
  for (size_t i = 0; i < ops; ++i) {
    const NameOp& op = pending_names_[i];
    if (op.kind != NameOp::kLink) names.erase(op.path);
    if (op.kind == NameOp::kLink) names[op.path] = op.ino;
    if (op.kind == NameOp::kRename) names[op.to] = op.ino;
  }
  auto img = std::make_shared<FaultDisk>();
  for (const auto& kv : names) {
    uint64_t ino = kv.second;
    if (img->inodes_.count(ino) == 0) {
      const Inode& src = inodes_.at(ino);
      Inode& dst = img->inodes_[ino];
      dst.durable = src.durable;
      if (part) {
        std::vector<size_t> order(src.pending.size());
        std::iota(order.begin(), order.end(), 0);
        std::shuffle(order.begin(), order.end(), rng);
        for (size_t i : order) {
          switch (rng() % 4) {
            case 0: break;  // lost
            case 1: apply_change(dst.durable, src.pending[i], nullptr); break;
            default: apply_change(dst.durable, src.pending[i], &rng); break;  // torn
          }
        }
      }
      dst.live = dst.durable;
    }
    img->live_names_[kv.first] = ino;
  }
  img->durable_names_ = img->live_names_;
  img->next_ino_ = next_ino_;
  img->capacity_ = capacity_;
  img->flock_errno_ = flock_errno_;
  img->direct_ok_ = direct_ok_;
  return img;
}

// ---- FaultFs ----

FaultFs::FaultFs(std::shared_ptr<FaultDisk> disk) : disk_(std::move(disk)) {
  std::lock_guard<std::mutex> lk(disk_->mu_);
  view_ = disk_->next_view_++;
}

FaultFs::~FaultFs() {
  std::lock_guard<std::mutex> lk(disk_->mu_);
  for (auto it = disk_->files_.begin(); it != disk_->files_.end();)
    it = it->second.view == view_ ? disk_->files_.erase(it) : std::next(it);
}

void FaultFs::kill() {
  std::lock_guard<std::mutex> lk(disk_->mu_);
  disk_->kill_view_locked(view_);
}

int FaultFs::open(const std::string& path, int flags, mode_t, int* fd) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  if (int err = d.enter_locked({OpKind::kOpen, view_, path, 0, 0, (flags & O_CREAT) != 0})) return err;
  if ((flags & O_DIRECT) && !d.direct_ok_) return EINVAL;
  bool writable = (flags & O_ACCMODE) != O_RDONLY;
  auto it = d.live_names_.find(path);
  uint64_t ino;
  if (it == d.live_names_.end()) {
    if (!(flags & O_CREAT)) return ENOENT;
    ino = d.next_ino_++;
    d.inodes_[ino];
    d.live_names_[path] = ino;
    d.pending_names_.push_back({pccheck::parent_dir(path), path, "", FaultDisk::NameOp::kLink, ino});
  } else {
    if ((flags & O_CREAT) && (flags & O_EXCL)) return EEXIST;
    ino = it->second;
  }
  if ((flags & O_TRUNC) && writable) {
    FaultDisk::Inode& node = d.inodes_[ino];
    node.live.clear();
    node.pending.push_back({FaultDisk::Change::kSetSize, 0, {}});
  }
  int raw = d.next_fd_++;
  d.files_[raw] = {ino, view_, path, (flags & O_DIRECT) != 0, writable};
  *fd = raw;
  return 0;
}

void FaultFs::close(int fd) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end()) return;
  FaultDisk::Inode& node = d.inodes_[it->second.ino];
  if (node.flock_fd == fd) node.flock_fd = -1;
  d.files_.erase(it);
}

int FaultFs::pread(int fd, void* buf, uint64_t n, uint64_t off, uint64_t* done) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end()) return EBADF;
  if (int err = d.enter_locked({OpKind::kRead, view_, it->second.path, off, n, false})) return err;
  if (it->second.direct && !direct_aligned(buf, n, off)) return EINVAL;
  const auto& live = d.inodes_[it->second.ino].live;
  uint64_t m = off >= live.size() ? 0 : std::min<uint64_t>(n, live.size() - off);
  if (m) std::memcpy(buf, live.data() + off, m);
  *done = m;
  return 0;
}

int FaultFs::pwrite(int fd, const void* buf, uint64_t n, uint64_t off, uint64_t* done) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end() || !it->second.writable) return EBADF;
  if (int err = d.enter_locked({OpKind::kWrite, view_, it->second.path, off, n, false})) return err;
  if (it->second.direct && !direct_aligned(buf, n, off)) return EINVAL;
  FaultDisk::Inode& node = d.inodes_[it->second.ino];
  if (off + n > node.live.size() && d.used_locked() + (off + n - node.live.size()) > d.capacity_) return ENOSPC;
  const auto* p = static_cast<const uint8_t*>(buf);
  FaultDisk::Change c{FaultDisk::Change::kWrite, off, std::vector<uint8_t>(p, p + n)};
  d.apply_change(node.live, c, nullptr);
  node.pending.push_back(std::move(c));
  *done = n;
  return 0;
}

int FaultFs::sync(int fd, OpKind kind) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end()) return EBADF;
  bool injected = false;
  if (int err = d.enter_locked({kind, view_, it->second.path, 0, 0, false}, &injected)) {
    // Linux reports a failed writeback once and marks the pages clean.
    if (injected) d.failed_sync_locked(d.inodes_[it->second.ino]);
    return err;
  }
  d.sync_locked(d.inodes_[it->second.ino]);
  return 0;
}

int FaultFs::fdatasync(int fd) { return sync(fd, OpKind::kDatasync); }
int FaultFs::fsync(int fd) { return sync(fd, OpKind::kDatasync); }

int FaultFs::resize(int fd, uint64_t size, bool only_grow) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end() || !it->second.writable) return EBADF;
  if (int err = d.enter_locked({OpKind::kAllocate, view_, it->second.path, 0, size, false})) return err;
  FaultDisk::Inode& node = d.inodes_[it->second.ino];
  if (only_grow && size <= node.live.size()) return 0;
  if (size > node.live.size() && d.used_locked() + (size - node.live.size()) > d.capacity_) return ENOSPC;
  FaultDisk::Change c{only_grow ? FaultDisk::Change::kGrow : FaultDisk::Change::kSetSize, size, {}};
  d.apply_change(node.live, c, nullptr);
  node.pending.push_back(std::move(c));
  return 0;
}

int FaultFs::fallocate(int fd, uint64_t size) { return resize(fd, size, true); }
int FaultFs::ftruncate(int fd, uint64_t size) { return resize(fd, size, false); }

int FaultFs::fstat(int fd, pccheck::FileInfo* out) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end()) return EBADF;
  if (int err = d.enter_locked({OpKind::kStat, view_, it->second.path, 0, 0, false})) return err;
  out->size = d.inodes_[it->second.ino].live.size();
  out->dev = 1;
  out->ino = it->second.ino;
  return 0;
}

int FaultFs::stat(const std::string& path, pccheck::FileInfo* out) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  if (int err = d.enter_locked({OpKind::kStat, view_, path, 0, 0, false})) return err;
  auto it = d.live_names_.find(path);
  if (it == d.live_names_.end()) return ENOENT;
  out->size = d.inodes_[it->second].live.size();
  out->dev = 1;
  out->ino = it->second;
  return 0;
}

int FaultFs::rename(const std::string& from, const std::string& to) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  if (int err = d.enter_locked({OpKind::kRename, view_, from, 0, 0, false})) return err;
  auto it = d.live_names_.find(from);
  if (it == d.live_names_.end()) return ENOENT;
  uint64_t ino = it->second;
  d.live_names_.erase(it);
  d.live_names_[to] = ino;
  d.pending_names_.push_back({pccheck::parent_dir(from), from, to, FaultDisk::NameOp::kRename, ino});
  return 0;
}

int FaultFs::unlink(const std::string& path) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  if (int err = d.enter_locked({OpKind::kUnlink, view_, path, 0, 0, false})) return err;
  auto it = d.live_names_.find(path);
  if (it == d.live_names_.end()) return ENOENT;
  uint64_t ino = it->second;
  d.live_names_.erase(it);
  d.pending_names_.push_back({pccheck::parent_dir(path), path, "", FaultDisk::NameOp::kUnlink, ino});
  return 0;
}

int FaultFs::fsync_dir(const std::string& dir) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  if (int err = d.enter_locked({OpKind::kSyncDir, view_, dir, 0, 0, false})) return err;
  std::vector<FaultDisk::NameOp> rest;
  for (const auto& op : d.pending_names_) {
    if (op.dir != dir) {
      rest.push_back(op);
      continue;
    }
    if (op.kind != FaultDisk::NameOp::kLink) d.durable_names_.erase(op.path);
    if (op.kind == FaultDisk::NameOp::kLink) d.durable_names_[op.path] = op.ino;
    if (op.kind == FaultDisk::NameOp::kRename) d.durable_names_[op.to] = op.ino;
  }
  d.pending_names_.swap(rest);
  return 0;
}

int FaultFs::flock_exclusive(int fd) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end()) return EBADF;
  if (int err = d.enter_locked({OpKind::kLock, view_, it->second.path, 0, 0, false})) return err;
  if (d.flock_errno_) return d.flock_errno_;
  FaultDisk::Inode& node = d.inodes_[it->second.ino];
  if (node.flock_fd != -1 && node.flock_fd != fd) return EWOULDBLOCK;
  node.flock_fd = fd;
  return 0;
}

int FaultFs::free_bytes(int fd, uint64_t* out) {
  FaultDisk& d = *disk_;
  std::lock_guard<std::mutex> lk(d.mu_);
  auto it = d.files_.find(fd);
  if (it == d.files_.end()) return EBADF;
  if (int err = d.enter_locked({OpKind::kStat, view_, it->second.path, 0, 0, false})) return err;
  uint64_t used = d.used_locked();
  *out = d.capacity_ > used ? d.capacity_ - used : 0;
  return 0;
}

}  // namespace pctest
