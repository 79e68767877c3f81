"""Helpers for tests that run the real trainer as a subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

# Small model so the 151-step runs the issues ask for take seconds; the flags are the trainer's own.
SMALL = ["--sequence-length", "32", "--batch-size", "4", "--n-layers", "2", "--threads", "1"]


def train(args: Sequence[str], cwd: Path, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    """Runs `python -m pccheck.demo args` and returns the finished process (stderr captured)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pccheck.demo", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"trainer exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc




def run_script(cmd: Sequence[str], cwd: Path, out: Path, timeout: float = 900) -> bytes:
    """`cmd --out OUT` run to its end without a launcher (a checkpoint directory of its own): the bytes it writes."""
    cwd.mkdir(parents=True, exist_ok=True)
    subprocess.run([*cmd, "--out", str(out)], cwd=cwd, check=True, timeout=timeout, capture_output=True,
                   env={**os.environ, "PCCHECK_CHECKPOINT_DIR": str(cwd / "ck"), "OMP_NUM_THREADS": "1"})
    return out.read_bytes()


def steps_lasting(seconds: float, cmd: Sequence[str], cwd: Path) -> int:
    """How many `--steps` of `cmd` (a script of examples/ or tests/ taking --steps) train for `seconds` on this
    machine. Runs of 10 steps and of n steps (n growing until the difference takes 2 s) cancel out the
    start-up time. Tests that must be interrupted size their runs with it, whatever the machine's speed."""
    import math
    import time

    def took(steps: int) -> float:
        t0 = time.monotonic()
        run_script([*cmd, "--steps", str(steps)], cwd / f"probe-{steps}", cwd / f"probe-{steps}.json")
        return time.monotonic() - t0

    base, n = took(10), 200
    while (dt := took(n) - base) < 2.0 and n < 10**6:
        n *= 4
    return max(300, math.ceil((n - 10) / max(dt, 1e-3) * seconds))
