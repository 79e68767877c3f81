"""Process-group setup for data-parallel training, from torchrun's or Slurm's environment.

Launchers and what they set:
- torchrun (and torch.multiprocessing with the same variables): RANK, WORLD_SIZE, LOCAL_RANK,
  MASTER_ADDR, MASTER_PORT.
- srun tasks (also submitit's `tasks_per_node` / `nodes`, which run `srun python ...`): SLURM_PROCID,
  SLURM_STEP_NUM_TASKS (or SLURM_NTASKS inside a step), SLURM_LOCALID, SLURM_STEP_NODELIST /
  SLURM_JOB_NODELIST. The rendezvous is the first node of the step on a port derived from the job id
  and restart count (PCCHECK_MASTER_PORT or MASTER_PORT override it).
- submitit's LocalExecutor with several tasks: SUBMITIT_LOCAL_GLOBALID, SUBMITIT_LOCAL_NTASKS,
  SUBMITIT_LOCAL_LOCALID; rendezvous on 127.0.0.1.

World size 1 (or no launcher) is not distributed at all: the trainer runs its single-process path.
PCCHECK_DISTRIBUTED=0 forces that path even under a launcher.

Two process groups: the training group (NCCL on GPUs, gloo on CPUs), used only by DDP and the main
thread, and a gloo group of its own for pccheck's coordination (stop agreement, the loss mean, the global
commit, recovery). Both are used only from the main thread at step boundaries; background threads
(the checkpoint writers) never touch a process group.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Mapping, Optional

import torch

from .errors import UserError

log = logging.getLogger("pccheck.distributed")

DEFAULT_TIMEOUT_S = 600.0  # a rank that dies is noticed by its peers' sockets long before this
_PORT_BASE, _PORT_SPAN = 20000, 20000


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" | "slurm"


def first_host(nodelist: str) -> str:
    """The first host of a Slurm hostlist: `nid[001-004,007],login1` -> `nid001`."""
    nodelist = nodelist.strip()
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist)
    if not m:
        raise UserError(f"cannot parse the Slurm node list {nodelist!r}")
    prefix, ranges = m.group(1), m.group(2)
    if not ranges:
        return prefix
    first = ranges.split(",")[0].split("-")[0]
    return prefix + first


def _int(env: Mapping[str, str], name: str) -> Optional[int]:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer") from None


def detect(environ: Optional[Mapping[str, str]] = None) -> Optional[DistEnv]:
    """The launch environment, or None for a single process (world size 1, or no launcher)."""
    env = os.environ if environ is None else environ
    if env.get("PCCHECK_DISTRIBUTED", "").strip().lower() in ("0", "off", "no", "false"):
        return None
    world = _int(env, "WORLD_SIZE")
    if world is not None and "RANK" in env:  # torchrun / torch.distributed.launch / hand-made
        rank = _int(env, "RANK") or 0
        if world <= 1:
            return None
        return DistEnv(
            rank, world, _int(env, "LOCAL_RANK") or 0, env.get("MASTER_ADDR", "127.0.0.1"),
            _int(env, "MASTER_PORT") or 29500, "torchrun",
        )
    # srun tasks. Only inside a job step: the batch shell also carries SLURM_NTASKS and SLURM_PROCID=0,
    # and a python started there directly must not wait for peers that will never come.
    if "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        world = _int(env, "SLURM_STEP_NUM_TASKS") or _int(env, "SLURM_NTASKS") or 1
        if world <= 1:
            return None
        rank = _int(env, "SLURM_PROCID") or 0
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "127.0.0.1"
        addr = env.get("MASTER_ADDR") or first_host(nodelist)
        port = _int(env, "PCCHECK_MASTER_PORT") or _int(env, "MASTER_PORT")
        if port is None:  # same on every task of the step; changes with each requeue (TIME_WAIT)
            job = _int(env, "SLURM_JOB_ID") or 0
            restart = _int(env, "SLURM_RESTART_COUNT") or 0
            port = _PORT_BASE + (job * 7 + restart * 101) % _PORT_SPAN
        return DistEnv(rank, world, _int(env, "SLURM_LOCALID") or 0, addr, port, "slurm")
    # submitit's LocalExecutor with tasks_per_node > 1 (one machine, no Slurm)
    world = _int(env, "SUBMITIT_LOCAL_NTASKS")
    if world is not None and world > 1 and "SUBMITIT_LOCAL_GLOBALID" in env:
        job = re.sub(r"\D", "", env.get("SUBMITIT_LOCAL_JOB_ID", "")) or "0"
        port = _int(env, "PCCHECK_MASTER_PORT") or _PORT_BASE + (int(job) * 7) % _PORT_SPAN
        return DistEnv(_int(env, "SUBMITIT_LOCAL_GLOBALID") or 0, world, _int(env, "SUBMITIT_LOCAL_LOCALID") or 0,
                       "127.0.0.1", port, "submitit-local")
    return None


class Comm:
    """The coordination channel: a gloo process group of pccheck's own, used from the main thread only.

    `Comm.single()` is the one-process stand-in (every collective returns its input), so recovery and
    the global commit run the same code with one rank.
    """

    def __init__(self, rank: int, world_size: int, group: Any = None) -> None:
        self.rank, self.world_size, self.group = rank, world_size, group

    @classmethod
    def single(cls) -> "Comm":
        return cls(0, 1, None)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def allgather_f64(self, values: list[float]) -> list[list[float]]:
        """Every rank's vector (same length everywhere), in rank order."""
        t = torch.tensor(values, dtype=torch.float64)
        if not self.distributed:
            return [t.tolist()]
        out = [torch.empty_like(t) for _ in range(self.world_size)]
        torch.distributed.all_gather(out, t, group=self.group)
        return [o.tolist() for o in out]

    def allreduce_f64(self, values: list[float], op: str = "sum") -> list[float]:
        """Element-wise sum / min / max over ranks (log(N) latency: the per-step exchange uses this)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        ops = {"sum": torch.distributed.ReduceOp.SUM, "min": torch.distributed.ReduceOp.MIN,
               "max": torch.distributed.ReduceOp.MAX}
        torch.distributed.all_reduce(t, op=ops[op], group=self.group)
        return t.tolist()

    def allgather_json(self, obj: Any) -> list[Any]:
        """Every rank's JSON value, in rank order (no pickle on the wire)."""
        data = json.dumps(obj, separators=(",", ":")).encode()
        if not self.distributed:
            return [json.loads(data)]
        sizes = self.allgather_f64([float(len(data))])
        n = int(max(s[0] for s in sizes))
        buf = torch.zeros(n, dtype=torch.uint8)
        if data:
            buf[: len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        out = [torch.empty(n, dtype=torch.uint8) for _ in range(self.world_size)]
        torch.distributed.all_gather(out, buf, group=self.group)
        return [json.loads(bytes(o[: int(s[0])].numpy())) for o, s in zip(out, sizes)]

    def allgather_bytes(self, data: Any) -> list[memoryview]:
        """Every rank's bytes (lengths may differ), in rank order: one ring all-gather, each rank sends
        its own once (N->N recovery of replicated state: every rank receives the other parts)."""
        mine = memoryview(data).cast("B")
        if not self.distributed:
            return [mine]
        sizes = [int(x) for x in self.allreduce_f64([float(len(mine)) if r == self.rank else 0.0
                                                     for r in range(self.world_size)], "sum")]
        seg = max(sizes)
        send = torch.zeros(seg, dtype=torch.uint8)
        if len(mine):
            send[: len(mine)] = torch.frombuffer(mine, dtype=torch.uint8)
        out = torch.empty(seg * self.world_size, dtype=torch.uint8)
        torch.distributed.all_gather(list(out.split(seg)), send, group=self.group)
        flat = memoryview(out.numpy()).cast("B")
        return [flat[r * seg : r * seg + n] for r, n in enumerate(sizes)]

    def broadcast_json(self, obj: Any, src: int = 0) -> Any:
        return self.allgather_json(obj if self.rank == src else None)[src]

    def broadcast_into(self, buf: bytearray | memoryview, begin: int, end: int, src: int) -> None:
        """Rank `src`'s bytes buf[begin:end] land in everyone's buf[begin:end]."""
        if not self.distributed or end <= begin:
            return
        view = torch.frombuffer(buf, dtype=torch.uint8)[begin:end]
        torch.distributed.broadcast(view, src=src, group=self.group)

    def barrier(self) -> None:
        if self.distributed:
            self.allgather_f64([0.0])


@dataclass
class Distributed:
    """What the trainer needs of a multi-rank run: who it is, its device, and the coordination channel."""

    env: DistEnv
    device: torch.device
    backend: str
    comm: Comm

    @property
    def rank(self) -> int:
        return self.env.rank

    @property
    def world_size(self) -> int:
        return self.env.world_size

    def close(self) -> None:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup(env: DistEnv, device_name: str) -> Distributed:
    """Initialises the training group (NCCL for CUDA, gloo for CPU) and pccheck's own gloo group."""
    import torch.distributed as dist

    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda given but no CUDA device is available")
        n = torch.cuda.device_count()
        # srun --gpus-per-task=1 shows each task one device; torchrun on a node shows them all.
        device = torch.device("cuda", env.local_rank % n)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device = torch.device("cpu")
        backend = "gloo"
    timeout = timedelta(seconds=float(os.environ.get("PCCHECK_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
    os.environ.setdefault("MASTER_ADDR", env.master_addr)
    os.environ.setdefault("MASTER_PORT", str(env.master_port))
    init = f"tcp://{env.master_addr}:{env.master_port}"
    log.info("rank %d/%d (%s): joining %s with %s", env.rank, env.world_size, env.launcher, init, backend)
    dist.init_process_group(backend, init_method=init, rank=env.rank, world_size=env.world_size, timeout=timeout)
    coord = dist.new_group(backend="gloo", timeout=timeout)
    return Distributed(env, device, backend, Comm(env.rank, env.world_size, coord))
