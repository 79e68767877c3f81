"""A DCP checkpoint as one full (unsharded) state in this process: every tensor whole, every plain value,
nested as it was saved. pccheck-inspect exports it to safetensors; it also suits conversions (no process
group needed: DCP reassembles the shards of every rank)."""
from __future__ import annotations

import os
from typing import Any, Optional, Union

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

from .reader import Pick, Reader


def full_state(path: Union[str, os.PathLike], pick: Optional[Pick] = None,
               names: Optional[list[str]] = None) -> tuple[int, dict[str, Any]]:
    """(step, state) of the checkpoint a load takes (or `pick`); with `names`, only those flat keys, unnested."""
    reader = Reader(path, pick=pick)
    md = reader.read_metadata()
    assert reader.chosen is not None
    step = int(reader.chosen[1].step or 0)
    template: dict[str, Any] = {}
    for fqn, entry in md.state_dict_metadata.items():
        if names is not None and fqn not in names:
            continue
        if isinstance(entry, TensorStorageMetadata):
            template[fqn] = torch.empty(tuple(entry.size), dtype=entry.properties.dtype)
        elif isinstance(entry, BytesStorageMetadata):
            template[fqn] = None
    dcp.load(template, storage_reader=Reader(path, pick=(reader.chosen[0].set_id, reader.chosen[1].seq)), no_dist=True)
    if names is not None:
        return step, template
    from torch.distributed.checkpoint._nested_dict import unflatten_state_dict

    mapping = md.planner_data if isinstance(md.planner_data, dict) else {}
    if all(k in mapping for k in template):
        return step, unflatten_state_dict(template, mapping)
    return step, template
