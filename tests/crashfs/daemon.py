"""The FUSE daemon of the disk double: serves a Disk at a mount point, takes commands on stdin.

    python -m crashfs.daemon --image DIR --mountpoint MNT [--dirs strict|ordered] [--refuse-direct]

Starts from the crash image in DIR (everything in it durable). Commands, one JSON object a line on stdin,
each answered by one JSON line on stdout:
    {"cmd": "ping"}
    {"cmd": "freeze_after", "changes": 40}   the 40th change from now (a write, truncate, create, rename,
                                             unlink, mkdir, rmdir or sync) blocks until the cut and then fails:
                                             a power cut in the middle of the writer's I/O
    {"cmd": "wait_frozen", "timeout": 30}    answers {"frozen": bool} once that change is reached (or at timeout)
    {"cmd": "stop"}                          every operation from now on fails with EIO, a frozen one too (so the
                                             mount can go away even when a test failed before its cut)
    {"cmd": "ignore_syncs", "on": true}      acknowledge fsync/fdatasync without doing them (a crash "just before")
    {"cmd": "cut", "seed": 7, "data": "torn", "granularity": 512, "keep_state": PATH}   the power cut: writes
                                             the crash image to DIR (and the state before the cut to PATH, for
                                             crashfs.replay) and answers every later file operation with EIO;
                                             the caller then unmounts (the daemon exits) and mounts DIR again
The mount caches neither entries nor attributes (timeouts 0) and the kernel drops cached pages at each open.
"""
from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import pickle
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import mfusepy

from . import image
from .model import DIR_MODES, Dir, Disk, File, fs_error

T = TypeVar("T")
CAPACITY = 64 << 30  # what statfs reports as the size of the disk
BLOCK = 4096


class CrashOps(mfusepy.Operations):
    use_ns = True

    def __init__(self, disk: Disk, refuse_direct: bool = False) -> None:
        self.disk = disk
        self.refuse_direct = refuse_direct  # like file systems without O_DIRECT (the core falls back)
        self._mutex = threading.Lock()  # FUSE runs single-threaded; the command thread takes this too
        self.dead = False  # after a cut: the disk is gone until the next mount
        self.handles: dict[int, int] = {}  # open file handle -> inode
        self._next_fh = 1
        self._freeze_in: Optional[int] = None  # changes left before the one that blocks until the cut
        self._frozen = threading.Event()
        self._cut_done = threading.Event()

    def _locked(self, fn: Callable[[], T]) -> T:
        with self._mutex:
            if self.dead:
                raise fs_error(errno.EIO)
            return fn()

    def _changing(self, fn: Callable[[], T]) -> T:
        """_locked for an operation that changes the disk or makes something durable: the one the test
        chose (freeze_after) blocks until the cut, which it then does not reach."""
        with self._mutex:
            freeze = self._freeze_in is not None and self._freeze_in <= 1
            if self._freeze_in is not None:
                self._freeze_in -= 1
            if freeze:
                self._freeze_in = None
                self._frozen.set()
        if freeze:
            self._cut_done.wait()
        return self._locked(fn)

    def _ino(self, path: Optional[str], fh: Optional[int]) -> int:
        if fh is not None and fh in self.handles:
            return self.handles[fh]
        if path is None:
            raise fs_error(errno.EBADF)
        return self.disk.lookup(path)

    def _handle(self, ino: int) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = ino
        return fh

    # -- mount -------------------------------------------------------------------------------------
    def init_with_config(self, conn: Any, config: Any) -> None:
        if config is not None:
            config.entry_timeout = 0.0
            config.attr_timeout = 0.0
            config.negative_timeout = 0.0
            config.hard_remove = 1  # an unlinked open file is not renamed to .fuse_hidden*
            config.nullpath_ok = 1
            config.use_ino = 1
            config.kernel_cache = 0
            config.auto_cache = 0

    # -- metadata ----------------------------------------------------------------------------------
    def getattr(self, path: Optional[str], fh: Optional[int] = None) -> dict[str, Any]:
        def attrs() -> dict[str, Any]:
            ino = self._ino(path, fh)
            node = self.disk.node(ino)
            size = len(node.data) if isinstance(node, File) else BLOCK
            nlink = 2 + sum(isinstance(self.disk.node(c), Dir) for c in node.entries.values()) if isinstance(node, Dir) else 1
            t = int(node.mtime * 1e9)
            return dict(
                st_ino=ino, st_mode=node.mode, st_nlink=nlink, st_size=size, st_uid=os.getuid(), st_gid=os.getgid(),
                st_blocks=-(-size // 512), st_blksize=BLOCK, st_atime=t, st_mtime=t, st_ctime=t,
            )

        return self._locked(attrs)

    def access(self, path: str, amode: int) -> int:
        self._locked(lambda: self.disk.lookup(path))
        return 0

    def chmod(self, path: Optional[str], mode: int) -> int:
        def run() -> None:
            node = self.disk.node(self._ino(path, None))
            node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)

        self._locked(run)
        return 0

    def chown(self, path: Optional[str], uid: int, gid: int) -> int:
        self._locked(lambda: self._ino(path, None))
        return 0

    def utimens(self, path: Optional[str], times: Optional[tuple[int, int]] = None) -> int:
        def run() -> None:
            node = self.disk.node(self._ino(path, None))
            node.mtime = times[1] / 1e9 if times else time.time()

        self._locked(run)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        def run() -> dict[str, int]:
            used = sum(len(n.data) for n in self.disk.nodes.values() if isinstance(n, File))
            free = max(0, CAPACITY - used) // BLOCK
            return dict(
                f_bsize=BLOCK, f_frsize=BLOCK, f_blocks=CAPACITY // BLOCK, f_bfree=free, f_bavail=free,
                f_files=1 << 20, f_ffree=(1 << 20) - len(self.disk.nodes), f_favail=(1 << 20) - len(self.disk.nodes),
                f_namemax=255,
            )

        return self._locked(run)

    # -- namespace ---------------------------------------------------------------------------------
    def create(self, path: str, mode: int, flags: int = 0) -> int:
        if flags & os.O_DIRECT and self.refuse_direct:
            raise fs_error(errno.EINVAL)
        return self._changing(lambda: self._handle(self.disk.create(path, mode)))

    def mkdir(self, path: str, mode: int) -> int:
        self._changing(lambda: self.disk.mkdir(path, mode))
        return 0

    def unlink(self, path: str) -> int:
        self._changing(lambda: self.disk.unlink(path))
        return 0

    def rmdir(self, path: str) -> int:
        self._changing(lambda: self.disk.rmdir(path))
        return 0

    def rename(self, old: str, new: str) -> int:
        self._changing(lambda: self.disk.rename(old, new))
        return 0

    def opendir(self, path: str) -> int:
        def run() -> int:
            ino = self.disk.lookup(path)
            if not isinstance(self.disk.node(ino), Dir):
                raise fs_error(errno.ENOTDIR)
            return self._handle(ino)

        return self._locked(run)

    def readdir(self, path: Optional[str], fh: int) -> list[tuple[str, dict[str, int], int]]:
        def run() -> list[tuple[str, dict[str, int], int]]:
            ino = self._ino(path, fh)
            node = self.disk.node(ino)
            assert isinstance(node, Dir)
            dot = [(".", {"st_ino": ino, "st_mode": node.mode}, 0), ("..", {"st_ino": ino, "st_mode": node.mode}, 0)]
            # use_ino: an entry's inode number must not be 0 (readdir(3) skips those)
            return dot + [(name, {"st_ino": c, "st_mode": self.disk.node(c).mode}, 0) for name, c in node.entries.items()]

        return self._locked(run)

    def releasedir(self, path: Optional[str], fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
        return 0

    def fsyncdir(self, path: Optional[str], datasync: int, fh: int) -> int:
        self._changing(lambda: self.disk.fsync(self._ino(path, fh)))
        return 0

    # -- files -------------------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        def run() -> int:
            ino = self.disk.lookup(path)
            self.disk.file(ino)
            if flags & os.O_DIRECT and self.refuse_direct:
                raise fs_error(errno.EINVAL)
            if flags & os.O_TRUNC:  # libfuse asks the kernel for atomic O_TRUNC: the truncation comes here
                self.disk.truncate(ino, 0)
            return self._handle(ino)

        return self._changing(run) if flags & os.O_TRUNC else self._locked(run)

    def read(self, path: Optional[str], size: int, offset: int, fh: int) -> bytes:
        return self._locked(lambda: self.disk.read(self._ino(path, fh), offset, size))

    def write(self, path: Optional[str], data: bytes, offset: int, fh: int) -> int:
        return self._changing(lambda: self.disk.write(self._ino(path, fh), offset, data))

    def truncate(self, path: Optional[str], length: int, fh: Optional[int] = None) -> int:
        self._changing(lambda: self.disk.truncate(self._ino(path, fh), length))
        return 0

    def fallocate(self, path: Optional[str], mode: int, offset: int, size: int, fh: int) -> int:
        if mode != 0:  # only plain preallocation; posix_fallocate needs no more
            raise fs_error(errno.EOPNOTSUPP)
        self._changing(lambda: self.disk.allocate(self._ino(path, fh), offset, size))
        return 0

    def fsync(self, path: Optional[str], datasync: int, fh: int) -> int:
        self._changing(lambda: self.disk.fsync(self._ino(path, fh)))
        return 0

    def flush(self, path: Optional[str], fh: int) -> int:
        return 0  # close() promises nothing about durability

    def release(self, path: Optional[str], fh: int) -> int:
        with self._mutex:
            self.handles.pop(fh, None)
        return 0

    # -- commands ----------------------------------------------------------------------------------
    def command(self, msg: dict[str, Any], image_dir: Path) -> dict[str, Any]:
        if msg["cmd"] == "wait_frozen":
            return {"ok": True, "frozen": self._frozen.wait(float(msg["timeout"]))}
        if msg["cmd"] == "stop":
            with self._mutex:
                self.dead = True
            self._cut_done.set()
            return {"ok": True}
        with self._mutex:
            if self.dead:
                return {"ok": False, "error": "the disk was cut already; unmount and mount again"}
            if msg["cmd"] == "ping":
                return {"ok": True}
            if msg["cmd"] == "freeze_after":
                self._freeze_in = int(msg["changes"])
                return {"ok": True}
            if msg["cmd"] == "ignore_syncs":
                self.disk.ignore_syncs = bool(msg["on"])
                return {"ok": True}
            if msg["cmd"] == "cut":
                if msg.get("keep_state"):  # for crashfs.replay: the same cut, offline, from this state and seed
                    with open(msg["keep_state"], "wb") as f:
                        pickle.dump(self.disk, f)
                crashed, report = self.disk.crash_image(int(msg["seed"]), msg.get("data", "torn"), msg.get("granularity"))
                image.save(crashed, image_dir)
                self.dead = True
                self._cut_done.set()  # the frozen operation goes on, and fails
                return {"ok": True, "report": str(report)}
        return {"ok": False, "error": f"unknown command {msg['cmd']!r}"}


def _serve_commands(ops: CrashOps, image_dir: Path, mountpoint: str) -> None:
    for line in sys.stdin:
        try:
            reply = ops.command(json.loads(line), image_dir)
        except Exception as exc:  # answered, never fatal: the test reads the error
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    # End of input: the test process is gone (killed, say) and cannot unmount: leave no mount behind.
    unmount = ["umount", "-l", mountpoint] if os.geteuid() == 0 else ["fusermount3", "-u", "-z", mountpoint]
    subprocess.run(unmount, check=False, capture_output=True)


def main() -> None:
    p = argparse.ArgumentParser(prog="crashfs")
    p.add_argument("--image", type=Path, required=True)
    p.add_argument("--mountpoint", required=True)
    p.add_argument("--dirs", choices=DIR_MODES, default="strict")
    p.add_argument("--refuse-direct", action="store_true", help="open with O_DIRECT fails with EINVAL")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="crashfs: %(message)s")  # errors of the ops, on stderr
    ops = CrashOps(image.load(args.image, args.dirs), args.refuse_direct)
    threading.Thread(target=_serve_commands, args=(ops, args.image, args.mountpoint), daemon=True).start()
    options: dict[str, Any] = dict(foreground=True, nothreads=True, fsname=f"crashfs:{args.image}", subtype="crashfs")
    mfusepy.FUSE(ops, args.mountpoint, **options)


if __name__ == "__main__":
    main()
