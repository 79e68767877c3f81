"""Retired: multi-rank checkpoints go through DCP with pccheck storage (pccheck.dcp). What the byte split did
that DCP does not (rank-local state such as per-rank RNG streams) is `pccheck.dcp.Checkpointer(local_keys=...)`.

Only `describe_run_dir` stays, a summary of a directory's file sets for tests/slurm/test_multirank_slurm.py
(owned by the lead); new code uses pccheck.dcp.sets.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from .dcp.sets import newest, scan_directory


def describe_run_dir(path: Union[str, Path]) -> dict[str, Any]:
    """{"sets": [{"world", "global_step"}], "global_step"}: each set's newest valid step, and the one a load takes."""
    sets = scan_directory(path)
    found = newest(sets)
    return {
        "sets": [{"world": s.world, "global_step": (s.newest_valid().step if s.newest_valid() else None)} for s in sets],
        "global_step": found[1].step if found else None,
    }
