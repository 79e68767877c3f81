"""pccheck-bench --auto-tune: writer threads x max_async x chunk size on this machine and disk.

Each setting gets a staging budget of max_async states (every checkpoint in flight has its own snapshot,
so a save never waits for the disk while fewer than max_async are in flight) and writes a burst of
max_async + 1 back-to-back checkpoints; bandwidth = bytes of the burst / time from the first save to the
last commit. The pick is the smallest measured peak memory within 5% of the best bandwidth (ties: fewer
threads, then the larger chunk).
"""
from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path
from typing import Any

from .bench_io import MiB, PeakRSS, state_bytes

THREADS = (1, 2, 4)
MAX_ASYNC = (1, 2)
CHUNKS = (4 * MiB, 16 * MiB, 64 * MiB)
TOLERANCE = 0.05


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


def sweep(state: Any, workdir: Path, threads=THREADS, max_async=MAX_ASYNC, chunks=CHUNKS, log=print) -> list[dict[str, Any]]:
    from pccheck.checkpointer import Checkpointer

    nbytes = state_bytes(state)
    rows = []
    for ma in max_async:  # one file per slot count, created with the smallest chunk so every table fits
        shutil.rmtree(workdir / f"ma{ma}", ignore_errors=True)
    for ma, th, cs in itertools.product(max_async, threads, sorted(chunks)):
        budget = ma * _round_up(nbytes, cs)
        n = ma + 1
        with PeakRSS() as mem:
            ck = Checkpointer(workdir / f"ma{ma}", max_async=ma, keep=2, threads=th, chunk_size=cs, memory_budget=budget)
            ck.prepare(state)
            stalls = []
            t0 = time.perf_counter()
            for i in range(n):
                s = time.perf_counter()
                ck.save(i + 1, state)
                stalls.append(time.perf_counter() - s)
            ck.wait()
            dt = time.perf_counter() - t0
            ck.close()
        row = {"threads": th, "max_async": ma, "chunk_size": cs, "memory_budget": budget,
               "bandwidth": n * nbytes / dt, "burst_s": dt, "stall_first_s": stalls[0], "peak_extra": mem.extra}
        log(f"  threads={th} max_async={ma} chunk={cs // MiB}M: {row['bandwidth'] / 1e9:.2f} GB/s, "
            f"first stall {stalls[0]:.3f}s, peak +{mem.extra / MiB:.0f} MiB")
        rows.append(row)
    shutil.rmtree(workdir, ignore_errors=True)
    return rows


def pick(rows: list[dict[str, Any]]) -> dict[str, Any]:
    best = max(r["bandwidth"] for r in rows)
    ok = [r for r in rows if r["bandwidth"] >= (1 - TOLERANCE) * best]
    return min(ok, key=lambda r: (r["peak_extra"] // (16 * MiB), r["threads"], -r["chunk_size"]))


def flags(row: dict[str, Any]) -> str:
    return (f"--writer-threads {row['threads']} --max-async {row['max_async']} "
            f"--chunk-size {row['chunk_size'] // MiB}M --memory-budget {_mib_ceil(row['memory_budget'])}M")


def _mib_ceil(n: int) -> int:
    return -(-n // MiB)
