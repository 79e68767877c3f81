// The file-system seam: every file operation of the core goes through a
// FileSystem, so a test can put a disk under the core that loses what was
// never synced (tests/cpp/fault_fs.h). One virtual call per system call;
// the default, posix_fs(), is plain POSIX.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace pccheck {

struct FileInfo {
  uint64_t size = 0;
  uint64_t dev = 0;
  uint64_t ino = 0;
};

// Every call returns 0 or an errno value and never throws; EINTR is retried
// inside. Descriptors are plain ints owned by the implementation.
class FileSystem {
 public:
  virtual ~FileSystem() = default;

  virtual int open(const std::string& path, int flags, mode_t mode, int* fd) = 0;
  virtual void close(int fd) = 0;
  // Transfer at most n bytes; *done is the count (0 for a read at end of file).
  virtual int pread(int fd, void* buf, uint64_t n, uint64_t off, uint64_t* done) = 0;
  virtual int pwrite(int fd, const void* buf, uint64_t n, uint64_t off, uint64_t* done) = 0;
  virtual int fdatasync(int fd) = 0;
  virtual int fsync(int fd) = 0;
  virtual int fallocate(int fd, uint64_t size) = 0;  // posix_fallocate(fd, 0, size)
  virtual int ftruncate(int fd, uint64_t size) = 0;
  virtual int fstat(int fd, FileInfo* out) = 0;
  virtual int stat(const std::string& path, FileInfo* out) = 0;
  virtual int rename(const std::string& from, const std::string& to) = 0;
  virtual int unlink(const std::string& path) = 0;
  // Makes creations, renames and unlinks in directory `dir` durable.
  virtual int fsync_dir(const std::string& dir) = 0;
  // Exclusive, non-blocking flock; EWOULDBLOCK while another holds it.
  virtual int flock_exclusive(int fd) = 0;
  // Bytes an unprivileged caller may still allocate on fd's file system.
  virtual int free_bytes(int fd, uint64_t* out) = 0;
};

FileSystem& posix_fs();

}  // namespace pccheck
