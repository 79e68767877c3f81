// Opens an existing checkpoint file or creates a new one, and the steps a
// new file (first creation or growth) takes into place: written under a
// temporary name, preallocated, synced, renamed over `path`, the directory
// synced. Callers hold the file's lock.
#pragma once

#include <cstdint>
#include <string>

#include "file_io.h"
#include "format.h"
#include "recovery.h"

namespace pccheck {

// A checkpoint file as a store has it open.
struct Layout {
  std::string path;  // its name: the temporary one while a grown file is being filled
  Superblock sb;
  Fd fd;      // buffered, read-write
  Fd direct;  // O_DIRECT, in direct mode
  const Fd& writer() const { return direct.valid() ? direct : fd; }
};

struct FileRequest {
  std::string path;
  uint64_t slot_size = 0;  // payload capacity wanted per slot (for a new file)
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

// The one temporary name of path's new files; readers never open it.
std::string temp_path(const std::string& path);

// An existing file is used with its geometry, also when its slots are
// smaller than requested (the store grows them when a payload needs it).
// FormatError if it is not a pccheck file or its chunk tables cannot hold
// chunk_size chunks. Before anything in it is read, the file and its
// directory are synced: a crashed writer may have left unsynced writes in
// the page cache, and a commit read from there must not be lost later. A
// temporary file left by a crash is removed. A missing file is created.
OpenedFile open_or_create(FileSystem& fs, const FileRequest& req);

// Creates `tmp` (replacing a leftover) for geometry sb: preallocated and
// its superblock written, not synced. NoSpaceError (bytes needed and free)
// or CoreError, naming `path`; nothing is left behind then.
Fd create_file(FileSystem& fs, const std::string& tmp, const std::string& path, const Superblock& sb);
// Opens path with O_DIRECT and proves an aligned read works (some file
// systems accept the flag and fail the I/O). 0 or the errno.
int open_direct(FileSystem& fs, const std::string& path, Fd* out);
// fsync of the new file (data and size), then rename over `path`. CoreError
// with the step that failed; the rename is the commit point.
void sync_and_rename(const Fd& fd, const std::string& tmp, const std::string& path);

}  // namespace pccheck
