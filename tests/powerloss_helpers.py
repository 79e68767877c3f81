"""Writers for the power-loss tests: forked children that checkpoint (pccheck or the torch.save baseline) in a
loop or on command and report each step they were told is durable, so the test can kill them, cut the power
and check that every such step survived."""
from __future__ import annotations

import contextlib
import os
import random
import select
import signal
from functools import partial
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from crashfs.mount import CrashFS
from pccheck.checkpointer import FILE_NAME, Checkpointer, load_checkpoint
from pccheck.checkpointing import CheckpointerLike, Loaded
from pccheck.torchsave import TorchSaveCheckpointer

KINDS = ["pccheck", "torchsave"]


def make_state(step: int) -> dict[str, Any]:
    """A state whose every byte depends on the step (a torn or stale checkpoint cannot pass for it)."""
    rng = np.random.default_rng(step)
    return {
        "step": step,
        "a": torch.from_numpy(rng.standard_normal(30_000, dtype=np.float32)),
        "b": torch.from_numpy(rng.integers(0, 2**15, 3_000, dtype=np.int16)),
        "meta": {"step_again": step, "text": "x" * (step % 50)},
    }


def open_checkpointer(kind: str, directory: Path) -> CheckpointerLike:
    if kind == "pccheck":
        return Checkpointer(directory, chunk_size=16 << 10, max_async=2, keep=2, threads=2)
    return TorchSaveCheckpointer(directory, keep=2)


def load(kind: str, directory: Path) -> Optional[Loaded]:
    """The newest checkpoint that verifies (each kind's own load path), checked byte for byte."""
    if kind == "pccheck":
        loaded = load_checkpoint(directory) if (directory / FILE_NAME).exists() else None
    else:
        loaded = TorchSaveCheckpointer(directory).load_latest()
    if loaded is not None:
        expected = make_state(loaded.step)
        for name in ("a", "b"):
            assert torch.equal(loaded.state[name], expected[name]), f"step {loaded.step}: {name} differs"
        assert loaded.state["meta"] == expected["meta"]
    return loaded


def step_of(loaded: Optional[Loaded]) -> int:
    return 0 if loaded is None else loaded.step


def loop_writer(kind: str, directory: Path, first_step: int, commands: int, report: int) -> None:
    """Saves steps first_step, first_step + 1, ... forever, unasked (`commands` is not read); writes each
    durable step to fd `report`."""
    ck = open_checkpointer(kind, directory)
    pending = []
    step = first_step
    while True:
        pending.append(ck.save(step, make_state(step)))
        for handle in list(pending):
            if handle.done():
                pending.remove(handle)
                if getattr(handle, "outcome", "committed") == "committed":
                    os.write(report, f"{handle.step}\n".encode())
        step += 1


def command_writer(kind: str, directory: Path, commands: int, report: int) -> None:
    """Saves each step read from fd `commands` (one a line), waits until durable and writes it to `report`."""
    ck = open_checkpointer(kind, directory)
    with os.fdopen(commands) as lines:
        for line in lines:
            step = int(line)
            ck.save(step, make_state(step))
            ck.wait()
            os.write(report, f"{step}\n".encode())


class Child:
    """A forked writer: `run(commands_fd, report_fd)` in the child; the parent reads reports and kills it.
    As a context manager it is killed on the way out if it still runs (a failed test leaves no writer)."""

    def __init__(self, run: Callable[[int, int], None]) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - child
            try:
                os.close(self._cmd_w)
                os.close(self._rep_r)
                run(cmd_r, rep_w)
            finally:
                os._exit(1)
        os.close(cmd_r)
        os.close(rep_w)
        self._buffer = b""
        self._reaped = False

    def __enter__(self) -> "Child":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._reaped:  # not reaped here: a writer frozen by the double dies only at the cut
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def send(self, step: int) -> None:
        os.write(self._cmd_w, f"{step}\n".encode())

    def reported(self, timeout: float = 0.0) -> list[int]:
        """Steps reported durable since the last call (waits up to `timeout` for the first one)."""
        ready = select.select([self._rep_r], [], [], timeout)[0]
        while ready:
            chunk = os.read(self._rep_r, 65536)
            if not chunk:
                break
            self._buffer += chunk
            ready = select.select([self._rep_r], [], [], 0)[0]
        lines = self._buffer.split(b"\n")
        self._buffer = lines.pop()  # each report is one write of one line: whole lines only
        return [int(x) for x in lines]

    def ask(self, step: int, timeout: float = 60) -> None:
        """Saves `step` in the child and returns once the child reports it durable."""
        self.send(step)
        got = self.reported(timeout)
        assert got == [step], f"the writer reported {got}, not [{step}]"

    def kill(self) -> None:
        """SIGKILL. Reap it after the cut: frozen in a change (freeze_after), it dies once that change fails."""
        os.kill(self.pid, signal.SIGKILL)

    def reap(self) -> list[int]:
        """Waits until it is gone; returns the steps it reported durable and were not read yet."""
        os.waitpid(self.pid, 0)
        self._reaped = True
        got = self.reported()
        os.close(self._rep_r)
        os.close(self._cmd_w)
        return got


def kill_and_cut_loop(fs: CrashFS, kind: str, cut_seeds: list[int], max_changes: int) -> None:
    """A writer saves in a loop; in the middle of a random one of its first `max_changes` file-system changes
    it is killed and the power cut. The newest checkpoint that loads must be at least as new as every step
    reported durable; then a new writer goes on from it."""
    directory = fs.path / "ckpt"
    newest_reported = 0
    for seed in cut_seeds:
        first = step_of(load(kind, directory)) + 1
        fs.freeze_after(random.Random(seed).randint(1, max_changes))
        with Child(partial(loop_writer, kind, directory, first)) as writer:
            assert fs.wait_frozen(timeout=120), "the writer stopped changing the file system"
            writer.kill()
            fs.cut(seed)
            newest_reported = max([newest_reported, *writer.reap()])
        loaded = load(kind, directory)
        assert step_of(loaded) >= newest_reported, f"step {newest_reported} was reported durable: {fs.reports[-1]}"
    if len(cut_seeds) > 1:  # one seed replayed alone (CRASHFS_SEED) may well cut before the first commit
        assert newest_reported > 0, "nothing was ever reported durable: max_changes is too small"
