#include "store_file.h"

#include <fcntl.h>

#include <cerrno>
#include <vector>

#include "aligned_block.h"
#include "errors.h"

namespace pccheck {
namespace {

void remove_leftover(FileSystem& fs, const std::string& tmp) {
  int err = fs.unlink(tmp);
  if (err != 0 && err != ENOENT) throw CoreError("remove leftover " + tmp + ": " + errno_text(err));
}

OpenedFile create(FileSystem& fs, const FileRequest& req) {
  OpenedFile f;
  f.created = true;
  f.sb = make_geometry(req.slot_size, req.slot_count, req.chunk_size, req.keep, req.max_async, now_ns());
  std::string tmp = temp_path(req.path);
  Fd fd = create_file(fs, tmp, req.path, f.sb);
  try {
    sync_and_rename(fd, tmp, req.path);
  } catch (...) {
    fs.unlink(tmp);
    throw;
  }
  fsync_parent_dir(fs, req.path);
  f.fd = std::move(fd);
  return f;
}

}  // namespace

std::string temp_path(const std::string& path) { return path + ".tmp"; }

Fd create_file(FileSystem& fs, const std::string& tmp, const std::string& path, const Superblock& sb) {
  remove_leftover(fs, tmp);
  Fd fd = open_file(fs, tmp, O_RDWR | O_CREAT | O_EXCL, 0644);
  try {
    preallocate(fd, sb.file_size, path);
    std::vector<uint8_t> block(kBlock);
    encode_superblock(sb, block.data());
    if (int err = pwrite_all(fd, block.data(), kBlock, 0))
      throw WriteError("write superblock of " + tmp + ": " + errno_text(err));
  } catch (...) {
    fd.reset();
    fs.unlink(tmp);
    throw;
  }
  return fd;
}

int open_direct(FileSystem& fs, const std::string& path, Fd* out) {
  Fd fd;
  if (int err = try_open(fs, path, O_RDWR | O_DIRECT, &fd)) return err;
  AlignedBlock probe(kBlock);
  uint64_t n = 0;
  if (int err = fs.pread(fd.get(), probe.data, kBlock, 0, &n)) return err;
  if (n != kBlock) return EIO;
  *out = std::move(fd);
  return 0;
}

void sync_and_rename(const Fd& fd, const std::string& tmp, const std::string& path) {
  if (int err = fd.fs().fsync(fd.get())) throw WriteError("fsync " + tmp + ": " + errno_text(err));
  if (int err = fd.fs().rename(tmp, path))
    throw WriteError("rename " + tmp + " to " + path + ": " + errno_text(err));
}

OpenedFile open_or_create(FileSystem& fs, const FileRequest& req) {
  OpenedFile f;
  int err = try_open(fs, req.path, O_RDWR, &f.fd);
  if (err == ENOENT) return create(fs, req);
  if (err != 0) throw CoreError("open " + req.path + ": " + errno_text(err));
  // Sync on open (docs/format.md, "Crash model"): the data first, then,
  // once the file is known to be ours, its name and the removal of a
  // leftover temporary file.
  if ((err = fs.fdatasync(f.fd.get())) != 0) throw CoreError("fdatasync " + req.path + ": " + errno_text(err));
  try {
    f.sb = read_superblock(f.fd, req.path);
  } catch (const FormatError& e) {
    throw FormatError(std::string(e.what()) + "; refusing to overwrite it");
  }
  remove_leftover(fs, temp_path(req.path));
  fsync_parent_dir(fs, req.path);
  if (f.sb.slot_count < 2)  // keep >= 1 plus one slot to write into
    throw FormatError(req.path + ": a store needs at least 2 slots, the file has " + std::to_string(f.sb.slot_count));
  uint64_t need = div_up(f.sb.slot_size, req.chunk_size);
  if (need > f.sb.table_capacity())
    throw FormatError(req.path + ": chunk_size " + std::to_string(req.chunk_size) +
                      " is too small for this file's chunk tables (at most " +
                      std::to_string(f.sb.table_capacity()) + " chunks per slot)");
  f.scan = scan_fd(f.fd, req.path, f.sb, false);
  return f;
}

}  // namespace pccheck
