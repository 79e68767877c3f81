"""A state that grows or shrinks between saves is saved and loads back exactly: the core re-lays its file
out with larger slots (docs/format.md, "Growth") instead of refusing the payload."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

import pccheck
from pccheck import payload
from pccheck.checkpointer import Checkpointer

MB = 1 << 20
HERE = Path(__file__).parent


def _state(step: int, tensor_mb: float = 0, json_mb: float = 0) -> dict:
    g = torch.Generator().manual_seed(step)
    state = {"step": step, "w": torch.randn(64, 64, generator=g), "opt": {"lr": 0.01 * step}}
    if tensor_mb:
        state["new"] = torch.randn(int(tensor_mb * MB) // 4, generator=g)
    if json_mb:
        state["notes"] = [f"note {step} {i:08d}" for i in range(int(json_mb * MB) // 20)]
    return state


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_growing_state_is_saved_and_loads_back_exactly(tmp_path):
    states = {1: _state(1), 2: _state(2, tensor_mb=4), 3: _state(3, tensor_mb=12, json_mb=1.5)}
    assert len(payload.encode(states[3]).header) > 1.5 * MB  # the JSON part alone
    with Checkpointer(tmp_path, chunk_size=1 * MB) as ck:
        for step, state in states.items():
            assert ck.save(step, state).wait()
            assert _same(pccheck.load(tmp_path, step=step), state)
        assert ck._store.stats["grown"] == 2  # a new 4 MB tensor, then 12 MB and 1.5 MB of JSON
    assert _same(pccheck.load(tmp_path, step=2), states[2])  # keep=2 held through the growth
    assert _same(pccheck.load(tmp_path), states[3])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pccheck.ckpt", "pccheck.ckpt.lock"]

    # A second process opens the grown file (asking for small slots), shrinks, then grows again.
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(HERE)!r})
        import pccheck
        from pccheck.checkpointer import Checkpointer
        from test_core_growth import _same, _state
        with Checkpointer({str(tmp_path)!r}, chunk_size=1 << 20) as ck:
            small = _state(4)
            assert ck.save(4, small).wait()
            assert _same(pccheck.load({str(tmp_path)!r}, step=4), small)
            big = _state(5, tensor_mb=24)
            assert ck.save(5, big).wait()
            assert _same(pccheck.load({str(tmp_path)!r}, step=5), big)
            print("grown", ck._store.stats["grown"])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["grown", "1"]
    assert _same(pccheck.load(tmp_path, step=4), _state(4))
    assert _same(pccheck.load(tmp_path), _state(5, tensor_mb=24))
