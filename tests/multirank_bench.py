"""Write bandwidth of the multi-rank checkpointer: N ranks save one replicated state of SIZE bytes
(each rank writes ~SIZE/N into its own file), time from save() to the global commit (every rank durable).

    python tests/multirank_bench.py --ranks 2 --size 1G [--repeat 3] [--dir DIR]

Not a test (pytest does not collect it); docs/multirank.md quotes its output.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def worker(directory: str, size: int, repeat: int, chunk: int, threads: int) -> None:
    import torch

    from pccheck import distributed
    from pccheck.distributed import Comm
    from pccheck.sharded import ShardedCheckpointer

    env = distributed.detect()
    dist = distributed.setup(env, "cpu") if env else None
    comm = dist.comm if dist else Comm.single()
    g = torch.Generator().manual_seed(0)
    n = size // 4
    state = {"step": 0, "model": {f"w{i}": torch.randn(n // 8, generator=g) for i in range(8)}, "rng": {"x": 1}}
    knobs = dict(max_async=1, keep=1, threads=threads, chunk_size=chunk, memory_budget=None)  # staging: one part
    if comm.world_size > 1:
        ck = ShardedCheckpointer(directory, comm, **knobs)
    else:  # one rank: the single-process checkpointer (pccheck.ckpt), the baseline
        from pccheck.checkpointer import Checkpointer

        ck = Checkpointer(directory, **knobs)
    ck.prepare(state)
    times = []
    for r in range(repeat + 1):  # the first write goes into fresh preallocated blocks: reported apart
        comm.barrier()
        t0 = time.monotonic()
        state["step"] = r + 1
        h = ck.save(r + 1, state)
        snap = time.monotonic() - t0
        ck.wait()  # local durable + exchange: the global commit
        times.append((snap, time.monotonic() - t0))
    ck.close()
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.world_size, "bytes": n * 4, "times": times}))
    if dist:
        dist.close()


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--size", default="1G")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--chunk", default="16M")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dir", default=None)
    p.add_argument("--_worker", nargs=5, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a._worker:
        d, size, repeat, chunk, threads = a._worker
        worker(d, int(size), int(repeat), int(chunk), int(threads))
        return 0
    from pccheck.sizes import parse_size

    from multirank_helpers import free_port, rank_env

    base = Path(a.dir) if a.dir else Path(tempfile.mkdtemp(prefix="mrbench-"))
    d = base / f"bench-{a.ranks}"
    shutil.rmtree(d, ignore_errors=True)
    port = free_port()
    args = [str(d), str(parse_size(a.size)), str(a.repeat), str(parse_size(a.chunk)), str(a.threads)]
    procs = []
    for r in range(a.ranks):
        env = rank_env(r, a.ranks, port) if a.ranks > 1 else {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
        procs.append(subprocess.Popen([sys.executable, __file__, "--_worker", *args], env=env,
                                      stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL, text=True))
    out = procs[0].communicate()[0]
    codes = [procs[0].returncode] + [q.wait() for q in procs[1:]]
    if any(codes):
        print(f"ranks exited {codes}", file=sys.stderr)
        return 1
    res = json.loads(out.strip().splitlines()[-1])
    gb = res["bytes"] / 1e9
    first, rest = res["times"][0], res["times"][1:]
    best = min(t for _, t in rest)
    print(f"{res['ranks']} rank(s), {gb:.2f} GB state: first write {first[1]:.2f} s ({gb / first[1]:.2f} GB/s); "
          f"rewrites {', '.join(f'{t:.2f}' for _, t in rest)} s, best {gb / best:.2f} GB/s aggregate; "
          f"training blocked {max(s for s, _ in rest) * 1000:.0f} ms at most")
    shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
