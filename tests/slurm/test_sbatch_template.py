"""The generic sbatch template, submitted with plain sbatch with a command (the demo trainer as any user's
command), survives a time-limit requeue byte-identically."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from slurm_helpers import BASE, CHECKPOINTER, ROOT, Reference, job_field, wait_for

pytestmark = pytest.mark.slurm

STEPS = 600  # ~45 s of training when idle; the 40 s deadline margin ends each 1-minute start ~20 s in


def test_generic_template_requeues_and_completes(slurm_cluster, tmp_path):
    flags = [*BASE, "--training-steps", str(STEPS), "--checkpoint-freq", "50"]
    ref = Reference(flags, tmp_path / "ref")
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "PCCHECK_DEADLINE_MARGIN": "40",
           "PCCHECK_PYTHON": sys.executable}
    loss = tmp_path / "runs" / "tmpl" / "loss.csv"
    cmd = [sys.executable, "-m", "pccheck.demo", *flags, "--checkpointer", CHECKPOINTER, "--load-checkpoint",
           "--loss-file", str(loss)]
    out = subprocess.run(
        ["sbatch", "--parsable", "--job-name=tmpl", "--time=1", "--signal=USR2@15",
         str(ROOT / "sbatch" / "generic.sbatch"), *cmd],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )
    job_id = out.stdout.strip().split(";")[0]
    wait_for(lambda: job_field(job_id, "JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), 600,
             f"template job {job_id} to finish", poll=2)
    log = (tmp_path / f"slurm-tmpl-{job_id}.out").read_text()
    print(log[-4000:])
    assert job_field(job_id, "JobState") == "COMPLETED", log[-3000:]
    assert int(job_field(job_id, "Restarts")) >= 1
    assert "requeued job" in log and "completed: the command completed" in log
    assert loss.read_bytes() == ref.bytes()
