"""The job wrapper's decisions, as pure functions of what it observed (unit-tested without Slurm).

- start guard: a run of restarts that commit nothing is a loop (a crash at start, a kill before the first
  checkpoint): the job refuses to train again;
- timeout or preemption: told apart by the job's end time, not by elapsed time, because they are counted
  against separate budgets;
- the outcome of one start: completed, requeue, stopped for good, or failed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from pccheck.contract import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE, EXIT_USAGE

#: consecutive starts without a new committed checkpoint before the job refuses to train again
MAX_STARTS_WITHOUT_PROGRESS = 2
#: a stop signal this close to the end time (lead + Slurm's 30-60 s timer slack) is a time-limit stop
TIMER_SLACK_S = 90.0


def starts_without_progress(committed_at_starts: Sequence[Optional[int]]) -> int:
    """How many of the latest starts began at the same committed step as the start before them."""
    stuck = 0
    for a, b in zip(committed_at_starts, committed_at_starts[1:]):
        stuck = stuck + 1 if a == b else 0
    return stuck


def classify(trigger: str, signal_name: Optional[str], received_at: Optional[float], end_time: Optional[float],
             lead_s: float) -> tuple[str, str]:
    """("timeout" | "preemption", how the stop came about).

    `trigger`: "deadline" (the job's own end-time check), "signal", or "none" (the command stopped by
    itself, e.g. its own deadline check).
    """
    if trigger in ("deadline", "none"):
        return "timeout", "deadline" if trigger == "deadline" else "the command's own deadline check"
    sig = signal_name or "?"
    if end_time is not None and received_at is not None:
        left = end_time - received_at
        kind = "timeout" if left <= lead_s + TIMER_SLACK_S else "preemption"
        return kind, f"{sig} {left:.0f} s before the time limit"
    return ("timeout" if signal_name == "SIGUSR2" else "preemption"), f"{sig} (no known end time)"


@dataclass(frozen=True)
class Observed:
    """What one start of the command came to."""

    exit_code: int  # the command's exit status; negative: killed by that signal
    stop_requested: bool  # a stop was asked for during this start (signal, deadline)
    killed_at_limit: bool  # it did not stop in time and the wrapper killed its process tree
    reported_stopped: bool  # the loop helper reported "stopped" (its checkpoint durable)
    committed_before: Optional[int]  # newest committed step when this start began
    committed_after: Optional[int]  # ... when it ended

    @property
    def progressed(self) -> bool:
        return self.committed_after is not None and (
            self.committed_before is None or self.committed_after > self.committed_before)


@dataclass(frozen=True)
class Decision:
    action: str  # "completed" | "requeue" | "stopped" (for good, with a durable checkpoint) | "failed"
    exit_code: int
    reason: str


def stopped(o: Observed) -> bool:
    """Exit 75; or, after a stop request, any other end (but 0 and 2) of a command that reported its stop,
    committed progress or was killed at the hard limit: torchrun exits 1 when its workers exit 75, and a
    command killed at the hard limit (by the wrapper or by Slurm) did not crash and keeps what it committed."""
    if o.exit_code == EXIT_REQUEUE:
        return True
    if o.exit_code in (EXIT_OK, EXIT_USAGE) or not o.stop_requested:
        return False
    return o.reported_stopped or o.progressed or o.killed_at_limit


def decide(o: Observed, kind: str, requeues_used: int, budget: int, budget_flag: str) -> Decision:
    """The outcome of a start; `requeues_used` of `budget` are spent for this kind of stop."""
    if o.exit_code == EXIT_OK:
        return Decision("completed", EXIT_OK, "the command completed")
    if not stopped(o):
        if o.exit_code == EXIT_USAGE:
            return Decision("failed", EXIT_USAGE, "the command reported a user error (exit 2); not requeued")
        what = f"killed by signal {-o.exit_code}" if o.exit_code < 0 else f"exit {o.exit_code}"
        return Decision("failed", EXIT_FAILURE, f"the command failed ({what}); not requeued")
    if not o.progressed:
        return Decision("stopped", EXIT_REQUEUE,
                        f"no progress: this start committed no checkpoint beyond step {o.committed_before}; not requeueing")
    if requeues_used >= budget:
        return Decision("stopped", EXIT_REQUEUE,
                        f"requeue budget spent: {requeues_used} {kind} requeue(s) already used ({budget_flag} {budget}); "
                        f"checkpoint at step {o.committed_after} is durable; submit again with the same --name to continue")
    return Decision("requeue", EXIT_REQUEUE,
                    f"stopped with a durable checkpoint at step {o.committed_after} ({budget - requeues_used - 1} "
                    f"{kind} requeue(s) left after this one)")
