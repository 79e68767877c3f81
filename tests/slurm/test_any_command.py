"""Any command under `pccheck-submit --executor slurm -- CMD` on the local Slurm: a script written against
the contract alone, the examples (plain loop, torchrun DDP), and the commands that go wrong (one that
ignores the stop request, one that crashes at start, one that does not exist). Bit-exact where it trains."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from slurm_helpers import ROOT, events, following, job_field, submit, succeeded, wait_for
from trainer_helpers import run_script, steps_lasting

pytestmark = pytest.mark.slurm

CONTRACT = str(ROOT / "tests" / "contract_script.py")
FAKE = str(ROOT / "tests" / "fake_command.py")
PLAIN = str(ROOT / "examples" / "plain_loop.py")
DDP = str(ROOT / "examples" / "ddp_torchrun.py")


def started_training(run, n: int) -> None:
    wait_for(lambda: len([e for e in events(run) if e["event"] == "first_step"]) > n, 180, f"start #{n} training")


def test_contract_only_script_survives_scontrol_requeue(slurm_cluster, tmp_path):
    """The issue's script: it handles USR2/TERM itself and exits 75 after a durable checkpoint (no helpers,
    no status file); `scontrol requeue` mid-run brings it back with the same job id, output identical."""
    cmd = [sys.executable, CONTRACT, "--steps", "3000", "--step-seconds", "0.01"]
    out = tmp_path / "out.json"
    run = tmp_path / "runs" / "contract"
    with following(["--executor", "slurm", "--name", "contract", "--wait", "--time", "20", "--",
                    *cmd, "--out", str(out)], cwd=tmp_path) as follower:
        wait_for(lambda: [e for e in events(run) if e["event"] == "start"] and (run / "checkpoints" / "pccheck.ckpt").exists(),
                 180, "the first checkpoint")
        job_id = events(run)[-1]["job_id"]
        time.sleep(1.0)
        subprocess.run(["scontrol", "requeue", job_id], check=True)
        succeeded(follower, timeout=600)
    ev = events(run)
    assert int(job_field(job_id, "Restarts") or 0) >= 1
    assert {e["job_id"] for e in ev if e["event"] == "start"} == {job_id}
    stop = [e for e in ev if e["event"] == "stop"][0]
    assert stop["kind"] == "preemption" and stop["exit_code"] == 75 and stop["signal"] == "SIGTERM"
    assert out.read_bytes() == run_script(cmd, tmp_path / "ref", tmp_path / "ref.json")


@pytest.mark.parametrize("name, cmd, tasks", [
    ("plain", [sys.executable, PLAIN], []),
    ("ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", DDP, "--width", "512"],
     ["--ntasks-per-node", "1"]),
])
def test_examples_survive_walltime_and_preemption(slurm_cluster, tmp_path, name, cmd, tasks):
    """A 3-minute limit with a 165 s deadline margin ends each start ~15 s in (time-limit requeues, by the job's
    own end-time check), and a `scancel --signal=TERM` early in the first start is a preemption (it comes far
    before the end): the example finishes with the bytes of an uninterrupted run, the job id unchanged."""
    cmd = [*cmd, "--steps", str(steps_lasting(30, cmd, tmp_path / "probe"))]
    out = tmp_path / "out.json"
    run = tmp_path / "runs" / name
    with following(["--executor", "slurm", "--name", name, "--wait", "--time", "3", "--signal-lead", "15",
                    "--deadline-margin", "165", *tasks, "--", *cmd, "--out", str(out)],
                   cwd=tmp_path, env={"OMP_NUM_THREADS": "1"}) as follower:
        started_training(run, 0)
        time.sleep(1)
        subprocess.run(["scancel", "--signal=TERM", events(run)[-1]["job_id"]], check=True)
        succeeded(follower, timeout=900)
    ev = events(run)
    kinds = [e["kind"] for e in ev if e["event"] == "stop"]
    assert kinds[0] == "preemption" and "timeout" in kinds, kinds
    assert len({e["job_id"] for e in ev if e["event"] == "start"}) == 1
    assert out.read_bytes() == run_script(cmd, tmp_path / "ref", tmp_path / "ref.json")


def test_a_command_that_ignores_the_request_is_killed_and_requeued(slurm_cluster, tmp_path):
    proc = submit(["--executor", "slurm", "--name", "deaf", "--wait", "--time", "1", "--signal-lead", "15",
                   "--deadline-margin", "40", "--max-requeues", "0", "--",
                   sys.executable, FAKE, "--steps", "100000", "--step-seconds", "0.05", "--ignore-stop"],
                  cwd=tmp_path, timeout=300)
    log = (tmp_path / "runs" / "deaf" / "job.log").read_text()
    assert "did not stop within" in log and "last committed step" in log, log[-2000:]
    stop = [e for e in events(tmp_path / "runs" / "deaf") if e["event"] == "stop"][0]
    assert stop["killed_at_limit"] and stop["last_committed_step"] > 0
    assert proc.returncode == 75 and "requeue budget spent" in proc.stderr  # it kept what it committed


def test_crash_at_start_not_found_and_odd_args(slurm_cluster, tmp_path):
    # a command that does not exist: one line, exit 2, nothing submitted
    proc = submit(["--executor", "slurm", "--name", "nf", "--", "./no-such-train.sh"], cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("pccheck-submit: error: command not found")
    assert not (tmp_path / "runs" / "nf").exists()
    # a crash at start: failed once, not requeued
    proc = submit(["--executor", "slurm", "--name", "crash", "--wait", "--time", "5", "--",
                   sys.executable, FAKE, "--exit-at-start", "1"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 1 and "the command failed (exit 1); not requeued" in proc.stderr
    ev = events(tmp_path / "runs" / "crash")
    time.sleep(3)  # nothing brings it back
    assert job_field(ev[0]["job_id"], "Restarts") == "0" and len([e for e in ev if e["event"] == "start"]) == 1
    # arguments with spaces and quotes arrive unchanged, with the contract's environment
    odd = ["a b", "it's", '"q"', "$HOME", "*", ""]
    proc = submit(["--executor", "slurm", "--name", "args", "--wait", "--time", "5", "--",
                   sys.executable, FAKE, "--steps", "2", "--env-out", str(tmp_path / "env.json"), "--", *odd],
                  cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads((tmp_path / "env.json").read_text())
    assert seen["argv"][-len(odd):] == odd
    assert seen["env"]["PCCHECK_CHECKPOINT_DIR"] == str(tmp_path / "runs" / "args" / "checkpoints")
    assert float(seen["env"]["PCCHECK_END_TIME"]) > time.time()


def test_without_wait_returns_once_submitted_and_says_where_to_watch(slurm_cluster, tmp_path):
    proc = submit(["--executor", "slurm", "--name", "bg", "--time", "5", "--",
                   sys.executable, FAKE, "--steps", "20"], cwd=tmp_path, timeout=60)
    run = tmp_path / "runs" / "bg"
    job_id = events(run)[0]["job_id"]
    assert proc.returncode == 0 and f"squeue -j {job_id}" in proc.stderr and str(run / "status.json") in proc.stderr
    assert not [e for e in events(run) if e["event"] == "final"]  # it did not wait for the job
    final = wait_for(lambda: [e for e in events(run) if e["event"] == "final"], 180, "the job to end on its own")
    assert final[0]["outcome"] == "completed"
