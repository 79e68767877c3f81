"""One rank's part of a checkpoint: its DCP write items as a safetensors-style stream (JSON header, raw
bytes; any safetensors reader opens it), and where each item lies in it.

Header `__metadata__`: format `pccheck.dcp.part.v1`, set, world, rank, gseq, step. Tensor names are the
item's key (`fqn`, or `fqn@o1,o2` for a shard at those offsets); byte items (DCP's non-tensor values) are
U8 tensors. A dtype safetensors has no name for is stored as U8 bytes; its real dtype is in the global
metadata (ItemLocation), which is what a load reads.
"""
from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from typing import Any, Union

import torch
from torch.distributed.checkpoint.metadata import MetadataIndex

from ..errors import CheckpointError
from ..payload import DTYPES, Encoded

FORMAT = "pccheck.dcp.part.v1"
_ALIGN = 64
BYTES = "bytes"


@dataclass(frozen=True)
class ItemLocation:
    """Where one item lies: rank part, payload offset and length, and its dtype and shape (tensors)."""

    rank: int
    offset: int
    length: int
    dtype: str  # torch dtype name, or "bytes"
    shape: tuple[int, ...]

    def to_json(self) -> list[Any]:
        return [self.rank, self.offset, self.length, self.dtype, list(self.shape)]

    @staticmethod
    def from_json(v: Any) -> "ItemLocation":
        ok = isinstance(v, list) and len(v) == 5 and all(isinstance(x, int) and x >= 0 for x in v[:3])
        ok = ok and isinstance(v[3], str) and isinstance(v[4], list) and all(isinstance(d, int) and d >= 0 for d in v[4])
        if not ok:
            raise CheckpointError("malformed item location in the checkpoint metadata")
        return ItemLocation(v[0], v[1], v[2], v[3], tuple(v[4]))


def item_name(index: MetadataIndex) -> str:
    return index.fqn if index.offset is None else f"{index.fqn}@{','.join(map(str, index.offset))}"


def as_tensor(data: Union[torch.Tensor, io.BytesIO]) -> torch.Tensor:
    """A write item's data as a contiguous tensor (byte items as uint8)."""
    if isinstance(data, io.BytesIO):
        raw = data.getbuffer()
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
    t = data.detach()
    return t if t.is_contiguous() else t.contiguous()


def encode_part(items: list[tuple[MetadataIndex, torch.Tensor, bool]], head: dict[str, Any],
                rank: int) -> tuple[Encoded, dict[MetadataIndex, ItemLocation]]:
    """The part payload of (index, tensor, is_bytes) items and each item's location in it."""
    order = sorted(items, key=lambda it: -it[1].element_size())  # aligned tensors load as views
    header: dict[str, Any] = {"__metadata__": {"format": FORMAT, **{k: str(v) for k, v in head.items()}}}
    offset = 0
    spans = []
    for index, t, is_bytes in order:
        st_dtype = DTYPES.get(t.dtype) if not is_bytes else "U8"
        shape = list(t.shape) if st_dtype is not None else [t.nbytes]
        header[item_name(index)] = {"dtype": st_dtype or "U8", "shape": shape, "data_offsets": [offset, offset + t.nbytes]}
        spans.append((index, offset, t, is_bytes))
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % _ALIGN)
    head_bytes = struct.pack("<Q", len(raw)) + raw
    base = len(head_bytes)
    locations = {
        index: ItemLocation(rank, base + off, t.nbytes, BYTES if is_bytes else str(t.dtype).removeprefix("torch."),
                            () if is_bytes else tuple(t.shape))
        for index, off, t, is_bytes in spans
    }
    return Encoded(head_bytes, [t for _, _, t, _ in spans], base + offset), locations
