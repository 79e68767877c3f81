"""Two ranks (gloo, this machine) checkpoint through DCP with pccheck storage: kill -9 and resume is bit-exact
under DDP and under FSDP2 (--fsdp, launched by torchrun, the whole tree killed), one stop decision for all
ranks."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from multirank_helpers import (
    FLAGS, kill_tree, newest_step, sigkill, start, stderr, train_ranks, wait_all, wait_for_step,
)

WORLD = 2
RUN = [*FLAGS, "--training-steps", "101"]  # checkpoints at 50 and 100: a kill after step 70 resumes from 50


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Loss file of an uninterrupted two-rank run (no checkpoints), per parallelism."""
    cache: dict[bool, bytes] = {}

    def get(fsdp: bool) -> bytes:
        if fsdp not in cache:
            d = tmp_path_factory.mktemp("ref2")
            train_ranks([*RUN, *(["--fsdp"] if fsdp else []), "--checkpointer", "none",
                         "--loss-file", str(d / "loss.csv")], WORLD, d)
            cache[fsdp] = (d / "loss.csv").read_bytes()
        return cache[fsdp]

    return get


def _flags(d: Path) -> list[str]:
    return [*RUN, "--checkpoint-dir", str(d / "ckpt"), "--loss-file", str(d / "loss.csv")]


def test_ddp_sigkill_one_rank_then_all_after_step_70_resume_is_bit_exact(tmp_path, reference):
    flags = _flags(tmp_path)
    procs = start([*flags, "--status-file", str(tmp_path / "status.json")], WORLD, tmp_path)
    wait_for_step(tmp_path / "status.json", 70, procs)
    sigkill(procs[1])  # one rank ...
    time.sleep(0.2)
    sigkill(procs[0])  # ... then all
    saved = newest_step(tmp_path / "ckpt")
    assert saved in (50, 100)
    train_ranks([*flags, "--load-checkpoint"], WORLD, tmp_path)
    assert f"resumed from the checkpoint at step {saved}" in stderr(tmp_path, 0)
    assert (tmp_path / "loss.csv").read_bytes() == reference(False)
    assert newest_step(tmp_path / "ckpt") == 100


def _torchrun(args: list[str], cwd: Path) -> subprocess.Popen:
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.Popen([str(torchrun), "--standalone", "--nproc-per-node", str(WORLD), "-m", "pccheck.demo", *args],
                            cwd=cwd, stdout=subprocess.DEVNULL, stderr=open(cwd / "torchrun.err", "a"))


def test_fsdp_torchrun_killed_whole_tree_after_step_70_resume_is_bit_exact(tmp_path, reference):
    flags = [*_flags(tmp_path), "--fsdp"]
    proc = _torchrun([*flags, "--status-file", str(tmp_path / "status.json")], tmp_path)
    wait_for_step(tmp_path / "status.json", 70, [proc], timeout=240)
    kill_tree(proc.pid)
    proc.wait()
    saved = newest_step(tmp_path / "ckpt")
    assert saved in (50, 100)
    resumed = _torchrun([*flags, "--load-checkpoint"], tmp_path)
    assert resumed.wait(300) == 0, (tmp_path / "torchrun.err").read_text()[-3000:]
    assert f"resumed from the checkpoint at step {saved}" in (tmp_path / "torchrun.err").read_text()
    assert (tmp_path / "loss.csv").read_bytes() == reference(True)


@pytest.mark.slow
def test_sigterm_stops_all_ranks_at_the_same_step_then_resume_is_bit_exact(tmp_path, reference):
    """One decision for all ranks: only rank 1 gets SIGTERM; both checkpoint the same step and exit 75."""
    # no periodic checkpoint within the run, so the one found is the stop's
    flags = [*_flags(tmp_path), "--checkpoint-freq", "1000", "--fsdp"]
    procs = start([*flags, "--status-file", str(tmp_path / "status.json")], WORLD, tmp_path)
    wait_for_step(tmp_path / "status.json", 30, procs)
    procs[1].send_signal(signal.SIGTERM)
    assert wait_all(procs) == [75, 75]
    stopped = newest_step(tmp_path / "ckpt")
    assert stopped is not None and 30 <= stopped < 101
    assert f"stopped after step {stopped} (rank 1: received SIGTERM)" in stderr(tmp_path, 0).replace("\n", " ")
    train_ranks([*flags, "--load-checkpoint"], WORLD, tmp_path)
    assert f"resumed from the checkpoint at step {stopped}" in stderr(tmp_path, 0)
    assert (tmp_path / "loss.csv").read_bytes() == reference(True)
