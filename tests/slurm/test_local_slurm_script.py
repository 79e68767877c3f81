"""scripts/local-slurm.sh: status answers, start is idempotent, the export line is printed."""
from __future__ import annotations

import subprocess

import pytest
from slurm_helpers import ROOT

pytestmark = pytest.mark.slurm
SCRIPT = str(ROOT / "scripts" / "local-slurm.sh")


def test_status_and_idempotent_start(slurm_cluster):
    st = subprocess.run([SCRIPT, "status"], capture_output=True, text=True)
    if st.returncode != 0:
        pytest.skip(f"the running Slurm was not started by scripts/local-slurm.sh with the default state dir:\n{st.stdout}")
    assert "slurmctld: running" in st.stdout and "export SLURM_CONF=" in st.stdout
    again = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already running" in again.stderr
    assert again.stdout.strip().startswith("export SLURM_CONF=")


def test_bad_usage():
    out = subprocess.run([SCRIPT, "frobnicate"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage" in out.stderr
