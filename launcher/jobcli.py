"""The job wrapper as a command, for plain sbatch scripts (sbatch/*.sbatch) that do not use submitit:

    srun python -m pccheck.launcher.jobcli [options] -- CMD [ARGS...]

Each task runs CMD under the same contract (docs/jobs.md) and the same decisions as pccheck-submit's
jobs: the stop request, the hard limit, progress, budgets, `scontrol requeue` by rank 0, a dependent
resubmission of the batch script (--resubmit) when Slurm refuses the requeue. Needs no submitit.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Optional, Sequence

from pccheck.cli import OneLineParser, int_at_least
from pccheck.contract import DEFAULT_STOP_SIGNAL, EXIT_USAGE

from . import slurm
from .command import command_problem
from .wrapper import DEFAULT_SIGNAL_LEAD_S, JobSpec, _JobFinished, run_job

PROG = "python -m pccheck.launcher.jobcli"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=os.environ.get("SLURM_JOB_NAME", "pccheck"), help="run name (default: the job name)")
    p.add_argument("--run-dir", default=None, help="default: $PCCHECK_RUN_DIR, else $SLURM_SUBMIT_DIR/runs/<name>")
    p.add_argument("--checkpoint-dir", default=None, help="default: <run dir>/checkpoints")
    p.add_argument("--max-requeues", type=int_at_least(0), default=10)
    p.add_argument("--max-preemptions", type=int_at_least(0), default=20)
    p.add_argument("--signal-lead", type=float, default=DEFAULT_SIGNAL_LEAD_S,
                   help="the lead of the script's #SBATCH --signal=USR2@LEAD (default %(default)s)")
    p.add_argument("--deadline-margin", type=float, default=None)
    p.add_argument("--no-deadline", action="store_true")
    p.add_argument("--stop-signal", default=DEFAULT_STOP_SIGNAL.name)
    p.add_argument("--resubmit", default=None, metavar="'SCRIPT ARGS'",
                   help="the batch script and its arguments (one shell-quoted string), resubmitted when requeue is refused")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    parser = build_parser()
    args, command = parser.parse_args(argv[:cut]), argv[cut + 1 :]
    if not command:
        parser.error("name the command after --")
    cwd = Path.cwd()
    problem = command_problem(command, cwd)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    run_dir = Path(args.run_dir or os.environ.get("PCCHECK_RUN_DIR")
                   or Path(os.environ.get("SLURM_SUBMIT_DIR", cwd)) / "runs" / args.name).absolute()
    spec = JobSpec(
        name=args.name, run_dir=str(run_dir), command=command, cwd=str(cwd),
        # a requeued job keeps its id; a dependent resubmission is told the first one's
        submission=os.environ.get(slurm.SUBMISSION_ENV) or os.environ.get("SLURM_JOB_ID", str(os.getpid())),
        checkpoint_dir=str(Path(args.checkpoint_dir).absolute() if args.checkpoint_dir else run_dir / "checkpoints"),
        executor="slurm", max_requeues=args.max_requeues, max_preemptions=args.max_preemptions,
        signal_lead_s=args.signal_lead, deadline=not args.no_deadline, deadline_margin_s=args.deadline_margin,
        stop_signal=args.stop_signal, resubmit=shlex.split(args.resubmit) if args.resubmit else None,
    )
    try:
        run_job(spec)
    except _JobFinished:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
