"""--checkpoint-freq auto: Young/Daly's interval, PCcheck's bound, the measured inputs, the printed choice."""
from __future__ import annotations

import logging
import math
import subprocess
import sys

import pytest

from pccheck import interval
from pccheck.distributed import Comm
from pccheck.interval import AutoInterval, Every, Inputs, choose, daly_seconds, min_steps

from trainer_helpers import SMALL, train


def test_daly_is_the_higher_order_formula_and_young_to_first_order():
    d, m = 2.0, 3600.0
    expected = math.sqrt(2 * d * m) * (1 + math.sqrt(d / (2 * m)) / 3 + d / (9 * 2 * m)) - d
    assert daly_seconds(d, m) == pytest.approx(expected, rel=1e-12)
    assert daly_seconds(d, m) == pytest.approx(math.sqrt(2 * d * m), rel=0.02)  # Young: sqrt(2 d M) = 120 s
    assert daly_seconds(0.0, m) == 0.0
    assert daly_seconds(10.0, 4.0) == 4.0  # a checkpoint longer than 2 MTBF: once per MTBF


def test_min_steps_is_pccheck_bound():
    assert min_steps(write_s=1.0, step_s=0.1, max_async=2) == 5  # T_w / (N q t) = 1 / (2 x 1 x 0.1)
    assert min_steps(write_s=1.0, step_s=0.1, max_async=2, write_scaling=0.5) == 10
    assert min_steps(write_s=1.0, step_s=0.1, max_async=1) == 10  # exactly 10: not rounded up to 11
    assert min_steps(write_s=1.01, step_s=0.1, max_async=1) == 11
    assert min_steps(write_s=0.01, step_s=0.1, max_async=1) == 1


def test_choose_takes_young_daly_unless_the_disk_needs_more_steps():
    young = Inputs(step_s=0.5, blocked_s=0.2, write_s=1.0, mtbf_s=3600.0, max_async=2)
    c = choose(young)
    assert c.steps == c.daly_steps == round(daly_seconds(0.2, 3600.0) / 0.5) and c.floor_steps == 1
    disk = Inputs(step_s=0.5, blocked_s=0.2, write_s=200.0, mtbf_s=3600.0, max_async=2)
    c = choose(disk)
    assert c.floor_steps == 200 > c.daly_steps and c.steps == 200
    assert "disk's bound" in c.describe() and "T_w/(N q t) = 200.000/(2 x 1 x 0.5000)" in c.describe()


class _FakeCheckpointer:
    max_async = 2

    def __init__(self) -> None:
        self.durable, self.blocked, self.waits = None, None, 0

    def durable_seconds(self):
        return self.durable

    def blocked_seconds(self):
        return self.blocked

    def wait(self) -> None:
        self.waits += 1
        self.durable, self.blocked = self.durable or 0.5, self.blocked or 0.01


@pytest.fixture
def clock(monkeypatch):
    """interval's time.monotonic, advanced by hand: steps of 0.1 s."""
    now = [0.0]
    monkeypatch.setattr(interval.time, "monotonic", lambda: now[0])
    return now


def _run(auto: AutoInterval, clock, steps: range) -> list[int]:
    saved = []
    for step in steps:
        clock[0] += 0.1
        if auto.due(step):
            saved.append(step)
    return saved


def test_auto_checkpoints_first_then_chooses_from_measurements_and_prints_why(clock, caplog):
    ck = _FakeCheckpointer()
    auto = AutoInterval(ck, mtbf_node_hours=2.0, nodes=2, comm=Comm.single())  # job MTBF 1 h
    with caplog.at_level(logging.INFO, logger="pccheck.interval"):
        saved = _run(auto, clock, range(1, 400))
    assert ck.waits == 1  # the first checkpoint is waited for once: its write time is an input
    expected = choose(Inputs(step_s=0.1, blocked_s=0.01, write_s=0.5, mtbf_s=3600.0, max_async=2))
    assert auto.choice is not None and auto.choice.steps == expected.steps == round(daly_seconds(0.01, 3600.0) / 0.1)
    first = 1 + interval.WARMUP_STEPS
    assert saved[0] == 1 and saved[1:] == list(range(1 + expected.steps, 400, expected.steps))
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"checkpoint interval at step {first}: every {expected.steps} steps" in said[0]
    assert "blocks training 0.0100 s" in said[0] and "(MTBF 1 h = 2 h per node / 2 nodes)" in said[0]
    assert interval._duration(6000 * 3600.0) == "6000 h" and interval._duration(90.0) == "1.5 min"


def test_auto_reevaluates_when_the_measurements_drift(clock, caplog):
    ck = _FakeCheckpointer()
    auto = AutoInterval(ck, mtbf_node_hours=1.0, nodes=1, comm=Comm.single())
    step = 1

    def checkpoints(blocked: float, n: int = 8, steps_each: int = 40) -> None:
        """n more checkpoints measured at `blocked` seconds (each a new durable time), steps_each steps apart."""
        nonlocal step
        for k in range(n):
            ck.durable, ck.blocked = (ck.durable or 0.5) + 0.001, blocked
            _run(auto, clock, range(step, step + steps_each))
            step += steps_each

    checkpoints(0.01, n=1)
    first = auto.choice
    checkpoints(0.0105)  # within the drift tolerance: the choice stays
    assert auto.choice is first
    with caplog.at_level(logging.INFO, logger="pccheck.interval"):
        checkpoints(0.04)  # blocked time x4: the interval doubles
    assert auto.choice is not first and auto.choice.steps > 1.5 * first.steps
    assert step > 2 * interval.RECHECK_STEPS
    assert any(f"re-evaluated (was every {first.steps} steps)" in r.getMessage() for r in caplog.records)


def test_node_count_from_slurm_divides_the_mtbf(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "8")
    assert AutoInterval(_FakeCheckpointer(), mtbf_node_hours=800.0, comm=Comm.single()).mtbf_s == 100 * 3600
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "junk")
    assert AutoInterval(_FakeCheckpointer(), mtbf_node_hours=800.0, comm=Comm.single()).mtbf_s == 800 * 3600


def test_every_n_checkpoints_at_multiples():
    every = Every(50)
    assert [s for s in range(1, 151) if every.due(s)] == [50, 100, 150]


def test_trainer_with_auto_frequency_prints_the_choice(tmp_path):
    proc = train([*SMALL, "--training-steps", "12", "--checkpoint-freq", "auto", "--mtbf-node-hours", "0.01",
                  "--checkpoint-dir", str(tmp_path / "c")], cwd=tmp_path)
    assert f"checkpoint interval at step {1 + interval.WARMUP_STEPS}: every " in proc.stderr
    assert "Young/Daly" in proc.stderr and "T_w/(N q t)" in proc.stderr
    assert "checkpoints: " in proc.stderr and "saved in 12 steps" in proc.stderr


def test_submit_passes_freq_auto_to_the_trainer(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pccheck.launcher.cli", "--executor", "local", "--dry-run",
                           "--steps", "20", "--freq", "auto", "--run-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "--checkpoint-freq auto" in proc.stdout
