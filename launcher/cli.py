"""pccheck-submit: run a training command as a job that comes back by itself after a time limit or preemption.

    pccheck-submit [options] -- CMD [ARGS...]      any command: python train.py, torchrun ..., a script
    pccheck-submit [options] [pccheck-train flags]  the demo trainer (e.g. --steps 151 --freq 50)

The job wrapper runs CMD under the contract of docs/jobs.md: PCCHECK_* environment, one stop request
(SIGUSR2 by default) at a step boundary's notice, exit 75 = "stopped after a durable checkpoint, requeue
me". Submitted with submitit: on Slurm when a controller answers, else with submitit's local executor
(--executor auto). With --wait (always for the local executor) it follows the job to its end.

Exit status: 0 completed; 1 failed (crash, killed, Slurm error); 2 usage error (nothing submitted);
75 stopped for good with a durable checkpoint (requeue budget spent, no progress, requeue impossible):
submit again with the same --name to continue. Without --wait (Slurm only): 0 once submitted.
"""
from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
import uuid
from pathlib import Path
from typing import Optional, Sequence

from pccheck.cli import OneLineParser, int_at_least
from pccheck.contract import DEFAULT_STOP_SIGNAL, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, parse_signal

from . import default_command, slurm
from .command import command_problem
from .follow import follow
from .rundir import RunDir
from .submission import SLURM_DEFAULT_TIME_MIN, still_active, submit
from .wrapper import DEFAULT_SIGNAL_LEAD_S, JobSpec

LOCAL_MAX_RUNS = 6  # submitit's local controller starts a task at most this many times
PROG = "pccheck-submit"


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0 minutes")
    return value


def _signal(text: str) -> str:
    try:
        return parse_signal(text).name
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without `-- CMD`, every other flag is a pccheck-train flag (see pccheck-train --help).",
    )
    r = p.add_argument_group("run")
    r.add_argument("--name", default="pccheck", help="run name; the run directory and resume key (default: %(default)s)")
    r.add_argument("--run-dir", default=None, help="run directory (default: runs/<name> under the current directory)")
    r.add_argument("--checkpoint-dir", default=None,
                   help="PCCHECK_CHECKPOINT_DIR for the command, where progress is judged (default: <run dir>/checkpoints)")
    r.add_argument("--fresh", action="store_true", help="start over: move existing checkpoints and status aside")
    r.add_argument("--wait", action="store_true", help="follow the job to its end; exit 0 only if training completed")
    r.add_argument("--executor", choices=["auto", "slurm", "local"], default="auto",
                   help="auto: Slurm when a controller answers, else submitit's local executor")
    r.add_argument("--stop-signal", type=_signal, default=DEFAULT_STOP_SIGNAL.name,
                   help="the signal a stop request reaches the command as (default %(default)s)")
    r.add_argument("--dry-run", action="store_true", help="print what would be submitted and exit")
    t = p.add_argument_group("demo trainer shortcuts (without -- CMD)")
    t.add_argument("--steps", "--training-steps", dest="training_steps", type=int_at_least(1), default=None,
                   help="= pccheck-train --training-steps")
    t.add_argument("--freq", "--checkpoint-freq", dest="checkpoint_freq", type=int_at_least(1, "auto"), default=None,
                   help="= pccheck-train --checkpoint-freq")
    s = p.add_argument_group("Slurm")
    s.add_argument("--partition")
    s.add_argument("--account")
    s.add_argument("--time", type=_minutes, default=None,
                   help=f"time limit in minutes (float ok). Slurm default {SLURM_DEFAULT_TIME_MIN:g}; "
                   "with --executor local an emulated limit (a stop request before it, then a restart)")
    s.add_argument("--nodes", type=int_at_least(1))
    s.add_argument("--ntasks-per-node", type=int_at_least(1),
                   help="tasks per node; each task runs CMD once (1 for torchrun, which starts the workers)")
    s.add_argument("--gpus-per-task", type=int_at_least(0))
    s.add_argument("--cpus-per-task", type=int_at_least(1))
    s.add_argument("--mem", help="memory per node, e.g. 64G")
    s.add_argument("--uenv", help="Alps user environment, e.g. pytorch/v2.6.0:/user-environment")
    s.add_argument("--view", default=None, help="uenv view (default with --uenv: default)")
    s.add_argument("--environment", help="Alps Container Engine environment (EDF .toml name or path)")
    s.add_argument("--signal-lead", type=float, default=None,
                   help="seconds before the limit for Slurm's warning signal; must cover one step + one "
                   f"checkpoint (default {DEFAULT_SIGNAL_LEAD_S:g}, at most a quarter of --time)")
    s.add_argument("--max-requeues", type=int_at_least(0), default=10, help="requeues after time-limit stops (default %(default)s)")
    s.add_argument("--max-preemptions", type=int_at_least(0), default=20,
                   help="requeues after preemption, scancel, scontrol requeue (default %(default)s)")
    s.add_argument("--deadline-margin", type=float, default=None,
                   help="seconds kept free before the end time beyond one step + one checkpoint (default 20)")
    s.add_argument("--no-deadline", action="store_true", help="stop on signals only (no stop from the job's end time)")
    s.add_argument("--python", default=None, help="python in the job (default: this interpreter; 'python3' with --environment)")
    s.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra #SBATCH option, repeatable (e.g. --sbatch qos=normal --sbatch constraint=gpu)")
    return p


def _move_aside(paths: list[Path], notes: list[str]) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for p in paths:
        if p.exists():
            dest = p.with_name(f"{p.name}.old-{stamp}")
            p.rename(dest)
            notes.append(f"--fresh: moved {p} to {dest.name}")


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    own, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, None)
    parser = build_parser()
    cwd = Path.cwd()
    notes: list[str] = []
    if command is not None:
        args = parser.parse_args(own)
        rest: list[str] = []
        if not command:
            parser.error("nothing after --: name the command to run")
        if args.training_steps is not None or args.checkpoint_freq is not None:
            parser.error("--steps/--freq are pccheck-train flags; with -- CMD give your command its own flags")
        problem = command_problem(command, cwd)
        if problem:
            return _fail(f"{problem}; nothing submitted")
    else:
        args, rest = parser.parse_known_args(own)
        stray = [a for i, a in enumerate(rest) if not a.startswith("-") and (i == 0 or not rest[i - 1].startswith("-"))]
        if stray:
            parser.error(f"unexpected argument {stray[0]!r} (to run your own command: {PROG} [options] -- CMD ARGS)")

    rd = RunDir(args.run_dir or Path("runs") / args.name)
    active = still_active(rd) if rd.path.exists() else None
    if active and not args.dry_run:
        return _fail(f"run {args.name!r} ({rd.path}) is still active as {active}; wait for it, cancel it, or use another --name")

    if args.executor == "auto":
        ok, why = slurm.controller_answers()
        executor = "slurm" if ok else "local"
        chosen = f"executor: {executor} ({why})" if ok else f"executor: local ({why}; using submitit's local executor)"
    else:
        executor = args.executor
        chosen = f"executor: {executor} (--executor {executor})"
        if executor == "slurm":
            ok, why = slurm.controller_answers()
            if not ok:
                return _fail(f"--executor slurm, but {why}")

    time_min = args.time if args.time is not None else (SLURM_DEFAULT_TIME_MIN if executor == "slurm" else None)
    lead = args.signal_lead if args.signal_lead is not None else DEFAULT_SIGNAL_LEAD_S
    if time_min is not None and lead > time_min * 60 / 4:
        new = max(5.0, math.floor(time_min * 60 / 4))
        if args.signal_lead is not None:
            notes.append(f"--signal-lead {lead:g} s is too close to the {time_min:g} min limit: using {new:g} s")
        lead = new
    margin = args.deadline_margin
    if margin is None and time_min is not None:
        # 20 s, but at most a tenth of short limits (Slurm enforces limits 0-30 s late, never early)
        margin = min(20.0, max(2.0, time_min * 60 / 10))
    python = args.python or ("python3" if args.environment else sys.executable)

    trainer_flags: Optional[list[str]] = None
    if command is None:  # the demo trainer
        trainer_flags = default_command.trainer_argv(args, rest, rd.path)
        err = default_command.check(trainer_flags)
        if err:
            print(err, file=sys.stderr)
            return EXIT_USAGE
        command = [python, "-m", "pccheck.demo", *trainer_flags]
    given = args.checkpoint_dir or (default_command.checkpoint_dir(trainer_flags) if trainer_flags else None)
    checkpoint_dir = Path(given).absolute() if given else rd.checkpoint_dir

    if args.fresh and not args.dry_run:
        aside = [checkpoint_dir, rd.status_file]
        if trainer_flags is not None:
            aside.append(Path(default_command.loss_file(trainer_flags) or rd.path / "loss.csv"))
        _move_aside(aside, notes)

    spec = JobSpec(
        name=args.name, run_dir=str(rd.path), submission=uuid.uuid4().hex[:12], command=command, cwd=str(cwd),
        checkpoint_dir=str(checkpoint_dir), executor=executor, max_requeues=args.max_requeues,
        max_preemptions=args.max_preemptions, signal_lead_s=lead, deadline=not args.no_deadline,
        deadline_margin_s=margin, time_limit_s=(time_min * 60 if (executor == "local" and args.time is not None) else None),
        stop_signal=args.stop_signal, local_max_runs=LOCAL_MAX_RUNS,
    )
    print(chosen, file=sys.stderr)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.dry_run:
        print("run dir:", rd.path)
        print("checkpoint dir:", checkpoint_dir)
        print("command:", shlex.join(command))
        print(f"time limit: {time_min} min, signal lead {lead:g} s, stop signal {args.stop_signal}, executor {executor}")
        return EXIT_OK

    rd.create()
    try:
        job = submit(args, spec, rd, executor, time_min, lead)
    except Exception as exc:  # sbatch refused, submitit failed: one line, nothing half-done to clean up
        return _fail(f"submission failed: {type(exc).__name__}: {exc}", EXIT_FAILURE)
    rd.write_submission({
        "submission": spec.submission, "name": spec.name, "executor": executor, "job_id": str(job.job_id),
        "submitted_at": time.time(), "command": command, "submit_argv": argv, "time_min": time_min, "signal_lead_s": lead,
    })
    rd.append_event("submit", submission=spec.submission, job_id=str(job.job_id), executor=executor)
    print(f"submitted {executor} job {job.job_id}; run dir {rd.path}", file=sys.stderr)
    if not args.wait and executor != "local":
        print(f"not followed here (--wait follows it): squeue -j {job.job_id}; progress in {rd.status_file}, "
              f"log in {rd.log_file}", file=sys.stderr)
        return EXIT_OK
    # A local job is a child of this command: it is always followed, so the command ends with the training.
    return follow(rd, spec.submission, executor, str(job.job_id), job)


if __name__ == "__main__":
    sys.exit(main())
