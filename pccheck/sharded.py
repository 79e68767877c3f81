"""Multi-rank checkpoints: every rank writes a disjoint part into its own file, one global commit.

Files (in the checkpoint directory, one per rank, each a normal pccheck core file, docs/format.md):
    pccheck.rank<RRRRR>-of-<NNNNN>.ckpt      (world size 1 keeps the single-process `pccheck.ckpt`)

Part payload (the opaque payload of one core checkpoint in a rank's file; docs/multirank.md):
    8 B magic `PCCKPRT1`, u32 LE length J, J bytes of JSON (the part's description),
    the rank's *local* state as a safetensors stream (the RNGs: they differ between ranks on GPUs),
    bytes [begin, end) of the *replicated* state's safetensors stream (the model, optimizer, scheduler,
    data position, step: identical on every rank under DDP), split by bytes: rank r of N writes
    [floor(r*L/N), floor((r+1)*L/N)) of the L-byte stream, so each rank writes about L/N bytes.

Global commit: a step is checkpointed when every rank has committed its part (`global_step`). Ranks
learn that at step boundaries, in the main thread, from one all-gather on pccheck's own gloo group (the
same exchange carries the loss for the mean and the stop flag). Recovery takes the newest step that
every rank of a file set holds valid and says which rank held a newer one back.

Slot retention: each rank's core keeps `keep + max_async` newest commits; before every save, a rank
checks that the save cannot free the slot of the last global step (its commits and checkpoints in
flight newer than the global step must stay below the core's keep). When any rank would break that,
all ranks first wait for their writes (all agree at the save, so nobody waits alone).

Lineage: on every start, before its first save, each rank retires (zeroes the ring entries of) the
records in its file that are newer than the step the run resumed from (all of them on a fresh start).
So a step found on all ranks was always written by one launch, and the slot of the resume step is
among the core's keep newest when the store opens.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from . import _core, payload
from .checkpointer import FILE_NAME, Checkpointer, PendingCheckpoint, records
from .checkpointing import Loaded
from .distributed import Comm
from .errors import CheckpointError

log = logging.getLogger("pccheck.sharded")

PART_MAGIC = b"PCCKPRT1"
PART_FORMAT = "pccheck.part.v1"
_RANK_RE = re.compile(r"^pccheck\.rank(\d{5})-of-(\d{5})\.ckpt$")
_BLOCK = 4096


def rank_file_name(rank: int, world: int) -> str:
    """The file rank `rank` of `world` writes (`pccheck.ckpt` for a single process)."""
    if world == 1:
        return FILE_NAME
    return f"pccheck.rank{rank:05d}-of-{world:05d}.ckpt"


def parse_file_name(name: str) -> Optional[tuple[int, int]]:
    """(rank, world) of a checkpoint file name, or None for anything else."""
    if name == FILE_NAME:
        return 0, 1
    m = _RANK_RE.match(name)
    if not m:
        return None
    rank, world = int(m.group(1)), int(m.group(2))
    return (rank, world) if 0 <= rank < world else None


def split_range(total: int, rank: int, world: int) -> tuple[int, int]:
    return total * rank // world, total * (rank + 1) // world


# ------------------------------------------------------------------------------------------- part payload


def split_state(state: Mapping[str, Any], local_keys: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(replicated, local) parts of a state: the top-level keys in `local_keys` differ between ranks."""
    replicated = {k: v for k, v in state.items() if k not in local_keys}
    local = {k: v for k, v in state.items() if k in local_keys}
    return replicated, local


def _materialize(enc: payload.Encoded) -> bytes:
    parts = [enc.header]
    for t in enc.tensors:
        if t.nbytes:
            parts.append(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return b"".join(parts)


def _slice(enc: payload.Encoded, begin: int, end: int) -> tuple[bytes, list[torch.Tensor]]:
    """Bytes [begin, end) of an encoded stream: a copy of the header's share, views of the tensors'."""
    h = len(enc.header)
    head = bytes(enc.header[begin:min(end, h)]) if begin < h else b""
    views: list[torch.Tensor] = []
    pos = h
    for t in enc.tensors:
        n = t.nbytes
        lo, hi = max(begin, pos), min(end, pos + n)
        if lo < hi:
            views.append(t.reshape(-1).view(torch.uint8)[lo - pos : hi - pos])
        pos += n
    return head, views


@dataclass
class EncodedPart:
    enc: payload.Encoded  # what this rank writes
    header_crc: int  # CRC32C of the replicated stream's header: must agree on every rank
    total: int  # length of the replicated stream


def encode_part(state: Mapping[str, Any], *, rank: int, world: int, step: int, run: str,
                local_keys: Sequence[str] = ()) -> EncodedPart:
    replicated, local = split_state(state, local_keys)
    full = payload.encode(replicated)
    local_bytes = _materialize(payload.encode(local))
    begin, end = split_range(full.nbytes, rank, world)
    head, views = _slice(full, begin, end)
    header_crc = _core.crc32c(full.header)
    meta = {
        "format": PART_FORMAT, "rank": rank, "world": world, "step": step, "run": run,
        "total": full.nbytes, "begin": begin, "end": end, "local_len": len(local_bytes), "header_crc": header_crc,
    }
    js = json.dumps(meta, separators=(",", ":")).encode()
    prefix = PART_MAGIC + struct.pack("<I", len(js)) + js + local_bytes + head
    nbytes = len(prefix) + sum(v.nbytes for v in views)
    return EncodedPart(payload.Encoded(prefix, views, nbytes), header_crc, full.nbytes)


def parse_part(buf: Union[bytes, bytearray, memoryview]) -> tuple[dict[str, Any], memoryview, memoryview]:
    """(description, local stream, replicated bytes) of a part payload; CheckpointError when malformed."""
    view = memoryview(buf)
    if len(view) < 12 or bytes(view[:8]) != PART_MAGIC:
        raise CheckpointError("not a pccheck part payload (magic)")
    (n,) = struct.unpack_from("<I", view, 8)
    if 12 + n > len(view):
        raise CheckpointError("part description is longer than the payload")
    try:
        meta = json.loads(bytes(view[12 : 12 + n]))
        ok = meta.get("format") == PART_FORMAT and all(
            isinstance(meta.get(k), int) and meta[k] >= 0
            for k in ("rank", "world", "step", "total", "begin", "end", "local_len", "header_crc")
        ) and isinstance(meta.get("run"), str)
    except (ValueError, UnicodeDecodeError, AttributeError):
        ok = False
    if not ok:
        raise CheckpointError("part description is not valid")
    start = 12 + n
    data_start = start + meta["local_len"]
    if not (meta["begin"] <= meta["end"] <= meta["total"]) or data_start + meta["end"] - meta["begin"] != len(view):
        raise CheckpointError("part lengths do not add up to the payload")
    return meta, view[start:data_start], view[data_start:]


# --------------------------------------------------------------------------------- scanning and analysis


def list_files(directory: Union[str, Path]) -> list[tuple[int, int, str]]:
    """(world, rank, name) of every checkpoint file in `directory`, sorted."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    out = []
    for entry in os.scandir(directory):
        parsed = parse_file_name(entry.name)
        if parsed is not None and entry.is_file():
            out.append((parsed[1], parsed[0], entry.name))
    return sorted(out)


def scan_summary(path: Union[str, Path]) -> dict[str, Any]:
    """What one rank's file holds: its commit records (valid or not), without reading payloads."""
    path = Path(path)
    try:
        scan = _core.scan(str(path), False)
    except (_core.CoreError, OSError, ValueError) as exc:
        return {"error": str(exc), "records": [], "geometry": None}
    recs = [
        {k: r.get(k) for k in ("seq", "step", "slot", "payload_len", "time_ns", "valid", "reason")}
        for r in records(scan)
    ]
    return {"error": None, "records": sorted(recs, key=lambda r: -r["seq"]), "geometry": scan["geometry"]}


def _valid_steps(summary: Optional[dict[str, Any]]) -> dict[int, int]:
    """step -> seq of the newest valid record of that step."""
    out: dict[int, int] = {}
    for r in (summary or {}).get("records", []):
        if r["valid"] and r["seq"] > out.get(r["step"], 0):
            out[r["step"]] = r["seq"]
    return out


def analyze(files: list[tuple[int, int, str]], summaries: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per file set (one world size): every rank's valid steps, the global step and who held a newer one back."""
    worlds = sorted({w for w, _, _ in files})
    sets = []
    for world in worlds:
        names = {r: n for w, r, n in files if w == world}
        ranks = []
        for rank in range(world):
            name = names.get(rank, rank_file_name(rank, world))
            summary = summaries.get(name) if rank in names else None
            steps = _valid_steps(summary)
            ranks.append({
                "rank": rank, "file": name, "exists": rank in names,
                "error": None if rank in names else "missing", "steps": steps,
                "newest_step": max(steps) if steps else None,
                "records": (summary or {}).get("records", []),
            })
            if summary is not None and summary.get("error"):
                ranks[-1]["error"] = summary["error"]
        common = set(ranks[0]["steps"])
        for r in ranks[1:]:
            common &= set(r["steps"])
        union = set().union(*(r["steps"] for r in ranks))
        global_step = max(common) if common else None
        newest = max(union) if union else None
        held_back = []
        if newest is not None and newest != global_step:
            for r in ranks:
                if newest not in r["steps"]:
                    bad = [x for x in r["records"] if x["step"] == newest]
                    why = (f"its record of step {newest} is invalid ({bad[0]['reason']})" if bad
                           else (r["error"] and f"its file is unusable ({r['error']})")
                           or f"it has no commit of step {newest}")
                    held_back.append({"rank": r["rank"], "file": r["file"], "why": why})
        sets.append({
            "world": world, "ranks": ranks, "common_steps": sorted(common, reverse=True),
            "global_step": global_step, "newest_step": newest, "held_back": held_back,
        })
    return sets


def explain(s: dict[str, Any]) -> str:
    """One line on a file set's global step and what held a newer step back."""
    what = f"{s['world']}-rank set" if s["world"] > 1 else FILE_NAME
    if s["global_step"] is None:
        line = f"{what}: no step is held valid by every rank"
    else:
        line = f"{what}: global step {s['global_step']} (the newest step every rank holds valid)"
    if s["held_back"]:
        who = "; ".join(f"rank {h['rank']} ({h['file']}): {h['why']}" for h in s["held_back"])
        line += f"; newer step {s['newest_step']} is held back by {who}"
    return line


def describe_run_dir(path: Union[str, Path]) -> dict[str, Any]:
    """For pccheck-inspect: every rank's files and records, and each file set's global step.

    Returns {"directory", "sets": [{"world", "global_step", "newest_step", "held_back", "common_steps",
    "ranks": [{"rank", "file", "exists", "error", "newest_step", "steps" (step -> seq), "records",
    "size"}], "summary" (one line)}], "global_step" (newest over all sets), "resume_from" (the set and
    step a resume would try first)}. Reads only superblocks, commit rings and chunk tables.
    """
    directory = Path(path)
    files = list_files(directory)
    summaries = {n: scan_summary(directory / n) for _, _, n in files}
    sets = analyze(files, summaries)
    for s in sets:
        s["summary"] = explain(s)
        for r in s["ranks"]:
            p = directory / r["file"]
            r["size"] = p.stat().st_size if p.exists() else None
            r["steps"] = {str(k): v for k, v in sorted(r["steps"].items())}
    cands = _candidates(sets, None)
    return {
        "directory": str(directory),
        "sets": sets,
        "global_step": max((s["global_step"] for s in sets if s["global_step"] is not None), default=None),
        "resume_from": {"world": cands[0][0], "step": cands[0][1]} if cands else None,
    }


def _candidates(sets: list[dict[str, Any]], world_now: Optional[int]) -> list[tuple[int, int]]:
    """(world, step) to try, newest step first; on a tie the set of the current world size, then larger."""
    out = [(s["world"], step) for s in sets for step in s["common_steps"]]
    return sorted(out, key=lambda ws: (-ws[1], ws[0] != world_now, -ws[0]))


# ------------------------------------------------------------------------------------------------ recovery


@dataclass
class Recovered(Loaded):
    world: int = 1  # world size of the file set it came from
    held_back: list[dict[str, Any]] = field(default_factory=list)


def _read_part(directory: Path, name: str, seq: int, full: bool) -> tuple[dict[str, Any], bytes, memoryview]:
    path = directory / name
    n = _core.payload_length(str(path), seq)
    buf = bytearray(n)
    _core.read_payload(str(path), seq, buf)
    if full:  # a single-process pccheck.ckpt: the whole state in one stream, RNGs included
        return {"total": n, "begin": 0, "end": n, "local_len": 0, "full": True}, b"", memoryview(buf)
    meta, local, data = parse_part(buf)
    return meta, bytes(local), data


def _load_candidate(directory: Path, comm: Comm, s: dict[str, Any], step: int) -> Loaded:
    """Collective: reads the parts of `step` (part i by rank i % M), exchanges them, decodes everywhere."""
    world = s["world"]
    full = world == 1
    mine: dict[int, tuple[dict[str, Any], bytes, memoryview]] = {}
    report: dict[str, Any] = {}
    for i in range(world):
        if i % comm.world_size != comm.rank:
            continue
        r = s["ranks"][i]
        try:
            mine[i] = _read_part(directory, r["file"], r["steps"][step], full)
            meta = mine[i][0]
            report[str(i)] = {"meta": {k: v for k, v in meta.items()}}
        except (_core.CoreError, CheckpointError, OSError, ValueError, KeyError) as exc:
            report[str(i)] = {"error": f"rank {i} ({r['file']}): {exc}"}
    merged: dict[int, dict[str, Any]] = {}
    for rep in comm.allgather_json(report):
        merged.update({int(k): v for k, v in rep.items()})
    errors = [v["error"] for _, v in sorted(merged.items()) if "error" in v]
    if errors:
        raise CheckpointError("; ".join(errors))
    metas = [merged[i]["meta"] for i in range(world)]
    if not full:
        first = metas[0]
        for i, m in enumerate(metas):
            expect = split_range(first["total"], i, world)
            same = all(m[k] == first[k] for k in ("run", "total", "header_crc", "world", "step"))
            if not same or m["rank"] != i or (m["begin"], m["end"]) != expect or m["world"] != world or m["step"] != step:
                raise CheckpointError(
                    f"the parts of step {step} do not belong together (rank {i}: run {m['run']} step {m['step']} "
                    f"bytes {m['begin']}..{m['end']} of {m['total']}; rank 0: run {first['run']} of {first['total']})"
                )
    total = metas[0]["total"]
    stream = bytearray(total)
    local: Optional[bytearray] = None
    if not full and world == comm.world_size and comm.distributed:
        # N -> N (the usual resume): rank i read part i; one all-gather hands every rank all parts.
        meta, loc, data = mine[comm.rank]
        got = comm.allgather_bytes(bytes(loc) + bytes(data))
        for i, m in enumerate(metas):
            stream[m["begin"] : m["end"]] = got[i][m["local_len"] :]
            if i == comm.rank:
                local = bytearray(got[i][: m["local_len"]])
        del got
    else:
        for i, (meta, _, data) in mine.items():
            stream[meta["begin"] : meta["end"]] = data
        for i in range(world):
            comm.broadcast_into(stream, metas[i]["begin"], metas[i]["end"], src=i % comm.world_size)
    if not full and local is None:
        want = comm.rank % world  # M > N: ranks beyond N take the RNGs of rank m % N
        for i in range(world):
            buf = bytearray(mine[i][1]) if i in mine else bytearray(metas[i]["local_len"])
            comm.broadcast_into(buf, 0, len(buf), src=i % comm.world_size)
            if i == want:
                local = buf
    try:
        state = payload.decode(stream)
        if local is not None:
            state.update(payload.decode(local))
        ok, why = True, ""
    except CheckpointError as exc:
        ok, why = False, f"rank {comm.rank}: {exc}"
    outcomes = comm.allgather_json([ok, why])
    bad = [w for o, w in outcomes if not o]
    if bad:
        raise CheckpointError("; ".join(bad))
    return Loaded(step, state, f"{directory}#world={world},step={step}")


def recover(directory: Union[str, Path], comm: Comm) -> Optional[Recovered]:
    """Collective (every rank calls it): the newest step that every rank of some file set holds valid.

    Files are scanned and parts read by rank i % M (M = ranks now), then exchanged on `comm`, so each
    file is read once. Every skipped step is logged with its reason, and so is the rank that held back a
    step newer than the one loaded.
    """
    directory = Path(directory)
    files = comm.broadcast_json(list_files(directory) if comm.rank == 0 else None)
    files = [tuple(f) for f in files]
    mine = {n: scan_summary(directory / n) for i, (_, _, n) in enumerate(files) if i % comm.world_size == comm.rank}
    summaries: dict[str, dict[str, Any]] = {}
    for part in comm.allgather_json(mine):
        summaries.update(part)
    sets = analyze(files, summaries)  # type: ignore[arg-type]
    for s in sets:
        for r in s["ranks"]:
            r["steps"] = {int(k): v for k, v in r["steps"].items()}
    by_world = {s["world"]: s for s in sets}
    for s in sets:
        if s["held_back"] or s["global_step"] is not None:
            log.log(logging.WARNING if s["held_back"] else logging.INFO, "recovery: %s", explain(s))
    for world, step in _candidates(sets, comm.world_size):
        s = by_world[world]
        try:
            loaded = _load_candidate(directory, comm, s, step)
        except CheckpointError as exc:
            log.warning("recovery: skipping step %d of the %d-rank set: %s", step, world, exc)
            continue
        newer = [x for x in sets if x["newest_step"] is not None and x["newest_step"] > step]
        held = [h for x in newer for h in x["held_back"]] if newer else []
        if held:
            log.warning(
                "recovery: resuming from global step %d, not from step %d: held back by %s",
                step, max(x["newest_step"] for x in newer), "; ".join(f"rank {h['rank']} ({h['why']})" for h in held),
            )
        else:
            log.info("recovery: resuming from global step %d (%d-rank set)", step, world)
        return Recovered(loaded.step, loaded.state, loaded.source, world=world, held_back=held)
    return None


# ------------------------------------------------------------------------------------------------- retiring


def retire_newer(path: Union[str, Path], step: Optional[int]) -> list[tuple[int, int]]:
    """Zeroes the ring entries of records newer than `step` (all, when None): (seq, step) of each retired.

    An all-zero entry is empty (docs/format.md), so the core never sees these records again. Takes the
    core's lock file, so it never runs beside a writer of the file.
    """
    path = Path(path)
    if not path.exists():
        return []
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CheckpointError(f"{path} is in use by another process") from None
        try:
            scan = _core.scan(str(path), False)
        except _core.CoreError as exc:
            raise CheckpointError(f"{path} is not a usable pccheck file: {exc}") from None
        ring_offset = int(scan["geometry"]["ring_offset"])
        doomed = [e for e in scan["entries"] if e.get("step") is not None and (step is None or e["step"] > step)]
        if not doomed:
            return []
        fd = os.open(path, os.O_RDWR)
        try:
            zero = bytes(_BLOCK)
            for e in doomed:
                os.pwrite(fd, zero, ring_offset + int(e["index"]) * _BLOCK)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        return [(int(e["seq"]), int(e["step"])) for e in doomed]
    finally:
        os.close(lock_fd)  # releases the flock


# ------------------------------------------------------------------------------------------- checkpointer


class ShardedCheckpointer:
    """The pccheck checkpointer of one rank of a data-parallel run (see the module doc).

    `save`, `prepare`, `wait`, `load_latest` and `exchange` are collective: every rank calls them at the
    same step boundary, from the main thread. `close` is local (it also runs on the way out of an error).
    """

    def __init__(
        self,
        directory: Union[str, Path],
        comm: Comm,
        *,
        max_async: int = 2,
        keep: int = 2,
        threads: int = 2,
        chunk_size: int = 8 << 20,
        memory_budget: Optional[int] = None,
        durability: Optional[str] = None,
        run: Optional[str] = None,
        local_keys: Sequence[str] = (),
    ) -> None:
        self.directory = Path(directory)
        self.comm = comm
        self.local_keys = tuple(local_keys)
        self.rank, self.world = comm.rank, comm.world_size
        if self.world < 2:  # one process writes pccheck.ckpt, a plain safetensors stream: Checkpointer
            raise ValueError("ShardedCheckpointer needs 2 or more ranks; use pccheck.checkpointer.Checkpointer")
        self.file_name = rank_file_name(self.rank, self.world)
        # keep + max_async: the commits newer than the global step (at most max_async when ranks keep
        # pace) must not push the global step's slot out of the core's keep newest.
        self.inner = Checkpointer(
            self.directory, max_async=max_async, keep=keep + max_async, threads=threads, chunk_size=chunk_size,
            memory_budget=memory_budget, durability=durability, file_name=self.file_name,
        )
        self.path = self.inner.path
        self.run = run if run is not None else comm.broadcast_json(os.urandom(8).hex() if comm.rank == 0 else None)
        self.global_step: Optional[int] = None
        self._saves: list[PendingCheckpoint] = []  # this launch's saves newer than global_step
        self._retired = False
        self.waits_for_global = 0  # saves that had to wait for the global commit (slot retention)
        self.last_saved_step: Optional[int] = None

    # -- lifecycle ------------------------------------------------------------------------------------
    def load_latest(self) -> Optional[Recovered]:
        loaded = recover(self.directory, self.comm)
        self._retire(loaded.step if loaded is not None else None)
        if loaded is not None:
            self.global_step = loaded.step
        return loaded

    def _retire(self, base: Optional[int]) -> None:
        """Before the first save of this launch: forget the records newer than the resume step."""
        if self._retired:
            return
        gone = retire_newer(self.path, base)
        if gone:
            steps = ", ".join(str(s) for _, s in sorted(gone))
            log.warning(
                "rank %d: retired %d checkpoint(s) newer than %s in %s (steps %s): not globally committed",
                self.rank, len(gone), f"step {base}" if base is not None else "a fresh start", self.path.name, steps,
            )
        self.comm.barrier()
        self._retired = True

    def _encode(self, step: int, state: Mapping[str, Any]) -> EncodedPart:
        return encode_part(state, rank=self.rank, world=self.world, step=step, run=self.run, local_keys=self.local_keys)

    def prepare(self, state: Mapping[str, Any]) -> None:
        self._retire(None)
        self.inner.prepare_encoded(self._encode(int(state.get("step", 0)), state).enc)

    def save(self, step: int, state: Mapping[str, Any]) -> PendingCheckpoint:
        self._retire(None)
        part = self._encode(step, state)
        self._gate(step, part)
        hook = os.environ.get("PCCHECK_TEST_KILL_IN_COMMIT")
        if hook and hook == f"{self.rank}:{step}":
            _die_in_commit(self, step, part.enc)
        handle = self.inner.save_encoded(step, part.enc)
        self._saves.append(handle)
        self.last_saved_step = step
        return handle

    def before_update(self) -> None:
        self.inner.before_update()

    def wait(self) -> None:
        """Until this rank's checkpoints are durable, then learns the global step (collective)."""
        self.inner.wait()
        self.exchange()

    def last_committed_step(self) -> Optional[int]:
        return self.global_step

    def durable_seconds(self) -> Optional[float]:
        return self.inner.durable_seconds()

    def close(self) -> None:
        self.inner.close()

    # -- global commit --------------------------------------------------------------------------------
    def _core_keep(self) -> int:
        store = self.inner._store
        return int(store.geometry["keep"]) if store is not None else self.inner.keep

    def _live(self) -> list[PendingCheckpoint]:
        """Saves newer than the global step that hold (or may come to hold) a committed slot."""
        live = []
        for h in self._saves:
            try:
                h.done()
            except CheckpointError:
                continue
            if h.outcome in ("pending", "committed"):
                live.append(h)
        return live

    def _gate(self, step: int, part: EncodedPart) -> None:
        """Collective, before each save: same replicated header everywhere; the global step's slot stays."""
        need = len(self._live()) >= self._core_keep()
        rows = self.comm.allgather_f64([1.0 if need else 0.0, float(part.header_crc), float(part.total)])
        if any(r[1:] != rows[0][1:] for r in rows):
            diff = [i for i, r in enumerate(rows) if r[1:] != rows[0][1:]]
            raise CheckpointError(
                f"checkpoint at step {step}: ranks {diff} hold a different replicated state than rank 0 "
                f"(header CRC / length differ); the state is not replicated"
            )
        if any(r[0] for r in rows):
            self.waits_for_global += 1
            who = [i for i, r in enumerate(rows) if r[0]]
            log.info("checkpoint at step %d waits for the global commit (ranks %s are %d checkpoints ahead of step %s)",
                     step, who, self._core_keep(), self.global_step)
            self.wait()
            if len(self._live()) >= self._core_keep():  # cannot happen: every rank is idle and committed
                raise CheckpointError(f"checkpoint at step {step}: global commit did not advance past {self.global_step}")

    def commit_flags(self) -> list[float]:
        """Per save newer than the global step: 1 committed here, 0 not (yet), -1 failed."""
        flags = []
        for h in self._saves:
            try:
                h.done()
                flags.append(1.0 if h.outcome == "committed" else 0.0)
            except CheckpointError:
                flags.append(-1.0)
        return flags

    def apply(self, mins: list[float]) -> None:
        """Takes the element-wise minimum of every rank's commit_flags()."""
        for h, m in zip(self._saves, mins):
            if m < 0:
                local = h.outcome == "failed"
                raise CheckpointError(f"checkpoint at step {h.step} failed on {'this rank' if local else 'another rank'}")
        newest = None
        for h, m in zip(self._saves, mins):
            if m >= 1:
                newest = h.step
        if newest is not None:
            self.global_step = newest
            self._saves = [h for h in self._saves if h.step > newest]

    def exchange(self) -> None:
        """Collective, at a step boundary (main thread, pccheck's gloo group): every rank's commit state in
        one all-reduce of a few float64s (log2(N) latency, whatever N); the global step moves on."""
        flags = self.commit_flags()
        self.apply(self.comm.allreduce_f64([0.0, *flags], "min")[1:])


def _die_in_commit(ckpt: ShardedCheckpointer, step: int, enc: payload.Encoded) -> None:
    """Test hook (PCCHECK_TEST_KILL_IN_COMMIT=rank:step): once every other rank has committed `step`,
    this rank writes all chunks of its part but the last and is SIGKILLed before it can commit."""
    import signal
    import time

    deadline = time.monotonic() + 60
    others = [ckpt.directory / rank_file_name(r, ckpt.world) for r in range(ckpt.world) if r != ckpt.rank]
    while time.monotonic() < deadline and not all(step in _valid_steps(scan_summary(p)) for p in others):
        time.sleep(0.01)
    ckpt.inner.prepare_encoded(enc)
    store = ckpt.inner._store
    assert store is not None
    data = _materialize(enc)
    chunk = int(store.geometry["chunk_size"])
    seq = store.begin(step, len(data), True)
    n_chunks = -(-len(data) // chunk)
    for i in range(n_chunks - 1):
        index = store.acquire()
        store.buffer(index)[:chunk] = data[i * chunk : (i + 1) * chunk]
        store.submit(seq, index, i, chunk)
    while store.stats["bytes_written"] < (n_chunks - 1) * chunk and time.monotonic() < deadline:
        time.sleep(0.001)
    log.warning("rank %d: test hook: killed in the middle of the commit of step %d", ckpt.rank, step)
    logging.shutdown()
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = [
    "ShardedCheckpointer", "describe_run_dir", "recover", "retire_newer", "rank_file_name", "parse_file_name",
    "encode_part", "parse_part", "analyze", "explain",
]
