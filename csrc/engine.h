// The checkpoint store: slots in one preallocated file, a pool of writer
// threads, and the commit protocol.
//
// A checkpoint (seq) owns one slot from begin() until it commits, is dropped
// or fails. Its payload arrives in chunks (staging buffers) that writers
// checksum and pwrite in any order. When the last chunk is written the
// committer thread writes the chunk table, fdatasyncs, writes the commit
// record, fdatasyncs, and only then marks it committed and frees committed
// slots older than the `keep` newest. Commits are serialized there, so the
// committed seq only moves forward: a checkpoint that completes after a
// newer one has committed is dropped.
//
// A payload larger than the slots grows the file (growth.h): begin() waits
// until nothing is in flight and creates the larger file under a temporary
// name; that checkpoint is written there, and its commit copies the keep - 1
// newest checkpoints over (with it, the keep newest), syncs the new file,
// renames it over the old one and syncs the directory before it reports
// committed.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "buffer_pool.h"
#include "file_lock.h"
#include "format.h"
#include "store_file.h"

namespace pccheck {

// kAuto: direct where the file system takes O_DIRECT, else fdatasync
// (direct measured faster: docs/format.md). geometry() reports the result.
enum class Durability { kAuto, kFdatasync, kDirect };
Durability parse_durability(const std::string& name);  // std::invalid_argument if unknown
const char* durability_name(Durability d);

struct StoreOptions {
  std::string path;
  uint64_t slot_size = 0;  // payload capacity per slot
  uint64_t max_async = 0;  // checkpoints in flight at once
  uint64_t keep = 0;       // newest committed checkpoints never overwritten
  uint64_t chunk_size = 0;  // multiple of kBlock
  uint64_t threads = 0;     // writer threads
  uint64_t memory_budget = 0;  // bytes of staging buffers
  Durability durability = Durability::kAuto;
  FileSystem* fs = nullptr;  // nullptr: posix_fs()
  LockOptions lock;
};

struct Geometry {
  std::string path;
  uint64_t slot_count, slot_size, table_bytes, chunk_size, keep, max_async, ring_entries;
  uint64_t buffer_count, threads, file_size, created_ns;
  Durability durability;
  bool created;  // this Store created the file
  bool adopted;  // the file's slot count differs from max_async + keep requested
};

struct Stats {
  uint64_t buffers_total, buffers_free, slots_free, in_flight;
  uint64_t committed, dropped, failed, aborted, bytes_written;
  uint64_t grown;  // times the file was re-laid out with larger slots
};

enum class Outcome { kPending, kCommitted, kDropped, kAborted };
const char* outcome_name(Outcome o);

class Store {
 public:
  explicit Store(const StoreOptions& opt);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  Geometry geometry() const;  // changes when the file grows
  LockMode lock_mode() const { return lock_.mode(); }
  // Reserves a slot and returns the new seq; nullopt when max_async
  // checkpoints are in flight (or, for a payload larger than the slots,
  // any) and block is false. Raises a pending write error of an earlier
  // checkpoint first (once). A payload larger than the slots grows the
  // file; NoSpaceError when the disk cannot hold the grown file (the store
  // goes on at its old size).
  std::optional<uint64_t> begin(uint64_t step, uint64_t payload_len, bool block);
  // Copies header + segments (the whole payload, in order) into staging
  // buffers and submits them; returns once every byte is copied.
  struct Segment {
    const void* data;
    uint64_t size;
  };
  void write_host(uint64_t seq, const std::vector<Segment>& parts);
  // write_host on the store's copy thread, in the order queued; returns at
  // once (a snapshot beside the next forward and backward). `header` is
  // copied here; `segments` must stay valid and unchanged until
  // wait_copied() returns. A copy that fails aborts its checkpoint.
  void write_host_async(uint64_t seq, std::vector<uint8_t> header, std::vector<Segment> segments);
  // Blocks until every queued copy is done; returns the first failure's
  // text since the last call (empty: none).
  std::string wait_copied();
  // Staging buffers for callers that fill them themselves (GPU path).
  uint64_t acquire() { return pool_->acquire(); }
  void release(uint64_t index);
  const std::shared_ptr<BufferPool>& pool() const { return pool_; }
  // Hands a filled buffer to the writers. Returns false (and releases the
  // buffer) when seq is no longer being written (aborted or failed).
  bool submit(uint64_t seq, uint64_t index, uint64_t chunk_index, uint64_t nbytes);
  // Stops seq; its slot is released once its queued writes drained. No-op
  // for a seq that already completed its writes.
  void abort(uint64_t seq, const std::string& reason);
  // Waits for seq (or everything in flight); kPending on timeout. Throws
  // WriteError for a failed checkpoint.
  Outcome wait(std::optional<uint64_t> seq, std::optional<double> timeout_s);
  std::optional<std::pair<uint64_t, uint64_t>> latest() const;  // (seq, step)
  Stats stats() const;
  // Aborts checkpoints whose payload is incomplete, waits for the rest,
  // joins the threads and releases the lock.
  void close();
  // Test hook: the chunk write after the next `after` ones fails with err.
  void inject_write_error(uint64_t after, int err);

 private:
  enum class State { kWriting, kCommitting, kCommitted, kDropped, kFailed, kAborted };
  struct Checkpoint {
    std::shared_ptr<Layout> layout;  // the file it is written into
    bool grows = false;              // layout is the grown file, not yet in place
    uint64_t seq, step, slot, payload_len, n_chunks;
    std::vector<uint32_t> crcs;
    std::vector<uint8_t> submitted;
    uint64_t n_submitted = 0;
    uint64_t outstanding = 0;  // chunk tasks queued or running
    uint64_t issued = 0;   // chunk writes started
    uint64_t written = 0;  // chunk writes done
    State state = State::kWriting;
    std::string error;
  };
  struct Task {
    std::shared_ptr<Checkpoint> ckpt;
    uint64_t buffer, chunk_index, nbytes;
  };
  enum class SlotState { kFree, kInFlight, kCommitted };

  void writer_loop();
  void committer_loop();
  void copy_loop();
  void stop_copier();
  void commit(Checkpoint& c);
  // The steps of a commit; each returns "" or what failed.
  std::string commit_in_place(Checkpoint& c, const uint8_t* table, uint64_t table_len, const uint8_t* record,
                              bool* sync_failed);
  // Copies the kept checkpoints into the grown file, commits c there and
  // renames the file into place (the store's file from then on).
  std::string commit_grown(Checkpoint& c, const uint8_t* table, uint64_t table_len, const CommitRecord& r,
                           bool* installed);
  std::string sync_directory();  // "" once a rename into path is durable
  int take_injected_error();
  void fail_locked(Checkpoint& c, const std::string& msg);
  // A failed fdatasync may have dropped every unsynced write of the file
  // (Linux marks the pages clean): no checkpoint with writes made so far
  // can commit any more.
  void fail_in_flight_locked(const std::string& msg);
  void finish_if_drained_locked(Checkpoint& c);
  void finish_locked(Checkpoint& c, Outcome o);
  uint64_t pick_seq_locked();
  std::shared_ptr<Checkpoint> find_locked(uint64_t seq);

  FileSystem& fs_;
  FileLock lock_;
  Geometry geo_;
  std::shared_ptr<Layout> layout_;  // the file under geo_.path
  bool growing_ = false;  // a grown file is being created or its first checkpoint is in flight
  bool dir_dirty_ = false;  // committer only: a rename into geo_.path may not be durable yet
  std::shared_ptr<BufferPool> pool_;

  mutable std::mutex mu_;
  std::condition_variable done_cv_;    // checkpoint finished or slot freed
  std::condition_variable task_cv_;    // writer work
  std::condition_variable commit_cv_;  // committer work
  std::deque<Task> tasks_;
  std::deque<std::shared_ptr<Checkpoint>> commit_q_;
  std::map<uint64_t, std::shared_ptr<Checkpoint>> active_;
  std::map<uint64_t, std::pair<Outcome, std::string>> finished_;  // recent outcomes; failed: error text
  std::vector<SlotState> slots_;
  std::vector<uint8_t> buffer_submitted_;
  std::deque<CommitRecord> committed_;  // kept, oldest first
  std::optional<std::pair<uint64_t, uint64_t>> latest_;
  std::optional<std::pair<uint64_t, std::string>> sticky_;  // unreported write error (seq, text)
  uint64_t next_seq_ = 1;
  uint64_t n_committed_ = 0, n_dropped_ = 0, n_failed_ = 0, n_aborted_ = 0, bytes_written_ = 0, n_grown_ = 0;
  bool inject_armed_ = false;
  uint64_t inject_after_ = 0;
  int inject_errno_ = 0;
  bool stopping_ = false;
  bool closed_ = false;
  std::vector<std::thread> writers_;
  std::thread committer_;

  struct CopyJob {
    uint64_t seq;
    std::vector<uint8_t> header;
    std::vector<Segment> segments;
  };
  std::mutex copy_mu_;  // never held across write_host
  std::condition_variable copy_cv_;  // a job queued or done, or stop
  std::deque<CopyJob> copy_jobs_;
  bool copy_busy_ = false;
  bool copy_stop_ = false;
  std::string copy_error_;
  std::thread copier_;
};

}  // namespace pccheck
