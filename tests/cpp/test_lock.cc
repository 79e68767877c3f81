// Locks that name their holder and work where flock does not (a lease).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>

#include "check.h"
#include "errors.h"
#include "fault_fs.h"
#include "file_lock.h"
#include "util.h"

using namespace pccheck;
using pctest::TempDir;

namespace {

const LockOptions kLease{LockMode::kLease, 60};

std::string refusal(const std::string& lock_path, const LockOptions& opt) {
  try {
    FileLock l(posix_fs(), lock_path, "X", opt);
  } catch (const LockedError& e) {
    return e.what();
  }
  return "";
}

void write_text(const std::string& path, const std::string& text) {
  Fd fd = open_file(posix_fs(), path, O_RDWR | O_CREAT | O_TRUNC);
  CHECK_EQ(pwrite_all(fd, text.data(), text.size(), 0), 0);
}

LockOwner read_owner(const std::string& path) {
  Fd fd = open_file(posix_fs(), path, O_RDONLY);
  std::string text(file_size(fd, path), '\0');
  pread_all(fd, &text[0], text.size(), 0, path);
  LockOwner o;
  CHECK(decode_owner(text, &o));
  return o;
}

uint64_t dead_pid() {
  pid_t child = fork();
  if (child == 0) _exit(0);
  CHECK(child > 0 && waitpid(child, nullptr, 0) == child);
  return static_cast<uint64_t>(child);
}

}  // namespace

TEST(lock_refusal_names_host_pid_and_start) {
  TempDir d;
  LockOwner me = this_process();
  CHECK(me.start_ticks > 0 && me.started_s > 0);
  for (LockMode mode : {LockMode::kFlock, LockMode::kLease}) {
    LockOptions opt{mode, 60};
    FileLock held(posix_fs(), d.file("x.lock"), "X", opt);
    CHECK(held.mode() == mode);
    std::string msg = refusal(d.file("x.lock"), opt);
    CHECK(msg.find("X is in use by another process (host " + me.host + ", pid " + std::to_string(me.pid) +
                   ", started 20") == 0);
  }
}

TEST(lock_falls_back_to_a_lease_where_flock_is_missing) {
  auto disk = std::make_shared<pctest::FaultDisk>();
  disk->set_flock_errno(ENOSYS);  // Lustre mounted without -o flock
  pctest::FaultFs a(disk), b(disk);
  StoreOptions oa = pctest::small_options("/l/ck"), ob = oa;
  oa.fs = &a;
  ob.fs = &b;
  {
    Store s(oa);
    CHECK(s.lock_mode() == LockMode::kLease);
    CHECK(disk->exists("/l/ck.lock.lease"));
    std::string msg;
    try {
      Store t(ob);
    } catch (const LockedError& e) {
      msg = e.what();
    }
    CHECK(msg.find("/l/ck is in use by another process (host ") == 0);
    ob.lock.mode = LockMode::kFlock;  // no fallback asked for: the missing flock is the error
    CHECK_THROWS(CoreError, Store t(ob));
    ob.lock.mode = LockMode::kAuto;
  }
  CHECK(!disk->exists("/l/ck.lock.lease"));  // released on close
  Store t(ob);
  CHECK(t.lock_mode() == LockMode::kLease);
}

TEST(lease_of_a_gone_or_other_process_here_is_taken_over) {
  TempDir d;
  const std::string lock = d.file("x.lock"), lease = lock + ".lease";
  LockOwner me = this_process();
  LockOwner gone = me, reused = me, rebooted = me;
  gone.pid = dead_pid();
  reused.start_ticks += 1;  // our pid, another process's start time
  rebooted.boot = "another-boot";
  for (const LockOwner& stale : {gone, reused, rebooted}) {
    write_text(lease, encode_owner(stale));
    {
      FileLock l(posix_fs(), lock, "X", kLease);
      LockOwner now = read_owner(lease);
      CHECK_EQ(now.pid, me.pid);
      CHECK_EQ(now.start_ticks, me.start_ticks);
    }
    CHECK(::access(lease.c_str(), F_OK) != 0);  // released
  }
  write_text(lease, encode_owner(me));  // this very process: alive
  CHECK(refusal(lock, kLease).find("(host " + me.host + ", pid " + std::to_string(me.pid)) != std::string::npos);
  write_text(lease, "garbage");
  CHECK(refusal(lock, kLease).find("names no owner") != std::string::npos);
}

TEST(lease_of_another_host_is_stale_only_when_not_renewed) {
  TempDir d;
  const std::string lock = d.file("x.lock"), lease = lock + ".lease";
  LockOwner other = this_process();
  other.host = "elsewhere";
  other.renewed_ns = now_ns();
  write_text(lease, encode_owner(other));
  CHECK(refusal(lock, kLease).find("(host elsewhere, pid ") != std::string::npos);
  other.renewed_ns = now_ns() - 61'000'000'000ull;  // not renewed for longer than the 60 s timeout
  write_text(lease, encode_owner(other));
  FileLock l(posix_fs(), lock, "X", kLease);
  CHECK_EQ(read_owner(lease).host, this_process().host);
}

TEST(lease_is_renewed_and_only_the_holders_own_is_removed) {
  TempDir d;
  const std::string lock = d.file("x.lock"), lease = lock + ".lease";
  {
    FileLock l(posix_fs(), lock, "X", LockOptions{LockMode::kLease, 0.2});
    uint64_t first = read_owner(lease).renewed_ns;
    auto t0 = std::chrono::steady_clock::now();
    while (read_owner(lease).renewed_ns == first && std::chrono::steady_clock::now() - t0 < std::chrono::seconds(10))
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(read_owner(lease).renewed_ns > first);  // renewed every timeout / 4
    LockOwner other = this_process();
    other.host = "elsewhere";  // taken over meanwhile (this process stalled past the timeout)
    write_text(lease, encode_owner(other));
  }
  CHECK_EQ(read_owner(lease).host, std::string("elsewhere"));  // not removed by the former holder
}
