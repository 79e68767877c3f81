// Exception types of the core. The bindings map each to a Python exception
// of the same name (CoreError derives from RuntimeError, the others from it).
#pragma once

#include <stdexcept>
#include <string>

namespace pccheck {

struct CoreError : std::runtime_error {
  using std::runtime_error::runtime_error;
};
// Another process (or Store) holds the file's lock.
struct LockedError : CoreError {
  using CoreError::CoreError;
};
// Preallocation failed: the file system is too small.
struct NoSpaceError : CoreError {
  using CoreError::CoreError;
};
// The file is not a pccheck file, or its geometry does not fit the request.
struct FormatError : CoreError {
  using CoreError::CoreError;
};
// A record, chunk table or payload chunk fails its checksum or bounds checks.
struct CorruptError : CoreError {
  using CoreError::CoreError;
};
// Writing a checkpoint failed (EIO, ENOSPC, ...).
struct WriteError : CoreError {
  using CoreError::CoreError;
};

}  // namespace pccheck
