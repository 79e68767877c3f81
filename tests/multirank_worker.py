"""A rank of the N->M load test: `save DIR` writes steps 7 and 8 of a known state; `load DIR` checks it."""
from __future__ import annotations

import sys
from typing import Any

import torch

from pccheck import distributed
from pccheck.distributed import Comm
from pccheck.sharded import ShardedCheckpointer, recover

SAVED_BY = 2  # ranks that wrote the checkpoint


def make_state(step: int, rank: int) -> dict[str, Any]:
    """Replicated tensors of several dtypes and shapes (odd sizes: the byte split cuts through them), and a
    per-rank part (the RNGs), which differs between ranks."""
    g = torch.Generator().manual_seed(1234 + step)
    return {
        "step": step,
        "model": {
            "w": torch.randn(300, 77, generator=g),
            "b": torch.randn(5, generator=g).to(torch.bfloat16),
            "i": torch.arange(13, dtype=torch.int64) * step,
            "flag": torch.tensor(True),
            "empty": torch.zeros(0),
            "scalar": torch.tensor(3.5, dtype=torch.float64),
        },
        "optimizer": {"state": {0: {"exp_avg": torch.randn(1001, generator=g)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "data": {"position": step, "seed": 0, "dataset": ""},
        "rng": {"torch": torch.full((16,), rank, dtype=torch.uint8), "rank": rank},
    }


def same(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, torch.Tensor):
        if not isinstance(b, torch.Tensor) or a.dtype != b.dtype or a.shape != b.shape or not torch.equal(a, b):
            return [path]
        return []
    if isinstance(a, dict):
        if not isinstance(b, dict) or set(a) != set(b):
            return [f"{path} keys"]
        return [p for k in a for p in same(a[k], b[k], f"{path}/{k}")]
    if isinstance(a, (list, tuple)):
        if len(a) != len(b):
            return [path]
        return [p for i, (x, y) in enumerate(zip(a, b)) for p in same(x, y, f"{path}/{i}")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def check(directory: str, comm: Comm) -> list[str]:
    loaded = recover(directory, comm)
    if loaded is None:
        return ["nothing recovered"]
    return same(make_state(8, comm.rank % SAVED_BY), loaded.state) + ([] if loaded.step == 8 else [f"step {loaded.step}"])


def main() -> int:
    mode, directory = sys.argv[1], sys.argv[2]
    env = distributed.detect()
    dist = distributed.setup(env, "cpu") if env else None
    comm = dist.comm if dist else Comm.single()
    try:
        if mode == "save":
            ck = ShardedCheckpointer(directory, comm, max_async=2, keep=2, chunk_size=64 << 10, local_keys=("rng",))
            for step in (7, 8):
                ck.prepare(make_state(step, comm.rank))
                ck.save(step, make_state(step, comm.rank))
            ck.wait()
            ck.close()
            return 0 if ck.global_step == 8 else 4
        bad = check(directory, comm)
        print("\n".join(bad) or "equal", file=sys.stderr)
        return 3 if bad else 0
    finally:
        if dist is not None:
            dist.close()


if __name__ == "__main__":
    sys.exit(main())
