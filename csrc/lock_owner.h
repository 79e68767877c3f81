// Who holds a lock: host, boot, pid and process start time, as written into
// the lock file, and whether that process still runs.
#pragma once

#include <cstdint>
#include <string>

namespace pccheck {

struct LockOwner {
  std::string host;  // gethostname()
  std::string boot;  // Linux boot id: a reboot ends every process of the host
  uint64_t pid = 0;
  uint64_t start_ticks = 0;  // process start, clock ticks after boot (0: unknown)
  uint64_t started_s = 0;    // the same as Unix time, for messages (0: unknown)
  uint64_t renewed_ns = 0;   // last renewal of a lease, the holder's clock
};

LockOwner this_process();
// One line, padded to kOwnerLineBytes so a renewal overwrites it in place.
constexpr uint64_t kOwnerLineBytes = 256;
std::string encode_owner(const LockOwner& o);
bool decode_owner(const std::string& text, LockOwner* out);
// "host H, pid P, started 2025-01-31T12:00:00Z" for error messages.
std::string describe_owner(const LockOwner& o);
// Same host and boot as this process.
bool same_machine(const LockOwner& o);
// On this machine: the pid runs and, where both are known, started at the
// same tick (a reused pid is another process).
bool process_alive(const LockOwner& o);

}  // namespace pccheck
