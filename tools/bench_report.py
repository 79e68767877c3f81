"""pccheck-bench output: the targets (pass/miss), the rich table with the ratios, and the PNG chart."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from rich.console import Console
from rich.table import Table

MiB = 1 << 20


@dataclass
class Target:
    name: str
    ratio: Callable[[dict[str, Any]], Optional[float]]  # the measured ratio (None: not measured)
    limit: float  # pass when ratio <= limit
    shown: str  # how the ratio and its limit read


def _div(a: Optional[float], b: Optional[float]) -> Optional[float]:
    if a is None or b is None or b <= 0:
        return None
    return a / b


TARGETS = [
    Target("stall <= 1.5 x copy floor", lambda r: _div(r["stall_s"], r["stall_floor_s"]), 1.5, "stall / floor"),
    Target("stall <= 1/10 of torch.save's", lambda r: _div(r["stall_s"], r["baseline_stall_s"]), 0.1, "stall / torch.save stall"),
    Target("stall <= 1/3 of DCP's", lambda r: _div(r["stall_s"], r["dcp_stall_s"]), 1 / 3, "stall / DCP stall"),
    Target("durable within 1/0.9 of raw write", lambda r: _div(r["durable_s"], r["disk_write_s"]), 1 / 0.9, "durable / raw write"),
    Target("durable <= 1/3 of DCP's", lambda r: _div(r["durable_s"], r["dcp_durable_s"]), 1 / 3, "durable / DCP durable"),
    Target("overhead every 10 <= 5%", lambda r: r.get("overhead_every_10"), 0.05, "overhead"),
    Target("overhead every 10 < 1/5 of torch.save's",
           lambda r: None if r.get("overhead_every_10") is None or not r.get("baseline_overhead_every_10")
           else max(r["overhead_every_10"], 0.0) / r["baseline_overhead_every_10"], 0.2, "overhead / torch.save overhead"),
    Target("load within 1/0.9 of raw read", lambda r: _div(r["load_s"], r["disk_read_s"]), 1 / 0.9, "load / raw read"),
    Target("load no slower than torch.load", lambda r: _div(r["load_s"], r["baseline_load_s"]), 1.0, "load / torch.load"),
    Target("peak extra <= budget + 64 MiB",
           lambda r: None if r.get("peak_extra_bytes") is None else _div(r["peak_extra_bytes"], r["memory_budget_bytes"] + 64 * MiB),
           1.0, "peak extra / (budget + 64 MiB)"),
]


def evaluate(r: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for t in TARGETS:
        try:
            ratio = t.ratio(r)
        except KeyError:
            ratio = None
        out.append({"target": t.name, "ratio": ratio, "limit": t.limit, "measure": t.shown,
                    "pass": None if ratio is None else ratio <= t.limit})
    return out


def _s(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f} s"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


def table(r: dict[str, Any]) -> Table:
    gb = r["state_bytes"] / (1 << 30)
    t = Table(title=f"pccheck-bench: {r['state_bytes'] / MiB:.0f} MiB state ({gb:.2f} GiB), medians")
    for col in ("", "pccheck", "torch.save+fsync", "DCP async_save", "machine floor"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("blocked per checkpoint", _s(r["stall_s"]), _s(r["baseline_stall_s"]), _s(r["dcp_stall_s"]),
              f"{_s(r['stall_floor_s'])} (copy)")
    t.add_row("save -> durable", _s(r["durable_s"]), _s(r["baseline_durable_s"]), _s(r["dcp_durable_s"]),
              f"{_s(r['disk_write_s'])} (raw write)")
    bw = lambda s: "-" if not s else f"{r['state_bytes'] / s / 1e9:.2f} GB/s"  # noqa: E731
    t.add_row("  as bandwidth", bw(r["durable_s"]), bw(r["baseline_durable_s"]), bw(r["dcp_durable_s"]), bw(r["disk_write_s"]))
    t.add_row("load, cold cache", _s(r["load_s"]), _s(r["baseline_load_s"]) + " (torch.load)",
              _s(r.get("dcp_load_s")), f"{_s(r['disk_read_s'])} (raw read)")
    t.add_row("overhead, ckpt every 10 steps", _pct(r.get("overhead_every_10")), _pct(r.get("baseline_overhead_every_10")), "-", "")
    t.add_row("overhead, ckpt every 50 steps", _pct(r.get("overhead_every_50")), _pct(r.get("baseline_overhead_every_50")), "-", "")
    mem = lambda n: "-" if n is None else f"{n / MiB:.0f} MiB"  # noqa: E731
    t.add_row("peak memory above no checkpoint", mem(r.get("peak_extra_bytes")), mem(r.get("baseline_peak_extra_bytes")),
              mem(r.get("dcp_peak_extra_bytes")), f"budget {mem(r['memory_budget_bytes'])}")
    return t


def targets_table(results: list[dict[str, Any]]) -> Table:
    t = Table(title="targets")
    for col in ("target", "measured", "limit", "result"):
        t.add_column(col)
    for row in results:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        verdict = {True: "[green]pass", False: "[red]miss", None: "[yellow]n/a"}[row["pass"]]
        t.add_row(row["target"], f"{row['measure']} = {ratio}", f"<= {row['limit']:.3f}", verdict)
    return t


def sweep_table(rows: list[dict[str, Any]], picked: dict[str, Any]) -> Table:
    t = Table(title="auto-tune sweep (budget = max_async states; burst of max_async + 1 saves)")
    for col in ("threads", "max_async", "chunk", "GB/s", "first stall", "peak extra", ""):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(str(r["threads"]), str(r["max_async"]), f"{r['chunk_size'] // MiB}M", f"{r['bandwidth'] / 1e9:.2f}",
                  f"{r['stall_first_s']:.3f} s", f"{r['peak_extra'] / MiB:.0f} MiB", "<- picked" if r is picked else "")
    return t


def print_all(r: dict[str, Any], console: Optional[Console] = None) -> None:
    console = console or Console()
    console.print(table(r))
    console.print(targets_table(r["targets"]))


def chart(r: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    groups = ["blocked", "to durable", "load (cold)"]
    series = [
        ("pccheck", [r["stall_s"], r["durable_s"], r["load_s"]], "tab:green"),
        ("torch.save+fsync / torch.load", [r["baseline_stall_s"], r["baseline_durable_s"], r["baseline_load_s"]], "tab:red"),
        ("DCP async_save", [r["dcp_stall_s"], r["dcp_durable_s"], r.get("dcp_load_s")], "tab:orange"),
        ("machine floor (copy / raw write / raw read)", [r["stall_floor_s"], r["disk_write_s"], r["disk_read_s"]], "tab:gray"),
    ]
    width = 0.2
    for i, (label, vals, color) in enumerate(series):
        xs = [g + (i - 1.5) * width for g in range(len(groups))]
        ys = [v if v is not None else 0.0 for v in vals]
        bars = ax1.bar(xs, ys, width, label=label, color=color)
        for b, v in zip(bars, vals):
            if v is not None:
                ax1.annotate(f"{v:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(range(len(groups)), groups)
    ax1.set_ylabel("seconds")
    ax1.set_title(f"{r['state_bytes'] / (1 << 30):.2f} GiB state, per checkpoint")
    ax1.legend(fontsize=8)
    labels = ["every 10", "every 50"]
    pc = [100 * (r.get("overhead_every_10") or 0), 100 * (r.get("overhead_every_50") or 0)]
    ts = [100 * (r.get("baseline_overhead_every_10") or 0), 100 * (r.get("baseline_overhead_every_50") or 0)]
    xs = range(len(labels))
    ax2.bar([x - 0.2 for x in xs], pc, 0.4, label="pccheck", color="tab:green")
    ax2.bar([x + 0.2 for x in xs], ts, 0.4, label="torch.save+fsync", color="tab:red")
    for x, v in zip(xs, pc):
        ax2.annotate(f"{v:.1f}%", (x - 0.2, max(v, 0)), ha="center", va="bottom", fontsize=8)
    for x, v in zip(xs, ts):
        ax2.annotate(f"{v:.1f}%", (x + 0.2, max(v, 0)), ha="center", va="bottom", fontsize=8)
    ax2.axhline(5, color="black", lw=0.8, ls=":", label="5% target")
    ax2.set_xticks(list(xs), labels)
    ax2.set_ylabel("training time overhead (%)")
    ax2.set_title("default model, checkpoint every N steps")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
