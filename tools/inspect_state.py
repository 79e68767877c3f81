"""What pccheck-inspect says about a checkpoint's state: a summary of the JSON tree (torch-free, so the
overview stays fast), one tensor's statistics and the safetensors export (these two import torch).
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Optional

_SHOWN_ITEMS = 8  # longest list or dict shown in a summary before it is cut
_DEPTH = 4
_KNOWN = ("step", "model", "optimizer", "scheduler", "data", "rng", "config")


def plain(node: Any, depth: int = _DEPTH) -> Any:
    """A short, JSON-safe rendering of a state subtree: tensors as '<tensor NAME>', long lists cut."""
    if isinstance(node, list):
        if depth <= 0:
            return f"<list of {len(node)}>"
        shown = [plain(v, depth - 1) for v in node[:_SHOWN_ITEMS]]
        return shown + [f"... {len(node) - _SHOWN_ITEMS} more"] if len(node) > _SHOWN_ITEMS else shown
    if not isinstance(node, dict):
        return node if node is None or isinstance(node, (bool, int, float, str)) else repr(node)
    if len(node) == 1:
        (key, value), = node.items()
        if key == "__tensor__" or key == "__ndarray__":
            return f"<tensor {value}>"
        if key == "__tuple__" and isinstance(value, list):
            return plain(value, depth)
        if key in ("__float__", "__dtype__", "__device__"):
            return str(value)
        if key == "__dict__" and isinstance(value, list):
            return f"<dict of {len(value)}>" if depth <= 0 else plain(_pairs(value), depth)
    if depth <= 0:
        return f"<dict of {len(node)}>"
    keys = list(node)
    out = {str(k): plain(node[k], depth - 1) for k in keys[:_SHOWN_ITEMS]}
    if len(keys) > _SHOWN_ITEMS:
        out["..."] = f"{len(keys) - _SHOWN_ITEMS} more"
    return out


def _pairs(items: list[Any]) -> dict[str, Any]:
    """A `__dict__` marker's [[key, value], ...] as a dict with printable keys."""
    out: dict[str, Any] = {}
    for item in items:
        if isinstance(item, list) and len(item) == 2:
            out[json.dumps(plain(item[0], 1)) if not isinstance(item[0], str) else item[0]] = item[1]
    return out


def _mapping(node: Any) -> dict[str, Any]:
    """A dict node, `__dict__` markers included, as a plain dict (empty when it is not a dict)."""
    if isinstance(node, dict) and len(node) == 1 and isinstance(node.get("__dict__"), list):
        return _pairs(node["__dict__"])
    return node if isinstance(node, dict) else {}


def kind(node: Any) -> str:
    """One word for a subtree: 'tensor', 'dict[3]', 'list[2]', 'int', ..."""
    if isinstance(node, dict):
        if len(node) == 1 and ("__tensor__" in node or "__ndarray__" in node):
            return "tensor"
        return f"dict[{len(_mapping(node))}]"
    if isinstance(node, list):
        return f"list[{len(node)}]"
    return type(node).__name__ if node is not None else "null"


def summarize(tree: Any) -> dict[str, Any]:
    """The non-tensor facts of a trainer state (step, optimizer, scheduler, RNGs, data, config), any state too."""
    if not isinstance(tree, dict):
        return {"root": kind(tree)}
    out: dict[str, Any] = {}
    if "step" in tree:
        out["step"] = plain(tree["step"], 0)
    if "optimizer" in tree:
        out["optimizer"] = _optimizer(_mapping(tree["optimizer"]))
    if "scheduler" in tree:
        sched = _mapping(tree["scheduler"])
        out["scheduler"] = {k: plain(v, 2) for k, v in sched.items() if k in ("last_epoch", "_step_count", "_last_lr", "base_lrs")} \
            or {"keys": list(sched)[:_SHOWN_ITEMS]}
    if "rng" in tree:
        out["rng"] = sorted(str(k) for k in _mapping(tree["rng"]))
    for key in ("data", "config"):
        if key in tree:
            out[key] = plain(tree[key], 2)
    if "model" in tree:
        out["model"] = kind(tree["model"])
    other = {str(k): kind(v) for k, v in tree.items() if k not in _KNOWN}
    if other:
        out["other"] = plain(other, 1)
    return out


def _optimizer(opt: dict[str, Any]) -> dict[str, Any]:
    groups = opt.get("param_groups")
    groups = groups if isinstance(groups, list) else []
    first = groups[0] if groups and isinstance(groups[0], dict) else {}
    states = _mapping(opt.get("state"))
    sample = next(iter(states.values()), None)
    return {
        "param_groups": len(groups),
        "hyperparameters": {k: plain(v, 1) for k, v in first.items() if k != "params"},
        "param_states": len(states),
        "state_keys": sorted(str(k) for k in _mapping(sample)),
    }


# -- tensors (torch from here on) -----------------------------------------------------------------------
def tensor_stats(t: Any) -> dict[str, Any]:
    """min, max, mean over the finite values and the NaN/inf counts, in float64, chunk by chunk (bounded memory)."""
    import torch

    flat = t.reshape(-1)
    count, finite, nan, posinf, neginf = flat.numel(), 0, 0, 0, 0
    lo, hi, total = math.inf, -math.inf, 0.0
    step = 1 << 22
    for start in range(0, count, step):
        part = flat[start : start + step]
        part = part.to(torch.uint8) if part.dtype == torch.bool else part
        x = part.double()
        isnan, isinf = torch.isnan(x), torch.isinf(x)
        nan += int(isnan.sum())
        posinf += int((isinf & (x > 0)).sum())
        neginf += int((isinf & (x < 0)).sum())
        good = x[~(isnan | isinf)]
        if good.numel():
            finite += good.numel()
            lo, hi = min(lo, float(good.min())), max(hi, float(good.max()))
            total += float(good.sum())
    return {
        "count": count, "finite": finite, "nan": nan, "posinf": posinf, "neginf": neginf,
        "min": lo if finite else None, "max": hi if finite else None, "mean": total / finite if finite else None,
    }


def tensor_view(buf: Any, begin: int, end: int, dtype_name: str, shape: list[int]) -> Any:
    """A tensor over payload bytes [begin, end) (copied when misaligned), as pccheck.payload lays them out."""
    import torch

    from pccheck import payload

    dtype = payload._BY_NAME[dtype_name]
    raw = torch.frombuffer(buf, dtype=torch.uint8)[begin:end] if end > begin else torch.empty(0, dtype=torch.uint8)
    if begin % dtype.itemsize:
        raw = raw.clone()
    return raw.view(dtype).view(shape)


def rewrite_metadata(payload_bytes: Any, extra: dict[str, str]) -> tuple[bytes, memoryview]:
    """A new safetensors header for a payload (its metadata plus `extra`) and a view of the unchanged data."""
    from pccheck import payload

    meta, infos = payload.parse_header(memoryview(payload_bytes))
    (n,) = struct.unpack_from("<Q", payload_bytes, 0)
    header = json.loads(bytes(memoryview(payload_bytes)[8 : 8 + n]))
    header["__metadata__"] = {**{str(k): str(v) for k, v in meta.items()}, **extra}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 64)
    return struct.pack("<Q", len(raw)) + raw, memoryview(payload_bytes)[8 + n :]


def write_atomic(out: Path, parts: list[Any]) -> int:
    """Writes `parts` to `out` through a temporary file, fsync and rename: never a half-written export."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    size = 0
    try:
        with open(tmp, "wb") as f:
            for part in parts:
                size += f.write(part)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


def export_state(state: dict[str, Any], out: Path, extra: dict[str, str]) -> dict[str, Any]:
    """Encodes a loaded (torchsave) state as a pccheck payload and writes it as a standalone safetensors file."""
    from pccheck import payload

    enc = payload.encode(state)
    import torch

    blob = bytearray(enc.nbytes)
    blob[: len(enc.header)] = enc.header
    pos = len(enc.header)
    for t in enc.tensors:
        blob[pos : pos + t.nbytes] = t.contiguous().view(-1).view(torch.uint8).numpy().tobytes() if t.nbytes else b""
        pos += t.nbytes
    head, data = rewrite_metadata(blob, extra)
    size = write_atomic(out, [head, data])
    return {"path": str(out), "tensors": len(enc.tensors), "bytes": size}


def json_number(x: Optional[float]) -> Any:
    """JSON has no NaN/inf: such values become strings, so the document stays strictly valid."""
    if x is None or math.isfinite(x):
        return x
    return repr(x)
