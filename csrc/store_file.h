// Opens an existing checkpoint file or creates a new one, preallocated and
// with a durable superblock. Callers hold the file's lock.
#pragma once

#include <cstdint>
#include <string>

#include "file_io.h"
#include "format.h"
#include "recovery.h"

namespace pccheck {

struct FileRequest {
  std::string path;
  uint64_t slot_size = 0;  // payload capacity wanted per slot
  uint64_t slot_count = 0;
  uint64_t chunk_size = 0;
  uint64_t keep = 0;
  uint64_t max_async = 0;
};

struct OpenedFile {
  Fd fd;  // O_RDWR, buffered
  Superblock sb;
  bool created = false;
  ScanResult scan;  // ring contents of an existing file (empty when created)
};

// An existing file is reused with its geometry (FormatError if it is not a
// pccheck file, if its slots are smaller than requested, or if its chunk
// tables cannot hold chunk_size chunks). A new file is written under a
// temporary name, preallocated (NoSpaceError), synced and renamed into
// place, so a crash during creation never leaves a file that looks valid.
OpenedFile open_or_create(const FileRequest& req);

}  // namespace pccheck
