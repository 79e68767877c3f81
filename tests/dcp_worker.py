"""A DCP rank for the tests: saves DTensor state through pccheck.dcp.Writer and loads it through Reader.

    python dcp_worker.py save DIR MODE:STEP [MODE:STEP ...]   MODE: sync | thread | process
    python dcp_worker.py loop DIR FIRST                   saves steps FIRST, FIRST + 1, ... until killed
    python dcp_worker.py load DIR [STEP]                  checks every tensor against the saved step
    python dcp_worker.py diverge DIR STEP                 saves a plain tensor that differs between ranks
    python dcp_worker.py killfinish DIR STEP              rank 0 is SIGKILLed after every part of STEP is durable,
                                                          before the global commit
Ranks come from torchrun's variables (one process without them). The state of step s: a Shard(0) fp32
DTensor, a Shard(1) bf16 DTensor, a Replicate() DTensor, a plain replicated tensor and the step value,
every element a function of s, so a load proves which step it read and that no tensor mixes two steps.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Any, Optional

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict_saver import AsyncCheckpointerType
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

import pccheck.dcp
from pccheck.dcp.checkpointer import explain

SHAPES = {"w0": ((12, 6), torch.float32, Shard(0)), "w1": ((4, 10), torch.bfloat16, Shard(1)),
          "rep": ((7,), torch.float32, Replicate())}
PLAIN = ((5, 3), torch.float64)


def full(name: str, step: int) -> torch.Tensor:
    shape, dtype = (SHAPES[name][0], SHAPES[name][1]) if name in SHAPES else PLAIN
    n = 1
    for d in shape:
        n *= d
    base = {"w0": 1000.0, "w1": 2000.0, "rep": 3000.0, "plain": 4000.0}[name]
    return (torch.arange(n, dtype=torch.float64) + base + step * 0.5).reshape(shape).to(dtype)


def state(step: int, mesh: Any, zero: bool = False) -> dict[str, Any]:
    """The state of `step` (zeros with `zero`: a load target), DTensors when there is a mesh."""
    sd: dict[str, Any] = {}
    for name, (_, _, placement) in SHAPES.items():
        t = full(name, step)
        t = torch.zeros_like(t) if zero else t
        sd[name] = distribute_tensor(t, mesh, [placement]) if mesh is not None else t
    sd["plain"] = torch.zeros_like(full("plain", step)) if zero else full("plain", step)
    sd["step"] = -1 if zero else step
    return sd


def mismatches(sd: dict[str, Any], step: int) -> list[str]:
    bad = []
    for name in [*SHAPES, "plain"]:
        t = sd[name]
        t = t.full_tensor() if isinstance(t, DTensor) else t
        if not torch.equal(t, full(name, step)):
            bad.append(name)
    if sd["step"] != step:
        bad.append(f"step={sd['step']}")
    return bad


def setup() -> Optional[Any]:
    if "WORLD_SIZE" not in os.environ:
        return None
    dist.init_process_group("gloo")
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh("cpu", (dist.get_world_size(),))


def save(directory: str, mode: str, step: int, mesh: Any) -> None:
    sd = state(step, mesh)
    writer = pccheck.dcp.Writer(directory, step=step, chunk_size=64 << 10)
    if mode == "sync":
        dcp.save(sd, storage_writer=writer)
        return
    kind = {"thread": AsyncCheckpointerType.THREAD, "process": AsyncCheckpointerType.PROCESS}[mode]
    if mode == "process":  # its daemon opens the rank files: this process lets go of them first
        pccheck.dcp.close_all()
    fut = dcp.async_save(sd, storage_writer=writer, async_checkpointer_type=kind)
    for t in sd.values():  # the stager copied the state: changing it now must not change the checkpoint
        if isinstance(t, torch.Tensor):
            (t.to_local() if isinstance(t, DTensor) else t).fill_(-7)
    fut.result()


class _DiesBeforeGlobalCommit(pccheck.dcp.Writer):
    def finish(self, metadata: Any, results: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str]) -> int:
    mesh = setup()
    cmd, directory = argv[0], argv[1]
    if cmd == "save":
        for item in argv[2:]:
            mode, step = item.split(":")
            save(directory, mode, int(step), mesh)
    elif cmd == "loop":
        step = int(argv[2])
        while True:
            save(directory, "sync", step, mesh)
            step += 1
    elif cmd == "diverge":
        sd = state(int(argv[2]), mesh)
        sd["plain"] = sd["plain"] + dist.get_rank()  # same shape on every rank, different bytes
        try:
            dcp.save(sd, storage_writer=pccheck.dcp.Writer(directory, step=int(argv[2])))
        except CheckpointException as exc:
            print(f"refused: {explain(exc)}", file=sys.stderr, flush=True)
            return 3
    elif cmd == "killfinish":
        dcp.save(state(int(argv[2]), mesh), storage_writer=_DiesBeforeGlobalCommit(directory, step=int(argv[2])))
    elif cmd == "load":
        reader = pccheck.dcp.Reader(directory, step=int(argv[2]) if len(argv) > 2 else None)
        sd = state(0, mesh, zero=True)
        dcp.load(sd, storage_reader=reader)
        step = sd["step"]
        bad = mismatches(sd, step)
        rank = dist.get_rank() if mesh is not None else 0
        print(f"rank {rank}: loaded step {step}; mismatches: {bad}", file=sys.stderr, flush=True)
        if bad:
            return 1
    pccheck.dcp.close_all()
    if mesh is not None:
        dist.barrier()  # every rank done with its collectives before any tears gloo down
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
