#include "engine.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "aligned_block.h"
#include "crc32c.h"
#include "errors.h"
#include "growth.h"

namespace pccheck {

namespace {

constexpr size_t kFinishedHistory = 4096;  // outcomes remembered for wait(seq)

// Validates the options (before anything is opened) and names the lock file.
std::string checked_lock_path(const StoreOptions& o) {
  auto need = [](bool ok, const std::string& msg) {
    if (!ok) throw std::invalid_argument(msg);
  };
  need(!o.path.empty(), "path is empty");
  need(o.slot_size > 0, "slot_size must be > 0");
  need(o.max_async >= 1, "max_async must be >= 1");
  need(o.keep >= 1, "keep must be >= 1");
  need(o.max_async + o.keep <= kMaxSlots, "too many slots");
  need(o.chunk_size > 0 && o.chunk_size % kBlock == 0, "chunk_size must be a positive multiple of 4096");
  need(o.threads >= 1 && o.threads <= 1024, "threads must be in 1..1024");
  need(o.memory_budget >= o.chunk_size, "memory_budget must hold at least one chunk");
  return o.path + ".lock";
}

void apply_superblock(const Superblock& sb, Geometry* g) {
  g->slot_count = sb.slot_count;
  g->slot_size = sb.slot_size;
  g->table_bytes = sb.table_bytes;
  g->ring_entries = sb.ring_entries;
  g->file_size = sb.file_size;
  g->created_ns = sb.created_ns;
}

}  // namespace

Durability parse_durability(const std::string& name) {
  if (name == "auto") return Durability::kAuto;
  if (name == "fdatasync") return Durability::kFdatasync;
  if (name == "direct") return Durability::kDirect;
  throw std::invalid_argument("durability must be 'auto', 'fdatasync' or 'direct', not '" + name + "'");
}

const char* durability_name(Durability d) {
  switch (d) {
    case Durability::kDirect:
      return "direct";
    case Durability::kFdatasync:
      return "fdatasync";
    case Durability::kAuto:
      break;
  }
  return "auto";
}

const char* outcome_name(Outcome o) {
  switch (o) {
    case Outcome::kCommitted:
      return "committed";
    case Outcome::kDropped:
      return "dropped";
    case Outcome::kAborted:
      return "aborted";
    case Outcome::kPending:
      break;
  }
  return "pending";
}

Store::Store(const StoreOptions& opt)
    : fs_(opt.fs ? *opt.fs : posix_fs()), lock_(fs_, checked_lock_path(opt), opt.path, opt.lock) {
  FileRequest req{opt.path, opt.slot_size, opt.max_async + opt.keep, opt.chunk_size, opt.keep, opt.max_async};
  OpenedFile f = open_or_create(fs_, req);
  const Superblock& sb = f.sb;
  layout_ = std::make_shared<Layout>();
  layout_->path = opt.path;
  layout_->sb = sb;
  layout_->fd = std::move(f.fd);
  geo_.path = opt.path;
  apply_superblock(sb, &geo_);
  geo_.chunk_size = opt.chunk_size;
  geo_.threads = opt.threads;
  geo_.created = f.created;
  geo_.adopted = sb.slot_count != opt.max_async + opt.keep;
  // An adopted file keeps the split it was created with.
  geo_.keep = geo_.adopted ? sb.keep : opt.keep;
  geo_.max_async = geo_.adopted ? sb.max_async : opt.max_async;
  if (geo_.keep < 1 || geo_.max_async < 1 || geo_.keep + geo_.max_async != sb.slot_count) {
    geo_.keep = std::min<uint64_t>(opt.keep, sb.slot_count - 1);
    geo_.max_async = sb.slot_count - geo_.keep;
  }

  geo_.durability = Durability::kFdatasync;
  if (opt.durability != Durability::kFdatasync) {
    int err = open_direct(fs_, opt.path, &layout_->direct);
    if (err == 0) geo_.durability = Durability::kDirect;
    else if (opt.durability == Durability::kDirect)
      throw CoreError("durability='direct': " + opt.path + " does not take O_DIRECT (" + errno_text(err) +
                      "); use durability='fdatasync' on this file system");
  }

  slots_.assign(sb.slot_count, SlotState::kFree);
  // Reopened file: the keep newest valid commits stay protected.
  std::vector<CommitRecord> valid;
  for (const auto& e : f.scan.entries)
    if (e.valid) valid.push_back(e.rec);
  std::sort(valid.begin(), valid.end(), [](const CommitRecord& a, const CommitRecord& b) { return a.seq > b.seq; });
  if (!valid.empty()) latest_ = {valid[0].seq, valid[0].step};
  for (size_t i = 0; i < valid.size() && i < geo_.keep; ++i) {
    committed_.push_front(valid[i]);
    slots_[valid[i].slot] = SlotState::kCommitted;
  }
  next_seq_ = f.scan.max_seq + 1;

  geo_.buffer_count = opt.memory_budget / opt.chunk_size;
  pool_ = std::make_shared<BufferPool>(geo_.buffer_count, opt.chunk_size);
  buffer_submitted_.assign(geo_.buffer_count, 0);

  committer_ = std::thread([this] { committer_loop(); });
  for (uint64_t i = 0; i < opt.threads; ++i) writers_.emplace_back([this] { writer_loop(); });
  copier_ = std::thread([this] { copy_loop(); });
}

Store::~Store() {
  try {
    close();
  } catch (...) {  // a destructor must not throw; close() reports nothing it has not already
  }
}

std::shared_ptr<Store::Checkpoint> Store::find_locked(uint64_t seq) {
  auto it = active_.find(seq);
  return it == active_.end() ? nullptr : it->second;
}

uint64_t Store::pick_seq_locked() {
  // A seq whose ring entry is shared with a live seq (in flight or kept)
  // would overwrite that seq's record when it commits: skip such numbers.
  const uint64_t ring = layout_->sb.ring_entries;  // a grown file keeps the ring
  auto clashes = [&](uint64_t s) {
    uint64_t idx = s % ring;
    for (const auto& kv : active_)
      if (kv.first % ring == idx) return true;
    for (const auto& r : committed_)
      if (r.seq % ring == idx) return true;
    return false;
  };
  uint64_t s = next_seq_;
  while (clashes(s)) ++s;  // ring_entries > slot_count >= live seqs: terminates
  next_seq_ = s + 1;
  return s;
}

Geometry Store::geometry() const {
  std::lock_guard<std::mutex> lk(mu_);
  return geo_;
}

std::optional<uint64_t> Store::begin(uint64_t step, uint64_t payload_len, bool block) {
  if (payload_len == 0 || payload_len > kMaxPayloadLen)
    throw std::invalid_argument("payload_len " + std::to_string(payload_len) + " is outside 1.." +
                                std::to_string(kMaxPayloadLen));
  std::unique_lock<std::mutex> lk(mu_);
  bool grow;
  for (;;) {
    if (closed_) throw CoreError("store " + geo_.path + " is closed");
    if (sticky_) {
      std::string msg = sticky_->second;
      sticky_.reset();
      throw WriteError(msg);
    }
    grow = payload_len > layout_->sb.slot_size;  // a growth waits until nothing is in flight
    if (!growing_ && (grow ? active_.empty() : active_.size() < geo_.max_async)) break;
    if (!block) return std::nullopt;
    done_cv_.wait(lk);
  }
  auto c = std::make_shared<Checkpoint>();
  if (grow) {
    growing_ = true;  // holds off other begin() calls and close()
    std::shared_ptr<Layout> current = layout_;
    bool direct = geo_.durability == Durability::kDirect;
    lk.unlock();
    try {
      c->layout = create_grown(*current, payload_len, geo_.chunk_size, direct);
    } catch (...) {
      lk.lock();
      growing_ = false;
      done_cv_.notify_all();
      throw;
    }
    lk.lock();
    if (closed_) {  // close() came meanwhile and waits for this
      fs_.unlink(c->layout->path);
      growing_ = false;
      done_cv_.notify_all();
      throw CoreError("store " + geo_.path + " is closed");
    }
    c->grows = true;
    // The newest keep - 1 checkpoints are copied into the slots before it.
    c->slot = std::min<uint64_t>(committed_.size(), geo_.keep - 1);
  } else {
    auto free_slot = std::find(slots_.begin(), slots_.end(), SlotState::kFree);
    if (free_slot == slots_.end()) throw CoreError("internal: no free slot with fewer than max_async in flight");
    c->layout = layout_;
    c->slot = static_cast<uint64_t>(free_slot - slots_.begin());
    *free_slot = SlotState::kInFlight;
  }
  c->seq = pick_seq_locked();
  c->step = step;
  c->payload_len = payload_len;
  c->n_chunks = div_up(payload_len, geo_.chunk_size);
  c->crcs.assign(c->n_chunks, 0);
  c->submitted.assign(c->n_chunks, 0);
  active_[c->seq] = c;
  return c->seq;
}

void Store::write_host(uint64_t seq, const std::vector<Segment>& parts) {
  uint64_t total = 0;
  for (const auto& p : parts) total += p.size;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto c = find_locked(seq);
    if (!c && finished_.count(seq) == 0)
      throw std::invalid_argument("seq " + std::to_string(seq) + " is not being written");
    if (!c || c->state != State::kWriting) return;  // failed or aborted since begin(): wait() says why
    if (c->n_submitted != 0) throw std::invalid_argument("seq " + std::to_string(seq) + " already has chunks");
    if (total != c->payload_len)
      throw std::invalid_argument("payload is " + std::to_string(total) + " bytes, begin() announced " +
                                  std::to_string(c->payload_len));
  }
  const uint64_t cs = geo_.chunk_size;
  uint64_t chunk = 0, fill = 0, buf = 0;
  bool held = false;  // buf is acquired and not yet submitted
  try {
    for (const auto& p : parts) {
      const auto* src = static_cast<const uint8_t*>(p.data);
      for (uint64_t left = p.size; left > 0;) {
        if (!held) buf = pool_->acquire(), held = true;
        uint64_t take = std::min(left, cs - fill);
        std::memcpy(pool_->data(buf) + fill, src, take);
        src += take;
        left -= take;
        fill += take;
        if (fill == cs) {
          bool live = submit(seq, buf, chunk++, fill);  // takes the buffer unless it throws
          held = false;
          if (!live) return;  // aborted or failed meanwhile: the error surfaces in wait()
          fill = 0;
        }
      }
    }
    if (held) {
      submit(seq, buf, chunk, fill);
      held = false;
    }
  } catch (...) {
    if (held) pool_->release(buf);
    throw;
  }
}

void Store::write_host_async(uint64_t seq, std::vector<uint8_t> header, std::vector<Segment> segments) {
  {
    std::lock_guard<std::mutex> lk(copy_mu_);
    if (copy_stop_) throw CoreError("store " + geo_.path + " is closed");
    copy_jobs_.push_back(CopyJob{seq, std::move(header), std::move(segments)});
  }
  copy_cv_.notify_all();
}

std::string Store::wait_copied() {
  std::unique_lock<std::mutex> lk(copy_mu_);
  copy_cv_.wait(lk, [&] { return copy_jobs_.empty() && !copy_busy_; });
  std::string error;
  error.swap(copy_error_);
  return error;
}

void Store::copy_loop() {
  for (;;) {
    CopyJob job;
    {
      std::unique_lock<std::mutex> lk(copy_mu_);
      copy_cv_.wait(lk, [&] { return copy_stop_ || !copy_jobs_.empty(); });
      if (copy_jobs_.empty()) return;  // stopping, and every queued copy is done
      job = std::move(copy_jobs_.front());
      copy_jobs_.pop_front();
      copy_busy_ = true;
    }
    std::string error;
    try {
      std::vector<Segment> parts{{job.header.data(), job.header.size()}};
      parts.insert(parts.end(), job.segments.begin(), job.segments.end());
      write_host(job.seq, parts);
    } catch (const std::exception& e) {
      error = "snapshot copy of seq " + std::to_string(job.seq) + " failed: " + e.what();
      abort(job.seq, error);
    }
    {
      std::lock_guard<std::mutex> lk(copy_mu_);
      copy_busy_ = false;
      if (!error.empty() && copy_error_.empty()) copy_error_ = error;
    }
    copy_cv_.notify_all();
  }
}

void Store::stop_copier() {
  {
    std::lock_guard<std::mutex> lk(copy_mu_);
    copy_stop_ = true;
  }
  copy_cv_.notify_all();
  if (copier_.joinable()) copier_.join();
}

void Store::release(uint64_t index) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (index < buffer_submitted_.size() && buffer_submitted_[index])
      throw std::invalid_argument("buffer " + std::to_string(index) + " is submitted; the writers release it");
  }
  pool_->release(index);
}

bool Store::submit(uint64_t seq, uint64_t index, uint64_t chunk_index, uint64_t nbytes) {
  std::unique_lock<std::mutex> lk(mu_);
  if (index >= buffer_submitted_.size() || !pool_->in_use(index) || buffer_submitted_[index])
    throw std::invalid_argument("buffer " + std::to_string(index) + " is not acquired");
  auto c = find_locked(seq);
  if (!c || c->state != State::kWriting || closed_) {
    lk.unlock();
    pool_->release(index);
    return false;
  }
  if (chunk_index >= c->n_chunks || c->submitted[chunk_index])
    throw std::invalid_argument("chunk " + std::to_string(chunk_index) + " of seq " + std::to_string(seq) +
                                " is out of range or already submitted");
  uint64_t expect = std::min(geo_.chunk_size, c->payload_len - chunk_index * geo_.chunk_size);
  if (nbytes != expect)
    throw std::invalid_argument("chunk " + std::to_string(chunk_index) + " of seq " + std::to_string(seq) +
                                " must hold " + std::to_string(expect) + " bytes, not " + std::to_string(nbytes));
  c->submitted[chunk_index] = 1;
  c->n_submitted++;
  c->outstanding++;
  buffer_submitted_[index] = 1;
  tasks_.push_back(Task{c, index, chunk_index, nbytes});
  task_cv_.notify_one();
  return true;
}

void Store::abort(uint64_t seq, const std::string& reason) {
  std::lock_guard<std::mutex> lk(mu_);
  auto c = find_locked(seq);
  if (!c || c->state != State::kWriting) return;
  c->state = State::kAborted;
  c->error = reason;
  finish_if_drained_locked(*c);
}

int Store::take_injected_error() {
  std::lock_guard<std::mutex> lk(mu_);
  if (!inject_armed_) return 0;
  if (inject_after_ > 0) {
    inject_after_--;
    return 0;
  }
  inject_armed_ = false;
  return inject_errno_;
}

void Store::inject_write_error(uint64_t after, int err) {
  std::lock_guard<std::mutex> lk(mu_);
  inject_armed_ = true;
  inject_after_ = after;
  inject_errno_ = err;
}

void Store::writer_loop() {
  for (;;) {
    Task t;
    {
      std::unique_lock<std::mutex> lk(mu_);
      task_cv_.wait(lk, [&] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) return;
      t = std::move(tasks_.front());
      tasks_.pop_front();
      if (t.ckpt->state != State::kWriting) t.nbytes = 0;  // aborted or failed: just recycle
      else t.ckpt->issued++;
    }
    Checkpoint& c = *t.ckpt;
    const Layout& file = *c.layout;
    int err = 0;
    uint32_t crc = 0;
    uint64_t off = file.sb.payload_offset(c.slot) + t.chunk_index * geo_.chunk_size;
    uint64_t len = t.nbytes;
    if (t.nbytes > 0) {
      uint8_t* buf = pool_->data(t.buffer);
      crc = crc32c(buf, t.nbytes);
      if (file.direct.valid()) {  // O_DIRECT writes whole blocks; the slot has room for the padding
        len = round_up(t.nbytes, kBlock);
        std::memset(buf + t.nbytes, 0, len - t.nbytes);
      }
      err = take_injected_error();
      if (err == 0) err = pwrite_all(file.writer(), buf, len, off);
    }
    std::lock_guard<std::mutex> lk(mu_);
    buffer_submitted_[t.buffer] = 0;
    pool_->release(t.buffer);
    c.outstanding--;
    if (t.nbytes > 0) {
      if (err != 0) {
        fail_locked(c, "write " + file.path + " at offset " + std::to_string(off) + " (" + std::to_string(len) +
                           " bytes, seq " + std::to_string(c.seq) + " chunk " + std::to_string(t.chunk_index) +
                           "): " + errno_text(err));
      } else {
        bytes_written_ += len;
        if (c.state == State::kWriting) {
          c.crcs[t.chunk_index] = crc;
          if (++c.written == c.n_chunks) {
            c.state = State::kCommitting;
            commit_q_.push_back(t.ckpt);
            commit_cv_.notify_one();
          }
        }
      }
    }
    finish_if_drained_locked(c);
  }
}

void Store::committer_loop() {
  for (;;) {
    std::shared_ptr<Checkpoint> c;
    {
      std::unique_lock<std::mutex> lk(mu_);
      commit_cv_.wait(lk, [&] { return stopping_ || !commit_q_.empty(); });
      if (commit_q_.empty()) return;
      c = std::move(commit_q_.front());
      commit_q_.pop_front();
      if (c->state != State::kCommitting) continue;  // failed while queued, and finished then
      if (latest_ && c->seq < latest_->first) {  // a newer seq committed first
        finish_locked(*c, Outcome::kDropped);
        continue;
      }
    }
    commit(*c);
  }
}

void Store::commit(Checkpoint& c) {
  ChunkTable t{c.seq, c.step, c.payload_len, geo_.chunk_size, c.crcs};
  uint64_t table_len = round_up(table_encoded_size(c.n_chunks), kBlock);
  AlignedBlock table(table_len), record(kBlock);
  std::memset(table.data, 0, table_len);
  CommitRecord r{c.seq, c.slot, c.step, c.payload_len, geo_.chunk_size, c.n_chunks, now_ns(), 0};
  r.table_crc = encode_table(t, table.data);
  encode_record(r, record.data);

  bool sync_failed = false, installed = false;
  std::string err = c.grows ? commit_grown(c, table.data, table_len, r, &installed)
                            : commit_in_place(c, table.data, table_len, record.data, &sync_failed);

  std::lock_guard<std::mutex> lk(mu_);
  if (err.empty()) {
    bytes_written_ += table_len + kBlock;
    latest_ = {c.seq, c.step};
    finish_locked(c, Outcome::kCommitted);
  } else {
    fail_locked(c, err);
    if (sync_failed) fail_in_flight_locked(err);
    finish_if_drained_locked(c);
  }
  // A grown file's first checkpoint is protected once the file is in place,
  // even while the rename is not known durable: the file holds nothing newer.
  if (err.empty() || installed) {
    committed_.push_back(r);
    slots_[c.slot] = SlotState::kCommitted;
    while (committed_.size() > geo_.keep) {  // only now is an older slot safe to reuse
      slots_[committed_.front().slot] = SlotState::kFree;
      committed_.pop_front();
    }
  }
  done_cv_.notify_all();
}

std::string Store::commit_in_place(Checkpoint& c, const uint8_t* table, uint64_t table_len, const uint8_t* record,
                                   bool* sync_failed) {
  // Payload and table durable, then the record durable: a crash in between
  // leaves the previous commit as the newest valid one.
  const Layout& file = *c.layout;
  const Fd& w = file.writer();
  auto failed = [&](const std::string& what, uint64_t off, int err) {
    return what + " " + file.path + " at offset " + std::to_string(off) + " (seq " + std::to_string(c.seq) +
           "): " + errno_text(err);
  };
  uint64_t off = file.sb.slot_offset(c.slot);
  if (int err = pwrite_all(w, table, table_len, off)) return failed("write chunk table", off, err);
  if (int err = w.fs().fdatasync(w.get())) {
    *sync_failed = true;
    return failed("fdatasync (payload and chunk table)", off, err);
  }
  off = file.sb.ring_entry_offset(c.seq);
  if (int err = pwrite_all(w, record, kBlock, off)) return failed("write commit record", off, err);
  if (int err = w.fs().fdatasync(w.get())) {
    *sync_failed = true;
    return failed("fdatasync (commit record)", off, err);
  }
  return sync_directory();
}

std::string Store::commit_grown(Checkpoint& c, const uint8_t* table, uint64_t table_len, const CommitRecord& r,
                                bool* installed) {
  std::shared_ptr<Layout> old;
  std::vector<CommitRecord> kept;  // with c, the keep newest
  {
    std::lock_guard<std::mutex> lk(mu_);
    old = layout_;
    kept.assign(committed_.end() - static_cast<std::ptrdiff_t>(c.slot), committed_.end());
  }
  const Layout& file = *c.layout;
  try {
    // The grown file is invisible to readers until the rename: the order of
    // its writes does not matter, only that all are durable before it.
    for (size_t i = 0; i < kept.size(); ++i) kept[i] = copy_checkpoint(*old, file, kept[i], i);
    uint64_t off = file.sb.slot_offset(c.slot);
    if (int err = pwrite_all(file.writer(), table, table_len, off))
      throw WriteError("write chunk table " + file.path + " at offset " + std::to_string(off) + ": " + errno_text(err));
    AlignedBlock block(kBlock);
    std::vector<CommitRecord> records = kept;
    records.push_back(r);
    for (const CommitRecord& rec : records) {
      encode_record(rec, block.data);
      off = file.sb.ring_entry_offset(rec.seq);
      if (int err = pwrite_all(file.writer(), block.data, kBlock, off))
        throw WriteError("write commit record " + file.path + " at offset " + std::to_string(off) + ": " +
                         errno_text(err));
    }
    sync_and_rename(file.fd, file.path, geo_.path);
  } catch (const CoreError& e) {
    return std::string(e.what()) + " (growing " + geo_.path + "; it is unchanged)";
  }
  // Renamed: from here on the grown file is the store's file, whether or
  // not the rename is durable yet.
  *installed = true;
  dir_dirty_ = true;
  {
    std::lock_guard<std::mutex> lk(mu_);
    c.layout->path = geo_.path;
    layout_ = c.layout;
    apply_superblock(layout_->sb, &geo_);
    if (!layout_->direct.valid()) geo_.durability = Durability::kFdatasync;
    slots_.assign(layout_->sb.slot_count, SlotState::kFree);
    committed_.assign(kept.begin(), kept.end());
    for (const CommitRecord& rec : committed_) slots_[rec.slot] = SlotState::kCommitted;
    n_grown_++;
  }
  return sync_directory();
}

std::string Store::sync_directory() {
  if (!dir_dirty_) return "";
  std::string dir = parent_dir(geo_.path);
  if (int err = fs_.fsync_dir(dir))
    return "fsync directory " + dir + " (making the grown " + geo_.path + " durable): " + errno_text(err);
  dir_dirty_ = false;
  return "";
}

void Store::fail_in_flight_locked(const std::string& msg) {
  std::vector<std::shared_ptr<Checkpoint>> all;
  for (auto& kv : active_)
    if (kv.second->issued > 0) all.push_back(kv.second);  // writes not yet issued cannot be lost
  for (auto& c : all) {
    fail_locked(*c, msg + "; an fdatasync of the file failed while seq " + std::to_string(c->seq) +
                        " had unsynced writes, which may be lost");
    finish_if_drained_locked(*c);
  }
}

void Store::fail_locked(Checkpoint& c, const std::string& msg) {
  if (c.state != State::kWriting && c.state != State::kCommitting) return;
  c.state = State::kFailed;
  c.error = msg;
  if (!sticky_) sticky_ = std::make_pair(c.seq, msg);
}

void Store::finish_if_drained_locked(Checkpoint& c) {
  if (c.outstanding != 0 || active_.count(c.seq) == 0) return;
  if (c.state == State::kFailed) finish_locked(c, Outcome::kPending);
  if (c.state == State::kAborted) finish_locked(c, Outcome::kAborted);
}

void Store::finish_locked(Checkpoint& c, Outcome o) {
  if (active_.erase(c.seq) == 0) return;
  if (c.layout == layout_) slots_[c.slot] = SlotState::kFree;
  if (c.grows) {
    growing_ = false;
    if (c.layout != layout_) fs_.unlink(c.layout->path);  // the grown file never got into place
  }
  // kPending marks a failure here; wait() turns it into WriteError.
  finished_[c.seq] = {o, o == Outcome::kPending || o == Outcome::kAborted ? c.error : ""};
  while (finished_.size() > kFinishedHistory) finished_.erase(finished_.begin());
  switch (o) {
    case Outcome::kCommitted:
      c.state = State::kCommitted;
      n_committed_++;
      break;
    case Outcome::kDropped:
      c.state = State::kDropped;
      n_dropped_++;
      break;
    case Outcome::kAborted:
      n_aborted_++;
      break;
    case Outcome::kPending:
      n_failed_++;
      break;
  }
  done_cv_.notify_all();
}

Outcome Store::wait(std::optional<uint64_t> seq, std::optional<double> timeout_s) {
  std::unique_lock<std::mutex> lk(mu_);
  auto ready = [&] { return seq ? active_.count(*seq) == 0 : active_.empty(); };
  if (timeout_s) {
    auto d = std::chrono::duration<double>(std::max(0.0, *timeout_s));
    if (!done_cv_.wait_for(lk, d, ready)) return Outcome::kPending;
  } else {
    done_cv_.wait(lk, ready);
  }
  if (!seq) {
    if (sticky_) {
      std::string msg = sticky_->second;
      sticky_.reset();
      throw WriteError(msg);
    }
    return Outcome::kCommitted;
  }
  auto it = finished_.find(*seq);
  if (it == finished_.end()) throw std::invalid_argument("unknown seq " + std::to_string(*seq));
  if (it->second.first == Outcome::kPending) {
    if (sticky_ && sticky_->first == *seq) sticky_.reset();
    throw WriteError(it->second.second);
  }
  return it->second.first;
}

std::optional<std::pair<uint64_t, uint64_t>> Store::latest() const {
  std::lock_guard<std::mutex> lk(mu_);
  return latest_;
}

Stats Store::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  Stats s{};
  s.buffers_total = pool_->count();
  s.buffers_free = pool_->free_count();
  s.slots_free = static_cast<uint64_t>(std::count(slots_.begin(), slots_.end(), SlotState::kFree));
  s.in_flight = active_.size();
  s.committed = n_committed_;
  s.dropped = n_dropped_;
  s.failed = n_failed_;
  s.aborted = n_aborted_;
  s.bytes_written = bytes_written_;
  s.grown = n_grown_;
  return s;
}

void Store::close() {
  stop_copier();  // queued copies complete first: their checkpoints commit like any other
  {
    std::unique_lock<std::mutex> lk(mu_);
    if (closed_) return;
    closed_ = true;
    for (auto& kv : active_) {
      Checkpoint& c = *kv.second;
      if (c.state == State::kWriting && c.n_submitted < c.n_chunks) {
        c.state = State::kAborted;
        c.error = "store closed before the payload was complete";
      }
    }
    std::vector<std::shared_ptr<Checkpoint>> all;
    for (auto& kv : active_) all.push_back(kv.second);
    for (auto& c : all) finish_if_drained_locked(*c);
    done_cv_.wait(lk, [&] { return active_.empty() && !growing_; });
    stopping_ = true;
  }
  task_cv_.notify_all();
  commit_cv_.notify_all();
  done_cv_.notify_all();
  for (auto& th : writers_) th.join();
  committer_.join();
  pool_->shutdown();
  layout_.reset();
  lock_.unlock();
}

}  // namespace pccheck
