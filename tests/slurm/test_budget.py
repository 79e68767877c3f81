"""Requeue safety: a spent budget stops with a clear reason and a non-zero exit; a job that crashes at
start is not requeued in a loop."""
from __future__ import annotations

import time

import pytest
from slurm_helpers import BASE, CHECKPOINTER, events, job_field, submit

pytestmark = pytest.mark.slurm


def test_max_requeues_spent_stops_with_reason(slurm_cluster, tmp_path):
    # --deadline-margin 45 with a 1-minute limit: each start stops by itself ~15 s in (deterministic)
    proc = submit(
        ["--executor", "slurm", "--name", "budget", "--wait", "--time", "1", "--signal-lead", "5",
         "--deadline-margin", "45", "--max-requeues", "1", "--steps", "5000", "--freq", "50",
         "--checkpointer", CHECKPOINTER, *BASE],
        cwd=tmp_path, timeout=600,
    )
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert "requeue budget spent" in proc.stderr and "--max-requeues 1" in proc.stderr
    ev = events(tmp_path / "runs" / "budget")
    final = [e for e in ev if e["event"] == "final"][-1]
    assert final["outcome"] == "stopped" and final["exit_code"] == 75
    assert len([e for e in ev if e["event"] == "requeue"]) == 1
    assert int(job_field(ev[0]["job_id"], "Restarts") or 0) == 1
    assert "budget" in (tmp_path / "runs" / "budget" / "job.log").read_text()


def test_crash_at_start_is_not_requeued(slurm_cluster, tmp_path):
    proc = submit(
        ["--executor", "slurm", "--name", "crash", "--wait", "--time", "5", "--steps", "100", "--freq", "50",
         "--checkpointer", CHECKPOINTER, "--fail-at-step", "1", *BASE],
        cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "the command failed (killed by signal 9); not requeued" in proc.stderr
    ev = events(tmp_path / "runs" / "crash")
    job_id = ev[0]["job_id"]
    time.sleep(3)  # nothing brings it back
    assert job_field(job_id, "JobState") == "FAILED"
    assert job_field(job_id, "Restarts") == "0"
    assert len([e for e in ev if e["event"] == "start"]) == 1


def test_user_error_in_job_fails_once(slurm_cluster, tmp_path):
    proc = submit(
        ["--executor", "slurm", "--name", "usererr", "--wait", "--time", "5", "--steps", "100",
         "--checkpointer", CHECKPOINTER, "--dataset", str(tmp_path / "missing.txt"), *BASE],
        cwd=tmp_path, timeout=300,
    )
    assert proc.returncode in (1, 2), proc.stderr[-3000:]
    ev = events(tmp_path / "runs" / "usererr")
    assert len([e for e in ev if e["event"] == "start"]) == 1
    final = [e for e in ev if e["event"] == "final"]
    assert final and final[-1]["outcome"] == "failed"
