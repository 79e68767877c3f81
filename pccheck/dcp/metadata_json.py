"""DCP's `Metadata` as JSON and back: what a load needs, stored without pickle (DCP's own writer pickles it,
so reading an untrusted checkpoint with it can run code; reading ours cannot).

Encoded: the tensors' global sizes, dtypes and chunks (`state_dict_metadata`), the planner's flattening
map (`planner_data`: names to key paths), where each item lies (`storage_data`: rank, payload offset,
length, dtype, shape) and `storage_meta`. Values the default planners never produce (a custom planner's
objects) are refused at save with the key that holds them, rather than pickled.
"""
from __future__ import annotations

from typing import Any

import torch
from torch.distributed.checkpoint.metadata import (
    BytesStorageMetadata, ChunkStorageMetadata, Metadata, MetadataIndex, StorageMeta, TensorProperties,
    TensorStorageMetadata,
)

from ..errors import CheckpointError
from .items import ItemLocation

_PLAIN = (str, int, float, bool, type(None))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: Any) -> torch.dtype:
    dtype = getattr(torch, name, None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"unknown dtype {name!r} in the checkpoint metadata")
    return dtype


def _plain(value: Any, where: str) -> Any:
    """JSON of nested dicts (str keys), lists, tuples and scalars; tuples are kept apart from lists."""
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, tuple):
        return {"t": [_plain(v, where) for v in value]}
    if isinstance(value, list):
        return {"l": [_plain(v, where) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"d": {k: _plain(v, where) for k, v in value.items()}}
    raise CheckpointError(f"cannot store DCP metadata {where}: a {type(value).__name__} is not plain data (custom planner?)")


def _unplain(node: Any) -> Any:
    if isinstance(node, _PLAIN):
        return node
    if isinstance(node, dict) and len(node) == 1:
        (kind, value), = node.items()
        if kind == "t" and isinstance(value, list):
            return tuple(_unplain(v) for v in value)
        if kind == "l" and isinstance(value, list):
            return [_unplain(v) for v in value]
        if kind == "d" and isinstance(value, dict):
            return {k: _unplain(v) for k, v in value.items()}
    raise CheckpointError("malformed plain value in the checkpoint metadata")


def _ints(value: Any) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise CheckpointError("malformed size or offset in the checkpoint metadata")
    return value


def encode(md: Metadata, locations: dict[MetadataIndex, ItemLocation]) -> dict[str, Any]:
    tensors: dict[str, Any] = {}
    for fqn, entry in md.state_dict_metadata.items():
        if isinstance(entry, BytesStorageMetadata):
            tensors[fqn] = {"bytes": True}
        else:
            tensors[fqn] = {
                "dtype": _dtype_name(entry.properties.dtype), "requires_grad": bool(entry.properties.requires_grad),
                "size": list(entry.size),
                "chunks": [[list(c.offsets), list(c.sizes)] for c in entry.chunks],
            }
    storage = [[idx.fqn, None if idx.offset is None else list(idx.offset), idx.index, loc.to_json()]
               for idx, loc in locations.items()]
    meta = md.storage_meta
    return {
        "version": md.version,
        "state_dict": tensors,
        "planner_data": _plain(md.planner_data, "planner_data"),
        "storage": storage,
        "storage_meta": None if meta is None else {
            "checkpoint_id": None if meta.checkpoint_id is None else str(meta.checkpoint_id),
            "save_id": meta.save_id, "modules": list(meta.modules)},
    }


def decode(doc: dict[str, Any]) -> Metadata:
    """DCP's Metadata of an encoded document; CheckpointError for anything malformed."""
    try:
        sdm: dict[str, Any] = {}
        for fqn, e in doc["state_dict"].items():
            if e.get("bytes"):
                sdm[fqn] = BytesStorageMetadata()
                continue
            chunks = [ChunkStorageMetadata(torch.Size(_ints(o)), torch.Size(_ints(s))) for o, s in e["chunks"]]
            props = TensorProperties(dtype=dtype_from_name(e["dtype"]), requires_grad=bool(e["requires_grad"]))
            sdm[fqn] = TensorStorageMetadata(props, torch.Size(_ints(e["size"])), chunks)
        storage = {}
        for fqn, offset, index, loc in doc["storage"]:
            if not isinstance(fqn, str) or (index is not None and not isinstance(index, int)):
                raise CheckpointError("malformed storage entry in the checkpoint metadata")
            key = MetadataIndex(fqn, None if offset is None else _ints(offset), index)
            storage[key] = ItemLocation.from_json(loc)
        sm = doc["storage_meta"]
        meta = None if sm is None else StorageMeta(checkpoint_id=sm["checkpoint_id"], save_id=sm["save_id"],
                                                   modules=list(sm["modules"]))
        version = doc["version"]
        if version is not None and not isinstance(version, str):
            raise CheckpointError("malformed version in the checkpoint metadata")
        return Metadata(sdm, planner_data=_unplain(doc["planner_data"]), storage_data=storage,
                        storage_meta=meta, version=version)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"malformed checkpoint metadata ({type(exc).__name__}: {exc})") from None
