"""Reads a committed payload of a core file piece by piece, each chunk checked against its CRC32C.

The core's `read_payload` reads and verifies a whole payload; a DCP load needs byte ranges of several
ranks' payloads (resharding reads parts of every file), so this reader fetches only the chunks that hold a
range. Offsets follow docs/format.md; the record and its chunk table are first validated by `_core.scan`,
and the table is checked again here (its CRC is the record's `table_crc`) before any chunk CRC is trusted.
No torch: pccheck-inspect and the job wrapper's catalog use it too.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Optional

from . import _core
from .errors import CheckpointError

BLOCK = 4096
RECORD_MAGIC = b"PCCKREC1"
TABLE_MAGIC = b"PCCKTAB1"
TABLE_HEADER = 48  # table bytes before the chunk CRCs
_RECORD_TABLE_CRC = 64  # offset of the table CRC in a commit record


def read_at(fd: int, offset: int, size: int, path: str) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise CheckpointError(f"{path}: file ended at byte {offset + len(data)}, expected {offset + size}")
    return data


def table_crc(path: str, geometry: dict[str, Any], record: dict[str, Any]) -> int:
    """The chunk-table CRC stored in a valid record: a fingerprint of the whole payload (its chunk CRCs,
    length and seq), so a global commit can name exactly the payload it covers."""
    fd = os.open(path, os.O_RDONLY)
    try:
        block = read_at(fd, geometry["ring_offset"] + record["index"] * BLOCK, BLOCK, path)
    finally:
        os.close(fd)
    if block[:8] != RECORD_MAGIC or struct.unpack_from("<Q", block, 8)[0] != record["seq"]:
        raise CheckpointError(f"{path}: record of seq {record['seq']} changed since the scan")
    return struct.unpack_from("<I", block, _RECORD_TABLE_CRC)[0]


class PayloadReader:
    """Verified byte ranges of one committed payload (seq) of a core file whose table CRC is known."""

    def __init__(self, path: str, seq: int, expect_table_crc: int) -> None:
        self.path = path
        try:
            scan = _core.scan(path, False)
        except (_core.CoreError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a usable pccheck file: {exc}") from None
        rec = next((r for r in scan["entries"] if r.get("seq") == seq), None)
        if rec is None or not rec["valid"]:
            why = "no record" if rec is None else rec["reason"]
            raise CheckpointError(f"{path}: seq {seq}: {why}")
        g = scan["geometry"]
        self.length = int(rec["payload_len"])
        self.chunk = int(rec["chunk_size"])
        n = int(rec["n_chunks"])
        slot = g["slots_offset"] + rec["slot"] * (g["table_bytes"] + g["slot_size"])
        self._base = slot + g["table_bytes"]
        self._fd = os.open(path, os.O_RDONLY)
        table = read_at(self._fd, slot, TABLE_HEADER + 4 * n, path)
        if table[:8] != TABLE_MAGIC or struct.unpack_from("<Q", table, 8)[0] != seq:
            raise CheckpointError(f"{path}: chunk table of seq {seq} changed since the scan")
        if _core.crc32c(table) != expect_table_crc:
            raise CheckpointError(f"{path}: seq {seq} is not the payload the global commit names (table CRC differs)")
        self._crcs = struct.unpack_from(f"<{n}I", table, TABLE_HEADER)
        self._cache: dict[int, bytes] = {}

    def _chunk(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is None:
            begin = i * self.chunk
            data = read_at(self._fd, self._base + begin, min(self.chunk, self.length - begin), self.path)
            if _core.crc32c(data) != self._crcs[i]:
                raise CheckpointError(f"{self.path}: chunk {i} checksum mismatch")
            self._cache = {i: data}  # callers read in offset order: keep the last chunk only
        return data

    def read(self, offset: int, length: int, out: Optional[memoryview] = None) -> memoryview:
        """Bytes [offset, offset + length) of the payload, every chunk they touch verified."""
        if offset < 0 or length < 0 or offset + length > self.length:
            raise CheckpointError(f"{self.path}: range {offset}+{length} is outside the payload ({self.length} bytes)")
        buf = memoryview(bytearray(length)) if out is None else out
        pos = offset
        while pos < offset + length:
            i = pos // self.chunk
            data = self._chunk(i)
            lo = pos - i * self.chunk
            n = min(len(data) - lo, offset + length - pos)
            buf[pos - offset : pos - offset + n] = data[lo : lo + n]
            pos += n
        return buf

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "PayloadReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
