"""DCP's own FileSystemWriter against pccheck.dcp.Writer, same ranks, same state, same disk, in one run.

    python -m pccheck.tools.bench_dcp bench --ranks 2 --size 1G --repeats 3 [--dir D] [--json OUT]
    python -m pccheck.tools.bench_dcp killloop --rounds 10 [--dir D] [--json OUT]

bench: N ranks (gloo, CPU) save a DTensor state (fp32, Shard(0), `--size` bytes in all) with
dcp.async_save (thread mode) through each writer in turn, then load it on the same ranks from a cold page
cache (the files' pages dropped with posix_fadvise). Per save: time blocked (until async_save returns:
DCP's stager copies the state), time to durable (until its future completes: FileSystemWriter fsyncs its
files and renames `.metadata`; pccheck commits every rank's part, then the global commit). Medians of the
repeats, rank 0's clock.

killloop: 2 ranks save steps 1, 2, 3, ... with dcp.save into one directory per writer, both SIGKILLed at a
random moment (0.3 - 3 s after the first checkpoint is complete); then one process loads the directory with the writer's reader and checks that
every tensor holds the values of the step the checkpoint says it is (each element is a function of the
step, so a mix of two steps cannot pass). Outcomes: ok, mixed (wrong data returned), error (no data).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

WRITERS = ("filesystem", "pccheck")


def _state(step: int, total: int, mesh: Any, zero: bool = False) -> dict[str, Any]:
    import torch
    from torch.distributed.tensor import Shard, distribute_tensor

    cols = 1024
    rows = max(mesh.size() if mesh is not None else 1, total // 4 // 4 // cols)
    sd: dict[str, Any] = {"step": -1 if zero else step}
    for i in range(4):
        t = torch.zeros(rows, cols) if zero else torch.full((rows, cols), float(step * 10 + i))
        sd[f"w{i}"] = distribute_tensor(t, mesh, [Shard(0)]) if mesh is not None else t
    return sd


def _writer(kind: str, directory: Path, step: Optional[int] = None) -> Any:
    import torch.distributed.checkpoint as dcp

    import pccheck.dcp

    return dcp.FileSystemWriter(str(directory)) if kind == "filesystem" else pccheck.dcp.Writer(directory, step=step)


def _reader(kind: str, directory: Path) -> Any:
    import torch.distributed.checkpoint as dcp

    import pccheck.dcp

    return dcp.FileSystemReader(str(directory)) if kind == "filesystem" else pccheck.dcp.Reader(directory)


def _drop_cache(directory: Path) -> None:
    for p in directory.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _rank_bench(args: argparse.Namespace) -> None:
    """One rank of `bench`: every writer in turn, `repeats` times, then a cold load each."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    rank = dist.get_rank()
    results: dict[str, dict[str, list[float]]] = {w: {"blocked": [], "durable": [], "load": []} for w in WRITERS}
    sd = _state(1, args.size, mesh)
    for rep in range(args.repeats + 1):  # the first round creates and preallocates the files: not counted
        for kind in WRITERS:
            directory = Path(args.dir) / kind
            dist.barrier()
            t0 = time.perf_counter()
            fut = dcp.async_save(sd, storage_writer=_writer(kind, directory))
            t1 = time.perf_counter()
            fut.result()
            t2 = time.perf_counter()
            dist.barrier()
            if rep:
                results[kind]["blocked"].append(t1 - t0)
                results[kind]["durable"].append(t2 - t0)
    for rep in range(args.repeats):
        for kind in WRITERS:
            directory = Path(args.dir) / kind
            if rank == 0:
                _drop_cache(directory)
            target = _state(0, args.size, mesh, zero=True)
            dist.barrier()
            t0 = time.perf_counter()
            dcp.load(target, storage_reader=_reader(kind, directory))
            dist.barrier()
            results[kind]["load"].append(time.perf_counter() - t0)
            assert target["step"] == 1
    if rank == 0:
        Path(args.out).write_text(json.dumps(results))
    import pccheck.dcp

    pccheck.dcp.close_all()
    dist.destroy_process_group()


def _rank_loop(args: argparse.Namespace) -> None:
    """One rank of `killloop`: saves steps 1, 2, ... with dcp.save until killed."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    step = args.first_step
    while True:
        dcp.save(_state(step, args.size, mesh), storage_writer=_writer(args.writer, Path(args.dir), step))
        step += 1


def _check(kind: str, directory: Path, size: int) -> tuple[str, Optional[int], str]:
    """(outcome, step, detail) of a one-process load of `directory` after a kill."""
    import torch
    import torch.distributed.checkpoint as dcp

    target = _state(0, size, None, zero=True)
    try:
        dcp.load(target, storage_reader=_reader(kind, directory), no_dist=True)
    except BaseException as exc:  # DCP's CheckpointException is a BaseException
        if isinstance(exc, KeyboardInterrupt):
            raise
        text = " ".join(str(exc).split())
        why = next((line for line in str(exc).splitlines()[::-1] if line.strip()), text)
        return "error", None, why.strip()[:200]
    step = int(target["step"])
    mixed = [k for k, v in target.items() if k != "step" and not torch.equal(v, torch.full_like(v, float(step * 10 + int(k[1:]))))]
    return ("mixed", step, f"tensors {mixed} hold another step's values") if mixed else ("ok", step, "")


def _wait_first(kind: str, directory: Path, procs: list[subprocess.Popen], first: int, since_ns: int) -> None:
    """Until this round's first checkpoint is complete: a pccheck load would return step `first` or later;
    FileSystemWriter renamed a new `.metadata` into place since the round began."""
    from pccheck.dcp.sets import newest, scan_directory

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        if kind == "pccheck":
            found = newest(scan_directory(directory))
            if found is not None and (found[1].step or 0) >= first:
                return
        else:
            try:
                if (directory / ".metadata").stat().st_mtime_ns > since_ns:
                    return
            except FileNotFoundError:
                pass
        time.sleep(0.05)
    raise SystemExit(f"{kind}: no checkpoint within 180 s (exit codes {[p.poll() for p in procs]})")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, argv: list[str]) -> list[subprocess.Popen]:
    port = _free_port()
    procs = []
    for rank in range(world):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "pccheck.tools.bench_dcp", *argv], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
    return procs


def bench(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.dir) / "results.json"
    procs = _launch(args.ranks, ["_bench", "--dir", args.dir, "--size", str(args.size), "--repeats", str(args.repeats),
                                 "--out", str(out)])
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"bench ranks exited {codes}")
    raw = json.loads(out.read_text())
    return {k: {m: round(statistics.median(v), 3) for m, v in ms.items()} | {"runs": ms} for k, ms in raw.items()}


def killloop(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    outcomes: dict[str, list[dict[str, Any]]] = {w: [] for w in WRITERS}
    for r in range(args.rounds):
        delay = rng.uniform(0.3, 3.0)
        for kind in WRITERS:
            directory = Path(args.dir) / kind
            first = 1 + 1000 * r  # each round's steps are its own: the check proves which round wrote what it loads
            began = time.time_ns()
            procs = _launch(2, ["_loop", "--dir", str(directory), "--size", str(args.size), "--writer", kind,
                                "--first-step", str(first)])
            _wait_first(kind, directory, procs, first, began)
            time.sleep(delay)
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            for p in procs:
                p.wait()
            outcome, step, detail = _check(kind, directory, args.size)
            outcomes[kind].append({"round": r, "kill_after_s": round(delay, 2), "outcome": outcome, "step": step,
                                   "detail": detail})
            print(f"round {r} {kind:10s} killed {delay:.2f} s after a checkpoint: {outcome} step {step} {detail}",
                  file=sys.stderr)
        import pccheck.dcp

        pccheck.dcp.close_all()
    return {k: {"ok": sum(o["outcome"] == "ok" for o in v), "mixed": sum(o["outcome"] == "mixed" for o in v),
                "error": sum(o["outcome"] == "error" for o in v), "rounds": v} for k, v in outcomes.items()}


def main(argv: Optional[list[str]] = None) -> int:
    from pccheck.sizes import parse_size

    p = argparse.ArgumentParser(prog="python -m pccheck.tools.bench_dcp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["bench", "killloop", "_bench", "_loop"])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--size", type=parse_size, default=parse_size("256M"), help="state bytes over all ranks")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--writer", choices=WRITERS, default="pccheck")
    p.add_argument("--first-step", type=int, default=1)
    args = p.parse_args(argv)
    if args.mode == "_bench":
        _rank_bench(args)
        return 0
    if args.mode == "_loop":
        _rank_loop(args)
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        args.dir = tmp
        result = bench(args) if args.mode == "bench" else killloop(args)
    text = json.dumps(result, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    print(json.dumps({k: {m: v for m, v in r.items() if m not in ("runs", "rounds")} for k, r in result.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
