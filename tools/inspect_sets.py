"""pccheck-inspect on a directory of several file sets: DCP sets (one per run and world size) and single
pccheck files, each judged on its own (pccheck.dcp.sets: the rule every loader uses), and which checkpoint a
load takes over all of them. --tensor and --export of a DCP checkpoint read it whole (every rank's shards
put together, pccheck.dcp.export), through the same verified reads as a load.
"""
from __future__ import annotations

import os
import time
from typing import Any, Optional

from pccheck.dcp import sets as fsets
from pccheck.errors import CheckpointError

from . import inspect_report as rep
from . import inspect_state as st
from .inspect_layout import HeaderError, InspectError


def is_multi_set(path: str, paths: list[str]) -> bool:
    """A directory whose pccheck files are not one single file: DCP sets, or several files."""
    from pccheck.dcp.names import parse

    return os.path.isdir(path) and (len(paths) > 1 or any(parse(os.path.basename(p)) for p in paths))


def _scan_files(paths: list[str], opts: rep.Options, cache: dict) -> list[dict[str, Any]]:
    """File entries (geometry, --verify timing) and the core scans, kept in `cache` for pccheck.dcp.sets."""
    core = rep._core()
    entries = []
    for p in paths:
        entry: dict[str, Any] = {"path": p, "format": "pccheck", "format_version": None, "bytes": os.path.getsize(p),
                                 "geometry": None, "verify": None}
        entries.append(entry)
        try:
            scan = core.scan(p, False)
        except (core.CoreError, OSError, ValueError) as exc:
            cache[(p, False)] = cache[(p, True)] = CheckpointError(rep._one_line(exc, p))
            continue
        cache[(p, False)] = scan
        records = rep._records(scan)
        if opts.verify:
            total = sum(r.get("payload_len") or 0 for r in records if r.get("valid"))
            t0 = time.perf_counter()
            try:
                cache[(p, True)] = scan = opts.run(f"verifying {os.path.basename(p)}", total, lambda: core.scan(p, True))
            except (core.CoreError, OSError, ValueError) as exc:
                cache[(p, True)] = CheckpointError(rep._one_line(exc, p))
            entry["verify"] = {"bytes": total, "seconds": round(time.perf_counter() - t0, 6)}
            records = rep._records(scan)
        entry["format_version"] = st_version(p)
        entry["geometry"] = rep._geometry(scan, records)
    return entries


def st_version(path: str) -> Optional[int]:
    from .inspect_layout import format_version

    try:
        return format_version(path)
    except InspectError:
        return None


def _verdict(s: fsets.FileSet, step: Optional[int], verify: bool) -> tuple[Optional[fsets.Checkpoint], int, str]:
    """A set's chosen checkpoint, exit status and one-line verdict (the rules of the single-file overview)."""
    chosen = s.newest_valid(step)
    where = f"{s.label}: "
    if s.error and not s.checkpoints:
        return None, rep.NOTHING_VALID, where + s.error
    if chosen is None:
        any_valid = any(c.valid for c in s.checkpoints)
        if step is not None:
            return None, rep.OLDER_VALID if any_valid else rep.NOTHING_VALID, where + f"no valid checkpoint at step {step}"
        return None, rep.NOTHING_VALID, where + ("no valid checkpoint" if s.checkpoints else "no committed checkpoint")
    newer = fsets.skipped_newer(s, chosen)
    what = f"step {chosen.step}" + (f" (checkpoint {chosen.gseq})" if chosen.gseq is not None else f" (seq {chosen.seq})")
    if newer and step is None:
        return chosen, rep.OLDER_VALID, where + f"newest checkpoint is not valid ({newer[0].why}); a load would pick {what}"
    return chosen, rep.OK, where + f"{what} is valid" + (" (payload checksums verified)" if verify else "")


def _set_doc(s: fsets.FileSet, step: Optional[int], verify: bool) -> dict[str, Any]:
    chosen, status, message = _verdict(s, step, verify)
    return {
        "label": s.label, "kind": s.kind, "world": s.world, "set_id": s.set_id, "files": s.files, "error": s.error,
        "checkpoints": [{
            "seq": c.seq, "gseq": c.gseq, "step": c.step, "time_ns": c.time_ns, "time": rep._iso(c.time_ns),
            "valid": c.valid, "reason": c.why,
            "ranks": None if c.doc is None else [
                {"rank": p["rank"], "file": p["file"], "seq": p["seq"], "payload_bytes": p["payload_len"]}
                for p in c.doc["ranks"]],
        } for c in s.checkpoints],
        "chosen": None if chosen is None else {"seq": chosen.seq, "gseq": chosen.gseq, "step": chosen.step},
        "exit_status": status, "message": message,
    }


def set_doc_of_file(path: str, verify: bool, step: Optional[int]) -> dict[str, Any]:
    """The one set of a single pccheck file (the `sets` field of a single-file document)."""
    return _set_doc(fsets.file_set(path, verify), step, verify)


def _dcp_state(directory: str, s: fsets.FileSet, cp: fsets.Checkpoint, opts: rep.Options) -> dict[str, Any]:
    """Tensors of a DCP checkpoint from its global metadata (whole sizes), and --tensor / --export."""
    try:
        md = cp.doc["metadata"]["state_dict"] if cp.doc else {}
        stored: dict[str, int] = {}  # bytes stored per key: the lengths of its items (torch-free)
        for fqn, _, _, loc in cp.doc["metadata"]["storage"] if cp.doc else []:
            stored[fqn] = stored.get(fqn, 0) + int(loc[2])
        tensors = [{"name": str(k), "dtype": str(e["dtype"]), "shape": [int(d) for d in e["size"]],
                    "bytes": stored.get(k, 0)} for k, e in md.items() if not e.get("bytes")]
        values = sum(1 for e in md.values() if e.get("bytes"))
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise HeaderError(f"global metadata is malformed ({type(exc).__name__})") from None
    out: dict[str, Any] = {"state": {"header_checksummed": True, "tensor_count": len(tensors),
                                     "tensor_bytes": sum(t["bytes"] for t in tensors), "tensors": tensors,
                                     "summary": {"step": cp.step, "values": values}}}
    if opts.tensor is None and opts.export is None:
        return out
    from pccheck.dcp.export import full_state

    pick = (s.set_id, cp.seq)
    try:
        if opts.tensor is not None:
            name = rep._find_tensor(opts.tensor, [t["name"] for t in tensors])
            _, one = full_state(directory, pick, names=[name])
            t = one[name]
            out["tensor"] = rep._tensor_doc(name, _st_dtype(t), list(t.shape), t)
        if opts.export is not None:
            step, state = full_state(directory, pick)
            meta = {"pccheck.step": str(step), "pccheck.source": os.path.abspath(directory),
                    "pccheck.set": str(s.set_id), "pccheck.gseq": str(cp.gseq)}
            out["export"] = st.export_state(state, opts.export, meta)
    except (KeyboardInterrupt, SystemExit, InspectError):
        raise
    except BaseException as exc:  # DCP's CheckpointException is a BaseException
        from pccheck.dcp.checkpointer import explain

        raise HeaderError(explain(exc)) from None
    return out


def _st_dtype(t: Any) -> str:
    from pccheck.payload import DTYPES

    return DTYPES.get(t.dtype, str(t.dtype))


def document(opts: rep.Options, paths: list[str]) -> dict[str, Any]:
    """The report of a directory of several file sets (docs/inspect.md, field `sets`)."""
    directory = opts.path
    cache: dict = {}
    files = _scan_files(paths, opts, cache)
    found_sets = fsets.scan_directory(directory, opts.verify, cache)
    set_docs = [_set_doc(s, opts.step, opts.verify) for s in found_sets]
    cps = []
    for f in files:
        scan = cache.get((f["path"], opts.verify)) or cache.get((f["path"], False))
        if isinstance(scan, dict):
            cps.extend(rep._checkpoint(f["path"], r, opts.verify) for r in rep._records(scan))
    cps.sort(key=lambda c: (c["time_ns"] or 0), reverse=True)
    found = fsets.newest(found_sets, opts.step)
    facts: dict[str, Any] = {}
    chosen_doc = None
    status, message = rep.NOTHING_VALID, "no valid checkpoint in any file set"
    while found is not None:
        s, cp = found
        sdoc = set_docs[found_sets.index(s)]
        try:
            if s.kind == "dcp":
                facts = _dcp_state(directory, s, cp, opts)
                file = s.files[0]
            else:
                rec = next(c for c in cps if c["file"] == s.files[0] and c["seq"] == cp.seq)
                file = rec["file"]
                facts = {"state": rep._pccheck_state(rec, next(f["geometry"] for f in files if f["path"] == file), opts)}
                if opts.tensor or opts.export:
                    facts.update(rep._pccheck_payload_facts(rec, opts, facts["state"]))
        except HeaderError as exc:  # as a load would: this one is passed over, the next one tried
            cp.valid, cp.why = False, f"payload: {exc}"
            set_docs[found_sets.index(s)] = _set_doc(s, opts.step, opts.verify)
            found = fsets.newest(found_sets, opts.step)
            continue
        status = sdoc["exit_status"]
        where = f"step {cp.step} of {s.label}"
        message = f"a load picks {where}" + ("" if status == rep.OK else f" ({sdoc['message']})")
        chosen_doc = {"file": file, "seq": cp.seq, "step": cp.step, "valid": True, "set": s.label,
                      "why": f"newest valid checkpoint over {len(found_sets)} file sets, by commit time"
                             + ("" if opts.step is None else f", of step {opts.step}")}
        break
    if found is None and opts.step is not None and any(c.valid for s in found_sets for c in s.checkpoints):
        status, message = rep.OLDER_VALID, f"no valid checkpoint at step {opts.step}; other valid checkpoints exist"
    doc = rep._document(opts, "pccheck", files, cps, None, facts, status, message, [], [])
    skipped = [{"seq": c.seq, "step": c.step, "file": s.files[0], "reason": c.why} for s in found_sets
               for c in fsets.skipped_newer(s, found[1] if found and found[0] is s else None)]
    doc.update(chosen=chosen_doc, sets=set_docs, skipped=skipped,
               latest_valid_step=chosen_doc["step"] if chosen_doc else None,
               latest_valid_seq=chosen_doc["seq"] if chosen_doc else None)
    return doc
