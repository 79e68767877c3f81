"""The disk double's state: what a reader sees (the page cache) and what a power cut would leave.

A file's bytes become durable only at an fsync/fdatasync of that file; a directory entry (create, mkdir,
rename, unlink, rmdir) only at an fsync of its directory ("strict", POSIX) or, in "ordered" mode, at any
fsync, in the order the operations happened (like ext4's journal). `crash_image` builds what a power cut
leaves: the durable state alone ("durable"), or with every block of the unsynced writes at a random one of
the versions it went through ("torn": lost, kept, torn at the block size, reordered between writes).
"""
from __future__ import annotations

import errno
import random
import stat
import time
from dataclasses import dataclass, field
from typing import Optional, Union

ROOT = 1
DIR_MODES = ("strict", "ordered")
DATA_MODES = ("durable", "torn")
GRANULARITIES = (512, 4096)


def fs_error(code: int) -> OSError:
    return OSError(code, errno.errorcode.get(code, str(code)))


@dataclass
class WriteOp:
    offset: int
    data: bytes


@dataclass
class SizeOp:
    size: int


FileOp = Union[WriteOp, SizeOp]


@dataclass
class File:
    mode: int
    data: bytearray = field(default_factory=bytearray)  # what reads see
    durable: bytearray = field(default_factory=bytearray)  # as of the last fsync
    pending: list[FileOp] = field(default_factory=list)  # changes since, in order
    mtime: float = field(default_factory=time.time)


@dataclass
class Dir:
    mode: int
    entries: dict[str, int] = field(default_factory=dict)  # what lookups see
    mtime: float = field(default_factory=time.time)


Node = Union[File, Dir]


@dataclass
class EntryOp:
    """One directory-entry change; a rename is two of them with the same group (atomic in "ordered" mode)."""

    group: int
    dir: int
    name: str
    ino: Optional[int]  # None: the entry is removed


@dataclass
class CutReport:
    seed: int
    data: str
    granularity: int
    dirs: str
    files: int
    unsynced_writes: int
    unsynced_entries: int
    entries_kept: int

    def __str__(self) -> str:
        return (
            f"power cut seed={self.seed} data={self.data} granularity={self.granularity} dirs={self.dirs}: "
            f"{self.files} files kept, {self.unsynced_writes} unsynced writes/size changes in them, "
            f"{self.entries_kept}/{self.unsynced_entries} unsynced directory entries kept"
        )


class Disk:
    """Inodes with their visible and durable states; every path operation is logged for a cut."""

    def __init__(self, dirs: str = "strict") -> None:
        if dirs not in DIR_MODES:
            raise ValueError(f"dirs must be one of {DIR_MODES}")
        self.dirs = dirs
        self.nodes: dict[int, Node] = {ROOT: Dir(stat.S_IFDIR | 0o755)}
        self.durable_entries: dict[int, dict[str, int]] = {ROOT: {}}
        self.entry_log: list[EntryOp] = []
        self.ignore_syncs = False  # a test hook: syncs are acknowledged but do nothing (a crash just before them)
        self._next_ino = ROOT + 1
        self._next_group = 0

    # -- lookups ---------------------------------------------------------------------------------
    def lookup(self, path: str) -> int:
        ino = ROOT
        for part in _parts(path):
            node = self.nodes[ino]
            if not isinstance(node, Dir):
                raise fs_error(errno.ENOTDIR)
            if part not in node.entries:
                raise fs_error(errno.ENOENT)
            ino = node.entries[part]
        return ino

    def node(self, ino: int) -> Node:
        return self.nodes[ino]

    def file(self, ino: int) -> File:
        node = self.nodes[ino]
        if not isinstance(node, File):
            raise fs_error(errno.EISDIR)
        return node

    def _parent(self, path: str) -> tuple[int, str]:
        parts = _parts(path)
        if not parts:
            raise fs_error(errno.EBUSY)
        ino = self.lookup("/".join(parts[:-1]))
        if not isinstance(self.nodes[ino], Dir):
            raise fs_error(errno.ENOTDIR)
        return ino, parts[-1]

    # -- namespace -------------------------------------------------------------------------------
    def _set_entries(self, changes: list[tuple[int, str, Optional[int]]]) -> None:
        group = self._next_group
        self._next_group += 1
        for d, name, ino in changes:
            entries = self._dir(d).entries
            if ino is None:
                del entries[name]
            else:
                entries[name] = ino
            self._dir(d).mtime = time.time()
            self.entry_log.append(EntryOp(group, d, name, ino))

    def _dir(self, ino: int) -> Dir:
        node = self.nodes[ino]
        assert isinstance(node, Dir)
        return node

    def new_node(self, node: Node) -> int:
        ino = self._next_ino
        self._next_ino += 1
        self.nodes[ino] = node
        if isinstance(node, Dir):
            self.durable_entries[ino] = {}
        return ino

    def create(self, path: str, mode: int) -> int:
        parent, name = self._parent(path)
        if name in self._dir(parent).entries:
            raise fs_error(errno.EEXIST)
        ino = self.new_node(File(stat.S_IFREG | (mode & 0o7777)))
        self._set_entries([(parent, name, ino)])
        return ino

    def mkdir(self, path: str, mode: int) -> int:
        parent, name = self._parent(path)
        if name in self._dir(parent).entries:
            raise fs_error(errno.EEXIST)
        ino = self.new_node(Dir(stat.S_IFDIR | (mode & 0o7777)))
        self._set_entries([(parent, name, ino)])
        return ino

    def unlink(self, path: str) -> None:
        parent, name = self._parent(path)
        ino = self.lookup(path)
        if isinstance(self.nodes[ino], Dir):
            raise fs_error(errno.EISDIR)
        self._set_entries([(parent, name, None)])

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        node = self.nodes[self.lookup(path)]
        if not isinstance(node, Dir):
            raise fs_error(errno.ENOTDIR)
        if node.entries:
            raise fs_error(errno.ENOTEMPTY)
        self._set_entries([(parent, name, None)])

    def rename(self, old: str, new: str) -> None:
        src_dir, src_name = self._parent(old)
        dst_dir, dst_name = self._parent(new)
        ino = self.lookup(old)
        target = self._dir(dst_dir).entries.get(dst_name)
        if target == ino:
            return
        if target is not None:
            moving, replaced = self.nodes[ino], self.nodes[target]
            if isinstance(moving, Dir) != isinstance(replaced, Dir):
                raise fs_error(errno.EISDIR if isinstance(replaced, Dir) else errno.ENOTDIR)
            if isinstance(replaced, Dir) and replaced.entries:
                raise fs_error(errno.ENOTEMPTY)
        if isinstance(self.nodes[ino], Dir) and _is_below(self, dst_dir, ino):
            raise fs_error(errno.EINVAL)
        self._set_entries([(src_dir, src_name, None), (dst_dir, dst_name, ino)])

    # -- data --------------------------------------------------------------------------------------
    def write(self, ino: int, offset: int, data: bytes) -> int:
        f = self.file(ino)
        end = offset + len(data)
        if end > len(f.data):
            f.data.extend(bytes(end - len(f.data)))
        f.data[offset:end] = data
        f.pending.append(WriteOp(offset, bytes(data)))
        f.mtime = time.time()
        return len(data)

    def read(self, ino: int, offset: int, size: int) -> bytes:
        return bytes(self.file(ino).data[offset : offset + size])

    def truncate(self, ino: int, size: int) -> None:
        f = self.file(ino)
        _resize(f.data, size)
        f.pending.append(SizeOp(size))
        f.mtime = time.time()

    def allocate(self, ino: int, offset: int, length: int) -> None:
        """fallocate(mode 0): extends the file with zeros; the new size is durable only after an fsync."""
        if offset + length > len(self.file(ino).data):
            self.truncate(ino, offset + length)

    # -- durability --------------------------------------------------------------------------------
    def fsync(self, ino: int) -> None:
        """fsync/fdatasync of a file or a directory (both also commit the journal in "ordered" mode)."""
        if self.ignore_syncs:
            return
        node = self.nodes[ino]
        if isinstance(node, File):
            node.durable = bytearray(node.data)
            node.pending.clear()
        else:
            keep = []
            for op in self.entry_log:
                if op.dir == ino:
                    _apply_entry(self.durable_entries, op)
                else:
                    keep.append(op)
            self.entry_log = keep
        if self.dirs == "ordered":
            for op in self.entry_log:
                _apply_entry(self.durable_entries, op)
            self.entry_log.clear()

    # -- power cut ---------------------------------------------------------------------------------
    def crash_image(self, seed: int, data: str = "torn", granularity: Optional[int] = None) -> tuple["Disk", CutReport]:
        """What a power cut leaves now, as a new Disk whose every byte and entry is durable."""
        if data not in DATA_MODES:
            raise ValueError(f"data must be one of {DATA_MODES}")
        rng = random.Random(seed)
        gran = granularity or rng.choice(GRANULARITIES)
        groups = sorted({op.group for op in self.entry_log})
        kept_groups = set(groups[: rng.randint(0, len(groups))]) if self.dirs == "ordered" else set()
        entries = {d: dict(e) for d, e in self.durable_entries.items()}
        kept = [op for op in self.entry_log if op.group in kept_groups]
        for op in kept:
            _apply_entry(entries, op)
        image = Disk(self.dirs)
        report = CutReport(seed, data, gran, self.dirs, 0, 0, len(self.entry_log), len(kept))
        self._copy_durable(ROOT, ROOT, image, entries, rng, data, gran, report, set())
        return image, report

    def _copy_durable(
        self, ino: int, image_ino: int, image: "Disk", entries: dict[int, dict[str, int]],
        rng: random.Random, data: str, gran: int, report: CutReport, seen: set[int],
    ) -> None:
        seen.add(ino)
        for name, child in sorted(entries.get(ino, {}).items()):
            node = self.nodes[child]
            if isinstance(node, Dir):
                if child in seen:  # a directory reachable twice (unsynced renames): keep the first
                    continue
                new = image.new_node(Dir(node.mode))
                image._dir(image_ino).entries[name] = new
                self._copy_durable(child, new, image, entries, rng, data, gran, report, seen)
            else:
                content = bytes(node.durable) if data == "durable" else torn_content(node, rng, gran)
                report.files += 1
                report.unsynced_writes += len(node.pending)
                new = image.new_node(File(node.mode, bytearray(content), bytearray(content)))
                image._dir(image_ino).entries[name] = new
        image.durable_entries[image_ino] = dict(image._dir(image_ino).entries)


def torn_content(f: File, rng: random.Random, gran: int) -> bytes:
    """The durable bytes with each `gran`-sized block at a random version among those the unsynced writes
    gave it (the durable one included), and the size at a random one of the sizes the file went through."""
    sizes = [len(f.durable)]
    touched: dict[int, list[int]] = {}
    size = len(f.durable)
    for i, op in enumerate(f.pending):
        if isinstance(op, WriteOp):
            lo, hi = op.offset, op.offset + len(op.data)
            size = max(size, hi)
        else:
            lo, hi = min(size, op.size), max(size, op.size)
            size = op.size
        sizes.append(size)
        for block in range(lo // gran, -(-hi // gran)):
            touched.setdefault(block, []).append(i)
    chosen: dict[int, list[int]] = {}  # op index -> blocks that keep the version after that op
    for block, ops in touched.items():
        version = rng.choice([-1, *ops])
        if version >= 0:
            chosen.setdefault(version, []).append(block)
    out = bytearray(f.durable)
    _resize(out, max(sizes))
    work = bytearray(f.durable)
    for i, op in enumerate(f.pending):
        if isinstance(op, WriteOp):
            end = op.offset + len(op.data)
            if end > len(work):
                work.extend(bytes(end - len(work)))
            work[op.offset : end] = op.data
        else:
            _resize(work, op.size)
        for block in chosen.get(i, ()):
            lo = block * gran
            piece = work[lo : lo + gran]
            piece.extend(bytes(min(gran, len(out) - lo) - len(piece)))
            out[lo : lo + len(piece)] = piece
    return bytes(out[: rng.choice(sizes)])


def _apply_entry(entries: dict[int, dict[str, int]], op: EntryOp) -> None:
    d = entries.setdefault(op.dir, {})
    if op.ino is None:
        d.pop(op.name, None)
    else:
        d[op.name] = op.ino


def _resize(buf: bytearray, size: int) -> None:
    if size < len(buf):
        del buf[size:]
    else:
        buf.extend(bytes(size - len(buf)))


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _is_below(disk: Disk, ino: int, ancestor: int) -> bool:
    """Whether directory `ino` is `ancestor` or inside it (a rename of a directory into itself is EINVAL)."""
    if ino == ancestor:
        return True
    stack = [ancestor]
    while stack:
        node = disk.nodes[stack.pop()]
        if isinstance(node, Dir):
            for child in node.entries.values():
                if child == ino:
                    return True
                stack.append(child)
    return False
