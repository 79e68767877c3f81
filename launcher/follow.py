"""Following a submitted job to its end: job id, state, restarts, step, last committed step, log tail.

A rich live view on a terminal, one line per change otherwise (logs, CI). The exit status is the job's.
"""
from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pccheck.contract import EXIT_FAILURE, EXIT_OK, EXIT_REQUEUE, EXIT_USAGE

from . import slurm
from .cycle import cycle_report
from .rundir import RunDir, current_job_id, tail_lines


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
                f"{st.get('total_steps') or '-'} committed {st.get('last_committed_step', '-')} "
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
        table.add_row("step", f"{st.get('step', '-')}/{st.get('total_steps') or '-'}  [{st.get('state', '-')}]"
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
