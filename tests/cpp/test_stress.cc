// Many threads saving concurrently with small chunks: every outcome is
// accounted for, nothing leaks, and the newest commit reads back exactly.
#include <atomic>
#include <thread>

#include "check.h"
#include "errors.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;

TEST(stress_concurrent_saves) {
  pctest::TempDir d;
  auto opt = pctest::small_options(d.file("ck"));
  opt.chunk_size = 4096;
  opt.memory_budget = 16 * 4096;
  opt.threads = 4;
  opt.max_async = 3;
  std::atomic<uint64_t> committed{0}, dropped{0}, skipped{0};
  {
    Store s(opt);
    std::vector<std::thread> producers;
    for (uint64_t t = 0; t < 4; ++t) {
      producers.emplace_back([&, t] {
        for (uint64_t i = 0; i < 60; ++i) {
          uint64_t step = t * 1000 + i;
          auto data = pctest::payload_for(step, pctest::payload_size(step, 100000));
          auto seq = s.begin(step, data.size(), i % 5 != 0);
          if (!seq) {
            skipped++;
            continue;
          }
          s.write_host(*seq, {{data.data(), data.size()}});
          Outcome o = s.wait(*seq, std::nullopt);
          (o == Outcome::kCommitted ? committed : dropped)++;
        }
      });
    }
    for (auto& th : producers) th.join();
    CHECK(s.wait(std::nullopt, std::nullopt) == Outcome::kCommitted);
    Stats st = s.stats();
    CHECK_EQ(st.committed, committed.load());
    CHECK_EQ(st.dropped, dropped.load());
    CHECK_EQ(committed + dropped + skipped, 240u);
    CHECK_EQ(st.in_flight, 0u);
    CHECK_EQ(st.buffers_free, st.buffers_total);
    CHECK_EQ(st.slots_free, s.geometry().slot_count - opt.keep);
  }
  ScanResult r = scan_file(opt.path, true);
  CHECK(r.latest.has_value());
  for (const auto& e : r.entries)
    if (e.valid && e.rec.seq == *r.latest)
      CHECK(pctest::read_back(opt.path, e.rec.seq) ==
            pctest::payload_for(e.rec.step, pctest::payload_size(e.rec.step, 100000)));
}
