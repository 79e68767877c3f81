"""The demo trainer on the power-loss file system: its checkpoints and its loss file there, kill -9 and a power
cut at random moments, a resume after each. Every resume starts at or after the last step the trainer reported
durable (its status file, on a normal disk), and the final loss file is byte-identical to an uninterrupted
run's: the loss file never lost rows of a committed step, nor kept rows past its checkpoint."""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crashfs.fixtures import seeds
from crashfs.mount import CrashFS, kill_tree
from pccheck.demo.lossfile import LossFile
from pccheck.fsutil import fsync_dir
from trainer_helpers import SMALL, train

STEPS = 80
RESUMED = re.compile(r"resumed from the checkpoint at step (\d+)")


def _resumed_step(log: str) -> int:
    found = RESUMED.search(log)
    return int(found.group(1)) if found else 0


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _run_frozen(fs: CrashFS, flags: list[str], log: Path, status: Path, step: int, changes: int) -> "subprocess.Popen[bytes]":
    """Starts the trainer; once it reported `step`, its `changes`-th file-system change from then on freezes
    (the cut lands inside its I/O). Returns when it froze, or ended."""
    status.unlink(missing_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pccheck.demo", *flags], stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        deadline = time.monotonic() + 120
        while _status(status).get("step", 0) < step and proc.poll() is None:
            assert time.monotonic() < deadline, f"the trainer did not reach step {step}: {log.read_text()[-2000:]}"
            time.sleep(0.01)
        fs.freeze_after(changes)
        while not fs.wait_frozen(0.2) and proc.poll() is None:
            assert time.monotonic() < deadline, f"the trainer neither froze nor ended: {log.read_text()[-2000:]}"
    except BaseException:
        kill_tree(proc)  # a failed test leaves no trainer behind
        raise
    return proc


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["pccheck", "torchsave"])
def test_trainer_killed_and_power_cut_resumes_bit_exact(crashfs: CrashFS, tmp_path: Path, reference_losses, kind: str):
    status = tmp_path / "status.json"
    logs = crashfs.path / "logs"  # apart from the checkpoints: nothing of theirs syncs this directory
    logs.mkdir()
    fsync_dir(crashfs.path)
    flags = [
        *SMALL, "--training-steps", str(STEPS), "--checkpoint-freq", "5", "--checkpointer", kind,
        "--checkpoint-dir", str(crashfs.path / "ckpt"), "--loss-file", str(logs / "loss.csv"),
        "--status-file", str(status),
    ]
    reported = 0  # the newest step reported durable before a cut
    for i, seed in enumerate(seeds(21, 22, 23, 24)):
        rnd = random.Random(seed)
        log = tmp_path / f"run{i}.log"
        run = [*flags, *(["--load-checkpoint"] if i else [])]
        proc = _run_frozen(crashfs, run, log, status, step=rnd.randint(1, STEPS - 10), changes=rnd.randint(1, 30))
        kill_tree(proc)
        crashfs.cut(seed)
        proc.wait()
        assert _resumed_step(log.read_text()) >= reported, f"resumed before step {reported}: {crashfs.reports[-1]}"
        reported = max(reported, _status(status).get("last_committed_step") or 0)
        print(f"run {i}: resumed from {_resumed_step(log.read_text())}, killed after step {_status(status).get('step')}, "
              f"step {reported} reported durable")
    final = train([*flags, "--load-checkpoint"], cwd=tmp_path)
    assert _resumed_step(final.stderr) >= reported, f"resumed before step {reported}: {crashfs.reports[-1]}"
    assert (logs / "loss.csv").read_bytes() == reference_losses([*SMALL, "--training-steps", str(STEPS)])


def _rows(n: int) -> str:
    return "".join(f"{s},{s / 7!r}\n" for s in range(1, n + 1))


def test_loss_file_is_created_durably(crashfs: CrashFS):
    """The rows synced with a checkpoint survive a cut: the file's name was synced when it was created."""
    path = crashfs.path / "loss.csv"
    losses = LossFile(path, None)
    for step in range(1, 11):
        losses.append(step, step / 7)
    losses.sync()
    losses.close()
    crashfs.cut(seeds(31)[0], data="durable")
    assert path.read_text() == "step,loss\n" + _rows(10)


def test_loss_file_rewrite_on_resume_is_all_or_nothing(crashfs: CrashFS):
    """Cut back to the checkpoint on resume: a cut right after leaves the old rows or the cut-back ones,
    never fewer than the checkpoint's."""
    path = crashfs.path / "loss.csv"
    for seed in seeds(*range(40, 48)):
        losses = LossFile(path, None)
        for step in range(1, 31):
            losses.append(step, step / 7)
        losses.sync()
        losses.close()
        LossFile(path, resume_step=20).close()  # a resume from step 20, killed before its next sync
        crashfs.cut(seed)
        assert path.read_text() in ("step,loss\n" + _rows(20), "step,loss\n" + _rows(30)), crashfs.reports[-1]
