"""Bit-exact resume: killed and resumed runs leave a loss file byte-identical to an uninterrupted run's."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from trainer_helpers import SMALL, train

CHECKPOINTERS = ["torchsave", "pccheck"]


def _flags(tmp_path: Path, checkpointer: str, dtype: str) -> list[str]:
    return [
        *SMALL, "--model-dtype", dtype, "--training-steps", "151", "--checkpoint-freq", "50",
        "--checkpointer", checkpointer, "--checkpoint-dir", str(tmp_path / "ckpt"),
        "--loss-file", str(tmp_path / "loss.csv"),
    ]


@pytest.mark.parametrize("checkpointer", CHECKPOINTERS)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_fail_at_step_then_resume_is_bit_exact(tmp_path, reference_losses, checkpointer, dtype):
    flags = _flags(tmp_path, checkpointer, dtype)
    killed = train([*flags, "--fail-at-step", "70"], cwd=tmp_path, check=False)
    assert killed.returncode == -signal.SIGKILL
    assert (tmp_path / "loss.csv").read_text().count("\n") == 71  # header + 70 rows
    resumed = train([*flags, "--load-checkpoint"], cwd=tmp_path)
    assert "resumed from the checkpoint at step 50" in resumed.stderr
    assert (tmp_path / "loss.csv").read_bytes() == reference_losses([*SMALL, "--model-dtype", dtype])


@pytest.mark.parametrize("checkpointer", CHECKPOINTERS)
def test_sigkill_from_outside_then_resume_is_bit_exact(tmp_path, reference_losses, checkpointer):
    flags = _flags(tmp_path, checkpointer, "fp32")
    status = tmp_path / "status.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pccheck.demo", *flags, "--status-file", str(status)],
        cwd=tmp_path, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if json.loads(status.read_text())["step"] >= 70:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    train([*flags, "--load-checkpoint"], cwd=tmp_path)
    assert (tmp_path / "loss.csv").read_bytes() == reference_losses([*SMALL, "--model-dtype", "fp32"])


def test_resume_with_same_seed_twice_gives_same_trace(tmp_path, reference_losses):
    """Determinism itself: two uninterrupted runs with the same flags agree float for float."""
    d = tmp_path / "again"
    d.mkdir()
    train([*SMALL, "--checkpointer", "none", "--loss-file", str(d / "loss.csv")], cwd=d)
    assert (d / "loss.csv").read_bytes() == reference_losses(SMALL)
