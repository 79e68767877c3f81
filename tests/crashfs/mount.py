"""Runs the disk double for a test: mount, power cut (crash image, unmount, mount the image), cleanup.

    fs = CrashFS(tmp_path / "crashfs"); fs.mount()
    fs.freeze_after(n)          # optional: the n-th change from now blocks until the cut
    ...writers work under fs.path...
    kill_tree(writer)           # first the writers die (SIGKILL: nothing of theirs reaches the disk later)
    fs.cut(seed)                # then the power: the mount shows the crash image afterwards
    writer.wait()
    fs.close()                  # always (a finally): lazy unmount, daemon ended
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional

TESTS_DIR = Path(__file__).resolve().parent.parent


class CrashFSError(RuntimeError):
    pass


def unavailable_reason() -> Optional[str]:
    """None when a FUSE file system can be mounted here, else why not."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"/dev/fuse cannot be opened ({exc.strerror})"
    try:
        import mfusepy  # noqa: F401  (raises when libfuse is missing)
    except (ImportError, OSError, AttributeError) as exc:
        return f"the FUSE binding cannot be loaded (pip mfusepy, apt libfuse3-3): {exc}"
    if os.geteuid() != 0 and not shutil.which("fusermount3"):
        return "not root and no fusermount3 (apt fuse3)"
    return None


def kill_tree(proc: "subprocess.Popen[Any]") -> None:
    """SIGKILL to the process group of `proc` (started with start_new_session=True). Reap it after the cut:
    a writer frozen in a change (freeze_after) dies only once the cut lets that change fail."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


class CrashFS:
    """The disk double at `workdir/mnt`; its crash image lives in `workdir/image` between mounts."""

    def __init__(self, workdir: Path, dirs: str = "strict", refuse_direct: bool = False) -> None:
        self.workdir = Path(workdir)
        self.image = self.workdir / "image"
        self.path = self.workdir / "mnt"
        self.dirs = dirs
        self.refuse_direct = refuse_direct
        self.log = self.workdir / "daemon.log"
        self.precut = self.workdir / "precut.pickle"  # the state before the last cut (crashfs.replay)
        self.reports: list[str] = []  # one line per cut, with its seed
        self._proc: Optional["subprocess.Popen[str]"] = None

    def mount(self, timeout: float = 30) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.image.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")])}
        with open(self.log, "a") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "crashfs.daemon", "--image", str(self.image), "--mountpoint", str(self.path),
                 "--dirs", self.dirs, *(["--refuse-direct"] if self.refuse_direct else [])],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, env=env,
            )
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.path):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise CrashFSError(f"crashfs did not mount at {self.path}: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)

    def command(self, **msg: Any) -> dict[str, Any]:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdout is None:
            raise CrashFSError("crashfs is not mounted")
        proc.stdin.write(json.dumps(msg) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise CrashFSError(f"crashfs daemon died: {self.log.read_text()[-2000:]}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise CrashFSError(f"crashfs {msg['cmd']}: {reply.get('error')}")
        return reply

    def freeze_after(self, changes: int) -> None:
        """The `changes`-th change from now (write, truncate, create, rename, unlink, mkdir, rmdir, sync)
        blocks until the cut, and then fails: the cut lands in the middle of the writer's I/O."""
        self.command(cmd="freeze_after", changes=changes)

    def wait_frozen(self, timeout: float) -> bool:
        """Whether the writer reached the frozen change within `timeout` seconds."""
        return bool(self.command(cmd="wait_frozen", timeout=timeout)["frozen"])

    @contextlib.contextmanager
    def syncs_ignored(self) -> Iterator[None]:
        """Inside: fsync/fdatasync succeed but make nothing durable, as if the writer died just before each."""
        self.command(cmd="ignore_syncs", on=True)
        try:
            yield
        finally:
            self.command(cmd="ignore_syncs", on=False)

    def cut(self, seed: int, data: str = "torn", granularity: Optional[int] = None) -> str:
        """The power cut: only the durable state (data="durable") or that plus a random part of the unsynced
        writes, torn at `granularity` (512 or 4096; by default drawn from the seed), survives; the mount then
        shows it. Every writer must be dead already (kill_tree): a write after the cut fails with EIO."""
        reply = self.command(cmd="cut", seed=seed, data=data, granularity=granularity, keep_state=str(self.precut))
        report: str = f"{reply['report']}; state before it: {self.precut}"
        print(report)  # shown with a failing test: replay the cut with crashfs.replay (docs/power-loss.md)
        self.reports.append(report)
        self._unmount()
        self.mount()
        return report

    def _unmount(self, timeout: float = 15) -> None:
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(CrashFSError, OSError, ValueError):
                self.command(cmd="stop")  # a change frozen by a test that failed before its cut fails now
        proc, self._proc = self._proc, None
        # Also when the mount looks gone: a dead daemon leaves one that only answers ENOTCONN.
        cmd = ["umount", "-l", str(self.path)] if os.geteuid() == 0 else ["fusermount3", "-u", "-z", str(self.path)]
        subprocess.run(cmd, check=False, capture_output=True)
        if proc is None:
            return
        try:
            proc.wait(timeout)  # the daemon ends once the last open file of the old mount is closed
        except subprocess.TimeoutExpired:
            proc.kill()  # a file left open on the old mount: its later operations fail
            proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def close(self) -> None:
        """Unmounts (lazily, so a file left open cannot block it) and ends the daemon; safe to call twice."""
        self._unmount()
