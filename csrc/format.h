// On-disk layout (docs/format.md): superblock, commit ring, slots. Every
// field is encoded little-endian byte by byte, never by copying structs, so
// files move between x86_64 and aarch64 hosts and compilers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace pccheck {

constexpr uint64_t kBlock = 4096;  // alignment of every write (O_DIRECT-safe)
constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kSuperblockFields = 96;  // bytes covered by the superblock CRC
constexpr uint64_t kRecordFields = 68;      // bytes covered by the record CRC
constexpr uint64_t kTableHeader = 48;       // table bytes before the chunk CRCs
// Sanity limits applied to untrusted geometry before any allocation.
constexpr uint64_t kMaxSlots = 1ull << 16;
constexpr uint64_t kMaxRingEntries = 1ull << 17;
constexpr uint64_t kMaxTableBytes = 1ull << 30;
// Largest payload a store accepts (1 TiB): a grown file's size cannot overflow.
constexpr uint64_t kMaxPayloadLen = 1ull << 40;

inline uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }
// Overflow-free for any v and a > 0 (fields may come from a hostile file).
inline uint64_t div_up(uint64_t v, uint64_t a) { return v == 0 ? 0 : (v - 1) / a + 1; }

struct Superblock {
  uint64_t slot_count = 0;
  uint64_t slot_size = 0;    // payload capacity of a slot (multiple of kBlock)
  uint64_t table_bytes = 0;  // chunk-table block reserved before each payload
  uint64_t ring_entries = 0;
  uint64_t ring_offset = 0;
  uint64_t slots_offset = 0;
  uint64_t file_size = 0;
  uint64_t keep = 0;       // informational: values at creation
  uint64_t max_async = 0;
  uint64_t created_ns = 0;

  uint64_t slot_stride() const { return table_bytes + slot_size; }
  uint64_t slot_offset(uint64_t slot) const { return slots_offset + slot * slot_stride(); }
  uint64_t payload_offset(uint64_t slot) const { return slot_offset(slot) + table_bytes; }
  uint64_t ring_entry_offset(uint64_t seq) const { return ring_offset + (seq % ring_entries) * kBlock; }
  // Most chunks a table block holds.
  uint64_t table_capacity() const { return (table_bytes - kTableHeader) / 4; }
};

// Geometry for a new file; table_bytes is sized so that a full slot fits
// in chunks of `chunk_size`.
Superblock make_geometry(uint64_t slot_size, uint64_t slot_count, uint64_t chunk_size, uint64_t keep,
                         uint64_t max_async, uint64_t created_ns);
// Geometry of the file a store grows into: the same slot count and ring,
// slots of slot_size, chunk tables large enough for both the old tables
// (copied over) and full slots in chunks of chunk_size.
Superblock grown_geometry(const Superblock& old, uint64_t slot_size, uint64_t chunk_size, uint64_t created_ns);
// Encodes into a zero-filled kBlock buffer.
void encode_superblock(const Superblock& sb, uint8_t* block);
// Checks magic, version, CRC and geometry bounds (against the actual
// file size). Returns "" on success, else the reason.
std::string decode_superblock(const uint8_t* block, uint64_t file_size, Superblock* out);

struct CommitRecord {
  uint64_t seq = 0;
  uint64_t slot = 0;
  uint64_t step = 0;
  uint64_t payload_len = 0;
  uint64_t chunk_size = 0;
  uint64_t n_chunks = 0;
  uint64_t time_ns = 0;
  uint32_t table_crc = 0;
};

void encode_record(const CommitRecord& r, uint8_t* block);
enum class RecordDecode { kOk, kEmpty, kBadMagic, kBadChecksum };
// Fields are filled even on kBadChecksum (they may help a report).
RecordDecode decode_record(const uint8_t* block, CommitRecord* out);
// Checks a checksummed record against the geometry; "" when it fits.
std::string check_record(const CommitRecord& r, const Superblock& sb, uint64_t ring_index);

struct ChunkTable {
  uint64_t seq = 0;
  uint64_t step = 0;
  uint64_t payload_len = 0;
  uint64_t chunk_size = 0;
  std::vector<uint32_t> crcs;  // one per chunk
};

inline uint64_t table_encoded_size(uint64_t n_chunks) { return kTableHeader + 4 * n_chunks; }
// Encodes into buf (at least table_encoded_size bytes); returns the CRC32C
// of the encoded bytes, which the commit record carries.
uint32_t encode_table(const ChunkTable& t, uint8_t* buf);
// Decodes a table block read for record r; "" on success, else the reason
// (checksum mismatch, or a table that belongs to another checkpoint).
std::string decode_table(const uint8_t* buf, uint64_t n, const CommitRecord& r, ChunkTable* out);

}  // namespace pccheck
