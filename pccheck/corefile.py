"""Reads a committed payload of a core file piece by piece, each chunk checked against its CRC32C.

The core's `read_payload` reads and verifies a whole payload; a DCP load needs byte ranges of several
ranks' payloads (resharding reads parts of every file), so this reader fetches only the chunks that hold a
range. Offsets follow docs/format.md; the record and its chunk table are first validated by `_core.scan`,
and the table is checked again here (its CRC is the record's `table_crc`) before any chunk CRC is trusted.
No torch (numpy only): pccheck-inspect and the job wrapper's catalog use it too.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Optional

import numpy as np

from . import _core
from .errors import CheckpointError

BLOCK = 4096
RECORD_MAGIC = b"PCCKREC1"
TABLE_MAGIC = b"PCCKTAB1"
TABLE_HEADER = 48  # table bytes before the chunk CRCs
_RECORD_TABLE_CRC = 64  # offset of the table CRC in a commit record
#: Readers take no lock: a writer that keeps committing may reuse the slot of the checkpoint being read,
#: which then fails its checks like a damaged one. A read that had to skip a checkpoint is done again while
#: the file's newest commit moved on during it, at most this often (the loader and pccheck-inspect).
READS_UNDER_A_WRITER = 20


class DamagedPayload(CheckpointError):
    """The payload cannot be read back as committed (a chunk fails its CRC, the file is short or changed):
    a loader may fall back to an older checkpoint."""


def read_at(fd: int, offset: int, size: int, path: str) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise DamagedPayload(f"{path}: file ended at byte {offset + len(data)}, expected {offset + size}")
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


class Scratch:
    """A read buffer reused across reads and files: a fresh buffer costs a page fault per page on first
    touch, which measured 0.39 s for 64 MiB here, 25 times the read itself."""

    def __init__(self) -> None:
        self._buf = np.empty(0, dtype=np.uint8)

    def get(self, n: int) -> np.ndarray:
        if len(self._buf) < n:
            self._buf = np.empty(n, dtype=np.uint8)
        return self._buf[:n]


class PayloadReader:
    """Verified byte ranges of one committed payload (seq) of a core file whose table CRC is known."""

    def __init__(self, path: str, seq: int, expect_table_crc: int, scratch: Optional[Scratch] = None) -> None:
        self.path = path
        self._scratch = scratch or Scratch()
        try:
            scan = _core.scan(path, False)
        except (_core.CoreError, OSError, ValueError) as exc:
            raise DamagedPayload(f"{path}: not a usable pccheck file: {exc}") from None
        rec = next((r for r in scan["entries"] if r.get("seq") == seq), None)
        if rec is None or not rec["valid"]:
            why = "no record" if rec is None else rec["reason"]
            raise DamagedPayload(f"{path}: seq {seq}: {why}")
        g = scan["geometry"]
        self.length = int(rec["payload_len"])
        self.chunk = int(rec["chunk_size"])
        n = int(rec["n_chunks"])
        slot = g["slots_offset"] + rec["slot"] * (g["table_bytes"] + g["slot_size"])
        self._base = slot + g["table_bytes"]
        self._fd = os.open(path, os.O_RDONLY)
        table = read_at(self._fd, slot, TABLE_HEADER + 4 * n, path)
        if table[:8] != TABLE_MAGIC or struct.unpack_from("<Q", table, 8)[0] != seq:
            raise DamagedPayload(f"{path}: chunk table of seq {seq} changed since the scan")
        if _core.crc32c(table) != expect_table_crc:
            raise DamagedPayload(f"{path}: seq {seq} is not the payload the global commit names (table CRC differs)")
        self._crcs = struct.unpack_from(f"<{n}I", table, TABLE_HEADER)
        self._span = (0, 0)  # chunks [first, last) held in self._buf, every one verified
        self._buf = memoryview(b"")

    def read(self, offset: int, length: int) -> memoryview:
        """Bytes [offset, offset + length) of the payload, every chunk they touch verified. The view is valid
        until the next read; reads in offset order reuse the chunks already read (many small items)."""
        if offset < 0 or length < 0 or offset + length > self.length:
            raise CheckpointError(f"{self.path}: range {offset}+{length} is outside the payload ({self.length} bytes)")
        first, last = offset // self.chunk, -(-(offset + length) // self.chunk) if length else offset // self.chunk + 1
        if not (self._span[0] <= first and last <= self._span[1]):
            begin, end = first * self.chunk, min(last * self.chunk, self.length)
            buf = self._scratch.get(end - begin)
            got = os.preadv(self._fd, [buf], self._base + begin)
            if got != len(buf):
                raise DamagedPayload(f"{self.path}: file ended inside the payload of this checkpoint")
            view = memoryview(buf)
            for i in range(first, last):
                if _core.crc32c(view[(i - first) * self.chunk : (i - first + 1) * self.chunk]) != self._crcs[i]:
                    raise DamagedPayload(f"{self.path}: chunk {i} checksum mismatch")
            self._span, self._buf = (first, last), view
        start = offset - self._span[0] * self.chunk
        return self._buf[start : start + length]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "PayloadReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def newest_seq(scan: dict[str, Any]) -> Optional[int]:
    """The highest seq in the ring of a `_core.scan` result, valid or not: it moves when a writer commits."""
    return max((e["seq"] for e in scan["entries"] if e.get("seq") is not None), default=None)
