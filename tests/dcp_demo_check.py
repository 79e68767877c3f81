"""Loads the newest checkpoint of a demo run into the demo trainer on this many ranks (one process without
torchrun's variables) and writes every tensor of the loaded state, DTensors gathered whole, to OUT (rank 0).

    python dcp_demo_check.py OUT CHECKPOINT_DIR TRAINER_FLAGS...
"""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch.distributed.tensor import DTensor

import pccheck.dcp
from pccheck.demo import flags as demo_flags
from pccheck.demo.train import _Trainer
from pccheck import distributed


def flat(node: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}/").items()}
    if isinstance(node, (list, tuple)):
        return {k: v for i, value in enumerate(node) for k, v in flat(value, f"{prefix}{i}/").items()}
    if isinstance(node, torch.Tensor):
        return {prefix.rstrip("/"): node.full_tensor() if isinstance(node, DTensor) else node}
    return {}


def main(out: str, directory: str, argv: list[str]) -> int:
    args = demo_flags.build_parser().parse_args(argv)
    env = distributed.detect()
    dist = distributed.setup(env, "cpu") if env is not None else None
    trainer = _Trainer(args, dist)
    loaded = pccheck.dcp.Checkpointer(directory, mode="sync", local_keys=("rng",)).load_latest(trainer.dcp_state(0))
    assert loaded is not None
    trainer.restore(type(loaded)(loaded.step, loaded.state, f"dcp:{loaded.source}"))
    tensors = flat(trainer.dcp_state(loaded.step))  # what the live model and optimizer now hold
    tensors = {k: v for k, v in tensors.items() if not k.startswith("rng/")}  # per rank by design
    if dist is None or dist.rank == 0:
        torch.save({"step": loaded.step, "tensors": tensors}, out)
    pccheck.dcp.close_all()
    if dist is not None:
        dist.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
