"""The job wrapper's decisions (pccheck.launcher.policy), as pure functions: no processes, no Slurm."""
from __future__ import annotations

import pytest

from pccheck.contract import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE, EXIT_USAGE
from pccheck.launcher.policy import Observed, classify, decide, starts_without_progress


def observed(**kw) -> Observed:
    base = dict(exit_code=EXIT_REQUEUE, stop_requested=True, killed_at_limit=False, reported_stopped=True,
                committed_before=10, committed_after=20)
    base.update(kw)
    return Observed(**base)


def test_start_guard_counts_the_latest_starts_without_a_new_commit():
    assert starts_without_progress([None]) == 0
    assert starts_without_progress([None, None, None]) == 2
    assert starts_without_progress([None, 50, 50]) == 1
    assert starts_without_progress([50, 50, 60]) == 0  # progress resets the count


@pytest.mark.parametrize("left, kind", [(100.0, "timeout"), (170.0, "timeout"), (181.0, "preemption"), (3600.0, "preemption")])
def test_signal_is_a_timeout_only_near_the_end_time(left, kind):
    # lead 90 s + Slurm's timer slack 90 s: a signal more than 180 s before the end cannot be the time limit
    got, how = classify("signal", "SIGTERM", received_at=1000.0, end_time=1000.0 + left, lead_s=90.0)
    assert got == kind and f"{left:.0f} s before the time limit" in how


def test_classify_without_end_time_and_deadline():
    assert classify("signal", "SIGUSR2", 1.0, None, 90.0)[0] == "timeout"  # the warning signal
    assert classify("signal", "SIGTERM", 1.0, None, 90.0)[0] == "preemption"
    assert classify("deadline", None, None, 5.0, 90.0) == ("timeout", "deadline")
    assert classify("none", None, None, None, 90.0)[0] == "timeout"  # the command's own deadline check


def test_completed_and_failures():
    assert decide(observed(exit_code=EXIT_OK), "timeout", 0, 3, "--max-requeues").action == "completed"
    crash = decide(observed(exit_code=1, stop_requested=False, reported_stopped=False), "timeout", 0, 3, "--max-requeues")
    assert (crash.action, crash.exit_code) == ("failed", EXIT_FAILURE) and "exit 1" in crash.reason
    killed = decide(observed(exit_code=-9, stop_requested=False, reported_stopped=False), "timeout", 0, 3, "--max-requeues")
    assert killed.action == "failed" and "killed by signal 9" in killed.reason
    usage = decide(observed(exit_code=EXIT_USAGE), "timeout", 0, 3, "--max-requeues")
    assert (usage.action, usage.exit_code) == ("failed", EXIT_USAGE)


def test_requeue_needs_progress_and_budget():
    assert decide(observed(), "timeout", 0, 3, "--max-requeues").action == "requeue"
    none = decide(observed(committed_after=10), "timeout", 0, 3, "--max-requeues")
    assert none.action == "stopped" and "no progress" in none.reason
    first = decide(observed(committed_before=None, committed_after=5), "timeout", 0, 3, "--max-requeues")
    assert first.action == "requeue"
    spent = decide(observed(), "preemption", 3, 3, "--max-preemptions")
    assert spent.action == "stopped" and "--max-preemptions 3" in spent.reason and spent.exit_code == EXIT_REQUEUE


def test_a_stop_is_recognized_without_exit_75():
    # torchrun exits 1 when its workers exit 75: the helper's "stopped" report counts
    assert decide(observed(exit_code=1), "timeout", 0, 3, "f").action == "requeue"
    # killed at the hard limit (by the wrapper or by Slurm) after a request: what it committed counts
    assert decide(observed(exit_code=-9, reported_stopped=False, killed_at_limit=True), "timeout", 0, 3, "f").action == "requeue"
    # ... and without progress it is a stop for good, not a failure: it did not crash, it ran out of time
    late = decide(observed(exit_code=-9, reported_stopped=False, killed_at_limit=True, committed_after=10), "timeout", 0, 3, "f")
    assert (late.action, late.exit_code) == ("stopped", EXIT_REQUEUE) and "no progress" in late.reason
    # ... but not without a stop request: that is a crash
    assert decide(observed(exit_code=1, stop_requested=False), "timeout", 0, 3, "f").action == "failed"
    # ... nor without a report or progress
    assert decide(observed(exit_code=1, reported_stopped=False, committed_after=10), "timeout", 0, 3, "f").action == "failed"
