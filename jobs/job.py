"""What runs inside the Slurm (or local) job: train, stop at a step boundary, checkpoint, requeue.

The order of things on a warning signal (submitit's USR2, `--signal=USR2@lead`), on SIGTERM (time
limit, preemption, scancel) or when the job's own deadline comes near:
  1. the signal handler only sets a flag (pccheck.stopping.SignalStop); nothing is saved in a handler;
  2. the trainer finishes the current step, checkpoints at that step boundary and waits until the
     checkpoint is durable, then returns "stopped" (pccheck.train.run);
  3. only now this wrapper decides: requeue (same Slurm job id, `scontrol requeue`), or resubmit a
     dependent job when requeue is refused or missing, or stop for good (no progress since the
     restart, or the budget for this kind of interruption is spent) and say why;
  4. the restarted job runs the same wrapper, which resumes with --load-checkpoint.
Time-limit stops and preemptions are told apart by the job's end time (not by elapsed time) and
counted against separate budgets (--max-requeues, --max-preemptions).

Lifecycle records go to <run dir>/events.jsonl; pccheck-submit --wait follows them.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import submitit

from pccheck.stopping import AnyStop, DeadlineStop, SignalStop, ignore_stop_signals

from . import slurm
from .rundir import RunDir, iter_starts

log = logging.getLogger("pccheck.jobs")

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_REQUEUE = 0, 1, 2, 75
LOCAL_REQUEUE_RETURN_CODE = 144  # submitit's LocalExecutor restarts a task that exits with this
#: a USR2/SIGTERM this close to the end time (lead + Slurm's 30-60 s timer slack) is a time-limit stop
TIMER_SLACK_S = 90.0
#: consecutive starts without a new committed checkpoint before the job refuses to train again
MAX_STARTS_WITHOUT_PROGRESS = 2


@dataclass
class JobSpec:
    name: str
    run_dir: str
    submission: str  # id of one pccheck-submit call; budgets and records are per submission
    trainer_argv: list[str]
    executor: str = "slurm"  # "slurm" | "local"
    max_requeues: int = 10  # requeues after time-limit stops
    max_preemptions: int = 20  # requeues after preemption / scancel / scontrol requeue
    signal_lead_s: float = 90.0
    deadline: bool = True
    deadline_margin_s: Optional[float] = None
    time_limit_s: Optional[float] = None  # local executor: the emulated limit
    extra: dict[str, Any] = field(default_factory=dict)


class _JobFinished(Exception):
    """Raised to end the job with a failure that submitit records (job.result() raises it)."""


class TrainingJob(submitit.helpers.Checkpointable):
    """The submitit callable. `checkpoint()` is only reached if a signal lands in the few
    milliseconds before __call__ installs its own handlers: nothing has been trained then, so the job
    is requeued as it is (the start guard stops a loop of such restarts)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict:
        return run_job(self.spec)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        log.warning("signal before training started: requeueing without a new checkpoint")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


# --------------------------------------------------------------------------------------- environment


def _process_start_time() -> float:
    """Wall-clock start of this process (from /proc/self/stat and /proc/uptime, ~10 ms), else now."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class JobEnv:
    kind: str  # "slurm" | "local" | "none"
    job_id: str
    rank: int
    restart_count: int
    process_start: float

    @classmethod
    def detect(cls) -> "JobEnv":
        start = _process_start_time()
        executor = os.environ.get("SUBMITIT_EXECUTOR", "")
        if executor == "local" or "SUBMITIT_LOCAL_JOB_ID" in os.environ:
            return cls("local", os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?"),
                       int(os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0")), -1, start)
        if "SLURM_JOB_ID" in os.environ:
            return cls("slurm", os.environ["SLURM_JOB_ID"], int(os.environ.get("SLURM_PROCID", "0")),
                       int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0), start)
        return cls("none", str(os.getpid()), 0, 0, start)


def _setup_logging(rd: RunDir) -> None:
    root = logging.getLogger("pccheck")  # the trainer logs under pccheck.train; submitit has its own
    root.setLevel(logging.INFO)
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s [pccheck] %(message)s", "%Y-%m-%d %H:%M:%S")
    have = {getattr(h, "_pccheck", None) for h in root.handlers}
    if "file" not in have:
        fh = logging.FileHandler(rd.log_file, mode="a")
        fh.setFormatter(fmt)
        fh._pccheck = "file"  # type: ignore[attr-defined]
        root.addHandler(fh)
    if "stream" not in have:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        sh._pccheck = "stream"  # type: ignore[attr-defined]
        root.addHandler(sh)


class _Recorder:
    """Wraps the stop policy: notes when the first step after (re)start finished and when a stop fired."""

    def __init__(self, policy: AnyStop, on_first_step) -> None:
        self.policy = policy
        self.first_step_at: Optional[float] = None
        self.stop_at: Optional[float] = None
        self._on_first_step = on_first_step

    def check(self, step_seconds: float, checkpoint_seconds: float) -> Optional[str]:
        if self.first_step_at is None:
            self.first_step_at = time.time()
            self._on_first_step(self.first_step_at, step_seconds)
        reason = self.policy.check(step_seconds, checkpoint_seconds)
        if reason is not None and self.stop_at is None:
            self.stop_at = time.time()
        return reason


# ------------------------------------------------------------------------------------------------ job


def run_job(spec: JobSpec) -> dict:
    # First of all: our handlers replace submitit's (which would checkpoint and requeue inside the
    # handler, in the middle of a step).
    signals = SignalStop()
    fn_start = time.time()
    env = JobEnv.detect()
    rd = RunDir(spec.run_dir).create()
    _setup_logging(rd)
    events = rd.events(spec.submission)
    starts = list(iter_starts(events))
    status = rd.read_status()
    committed_before = status.get("last_committed_step")
    run_index = len(starts)
    common = dict(submission=spec.submission, job_id=env.job_id, run=run_index)

    if env.rank != 0:
        # Only rank 0 keeps records and requeues; other ranks train and stop on the same signals.
        return _run_other_rank(spec, signals)

    end_time, end_source = _end_time(spec, env)
    rd.append_event(
        "start", **common, executor=env.kind, host=socket.gethostname(), restart_count=env.restart_count,
        process_start=env.process_start, fn_start=fn_start, committed_before=committed_before,
        end_time=end_time, end_source=end_source, pid=os.getpid(),
    )
    log.info(
        "run %s, job %s (%s), start #%d%s; newest committed step %s; %s",
        spec.name, env.job_id, env.kind, run_index,
        f" (Slurm restart count {env.restart_count})" if env.kind == "slurm" else "",
        committed_before, f"time limit in {end_time - time.time():.0f} s ({end_source})" if end_time else "no known time limit",
    )

    finals = [e for e in events if e.get("event") == "final"]
    if finals:
        # This submission already ended (e.g. Slurm requeued it after a preemption we refused to follow).
        why = finals[-1].get("reason", "")
        log.warning("this submission already ended (%s): not training again", why)
        rd.append_event("refused", **common, reason=f"submission already ended: {why}")
        sys.exit(int(finals[-1].get("exit_code", EXIT_FAILURE)))

    # Start guard: a run of restarts that commit nothing is a loop (crash at start, kill before the
    # first checkpoint...): stop it here, whatever requeued us.
    commits = [s.get("committed_before") for s in starts] + [committed_before]
    stuck = 0
    for a, b in zip(commits, commits[1:]):
        stuck = stuck + 1 if a == b else 0
    if stuck >= MAX_STARTS_WITHOUT_PROGRESS:
        _finish(rd, common, "stopped", EXIT_REQUEUE,
                f"no progress: the last {stuck} starts committed no new checkpoint "
                f"(newest committed step stays {committed_before}); not training again to avoid a requeue loop")

    deadline = None
    if spec.deadline:
        if env.kind == "slurm" and end_source == "squeue":
            getter = lambda: slurm_end_time(env.job_id)  # noqa: E731  (re-read every 5 min)
        else:
            getter = lambda: end_time  # noqa: E731
        deadline = DeadlineStop(end_time=getter, margin_s=spec.deadline_margin_s)
        deadline.source = end_source
    policy = AnyStop(signals, deadline) if deadline is not None else AnyStop(signals)

    def first_step(at: float, step_seconds: float) -> None:
        rd.append_event("first_step", **common, since_process_start=at - env.process_start, step_seconds=step_seconds)

    recorder = _Recorder(policy, first_step)
    argv = list(spec.trainer_argv)
    _ensure_checkpoint_dir(argv)

    from pccheck import train  # torch is imported here, after the handlers are in place
    from pccheck.errors import UserError

    try:
        result = train.run(argv, stop=recorder)
    except UserError as exc:
        _finish(rd, common, "failed", EXIT_USAGE, f"user error: {exc}")
    except Exception as exc:  # a crash: never requeued (a crash at start would loop)
        log.error("training crashed:\n%s", traceback.format_exc())
        _finish(rd, common, "failed", EXIT_FAILURE, f"training crashed: {type(exc).__name__}: {exc}")
    finally:
        ignore_stop_signals()  # the outcome is decided: a late USR2/TERM must not kill the exit
    stopped_at = time.time()

    if result.status == "completed":
        _finish(rd, common, "completed", EXIT_OK, f"completed {result.step} steps",
                step=result.step, last_committed_step=result.last_committed_step)
        return {"status": "completed", "step": result.step, "last_committed_step": result.last_committed_step}

    # ------------------------------------------------------------------------------ stopped: why?
    kind, how = _classify(recorder, signals, deadline, end_time, spec.signal_lead_s)
    progressed = result.last_committed_step is not None and (
        result.resumed_from is None or result.last_committed_step > result.resumed_from)
    used = sum(1 for e in events if e.get("event") == "requeue" and e.get("kind") == kind)
    budget = spec.max_requeues if kind == "timeout" else spec.max_preemptions
    stop_record = dict(
        common, kind=kind, trigger=how, reason=result.reason, step=result.step,
        last_committed_step=result.last_committed_step, resumed_from=result.resumed_from,
        signal=signals.received.name if signals.received else None, signal_at=signals.received_at,
        stop_at=recorder.stop_at, stopped_at=stopped_at, end_time=end_time,
    )
    rd.append_event("stop", **stop_record)
    log.info("stopped after step %d (%s; counted as %s); checkpoint at step %s is durable",
             result.step, result.reason, kind, result.last_committed_step)

    if not progressed:
        _finish(rd, common, "stopped", EXIT_REQUEUE,
                f"no progress: this start committed no checkpoint beyond step {result.resumed_from}; not requeueing")
    if used >= budget:
        flag = "--max-requeues" if kind == "timeout" else "--max-preemptions"
        _finish(rd, common, "stopped", EXIT_REQUEUE,
                f"requeue budget spent: {used} {kind} requeue(s) already used ({flag} {budget}); "
                f"stopped at step {result.step}, checkpoint at step {result.last_committed_step} is durable; "
                f"submit again with the same --name to continue")

    _requeue(spec, env, rd, common, kind, used, budget, result)
    raise AssertionError("unreachable")


def slurm_end_time(job_id: str) -> Optional[float]:
    from pccheck.stopping import squeue_end_time

    return squeue_end_time(job_id)


def _end_time(spec: JobSpec, env: JobEnv) -> tuple[Optional[float], str]:
    from pccheck.stopping import job_end_time

    if env.kind == "local" and spec.time_limit_s:
        # submitit's local controller starts its timer when it starts this process
        return env.process_start + spec.time_limit_s, "local time limit"
    if env.kind == "slurm":
        return job_end_time()
    end, source = job_end_time(query_squeue=False)
    return end, source


def _ensure_checkpoint_dir(argv: list[str]) -> None:
    """--load-checkpoint wants an existing directory: create it (a first start then starts fresh)."""
    if "--checkpoint-dir" in argv:
        d = argv[argv.index("--checkpoint-dir") + 1]
    else:
        d = next((a.split("=", 1)[1] for a in argv if a.startswith("--checkpoint-dir=")), "checkpoints")
    Path(d).mkdir(parents=True, exist_ok=True)


def _classify(recorder: _Recorder, signals: SignalStop, deadline: Optional[DeadlineStop],
              end_time: Optional[float], lead: float) -> tuple[str, str]:
    """("timeout" | "preemption", what triggered the stop)."""
    fired = recorder.policy.fired
    if fired is not None and fired is deadline:
        return "timeout", "deadline"
    sig = signals.received.name if signals.received else "?"
    if end_time is not None and signals.received_at is not None:
        left = end_time - signals.received_at
        if left <= lead + TIMER_SLACK_S:
            return "timeout", f"{sig} {left:.0f} s before the time limit"
        return "preemption", f"{sig} {left:.0f} s before the time limit"
    return ("timeout" if signals.received == signal.SIGUSR2 else "preemption"), f"{sig} (no known end time)"


def _finish(rd: RunDir, common: dict, outcome: str, exit_code: int, reason: str, **extra: Any) -> None:
    """Writes the final record; for anything but success ends the job with that exit code."""
    rd.append_event("final", **common, outcome=outcome, exit_code=exit_code, reason=reason, **extra)
    (log.info if exit_code == 0 else log.error)("%s: %s", outcome, reason)
    if exit_code == EXIT_OK:
        return
    logging.shutdown()
    if exit_code == EXIT_REQUEUE:
        # a clean stop: the checkpoint is durable, nothing crashed; the job still ends non-zero
        sys.exit(exit_code)
    raise _JobFinished(reason)


def _requeue(spec: JobSpec, env: JobEnv, rd: RunDir, common: dict, kind: str, used: int, budget: int, result) -> None:
    left = f"{budget - used - 1} {kind} requeue(s) left"
    if env.kind == "local":
        max_runs = int(spec.extra.get("local_max_runs", 6))
        if common["run"] + 1 >= max_runs:
            _finish(rd, common, "stopped", EXIT_REQUEUE,
                    f"submitit's local executor starts a task at most {max_runs} times; stopped at step {result.step}, "
                    f"checkpoint at step {result.last_committed_step} is durable: submit again with the same --name to continue")
        rd.append_event("requeue", **common, kind=kind, how="local restart", requeued_at=time.time(), budget_left=budget - used - 1)
        log.info("restarting locally (%s)", left)
        logging.shutdown()
        sys.exit(LOCAL_REQUEUE_RETURN_CODE)
    if env.kind != "slurm":
        _finish(rd, common, "stopped", EXIT_REQUEUE,
                f"stopped at step {result.step} ({result.reason}); not in a Slurm job, so nothing requeues it: run again to resume")
    t0 = time.time()
    ok, how = slurm.requeue(env.job_id)
    if not ok:
        state, restarts, reason = slurm.job_state(env.job_id)
        # "Job is pending execution": Slurm requeued it already (preemption, `scontrol requeue` from outside)
        if "pending execution" in how.lower() or state in slurm.REQUEUE_STATES or "REQUEUE" in state:
            ok, how = True, f"requeued by Slurm itself (state {state}; scontrol said: {how})"
        else:
            log.warning("%s; trying a dependent resubmission", how)
            new_id, msg = slurm.resubmit_dependent(env.job_id, Path(spec.run_dir) / "submitit", spec.name)
            if new_id is None:
                _finish(rd, common, "stopped", EXIT_REQUEUE,
                        f"cannot requeue: {how}; and {msg}. The checkpoint at step {result.last_committed_step} "
                        f"is durable: submit again with the same --name to continue")
            rd.append_event("requeue", **common, kind=kind, how="resubmitted", new_job_id=new_id,
                            requeued_at=time.time(), budget_left=budget - used - 1, detail=how)
            log.info("%s (%s)", msg, left)
            logging.shutdown()
            sys.exit(EXIT_REQUEUE)
    rd.append_event("requeue", **common, kind=kind, how=how, requeued_at=time.time(),
                    requeue_seconds=time.time() - t0, budget_left=budget - used - 1)
    log.info("requeued job %s with %s (%s)", env.job_id, how, left)
    logging.shutdown()
    sys.exit(EXIT_REQUEUE)


def _run_other_rank(spec: JobSpec, signals: SignalStop) -> dict:
    from pccheck import train

    argv = list(spec.trainer_argv)
    try:
        result = train.run(argv, stop=AnyStop(signals))
    finally:
        ignore_stop_signals()
    if result.status != "completed":
        sys.exit(EXIT_REQUEUE)
    return {"status": "completed", "step": result.step}


def spec_to_dict(spec: JobSpec) -> dict:
    return asdict(spec)
