"""Torch-free readers for the parts of a checkpoint file that pccheck-inspect needs without the payload.

`import torch` alone takes about a second, so the overview (which must answer in well under a second) never
imports it: the safetensors header of a payload is validated here with the same rules as
`pccheck.payload.parse_header` (tests/test_inspect.py checks that both agree). The pccheck file layout
(superblock, slots, chunk tables) follows docs/format.md and csrc/format.h; the core's `scan` has already
validated the geometry and every record used here, and every offset is checked again before a read.
"""
from __future__ import annotations

import errno
import json
import math
import os
import stat
import struct
from dataclasses import dataclass
from typing import Any

SUPER_MAGIC = b"PCCKSUPR"
TABLE_MAGIC = b"PCCKTAB1"
ZIP_MAGIC = b"PK\x03\x04"
TABLE_HEADER = 48  # bytes of a chunk table before its CRC32C array
MAX_HEADER = 100 << 20  # the safetensors limit, as in pccheck.payload
MAX_HEADER_VERIFY = 64 << 20  # most payload bytes read to checksum the header in an overview
ITEMSIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
    "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


class InspectError(Exception):
    """A fact the user must see as one line, with the exit status it implies."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class HeaderError(ValueError):
    """A payload's safetensors header is malformed."""


def _os_reason(exc: OSError) -> str:
    return exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))


def regular_file(path: str) -> os.stat_result:
    """stat() of `path`, refusing anything that is not a regular file before it is opened (a fifo would block)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InspectError(f"{path}: cannot access: {_os_reason(exc)}", 3) from None
    if not stat.S_ISREG(st.st_mode):
        raise InspectError(f"{path}: not a regular file ({_file_type(st.st_mode)})", 3)
    return st


def _file_type(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a file"


def read_at(path: str, offset: int, size: int) -> bytes:
    """Exactly `size` bytes at `offset`; InspectError (unreadable) on a short read or an OS error."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InspectError(f"{path}: cannot open: {_os_reason(exc)}", 3) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # swapped for something else since the stat
            raise InspectError(f"{path}: not a regular file", 3)
        data = os.pread(fd, size, offset) if size else b""
    except OSError as exc:
        raise InspectError(f"{path}: read failed: {_os_reason(exc)}", 3) from None
    finally:
        os.close(fd)
    if len(data) != size:
        raise InspectError(f"{path}: file ended at byte {offset + len(data)}, expected {offset + size}", 3)
    return data


def sniff(path: str) -> str:
    """'pccheck', 'torchsave' or 'unknown', from the first bytes (a regular, readable file is assumed)."""
    size = regular_file(path).st_size
    head = read_at(path, 0, min(size, 8))
    if head.startswith(SUPER_MAGIC):
        return "pccheck"
    if head.startswith(ZIP_MAGIC):
        return "torchsave"
    return "unknown"


def format_version(path: str) -> int:
    """The superblock's format version (the core's scan has checked it; shown for humans)."""
    return struct.unpack("<I", read_at(path, 8, 4))[0]


@dataclass
class Slot:
    """Where one record's chunk table and payload lie in the file."""

    table_offset: int
    payload_offset: int
    payload_len: int
    chunk_size: int
    n_chunks: int
    seq: int


def slot_of(geometry: dict[str, Any], record: dict[str, Any]) -> Slot:
    """Offsets of a record the core reported valid, checked again against the geometry."""
    g, r = geometry, record
    stride = g["table_bytes"] + g["slot_size"]
    table = g["slots_offset"] + r["slot"] * stride
    if not (0 <= r["slot"] < g["slot_count"] and r["payload_len"] <= g["slot_size"] and table + stride <= g["file_size"]):
        raise InspectError(f"record seq {r['seq']} does not fit the file geometry", 3)
    return Slot(table, table + g["table_bytes"], r["payload_len"], r["chunk_size"], r["n_chunks"], r["seq"])


def chunk_crcs(path: str, slot: Slot, count: int) -> list[int]:
    """The first `count` chunk CRC32Cs of a slot's chunk table (docs/format.md: magic, seq, ..., u32 CRCs)."""
    raw = read_at(path, slot.table_offset, TABLE_HEADER + 4 * count)
    if raw[:8] != TABLE_MAGIC or struct.unpack_from("<Q", raw, 8)[0] != slot.seq:
        raise HeaderError("chunk table changed since the scan (is a writer running?)")
    return list(struct.unpack_from(f"<{count}I", raw, TABLE_HEADER))


@dataclass
class PayloadHeader:
    """The safetensors header at the start of a payload; `checksummed` when its chunks' CRC32C matched."""

    length: int
    header: dict[str, Any]
    checksummed: bool


def read_payload_header(path: str, slot: Slot, crc32c: Any) -> PayloadHeader:
    """Reads (and, when its chunks are small enough, checksums) the payload header, never the tensor data."""
    if slot.payload_len < 8:
        raise HeaderError(f"payload of {slot.payload_len} bytes is too short for a header")
    (n,) = struct.unpack("<Q", read_at(path, slot.payload_offset, 8))
    if n > min(MAX_HEADER, slot.payload_len - 8):
        raise HeaderError(f"header length {n} exceeds the payload ({slot.payload_len} bytes)")
    n_chunks = -(-(8 + n) // slot.chunk_size)
    span = min(n_chunks * slot.chunk_size, slot.payload_len)
    if span <= MAX_HEADER_VERIFY:
        data = read_at(path, slot.payload_offset, span)
        for i, want in enumerate(chunk_crcs(path, slot, n_chunks)):
            if crc32c(memoryview(data)[i * slot.chunk_size : (i + 1) * slot.chunk_size]) != want:
                raise HeaderError(f"chunk {i} checksum mismatch")
        raw, checked = data[8 : 8 + n], True
    else:
        raw, checked = read_at(path, slot.payload_offset + 8, n), False
    return PayloadHeader(n, parse_header_json(raw), checked)


def parse_header_json(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeaderError(f"header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    return header


@dataclass
class TensorEntry:
    name: str
    dtype: str
    shape: list[int]
    nbytes: int


def tensor_entries(header: dict[str, Any], payload_len: int, header_len: int) -> tuple[dict[str, Any], list[TensorEntry]]:
    """The metadata and tensors of a header, validated like pccheck.payload.parse_header (same rules)."""
    header = dict(header)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict):
        raise HeaderError("header metadata is not an object")
    data_len = payload_len - 8 - header_len
    spans, out = [], []
    for name, entry in header.items():
        try:
            dtype, shape, (b, e) = entry["dtype"], entry["shape"], entry["data_offsets"]
            ok = (
                dtype in ITEMSIZE
                and isinstance(shape, list)
                and all(isinstance(d, int) and 0 <= d for d in shape)
                and isinstance(b, int) and isinstance(e, int)
                and 0 <= b <= e <= data_len
                and e - b == math.prod(shape) * ITEMSIZE[dtype]
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise HeaderError(f"tensor {name!r} has an invalid header entry")
        spans.append((b, e, name))
        out.append(TensorEntry(name, dtype, list(shape), e - b))
    spans.sort()
    for (_, pe, pn), (cb, _, cn) in zip(spans, spans[1:]):
        if cb < pe:
            raise HeaderError(f"tensors {pn!r} and {cn!r} overlap")
    return meta, out


def state_tree(meta: dict[str, Any], names: set[str]) -> Any:
    """The JSON tree of the non-tensor state, checked as far as a load needs without torch: it parses and
    names only tensors the header holds (a load would skip the checkpoint otherwise)."""
    if meta.get("format") != "pccheck.state.v1" or not isinstance(meta.get("pccheck.state"), str):
        raise HeaderError("payload is a safetensors stream but not a pccheck state")
    try:
        tree = json.loads(meta["pccheck.state"])
    except (ValueError, RecursionError):
        raise HeaderError("state tree is not valid JSON") from None
    missing = next((r for r in tensor_refs(tree) if not isinstance(r, str) or r not in names), None)
    if missing is not None:
        raise HeaderError(f"state tree names a tensor the header lacks: {missing!r}"[:200])
    return tree


def tensor_refs(tree: Any) -> list[Any]:
    """Every {"__tensor__": name} / {"__ndarray__": name} in the tree (iterative: no recursion limit)."""
    refs, todo = [], [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
        elif isinstance(node, dict):
            if len(node) == 1 and next(iter(node)) in ("__tensor__", "__ndarray__"):
                refs.append(next(iter(node.values())))
            else:
                todo.extend(node.values())
    return refs
