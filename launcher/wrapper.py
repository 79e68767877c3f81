"""The job wrapper: what runs in each task of the job. It starts the command under the contract of
docs/jobs.md (pccheck.contract), turns every reason to stop into one stop request, and decides what the
end of the command means: done, requeue (same job id), stopped for good, or failed.

On a stop (Slurm's warning signal; the SIGTERM of a time limit, a preemption, scancel or scontrol
requeue; the job's own deadline):
  1. the handler only sets a flag;
  2. the wrapper's loop delivers the stop request to the command once: the stop signal to each of its
     processes that handles it, unless Slurm already signalled every process of the step;
  3. the command checkpoints at a step boundary, waits until durable and exits 75; one that has not
     stopped by the hard limit is killed with its whole process tree, and the job says so;
  4. rank 0 decides (pccheck.launcher.policy): requeue (`scontrol requeue`, a dependent resubmission
     when requeue is refused, a restart under the local executor), or end the job and say why.
Lifecycle records go to <run dir>/events.jsonl; pccheck-submit follows them.
"""
from __future__ import annotations

import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pccheck import contract
from pccheck.stopping import DeadlineStop, ignore_stop_signals, job_end_time

from . import policy, proctree, slurm
from .rundir import RunDir, read_json

log = logging.getLogger("pccheck.launcher")

LOCAL_REQUEUE_RETURN_CODE = 144  # submitit's LocalExecutor restarts a task that exits with this
POLL_S = 0.1
STATUS_POLL_S = 0.5
#: seconds before a known end time at which a command that ignored the stop request is killed (the
#: wrapper must decide and requeue before Slurm or submitit's local controller kills the job)
HARD_LIMIT_LEAD_S = 3.0
RUN_LOCK = "job.lock"  # in the run directory, held by rank 0's wrapper while it runs
RUN_LOCK_WAIT_S = 75.0  # the core's lease goes stale 60 s after its holder stopped renewing it
#: seconds before the time limit for Slurm's warning signal (`--signal=USR2@lead`), unless given
DEFAULT_SIGNAL_LEAD_S = 90.0


@dataclass
class JobSpec:
    name: str
    run_dir: str
    submission: str  # id of one pccheck-submit call; budgets and records are per submission
    command: list[str]
    cwd: str
    checkpoint_dir: str
    executor: str = "slurm"  # "slurm" | "local"
    max_requeues: int = 10  # requeues after time-limit stops
    max_preemptions: int = 20  # requeues after preemption / scancel / scontrol requeue
    signal_lead_s: float = DEFAULT_SIGNAL_LEAD_S  # also the time a command has to stop when no end time is known
    deadline: bool = True
    deadline_margin_s: Optional[float] = None
    time_limit_s: Optional[float] = None  # local executor: the emulated limit
    stop_signal: str = contract.DEFAULT_STOP_SIGNAL.name
    local_max_runs: int = 6
    #: sbatch templates: the batch script and its arguments, resubmitted as a dependent job when Slurm
    #: refuses the requeue (None: the job was submitted with submitit, whose files are resubmitted)
    resubmit: Optional[list[str]] = None


class _JobFinished(Exception):
    """Raised to end the job with a failure that submitit records (job.result() raises it)."""


# --------------------------------------------------------------------------------------- environment


class _Signals:
    """The wrapper's own handlers: remember the first stop-worthy signal and when it came."""

    def __init__(self, signals: tuple[signal.Signals, ...]) -> None:
        self.received: Optional[signal.Signals] = None
        self.received_at: Optional[float] = None
        for sig in signals:
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        if self.received is None:
            self.received, self.received_at = signal.Signals(signum), time.time()


def _process_start_time() -> float:
    """Wall-clock start of this process (from /proc/self/stat and /proc/uptime, ~10 ms), else now."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


@dataclass
class JobEnv:
    kind: str  # "slurm" | "local" | "none"
    job_id: str
    rank: int
    process_start: float

    @classmethod
    def detect(cls) -> "JobEnv":
        start = _process_start_time()
        if os.environ.get("SUBMITIT_EXECUTOR") == "local" or "SUBMITIT_LOCAL_JOB_ID" in os.environ:
            return cls("local", os.environ.get("SUBMITIT_LOCAL_JOB_ID", "?"),
                       int(os.environ.get("SUBMITIT_LOCAL_GLOBALID", "0")), start)
        if "SLURM_JOB_ID" in os.environ:
            return cls("slurm", os.environ["SLURM_JOB_ID"], int(os.environ.get("SLURM_PROCID", "0")), start)
        return cls("none", str(os.getpid()), 0, start)


def _setup_logging(rd: RunDir) -> None:
    root = logging.getLogger("pccheck")
    root.setLevel(logging.INFO)
    root.propagate = False
    fmt = logging.Formatter("%(asctime)s [pccheck] %(message)s", "%Y-%m-%d %H:%M:%S")
    have = {getattr(h, "_pccheck", None) for h in root.handlers}
    for kind, handler in (("file", lambda: logging.FileHandler(rd.log_file, mode="a")),
                          ("stream", lambda: logging.StreamHandler(sys.stderr))):
        if kind not in have:
            h = handler()
            h.setFormatter(fmt)
            h._pccheck = kind  # type: ignore[attr-defined]
            root.addHandler(h)


def _end_time(spec: JobSpec, env: JobEnv) -> tuple[Optional[float], str]:
    if env.kind == "local" and spec.time_limit_s:
        # submitit's local controller starts its timer when it starts this process
        return env.process_start + spec.time_limit_s, "local time limit"
    return job_end_time(query_squeue=env.kind == "slurm")


def committed_step(checkpoint_dir: Path, status: dict) -> Optional[int]:
    """Progress: the newest committed step pccheck's own scan finds, else what the loop helper reported."""
    from pccheck.catalog import newest_committed_step

    scanned = newest_committed_step(checkpoint_dir)
    return scanned if scanned is not None else status.get("last_committed_step")


# ----------------------------------------------------------------------------------------- one start


@dataclass
class StartResult:
    exit_code: int
    trigger: str = "none"  # what requested the stop: "signal" | "deadline" | "none"
    signal_name: Optional[str] = None
    signal_at: Optional[float] = None
    requested_at: Optional[float] = None
    delivered: str = ""  # how the request reached the command
    undelivered: bool = False  # no process of the command handles the stop signal (yet): try again
    stop_at: Optional[float] = None  # when the command reached its step boundary (status "stopping")
    stopped_at: Optional[float] = None  # when the command exited
    killed_at_limit: bool = False
    status: Optional[dict] = None  # the command's last status (this start's only)

    @property
    def stop_requested(self) -> bool:
        st = self.status or {}
        return self.requested_at is not None or st.get("state") in ("stopping", "stopped")

    @property
    def reported_stopped(self) -> bool:
        return (self.status or {}).get("state") == "stopped"


class _Start:
    """Runs the command once and watches it: stop requests, the deadline, the hard limit."""

    def __init__(self, spec: JobSpec, env: JobEnv, rd: RunDir, signals: _Signals, end_time: Optional[float],
                 restart: int, on_first_step: Any) -> None:
        self.spec, self.env, self.rd, self.signals, self.end_time = spec, env, rd, signals, end_time
        self.stop_sig = contract.parse_signal(spec.stop_signal)
        self.restart = restart
        self.on_first_step = on_first_step
        # The backup of the loop helpers' own deadline check (exact, at step boundaries): half their margin,
        # counted from the hard limit, so the command still has a step, a checkpoint and that half to stop.
        margin = HARD_LIMIT_LEAD_S + (spec.deadline_margin_s or contract.DEFAULT_DEADLINE_MARGIN_S) / 2
        refreshed = (lambda: job_end_time()[0]) if env.kind == "slurm" else end_time  # scontrol update TimeLimit=
        self.deadline = DeadlineStop(end_time=refreshed, margin_s=margin) if spec.deadline and end_time is not None else None

    def command_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            contract.RUN_DIR: str(self.rd.path), contract.CHECKPOINT_DIR: self.spec.checkpoint_dir,
            contract.RESTART: str(self.restart), contract.STOP_SIGNAL: self.stop_sig.name,
            contract.STATUS_FILE: str(self.rd.status_file),
        })
        env.pop(contract.END_TIME, None)
        if not self.spec.deadline:
            env[contract.END_TIME] = contract.NO_END_TIME  # signals only: no deadline stop in the helpers either
        elif self.end_time is not None:
            env[contract.END_TIME] = f"{self.end_time:.3f}"
        if self.spec.deadline_margin_s is not None:
            env[contract.DEADLINE_MARGIN] = f"{self.spec.deadline_margin_s:g}"
        return env

    def _ignored_at_start(self) -> None:
        """In the child, before exec: the stop and warning signals start ignored, so a process that does not
        handle them (torchrun's agent, a shell) survives Slurm's step-wide warning signal; a script that
        handles them installs its own handler."""
        for sig in {self.stop_sig, contract.WARNING_SIGNAL}:
            signal.signal(sig, signal.SIG_IGN)

    def run(self) -> StartResult:
        proctree.become_subreaper()
        proc = subprocess.Popen(self.spec.command, cwd=self.spec.cwd, env=self.command_env(),
                                preexec_fn=self._ignored_at_start)
        log.info("started %s (pid %d)", shlex.join(self.spec.command), proc.pid)
        res = StartResult(exit_code=0)
        started = time.time()
        hard_limit: Optional[float] = None
        status_read = 0.0
        status: dict = {}
        seen_step = False
        while proc.poll() is None:
            proctree.reap_orphans(proc.pid)
            now = time.time()
            if now - status_read >= STATUS_POLL_S:
                status_read = now
                status = self._status(started)
                if status and not seen_step and status.get("step") is not None and status.get("state") == "running":
                    seen_step = True
                    self.on_first_step(status)
                if status.get("state") == "stopping" and res.stop_at is None:
                    res.stop_at = status.get("time")
            if res.requested_at is None:
                self._maybe_request(res, status)
                if res.requested_at is not None:
                    hard_limit = self._hard_limit(res)
            elif res.undelivered:  # e.g. requested before the command installed its handler
                self._deliver(res, status)
            if hard_limit is not None and now >= hard_limit:
                self._kill_at_limit(res, proc, status)
                break
            time.sleep(POLL_S)
        res.exit_code = proc.wait()
        res.stopped_at = time.time()
        self._wait_for_tree(proc, hard_limit)
        res.status = self._status(started) or None
        if res.status and res.status.get("state") == "stopping" and res.stop_at is None:
            res.stop_at = res.status.get("time")
        return res

    def _status(self, started: float) -> dict:
        st = read_json(self.rd.status_file) or {}
        return st if isinstance(st.get("time"), (int, float)) and st["time"] >= started else {}

    def _maybe_request(self, res: StartResult, status: dict) -> None:
        sig = self.signals.received
        if sig is not None:
            res.trigger, res.signal_name, res.signal_at = "signal", sig.name, self.signals.received_at
            # Slurm sends its warning signal (--signal) and SIGTERM to every process of the step: the
            # command's processes have it already, so it is not delivered twice.
            step_wide = self.env.kind == "slurm" and (sig == self.stop_sig or sig == signal.SIGTERM)
            self._request(res, status, f"received {sig.name}", already=f"from Slurm, to every process of the step ({sig.name})" if step_wide else "")
            return
        if self.deadline is not None:
            reason = self.deadline.check(float(status.get("step_seconds") or 0.0), float(status.get("checkpoint_seconds") or 0.0))
            if reason is not None:
                res.trigger = "deadline"
                self._request(res, status, reason)

    def _request(self, res: StartResult, status: dict, reason: str, already: str = "") -> None:
        res.requested_at = time.time()
        if already:
            res.delivered = already
        else:
            self._deliver(res, status)
        log.info("stop requested (%s): %s", reason, res.delivered)

    def _deliver(self, res: StartResult, status: dict) -> None:
        """The stop signal, once, to each process of the command that handles it; none while it is stopping."""
        if status.get("state") in ("stopping", "stopped"):
            res.delivered, res.undelivered = "not sent: the command is already stopping", False
            return
        sent = proctree.send(proctree.stop_signal_targets(os.getpid(), self.stop_sig), self.stop_sig)
        if sent:
            res.delivered, res.undelivered = f"{self.stop_sig.name} to pid {', '.join(map(str, sent))}", False
            if res.delivered and res.requested_at is not None and time.time() - res.requested_at > 0.5:
                log.info("stop request delivered late: %s", res.delivered)
        else:
            res.delivered, res.undelivered = f"not sent: no process of the command handles {self.stop_sig.name}", True

    def _hard_limit(self, res: StartResult) -> float:
        """When a command that has not stopped is killed: before the end time when it is known, else the
        signal lead after the request (the lead is what one step plus one checkpoint may take)."""
        assert res.requested_at is not None
        limits = [res.requested_at + self.spec.signal_lead_s]
        if self.end_time is not None:
            limits = [max(res.requested_at + 1.0, self.end_time - HARD_LIMIT_LEAD_S)]
        if self.env.kind == "slurm" and res.signal_name == "SIGTERM":
            kill_wait = slurm.kill_wait()  # Slurm SIGKILLs the job KillWait seconds after its SIGTERM
            if kill_wait is not None:
                limits.append(res.requested_at + max(1.0, kill_wait - 1.0))
        return min(limits)

    def _kill_at_limit(self, res: StartResult, proc: subprocess.Popen, status: dict) -> None:
        waited = time.time() - (res.requested_at or time.time())
        from_status = status.get("last_committed_step")
        committed = committed_step(Path(self.spec.checkpoint_dir), status)
        res.killed_at_limit = True
        n = proctree.kill_tree(os.getpid(), proc.pid)
        log.error("the command did not stop within %.0f s of the request; last committed step %s "
                  "(killed %d process(es); what it committed stays)", waited,
                  committed if committed is not None else from_status, n)

    def _wait_for_tree(self, proc: subprocess.Popen, hard_limit: Optional[float]) -> None:
        """The command's own process ended; its re-parented descendants (torchrun's workers) may still be
        finishing a checkpoint: wait for them until the hard limit, then kill what is left."""
        limit = hard_limit if hard_limit is not None else time.time() + self.spec.signal_lead_s
        while proctree.descendants(os.getpid()) and time.time() < limit:
            proctree.reap_orphans(proc.pid)
            time.sleep(POLL_S)
        left = proctree.kill_tree(os.getpid(), proc.pid)
        if left:
            log.warning("killed %d process(es) the command left behind", left)


# ------------------------------------------------------------------------------------------------ job


def run_job(spec: JobSpec) -> dict:
    # First of all: our handlers replace submitit's (which would checkpoint and requeue inside the
    # handler, in the middle of a step).
    stop_sig = contract.parse_signal(spec.stop_signal)
    signals = _Signals(tuple(dict.fromkeys((stop_sig, contract.WARNING_SIGNAL, signal.SIGTERM))))
    fn_start = time.time()
    env = JobEnv.detect()
    rd = RunDir(spec.run_dir).create()
    _setup_logging(rd)
    events = rd.events(spec.submission)
    restart = sum(1 for e in events if e.get("event") == "requeue")
    Path(spec.checkpoint_dir).mkdir(parents=True, exist_ok=True)
    end_time, end_source = _end_time(spec, env)
    if env.rank != 0:
        # Only rank 0 keeps records and requeues; other ranks run their command and pass stops on.
        res = _Start(spec, env, rd, signals, end_time, restart, lambda st: None).run()
        ignore_stop_signals(signals_of(spec))
        if res.exit_code == contract.EXIT_OK:
            return {"status": "completed"}
        sys.exit(contract.EXIT_REQUEUE if policy.stopped(_observed(res, None, None)) else contract.EXIT_FAILURE)

    with _hold_run_dir(rd):  # one job at a time per run directory
        return _lead(spec, env, rd, signals, events, restart, end_time, end_source, fn_start)


def _lead(spec: JobSpec, env: JobEnv, rd: RunDir, signals: _Signals, events: list[dict], restart: int,
          end_time: Optional[float], end_source: str, fn_start: float) -> dict:
    """Rank 0: the records, the command's start, the decision and the requeue."""
    starts = [e for e in events if e.get("event") == "start"]
    committed_before = committed_step(Path(spec.checkpoint_dir), rd.read_status())
    common = dict(submission=spec.submission, job_id=env.job_id, run=len(starts))
    rd.append_event(
        "start", **common, executor=env.kind, host=socket.gethostname(), restart=restart,
        process_start=env.process_start, fn_start=fn_start, committed_before=committed_before,
        end_time=end_time, end_source=end_source, pid=os.getpid(),
    )
    log.info("run %s, job %s (%s), start #%d (restart %d); newest committed step %s; %s", spec.name, env.job_id,
             env.kind, len(starts), restart, committed_before,
             f"time limit in {end_time - time.time():.0f} s ({end_source})" if end_time else "no known time limit")

    finals = [e for e in events if e.get("event") == "final"]
    if finals:  # e.g. Slurm requeued a preempted job whose submission had already ended
        why = finals[-1].get("reason", "")
        log.warning("this submission already ended (%s): not running again", why)
        rd.append_event("refused", **common, reason=f"submission already ended: {why}")
        sys.exit(int(finals[-1].get("exit_code", contract.EXIT_FAILURE)))
    stuck = policy.starts_without_progress([s.get("committed_before") for s in starts] + [committed_before])
    if stuck >= policy.MAX_STARTS_WITHOUT_PROGRESS:
        _finish(rd, common, "stopped", contract.EXIT_REQUEUE,
                f"no progress: the last {stuck} starts committed no new checkpoint (newest committed step stays "
                f"{committed_before}); not running again to avoid a requeue loop")

    def first_step(status: dict) -> None:  # the time the command reported its first step
        at = float(status.get("time") or time.time())
        rd.append_event("first_step", **common, time=at, since_process_start=at - env.process_start,
                        step=status.get("step"), step_seconds=status.get("step_seconds"))

    res = _Start(spec, env, rd, signals, end_time, restart, first_step).run()
    ignore_stop_signals(signals_of(spec))  # decided: a late warning signal must not kill the exit
    committed_after = committed_step(Path(spec.checkpoint_dir), res.status or rd.read_status())
    observed = _observed(res, committed_before, committed_after)
    kind, how = policy.classify(res.trigger, res.signal_name, res.signal_at, end_time, spec.signal_lead_s)
    used = sum(1 for e in events if e.get("event") == "requeue" and e.get("kind") == kind)
    budget, flag = (spec.max_requeues, "--max-requeues") if kind == "timeout" else (spec.max_preemptions, "--max-preemptions")
    decision = policy.decide(observed, kind, used, budget, flag)
    if decision.action == "completed":
        step = (res.status or {}).get("step")
        _finish(rd, common, "completed", contract.EXIT_OK,
                f"the command completed{f' at step {step}' if step is not None else ''}; last committed step {committed_after}",
                last_committed_step=committed_after)
        return {"status": "completed", "last_committed_step": committed_after}
    if decision.action == "failed":
        _finish(rd, common, "failed", decision.exit_code, decision.reason, last_committed_step=committed_after)
    status = res.status or {}
    rd.append_event(
        "stop", **common, kind=kind, trigger=how, reason=status.get("stop_reason") or res.trigger,
        step=status.get("step"), last_committed_step=committed_after, committed_before=committed_before,
        exit_code=res.exit_code, delivered=res.delivered, killed_at_limit=res.killed_at_limit,
        signal=res.signal_name, signal_at=res.signal_at, requested_at=res.requested_at,
        stop_at=res.stop_at or res.requested_at, stopped_at=res.stopped_at, end_time=end_time,
    )
    log.info("stopped (%s; counted as %s); last committed step %s", how, kind, committed_after)
    if decision.action == "stopped":
        _finish(rd, common, "stopped", contract.EXIT_REQUEUE, decision.reason, last_committed_step=committed_after)
    _requeue(spec, env, rd, common, kind, budget - used - 1, committed_after)
    raise AssertionError("unreachable")


def _hold_run_dir(rd: RunDir) -> Any:
    """The run directory's lock (the core's: flock, or a lease where the file system has none). A holder that
    a requeue or Slurm's SIGKILL just ended can leave a lease until it goes stale: wait that long, then refuse
    and say who holds it. A refused start writes no record, since the records belong to the holder's job."""
    from pccheck import _core

    deadline = time.monotonic() + RUN_LOCK_WAIT_S
    while True:
        try:
            return _core.FileLock(str(rd.path / RUN_LOCK), f"run directory {rd.path}")
        except _core.LockedError as exc:
            if time.monotonic() >= deadline:
                log.error("%s: not running a second job in it", exc)
                raise _JobFinished(str(exc)) from None
            log.warning("%s; waiting up to %.0f s", exc, deadline - time.monotonic())
            time.sleep(5.0)


def signals_of(spec: JobSpec) -> tuple[signal.Signals, ...]:
    return tuple(dict.fromkeys((contract.parse_signal(spec.stop_signal), contract.WARNING_SIGNAL, signal.SIGTERM)))


def _observed(res: StartResult, before: Optional[int], after: Optional[int]) -> policy.Observed:
    return policy.Observed(exit_code=res.exit_code, stop_requested=res.stop_requested, killed_at_limit=res.killed_at_limit,
                           reported_stopped=res.reported_stopped, committed_before=before, committed_after=after)


def _finish(rd: RunDir, common: dict, outcome: str, exit_code: int, reason: str, **extra: Any) -> None:
    """Writes the final record; for anything but success ends the job with that exit code."""
    rd.append_event("final", **common, outcome=outcome, exit_code=exit_code, reason=reason, **extra)
    (log.info if exit_code == contract.EXIT_OK else log.error)("%s: %s", outcome, reason)
    if exit_code == contract.EXIT_OK:
        return
    logging.shutdown()
    if exit_code == contract.EXIT_REQUEUE:
        sys.exit(exit_code)  # a clean stop with a durable checkpoint: nothing crashed; the job still ends non-zero
    raise _JobFinished(reason)


def _requeue(spec: JobSpec, env: JobEnv, rd: RunDir, common: dict, kind: str, left: int, committed: Optional[int]) -> None:
    record = dict(common, kind=kind, budget_left=left)
    if env.kind == "local":
        if common["run"] + 1 >= spec.local_max_runs:
            _finish(rd, common, "stopped", contract.EXIT_REQUEUE,
                    f"submitit's local executor starts a task at most {spec.local_max_runs} times; checkpoint at "
                    f"step {committed} is durable: submit again with the same --name to continue")
        rd.append_event("requeue", **record, how="local restart", requeued_at=time.time())
        log.info("restarting locally (%d %s requeue(s) left)", left, kind)
        logging.shutdown()
        sys.exit(LOCAL_REQUEUE_RETURN_CODE)
    if env.kind != "slurm":
        _finish(rd, common, "stopped", contract.EXIT_REQUEUE,
                f"checkpoint at step {committed} is durable; not in a Slurm job, so nothing requeues it: run again to resume")
    t0 = time.time()
    ok, how = slurm.requeue(env.job_id)
    if not ok:
        state, _, _ = slurm.job_state(env.job_id)
        # "Job is pending execution": Slurm requeued it already (preemption, `scontrol requeue` from outside)
        if "pending execution" in how.lower() or state in slurm.REQUEUE_STATES or "REQUEUE" in state:
            ok, how = True, f"requeued by Slurm itself (state {state}; scontrol said: {how})"
        else:
            log.warning("%s; trying a dependent resubmission", how)
            if spec.resubmit:
                new_id, msg = slurm.resubmit_script(env.job_id, spec.resubmit, spec.name, spec.submission)
            else:
                new_id, msg = slurm.resubmit_dependent(env.job_id, Path(spec.run_dir) / "submitit", spec.name)
            if new_id is None:
                _finish(rd, common, "stopped", contract.EXIT_REQUEUE,
                        f"cannot requeue: {how}; and {msg}. The checkpoint at step {committed} is durable: submit "
                        f"again with the same --name to continue")
            rd.append_event("requeue", **record, how="resubmitted", new_job_id=new_id, requeued_at=time.time(), detail=how)
            log.info("%s (%d %s requeue(s) left)", msg, left, kind)
            logging.shutdown()
            sys.exit(contract.EXIT_REQUEUE)
    rd.append_event("requeue", **record, how=how, requeued_at=time.time(), requeue_seconds=time.time() - t0)
    log.info("requeued job %s with %s (%d %s requeue(s) left)", env.job_id, how, left, kind)
    logging.shutdown()
    sys.exit(contract.EXIT_REQUEUE)


__all__ = ["JobSpec", "run_job"]
