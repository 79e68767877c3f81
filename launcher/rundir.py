"""The run directory: everything about one training run, keyed on the run's name (not on a job id).

    runs/<name>/
      submission.json   what pccheck-submit submitted last (executor, job id, submission id, command)
      events.jsonl      lifecycle records written by the job wrapper: start, first_step, stop, requeue, final
      job.log           the job wrapper's log, appended across restarts and resubmissions
      status.json       the command's progress, from the loop helpers (PCCHECK_STATUS_FILE)
      job.lock          held by the running job's wrapper (one job at a time)
      checkpoints/      the default PCCHECK_CHECKPOINT_DIR
      loss.csv          the demo trainer's loss file (default command only)
      submitit/         submitit's folder: <jobid>_0_log.out (the command's output, appended across requeues)

A requeued job keeps its Slurm job id; a dependent resubmission gets a new one. Both find the run
through this directory, so logs, checkpoints and budgets carry over.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Optional

EVENTS = "events.jsonl"
STATUS = "status.json"
SUBMISSION = "submission.json"
JOB_LOG = "job.log"
LOSS = "loss.csv"
CHECKPOINTS = "checkpoints"
SUBMITIT = "submitit"


class RunDir:
    def __init__(self, path: os.PathLike | str) -> None:
        self.path = Path(path).absolute()

    # ----------------------------------------------------------------------------------------- paths
    @property
    def events_file(self) -> Path:
        return self.path / EVENTS

    @property
    def status_file(self) -> Path:
        return self.path / STATUS

    @property
    def submission_file(self) -> Path:
        return self.path / SUBMISSION

    @property
    def log_file(self) -> Path:
        return self.path / JOB_LOG

    @property
    def submitit_dir(self) -> Path:
        return self.path / SUBMITIT

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def create(self) -> "RunDir":
        self.path.mkdir(parents=True, exist_ok=True)
        self.submitit_dir.mkdir(exist_ok=True)
        return self

    # ---------------------------------------------------------------------------------------- events
    def append_event(self, event: str, **fields: Any) -> dict:
        """Appends one JSON line (O_APPEND, one write: concurrent writers do not interleave)."""
        record = {"event": event, "time": time.time(), **fields}
        line = (json.dumps(record, default=str) + "\n").encode()
        fd = os.open(self.events_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return record

    def events(self, submission: Optional[str] = None) -> list[dict]:
        """All records (of one submission when given); a torn last line is skipped."""
        out = []
        try:
            text = self.events_file.read_text()
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if submission is None or record.get("submission") == submission:
                out.append(record)
        return out

    # ---------------------------------------------------------------------------------------- status
    def read_status(self) -> dict:
        return read_json(self.status_file) or {}

    def read_submission(self) -> dict:
        return read_json(self.submission_file) or {}

    def write_submission(self, data: dict) -> None:
        tmp = self.submission_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        os.replace(tmp, self.submission_file)


def read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, IsADirectoryError):
        return None


def tail_lines(path: Path, n: int, max_bytes: int = 64 * 1024) -> list[str]:
    """The last n lines of a text file (progress-bar carriage returns folded)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return []
    lines = [line.rsplit("\r", 1)[-1] for line in data.splitlines()]
    return [line for line in lines if line.strip()][-n:]


def current_job_id(events: list[dict], default: str) -> str:
    """The job that runs the command now: the newest start's job id, or a resubmission made after it."""
    job_id = default
    for e in events:
        if e.get("event") == "start" and e.get("job_id"):
            job_id = str(e["job_id"])
        elif e.get("new_job_id"):
            job_id = str(e["new_job_id"])
    return job_id
