"""Crash consistency: a writer SIGKILLed at random instants, with checkpoints in flight and commits
happening, always leaves a checkpoint that verifies, is at least as new as the newest one it reported
committed, and holds exactly the bytes saved at that step."""
from __future__ import annotations

import os
import random
import select
import signal
import time

import numpy as np
import pytest
import torch

from pccheck.checkpointer import Checkpointer, load_checkpoint


def _state(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {
        "step": step,
        "a": torch.from_numpy(rng.standard_normal(40_000, dtype=np.float32)),
        "b": torch.from_numpy(rng.integers(0, 2**15, 3_000, dtype=np.int16)).view(torch.bfloat16),
        "meta": {"step_again": step, "text": "x" * (step % 50)},
    }


def _writer(directory: str, first_step: int, fd: int) -> None:
    """Child: saves forever, reporting each committed step on the pipe (uses no torch kernels: forked)."""
    with Checkpointer(directory, chunk_size=16 << 10, max_async=2, keep=2, threads=2) as ck:
        pending = []
        step = first_step
        while True:
            pending.append(ck.save(step, _state(step)))
            for handle in list(pending):
                if handle.done():
                    pending.remove(handle)
                    if handle.outcome == "committed":
                        os.write(fd, f"{handle.step}\n".encode())
            step += 1


def _read_all(fd: int) -> str:
    out = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        out += chunk
    return out.decode()


def _crash_loop(directory, iterations: int, seed: int) -> None:
    rnd = random.Random(seed)
    newest_reported = 0
    next_step = 1
    for _ in range(iterations):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            try:
                _writer(str(directory), next_step, w)
            finally:
                os._exit(1)
        os.close(w)
        time.sleep(rnd.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        reported = [int(x) for x in _read_all(r).split()]
        os.close(r)
        newest_reported = max([newest_reported, *reported])
        if not (directory / "pccheck.ckpt").exists():
            assert newest_reported == 0
            continue
        loaded = load_checkpoint(directory)
        if loaded is None:
            assert newest_reported == 0, "a reported commit was lost"
            continue
        assert loaded.step >= newest_reported
        expected = _state(loaded.step)
        for name in ("a", "b"):  # bitwise: the random bf16 patterns include NaNs
            assert torch.equal(loaded.state[name].view(torch.uint8), expected[name].view(torch.uint8))
        assert loaded.state["meta"] == expected["meta"]
        next_step = loaded.step + 1
    assert newest_reported > 0, "no checkpoint was ever committed: the kill delays are too short"


def test_crash_consistency_quick(tmp_path):
    _crash_loop(tmp_path, iterations=15, seed=1)


@pytest.mark.slow
def test_crash_consistency_200_kills(tmp_path):
    _crash_loop(tmp_path, iterations=200, seed=2)
