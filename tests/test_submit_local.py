"""pccheck-submit without Slurm: submitit's local executor, an emulated time limit, byte-identical losses.

Marked slow (each runs real training for ~15-40 s); CI runs them with -m slow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from trainer_helpers import run_script, steps_lasting

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINTER = os.environ.get("PCCHECK_TEST_CHECKPOINTER", "pccheck")
NO_SLURM = {"SLURM_CONF": "/nonexistent/slurm.conf"}  # no controller answers


def submit(args, cwd: Path, env=None, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "pccheck.launcher.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    sys.stderr.write(proc.stderr[-5000:])
    return proc


def reference(flags, d: Path) -> bytes:
    d.mkdir()
    subprocess.run([sys.executable, "-m", "pccheck.demo", *flags, "--checkpointer", "none", "--loss-file",
                    str(d / "loss.csv")], cwd=d, check=True, capture_output=True, timeout=600)
    return (d / "loss.csv").read_bytes()


def events(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines() if x.strip()]


@pytest.mark.slow
def test_readme_main_command_without_slurm(tmp_path):
    """`pccheck-submit --steps 151 --freq 50` on a machine without Slurm: auto picks the local executor."""
    proc = submit(["--steps", "151", "--freq", "50"], cwd=tmp_path, env=NO_SLURM)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "executor: local" in proc.stderr
    run = tmp_path / "runs" / "pccheck"
    assert [e["outcome"] for e in events(run) if e["event"] == "final"] == ["completed"]
    # byte-identity is checked with --threads 1 below: with torch's default thread count the loss trace
    # changed once under heavy machine load (2 threads); that is the trainer's determinism, not requeue's
    assert len((run / "loss.csv").read_text().splitlines()) == 152


@pytest.mark.slow
def test_local_executor_time_limit_requeues_byte_identical(tmp_path):
    """An emulated 12 s limit: USR2 5 s before it, stop at a step boundary, exit 144, submitit restarts the
    task, which resumes; the loss file matches an uninterrupted run byte for byte."""
    flags = ["--threads", "1", "--training-steps", "151", "--checkpoint-freq", "50"]
    proc = submit(["--executor", "local", "--time", "0.2", "--wait", "--checkpointer", CHECKPOINTER,
                   "--steps", "151", "--freq", "50", "--threads", "1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "pccheck"
    ev = events(run)
    assert len([e for e in ev if e["event"] == "requeue" and e["how"] == "local restart"]) >= 1
    assert len({e["job_id"] for e in ev if e["event"] == "start"}) == 1
    assert (run / "loss.csv").read_bytes() == reference(flags, tmp_path / "ref")


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [
    [sys.executable, str(ROOT / "tests" / "contract_script.py"), "--step-seconds", "0.008"],
    [sys.executable, str(ROOT / "examples" / "plain_loop.py")],
], ids=["contract-only", "example"])
def test_any_script_under_the_local_executor_time_limit(tmp_path, cmd):
    """`pccheck-submit --executor local --time T -- python SCRIPT`: stops before the emulated limit (18 s a
    start, about 10 s of it training), restarts, resumes and writes the same bytes as an uninterrupted run (the
    contract-only script and the example)."""
    cmd = [*cmd, "--steps", str(steps_lasting(15, cmd, tmp_path / "probe"))]
    out = tmp_path / "out.json"
    proc = submit(["--executor", "local", "--time", "0.3", "--name", "s", "--", *cmd, "--out", str(out)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ev = events(tmp_path / "runs" / "s")
    assert [e["how"] for e in ev if e["event"] == "requeue"][:1] == ["local restart"]
    assert out.read_bytes() == run_script(cmd, tmp_path / "ref", tmp_path / "ref.json")
