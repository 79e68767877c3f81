"""A 2-task job (srun tasks, gloo, the demo's DCP path) on the local Slurm: the wall-time limit stops both
ranks at the same step, the job is requeued once per stop (same job id), resumes from the global step and
ends with a loss file byte-identical to an uninterrupted 2-rank run."""
from __future__ import annotations

import pytest
from multirank_helpers import start, stderr, wait_all
from slurm_helpers import TINY, events, job_field, submit

from pccheck.dcp.sets import newest, scan_directory

pytestmark = pytest.mark.slurm

# 2 ranks of the tiny model, 60 steps/s beside their 2-rank reference run and 120 alone on 2 cores (measured
# 2026-11-29): 20-40 s of training. The deadline (margin 45 s) ends each 1-minute start ~11 s after its first
# step: three or more starts, inside the 10 time-limit requeues. (A single-process probe of the rate does
# not size this: it ran 4-8 times faster than these ranks and the run spent the whole budget.)
STEPS = 2500


def test_two_task_job_survives_walltime_requeue_byte_identical(slurm_cluster, tmp_path):
    flags = [*TINY, "--training-steps", str(STEPS), "--checkpoint-freq", "100"]
    ref_dir = tmp_path / "ref"
    ref_dir.mkdir()
    ref = start([*flags, "--checkpointer", "none", "--loss-file", str(ref_dir / "loss.csv")], 2, ref_dir)
    proc = submit(
        ["--executor", "slurm", "--name", "mr", "--wait", "--time", "1", "--signal-lead", "15", "--deadline-margin", "45",
         "--nodes", "1", "--ntasks-per-node", "2", "--steps", str(STEPS), "--freq", "100", "--checkpointer", "pccheck",
         *TINY],
        cwd=tmp_path, timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wait_all(ref) == [0, 0], stderr(ref_dir, 0)[-2000:]
    run = tmp_path / "runs" / "mr"
    ev = events(run)
    job_id = ev[0]["job_id"]
    assert int(job_field(job_id, "Restarts") or 0) >= 1
    stops = [e for e in ev if e["event"] == "stop"]
    requeues = [e for e in ev if e["event"] == "requeue"]
    assert stops and len(requeues) == len(stops)  # one requeue per stop, by rank 0 only
    assert {e["job_id"] for e in ev if e["event"] == "start"} == {job_id}
    assert (run / "loss.csv").read_bytes() == (ref_dir / "loss.csv").read_bytes()
    sets = scan_directory(run / "checkpoints")
    assert [s.world for s in sets] == [2] and newest(sets) is not None  # one DCP set of 2 ranks, loadable
