"""The command a job runs when pccheck-submit is given no `-- CMD`: the demo trainer, pccheck-train.

The launcher's only knowledge of the demo: which command it is, the `--steps`/`--freq` shortcuts, that
its flags are checked before anything is submitted, and the loss file it keeps in the run directory.
Everything else reaches the trainer through the contract (PCCHECK_CHECKPOINT_DIR, PCCHECK_STATUS_FILE, ...).
"""
from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path
from typing import Optional, Sequence

from .rundir import LOSS


def _value(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _set(argv: list[str], flag: str, value: str) -> None:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            argv[i + 1] = value
            return
        if a.startswith(flag + "="):
            argv[i] = f"{flag}={value}"
            return
    argv += [flag, value]


def trainer_argv(args: argparse.Namespace, rest: Sequence[str], run_dir: Path) -> list[str]:
    """pccheck-train's flags: the user's, the shortcuts, the loss file in the run directory, resume on."""
    argv = list(rest)
    if args.training_steps is not None:
        _set(argv, "--training-steps", str(args.training_steps))
    if args.checkpoint_freq is not None:
        _set(argv, "--checkpoint-freq", str(args.checkpoint_freq))
    for flag in ("--checkpoint-dir", "--loss-file"):
        value = _value(argv, flag)
        if value is not None:
            _set(argv, flag, str(Path(value).absolute()))
    if _value(argv, "--loss-file") is None:
        argv += ["--loss-file", str(run_dir / LOSS)]
    if "--load-checkpoint" not in argv:
        argv.append("--load-checkpoint")
    return argv


def checkpoint_dir(argv: Sequence[str]) -> Optional[str]:
    """The trainer's --checkpoint-dir when given (the job's PCCHECK_CHECKPOINT_DIR must name the same)."""
    return _value(argv, "--checkpoint-dir")


def loss_file(argv: Sequence[str]) -> Optional[str]:
    return _value(argv, "--loss-file")


def check(argv: Sequence[str]) -> Optional[str]:
    """The trainer parser's one-line error for these flags, or None: checked here, not minutes later in the job."""
    try:
        from pccheck.demo.flags import build_parser
    except ImportError:  # no demo here (e.g. a login node without torch): the job will tell
        return None
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args(list(argv))
    except SystemExit as exc:
        if exc.code:
            text = err.getvalue().strip()
            return text.splitlines()[-1] if text else f"invalid pccheck-train flags (exit {exc.code})"
    return None
