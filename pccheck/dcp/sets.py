"""What a checkpoint directory holds, set by set, and which checkpoint a load takes: the one rule shared by
pccheck.dcp.Reader, pccheck.catalog and pccheck-inspect.

A directory may hold several file sets: DCP sets (pccheck/dcp/names.py; one per run and world size) and
single pccheck files (`pccheck.ckpt` of a one-process run, or any other core file). Each set is judged on
its own: a checkpoint of a DCP set is valid when its global commit verifies and every rank part it names
verifies (same length and chunk-table CRC; with `verify`, every payload chunk too); a checkpoint of a
single file is valid when its record (and, with `verify`, its payload) does. A load takes the newest valid
checkpoint over all sets, by commit time (the commit record's clock): a later launch's checkpoint is the
newest even when its step is lower (a fresh run in an old directory). Reads no tensor data.
No torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

from .. import _core
from ..corefile import table_crc
from ..errors import CheckpointError
from . import commit as commit_doc
from .names import SetName, parse

SUPER_MAGIC = b"PCCKSUPR"


@dataclass
class Checkpoint:
    """One checkpoint of a set: a global commit (DCP) or one record (single file)."""

    seq: int  # core seq in the commit file (DCP) or in the single file
    step: Optional[int]
    time_ns: Optional[int]
    valid: bool
    why: Optional[str] = None  # why not valid
    gseq: Optional[int] = None  # DCP: the set's checkpoint number
    doc: Optional[dict[str, Any]] = None  # DCP: the decoded global commit


@dataclass
class FileSet:
    kind: str  # "dcp" | "file"
    world: int
    files: list[str]  # paths, the commit file first for DCP
    set_id: Optional[str] = None
    checkpoints: list[Checkpoint] = field(default_factory=list)  # newest first
    error: Optional[str] = None  # the set cannot be read at all

    @property
    def label(self) -> str:
        if self.kind == "dcp":
            return f"{self.world}-rank DCP set {self.set_id}"
        return os.path.basename(self.files[0])

    def newest_valid(self, step: Optional[int] = None) -> Optional[Checkpoint]:
        return next((c for c in self.checkpoints if c.valid and (step is None or c.step == step)), None)


def _scan(path: str, verify: bool, cache: dict[tuple[str, bool], Any]) -> dict[str, Any]:
    key = (path, verify)
    if key not in cache:
        try:
            cache[key] = _core.scan(path, verify)
        except (_core.CoreError, OSError, ValueError) as exc:
            cache[key] = CheckpointError(str(exc))
    got = cache[key]
    if isinstance(got, CheckpointError):
        raise got
    return got


def _is_core_file(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(8) == SUPER_MAGIC
    except OSError:
        return False


def _records(scan: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted((e for e in scan["entries"] if e.get("seq") is not None), key=lambda e: -e["seq"])


def _check_part(directory: str, part: dict[str, Any], verify: bool, cache: dict) -> Optional[str]:
    """None when rank part `part` of a global commit verifies in its file, else why not."""
    path = os.path.join(directory, part["file"])
    if os.path.basename(part["file"]) != part["file"]:
        return f"names a file outside the directory ({part['file']!r})"
    if not os.path.isfile(path):
        return f"{part['file']} is missing"
    try:
        scan = _scan(path, verify, cache)
    except CheckpointError as exc:
        return f"{part['file']} is unusable ({exc})"
    rec = next((r for r in scan["entries"] if r.get("seq") == part["seq"]), None)
    if rec is None:
        return f"{part['file']} has no record of seq {part['seq']}"
    if not rec["valid"]:
        return f"{part['file']} seq {part['seq']}: {rec['reason']}"
    try:
        crc = table_crc(path, scan["geometry"], rec)
    except (CheckpointError, OSError) as exc:
        return f"{part['file']} seq {part['seq']}: {exc}"
    if rec["payload_len"] != part["payload_len"] or crc != part["table_crc"]:
        return f"{part['file']} seq {part['seq']} holds another payload than the global commit names"
    return None


def read_commits(path: str) -> list[tuple[dict[str, Any], Optional[dict[str, Any]]]]:
    """(record, decoded commit or None) of every record of a commit file, newest first; a record whose
    payload does not read back or decode has None (its record is then marked invalid, with the reason)."""
    scan = _core.scan(path, False)
    out = []
    for rec in _records(scan):
        doc = None
        if rec["valid"]:
            try:
                buf = bytearray(rec["payload_len"])
                _core.read_payload(path, rec["seq"], buf)
                doc = commit_doc.decode(buf)
            except (_core.CoreError, CheckpointError, ValueError, OSError) as exc:
                rec = {**rec, "valid": False, "reason": str(exc)}
        out.append((rec, doc))
    return out


def _dcp_set(directory: str, name: SetName, verify: bool, cache: dict) -> FileSet:
    files = [os.path.join(directory, name.commit_file)] + [
        os.path.join(directory, name.rank_file(r)) for r in range(name.world)]
    s = FileSet("dcp", name.world, files, set_id=name.set_id)
    if not os.path.isfile(files[0]):
        s.error = f"{name.commit_file} is missing: no checkpoint of this set was ever committed"
        return s
    try:
        commits = read_commits(files[0])
    except (_core.CoreError, OSError, ValueError) as exc:
        s.error = f"{name.commit_file} is unusable ({exc})"
        return s
    for rec, doc in commits:
        cp = Checkpoint(rec["seq"], rec["step"], rec["time_ns"], False)
        s.checkpoints.append(cp)
        if doc is None:
            cp.why = f"global commit: {rec['reason']}"
            continue
        cp.gseq, cp.doc = doc["gseq"], doc
        if doc["set"] != name.set_id or doc["world"] != name.world:
            cp.why = f"global commit belongs to set {doc['set']} of {doc['world']} ranks"
            continue
        problems = [(p["rank"], _check_part(directory, p, verify, cache)) for p in doc["ranks"]]
        bad = [f"rank {r}: {why}" for r, why in problems if why is not None]
        cp.valid, cp.why = not bad, "; ".join(bad) or None
    return s


def file_set(path: str, verify: bool = False, cache: Optional[dict] = None) -> FileSet:
    """One pccheck file as a set of its own (a one-process run, or a file of another writer)."""
    cache = {} if cache is None else cache
    s = FileSet("file", 1, [path])
    try:
        scan = _scan(path, verify, cache)
    except CheckpointError as exc:
        s.error = f"unusable ({exc})"
        return s
    for rec in _records(scan):
        s.checkpoints.append(Checkpoint(rec["seq"], rec["step"], rec["time_ns"], bool(rec["valid"]),
                                        None if rec["valid"] else rec["reason"]))
    return s


def scan_directory(directory: Union[str, Path], verify: bool = False, cache: Optional[dict] = None) -> list[FileSet]:
    """Every file set in `directory`: DCP sets (by world size, then id), then single pccheck files."""
    directory = str(directory)
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    cache = {} if cache is None else cache
    dcp: dict[SetName, None] = {}
    singles = []
    for n in names:
        parsed = parse(n)
        if parsed is not None:
            dcp[parsed[0]] = None
        elif n.endswith(".ckpt") and _is_core_file(os.path.join(directory, n)):
            singles.append(os.path.join(directory, n))
    out = [_dcp_set(directory, s, verify, cache) for s in sorted(dcp, key=lambda s: (s.world, s.set_id))]
    return out + [file_set(p, verify, cache) for p in singles]


def newest(sets: Iterable[FileSet], step: Optional[int] = None) -> Optional[tuple[FileSet, Checkpoint]]:
    """The checkpoint a load takes: the newest valid one over all sets by commit time (of `step` if given)."""
    found = [(s, s.newest_valid(step)) for s in sets]
    found = [(s, c) for s, c in found if c is not None]
    return max(found, key=lambda sc: (sc[1].time_ns or 0, sc[1].seq), default=None)  # type: ignore[return-value]


def skipped_newer(s: FileSet, chosen: Optional[Checkpoint]) -> list[Checkpoint]:
    """Checkpoints of `s` newer than `chosen` that a load passes over (each with its reason)."""
    return [c for c in s.checkpoints if not c.valid and (chosen is None or c.seq > chosen.seq)]
