"""The examples without a launcher: stopped by a signal, resumed, and bit-exact against an uninterrupted run.
The DDP example (torchrun, 2 workers, gloo) with SIGTERM to one worker only stops every rank at one step."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pccheck.launcher import proctree

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]


def env(d: Path) -> dict:
    return {**os.environ, "PCCHECK_CHECKPOINT_DIR": str(d / "ck"), "PCCHECK_STATUS_FILE": str(d / "status.json"),
            "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def step_reached(d: Path, step: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads((d / "status.json").read_text()).get("step", 0) >= step:
                return
        except (FileNotFoundError, json.JSONDecodeError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def run_to_end(cmd: list[str], d: Path, out: Path) -> bytes:
    subprocess.run([*cmd, "--out", str(out)], cwd=d, env=env(d), check=True, timeout=600, capture_output=True)
    return out.read_bytes()


def test_plain_loop_stops_on_usr2_and_resumes_bit_exact(tmp_path):
    cmd = [sys.executable, str(ROOT / "examples" / "plain_loop.py"), "--steps", "3000", "--save-every", "50"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "a.json")], cwd=tmp_path, env=env(tmp_path),
                            stderr=subprocess.PIPE, text=True)
    step_reached(tmp_path, 120)
    proc.send_signal(signal.SIGUSR2)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 75, err[-2000:]
    stopped = int(re.search(r"stopped after step (\d+)", err).group(1))
    assert json.loads((tmp_path / "status.json").read_text())["last_committed_step"] == stopped  # not only step 100
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run_to_end(cmd, tmp_path, tmp_path / "a.json") == run_to_end(cmd, ref, ref / "b.json")


@pytest.mark.slow
def test_ddp_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    cmd = [*TORCHRUN, str(ROOT / "examples" / "ddp_torchrun.py"), "--steps", "800", "--save-every", "1000"]
    proc = subprocess.Popen([*cmd, "--out", str(tmp_path / "a.json")], cwd=tmp_path, env=env(tmp_path),
                            stderr=subprocess.PIPE, text=True)
    try:
        step_reached(tmp_path, 100)
        workers = [p.pid for p in proctree.descendants(proc.pid) if proctree.catches(p.pid, signal.SIGTERM)
                   and p.pid != proc.pid]
        rank1 = [pid for pid in workers if b"ddp_torchrun" in Path(f"/proc/{pid}/cmdline").read_bytes()][-1]
        os.kill(rank1, signal.SIGTERM)
        err = proc.communicate(timeout=120)[1]
    finally:
        proctree.kill_tree(proc.pid, keep=-1)
        proc.kill()
    stops = dict(re.findall(r"\[rank (\d)\] stopped after step (\d+)", err))
    assert len(stops) == 2 and len(set(stops.values())) == 1, err[-3000:]
    assert re.search(r"\[rank 0\] stopping after step \d+: rank 1: received SIGTERM", err), err[-3000:]
    assert json.loads((tmp_path / "status.json").read_text())["state"] == "stopped"
    ref = tmp_path / "ref"
    ref.mkdir()
    assert run_to_end(cmd, tmp_path, tmp_path / "a.json") == run_to_end(cmd, ref, ref / "b.json")
