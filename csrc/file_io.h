// Thin, loop-safe wrappers over POSIX file calls. Every failure throws with
// the errno text, the path and the offset, so a report says what broke where.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace pccheck {

// Owns a file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  int fd_ = -1;
};

std::string errno_text(int err);
uint64_t now_ns();

// Throws CoreError ("open PATH: TEXT") on failure; EINTR is retried.
Fd open_file(const std::string& path, int flags, mode_t mode = 0644);
uint64_t file_size(int fd, const std::string& path);

// Full-length positional I/O; short transfers and EINTR are retried.
// pwrite_all returns 0 or the errno of the failing call; callers decide
// which exception it becomes.
int pwrite_all(int fd, const void* buf, uint64_t n, uint64_t off);
// Throws CorruptError on a read past the end of the file, CoreError else.
void pread_all(int fd, void* buf, uint64_t n, uint64_t off, const std::string& path);
int datasync(int fd);
// Makes a rename or creation in the directory of `path` durable.
void fsync_parent_dir(const std::string& path);
// Reserves `size` bytes; NoSpaceError names the path, bytes needed and free.
void preallocate(int fd, uint64_t size, const std::string& path);

// Exclusive, non-blocking flock on a lock file, held for the object's
// lifetime. The holder's pid is written into the file for error messages,
// which name `what` (the checkpoint file the lock protects).
class FileLock {
 public:
  FileLock(const std::string& lock_path, const std::string& what);
  void unlock() { fd_.reset(); }

 private:
  Fd fd_;
};

}  // namespace pccheck
