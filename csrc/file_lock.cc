#include "file_lock.h"

#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <stdexcept>

#include "errors.h"

namespace pccheck {
namespace {

constexpr int kLeaseAttempts = 8;  // create / take over rounds before giving up on a contended lease

// What a file system without flock answers (Lustre without -o flock: ENOSYS).
bool flock_missing(int err) { return err == ENOSYS || err == EOPNOTSUPP || err == ENOTSUP || err == ENOLCK; }

std::string read_text(const Fd& fd) {
  std::string text(4096, '\0');
  uint64_t n = 0;
  if (fd.fs().pread(fd.get(), &text[0], text.size(), 0, &n) != 0) n = 0;
  text.resize(n);
  return text;
}

bool same_owner(const LockOwner& a, const LockOwner& b) {
  return a.host == b.host && a.boot == b.boot && a.pid == b.pid && a.start_ticks == b.start_ticks;
}

}  // namespace

FileLock::FileLock(FileSystem& fs, const std::string& lock_path, const std::string& what, const LockOptions& opt)
    : fs_(fs), lock_path_(lock_path), lease_path_(lock_path + ".lease"), opt_(opt), me_(this_process()) {
  if (!(opt.lease_timeout_s > 0)) throw std::invalid_argument("lease_timeout must be > 0");
  if (opt.mode != LockMode::kLease && try_flock(what)) {
    mode_ = LockMode::kFlock;
    return;
  }
  take_lease(what);
  mode_ = LockMode::kLease;
  renewer_ = std::thread([this] { renew_loop(); });
}

FileLock::~FileLock() { unlock(); }

bool FileLock::try_flock(const std::string& what) {
  Fd fd = open_file(fs_, lock_path_, O_RDWR | O_CREAT);
  int err = fs_.flock_exclusive(fd.get());
  if (err == 0) {
    fd_ = std::move(fd);
    (void)write_owner(false);  // the lock is held either way; the line only names us in refusals
    return true;
  }
  if (flock_missing(err) && opt_.mode == LockMode::kAuto) return false;
  if (err != EWOULDBLOCK) throw CoreError("flock " + lock_path_ + ": " + errno_text(err));
  LockOwner o;
  bool known = decode_owner(read_text(fd), &o);
  throw LockedError(what + " is in use by another process" + (known ? " (" + describe_owner(o) + ")" : ""));
}

void FileLock::take_lease(const std::string& what) {
  for (int attempt = 0; attempt < kLeaseAttempts; ++attempt) {
    Fd fd;
    int err = try_open(fs_, lease_path_, O_RDWR | O_CREAT | O_EXCL, &fd);
    if (err == 0) {
      fd_ = std::move(fd);
      if ((err = write_owner(true)) != 0) {
        fd_.reset();
        fs_.unlink(lease_path_);
        throw CoreError("write lease " + lease_path_ + ": " + errno_text(err));
      }
      return;
    }
    if (err != EEXIST) throw CoreError("create lease " + lease_path_ + ": " + errno_text(err));

    Fd cur;
    err = try_open(fs_, lease_path_, O_RDONLY, &cur);
    if (err == ENOENT) continue;  // released meanwhile
    if (err != 0) throw CoreError("open lease " + lease_path_ + ": " + errno_text(err));
    std::string text = read_text(cur);
    cur.reset();
    LockOwner o;
    if (!decode_owner(text, &o))
      throw LockedError(what + " is locked by " + lease_path_ +
                        ", which names no owner (being created, or left by a crash while it was); remove it "
                        "if no process uses " + what);
    if (!lease_is_stale(o)) throw LockedError(what + " is in use by another process (" + describe_owner(o) + ")");

    // Take over: move the stale lease aside. Two takers may race; only the
    // one that moved the very lease it judged (same text) goes on.
    std::string aside = lease_path_ + ".stale." + me_.host + "." + std::to_string(me_.pid);
    err = fs_.rename(lease_path_, aside);
    if (err == ENOENT) continue;
    if (err != 0) throw CoreError("rename " + lease_path_ + " to " + aside + ": " + errno_text(err));
    Fd moved;
    bool judged = try_open(fs_, aside, O_RDONLY, &moved) == 0 && read_text(moved) == text;
    moved.reset();
    if (!judged) {
      fs_.rename(aside, lease_path_);  // another taker's fresh lease: put it back
      throw LockedError(what + " was just taken over by another process");
    }
    fs_.unlink(aside);
  }
  throw LockedError(what + ": the lease " + lease_path_ + " is contended; try again");
}

bool FileLock::lease_is_stale(const LockOwner& o) const {
  if (o.host == me_.host) return o.boot != me_.boot || !process_alive(o);
  uint64_t timeout_ns = static_cast<uint64_t>(opt_.lease_timeout_s * 1e9);
  uint64_t now = now_ns();
  return now > o.renewed_ns && now - o.renewed_ns > timeout_ns;
}

int FileLock::write_owner(bool lease) {
  LockOwner o = me_;
  o.renewed_ns = now_ns();
  std::string line = encode_owner(o);  // fixed length: a renewal overwrites it in place
  int err = lease ? 0 : fs_.ftruncate(fd_.get(), 0);  // drop a longer line of an older version
  if (err == 0) err = pwrite_all(fd_, line.data(), line.size(), 0);
  if (err == 0 && lease) err = fs_.fdatasync(fd_.get());  // other hosts read it from the server
  return err;
}

void FileLock::renew_loop() {
  auto period = std::chrono::duration<double>(opt_.lease_timeout_s / 4);
  std::unique_lock<std::mutex> lk(mu_);
  while (!cv_.wait_for(lk, period, [&] { return stop_; })) {
    lk.unlock();
    (void)write_owner(true);  // a failure is retried next period; the lease goes stale only after lease_timeout
    lk.lock();
  }
}

void FileLock::unlock() {
  if (renewer_.joinable()) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    renewer_.join();
  }
  if (mode_ == LockMode::kLease && fd_.valid()) {
    Fd cur;
    LockOwner o;
    if (try_open(fs_, lease_path_, O_RDONLY, &cur) == 0 && decode_owner(read_text(cur), &o) && same_owner(o, me_))
      fs_.unlink(lease_path_);  // still ours (not taken over while this process stalled)
  }
  fd_.reset();
}

}  // namespace pccheck
