"""A checkpoint payload as a safetensors byte stream: no pickle anywhere.

Layout: u64 little-endian header length N, N bytes of JSON header (padded with spaces so the tensor data
starts 64-byte aligned), then the raw tensor bytes. Tensors are laid out by decreasing element size, so
each one starts at a multiple of its element size and loads as a zero-copy view. Everything that is not a
tensor is one JSON tree under `__metadata__["pccheck.state"]`, where tensors appear as {"__tensor__": name}.
Any safetensors reader opens a payload as it is.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .errors import CheckpointError, UserError

FORMAT = "pccheck.state.v1"
_MAX_HEADER = 100 << 20  # the safetensors limit; never trust a larger claim
_ALIGN = 64
DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL", torch.uint16: "U16", torch.uint32: "U32", torch.uint64: "U64",
    torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
}
_BY_NAME = {v: k for k, v in DTYPES.items()}
_SCALARS = frozenset((int, float, str, bool, type(None)))  # exact types that are JSON values as they are
_EXACT = _SCALARS - {float}  # and need no check (a float may be non-finite)
_MARKERS = ("__tensor__", "__ndarray__", "__tuple__", "__dict__", "__float__", "__dtype__", "__device__")


@dataclass
class Encoded:
    """A payload ready to write: `header` then the bytes of `tensors`, in order."""

    header: bytes
    tensors: list[torch.Tensor]
    nbytes: int


def encode(state: Mapping[str, Any]) -> Encoded:
    """Flattens `state` (nested dicts/lists/tuples of tensors and plain values) into a payload description.

    Tensors are not copied (non-contiguous ones excepted): the caller snapshots their bytes.
    """
    tensors: dict[str, tuple[torch.Tensor, str, tuple[int, ...], int]] = {}  # name: tensor, dtype code, shape, item size

    def enc(value: Any, path: str) -> Any:
        kind = type(value)
        if kind in _SCALARS:  # most leaves: checked first, since every save of every step pays for this walk
            return value if kind is not float or math.isfinite(value) else {"__float__": repr(value)}
        if kind is list and all(type(v) in _EXACT for v in value):  # e.g. python's RNG state, 625 ints
            return value
        if isinstance(value, torch.Tensor):
            return {"__tensor__": _add(tensors, path, value)}
        if isinstance(value, np.ndarray):
            return {"__ndarray__": _add(tensors, path, torch.from_numpy(np.ascontiguousarray(value)))}
        if isinstance(value, Mapping):
            items = list(value.items())
            if all(isinstance(k, str) and k not in _MARKERS for k, _ in items):
                return {k: enc(v, f"{path}/{k}" if path else k) for k, v in items}
            return {"__dict__": [[enc(k, f"{path}/key"), enc(v, f"{path}/{k}")] for k, v in items]}
        if isinstance(value, (tuple, torch.Size)):
            return {"__tuple__": [enc(v, f"{path}/{i}") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [enc(v, f"{path}/{i}") for i, v in enumerate(value)]
        if isinstance(value, float) and not math.isfinite(value):
            return {"__float__": repr(value)}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, (np.integer, np.floating, np.bool_)):
            return enc(value.item(), path)
        if isinstance(value, torch.dtype):
            return {"__dtype__": str(value).removeprefix("torch.")}
        if isinstance(value, torch.device):
            return {"__device__": str(value)}
        raise UserError(f"cannot checkpoint {path or 'the state'}: values of type {type(value).__name__} are not supported")

    tree = enc(dict(state), "")
    order = sorted(tensors.items(), key=lambda kv: -kv[1][3])  # stable: keeps tree order per element size
    entries, data_bytes = _tensor_entries(tuple((name, code, shape, size) for name, (_, code, shape, size) in order))
    meta = json.dumps({"format": FORMAT, "pccheck.state": json.dumps(tree)}, separators=(",", ":"))
    raw = ('{"__metadata__":' + meta + ("," + entries if entries else "") + "}").encode()
    raw += b" " * (-(8 + len(raw)) % _ALIGN)
    head = struct.pack("<Q", len(raw)) + raw
    return Encoded(head, [t for _, (t, _, _, _) in order], len(head) + data_bytes)


def _add(tensors: dict[str, tuple[torch.Tensor, str, tuple[int, ...], int]], path: str, t: torch.Tensor) -> str:
    dtype = t.dtype
    code = DTYPES.get(dtype)
    if code is None:
        raise UserError(f"cannot checkpoint {path}: dtype {dtype} is not supported")
    name = path or "tensor"
    if name in tensors:
        name = f"{name}#{len(tensors)}"
    if t.requires_grad:
        t = t.detach()
    if not t.is_contiguous():
        t = t.contiguous()
    tensors[name] = (t, code, t.shape, dtype.itemsize)
    return name


_Layout = tuple[tuple[str, str, tuple[int, ...], int], ...]  # (name, dtype code, shape, item size) in payload order
_last_entries: tuple[_Layout, str, int] = ((), "", 0)  # the newest layout, its header entries, its data bytes


def _tensor_entries(layout: _Layout) -> tuple[str, int]:
    """The header's tensor entries as JSON (without the braces) and the bytes they describe.

    A model saved again has the same layout, so the newest one is kept and reused (a save at every step
    would otherwise re-encode a few hundred entries each time).
    """
    global _last_entries
    last = _last_entries
    if layout == last[0]:
        return last[1], last[2]
    entries, offset = {}, 0
    for name, code, shape, size in layout:
        n = math.prod(shape) * size
        entries[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(entries, separators=(",", ":"))[1:-1]
    _last_entries = (layout, text, offset)
    return text, offset


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int]
    begin: int  # offset in the payload
    end: int


def parse_header(payload: memoryview | bytes) -> tuple[dict[str, Any], list[TensorInfo]]:
    """Validates the header of a payload of len(payload) bytes; the metadata and the tensors it describes.

    Every field is checked against the payload's real size before use (hostile input is expected).
    """
    size = len(payload)
    if size < 8:
        raise CheckpointError(f"payload of {size} bytes is too short for a header")
    (n,) = struct.unpack_from("<Q", payload, 0)
    if n > min(_MAX_HEADER, size - 8):
        raise CheckpointError(f"header length {n} exceeds the payload ({size} bytes)")
    try:
        header = json.loads(bytes(payload[8 : 8 + n]))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: hostile deep nesting
        raise CheckpointError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError("header is not a JSON object")
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict):
        raise CheckpointError("header metadata is not an object")
    infos = []
    data_start = 8 + n
    for name, entry in header.items():
        try:
            dtype, shape, (b, e) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (
                dtype in _BY_NAME
                and isinstance(shape, list)
                and all(isinstance(d, int) and 0 <= d for d in shape)
                and isinstance(b, int) and isinstance(e, int)
                and 0 <= b <= e <= size - data_start
                and e - b == math.prod(shape) * _BY_NAME[dtype].itemsize
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise CheckpointError(f"tensor {name!r} has an invalid header entry")
        infos.append(TensorInfo(name, dtype, shape, data_start + b, data_start + e))
    infos.sort(key=lambda i: i.begin)
    for prev, cur in zip(infos, infos[1:]):
        if cur.begin < prev.end:
            raise CheckpointError(f"tensors {prev.name!r} and {cur.name!r} overlap")
    return meta, infos


def decode(payload: memoryview | bytearray | bytes) -> dict[str, Any]:
    """Rebuilds the state from a verified payload; tensors are views into `payload` when it is writable."""
    meta, infos = parse_header(memoryview(payload))
    if meta.get("format") != FORMAT or "pccheck.state" not in meta:
        raise CheckpointError("payload is a safetensors stream but not a pccheck state")
    buf = torch.frombuffer(payload, dtype=torch.uint8) if len(payload) else torch.empty(0, dtype=torch.uint8)
    tensors = {i.name: _tensor(buf, i) for i in infos}
    try:
        tree = json.loads(meta["pccheck.state"])
        return _decode_tree(tree, tensors)
    except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:  # RuntimeError: deep nesting, bad device
        raise CheckpointError(f"state tree is malformed ({exc})") from None


def _tensor(buf: torch.Tensor, info: TensorInfo) -> torch.Tensor:
    dtype = _BY_NAME[info.dtype]
    raw = buf[info.begin : info.end]
    if info.begin % dtype.itemsize:  # not written by us: copy to an aligned buffer
        raw = raw.clone()
    return raw.view(dtype).view(info.shape)


def _decode_tree(node: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(node, list):
        return [_decode_tree(v, tensors) for v in node]
    if not isinstance(node, dict):
        return node
    if len(node) == 1:
        (key, value), = node.items()
        if key == "__tensor__":
            return tensors[value]
        if key == "__ndarray__":
            return tensors[value].numpy()
        if key == "__tuple__":
            return tuple(_decode_tree(v, tensors) for v in value)
        if key == "__dict__":
            return {_decode_tree(k, tensors): _decode_tree(v, tensors) for k, v in value}
        if key == "__float__":
            return float(value)
        if key == "__dtype__":
            dtype = getattr(torch, value)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"{value!r} is not a dtype")
            return dtype
        if key == "__device__":
            return torch.device(value)
    return {k: _decode_tree(v, tensors) for k, v in node.items()}
