"""Launch N trainer ranks on this machine the way torchrun does (RANK, WORLD_SIZE, MASTER_ADDR/PORT)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from trainer_helpers import SMALL

# 151 steps, a checkpoint every 50 (the schedule), two ranks of the small model
FLAGS = [*SMALL, "--training-steps", "151", "--checkpoint-freq", "50"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, extra: Optional[dict] = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PCCHECK_TEST_"))}
    env.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PCCHECK_DIST_TIMEOUT="120",
    )
    env.update(extra or {})
    return env


def start(args: Sequence[str], world: int, cwd: Path, extra_env: Optional[dict] = None,
          argv: Optional[Sequence[str]] = None) -> list[subprocess.Popen]:
    """Starts `world` ranks of `python -m pccheck.demo args` (or of `argv`); stderr to cwd/rank<i>.err."""
    port = free_port()
    procs = []
    for rank in range(world):
        err = open(cwd / f"rank{rank}.err", "w")
        cmd = list(argv) if argv is not None else [sys.executable, "-m", "pccheck.demo", *args]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=rank_env(rank, world, port, extra_env),
                                      stdout=subprocess.DEVNULL, stderr=err))
        err.close()
    return procs


def wait_all(procs: list[subprocess.Popen], timeout: float = 240) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    return codes


def stderr(cwd: Path, rank: int) -> str:
    return (cwd / f"rank{rank}.err").read_text()


def train_ranks(args: Sequence[str], world: int, cwd: Path, check: bool = True, extra_env: Optional[dict] = None,
                timeout: float = 240) -> list[int]:
    codes = wait_all(start(args, world, cwd, extra_env), timeout)
    if check and any(codes):
        logs = "\n".join(f"--- rank {r} exit {c}:\n{stderr(cwd, r)[-3000:]}" for r, c in enumerate(codes))
        raise AssertionError(f"ranks exited {codes}:\n{logs}")
    return codes


def wait_for_step(status: Path, step: int, procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        try:
            if json.loads(status.read_text())["step"] >= step:
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    raise AssertionError(f"step {step} not reached (exit codes {[p.poll() for p in procs]})")


def sigkill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def kill_tree(pid: int) -> None:
    """SIGKILLs `pid` and every descendant. torchrun starts each worker in a session of its own, so a
    process-group kill misses them: the tree is walked through /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    todo, tree = [pid], []
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def newest_step(directory: Path) -> Optional[int]:
    """The step a load takes from `directory` (pccheck.dcp.sets, the loaders' rule)."""
    from pccheck.dcp.sets import newest, scan_directory

    found = newest(scan_directory(directory))
    return None if found is None else found[1].step
