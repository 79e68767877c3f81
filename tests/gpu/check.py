"""GPU checks of pccheck (run by check.sh): bit-exact resume on the device, stall / D2H bandwidth, and the
training overhead of a checkpoint at every step."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from pccheck.checkpointer import Checkpointer, load_checkpoint


def resume_is_bit_exact(device: str, dtype: str, work: Path) -> bool:
    flags = ["--device", device, "--model-dtype", dtype, "--training-steps", "151", "--checkpoint-freq", "50",
             "--sequence-length", "256", "--batch-size", "8", "--checkpointer", "pccheck"]

    def run(d: Path, *extra: str) -> int:
        d.mkdir(parents=True, exist_ok=True)
        return subprocess.run([sys.executable, "-m", "pccheck.demo", *flags, "--checkpoint-dir", str(d / "ckpt"),
                               "--loss-file", str(d / "loss.csv"), *extra], stderr=subprocess.DEVNULL).returncode

    ref, res = work / f"{dtype}-ref", work / f"{dtype}-resumed"
    assert run(ref) == 0
    assert run(res, "--fail-at-step", "70") != 0
    assert run(res, "--load-checkpoint") == 0
    return (ref / "loss.csv").read_bytes() == (res / "loss.csv").read_bytes()


def stall_and_bandwidth(device: str, gib: float, work: Path) -> dict:
    n = int(gib * (1 << 30)) // 4
    # "t": not contiguous, so the snapshot reads a temporary copy that the caller frees right away
    state = {"w": torch.randn(n, device=device), "t": torch.randn(256, 128, device=device).t(), "step": 1}
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    pinned = torch.empty(n, dtype=torch.float32, pin_memory=device == "cuda")
    sync()
    t0 = time.perf_counter()
    pinned.copy_(state["w"], non_blocking=True)
    sync()
    d2h = time.perf_counter() - t0
    with Checkpointer(work / "bw", chunk_size=64 << 20) as ck:
        ck.prepare(state)
        results = []
        for step in range(1, 4):
            state["step"] = step
            sync()
            t0 = time.perf_counter()
            handle = ck.save(step, state)
            stall = time.perf_counter() - t0  # host blocked in save()
            ck.before_update()
            sync()
            snapshot = time.perf_counter() - t0  # device copy finished
            handle.wait()
            results.append((stall, snapshot, time.perf_counter() - t0))
    loaded = load_checkpoint(work / "bw")
    assert loaded is not None and torch.equal(loaded.state["w"], state["w"].cpu())
    assert torch.equal(loaded.state["t"], state["t"].cpu())
    stall, snapshot, durable = sorted(results)[1]
    nbytes = n * 4
    return {"state_bytes": nbytes, "d2h_plain_s": d2h, "d2h_GBps": nbytes / d2h / 1e9, "save_call_s": stall,
            "snapshot_s": snapshot, "snapshot_GBps": nbytes / snapshot / 1e9, "durable_s": durable}


def every_step_overhead(device: str, rounds: int, work: Path) -> dict:
    """Throughput cost of a checkpoint after every step against none, on the default and the sequence-length-1024
    model (batch 8 on a GPU), measured as pccheck-bench does: interleaved blocks, the median over rounds.
    Where the disk cannot take a state per step, the saves wait for a free slot: `waited` counts them."""
    from pccheck.tools import bench_train

    flags = ["--device", device] + (["--batch-size", "8"] if device == "cuda" else ["--threads", "1"])
    out = bench_train.measure(rounds, work / "every-step", [], flags, bench_train.every_step_configs())
    rows = {k: out["overheads"][k] for k in ("overhead_every_1", "overhead_every_1_seq1024")}
    return {"every_step": {k: {f: v[f] for f in ("median", "q25", "q75", "n", "saved", "waited", "effective_every")}
                           for k, v in rows.items()}, "steps_per_s_none": out.get("steps_per_s_none")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--gib", type=float, default=2.0, help="state size for the stall and bandwidth check")
    p.add_argument("--rounds", type=int, default=16, help="rounds of the every-step overhead (default 16)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")) / "gpu-check.json")
    args = p.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("check.py: no CUDA device here; use --device cpu for a smoke test", file=sys.stderr)
        return 2
    summary: dict = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        for dtype in ("fp32", "bf16"):
            summary[f"bit_exact_{dtype}"] = resume_is_bit_exact(args.device, dtype, work)
        summary.update(stall_and_bandwidth(args.device, args.gib, work))
        summary.update(every_step_overhead(args.device, args.rounds, work))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0 if summary["bit_exact_fp32"] and summary["bit_exact_bf16"] else 1


if __name__ == "__main__":
    sys.exit(main())
