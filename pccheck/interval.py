"""When to checkpoint: every N steps, or the interval that costs least, chosen from measurements.

    interval = pccheck.AutoInterval(ckpt)          # or pccheck.interval.Every(50)
    for step in range(start + 1, steps + 1):
        train_step()
        if interval.due(step):
            ckpt.save(step, state(step))

`AutoInterval` minimises the expected work lost to failures plus the checkpoint overhead (Young 1974,
Daly 2006): a checkpoint that blocks training for d seconds, with failures M seconds apart, is best taken
every tau = sqrt(2 d M) (1 + sqrt(d/2M)/3 + d/18M) - d seconds of compute. It never checkpoints more often
than the disk absorbs (PCcheck): with N = max_async checkpoints in flight, each durable T_w seconds after
save(), and steps of t seconds, every f >= T_w / (N q t) steps, where q is the share of the N-fold
concurrency the storage turns into bandwidth (1 by default: T_w is measured under the running checkpoint
rate, so contention between concurrent writes is already in it). M is the per-node MTBF divided by the
node count (SLURM_JOB_NUM_NODES, else 1); time limits and preemptions need no periodic checkpoint, since the
stop on signal (pccheck.StopRequest) checkpoints before them.
"""
from __future__ import annotations

import logging
import math
import os
import statistics
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Union

from .checkpointing import CheckpointerLike

log = logging.getLogger("pccheck.interval")

#: Per-node MTBF default: Llama 3's pre-training saw 419 unexpected interruptions in 54 days on 2,048 nodes
#: (16,384 GPUs), one per about 6,300 node-hours.
DEFAULT_MTBF_NODE_HOURS = 6000.0
WARMUP_STEPS = 5  # steps timed after the first checkpoint before the first choice
RECHECK_STEPS = 100  # the choice is re-evaluated this often (and at the same steps on every rank)
DRIFT = 0.25  # a new choice replaces the current one when it differs by more than this fraction


class Interval(Protocol):
    def due(self, step: int) -> bool:
        """Whether to checkpoint after `step`; call it once per step, with increasing steps."""


class Every:
    """A checkpoint every `steps` steps (at multiples of it, so a resumed run checkpoints at the same steps)."""

    def __init__(self, steps: int) -> None:
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self.steps = steps

    def due(self, step: int) -> bool:
        return step % self.steps == 0


def daly_seconds(blocked_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimum of the compute time between checkpoints (Young's sqrt(2 d M) to first
    order) for a checkpoint that blocks training `blocked_s` seconds and failures `mtbf_s` seconds apart."""
    if blocked_s >= 2 * mtbf_s:
        return mtbf_s
    x = blocked_s / (2 * mtbf_s)
    return math.sqrt(2 * blocked_s * mtbf_s) * (1 + math.sqrt(x) / 3 + x / 9) - blocked_s


def min_steps(write_s: float, step_s: float, max_async: int, write_scaling: float = 1.0) -> int:
    """PCcheck's bound: with max_async checkpoints in flight, one every f >= T_w / (N q t) steps keeps up."""
    return max(1, math.ceil(write_s / (max_async * write_scaling * step_s) - 1e-9))


@dataclass(frozen=True)
class Inputs:
    step_s: float  # training step, seconds
    blocked_s: float  # training blocked per checkpoint, seconds
    write_s: float  # save() to durable, seconds
    mtbf_s: float  # mean time between failures of the job (per-node MTBF / nodes), seconds
    max_async: int = 1  # checkpoints in flight at once (N)
    write_scaling: float = 1.0  # q


@dataclass(frozen=True)
class Choice:
    steps: int  # checkpoint every this many steps
    optimum_s: float  # Young/Daly's compute time between checkpoints
    daly_steps: int  # the same in steps
    floor_steps: int  # PCcheck's minimum
    inputs: Inputs

    def describe(self) -> str:
        i = self.inputs
        bound = "the disk's bound" if self.floor_steps > self.daly_steps else "Young/Daly"
        lost = self.steps * i.step_s / 2 + i.write_s
        overhead = i.blocked_s / (self.steps * i.step_s)
        return (f"every {self.steps} steps ({_duration(self.steps * i.step_s)}), by {bound}: a checkpoint blocks "
                f"training {i.blocked_s:.4f} s and a failure comes every {_duration(i.mtbf_s)} (MTBF), so Young/Daly "
                f"gives {_duration(self.optimum_s)} = {self.daly_steps} steps of {i.step_s:.4f} s; a checkpoint is "
                f"durable {i.write_s:.3f} s after save(), so with {i.max_async} in flight the disk keeps up with one "
                f"every f >= T_w/(N q t) = {i.write_s:.3f}/({i.max_async} x {i.write_scaling:g} x {i.step_s:.4f}) -> "
                f"{self.floor_steps} steps; expected loss per failure {_duration(lost)} of training, overhead "
                f"{100 * overhead:.3g} %")


def choose(inputs: Inputs) -> Choice:
    """The interval in steps: Young/Daly's optimum, raised to PCcheck's minimum where the disk needs it."""
    optimum = daly_seconds(inputs.blocked_s, inputs.mtbf_s)
    daly_steps = max(1, round(optimum / inputs.step_s))
    floor = min_steps(inputs.write_s, inputs.step_s, inputs.max_async, inputs.write_scaling)
    return Choice(max(daly_steps, floor), optimum, daly_steps, floor, inputs)


def nodes_from_environment() -> int:
    try:
        return max(1, int(os.environ.get("SLURM_JOB_NUM_NODES", "1")))
    except ValueError:
        return 1


class AutoInterval:
    """`due(step)` by Young/Daly and PCcheck's bound, from the checkpointer's own measurements.

    The first step after start is checkpointed, to measure; WARMUP_STEPS later the first choice is made
    (waiting once for that checkpoint to be durable) and printed with its inputs; it is re-evaluated every
    RECHECK_STEPS steps and replaced, and printed again, when the measurements have drifted. Under
    torch.distributed every rank must call due() at every step (the inputs are agreed with an all-reduce, so
    every rank checkpoints at the same steps); `comm` defaults to a gloo group of its own.
    """

    def __init__(
        self,
        checkpointer: CheckpointerLike,
        *,
        mtbf_node_hours: float = DEFAULT_MTBF_NODE_HOURS,
        nodes: Optional[int] = None,
        write_scaling: float = 1.0,
        comm: Any = None,
    ) -> None:
        if mtbf_node_hours <= 0 or not 0 < write_scaling <= 1:
            raise ValueError("mtbf_node_hours must be positive and write_scaling in (0, 1]")
        self.checkpointer = checkpointer
        self.nodes = nodes or nodes_from_environment()
        self.mtbf_s = mtbf_node_hours * 3600 / self.nodes
        self.write_scaling = write_scaling
        if comm is None:
            from .loop import _coordination

            comm = _coordination()
        self.comm = comm
        self.choice: Optional[Choice] = None
        self._first: Optional[int] = None
        self._last_saved = 0
        self._last_eval = 0
        self._last_call: Optional[float] = None
        self._step_times: deque[float] = deque(maxlen=32)  # recent samples; the medians are the inputs
        self._blocked: deque[float] = deque(maxlen=8)
        self._writes: deque[float] = deque(maxlen=8)

    def due(self, step: int) -> bool:
        now = time.monotonic()
        if self._last_call is not None:
            self._step_times.append(now - self._last_call)
        self._last_call = now
        self._sample()
        if self._first is None:  # measure first
            self._first = self._last_saved = step
            return True
        if self.choice is None:
            if step - self._first < WARMUP_STEPS:
                return False
            self.checkpointer.wait()  # the first checkpoint's write time is an input
            self._evaluate(step)
        elif step - self._last_eval >= RECHECK_STEPS:
            self._evaluate(step)
        assert self.choice is not None
        if step - self._last_saved >= self.choice.steps:
            self._last_saved = step
            return True
        return False

    def _sample(self) -> None:
        """Notes the newest checkpoint's blocked and write times when they are new."""
        ck = self.checkpointer
        write = ck.durable_seconds()
        if write is None or (self._writes and self._writes[-1] == write):
            return
        self._writes.append(write)
        blocked_of = getattr(ck, "blocked_seconds", None)  # a synchronous checkpointer blocks until durable
        blocked = blocked_of() if blocked_of is not None else write
        self._blocked.append(write if blocked is None else blocked)

    def inputs(self) -> Inputs:
        """The measurements now, as medians of the recent samples (the same on every rank: the slowest rank's)."""
        self._sample()
        values = [statistics.median(xs) if xs else 0.0 for xs in (self._step_times, self._blocked, self._writes)]
        if self.comm.distributed:
            values = self.comm.allreduce_f64(values, "max")
        step, blocked, write = values
        return Inputs(step_s=max(step, 1e-6), blocked_s=blocked, write_s=write, mtbf_s=self.mtbf_s,
                      max_async=int(getattr(self.checkpointer, "max_async", 1)), write_scaling=self.write_scaling)

    def _evaluate(self, step: int) -> None:
        self._last_eval = step
        new = choose(self.inputs())
        old = self.choice
        if old is not None and abs(new.steps - old.steps) <= DRIFT * old.steps:
            return
        self.choice = new
        if self.comm.rank == 0:
            what = "checkpoint interval" if old is None else f"checkpoint interval re-evaluated (was every {old.steps} steps)"
            log.info("%s at step %d: %s (MTBF %s = %s per node / %d node%s)", what, step, new.describe(),
                     _duration(self.mtbf_s), _duration(self.mtbf_s * self.nodes), self.nodes, "s" if self.nodes > 1 else "")


def from_flag(value: Union[int, str], checkpointer: CheckpointerLike, **auto: Any) -> Interval:
    """`--checkpoint-freq`: an integer N (every N steps) or "auto" (AutoInterval with `auto` as its options)."""
    return AutoInterval(checkpointer, **auto) if value == "auto" else Every(int(value))


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600.0), ("min", 60.0), ("s", 1.0)):
        if seconds >= size:
            value = seconds / size
            return f"{value:.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{seconds:.3g} s"
