#include "format.h"

#include <cstring>

#include "crc32c.h"

namespace pccheck {
namespace {

constexpr char kSuperMagic[8] = {'P', 'C', 'C', 'K', 'S', 'U', 'P', 'R'};
constexpr char kRecordMagic[8] = {'P', 'C', 'C', 'K', 'R', 'E', 'C', '1'};
constexpr char kTableMagic[8] = {'P', 'C', 'C', 'K', 'T', 'A', 'B', '1'};

void put_u32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get_u32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
uint64_t get_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// a * b + c, false on 64-bit overflow.
bool mul_add(uint64_t a, uint64_t b, uint64_t c, uint64_t* out) {
  uint64_t m;
  return !__builtin_mul_overflow(a, b, &m) && !__builtin_add_overflow(m, c, out);
}

}  // namespace

Superblock make_geometry(uint64_t slot_size, uint64_t slot_count, uint64_t chunk_size, uint64_t keep,
                         uint64_t max_async, uint64_t created_ns) {
  Superblock sb;
  sb.slot_count = slot_count;
  sb.slot_size = round_up(slot_size, kBlock);
  sb.table_bytes = round_up(table_encoded_size(div_up(sb.slot_size, chunk_size)), kBlock);
  sb.ring_entries = slot_count * 2 > 16 ? slot_count * 2 : 16;
  sb.ring_offset = kBlock;
  sb.slots_offset = sb.ring_offset + sb.ring_entries * kBlock;
  sb.file_size = sb.slots_offset + sb.slot_count * sb.slot_stride();
  sb.keep = keep;
  sb.max_async = max_async;
  sb.created_ns = created_ns;
  return sb;
}

Superblock grown_geometry(const Superblock& old, uint64_t slot_size, uint64_t chunk_size, uint64_t created_ns) {
  Superblock sb = make_geometry(slot_size, old.slot_count, chunk_size, old.keep, old.max_async, created_ns);
  if (sb.table_bytes < old.table_bytes) sb.table_bytes = old.table_bytes;
  sb.ring_entries = old.ring_entries;  // copied records keep their ring positions
  sb.slots_offset = sb.ring_offset + sb.ring_entries * kBlock;
  sb.file_size = sb.slots_offset + sb.slot_count * sb.slot_stride();
  return sb;
}

void encode_superblock(const Superblock& sb, uint8_t* b) {
  std::memset(b, 0, kBlock);
  std::memcpy(b, kSuperMagic, 8);
  put_u32(b + 8, kFormatVersion);
  put_u32(b + 12, static_cast<uint32_t>(kBlock));
  put_u64(b + 16, sb.slot_count);
  put_u64(b + 24, sb.slot_size);
  put_u64(b + 32, sb.table_bytes);
  put_u64(b + 40, sb.ring_entries);
  put_u64(b + 48, sb.ring_offset);
  put_u64(b + 56, sb.slots_offset);
  put_u64(b + 64, sb.file_size);
  put_u64(b + 72, sb.keep);
  put_u64(b + 80, sb.max_async);
  put_u64(b + 88, sb.created_ns);
  put_u32(b + kSuperblockFields, crc32c(b, kSuperblockFields));
}

std::string decode_superblock(const uint8_t* b, uint64_t file_size, Superblock* out) {
  if (std::memcmp(b, kSuperMagic, 8) != 0) return "bad superblock magic (not a pccheck file)";
  if (get_u32(b + kSuperblockFields) != crc32c(b, kSuperblockFields)) return "superblock checksum mismatch";
  uint32_t version = get_u32(b + 8);
  if (version != kFormatVersion) return "unsupported format version " + std::to_string(version);
  if (get_u32(b + 12) != kBlock) return "unsupported block size";
  Superblock sb;
  sb.slot_count = get_u64(b + 16);
  sb.slot_size = get_u64(b + 24);
  sb.table_bytes = get_u64(b + 32);
  sb.ring_entries = get_u64(b + 40);
  sb.ring_offset = get_u64(b + 48);
  sb.slots_offset = get_u64(b + 56);
  sb.file_size = get_u64(b + 64);
  sb.keep = get_u64(b + 72);
  sb.max_async = get_u64(b + 80);
  sb.created_ns = get_u64(b + 88);

  // Bounds first, arithmetic second: nothing below can overflow.
  if (sb.slot_count == 0 || sb.slot_count > kMaxSlots) return "bad slot_count";
  if (sb.ring_entries <= sb.slot_count || sb.ring_entries > kMaxRingEntries) return "bad ring_entries";
  if (sb.ring_offset != kBlock) return "bad ring_offset";
  if (sb.slots_offset != sb.ring_offset + sb.ring_entries * kBlock) return "bad slots_offset";
  if (sb.table_bytes < kBlock || sb.table_bytes > kMaxTableBytes || sb.table_bytes % kBlock)
    return "bad table_bytes";
  if (sb.slot_size == 0 || sb.slot_size % kBlock) return "bad slot_size";
  uint64_t stride, end;
  if (__builtin_add_overflow(sb.table_bytes, sb.slot_size, &stride) ||
      !mul_add(sb.slot_count, stride, sb.slots_offset, &end) || end != sb.file_size)
    return "inconsistent geometry";
  if (file_size < sb.file_size)
    return "file is truncated: " + std::to_string(file_size) + " bytes, geometry needs " +
           std::to_string(sb.file_size);
  *out = sb;
  return "";
}

void encode_record(const CommitRecord& r, uint8_t* b) {
  std::memset(b, 0, kBlock);
  std::memcpy(b, kRecordMagic, 8);
  put_u64(b + 8, r.seq);
  put_u64(b + 16, r.slot);
  put_u64(b + 24, r.step);
  put_u64(b + 32, r.payload_len);
  put_u64(b + 40, r.chunk_size);
  put_u64(b + 48, r.n_chunks);
  put_u64(b + 56, r.time_ns);
  put_u32(b + 64, r.table_crc);
  put_u32(b + kRecordFields, crc32c(b, kRecordFields));
}

RecordDecode decode_record(const uint8_t* b, CommitRecord* r) {
  if (std::memcmp(b, kRecordMagic, 8) != 0) {
    for (uint64_t i = 0; i < kBlock; ++i)
      if (b[i] != 0) return RecordDecode::kBadMagic;
    return RecordDecode::kEmpty;
  }
  r->seq = get_u64(b + 8);
  r->slot = get_u64(b + 16);
  r->step = get_u64(b + 24);
  r->payload_len = get_u64(b + 32);
  r->chunk_size = get_u64(b + 40);
  r->n_chunks = get_u64(b + 48);
  r->time_ns = get_u64(b + 56);
  r->table_crc = get_u32(b + 64);
  if (get_u32(b + kRecordFields) != crc32c(b, kRecordFields)) return RecordDecode::kBadChecksum;
  return RecordDecode::kOk;
}

std::string check_record(const CommitRecord& r, const Superblock& sb, uint64_t ring_index) {
  if (r.seq % sb.ring_entries != ring_index) return "record in wrong ring entry";
  if (r.slot >= sb.slot_count) return "slot out of range";
  if (r.chunk_size == 0 || r.chunk_size % kBlock) return "bad chunk_size";
  if (r.payload_len == 0 || r.payload_len > sb.slot_size) return "payload_len out of range";
  if (r.n_chunks != div_up(r.payload_len, r.chunk_size)) return "n_chunks does not match payload_len";
  if (r.n_chunks > sb.table_capacity()) return "n_chunks exceeds chunk table";
  return "";
}

uint32_t encode_table(const ChunkTable& t, uint8_t* b) {
  std::memcpy(b, kTableMagic, 8);
  put_u64(b + 8, t.seq);
  put_u64(b + 16, t.step);
  put_u64(b + 24, t.payload_len);
  put_u64(b + 32, t.chunk_size);
  put_u64(b + 40, t.crcs.size());
  for (size_t i = 0; i < t.crcs.size(); ++i) put_u32(b + kTableHeader + 4 * i, t.crcs[i]);
  return crc32c(b, table_encoded_size(t.crcs.size()));
}

std::string decode_table(const uint8_t* b, uint64_t n, const CommitRecord& r, ChunkTable* out) {
  uint64_t size = table_encoded_size(r.n_chunks);  // r passed check_record: bounded
  if (n < size) return "chunk table truncated";
  if (std::memcmp(b, kTableMagic, 8) != 0) return "bad chunk table magic";
  if (get_u64(b + 8) != r.seq) return "chunk table belongs to seq " + std::to_string(get_u64(b + 8)) + " (slot reused)";
  if (crc32c(b, size) != r.table_crc) return "chunk table checksum mismatch";
  if (get_u64(b + 16) != r.step || get_u64(b + 24) != r.payload_len || get_u64(b + 32) != r.chunk_size ||
      get_u64(b + 40) != r.n_chunks)
    return "chunk table does not match record";
  out->seq = r.seq;
  out->step = r.step;
  out->payload_len = r.payload_len;
  out->chunk_size = r.chunk_size;
  out->crcs.resize(r.n_chunks);
  for (uint64_t i = 0; i < r.n_chunks; ++i) out->crcs[i] = get_u32(b + kTableHeader + 4 * i);
  return "";
}

}  // namespace pccheck
