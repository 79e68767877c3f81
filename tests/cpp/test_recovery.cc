// Corruption is detected and the load falls back; hostile files never crash.
#include <fcntl.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "errors.h"
#include "file_io.h"
#include "format.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;
using pctest::TempDir;

namespace {

// Two committed checkpoints (steps 1, 2); returns their seqs.
std::pair<uint64_t, uint64_t> two_commits(const std::string& path) {
  Store s(pctest::small_options(path));
  uint64_t a = pctest::save(s, 1, pctest::payload_for(1, 60000)).first;
  uint64_t b = pctest::save(s, 2, pctest::payload_for(2, 60000)).first;
  return {a, b};
}

const RingEntry& entry(const ScanResult& r, uint64_t seq) {
  for (const auto& e : r.entries)
    if (e.has_fields && e.rec.seq == seq) return e;
  throw pctest::Failure("no entry for seq " + std::to_string(seq));
}

}  // namespace

TEST(payload_corruption_falls_back) {
  TempDir d;
  std::string path = d.file("ck");
  auto [a, b] = two_commits(path);
  Superblock sb = scan_file(path, false).sb;
  uint64_t slot = entry(scan_file(path, false), b).rec.slot;
  pctest::flip_byte(path, sb.payload_offset(slot) + 3 * 16384 + 7);  // chunk 3
  ScanResult quick = scan_file(path, false);
  CHECK_EQ(*quick.latest, b);  // without verify only tables are read
  ScanResult full = scan_file(path, true);
  CHECK_EQ(*full.latest, a);
  CHECK_EQ(full.skipped.size(), 1u);
  CHECK_EQ(full.skipped[0].first, b);
  CHECK_EQ(full.skipped[0].second, std::string("chunk 3 checksum mismatch"));
  CHECK_THROWS(CorruptError, pctest::read_back(path, b));
  CHECK(pctest::read_back(path, a) == pctest::payload_for(1, 60000));
}

TEST(record_and_table_corruption_fall_back) {
  TempDir d;
  std::string path = d.file("ck");
  auto [a, b] = two_commits(path);
  Superblock sb = scan_file(path, false).sb;
  pctest::flip_byte(path, sb.ring_entry_offset(b) + 30);
  ScanResult r = scan_file(path, false);
  CHECK_EQ(*r.latest, a);
  CHECK_EQ(entry(r, b).reason, std::string("record checksum mismatch"));
  CHECK_THROWS(CorruptError, pctest::read_back(path, b));
  pctest::flip_byte(path, sb.ring_entry_offset(b) + 30);  // restore, then break the table
  pctest::flip_byte(path, sb.slot_offset(entry(scan_file(path, false), b).rec.slot) + 60);
  r = scan_file(path, false);
  CHECK_EQ(*r.latest, a);
  CHECK_EQ(entry(r, b).reason, std::string("chunk table checksum mismatch"));
  // A reopened store protects the valid one and continues after b.
  Store s(pctest::small_options(path));
  CHECK_EQ(s.latest()->first, a);
  CHECK(pctest::save(s, 3, pctest::payload_for(3, 100)).first > b);
}

TEST(hostile_files_never_crash) {
  TempDir d;
  std::string path = d.file("ck");
  auto seqs = two_commits(path);
  std::vector<uint8_t> orig;
  {
    Fd fd = open_file(posix_fs(), path, O_RDONLY);
    orig.resize(file_size(fd, path));
    pread_all(fd, orig.data(), orig.size(), 0, path);
  }
  std::mt19937_64 rng(42);
  std::string mut = d.file("mut");
  auto write_file = [&](const std::vector<uint8_t>& bytes) {
    Fd fd = open_file(posix_fs(), mut, O_RDWR | O_CREAT | O_TRUNC);
    CHECK(pwrite_all(fd, bytes.data(), bytes.size(), 0) == 0);
  };
  auto probe = [&] {
    try {
      ScanResult r = scan_file(mut, true);
      for (const auto& e : r.entries) {
        if (!e.has_fields) continue;
        try {
          std::vector<uint8_t> out(std::min<uint64_t>(e.rec.payload_len, 1 << 20));
          read_payload(mut, e.rec.seq, out.data(), out.size(), 2);
        } catch (const CoreError&) {
        } catch (const std::invalid_argument&) {
        }
      }
    } catch (const CoreError&) {
    }
  };
  uint64_t head = scan_file(path, false).sb.slots_offset + 2 * 4096;  // superblock, ring, first tables
  for (int i = 0; i < 300; ++i) {
    std::vector<uint8_t> bytes = orig;
    int kind = i % 4;
    if (kind == 0) bytes.resize(rng() % bytes.size());  // truncated
    if (kind == 1)
      for (int k = 0; k < 8; ++k) bytes[rng() % std::min<uint64_t>(head, bytes.size())] ^= uint8_t(1 + rng() % 255);
    if (kind == 2) {  // random garbage
      bytes.resize(rng() % 200000);
      for (auto& x : bytes) x = static_cast<uint8_t>(rng());
    }
    if (kind == 3) {  // huge length fields in a record with a valid checksum
      Superblock sb = scan_file(path, false).sb;
      uint64_t off = sb.ring_entry_offset(seqs.second);
      CommitRecord rec;
      decode_record(bytes.data() + off, &rec);
      uint64_t* fields[] = {&rec.payload_len, &rec.n_chunks, &rec.chunk_size, &rec.slot};
      *fields[rng() % 4] = rng() >> (rng() % 64);
      encode_record(rec, bytes.data() + off);
    }
    write_file(bytes);
    probe();
  }
  CHECK_THROWS(FormatError, scan_file(d.file("missing"), false));
}

// A crafted superblock has a valid checksum: every field is bounded before any arithmetic uses it, so a
// hostile geometry is refused with its reason instead of wrapping around into a plausible one.
TEST(superblock_fields_out_of_bounds_are_refused) {
  const Superblock good = make_geometry(1 << 20, 4, 1 << 16, 2, 2, 1);
  auto decode = [](const Superblock& sb, uint64_t file_size) {
    std::vector<uint8_t> block(kBlock, 0);
    encode_superblock(sb, block.data());
    Superblock out;
    return decode_superblock(block.data(), file_size, &out);
  };
  auto with_layout = [](Superblock sb) {  // offsets and size recomputed (and wrapped) as a forger would
    sb.slots_offset = sb.ring_offset + sb.ring_entries * kBlock;
    sb.file_size = sb.slots_offset + sb.slot_count * sb.slot_stride();
    return sb;
  };
  CHECK_EQ(decode(good, good.file_size), std::string(""));
  Superblock sb = good;
  sb.slot_count = 0;
  CHECK_EQ(decode(with_layout(sb), good.file_size), std::string("bad slot_count"));
  sb = good;
  sb.slot_count = kMaxSlots + 1;
  sb.ring_entries = 2 * sb.slot_count;
  CHECK_EQ(decode(with_layout(sb), UINT64_MAX), std::string("bad slot_count"));
  sb = good;
  sb.ring_entries = sb.slot_count;  // fewer ring entries than slots: a record could be overwritten in use
  CHECK_EQ(decode(with_layout(sb), good.file_size), std::string("bad ring_entries"));
  sb = good;
  sb.ring_entries = (1ull << 52) + 16;  // ring_entries * kBlock wraps to 16 blocks
  CHECK_EQ(decode(with_layout(sb), good.file_size), std::string("bad ring_entries"));
  sb = good;
  sb.ring_offset = 0;
  CHECK_EQ(decode(with_layout(sb), good.file_size), std::string("bad ring_offset"));
  sb = good;
  sb.table_bytes = 1ull << 62;
  CHECK_EQ(decode(with_layout(sb), UINT64_MAX), std::string("bad table_bytes"));
  sb = good;
  sb.slot_size = kBlock + 1;
  CHECK_EQ(decode(with_layout(sb), UINT64_MAX), std::string("bad slot_size"));
  sb = good;
  sb.slot_size = 1ull << 62;  // four slots of 2^62 bytes wrap around the file size
  CHECK_EQ(decode(with_layout(sb), UINT64_MAX), std::string("inconsistent geometry"));
  CHECK(decode(good, good.file_size - 1).rfind("file is truncated", 0) == 0);
}
