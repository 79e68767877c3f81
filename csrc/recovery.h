// Read-only access to a checkpoint file: scan the commit ring, verify, and
// read a payload. Needs no lock. Every field read from the file is
// bounds-checked against the geometry and the file size before use, so a
// truncated, bit-flipped or random file yields an error, never a crash.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "file_io.h"
#include "format.h"

namespace pccheck {

struct RingEntry {
  uint64_t index = 0;     // position in the ring
  bool has_fields = false;  // magic matched: rec holds (possibly unverified) fields
  CommitRecord rec;
  bool valid = false;
  std::string reason;  // "" when valid
};

struct ScanResult {
  Superblock sb;
  std::vector<RingEntry> entries;  // non-empty ring entries, in ring order
  std::optional<uint64_t> latest;  // seq a load picks first
  std::vector<std::pair<uint64_t, std::string>> skipped;  // newer than latest, newest first
  uint64_t max_seq = 0;  // highest plausible seq of any record, valid or not
};

// Reads and checks the superblock; FormatError when it does not verify.
Superblock read_superblock(const Fd& fd, const std::string& path);
// Scans an open file. verify also checks every payload chunk of valid records.
ScanResult scan_fd(const Fd& fd, const std::string& path, const Superblock& sb, bool verify);
// durable: make_durable(path) first, so what the scan reports survives a
// power loss even if the process that wrote it crashed before its syncs.
ScanResult scan_file(const std::string& path, bool verify, bool durable = false, FileSystem& fs = posix_fs());

// Reads the payload of seq into out (exactly payload_len bytes), verifying
// every chunk with `threads` readers (0: automatic). CorruptError names
// the record or the chunk that fails; std::invalid_argument for a wrong
// out_len. durable: as for scan_file.
void read_payload(const std::string& path, uint64_t seq, void* out, uint64_t out_len, unsigned threads = 0,
                  bool durable = false, FileSystem& fs = posix_fs());
// payload_len of a valid record for seq (CorruptError if none).
uint64_t payload_length(const std::string& path, uint64_t seq, FileSystem& fs = posix_fs());

}  // namespace pccheck
