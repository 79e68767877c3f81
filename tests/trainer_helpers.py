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


