"""pccheck-bench smoke test: a tiny state, every phase once, the JSON keys and the chart exist.

No timing target is asserted here: performance targets live in the benchmark's own output.
"""
from __future__ import annotations

import json

import pytest

from pccheck.tools import bench, bench_report, bench_train, bench_tune

KEYS = [
    "state_bytes", "stall_s", "stall_floor_s", "baseline_stall_s", "dcp_stall_s", "durable_s", "baseline_durable_s",
    "dcp_durable_s", "disk_write_s", "overhead_every_10", "baseline_overhead_every_10", "overhead_every_50",
    "baseline_overhead_every_50", "load_s", "baseline_load_s", "disk_read_s", "peak_extra_bytes", "memory_budget_bytes",
]


def test_quick_bench_tiny_state_writes_every_key_and_the_chart(tmp_path):
    out = tmp_path / "out.json"
    argv = ["--quick", "--state-gb", "0.01", "--reps", "1", "--train-steps", "11", "--train-rounds", "1",
            "--dir", str(tmp_path / "scratch"), "--json", str(out)]
    assert bench.main(argv) == 0
    result = json.loads(out.read_text())
    for key in KEYS:
        assert key in result, key
        assert result[key] is not None, key
    assert result["state_bytes"] >= 0.01 * (1 << 30) - 4
    for key in ("stall_s", "durable_s", "load_s", "disk_write_s", "disk_read_s", "stall_floor_s"):
        assert result[key] > 0
    assert result["durable_s"] >= result["stall_s"]
    assert len(result["targets"]) == len(bench_report.TARGETS)
    assert all(t["pass"] in (True, False) for t in result["targets"])
    assert (tmp_path / "out.png").stat().st_size > 0


def test_auto_tune_picks_the_smallest_memory_within_five_percent():
    mib = 1 << 20
    rows = [
        {"threads": 4, "max_async": 2, "chunk_size": 16 * mib, "bandwidth": 1.00e9, "peak_extra": 2048 * mib},
        {"threads": 2, "max_async": 1, "chunk_size": 16 * mib, "bandwidth": 0.96e9, "peak_extra": 1024 * mib},
        {"threads": 1, "max_async": 1, "chunk_size": 4 * mib, "bandwidth": 0.80e9, "peak_extra": 1024 * mib},
    ]
    assert bench_tune.pick(rows) is rows[1]
    rows[1]["memory_budget"] = 1024 * mib
    assert bench_tune.flags(rows[1]) == "--writer-threads 2 --max-async 1 --chunk-size 16M --memory-budget 1024M"


@pytest.mark.parametrize("flags", [[]])
def test_auto_tune_sweep_runs_on_a_tiny_state(tmp_path, flags):
    from pccheck.tools.bench_io import synthetic_state

    rows = bench_tune.sweep(synthetic_state(8 << 20), tmp_path / "sweep", threads=(1, 2), max_async=(1,),
                            chunks=(1 << 20, 4 << 20), log=lambda m: None)
    assert len(rows) == 4
    assert all(r["bandwidth"] > 0 for r in rows)
    assert bench_tune.pick(rows) in rows


def test_training_summary_overheads_are_relative_to_no_checkpoint():
    runs = [{"kind": k, "freq": f, "steps_per_s": s, "peak_extra": m}
            for k, f, s, m in [("none", 0, 10.0, 100), ("pccheck", 10, 9.9, 110), ("torchsave", 10, 5.0, 100),
                               ("pccheck", 50, 10.0, 105), ("torchsave", 50, 8.0, 100)]]
    out = bench_train.summarize(runs)
    assert out["overhead_every_10"] == pytest.approx(10 / 9.9 - 1)
    assert out["baseline_overhead_every_10"] == pytest.approx(1.0)
    assert out["train_peak_extra_bytes_pccheck"] == 10
