"""The command's process tree, seen from the job wrapper (Linux /proc).

torchrun starts each worker in a session of its own, and a worker whose parent died is re-parented: a
process group or session does not hold a job's processes. The wrapper makes itself a child subreaper
(orphans of the tree become its children) and walks /proc for its descendants, so it can signal the
processes that asked for the stop signal and, at the hard limit, kill every process of the tree, as
Slurm kills a job's cgroup.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import time
from dataclasses import dataclass
from typing import Iterable

log = logging.getLogger("pccheck.launcher")
_PR_SET_CHILD_SUBREAPER = 36


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    state: str  # one letter, as in /proc/PID/stat ("Z": a zombie)


def become_subreaper() -> bool:
    """Orphaned descendants get this process as their parent (Linux >= 3.4); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _procs() -> list[Proc]:
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                rest = f.read().rsplit(b")", 1)[1].split()
            out.append(Proc(int(name), int(rest[1]), rest[0].decode()))
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return out


def descendants(root: int) -> list[Proc]:
    """Every living process below `root` (not `root` itself), parents before children."""
    children: dict[int, list[Proc]] = {}
    for p in _procs():
        children.setdefault(p.ppid, []).append(p)
    out, todo = [], [root]
    while todo:
        for p in children.get(todo.pop(0), []):
            if p.state != "Z":
                out.append(p)
            todo.append(p.pid)
    return out


def catches(pid: int, sig: signal.Signals) -> bool:
    """Whether process `pid` has a handler installed for `sig` (the SigCgt mask of /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) >> (int(sig) - 1) & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def send(pids: Iterable[int], sig: signal.Signals) -> list[int]:
    """Sends `sig` to each pid; the pids that received it."""
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:
            pass
    return sent


def reap_orphans(keep: int) -> None:
    """Reaps exited children other than `keep` (re-parented orphans; `keep` is subprocess.Popen's own)."""
    me = os.getpid()
    for p in _procs():
        if p.ppid == me and p.pid != keep and p.state == "Z":
            try:
                os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pass


def kill_tree(root: int, keep: int, timeout_s: float = 10.0) -> int:
    """SIGKILLs every descendant of `root` until none is left; the number of processes killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        alive = [p.pid for p in descendants(root)]
        if not alive:
            break
        killed.update(send(alive, signal.SIGKILL))
        time.sleep(0.05)
        reap_orphans(keep)
    return len(killed)


def stop_signal_targets(root: int, sig: signal.Signals) -> list[int]:
    """The processes below `root` that handle `sig` (a Python trainer, torchrun's workers; not torchrun's
    agent, a shell or DataLoader workers that do not): the ones a stop request is for."""
    return [p.pid for p in descendants(root) if catches(p.pid, sig)]
