#include "lock_owner.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <fstream>
#include <sstream>

namespace pccheck {
namespace {

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

// Field 22 of /proc/<pid>/stat; the command name (field 2) may hold spaces
// and parentheses, so counting starts after its last ')'.
uint64_t start_ticks_of(uint64_t pid) {
  std::string line = read_first_line("/proc/" + std::to_string(pid) + "/stat");
  auto paren = line.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream rest(line.substr(paren + 1));
  std::string field;
  for (int i = 3; i <= 22; ++i)
    if (!(rest >> field)) return 0;
  return std::strtoull(field.c_str(), nullptr, 10);
}

uint64_t boot_time_s() {
  std::ifstream in("/proc/stat");
  std::string key;
  uint64_t value = 0;
  while (in >> key) {
    if (key == "btime" && (in >> value)) return value;
    in.ignore(1 << 16, '\n');
  }
  return 0;
}

std::string utc_text(uint64_t unix_s) {
  std::time_t t = static_cast<std::time_t>(unix_s);
  std::tm tm{};
  char buf[32];
  if (!gmtime_r(&t, &tm) || std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) return "?";
  return buf;
}

}  // namespace

LockOwner this_process() {
  LockOwner o;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0) o.host = host;
  if (o.host.empty()) o.host = "unknown";
  o.boot = read_first_line("/proc/sys/kernel/random/boot_id");
  if (o.boot.empty()) o.boot = "unknown";
  o.pid = static_cast<uint64_t>(getpid());
  o.start_ticks = start_ticks_of(o.pid);
  long hz = sysconf(_SC_CLK_TCK);
  uint64_t btime = boot_time_s();
  if (o.start_ticks != 0 && hz > 0 && btime != 0) o.started_s = btime + o.start_ticks / static_cast<uint64_t>(hz);
  return o;
}

std::string encode_owner(const LockOwner& o) {
  std::string line = "pccheck-lock host=" + o.host + " boot=" + o.boot + " pid=" + std::to_string(o.pid) +
                     " start=" + std::to_string(o.start_ticks) + " started=" + std::to_string(o.started_s) +
                     " renewed=" + std::to_string(o.renewed_ns);
  if (line.size() < kOwnerLineBytes - 1) line.append(kOwnerLineBytes - 1 - line.size(), ' ');
  return line + "\n";
}

bool decode_owner(const std::string& text, LockOwner* out) {
  std::istringstream in(text);
  std::string word;
  if (!(in >> word) || word != "pccheck-lock") return false;
  LockOwner o;
  bool has_host = false, has_pid = false;
  while (in >> word) {
    auto eq = word.find('=');
    if (eq == std::string::npos) continue;
    std::string key = word.substr(0, eq), value = word.substr(eq + 1);
    uint64_t n = std::strtoull(value.c_str(), nullptr, 10);
    if (key == "host") {
      o.host = value;
      has_host = !value.empty();
    } else if (key == "boot") {
      o.boot = value;
    } else if (key == "pid") {
      o.pid = n;
      has_pid = n > 0;
    } else if (key == "start") {
      o.start_ticks = n;
    } else if (key == "started") {
      o.started_s = n;
    } else if (key == "renewed") {
      o.renewed_ns = n;
    }
  }
  if (!has_host || !has_pid) return false;
  *out = o;
  return true;
}

std::string describe_owner(const LockOwner& o) {
  return "host " + o.host + ", pid " + std::to_string(o.pid) +
         ", started " + (o.started_s ? utc_text(o.started_s) : std::string("at an unknown time"));
}

bool same_machine(const LockOwner& o) {
  LockOwner me = this_process();
  return o.host == me.host && o.boot == me.boot;
}

bool process_alive(const LockOwner& o) {
  if (o.pid == 0 || o.pid > static_cast<uint64_t>(INT32_MAX)) return false;
  if (::kill(static_cast<pid_t>(o.pid), 0) != 0 && errno != EPERM) return false;  // ESRCH: gone
  uint64_t now = start_ticks_of(o.pid);
  return o.start_ticks == 0 || now == 0 || now == o.start_ticks;
}

}  // namespace pccheck
