"""pccheck as the storage layer of torch.distributed.checkpoint (DCP): sharded state (FSDP2, DTensor),
resharding on load, and the stacks that checkpoint through DCP (torchtitan, Accelerate, Lightning, ...).

    dcp.save(state_dict, storage_writer=pccheck.dcp.Writer(path))         # also dcp.async_save
    dcp.load(state_dict, storage_reader=pccheck.dcp.Reader(path))         # N ranks saved, M load
    ckpt = pccheck.dcp.Checkpointer(path)                                  # CheckpointerLike, for StopRequest

Files, global commit and retention: docs/multirank.md.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Writer", "Reader", "Checkpointer", "close_all"]
_LAZY = {"Writer": "writer", "Reader": "reader", "Checkpointer": "checkpointer", "close_all": "stores"}


def __getattr__(name: str) -> Any:
    # Lazy, so the torch-free parts (names, sets: the job wrapper's catalog, pccheck-inspect) load without torch.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(name)
