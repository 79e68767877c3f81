"""Fuzzing pccheck-inspect with mutated checkpoint files: no exception other than the tool's own clean error,
no crash of the C++ core, a bounded time per file, and always a JSON document that follows the schema.

Mutations are seeded and structure-aware: besides bit flips, truncations and random bytes, they set header
fields (superblock, commit records, chunk tables, the payload's safetensors header) to hostile values and
then recompute the checksums, so the input gets past the CRCs into the code that trusts checked fields.
Default: 360 inputs; `-m slow`: 20,000 pccheck + 4,000 torchsave (PCCHECK_FUZZ_N and PCCHECK_FUZZ_SEED override).
"""
from __future__ import annotations

import io
import json
import os
import random
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from pccheck import _core, checkpointer
from pccheck.tools import inspect as cli
from pccheck.tools.inspect_layout import InspectError
from pccheck.tools.inspect_report import Options, inspect
from test_inspect import check_schema, run_cli, small_state

BLOCK = 4096
TIME_BOUND_S = 5.0  # per input; typical inputs take milliseconds
U64 = (0, 1, 2, 7, 4095, 4096, 4097, 1 << 31, 1 << 32, (1 << 63) - 1, 1 << 63, (1 << 64) - 1)


# -- the corpus ------------------------------------------------------------------------------------------
@dataclass
class Seed:
    """A valid file and where its structures lie (from the core's scan of the unmutated file)."""

    data: bytes
    kind: str
    geometry: dict[str, Any]
    records: list[dict[str, Any]]
    tensor_names: list[str]


def _pccheck_seed(directory: Path, steps: list[int], dtype: torch.dtype) -> Seed:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpointer, "_HEADROOM", 0)  # small slots: a ~100 KB file, cheap to rewrite per input
        with checkpointer.Checkpointer(directory, max_async=1, keep=2, threads=1, chunk_size=BLOCK) as ck:
            for step in steps:
                assert ck.save(step, small_state(step, dtype)).wait()
    path = directory / "pccheck.ckpt"
    scan = _core.scan(str(path), False)
    recs = list(scan.get("records", scan.get("entries")))
    names = ["model/w", "model/b", "rng/torch", "optimizer/state/0/exp_avg"]
    return Seed(path.read_bytes(), "pccheck", dict(scan.get("geometry", scan)), recs, names)


def _torchsave_seed(directory: Path, step: int) -> Seed:
    path = directory / f"ckpt-{step:08d}.pt"
    torch.save(small_state(step), path)
    return Seed(path.read_bytes(), "torchsave", {}, [], ["model/w", "model/b"])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> list[Seed]:
    base = tmp_path_factory.mktemp("corpus")
    seeds = [_pccheck_seed(base / "a", [1, 2, 3], torch.float32), _pccheck_seed(base / "b", [5], torch.bfloat16)]
    (base / "ts").mkdir()
    return seeds + [_torchsave_seed(base / "ts", 4)]


# -- structure-aware mutations -----------------------------------------------------------------------------
def _crc(b: bytes | bytearray | memoryview) -> int:
    return _core.crc32c(bytes(b))


def _put(buf: bytearray, off: int, fmt: str, value: int) -> None:
    if 0 <= off and off + struct.calcsize(fmt) <= len(buf):
        struct.pack_into(fmt, buf, off, value & ((1 << (8 * struct.calcsize(fmt))) - 1))


def _get(buf: bytearray, off: int, fmt: str) -> int:
    return struct.unpack_from(fmt, buf, off)[0] if 0 <= off and off + struct.calcsize(fmt) <= len(buf) else 0


def _fix_superblock(buf: bytearray) -> None:
    if len(buf) >= 100:
        _put(buf, 96, "<I", _crc(buf[:96]))


def _record_at(seed: Seed, r: dict[str, Any]) -> int:
    return seed.geometry["ring_offset"] + r["index"] * BLOCK


def _table_at(seed: Seed, r: dict[str, Any]) -> int:
    g = seed.geometry
    return g["slots_offset"] + r["slot"] * (g["table_bytes"] + g["slot_size"])


def _fix_record(buf: bytearray, seed: Seed, r: dict[str, Any]) -> None:
    off = _record_at(seed, r)
    if off + 72 <= len(buf):
        _put(buf, off + 68, "<I", _crc(buf[off : off + 68]))


def _fix_table(buf: bytearray, seed: Seed, r: dict[str, Any], chunks: bool) -> None:
    """Recomputes chunk CRCs (optionally), the table CRC in the record, and the record CRC."""
    t = _table_at(seed, r)
    n = r["n_chunks"]
    if t + 48 + 4 * n > len(buf):
        return
    if chunks:
        p = t + seed.geometry["table_bytes"]
        for i in range(n):
            lo, hi = p + i * r["chunk_size"], p + min((i + 1) * r["chunk_size"], r["payload_len"])
            _put(buf, t + 48 + 4 * i, "<I", _crc(buf[lo:hi]))
    _put(buf, _record_at(seed, r) + 64, "<I", _crc(buf[t : t + 48 + 4 * n]))
    _fix_record(buf, seed, r)


def _value(rng: random.Random, old: int) -> int:
    return rng.choice([*U64, old + 1, old - 1, old * 2, old // 2, rng.getrandbits(64), rng.getrandbits(16)])


def m_flip(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    hot = [(0, 100)] + [(_record_at(seed, r), 72) for r in seed.records] + [(_table_at(seed, r), 64) for r in seed.records]
    if seed.kind == "pccheck" and rng.random() < 0.7 and hot:
        start, n = rng.choice(hot)
        off = start + rng.randrange(n)
    else:
        off = rng.randrange(len(buf))
    if off < len(buf):
        buf[off] ^= 1 << rng.randrange(8)
    return f"flip@{off}"


def m_superblock_field(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    off = rng.choice([8, 12] + list(range(16, 96, 8)))
    fmt = "<I" if off < 16 else "<Q"
    _put(buf, off, fmt, _value(rng, _get(buf, off, fmt)))
    if rng.random() < 0.9:
        _fix_superblock(buf)
    return f"superblock@{off}"


def m_record_field(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    r = rng.choice(seed.records)
    field = rng.randrange(8, 72, 8) if rng.random() < 0.9 else 64
    off = _record_at(seed, r) + field
    fmt = "<Q" if field < 64 else "<I"
    _put(buf, off, fmt, _value(rng, _get(buf, off, fmt)))
    if rng.random() < 0.9:
        _fix_record(buf, seed, r)
    return f"record{r['seq']}@{field}"


def m_table_field(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    r = rng.choice(seed.records)
    field = rng.choice([8, 16, 24, 32, 40, 48, 52])
    off = _table_at(seed, r) + field
    fmt = "<Q" if field < 48 else "<I"
    _put(buf, off, fmt, _value(rng, _get(buf, off, fmt)))
    if rng.random() < 0.9:
        _fix_table(buf, seed, r, chunks=False)
    return f"table{r['seq']}@{field}"


def _hostile_header(rng: random.Random, header: dict[str, Any]) -> dict[str, Any]:
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    entry = dict(header[name])
    choice = rng.randrange(12)
    if choice == 0:
        entry["data_offsets"] = [rng.choice(U64), rng.choice(U64)]
    elif choice == 1:
        entry["data_offsets"] = [entry["data_offsets"][0] - 1, entry["data_offsets"][1]]
    elif choice == 2:
        entry["shape"] = [rng.choice([-1, 0, 1 << 40, 3])] + entry["shape"][1:]
    elif choice == 3:
        entry["dtype"] = rng.choice(["F32", "BF16", "I64", "F8_E4M3", "X", 7, None])
    elif choice == 4:
        entry = rng.choice([None, 1, "x", [], {"dtype": "F32"}])
    elif choice == 5:
        other = rng.choice(names)
        entry["data_offsets"] = list(header[other]["data_offsets"])  # overlap
    elif choice == 6:
        header = {**header, "__metadata__": rng.choice([None, [], "x", {"format": "pccheck.state.v1"}])}
    elif choice == 7:
        meta = dict(header.get("__metadata__", {}))
        meta["pccheck.state"] = rng.choice(["[" * 5000 + "]" * 5000, "{", '{"step": NaN}', "1e999", '"x"', "[]",
                                            '{"__tensor__": "missing"}', '{"a": {"__dict__": [[1]]}}', '{"__tuple__": 5}'])
        header = {**header, "__metadata__": meta}
    elif choice == 8:
        entry["shape"] = [1 << 62, 1 << 62]
    elif choice == 9:
        return rng.choice([[], "x", 5, None])  # type: ignore[return-value]
    elif choice == 10:
        header = {k: v for k, v in header.items() if k != name}  # a tensor the tree names is gone
        return header
    else:
        entry["shape"] = list(reversed(entry["shape"]))
    return {**header, name: entry}


def m_payload_header(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    """Rewrites a payload's safetensors header in place (same length) and fixes every checksum above it."""
    r = rng.choice(seed.records)
    p = _table_at(seed, r) + seed.geometry["table_bytes"]
    n = _get(buf, p, "<Q")
    if p + 8 + n > len(buf):
        return "header:gone"
    try:
        header = json.loads(bytes(buf[p + 8 : p + 8 + n]))
        raw = json.dumps(_hostile_header(rng, header), separators=(",", ":")).encode()
    except ValueError:
        return "header:unparseable"
    if rng.random() < 0.15:
        _put(buf, p, "<Q", rng.choice([*U64, n + 1, n - 1]))
    elif len(raw) <= n:
        buf[p + 8 : p + 8 + n] = raw + b" " * (n - len(raw))
    else:
        buf[p + 8 : p + 8 + n] = raw[:n]
    _fix_table(buf, seed, r, chunks=True)
    return f"header{r['seq']}"


def m_truncate(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    n = rng.choice([rng.randrange(len(buf)), len(buf) - rng.randrange(1, 4096), rng.randrange(200)])
    del buf[max(0, n):]
    return f"truncate@{n}"


def m_extend(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    buf.extend(rng.randbytes(rng.randrange(1, 9000)))
    return "extend"


def m_block(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    nblocks = max(1, len(buf) // BLOCK)
    a, b = rng.randrange(nblocks) * BLOCK, rng.randrange(nblocks) * BLOCK
    if rng.random() < 0.5:
        buf[a : a + BLOCK] = bytes(len(buf[a : a + BLOCK]))
        return f"zero-block@{a}"
    chunk = bytes(buf[b : b + BLOCK])
    buf[a : a + len(chunk)] = chunk
    return f"copy-block {b}->{a}"


def m_random(rng: random.Random, buf: bytearray, seed: Seed) -> str:
    head = rng.choice([b"", b"PCCKSUPR", b"PK\x03\x04"])
    buf[:] = head + rng.randbytes(rng.randrange(0, 20000))
    return "random"


PCCHECK_MUTATORS: list[tuple[float, Callable[..., str]]] = [
    (3, m_flip), (2, m_superblock_field), (4, m_record_field), (3, m_table_field), (5, m_payload_header),
    (1, m_truncate), (0.5, m_extend), (1, m_block), (0.5, m_random),
]
TORCHSAVE_MUTATORS: list[tuple[float, Callable[..., str]]] = [(6, m_flip), (2, m_truncate), (1, m_block), (1, m_random)]


def mutate(rng: random.Random, seed: Seed) -> tuple[bytes, str]:
    buf = bytearray(seed.data)
    table = PCCHECK_MUTATORS if seed.kind == "pccheck" else TORCHSAVE_MUTATORS
    weights, fns = zip(*table)
    done = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        fn = rng.choices(fns, weights)[0]
        try:
            done.append(fn(rng, buf, seed))
        except (IndexError, ValueError, TypeError, KeyError, struct.error):  # an earlier mutation left nothing here
            done.append(f"{fn.__name__}:skipped")
    return bytes(buf), "+".join(done)


# -- running ---------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    count: int = 0
    statuses: dict[int, int] = None  # type: ignore[assignment]
    slowest: float = 0.0
    failures: list[str] = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.statuses, self.failures = {}, []


def run_one(path: Path, rng: random.Random, seed: Seed, out: Path) -> tuple[int, float]:
    """One input through the tool's core logic in-process; only InspectError may escape inspect()."""
    opts = Options(str(path), verify=rng.random() < 0.3, step=rng.choice([None] * 8 + [1, 2, 5]),
                   tensor=rng.choice(seed.tensor_names) if rng.random() < 0.15 else None,
                   export=out if rng.random() < 0.15 else None)
    t0 = time.perf_counter()
    try:
        doc = inspect(opts)
    except InspectError as exc:
        assert exc.status in (2, 3, 64) and str(exc) and "\n" not in str(exc).strip()
        return exc.status, time.perf_counter() - t0
    elapsed = time.perf_counter() - t0
    check_schema(json.loads(cli.to_json(doc)))
    if rng.random() < 0.1:
        from rich.console import Console

        cli.render(doc, console=Console(file=io.StringIO(), width=100))
    return doc["exit_status"], elapsed


def fuzz(corpus: list[Seed], n: int, seed_value: int, work: Path, kinds: tuple[str, ...]) -> Outcome:
    rng = random.Random(seed_value)
    seeds = [s for s in corpus if s.kind in kinds]
    result = Outcome()
    work.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        seed = rng.choice(seeds)
        data, what = mutate(rng, seed)
        path = work / ("pccheck.ckpt" if seed.kind == "pccheck" else "ckpt-00000004.pt")
        path.write_bytes(data)  # left on disk: the reproducer if the process dies
        try:
            status, elapsed = run_one(path, rng, seed, work / "out.safetensors")
        except Exception as exc:  # noqa: BLE001 - every escape is a finding
            keep = work / f"failure-{i}-{path.name}"
            keep.write_bytes(data)
            result.failures.append(f"input {i} ({what}, saved as {keep}): {type(exc).__name__}: {exc}"[:600])
            continue
        result.count += 1
        result.statuses[status] = result.statuses.get(status, 0) + 1
        result.slowest = max(result.slowest, elapsed)
        if elapsed > TIME_BOUND_S:
            result.failures.append(f"input {i} ({what}) took {elapsed:.1f} s")
    return result


def _n(default: int) -> int:
    return int(os.environ.get("PCCHECK_FUZZ_N", default))


def _seed() -> int:
    return int(os.environ.get("PCCHECK_FUZZ_SEED", 20261127))


def _report(name: str, result: Outcome) -> None:
    print(f"\n{name}: {result.count} inputs, exit statuses {dict(sorted(result.statuses.items()))}, "
          f"slowest {result.slowest * 1000:.1f} ms, {len(result.failures)} failures")
    assert not result.failures, "\n".join(result.failures[:10])


def test_fuzz_pccheck_files(corpus, tmp_path):
    result = fuzz(corpus, _n(300), _seed(), tmp_path, ("pccheck",))
    _report("pccheck fuzz", result)
    assert len(result.statuses) >= 3  # the mutations reach more than one verdict


def test_fuzz_torchsave_files(corpus, tmp_path):
    _report("torchsave fuzz", fuzz(corpus, _n(300) // 5, _seed() + 1, tmp_path, ("torchsave",)))


@pytest.mark.slow
def test_fuzz_pccheck_files_slow(corpus, tmp_path):
    result = fuzz(corpus, _n(20_000), _seed() + 2, tmp_path, ("pccheck",))
    _report("pccheck fuzz (slow)", result)
    assert result.count >= _n(20_000)


@pytest.mark.slow
def test_fuzz_torchsave_files_slow(corpus, tmp_path):
    _report("torchsave fuzz (slow)", fuzz(corpus, _n(20_000) // 5, _seed() + 3, tmp_path, ("torchsave",)))


def test_fuzz_through_the_real_cli(corpus, tmp_path):
    """A handful of mutated files through the console script: an exit status, one line, no traceback."""
    rng = random.Random(_seed() + 4)
    for i in range(8):
        seed = corpus[i % len(corpus)]
        data, what = mutate(rng, seed)
        path = tmp_path / f"{i}-{'pccheck.ckpt' if seed.kind == 'pccheck' else 'ckpt-00000004.pt'}"
        path.write_bytes(data)
        for args in ([str(path)], [str(path), "--json", "--verify"]):
            proc = run_cli(*args, timeout=60)
            assert proc.returncode in (0, 1, 2, 3), (what, proc.returncode, proc.stderr)
            assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) <= 1, (what, proc.stderr)
            if "--json" in args:
                check_schema(json.loads(proc.stdout))
