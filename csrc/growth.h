// Growing a store's file when a payload does not fit its slots: a new file
// with larger slots is filled under the temporary name (the keep newest
// committed checkpoints copied over, then the new checkpoint written into
// it) and renamed over the old one only once its first commit is durable.
// Until then the old file is only read, so its commits stay loadable.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "format.h"
#include "store_file.h"

namespace pccheck {

// Slots of the grown file: room for payload_len plus a quarter, and at
// least 1.5 times the old slots, so a state that grows a little at every
// save re-lays its file out only now and then.
uint64_t grown_slot_size(uint64_t old_slot_size, uint64_t payload_len);

// Creates the grown file under temp_path(current.path), with O_DIRECT when
// `direct` and the file system takes it. When the disk cannot hold it,
// tries the smallest layout that fits payload_len before throwing one
// NoSpaceError with the bytes needed and free; nothing is left behind then.
std::unique_ptr<Layout> create_grown(const Layout& current, uint64_t payload_len, uint64_t chunk_size, bool direct);

// Copies a committed checkpoint's chunk table and payload from `from` into
// slot `slot` of `to`; returns its record pointing at that slot (written by
// the caller). CoreError / WriteError name the failing read or write.
CommitRecord copy_checkpoint(const Layout& from, const Layout& to, const CommitRecord& rec, uint64_t slot);

}  // namespace pccheck
