"""Fixtures for the tests that need a real Slurm (scripts/local-slurm.sh start).

They skip with the reason when no controller answers; PCCHECK_REQUIRE_SLURM=1 (set by CI) turns the
skip into a failure and first tries to start the local cluster itself (stopping it again at the end).
PCCHECK_TEST_CHECKPOINTER picks the checkpointer the jobs use (default pccheck).
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pccheck.launcher import slurm as slurm_util

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "local-slurm.sh"
sys.path.insert(0, str(ROOT / "tests"))  # the helpers shared with tests/ (trainer_helpers, multirank_helpers)


def _require() -> bool:
    return os.environ.get("PCCHECK_REQUIRE_SLURM", "") not in ("", "0")


@pytest.fixture(scope="session")
def slurm_cluster():
    """A Slurm controller that answers; skip (or fail under PCCHECK_REQUIRE_SLURM=1) otherwise."""
    ok, why = slurm_util.controller_answers()
    started = False
    if not ok and (_require() or os.environ.get("PCCHECK_SLURM_AUTOSTART") == "1") and os.geteuid() == 0:
        out = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
        for line in out.stdout.splitlines():
            if line.startswith("export SLURM_CONF="):
                os.environ["SLURM_CONF"] = line.split("=", 1)[1]
        started = out.returncode == 0
        ok, why = slurm_util.controller_answers()
        if not ok:
            why += f"; scripts/local-slurm.sh start said: {out.stderr.strip()[-500:]}"
    if not ok:
        msg = f"no Slurm controller answers ({why}); start one with `scripts/local-slurm.sh start`"
        if _require():
            pytest.fail(f"PCCHECK_REQUIRE_SLURM=1 but {msg}")
        pytest.skip(msg)
    yield
    if started:
        subprocess.run([str(SCRIPT), "stop"], capture_output=True, timeout=120)


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("PCCHECK_TEST_SEED", time.time_ns() % 100000))
    print(f"random seed {seed} (PCCHECK_TEST_SEED={seed} repeats it)")
    return random.Random(seed)
