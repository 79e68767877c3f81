"""pccheck: concurrent, pipelined, durable checkpoints for PyTorch training on Slurm clusters."""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Checkpointer", "load", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `import pccheck` (e.g. by the Slurm job wrapper) does not load torch or the C++ core.
    if name in ("Checkpointer", "load"):
        from . import checkpointer

        return getattr(checkpointer, name)
    raise AttributeError(name)
