// The store's copy thread: write_host_async copies in order and commits what
// write_host would, wait_copied waits for it and reports a failed copy once,
// and close() completes queued copies.
#include <thread>

#include "check.h"
#include "errors.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;
using pctest::TempDir;

namespace {
std::vector<uint8_t> head_of(uint64_t step) { return pctest::payload_for(step + 1000, 100); }

std::vector<uint8_t> joined(const std::vector<uint8_t>& head, const std::vector<uint8_t>& body) {
  std::vector<uint8_t> all(head);
  all.insert(all.end(), body.begin(), body.end());
  return all;
}
}  // namespace

TEST(async_copies_commit_the_same_bytes_in_order) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  std::vector<std::vector<uint8_t>> bodies;
  std::vector<uint64_t> seqs;
  {
    Store s(opt);
    for (uint64_t step = 1; step <= 6; ++step) {  // more than max_async: begin() waits for earlier copies
      bodies.push_back(pctest::payload_for(step, 100000));
      const auto& b = bodies.back();
      uint64_t seq = *s.begin(step, 100 + b.size(), true);
      seqs.push_back(seq);
      s.write_host_async(seq, head_of(step), {{b.data(), b.size() / 2}, {b.data() + b.size() / 2, b.size() - b.size() / 2}});
    }
    CHECK(s.wait_copied().empty());
    for (auto& b : bodies) std::fill(b.begin(), b.end(), 0);  // copied: changing the source no longer matters
    CHECK(s.wait(std::nullopt, std::nullopt) == Outcome::kCommitted);
    CHECK_EQ(s.latest()->second, 6u);
  }
  for (uint64_t step = 5; step <= 6; ++step)  // keep = 2: the newest two are on disk
    CHECK(pctest::read_back(opt.path, seqs[step - 1]) == joined(head_of(step), pctest::payload_for(step, 100000)));
}

TEST(failed_async_copy_aborts_its_checkpoint_and_is_reported_once) {
  TempDir d;
  Store s(pctest::small_options(d.file("ck")));
  auto body = pctest::payload_for(1, 5000);
  uint64_t seq = *s.begin(1, 100 + body.size() + 1, true);  // one byte more than the copy brings
  s.write_host_async(seq, head_of(1), {{body.data(), body.size()}});
  std::string error = s.wait_copied();
  CHECK(error.find("snapshot copy of seq " + std::to_string(seq) + " failed") != std::string::npos);
  CHECK(s.wait(seq, std::nullopt) == Outcome::kAborted);
  CHECK(s.wait_copied().empty());
  auto r = pctest::save(s, 2, body);  // the store goes on
  CHECK(r.second == Outcome::kCommitted);
}

TEST(close_completes_queued_copies_and_refuses_new_ones) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  auto body = pctest::payload_for(3, 200000);
  uint64_t seq;
  {
    Store s(opt);
    seq = *s.begin(3, 100 + body.size(), true);
    s.write_host_async(seq, head_of(3), {{body.data(), body.size()}});
    s.close();
    CHECK_THROWS(CoreError, s.write_host_async(seq + 1, head_of(4), {}));
  }
  CHECK(pctest::read_back(opt.path, seq) == joined(head_of(3), body));
}

TEST(async_copies_from_several_threads_while_waiting) {
  TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  opt.max_async = 3;
  Store s(opt);
  auto body = pctest::payload_for(7, 60000);
  std::vector<std::thread> ts;
  for (uint64_t t = 0; t < 3; ++t)
    ts.emplace_back([&, t] {
      for (uint64_t i = 0; i < 4; ++i) {
        uint64_t step = 10 * t + i + 1;
        uint64_t seq = *s.begin(step, 100 + body.size(), true);
        s.write_host_async(seq, head_of(step), {{body.data(), body.size()}});
        s.wait_copied();
      }
    });
  for (auto& t : ts) t.join();
  CHECK(s.wait_copied().empty());
  CHECK(s.wait(std::nullopt, std::nullopt) == Outcome::kCommitted);
  CHECK_EQ(s.stats().committed + s.stats().dropped, 12u);
}
