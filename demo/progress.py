"""Training progress: a rich bar on a terminal, plain periodic lines otherwise (logs, Slurm output files)."""
from __future__ import annotations

import sys
import time
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    def __init__(self, total_steps: int, start_step: int, log_every_s: float = 5.0) -> None:
        self.total = total_steps
        self.start_step = start_step
        self.log_every_s = log_every_s
        self.console = Console(stderr=True)
        self.checkpoint = "-"
        self._t0 = time.monotonic()
        self._last_log = 0.0
        self._bar: Optional[Progress] = None
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} steps/s"),
                TextColumn("ckpt {task.fields[ckpt]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self._task = self._bar.add_task("train", total=total_steps, completed=start_step, loss="-", rate="-", ckpt="-")
            self._bar.start()

    def note(self, message: str) -> None:
        """An event worth a line of its own (checkpoint committed, resumed, stopping)."""
        self.console.print(f"[pccheck] {message}", highlight=False, markup=False, soft_wrap=True)  # one line, even in a log file

    def step(self, step: int, loss: float) -> None:
        done = step - self.start_step
        rate = done / max(1e-9, time.monotonic() - self._t0)
        if self._bar is not None:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4f}", rate=f"{rate:.1f}", ckpt=self.checkpoint)
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s or step == self.total:
            self._last_log = now
            print(
                f"[pccheck] step {step}/{self.total} loss {loss:.4f} {rate:.2f} steps/s ckpt {self.checkpoint}",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
