"""pccheck as the storage layer of torch.distributed.checkpoint (DCP): sharded state (FSDP2, DTensor),
resharding on load, and the stacks that checkpoint through DCP (torchtitan, Accelerate, Lightning, ...).

    dcp.save(state_dict, storage_writer=pccheck.dcp.Writer(path))         # also dcp.async_save
    dcp.load(state_dict, storage_reader=pccheck.dcp.Reader(path))         # N ranks saved, M load
    ckpt = pccheck.dcp.Checkpointer(path)                                  # CheckpointerLike, for StopRequest

Files, global commit and retention: docs/multirank.md.
"""
from __future__ import annotations

from .checkpointer import Checkpointer
from .reader import Reader
from .stores import close_all
from .writer import Writer

__all__ = ["Writer", "Reader", "Checkpointer", "close_all"]
