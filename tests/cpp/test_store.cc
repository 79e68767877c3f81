// Slots, out-of-order completion, commit and reopen, write errors, lock.
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <thread>

#include "check.h"
#include "errors.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;
using pctest::TempDir;

TEST(commit_and_reopen_finds_data) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  auto a = pctest::payload_for(1, 100000), b = pctest::payload_for(2, 16384);
  uint64_t sa, sb;
  {
    Store s(opt);
    CHECK(s.geometry().created);
    CHECK(!s.latest());
    auto ra = pctest::save(s, 1, a);
    auto rb = pctest::save(s, 2, b);
    CHECK(ra.second == Outcome::kCommitted && rb.second == Outcome::kCommitted);
    sa = ra.first;
    sb = rb.first;
    CHECK(sb > sa);
    CHECK_EQ(s.latest()->second, 2u);
  }
  CHECK(pctest::read_back(opt.path, sa) == a);
  CHECK(pctest::read_back(opt.path, sb) == b);
  Store s(opt);
  CHECK(!s.geometry().created);
  CHECK_EQ(s.latest()->first, sb);
  CHECK_EQ(s.stats().slots_free, s.geometry().slot_count - 2);
  auto rc = pctest::save(s, 3, a);
  CHECK(rc.first > sb);  // sequence numbers continue after the reopened ones
}

TEST(slots_are_reused_and_keep_newest_protected) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  opt.max_async = 1;
  opt.keep = 1;
  Store s(opt);
  std::vector<uint64_t> seqs;
  for (uint64_t step = 1; step <= 6; ++step) seqs.push_back(pctest::save(s, step, pctest::payload_for(step, 50000)).first);
  ScanResult r = scan_file(opt.path, true);
  std::set<uint64_t> slots;
  for (const auto& e : r.entries) slots.insert(e.rec.slot);
  CHECK_EQ(slots.size(), 2u);  // two slots, alternating
  CHECK_EQ(*r.latest, seqs.back());
  CHECK(pctest::read_back(opt.path, seqs[4]) == pctest::payload_for(5, 50000));
  for (const auto& e : r.entries)
    if (e.rec.seq == seqs[3]) CHECK(!e.valid);  // its slot now holds seq 6
  auto st = s.stats();
  CHECK_EQ(st.slots_free, 1u);
  CHECK_EQ(st.buffers_free, st.buffers_total);
}

TEST(out_of_order_completion_and_drop) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  Store s(opt);
  const uint64_t cs = opt.chunk_size;
  auto p1 = pctest::payload_for(1, 2 * cs), p2 = pctest::payload_for(2, 2 * cs + 5);
  uint64_t s1 = *s.begin(1, p1.size(), true), s2 = *s.begin(2, p2.size(), true);
  CHECK(!s.begin(3, 10, false));  // max_async = 2 in flight: back-pressure
  auto put = [&](uint64_t seq, const std::vector<uint8_t>& p, uint64_t chunk) {
    uint64_t b = s.acquire();
    uint64_t n = std::min<uint64_t>(cs, p.size() - chunk * cs);
    std::memcpy(s.pool()->data(b), p.data() + chunk * cs, n);
    CHECK(s.submit(seq, b, chunk, n));
  };
  put(s2, p2, 2);
  put(s2, p2, 0);
  put(s1, p1, 1);
  put(s2, p2, 1);
  CHECK(s.wait(s2, std::nullopt) == Outcome::kCommitted);
  put(s1, p1, 0);  // completes after a newer commit: dropped
  CHECK(s.wait(s1, std::nullopt) == Outcome::kDropped);
  CHECK(pctest::read_back(opt.path, s2) == p2);
  CHECK_THROWS(CorruptError, pctest::read_back(opt.path, s1));
  auto st = s.stats();
  CHECK_EQ(st.dropped, 1u);
  CHECK_EQ(st.in_flight, 0u);
  CHECK_EQ(st.buffers_free, st.buffers_total);
  CHECK_EQ(st.slots_free, s.geometry().slot_count - 1);
}

TEST(abort_releases_slot_and_buffers) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  Store s(opt);
  uint64_t seq = *s.begin(1, 3 * opt.chunk_size, true);
  uint64_t b = s.acquire();
  CHECK(s.submit(seq, b, 1, opt.chunk_size));
  s.abort(seq, "test");
  CHECK(s.wait(seq, std::nullopt) == Outcome::kAborted);
  uint64_t b2 = s.acquire();
  CHECK(!s.submit(seq, b2, 0, opt.chunk_size));  // no longer live: buffer returned
  auto st = s.stats();
  CHECK_EQ(st.in_flight, 0u);
  CHECK_EQ(st.buffers_free, st.buffers_total);
  CHECK_EQ(st.slots_free, s.geometry().slot_count);
  CHECK_EQ(st.aborted, 1u);
}

TEST(write_error_is_reported_and_last_commit_survives) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  Store s(opt);
  auto good = pctest::payload_for(1, 70000);
  auto r1 = pctest::save(s, 1, good);
  s.inject_write_error(2, EIO);
  auto bad = pctest::payload_for(2, 100000);
  uint64_t seq = *s.begin(2, bad.size(), true);
  s.write_host(seq, {{bad.data(), bad.size()}});
  CHECK_THROWS(WriteError, s.wait(seq, std::nullopt));
  CHECK_THROWS(WriteError, s.wait(seq, std::nullopt));  // the outcome stays
  CHECK_EQ(s.latest()->first, r1.first);
  // wait(seq) reported it: the next begin() succeeds.
  auto r3 = pctest::save(s, 3, good);
  CHECK(r3.second == Outcome::kCommitted);
  // Unreported, the error is raised by the next begin(), once.
  s.inject_write_error(0, ENOSPC);
  uint64_t s4 = *s.begin(4, bad.size(), true);
  s.write_host(s4, {{bad.data(), bad.size()}});
  while (s.stats().in_flight) std::this_thread::yield();  // wait(nullopt) would report it
  CHECK_THROWS(WriteError, s.begin(5, 10, true));
  CHECK(s.begin(5, 10, false).has_value());
  auto st = s.stats();
  CHECK_EQ(st.failed, 2u);
  CHECK(pctest::read_back(opt.path, r3.first) == good);
}

TEST(lock_refuses_second_store) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  Store s(opt);
  CHECK_THROWS(LockedError, Store t(opt));
}

TEST(reopen_checks_geometry) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  { Store s(opt); }
  auto bigger = opt;
  bigger.slot_size *= 2;
  {
    Store t(bigger);  // smaller slots than requested: adopted, grown only when a payload needs it
    CHECK_EQ(t.geometry().slot_size, opt.slot_size);
  }
  auto more = opt;
  more.max_async = 4;
  {
    Store t(more);
    CHECK(t.geometry().adopted);
    CHECK_EQ(t.geometry().slot_count, 4u);
  }
  auto other = pctest::small_options(d.file("not-ours"));
  {
    pccheck::Fd fd = pccheck::open_file(posix_fs(), other.path, O_RDWR | O_CREAT);
    std::vector<uint8_t> junk(10000, 'x');
    CHECK(pccheck::pwrite_all(fd, junk.data(), junk.size(), 0) == 0);
  }
  CHECK_THROWS(FormatError, Store t(other));
  CHECK_EQ(pccheck::file_size(pccheck::open_file(posix_fs(), other.path, O_RDONLY), other.path), 10000u);
  auto bad = opt;
  bad.chunk_size = 1000;
  CHECK_THROWS(std::invalid_argument, Store t(bad));
}

TEST(direct_mode_round_trip) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  opt.durability = Durability::kAuto;
  Store s(opt);
  auto p = pctest::payload_for(9, 40001);  // last chunk padded for O_DIRECT
  auto r = pctest::save(s, 9, p);
  CHECK(r.second == Outcome::kCommitted);
  CHECK(pctest::read_back(opt.path, r.first) == p);
}
