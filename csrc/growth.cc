#include "growth.h"

#include <algorithm>

#include "aligned_block.h"
#include "errors.h"

namespace pccheck {
namespace {

constexpr uint64_t kCopyPiece = 8 << 20;  // bytes per read/write when copying a checkpoint

void copy_range(const Layout& from, uint64_t src, const Layout& to, uint64_t dst, uint64_t len, AlignedBlock& buf) {
  for (uint64_t done = 0; done < len;) {
    uint64_t n = std::min(buf.size, len - done);
    pread_all(from.fd, buf.data, n, src + done, from.path);
    if (int err = pwrite_all(to.writer(), buf.data, n, dst + done))
      throw WriteError("write " + to.path + " at offset " + std::to_string(dst + done) + " (" + std::to_string(n) +
                       " bytes, copying a checkpoint): " + errno_text(err));
    done += n;
  }
}

}  // namespace

uint64_t grown_slot_size(uint64_t old_slot_size, uint64_t payload_len) {
  return round_up(std::max(payload_len + payload_len / 4, old_slot_size + old_slot_size / 2), kBlock);
}

std::unique_ptr<Layout> create_grown(const Layout& current, uint64_t payload_len, uint64_t chunk_size, bool direct) {
  FileSystem& fs = current.fd.fs();
  auto grown = std::make_unique<Layout>();
  grown->path = temp_path(current.path);
  const uint64_t sizes[] = {grown_slot_size(current.sb.slot_size, payload_len), round_up(payload_len, kBlock)};
  for (uint64_t slot_size : sizes) {
    grown->sb = grown_geometry(current.sb, slot_size, chunk_size, now_ns());
    try {
      grown->fd = create_file(fs, grown->path, current.path, grown->sb);
      break;
    } catch (const NoSpaceError& e) {
      if (slot_size == sizes[1] || sizes[0] == sizes[1])
        throw NoSpaceError("cannot grow " + current.path + " to slots of " + std::to_string(slot_size) +
                           " bytes for a payload of " + std::to_string(payload_len) + " bytes (" + e.what() +
                           "); its checkpoints are untouched and it still takes payloads of up to " +
                           std::to_string(current.sb.slot_size) + " bytes");
    }
  }
  if (direct && open_direct(fs, grown->path, &grown->direct) != 0) grown->direct.reset();
  return grown;
}

CommitRecord copy_checkpoint(const Layout& from, const Layout& to, const CommitRecord& rec, uint64_t slot) {
  // Rounded up to whole blocks (O_DIRECT); both regions have the room.
  uint64_t table_len = round_up(table_encoded_size(rec.n_chunks), kBlock);
  uint64_t payload_len = round_up(rec.payload_len, kBlock);
  AlignedBlock buf(std::min(kCopyPiece, std::max(table_len, payload_len)));
  copy_range(from, from.sb.slot_offset(rec.slot), to, to.sb.slot_offset(slot), table_len, buf);
  copy_range(from, from.sb.payload_offset(rec.slot), to, to.sb.payload_offset(slot), payload_len, buf);
  CommitRecord moved = rec;
  moved.slot = slot;
  return moved;
}

}  // namespace pccheck
