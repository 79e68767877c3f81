// Simulated power losses at random points (FaultDisk): in the middle of
// chunk writes, between a commit's writes and syncs, while slots are
// reused, while the file grows, after a process crash left unsynced writes
// behind, and during a multi-rank global commit. After each, recovery must
// return a checkpoint at least as new as the last one reported committed,
// bit-exact. $POWERLOSS_ITERS (check.h) is the count over both tests: four
// fifths with one store, one fifth multi-rank.
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <set>

#include "check.h"
#include "crc32c.h"
#include "errors.h"
#include "fault_fs.h"
#include "fault_util.h"
#include "recovery.h"
#include "util.h"

using namespace pccheck;
using pctest::FaultDisk;
using pctest::FaultFs;
using pctest::Loss;

namespace {

const std::string kDir = "/pl";
const std::string kPath = kDir + "/ck";

struct Shape {  // a file's store options, drawn once per fresh disk
  uint64_t max_async, keep;
  Durability durability;
};

Shape draw_shape(std::mt19937_64& rng) {
  return {1 + rng() % 3, 1 + rng() % 2, rng() % 2 ? Durability::kDirect : Durability::kFdatasync};
}

StoreOptions options(FileSystem& fs, const std::string& path, const Shape& shape, uint64_t threads) {
  StoreOptions o;
  o.path = path;
  o.slot_size = pctest::kFaultSlot;
  o.max_async = shape.max_async;
  o.keep = shape.keep;
  o.chunk_size = pctest::kFaultChunk;
  o.threads = threads;
  o.memory_budget = 4 * pctest::kFaultChunk;
  o.durability = shape.durability;
  o.fs = &fs;
  return o;
}

// Where the cuts landed, for the summary line.
struct Tally {
  std::map<std::string, uint64_t> at;
  uint64_t during_growth = 0, kills = 0, empty = 0, grown = 0;
  void cut(const FaultDisk& d, bool fired) {
    if (!fired) {
      at["after the run"]++;
      return;
    }
    at[pctest::op_name(d.cut_event().kind)]++;
    std::set<std::string> names;
    for (const auto& n : d.names_at_cut()) names.insert(n);
    for (const auto& n : names)  // a file and its grown successor side by side
      if (names.count(n + ".tmp")) during_growth++;
  }
  void print(const char* name, uint64_t n, double seconds) const {
    std::printf("  %s: %llu power losses in %.1f s; cut in:", name, static_cast<unsigned long long>(n), seconds);
    for (const auto& kv : at) std::printf(" %s %llu,", kv.first.c_str(), static_cast<unsigned long long>(kv.second));
    std::printf(" during a growth %llu; process kills %llu; files grown %llu; nothing committed yet %llu\n",
                static_cast<unsigned long long>(during_growth), static_cast<unsigned long long>(kills),
                static_cast<unsigned long long>(grown), static_cast<unsigned long long>(empty));
  }
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t seed_from_env() {
  const char* v = std::getenv("POWERLOSS_SEED");
  uint64_t seed = v && *v ? std::strtoull(v, nullptr, 10) : std::random_device{}();
  std::printf("  POWERLOSS_SEED=%llu\n", static_cast<unsigned long long>(seed));
  return seed;
}

// Calls a round makes, learnt from the rounds: the cut lands uniformly
// within that, so mostly inside the round and now and then after it.
struct Span {
  double mean;
  uint64_t draw(std::mt19937_64& rng) const { return 1 + rng() % static_cast<uint64_t>(mean + 1); }
  void learn(bool cut, uint64_t calls) {
    mean = cut ? mean * 1.02 : 0.9 * mean + 0.1 * static_cast<double>(calls);
  }
};

// The disk as it is after a power loss: the armed one, or one now.
std::shared_ptr<FaultDisk> lose_power(FaultDisk& d, Loss mode, uint64_t seed, bool* fired) {
  *fired = d.dead();
  return *fired ? d.after_power_loss() : d.power_loss(mode, seed);
}

}  // namespace

// One store saving (one or two processes, the first killed with writes in
// flight); power lost at a random call. The disk carries on to the next
// round (the state and the file's size accumulate) or starts fresh.
TEST(powerloss_single_store) {
  const uint64_t n = pctest::powerloss_iterations() - pctest::powerloss_iterations() / 5;
  std::mt19937_64 rng(seed_from_env());
  auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  std::shared_ptr<FaultDisk> disk;
  Shape shape{};
  uint64_t next_step = 1, durable = 0;  // newest step that must survive
  Span span{100};
  for (uint64_t iter = 0; iter < n; ++iter) {
    if (!disk || rng() % 4 == 0) {
      disk = std::make_shared<FaultDisk>();
      shape = draw_shape(rng);
      durable = 0;
    }
    Loss mode = rng() % 3 == 0 ? Loss::kDropAll : Loss::kRandomPart;
    uint64_t start = disk->ops();
    disk->arm_power_loss(span.draw(rng), mode, rng());
    uint64_t sessions = 1 + rng() % 2;
    for (uint64_t sess = 0; sess < sessions && !disk->dead(); ++sess) {
      FaultFs fs(disk);
      // A process crash at a random call of its own ends all but the last
      // session: its unsynced writes stay in the page cache for the next.
      uint64_t kill_in = sess + 1 < sessions ? span.draw(rng) : UINT64_MAX;
      disk->set_hook([&, view = fs.id()](const pctest::FaultEvent& e) {
        if (e.view != view || kill_in-- != 0) return false;
        tally.kills++;
        return true;
      });
      try {
        Store s(options(fs, kPath, shape, 2));
        if (auto l = s.latest()) durable = std::max(durable, l->second);  // reported at open: must survive
        pctest::save_steps(s, 2 + rng() % 5, 0, &next_step, &durable);
        tally.grown += s.stats().grown;
      } catch (const CoreError&) {  // the disk or the process died while opening
      }
      disk->set_hook(nullptr);
    }
    bool fired;
    std::shared_ptr<FaultDisk> after = lose_power(*disk, mode, rng(), &fired);
    span.learn(fired, disk->ops() - start);
    tally.cut(*disk, fired);

    FaultFs fs(after);
    auto got = pctest::load_newest(fs, kPath);
    try {
      if (durable > 0) CHECK(got.has_value());
      if (got) {
        CHECK(got->step >= durable);
        CHECK(got->step < next_step);
        CHECK(got->data == pctest::step_payload(got->step));
      }
    } catch (const pctest::Failure& f) {
      throw pctest::Failure(std::string(f.what()) + " (power loss " + std::to_string(iter + 1) + ", step " +
                            std::to_string(got ? got->step : 0) + " recovered, step " + std::to_string(durable) +
                            " reported committed)");
    }
    if (got) durable = got->step;  // the image is all durable: it stays loadable
    else tally.empty++;
    disk = after;
  }
  tally.print("single store", n, seconds_since(t0));
}

namespace {

constexpr uint64_t kRanks = 3;

std::string rank_path(uint64_t r) { return kDir + "/rank" + std::to_string(r); }
const std::string kCoordPath = kDir + "/global";

void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}
uint64_t get_u64(const std::vector<uint8_t>& in, size_t at) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | in.at(at + static_cast<size_t>(i));
  return v;
}

// The coordinator's payload: step, then (rank, seq, CRC of the part) per rank.
std::vector<uint8_t> global_record(uint64_t step, const std::vector<uint64_t>& seqs,
                                   const std::vector<std::vector<uint8_t>>& parts) {
  std::vector<uint8_t> out;
  put_u64(out, step);
  for (uint64_t r = 0; r < kRanks; ++r) {
    put_u64(out, r);
    put_u64(out, seqs[r]);
    put_u64(out, crc32c(parts[r].data(), parts[r].size()));
  }
  return out;
}

// Newest coordinator commit whose every rank part verifies with the CRC it
// lists: (step, parts).
std::optional<std::pair<uint64_t, std::vector<std::vector<uint8_t>>>> recover_global(FileSystem& fs) {
  FileInfo info;
  if (fs.stat(kCoordPath, &info) != 0) return std::nullopt;
  ScanResult scan = scan_file(kCoordPath, false, false, fs);
  std::vector<CommitRecord> valid;
  for (const auto& e : scan.entries)
    if (e.valid) valid.push_back(e.rec);
  std::sort(valid.begin(), valid.end(), [](const auto& a, const auto& b) { return a.seq > b.seq; });
  for (const auto& rec : valid) {
    std::vector<uint8_t> g;
    try {
      g = pctest::read_seq(fs, kCoordPath, rec.seq);
    } catch (const CorruptError&) {
      continue;
    }
    CHECK_EQ(g.size(), 8 + kRanks * 24);
    std::vector<std::vector<uint8_t>> parts;
    for (uint64_t r = 0; r < kRanks; ++r) {
      CHECK_EQ(get_u64(g, 8 + r * 24), r);
      try {
        parts.push_back(pctest::read_seq(fs, rank_path(r), get_u64(g, 16 + r * 24)));
      } catch (const CoreError&) {  // gone, reused or torn: this global step is not whole
        break;
      }
      if (crc32c(parts.back().data(), parts.back().size()) != get_u64(g, 24 + r * 24)) break;
    }
    if (parts.size() == kRanks) return std::make_pair(get_u64(g, 0), parts);
  }
  return std::nullopt;
}

}  // namespace

// kRanks stores each commit their part of a step, then a coordinator store
// commits the list of (rank, seq, CRC); power lost at a random call.
TEST(powerloss_multirank_global_commit) {
  const uint64_t n = std::max<uint64_t>(1, pctest::powerloss_iterations() / 5);
  std::mt19937_64 rng(seed_from_env());
  auto t0 = std::chrono::steady_clock::now();
  Tally tally;
  Span span{150};
  for (uint64_t iter = 0; iter < n; ++iter) {
    auto disk = std::make_shared<FaultDisk>();
    Shape shape = draw_shape(rng);
    shape.keep = 2;  // a rank keeps the part of the newest global step while it commits the next
    Loss mode = rng() % 3 == 0 ? Loss::kDropAll : Loss::kRandomPart;
    disk->arm_power_loss(span.draw(rng), mode, rng());
    uint64_t global = 0;  // newest step the coordinator reported committed
    {
      FaultFs fs(disk);
      std::vector<std::unique_ptr<Store>> ranks;
      try {
        for (uint64_t r = 0; r < kRanks; ++r)
          ranks.push_back(std::make_unique<Store>(options(fs, rank_path(r), shape, 1)));
        Store coord(options(fs, kCoordPath, shape, 1));
        for (uint64_t step = 1; step <= 5; ++step) {
          std::vector<uint64_t> seqs;
          std::vector<std::vector<uint8_t>> parts;
          for (uint64_t r = 0; r < kRanks; ++r) {  // written in parallel, in the background
            parts.push_back(pctest::step_payload(step, r + 1));
            seqs.push_back(*ranks[r]->begin(step, parts[r].size(), true));
            ranks[r]->write_host(seqs[r], {{parts[r].data(), parts[r].size()}});
          }
          bool whole = true;
          for (uint64_t r = 0; r < kRanks; ++r) whole &= ranks[r]->wait(seqs[r], std::nullopt) == Outcome::kCommitted;
          if (!whole) break;
          auto g = global_record(step, seqs, parts);
          uint64_t seq = *coord.begin(step, g.size(), true);
          coord.write_host(seq, {{g.data(), g.size()}});
          if (coord.wait(seq, std::nullopt) == Outcome::kCommitted) global = step;
        }
      } catch (const CoreError&) {  // the disk died
      }
      for (auto& s : ranks) tally.grown += s->stats().grown;
    }
    bool fired;
    std::shared_ptr<FaultDisk> after = lose_power(*disk, mode, rng(), &fired);
    span.learn(fired, disk->ops());
    tally.cut(*disk, fired);

    FaultFs fs(after);
    auto got = recover_global(fs);
    try {
      if (global > 0) CHECK(got.has_value());
      if (got) {
        CHECK(got->first >= global);
        for (uint64_t r = 0; r < kRanks; ++r) CHECK(got->second[r] == pctest::step_payload(got->first, r + 1));
      }
    } catch (const pctest::Failure& f) {
      throw pctest::Failure(std::string(f.what()) + " (power loss " + std::to_string(iter + 1) + ", global step " +
                            std::to_string(got ? got->first : 0) + " recovered, step " + std::to_string(global) +
                            " reported committed)");
    }
    if (!got) tally.empty++;
  }
  tally.print("multi-rank", n, seconds_since(t0));
}

// Power lost at every call of one save in turn (in place, and one that
// grows the file), each cut with many random parts of the volatile state
// kept: whatever a store opened on the image reports must load back whole.
TEST(powerloss_at_every_call_of_a_save) {
  const Shape shape{1, 1, Durability::kFdatasync};
  for (uint64_t size : {uint64_t{20000}, 3 * pctest::kFaultSlot}) {
    auto first = pctest::step_payload(1), second = pctest::payload_for(2, size);
    auto run = [&](FaultDisk& disk, uint64_t cut, uint64_t seed, uint64_t* reported) {
      FaultFs fs(disk.shared_from_this());
      Store s(options(fs, kPath, shape, 1));
      CHECK(pctest::save(s, 1, first).second == Outcome::kCommitted);
      *reported = 1;
      uint64_t before = disk.ops();
      if (cut) disk.arm_power_loss(cut, Loss::kRandomPart, seed);
      try {
        if (pctest::save(s, 2, second).second == Outcome::kCommitted) *reported = 2;
      } catch (const CoreError&) {
      }
      return disk.ops() - before;
    };
    uint64_t reported = 0;
    const uint64_t calls = run(*std::make_shared<FaultDisk>(), 0, 0, &reported);
    for (uint64_t cut = 1; cut <= calls; ++cut) {
      for (uint64_t seed = 1; seed <= 12; ++seed) {
        auto disk = std::make_shared<FaultDisk>();
        run(*disk, cut, seed, &reported);
        bool fired;
        auto after = lose_power(*disk, Loss::kRandomPart, seed, &fired);
        {
          FaultFs fs(after);
          Store s(options(fs, kPath, shape, 1));
          if (auto l = s.latest()) reported = std::max(reported, l->second);
        }
        FaultFs fs(after);
        auto got = pctest::load_newest(fs, kPath);
        if (!got || got->step < reported || got->data != (got->step == 1 ? first : second))
          throw pctest::Failure("power lost at call " + std::to_string(cut) + " of " + std::to_string(calls) +
                                " of a save of " + std::to_string(size) + " bytes (seed " + std::to_string(seed) +
                                "): step " + std::to_string(got ? got->step : 0) + " recovered, step " +
                                std::to_string(reported) + " reported");
      }
    }
  }
}
