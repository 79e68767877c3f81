"""The facts pccheck-inspect reports, as one JSON-ready dict (docs/inspect.md documents every field).

`inspect(options)` is the whole tool without the rendering: tests and the fuzzer call it in-process. It
raises only InspectError (with the exit status) for anything the user must see; everything else it knows is
in the document, including the exit status. Payloads are read only for --verify (by the core), --tensor and
--export (through `_core.read_payload`, which checks every chunk CRC, then `pccheck.payload`).
"""
from __future__ import annotations

import datetime as _dt
import os
import re
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from . import inspect_layout as layout
from . import inspect_state as st
from .inspect_layout import HeaderError, InspectError

SCHEMA = "pccheck-inspect/1"
OK, OLDER_VALID, NOTHING_VALID, UNREADABLE, USAGE = 0, 1, 2, 3, 64
_TORCHSAVE_NAME = re.compile(r"^ckpt-(\d+)\.pt$")
_PCCHECK_SUFFIX = ".ckpt"

# Runs fn (which reads about `total` bytes) and returns its result; the CLI passes one that draws a progress bar.
Runner = Callable[[str, int, Callable[[], Any]], Any]


def _direct(label: str, total: int, fn: Callable[[], Any]) -> Any:
    return fn()


@dataclass
class Options:
    path: str
    verify: bool = False
    step: Optional[int] = None
    tensor: Optional[str] = None
    export: Optional[Path] = None
    run: Runner = field(default=_direct)


def _core() -> Any:
    try:
        from pccheck import _core
    except ImportError as exc:
        raise InspectError(f"the pccheck C++ core is not built ({exc}); run pip install -e .", UNREADABLE) from None
    return _core


def _iso(ns: Any) -> Optional[str]:
    try:
        return _dt.datetime.fromtimestamp(ns / 1e9, _dt.timezone.utc).isoformat(timespec="milliseconds")
    except (TypeError, ValueError, OverflowError, OSError):
        return None


# -- finding the checkpoint files ---------------------------------------------------------------------
def resolve(path: str) -> tuple[str, list[str]]:
    """('pccheck' | 'torchsave', files) for a file or a checkpoint directory; InspectError(3) otherwise."""
    try:
        is_dir = os.path.isdir(path)
    except OSError:
        is_dir = False
    if not is_dir:
        layout.regular_file(path)
        found = layout.sniff(path)
        if found == "unknown":
            raise InspectError(f"{path}: not a checkpoint (neither a pccheck file nor a torch.save archive)", UNREADABLE)
        return found, [path]
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        raise InspectError(f"{path}: cannot list directory: {exc.strerror}", UNREADABLE) from None
    pccheck = [p for p in (os.path.join(path, n) for n in names if n.endswith(_PCCHECK_SUFFIX)) if _is(p, "pccheck")]
    if pccheck:
        return "pccheck", pccheck
    torchsave = [os.path.join(path, n) for n in names if _TORCHSAVE_NAME.match(n)]
    torchsave = [p for p in torchsave if os.path.isfile(p)]
    if torchsave:
        return "torchsave", sorted(torchsave, key=_torchsave_step, reverse=True)
    raise InspectError(f"{path}: no checkpoint in this directory (no pccheck *.ckpt file, no ckpt-<step>.pt)", UNREADABLE)


def _is(path: str, kind: str) -> bool:
    try:
        return layout.sniff(path) == kind
    except InspectError:
        return False


def _torchsave_step(path: str) -> int:
    m = _TORCHSAVE_NAME.match(os.path.basename(path))
    return int(m.group(1)) if m else -1


# -- pccheck files -------------------------------------------------------------------------------------
def _scan(path: str, verify: bool, run: Runner, total: int) -> dict[str, Any]:
    core = _core()
    try:
        if verify:
            return run(f"verifying {os.path.basename(path)}", total, lambda: core.scan(path, True))
        return core.scan(path, False)
    except core.CoreError as exc:
        raise InspectError(f"{path}: not a usable pccheck file: {_one_line(exc, path)}", UNREADABLE) from None
    except (OSError, ValueError, MemoryError) as exc:
        raise InspectError(f"{path}: unreadable: {_one_line(exc, path)}", UNREADABLE) from None


def _one_line(exc: BaseException, path: str = "") -> str:
    """The exception as one line, without the path the core puts first when we print it already."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[len(path) + 2 :] if path and text.startswith(path + ": ") else text


def _records(scan: dict[str, Any]) -> list[dict[str, Any]]:
    """The core's ring entries (its key was `records` in the agreed surface, `entries` in the bindings)."""
    raw = scan.get("records", scan.get("entries")) or []
    return [dict(r) for r in raw]


def _geometry(scan: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    geo = dict(scan.get("geometry", scan))
    chunk = {r["chunk_size"] for r in records if r.get("valid") and r.get("chunk_size")}
    keys = ("slot_count", "slot_size", "table_bytes", "ring_entries", "ring_offset", "slots_offset", "file_size",
            "keep", "max_async", "created_ns")
    out = {k: geo.get(k) for k in keys}
    out["chunk_size"] = chunk.pop() if len(chunk) == 1 else (sorted(chunk) if chunk else None)
    return out


def _checkpoint(path: str, r: dict[str, Any], verified: bool) -> dict[str, Any]:
    return {
        "file": path, "seq": r.get("seq"), "ring_index": r.get("index"), "slot": r.get("slot"), "step": r.get("step"),
        "time_ns": r.get("time_ns"), "time": _iso(r.get("time_ns")) if r.get("time_ns") is not None else None,
        "payload_bytes": r.get("payload_len"), "chunk_size": r.get("chunk_size"), "n_chunks": r.get("n_chunks"),
        "valid": bool(r.get("valid")), "reason": None if r.get("valid") else (r.get("reason") or "invalid"),
        "verified": verified and bool(r.get("valid")),
    }


def _pccheck_file(path: str, opts: Options) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The file entry and its checkpoints (newest first) of one pccheck file."""
    scan = _scan(path, False, opts.run, 0)
    records = _records(scan)
    verify = None
    if opts.verify:
        total = sum(r.get("payload_len") or 0 for r in records if r.get("valid"))
        t0 = time.perf_counter()
        scan = _scan(path, True, opts.run, total)
        verify = {"bytes": total, "seconds": round(time.perf_counter() - t0, 6)}
        records = _records(scan)
    geometry = _geometry(scan, records)
    size = layout.regular_file(path).st_size
    entry = {"path": path, "format": "pccheck", "format_version": layout.format_version(path), "bytes": size,
             "geometry": geometry, "verify": verify}
    cps = [_checkpoint(path, r, opts.verify) for r in records]
    cps.sort(key=lambda c: (c["seq"] is not None, c["seq"] or 0), reverse=True)
    return entry, cps


def _pccheck_state(cp: dict[str, Any], geometry: dict[str, Any], opts: Options) -> dict[str, Any]:
    """The tensors and state summary of a valid checkpoint from its payload header (never the tensor data)."""
    slot = layout.slot_of(geometry, {"slot": cp["slot"], "seq": cp["seq"], "payload_len": cp["payload_bytes"],
                                     "chunk_size": cp["chunk_size"], "n_chunks": cp["n_chunks"]})
    head = layout.read_payload_header(cp["file"], slot, _core().crc32c)
    meta, tensors = layout.tensor_entries(head.header, slot.payload_len, head.length)
    tree = layout.state_tree(meta, {t.name for t in tensors})
    return _state_doc(tensors, tree, head.checksummed)


def _state_doc(tensors: list[layout.TensorEntry], tree: Any, checksummed: bool) -> dict[str, Any]:
    return {
        "header_checksummed": checksummed,
        "tensor_count": len(tensors),
        "tensor_bytes": sum(t.nbytes for t in tensors),
        "tensors": [{"name": t.name, "dtype": t.dtype, "shape": t.shape, "bytes": t.nbytes} for t in tensors],
        "summary": st.summarize(tree),
    }


def _read_payload(cp: dict[str, Any]) -> bytearray:
    """The whole payload through the core, which verifies every chunk CRC (size bounded by the checked record)."""
    core = _core()
    buf = bytearray(cp["payload_bytes"])
    try:
        core.read_payload(cp["file"], cp["seq"], buf)
    except (core.CoreError, ValueError, OSError) as exc:
        raise HeaderError(_one_line(exc, cp["file"])) from None
    return buf


def _pccheck_payload_facts(cp: dict[str, Any], opts: Options, state: dict[str, Any]) -> dict[str, Any]:
    """--tensor and --export: read the payload (verified) and decode it with pccheck.payload."""
    from pccheck import payload
    from pccheck.errors import CheckpointError

    if opts.tensor is not None:
        _find_tensor(opts.tensor, [t["name"] for t in state["tensors"]])  # before reading the payload
    buf = _read_payload(cp)
    try:
        payload.decode(buf)  # the state must rebuild before we vouch for it
        meta, infos = payload.parse_header(memoryview(buf))
    except (CheckpointError, RecursionError) as exc:
        raise HeaderError(f"payload does not decode: {_one_line(exc)}") from None
    out: dict[str, Any] = {}
    if opts.tensor is not None:
        info = _find_tensor(opts.tensor, [i.name for i in infos])
        i = next(x for x in infos if x.name == info)
        t = st.tensor_view(buf, i.begin, i.end, i.dtype, i.shape)
        out["tensor"] = _tensor_doc(i.name, i.dtype, list(i.shape), t)
    if opts.export is not None:
        head, data = st.rewrite_metadata(buf, _export_meta(cp))
        size = st.write_atomic(opts.export, [head, data])
        out["export"] = {"path": str(opts.export), "tensors": len(infos), "bytes": size}
    return out


def _find_tensor(name: str, names: list[str]) -> str:
    if name in names:
        return name
    close = [n for n in names if name in n][:5]
    hint = f"; did you mean: {', '.join(close)}" if close else f"; {len(names)} tensors, see the overview"
    raise InspectError(f"no tensor {name!r} in the chosen checkpoint{hint}", USAGE)


def _tensor_doc(name: str, dtype: str, shape: list[int], t: Any) -> dict[str, Any]:
    try:
        stats = st.tensor_stats(t)
    except (RuntimeError, TypeError) as exc:
        raise InspectError(f"statistics of {name} ({dtype}) are not supported: {_one_line(exc)}", USAGE) from None
    for k in ("min", "max", "mean"):
        stats[k] = st.json_number(stats[k])
    return {"name": name, "dtype": dtype, "shape": shape, **stats}


def _export_meta(cp: dict[str, Any]) -> dict[str, str]:
    return {"pccheck.step": str(cp["step"]), "pccheck.seq": str(cp["seq"]), "pccheck.source": os.path.abspath(cp["file"])}


# -- torch.save baseline files -------------------------------------------------------------------------
def _torchsave_check(path: str, verify: bool, run: Runner) -> Optional[str]:
    """None when the archive is sound: its directory and pickle member (overview) or every CRC (--verify)."""
    if verify:
        return run(f"verifying {os.path.basename(path)}", os.path.getsize(path), lambda: _zip_verify(path))
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                return "not a torch.save archive (no data.pkl)"
            info = archive.getinfo(pkl[0])
            if info.compress_type != zipfile.ZIP_STORED or info.file_size > os.path.getsize(path):
                return "not a torch.save archive (compressed or oversized pickle member)"  # torch.save stores
            archive.read(pkl[0])  # checks this member's CRC
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError,
            zlib.error, MemoryError) as exc:
        return f"not a complete checkpoint archive ({_one_line(exc)})"
    return None


def _zip_verify(path: str) -> Optional[str]:
    """pccheck.torchsave.verify (every member CRC), with the errors a hostile archive raises also caught."""
    from pccheck import torchsave

    try:
        return torchsave.verify(Path(path))
    except (zipfile.LargeZipFile, ValueError, NotImplementedError, RuntimeError, zlib.error, MemoryError) as exc:
        return f"not a complete checkpoint archive ({_one_line(exc)})"


def _torchsave_checkpoint(path: str, problem: Optional[str], verified: bool) -> dict[str, Any]:
    mtime = os.stat(path).st_mtime_ns
    step = _torchsave_step(path)
    return {
        "file": path, "seq": None, "ring_index": None, "slot": None, "step": step if step >= 0 else None,
        "time_ns": mtime, "time": _iso(mtime), "payload_bytes": os.path.getsize(path), "chunk_size": None,
        "n_chunks": None, "valid": problem is None, "reason": problem, "verified": verified and problem is None,
    }


def _torchsave_load(path: str, mmap: bool) -> Any:
    """torch.load with weights_only=True (never runs pickled code); with mmap the tensor data is not read."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, OSError, KeyError, TypeError,
            AttributeError, IndexError, zipfile.BadZipFile, RecursionError, MemoryError, OverflowError) as exc:
        raise HeaderError(f"torch.load(weights_only=True) refused it: {_one_line(exc)}") from None


def _torchsave_state(cp: dict[str, Any], opts: Options) -> tuple[dict[str, Any], dict[str, Any]]:
    """State facts of a torchsave checkpoint via pccheck.payload.encode (so both kinds read the same)."""
    import json

    from pccheck import payload
    from pccheck.errors import UserError

    needs_data = opts.tensor is not None or opts.export is not None
    if needs_data:  # the tensor bytes will be read: every CRC first, then a plain (bounds-checked) load
        problem = _zip_verify(cp["file"])
        if problem is not None:
            raise HeaderError(problem)
    state = _torchsave_load(cp["file"], mmap=not needs_data)
    if not isinstance(state, dict):
        raise HeaderError(f"the archive holds a {type(state).__name__}, not a state dict")
    try:
        enc = payload.encode(state)
    except (UserError, RecursionError) as exc:
        raise HeaderError(_one_line(exc)) from None
    header = json.loads(enc.header[8:])
    meta = header.pop("__metadata__")
    tensors = [layout.TensorEntry(n, e["dtype"], e["shape"], e["data_offsets"][1] - e["data_offsets"][0])
               for n, e in header.items()]
    if cp["step"] is None and isinstance(state.get("step"), int):
        cp["step"] = state["step"]
    doc = _state_doc(tensors, json.loads(meta["pccheck.state"]), True)
    extra: dict[str, Any] = {}
    if opts.tensor is not None:
        name = _find_tensor(opts.tensor, [t.name for t in tensors])
        t = enc.tensors[[x.name for x in tensors].index(name)]
        extra["tensor"] = _tensor_doc(name, header[name]["dtype"], list(t.shape), t)
    if opts.export is not None:
        meta_extra = {"pccheck.step": str(cp["step"]), "pccheck.source": os.path.abspath(cp["file"])}
        extra["export"] = st.export_state(state, opts.export, meta_extra)
    return doc, extra


# -- choosing and the verdict ----------------------------------------------------------------------------
def _candidates(cps: list[dict[str, Any]], step: Optional[int]) -> list[dict[str, Any]]:
    return [c for c in cps if c["valid"] and (step is None or c["step"] == step)]


def _choose(kind: str, files: list[dict[str, Any]], cps: list[dict[str, Any]], opts: Options) -> tuple[Optional[dict[str, Any]], dict[str, Any]]:
    """What a load would pick (or --step's checkpoint): the first candidate whose state also reads back.

    A candidate whose payload header (or, for --tensor/--export, whole payload) fails is marked invalid with
    the reason, exactly as a load would skip it, and the next one is tried.
    """
    geometry = {f["path"]: f["geometry"] for f in files}
    for cp in _candidates(cps, opts.step):
        try:
            if kind == "pccheck":
                state = _pccheck_state(cp, geometry[cp["file"]], opts)
                extra = _pccheck_payload_facts(cp, opts, state) if (opts.tensor or opts.export) else {}
            else:
                state, extra = _torchsave_state(cp, opts)
        except HeaderError as exc:
            cp.update(valid=False, verified=False, reason=f"payload: {exc}")
            continue
        except RecursionError:
            cp.update(valid=False, verified=False, reason="payload: state tree nested too deeply")
            continue
        return cp, {"state": state, **extra}
    return None, {}


def _verdict(cps: list[dict[str, Any]], chosen: Optional[dict[str, Any]], opts: Options) -> tuple[int, str, list[dict[str, Any]]]:
    """Exit status, one-line message and the newer checkpoints a load skips."""
    any_valid = any(c["valid"] for c in cps)
    newer = [c for c in cps if not c["valid"] and c["seq"] is not None and chosen is not None and chosen["seq"] is not None
             and c["seq"] > chosen["seq"]]
    if chosen is not None and chosen["seq"] is None:  # torchsave: newer by step
        newer = [c for c in cps if not c["valid"] and (c["step"] or -1) > (chosen["step"] or -1)]
    skipped = [{"seq": c["seq"], "step": c["step"], "file": c["file"], "reason": c["reason"]} for c in newer]
    if opts.step is not None and chosen is None:
        status = OLDER_VALID if any_valid else NOTHING_VALID
        return status, f"no valid checkpoint at step {opts.step}" + ("; other valid checkpoints exist" if any_valid else ""), skipped
    if chosen is None:
        return NOTHING_VALID, "no valid checkpoint" if cps else "no committed checkpoint", skipped
    where = f"step {chosen['step']}" + (f" (seq {chosen['seq']})" if chosen["seq"] is not None else "")
    if skipped and opts.step is None:
        return OLDER_VALID, f"newest checkpoint is corrupt; a load would pick {where}", skipped
    return OK, f"{where} is valid" + (" (payload checksums verified)" if opts.verify else ""), skipped


def _why(chosen: Optional[dict[str, Any]], skipped: list[dict[str, Any]], opts: Options, kind: str) -> Optional[str]:
    if chosen is None:
        return None
    if opts.step is not None:
        return f"requested with --step {opts.step}"
    checks = "record, chunk table and payload checksums" if kind == "pccheck" and opts.verify else (
        "record and chunk table checksums, and the payload header" if kind == "pccheck" else
        ("every archive CRC" if opts.verify else "archive directory and pickle CRC"))
    why = f"newest checkpoint whose {checks} verify"
    if skipped:
        why += "; skipped " + "; ".join(f"step {s['step']}" + (f" seq {s['seq']}" if s["seq"] is not None else "")
                                        + f": {s['reason']}" for s in skipped)
    return why


def inspect(opts: Options) -> dict[str, Any]:
    """The whole report for opts.path; InspectError (with its exit status) when there is nothing to report.

    Read-only and lock-free: a live writer may reuse a slot between our scan and our read of it, which
    looks like a corrupt or missing checkpoint. So a verdict other than OK is re-read while the files'
    newest commit moved on during the read."""
    kind, paths = resolve(opts.path)
    if kind == "pccheck":
        from . import inspect_sets

        if inspect_sets.is_multi_set(opts.path, paths):
            return inspect_sets.document(opts, paths)
    from pccheck.corefile import READS_UNDER_A_WRITER

    for _ in range(READS_UNDER_A_WRITER):
        before = _newest_seqs(kind, paths, opts)
        doc = _inspect_once(opts, kind, paths)
        if doc["exit_status"] == OK or _newest_seqs(kind, paths, opts) == before:
            return doc
    return doc


def _newest_seqs(kind: str, paths: list[str], opts: Options) -> list[Optional[int]]:
    """Each pccheck file's newest committed seq (a header read): it changes when a writer commits."""
    if kind != "pccheck":
        return []
    from pccheck.corefile import newest_seq

    return [newest_seq(_scan(p, False, opts.run, 0)) for p in paths]


def _inspect_once(opts: Options, kind: str, paths: list[str]) -> dict[str, Any]:
    files, cps = [], []
    for p in paths:
        if kind == "pccheck":
            entry, found = _pccheck_file(p, opts)
        else:
            entry = {"path": p, "format": "torchsave", "format_version": None, "bytes": os.path.getsize(p), "geometry": None,
                     "verify": None}
            found = [_torchsave_checkpoint(p, _torchsave_check(p, opts.verify, opts.run), opts.verify)]
        files.append(entry)
        cps.extend(found)
    chosen, facts = _choose(kind, files, cps, opts)
    status, message, skipped = _verdict(cps, chosen, opts)
    valid = [c for c in cps if c["valid"]]
    return _document(opts, kind, files, cps, chosen, facts, status, message, skipped, valid)


def _document(opts: Options, kind: str, files: list[dict[str, Any]], cps: list[dict[str, Any]], chosen: Optional[dict[str, Any]],
              facts: dict[str, Any], status: int, message: str, skipped: list[dict[str, Any]],
              valid: list[dict[str, Any]]) -> dict[str, Any]:
    newest_valid = valid[0] if valid else None
    sets = []
    if kind == "pccheck" and files:
        from .inspect_sets import set_doc_of_file

        sets = [set_doc_of_file(files[0]["path"], opts.verify, opts.step)]
    return {
        "schema": SCHEMA,
        "path": opts.path,
        "kind": kind,
        "verified": opts.verify,
        "files": files,
        "checkpoints": cps,
        "latest_valid_step": newest_valid["step"] if newest_valid else None,
        "latest_valid_seq": newest_valid["seq"] if newest_valid else None,
        "skipped": skipped,
        "chosen": None if chosen is None else {
            "file": chosen["file"], "seq": chosen["seq"], "step": chosen["step"], "valid": chosen["valid"],
            "set": sets[0]["label"] if sets else None, "why": _why(chosen, skipped, opts, kind)},
        "sets": sets,
        "state": facts.get("state"),
        "tensor": facts.get("tensor"),
        "export": facts.get("export"),
        "exit_status": status,
        "message": message,
        "error": None,
    }


def error_document(path: str, exc: InspectError) -> dict[str, Any]:
    """The --json document when there is nothing to report but the error."""
    return {"schema": SCHEMA, "path": path, "kind": None, "verified": False, "files": [], "checkpoints": [],
            "latest_valid_step": None, "latest_valid_seq": None, "skipped": [], "chosen": None, "sets": [], "state": None,
            "tensor": None, "export": None, "exit_status": exc.status, "message": str(exc), "error": str(exc)}
