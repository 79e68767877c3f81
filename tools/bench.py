"""pccheck-bench: pccheck against torch.save+fsync, torch.distributed.checkpoint.async_save and the machine's
own limits, on the same state and the same disk, in one run.

Measures: the time training is blocked per checkpoint, with a compute step covering the snapshot copy (as
in training) and without (the copy alone, against one plain memcpy of the state), save to durable (against
a raw preallocated write + fdatasync), load with a cold page cache (against torch.load and a raw read into
fresh memory), the training overhead of the real trainer with a checkpoint every step, every 10 and every
50 steps (and every step on the sequence-length-1024 model), and peak memory (against the staging
budget). Every repetition runs every contender, so each ratio is taken within one repetition; the figures
are medians over repetitions, with their spread. Prints the table and the targets, writes `--json FILE`
and a PNG chart. `--auto-tune` sweeps writer threads x max_async x chunk size and prints the flags to use.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console

from pccheck.sizes import parse_size

from . import bench_io as bio
from . import bench_isolation, bench_report, bench_train, bench_tune

console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pccheck-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_argument_group("state")
    s.add_argument("--state-gb", type=float, default=1.0, help="synthetic float32 state of this many GiB (default 1)")
    s.add_argument("--d-model", type=int, default=None, help="instead: the trainer's GPT state (model + AdamW) with this width")
    s.add_argument("--n-layers", type=int, default=2, help="with --d-model: layers")
    s.add_argument("--sequence-length", type=int, default=128, help="with --d-model: sequence length")
    r = p.add_argument_group("run")
    r.add_argument("--quick", action="store_true", help="fewer repetitions (about 5 min here for 1 GiB)")
    r.add_argument("--reps", type=int, default=None,
                   help="repetitions of the storage measurements, every contender in each (default 6, quick 4)")
    r.add_argument("--train-rounds", type=int, default=None,
                   help="rounds of the default model's 10-step training blocks (default 80, quick 40); the "
                        "sequence-length-1024 model's blocks get a quarter, the 50-step blocks an eighth")
    r.add_argument("--train-threads", type=int, default=1,
                   help="torch intra-op threads of the trainer and the compute step (default 1: one core computes, one copies and writes)")
    r.add_argument("--skip-train", action="store_true", help="no training-overhead measurement")
    r.add_argument("--skip-dcp", action="store_true", help="no torch.distributed.checkpoint measurement")
    r.add_argument("--no-isolate", dest="isolate", action="store_false",
                   help="run in the caller's session at its priority (default: a session of its own at autogroup "
                        "nice -20 where permitted, see tools/bench_isolation.py)")
    r.add_argument("--auto-tune", action="store_true", help="sweep threads x max_async x chunk size; print the flags to use")
    r.add_argument("--dir", default=None, help="scratch directory on the disk to measure (default: a new one under $TMPDIR)")
    r.add_argument("--json", default=None, help="write the numbers here")
    r.add_argument("--chart", default=None, help="PNG chart (default: next to --json, else bench.png)")
    c = p.add_argument_group("pccheck settings (default: the Checkpointer's)")
    c.add_argument("--writer-threads", type=int, default=None)
    c.add_argument("--max-async", type=int, default=None)
    c.add_argument("--chunk-size", type=parse_size, default=None)
    c.add_argument("--memory-budget", type=parse_size, default=None)
    c.add_argument("--durability", default=None, choices=["auto", "fdatasync", "direct"])
    return p


def _checkpointer_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw = {"threads": args.writer_threads, "max_async": args.max_async, "chunk_size": args.chunk_size,
          "memory_budget": args.memory_budget, "durability": args.durability}
    return {k: v for k, v in kw.items() if v is not None}


def _trainer_flags(args: argparse.Namespace) -> list[str]:
    out = []
    for flag, value in (("--writer-threads", args.writer_threads), ("--max-async", args.max_async),
                        ("--chunk-size", args.chunk_size), ("--memory-budget", args.memory_budget),
                        ("--durability", args.durability)):
        if value is not None:
            out += [flag, str(value)]
    return out


def machine(directory: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "arch": platform.machine(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_bytes"] = int(line.split()[1]) * 1024
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype = line.split()[:3]
            if str(directory.resolve()).startswith(mnt) and len(mnt) > len(best):
                best, info["fs"] = mnt, f"{fstype} on {dev} (mounted at {mnt})"
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def _log(msg: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {msg}")


def storage(args: argparse.Namespace, state: Any, work: Path, reps: int) -> dict[str, Any]:
    """Peak memory of each contender, then `reps` repetitions that each run every measurement once."""
    import torch

    from pccheck.checkpointer import Checkpointer
    from pccheck.torchsave import TorchSaveCheckpointer

    nbytes = bio.state_bytes(state)
    views = bio.byte_views(state)
    raw_path, pc_dir, ts_dir, dcp_dir = work / "raw.bin", work / "pccheck", work / "torchsave", work / "dcp"
    out: dict[str, Any] = {}

    with bio.PeakRSS() as mem:  # one checkpoint, from preallocating the file to durable
        ck = Checkpointer(pc_dir, **_checkpointer_kwargs(args))
        t0 = time.perf_counter()
        ck.prepare(state)
        out["prepare_s"] = time.perf_counter() - t0
        bio.pccheck_save(ck, 1, state)
    geo = ck._store.geometry  # type: ignore[union-attr]
    out.update(peak_extra_bytes=mem.extra, memory_method=mem.method,
               memory_budget_bytes=geo["buffer_count"] * geo["buffer_size"],
               pccheck_geometry={k: geo[k] for k in ("threads", "max_async", "keep", "chunk_size", "buffer_count", "durability")})
    ts = TorchSaveCheckpointer(ts_dir, keep=1)
    with bio.PeakRSS() as mem:
        bio.torchsave_save(ts, 1, state)
    out["baseline_peak_extra_bytes"] = mem.extra
    dcp = None if args.skip_dcp else bio.DCP()
    if dcp is not None:
        with bio.PeakRSS() as mem:  # the first call sets up DCP's staging: reported apart, not a repetition
            out["dcp_first_stall_s"], out["dcp_first_durable_s"] = dcp.save(dcp_dir, state)
        out["dcp_peak_extra_bytes"] = mem.extra

    # First writes into preallocated blocks are slower (unwritten extents): a training run soon reuses its
    # slots, so every slot, and the raw file, is written once before anything is timed.
    for step in range(2, geo["slot_count"] + 1):
        bio.pccheck_save(ck, step, state)
    bio.raw_write(raw_path, views)
    dst = torch.ones(nbytes, dtype=torch.uint8)  # written: every page faulted in before timing
    compute = bio.Compute(args.train_threads)
    compute.calibrate(2 * bio.copy_floor(state, dst) + 0.1)  # covers the copy, the copy's share of the core and a margin
    names = ["stall_floor_s", "disk_write_s", "snapshot_s", "durable_s", "compute_s", "stall_s", "durable_overlapped_s",
             "compute_with_copy_s", "baseline_stall_s", "dcp_stall_s", "dcp_durable_s", "disk_read_s", "load_s",
             "baseline_load_s"]
    samples: dict[str, list[float]] = {k: [] for k in names if dcp is not None or not k.startswith("dcp_")}
    method = ""
    for i in range(reps):
        step = geo["slot_count"] + 2 * i + 1
        samples["stall_floor_s"].append(bio.copy_floor(state, dst))
        samples["disk_write_s"].append(bio.raw_write(raw_path, views))
        alone = bio.pccheck_save(ck, step, state)
        samples["snapshot_s"].append(alone["blocked"])
        samples["durable_s"].append(alone["durable"])
        samples["compute_s"].append(compute.run())
        covered = bio.pccheck_save(ck, step + 1, state, compute)
        samples["stall_s"].append(covered["blocked"])
        samples["durable_overlapped_s"].append(covered["durable"])
        samples["compute_with_copy_s"].append(covered["compute"])
        samples["baseline_stall_s"].append(bio.torchsave_save(ts, step, state))
        if dcp is not None:
            stall, durable = dcp.save(dcp_dir, state)
            samples["dcp_stall_s"].append(stall)
            samples["dcp_durable_s"].append(durable)
        # cold loads in the order raw, pccheck, torch.load, pccheck, raw: a drift of the disk moves both sides
        cold: dict[str, list[float]] = {"disk_read_s": [], "load_s": [], "baseline_load_s": []}
        for key in ("disk_read_s", "load_s", "baseline_load_s", "load_s", "disk_read_s"):
            method = bio.drop_caches([raw_path, pc_dir, ts_dir])
            cold[key].append(bio.raw_read(raw_path, nbytes) if key == "disk_read_s" else bio.pccheck_load(pc_dir)
                             if key == "load_s" else bio.torch_load(max(ts_dir.glob("ckpt-*.pt"))))
        for key, times in cold.items():
            samples[key].append(statistics.mean(times))
        _log(f"repetition {i + 1}/{reps}: " + ", ".join(f"{k.removesuffix('_s')} {v[-1]:.3f}s" for k, v in samples.items()))
    ck.close()
    if dcp is not None:
        dcp.close()
    del dst, views
    out.update({k: statistics.median(v) for k, v in samples.items()})
    out.update(baseline_durable_s=out["baseline_stall_s"], cache_drop=method, samples=samples,
               compute_threads=args.train_threads)
    if dcp is None:
        out.update(dcp_stall_s=None, dcp_durable_s=None)
    out["ratios"] = bench_report.paired_ratios(samples)
    for p in (raw_path, pc_dir, ts_dir, dcp_dir):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return out


def run(argv: Optional[Sequence[str]] = None, scheduling: str = "the caller's") -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    reps = args.reps or (4 if args.quick else 6)
    rounds = args.train_rounds or (40 if args.quick else 80)
    owned = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="pccheck-bench-")) if owned else Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": "pccheck-bench " + " ".join(sys.argv[1:] if argv is None else argv),
                              "machine": machine(work), "directory": str(work), "scheduling": scheduling}
    try:
        if args.d_model:
            state = bio.model_state(args.d_model, args.n_layers, args.sequence_length)
            result["state"] = f"GPT d_model={args.d_model} n_layers={args.n_layers} + AdamW"
        else:
            state = bio.synthetic_state(int(args.state_gb * (1 << 30)))
            result["state"] = f"{args.state_gb:g} GiB of float32 tensors (64 MiB each, random)"
        result["state_bytes"] = bio.state_bytes(state)
        _log(f"state: {result['state']} = {result['state_bytes']} bytes; scratch {work}; scheduling: {scheduling}")
        result.update(storage(args, state, work, reps))

        if args.auto_tune:
            _log("auto-tune sweep: writer threads x max_async x chunk size")
            rows = bench_tune.sweep(state, work / "sweep", log=lambda m: _log(m))
            best = bench_tune.pick(rows)
            result["sweep"] = rows
            result["auto_tune"] = {**best, "flags": bench_tune.flags(best)}
        del state

        if not args.skip_train:
            _log(f"training overhead: {rounds} rounds of the default model's {bench_train.SHORT_BLOCK}-step blocks, "
                 f"{bench_train.rounds_for(bench_train.SEQ1024_SHARE, rounds)} of the sequence-length-1024 model's, "
                 f"{bench_train.rounds_for(bench_train.LONG_SHARE, rounds)} of the 50-step blocks")
            tr = bench_train.measure(rounds, work / "train", _trainer_flags(args),
                                     ["--threads", str(args.train_threads)] if args.train_threads else [])
            result["train_threads"] = args.train_threads
            result["train_rounds"] = rounds
            result.update({k: v for k, v in tr.items() if k != "blocks"})
            result["train_blocks"] = tr["blocks"]
        else:
            for c in bench_train.CONFIGS:
                if c.kind != "none":
                    result[c.key] = None
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    result["targets"] = bench_report.evaluate(result)
    result["elapsed_s"] = time.perf_counter() - t_start
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.isolate and not bench_isolation.isolated():
        return bench_isolation.rerun_isolated(argv)
    scheduling = bench_isolation.raise_priority() if args.isolate else "the caller's session and priority"
    result = run(argv, scheduling)
    out = Console(width=max(Console().width, 120))
    bench_report.print_all(result, out)
    if "sweep" in result:
        picked = next(r for r in result["sweep"] if all(r[k] == result["auto_tune"][k] for k in ("threads", "max_async", "chunk_size")))
        out.print(bench_report.sweep_table(result["sweep"], picked))
        out.print(f"auto-tune: use [bold]{result['auto_tune']['flags']}[/] "
                  f"({picked['bandwidth'] / 1e9:.2f} GB/s, within {100 * bench_tune.TOLERANCE:.0f}% of the best with the least memory)")
    chart_path = Path(args.chart) if args.chart else (Path(args.json).with_suffix(".png") if args.json else Path("bench.png"))
    bench_report.chart(result, chart_path)
    result["chart"] = str(chart_path)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    out.print("verdicts: " + bench_report.verdict_line(result["targets"]), soft_wrap=True)
    passed = sum(1 for t in result["targets"] if t["pass"])
    out.print(f"{passed}/{len(result['targets'])} targets pass; chart {chart_path}"
              + (f"; numbers {args.json}" if args.json else "") + f"; {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
