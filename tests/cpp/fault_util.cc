#include "fault_util.h"

#include <algorithm>
#include <deque>

#include "errors.h"
#include "recovery.h"
#include "util.h"

namespace pctest {

std::vector<uint8_t> step_payload(uint64_t step, uint64_t salt) {
  uint64_t key = mix64(step * 1000003 + salt);
  uint64_t h = key >> 8, size;
  switch (key % 10) {
    case 0: size = 1 + h % 300; break;
    case 1:
    case 2: size = kFaultSlot + 1 + h % (3 * kFaultSlot); break;
    default: size = 1 + h % kFaultSlot; break;
  }
  return payload_for(key, size);
}

std::string save_steps(pccheck::Store& s, uint64_t n, uint64_t salt, uint64_t* next_step, uint64_t* reported,
                       const std::function<void(uint64_t)>& after_submit) {
  const uint64_t max_async = s.geometry().max_async;
  std::deque<std::pair<uint64_t, uint64_t>> in_flight;  // (seq, step)
  auto settle = [&] {
    auto [seq, step] = in_flight.front();
    in_flight.pop_front();
    if (s.wait(seq, std::nullopt) == pccheck::Outcome::kCommitted) *reported = std::max(*reported, step);
  };
  try {
    for (uint64_t i = 0; i < n; ++i) {
      uint64_t step = (*next_step)++;
      std::vector<uint8_t> data = step_payload(step, salt);
      uint64_t seq = *s.begin(step, data.size(), true);
      s.write_host(seq, {{data.data(), data.size()}});
      in_flight.emplace_back(seq, step);
      if (after_submit) after_submit(i);
      while (in_flight.size() >= max_async) settle();
    }
    while (!in_flight.empty()) settle();
  } catch (const pccheck::CoreError& e) {
    return e.what();
  }
  return "";
}

std::vector<uint8_t> read_seq(pccheck::FileSystem& fs, const std::string& path, uint64_t seq) {
  std::vector<uint8_t> out(pccheck::payload_length(path, seq, fs));
  pccheck::read_payload(path, seq, out.data(), out.size(), 1, false, fs);
  return out;
}

std::optional<Recovered> load_newest(pccheck::FileSystem& fs, const std::string& path) {
  pccheck::FileInfo info;
  if (fs.stat(path, &info) != 0) return std::nullopt;
  pccheck::ScanResult r = pccheck::scan_file(path, false, false, fs);
  std::vector<pccheck::CommitRecord> valid;
  for (const auto& e : r.entries)
    if (e.valid) valid.push_back(e.rec);
  std::sort(valid.begin(), valid.end(), [](const auto& a, const auto& b) { return a.seq > b.seq; });
  for (const auto& rec : valid) {
    try {
      return Recovered{rec.seq, rec.step, read_seq(fs, path, rec.seq)};
    } catch (const pccheck::CorruptError&) {
    }
  }
  return std::nullopt;
}

}  // namespace pctest
