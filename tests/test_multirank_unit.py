"""Pieces of the multi-rank path without launching ranks: launch environments and DCP file set names."""
from __future__ import annotations

from pccheck.dcp.names import SetName, parse
from pccheck.distributed import detect, first_host


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


def test_set_names_tell_sets_apart_by_run_and_world():
    a, b = SetName.new(2), SetName.new(2)
    assert a.set_id != b.set_id
    assert parse(a.commit_file) == (a, None) and parse(a.rank_file(1)) == (a, 1)
    assert parse(SetName("0123abcd", 4).rank_file(3)) == (SetName("0123abcd", 4), 3)
    assert parse("dcp-0123abcd-w00002-r00002.ckpt") is None  # rank beyond the world size
    assert parse("pccheck.ckpt") is None and parse("pccheck.rank00000-of-00002.ckpt") is None
