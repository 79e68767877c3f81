"""The global commit: the payload of one checkpoint in a set's commit file (JSON, no pickle).

    8 B magic `PCCKDCP1`, then UTF-8 JSON:
    {"format": "pccheck.dcp.commit.v1", "set": id, "world": N, "gseq": n, "step": s,
     "ranks": [{"rank": r, "file": name, "seq": core seq, "payload_len": L, "table_crc": C}, ...],
     "metadata": DCP's Metadata in JSON (pccheck/dcp/metadata_json.py)}

A rank part counts only when that rank's file holds a valid record of `seq` with the same length and
chunk-table CRC (the CRC of all its chunk CRCs): a part rewritten, torn or replaced by another run's file
can never pass as the one this commit covers.
"""
from __future__ import annotations

import json
from typing import Any

from ..errors import CheckpointError

MAGIC = b"PCCKDCP1"
FORMAT = "pccheck.dcp.commit.v1"
_RANK_KEYS = ("rank", "seq", "payload_len", "table_crc")


def encode(doc: dict[str, Any]) -> bytes:
    return MAGIC + json.dumps({"format": FORMAT, **doc}, separators=(",", ":")).encode()


def decode(buf: bytes | bytearray | memoryview) -> dict[str, Any]:
    """The commit document, every field checked (the file may be hostile); CheckpointError otherwise."""
    raw = bytes(buf)
    if not raw.startswith(MAGIC):
        raise CheckpointError("not a pccheck DCP commit (magic)")
    try:
        doc = json.loads(raw[len(MAGIC):])
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"global commit is not valid JSON ({exc})") from None
    ok = isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("set"), str)
    ok = ok and all(isinstance(doc.get(k), int) and doc[k] >= 0 for k in ("world", "gseq", "step"))
    ok = ok and isinstance(doc.get("ranks"), list) and isinstance(doc.get("metadata"), dict)
    if ok:
        ranks = doc["ranks"]
        ok = len(ranks) == doc["world"] and all(
            isinstance(r, dict) and isinstance(r.get("file"), str)
            and all(isinstance(r.get(k), int) and r[k] >= 0 for k in _RANK_KEYS) and r["rank"] == i
            for i, r in enumerate(ranks)
        )
    if not ok:
        raise CheckpointError("global commit does not have the expected fields")
    return doc
