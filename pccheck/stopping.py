"""When to stop at a step boundary: the trainer asks a StopPolicy after every step.

Signal handlers only set a flag (saving inside a handler can hang or capture a half-updated step);
the trainer then checkpoints at the next step boundary, waits until durable, and exits for requeue.

Two reasons to stop are built in:
- SignalStop: the stop signal (PCCHECK_STOP_SIGNAL, default SIGUSR2: Slurm's `--signal=USR2@lead` and
  pccheck-submit's stop request) and SIGTERM (time limit, preemption, scancel).
- DeadlineStop: the job knows its own end time (PCCHECK_END_TIME from pccheck-submit, SLURM_JOB_END_TIME
  on Slurm >= 23.02, else `squeue -h -j $SLURM_JOB_ID -o %e`) and stops by itself when the time left
  drops below the measured checkpoint time + one step + a margin. Slurm checks time limits and
  `--signal` only every 30-60 s, so the warning signal can come late or early; the deadline does not.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from datetime import datetime
from types import FrameType
from typing import Callable, Iterable, Optional, Protocol, Union

from . import contract

log = logging.getLogger("pccheck.stopping")


class StopPolicy(Protocol):
    def check(self, step_seconds: float, checkpoint_seconds: float) -> Optional[str]:
        """None to go on; otherwise the reason to checkpoint and stop now."""


def stop_signals() -> tuple[signal.Signals, ...]:
    """The stop signal of the contract (PCCHECK_STOP_SIGNAL, default SIGUSR2) and SIGTERM."""
    return tuple(dict.fromkeys((contract.stop_signal(), signal.SIGTERM)))


def ignore_stop_signals(signals: Optional[Iterable[signal.Signals]] = None) -> None:
    """Once the outcome is decided (done, or stopped with a durable checkpoint), ignore further stop signals.

    Python's finalization resets every Python-level handler to SIG_DFL, so a USR2 that Slurm sends
    (up to a minute early or late) while the process exits would kill it by signal and turn "stopped,
    requeue me" (75) into a failed job. SIG_IGN survives finalization; Slurm's SIGKILL still ends a hang.
    """
    for sig in stop_signals() if signals is None else signals:
        signal.signal(sig, signal.SIG_IGN)


class SignalStop:
    """Turns the listed signals (default: the stop signal and SIGTERM, see stop_signals) into a flag.

    The handler only records the first signal and when it came (`received`, `received_at`, wall clock);
    later signals are counted in `count` and otherwise ignored (Slurm sends SIGCONT+SIGTERM, srun
    forwards, requeue kills follow a stop: none of them may interrupt the checkpoint in progress).
    """

    def __init__(self, signals: Optional[Iterable[signal.Signals]] = None) -> None:
        self.received: Optional[signal.Signals] = None
        self.received_at: Optional[float] = None
        self.count = 0
        self.signals = stop_signals() if signals is None else tuple(signals)
        self.install()

    def install(self) -> None:
        """(Re)installs the handlers, e.g. after a library replaced them."""
        for sig in self.signals:
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Optional[FrameType]) -> None:
        self.count += 1
        if self.received is None:
            self.received_at = time.time()
            self.received = signal.Signals(signum)

    def check(self, step_seconds: float, checkpoint_seconds: float) -> Optional[str]:
        return f"received {self.received.name}" if self.received is not None else None


# ----------------------------------------------------------------------------------------------- deadline


def _parse_slurm_time(text: str) -> Optional[float]:
    """Slurm prints times as local `YYYY-MM-DDTHH:MM:SS`; also accepts epoch seconds."""
    text = text.strip()
    if not text or text.upper() in ("N/A", "UNKNOWN", "NONE", "INVALID"):
        return None
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text).timestamp()  # naive = local time, as Slurm prints it
    except ValueError:
        return None


def squeue_end_time(job_id: str, timeout_s: float = 10.0) -> Optional[float]:
    """The job's end time from `squeue -h -j ID -o %e` (works on every Slurm version), or None."""
    exe = shutil.which("squeue")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-h", "-j", str(job_id), "-o", "%e"], capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    lines = out.stdout.strip().splitlines()
    return _parse_slurm_time(lines[0]) if lines else None


def job_end_time(environ: Optional[dict] = None, query_squeue: bool = True) -> tuple[Optional[float], str]:
    """(end time as epoch seconds or None, where it came from).

    Order: PCCHECK_END_TIME (set by pccheck-submit's job wrapper, or by hand; "none": no deadline),
    SLURM_JOB_END_TIME (Slurm >= 23.02), `squeue -o %e` for SLURM_JOB_ID.
    """
    env = os.environ if environ is None else environ
    if env.get(contract.END_TIME, "").strip().lower() == contract.NO_END_TIME:
        return None, contract.END_TIME  # the job wrapper says: stop on signals only
    for name in (contract.END_TIME, "SLURM_JOB_END_TIME"):
        value = _parse_slurm_time(env.get(name, ""))
        if value is not None and value > 0:
            return value, name
    job_id = env.get("SLURM_JOB_ID")  # unique per array task too
    if job_id and query_squeue:
        value = squeue_end_time(job_id)
        if value is not None:
            return value, "squeue"
    return None, "none"


EndTime = Union[None, float, Callable[[], Optional[float]]]


class DeadlineStop:
    """Stops when `end - now < checkpoint_seconds + step_seconds + margin_s`.

    `end_time`: a number (epoch seconds), a callable returning one (or None when unknown), or None to
    read it from the environment (see `job_end_time`). A callable/environment source is re-read every
    `refresh_s` seconds, so `scontrol update TimeLimit=...` during the job is noticed. Before the first
    checkpoint has been measured, `min_checkpoint_s` stands in for the checkpoint time.
    """

    def __init__(
        self,
        end_time: EndTime = None,
        margin_s: Optional[float] = None,
        refresh_s: float = 300.0,
        min_checkpoint_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if margin_s is None:
            margin_s = float(os.environ.get(contract.DEADLINE_MARGIN, contract.DEFAULT_DEADLINE_MARGIN_S))
        self.margin_s = margin_s
        self.refresh_s = refresh_s
        self.min_checkpoint_s = min_checkpoint_s
        self.clock = clock
        self.source = "given"
        if end_time is None:
            self._get: Callable[[], Optional[float]] = self._from_environment
        elif callable(end_time):
            self._get = end_time
        else:
            fixed = float(end_time)
            self._get = lambda: fixed
            self.refresh_s = float("inf")
        self._end: Optional[float] = None
        self._read_at: Optional[float] = None
        self.last_left: Optional[float] = None
        self.last_needed: Optional[float] = None

    def _from_environment(self) -> Optional[float]:
        end, self.source = job_end_time()
        return end

    @property
    def end_time(self) -> Optional[float]:
        now = time.monotonic()
        if self._read_at is None or now - self._read_at >= self.refresh_s:
            self._read_at = now
            try:
                self._end = self._get()
            except Exception as exc:  # never let a failed query stop training
                log.warning("could not read the job's end time: %s", exc)
                self._end = None
            if self._end is not None:
                log.info(
                    "job end time %s (from %s): %.0f s left",
                    datetime.fromtimestamp(self._end).isoformat(timespec="seconds"),
                    self.source,
                    self._end - self.clock(),
                )
        return self._end

    def needed(self, step_seconds: float, checkpoint_seconds: float) -> float:
        return max(checkpoint_seconds, self.min_checkpoint_s) + max(step_seconds, 0.0) + self.margin_s

    def check(self, step_seconds: float, checkpoint_seconds: float) -> Optional[str]:
        end = self.end_time
        if end is None:
            return None
        left = end - self.clock()
        need = self.needed(step_seconds, checkpoint_seconds)
        self.last_left, self.last_needed = left, need
        if left < need:
            return (
                f"deadline: {left:.1f} s left before the time limit, a stop needs {need:.1f} s "
                f"(checkpoint {max(checkpoint_seconds, self.min_checkpoint_s):.2f} s + step {step_seconds:.2f} s "
                f"+ margin {self.margin_s:.0f} s)"
            )
        return None


class AnyStop:
    """Stops on the first policy that gives a reason; `fired` is that policy (None while running)."""

    def __init__(self, *policies: StopPolicy) -> None:
        self.policies = [p for p in policies if p is not None]
        self.fired: Optional[StopPolicy] = None

    def check(self, step_seconds: float, checkpoint_seconds: float) -> Optional[str]:
        for policy in self.policies:
            reason = policy.check(step_seconds, checkpoint_seconds)
            if reason is not None:
                self.fired = policy
                return reason
        return None

    def find(self, kind: type) -> Optional[StopPolicy]:
        return next((p for p in self.policies if isinstance(p, kind)), None)
