"""pccheck as DCP's StorageReader: loads the newest global checkpoint of a directory whose every part
verifies (pccheck/dcp/sets.py, the rule shared with the catalog and pccheck-inspect), or the newest one of
`step`. Byte ranges are read chunk by chunk, each chunk checked against its CRC32C, so resharding (N ranks
saved, M load) reads only what each rank needs.

    dcp.load(state_dict, storage_reader=pccheck.dcp.Reader(path))

Nothing is unpickled from the files by this reader: the metadata is JSON. DCP's default planner unpickles
non-tensor values (byte items) with `torch.load(weights_only=False)`; every byte item is first loaded
here with `weights_only=True`, which refuses anything but plain data and tensors, so a hostile file stops
the load with an error instead of running code.
"""
from __future__ import annotations

import dataclasses
import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.distributed.checkpoint.metadata import Metadata
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from ..corefile import PayloadReader, Scratch
from ..errors import CheckpointError
from . import metadata_json
from .items import BYTES, ItemLocation
from .sets import Checkpoint, FileSet, newest, scan_directory, skipped_newer

log = logging.getLogger("pccheck.dcp")


Pick = tuple[Optional[str], int]  # (set id, seq in the commit file): one checkpoint


def choose(path: Union[str, os.PathLike], step: Optional[int] = None, skip: frozenset[Pick] = frozenset(),
           pick: Optional[Pick] = None) -> tuple[FileSet, Checkpoint]:
    """The DCP checkpoint a load takes from `path` (newest valid, or newest valid of `step`, passing over the
    checkpoints in `skip`, or exactly `pick`); every newer one passed over is logged with which rank and why;
    CheckpointError when there is none."""
    sets = [s for s in scan_directory(path) if s.kind == "dcp"]
    for s in sets:
        for c in s.checkpoints:
            if (s.set_id, c.seq) in skip or (pick is not None and (s.set_id, c.seq) != pick):
                c.valid, c.why = False, c.why or ("failed to load" if pick is None else "not the one asked for")
    found = newest(sets, step)
    for s in sets:
        if s.error:
            log.warning("%s: %s", s.label, s.error)
        for c in skipped_newer(s, found[1] if found and found[0] is s else None):
            if pick is None and (step is None or c.step == step):
                log.warning("skipping step %s (checkpoint %s) of the %s: %s", c.step, c.gseq or "?", s.label, c.why)
    if found is None:
        what = f"of step {step} " if step is not None else ""
        raise CheckpointError(f"no valid DCP checkpoint {what}in {path}")
    return found


class Reader(StorageReader):
    """Reads the newest valid global checkpoint of `path` (or the newest of `step`)."""

    def __init__(self, path: Union[str, os.PathLike], *, step: Optional[int] = None,
                 skip: frozenset[Pick] = frozenset(), pick: Optional[Pick] = None) -> None:
        super().__init__()
        self.path = Path(path)
        self.step = step
        self.skip = skip
        self.pick = pick
        self.chosen: Optional[tuple[FileSet, Checkpoint]] = None
        self._locations: dict[Any, ItemLocation] = {}
        self._parts: list[dict[str, Any]] = []

    def reset(self, checkpoint_id: Union[str, os.PathLike, None] = None) -> None:
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.chosen = None

    def read_metadata(self) -> Metadata:
        self.chosen = choose(self.path, self.step, self.skip, self.pick)
        s, cp = self.chosen
        assert cp.doc is not None
        md = metadata_json.decode(cp.doc["metadata"])
        self._parts = cp.doc["ranks"]
        log.info("loading step %s (checkpoint %s of the %s)", cp.step, cp.gseq, s.label)
        return md

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        self._locations = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        # Every rank chose on its own: all must load the coordinator's choice (a save may have committed since).
        assert self.chosen is not None
        pick = {"set": self.chosen[0].set_id, "gseq": self.chosen[1].gseq}
        return [dataclasses.replace(p, storage_data=pick) for p in plans]

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        assert self.chosen is not None
        mine = {"set": self.chosen[0].set_id, "gseq": self.chosen[1].gseq}
        if plan.storage_data is not None and plan.storage_data != mine:
            raise CheckpointError(f"ranks chose different checkpoints ({plan.storage_data} on the coordinator, "
                                  f"{mine} here): was a save running during the load?")
        by_rank: dict[int, list[Any]] = {}
        for req in plan.items:
            rank = self._locations[req.storage_index].rank
            if rank >= len(self._parts):
                raise CheckpointError(f"{req.storage_index.fqn}: the metadata places it on rank {rank} of {len(self._parts)}")
            by_rank.setdefault(rank, []).append(req)
        scratch = Scratch()
        for rank, reqs in sorted(by_rank.items()):
            part = self._parts[rank]
            reqs.sort(key=lambda r: self._locations[r.storage_index].offset)
            with PayloadReader(str(self.path / part["file"]), part["seq"], part["table_crc"], scratch) as src:
                for req in reqs:
                    self._serve(req, self._locations[req.storage_index], src, planner)
        fut: Future[None] = Future()
        fut.set_result(None)
        return fut

    def _serve(self, req: Any, loc: ItemLocation, src: PayloadReader, planner: LoadPlanner) -> None:
        raw = src.read(loc.offset, loc.length)
        if req.type == LoadItemType.BYTE_IO or loc.dtype == BYTES:
            _refuse_code(raw, req.storage_index.fqn)
            planner.load_bytes(req, io.BytesIO(raw))
            return
        dtype = metadata_json.dtype_from_name(loc.dtype)
        stored = torch.frombuffer(raw, dtype=torch.uint8) if loc.length else torch.empty(0, dtype=torch.uint8)
        stored = stored.view(dtype).view(loc.shape)
        for dim, (start, length) in enumerate(zip(req.storage_offsets, req.lengths)):
            stored = stored.narrow(dim, start, length)
        target = planner.resolve_tensor(req).detach()
        if target.size() != stored.size():
            raise CheckpointError(f"{req.storage_index.fqn}: stored piece has shape {tuple(stored.size())}, "
                                  f"the load asks for {tuple(target.size())}")
        target.copy_(stored)
        planner.commit_tensor(req, target)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Union[str, os.PathLike]) -> bool:
        return Path(checkpoint_id).is_dir()


def _refuse_code(raw: memoryview, fqn: str) -> None:
    """Raises unless the byte item loads with torch.load(weights_only=True) (plain data and tensors only)."""
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, TypeError, AttributeError, KeyError,
            IndexError, ImportError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        reason = next((ln for ln in lines if "GLOBAL" in ln or "Unsupported" in ln), lines[-1] if lines else "")[:300]
        raise CheckpointError(f"value {fqn!r} is not plain data (torch.load(weights_only=True) refused it: {reason}); "
                              "not loaded: unpickling it could run code") from None
