"""User errors: one clear line on stderr, a non-zero exit, no traceback."""
from __future__ import annotations

import pytest

from trainer_helpers import SMALL, train


def _one_line_error(proc, expected: str) -> None:
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert expected in lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--training-steps", "0"], "must be at least 1"),
        (["--model-dtype", "fp8"], "invalid choice"),
        (["--no-such-flag"], "unrecognized arguments"),
        (["--chunk-size", "lots"], "is not a size"),
        (["--durability", "sometimes"], "invalid choice"),
        (["--d-model", "30", "--n-heads", "4"], "not divisible"),
        (["--dataset", "/nonexistent/file.txt"], "is not a readable file"),
        (["--loss-file", "/nonexistent/dir/loss.csv"], "does not exist"),
    ],
)
def test_bad_flags(tmp_path, args, expected):
    _one_line_error(train([*SMALL, "--training-steps", "2", *args], cwd=tmp_path, check=False), expected)


def test_load_from_missing_checkpoint_dir(tmp_path):
    proc = train([*SMALL, "--checkpoint-dir", str(tmp_path / "nope"), "--load-checkpoint"], cwd=tmp_path, check=False)
    _one_line_error(proc, "does not exist")


@pytest.mark.parametrize("checkpointer", ["torchsave", "pccheck"])
def test_checkpoint_of_another_model_is_refused(tmp_path, checkpointer):
    common = ["--checkpointer", checkpointer, "--checkpoint-dir", str(tmp_path / "c"), "--training-steps", "2",
              "--checkpoint-freq", "1", "--batch-size", "2", "--threads", "1"]
    train([*common, "--sequence-length", "16"], cwd=tmp_path)
    proc = train([*common, "--sequence-length", "16", "--d-model", "32", "--load-checkpoint"], cwd=tmp_path, check=False)
    _one_line_error(proc, "does not fit this model")


def test_load_with_empty_dir_starts_fresh(tmp_path):
    (tmp_path / "c").mkdir()
    proc = train([*SMALL, "--training-steps", "3", "--checkpointer", "torchsave", "--checkpoint-dir",
                  str(tmp_path / "c"), "--load-checkpoint"], cwd=tmp_path)
    assert "no valid checkpoint" in proc.stderr
