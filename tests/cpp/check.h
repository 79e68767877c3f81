// A tiny test harness: TEST(name) registers a function, CHECK aborts the
// current test with file:line on failure.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace pctest {

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Case {
  std::string name;
  std::function<void()> fn;
};

inline std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}

struct Register {
  Register(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

// Crash-test iterations, from argv.
inline uint64_t& crash_iterations() {
  static uint64_t n = 20;
  return n;
}

// Simulated power losses of the power-loss tests: $POWERLOSS_ITERS, default
// 10000 (run.sh documents it; check-core scales it down under sanitizers
// and qemu).
inline uint64_t powerloss_iterations() {
  const char* v = std::getenv("POWERLOSS_ITERS");
  return v && *v ? std::strtoull(v, nullptr, 10) : 10000;
}

}  // namespace pctest

#define PCT_CAT2(a, b) a##b
#define PCT_CAT(a, b) PCT_CAT2(a, b)
#define TEST(name)                                                   \
  static void name();                                                \
  static pctest::Register PCT_CAT(reg_, name)(#name, name);          \
  static void name()

#define CHECK(cond)                                                                              \
  do {                                                                                           \
    if (!(cond)) throw pctest::Failure(std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                       ": CHECK(" #cond ") failed");                            \
  } while (0)

#define CHECK_EQ(a, b)                                                                            \
  do {                                                                                            \
    auto va_ = (a);                                                                               \
    auto vb_ = (b);                                                                               \
    if (!(va_ == vb_)) {                                                                          \
      std::ostringstream os_;                                                                     \
      os_ << __FILE__ << ":" << __LINE__ << ": CHECK_EQ(" #a ", " #b ") failed: " << va_ << " vs " \
          << vb_;                                                                                 \
      throw pctest::Failure(os_.str());                                                           \
    }                                                                                             \
  } while (0)

// Expects `stmt` to throw exactly type E (or a subclass).
#define CHECK_THROWS(E, stmt)                                                                      \
  do {                                                                                             \
    bool thrown_ = false;                                                                          \
    try {                                                                                          \
      stmt;                                                                                        \
    } catch (const E&) {                                                                           \
      thrown_ = true;                                                                              \
    }                                                                                              \
    if (!thrown_) throw pctest::Failure(std::string(__FILE__) + ":" + std::to_string(__LINE__) + \
                                        ": " #stmt " did not throw " #E);                         \
  } while (0)
