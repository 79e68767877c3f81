"""Shared fixtures: loss files of uninterrupted reference runs."""
from __future__ import annotations

from typing import Sequence

import pytest

from trainer_helpers import train


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
