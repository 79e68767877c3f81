"""Shared fixtures: loss files of uninterrupted reference runs; signal dispositions restored per test; the
power-loss file system (crashfs.fixtures)."""
from __future__ import annotations

import signal
from typing import Sequence

import pytest

from trainer_helpers import train

pytest_plugins = ["crashfs.fixtures"]


@pytest.fixture(scope="session")
def reference_losses(tmp_path_factory: pytest.TempPathFactory):
    """Loss file bytes of an uninterrupted run, cached per flag set for the whole session."""
    cache: dict[tuple[str, ...], bytes] = {}

    def get(args: Sequence[str]) -> bytes:
        key = tuple(args)
        if key not in cache:
            d = tmp_path_factory.mktemp("reference")
            train([*args, "--checkpointer", "none", "--loss-file", str(d / "loss.csv")], cwd=d)
            cache[key] = (d / "loss.csv").read_bytes()
        return cache[key]

    return get


@pytest.fixture(autouse=True)
def restore_stop_handlers():
    """Tests that run the trainer or a job in-process change USR2/TERM handling; children would inherit SIG_IGN."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR2, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
