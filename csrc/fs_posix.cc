// posix_fs(): the FileSystem of production, straight system calls.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>

#include "fs.h"

namespace pccheck {
namespace {

template <typename F>
int retry(F call) {  // 0 or errno, EINTR retried
  int rc;
  do rc = call();
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}

FileInfo info_of(const struct stat& st) {
  FileInfo i;
  i.size = static_cast<uint64_t>(st.st_size);
  i.dev = static_cast<uint64_t>(st.st_dev);
  i.ino = static_cast<uint64_t>(st.st_ino);
  return i;
}

class PosixFs final : public FileSystem {
 public:
  int open(const std::string& path, int flags, mode_t mode, int* fd) override {
    int raw;
    do raw = ::open(path.c_str(), flags | O_CLOEXEC, mode);
    while (raw < 0 && errno == EINTR);
    if (raw < 0) return errno;
    *fd = raw;
    return 0;
  }

  void close(int fd) override { ::close(fd); }  // close errors are not actionable: durability comes from syncs

  int pread(int fd, void* buf, uint64_t n, uint64_t off, uint64_t* done) override {
    ssize_t r;
    do r = ::pread(fd, buf, n, static_cast<off_t>(off));
    while (r < 0 && errno == EINTR);
    if (r < 0) return errno;
    *done = static_cast<uint64_t>(r);
    return 0;
  }

  int pwrite(int fd, const void* buf, uint64_t n, uint64_t off, uint64_t* done) override {
    ssize_t w;
    do w = ::pwrite(fd, buf, n, static_cast<off_t>(off));
    while (w < 0 && errno == EINTR);
    if (w < 0) return errno;
    *done = static_cast<uint64_t>(w);
    return 0;
  }

  int fdatasync(int fd) override { return retry([&] { return ::fdatasync(fd); }); }
  int fsync(int fd) override { return retry([&] { return ::fsync(fd); }); }

  int fallocate(int fd, uint64_t size) override {
    int err;
    do err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));  // returns the error, not errno
    while (err == EINTR);
    return err;
  }

  int ftruncate(int fd, uint64_t size) override {
    return retry([&] { return ::ftruncate(fd, static_cast<off_t>(size)); });
  }

  int fstat(int fd, FileInfo* out) override {
    struct stat st;
    if (::fstat(fd, &st) != 0) return errno;
    *out = info_of(st);
    return 0;
  }

  int stat(const std::string& path, FileInfo* out) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return errno;
    *out = info_of(st);
    return 0;
  }

  int rename(const std::string& from, const std::string& to) override {
    return ::rename(from.c_str(), to.c_str()) == 0 ? 0 : errno;
  }

  int unlink(const std::string& path) override { return ::unlink(path.c_str()) == 0 ? 0 : errno; }

  int fsync_dir(const std::string& dir) override {
    int fd = -1;
    if (int err = open(dir, O_RDONLY | O_DIRECTORY, 0, &fd)) return err;
    int err = fsync(fd);
    ::close(fd);
    return err;
  }

  int flock_exclusive(int fd) override { return retry([&] { return ::flock(fd, LOCK_EX | LOCK_NB); }); }

  int free_bytes(int fd, uint64_t* out) override {
    struct statvfs vfs;
    if (::fstatvfs(fd, &vfs) != 0) return errno;
    *out = static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize);
    return 0;
  }
};

}  // namespace

FileSystem& posix_fs() {
  static PosixFs fs;
  return fs;
}

}  // namespace pccheck
