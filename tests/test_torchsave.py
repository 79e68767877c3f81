"""The torch.save baseline: durable, keeps the newest two, never returns a partial or corrupt file."""
from __future__ import annotations

import logging
import os

import pytest
import torch

from pccheck.torchsave import TorchSaveCheckpointer


def _state(step: int) -> dict:
    return {"step": step, "w": torch.full((1000,), float(step)), "nested": {"t": (1, 2)}}


def test_save_load_and_keep(tmp_path):
    ck = TorchSaveCheckpointer(tmp_path, keep=2)
    for step in (10, 20, 30):
        assert ck.save(step, _state(step)).wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-00000020.pt", "ckpt-00000030.pt"]
    loaded = ck.load_latest()
    assert loaded.step == 30 and torch.equal(loaded.state["w"], _state(30)["w"])
    assert loaded.state["nested"]["t"] == (1, 2)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_newest_falls_back(tmp_path, caplog, damage):
    ck = TorchSaveCheckpointer(tmp_path)
    ck.save(1, _state(1))
    ck.save(2, _state(2))
    newest = tmp_path / "ckpt-00000002.pt"
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    else:
        data = data[: len(data) // 2]
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        loaded = TorchSaveCheckpointer(tmp_path).load_latest()
    assert loaded.step == 1 and torch.equal(loaded.state["w"], _state(1)["w"])
    assert "ckpt-00000002.pt is unusable" in caplog.text


def test_partial_temporary_files_are_ignored(tmp_path):
    ck = TorchSaveCheckpointer(tmp_path)
    ck.save(5, _state(5))
    (tmp_path / ".ckpt-00000009.pt.tmp-123").write_bytes(b"partial")
    assert ck.load_latest().step == 5


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_pickled_code_is_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"x": _Evil()}, tmp_path / "ckpt-00000001.pt")
    assert TorchSaveCheckpointer(tmp_path).load_latest() is None
    assert not (tmp_path / "pwned").exists()
