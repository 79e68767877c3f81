#include "file_io.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "errors.h"

namespace pccheck {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);  // close errors are not actionable: durability comes from fdatasync
  fd_ = -1;
}

std::string errno_text(int err) {
  char buf[256];
  // GNU strerror_r may return a static string instead of filling buf.
#if defined(__GLIBC__) && defined(_GNU_SOURCE)
  return strerror_r(err, buf, sizeof buf);
#else
  return strerror_r(err, buf, sizeof buf) == 0 ? std::string(buf) : "errno " + std::to_string(err);
#endif
}

uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

Fd open_file(const std::string& path, int flags, mode_t mode) {
  int fd;
  do fd = ::open(path.c_str(), flags | O_CLOEXEC, mode);
  while (fd < 0 && errno == EINTR);
  if (fd < 0) throw CoreError("open " + path + ": " + errno_text(errno));
  return Fd(fd);
}

uint64_t file_size(int fd, const std::string& path) {
  struct stat st;
  if (::fstat(fd, &st) != 0) throw CoreError("stat " + path + ": " + errno_text(errno));
  return static_cast<uint64_t>(st.st_size);
}

int pwrite_all(int fd, const void* buf, uint64_t n, uint64_t off) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EIO;  // no progress on a regular file: treat as an I/O error
    p += w;
    off += static_cast<uint64_t>(w);
    n -= static_cast<uint64_t>(w);
  }
  return 0;
}

void pread_all(int fd, void* buf, uint64_t n, uint64_t off, const std::string& path) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw CoreError("read " + path + " at offset " + std::to_string(off) + ": " + errno_text(errno));
    }
    if (r == 0) throw CorruptError(path + ": unexpected end of file at offset " + std::to_string(off));
    p += r;
    off += static_cast<uint64_t>(r);
    n -= static_cast<uint64_t>(r);
  }
}

int datasync(int fd) {
  int rc;
  do rc = ::fdatasync(fd);
  while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}

void fsync_parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  Fd d = open_file(dir, O_RDONLY | O_DIRECTORY);
  if (::fsync(d.get()) != 0) throw CoreError("fsync directory " + dir + ": " + errno_text(errno));
}

void preallocate(int fd, uint64_t size, const std::string& path) {
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(size));  // returns the error, not errno
  if (err == 0) return;
  if (err == ENOSPC || err == EFBIG || err == EDQUOT) {
    struct statvfs vfs;
    std::string free_txt = "unknown";
    if (::fstatvfs(fd, &vfs) == 0)
      free_txt = std::to_string(static_cast<uint64_t>(vfs.f_bavail) * static_cast<uint64_t>(vfs.f_frsize));
    throw NoSpaceError("cannot preallocate " + path + ": needs " + std::to_string(size) + " bytes, " +
                       free_txt + " bytes free (" + errno_text(err) + ")");
  }
  throw CoreError("posix_fallocate " + path + " (" + std::to_string(size) + " bytes): " + errno_text(err));
}

FileLock::FileLock(const std::string& lock_path, const std::string& what) {
  fd_ = open_file(lock_path, O_RDWR | O_CREAT);
  if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    int err = errno;
    if (err != EWOULDBLOCK) throw CoreError("flock " + lock_path + ": " + errno_text(err));
    char buf[32] = {};
    ssize_t n = ::pread(fd_.get(), buf, sizeof buf - 1, 0);
    std::string pid = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    while (!pid.empty() && (pid.back() == '\n' || pid.back() == ' ')) pid.pop_back();
    throw LockedError(what + " is in use by another process" +
                      (pid.empty() ? "" : " (pid " + pid + ")"));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_.get(), 0) == 0) (void)pwrite_all(fd_.get(), pid.data(), pid.size(), 0);
}

}  // namespace pccheck

