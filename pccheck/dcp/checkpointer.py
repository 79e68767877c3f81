"""A CheckpointerLike over DCP with pccheck storage, so `pccheck.StopRequest(ckpt).exit(step, state)` works
for FSDP2 / DTensor training as it does for the single-process Checkpointer.

    ckpt = pccheck.dcp.Checkpointer(path, local_keys=("rng",))   # every rank, at the same point
    ckpt.save(step, {"model": model_sd, "optim": optim_sd, "step": step, "rng": pccheck.rng_state()})

Saves go through `dcp.async_save` (mode "thread" or "process"; "sync" for `dcp.save`) on a gloo group of
the checkpointer's own: async saves need a CPU backend, and their background collectives must never meet
the training group's. DCP deadlocks when a second save starts on a group while one is in flight, so a
save first waits for the previous one (one checkpoint in flight; the wait is rare when checkpoints are
further apart than a write takes).

`local_keys`: top-level keys whose values differ between ranks (RNG streams): DCP treats plain values as
replicated and keeps one rank's copy, so these are stored per rank (`__rank_local__.<rank>.<key>`); a
load with M ranks gives rank m the values of rank m % N.
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType

from ..checkpointing import Loaded
from ..corefile import DamagedPayload
from ..errors import CheckpointError
from . import stores
from .reader import Reader, choose
from .sets import newest, scan_directory
from .writer import Writer

log = logging.getLogger("pccheck.dcp")
LOCAL = "__rank_local__"
_MODES = {"thread": AsyncCheckpointerType.THREAD, "process": AsyncCheckpointerType.PROCESS, "sync": None}


class Save:
    """Handle of one save: durable once the global commit is."""

    def __init__(self, step: int, future: Any, began: float) -> None:
        self.step, self.future, self.began = step, future, began
        self.seconds: Optional[float] = None

    def wait(self, timeout: Optional[float] = None) -> bool:
        if self.future is not None:
            try:
                self.future.result(timeout)
            except TimeoutError:
                return False
            except (Exception, CheckpointException) as exc:
                self.future = None
                raise CheckpointError(f"checkpoint at step {self.step} failed: {explain(exc)}") from None
            self.future = None
            self.seconds = time.monotonic() - self.began
        return True

    def done(self) -> bool:
        return self.future is None or self.future.done()


class Checkpointer:
    """`save`, `wait`, `load_latest` are collective (every rank, same order); knobs go to pccheck.dcp.Writer."""

    def __init__(self, path: Union[str, os.PathLike], *, process_group: Any = None, mode: str = "thread",
                 local_keys: tuple[str, ...] = (), **knobs: Any) -> None:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, not {mode!r}")
        self.path = Path(path)
        self.mode = mode
        self.local_keys = tuple(local_keys)
        self.knobs = knobs
        distributed = dist.is_available() and dist.is_initialized()
        self.group = process_group if process_group is not None or not distributed else dist.new_group(backend="gloo")
        self.rank = dist.get_rank() if distributed else 0
        self.last_saved_step: Optional[int] = None
        self._pending: Optional[Save] = None
        self._committed: Optional[int] = None
        self._scanned = False
        self._durable: Optional[float] = None

    def prepare(self, state: Mapping[str, Any]) -> None:
        """Nothing to reserve ahead: each rank's file is preallocated at the first save."""

    def save(self, step: int, state: Mapping[str, Any]) -> Save:
        self.wait()  # one save in flight per group (see the module doc)
        sd = self._to_dcp(state)
        writer = Writer(self.path, step=step, **self.knobs)
        began = time.monotonic()
        if _MODES[self.mode] is None:
            future = None
            _run(lambda: dcp.save(sd, storage_writer=writer, process_group=self.group), step)
        else:
            future = _run(lambda: dcp.async_save(sd, storage_writer=writer, process_group=self.group,
                                                 async_checkpointer_type=_MODES[self.mode]), step)
        self._pending = Save(step, future, began)
        self.last_saved_step = step
        if future is None:
            self._finish(self._pending)
        return self._pending

    def _finish(self, save: Save) -> None:
        save.wait()
        self._committed, self._durable = save.step, save.seconds
        self._pending = None

    def before_update(self) -> None:
        """Nothing to wait for: DCP's stager copied the state before save() returned."""

    def wait(self) -> None:
        if self._pending is not None:
            save, self._pending = self._pending, None
            self._finish(save)

    def last_committed_step(self) -> Optional[int]:
        if self._pending is not None and self._pending.done():
            self.wait()
        if self._committed is None and not self._scanned:  # once: the trainer asks every step
            found = newest(s for s in scan_directory(self.path) if s.kind == "dcp")
            self._committed, self._scanned = (found[1].step if found else None), True
        return self._committed

    def durable_seconds(self) -> Optional[float]:
        if self._pending is not None and self._pending.done():
            self.wait()
        return self._durable

    def load_latest(self, state: Optional[Mapping[str, Any]] = None) -> Optional[Loaded]:
        """Loads the newest valid checkpoint into `state` (its tensors, DTensors included, are filled in place;
        other values replaced) and returns it; None when `path` holds none."""
        if state is None:
            raise CheckpointError("pccheck.dcp.Checkpointer.load_latest needs the state to load into (DCP loads in place)")
        skip: frozenset[tuple[Optional[str], int]] = frozenset()
        while True:  # a chunk that fails its CRC during the load: every rank falls back to the next older one
            try:
                s, cp = choose(self.path, skip=skip)
            except CheckpointError:
                return None
            assert cp.doc is not None
            sd = self._to_dcp(state, self.rank % cp.doc["world"])
            try:
                _run(lambda: dcp.load(sd, storage_reader=Reader(self.path, skip=skip), process_group=self.group), cp.step)
            except DamagedPayload as exc:  # not a state that does not fit: that is the caller's error
                log.warning("cannot load step %s of the %s, trying an older one: %s", cp.step, s.label, exc)
                skip = skip | {(s.set_id, cp.seq)}
                continue
            return Loaded(int(cp.step or 0), self._from_dcp(sd), f"{self.path}#step={cp.step}")

    def close(self) -> None:
        try:
            self.wait()
        finally:
            stores.close_all()

    def _to_dcp(self, state: Mapping[str, Any], as_rank: Optional[int] = None) -> dict[str, Any]:
        rank = self.rank if as_rank is None else as_rank
        out = {k: v for k, v in state.items() if k not in self.local_keys}
        local = {k: state[k] for k in self.local_keys if k in state}
        if local:
            out[LOCAL] = {str(rank): local}
        return out

    def _from_dcp(self, sd: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in sd.items() if k != LOCAL}
        for local in sd.get(LOCAL, {}).values():
            out.update(local)
        return out


def explain(exc: BaseException) -> str:
    """One line for a DCP failure: each failing rank's own error, without DCP's tracebacks."""
    if isinstance(exc, CheckpointException):
        return "; ".join(f"rank {r}: {explain(e)}" for r, (e, _) in sorted(exc.failures.items()))
    return " ".join(str(exc).split())[:2000] or type(exc).__name__


def _run(fn: Any, step: Any) -> Any:
    """fn(), every failure as one CheckpointError (DamagedPayload when a rank found a part damaged)."""
    try:
        return fn()
    except CheckpointError:
        raise
    except (Exception, CheckpointException) as exc:  # CheckpointException is a BaseException
        damaged = isinstance(exc, CheckpointException) and any(
            isinstance(e, DamagedPayload) for e, _ in exc.failures.values())
        raise (DamagedPayload if damaged else CheckpointError)(f"checkpoint at step {step}: {explain(exc)}") from None
