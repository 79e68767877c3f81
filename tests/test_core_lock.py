"""_core.FileLock: the core's lock for any path (a run directory, a checkpoint file), as a context manager.
A refusal names the holder's host, pid and start time; where flock is missing it is a lease file."""
from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pccheck import _core as core


def _try_lock_elsewhere(path, mode: str) -> subprocess.CompletedProcess:
    code = ("import sys; from pccheck import _core as c\n"
            "try:\n"
            f"    c.FileLock({str(path)!r}, 'the run directory', mode={mode!r})\n"
            "except c.LockedError as e:\n"
            "    print(e); sys.exit(7)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", ["auto", "lease"])
def test_lock_is_exclusive_and_names_its_holder(tmp_path, mode):
    path = tmp_path / "run.lock"
    with core.FileLock(str(path), "the run directory", mode=mode) as lock:
        assert lock.held and lock.mode == ("flock" if mode == "auto" else "lease")
        assert lock.owner["pid"] == os.getpid() and lock.owner["host"] == socket.gethostname()
        r = _try_lock_elsewhere(path, mode)
        assert r.returncode == 7, r.stderr
        assert r.stdout.startswith(f"the run directory is in use by another process (host {socket.gethostname()}, "
                                   f"pid {os.getpid()}, started 20")
    assert not lock.held
    assert not (tmp_path / "run.lock.lease").exists()
    r = _try_lock_elsewhere(path, mode)
    assert r.returncode == 0, r.stdout + r.stderr  # free again


def test_lease_of_a_process_that_is_gone_is_taken_over(tmp_path):
    path = tmp_path / "run.lock"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(child.stdout)
    with core.FileLock(str(path), mode="lease") as lock:
        me = lock.owner
    line = (f"pccheck-lock host={me['host']} boot={me['boot']} pid={dead} start=1 started=0 renewed=0").ljust(255)
    (tmp_path / "run.lock.lease").write_text(line + "\n")  # as a killed holder leaves it
    with core.FileLock(str(path), mode="lease") as lock:
        assert lock.held
        assert f"pid={os.getpid()} " in (tmp_path / "run.lock.lease").read_text()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        core.FileLock(str(tmp_path / "x.lock"), mode="nfs")
    with pytest.raises(ValueError, match="lease_timeout"):
        core.FileLock(str(tmp_path / "x.lock"), mode="lease", lease_timeout=0)


def test_store_reports_its_lock_mode(tmp_path):
    with core.Store(str(tmp_path / "ck"), slot_size=64 << 10, max_async=1, keep=1, chunk_size=16 << 10, threads=1,
                    memory_budget=16 << 10) as s:
        assert s.lock_mode == "flock"
