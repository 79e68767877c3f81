"""Helpers for a training loop of your own: the stop protocol of docs/jobs.md, at step boundaries.

    ckpt = pccheck.Checkpointer(pccheck.checkpoint_dir())
    stop = pccheck.StopRequest(ckpt, total_steps=steps)
    interval = pccheck.AutoInterval(ckpt)  # or pccheck.Every(50)
    for step in range(start + 1, steps + 1):
        train_step()
        if interval.due(step):
            ckpt.save(step, state(step))
        if stop.check(step):              # a signal or the deadline; the same answer on every rank
            stop.exit(step, state(step))  # checkpoint (unless this step is saved), wait until durable, exit 75
    stop.completed(steps)

Signal handlers only set a flag; the decision is taken here, in the main thread, at a step boundary
(saving inside a handler can hang or save a half-updated step). With torch.distributed initialised, the
ranks agree with one small all-reduce per check on a gloo group of their own (never the training group,
never from a background thread), so every rank stops at the same step. Rank 0 reports the step, the
step and checkpoint times and the last committed step to PCCHECK_STATUS_FILE, which pccheck-submit's
job wrapper reads for its own deadline check and its progress decision.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, NoReturn, Optional

from . import contract
from .checkpointing import CheckpointerLike
from .status import StatusFile
from .stopping import AnyStop, DeadlineStop, EndTime, SignalStop, ignore_stop_signals

log = logging.getLogger("pccheck.loop")
_FROM_ENV = "from-environment"


class StopRequest:
    """Asked at every step boundary whether to stop; `exit` checkpoints, waits until durable and exits 75.

    `checkpointer`: the one whose saves `exit` completes and whose save-to-durable time the deadline
    check uses (None on ranks that do not save, e.g. DDP ranks > 0). `total_steps`: reported only.
    `every`: with several ranks, agree every `every` steps (a signal waits at most that long).
    `end_time`, `margin_s`: override PCCHECK_END_TIME and PCCHECK_DEADLINE_MARGIN. Under
    torch.distributed every rank must construct it at the same point (it creates a process group).
    """

    def __init__(
        self,
        checkpointer: Optional[CheckpointerLike] = None,
        *,
        total_steps: Optional[int] = None,
        every: int = 1,
        status_file: Optional[str] = _FROM_ENV,
        end_time: EndTime = None,
        margin_s: Optional[float] = None,
    ) -> None:
        if every < 1:
            raise ValueError("every must be at least 1")
        self.checkpointer = checkpointer
        self.total_steps = total_steps
        self.every = every
        self.signals = SignalStop()
        self.deadline = DeadlineStop(end_time=end_time, margin_s=margin_s)
        self.policy = AnyStop(self.signals, self.deadline)
        self.comm = _coordination()
        path = os.environ.get(contract.STATUS_FILE) if status_file == _FROM_ENV else status_file
        self.status = StatusFile(Path(path) if path and self.comm.rank == 0 else None)
        self.reason: Optional[str] = None
        self.step_seconds = 0.0
        self._last_check: Optional[float] = None

    @property
    def checkpoint_seconds(self) -> float:
        seconds = self.checkpointer.durable_seconds() if self.checkpointer is not None else None
        return seconds or 0.0

    def check(self, step: int) -> Optional[str]:
        """None to go on, else why to stop now (the same answer on every rank). Call it once per step."""
        now = time.monotonic()
        if self._last_check is not None:
            dt = now - self._last_check
            self.step_seconds = dt if self.step_seconds == 0 else 0.8 * self.step_seconds + 0.2 * dt
        self._last_check = now
        reason = self.policy.check(self.step_seconds, self.checkpoint_seconds)
        if self.comm.distributed:
            if step % self.every:
                self._report("running", step)
                return None
            (anyone,) = self.comm.allreduce_f64([0.0 if reason is None else 1.0], "max")
            if anyone:
                reasons = self.comm.allgather_json(reason)  # only when stopping: who and why
                first = next(i for i, r in enumerate(reasons) if r is not None)
                reason = reason if reason is not None else f"rank {first}: {reasons[first]}"
        if reason is None:
            self._report("running", step)
            return None
        self.reason = reason
        self._report("stopping", step, force=True)
        log.info("stopping after step %d: %s", step, reason)
        return reason

    def exit(self, step: int, state: Optional[Mapping[str, Any]] = None) -> NoReturn:
        """stopped(step, state), then exit 75: "stopped after a durable checkpoint, requeue me"."""
        self.stopped(step, state)
        sys.exit(contract.EXIT_REQUEUE)

    def stopped(self, step: int, state: Optional[Mapping[str, Any]] = None) -> Optional[int]:
        """Checkpoints `step` (unless it was the last step saved), waits until it is durable on every rank,
        reports "stopped" and ignores further stop signals; returns the last committed step."""
        ckpt = self.checkpointer
        committed: Optional[int] = None
        if ckpt is not None:
            if ckpt.last_saved_step != step:
                if state is None:
                    raise ValueError(f"stopping at step {step} needs the state: step {step} was not saved")
                ckpt.save(step, state)
            ckpt.wait()
            committed = ckpt.last_committed_step()
        if self.comm.distributed:  # every rank durable before any reports or exits
            (newest,) = self.comm.allreduce_f64([-1.0 if committed is None else float(committed)], "max")
            committed = None if newest < 0 else int(newest)
        self._report("stopped", step, committed, force=True)
        log.info("stopped after step %d (%s); checkpoint at step %s is durable", step, self.reason, committed)
        ignore_stop_signals()  # decided: a late warning signal must not turn exit 75 into a kill
        sys.stdout.flush()
        sys.stderr.flush()
        return committed

    def completed(self, step: int) -> None:
        """Reports that training is done (after the last checkpoint is durable); later stop signals are ignored."""
        committed = None
        if self.checkpointer is not None:
            self.checkpointer.wait()
            committed = self.checkpointer.last_committed_step()
        self._report("completed", step, committed, force=True)
        ignore_stop_signals()

    def _report(self, state: str, step: int, committed: Optional[int] = None, force: bool = False) -> None:
        if not self.status.due(force):  # rate-limited: nothing below runs on every step
            return
        if committed is None and self.checkpointer is not None:
            committed = self.checkpointer.last_committed_step()
        self.status.update(
            force=force, state=state, step=step, total_steps=self.total_steps, last_committed_step=committed,
            step_seconds=self.step_seconds, checkpoint_seconds=self.checkpoint_seconds, stop_reason=self.reason,
            pid=os.getpid(),
        )


def _coordination() -> "Any":
    """A Comm on a gloo group of its own when torch.distributed is initialised, else the 1-process stand-in."""
    from .distributed import Comm

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return Comm.single()
    return Comm(dist.get_rank(), dist.get_world_size(), dist.new_group(backend="gloo"))
