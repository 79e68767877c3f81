"""pccheck-bench: pccheck against torch.save+fsync, torch.distributed.checkpoint.async_save and the machine's
own limits, on the same state and the same disk, in one run (so the ratios hold on a noisy machine).

Measures: the time training is blocked per checkpoint (against one plain copy of the state), save to
durable (against a raw preallocated write + fdatasync), load with a cold page cache (against torch.load
and a raw sequential read), training overhead of the real trainer with a checkpoint every 10 and every 50
steps, and peak memory above the no-checkpoint run (against the staging budget). Prints a table with the
ratios and the targets, writes `--json FILE` and a PNG chart. `--auto-tune` sweeps writer threads x
max_async x chunk size and prints the flags to use.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from rich.console import Console

from pccheck.sizes import parse_size

from . import bench_io as bio
from . import bench_report, bench_train, bench_tune

console = Console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pccheck-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s = p.add_argument_group("state")
    s.add_argument("--state-gb", type=float, default=1.0, help="synthetic float32 state of this many GiB (default 1)")
    s.add_argument("--d-model", type=int, default=None, help="instead: the trainer's GPT state (model + AdamW) with this width")
    s.add_argument("--n-layers", type=int, default=2, help="with --d-model: layers")
    s.add_argument("--sequence-length", type=int, default=128, help="with --d-model: sequence length")
    r = p.add_argument_group("run")
    r.add_argument("--quick", action="store_true", help="fewer repetitions and shorter training runs (< 3 min for 1 GiB here)")
    r.add_argument("--reps", type=int, default=None, help="repetitions of the cheap measurements (default 5, quick 3)")
    r.add_argument("--train-steps", type=int, default=None, help="steps per training run (default 151, quick 61)")
    r.add_argument("--train-rounds", type=int, default=None, help="interleaved rounds of training runs (default 3, quick 2)")
    r.add_argument("--train-threads", type=int, default=1,
                   help="torch intra-op threads of the trainer, for every run (default 1: one core trains, one writes)")
    r.add_argument("--skip-train", action="store_true", help="no training-overhead measurement")
    r.add_argument("--skip-dcp", action="store_true", help="no torch.distributed.checkpoint measurement")
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


def storage(args: argparse.Namespace, state: Any, work: Path, reps: int, slow_reps: int) -> dict[str, Any]:
    import torch

    from pccheck.checkpointer import Checkpointer
    from pccheck.torchsave import TorchSaveCheckpointer

    nbytes = bio.state_bytes(state)
    views = bio.byte_views(state)
    out: dict[str, Any] = {}

    # stall floor, raw write and pccheck, interleaved round by round
    dst = torch.ones(nbytes, dtype=torch.uint8)  # written: every page faulted in before timing
    floors, raws, stalls, durables = [], [], [], []
    raw_path = work / "raw.bin"
    pc_dir = work / "pccheck"
    with bio.PeakRSS() as mem:
        ck = Checkpointer(pc_dir, **_checkpointer_kwargs(args))
        t0 = time.perf_counter()
        ck.prepare(state)
        out["prepare_s"] = time.perf_counter() - t0
        for i in range(reps):
            floors.append(bio.copy_floor(state, dst))
            raws.append(bio.raw_write(raw_path, views))
            s, d = bio.pccheck_save(ck, i + 1, state)
            stalls.append(s)
            durables.append(d)
            _log(f"round {i + 1}/{reps}: copy {floors[-1]:.3f}s, raw write {raws[-1]:.3f}s, "
                 f"pccheck blocked {s:.3f}s, durable {d:.3f}s")
        geo = ck._store.geometry  # type: ignore[union-attr]
        bytes_written = ck._store.stats["bytes_written"]  # type: ignore[union-attr]
        ck.close()
    del dst
    out.update(stall_floor_s=bio.median(floors), disk_write_s=bio.median(raws), stall_s=bio.median(stalls),
               durable_s=bio.median(durables), peak_extra_bytes=mem.extra, memory_method=mem.method,
               memory_budget_bytes=geo["buffer_count"] * geo["buffer_size"], bytes_written=bytes_written,
               pccheck_geometry={k: geo[k] for k in ("threads", "max_async", "keep", "chunk_size", "buffer_count", "durability")},
               samples={"stall_floor_s": floors, "disk_write_s": raws, "stall_s": stalls, "durable_s": durables})

    # torch.save + fsync (blocked for the whole write: stall == durable)
    ts_dir = work / "torchsave"
    ts = TorchSaveCheckpointer(ts_dir, keep=1)
    ts.prepare(state)
    times = []
    with bio.PeakRSS() as mem:
        for i in range(slow_reps):
            times.append(bio.torchsave_save(ts, i + 1, state))
            _log(f"torch.save+fsync {i + 1}/{slow_reps}: {times[-1]:.3f}s")
    out.update(baseline_stall_s=bio.median(times), baseline_durable_s=bio.median(times), baseline_peak_extra_bytes=mem.extra)
    out["samples"]["baseline_stall_s"] = times

    # DCP async_save: the first call sets up its staging; steady state is what a training run sees
    if not args.skip_dcp:
        dcp = bio.DCP()
        dstalls, ddur = [], []
        with bio.PeakRSS() as mem:
            for i in range(slow_reps + 1):
                s, d = dcp.save(work / "dcp", state)
                dstalls.append(s)
                ddur.append(d)
                _log(f"DCP async_save {i + 1}/{slow_reps + 1}{' (warm-up)' if i == 0 else ''}: blocked {s:.3f}s, durable {d:.3f}s")
        dcp.close()
        out.update(dcp_stall_s=bio.median(dstalls[1:]), dcp_durable_s=bio.median(ddur[1:]), dcp_peak_extra_bytes=mem.extra,
                   dcp_first_stall_s=dstalls[0], dcp_first_durable_s=ddur[0])
        out["samples"].update(dcp_stall_s=dstalls, dcp_durable_s=ddur)
        shutil.rmtree(work / "dcp", ignore_errors=True)
    else:
        out.update(dcp_stall_s=None, dcp_durable_s=None)

    # loads with a cold page cache
    ts_file = max(ts_dir.glob("ckpt-*.pt"))
    del views
    loads, tloads, rreads = [], [], []
    method = ""
    for i in range(max(2, slow_reps)):
        method = bio.drop_caches([raw_path])
        rreads.append(bio.raw_read(raw_path, nbytes))
        bio.drop_caches([pc_dir])
        loads.append(bio.pccheck_load(pc_dir))
        bio.drop_caches([ts_file])
        tloads.append(bio.torch_load(ts_file))
        _log(f"cold load {i + 1}: raw read {rreads[-1]:.3f}s, pccheck {loads[-1]:.3f}s, torch.load {tloads[-1]:.3f}s")
    out.update(load_s=bio.median(loads), baseline_load_s=bio.median(tloads), disk_read_s=bio.median(rreads), cache_drop=method)
    out["samples"].update(load_s=loads, baseline_load_s=tloads, disk_read_s=rreads)
    for p in (raw_path, pc_dir, ts_dir):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return out


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    t_start = time.perf_counter()
    reps = args.reps or (3 if args.quick else 5)
    slow_reps = 1 if args.quick else 3
    steps = args.train_steps or (61 if args.quick else 151)
    rounds = args.train_rounds or (2 if args.quick else 3)
    owned = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="pccheck-bench-")) if owned else Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"command": "pccheck-bench " + " ".join(sys.argv[1:] if argv is None else argv),
                              "machine": machine(work), "directory": str(work)}
    try:
        if args.d_model:
            state = bio.model_state(args.d_model, args.n_layers, args.sequence_length)
            result["state"] = f"GPT d_model={args.d_model} n_layers={args.n_layers} + AdamW"
        else:
            state = bio.synthetic_state(int(args.state_gb * (1 << 30)))
            result["state"] = f"{args.state_gb:g} GiB of float32 tensors (64 MiB each, random)"
        result["state_bytes"] = bio.state_bytes(state)
        _log(f"state: {result['state']} = {result['state_bytes']} bytes; scratch {work}")
        result.update(storage(args, state, work, reps, slow_reps))

        if args.auto_tune:
            _log("auto-tune sweep: writer threads x max_async x chunk size")
            rows = bench_tune.sweep(state, work / "sweep", log=lambda m: _log(m))
            best = bench_tune.pick(rows)
            result["sweep"] = rows
            result["auto_tune"] = {**best, "flags": bench_tune.flags(best)}
        del state

        if not args.skip_train:
            _log(f"training overhead: default model, {rounds} rounds x {len(bench_train.CONFIGS)} runs x {steps} steps")
            tr = bench_train.measure(steps, rounds, work / "train", _trainer_flags(args),
                                    ["--threads", str(args.train_threads)] if args.train_threads else [])
            result["train_threads"] = args.train_threads
            result.update({k: v for k, v in tr.items() if k != "runs"})
            result["train_runs"] = tr["runs"]
            result["train_steps"] = steps
        else:
            for k in ("overhead_every_10", "baseline_overhead_every_10", "overhead_every_50", "baseline_overhead_every_50"):
                result[k] = None
    finally:
        if owned:
            shutil.rmtree(work, ignore_errors=True)
    result["targets"] = bench_report.evaluate(result)
    result["elapsed_s"] = time.perf_counter() - t_start
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    result = run(argv)
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
    passed = sum(1 for t in result["targets"] if t["pass"])
    out.print(f"{passed}/{len(result['targets'])} targets pass; chart {chart_path}"
              + (f"; numbers {args.json}" if args.json else "") + f"; {result['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
