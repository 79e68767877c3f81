// Runs every registered test: pccheck_tests [crash_iterations] [name-filter]
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "check.h"

int main(int argc, char** argv) {
  if (argc > 1) pctest::crash_iterations() = std::strtoull(argv[1], nullptr, 10);
  std::string filter = argc > 2 ? argv[2] : "";
  int failed = 0, ran = 0;
  for (const auto& c : pctest::registry()) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    ++ran;
    std::printf("[ RUN  ] %s\n", c.name.c_str());
    std::fflush(stdout);
    try {
      c.fn();
      std::printf("[  OK  ] %s\n", c.name.c_str());
    } catch (const std::exception& e) {
      ++failed;
      std::printf("[ FAIL ] %s: %s\n", c.name.c_str(), e.what());
    }
    std::fflush(stdout);
  }
  std::printf("%d tests, %d failed\n", ran, failed);
  return failed == 0 && ran > 0 ? 0 : 1;
}
