#include "store_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "errors.h"

namespace pccheck {
namespace {

OpenedFile create(const FileRequest& req) {
  OpenedFile f;
  f.created = true;
  f.sb = make_geometry(req.slot_size, req.slot_count, req.chunk_size, req.keep, req.max_async, now_ns());
  std::string tmp = req.path + ".tmp." + std::to_string(::getpid());
  ::unlink(tmp.c_str());  // left over by a crash of an earlier process with our pid
  Fd fd = open_file(tmp, O_RDWR | O_CREAT | O_EXCL, 0644);
  try {
    preallocate(fd.get(), f.sb.file_size, req.path);
    std::vector<uint8_t> block(kBlock);
    encode_superblock(f.sb, block.data());
    int err = pwrite_all(fd.get(), block.data(), kBlock, 0);
    if (err == 0 && ::fsync(fd.get()) != 0) err = errno;
    if (err != 0) throw WriteError("write superblock of " + tmp + ": " + errno_text(err));
    if (::rename(tmp.c_str(), req.path.c_str()) != 0)
      throw CoreError("rename " + tmp + " to " + req.path + ": " + errno_text(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_parent_dir(req.path);
  f.fd = std::move(fd);
  return f;
}

}  // namespace

OpenedFile open_or_create(const FileRequest& req) {
  int raw;
  do raw = ::open(req.path.c_str(), O_RDWR | O_CLOEXEC);
  while (raw < 0 && errno == EINTR);
  if (raw < 0) {
    if (errno == ENOENT) return create(req);
    throw CoreError("open " + req.path + ": " + errno_text(errno));
  }
  OpenedFile f;
  f.fd = Fd(raw);
  try {
    f.sb = read_superblock(f.fd.get(), req.path);
  } catch (const FormatError& e) {
    throw FormatError(std::string(e.what()) + "; refusing to overwrite it");
  }
  if (f.sb.slot_count < 2)  // keep >= 1 plus one slot to write into
    throw FormatError(req.path + ": a store needs at least 2 slots, the file has " + std::to_string(f.sb.slot_count));
  uint64_t want = round_up(req.slot_size, kBlock);
  if (f.sb.slot_size < want)
    throw FormatError(req.path + ": existing slots hold " + std::to_string(f.sb.slot_size) + " bytes, " +
                      std::to_string(want) + " requested; use a new path or remove the file");
  uint64_t need = div_up(f.sb.slot_size, req.chunk_size);
  if (need > f.sb.table_capacity())
    throw FormatError(req.path + ": chunk_size " + std::to_string(req.chunk_size) +
                      " is too small for this file's chunk tables (at most " +
                      std::to_string(f.sb.table_capacity()) + " chunks per slot)");
  f.scan = scan_fd(f.fd.get(), req.path, f.sb, false);
  return f;
}

}  // namespace pccheck
