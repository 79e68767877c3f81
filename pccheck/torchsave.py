"""The baseline: torch.save + fsync + atomic rename, what most training scripts do (done durably).

Files are `ckpt-<step>.pt` in the checkpoint directory; the newest `keep` are kept. Loading verifies the
zip archive's own CRC32s (torch.load does not) and uses weights_only=True, so no pickle code can run.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from .checkpointing import DoneHandle, Loaded
from .errors import CheckpointError
from .fsutil import fsync_dir, make_durable, mkdir_durable

log = logging.getLogger(__name__)
_NAME = re.compile(r"^ckpt-(\d{8,})\.pt$")


def _checkpoint_name(step: int) -> str:
    return f"ckpt-{step:08d}.pt"


class TorchSaveCheckpointer:
    def __init__(self, directory: Path, keep: int = 2) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.directory = Path(directory)
        self.keep = keep
        self._last: Optional[int] = None
        self.last_saved_step: Optional[int] = None
        self._durable_seconds: Optional[float] = None
        self._directory_ready = False

    def prepare(self, state: Mapping[str, Any]) -> None:
        self._make_directory()

    def _make_directory(self) -> None:
        """Creates the directory durably, once: a power cut must not take it with the checkpoints in it."""
        if not self._directory_ready:
            try:
                mkdir_durable(self.directory)
            except OSError as exc:
                raise CheckpointError(f"cannot create checkpoint directory {self.directory}: {exc.strerror}") from None
            self._directory_ready = True

    def save(self, step: int, state: Mapping[str, Any]) -> DoneHandle:
        t0 = time.monotonic()
        self.last_saved_step = step
        self._make_directory()
        final = self.directory / _checkpoint_name(step)
        tmp = self.directory / f".{final.name}.tmp-{os.getpid()}"
        try:
            with open(tmp, "wb") as f:
                torch.save(dict(state), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            fsync_dir(self.directory)
        except BaseException as exc:
            with contextlib.suppress(OSError):  # best effort: a read-only file system refuses even this
                tmp.unlink(missing_ok=True)
            cause = _os_error(exc)
            if cause is None:
                raise
            raise CheckpointError(f"checkpoint at step {step} failed: cannot write {final}: {cause.strerror}") from None
        self._last = step
        self._prune()
        self._durable_seconds = time.monotonic() - t0
        return DoneHandle(step)

    def durable_seconds(self) -> Optional[float]:
        return self._durable_seconds

    def _prune(self) -> None:
        for _, path in checkpoints(self.directory)[self.keep :]:
            path.unlink(missing_ok=True)
        fsync_dir(self.directory)

    def before_update(self) -> None:
        pass

    def wait(self) -> None:
        pass

    def last_committed_step(self) -> Optional[int]:
        if self._last is None:
            newest = checkpoints(self.directory)
            if not newest:
                return None
            make_durable(newest[0][1])  # a crashed writer may have left its rename in the page cache only
            self._last = newest[0][0]
        return self._last

    def load_latest(self) -> Optional[Loaded]:
        for step, path in checkpoints(self.directory):
            problem = verify(path)
            if problem is None:
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                except Exception as exc:  # an unreadable file is skipped, never returned
                    problem = f"torch.load failed: {exc}"
                else:
                    make_durable(path)  # a crashed writer may have left it in the page cache only
                    return Loaded(step, state, str(path))
            log.warning("checkpoint %s is unusable (%s); trying the previous one", path, problem)
        return None

    def close(self) -> None:
        pass


def _os_error(exc: BaseException) -> Optional[OSError]:
    """The OSError behind `exc` (torch.save reports a failed write as a RuntimeError raised during it)."""
    seen: Optional[BaseException] = exc
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen


def checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """(step, path) of the committed checkpoints in `directory`, newest first (temporary files never count)."""
    if not Path(directory).is_dir():
        return []
    found = []
    for path in Path(directory).iterdir():
        m = _NAME.match(path.name)
        if m:
            found.append((int(m.group(1)), path))
    return sorted(found, reverse=True)


def verify(path: Path) -> Optional[str]:
    """None when the archive is complete and every member's CRC32 matches; else the reason."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"not a complete checkpoint archive ({exc})"
    return None if bad is None else f"checksum mismatch in archive member {bad}"
