"""Readers that trust what they read make it durable first: _core.make_durable(path), or durable=True on
scan and read_payload (a crashed writer's unsynced commit may sit in the page cache; docs/format.md,
"Crash model"). The power-loss behaviour itself is tested in C++ with the fault-injection layer."""
from __future__ import annotations

import ctypes
import random

import pytest

from pccheck import _core as core


def test_durable_scan_and_read(tmp_path):
    path = tmp_path / "ck"
    data = random.Random(1).randbytes(50_000)
    with core.Store(str(path), slot_size=64 << 10, max_async=1, keep=1, chunk_size=16 << 10, threads=1,
                    memory_budget=16 << 10, durability="fdatasync") as s:
        seq = s.begin(3, len(data))
        host = (ctypes.c_char * len(data)).from_buffer_copy(data)
        s.write_host(seq, b"", [(ctypes.addressof(host), len(data))])
        assert s.wait(seq) == "committed"
        assert s.stats["grown"] == 0
    core.make_durable(str(path))
    scan = core.scan(str(path), durable=True)
    assert scan["latest"] == seq
    out = bytearray(len(data))
    core.read_payload(str(path), seq, out, durable=True)
    assert bytes(out) == data
    with pytest.raises(core.CoreError, match="No such file"):
        core.make_durable(str(tmp_path / "missing"))
    with pytest.raises(core.FormatError):
        core.scan(str(tmp_path / "missing"), durable=True)
