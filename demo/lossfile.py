"""The loss trace as CSV (`step,loss`), written so a killed and resumed run matches an uninterrupted one byte for byte."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, TextIO

from pccheck.errors import UserError
from pccheck.fsutil import write_atomic

HEADER = "step,loss\n"


class LossFile:
    """Appends one row per completed step; `repr` of the float so the value round-trips exactly."""

    def __init__(self, path: Path, resume_step: Optional[int]) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise UserError(f"directory of --loss-file {self.path} does not exist")
        kept = self._rows_up_to(resume_step) if resume_step is not None else []
        # Durably, by a rename: a power cut must leave the old rows or the new ones, never a shorter file,
        # and never lose the file's name (its rows are synced with each checkpoint from here on).
        write_atomic(self.path, (HEADER + "".join(kept)).encode())
        self._file: TextIO = open(self.path, "a")

    def _rows_up_to(self, step: int) -> list[str]:
        """Rows of steps 1..step from an earlier run; the rows after the checkpoint are cut."""
        if not self.path.exists():
            return []
        rows = []
        with open(self.path) as f:
            for line in f:
                head = line.split(",", 1)[0]
                if head.isdigit() and line.endswith("\n") and int(head) <= step:
                    rows.append(line)
        return rows

    def append(self, step: int, loss: float) -> None:
        self._file.write(f"{step},{loss!r}\n")
        self._file.flush()

    def sync(self) -> None:
        """Makes the rows durable; called with each checkpoint so the file never lags a committed step."""
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()
