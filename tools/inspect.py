"""pccheck-inspect: validate and inspect pccheck checkpoint files and torch.save baseline checkpoints.

PATH is a pccheck checkpoint file, a checkpoint directory (pccheck *.ckpt files, one per rank, or
ckpt-<step>.pt files) or one torch.save checkpoint. The overview reads only headers (superblock, commit
ring, chunk tables, the payload's tensor manifest); --verify recomputes every payload checksum.

exit status:
  0   the chosen checkpoint is valid
  1   the newest checkpoint is corrupt but an older valid one exists (a load falls back to it),
      or the --step checkpoint is not valid while another one is
  2   nothing valid
  3   not a checkpoint, or unreadable
  64  usage error (bad flags, unknown tensor name)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, NoReturn, Optional, Sequence

from .inspect_layout import InspectError
from .inspect_report import USAGE, Options, error_document, inspect

_PROGRESS_MIN = 64 << 20  # files smaller than this verify too fast to need a bar
_TENSOR_ROWS = 40
PROG = "pccheck-inspect"


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line and exit 64, not argparse's usage block and 2
        raise _UsageError(message)


def _step(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a step number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"a step is not negative: {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="checkpoint file or directory")
    p.add_argument("--verify", action="store_true", help="recompute every checksum of every committed checkpoint")
    p.add_argument("--json", action="store_true", help="print the facts as one JSON document (docs/inspect.md)")
    p.add_argument("--step", type=_step, metavar="N", help="choose the checkpoint of step N instead of the latest")
    p.add_argument("--tensor", metavar="NAME", help="print one tensor's statistics (min, max, mean, NaN/inf counts)")
    p.add_argument("--export", type=Path, metavar="OUT.safetensors",
                   help="write the chosen checkpoint as a standalone safetensors file")
    p.add_argument("--all-tensors", action="store_true", help=f"list every tensor, not the first {_TENSOR_ROWS}")
    return p


def parse(argv: Sequence[str]) -> argparse.Namespace:
    """The parsed flags; _UsageError (exit 64) for anything wrong, including an unusable --export path."""
    args = build_parser().parse_args(list(argv))
    if args.export is not None:
        parent = args.export.parent if str(args.export.parent) else Path(".")
        if args.export.is_dir() or not parent.is_dir():
            raise _UsageError(f"--export {args.export}: not a file path in an existing directory")
    return args


# -- progress ------------------------------------------------------------------------------------------
def _bytes_read() -> Optional[int]:
    """Bytes this process has read so far (Linux /proc/self/io), the progress of the core's verifying threads."""
    try:
        with open("/proc/self/io", "rb") as f:
            for line in f:
                if line.startswith(b"rchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _progress_runner(console: Any) -> Callable[[str, int, Callable[[], Any]], Any]:
    """Runs a verification in a thread and draws a rich progress bar from the bytes it has read."""

    def run(label: str, total: int, fn: Callable[[], Any]) -> Any:
        if total < _PROGRESS_MIN or not console.is_terminal:
            return fn()
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc

        start = _bytes_read()
        thread = threading.Thread(target=work, daemon=True)
        columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as bar:
            task = bar.add_task(label, total=total if start is not None else None)
            thread.start()
            while thread.is_alive():
                thread.join(0.1)
                now = _bytes_read()
                if start is not None and now is not None:
                    bar.update(task, completed=min(total, now - start))
        if "error" in box:
            raise box["error"]
        return box.get("result")

    return run


# -- rendering -----------------------------------------------------------------------------------------
def _safe(value: Any, limit: int = 160) -> str:
    """Printable text of a value from the file: control characters escaped (no terminal tricks), length cut."""
    text = value if isinstance(value, str) else json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(title: str, columns: Sequence[str]) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", title_style="bold")
    for col in columns:
        table.add_column(col)
    return table


def _row(table: Any, *cells: Any, style: Optional[str] = None) -> None:
    from rich.text import Text

    table.add_row(*(c if isinstance(c, Text) else Text(_safe(c)) for c in cells), style=style)


def _render_files(console: Any, doc: dict[str, Any]) -> None:
    if len(doc["files"]) > 2:  # a file set of many ranks: one row per file, not one table each
        table = _table("files", ("file", "size", "slots", "slot size", "keep", "max in flight", "created"))
        for f in doc["files"]:
            g = f["geometry"] or {}
            _row(table, os.path.basename(f["path"]), _size(f["bytes"]), g.get("slot_count", "-"),
                 _size(g.get("slot_size")), g.get("keep", "-"), g.get("max_async", "-"), _created(g.get("created_ns")))
        console.print(table)
        return
    for f in doc["files"]:
        g = f["geometry"]
        if g is None:
            continue
        table = _table(f"{_safe(f['path'])}  (pccheck format v{f['format_version']}, {_size(f['bytes'])})", ("geometry", "value"))
        for key, value in (("slots", g["slot_count"]), ("slot size", _size(g["slot_size"])),
                           ("chunk size", _size(g["chunk_size"]) if isinstance(g["chunk_size"], int) else g["chunk_size"]),
                           ("keep", g["keep"]), ("max in flight", g["max_async"]), ("ring entries", g["ring_entries"]),
                           ("created", _created(g["created_ns"]))):
            _row(table, key, "-" if value is None else value)
        console.print(table)


def _created(ns: Optional[int]) -> str:
    from .inspect_report import _iso

    return _iso(ns) or "-" if ns is not None else "-"


def _render_checkpoints(console: Any, doc: dict[str, Any]) -> None:
    from rich.text import Text

    multi = len(doc["files"]) > 1
    cols = (["file"] if multi else []) + ["seq", "slot", "step", "written (UTC)", "size", "status"]
    table = _table("commit records, newest first" if doc["kind"] == "pccheck" else "checkpoints, newest first", cols)
    chosen = doc["chosen"] or {}
    for c in doc["checkpoints"]:
        mark = c["file"] == chosen.get("file") and c["seq"] == chosen.get("seq") and c["step"] == chosen.get("step")
        status = Text("valid" + (", verified" if c["verified"] else ""), style="green") if c["valid"] else Text(_safe(c["reason"]), style="red")
        if mark:
            status.append("  ← chosen", style="bold")
        cells = ([os.path.basename(c["file"])] if multi else []) + [
            "-" if c["seq"] is None else c["seq"], "-" if c["slot"] is None else c["slot"],
            "-" if c["step"] is None else c["step"], c["time"] or "-", _size(c["payload_bytes"]), status]
        _row(table, *cells)
    if not doc["checkpoints"]:
        _row(table, *(["-"] * (len(cols) - 1)), Text("no committed checkpoint", style="yellow"))
    console.print(table)


def _several_sets(doc: dict[str, Any]) -> bool:
    return len(doc["sets"]) > 1 or any(s["kind"] == "dcp" for s in doc["sets"])


def _render_sets(console: Any, doc: dict[str, Any]) -> None:
    """Several file sets: each one's checkpoints (global commits of a DCP set, with its parts) and verdict."""
    from rich.text import Text

    for s in doc["sets"]:
        cols = ["checkpoint", "step", "written (UTC)", "parts (rank: seq, size)", "status"]
        table = _table(f"{_safe(s['label'])}" + (f": {s['error']}" if s["error"] else ""), cols)
        for c in s["checkpoints"]:
            status = Text("valid", style="green") if c["valid"] else Text(_safe(c["reason"], 200), style="red")
            if s["chosen"] is not None and c["seq"] == s["chosen"]["seq"]:
                status.append("  ← this set's pick", style="bold")
            parts = "; ".join(f"{p['rank']}: {p['seq']}, {_size(p['payload_bytes'])}" for p in c["ranks"] or [])
            _row(table, f"seq {c['seq']}" if c["gseq"] is None else c["gseq"], "-" if c["step"] is None else c["step"],
                 c["time"] or "-", parts or "-", status)
        console.print(table)
        style = {0: "green", 1: "yellow"}.get(s["exit_status"], "red")
        console.print(Text(_safe(s["message"], 400), style=style))


def _render_state(console: Any, doc: dict[str, Any], all_tensors: bool) -> None:
    state = doc["state"]
    if state is None:
        return
    table = _table(f"tensors: {state['tensor_count']}, {_size(state['tensor_bytes'])}", ("name", "dtype", "shape", "bytes"))
    shown = state["tensors"] if all_tensors else state["tensors"][:_TENSOR_ROWS]
    for t in shown:
        _row(table, t["name"], t["dtype"], "×".join(map(str, t["shape"])) or "scalar", _size(t["bytes"]))
    if len(shown) < len(state["tensors"]):
        _row(table, f"… {len(state['tensors']) - len(shown)} more (--all-tensors)", "", "", "")
    console.print(table)
    summary = state["summary"] or {}
    if summary:
        table = _table("state", ("part", "summary"))
        for key, value in summary.items():
            _row(table, key, _safe(value, 400))
        console.print(table)
    if not state["header_checksummed"]:
        console.print("[yellow]the payload header spans more than 64 MiB of chunks: not checksummed without --verify[/]")


def _render_tensor(console: Any, doc: dict[str, Any]) -> None:
    t = doc["tensor"]
    if t is None:
        return
    table = _table(f"tensor {_safe(t['name'])}  {t['dtype']} {'×'.join(map(str, t['shape'])) or 'scalar'}", ("statistic", "value"))
    for key in ("count", "finite", "min", "max", "mean", "nan", "posinf", "neginf"):
        _row(table, key, "-" if t[key] is None else t[key])
    console.print(table)


def render(doc: dict[str, Any], all_tensors: bool = False, console: Any = None) -> None:
    """The human overview: rich tables of the same facts as the JSON document."""
    from rich.console import Console
    from rich.text import Text

    console = console or Console(highlight=False)
    _render_files(console, doc)
    if _several_sets(doc):
        _render_sets(console, doc)
    else:
        _render_checkpoints(console, doc)
    chosen = doc["chosen"]
    if chosen is not None:
        line = Text("a load picks ", style="bold")
        line.append(_safe(f"step {chosen['step']}" + (f" (seq {chosen['seq']})" if chosen["seq"] is not None else "")))
        line.append(f": {_safe(chosen['why'], 400)}")
        console.print(line)
    _render_state(console, doc, all_tensors)
    _render_tensor(console, doc)
    for f in doc["files"]:
        v = f.get("verify")
        if v and v["seconds"] > 0 and v["bytes"]:
            console.print(f"verified {_size(v['bytes'])} in {v['seconds']:.2f} s ({v['bytes'] / v['seconds'] / 1e6:.0f} MB/s)")
    if doc["export"] is not None:
        e = doc["export"]
        console.print(Text(f"exported {e['tensors']} tensors ({_size(e['bytes'])}) to {_safe(e['path'])}"))
    style = {0: "green", 1: "yellow"}.get(doc["exit_status"], "red")
    console.print(Text(f"{_safe(doc['message'], 400)} (exit status {doc['exit_status']})", style=f"bold {style}"))


def _finite(node: Any) -> Any:
    """JSON has no NaN or infinity: such floats (a hostile state tree may hold them) become strings."""
    if isinstance(node, float) and not math.isfinite(node):
        return repr(node)
    if isinstance(node, dict):
        return {str(k): _finite(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_finite(v) for v in node]
    return node


def to_json(doc: dict[str, Any]) -> str:
    return json.dumps(_finite(doc), indent=2, allow_nan=False)


# -- entry point ---------------------------------------------------------------------------------------
def _fail(message: str) -> None:
    print(f"{PROG}: {_safe(message, 1000)}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Inspects and prints; returns the exit status."""
    from rich.console import Console

    err = Console(stderr=True)
    opts = Options(args.path, args.verify, args.step, args.tensor, args.export, run=_progress_runner(err))
    try:
        doc = inspect(opts)
    except InspectError as exc:
        _fail(str(exc))
        if args.json:
            print(to_json(error_document(args.path, exc)))
        return exc.status
    if args.json:
        print(to_json(doc))
    else:
        render(doc, args.all_tensors)
    if doc["exit_status"] and (args.json or not sys.stdout.isatty()):
        _fail(doc["message"])
    return doc["exit_status"]


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = parse(sys.argv[1:] if argv is None else argv)
    except _UsageError as exc:
        _fail(f"usage error: {exc} (see --help)")
        return USAGE
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    try:
        return run(args)
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # the last line of defence: never a traceback (set PCCHECK_INSPECT_DEBUG=1 to see it)
        if os.environ.get("PCCHECK_INSPECT_DEBUG"):
            raise
        _fail(f"internal error, please report: {type(exc).__name__}: {exc}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
