"""Wall-time kill: a job whose --time ends well before training does is stopped, checkpoints, is requeued
(same job id, Slurm restart count >= 1), resumes and completes with a byte-identical loss file."""
from __future__ import annotations

import pytest
from slurm_helpers import BASE, CHECKPOINTER, Reference, events, job_field, steps_lasting, submit

pytestmark = pytest.mark.slurm

# ~45 s of training at ~0.075 s/step on an idle machine (more under load). The deadline (margin 40 s) stops
# each start ~20 s after it began (and USR2, lead 15 s, may come 15-75 s before the 1-minute limit), so
# every start trains ~16 s at most and at least one requeue happens however fast the machine is.
STEPS = 600


def test_time_limit_requeue_completes_byte_identical(slurm_cluster, tmp_path):
    flags = [*BASE, "--training-steps", str(STEPS), "--checkpoint-freq", "50"]
    ref = Reference(flags, tmp_path / "ref")
    proc = submit(
        ["--executor", "slurm", "--name", "walltime", "--wait", "--time", "1", "--signal-lead", "15", "--deadline-margin", "40",
         "--steps", str(STEPS), "--freq", "50", "--checkpointer", CHECKPOINTER, "--threads", "1"],
        cwd=tmp_path, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "walltime"
    ev = events(run)
    job_id = ev[0]["job_id"]
    assert int(job_field(job_id, "Restarts") or 0) >= 1
    stops = [e for e in ev if e["event"] == "stop"]
    assert stops and all(s["kind"] == "timeout" for s in stops), stops
    requeues = [e for e in ev if e["event"] == "requeue"]
    assert len(requeues) == len(stops) and all(r["how"] == "scontrol requeue" for r in requeues)
    assert {e["job_id"] for e in ev if e["event"] == "start"} == {job_id}  # same Slurm job id throughout
    assert (run / "loss.csv").read_bytes() == ref.bytes()
    assert "requeue 1 (timeout" in proc.stderr  # the cycle breakdown is printed


def test_hard_time_limit_sigterm_only(slurm_cluster, tmp_path):
    """No warning signal (URG, which Python ignores) and no deadline stop: the SIGTERM of the time limit
    itself (0-30 s after the limit) starts the stop; the checkpoint and `scontrol requeue` must fit in
    KillWait (5 s here). Slow: the limit is enforced late."""
    # slurmctld checks limits every 30 s, so the first SIGTERM comes 60-90 s after the start: the run must
    # last well beyond that on this machine, however fast it is (a fixed 1300 steps once finished in 85 s)
    steps = steps_lasting(150, BASE, tmp_path / "probe")
    flags = [*BASE, "--training-steps", str(steps), "--checkpoint-freq", "50"]
    ref = Reference(flags, tmp_path / "ref")
    proc = submit(
        ["--executor", "slurm", "--name", "hard", "--wait", "--time", "1", "--no-deadline", "--sbatch", "signal=URG@1",
         "--steps", str(steps), "--freq", "50", "--checkpointer", CHECKPOINTER, "--threads", "1"],
        cwd=tmp_path, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "hard"
    ev = events(run)
    stops = [e for e in ev if e["event"] == "stop"]
    assert stops, f"{steps} steps ended before the time limit was enforced: {ev[-1]}"
    assert all(s["signal"] == "SIGTERM" and s["kind"] == "timeout" for s in stops), stops
    assert int(job_field(ev[0]["job_id"], "Restarts") or 0) == len(stops)
    assert (run / "loss.csv").read_bytes() == ref.bytes()
