"""pccheck-bench, storage side: the state, the machine's floors (copy, raw write, raw read) and the save and
load timings of pccheck, the torch.save baseline and torch.distributed.checkpoint.async_save.

Every timing is wall-clock (time.perf_counter) around the call a training loop would make.
"""
from __future__ import annotations

import os
import shutil
import statistics
import time
from pathlib import Path
from typing import Any, Optional

import torch

MiB = 1 << 20
GiB = 1 << 30
IO_CHUNK = 8 * MiB  # what `dd bs=8M` would use


# -- the state ---------------------------------------------------------------------------------------
def synthetic_state(nbytes: int, tensor_bytes: int = 64 * MiB) -> dict[str, Any]:
    """float32 tensors of random (incompressible) values totalling `nbytes`, like the layers of a model."""
    state: dict[str, Any] = {"step": 0}
    left, i = nbytes, 0
    while left > 0:
        n = min(tensor_bytes, left) // 4 or 1
        state[f"layer{i:04d}.weight"] = torch.rand(n)
        left -= n * 4
        i += 1
    return state


def model_state(d_model: int, n_layers: int, sequence_length: int) -> dict[str, Any]:
    """The trainer's real state (GPT model + AdamW moments + scheduler, data position, RNGs) after one step."""
    from pccheck.demo.flags import build_parser
    from pccheck.demo.train import _Trainer

    args = build_parser().parse_args(
        ["--checkpointer", "none", "--d-model", str(d_model), "--n-layers", str(n_layers),
         "--sequence-length", str(sequence_length), "--batch-size", "1"]
    )
    trainer = _Trainer(args)
    trainer.step(None)
    return trainer.state(1)


def tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors(v)]
    return []


def state_bytes(state: Any) -> int:
    return sum(t.nbytes for t in tensors(state))


def byte_views(state: Any) -> list[memoryview]:
    return [memoryview(t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()) for t in tensors(state) if t.nbytes]


# -- memory ------------------------------------------------------------------------------------------
def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRSS:
    """Peak resident memory of this process above its level at start (VmHWM, reset through clear_refs)."""

    def __enter__(self) -> "PeakRSS":
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            self.method = "VmHWM reset via /proc/self/clear_refs"
        except OSError:
            self.method = "VmHWM (not resettable here: an upper bound)"
        self.start = _status_kib("VmRSS") * 1024
        self.extra = 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.extra = max(0, _status_kib("VmHWM") * 1024 - self.start)


# -- page cache --------------------------------------------------------------------------------------
def drop_caches(paths: list[Path]) -> str:
    """Empties the page cache: all of it where this process may, else the given files' clean pages."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3")
        return "drop_caches"
    except OSError:
        pass
    for p in paths:
        for f in ([p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()] if p.is_dir() else []):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
    return "posix_fadvise(DONTNEED) per file (no permission for /proc/sys/vm/drop_caches)"


# -- floors ------------------------------------------------------------------------------------------
def copy_floor(state: Any, dst: torch.Tensor) -> float:
    """One plain copy (libc memcpy, one thread: what the snapshot does) of every tensor into a preallocated,
    pre-faulted host buffer. Measured faster here than torch's own copy_ (0.25 s against 0.42 s per GiB)."""
    import ctypes

    base = dst.data_ptr()
    parts = [(t.data_ptr(), t.nbytes) for t in tensors(state) if t.nbytes]
    t0 = time.perf_counter()
    off = 0
    for ptr, n in parts:
        ctypes.memmove(base + off, ptr, n)
        off += n
    return time.perf_counter() - t0


def raw_write(path: Path, views: list[memoryview]) -> float:
    """Sequential write of the state's bytes into a preallocated file + fdatasync (`dd conv=fdatasync`)."""
    total = sum(v.nbytes for v in views)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size < total:
            os.posix_fallocate(fd, 0, total)
            os.fsync(fd)
        t0 = time.perf_counter()
        off = 0
        for v in views:
            for i in range(0, v.nbytes, IO_CHUNK):
                off += os.pwrite(fd, v[i : i + IO_CHUNK], off)
        os.fdatasync(fd)
        return time.perf_counter() - t0
    finally:
        os.close(fd)


def raw_read(path: Path, nbytes: int) -> float:
    """Sequential 8 MiB reads of `nbytes` into one fresh, uninitialized buffer of that size: what any load
    must do at least. (`dd of=/dev/null` reuses one small buffer and never faults in the memory a loaded
    state occupies: 0.07-0.3 s per GiB here, which no load can avoid.)"""
    import numpy as np

    t0 = time.perf_counter()
    mv = memoryview(np.empty(nbytes, dtype=np.uint8))
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < nbytes:
            n = f.readinto(mv[done : done + IO_CHUNK])
            if not n:
                break
            done += n
    return time.perf_counter() - t0


# -- compute beside the snapshot -------------------------------------------------------------------------
class Compute:
    """A fixed amount of one-thread matrix multiplication, standing in for the next forward and backward."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self.a = torch.rand(512, 512)
        self.iterations = 1

    def calibrate(self, seconds: float) -> None:
        """Sets the amount so that it runs about `seconds` on this machine now."""
        self.iterations = 1
        while self.run() < 0.05:
            self.iterations *= 2
        self.iterations = max(1, round(self.iterations * seconds / self.run()))

    def run(self) -> float:
        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            t0 = time.perf_counter()
            for _ in range(self.iterations):
                torch.mm(self.a, self.a)
            return time.perf_counter() - t0
        finally:
            torch.set_num_threads(saved)


# -- pccheck -----------------------------------------------------------------------------------------
def pccheck_save(ck: Any, step: int, state: Any, compute: Optional[Compute] = None) -> dict[str, float]:
    """One checkpoint as a training loop takes it: save(), the next step's compute (if any), before_update(),
    then the wait until it is committed on stable storage. blocked: save() plus the wait in before_update."""
    t0 = time.perf_counter()
    handle = ck.save(step, state)
    saved = time.perf_counter() - t0
    computed = compute.run() if compute is not None else 0.0
    t1 = time.perf_counter()
    ck.before_update()
    blocked = saved + time.perf_counter() - t1
    handle.wait()
    return {"blocked": blocked, "durable": time.perf_counter() - t0, "compute": computed}


def pccheck_load(directory: Path) -> float:
    from pccheck.checkpointer import load_checkpoint

    t0 = time.perf_counter()
    loaded = load_checkpoint(directory)
    dt = time.perf_counter() - t0
    if loaded is None:
        raise RuntimeError(f"no checkpoint loads from {directory}")
    return dt


# -- torch.save baseline -----------------------------------------------------------------------------
def torchsave_save(ck: Any, step: int, state: Any) -> float:
    t0 = time.perf_counter()
    ck.save(step, state)
    return time.perf_counter() - t0


def torch_load(path: Path) -> float:
    t0 = time.perf_counter()
    torch.load(path, map_location="cpu", weights_only=True)
    return time.perf_counter() - t0


# -- torch.distributed.checkpoint ----------------------------------------------------------------------
class DCP:
    """async_save with a world-size-1 gloo group, as torchtitan uses it (one staging copy, then a thread)."""

    def __init__(self) -> None:
        import socket

        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        if not dist.is_initialized():
            with socket.socket() as s:  # a free port: no fixed port anywhere
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
            self.owned = True

    def save(self, directory: Path, state: Any) -> tuple[float, float]:
        import torch.distributed.checkpoint as dcp

        if directory.exists():
            shutil.rmtree(directory)
        t0 = time.perf_counter()
        future = dcp.async_save(_dcp_state(state), checkpoint_id=str(directory))
        t1 = time.perf_counter()
        future.result()
        return t1 - t0, time.perf_counter() - t0

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


def _dcp_state(state: dict[str, Any]) -> dict[str, Any]:
    # DCP stores tensors and picklable leaves; the synthetic state's int step is fine as it is.
    return dict(state)


# -- statistics --------------------------------------------------------------------------------------
def quantile(sorted_xs: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    pos = q * (len(sorted_xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def spread(xs: list[float]) -> dict[str, float]:
    """The median of repeated measurements, their quartiles, extremes and count."""
    ys = sorted(xs)
    return {"median": statistics.median(ys), "q25": quantile(ys, 0.25), "q75": quantile(ys, 0.75), "min": ys[0],
            "max": ys[-1], "n": len(ys)}
