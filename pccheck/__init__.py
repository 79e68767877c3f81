"""pccheck: concurrent, pipelined, durable checkpoints for PyTorch training on Slurm clusters.

The public surface: `Checkpointer` and `load` (the storage), `StopRequest` (the stop protocol at step
boundaries, docs/jobs.md), `AutoInterval` / `Every` (when to checkpoint: `interval.due(step)`, from measured
checkpoint times and an MTBF, or every N steps), `rng_state` / `set_rng_state` (every RNG, for a bit-exact resume),
`checkpoint_dir` (where pccheck-submit wants checkpoints), `CheckpointError`, and `EXIT_REQUEUE`.
Several ranks, sharded state (FSDP2, DTensor): `pccheck.dcp`, the storage layer of
torch.distributed.checkpoint. Needs torch and numpy only.
"""
from __future__ import annotations

from typing import Any

from .contract import EXIT_REQUEUE, checkpoint_dir
from .errors import CheckpointError

__version__ = "0.1.0"
__all__ = ["Checkpointer", "load", "StopRequest", "AutoInterval", "Every", "rng_state", "set_rng_state", "checkpoint_dir",
           "CheckpointError", "EXIT_REQUEUE", "__version__"]
_LAZY = {"Checkpointer": "checkpointer", "load": "checkpointer", "StopRequest": "loop", "AutoInterval": "interval",
         "Every": "interval", "rng_state": "rng", "set_rng_state": "rng"}


def __getattr__(name: str) -> Any:
    # Lazy, so `import pccheck` (e.g. by the job wrapper) does not load torch or the C++ core.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
