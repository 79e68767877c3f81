"""pccheck-bench, training side: steps per second of the real trainer (pccheck.demo.train.run, the same trainer for
every checkpointer) with no checkpoint, and with a checkpoint every 10 and every 50 steps.

Runs in a child process (`python -m pccheck.tools.bench_train SPEC.json`) so that the benchmark's own
gigabyte state does not share memory or threads with the training; the configurations are interleaved
round by round, so drift on a noisy machine hits all of them alike. The window of a run starts after its
first step (model build, AdamW's lazy state and the checkpoint file's preallocation are startup, not
steady state) and ends when run() returns, i.e. after the last checkpoint is durable.

Every run gets the same trainer flags (pccheck-bench passes `--threads 1` by default): with torch's default
of one intra-op thread per core, the OpenMP workers spin against the writer threads and against anything
else on a 2-core machine, and the same 61 steps took 46-78 s instead of 7-10 s (measured here).
"""
from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

CONFIGS = [("none", 0), ("pccheck", 10), ("torchsave", 10), ("pccheck", 50), ("torchsave", 50)]


class _Clock:
    """In place of the trainer's StopRequest: never stops, only notes when the first step ended."""

    def __init__(self) -> None:
        self.first: Optional[float] = None

    def check(self, step: int) -> Optional[str]:
        if self.first is None:
            self.first = time.perf_counter()
        return None

    def completed(self, step: int) -> None:
        pass


def _one_run(kind: str, freq: int, steps: int, workdir: Path, extra: list[str], base: list[str]) -> dict[str, Any]:
    from pccheck.demo.train import run
    from pccheck.tools.bench_io import PeakRSS

    ckdir = workdir / f"{kind}-{freq}"
    shutil.rmtree(ckdir, ignore_errors=True)
    argv = ["--training-steps", str(steps), "--checkpointer", kind, "--checkpoint-dir", str(ckdir), *base]
    if freq:
        argv += ["--checkpoint-freq", str(freq)]
    if kind == "pccheck":
        argv += extra
    clock = _Clock()
    with PeakRSS() as mem:
        run(argv, stop=clock)
        end = time.perf_counter()
    shutil.rmtree(ckdir, ignore_errors=True)
    assert clock.first is not None
    return {"kind": kind, "freq": freq, "steps_per_s": (steps - 1) / (end - clock.first), "peak_extra": mem.extra}


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    workdir = Path(spec["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    base = spec.get("trainer_flags", [])
    _one_run("none", 0, min(spec["steps"], 21), workdir, [], base)  # warm-up: imports, allocator, first-touch
    runs = []
    for _ in range(spec["rounds"]):
        for kind, freq in CONFIGS:
            runs.append(_one_run(kind, freq, spec["steps"], workdir, spec.get("pccheck_flags", []), base))
    return summarize(runs)


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(kind: str, freq: int, key: str) -> float:
        return statistics.median(r[key] for r in runs if r["kind"] == kind and r["freq"] == freq)

    base = med("none", 0, "steps_per_s")
    out: dict[str, Any] = {"steps_per_s_none": base, "runs": runs}
    for kind, freq in CONFIGS[1:]:
        sps = med(kind, freq, "steps_per_s")
        prefix = "" if kind == "pccheck" else "baseline_"
        out[f"{prefix}steps_per_s_every_{freq}"] = sps
        out[f"{prefix}overhead_every_{freq}"] = base / sps - 1.0  # extra time per step, as a fraction
    none_mem = statistics.median(r["peak_extra"] for r in runs if r["kind"] == "none")
    for kind in ("pccheck", "torchsave"):
        peak = max(r["peak_extra"] for r in runs if r["kind"] == kind)
        out[f"train_peak_extra_bytes_{kind}"] = max(0, peak - none_mem)
    return out


def measure(steps: int, rounds: int, workdir: Path, pccheck_flags: list[str], trainer_flags: list[str] = (),
            timeout: float = 1800) -> dict[str, Any]:
    """Runs the worker in a child process and returns its summary."""
    with tempfile.TemporaryDirectory(prefix="pccheck-bench-train-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        out_path = Path(tmp) / "out.json"
        spec = {"steps": steps, "rounds": rounds, "workdir": str(workdir), "pccheck_flags": pccheck_flags,
                "trainer_flags": list(trainer_flags), "out": str(out_path)}
        spec_path.write_text(json.dumps(spec))
        proc = subprocess.run(
            [sys.executable, "-m", "pccheck.tools.bench_train", str(spec_path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        if proc.returncode != 0:
            raise RuntimeError(f"training benchmark failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return json.loads(out_path.read_text())


def main() -> int:
    spec = json.loads(Path(sys.argv[1]).read_text())
    result = worker(spec)
    Path(spec["out"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
