"""When `scontrol requeue` is refused inside the job, the job resubmits itself as a dependent job (new
job id, same run directory) and pccheck-submit --wait follows it to the end."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
from slurm_helpers import CHECKPOINTER, TINY, Reference, events, following, steps_lasting, succeeded, wait_for

pytestmark = pytest.mark.slurm

def test_refused_requeue_falls_back_to_dependent_job(slurm_cluster, tmp_path):
    real = shutil.which("scontrol")
    fake_dir = tmp_path / "fakebin"
    fake_dir.mkdir()
    fake = fake_dir / "scontrol"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = requeue ]; then echo "scontrol: error: Requested operation is presently disabled" >&2; exit 1; fi\n'
        f'exec {real} "$@"\n'
    )
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    # 30 s of steps measured alone: the USR2 reaches the job long before training could end
    flags = [*TINY, "--training-steps", str(steps_lasting(30, TINY, tmp_path / "probe")), "--checkpoint-freq", "10"]
    ref = Reference(flags, tmp_path / "ref")
    env = {"PATH": f"{fake_dir}:{os.environ['PATH']}"}  # sbatch exports it into the job
    run = tmp_path / "runs" / "fallback"
    with following(["--executor", "slurm", "--name", "fallback", "--wait", "--time", "10",
                    "--checkpointer", CHECKPOINTER, *flags], cwd=tmp_path, env=env) as follower:
        wait_for(lambda: [e for e in events(run) if e["event"] == "first_step"], 120, "training to start")
        first = [e for e in events(run) if e["event"] == "start"][0]["job_id"]
        subprocess.run(["scancel", "--signal=USR2", first], check=True)
        succeeded(follower, timeout=400)
    ev = events(run)
    req = [e for e in ev if e["event"] == "requeue"]
    assert len(req) == 1 and req[0]["how"] == "resubmitted" and "presently disabled" in req[0]["detail"]
    starts = [e for e in ev if e["event"] == "start"]
    assert [s["job_id"] for s in starts] == [first, req[0]["new_job_id"]]
    assert (run / "loss.csv").read_bytes() == ref.bytes()
