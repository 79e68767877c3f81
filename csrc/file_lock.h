// An exclusive lock on a file, held for the object's lifetime, that also
// works on shared file systems. The holder's host, pid and start time are
// written into the lock, and a refusal names them.
//
// flock on `lock_path` where the file system has it. Where it does not
// (Lustre without -o flock, some NFS setups: ENOSYS, EOPNOTSUPP, ENOLCK), a
// lease: the file `lock_path + ".lease"`, created with O_EXCL and renewed by
// a thread of the holder every lease_timeout / 4. A lease is stale, and
// taken over, when its holder is on this machine and no longer runs (pid
// gone, or reused by a process with another start time, or the machine
// rebooted since), or when it is on another host and was not renewed for
// lease_timeout by this host's clock (hosts' clocks must agree to well
// within that).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "file_io.h"
#include "lock_owner.h"

namespace pccheck {

enum class LockMode { kAuto, kFlock, kLease };  // kAuto: flock, a lease where flock is missing

struct LockOptions {
  LockMode mode = LockMode::kAuto;
  double lease_timeout_s = 60;
};

class FileLock {
 public:
  // Throws LockedError when another process holds it, CoreError when the
  // lock file cannot be used. `what` names the protected thing in messages.
  FileLock(FileSystem& fs, const std::string& lock_path, const std::string& what, const LockOptions& opt = {});
  ~FileLock();
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;

  void unlock();
  bool held() const { return fd_.valid(); }
  LockMode mode() const { return mode_; }  // kFlock or kLease once held
  const LockOwner& owner() const { return me_; }

 private:
  bool try_flock(const std::string& what);  // false: no flock on this file system
  void take_lease(const std::string& what);
  bool lease_is_stale(const LockOwner& o) const;
  void renew_loop();
  int write_owner(bool lease);  // with a fresh renewal time (a lease also synced); 0 or errno

  FileSystem& fs_;
  std::string lock_path_, lease_path_;
  LockOptions opt_;
  LockMode mode_ = LockMode::kAuto;
  LockOwner me_;
  Fd fd_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread renewer_;
};

}  // namespace pccheck
