"""Two ranks (gloo, this machine): kill/resume is bit-exact, a rank killed mid-commit holds the global step
back (and recovery says so), torchrun launches the same trainer."""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multirank_helpers import FLAGS, sigkill, start, stderr, train_ranks, wait_all, wait_for_step
from pccheck.sharded import describe_run_dir

WORLD = 2


@pytest.fixture(scope="module")
def reference_2rank(tmp_path_factory) -> bytes:
    """Loss file of an uninterrupted two-rank run (no checkpoints)."""
    d = tmp_path_factory.mktemp("ref2")
    train_ranks([*FLAGS, "--checkpointer", "none", "--loss-file", str(d / "loss.csv")], WORLD, d)
    return (d / "loss.csv").read_bytes()


def _flags(d: Path) -> list[str]:
    return [*FLAGS, "--checkpoint-dir", str(d / "ckpt"), "--loss-file", str(d / "loss.csv")]


def test_sigkill_one_rank_then_all_after_step_70_resume_is_bit_exact(tmp_path, reference_2rank):
    flags = _flags(tmp_path)
    procs = start([*flags, "--status-file", str(tmp_path / "status.json")], WORLD, tmp_path)
    wait_for_step(tmp_path / "status.json", 70, procs)
    sigkill(procs[1])  # one rank ...
    time.sleep(0.2)
    sigkill(procs[0])  # ... then all
    rows = (tmp_path / "loss.csv").read_text().count("\n") - 1
    assert rows >= 70
    desc = describe_run_dir(tmp_path / "ckpt")
    assert desc["global_step"] in (50, 100)
    train_ranks([*flags, "--load-checkpoint"], WORLD, tmp_path)
    assert f"resumed from the checkpoint at step {desc['global_step']}" in stderr(tmp_path, 0)
    assert (tmp_path / "loss.csv").read_bytes() == reference_2rank
    # the loss file is rank 0's alone; both ranks committed every checkpoint
    assert describe_run_dir(tmp_path / "ckpt")["global_step"] == 150


def test_rank_killed_in_the_middle_of_a_commit_recovers_the_previous_global_step(tmp_path, reference_2rank):
    flags = [*_flags(tmp_path), "--chunk-size", "64K"]  # several chunks per part: the kill lands between them
    codes = train_ranks(flags, WORLD, tmp_path, check=False, extra_env={"PCCHECK_TEST_KILL_IN_COMMIT": "1:100"})
    assert codes[1] == -9, stderr(tmp_path, 1)
    assert codes[0] != 0  # its peer vanished
    desc = describe_run_dir(tmp_path / "ckpt")
    (s,) = desc["sets"]
    assert s["global_step"] == 50 and s["newest_step"] == 100
    assert [h["rank"] for h in s["held_back"]] == [1]
    assert "100" in s["ranks"][0]["steps"] and "100" not in s["ranks"][1]["steps"]

    train_ranks([*flags, "--load-checkpoint"], WORLD, tmp_path)
    err = stderr(tmp_path, 0)
    assert "resuming from global step 50, not from step 100: held back by rank 1" in err, err
    assert "resumed from the checkpoint at step 50" in err
    assert (tmp_path / "loss.csv").read_bytes() == reference_2rank
    after = describe_run_dir(tmp_path / "ckpt")["sets"][0]
    assert after["global_step"] == 150 and not after["held_back"]


@pytest.mark.slow
def test_torchrun_launch_matches_hand_launch(tmp_path, reference_2rank):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "pccheck.demo", *_flags(tmp_path), "--fail-at-step", "70"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    proc = subprocess.run(
        [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "pccheck.demo", *_flags(tmp_path), "--load-checkpoint"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "loss.csv").read_bytes() == reference_2rank


@pytest.mark.slow
def test_sigterm_stops_all_ranks_at_the_same_step_then_resume_is_bit_exact(tmp_path, reference_2rank):
    """One decision for all ranks: only rank 1 gets SIGTERM; both checkpoint the same step and exit 75."""
    import signal

    # no periodic checkpoint within the run, so the one found is the stop's (the status file lags by up to
    # 0.5 s, so the stop step is anywhere from 30 on, a multiple of 50 included); the loss does not change
    flags = [*_flags(tmp_path), "--checkpoint-freq", "1000"]
    procs = start([*flags, "--status-file", str(tmp_path / "status.json")], WORLD, tmp_path)
    wait_for_step(tmp_path / "status.json", 30, procs)
    procs[1].send_signal(signal.SIGTERM)
    assert wait_all(procs) == [75, 75]
    desc = describe_run_dir(tmp_path / "ckpt")
    stopped = desc["global_step"]
    assert stopped is not None and 30 <= stopped < 151 and not desc["sets"][0]["held_back"]
    assert f"stopped after step {stopped} (rank 1: received SIGTERM)" in stderr(tmp_path, 0).replace("\n", " ")
    train_ranks([*flags, "--load-checkpoint"], WORLD, tmp_path)
    assert f"resumed from the checkpoint at step {stopped}" in stderr(tmp_path, 0)
    assert (tmp_path / "loss.csv").read_bytes() == reference_2rank
