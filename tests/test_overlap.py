"""The CPU snapshot runs beside the next step: save() returns before the copy, before_update() waits for it,
and a state changed right after before_update() is checkpointed with its values from save()."""
from __future__ import annotations

import logging
import threading

import pytest
import torch

import pccheck
from pccheck import checkpointer as checkpointer_module
from pccheck.checkpointer import Checkpointer
from pccheck.errors import CheckpointError
from pccheck.hostcopy import HostCopier


class _GatedStore:
    """A store whose write_host waits for `gate` (and then fails, with `fail`): the copy is held in flight."""

    def __init__(self, store, gate: threading.Event, fail: bool = False) -> None:
        self._store, self._gate, self._fail = store, gate, fail

    def write_host(self, *args):
        self._gate.wait()
        if self._fail:
            raise RuntimeError("injected copy failure")
        return self._store.write_host(*args)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.fixture
def gated(monkeypatch):
    """Makes every Checkpointer's copier go through a _GatedStore; returns the gate (and a switch to fail)."""
    gate = threading.Event()
    control = {"fail": False}

    class GatedCopier(HostCopier):
        def __init__(self, store) -> None:
            super().__init__(_GatedStore(store, gate, control["fail"]))

    monkeypatch.setattr(checkpointer_module, "HostCopier", GatedCopier)
    gate.control = control  # type: ignore[attr-defined]
    return gate


def _state(seed: int, n: int = 8, numel: int = 2 << 20) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"step": seed, "model": {f"w{i}": torch.randn(numel, generator=g) for i in range(n)}}


def test_save_returns_before_the_copy_and_before_update_waits_for_it(tmp_path, gated):
    state = _state(1, n=2, numel=1 << 10)
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        handle = ck.save(1, state)  # returns although the copy cannot start
        assert not handle.done()
        returned = threading.Event()
        waiter = threading.Thread(target=lambda: (ck.before_update(), returned.set()))
        waiter.start()
        assert not returned.wait(0.3)  # held: the copy has not run
        gated.set()
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


def test_blocked_seconds_is_the_save_call_plus_the_wait_in_before_update(tmp_path, gated):
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        assert ck.blocked_seconds() is None
        ck.save(1, _state(3, n=1, numel=1 << 10))
        threading.Timer(0.3, gated.set).start()
        ck.before_update()
        assert ck.blocked_seconds() >= 0.25  # before_update waited for the held copy
        ck.before_update()  # no save since: the figure stays that of the newest checkpoint
        assert ck.blocked_seconds() >= 0.25


def test_a_failed_copy_aborts_its_checkpoint_and_wait_reports_it(tmp_path, gated):
    gated.control["fail"] = True
    gated.set()
    with Checkpointer(tmp_path, chunk_size=64 << 10) as ck:
        handle = ck.save(1, _state(4, n=1, numel=1 << 10))
        ck.before_update()  # training goes on
        assert handle.wait() is False and handle.outcome == "aborted"
        with pytest.raises(CheckpointError, match="injected copy failure"):
            ck.wait()
        ck.wait()  # reported once


@pytest.mark.parametrize("block", [False, True])
def test_a_busy_disk_is_said_once_and_counted(tmp_path, gated, caplog, block):
    state = _state(5, n=1, numel=1 << 10)
    with caplog.at_level(logging.WARNING, logger="pccheck.checkpointer"):
        with Checkpointer(tmp_path, chunk_size=64 << 10, max_async=1, block=block) as ck:
            ck.save(1, state)  # held in flight by the gate
            if block:
                threading.Timer(0.3, gated.set).start()  # the second save waits for the first
            for step in (2, 3):
                ck.save(step, state)
            gated.set()
            ck.wait()
            what = "waited" if block else "skipped"
            other = "skipped" if block else "waited"
            assert ck.counts[other] == 0
            assert ck.counts[what] >= 1 and ck.counts["saved"] + ck.counts["skipped"] == 3
    said = [r for r in caplog.records if "already in flight" in r.getMessage()]
    assert len(said) == 1 and ("waits for a free slot" if block else "skipped") in said[0].getMessage()
