"""File names of a DCP file set, so sets are told apart by run and world size without opening a file.

    dcp-<set>-w<NNNNN>-commit.ckpt     the coordinator's store: one global commit per checkpoint
    dcp-<set>-w<NNNNN>-r<RRRRR>.ckpt   rank R's store: that rank's items of each checkpoint

`<set>` is 8 hex digits drawn when the set is created (the run that created it); later launches with the
same world size keep writing into the newest set of that size, so its files are preallocated once.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

_NAME = re.compile(r"^dcp-([0-9a-f]{8})-w(\d{5})-(commit|r(\d{5}))\.ckpt$")


@dataclass(frozen=True)
class SetName:
    """One DCP file set: its id and world size."""

    set_id: str
    world: int

    @property
    def commit_file(self) -> str:
        return f"dcp-{self.set_id}-w{self.world:05d}-commit.ckpt"

    def rank_file(self, rank: int) -> str:
        return f"dcp-{self.set_id}-w{self.world:05d}-r{rank:05d}.ckpt"

    @staticmethod
    def new(world: int) -> "SetName":
        return SetName(os.urandom(4).hex(), world)


def parse(name: str) -> Optional[tuple[SetName, Optional[int]]]:
    """(set, rank) of a DCP file name (rank None for the commit file), or None for anything else."""
    m = _NAME.match(name)
    if not m:
        return None
    world = int(m.group(2))
    rank = None if m.group(3) == "commit" else int(m.group(4))
    if world < 1 or (rank is not None and rank >= world):
        return None
    return SetName(m.group(1), world), rank
