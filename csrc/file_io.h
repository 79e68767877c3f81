// Loop-safe helpers over a FileSystem. Failures carry the errno text, the
// path and the offset, so a report says what broke where.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "fs.h"

namespace pccheck {

// Owns a descriptor of a FileSystem.
class Fd {
 public:
  Fd() = default;
  Fd(FileSystem& fs, int fd) : fs_(&fs), fd_(fd) {}
  Fd(Fd&& o) noexcept : fs_(o.fs_), fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept;
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  FileSystem& fs() const { return *fs_; }
  bool valid() const { return fd_ >= 0; }
  void reset();

 private:
  FileSystem* fs_ = nullptr;
  int fd_ = -1;
};

std::string errno_text(int err);
uint64_t now_ns();
// The directory holding `path` ("." for a bare name).
std::string parent_dir(const std::string& path);

// Throws CoreError ("open PATH: TEXT") on failure.
Fd open_file(FileSystem& fs, const std::string& path, int flags, mode_t mode = 0644);
// As open_file, but returns the errno instead of throwing (out untouched then).
int try_open(FileSystem& fs, const std::string& path, int flags, Fd* out, mode_t mode = 0644);
uint64_t file_size(const Fd& fd, const std::string& path);

// Full-length positional I/O; short transfers are retried. pwrite_all
// returns 0 or the errno of the failing call; callers decide which
// exception it becomes.
int pwrite_all(const Fd& fd, const void* buf, uint64_t n, uint64_t off);
// Throws CorruptError on a read past the end of the file, CoreError else.
void pread_all(const Fd& fd, void* buf, uint64_t n, uint64_t off, const std::string& path);
// Makes a creation, rename or unlink of `path` durable (CoreError).
void fsync_parent_dir(FileSystem& fs, const std::string& path);
// Reserves `size` bytes; NoSpaceError names the path, bytes needed and free.
void preallocate(const Fd& fd, uint64_t size, const std::string& path);
// Makes what an earlier process left in the page cache for `path` durable,
// data and name, before a caller trusts what it reads there (CoreError).
void make_durable(FileSystem& fs, const std::string& path);
void make_durable(const Fd& fd, const std::string& path);  // path: the open file's name

}  // namespace pccheck
