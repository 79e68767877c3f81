"""Tests of the C++ storage engine through its bindings (pccheck._core)."""
import ctypes
import errno
import os
import random
import shutil
import subprocess
import sys
import threading

import pytest

from pccheck import _core as core

KIB = 1024
CHUNK = 16 * KIB


def make_store(path, **kw):
    opts = dict(slot_size=256 * KIB, max_async=2, keep=2, chunk_size=CHUNK, threads=2,
                memory_budget=8 * CHUNK, durability="fdatasync")
    opts.update(kw)
    return core.Store(str(path), **opts)


def payload(step, size):
    return random.Random(step).randbytes(size)


def save(store, step, data, block=True):
    """One checkpoint through write_host; returns (seq, outcome)."""
    seq = store.begin(step, len(data), block)
    if seq is None:
        return None, "skipped"
    host = (ctypes.c_char * len(data)).from_buffer_copy(data)
    store.write_host(seq, b"", [(ctypes.addressof(host), len(data))])
    return seq, store.wait(seq)


def read(path, seq, n):
    out = bytearray(n)
    core.read_payload(str(path), seq, out)
    return bytes(out)


def entry(scan, seq):
    return next(e for e in scan["entries"] if e["seq"] == seq)


def payload_offset(geo, slot):
    stride = geo["table_bytes"] + geo["slot_size"]
    return geo["slots_offset"] + slot * stride + geo["table_bytes"]


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def put_chunk(store, seq, data, i):
    """Acquire/submit path: copies chunk i of data into a staging buffer."""
    b = store.acquire()
    part = data[i * CHUNK:(i + 1) * CHUNK]
    store.buffer(b)[:len(part)] = part
    return store.submit(seq, b, i, len(part))


def test_crc32c():
    assert core.crc32c(b"123456789") == 0xE3069283
    assert core.crc32c_portable(b"123456789") == 0xE3069283
    assert core.crc32c_impl() in ("sse4.2", "armv8-crc", "portable")
    data = os.urandom(100_003)
    assert core.crc32c(data) == core.crc32c_portable(data)
    assert core.crc32c(data[500:], core.crc32c(data[:500])) == core.crc32c(data)
    assert core.crc32c(memoryview(bytearray(data))) == core.crc32c(data)


def test_commit_reopen_and_geometry(tmp_path):
    path = tmp_path / "ck"
    data = payload(1, 100_000)
    with make_store(path) as s:
        g = s.geometry
        assert g["created"] and g["slot_count"] == 4 and g["buffer_count"] == 8
        assert s.latest() is None
        seq, outcome = save(s, 7, data)
        assert outcome == "committed" and s.latest() == (seq, 7)
    assert read(path, seq, len(data)) == data
    with make_store(path) as s:
        assert not s.geometry["created"] and s.latest() == (seq, 7)
        seq2, _ = save(s, 8, data)
        assert seq2 > seq
    with make_store(path, max_async=3) as s:  # other slot count: the file's geometry wins
        assert s.geometry["adopted"] and s.geometry["slot_count"] == 4
    with make_store(path, slot_size=1024 * KIB) as s:  # smaller slots than asked for: adopted, grown on demand
        assert s.geometry["slot_size"] == 256 * KIB
    with pytest.raises(ValueError):
        make_store(tmp_path / "x", chunk_size=1000)


def test_default_durability_and_direct(tmp_path):
    with core.Store(str(tmp_path / "ck"), slot_size=256 * KIB, max_async=1, keep=1, chunk_size=CHUNK,
                    threads=2, memory_budget=4 * CHUNK) as s:
        assert s.geometry["durability"] in ("direct", "fdatasync")
        data = payload(3, 40_001)  # the last chunk is padded for O_DIRECT
        seq, outcome = save(s, 3, data)
        assert outcome == "committed"
    assert read(tmp_path / "ck", seq, len(data)) == data


def test_slot_reuse(tmp_path):
    path = tmp_path / "ck"
    with make_store(path, max_async=1, keep=1) as s:
        seqs = [save(s, step, payload(step, 50_000))[0] for step in range(6)]
        assert s.stats["slots_free"] == 1
    sc = core.scan(str(path))
    assert {e["slot"] for e in sc["entries"]} == {0, 1}
    assert sc["latest"] == seqs[-1]
    assert entry(sc, seqs[4])["valid"]
    assert not entry(sc, seqs[3])["valid"]  # its slot now holds seqs[5]
    assert "slot reused" in entry(sc, seqs[3])["reason"]


def test_out_of_order_completion_drops_late_checkpoint(tmp_path):
    path = tmp_path / "ck"
    with make_store(path) as s:
        d1, d2 = payload(1, 2 * CHUNK + 10), payload(2, 3 * CHUNK)
        s1, s2 = s.begin(1, len(d1)), s.begin(2, len(d2))
        assert s.begin(3, 10, block=False) is None  # max_async = 2
        for i in reversed(range(3)):  # seq 2 first, its chunks in reverse order
            assert put_chunk(s, s2, d2, i)
        assert put_chunk(s, s1, d1, 2)
        assert s.wait(s2) == "committed"
        assert put_chunk(s, s1, d1, 1) and put_chunk(s, s1, d1, 0)
        assert s.wait(s1) == "dropped"
        st = s.stats
        assert st["dropped"] == 1 and st["committed"] == 1 and st["in_flight"] == 0
        assert st["buffers_free"] == st["buffers_total"]
        assert st["slots_free"] == 3
        assert s.latest() == (s2, 2)
    assert read(path, s2, len(d2)) == d2
    with pytest.raises(core.CorruptError):
        read(path, s1, len(d1))


def test_back_pressure_and_wait_timeout(tmp_path):
    with make_store(tmp_path / "ck", max_async=1) as s:
        seq = s.begin(1, 3 * CHUNK)
        assert s.begin(2, 10, block=False) is None
        assert s.wait(seq, timeout=0.05) == "pending"
        unblocked = []
        t = threading.Thread(target=lambda: unblocked.append(s.begin(2, 10)))
        t.start()  # blocks in begin() with the GIL released
        for i in range(3):
            put_chunk(s, seq, bytes(3 * CHUNK), i)
        t.join(10)
        assert unblocked and unblocked[0] > seq
        s.abort(unblocked[0], "test")
        assert s.wait(unblocked[0]) == "aborted"


def test_no_leaks_after_many_small_saves(tmp_path):
    with make_store(tmp_path / "ck", max_async=3, chunk_size=4096, memory_budget=4 * 4096) as s:
        seqs = []
        for step in range(1000):
            data = payload(step % 7, 1 + (step * 37) % 9000)
            seq = s.begin(step, len(data))
            s.write_host(seq, data, [])  # all of it as the header
            seqs.append(seq)
        assert s.wait() == "committed"
        st = s.stats
        assert st["committed"] + st["dropped"] == 1000 and st["failed"] == 0
        assert st["in_flight"] == 0 and st["buffers_free"] == st["buffers_total"]
        assert st["slots_free"] == s.geometry["slot_count"] - 2
        assert s.wait(seqs[-1]) == "committed"


def test_abort_releases_everything(tmp_path):
    with make_store(tmp_path / "ck") as s:
        seq = s.begin(1, 4 * CHUNK)
        put_chunk(s, seq, bytes(4 * CHUNK), 2)
        held = s.acquire()
        s.abort(seq, "trainer raised")
        assert s.wait(seq) == "aborted"
        assert s.submit(seq, held, 0, CHUNK) is False  # buffer handed back
        st = s.stats
        assert st["buffers_free"] == st["buffers_total"] and st["slots_free"] == 4
        b = s.acquire()
        assert len(s.buffer(b)) == CHUNK and s.buffer_address(b) % 4096 == 0
        s.release(b)


def test_corrupt_payload_falls_back(tmp_path):
    path = tmp_path / "ck"
    old, new = payload(1, 60_000), payload(2, 60_000)
    with make_store(path) as s:
        s_old, _ = save(s, 1, old)
        s_new, _ = save(s, 2, new)
    sc = core.scan(str(path))
    flip(path, payload_offset(sc["geometry"], entry(sc, s_new)["slot"]) + 2 * CHUNK + 5)
    assert core.scan(str(path))["latest"] == s_new  # without verify, payloads are not read
    sc = core.scan(str(path), verify=True)
    assert sc["latest"] == s_old
    assert sc["skipped"] == [(s_new, "chunk 2 checksum mismatch")]
    with pytest.raises(core.CorruptError, match="chunk 2"):
        read(path, s_new, len(new))
    assert read(path, s_old, len(old)) == old


def test_corrupt_record_falls_back(tmp_path):
    path = tmp_path / "ck"
    with make_store(path) as s:
        s_old, _ = save(s, 1, payload(1, 1000))
        s_new, _ = save(s, 2, payload(2, 1000))
    g = core.scan(str(path))["geometry"]
    flip(path, g["ring_offset"] + (s_new % g["ring_entries"]) * 4096 + 20)
    sc = core.scan(str(path))
    assert sc["latest"] == s_old
    assert sc["skipped"] == [(s_new, "record checksum mismatch")]
    with pytest.raises(core.CorruptError, match="record checksum"):
        read(path, s_new, 1000)
    with make_store(path) as s:  # reopening keeps the valid one and moves past the broken seq
        assert s.latest() == (s_old, 1)
        assert save(s, 3, b"x")[0] > s_new


def test_write_error_surfaces_and_last_commit_stays(tmp_path):
    path = tmp_path / "ck"
    good = payload(1, 50_000)
    with make_store(path) as s:
        s_good, _ = save(s, 1, good)
        s._inject_write_error(1, errno.EIO)
        with pytest.raises(core.WriteError, match="Input/output error") as ei:
            save(s, 2, payload(2, 100_000))
        assert str(path) in str(ei.value) and "offset" in str(ei.value)
        assert s.latest() == (s_good, 1)
        s_next, outcome = save(s, 3, good)  # reported once by wait(): begin() is clean
        assert outcome == "committed"
        s._inject_write_error(0, errno.ENOSPC)
        seq = s.begin(4, 30_000)
        host = (ctypes.c_char * 30_000)()
        s.write_host(seq, b"", [(ctypes.addressof(host), 30_000)])
        while s.stats["in_flight"]:
            pass
        with pytest.raises(core.WriteError, match="No space"):
            s.begin(5, 10)  # not yet reported: the next begin() raises it, once
        assert s.begin(5, 10, block=False) is not None
        assert s.stats["failed"] == 2
    assert core.scan(str(path))["latest"] == s_next
    assert read(path, s_next, len(good)) == good


def test_lock_refuses_second_store(tmp_path):
    path = tmp_path / "ck"
    with make_store(path):
        with pytest.raises(core.LockedError, match="in use"):
            make_store(path)
        code = ("import sys; from pccheck import _core as c\n"
                "try:\n"
                f"    c.Store({str(path)!r}, slot_size=262144, max_async=2, keep=2, chunk_size=16384,"
                " threads=1, memory_budget=16384)\n"
                "except c.LockedError as e:\n"
                "    print(e); sys.exit(7)\n")
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert r.returncode == 7, r.stderr
        assert f"pid {os.getpid()}" in r.stdout
    make_store(path).close()  # released on close


def test_not_a_pccheck_file_is_never_overwritten(tmp_path):
    path = tmp_path / "ck"
    path.write_bytes(b"precious" * 1000)
    with pytest.raises(core.FormatError, match="not a pccheck file"):
        make_store(path)
    assert path.read_bytes() == b"precious" * 1000


def test_preallocation_fails_cleanly_on_small_fs(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("needs root and mount(8) for a 4 MiB tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {r.stderr.decode().strip()}")
    try:
        with pytest.raises(core.NoSpaceError) as ei:
            make_store(mnt / "ck", slot_size=8 << 20)
        msg = str(ei.value)
        assert str(mnt / "ck") in msg and "needs" in msg and "bytes free" in msg
        assert os.listdir(mnt) == ["ck.lock"]  # no half-created checkpoint file
        with make_store(mnt / "ok", slot_size=64 * KIB) as s:  # small enough: works (no O_DIRECT needed)
            assert save(s, 1, b"abc")[1] == "committed"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_hostile_input(tmp_path):
    path = tmp_path / "ck"
    with make_store(path) as s:
        seq, _ = save(s, 1, payload(1, 70_000))
    orig = path.read_bytes()
    g = core.scan(str(path))["geometry"]
    rec_off = g["ring_offset"] + (seq % g["ring_entries"]) * 4096
    rng = random.Random(5)
    bad = tmp_path / "bad"
    cases = [b"", b"x" * 100, orig[:4096], orig[:len(orig) // 2], rng.randbytes(300_000)]
    for _ in range(40):
        b = bytearray(orig)
        for _ in range(4):
            b[rng.randrange(g["slots_offset"] + 4096)] ^= rng.randrange(1, 256)
        cases.append(bytes(b))
    for field in range(8, 64, 8):  # huge length fields in an otherwise valid record
        b = bytearray(orig)
        b[rec_off + field:rec_off + field + 8] = (2**64 - 4096).to_bytes(8, "little")
        crc = core.crc32c(bytes(b[rec_off:rec_off + 68]))
        b[rec_off + 68:rec_off + 72] = crc.to_bytes(4, "little")
        cases.append(bytes(b))
    for data in cases:
        bad.write_bytes(data)
        try:
            sc = core.scan(str(bad), verify=True)
        except core.CoreError:
            continue
        for e in sc["entries"]:
            if e["seq"] is None:
                continue
            try:
                read(bad, e["seq"], min(e["payload_len"], 1 << 20))
            except (core.CoreError, ValueError):
                pass
    with pytest.raises(core.CoreError):
        core.scan(str(tmp_path / "missing"))
    with pytest.raises(ValueError):
        read(path, seq, 10)  # wrong output size
