"""The pccheck Checkpointer end to end: round trips, the staged (GPU) copy path on CPU, fallback on
corruption, locking, full disks and write errors."""
from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time

import pytest
import torch

import pccheck
from pccheck import _core
from pccheck.checkpointer import Checkpointer, load_checkpoint, records
from pccheck.errors import CheckpointError
from pccheck.staging import StagedCopier


def _state(step: int) -> dict:
    g = torch.Generator().manual_seed(step)
    return {
        "step": step,
        "w": torch.randn(300, 70, generator=g),
        "h": torch.randn(513, generator=g).to(torch.bfloat16),
        "meta": {"lr": 0.1 * step, 3: ("a", None)},
    }


def _equal(a: dict, b: dict) -> bool:
    return a["step"] == b["step"] and torch.equal(a["w"], b["w"]) and torch.equal(a["h"], b["h"]) and a["meta"] == b["meta"]


def test_round_trip_and_keep(tmp_path):
    with Checkpointer(tmp_path, chunk_size=64 << 10, keep=2) as ck:
        for step in range(1, 6):
            assert ck.save(step, _state(step)).wait()
        assert ck.last_committed_step() == 5
    loaded = load_checkpoint(tmp_path)
    assert loaded.step == 5 and _equal(loaded.state, _state(5))
    assert _equal(pccheck.load(tmp_path, step=4), _state(4))
    with pytest.raises(CheckpointError, match="no checkpoint at step 99"):
        pccheck.load(tmp_path, step=99)
    scan = _core.scan(str(tmp_path / "pccheck.ckpt"), True)
    valid = sorted(r["step"] for r in records(scan) if r["valid"])
    # the keep=2 newest always, and what stays valid is a run of the newest (a slot goes to the oldest first);
    # every one of them loads exactly as saved
    assert valid == list(range(6 - len(valid), 6)) and 2 <= len(valid) <= scan["geometry"]["slot_count"], valid
    for step in valid:
        assert _equal(pccheck.load(tmp_path, step=step), _state(step)), step
    for r in records(scan):
        assert r["valid"] or r["step"] < valid[0]


def test_save_returns_before_durable_and_state_may_change_after_before_update(tmp_path):
    state = _state(1)
    expected = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        handle = ck.save(1, state)
        ck.before_update()
        state["w"].zero_()  # the snapshot was taken: this must not reach the file
        assert handle.wait()
    assert _equal(pccheck.load(tmp_path), expected)


def test_small_memory_budget_pipelines_without_leaks(tmp_path):
    with Checkpointer(tmp_path, chunk_size=16 << 10, memory_budget=32 << 10) as ck:
        for step in range(1, 4):
            ck.save(step, _state(step))
        ck.wait()
        stats = ck._store.stats
        assert stats["buffers_free"] == stats["buffers_total"] == 2
    assert _equal(pccheck.load(tmp_path), _state(3))


def test_staged_copy_path_writes_the_same_bytes(tmp_path):
    """The GPU path (torch copies into staging, a thread submits chunks), exercised with CPU tensors."""
    from pccheck import payload

    with Checkpointer(tmp_path, chunk_size=32 << 10) as ck:
        ck.prepare(_state(7))
        copier = StagedCopier(ck._store, use_cuda=False)
        enc = payload.encode(_state(7))
        seq = ck._store.begin(7, enc.nbytes, True)
        copier.copy(seq, enc)
        copier.drain()
        assert ck._store.wait(seq, None) == "committed"
        copier.close()
    assert _equal(pccheck.load(tmp_path), _state(7))


@pytest.mark.parametrize("where", ["payload", "record"])
def test_corruption_falls_back_to_previous(tmp_path, caplog, where):
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        ck.save(1, _state(1)).wait()
        ck.save(2, _state(2)).wait()
    path = tmp_path / "pccheck.ckpt"
    scan = _core.scan(str(path))
    newest = max(records(scan), key=lambda r: r["seq"])
    g = scan["geometry"]
    if where == "payload":
        slot_start = g["slots_offset"] + newest["slot"] * (g["table_bytes"] + g["slot_size"])
        offset = slot_start + g["table_bytes"] + newest["payload_len"] // 2
    else:
        offset = g["ring_offset"] + newest["index"] * 4096 + 20
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x10]))
    with caplog.at_level(logging.WARNING):
        loaded = load_checkpoint(path)
    assert loaded.step == 1 and _equal(loaded.state, _state(1))
    assert "skipping checkpoint at step 2" in caplog.text
    assert ("chunk" if where == "payload" else "record checksum") in caplog.text


def test_second_writer_is_refused(tmp_path):
    with Checkpointer(tmp_path) as ck:
        ck.prepare(_state(1))
        code = (
            "import sys, torch\n"
            "from pccheck.checkpointer import Checkpointer\n"
            "from pccheck.errors import CheckpointError\n"
            f"ck = Checkpointer({str(tmp_path)!r})\n"
            "try:\n    ck.prepare({'w': torch.zeros(300, 70)})\n"
            "except CheckpointError as e:\n    print(e); sys.exit(3)\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 3, proc.stderr
        assert "in use" in proc.stdout


def test_write_error_surfaces_and_last_commit_stays(tmp_path):
    with Checkpointer(tmp_path, chunk_size=16 << 10) as ck:
        ck.save(1, _state(1)).wait()
        ck._store._inject_write_error(0, 5)  # EIO on the next chunk write
        handle = ck.save(2, _state(2))
        with pytest.raises(CheckpointError, match="step 2"):
            handle.wait()
        assert ck.save(3, _state(3)).wait()
    assert _equal(pccheck.load(tmp_path), _state(3))
    assert load_checkpoint(tmp_path, step=1).step == 1


def test_existing_file_too_small_for_the_state_is_adopted_and_grown(tmp_path):
    with Checkpointer(tmp_path) as ck:
        ck.save(1, {"w": torch.zeros(10)}).wait()
    with Checkpointer(tmp_path) as ck:
        ck.prepare({"w": torch.zeros(2_000_000)})
        assert torch.equal(pccheck.load(tmp_path)["w"], torch.zeros(10))
        assert ck.save(2, {"w": torch.ones(2_000_000)}).wait()
    assert torch.equal(pccheck.load(tmp_path)["w"], torch.ones(2_000_000))


def test_load_beside_a_live_writer_finds_the_newest_commit(tmp_path):
    """Readers take no lock. With keep=1 and saves back to back the writer reuses slots all the time, so the
    checkpoint a load picked may be overwritten while it is read: the load reads again instead of returning
    an older step or nothing. Every load returns a checkpoint, whole, and never an older one than before."""
    stop, committed = threading.Event(), threading.Event()

    def writer() -> None:
        with Checkpointer(tmp_path, max_async=2, keep=1, threads=1, chunk_size=16 << 10) as ck:
            assert ck.save(1, {"step": 1, "w": torch.full((20000,), 1.0)}).wait()
            committed.set()
            step = 1
            while not stop.is_set():
                step += 1
                ck.save(step, {"step": step, "w": torch.full((20000,), float(step))})

    th = threading.Thread(target=writer)
    th.start()
    try:
        assert committed.wait(60)
        steps = []
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            loaded = load_checkpoint(tmp_path)
            assert loaded is not None
            assert loaded.state["step"] == loaded.step and torch.equal(loaded.state["w"], torch.full((20000,), float(loaded.step)))
            steps.append(loaded.step)
        assert len(steps) > 10 and steps == sorted(steps) and steps[-1] > steps[0], steps[:5] + steps[-5:]
    finally:
        stop.set()
        th.join()
