#include "file_io.h"

#include <fcntl.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "errors.h"

namespace pccheck {

Fd& Fd::operator=(Fd&& o) noexcept {
  if (this != &o) {
    reset();
    fs_ = o.fs_;
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Fd::reset() {
  if (fd_ >= 0) fs_->close(fd_);
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

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

int try_open(FileSystem& fs, const std::string& path, int flags, Fd* out, mode_t mode) {
  int raw = -1;
  if (int err = fs.open(path, flags, mode, &raw)) return err;
  *out = Fd(fs, raw);
  return 0;
}

Fd open_file(FileSystem& fs, const std::string& path, int flags, mode_t mode) {
  Fd fd;
  if (int err = try_open(fs, path, flags, &fd, mode)) throw CoreError("open " + path + ": " + errno_text(err));
  return fd;
}

uint64_t file_size(const Fd& fd, const std::string& path) {
  FileInfo info;
  if (int err = fd.fs().fstat(fd.get(), &info)) throw CoreError("stat " + path + ": " + errno_text(err));
  return info.size;
}

int pwrite_all(const Fd& fd, const void* buf, uint64_t n, uint64_t off) {
  const auto* p = static_cast<const uint8_t*>(buf);
  while (n > 0) {
    uint64_t w = 0;
    if (int err = fd.fs().pwrite(fd.get(), p, n, off, &w)) return err;
    if (w == 0) return EIO;  // no progress on a regular file: treat as an I/O error
    p += w;
    off += w;
    n -= w;
  }
  return 0;
}

void pread_all(const Fd& fd, void* buf, uint64_t n, uint64_t off, const std::string& path) {
  auto* p = static_cast<uint8_t*>(buf);
  while (n > 0) {
    uint64_t r = 0;
    if (int err = fd.fs().pread(fd.get(), p, n, off, &r))
      throw CoreError("read " + path + " at offset " + std::to_string(off) + ": " + errno_text(err));
    if (r == 0) throw CorruptError(path + ": unexpected end of file at offset " + std::to_string(off));
    p += r;
    off += r;
    n -= r;
  }
}

void fsync_parent_dir(FileSystem& fs, const std::string& path) {
  std::string dir = parent_dir(path);
  if (int err = fs.fsync_dir(dir)) throw CoreError("fsync directory " + dir + " of " + path + ": " + errno_text(err));
}

void preallocate(const Fd& fd, uint64_t size, const std::string& path) {
  uint64_t free_bytes = 0;  // before: a failed fallocate may keep what it allocated until the file goes
  bool free_known = fd.fs().free_bytes(fd.get(), &free_bytes) == 0;
  int err = fd.fs().fallocate(fd.get(), size);
  if (err == 0) return;
  if (err == ENOSPC || err == EFBIG || err == EDQUOT)
    throw NoSpaceError("cannot preallocate " + path + ": needs " + std::to_string(size) + " bytes, " +
                       (free_known ? std::to_string(free_bytes) : std::string("unknown")) + " bytes free (" +
                       errno_text(err) + ")");
  throw CoreError("posix_fallocate " + path + " (" + std::to_string(size) + " bytes): " + errno_text(err));
}

void make_durable(const Fd& fd, const std::string& path) {
  // Linux syncs a file through a read-only descriptor: a reader needs no write permission. EINVAL: a
  // file system without fsync (squashfs, procfs: a read-only image) holds nothing unsynced.
  int err = fd.fs().fdatasync(fd.get());
  if (err != 0 && err != EINVAL) throw CoreError("fdatasync " + path + ": " + errno_text(err));
  std::string dir = parent_dir(path);
  err = fd.fs().fsync_dir(dir);
  if (err != 0 && err != EINVAL) throw CoreError("fsync directory " + dir + " of " + path + ": " + errno_text(err));
}

void make_durable(FileSystem& fs, const std::string& path) { make_durable(open_file(fs, path, O_RDONLY), path); }

}  // namespace pccheck
