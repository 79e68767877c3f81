"""A checkpoint written by 2 ranks loads into 1, 2 (and 3) ranks with every tensor equal to what was saved,
and the trainer continues from a 2-rank checkpoint with 1 rank."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from multirank_helpers import FLAGS, start, stderr, train_ranks, wait_all
from multirank_worker import check
from pccheck.distributed import Comm
from pccheck.sharded import describe_run_dir
from trainer_helpers import train

WORKER = str(Path(__file__).with_name("multirank_worker.py"))


@pytest.fixture(scope="module")
def saved_by_2(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("saved2")
    codes = wait_all(start([], 2, d, argv=[sys.executable, WORKER, "save", str(d / "ckpt")]))
    assert codes == [0, 0], stderr(d, 0) + stderr(d, 1)
    desc = describe_run_dir(d / "ckpt")
    assert desc["global_step"] == 8 and [s["world"] for s in desc["sets"]] == [2]
    return d / "ckpt"


def test_2_rank_checkpoint_loads_into_1_rank(saved_by_2):
    assert check(str(saved_by_2), Comm.single()) == []


@pytest.mark.parametrize("world", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_2_rank_checkpoint_loads_into_m_ranks(saved_by_2, tmp_path, world):
    codes = wait_all(start([], world, tmp_path, argv=[sys.executable, WORKER, "load", str(saved_by_2)]))
    assert codes == [0] * world, [stderr(tmp_path, r) for r in range(world)]


def test_each_rank_writes_about_half(saved_by_2):
    (s,) = describe_run_dir(saved_by_2)["sets"]
    lens = [r["records"][0]["payload_len"] for r in s["ranks"]]
    assert abs(lens[0] - lens[1]) < 8192, lens


@pytest.mark.slow
def test_trainer_continues_from_2_rank_checkpoint_with_1_and_2_ranks(tmp_path):
    d2 = tmp_path / "two"
    d2.mkdir()
    flags = [*FLAGS, "--checkpoint-dir", str(tmp_path / "ckpt")]
    codes = train_ranks([*flags, "--loss-file", str(d2 / "loss.csv"), "--fail-at-step", "60"], 2, d2, check=False)
    assert codes == [-9, -9]
    assert describe_run_dir(tmp_path / "ckpt")["global_step"] == 50
    one = train([*flags, "--loss-file", str(tmp_path / "one.csv"), "--load-checkpoint"], cwd=tmp_path)
    assert "resumed from the checkpoint at step 50" in one.stderr
    rows = (tmp_path / "one.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(51, 152))
    # the single process wrote pccheck.ckpt beside the 2-rank files; 2 ranks now resume from its step 150
    assert describe_run_dir(tmp_path / "ckpt")["resume_from"] == {"world": 1, "step": 150}
    train_ranks([*flags, "--loss-file", str(d2 / "loss.csv"), "--load-checkpoint", "--training-steps", "160"], 2, d2)
    assert "resumed from the checkpoint at step 150" in stderr(d2, 0)
    steps = [int(r.split(",")[0]) for r in (d2 / "loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 61)) + list(range(151, 161))  # rows 61..150 were the 1-rank run's, in one.csv
