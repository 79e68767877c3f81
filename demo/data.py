"""Training batches as a pure function of (seed, position): resuming at step k costs O(1), no replay.

The default source is a synthetic byte stream from a seeded Markov chain (learnable, nothing downloaded);
`--dataset PATH` samples windows of a local file's bytes instead.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from pccheck.errors import UserError

VOCAB = 256
_FANOUT = 4  # each synthetic token has this many likely successors


class TokenSource:
    """Batch `position` is derived from a generator seeded with (seed, position) only."""

    def __init__(
        self, seed: int, sequence_length: int, batch_size: int, dataset: Optional[str] = None, rank: int = 0, world: int = 1
    ) -> None:
        self.seed = seed
        # Data parallel: rank r of N reads batch `position * N + r`, so the ranks read disjoint batches and
        # the position (the only state) is the same on every rank and survives a change of N.
        self.rank, self.world = rank, world
        self.sequence_length = sequence_length
        self.batch_size = batch_size
        self.dataset = dataset
        self.position = 0
        self._tokens: Optional[np.ndarray] = None
        if dataset is not None:
            self._tokens = _read_dataset(Path(dataset), sequence_length)
        else:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 0xDA7A])))
            self._successors = rng.integers(0, VOCAB, size=(VOCAB, _FANOUT))
            weights = rng.random((VOCAB, _FANOUT)) ** 2
            self._cumprob = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)

    def _rng(self, position: int) -> np.random.Generator:
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, 0xBA7C, position])))

    def batch(self, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets of batch `position`, each (batch, sequence_length) int64."""
        rng = self._rng(position)
        n, t = self.batch_size, self.sequence_length
        if self._tokens is not None:
            starts = rng.integers(0, len(self._tokens) - t - 1, size=n)
            seq = np.stack([self._tokens[s : s + t + 1] for s in starts]).astype(np.int64)
        else:
            seq = np.empty((n, t + 1), dtype=np.int64)
            seq[:, 0] = rng.integers(0, VOCAB, size=n)
            draws = rng.random((n, t))
            for i in range(t):
                choice = (draws[:, i : i + 1] > self._cumprob[seq[:, i]]).sum(axis=1)
                seq[:, i + 1] = self._successors[seq[:, i], choice]
        data = torch.from_numpy(seq)
        return data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.batch(self.position * self.world + self.rank if self.world > 1 else self.position)
        self.position += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "seed": self.seed, "dataset": self.dataset or ""}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed or (state["dataset"] or None) != self.dataset:
            raise UserError(
                f"checkpoint was written for data seed {state['seed']} / dataset {state['dataset'] or 'synthetic'!r}, "
                f"not {self.seed} / {self.dataset or 'synthetic'!r}: pass the same --seed and --dataset"
            )
        self.position = int(state["position"])


def _read_dataset(path: Path, sequence_length: int) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"dataset {path} is not a readable file")
    tokens = np.fromfile(path, dtype=np.uint8)
    if len(tokens) < sequence_length + 2:
        raise UserError(f"dataset {path} has {len(tokens)} bytes; it needs at least --sequence-length + 2")
    return tokens
