"""Pieces of the multi-rank checkpointer without launching ranks: launch environments, file sets, the
global step and who held it back, retiring records, part payloads."""
from __future__ import annotations

import pytest
import torch

from pccheck import payload
from pccheck.checkpointer import Checkpointer
from pccheck.distributed import detect, first_host
from pccheck.errors import CheckpointError
from pccheck.sharded import (
    _materialize, describe_run_dir, encode_part, parse_file_name, parse_part, rank_file_name, retire_newer,
    split_range,
)


def test_launch_environments():
    assert detect({}) is None
    assert detect({"RANK": "0", "WORLD_SIZE": "1"}) is None
    e = detect({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234"})
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port, e.launcher) == (1, 4, 1, "h", 1234, "torchrun")
    batch_shell = {"SLURM_PROCID": "0", "SLURM_NTASKS": "8", "SLURM_JOB_ID": "7"}  # no step: one process
    assert detect(batch_shell) is None
    srun = {**batch_shell, "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
            "SLURM_STEP_NODELIST": "nid[002-005]", "SLURM_RESTART_COUNT": "2"}
    e = detect(srun)
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.launcher) == (5, 8, 1, "nid002", "slurm")
    assert e.master_port != detect({**srun, "SLURM_RESTART_COUNT": "3"}).master_port
    assert detect({**srun, "PCCHECK_DISTRIBUTED": "0"}) is None
    local = detect({"SUBMITIT_LOCAL_NTASKS": "2", "SUBMITIT_LOCAL_GLOBALID": "1", "SUBMITIT_LOCAL_JOB_ID": "4242"})
    assert (local.rank, local.world_size, local.master_addr, local.launcher) == (1, 2, "127.0.0.1", "submitit-local")
    assert first_host("a1,b[1-3]") == "a1" and first_host("nid[007,009-010]") == "nid007"


def test_names_and_split():
    assert rank_file_name(0, 1) == "pccheck.ckpt"
    assert parse_file_name(rank_file_name(3, 256)) == (3, 256)
    assert parse_file_name("pccheck.rank00002-of-00002.ckpt") is None
    assert [split_range(10, r, 3) for r in range(3)] == [(0, 3), (3, 6), (6, 10)]


def test_parts_reassemble_to_the_single_process_stream():
    state = {"step": 3, "w": torch.arange(1001, dtype=torch.float32), "b": torch.ones(3, dtype=torch.bfloat16),
             "rng": {"torch": torch.zeros(4, dtype=torch.uint8)}}
    whole = _materialize(payload.encode({k: v for k, v in state.items() if k != "rng"}))
    parts = [parse_part(_materialize(encode_part(state, rank=r, world=3, step=3, run="x", local_keys=("rng",)).enc)) for r in range(3)]
    assert b"".join(bytes(data) for _, _, data in parts) == whole
    assert all(m["total"] == len(whole) and m["run"] == "x" for m, _, _ in parts)
    assert payload.decode(bytearray(parts[1][1]))["rng"]["torch"].tolist() == [0, 0, 0, 0]
    with pytest.raises(CheckpointError):
        parse_part(b"PCCKPRT1" + b"\xff" * 8)


def _store(d, rank, steps):
    ck = Checkpointer(d, max_async=1, keep=4, chunk_size=4096, file_name=rank_file_name(rank, 2))
    for s in steps:
        ck.save(s, {"step": s, "x": torch.full((10,), float(s))}).wait()
    ck.close()


def test_global_step_held_back_and_retire(tmp_path):
    _store(tmp_path, 0, [10, 20, 30])
    _store(tmp_path, 1, [10, 20])
    desc = describe_run_dir(tmp_path)
    (s,) = desc["sets"]
    assert (s["global_step"], s["newest_step"]) == (20, 30)
    assert [(h["rank"], h["why"]) for h in s["held_back"]] == [(1, "it has no commit of step 30")]
    assert "held back by rank 1" in s["summary"]
    assert desc["resume_from"] == {"world": 2, "step": 20}
    assert retire_newer(tmp_path / rank_file_name(0, 2), 20) == [(3, 30)]
    s = describe_run_dir(tmp_path)["sets"][0]
    assert (s["global_step"], s["newest_step"], s["held_back"]) == (20, 20, [])
    _store(tmp_path, 0, [40])  # the core reopens the file after the retired record and goes on
    assert describe_run_dir(tmp_path)["sets"][0]["ranks"][0]["steps"] == {"10": 1, "20": 2, "40": 3}
    assert len(retire_newer(tmp_path / rank_file_name(1, 2), None)) == 2  # a fresh start forgets all
    assert describe_run_dir(tmp_path)["global_step"] is None


def test_missing_rank_file_is_reported(tmp_path):
    _store(tmp_path, 0, [10])
    (s,) = describe_run_dir(tmp_path)["sets"]
    assert s["global_step"] is None and s["ranks"][1]["error"] == "missing"
    assert "unusable (missing)" in s["held_back"][0]["why"]
