"""The pccheck checkpointer: training waits only for a copy into staging memory; the C++ core writes,
checksums and commits in the background, and recovery returns the newest checkpoint that verifies.

One preallocated file per writer: `<directory>/pccheck.ckpt` (see docs/format.md).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np


from . import _core, fsutil, payload
from .checkpointing import Loaded
from .corefile import READS_UNDER_A_WRITER, newest_seq
from .errors import CheckpointError
from .hostcopy import HostCopier
from .staging import StagedCopier

log = logging.getLogger(__name__)
FILE_NAME = "pccheck.ckpt"
_HEADROOM = 1 << 20  # room for the JSON part of the state to grow between saves


class PendingCheckpoint:
    """Handle of one save: durable once its commit record is on stable storage."""

    def __init__(self, store: Optional[_core.Store], seq: Optional[int], step: int) -> None:
        self._store = store
        self.seq = seq
        self.step = step
        self.outcome = "pending" if seq is not None else "skipped"

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once committed (or dropped because a newer one committed first); raises if the write failed."""
        if self.outcome == "pending":
            try:
                self.outcome = self._store.wait(self.seq, timeout)  # type: ignore[union-attr]
            except _core.CoreError as exc:
                self.outcome = "failed"
                raise CheckpointError(f"checkpoint at step {self.step} failed: {exc}") from None
        return self.outcome in ("committed", "dropped")

    def done(self) -> bool:
        if self.outcome == "pending":
            self.wait(0)
        return self.outcome != "pending"


class Checkpointer:
    """save(step, state) returns at once; before_update() before the state changes; wait() until durable.

    The snapshot (the copy into staging memory) runs beside the next forward and backward, on CPU as on
    GPU: the tensors of a saved state may not change until before_update() returns (call it between
    backward and optimizer.step(); in-place updates in forward, such as BatchNorm's running statistics,
    count as changes). Values that are not tensors are captured by save() itself.

    Knobs: `max_async` checkpoints in flight, `keep` committed ones never overwritten, `threads` writers,
    `chunk_size` bytes per write and checksum, `memory_budget` bytes of staging (default: one state, so a
    snapshot never waits for the disk), `durability` "fdatasync" or "direct" (O_DIRECT), `block` whether a
    save beyond `max_async` waits (default) or is skipped, either logged once and counted (`counts`),
    `slot_size` bytes of payload per slot (default: the first state plus 1 MiB; a bigger state grows the file).
    """

    def __init__(
        self,
        directory: Union[str, Path],
        *,
        max_async: int = 2,
        keep: int = 2,
        threads: int = 2,
        chunk_size: int = 8 << 20,
        memory_budget: Optional[int] = None,
        durability: Optional[str] = None,
        block: bool = True,
        file_name: str = FILE_NAME,
        slot_size: Optional[int] = None,
    ) -> None:
        self.directory = Path(directory)
        self.path = self.directory / file_name
        self.max_async, self.keep, self.threads = max_async, keep, threads
        self.chunk_size = chunk_size
        self.memory_budget = memory_budget
        self.durability = durability
        self.block = block
        self.slot_size = slot_size
        self._store: Optional[_core.Store] = None
        self._staged: Optional[StagedCopier] = None
        self._host: Optional[HostCopier] = None
        self.last_saved_step: Optional[int] = None
        self._timed: list[tuple[PendingCheckpoint, float]] = []  # saves in flight and when they began
        self._durable_seconds: Optional[float] = None
        self._scanned: Optional[tuple[Optional[int]]] = None  # last_committed_step before the store is open
        self._save_seconds: Optional[float] = None  # the newest save() call, until before_update adds its wait
        self._blocked_seconds: Optional[float] = None
        self._copy_error: Optional[str] = None  # a failed snapshot copy, until wait() reports it
        self._last_save_at: Optional[float] = None
        self.counts = {"saved": 0, "waited": 0, "skipped": 0}  # saves that found max_async in flight: waited or skipped

    # -- writing ---------------------------------------------------------------------------------
    def prepare(self, state: Mapping[str, Any]) -> None:
        """Creates and preallocates the checkpoint file for states like `state` (a full disk fails here)."""
        if self._store is None:
            self._open(payload.encode(state))

    def _open(self, enc: payload.Encoded) -> None:
        try:
            fsutil.mkdir_durable(self.directory)  # a power cut must not take the directory of a commit
        except OSError as exc:
            raise CheckpointError(f"cannot create checkpoint directory {self.directory}: {exc.strerror}") from None
        slot_size = _round_up(max(self.slot_size or 0, enc.nbytes + len(enc.header) + _HEADROOM), 4096)
        budget = self.memory_budget or _round_up(enc.nbytes, self.chunk_size)
        kwargs: dict[str, Any] = dict(
            slot_size=slot_size, max_async=self.max_async, keep=self.keep, chunk_size=self.chunk_size,
            threads=self.threads, memory_budget=budget,
        )
        if self.durability:
            kwargs["durability"] = self.durability
        try:
            self._store = _core.Store(str(self.path), **kwargs)
        except _core.CoreError as exc:
            raise CheckpointError(str(exc)) from None
        except (ValueError, OSError) as exc:
            raise CheckpointError(f"cannot open {self.path}: {exc}") from None
        geometry = self._store.geometry
        if geometry["max_async"] != self.max_async:
            log.warning("%s was created with max_async=%d; using that", self.path, geometry["max_async"])

    def save(self, step: int, state: Mapping[str, Any]) -> PendingCheckpoint:
        t0 = time.monotonic()  # encoding the state is part of the time training is blocked
        return self._save_timed(step, payload.encode(state), t0)

    def save_encoded(self, step: int, enc: payload.Encoded) -> PendingCheckpoint:
        """save() of a payload already encoded: `enc.header`, then the bytes of `enc.tensors`, in order."""
        return self._save_timed(step, enc, time.monotonic())

    def _save_timed(self, step: int, enc: payload.Encoded, t0: float) -> PendingCheckpoint:
        handle = self._save_encoded(step, enc)
        self.last_saved_step = step
        if handle.seq is not None:
            self._timed.append((handle, t0))
            self.counts["saved"] += 1
        self._last_save_at = t0
        self._save_seconds = time.monotonic() - t0
        return handle

    def _save_encoded(self, step: int, enc: payload.Encoded) -> PendingCheckpoint:
        if self._store is None:
            self._open(enc)
        store = self._store
        assert store is not None
        try:
            seq = store.begin(step, enc.nbytes, False)
            if seq is None:
                self._busy(step)
            if seq is None and self.block:
                seq = store.begin(step, enc.nbytes, True)
            if seq is None:
                return PendingCheckpoint(store, None, step)
            if all(t.device.type == "cpu" for t in enc.tensors):
                if self._host is None:
                    self._host = HostCopier(store)
                self._host.copy(seq, enc)
            else:
                if self._staged is None:
                    self._staged = StagedCopier(store)
                self._staged.copy(seq, enc)
        except _core.CoreError as exc:
            raise CheckpointError(f"checkpoint at step {step} failed: {exc}") from None
        return PendingCheckpoint(store, seq, step)

    def _busy(self, step: int) -> None:
        """A save found max_async checkpoints in flight: says why once, then only counts."""
        what = "waited" if self.block else "skipped"
        self.counts[what] += 1
        if self.counts["waited"] + self.counts["skipped"] > 1:
            return
        durable = self.durable_seconds()
        since = 0.0 if self._last_save_at is None else time.monotonic() - self._last_save_at
        took = f"a checkpoint takes {durable:.3f} s to become durable" if durable is not None else "none is durable yet"
        log.warning("checkpoint at step %d %s: max_async=%d checkpoint%s already in flight: the disk cannot keep up "
                    "with this checkpoint rate (saves come %.3f s apart, %s); further %s checkpoints are counted, "
                    "not logged", step, "waits for a free slot" if self.block else "skipped", self.max_async,
                    "s" if self.max_async > 1 else "", since, took, what)

    def before_update(self) -> None:
        """Returns once the newest snapshots no longer read the live tensors (CPU: the copy is done)."""
        t0 = time.monotonic()
        self._host_copied()
        if self._staged is not None:
            self._staged.before_update()
        if self._save_seconds is not None:
            self._blocked_seconds = self._save_seconds + time.monotonic() - t0
            self._save_seconds = None

    def blocked_seconds(self) -> Optional[float]:
        """Seconds training was blocked by the newest checkpoint: its save() plus the wait in the before_update()
        after it (None before the first)."""
        return self._blocked_seconds

    def _host_copied(self) -> None:
        """Waits for the snapshot copies of CPU tensors; keeps the first failure for wait() to report."""
        if self._host is not None:
            error = self._host.before_update()
            if error is not None and self._copy_error is None:
                self._copy_error = error

    def wait(self) -> None:
        if self._store is None:
            return
        self._host_copied()
        if self._copy_error is not None:
            error, self._copy_error = self._copy_error, None
            raise CheckpointError(error)
        if self._staged is not None:
            self._staged.drain()
        try:
            self._store.wait(None, None)
        except _core.CoreError as exc:
            raise CheckpointError(f"checkpoint failed: {exc}") from None

    def durable_seconds(self) -> Optional[float]:
        """Seconds from save() to durable of the newest checkpoint that has become durable (None before)."""
        for handle, t0 in list(self._timed):
            try:
                finished = handle.done()
            except CheckpointError:  # reported by wait() and the next save()
                finished = True
            if finished:
                self._timed.remove((handle, t0))
                if handle.outcome == "committed":
                    self._durable_seconds = time.monotonic() - t0
        return self._durable_seconds

    def last_committed_step(self) -> Optional[int]:
        if self._store is not None:
            latest = self._store.latest()
            return None if latest is None else latest[1]
        if self._scanned is None:  # once: until this process opens its store, the file is an earlier run's
            found = self._scan()
            self._scanned = (None if found is None or found.get("latest") is None
                             else _record(found, found["latest"])["step"],)
        return self._scanned[0]

    def close(self) -> None:
        if self._store is not None:
            try:
                self.wait()
            finally:
                if self._staged is not None:
                    self._staged.close()
                self._host = self._staged = None
                self._store.close()
                self._store = None

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------------
    def _scan(self) -> Optional[dict[str, Any]]:
        if not self.path.exists():
            return None
        try:  # durable: the step it reports must survive a power cut (a crashed writer's page cache)
            return _core.scan(str(self.path), False, durable=True)
        except _core.CoreError as exc:
            raise CheckpointError(f"{self.path} is not a usable pccheck file: {exc}") from None

    def load_latest(self) -> Optional[Loaded]:
        return load_checkpoint(self.path) if self.path.exists() else None


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def records(scan: dict[str, Any]) -> list[dict[str, Any]]:
    """The ring entries of a scan that hold a commit record (valid or not)."""
    return [e for e in scan["entries"] if e.get("seq") is not None]


def _record(scan: dict[str, Any], seq: int) -> dict[str, Any]:
    return next(r for r in records(scan) if r["seq"] == seq)


def load_checkpoint(path: Union[str, Path], step: Optional[int] = None) -> Optional[Loaded]:
    """The newest checkpoint in `path` (a pccheck file or its directory) whose record and payload verify.

    With `step`, that checkpoint only. Every checkpoint skipped is logged with its reason; None when no
    checkpoint verifies. Safe beside a live writer of the file (see READS_UNDER_A_WRITER).
    """
    path = Path(path)
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    for _ in range(READS_UNDER_A_WRITER):
        scan = _scan_file(path)
        loaded, skipped = _read_newest(path, scan, step)
        if not skipped or newest_seq(_scan_file(path)) == newest_seq(scan):
            break
    for reason in skipped:
        log.warning("%s", reason)
    return loaded


def _scan_file(path: Path) -> dict[str, Any]:
    try:
        return _core.scan(str(path), False)
    except _core.CoreError as exc:
        raise CheckpointError(f"{path} is not a usable pccheck file: {exc}") from None


def _read_newest(path: Path, scan: dict[str, Any], step: Optional[int]) -> tuple[Optional[Loaded], list[str]]:
    """The first candidate of `scan` (newest first) that verifies, and why each one before it was skipped."""
    skipped = []
    candidates = sorted((r for r in records(scan) if step is None or r["step"] == step), key=lambda r: -r["seq"])
    for record in candidates:
        where = f"checkpoint at step {record['step']} (seq {record['seq']}) in {path}"
        if not record["valid"]:
            skipped.append(f"skipping {where}: {record['reason']}")
            continue
        # Uninitialized (read_payload fills every byte): bytearray(n) would zero-fill it first, which
        # measured 0.5 s per GiB here, as long as the read itself (docs/performance.md).
        # Page-aligned, so the core reads it with O_DIRECT (no page-cache copy).
        n = record["payload_len"]
        raw = np.empty(n + 4096, dtype=np.uint8)
        start = -raw.ctypes.data % 4096
        buf = raw[start : start + n]
        try:
            # durable: a crashed writer may have left this commit in the page cache only
            _core.read_payload(str(path), record["seq"], buf, durable=True)
            state = payload.decode(buf)
        except (_core.CoreError, CheckpointError) as exc:
            skipped.append(f"skipping {where}: {exc}")
            continue
        return Loaded(record["step"], state, f"{path}#seq={record['seq']}"), skipped
    return None, skipped


def load(path: Union[str, Path], step: Optional[int] = None) -> dict[str, Any]:
    """The state of the newest valid checkpoint in `path` (any nested dict of tensors and plain values)."""
    loaded = load_checkpoint(path, step)
    if loaded is None:
        what = f"at step {step}" if step is not None else "that verifies"
        raise CheckpointError(f"no checkpoint {what} in {path}")
    return loaded.state


__all__ = ["Checkpointer", "PendingCheckpoint", "load", "load_checkpoint", "FILE_NAME"]
