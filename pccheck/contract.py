"""The job contract (docs/jobs.md): what pccheck-submit's job wrapper gives the command it runs, and what
it expects back. The launcher sets and reads these names; the loop helpers (pccheck.loop) and any user
script follow them. Written once, here.
"""
from __future__ import annotations

import os
import signal
from typing import Mapping, Optional

# -- exit status of the command (and of pccheck's own commands) --------------------------------------
EXIT_OK = 0  #: training done
EXIT_FAILURE = 1  #: anything else: not requeued
EXIT_USAGE = 2  #: a user error (bad flags, missing paths), printed as one line: not requeued
EXIT_REQUEUE = 75  #: stopped at a step boundary after a durable checkpoint: requeue me (EX_TEMPFAIL)

# -- environment given to the command ----------------------------------------------------------------
RUN_DIR = "PCCHECK_RUN_DIR"  #: the run's directory (logs, status, events; the default checkpoint dir below it)
CHECKPOINT_DIR = "PCCHECK_CHECKPOINT_DIR"  #: where to checkpoint (default <run dir>/checkpoints)
RESTART = "PCCHECK_RESTART"  #: 0 on the first start, n after n requeues
END_TIME = "PCCHECK_END_TIME"  #: the job's end time, epoch seconds; "none": stop on signals only; absent: unknown
STOP_SIGNAL = "PCCHECK_STOP_SIGNAL"  #: the signal a stop request arrives as, e.g. SIGUSR2
STATUS_FILE = "PCCHECK_STATUS_FILE"  #: where the loop helpers report step and checkpoint times
DEADLINE_MARGIN = "PCCHECK_DEADLINE_MARGIN"  #: seconds kept free before END_TIME beyond a step + a checkpoint

NO_END_TIME = "none"
DEFAULT_STOP_SIGNAL = signal.SIGUSR2
#: Slurm's warning signal as pccheck-submit asks for it (`--signal=USR2@lead`, submitit's default)
WARNING_SIGNAL = signal.SIGUSR2
DEFAULT_DEADLINE_MARGIN_S = 20.0

# -- the status file (JSON, rewritten atomically; written by rank 0's loop helper) -------------------
#: state values: "running", "stopping" (a stop was decided at a step boundary), "stopped" (its checkpoint
#: is durable; the command exits 75 next), "completed"
STATUS_FIELDS = ("state", "step", "total_steps", "last_committed_step", "step_seconds", "checkpoint_seconds",
                 "stop_reason", "pid", "time")


def parse_signal(name: str) -> signal.Signals:
    """`USR2`, `SIGUSR2` or `12` -> signal.SIGUSR2; ValueError for anything else."""
    text = name.strip().upper()
    if text.isdigit():
        return signal.Signals(int(text))
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return signal.Signals[text]
    except KeyError:
        raise ValueError(f"{name!r} is not a signal name") from None


def stop_signal(environ: Optional[Mapping[str, str]] = None) -> signal.Signals:
    """The stop signal named by the environment, or SIGUSR2."""
    env = os.environ if environ is None else environ
    value = env.get(STOP_SIGNAL, "").strip()
    return parse_signal(value) if value else DEFAULT_STOP_SIGNAL


def checkpoint_dir(default: str = "checkpoints", environ: Optional[Mapping[str, str]] = None) -> str:
    """PCCHECK_CHECKPOINT_DIR under pccheck-submit, else `default`."""
    env = os.environ if environ is None else environ
    return env.get(CHECKPOINT_DIR) or default
