"""pccheck-submit: run pccheck training as a job that comes back by itself after a time limit or preemption.

    pccheck-submit --steps 151 --freq 50 --wait

submits the training (every pccheck-train flag is accepted and passed through) with submitit: on
Slurm when a controller answers, else with submitit's local executor (--executor auto). With --wait it
follows the job to the end (job id, state, restarts, last committed step, log tail) and exits 0 only
if training completed.

Exit status: 0 completed; 1 failed (crash, killed, Slurm error); 2 usage error; 75 stopped for good
with a durable checkpoint (requeue budget spent, no progress, requeue impossible): submit again with
the same --name to continue. Without --wait (Slurm only; a local job is always followed): 0 once submitted.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Optional, Sequence

from pccheck.cli import OneLineParser, int_at_least

from . import slurm
from .job import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE, EXIT_USAGE, JobSpec, TrainingJob
from .rundir import RunDir, tail_lines

LOCAL_DEFAULT_TIME_MIN = 7 * 24 * 60.0  # "no limit" for the local executor
SLURM_DEFAULT_TIME_MIN = 60.0
LOCAL_MAX_RUNS = 6  # submitit's local controller starts a task at most this many times


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of minutes") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be > 0 minutes")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="pccheck-submit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every other flag is a pccheck-train flag (see pccheck-train --help), e.g. --checkpointer, "
        "--seed, --model-dtype, --sequence-length, --loss-file, --batch-size, --max-async, --keep.",
    )
    r = p.add_argument_group("run")
    r.add_argument("--name", default="pccheck", help="run name; the run directory and resume key (default: %(default)s)")
    r.add_argument("--run-dir", default=None, help="run directory (default: runs/<name> under the current directory)")
    r.add_argument("--fresh", action="store_true", help="start over: move existing checkpoints, loss and status files aside")
    r.add_argument("--wait", action="store_true", help="follow the job to its end; exit 0 only if training completed")
    r.add_argument("--executor", choices=["auto", "slurm", "local"], default="auto",
                   help="auto: Slurm when a controller answers, else submitit's local executor")
    r.add_argument("--dry-run", action="store_true", help="print what would be submitted and exit")
    t = p.add_argument_group("training shortcuts")
    t.add_argument("--steps", "--training-steps", dest="training_steps", type=int, default=None,
                   help="= pccheck-train --training-steps")
    t.add_argument("--freq", "--checkpoint-freq", dest="checkpoint_freq", type=int, default=None,
                   help="= pccheck-train --checkpoint-freq")
    s = p.add_argument_group("Slurm")
    s.add_argument("--partition")
    s.add_argument("--account")
    s.add_argument("--time", type=_minutes, default=None,
                   help=f"time limit in minutes (float ok). Slurm default {SLURM_DEFAULT_TIME_MIN:g}; "
                   "with --executor local an emulated limit (USR2 at limit - signal lead, then a restart)")
    s.add_argument("--nodes", type=int)
    s.add_argument("--ntasks-per-node", type=int)
    s.add_argument("--gpus-per-task", type=int)
    s.add_argument("--cpus-per-task", type=int)
    s.add_argument("--mem", help="memory per node, e.g. 64G")
    s.add_argument("--uenv", help="Alps user environment, e.g. pytorch/v2.6.0:/user-environment")
    s.add_argument("--view", default=None, help="uenv view (default with --uenv: default)")
    s.add_argument("--environment", help="Alps Container Engine environment (EDF .toml name or path)")
    s.add_argument("--signal-lead", type=float, default=None,
                   help="seconds before the limit for the warning signal (USR2); must cover one step + one "
                   "checkpoint (default 90, at most a quarter of --time)")
    s.add_argument("--max-requeues", type=int_at_least(0), default=10, help="requeues after time-limit stops (default %(default)s)")
    s.add_argument("--max-preemptions", type=int_at_least(0), default=20,
                   help="requeues after preemption, scancel --signal, scontrol requeue (default %(default)s)")
    s.add_argument("--deadline-margin", type=float, default=None,
                   help="seconds kept free before the end time beyond one step + one checkpoint (default 20)")
    s.add_argument("--no-deadline", action="store_true", help="rely on signals only (no stop from the job's end time)")
    s.add_argument("--python", default=None, help="python command in the job (default: this interpreter; "
                   "'python3' with --environment)")
    s.add_argument("--sbatch", action="append", default=[], metavar="KEY=VALUE",
                   help="extra #SBATCH option, repeatable (e.g. --sbatch qos=normal --sbatch constraint=gpu)")
    return p


# ------------------------------------------------------------------------------------- trainer argv


def _has_flag(argv: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _flag_value(argv: Sequence[str], flag: str) -> Optional[str]:
    for i, a in enumerate(argv):
        if a == flag and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _set_flag(argv: list[str], flag: str, value: str) -> None:
    for i, a in enumerate(argv):
        if a == flag:
            argv[i + 1] = value
            return
        if a.startswith(flag + "="):
            argv[i] = f"{flag}={value}"
            return
    argv += [flag, value]


def _core_works() -> bool:
    try:
        import pccheck._core  # noqa: F401
    except Exception:
        return False
    return True


def trainer_argv(args: argparse.Namespace, rest: list[str], rd: RunDir, notes: list[str]) -> list[str]:
    argv = list(rest)
    if args.training_steps is not None:
        _set_flag(argv, "--training-steps", str(args.training_steps))
    if args.checkpoint_freq is not None:
        _set_flag(argv, "--checkpoint-freq", str(args.checkpoint_freq))
    if not _has_flag(argv, "--checkpointer"):
        if _core_works():
            argv += ["--checkpointer", "pccheck"]
        else:
            argv += ["--checkpointer", "torchsave"]
            notes.append("the pccheck C++ core is not importable here: using --checkpointer torchsave")
    elif _flag_value(argv, "--checkpointer") == "none":
        notes.append("--checkpointer none: a requeued job starts over from step 0")
    for flag, default in (("--checkpoint-dir", rd.path / "checkpoints"), ("--loss-file", rd.path / "loss.csv"),
                          ("--status-file", rd.status_file)):
        value = _flag_value(argv, flag)
        _set_flag(argv, flag, str(Path(value).absolute() if value else default))
    if not _has_flag(argv, "--load-checkpoint"):
        argv.append("--load-checkpoint")
    return argv


def validate_trainer_argv(argv: list[str]) -> Optional[str]:
    """One-line error from the trainer's own parser, or None (checked here, not minutes later in the job)."""
    try:
        from pccheck.train import build_parser as trainer_parser
    except Exception:  # trainer not importable here (e.g. no torch on the login node): the job will tell
        return None
    import contextlib
    import io

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            trainer_parser().parse_args([a for a in argv if a != "--load-checkpoint"] + ["--load-checkpoint"])
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else f"invalid trainer flags ({exc.code})"
    return None


# ------------------------------------------------------------------------------------------- submit


def _time_str(minutes: float) -> str:
    if minutes == int(minutes):
        return str(int(minutes))
    whole = int(minutes)
    return f"{whole}:{int(round((minutes - whole) * 60)):02d}"


def _still_active(rd: RunDir) -> Optional[str]:
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


def current_job_id(events: list[dict], default: str) -> str:
    """The job that runs the training now: the newest start's job id, or a resubmission made after it."""
    job_id = default
    for e in events:
        if e.get("event") == "start" and e.get("job_id"):
            job_id = str(e["job_id"])
        elif e.get("new_job_id"):
            job_id = str(e["new_job_id"])
    return job_id


def _move_aside(paths: list[Path], notes: list[str]) -> None:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for p in paths:
        if p.exists():
            dest = p.with_name(f"{p.name}.old-{stamp}")
            p.rename(dest)
            notes.append(f"--fresh: moved {p} to {dest.name}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    notes: list[str] = []
    stray = [a for i, a in enumerate(rest) if not a.startswith("-") and (i == 0 or not rest[i - 1].startswith("-"))]
    if stray:
        parser.error(f"unexpected argument {stray[0]!r}")

    rd = RunDir(args.run_dir or Path("runs") / args.name)
    active = _still_active(rd) if rd.path.exists() else None
    if active and not args.dry_run:
        print(f"pccheck-submit: error: run {args.name!r} ({rd.path}) is still active as {active}; wait for it, "
              f"cancel it, or use another --name", file=sys.stderr)
        return EXIT_USAGE

    # executor
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
                print(f"pccheck-submit: error: --executor slurm, but {why}", file=sys.stderr)
                return EXIT_USAGE

    time_min = args.time if args.time is not None else (SLURM_DEFAULT_TIME_MIN if executor == "slurm" else None)
    lead = args.signal_lead if args.signal_lead is not None else 90.0
    if time_min is not None and lead > time_min * 60 / 4:
        new = max(5.0, math.floor(time_min * 60 / 4))
        if args.signal_lead is not None:
            notes.append(f"--signal-lead {lead:g} s is too close to the {time_min:g} min limit: using {new:g} s")
        lead = new

    if args.fresh and not args.dry_run:
        ckpt = _flag_value(rest, "--checkpoint-dir")
        loss = _flag_value(rest, "--loss-file")
        _move_aside([Path(ckpt) if ckpt else rd.path / "checkpoints", Path(loss) if loss else rd.path / "loss.csv",
                     rd.status_file], notes)

    margin = args.deadline_margin
    if margin is None and time_min is not None:
        # 20 s, but at most a tenth of short limits (Slurm enforces limits 0-30 s late, never early)
        margin = min(20.0, max(2.0, time_min * 60 / 10))

    targv = trainer_argv(args, rest, rd, notes)
    err = validate_trainer_argv(targv)
    if err:
        print(err, file=sys.stderr)
        return EXIT_USAGE

    spec = JobSpec(
        name=args.name,
        run_dir=str(rd.path),
        submission=uuid.uuid4().hex[:12],
        trainer_argv=targv,
        executor=executor,
        max_requeues=args.max_requeues,
        max_preemptions=args.max_preemptions,
        signal_lead_s=lead,
        deadline=not args.no_deadline,
        deadline_margin_s=margin,
        time_limit_s=(time_min * 60 if (executor == "local" and args.time is not None) else None),
        extra={"local_max_runs": LOCAL_MAX_RUNS} if executor == "local" else {},
    )

    print(chosen, file=sys.stderr)
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    if args.dry_run:
        print("run dir:", rd.path)
        print("pccheck-train", shlex.join(targv))
        print(f"time limit: {time_min} min, signal lead {lead:g} s, executor {executor}")
        return EXIT_OK

    rd.create()
    try:
        job = _submit(args, spec, rd, executor, time_min, lead)
    except Exception as exc:
        print(f"pccheck-submit: error: submission failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    rd.write_submission({
        "submission": spec.submission, "name": spec.name, "executor": executor, "job_id": str(job.job_id),
        "submitted_at": time.time(), "trainer_argv": targv, "submit_argv": list(sys.argv[1:] if argv is None else argv),
        "time_min": time_min, "signal_lead_s": lead,
    })
    rd.append_event("submit", submission=spec.submission, job_id=str(job.job_id), executor=executor)
    print(f"submitted {executor} job {job.job_id}; run dir {rd.path}", file=sys.stderr)
    if not args.wait and executor != "local":
        return EXIT_OK
    # A local job is a child of this command: it is always followed, so the command ends with the training.
    return follow(rd, spec.submission, executor, str(job.job_id), job)


def _submit(args: argparse.Namespace, spec: JobSpec, rd: RunDir, executor: str, time_min: Optional[float], lead: float):
    import submitit

    if executor == "local":
        ex = submitit.LocalExecutor(folder=rd.submitit_dir, max_num_timeout=10**6)
        ex.update_parameters(
            timeout_min=time_min if time_min is not None else LOCAL_DEFAULT_TIME_MIN,
            signal_delay_s=int(lead),
            stderr_to_stdout=True,
        )
        return ex.submit(TrainingJob(spec))

    python = args.python or ("python3" if args.environment else None)
    ex = submitit.SlurmExecutor(folder=rd.submitit_dir, max_num_timeout=10**6, python=python)
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
        setup=["trap 'echo \"[pccheck] batch shell: got SIGTERM, waiting for srun\" >&2' TERM",
               f"export PCCHECK_RUN_DIR={shlex.quote(str(rd.path))}"],
    )
    for key in ("partition", "account", "nodes", "ntasks_per_node", "gpus_per_task", "cpus_per_task", "mem"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    ex.update_parameters(**params)
    return ex.submit(TrainingJob(spec))


# ------------------------------------------------------------------------------------------- follow


class _View:
    def __init__(self, rd: RunDir, submission: str, executor: str, job_id: str, job: Any) -> None:
        self.rd, self.submission, self.executor, self.job_id, self.job = rd, submission, executor, job_id, job
        self.state, self.restarts, self.reason = "SUBMITTED", 0, ""
        self.events: list[dict] = []
        self.status: dict = {}
        self.final: Optional[dict] = None
        self.terminal_since: Optional[float] = None
        self.started = time.time()

    def poll(self) -> None:
        self.events = self.rd.events(self.submission)
        self.status = self.rd.read_status()
        self.job_id = current_job_id(self.events, self.job_id)
        finals = [e for e in self.events if e.get("event") == "final"]
        self.final = finals[-1] if finals else None
        if self.executor == "slurm":
            self.state, self.restarts, self.reason = slurm.job_state(self.job_id)
            terminal = self.state in slurm.TERMINAL_STATES or self.state == "UNKNOWN"
        else:
            proc = getattr(self.job, "_process", None)
            rc = proc.poll() if proc is not None else 0
            self.state = "RUNNING" if rc is None else f"EXITED({rc})"
            self.restarts = max(0, sum(1 for e in self.events if e.get("event") == "start") - 1)
            terminal = rc is not None
        if terminal:
            self.terminal_since = self.terminal_since or time.time()
        else:
            self.terminal_since = None

    def done(self) -> bool:
        if self.final is not None and (self.terminal_since is not None or self.final.get("exit_code") == 0
                                       or time.time() - self.final["time"] > 30):
            return True
        # ended without a final record: give Slurm time for requeue transitions before calling it failed
        grace = 20.0 if self.executor == "slurm" else 2.0
        return self.terminal_since is not None and time.time() - self.terminal_since > grace

    def exit_code(self) -> tuple[int, str]:
        if self.final is not None:
            return int(self.final.get("exit_code", EXIT_FAILURE)), self.final.get("reason", "")
        log = self.log_file()
        return EXIT_FAILURE, (f"the job ended ({self.state}{' ' + self.reason if self.reason and self.reason != 'None' else ''}) "
                              f"without a final record: killed before it could write one? see {log}")

    def log_file(self) -> Path:
        return self.rd.submitit_dir / f"{self.job_id}_0_log.out"

    def last_event(self) -> str:
        for e in reversed(self.events):
            kind = e.get("event")
            if kind in ("stop", "requeue", "final", "refused"):
                return f"{kind}: {e.get('reason') or e.get('how') or ''} {('(' + e['kind'] + ')') if e.get('kind') else ''}".strip()
            if kind == "start":
                return f"start #{e.get('run')} (committed step {e.get('committed_before')})"
        return ""

    def line(self) -> str:
        st = self.status
        return (f"job {self.job_id} {self.state} restarts {self.restarts} step {st.get('step', '-')}/"
                f"{st.get('training_steps', '-')} committed {st.get('last_committed_step', '-')} "
                f"[{st.get('state', '-')}] {self.last_event()}")

    def render(self):
        from rich.console import Group
        from rich.panel import Panel
        from rich.table import Table
        from rich.text import Text

        st = self.status
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold")
        table.add_column()
        table.add_row("run", f"{self.rd.path}")
        table.add_row("job", f"{self.job_id} ({self.executor})  state {self.state}  restarts {self.restarts}")
        table.add_row("step", f"{st.get('step', '-')}/{st.get('training_steps', '-')}  [{st.get('state', '-')}]"
                      f"  {_fmt(st.get('step_seconds'), 's/step')}")
        table.add_row("committed", f"{st.get('last_committed_step', '-')}  checkpoint {_fmt(st.get('checkpoint_seconds'), 's')}")
        table.add_row("last event", self.last_event())
        table.add_row("elapsed", f"{time.time() - self.started:.0f} s")
        tail = "\n".join(tail_lines(self.log_file(), 8)) or "(no log yet)"
        return Group(Panel(table, title="pccheck-submit"), Panel(Text(tail, overflow="ellipsis", no_wrap=True), title="log tail"))


def _fmt(value: Any, unit: str) -> str:
    return f"{value:.3f} {unit}" if isinstance(value, (int, float)) else "-"


def follow(rd: RunDir, submission: str, executor: str, job_id: str, job: Any = None, poll_s: float = 1.0) -> int:
    from rich.console import Console
    from rich.live import Live

    view = _View(rd, submission, executor, job_id, job)
    console = Console()
    interrupted = False

    def on_int(signum, frame):
        nonlocal interrupted
        interrupted = True

    old = signal.signal(signal.SIGINT, on_int) if executor == "slurm" else None
    try:
        if console.is_terminal:
            with Live(view.render(), console=console, refresh_per_second=4) as live:
                while not interrupted:
                    view.poll()
                    live.update(view.render())
                    if view.done():
                        break
                    time.sleep(poll_s)
        else:
            last = None
            while not interrupted:
                view.poll()
                line = view.line()
                if line != last:
                    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)
                    last = line
                if view.done():
                    break
                time.sleep(poll_s)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    if interrupted:
        print(f"stopped following; job {view.job_id} continues (run dir {rd.path})", file=sys.stderr)
        return 130
    code, reason = view.exit_code()
    word = {EXIT_OK: "completed", EXIT_REQUEUE: "stopped", EXIT_USAGE: "failed (user error)"}.get(code, "failed")
    print(f"pccheck-submit: {word}: {reason}", file=sys.stderr)
    for line in cycle_report(view.events):
        print(line, file=sys.stderr)
    return code


def cycle_breakdown(events: list[dict]) -> list[dict]:
    """Per requeue: seconds from the stop signal to the first step after the restart, in parts."""
    out = []
    for i, e in enumerate(events):
        if e.get("event") != "stop":
            continue
        later = events[i + 1:]
        req = next((x for x in later if x.get("event") == "requeue"), None)
        start = next((x for x in later if x.get("event") == "start"), None)
        first = next((x for x in later if x.get("event") == "first_step" and start and x.get("run") == start.get("run")), None)
        if not (req and start and first):
            continue
        t_sig = e.get("signal_at") or e.get("stop_at")
        d = {
            "kind": e.get("kind"), "trigger": e.get("trigger"),
            "signal_to_step_boundary": e["stop_at"] - t_sig if t_sig and e.get("stop_at") else None,
            "checkpoint_durable": e["stopped_at"] - e["stop_at"] if e.get("stop_at") else None,
            "requeue_command": req["requeued_at"] - e["stopped_at"],
            "requeue_to_new_process": start["process_start"] - req["requeued_at"],
            "process_to_wrapper": start["fn_start"] - start["process_start"],
            "wrapper_to_first_step": first["time"] - start["fn_start"],
        }
        d["total"] = first["time"] - (t_sig or e["stopped_at"])
        out.append(d)
    return out


def cycle_report(events: list[dict]) -> list[str]:
    lines = []
    for n, d in enumerate(cycle_breakdown(events), 1):
        parts = ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in d.items()
                          if k not in ("kind", "trigger", "total") and v is not None)
        lines.append(f"requeue {n} ({d['kind']}, {d['trigger']}): {d['total']:.1f} s from signal to first step: {parts}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
