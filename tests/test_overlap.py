"""The CPU snapshot runs beside the next step: save() returns before the copy, before_update() waits for it,
and a state changed right after before_update() is checkpointed with its values from save().

A copy is held in flight by taking every staging buffer from the pool: the core's copy thread waits for a
free one until the test gives them back."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Iterator

import pytest
import torch

import pccheck
from pccheck import payload
from pccheck.checkpointer import Checkpointer
from pccheck.errors import CheckpointError


def _state(seed: int, n: int = 8, numel: int = 2 << 20) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"step": seed, "model": {f"w{i}": torch.randn(numel, generator=g) for i in range(n)}}


@contextlib.contextmanager
def _copies_held(ck: Checkpointer, release_after: float = 0.0) -> Iterator[None]:
    """Holds every staging buffer, so no snapshot copy can proceed; gives them back on exit (or, with
    release_after, from a timer that many seconds after entering)."""
    store = ck._store
    held = [store.acquire() for _ in range(store.geometry["buffer_count"])]

    def give_back() -> None:
        for i in held:
            store.release(i)

    if release_after:
        threading.Timer(release_after, give_back).start()
        yield
    else:
        try:
            yield
        finally:
            give_back()


def test_save_returns_before_the_copy_and_before_update_waits_for_it(tmp_path):
    state = _state(1, n=2, numel=1 << 10)
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        ck.prepare(state)
        returned = threading.Event()
        with _copies_held(ck):
            handle = ck.save(1, state)  # returns although the copy cannot start
            assert not handle.done()
            waiter = threading.Thread(target=lambda: (ck.before_update(), returned.set()))
            waiter.start()
            assert not returned.wait(0.3)  # held: the copy has not run
        waiter.join(60)
        assert returned.is_set()
        assert handle.wait()
    assert torch.equal(pccheck.load(tmp_path)["model"]["w1"], state["model"]["w1"])


def test_tensors_changed_right_after_before_update_keep_their_saved_values(tmp_path):
    """Without before_update's wait the changes race the copy into staging, and the checkpoint holds them."""
    state = _state(2)
    with Checkpointer(tmp_path, chunk_size=1 << 20) as ck:
        for step in range(1, 4):
            expected = {k: t.clone() for k, t in state["model"].items()}
            state["step"] = step
            ck.save(step, state)
            ck.before_update()
            for t in state["model"].values():  # what optimizer.step() does, at once
                t.neg_()
            ck.wait()
            loaded = pccheck.load(tmp_path)
            assert loaded["step"] == step
            for name, t in expected.items():
                assert torch.equal(loaded["model"][name], t), f"step {step}: {name} holds values changed after save()"


def test_blocked_seconds_is_the_save_call_plus_the_wait_in_before_update(tmp_path, monkeypatch):
    state = _state(3, n=1, numel=1 << 10)
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        ck.prepare(state)
        assert ck.blocked_seconds() is None
        with _copies_held(ck, release_after=0.3):
            ck.save(1, state)
            ck.before_update()
        assert ck.blocked_seconds() >= 0.25  # before_update waited for the held copy
        ck.before_update()  # no save since: the figure stays that of the newest checkpoint
        assert ck.blocked_seconds() >= 0.25
        encode = payload.encode
        monkeypatch.setattr(payload, "encode", lambda s: (time.sleep(0.3), encode(s))[1])
        ck.save(2, state)  # encoding the state inside save() blocks training too
        ck.before_update()
        assert ck.blocked_seconds() >= 0.25


def test_a_failed_copy_aborts_its_checkpoint_and_wait_reports_it_once(tmp_path):
    enc = payload.encode(_state(4, n=1, numel=1 << 10))
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        # the payload announced one byte longer than header + tensors: the core refuses the copy
        handle = ck.save_encoded(1, payload.Encoded(enc.header, enc.tensors, enc.nbytes + 1))
        ck.before_update()  # training goes on
        assert handle.wait() is False and handle.outcome == "aborted"
        with pytest.raises(CheckpointError, match="snapshot copy of seq .* failed: payload is"):
            ck.wait()
        ck.wait()
        assert ck.save_encoded(2, enc).wait()  # the next checkpoint is unaffected
    assert pccheck.load(tmp_path)["step"] == 4


@pytest.mark.parametrize("block", [False, True])
def test_a_busy_disk_is_said_once_and_counted(tmp_path, caplog, block):
    state = _state(5, n=1, numel=1 << 10)
    with caplog.at_level(logging.WARNING, logger="pccheck.checkpointer"):
        with Checkpointer(tmp_path, chunk_size=64 << 10, max_async=1, block=block) as ck:
            ck.prepare(state)
            with _copies_held(ck, release_after=0.3 if block else 0.0):
                ck.save(1, state)  # held in flight
                for step in (2, 3):  # waits for a free slot (the timer frees it) or is skipped
                    ck.save(step, state)
            ck.wait()
            what, other = ("waited", "skipped") if block else ("skipped", "waited")
            assert ck.counts[other] == 0 and ck.counts[what] >= 1
            assert ck.counts["saved"] + ck.counts["skipped"] == 3
    said = [r for r in caplog.records if "already in flight" in r.getMessage()]
    assert len(said) == 1 and ("waits for a free slot" if block else "skipped") in said[0].getMessage()
