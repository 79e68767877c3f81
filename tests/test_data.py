from __future__ import annotations

import time

import torch

from pccheck.demo.data import TokenSource


def test_position_restore_is_o1_and_exact():
    a = TokenSource(seed=3, sequence_length=16, batch_size=2)
    for _ in range(5):
        a.next_batch()
    b = TokenSource(seed=3, sequence_length=16, batch_size=2)
    t0 = time.perf_counter()
    b.load_state_dict({**a.state_dict(), "position": 10**9})
    assert time.perf_counter() - t0 < 1.0  # a replay of a billion batches would take hours
    b.load_state_dict(a.state_dict())
    x1, y1 = a.next_batch()
    x2, y2 = b.next_batch()
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and torch.equal(x1[:, 1:], y1[:, :-1])


def test_dataset_file_windows(tmp_path):
    path = tmp_path / "text.txt"
    path.write_bytes(bytes(range(256)) * 4)
    x, y = TokenSource(1, 8, 3, str(path)).batch(0)
    assert x.shape == (3, 8) and int(x.max()) < 256 and torch.equal(x[:, 1:], y[:, :-1])
