"""pccheck.stopping: signal flag, deadline arithmetic, end-time sources."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from pccheck import stopping
from pccheck.checkpointer import load_checkpoint
from pccheck.stopping import AnyStop, DeadlineStop, SignalStop, _parse_slurm_time, job_end_time
from trainer_helpers import SMALL


def test_signal_only_sets_a_flag():
    stop = SignalStop()
    assert stop.check(0.1, 0.1) is None
    os.kill(os.getpid(), signal.SIGUSR2)
    os.kill(os.getpid(), signal.SIGTERM)  # later signals are counted, the first one is kept
    assert stop.check(0.1, 0.1) == "received SIGUSR2"
    assert stop.received == signal.SIGUSR2 and stop.count == 2 and stop.received_at is not None


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_deadline_needs_checkpoint_step_and_margin():
    clock = Clock(1000.0)
    d = DeadlineStop(end_time=1100.0, margin_s=20.0, clock=clock)
    assert d.check(step_seconds=5.0, checkpoint_seconds=30.0) is None  # 100 s left > 55 s needed
    clock.t = 1046.0  # 54 s left < 55
    reason = d.check(step_seconds=5.0, checkpoint_seconds=30.0)
    assert reason is not None and reason.startswith("deadline:") and "54.0 s left" in reason


def test_deadline_unmeasured_checkpoint_uses_minimum():
    clock = Clock(0.0)
    d = DeadlineStop(end_time=22.5, margin_s=20.0, min_checkpoint_s=3.0, clock=clock)
    assert d.check(0.0, 0.0) is not None  # 22.5 < 3 + 0 + 20


def test_deadline_unknown_end_never_stops(monkeypatch):
    for name in ("PCCHECK_END_TIME", "SLURM_JOB_END_TIME", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    d = DeadlineStop()
    assert d.check(1.0, 1.0) is None and d.end_time is None


def test_deadline_callable_is_refreshed():
    end = {"t": 1000.0}
    clock = Clock(0.0)
    d = DeadlineStop(end_time=lambda: end["t"], margin_s=0.0, refresh_s=0.0, clock=clock)
    assert d.check(1.0, 1.0) is None
    end["t"] = 50.0  # e.g. `scontrol update TimeLimit=...` shortened the job
    clock.t = 49.0
    assert d.check(1.0, 1.0) is not None


def test_deadline_query_failure_never_stops():
    def broken():
        raise RuntimeError("squeue exploded")

    assert DeadlineStop(end_time=broken, margin_s=0.0).check(1.0, 1.0) is None


def test_end_time_sources(monkeypatch):
    env = {"SLURM_JOB_END_TIME": "1700000000"}
    assert job_end_time(env, query_squeue=False) == (1700000000.0, "SLURM_JOB_END_TIME")
    env = {"PCCHECK_END_TIME": "123", "SLURM_JOB_END_TIME": "456"}
    assert job_end_time(env, query_squeue=False) == (123.0, "PCCHECK_END_TIME")
    assert job_end_time({}, query_squeue=False) == (None, "none")
    monkeypatch.setattr(stopping, "squeue_end_time", lambda job_id: 99.0 if job_id == "42" else None)
    assert job_end_time({"SLURM_JOB_ID": "42"}) == (99.0, "squeue")


def test_parse_slurm_time():
    assert _parse_slurm_time("2025-01-02T03:04:05") == datetime(2025, 1, 2, 3, 4, 5).timestamp()
    assert _parse_slurm_time("N/A") is None and _parse_slurm_time("Unknown") is None
    assert _parse_slurm_time("  ") is None
    assert _parse_slurm_time("12.5") == 12.5


def test_any_stop_reports_which_fired():
    sig = SignalStop()
    d = DeadlineStop(end_time=10.0, margin_s=0.0, clock=Clock(0.0))
    anyp = AnyStop(sig, d)
    assert anyp.check(1.0, 1.0) is None and anyp.fired is None
    d.clock = Clock(9.5)
    assert anyp.check(1.0, 1.0).startswith("deadline") and anyp.fired is d
    assert anyp.find(SignalStop) is sig


@pytest.mark.parametrize("sig", [signal.SIGUSR2, signal.SIGTERM])
def test_late_signal_does_not_kill_a_decided_exit(tmp_path: Path, sig: signal.Signals):
    """Slurm's USR2 can land while a trainer that already stopped on its deadline exits (CI saw exit 140):
    the exit code must stay 75, though Python's finalization resets handlers."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PCCHECK_END_TIME": str(time.time() + 1)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pccheck.demo", *SMALL, "--training-steps", "50", "--checkpoint-freq", "10",
         "--checkpointer", "pccheck", "--checkpoint-dir", str(tmp_path / "ck")],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    decided = ""
    for line in proc.stderr:  # the trainer has decided once it says so
        if "stopped after step" in line:
            decided = line
            break
    sent = 0
    while proc.poll() is None:  # signals all the way through its exit, finalization included
        os.kill(proc.pid, sig)
        sent += 1
        time.sleep(0.0002)
    rest = proc.stderr.read()
    assert proc.returncode == 75, f"exit {proc.returncode} after {sent} signals: {rest[-2000:]}"
    # and what it decided holds: it stopped on its deadline, at a step whose checkpoint is durable and loads
    found = re.search(r"stopped after step (\d+) \((deadline.*)\); checkpoint at step (\d+) is durable", decided)
    assert found and found[1] == found[3] and 0 < int(found[1]) < 50, decided
    assert load_checkpoint(tmp_path / "ck").step == int(found[1])
