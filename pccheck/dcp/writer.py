"""pccheck as DCP's StorageWriter: every rank writes its items into its own preallocated core file (slots,
chunk CRCs, writer threads, O_DIRECT), and the coordinator's `finish` commits the checkpoint globally, in
the set's commit file, only after every rank's part is durable (DCP calls `finish` once every rank's
`write_data` has returned, and `write_data` returns once the rank's core commit is durable). A crash at
any instant leaves the previous global commit and every part it names intact (pccheck/dcp/stores.py).

    dcp.save(state_dict, storage_writer=pccheck.dcp.Writer(path))

Every save through `path` is a new checkpoint in that path's ring. Saves through one path must not
overlap (DCP's rule for one process group anyway): wait for an async save before the next.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch.distributed.checkpoint.metadata import Metadata, MetadataIndex, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from .. import _core
from ..corefile import table_crc
from ..errors import CheckpointError
from ..payload import Encoded
from . import commit as commit_doc
from . import metadata_json, stores
from .items import ItemLocation, as_tensor, encode_part
from .names import SetName, parse
from .sets import read_commits

log = logging.getLogger("pccheck.dcp")
_RANK_RESULT = "__pccheck_rank__"  # the WriteResult that carries a rank's part record to the coordinator
_chosen_sets: dict[tuple[str, int], SetName] = {}  # the set this process writes, per directory and world


class Writer(StorageWriter):
    """Knobs: `step` recorded with the checkpoint (default: the set's checkpoint number), `keep` global
    checkpoints never overwritten, `max_async` saves in flight per core store, `threads` writer threads,
    `chunk_size`, `memory_budget`, `durability` (as pccheck.Checkpointer), `slot_size` bytes per rank slot
    (default: the first part plus an eighth), `check_replicated` compare plain tensors across ranks."""

    def __init__(self, path: Union[str, os.PathLike], *, step: Optional[int] = None, keep: int = 2,
                 max_async: int = 1, threads: int = 2, chunk_size: int = 8 << 20,
                 memory_budget: Optional[int] = None, durability: Optional[str] = None,
                 slot_size: Optional[int] = None, check_replicated: bool = True) -> None:
        super().__init__()
        if keep < 1 or max_async < 1:
            raise ValueError("keep and max_async must be at least 1")
        self.path = Path(path)
        self.step = step
        self.keep, self.max_async = keep, max_async
        self.store_knobs = dict(threads=threads, chunk_size=chunk_size, memory_budget=memory_budget,
                                durability=durability)
        self.slot_size = slot_size
        self.check_replicated = check_replicated
        self.save_id = os.urandom(8).hex()
        self._replicated: list[Any] = []

    # -- DCP's call order -------------------------------------------------------------------------------
    def reset(self, checkpoint_id: Union[str, os.PathLike, None] = None) -> None:
        if checkpoint_id:
            self.path = Path(checkpoint_id)
        self.save_id = os.urandom(8).hex()

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if not kwargs.get("use_collectives", True):
            raise CheckpointError("pccheck.dcp.Writer needs use_collectives=True (one global commit per checkpoint)")

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        # Plain tensors are planned by every rank and deduplicated to one: keep them to compare across ranks.
        self._replicated = [i for i in plan.items if i.type == WriteItemType.TENSOR] if self.check_replicated else []
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        world = len(plans)
        self.path.mkdir(parents=True, exist_ok=True)
        name = _set_for(self.path, world)
        commit_path = self.path / name.commit_file
        stores.sync_once(commit_path)
        commits = read_commits(str(commit_path)) if commit_path.exists() else []
        gseq = 1 + max((doc["gseq"] for _, doc in commits if doc is not None), default=0)
        kept = [doc for rec, doc in commits if rec["valid"]][: self.keep]
        named = [{p["seq"] for d in kept if d is not None for p in d["ranks"][r : r + 1]} for r in range(world)]
        step = self.step if self.step is not None else gseq
        info = {"set": name.set_id, "world": world, "gseq": gseq, "step": step}
        return [dataclasses.replace(p, storage_data={**info, "rank": r, "named": sorted(named[r])})
                for r, p in enumerate(plans)]

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        info = plan.storage_data
        name = SetName(info["set"], info["world"])
        rank = info["rank"]
        path = self.path / name.rank_file(rank)
        items = []
        for item in plan.items:
            data = planner.resolve_data(item)
            items.append((item.index, as_tensor(data), item.type == WriteItemType.BYTE_IO))
        head = {k: info[k] for k in ("set", "world", "rank", "gseq", "step")}
        enc, locations = encode_part(items, head, rank)
        crcs = _replicated_crcs(self._replicated, planner, {i: t for i, t, _ in items})
        # An eighth of headroom when the file is created (a state may grow a little); an existing file's
        # slots only have to hold this part.
        slot_size = self.slot_size or (enc.nbytes + enc.nbytes // 8 if not path.exists() else None)
        ckpt = stores.rank_store(path, set(info["named"]), keep=self.keep + self.max_async, max_async=self.max_async,
                                 slot_size=slot_size, **self.store_knobs)
        try:
            handle = ckpt.save_encoded(info["step"], enc)
        except ValueError as exc:  # the core's begin(): the part is larger than the file's slots
            raise CheckpointError(f"rank {rank}: {exc}; pass Writer(slot_size=...) large enough for the largest "
                                  "state, in a new directory") from None
        except CheckpointError as exc:
            if "in use by another process" in str(exc):
                raise CheckpointError(f"{exc}: a process that saved through {self.path} keeps its files open; "
                                      "call pccheck.dcp.close_all() there before saving from another process "
                                      "(dcp.async_save in PROCESS mode writes from a daemon)") from None
            raise
        if not handle.wait() or handle.outcome != "committed":
            raise CheckpointError(f"rank {rank}: part of checkpoint {info['gseq']} was not committed ({handle.outcome})")
        part = {**head, "file": path.name, "seq": handle.seq, "payload_len": enc.nbytes,
                "table_crc": _table_crc(path, handle.seq), "replicated": crcs}
        results = [WriteResult(index=i, size_in_bytes=loc.length, storage_data=loc) for i, loc in locations.items()]
        results.append(WriteResult(index=MetadataIndex(f"{_RANK_RESULT}{rank}"), size_in_bytes=0, storage_data=part))
        fut: Future[list[WriteResult]] = Future()
        fut.set_result(results)
        return fut

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        parts: dict[int, dict[str, Any]] = {}
        locations: dict[MetadataIndex, ItemLocation] = {}
        for rank_results in results:
            for wr in rank_results:
                if wr.index.fqn.startswith(_RANK_RESULT):
                    parts[wr.storage_data["rank"]] = wr.storage_data
                else:
                    locations[wr.index] = wr.storage_data
        world = len(results)
        if sorted(parts) != list(range(world)):
            raise CheckpointError(f"global commit refused: parts of ranks {sorted(parts)} of {world} arrived")
        _check_replicated(parts)
        metadata.storage_data = locations
        metadata.storage_meta = self.storage_meta()
        head = parts[0]
        set_name = SetName(head["set"], world)
        doc = {"set": set_name.set_id, "world": world, "gseq": head["gseq"], "step": head["step"],
               "ranks": [{k: parts[r][k] for k in ("rank", "file", "seq", "payload_len", "table_crc")}
                         for r in range(world)],
               "metadata": metadata_json.encode(metadata, locations)}
        raw = commit_doc.encode(doc)
        ckpt = stores.store(self.path / set_name.commit_file, keep=self.keep, max_async=self.max_async,
                            slot_size=2 * len(raw), **self.store_knobs)
        t0 = time.monotonic()
        handle = ckpt.save_encoded(doc["step"], Encoded(raw, [], len(raw)))
        if not handle.wait() or handle.outcome != "committed":
            raise CheckpointError(f"global commit of checkpoint {doc['gseq']} was not committed ({handle.outcome})")
        log.info("global commit of step %d (checkpoint %d of %s) is durable (%.3f s)", doc["step"], doc["gseq"],
                 set_name.commit_file, time.monotonic() - t0)

    def storage_meta(self) -> Optional[StorageMeta]:
        return StorageMeta(checkpoint_id=str(self.path), save_id=self.save_id)

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: Union[str, os.PathLike]) -> bool:
        return Path(checkpoint_id).is_dir() or not Path(checkpoint_id).exists()


def _set_for(directory: Path, world: int) -> SetName:
    """The set this process writes for `world` ranks: the one it wrote before, else the set of that world
    size with the newest global commit, else a new one."""
    key = (str(directory), world)
    if key not in _chosen_sets:
        best: Optional[tuple[int, SetName]] = None
        for n in sorted(os.listdir(directory)):
            parsed = parse(n)
            if parsed is None or parsed[1] is not None or parsed[0].world != world:
                continue
            newest = max((rec["time_ns"] or 0 for rec, _ in read_commits(str(directory / n))), default=0)
            if best is None or newest > best[0]:
                best = (newest, parsed[0])
        _chosen_sets[key] = best[1] if best is not None else SetName.new(world)
    return _chosen_sets[key]


def _table_crc(path: Path, seq: int) -> int:
    scan = _core.scan(str(path), False)
    rec = next(e for e in scan["entries"] if e.get("seq") == seq)
    return table_crc(str(path), scan["geometry"], rec)


def _replicated_crcs(items: list[Any], planner: SavePlanner, written: dict[MetadataIndex, torch.Tensor]) -> dict[str, int]:
    """CRC32C of every plain tensor this rank planned (before DCP kept one copy)."""
    out = {}
    for item in items:
        t = written.get(item.index)
        if t is None:
            t = as_tensor(planner.resolve_data(item))
        t = t.cpu() if t.device.type != "cpu" else t
        out[item.index.fqn] = _core.crc32c(t.reshape(-1).view(torch.uint8).numpy()) if t.nbytes else 0
    return out


def _check_replicated(parts: dict[int, dict[str, Any]]) -> None:
    """Refuses a checkpoint whose plain (replicated) tensors differ between ranks: DCP keeps one rank's copy."""
    by_fqn: dict[str, dict[int, list[int]]] = {}
    for rank, part in parts.items():
        for fqn, crc in part["replicated"].items():
            by_fqn.setdefault(fqn, {}).setdefault(crc, []).append(rank)
    bad = {fqn: groups for fqn, groups in by_fqn.items() if len(groups) > 1}
    if bad:
        fqn, groups = sorted(bad.items())[0]
        who = "; ".join(f"ranks {ranks} hold CRC32C {crc:08x}" for crc, ranks in sorted(groups.items(), key=lambda g: g[1]))
        more = f" (and {len(bad) - 1} more tensors)" if len(bad) > 1 else ""
        raise CheckpointError(
            f"checkpoint refused: tensor {fqn!r} is a plain (replicated) tensor but differs between ranks: {who}{more}; "
            "DCP would keep one rank's copy. Make it a DTensor, or give each rank its own key")
