"""Helpers for the Slurm tests: run pccheck-submit, reference runs, event and status files."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import pytest

from pccheck.launcher import slurm as slurm_util

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINTER = os.environ.get("PCCHECK_TEST_CHECKPOINTER", "pccheck")
#: default-size model, one thread: ~0.075 s/step here, so a 1-minute limit interrupts a few hundred steps
BASE = ["--threads", "1"]
#: tiny model: ~0.01 s/step; with a checkpoint every step one is in flight most of the time
TINY = ["--sequence-length", "32", "--batch-size", "4", "--n-layers", "2", "--threads", "1"]


def submit(args: Sequence[str], cwd: Path, env: Optional[dict] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `pccheck-submit args` (as python -m) and returns the finished process."""
    proc = subprocess.run(
        [sys.executable, "-m", "pccheck.launcher.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})},
    )
    sys.stderr.write(proc.stderr[-6000:])
    return proc


@contextmanager
def following(args: Sequence[str], cwd: Path, env: Optional[dict] = None) -> Iterator[subprocess.Popen]:
    """`pccheck-submit ARGS` (with --wait) in the background while the test interrupts the job; killed
    if the test fails before it ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pccheck.launcher.cli", *args],
        cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def succeeded(proc: subprocess.Popen, timeout: float) -> str:
    """Waits for a `following` process, prints the end of its output and asserts it exited 0."""
    out, _ = proc.communicate(timeout=timeout)
    print(out[-4000:])
    assert proc.returncode == 0, out[-3000:]
    return out


def steps_lasting(seconds: float, flags: Sequence[str], directory: Path, probe_steps: int = 200) -> int:
    """How many training steps with `flags` take at least `seconds` on this machine, measured by a short
    run alone (the job later shares the cores with its reference run, so it is slower, never faster)."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pccheck.demo", *flags, "--training-steps", str(probe_steps), "--checkpointer", "none",
         "--loss-file", str(directory / "probe.csv")],
        cwd=directory, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"probe run failed:\n{proc.stderr[-3000:]}"
    rates = re.findall(rf"step {probe_steps}/{probe_steps} .* ([0-9.]+) steps/s", proc.stderr)
    assert rates, f"no rate in the probe's output:\n{proc.stderr[-3000:]}"
    return math.ceil(float(rates[-1]) * seconds)


class Reference:
    """An uninterrupted run with the same flags, started in the background (2 cores: it overlaps the job)."""

    def __init__(self, flags: Sequence[str], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.loss = directory / "loss.csv"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pccheck.demo", *flags, "--checkpointer", "none", "--loss-file", str(self.loss)],
            cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )

    def bytes(self, timeout: float = 600) -> bytes:
        _, err = self.proc.communicate(timeout=timeout)
        assert self.proc.returncode == 0, f"reference run failed:\n{err[-3000:]}"
        return self.loss.read_bytes()


def events(run_dir: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_for(cond: Callable[[], object], timeout: float, what: str, poll: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def job_field(job_id: str, key: str) -> str:
    return slurm_util.job_info(job_id).get(key, "")


