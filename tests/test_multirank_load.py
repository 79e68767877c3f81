"""A checkpoint written by 2 FSDP2 ranks loads into 1 process and into 4 FSDP2 ranks with every tensor equal
(N -> M through DCP's resharding, read through pccheck.dcp.Reader), and the trainer continues a 2-rank run
with 1 rank and back."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multirank_helpers import FLAGS, newest_step, start, stderr, train_ranks, wait_all
from trainer_helpers import train

CHECK = str(Path(__file__).with_name("dcp_demo_check.py"))
ROOT = str(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def saved_by_2(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("saved2")
    train_ranks([*FLAGS, "--fsdp", "--training-steps", "60", "--checkpoint-freq", "20", "--checkpoint-dir", str(d / "ckpt")], 2, d)
    assert newest_step(d / "ckpt") == 60
    return d / "ckpt"


def _loaded(cwd: Path, world: int, saved: Path, fsdp: bool) -> dict:
    argv = [sys.executable, CHECK, str(cwd / "out.pt"), str(saved), *FLAGS, *(["--fsdp"] if fsdp else [])]
    if world == 1:
        subprocess.run(argv, cwd=ROOT, check=True, capture_output=True, timeout=300)
    else:
        codes = wait_all(start([], world, cwd, argv=argv, extra_env={"PYTHONPATH": ROOT}), timeout=300)
        assert codes == [0] * world, stderr(cwd, 0)[-3000:]
    return torch.load(cwd / "out.pt", weights_only=True)


def test_2_rank_fsdp_checkpoint_loads_into_1_process(saved_by_2, tmp_path):
    one = _loaded(tmp_path, 1, saved_by_2, fsdp=False)
    assert one["step"] == 60
    names = one["tensors"]
    assert any(k.startswith("model/") for k in names) and any("exp_avg" in k for k in names)


@pytest.mark.slow
def test_2_rank_fsdp_checkpoint_loads_into_4_ranks_with_equal_tensors(saved_by_2, tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "four").mkdir()
    one = _loaded(tmp_path / "one", 1, saved_by_2, fsdp=False)
    four = _loaded(tmp_path / "four", 4, saved_by_2, fsdp=True)
    assert one["tensors"].keys() == four["tensors"].keys()
    for k, v in one["tensors"].items():
        assert torch.equal(v, four["tensors"][k]), k


@pytest.mark.slow
def test_trainer_continues_from_2_rank_checkpoint_with_1_and_2_ranks(tmp_path):
    d2 = tmp_path / "two"
    d2.mkdir()
    flags = [*FLAGS, "--checkpoint-dir", str(tmp_path / "ckpt")]
    codes = train_ranks([*flags, "--loss-file", str(d2 / "loss.csv"), "--fail-at-step", "60"], 2, d2, check=False)
    assert codes == [-9, -9]
    assert newest_step(tmp_path / "ckpt") == 50
    one = train([*flags, "--loss-file", str(tmp_path / "one.csv"), "--load-checkpoint"], cwd=tmp_path)
    assert "resumed from the checkpoint at step 50" in one.stderr
    rows = (tmp_path / "one.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(51, 152))
    # the single process wrote pccheck.ckpt beside the 2-rank set; it is the newest, so 2 ranks resume from it
    assert newest_step(tmp_path / "ckpt") == 150
    train_ranks([*flags, "--loss-file", str(d2 / "loss.csv"), "--load-checkpoint", "--training-steps", "160"], 2, d2)
    assert "resumed from the checkpoint at step 150" in stderr(d2, 0)
    steps = [int(r.split(",")[0]) for r in (d2 / "loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 61)) + list(range(151, 161))  # rows 61..150 were the 1-rank run's, in one.csv
