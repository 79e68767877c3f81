"""The core stores a process writes through, shared by every Writer on the same path (a core file admits one
writer: its lock), and the retirement of rank records no global commit names.

Slot retention: a rank's store keeps its `keep + max_async` newest commits; the commits a set's newest
`keep` global commits name must be among them. Records that never became global (a peer failed, or the
run was killed between a rank's commit and the global one) would push them out, so before every save each
rank zeroes the ring entries of such records newer than the oldest named one (an all-zero entry is empty,
docs/format.md), closing and reopening its store around that when it is open.
"""
from __future__ import annotations

import atexit
import logging
import os
import threading
from pathlib import Path
from typing import Any

from .. import _core
from ..checkpointer import Checkpointer
from ..corefile import BLOCK
from ..errors import CheckpointError

log = logging.getLogger("pccheck.dcp")
_stores: dict[str, Checkpointer] = {}
_synced: set[str] = set()
_lock = threading.Lock()


def store(path: Path, **knobs: Any) -> Checkpointer:
    """The process's Checkpointer of the core file `path` (opened on its first save)."""
    key = str(path)
    with _lock:
        ckpt = _stores.get(key)
        if ckpt is None:
            ckpt = _stores[key] = Checkpointer(path.parent, file_name=path.name, **knobs)
        return ckpt


def close_all() -> None:
    """Waits for and closes every store of this process (also at exit)."""
    with _lock:
        stores = list(_stores.values())
        _stores.clear()
    for ckpt in stores:
        ckpt.close()


atexit.register(close_all)


def sync_once(path: Path) -> None:
    """Makes a file this process did not write durable (file and directory) before trusting what it reads of
    it: a crashed writer's unsynced pages are visible here but may not survive a power cut (docs: crash model)."""
    key = str(path)
    if key in _synced or not path.exists():
        return
    _core.make_durable(key)
    _synced.add(key)


def stale_records(path: Path, named: set[int]) -> list[tuple[int, int, int]]:
    """(ring index, seq, step) of the valid records of `path` no kept global commit names and newer than the
    oldest one named (all valid records when none is named)."""
    if not path.exists():
        return []
    try:
        scan = _core.scan(str(path), False)
    except _core.CoreError as exc:
        raise CheckpointError(f"{path} is not a usable pccheck file: {exc}") from None
    oldest = min(named, default=0)
    return [(e["index"], e["seq"], e["step"]) for e in scan["entries"]
            if e["valid"] and e["seq"] not in named and e["seq"] > oldest]


def retire(path: Path, stale: list[tuple[int, int, int]]) -> None:
    """Zeroes the ring entries of `stale` records, under the core's lock (no writer runs beside it; a lease
    where the file system has no flock)."""
    try:
        lock = _core.FileLock(f"{path}.lock", str(path))
    except _core.CoreError as exc:  # held by another process: the message names it
        raise CheckpointError(str(exc)) from None
    with lock:
        ring_offset = int(_core.scan(str(path), False)["geometry"]["ring_offset"])
        fd = os.open(path, os.O_RDWR)
        try:
            for index, _, _ in stale:
                os.pwrite(fd, bytes(BLOCK), ring_offset + index * BLOCK)
            os.fdatasync(fd)
        finally:
            os.close(fd)


def rank_store(path: Path, named: set[int], **knobs: Any) -> Checkpointer:
    """The rank's store, its unnamed newer records retired first (see the module doc)."""
    sync_once(path)
    ckpt = store(path, **knobs)
    stale = stale_records(path, named)
    if stale:
        ckpt.close()  # the open store counts them among its kept commits: reopen after retiring
        retire(path, stale)
        log.warning("%s: retired %d record(s) no global commit names (seq %s)", path.name, len(stale),
                    ", ".join(str(s) for _, s, _ in sorted(stale, key=lambda x: x[1])))
    return ckpt
