"""Submitting the job wrapper with submitit: to Slurm, or to submitit's local executor (no Slurm needed)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Optional

import submitit

from . import slurm
from .rundir import RunDir, current_job_id
from .wrapper import JobSpec, log, run_job

LOCAL_DEFAULT_TIME_MIN = 7 * 24 * 60.0  # "no limit" for the local executor
SLURM_DEFAULT_TIME_MIN = 60.0


class JobWrapper(submitit.helpers.Checkpointable):
    """The submitit callable. `checkpoint()` is only reached if a signal lands in the few milliseconds
    before the wrapper installs its own handlers: nothing has run then, so the job is requeued as it is
    (the start guard stops a loop of such restarts)."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict:
        return run_job(self.spec)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        log.warning("signal before the command started: requeueing as it is")
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _time_str(minutes: float) -> str:
    if minutes == int(minutes):
        return str(int(minutes))
    whole = int(minutes)
    return f"{whole}:{int(round((minutes - whole) * 60)):02d}"


def still_active(rd: RunDir) -> Optional[str]:
    """The job of the run's last submission while it is still queued or running, else None."""
    sub = rd.read_submission()
    if not sub or not sub.get("job_id"):
        return None
    finals = [e for e in rd.events(sub.get("submission")) if e.get("event") == "final"]
    if finals:
        return None
    job_id = str(sub["job_id"])
    if sub.get("executor") == "slurm":
        events = rd.events(sub.get("submission"))
        for jid in {job_id, current_job_id(events, job_id)} | {str(e["new_job_id"]) for e in events if e.get("new_job_id")}:
            state, _, _ = slurm.job_state(jid)
            if state not in slurm.TERMINAL_STATES and state != "UNKNOWN":
                return f"Slurm job {jid} ({state})"
    elif sub.get("executor") == "local":
        try:
            cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
        except (OSError, ValueError):
            return None
        if b"submitit" in cmdline:
            return f"local job {job_id} (pid)"
    return None


def submit(args: argparse.Namespace, spec: JobSpec, rd: RunDir, executor: str, time_min: Optional[float], lead: float) -> Any:
    """Submits the wrapper for `spec`; the submitit job (its `job_id`; a local job's process)."""
    if executor == "local":
        ex = submitit.LocalExecutor(folder=rd.submitit_dir, max_num_timeout=10**6)
        ex.update_parameters(
            timeout_min=time_min if time_min is not None else LOCAL_DEFAULT_TIME_MIN,
            signal_delay_s=int(lead),
            tasks_per_node=args.ntasks_per_node or 1,
            stderr_to_stdout=True,
        )
        return ex.submit(JobWrapper(spec))

    ex = submitit.SlurmExecutor(folder=rd.submitit_dir, max_num_timeout=10**6, python=args.python)
    extra: dict[str, Any] = {"requeue": True}
    if args.uenv:
        extra["uenv"] = args.uenv
        extra["view"] = args.view or "default"
    if args.environment:
        extra["environment"] = args.environment
    for kv in args.sbatch:
        key, sep, value = kv.partition("=")
        extra[key.lstrip("-")] = value if sep else True
    params: dict[str, Any] = dict(
        job_name=spec.name,
        time=_time_str(time_min or SLURM_DEFAULT_TIME_MIN),
        signal_delay_s=int(lead),
        stderr_to_stdout=True,
        additional_parameters=extra,
        # The batch shell must outlive the SIGTERM of a time limit or preemption until srun (and the
        # checkpoint in the task) is done: a trap makes bash wait for its foreground child.
        setup=["trap 'echo \"[pccheck] batch shell: got SIGTERM, waiting for srun\" >&2' TERM"],
    )
    for key in ("partition", "account", "nodes", "ntasks_per_node", "gpus_per_task", "cpus_per_task", "mem"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    ex.update_parameters(**params)
    return ex.submit(JobWrapper(spec))
