"""pccheck.rng through a real checkpoint: after a restore, each generator's next draws are the ones it would
have made (python, numpy's global generator, torch CPU, every CUDA device where present), with both
checkpointers. The cached second Gaussian of python and numpy is part of the state and is checked too."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from pccheck import rng_state, set_rng_state
from pccheck.checkpointer import Checkpointer, load_checkpoint
from pccheck.torchsave import TorchSaveCheckpointer

CUDA = torch.cuda.is_available()


def _cuda_draws() -> list[float]:
    return [torch.rand(3, device=f"cuda:{d}").sum().item() for d in range(torch.cuda.device_count())]


#: the next draws of each generator; python's and numpy's Gaussians take the cached second value first
DRAWS: dict[str, Callable[[], Any]] = {
    "python": lambda: ([random.random() for _ in range(3)], random.gauss(0, 1), random.getrandbits(64)),
    "numpy": lambda: (np.random.random(3).tolist(), float(np.random.normal()), np.random.randint(0, 2**31, 3).tolist()),
    "torch": lambda: (torch.rand(3).tolist(), torch.randn(2).tolist(), torch.randint(0, 2**31, (3,)).tolist()),
    "cuda": _cuda_draws,
}
GENERATORS = [pytest.param(g, marks=pytest.mark.skipif(g == "cuda" and not CUDA, reason="no CUDA device"))
              for g in DRAWS]


def _advance_all() -> None:
    """Moves every generator away from its seed and leaves a cached Gaussian in python and numpy."""
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    random.random(), random.gauss(0, 1)  # gauss draws two and caches the second
    np.random.random(5), np.random.normal()  # likewise: has_gauss = 1
    torch.rand(7)
    if CUDA:
        _cuda_draws()


def _scramble_all() -> None:
    """What a new process looks like: every generator somewhere else."""
    random.seed(99)
    np.random.seed(98)
    torch.manual_seed(97)  # seeds every CUDA device too


def _save_and_load(kind: str, directory: Path, state: dict[str, Any]) -> dict[str, Any]:
    if kind == "pccheck":
        with Checkpointer(directory) as ck:
            assert ck.save(1, state).wait()
        loaded = load_checkpoint(directory)
    else:
        ck = TorchSaveCheckpointer(directory)
        assert ck.save(1, state).wait()
        loaded = TorchSaveCheckpointer(directory).load_latest()
    assert loaded is not None and loaded.step == 1
    return loaded.state


@pytest.mark.parametrize("kind", ["pccheck", "torchsave"])
@pytest.mark.parametrize("generator", GENERATORS)
def test_restored_generator_draws_what_it_would_have_drawn(tmp_path: Path, kind: str, generator: str):
    _advance_all()
    state = {"rng": rng_state(), "model": {"w": torch.ones(4)}}
    expected = DRAWS[generator]()
    _scramble_all()
    assert DRAWS[generator]() != expected  # the scramble moved it: the restore below has work to do
    set_rng_state(_save_and_load(kind, tmp_path, state)["rng"])
    assert DRAWS[generator]() == expected


def test_the_captured_state_holds_no_pickled_objects():
    """Both checkpointers store it without pickle: tensors, ints, floats, strings and lists only."""
    def plain(x: Any) -> bool:
        if isinstance(x, dict):
            return all(isinstance(k, str) and plain(v) for k, v in x.items())
        if isinstance(x, (list, tuple)):
            return all(plain(v) for v in x)
        return x is None or isinstance(x, (torch.Tensor, int, float, str))

    _advance_all()
    assert plain(rng_state())
