"""Preemption at arbitrary moments (scontrol requeue, scancel --signal=USR2, scancel --signal=TERM, a
higher-priority job in the `high` partition), with a checkpoint in flight most of the time: the job
requeues, resumes and completes with a byte-identical loss file."""
from __future__ import annotations

import subprocess
import time

import pytest
from slurm_helpers import (CHECKPOINTER, TINY, Reference, events, following, job_field, status, steps_lasting,
                           succeeded, wait_for)

pytestmark = pytest.mark.slurm


def _interrupt(kind: str, job_id: str) -> None:
    if kind == "scontrol requeue":
        cmd = ["scontrol", "requeue", job_id]
    elif kind == "USR2":
        cmd = ["scancel", "--signal=USR2", job_id]
    elif kind == "TERM":
        cmd = ["scancel", "--signal=TERM", job_id]
    else:  # preemption by a job that needs the whole node in the higher-priority partition
        cmd = ["sbatch", "--partition=high", "--exclusive", "--time=1", "--output=/dev/null", "--wrap", "sleep 2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{cmd}: {out.stderr}"


def test_interrupts_at_arbitrary_moments(slurm_cluster, tmp_path, rng):
    # tiny model, a checkpoint after every step; 60 s of steps measured alone: four starts of a few seconds
    # each leave most of them for the last one, whatever the machine's speed
    steps = steps_lasting(60, TINY, tmp_path / "probe")
    flags = [*TINY, "--training-steps", str(steps), "--checkpoint-freq", "1"]
    ref = Reference(flags, tmp_path / "ref")
    run = tmp_path / "runs" / "preempt"
    kinds = ["scontrol requeue", "USR2", "TERM", "high partition"]
    rng.shuffle(kinds)
    with following(["--executor", "slurm", "--name", "preempt", "--wait", "--time", "20",
                    "--checkpointer", CHECKPOINTER, *flags], cwd=tmp_path) as follower:
        for n, kind in enumerate(kinds):
            # wait for the n-th start to be training, then interrupt after a random delay
            wait_for(lambda: len([e for e in events(run) if e["event"] == "first_step"]) > n, 120, f"start #{n} training")
            time.sleep(rng.uniform(0.0, 3.0))
            st = status(run)
            assert st.get("state") == "running" and st.get("step", 0) < steps * 5 // 6, f"training ran out too early: {st}"
            job_id = [e for e in events(run) if e["event"] == "start"][-1]["job_id"]
            print(f"interrupt {n}: {kind} at step {st.get('step')}")
            _interrupt(kind, job_id)
            wait_for(lambda: len([e for e in events(run) if e["event"] in ("requeue", "final")]) > n, 60,
                     f"the job to requeue after {kind}")
        succeeded(follower, timeout=600)
    ev = events(run)
    stops = [e for e in ev if e["event"] == "stop"]
    assert len(stops) == len(kinds) and all(s["kind"] == "preemption" for s in stops), stops
    assert not [e for e in ev if e["event"] == "requeue" and e["how"] == "resubmitted"]
    job_id = ev[0]["job_id"]
    assert int(job_field(job_id, "Restarts") or 0) == len(kinds)
    assert (run / "loss.csv").read_bytes() == ref.bytes()
